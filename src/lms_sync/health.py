"""The daemon's health and metrics endpoint (standard library HTTP server).

``GET /healthz``: 200 ``{"status": "ok", ...}`` while the scheduler runs and the
warehouse answers ``SELECT 1``; otherwise 503 ``{"status": "unavailable",
"reason": ...}``. ``GET /metrics``: the Prometheus text exposition of
:data:`lms_sync.metrics.registry`.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import Engine, text

from lms_sync import metrics
from lms_sync.logs import get_logger, one_line, redactor


def warehouse_problem(engine: Engine) -> str | None:
    """None if the warehouse answers ``SELECT 1``, else a one-line reason."""
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1")).scalar()
    except Exception as exc:  # noqa: BLE001 - reported, not raised
        return f"warehouse unreachable: {one_line(exc)}"
    return None


class HealthServer:
    """Serves /healthz and /metrics on a background thread."""

    def __init__(self, host: str, port: int, engine: Engine, status: Callable[[], dict[str, Any]],
                 alive: Callable[[], bool]) -> None:
        self.engine, self.status, self.alive = engine, status, alive
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802 - http.server API
                path = self.path.split("?", 1)[0]
                if path == "/healthz":
                    code, body = outer.health()
                    self._send(code, json.dumps(body, default=str).encode(), "application/json")
                elif path == "/metrics":
                    self._send(200, generate_latest(metrics.registry), CONTENT_TYPE_LATEST)
                else:
                    self._send(404, b'{"error": "not found; try /healthz or /metrics"}',
                               "application/json")

            def _send(self, code: int, body: bytes, ctype: str) -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:  # quiet: probes every few seconds
                pass

        self._httpd = ThreadingHTTPServer((host, port), Handler)
        self._httpd.daemon_threads = True
        self.host = host
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="lms-sync-health",
                                        daemon=True)

    def health(self) -> tuple[int, dict[str, Any]]:
        info = self.status()
        if not self.alive():
            return 503, {"status": "unavailable", "reason": "scheduler is not running", **info}
        problem = warehouse_problem(self.engine)
        if problem:
            return 503, {"status": "unavailable", "reason": redactor.scrub(problem), **info}
        return 200, {"status": "ok", "warehouse": "ok", **info}

    def start(self) -> HealthServer:
        self._thread.start()
        get_logger("lms_sync.health").info("health.listening", host=self.host, port=self.port,
                                           paths=["/healthz", "/metrics"])
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
