"""What a job does: run one source of one tenant (the existing ``run_source``), provision
one source's users (the existing ``run_provision``), or the tenant's identity pass, and
settle the outcome.

A sync job runs in a worker thread. Its outcome:

* succeeded: nothing more;
* interrupted (SIGTERM; the run committed its batch and stopped): queued again, the
  job ends ``aborted`` (``job.interrupted``);
* credentials rejected: not retried, the job ends ``failed`` (``job.failed``);
* any other failure: queued again after ``cluster.retry_wait_seconds`` (doubling per
  attempt, at most an hour) until ``cluster.retries`` are used up (``job.retried``).

Retries are new jobs with the same locks, not procrastinate's ``RetryStrategy``: that
sets the failed job itself back to ``todo``, which breaks procrastinate's unique
queueing-lock index when the next tick has queued the source meanwhile (procrastinate
issues #1446, #1543). A new job simply coalesces into the queued one.

A provisioning job is not retried (as in the daemon, the next scheduled one is the
retry, and users the vendor refused come back in its plan); interrupted by SIGTERM it
is queued again (``job.interrupted``); refused by the safety cap it ends ``failed``.

After every run the tenant's identity pass is queued, debounced by its own queueing
lock: ten sources finishing together queue one pass, which matches every learner
written since the last pass (``identity.after_run`` takes up stale learners itself).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import structlog

from lms_sync.cluster import metrics
from lms_sync.cluster.queue import (
    IDENTITY_TASK,
    SYNC_QUEUE,
    defer_provision,
    defer_sync,
    identity_lock,
)
from lms_sync.cluster.tenants import Tenant, Tenants
from lms_sync.config import ClusterConfig
from lms_sync.errors import LmsSyncError
from lms_sync.logs import get_logger, one_line
from lms_sync.pipeline import SourceResult, run_source
from lms_sync.warehouse import identity
from lms_sync.warehouse.rowids import RowIds

MAX_RETRY_WAIT = 3600.0


class RunFailed(LmsSyncError):
    """A job whose run failed; already logged, so the worker logs no traceback for it."""


@dataclass
class InFlight:
    job_id: int
    args: dict[str, Any]
    started: datetime


@dataclass
class Runtime:
    """What the jobs of one worker process share."""

    app: Any
    tenants: Tenants
    stop: threading.Event = field(default_factory=threading.Event)
    in_flight: dict[int, InFlight] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def tenant(self, name: str) -> Tenant | None:
        found = self.tenants.get(name)
        if found is None:  # a file added since the last look: look again now
            self.tenants.refresh()
            found = self.tenants.get(name)
        return found


def run_sync_job(rt: Runtime, job: Any, args: dict[str, Any]) -> str:
    """The body of the sync task (a worker thread); raises RunFailed or JobAborted."""
    tenant_name, source_id = args["tenant"], args["source"]
    with structlog.contextvars.bound_contextvars(tenant=tenant_name, job_id=job.id):
        log = get_logger("lms_sync.cluster", source=source_id)
        tenant = rt.tenant(tenant_name)
        if tenant is None:
            return _settle(rt, args, None, f"tenant {tenant_name!r} is not loaded on this worker "
                           "(its file is missing or has an error; see tenant.skipped)")
        source = tenant.cfg.sources.get(source_id)
        if source is None or not source.enabled:
            log.warning("job.dropped", reason="the source is no longer enabled in the tenant's config")
            return "dropped"
        log.info("job.started", worker_id=job.worker_id, attempt=args.get("attempt", 1),
                 due=args.get("due"), full_refresh=args.get("full_refresh", False))
        with rt.lock:
            rt.in_flight[job.id] = InFlight(job.id, args, datetime.now(UTC))
        try:
            result = _run(rt, tenant, source, args)
        except Exception as exc:  # noqa: BLE001 - the warehouse could not be opened or migrated
            log.error("sync.failed", error_class=type(exc).__name__, error=one_line(exc))
            return _settle(rt, args, None, one_line(exc))
        finally:
            with rt.lock:
                rt.in_flight.pop(job.id, None)
        _count(tenant_name, result)
        defer_identity(rt.app, tenant_name)
        return _settle(rt, args, result, result.error)


def _run(rt: Runtime, tenant: Tenant, source: Any, args: dict[str, Any]) -> SourceResult:
    from lms_sync.cli import parse_since

    with rt.tenants.warehouse(tenant) as engine:
        # learner_sink: the run leaves identity matching to the tenant's debounced pass
        return run_source(engine, tenant.cfg, source, full_refresh=bool(args.get("full_refresh")),
                          since=parse_since(args.get("since")), stop=rt.stop, learner_sink=RowIds())


def _count(tenant: str, result: SourceResult) -> None:
    labels = (tenant, result.source_id)
    metrics.runs.labels(*labels, result.result).inc()
    metrics.run_duration.labels(*labels).observe(result.duration)
    metrics.records_read.labels(*labels).inc(sum(s.read for s in result.streams))
    metrics.records_written.labels(*labels).inc(sum(s.written for s in result.streams))
    if result.ok:
        metrics.last_success.labels(*labels).set_to_current_time()


def _settle(rt: Runtime, args: dict[str, Any], result: SourceResult | None, error: str | None) -> str:
    """Finish a job by its run's outcome: return, requeue, or give up (see the module doc)."""
    from procrastinate.exceptions import JobAborted

    if result is not None and result.ok:
        return "succeeded"
    log = get_logger("lms_sync.cluster", tenant=args["tenant"], source=args["source"])
    classes = {s.error_class for s in result.streams} if result is not None else set()
    if "Interrupted" in classes and rt.stop.is_set():
        requeued = defer_sync(rt.app, args) is not None
        metrics.retries.labels(args["tenant"], args["source"]).inc()
        log.warning("job.interrupted", requeued=requeued,
                    reason="the worker is stopping; the run committed its batch and resumes from it")
        raise JobAborted("interrupted")
    if "CredentialsRejected" in classes:
        log.error("job.failed", error=error, retry=False,
                  reason="the vendor rejected the credentials; a retry cannot help")
        raise RunFailed(error or "credentials rejected")
    tenant = rt.tenants.get(args["tenant"])
    # a tenant this worker could not load may load on another: the defaults' retries
    cluster = tenant.cfg.cluster if tenant else ClusterConfig()
    attempt = int(args.get("attempt") or 1)
    if attempt > cluster.retries:
        log.error("job.failed", error=error, attempt=attempt, retry=False,
                  reason=f"no retries left (cluster.retries: {cluster.retries})")
        raise RunFailed(error or "failed")
    wait = min(MAX_RETRY_WAIT, cluster.retry_wait_seconds * 2 ** (attempt - 1))
    queued = defer_sync(rt.app, {**args, "attempt": attempt + 1}, retry_in=wait) is not None
    metrics.retries.labels(args["tenant"], args["source"]).inc()
    log.warning("job.retried", error=error, attempt=attempt, next_attempt=attempt + 1,
                wait_seconds=wait, queued=queued)
    raise RunFailed(error or "failed")


