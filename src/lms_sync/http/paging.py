"""Paginators: small stateful objects behind one interface, no HTTP inside.

:meth:`lms_sync.http.client.HttpClient.paginate` owns the page loop: it asks
``next_request()`` what to send (extra params, or a URL to follow), sends it, and hands
the :class:`Page` (response, decoded body, rows) to ``update_state(page)``, which reads
what the page says about the next one (where, by the paginator's ``*_key``: data, not
code; dlt's ``update_state(response, data)`` shape). ``update()`` is the same step with
the facts given directly (tests drive it without HTTP). Each paginator refuses to go
round in a loop: a token or URL seen twice is a :class:`~lms_sync.errors.DataError`, as
is a page number past ``max_pages``.

    page number from 0 or 1   PageNumberPaginator(param="_offset", start=0)
    next link (absolute URL)  NextUrlPaginator(base=api_root)  (another origin: rebased)
    page token                PageTokenPaginator(param="pageToken")
    last sort value seen      SortValuePaginator(param="_offset", page_size=500)

:class:`SortGuard` checks that a list asked sorted by a value comes sorted (paging by the
last value seen over an unsorted list skips rows).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import SplitResult, parse_qsl, unquote, urlencode, urljoin, urlsplit, urlunsplit

from lms_sync.errors import DataError

if TYPE_CHECKING:
    import httpx

Key = str | Callable[[Any], Any] | None
"""Where a page body holds a fact: a dotted path (``links.next``), a function of the
body, or None (not given)."""


def dig(body: Any, key: Key) -> Any:
    """The value at ``key`` in ``body``; None where a step is missing or not an object."""
    if key is None:
        return None
    if callable(key):
        return key(body)
    for part in key.split("."):
        if not isinstance(body, dict):
            return None
        body = body.get(part)
    return body


@dataclass
class PageRequest:
    params: dict[str, Any] = field(default_factory=dict)
    url: str | None = None  # when set, follow this URL as-is (its query carries the paging)


@dataclass
class Page:
    """One page as fetched: what the paginator and the stream read."""

    path: str
    rows: list[Any]
    body: Any = None
    """The decoded body (JSON), or what the stream's decoder made of it (XML)."""
    number: int = 1
    """1 for the first page of the walk."""
    response: httpx.Response | None = None


class Paginator(ABC):
    has_next: bool = True
    pages: int = 0

    @abstractmethod
    def next_request(self) -> PageRequest: ...

    def update_state(self, page: Page) -> None:
        """Read what ``page`` says about the next one (the paginator's keys) and step."""
        self.update(count=len(page.rows))

    def fresh(self, rows: list[Any]) -> list[Any]:
        """The rows of the page just read that this walk has not read before."""
        return rows

    @abstractmethod
    def update(self, *, count: int, next_url: str | None = None, next_token: str | None = None,
               total_pages: int | None = None, keys: list[tuple[Any, Any]] | None = None) -> None:
        """Record what the page just fetched said about the next one (``keys``: each row's
        id and sort value, for paginators that page by value)."""


class PageNumberPaginator(Paginator):
    """``param`` = page number, from ``start``; stops on a short or empty page.

    With ``page_size`` set, a page shorter than it is the last, unless the body gives
    ``total_pages``: then that decides (a vendor may serve fewer rows a page than asked),
    and only an empty page ends it sooner; ``max_page`` guards endless paging.
    """

    def __init__(self, param: str = "page", start: int = 0, page_size: int | None = None,
                 max_page: int = 65535, *, total_pages_key: Key = None) -> None:
        self.param, self.page, self.page_size, self.max_page = param, start, page_size, max_page
        self.start, self.total_pages_key = start, total_pages_key

    def next_request(self) -> PageRequest:
        return PageRequest({self.param: self.page})

    def update_state(self, page: Page) -> None:
        self.update(count=len(page.rows), total_pages=_count(dig(page.body, self.total_pages_key)))

    def update(self, *, count: int, next_url: str | None = None, next_token: str | None = None,
               total_pages: int | None = None, keys: list[tuple[Any, Any]] | None = None) -> None:
        self.pages += 1
        self.page += 1
        last = count == 0 or (self.page_size is not None and count < self.page_size)
        if total_pages is not None:
            last = count == 0 or (self.page - self.start) >= total_pages
        self.has_next = not last
        if self.has_next and self.page > self.max_page:
            raise DataError(f"paging went past page {self.max_page} without an end",
                            fix="the vendor keeps returning full pages; lower the page count")


