"""Jobs of dead workers: found by procrastinate's heartbeats, queued again.

A worker that is killed (kill -9, OOM, a lost machine) leaves its jobs ``doing`` and
their locks taken. Every worker beats procrastinate's heartbeat; one whose beat is
older than ``--stalled-seconds`` is dead, and ``JobManager.get_stalled_jobs`` lists
its jobs. Each is set back to ``todo`` (``retry_job_by_id``), or, if the source has a
run queued already (the unique queueing lock refuses a second one), closed as failed
while the queued run serves it. The run resumes from the cursor its last committed
batch saved; the warehouse marks the dead run's rows ``abandoned``.

One reaper at a time per queue: it holds a PostgreSQL advisory lock on a connection of
its own while it works, so two workers never requeue the same job twice, and a
reaper that dies releases the lock with its connection.
"""

from __future__ import annotations

import asyncio
from typing import Any

from lms_sync.cluster.queue import QueueTarget
from lms_sync.logs import get_logger, one_line


async def reap_forever(app: Any, target: QueueTarget, every: float, stalled_after: float,
                       stopping: asyncio.Event) -> None:
    """Every ``every`` seconds, requeue the jobs of workers silent for ``stalled_after`` s."""
    import psycopg

    log = get_logger("lms_sync.cluster")
    conn: Any = None
    while not stopping.is_set():
        try:
            await asyncio.wait_for(stopping.wait(), timeout=every)
            break
        except TimeoutError:
            pass
        try:
            if conn is None or conn.closed:
                conn = await psycopg.AsyncConnection.connect(
                    target.conninfo, options=target.options, autocommit=True)
            await reap_once(app, conn, target, stalled_after)
        except Exception as exc:  # noqa: BLE001 - the queue may be briefly away; try again
            log.warning("reaper.failed", error=one_line(exc))
            conn = None
    if conn is not None:
        await conn.close()


async def reap_once(app: Any, conn: Any, target: QueueTarget, stalled_after: float) -> int:
    """Requeue the stalled jobs if this worker gets the reaper's lock; returns how many."""
    key = target.lock_key("reaper")
    got = await (await conn.execute("SELECT pg_try_advisory_lock(%s)", [key])).fetchone()
    if not got[0]:
        return 0
    try:
        stalled = await app.job_manager.get_stalled_jobs(seconds_since_heartbeat=stalled_after)
        for job in stalled:
            await _requeue(app, job)
        return len(stalled)
    finally:
        await conn.execute("SELECT pg_advisory_unlock(%s)", [key])


async def _requeue(app: Any, job: Any) -> None:
    from procrastinate.exceptions import UniqueViolation
    from procrastinate.jobs import Status
    from procrastinate.utils import utcnow

    try:
        await app.job_manager.retry_job_by_id_async(job.id, retry_at=utcnow())
        action = "requeued"
    except UniqueViolation:  # a run of this source is queued already: it serves this one
        await app.job_manager.finish_job_by_id_async(job.id, status=Status.FAILED, delete_job=False)
        action = "coalesced"
    kwargs = job.task_kwargs
    get_logger("lms_sync.cluster").warning(
        "job.stalled", job_id=job.id, task=job.task_name, tenant=kwargs.get("tenant"),
        source=kwargs.get("source"), dead_worker_id=job.worker_id, action=action,
        reason="its worker stopped beating its heartbeat (killed or lost)")
