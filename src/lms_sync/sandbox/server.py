"""A small framework for fake vendor servers over real HTTP on 127.0.0.1.

A :class:`FakeVendor` declares routes; :class:`SandboxServer` serves it with the
standard library's threading HTTP server (HTTP/1.1 keep-alive). Faults are
injected per server, in-process (``vendor.faults``) or over HTTP with
``POST /_sandbox/faults`` (JSON body of :class:`Faults` fields), so tests that
run lms-sync as a separate process can break a vendor too. With ``cache_pages`` (opt-in,
for benchmarks) a fake renders each list page once and then serves the stored bytes, so
the fake costs less CPU than the client it serves.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from lms_sync.sandbox.population import Population


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-case names
    body: bytes

    def arg(self, name: str, default: str | None = None) -> str | None:
        values = self.query.get(name)
        return values[0] if values else default

    def json(self) -> Any:
        return json.loads(self.body or b"null")

    def form(self) -> dict[str, str]:
        return {k: v[0] for k, v in parse_qs(self.body.decode()).items()}


@dataclass
class Response:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, data: Any, status: int = 200, **headers: str) -> Response:
        body = json.dumps(data, ensure_ascii=False, default=str).encode()
        return cls(status, body, {"Content-Type": "application/json; charset=utf-8", **headers})

    @classmethod
    def xml(cls, text: str, status: int = 200) -> Response:
        return cls(status, text.encode(), {"Content-Type": "application/xml; charset=utf-8"})

    @classmethod
    def text(cls, text: str, status: int = 200) -> Response:
        return cls(status, text.encode(), {"Content-Type": "text/plain; charset=utf-8"})


@dataclass
class Faults:
    """What to break. Counters decrement as faults fire."""

    latency_ms: float = 0.0
    fail_next: int = 0            # answer the next N requests with `fail_status`
    fail_status: int = 503
    retry_after: float | None = None  # sent with 429/503 faults when set
    truncate_next: int = 0        # cut the next N bodies in half (Content-Length kept)
    garble_next: int = 0          # send the next N 200 bodies cut in half as whole responses
    cut_unframed_next: int = 0    # send the next N 200 bodies with no Content-Length, closing
                                  # the connection halfway (a cut HTTP itself cannot see)
    fail_every: int = 0           # every Nth request fails with fail_status (0 = never)
    path_filter: str = ""         # faults only hit paths containing this

    def update(self, data: dict[str, Any]) -> None:
        names = {f.name for f in fields(self)}
        for key, value in data.items():
            if key not in names:
                raise KeyError(key)
            setattr(self, key, value)


Handler = Callable[[Request, Any], Response]
"""A route's handler: the request and the route's match (a :class:`_Segments`, used as an
``re.Match``: ``m.group(1)``, ``m["id"]``)."""


class FakeVendor:
    """Base for one fake vendor: routes, request log, faults, the optional page cache."""

    name = "vendor"

    def __init__(self, population: Population | None = None, cache_pages: bool = False) -> None:
        self.population = population or Population()
        self.cache_pages = cache_pages
        """Serve list pages rendered once (:meth:`page`); benchmarks turn it on, so that a fake
        re-serializing thousands of rows per request does not cost more than its client."""
        self.page_hits = 0
        self._pages: dict[tuple[Any, ...], Response] = {}
        self._pages_generation = 0
        self.faults = Faults()
        self.requests: Counter[str] = Counter()
        self.request_log: list[tuple[str, str]] = []
        self._routes: list[tuple[str, re.Pattern[str], Handler]] = []
        self._lock = threading.Lock()
        self._count = 0

    def source_config(self, base_url: str) -> dict[str, Any]:
        """The ``sources.<id>`` config block that points lms-sync at this fake."""
        raise NotImplementedError

    def make_progress(self, k: int) -> int:
        """``k`` learners make progress the vendor reports (a course completed, a result
        passed...), as between two syncs; returns how many did. The connector contract
        test (tests/connectors/test_contract.py) uses it on every fake."""
        raise NotImplementedError

    def page(self, request: Request, render: Callable[[], Response]) -> Response:
        """``render()``'s response, or with ``cache_pages`` the one stored for this request.

        Keyed by everything a page's bytes may depend on besides the data: method, path,
        the query in the order sent (a ``next`` link repeats it) and the Host (links are
        absolute). Only 200s are stored; the data changing (:meth:`clear_pages`) empties
        the cache, and a page rendered across such a change is not stored.
        """
        if not self.cache_pages:
            return render()
        key = (request.method, request.path, tuple((k, tuple(v)) for k, v in request.query.items()),
               request.headers.get("host"))
        with self._lock:
            hit = self._pages.get(key)
            generation = self._pages_generation
            if hit is not None:
                self.page_hits += 1
                return hit
        response = render()
        if response.status == 200:
            with self._lock:
                if generation == self._pages_generation:
                    self._pages[key] = response
        return response

    def clear_pages(self) -> None:
        """Forget every stored page: the fake's data changed (its mutators call this)."""
        with self._lock:
            self._pages.clear()
            self._pages_generation += 1

    def route(self, method: str, pattern: str, handler: Handler) -> None:
        self._routes.append((method, re.compile(f"^{pattern}$"), handler))

    def dispatch(self, request: Request) -> Response:
        with self._lock:
            self._count += 1
            n = self._count
            self.requests[request.path] += 1
            if len(self.request_log) < 100_000:
                self.request_log.append((request.method, request.path))
        fault = self._fault(request, n)
        if fault is not None:
            return fault
        for method, pattern, handler in self._routes:
            match = pattern.match(request.path)
            if match and method == request.method:
                return handler(request, _Segments(match))
        return self.not_found(request)

    def not_found(self, request: Request) -> Response:
        return Response.json({"message": f"no route {request.method} {request.path}"}, 404)

    def _fault(self, request: Request, n: int) -> Response | None:
        f = self.faults
        if f.latency_ms:
            time.sleep(f.latency_ms / 1000)
        if f.path_filter and f.path_filter not in request.path:
            return None
        fire = False
        with self._lock:
            if f.fail_next > 0:
                f.fail_next -= 1
                fire = True
        if f.fail_every and n % f.fail_every == 0:
            fire = True
        if not fire:
            return None
        headers = {}
        if f.retry_after is not None:
            headers["Retry-After"] = str(f.retry_after)
        return Response.json({"message": "injected fault"}, f.fail_status, **headers)

    def take_garble(self, path: str) -> bool:
        """A malformed body sent in full: no transport error, so no retry helps."""
        return self._use_fault("garble_next", path)

    def take_truncation(self) -> bool:
        with self._lock:
            if self.faults.truncate_next > 0:
                self.faults.truncate_next -= 1
                return True
        return False

    def take_unframed_cut(self, path: str) -> bool:
        """A body cut short with no length to tell: the client must notice, and ask again."""
        return self._use_fault("cut_unframed_next", path)

    def _use_fault(self, fault: str, path: str) -> bool:
        """Use up one of the counted ``fault`` if any is left and ``path`` passes the filter."""
        with self._lock:
            f = self.faults
            left = getattr(f, fault)
            if left > 0 and (not f.path_filter or f.path_filter in path):
                setattr(f, fault, left - 1)
                return True
        return False


