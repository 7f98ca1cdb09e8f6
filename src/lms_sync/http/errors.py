"""Turning HTTP responses and transport failures into lms-sync errors, in one place."""

from __future__ import annotations

import email.utils
import io
import json
import time
from collections.abc import Callable
from typing import IO

import httpx
from lxml import etree

from lms_sync.errors import (
    AuthError,
    DataError,
    RequestRejected,
    RetriableError,
    SourceError,
)
from lms_sync.http import jsonarray

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


def classify_transport(exc: httpx.RequestError, source: str, path: str) -> SourceError:
    """A request that got no whole answer: a connection refused or reset (also in the middle
    of the body), a timeout, a body cut short of its length or undecodable (DecodingError:
    a compressed body cut short). All are retried but a URL that cannot be sent."""
    if isinstance(exc, httpx.UnsupportedProtocol | httpx.InvalidURL):
        return RequestRejected(f"invalid URL ({type(exc).__name__})", source=source, path=path,
                               fix="check base_url")
    return RetriableError(f"network error: {type(exc).__name__}", source=source, path=path)


_SAFE_XML = dict(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False)


def classify_body(response: httpx.Response, source: str,
                  body: IO[bytes] | None = None) -> SourceError | None:
    """A RetriableError for a 2xx JSON or XML body cut short where HTTP cannot tell: one
    with neither a Content-Length nor chunked framing, which ends wherever the connection
    closed. (A framed body cut short is a transport error already.) The page is then not
    used at all: the request is sent again. None otherwise; a body broken before its end
    is left to the caller's DataError. ``body``: the spooled body, if it was spooled."""
    headers = response.headers
    if (not response.is_success or "content-length" in headers
            or "chunked" in headers.get("transfer-encoding", "").lower()):
        return None
    kind = headers.get("content-type", "").lower()
    if "json" in kind:
        cut = _json_cut(body if body is not None else response.content, response.encoding)
    elif "xml" in kind:
        cut = _xml_cut(body.read() if body is not None else response.content)
    else:
        return None
    if body is not None:
        body.seek(0)
    if not cut:
        return None
    return RetriableError("the body ended early (the connection closed before the end of an "
                          "unframed response)", source=source, path=response.request.url.path,
                          status=response.status_code)


def _json_cut(content: bytes | IO[bytes], encoding: str | None) -> bool:
    if isinstance(content, bytes):
        try:
            json.loads(content)
        except json.JSONDecodeError as exc:
            return jsonarray.is_cut(exc)
        except ValueError:  # not text at all
            return False
        return False
    text = io.TextIOWrapper(content, encoding=encoding or "utf-8")
    try:
        for _ in jsonarray.items(text):  # a spooled array: read through, item by item
            pass
    except jsonarray.Truncated:
        return True
    except (ValueError, UnicodeDecodeError):
        return False
    finally:
        text.detach()  # the caller keeps the file
    return False


def _xml_cut(content: bytes) -> bool:
    """A document that parses as far as it goes but does not end: cut short."""
    parser = etree.XMLParser(**_SAFE_XML)
    try:
        parser.feed(content)
    except etree.XMLSyntaxError:
        return False  # broken before its end
    try:
        parser.close()
    except etree.XMLSyntaxError:
        return True
    return False


def data_error(response: httpx.Response, source: str, what: str) -> DataError:
    return DataError(f"unreadable response body: {what}", source=source,
                     path=response.request.url.path, status=response.status_code)
