"""``lms-sync worker``: one process of the pool.

Two procrastinate workers share the process and its event loop: one runs sync and
identity jobs (``--concurrency`` at once, each in a thread), the other the ticker
alone, so a tick is never stuck behind hours of Monotree sweep. Beside them: the
reaper (jobs of dead workers), a loop re-reading the tenant files, and ``/healthz`` +
``/metrics``.

SIGTERM/SIGINT: both workers stop fetching; runs in flight see the pipeline's stop
event, commit their batch and stop (``interrupted``; the job is queued again), within
``--shutdown-timeout``. A run still going after it (a vendor that does not answer) has
its rows marked ``interrupted``, its job queued again and closed ``aborted``, and the
process exits 0 without waiting for its thread. A second signal exits at once.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from lms_sync.cluster import jobs, reaper, ticker
from lms_sync.cluster.queue import (
    CONTROL_QUEUE,
    IDENTITY_TASK,
    PROVISION_TASK,
    SYNC_QUEUE,
    SYNC_TASK,
    TICK_TASK,
    QueueTarget,
    build_app,
    defer_provision_async,
    defer_sync_async,
)
from lms_sync.cluster.tenants import Tenants
from lms_sync.health import HealthServer
from lms_sync.logs import get_logger, one_line

FETCH_POLL_SECONDS = 2.0  # a job freed by its lock is not announced: polled this often


@dataclass
class Settings:
    target: QueueTarget
    concurrency: int = 4
    heartbeat_seconds: int = 10
    stalled_seconds: float = 60.0
    shutdown_timeout: float = 60.0
    reload_seconds: float = 5.0
    health_host: str = "0.0.0.0"  # noqa: S104 - inside a container by design
    health_port: int | None = None
    name: str = f"{socket.gethostname()}:{os.getpid()}"


def register_tasks(rt: jobs.Runtime) -> None:
    """The pool's tasks on ``rt.app``: sync, provision, identity and the periodic tick."""
    app = rt.app

    @app.task(name=SYNC_TASK, queue=SYNC_QUEUE, pass_context=True)
    def sync_source(context: Any, tenant: str, source: str, full_refresh: bool = False,
                    since: str | None = None, attempt: int = 1, due: str | None = None) -> str:
        args = {"tenant": tenant, "source": source, "full_refresh": full_refresh, "since": since,
                "attempt": attempt, "due": due}
        return jobs.run_sync_job(rt, context.job, args)

    @app.task(name=PROVISION_TASK, queue=SYNC_QUEUE, pass_context=True)
    def provision(context: Any, tenant: str, source: str, due: str | None = None) -> str:
        return jobs.run_provision_job(rt, context.job, {"tenant": tenant, "source": source, "due": due})

    @app.task(name=IDENTITY_TASK, queue=SYNC_QUEUE)
    def identity_pass(tenant: str) -> str:
        return jobs.run_identity_job(rt, tenant)

    @app.periodic(cron=ticker.CRON, periodic_id=ticker.PERIODIC_ID)
    @app.task(name=TICK_TASK, queue=CONTROL_QUEUE)
    async def tick(timestamp: int) -> str:
        counts = await ticker.tick(app, rt.tenants.all(), timestamp)
        return f"{counts['queued']} queued, {counts['coalesced']} coalesced, " \
               f"{counts['provisions']} provisioning runs queued"


def serve(settings: Settings, tenants: Tenants) -> int:
    return asyncio.run(_serve(settings, tenants))


async def _serve(settings: Settings, tenants: Tenants) -> int:
    from procrastinate.worker import Worker

    log = get_logger("lms_sync.cluster")
    loop = asyncio.get_running_loop()
    # sync jobs run in the loop's default executor: one thread per slot, plus the ticker's
    loop.set_default_executor(ThreadPoolExecutor(settings.concurrency + 4, thread_name_prefix="job"))
    app = build_app(settings.target, pool_size=4 + settings.concurrency // 4)
    rt = jobs.Runtime(app, tenants)
    register_tasks(rt)
    stopping = asyncio.Event()
    _on_signals(loop, rt, stopping)

    def worker(queue: str, concurrency: int, delete_jobs: str) -> Worker:
        return Worker(app=app, queues=[queue], name=f"{settings.name}/{queue}", concurrency=concurrency,
                      delete_jobs=delete_jobs, install_signal_handlers=False,
                      fetch_job_polling_interval=FETCH_POLL_SECONDS,
                      update_heartbeat_interval=settings.heartbeat_seconds,
                      stalled_worker_timeout=settings.stalled_seconds)

    async with app.open_async():
        # the ticker's jobs are deleted once done: one a minute, forever
        workers = [worker(SYNC_QUEUE, settings.concurrency, "never"), worker(CONTROL_QUEUE, 1, "successful")]
        running = [asyncio.create_task(w.run(), name=w.worker_name) for w in workers]
        side = [asyncio.create_task(_reload(tenants, settings.reload_seconds, stopping)),
                asyncio.create_task(reaper.reap_forever(app, settings.target, settings.heartbeat_seconds,
                                                        settings.stalled_seconds, stopping))]
        health = _health(settings, rt, workers) if settings.health_port is not None else None
        try:
            await _started(log, settings, tenants, workers, running)
            signalled = await _until_stop(stopping, running)
            await _shutdown(rt, workers, running, settings.shutdown_timeout)
            stopping.set()
            await asyncio.gather(*side, return_exceptions=True)
        finally:
            if health is not None:
                health.stop()
            tenants.close()
    log.info("worker.stopped", clean=True)
    return 0 if signalled else 1


async def _shutdown(rt: jobs.Runtime, workers: list[Any], running: list[asyncio.Task[Any]],
                    timeout: float) -> None:
    """Stop fetching, let runs commit their batch and stop; past ``timeout``, abandon them."""
    log = get_logger("lms_sync.cluster")
    log.info("worker.stopping", in_flight=_in_flight(rt), timeout_seconds=timeout)
    rt.stop.set()
    for w in workers:
        w.stop()
    _done, pending = await asyncio.wait(running, timeout=timeout)
    if pending:
        await _abandon(rt)
        log.warning("worker.stopped", clean=False, abandoned=sorted(rt.in_flight))
        _hard_exit(0)  # the stuck threads cannot be waited for


def _on_signals(loop: asyncio.AbstractEventLoop, rt: jobs.Runtime, stopping: asyncio.Event) -> None:
    received: list[str] = []

    def handle(sig: signal.Signals) -> None:
        received.append(sig.name)
        if len(received) > 1:  # a second signal: now; the reaper requeues what was running
            get_logger("lms_sync.cluster").warning("worker.forced_exit", signal=sig.name)
            _hard_exit(1)
        get_logger("lms_sync.cluster").info("worker.signal", signal=sig.name)
        rt.stop.set()  # runs in flight stop at their next committed batch
        stopping.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, handle, sig)