def run_provision_job(rt: Runtime, job: Any, args: dict[str, Any]) -> str:
    """The body of the provisioning task (a worker thread); raises RunFailed or JobAborted."""
    from procrastinate.exceptions import JobAborted

    from lms_sync.provision.run import run_provision

    tenant_name, source_id = args["tenant"], args["source"]
    with structlog.contextvars.bound_contextvars(tenant=tenant_name, job_id=job.id):
        log = get_logger("lms_sync.cluster", source=source_id, task="provision")
        tenant = rt.tenant(tenant_name)
        if tenant is None:
            log.error("job.failed", retry=False, reason=f"tenant {tenant_name!r} is not loaded on "
                      "this worker (its file is missing or has an error; see tenant.skipped)")
            raise RunFailed(f"tenant {tenant_name!r} is not loaded")
        source = tenant.cfg.sources.get(source_id)
        if source is None or not source.enabled or source.provision is None or not source.provision.enabled:
            log.warning("job.dropped", reason="the source no longer provisions in the tenant's config")
            return "dropped"
        log.info("job.started", worker_id=job.worker_id, due=args.get("due"))
        with rt.lock:
            rt.in_flight[job.id] = InFlight(job.id, {**args, "task": "provision"}, datetime.now(UTC))
        try:
            with rt.tenants.warehouse(tenant) as engine:
                result = run_provision(engine, tenant.cfg, source, stop=rt.stop)
        except Exception as exc:  # noqa: BLE001 - the warehouse could not be opened or migrated
            log.error("job.failed", error_class=type(exc).__name__, error=one_line(exc), retry=False)
            raise RunFailed(one_line(exc)) from None
        finally:
            with rt.lock:
                rt.in_flight.pop(job.id, None)
    if result.ok:
        return f"provisioned: {result.sent['create']} created, {result.sent['update']} updated, " \
               f"{result.sent['deactivate']} deactivated, {result.failed} refused by the vendor"
    if result.result == "skipped":  # a daemon on the same warehouse is provisioning it
        return f"skipped: {result.error}"
    if result.error == "interrupted" and rt.stop.is_set():
        requeued = defer_provision(rt.app, tenant_name, source_id, args.get("due")) is not None
        log.warning("job.interrupted", requeued=requeued,
                    reason="the worker is stopping; the users sent so far are recorded")
        raise JobAborted("interrupted")
    why = ("the plan exceeds provision.max_deactivate_fraction; check it, then run "
           "`lms-sync provision --force`" if result.result == "refused" else
           "the next scheduled provisioning retries it")
    log.error("job.failed", error=result.error, retry=False, reason=why)
    raise RunFailed(result.error or result.result)


def defer_identity(app: Any, tenant: str) -> None:
    """Queue the tenant's identity pass unless one is already waiting (debounce)."""
    from procrastinate.exceptions import AlreadyEnqueued

    lock = identity_lock(tenant)
    try:
        app.configure_task(IDENTITY_TASK, lock=lock, queueing_lock=lock,
                           queue=SYNC_QUEUE).defer(tenant=tenant)
    except AlreadyEnqueued:
        pass  # the waiting pass will match this run's learners too


def run_identity_job(rt: Runtime, tenant_name: str) -> str:
    """The body of the identity task: one incremental pass over the tenant's warehouse."""
    with structlog.contextvars.bound_contextvars(tenant=tenant_name):
        tenant = rt.tenant(tenant_name)
        if tenant is None:
            return "dropped"
        started = time.monotonic()
        try:
            with rt.tenants.warehouse(tenant) as engine:
                result = identity.after_run(engine, tenant.cfg.identity, ())
        except Exception as exc:  # noqa: BLE001 - logged as one line; the next run queues a pass
            get_logger("lms_sync.cluster").error("identity.failed", error_class=type(exc).__name__,
                                                 error=one_line(exc))
            raise RunFailed(one_line(exc)) from None
        return f"{result.learners} learners matched in {time.monotonic() - started:.1f} s"
