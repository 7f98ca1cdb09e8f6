"""A tiny fake API for testing the HTTP client over real sockets."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from lms_sync.sandbox.server import FakeVendor, Request, Response, SandboxServer


class EchoApi(FakeVendor):
    """Token auth, a slow endpoint, a paged endpoint, header-based rate limits."""

    name = "echo"

    def __init__(self) -> None:
        super().__init__()
        self.token_version = 0
        self.token_fetches = 0
        self.seen_auth: list[str | None] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.rate_limit: tuple[int, float] | None = None  # (limit, window seconds)
        self._window: list[float] = []
        self.throttled = 0
        self.hold = threading.Event()
        self.hold.set()
        self.route("POST", "/token", self._token)
        self.route("GET", "/data", self._data)
        self.route("GET", "/slow", self._slow)
        self.route("GET", "/limited", self._limited)
        self.array_body = "[]"  # what /array answers, as is
        self.route("GET", "/array", self._array)

    def _array(self, req: Request, _m) -> Response:
        return Response(200, self.array_body.encode(), {"Content-Type": "application/json"})

    def _token(self, req: Request, _m) -> Response:
        if req.form().get("secret") != "s3cr3t-value":
            return Response.json({"message": "bad secret"}, 401)
        with self._lock:
            self.token_fetches += 1
            self.token_version += 1
            return Response.json({"token": f"tok-{self.token_version}"})

    def invalidate(self) -> None:
        with self._lock:
            self.token_version += 1

    def _authorized(self, req: Request) -> bool:
        self.seen_auth.append(req.headers.get("authorization"))
        return req.headers.get("authorization") == f"Bearer tok-{self.token_version}"

    def _data(self, req: Request, _m) -> Response:
        if not self._authorized(req):
            return Response.json({"message": "expired"}, 401)
        self.hold.wait(5)
        return Response.json({"ok": True, "q": req.arg("q")})

    def _slow(self, req: Request, _m) -> Response:
        with self._lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        time.sleep(0.05)
        with self._lock:
            self.in_flight -= 1
        return Response.json({"ok": True})

    def _limited(self, req: Request, _m) -> Response:
        limit, window = self.rate_limit or (1000, 1.0)
        with self._lock:
            now = time.monotonic()
            self._window = [t for t in self._window if now - t < window]
            if len(self._window) >= limit:
                self.throttled += 1
                reset = window - (now - self._window[0])
                return Response.json({"message": "Too Many Attempts."}, 429,
                                     **{"Retry-After": f"{reset:.2f}",
                                        "X-RateLimit-Limit": str(limit),
                                        "X-RateLimit-Remaining": "0",
                                        "X-RateLimit-Reset": f"{reset:.2f}"})
            self._window.append(now)
            remaining = limit - len(self._window)
            reset = window - (now - self._window[0])
        return Response.json({"ok": True}, **{"X-RateLimit-Limit": str(limit),
                                              "X-RateLimit-Remaining": str(remaining),
                                              "X-RateLimit-Reset": f"{reset:.3f}"})


@pytest.fixture
def echo() -> Iterator[tuple[EchoApi, SandboxServer]]:
    api = EchoApi()
    with SandboxServer(api) as server:
        yield api, server
