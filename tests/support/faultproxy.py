"""A TCP hop that tests put between lms-sync and a real server (PostgreSQL, MariaDB, a
sandbox vendor) and then break on command, as a failover or a flaky network would.

It forwards bytes both ways, a thread per direction. ``cut(seconds)`` resets every open
connection (both ends: the server ends its session, so a PostgreSQL advisory lock or a
MySQL ``GET_LOCK`` held on it is released) and closes the listening port, so new
connections are refused, until ``seconds`` have passed or ``restore()`` is called.
``cut_after_upstream`` arms a cut for when the client has sent that many bytes (a point
in the middle of a run, whatever the machine's speed); ``reset_response`` resets the
connection that carries a request containing a marker once that many bytes of its
answer have gone back (a reset in the middle of a response body).

Standard library only. The port is picked below the kernel's ephemeral range, so no
outgoing connection can take it while it is closed.
"""

from __future__ import annotations

import contextlib
import random
import socket
import struct
import threading
import time

_PORTS = (20000, 32000)  # below net.ipv4.ip_local_port_range (32768-60999)


class FaultProxy:
    """Forward 127.0.0.1:<port> to ``target``; break it on command."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self.bytes_up = 0  # client -> server, forwarded so far
        self.cuts = 0
        self.resets = 0  # connections reset by reset_response
        self._lock = threading.Lock()
        self._links: set[_Link] = set()
        self._listener: socket.socket | None = None
        self._closed_until = 0.0  # monotonic; inf = until restore()
        self._cut_at_up: tuple[int, float | None] | None = None
        self._reset_marker: tuple[bytes, int] | None = None
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._accept_loop, name="fault-proxy", daemon=True)

    # ------------------------------------------------------------------ control

    def start(self) -> FaultProxy:
        self._listener = self._listen()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join(5)
        self._reset_all()

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def url_for(self, url: str) -> str:
        """``url`` (a database or vendor URL naming the target's port) sent through the proxy."""
        host, port = self.target
        return url.replace(f"{host}:{port}", f"127.0.0.1:{self.port}", 1)

    def cut(self, seconds: float | None = None) -> None:
        """Reset every connection and refuse new ones for ``seconds`` (None: until restore())."""
        with self._lock:
            self.cuts += 1
            self._closed_until = float("inf") if seconds is None else time.monotonic() + seconds
        self._reset_all()

    def restore(self) -> None:
        with self._lock:
            self._closed_until = 0.0

    @property
    def refusing(self) -> bool:
        return time.monotonic() < self._closed_until

    def cut_after_upstream(self, nbytes: int, seconds: float | None) -> None:
        """Cut (as ``cut(seconds)``) once clients have sent ``nbytes`` more bytes."""
        with self._lock:
            self._cut_at_up = (self.bytes_up + nbytes, seconds)

    def reset_response(self, marker: bytes, after: int) -> None:
        """Once, reset the connection whose client sends ``marker``, after ``after`` bytes
        of what the server sends back from then on."""
        with self._lock:
            self._reset_marker = (marker, after)

    # ------------------------------------------------------------------ internals

    def _listen(self) -> socket.socket:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        for _ in range(200):
            port = self.port or random.randrange(*_PORTS)  # noqa: S311 - not crypto
            try:
                listener.bind(("127.0.0.1", port))
                break
            except OSError:
                if self.port:  # our own port, taken while closed: try again shortly
                    time.sleep(0.05)
        else:
            listener.close()
            raise OSError("the fault proxy found no free port")
        listener.listen(64)
        listener.settimeout(0.05)
        self.port = listener.getsockname()[1]
        return listener

    def _accept_loop(self) -> None:
        while not self._stopped.is_set():
            if self.refusing:
                if self._listener is not None:
                    self._listener.close()  # a closed port: connections are refused
                    self._listener = None
                time.sleep(0.02)
                continue
            if self._listener is None:
                self._listener = self._listen()
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                continue
            self._open(client)
        if self._listener is not None:
            self._listener.close()

    def _open(self, client: socket.socket) -> None:
        client.settimeout(None)
        if self.refusing:  # accepted just as a cut began
            _abort(client)
            return
        try:
            server = socket.create_connection(self.target, timeout=5)
        except OSError:
            _abort(client)
            return
        server.settimeout(None)
        link = _Link(self, client, server)
        with self._lock:
            self._links.add(link)
        link.start()

    def _reset_all(self) -> None:
        with self._lock:
            links = list(self._links)
        for link in links:
            link.close()

    def _forget(self, link: _Link) -> None:
        with self._lock:
            self._links.discard(link)

    def _upstream(self, link: _Link, data: bytes) -> None:
        """Count what a client sent; fire the armed triggers."""
        cut: float | None | bool = False
        with self._lock:
            self.bytes_up += len(data)
            if self._cut_at_up is not None and self.bytes_up >= self._cut_at_up[0]:
                cut, self._cut_at_up = self._cut_at_up[1], None
            if self._reset_marker is not None and self._reset_marker[0] in data:
                link.down_budget, self._reset_marker = self._reset_marker[1], None
        if cut is not False:
            self.cut(cut)  # type: ignore[arg-type]


class _Link:
    """One proxied connection: a thread per direction."""

    def __init__(self, proxy: FaultProxy, client: socket.socket, server: socket.socket) -> None:
        self.proxy, self.client, self.server = proxy, client, server
        self.down_budget: int | None = None  # bytes left before a reset_response reset
        self._closed = threading.Event()

    def start(self) -> None:
        for src, dst, up in ((self.client, self.server, True), (self.server, self.client, False)):
            threading.Thread(target=self._pump, args=(src, dst, up), daemon=True,
                             name="fault-proxy-link").start()

    def _pump(self, src: socket.socket, dst: socket.socket, up: bool) -> None:
        try:
            while not self._closed.is_set():
                data = src.recv(65536)
                if not data:
                    break
                if up:
                    self.proxy._upstream(self, data)
                elif self.down_budget is not None and len(data) >= self.down_budget:
                    dst.sendall(data[: self.down_budget])
                    self.proxy.resets += 1
                    break
                elif self.down_budget is not None:
                    self.down_budget -= len(data)
                if self._closed.is_set():  # cut while this chunk was in hand: drop it
                    break
                dst.sendall(data)
        except OSError:
            pass
        self.close()

    def close(self) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        _abort(self.client)
        _abort(self.server)
        self.proxy._forget(self)


def _abort(sock: socket.socket) -> None:
    """Reset the connection (RST, not FIN) and wake a thread blocked reading it."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()
