"""A worker's ``/healthz``: the daemon's health server, asking the job queue instead of
one warehouse (a worker serves many). ``/metrics`` is the same registry."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from lms_sync.cluster.queue import QueueTarget, is_ready
from lms_sync.health import HealthServer
from lms_sync.logs import redactor


class WorkerHealth(HealthServer):
    def __init__(self, host: str, port: int, target: QueueTarget, status: Callable[[], dict[str, Any]],
                 alive: Callable[[], bool]) -> None:
        super().__init__(host, port, None, status, alive)  # type: ignore[arg-type] - no warehouse
        self.target = target

    def health(self) -> tuple[int, dict[str, Any]]:
        info = self.status()
        if not self.alive():
            return 503, {"status": "unavailable", "reason": "the worker is stopping", **info}
        try:
            ready = is_ready(self.target)
        except Exception as exc:  # noqa: BLE001 - reported, not raised
            return 503, {"status": "unavailable", "reason": redactor.scrub(str(exc)), **info}
        if not ready:
            return 503, {"status": "unavailable", "reason": "the job queue has no procrastinate tables",
                         **info}
        return 200, {"status": "ok", "queue": "ok", **info}
