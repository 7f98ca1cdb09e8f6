"""Prometheus metrics of the worker pool, labelled by tenant and source.

The pipeline's own metrics (``lms_sync.metrics``) are labelled by source only: in a
worker serving many tenants two tenants' ``absorb-main`` add up there. These are
the per-tenant series a worker's ``/metrics`` adds, in the same registry.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from lms_sync.metrics import registry

LABELS = ["tenant", "source"]

runs = Counter("lms_sync_tenant_runs", "Source runs by tenant, source and result",
               [*LABELS, "result"], registry=registry)
records_read = Counter("lms_sync_tenant_records_read", "Records read by tenant and source", LABELS,
                       registry=registry)
records_written = Counter("lms_sync_tenant_records_written", "Rows written by tenant and source",
                          LABELS, registry=registry)
last_success = Gauge("lms_sync_tenant_last_success_timestamp_seconds",
                     "Unix time of the last fully successful run, by tenant and source", LABELS,
                     registry=registry)
run_duration = Histogram("lms_sync_tenant_run_duration_seconds", "Duration of a source run",
                         LABELS, registry=registry,
                         buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200))
coalesced = Counter("lms_sync_tenant_coalesced", "Runs not queued because one was already waiting",
                    LABELS, registry=registry)
retries = Counter("lms_sync_tenant_retries", "Failed or interrupted runs queued again", LABELS,
                  registry=registry)
tenants = Gauge("lms_sync_tenants", "Tenant config files by state (loaded, skipped)", ["state"],
                registry=registry)
