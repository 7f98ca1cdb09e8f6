"""The daemon's scheduler: one cron job per enabled source (docs/contracts.md,
"Data flow" and "Command line"), and one per source with an enabled, scheduled
``provision`` block (``<source>:provision``, :mod:`lms_sync.provision.run`).

APScheduler 3 ``BackgroundScheduler`` runs each source's job in a worker thread:
``max_instances=1`` and ``coalesce=True`` (a source never overlaps itself in this
process, missed fires collapse into one; a fire that comes while the source still
runs is logged ``sync.skipped`` and run as soon as that run ends, within the grace),
``misfire_grace_time`` and ``jitter`` from ``daemon:`` in the config. Across processes
the pipeline's per-source warehouse lock keeps two daemons from running the same source
at once (the loser logs ``sync.skipped``).

Stopping sets one :class:`threading.Event` that the pipeline checks after each
committed batch: a run in flight commits its batch and stops with ``interrupted``.
Runs left ``running`` by a killed process are marked ``abandoned`` — only under
the source's lock, so a live process's run is never touched.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from typing import Any

from apscheduler.events import (
    EVENT_JOB_ERROR,
    EVENT_JOB_EXECUTED,
    EVENT_JOB_MAX_INSTANCES,
    JobEvent,
    JobExecutionEvent,
    JobSubmissionEvent,
)
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from sqlalchemy import Engine

from lms_sync import metrics
from lms_sync.config import Config, SourceConfig
from lms_sync.cron import cron_trigger, crontab_day_of_week  # noqa: F401 - re-exported
from lms_sync.logs import get_logger, one_line
from lms_sync.pipeline import run_source
from lms_sync.provision.run import run_provision
from lms_sync.warehouse import state
from lms_sync.warehouse.dialect import LockBusy, source_lock

PROVISION = "provision"
ABANDONED = "abandoned: the process running it stopped without finishing"
INTERRUPTED = "interrupted"


def fail_abandoned_runs(engine: Engine, source_ids: list[str] | None = None,
                        window: float | None = None) -> dict[str, int]:
    """Mark ``running`` rows failed (``abandoned``) for every source whose lock is free.

    A source whose lock another live process holds is left alone: its running
    rows are that process's. ``window``: ``warehouse.reconnect_seconds``, how long taking
    a lock waits for an unreachable warehouse. Returns {source_id: rows marked}.
    """
    candidates = state.sources_with_running_runs(engine, source_ids)
    marked: dict[str, int] = {}
    for source_id in candidates:
        try:
            with source_lock(engine, source_id, window):
                n = state.fail_stale_runs(engine, ABANDONED, [source_id])
        except LockBusy:
            continue
        if n:
            marked[source_id] = n
    return marked


class Scheduler:
    """Runs every enabled source of ``cfg`` on its cron schedule until :meth:`shutdown`."""

    def __init__(self, engine: Engine, cfg: Config, sources: list[SourceConfig] | None = None) -> None:
        self.engine = engine
        self.cfg = cfg
        self.sources = sources if sources is not None else [s for s in cfg.sources.values() if s.enabled]
        self.stop = threading.Event()
        self.log = get_logger("lms_sync.scheduler")
        self._inflight: dict[str, datetime] = {}
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._stopped = False
        self._started = False
        self.last_results: dict[str, str] = {}
        self._scheduler = BackgroundScheduler(
            executors={"default": ThreadPoolExecutor(max_workers=max(1, min(len(self._job_specs()), 16)))},
            timezone=UTC,
        )
        self._scheduler.add_listener(self._on_job_error, EVENT_JOB_ERROR)
        self._scheduler.add_listener(self._on_overlap, EVENT_JOB_MAX_INSTANCES)
        self._scheduler.add_listener(self._on_job_done, EVENT_JOB_EXECUTED | EVENT_JOB_ERROR)
        self._missed: dict[str, datetime] = {}  # source -> a fire that came while it ran

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        daemon = self.cfg.daemon
        now = datetime.now(UTC)
        for job_id, _source, expr, tz in self._job_specs():
            trigger = cron_trigger(expr, tz, daemon.jitter_seconds)
            kwargs: dict[str, Any] = {}
            if daemon.run_on_start:
                kwargs["next_run_time"] = now
            self._scheduler.add_job(
                self._run_job, trigger, args=[job_id], id=job_id, name=job_id,
                max_instances=1, coalesce=True, misfire_grace_time=daemon.misfire_grace_seconds,
                replace_existing=True, **kwargs,
            )
        self._load_last_success()
        self._scheduler.start()
        self._started = True
        self.log.info("scheduler.started", jobs=self.jobs(), run_on_start=daemon.run_on_start,
                      misfire_grace_seconds=daemon.misfire_grace_seconds,
                      jitter_seconds=daemon.jitter_seconds)

    def shutdown(self, timeout: float | None = None) -> bool:
        """Stop scheduling, ask runs in flight to stop, wait up to ``timeout`` seconds.

        Returns True when every run finished in time. Otherwise the rows of the
        runs still in flight are marked failed (``interrupted``) and False is
        returned: the caller exits without waiting for them.
        """
        timeout = self.cfg.daemon.shutdown_timeout_seconds if timeout is None else timeout
        self.stop.set()
        if not self._started:
            self._stopped = True
            return True
        with self._lock:
            self._stopped = True
            waiting = sorted(self._inflight)
        if self._scheduler.running:
            self._scheduler.shutdown(wait=False)
        self.log.info("scheduler.stopping", in_flight=waiting, timeout_seconds=timeout)
        deadline = time.monotonic() + timeout
        with self._idle:
            while self._inflight and time.monotonic() < deadline:
                self._idle.wait(max(0.0, min(1.0, deadline - time.monotonic())))
            left = dict(self._inflight)
        for job_id, since in left.items():
            if ":" not in job_id:  # a provisioning run writes its row when it ends: none to mark
                self._mark_interrupted(job_id, since)
        self.log.info("scheduler.stopped", clean=not left, abandoned_in_flight=sorted(left),
                      results=dict(self.last_results))
        return not left

    @property
    def running(self) -> bool:
        from apscheduler.schedulers.base import STATE_RUNNING

        return self._scheduler.state == STATE_RUNNING and not self._stopped

    def jobs(self) -> list[dict[str, Any]]:
        out = []
        for job_id, source, expr, tz in self._job_specs():
            job = self._scheduler.get_job(job_id)
            when = getattr(job, "next_run_time", None) if job else None
            out.append({"source": source.id, "kind": source.kind, "schedule": expr, "timezone": tz,
                        "next_run": when.astimezone(UTC).isoformat() if when else None,
                        **({"job": job_id} if job_id != source.id else {})})
        return out

    def _job_specs(self) -> list[tuple[str, SourceConfig, str, str]]:
        """(job id, source, cron, timezone): a sync per source, and a provisioning job
        (``<source>:provision``) per source whose ``provision`` block is enabled and has a
        schedule."""
        out = []
        for source in self.sources:
            expr, tz = self.cfg.schedule_of(source)
            out.append((source.id, source, expr, tz))
            p = source.provision
            if p is not None and p.enabled and p.schedule:
                out.append((f"{source.id}:{PROVISION}", source, p.schedule, tz))
        return out

    def in_flight(self) -> list[str]:
        with self._lock:
            return sorted(self._inflight)

    # ------------------------------------------------------------------ the job

    def _run_job(self, job_id: str) -> None:
        source_id, _, what = job_id.partition(":")  # source ids have no ':'
        source = next(s for s in self.sources if s.id == source_id)
        with self._lock:
            if self._stopped:
                return
            self._inflight[job_id] = datetime.now(UTC)
        try:
            if what == PROVISION:
                outcome = run_provision(self.engine, self.cfg, source, stop=self.stop).result
            else:
                self._sweep(source_id)
                outcome = run_source(self.engine, self.cfg, source, stop=self.stop).result
            self.last_results[job_id] = outcome
        finally:
            with self._idle:
                self._inflight.pop(job_id, None)
                self._idle.notify_all()

    def _sweep(self, source_id: str) -> None:
        """Close a run a killed process left behind (only if we get the source's lock)."""
        try:
            fail_abandoned_runs(self.engine, [source_id], self.cfg.warehouse.reconnect_seconds)
        except Exception as exc:  # noqa: BLE001 - the run that follows reports a warehouse problem
            self.log.warning("scheduler.sweep_failed", source=source_id, error=one_line(exc))

    def _on_overlap(self, event: JobSubmissionEvent) -> None:
        """A fire came while the source's previous run was still going: it runs once that run
        ends, if that is within ``misfire_grace_seconds`` of the fire (see _on_job_done)."""
        when = min(event.scheduled_run_times) if event.scheduled_run_times else datetime.now(UTC)
        with self._lock:
            self._missed.setdefault(event.job_id, when)
        self.log.warning("sync.skipped", source=event.job_id, scheduled_for=when.isoformat(),
                         reason="the previous run of this source is still running",
                         fix="it runs once that run ends, if within daemon.misfire_grace_seconds")

    def _on_job_done(self, event: JobEvent) -> None:
        with self._lock:
            missed = self._missed.pop(event.job_id, None)
            stopped = self._stopped
        if missed is None or stopped:
            return
        late = (datetime.now(UTC) - missed).total_seconds()
        if late > self.cfg.daemon.misfire_grace_seconds:
            self.log.warning("sync.missed", source=event.job_id, scheduled_for=missed.isoformat(),
                             late_seconds=round(late), reason="the previous run ended too late; "
                             "the next scheduled run follows the schedule")
            return
        job = self._scheduler.get_job(event.job_id)
        if job is not None:  # now, instead of waiting for the next fire
            job.modify(next_run_time=datetime.now(UTC))

    def _on_job_error(self, event: JobExecutionEvent) -> None:
        # run_source never raises for a source's failure; this is a bug somewhere else
        self.log.error("scheduler.job_error", source=event.job_id, error_class=type(event.exception).__name__,
                       error=one_line(event.exception))

    def _mark_interrupted(self, source_id: str, since: datetime) -> None:
        """Close the rows of a run that did not stop in time (we hold its lock)."""
        try:
            state.fail_stale_runs(self.engine, INTERRUPTED, [source_id], since=since)
        except Exception as exc:  # noqa: BLE001 - shutting down; the next start marks it abandoned
            self.log.warning("scheduler.mark_failed", source=source_id, error=one_line(exc))

    def _load_last_success(self) -> None:
        """Seed the last-success gauge from the warehouse, so /metrics is right after a restart."""
        ids = [s.id for s in self.sources]
        try:
            rows = state.last_successes(self.engine, ids)
        except Exception:  # noqa: BLE001 - metrics only
            return
        for source_id, at in rows.items():
            if at.tzinfo is None:
                at = at.replace(tzinfo=UTC)
            metrics.last_success.labels(source_id).set(at.timestamp())