class NextUrlPaginator(Paginator):
    """Follow the absolute ``next`` URL until it is null; a repeated URL is a loop.

    With ``base`` (the API root the first request went to, e.g.
    ``https://acme.udemy.com/api-2.0/organizations/8888/``) a link must point under
    ``base``'s path, after resolving dot segments (``%2e%2e`` included), or it is a
    DataError; and a link on another origin (or carrying userinfo) is not followed there:
    its path and query are asked of ``base``'s origin instead, so credentials never leave
    it. ``rebased`` counts such links; the first is logged (``http.next_rebased``) on
    ``log``, so once a paginator, i.e. once a stream's list. With ``params`` (the first
    request's), a link that leaves some out (Udemy's documented ``?page=2``, docs/vendors/udemy.md)
    gets them back; the link's own values win.
    """

    def __init__(self, base: str | None = None, *, params: dict[str, Any] | None = None,
                 source: str = "", log: Any = None, next_key: Key = "next") -> None:
        self._next: str | None = None
        self._seen: set[str] = set()
        self.base, self.params, self.source, self.log = base, params, source, log
        self.next_key = next_key
        self.rebased = 0

    def next_request(self) -> PageRequest:
        return PageRequest(url=self._next)

    def update_state(self, page: Page) -> None:
        """An empty page ends the walk whatever its link says (no endless empty pages)."""
        link = dig(page.body, self.next_key) if page.rows else None
        self.update(count=len(page.rows), next_url=link if isinstance(link, str) else None)

    def update(self, *, count: int, next_url: str | None = None, next_token: str | None = None,
               total_pages: int | None = None, keys: list[tuple[Any, Any]] | None = None) -> None:
        self.pages += 1
        if not next_url:
            self.has_next = False
            return
        if self.base is not None:
            next_url = self._on_base(next_url, self.base)
        if self.params:
            url = urlsplit(next_url)
            query = {**self.params, **dict(parse_qsl(url.query, keep_blank_values=True))}
            next_url = urlunsplit(url._replace(query=urlencode(query), fragment=""))
        if next_url in self._seen:
            raise DataError("paging loop: the vendor returned the same next link twice",
                            source=self.source, path=next_url.split("?")[0],
                            fix="report it to the vendor")
        self._seen.add(next_url)
        self._next = next_url

    def _on_base(self, link: str, base: str) -> str:
        """``link`` as a URL on ``base``'s origin, refused unless under ``base``'s path."""
        root = urlsplit(base)
        try:
            url = urlsplit(urljoin(base, link))
            same = _origin(url) == _origin(root) and not (url.username or url.password)
        except ValueError:  # a bad port or bracketed host
            raise DataError("the vendor returned a next link that is not a valid URL",
                            source=self.source, fix="report it to the vendor") from None
        segments = unquote(url.path).split("/")
        if "." in segments or ".." in segments or not unquote(url.path).startswith(
                unquote(root.path)):
            raise DataError(f"refusing a next link outside the API path {root.path}",
                            source=self.source, path=url.path,
                            fix="the vendor's next link leaves the API; check base_url, else "
                                "report it to the vendor")
        if same:
            return url.geturl()
        self.rebased += 1
        if self.rebased == 1 and self.log is not None:
            self.log.info("http.next_rebased", origin=_origin_text(url), to=_origin_text(root),
                          path=url.path, note="next links name another origin: their path and "
                                              "page are asked of the configured one")
        return urlunsplit((root.scheme, root.netloc, url.path, url.query, ""))


