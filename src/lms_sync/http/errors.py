"""Turning HTTP responses and transport failures into lms-sync errors, in one place."""

from __future__ import annotations

import email.utils
import time
from collections.abc import Callable

import httpx

from lms_sync.errors import (
    AuthError,
    DataError,
    RequestRejected,
    RetriableError,
    SourceError,
)

RETRIABLE_STATUSES = frozenset({429, 500, 502, 503, 504})

ErrorDescriber = Callable[[httpx.Response], str | None]
"""A connector's hook that reads its vendor's error body into one readable line."""


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def classify_response(
    response: httpx.Response, source: str, describe: ErrorDescriber | None = None
) -> SourceError | None:
    """None for a success; otherwise the error that says what to do about it."""
    status = response.status_code
    if status < 400:
        return None
    path = response.request.url.path
    detail = None
    if describe is not None:
        try:
            detail = describe(response)
        except Exception:  # noqa: BLE001 - a broken error body must not hide the status
            detail = None
    detail = f": {detail}" if detail else ""
    if status in RETRIABLE_STATUSES:
        return RetriableError(
            f"the vendor is busy or failing{detail}", source=source, path=path, status=status,
            retry_after=parse_retry_after(response.headers.get("Retry-After")),
        )
    if status == 401:
        return AuthError(f"credentials were not accepted{detail}", source=source, path=path,
                         status=status, fix="check the source's auth settings")
    if status == 403:
        return RequestRejected(f"access denied{detail}", source=source, path=path, status=status,
                               fix="grant the API user the permission/scope this endpoint needs")
    return RequestRejected(f"the vendor rejected the request{detail}", source=source, path=path,
                           status=status, fix="check the source's options and base_url")


def classify_transport(exc: httpx.TransportError, source: str, path: str) -> SourceError:
    if isinstance(exc, httpx.UnsupportedProtocol | httpx.InvalidURL):
        return RequestRejected(f"invalid URL ({type(exc).__name__})", source=source, path=path,
                               fix="check base_url")
    return RetriableError(f"network error: {type(exc).__name__}", source=source, path=path)


def data_error(response: httpx.Response, source: str, what: str) -> DataError:
    return DataError(f"unreadable response body: {what}", source=source,
                     path=response.request.url.path, status=response.status_code)