async def _started(log: Any, settings: Settings, tenants: Tenants, workers: list[Any],
                   running: list[asyncio.Task[Any]]) -> None:
    """Log ``worker.started`` once procrastinate has registered both workers."""
    while any(w.worker_id is None for w in workers):
        if any(t.done() for t in running):
            for t in running:
                exc = t.exception() if t.done() else None
                if exc is not None:
                    raise exc
            return
        await asyncio.sleep(0.05)
    log.info("worker.started", name=settings.name, worker_ids=[w.worker_id for w in workers],
             queue=settings.target.shown, concurrency=settings.concurrency,
             tenants=sorted(t.name for t in tenants.all()), skipped=tenants.skipped())


async def _until_stop(stopping: asyncio.Event, running: list[asyncio.Task[Any]]) -> bool:
    """Wait for a signal (True), or for a worker that ended by itself (False: its database
    went away; the process exits 1 so that its supervisor starts it again)."""
    waiter = asyncio.create_task(stopping.wait())
    done, _ = await asyncio.wait([waiter, *running], return_when=asyncio.FIRST_COMPLETED)
    waiter.cancel()
    failed = [t for t in done if t is not waiter]
    for task in failed:
        exc = task.exception()
        error = one_line(exc) if exc is not None else "it stopped by itself"
        get_logger("lms_sync.cluster").error("worker.failed", worker=task.get_name(), error=error)
    return not failed


async def _reload(tenants: Tenants, every: float, stopping: asyncio.Event) -> None:
    """Prepare the tenants' warehouses, then re-read the files every ``every`` seconds: a
    new or changed file needs no restart."""
    await asyncio.to_thread(tenants.prepare, tenants.all())
    get_logger("lms_sync.cluster").info("tenants.prepared", tenants=len(tenants.all()))
    while not stopping.is_set():
        try:
            await asyncio.wait_for(stopping.wait(), timeout=every)
        except TimeoutError:
            changed = await asyncio.to_thread(tenants.refresh)
            await asyncio.to_thread(tenants.prepare, changed)
            await asyncio.to_thread(tenants.cool)


def _in_flight(rt: jobs.Runtime) -> list[dict[str, Any]]:
    with rt.lock:
        return [{"job_id": j.job_id, "tenant": j.args["tenant"], "source": j.args["source"],
                 "task": j.args.get("task", "sync"), "since": j.started.isoformat()}
                for j in rt.in_flight.values()]


async def _abandon(rt: jobs.Runtime) -> None:
    """Runs that did not stop in time: rows ``interrupted``, job queued again and closed (a
    provisioning run has no row until it ends: its job is only queued again)."""
    from procrastinate.jobs import Status

    from lms_sync.scheduler import INTERRUPTED
    from lms_sync.warehouse import state

    with rt.lock:
        left = list(rt.in_flight.values())
    for job in left:
        tenant = rt.tenants.get(job.args["tenant"])
        try:
            if job.args.get("task") == "provision":
                await defer_provision_async(rt.app, job.args["tenant"], job.args["source"],
                                            job.args.get("due"))
            else:
                if tenant is not None:
                    with rt.tenants.warehouse(tenant) as engine:
                        state.fail_stale_runs(engine, INTERRUPTED, [job.args["source"]],
                                              since=job.started)
                await defer_sync_async(rt.app, job.args)
            await rt.app.job_manager.finish_job_by_id_async(job.job_id, status=Status.ABORTED,
                                                            delete_job=False)
        except Exception as exc:  # noqa: BLE001 - exiting; the reaper requeues it later
            get_logger("lms_sync.cluster").warning("job.unsettled", job_id=job.job_id,
                                                   error=one_line(exc))


def _hard_exit(code: int) -> None:
    logging.shutdown()
    os._exit(code)


def _health(settings: Settings, rt: jobs.Runtime, workers: list[Any]) -> HealthServer:
    from lms_sync.cluster.health import WorkerHealth
    from lms_sync.errors import UserError

    def status() -> dict[str, Any]:
        return {"name": settings.name, "worker_ids": [w.worker_id for w in workers],
                "queue": settings.target.shown, "tenants": sorted(t.name for t in rt.tenants.all()),
                "skipped": rt.tenants.skipped(), "in_flight": _in_flight(rt)}

    assert settings.health_port is not None
    try:
        server = WorkerHealth(settings.health_host, settings.health_port, settings.target, status,
                              alive=lambda: not rt.stop.is_set())
    except OSError as exc:
        raise UserError(f"cannot listen on {settings.health_host}:{settings.health_port} "
                        f"({exc.strerror or exc}), --health-port; choose a free port") from None
    return server.start()