_PORTS = {"http": 80, "https": 443}


def _origin(url: SplitResult) -> tuple[str, str, int | None]:
    scheme = url.scheme.lower()
    return scheme, (url.hostname or "").lower(), url.port or _PORTS.get(scheme)


def _origin_text(url: SplitResult) -> str:
    """scheme://host[:port], never the userinfo."""
    port = f":{url.port}" if url.port else ""
    return f"{url.scheme.lower()}://{(url.hostname or '').lower()}{port}"


class PageTokenPaginator(Paginator):
    """Send ``param`` = the token from the previous page until none comes back."""

    def __init__(self, param: str = "pageToken", *, token_key: Key = "nextPageToken") -> None:
        self.param, self.token_key = param, token_key
        self._token: str | None = None
        self._seen: set[str] = set()

    def next_request(self) -> PageRequest:
        return PageRequest({self.param: self._token} if self._token else {})

    def update_state(self, page: Page) -> None:
        token = dig(page.body, self.token_key)
        self.update(count=len(page.rows), next_token=str(token) if token else None)

    def update(self, *, count: int, next_url: str | None = None, next_token: str | None = None,
               total_pages: int | None = None, keys: list[tuple[Any, Any]] | None = None) -> None:
        self.pages += 1
        if not next_token:
            self.has_next = False
            return
        if next_token in self._seen:
            raise DataError("paging loop: the vendor returned the same page token twice",
                            fix="report it to the vendor")
        self._seen.add(next_token)
        self._token = next_token


class SortValuePaginator(Paginator):
    """Pages a list sorted by a value that only grows when a row changes (a last-edited
    time), by the last value seen rather than by page number.

    Page numbers over such a list skip rows: a row edited while the list is read moves to
    its end, every row after it shifts one place back, and the first row of the next page
    was on this one. Here each next page asks for rows whose value is ``>= bound`` (the
    last page's last value; the caller sends it as the vendor's filter), from page 0: an
    edited row moves ahead of the reader, where it is read (again), and nothing shifts
    under it. Rows of the bound's value that were already read come back at the head of
    the next filter's list: their whole pages are skipped by page number (``param``), and
    ``repeated`` names the rest on the page that comes back, for the caller to drop. So a
    run of one value longer than a page (a bulk import) is walked by page number, up to
    ``max_page``. A short page is the last. ``start`` is the first bound (an incremental
    run's window), or None for the whole list.
    """

    def __init__(self, param: str = "_offset", *, page_size: int, start: Any = None,
                 max_page: int = 65535, key: Callable[[Any], tuple[Any, Any]] | None = None,
                 where: Callable[[Any], dict[str, Any]] | None = None) -> None:
        self.param, self.page_size, self.max_page = param, page_size, max_page
        self.key, self.where = key, where  # a row's (id, sort value); the bound's filter params
        self.bound, self.page = start, 0
        self.repeated: set[Any] = set()  # ids of the last page that were read before
        self._read_at_bound: set[Any] = set()
        self._previous: list[Any] | None = None

    def next_request(self) -> PageRequest:
        params = self.where(self.bound) if self.where and self.bound is not None else {}
        return PageRequest({**params, self.param: self.page})

    def update_state(self, page: Page) -> None:
        keys = [self.key(row) for row in page.rows] if self.key else None
        self.update(count=len(page.rows), keys=keys)

    def fresh(self, rows: list[Any]) -> list[Any]:
        if not self.repeated or self.key is None:
            return rows
        key = self.key
        return [row for row in rows if key(row)[0] not in self.repeated]

    def update(self, *, count: int, next_url: str | None = None, next_token: str | None = None,
               total_pages: int | None = None, keys: list[tuple[Any, Any]] | None = None) -> None:
        keys = keys or []
        self.pages += 1
        ids = [k for k, _ in keys]
        if ids and ids == self._previous:
            raise DataError("paging loop: a page repeats the page before it",
                            fix="the vendor ignores the paging parameters; report it to the vendor")
        self._previous = ids
        self.repeated = {k for k in ids if k in self._read_at_bound}
        if count < self.page_size:
            self.has_next = False
            return
        last = keys[-1][1] if keys else None
        if last is not None and (self.bound is None or last > self.bound):
            self.bound = last
            self._read_at_bound = {k for k, v in keys if v is not None and v >= last}
        else:  # a whole page of the bound's value (or without values)
            self._read_at_bound.update(ids)
        # the next filter's list starts with the rows of the bound's value already read:
        # skip their whole pages (``repeated`` drops the rest)
        self.page = len(self._read_at_bound) // self.page_size
        if self.page > self.max_page:
            raise DataError(f"paging went past page {self.max_page} without an end",
                            fix="the vendor keeps returning full pages; lower the page count")


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