class _Segments:
    """A route match whose groups are percent-decoded, as a web framework hands a handler
    its path parameters (``/users/a%2Fb/...`` names the user ``a/b``); routes match the
    path as sent, so an encoded ``/`` stays inside its segment."""

    def __init__(self, match: re.Match[str]) -> None:
        self._match = match

    def group(self, key: int | str = 0) -> str:
        return unquote(self._match.group(key))

    def __getitem__(self, key: int | str) -> str:
        return self.group(key)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # headers and body go out in two writes: with Nagle on, a keep-alive client waits
    # ~40 ms (delayed ACK) for every response's body
    disable_nagle_algorithm = True
    server: _Server

    def log_message(self, *args: Any) -> None:  # keep test output clean
        pass

    def _serve(self) -> None:
        parts = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        request = Request(self.command, parts.path, parse_qs(parts.query, keep_blank_values=True),
                          {k.lower(): v for k, v in self.headers.items()}, body)
        vendor = self.server.vendor
        if request.path == "/_sandbox/faults" and request.method == "POST":
            try:
                vendor.faults.update(request.json() or {})
                response = Response.json({"ok": True})
            except (KeyError, ValueError) as exc:
                response = Response.json({"error": str(exc)}, 400)
        else:
            try:
                response = vendor.dispatch(request)
            except Exception as exc:  # noqa: BLE001 - a fake's bug is a 500, as in life
                response = Response.json({"message": f"sandbox error: {exc!r}"}, 500)
        payload = response.body
        if response.status == 200 and payload and vendor.take_garble(request.path):
            payload = payload[: len(payload) // 2]
        truncated = response.status == 200 and payload and vendor.take_truncation()
        unframed = response.status == 200 and payload and vendor.take_unframed_cut(request.path)
        self.send_response(response.status)
        for key, value in response.headers.items():
            self.send_header(key, value)
        if unframed:  # the body ends where the connection closes: here, halfway
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(payload[: len(payload) // 2])
            self.close_connection = True
            return
        self.send_header("Content-Length", str(len(payload)))
        if truncated:
            self.send_header("Connection", "close")
        self.end_headers()
        if truncated:
            self.wfile.write(payload[: len(payload) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_DELETE = _serve


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], vendor: FakeVendor) -> None:
        self.vendor = vendor
        super().__init__(address, _Handler)


class SandboxServer:
    """Serve one :class:`FakeVendor` on 127.0.0.1 in a background thread."""

    def __init__(self, vendor: FakeVendor, port: int = 0, host: str = "127.0.0.1") -> None:
        self.vendor = vendor
        self._server = _Server((host, port), vendor)
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> SandboxServer:
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True,
                                        name=f"sandbox-{self.vendor.name}")
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> SandboxServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
