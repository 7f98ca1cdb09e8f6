"""Prometheus metrics, updated by the pipeline and read by the daemon's /metrics."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

registry = CollectorRegistry(auto_describe=True)

runs = Counter("lms_sync_runs", "Stream runs by source and result", ["source", "stream", "result"],
               registry=registry)
records_written = Counter("lms_sync_records_written", "Rows written by source and table",
                          ["source", "table"], registry=registry)
records_read = Counter("lms_sync_records_read", "Records read by source", ["source"],
                       registry=registry)
last_success = Gauge("lms_sync_last_success_timestamp_seconds",
                     "Unix time of the last fully successful run of a source", ["source"],
                     registry=registry)
http_requests = Counter("lms_sync_http_requests", "HTTP requests sent by source", ["source"],
                        registry=registry)
http_retries = Counter("lms_sync_http_retries", "HTTP retries by source", ["source"],
                       registry=registry)
http_throttled = Counter("lms_sync_http_throttled", "HTTP 429 answers by source", ["source"],
                         registry=registry)
run_duration = Histogram("lms_sync_run_duration_seconds", "Duration of a source run", ["source"],
                         registry=registry,
                         buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200))
