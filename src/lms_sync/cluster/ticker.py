"""The ticker: once a minute, queue every source whose cron fell due since the last tick.

A tick is a procrastinate periodic job: every worker runs procrastinate's deferrer,
and the database keeps one job per minute (``procrastinate_periodic_defers``), so
a ticker on every worker is safe. The tick for minute T queues the sources due in
(T - 1 min, T], read with the daemon's cron semantics (``lms_sync.cron``: crontab
weekday numbers, either day field, the source's time zone). A tick that runs late
still covers its own minute; a source already queued is coalesced (``sync.coalesced``).
A source whose ``provision`` block is enabled and has a ``schedule`` gets a
provisioning job when that cron falls due, as the daemon's ``<source>:provision``
job (the source's time zone too).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from lms_sync.cluster.queue import (
    CONTROL_QUEUE,
    TICK_TASK,
    defer_provision_async,
    defer_sync_async,
    sync_args,
)
from lms_sync.cluster.tenants import Tenant
from lms_sync.config import Config, SourceConfig
from lms_sync.cron import cron_trigger
from lms_sync.logs import get_logger

TICK = timedelta(minutes=1)
CRON = "* * * * *"  # procrastinate's cron for the tick task
PERIODIC_ID = "tick"


def _fires(expr: str, tz: str, start: datetime, end: datetime) -> bool:
    # crons fire on whole minutes: from start + 1 s, a fire at `start` (the previous
    # tick's) is excluded and one at `end` included
    when = cron_trigger(expr, tz).get_next_fire_time(None, start + timedelta(seconds=1))
    return when is not None and when <= end


def due_sources(cfg: Config, start: datetime, end: datetime) -> list[SourceConfig]:
    """The enabled sources of ``cfg`` whose schedule fires in (start, end]."""
    return [source for source in cfg.sources.values()
            if source.enabled and _fires(*cfg.schedule_of(source), start, end)]


def due_provisions(cfg: Config, start: datetime, end: datetime) -> list[SourceConfig]:
    """The enabled sources of ``cfg`` whose ``provision.schedule`` fires in (start, end]
    (the daemon's rule: an enabled block with a schedule; the source's time zone)."""
    due = []
    for source in cfg.sources.values():
        p = source.provision
        if source.enabled and p is not None and p.enabled and p.schedule and \
                _fires(p.schedule, cfg.schedule_of(source)[1], start, end):
            due.append(source)
    return due


async def tick(app: Any, tenants: Iterable[Tenant], timestamp: int) -> dict[str, int]:
    """Queue the sources of ``tenants`` due in the minute ending at ``timestamp``."""
    end = datetime.fromtimestamp(timestamp, UTC)
    counts = {"queued": 0, "coalesced": 0, "provisions": 0}
    for tenant in tenants:
        for source in due_sources(tenant.cfg, end - TICK, end):
            job = await defer_sync_async(app, sync_args(tenant.name, source.id, due=end.isoformat()))
            counts["queued" if job else "coalesced"] += 1
        for source in due_provisions(tenant.cfg, end - TICK, end):
            if await defer_provision_async(app, tenant.name, source.id, due=end.isoformat()):
                counts["provisions"] += 1
    get_logger("lms_sync.cluster").info("tick.done", due=end.isoformat(), **counts)
    return counts


async def defer_tick(app: Any, timestamp: int) -> int | None:
    """Queue the tick for ``timestamp`` as procrastinate's periodic deferrer does when the
    clock reaches it: once per timestamp, whoever asks (None if it was queued already)."""
    job = app.configure_task(TICK_TASK, queue=CONTROL_QUEUE, task_kwargs={"timestamp": timestamp}).job
    return await app.job_manager.defer_periodic_job(job, PERIODIC_ID, timestamp)