@dataclass
class ListPage:
    """One page of a walk of a list, for the walk's reader: its rows (less those the walk
    read before), the vendor's total on the walk's first page, and where the walk stands."""

    path: str
    rows: list[dict[str, Any]]
    total: int | None
    by_value: bool  # paged by a sort value: every row below its last row's value is read
    last: bool      # the walk's last page
    restart: bool = False  # the first page of a re-read from the list's start
    values: list[Any] | None = None
    """Each row's sort value, where the walk worked them out (paged by value), else None."""


class SortGuard:
    """Whether the pages of a list asked sorted by a value (ascending) come sorted: each
    page's values non-decreasing, and none below the previous page's last (the next page
    of a :class:`SortValuePaginator` starts at that bound). ``None`` values are not
    compared. A vendor that ignores the sort can pass by chance (pages of one row, rows
    already in order): compare what a walk read with the vendor's total as well.
    """

    def __init__(self) -> None:
        self.last: Any = None

    def ordered(self, values: Iterable[Any]) -> bool:
        """Check the next page's values (in the order served); False at the first one out
        of order."""
        for value in values:
            if value is None:
                continue
            if self.last is not None and value < self.last:
                return False
            self.last = value
        return True


# --------------------------------------------------------------------------- counted page numbers
# (issue #19, added with the sessions port: a page count the body gives, or works out)


class CountedPageNumberPaginator(PageNumberPaginator):
    """:class:`PageNumberPaginator` walked by the page count each page's body gives:
    ``total_pages_key``, else ``total_key`` (rows) over ``size_key`` (the page size the
    vendor served; ``page_size`` when it says none). When the body gives neither count,
    a ``next_key`` that is present and null ends the walk; a short or empty page always
    does. For lists whose ``next`` cannot be trusted (a sample showing only ``null``)."""

    def __init__(self, param: str = "page", start: int = 0, *, page_size: int,
                 total_pages_key: Key = None, total_key: Key = None, size_key: Key = None,
                 next_key: str | None = None, max_page: int = 65535) -> None:
        super().__init__(param, start, page_size, max_page, total_pages_key=total_pages_key)
        self.size, self.total_key, self.size_key, self.next_key = page_size, total_key, size_key, next_key

    def update_state(self, page: Page) -> None:
        pages, total = _count(dig(page.body, self.total_pages_key)), _count(dig(page.body, self.total_key))
        if pages is None and total is not None:
            pages = -(-total // (_count(dig(page.body, self.size_key)) or self.size))
        self.update(count=len(page.rows), total_pages=pages)
        if pages is None and self.next_key is not None:
            holder, _, leaf = self.next_key.rpartition(".")
            held = dig(page.body, holder) if holder else page.body
            if isinstance(held, dict) and leaf in held and held[leaf] is None:
                self.has_next = False
