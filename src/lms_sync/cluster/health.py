"""A worker's ``/healthz``: the daemon's health server, asking the job queue instead of
one warehouse (a worker serves many). ``/metrics`` is the same registry."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

from lms_sync.cluster.queue import QueueTarget
from lms_sync.health import HealthServer
from lms_sync.logs import one_line


def queue_engine(target: QueueTarget) -> Engine:
    """A small SQLAlchemy engine on the queue's schema, for probes."""
    url = make_url(target.url).set(drivername="postgresql+psycopg")
    return create_engine(url, connect_args={"options": target.options, "connect_timeout": 5},
                         pool_size=1, max_overflow=1, pool_pre_ping=True)


class WorkerHealth(HealthServer):
    def __init__(self, host: str, port: int, target: QueueTarget, status: Callable[[], dict[str, Any]],
                 alive: Callable[[], bool]) -> None:
        super().__init__(host, port, queue_engine(target), status, alive)

    def health(self) -> tuple[int, dict[str, Any]]:
        info = self.status()
        if not self.alive():
            return 503, {"status": "unavailable", "reason": "the worker is stopping", **info}
        try:
            with self.engine.connect() as conn:
                ready = conn.execute(text("SELECT to_regclass('procrastinate_jobs')")).scalar()
        except Exception as exc:  # noqa: BLE001 - reported, not raised
            return 503, {"status": "unavailable", "reason": f"job queue unreachable: {one_line(exc)}",
                         **info}
        if ready is None:
            return 503, {"status": "unavailable", "reason": "the job queue has no procrastinate tables",
                         **info}
        return 200, {"status": "ok", "queue": "ok", **info}

    def stop(self) -> None:
        super().stop()
        self.engine.dispose()
