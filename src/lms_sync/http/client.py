"""HttpClient: one per source; httpx + tenacity at the request level.

* pooling and timeouts from the source's ``http`` settings; a User-Agent naming lms-sync;
* retries (tenacity, wrapping one request, never a stream) on 429, 5xx and transport
  errors (a connection refused, or reset in the middle of a body; a read timeout; a body
  cut short, also one without a length whose JSON or XML stops early: see
  :func:`lms_sync.http.errors.classify_body`), exponential backoff with jitter, honouring
  ``Retry-After``, capped, bounded; a page is never used in part; each retry logs
  ``http.retry`` with status, attempt and wait (never headers/bodies);
* auth hooks (:mod:`lms_sync.http.auth`): a 401 refreshes a token once, single-flight;
  a second 401 with a fresh token is :class:`CredentialsRejected`;
* a request budget (:mod:`lms_sync.http.budget`);
* an absolute URL (a ``next`` link) is followed only if scheme, host and port equal the
  base URL's and it has no userinfo, checked before anything is sent;
* a bare JSON array body that grows with the customer (``get_json_array``) is spooled
  to a temporary file as it arrives (within the retried request) and decoded item by
  item, so neither its text nor its parsed items are held whole.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import io
import random
import ssl
import tempfile
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import IO, Any, TypeVar

import httpx
import orjson
from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt

from lms_sync import __version__, metrics
from lms_sync.errors import CredentialsRejected, DataError, RetriableError
from lms_sync.http import jsonarray
from lms_sync.http.auth import Auth
from lms_sync.http.budget import RequestBudget
from lms_sync.http.errors import (
    ErrorDescriber,
    classify_body,
    classify_response,
    classify_transport,
)
from lms_sync.http.fanout import interleave
from lms_sync.http.paging import Key, Page, Paginator, dig
from lms_sync.logs import get_logger

T = TypeVar("T")
R = TypeVar("R")

USER_AGENT = f"lms-sync/{__version__} (+https://github.com/lms-sync/lms-sync)"

_METRICS = {"requests": metrics.http_requests, "retries": metrics.http_retries,
            "throttled": metrics.http_throttled}

SPOOL_MAX = 256 * 1024
"""A spooled body (``get_json_array``) bigger than this goes to a temporary file."""


class HttpClient:
    """The HTTP client of one source."""

    def __init__(
        self,
        source_id: str,
        base_url: str,
        *,
        auth: Auth | None = None,
        timeout: float = 30.0,
        max_attempts: int = 6,
        max_wait: float = 60.0,
        max_concurrency: int = 4,
        requests_per_second: float | None = None,
        burst: int | None = None,
        describe_error: ErrorDescriber | None = None,
        backoff_base: float = 0.5,
    ) -> None:
        self.source_id = source_id
        self.base_url = httpx.URL(base_url.rstrip("/") + "/")
        self.auth = auth or Auth()
        self.max_attempts = max_attempts
        self.max_wait = max_wait
        self.backoff_base = backoff_base
        self.describe_error = describe_error
        self.budget = RequestBudget(max_concurrency, requests_per_second, burst)
        limits = httpx.Limits(max_connections=max_concurrency + 2,
                              max_keepalive_connections=max_concurrency + 2)
        self._http = httpx.Client(
            timeout=httpx.Timeout(timeout), limits=limits, follow_redirects=False,
            headers={"User-Agent": USER_AGENT}, verify=_tls_context(),
        )
        self.stats: Counter[str] = Counter()
        self._stats_lock = threading.Lock()
        self.log = get_logger("lms_sync.http", source=source_id)

    # ------------------------------------------------------------------ public

    @property
    def raw(self) -> httpx.Client:
        """The underlying httpx client, without our auth (for token endpoints)."""
        return self._http

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> HttpClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def url(self, path_or_url: str) -> httpx.URL:
        """Resolve a path against the base URL, or take an absolute URL (a vendor's next
        link); either way the result must have the base URL's origin and no userinfo, or
        nothing is sent (``HTTP://``, ``//host`` and the like included)."""
        try:
            if "://" in path_or_url or path_or_url.startswith("//"):  # a link, maybe elsewhere
                url = self.base_url.join(httpx.URL(path_or_url))
            else:  # a path under the base URL (one parse, not two: this is per request)
                url = self.base_url.join(path_or_url.lstrip("/"))
        except httpx.InvalidURL:
            raise DataError("the vendor returned a link that is not a valid URL", source=self.source_id,
                            fix="a vendor fault: report it to the vendor") from None
        if url.userinfo or (url.scheme, url.host, url.port) != (
            self.base_url.scheme, self.base_url.host, self.base_url.port
        ):
            raise DataError(
                f"refusing to follow a link to another origin ({url.scheme}://{url.host}"
                f"{':' + str(url.port) if url.port else ''})",
                source=self.source_id, path=url.path,
                fix="the vendor returned a next link outside base_url; check base_url",
            )
        return url

    def request(self, method: str, path_or_url: str, *, params: Any = None, json: Any = None,
                data: Any = None, headers: dict[str, str] | None = None,
                accept: Iterable[int] = (), spool: bool = False) -> httpx.Response:
        """Send one request with retries, auth and the budget; raise on failure.

        Statuses in ``accept`` are returned instead of raised (e.g. 404 "no record").
        ``spool``: a 2xx body is not read into memory but copied, as it arrives, to a
        temporary file (``spooled(response)``); a failure while it arrives is retried.
        """
        url = self.url(path_or_url)
        accepted = frozenset(accept)
        retrying = Retrying(
            stop=stop_after_attempt(self.max_attempts),
            retry=retry_if_exception_type(RetriableError),
            wait=self._wait,
            before_sleep=self._log_retry,
            reraise=True,
        )
        return retrying(self._send_authenticated, method, url, params, json, data, headers or {},
                        accepted, spool)

    def get(self, path_or_url: str, **kw: Any) -> httpx.Response:
        return self.request("GET", path_or_url, **kw)

    def get_json(self, path_or_url: str, **kw: Any) -> Any:
        return self.json_of(self.get(path_or_url, **kw))

    def json_of(self, response: httpx.Response) -> Any:
        """The response's JSON body (orjson: UTF-8, as JSON must be); DataError if not JSON."""
        try:
            return orjson.loads(response.content)
        except orjson.JSONDecodeError:
            raise DataError("the body is not valid JSON", source=self.source_id,
                            path=response.request.url.path, status=response.status_code) from None

    def paginate(self, path: str, paginator: Paginator, *, params: dict[str, Any] | None = None,
                 records: Key = None, decode: Callable[[httpx.Response], Any] | None = None,
                 fix: str = "") -> Iterator[Page]:
        """The page loop, once for every connector: each page of the list at ``path``.

        The first request sends ``params`` with the paginator's own; a page the paginator
        says is a link is asked as-is. The body is decoded (JSON, or ``decode``) and its
        rows taken from ``records`` (a dotted key or a function of the body; None: the
        body is the list); rows that are not a list of objects are a DataError (``fix``
        says what to check). The paginator reads the page before it is yielded, so a
        paging loop stops before the rows repeat, and rows a walk already read are
        dropped (:meth:`Paginator.fresh`).
        """
        number = 0
        while paginator.has_next:
            request = paginator.next_request()
            if request.url:
                response = self.get(request.url)
            else:
                response = self.get(path, params={**(params or {}), **request.params})
            body = decode(response) if decode is not None else self.json_of(response)
            rows = body if records is None else dig(body, records)
            if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
                what = f"has no {records!r} list" if isinstance(records, str) else "is not a list"
                raise DataError(f"the page {what} of objects", source=self.source_id,
                                path=response.request.url.path, fix=fix)
            number += 1
            page = Page(path, rows, body, number, response)
            try:
                paginator.update_state(page)
            except DataError as exc:
                raise DataError(exc.message, source=self.source_id, path=exc.path or path,
                                fix=exc.fix or fix) from None
            page.rows = paginator.fresh(rows)
            yield page

    def get_json_array(self, path_or_url: str, *, fix: str | None = None, **kw: Any) -> Iterator[Any]:
        """A JSON array body whose items are decoded one at a time as they are consumed
        (see :mod:`lms_sync.http.jsonarray`): the request, with its retries, is sent now
        and its body spooled to a temporary file; a body that is not an array is a
        DataError now (with ``fix``), an invalid item when it is reached."""
        response = self.get(path_or_url, spool=True, **kw)
        path, body = response.request.url.path, spooled(response)
        head = body.read(4096)
        while head and not head.strip() and (more := body.read(4096)):
            head = more
        if not jsonarray.is_array(head.decode("latin-1")):
            text = head + body.read()  # not the array: an error body, read for its message
            body.close()
            what = self.describe_error(httpx.Response(response.status_code, headers=response.headers,
                                                      content=text, request=response.request)) \
                if self.describe_error else None
            raise DataError(f"expected a JSON array: {what or 'the body is something else'}",
                            source=self.source_id, path=path, status=response.status_code,
                            fix=fix or "")
        body.seek(0)
        return self._items(io.TextIOWrapper(body, encoding=response.encoding or "utf-8"), path)

    def _items(self, text: IO[str], path: str) -> Iterator[Any]:
        try:
            yield from jsonarray.items(text)
        except (ValueError, UnicodeDecodeError) as exc:
            raise DataError(f"the JSON array is malformed: {exc}", source=self.source_id, path=path,
                            fix="a vendor fault: the next run reads it again; if it persists, "
                                "report it to the vendor") from None
        finally:
            text.close()

    def map_concurrent(self, fn: Callable[[T], R], items: Iterable[T],
                       window: int | None = None) -> Iterator[R]:
        """Run ``fn`` over ``items`` on up to max_concurrency threads, yielding in order.

        At most ``window`` results are pending or held at once (default 4 x the workers,
        room to keep every worker busy while the head is slow); pass a smaller one when
        each result is big. Log context (run_id, source, stream) is carried into the
        worker threads.
        """
        workers = self.budget.max_concurrency
        window = max(1, window or workers * 4)
        if workers <= 1:
            yield from map(fn, items)
            return
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix=self.source_id) as pool:
            pending: list[Any] = []
            for item in items:
                ctx = contextvars.copy_context()
                pending.append(pool.submit(ctx.run, fn, item))
                if len(pending) >= window:
                    yield pending.pop(0).result()
            for future in pending:
                yield future.result()

    def interleave(self, fn: Callable[[T], Iterable[R]], items: Iterable[T]) -> Iterator[R]:
        """Walk ``fn(item)`` (e.g. one parent's pages) for up to max_concurrency items at once,
        yielding values as they arrive with bounded memory (see :mod:`lms_sync.http.fanout`).

        The queue holds half as many values as there are workers: each worker holds one
        more while it waits, and the consumer, not the vendor, is the slow side (Absorb,
        4 workers: 6 pages of 500 enrollments in memory, not 12)."""
        workers = self.budget.max_concurrency
        return interleave(fn, items, workers, queue_size=max(1, workers // 2))

    # ------------------------------------------------------------------ internals

    def _count(self, key: str) -> None:
        with self._stats_lock:
            self.stats[key] += 1
        if (metric := _METRICS.get(key)) is not None:  # live: /metrics during a long run too
            metric.labels(self.source_id).inc()

    def _send_authenticated(self, method: str, url: httpx.URL, params: Any, json: Any, data: Any,
                            headers: dict[str, str], accepted: frozenset[int],
                            spool: bool = False) -> httpx.Response:
        refreshed = False
        while True:
            auth_headers, generation = self.auth.headers(self._http)
            response = self._send(method, url, params, json, data, {**headers, **auth_headers}, spool)
            if response.status_code == 401 and 401 not in accepted:
                if self.auth.refreshable and not refreshed:
                    self._count("reauth")
                    self.log.info("http.reauth", path=url.path)
                    self.auth.refresh(self._http, generation)
                    refreshed = True
                    continue
                error = classify_response(response, self.source_id, self.describe_error)
                raise CredentialsRejected(
                    "credentials rejected" + (" even after re-authenticating" if refreshed else ""),
                    source=self.source_id, path=url.path, status=401,
                    fix=self.auth.rejected_fix,
                ) from error
            if response.status_code in accepted:
                return response
            error = classify_response(response, self.source_id, self.describe_error)
            if error is not None:
                if isinstance(error, RetriableError) and error.retry_after:
                    self.budget.pause(min(error.retry_after, self.max_wait))
                raise error
            return response

    def _send(self, method: str, url: httpx.URL, params: Any, json: Any, data: Any,
              headers: dict[str, str], spool: bool = False) -> httpx.Response:
        with self.budget:
            self._count("requests")
            try:
                request = self._http.build_request(method, url, params=params, json=json, data=data,
                                                   headers=headers)
                response = self._http.send(request, stream=True)
                try:
                    size = _spool(response) if spool and response.is_success else len(response.read())
                finally:
                    response.close()
                # a read, closed stream and its Response refer to each other: dropped, the
                # body is freed with its page, not at the next full cyclic GC (peak RSS)
                response.stream = httpx.ByteStream(b"")
            except (httpx.TransportError, httpx.DecodingError) as exc:
                self._count("transport_errors")
                raise classify_transport(exc, self.source_id, url.path) from None
        body = response.extensions.get("lms_sync.spooled")
        if (cut := classify_body(response, self.source_id, body)) is not None:
            self._count("truncated_bodies")  # never used in part: asked for again
            if body is not None:
                body.close()
            raise cut
        if response.status_code == 429:
            self._count("throttled")
        self.budget.observe(response.headers)
        self.log.debug("page.fetched", method=method, path=url.path, status=response.status_code,
                       bytes=size, ms=round(response.elapsed.total_seconds() * 1000, 1))
        return response

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        retry_after = getattr(exc, "retry_after", None)
        if retry_after is not None:
            return min(retry_after, self.max_wait)
        backoff = self.backoff_base * (2 ** (state.attempt_number - 1))
        return min(self.max_wait, backoff * (0.5 + random.random()))  # noqa: S311 - jitter

    def _log_retry(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        self._count("retries")
        self.log.warning(
            "http.retry",
            status=getattr(exc, "status", None),
            error=type(exc).__name__ if exc else None,
            path=getattr(exc, "path", None),
            attempt=state.attempt_number,
            wait=round(state.upcoming_sleep, 3),
        )


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """One TLS context per process, as httpx would make it (certifi, SSL_CERT_FILE/DIR):
    a context costs ~28 ms of CPU to build, and a worker pool builds a client a run."""
    return httpx.create_ssl_context()


def _spool(response: httpx.Response) -> int:
    """Copy the body as it arrives to memory, then past ``SPOOL_MAX`` to an unnamed
    temporary file (where none can be made, it stays in memory); its size."""
    body: IO[bytes] = io.BytesIO()
    to_disk = True
    try:
        for part in response.iter_bytes():
            body.write(part)
            if to_disk and isinstance(body, io.BytesIO) and body.tell() > SPOOL_MAX:
                to_disk = False
                with contextlib.suppress(OSError):  # no writable temp dir: keep it in memory
                    disk = tempfile.TemporaryFile(prefix="lms-sync-body-")  # noqa: SIM115
                    disk.write(body.getbuffer())
                    body = disk
    except BaseException:
        body.close()
        raise
    size = body.tell()
    body.seek(0)
    response.extensions["lms_sync.spooled"] = body
    return size


def spooled(response: httpx.Response) -> IO[bytes]:
    """The body of a response sent with ``spool=True``, at its start; the caller closes it."""
    return response.extensions["lms_sync.spooled"]
