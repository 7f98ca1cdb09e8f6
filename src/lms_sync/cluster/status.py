"""``lms-sync cluster status``: per tenant and source, what the queue and the warehouse say.

Queued and running come from the job queue (a running job names the procrastinate
worker id that ``worker.started`` logs with the process's name); the last result
from the tenant's warehouse (``sync_runs``, as ``lms-sync status`` reads it); next
due from the source's cron, as the ticker reads it.
"""

from __future__ import annotations

from typing import Any

from lms_sync.cluster.queue import PROVISION_TASK, SYNC_TASK
from lms_sync.cluster.tenants import Tenant, Tenants
from lms_sync.logs import one_line
from lms_sync.status import _fmt, collect_status, next_run

HEADERS = ["tenant", "source", "queued", "running", "last_result", "last_run", "next_due"]


def collect(app: Any, tenants: Tenants) -> list[dict[str, Any]]:
    """One row per enabled source of every loaded tenant."""
    jobs: dict[tuple[str, str], dict[str, list[Any]]] = {}
    for task in (SYNC_TASK, PROVISION_TASK):
        for status in ("todo", "doing"):
            for job in app.job_manager.list_jobs(task=task, status=status):
                key = (job.task_kwargs.get("tenant"), job.task_kwargs.get("source"))
                jobs.setdefault(key, {}).setdefault(status, []).append(job)
    rows = []
    for tenant in sorted(tenants.all(), key=lambda t: t.name):
        last = _last_results(tenants, tenant)
        for source in tenant.cfg.sources.values():
            if not source.enabled:
                continue
            mine = jobs.get((tenant.name, source.id), {})
            result, at, error = last.get(source.id, ("never run", None, None))
            rows.append({"tenant": tenant.name, "source": source.id,
                         "queued": _queued(mine.get("todo", [])),
                         "running": _running(mine.get("doing", [])),
                         "last_result": result, "last_run": at, "error": error,
                         "next_due": next_run(tenant.cfg, source.id)})
    return rows


def _what(job: Any) -> list[str]:
    """What a job does beyond a plain run: provision, full refresh, since, attempt N."""
    kwargs = job.task_kwargs
    what = ["provision"] if job.task_name == PROVISION_TASK else []
    what += ["full refresh"] if kwargs.get("full_refresh") else []
    what += [f"since {kwargs['since']}"] if kwargs.get("since") else []
    attempt = kwargs.get("attempt") or 1
    return what + ([f"attempt {attempt}"] if attempt > 1 else [])


def _queued(jobs: list[Any]) -> str:
    """'-', or 'yes' per waiting job (a plain run, a full refresh, ... wait side by side)."""
    shown = []
    for job in sorted(jobs, key=lambda j: j.id):
        when = f" at {_fmt(job.scheduled_at)}" if job.scheduled_at else ""
        what = _what(job)
        shown.append(f"yes{when}" + (f" ({', '.join(what)})" if what else ""))
    return "; ".join(shown) or "-"


def _running(jobs: list[Any]) -> str:
    shown = []
    for job in jobs:
        what = _what(job)
        shown.append(f"worker {job.worker_id} (job {job.id}{''.join(', ' + w for w in what)})")
    return "; ".join(shown) or "-"


def _last_results(tenants: Tenants, tenant: Tenant) -> dict[str, tuple[str, Any, str | None]]:
    """source -> (result of its latest streams, when, first error); the warehouse's
    problem as every source's result if it cannot be read."""
    try:
        with tenants.warehouse(tenant) as engine:
            streams, _summary = collect_status(engine, tenant.cfg)
    except Exception as exc:  # noqa: BLE001 - one tenant's warehouse never hides the others
        problem = f"warehouse unreadable: {one_line(exc)}"
        return {s: ("unknown", None, problem) for s in tenant.cfg.sources}
    out: dict[str, tuple[str, Any, str | None]] = {}
    rank = {"running": 3, "failed": 2, "succeeded": 1}
    for row in streams:
        if row["last_run"] is None:
            continue
        result, at, error = out.get(row["source"], ("succeeded", row["last_run"], None))
        if rank.get(row["result"], 0) > rank.get(result, 0):
            result, error = row["result"], row["error"] or error
        out[row["source"]] = (result, max(at, row["last_run"]), error)
    return out


def render(rows: list[dict[str, Any]]) -> str:
    cells = [[_fmt(r[h]) for h in HEADERS] for r in rows]
    widths = [max([len(h), *(len(c[i]) for c in cells)]) for i, h in enumerate(HEADERS)]
    lines = ["  ".join(h.upper().ljust(w) for h, w in zip(HEADERS, widths, strict=True))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    lines += [f"  ! {r['tenant']}/{r['source']}: {r['error']}" for r in rows
              if r["error"] and r["last_result"] != "succeeded"]
    return "\n".join(lines)
