"""Paginators: small stateful objects behind one interface, no HTTP inside.

A connector asks ``next_request()`` for what to send (extra params, or a URL to
follow), sends it, and reports what the page said with ``update()``. Each
paginator refuses to go round in a loop: a token or URL seen twice is a
:class:`~lms_sync.errors.DataError`, as is a page number past ``max_pages``.

    page number from 0 or 1   PageNumberPaginator(param="_offset", start=0)
    next link (absolute URL)  NextUrlPaginator()
    page token                PageTokenPaginator(param="pageToken")
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

from lms_sync.errors import DataError


@dataclass
class PageRequest:
    params: dict[str, Any] = field(default_factory=dict)
    url: str | None = None  # when set, follow this URL as-is (its query carries the paging)


class Paginator(ABC):
    has_next: bool = True
    pages: int = 0

    @abstractmethod
    def next_request(self) -> PageRequest: ...

    @abstractmethod
    def update(self, *, count: int, next_url: str | None = None, next_token: str | None = None,
               total_pages: int | None = None) -> None:
        """Record what the page just fetched said about the next one."""


class PageNumberPaginator(Paginator):
    """``param`` = page number, from ``start``; stops on a short or empty page.

    With ``page_size`` set, a page shorter than it is the last; ``total_pages``
    from the body is honoured when given; ``max_page`` guards endless paging.
    """

    def __init__(self, param: str = "page", start: int = 0, page_size: int | None = None,
                 max_page: int = 65535) -> None:
        self.param, self.page, self.page_size, self.max_page = param, start, page_size, max_page
        self.start = start

    def next_request(self) -> PageRequest:
        return PageRequest({self.param: self.page})

    def update(self, *, count: int, next_url: str | None = None, next_token: str | None = None,
               total_pages: int | None = None) -> None:
        self.pages += 1
        self.page += 1
        last = count == 0 or (self.page_size is not None and count < self.page_size)
        if total_pages is not None:
            last = last or (self.page - self.start) >= total_pages
        self.has_next = not last
        if self.has_next and self.page > self.max_page:
            raise DataError(f"paging went past page {self.max_page} without an end",
                            fix="the vendor keeps returning full pages; lower the page count")


class NextUrlPaginator(Paginator):
    """Follow the absolute ``next`` URL until it is null; a repeated URL is a loop."""

    def __init__(self) -> None:
        self._next: str | None = None
        self._seen: set[str] = set()

    def next_request(self) -> PageRequest:
        return PageRequest(url=self._next)

    def update(self, *, count: int, next_url: str | None = None, next_token: str | None = None,
               total_pages: int | None = None) -> None:
        self.pages += 1
        if not next_url:
            self.has_next = False
            return
        if next_url in self._seen:
            raise DataError("paging loop: the vendor returned the same next link twice",
                            path=next_url.split("?")[0], fix="report it to the vendor")
        self._seen.add(next_url)
        self._next = next_url


class PageTokenPaginator(Paginator):
    """Send ``param`` = the token from the previous page until none comes back."""

    def __init__(self, param: str = "pageToken") -> None:
        self.param = param
        self._token: str | None = None
        self._seen: set[str] = set()

    def next_request(self) -> PageRequest:
        return PageRequest({self.param: self._token} if self._token else {})

    def update(self, *, count: int, next_url: str | None = None, next_token: str | None = None,
               total_pages: int | None = None) -> None:
        self.pages += 1
        if not next_token:
            self.has_next = False
            return
        if next_token in self._seen:
            raise DataError("paging loop: the vendor returned the same page token twice",
                            fix="report it to the vendor")
        self._seen.add(next_token)
        self._token = next_token
