"""Sorted walks, vendor-free (parameterized by the vendor's keys): a list sorted by a value
that grows when a row changes, walked by the last value seen under a SortGuard, read again by
page number when it turns out unsorted, every whole walk checked against its first page's
total (:class:`SortedWalk`); a stream incremental by that value (:class:`SortedStream`); a
small list read whole that also names ids for a lookup (:class:`LookupStream`). Tested
against the Absorb fake (tests/connectors/test_absorb.py)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, ClassVar

from lms_sync.canonical import Record, utc
from lms_sync.connectors.base import Checkpoint, ReadContext, Stream, whole
from lms_sync.connectors.rest import iso
from lms_sync.errors import DataError, IncompleteRead, RequestRejected
from lms_sync.http.paging import (
    ListPage,
    Page,
    PageNumberPaginator,
    PageRequest,
    Paginator,
    SortGuard,
    SortValuePaginator,
    dig,
)

if TYPE_CHECKING:
    from lms_sync.http.client import HttpClient


class Unsorted(Exception):
    """A page of a list asked sorted by a value is not in that order."""


class _Checked(Paginator):
    """``inner`` with the checks of a :class:`SortedWalk` run on each page before ``inner``
    reads it (so ``inner``'s own loop check never speaks first)."""

    def __init__(self, inner: Paginator, walk: SortedWalk, guard: SortGuard | None) -> None:
        self.inner, self.walk, self.guard = inner, walk, guard
        self.asked: Any = None
        self.previous: list[Any] | None = None
        self.values: list[Any] | None = None

    def next_request(self) -> PageRequest:
        request = self.inner.next_request()
        self.asked = request.params.get(self.walk.page_param)
        return request

    def fresh(self, rows: list[Any]) -> list[Any]:
        return self.inner.fresh(rows)

    def update(self, *, count: int, next_url: str | None = None, next_token: str | None = None,
               total_pages: int | None = None, keys: list[tuple[Any, Any]] | None = None) -> None:
        self.inner.update(count=count, next_url=next_url, next_token=next_token,
                          total_pages=total_pages, keys=keys)
        self.has_next, self.pages = self.inner.has_next, self.inner.pages

    def update_state(self, page: Page) -> None:
        walk, rows = self.walk, page.rows
        served = whole(dig(page.body, walk.limit_key))
        if served and served < walk.page_size and len(rows) == served:
            raise DataError(f"the vendor pages by {served} rows, not the {walk.page_size} asked for",
                            fix=f"set {walk.size_option} to {served} or less")
        ids = [row.get(walk.id_key) for row in rows]
        if rows and ids == self.previous:
            raise DataError(f"paging loop: page {self.asked} repeats the page before it",
                            fix=walk.loop_fix)
        # a walk by value: each row's value once a page, for the guard, the paginator (a row's
        # key is its (id, value)) and the reader
        values = self.values = [walk.value(row) for row in rows] if self.guard is not None else None
        if self.guard is not None and not self.guard.ordered(values or ()):
            raise Unsorted(page.path)
        self.previous = ids
        try:
            if values is not None and isinstance(self.inner, SortValuePaginator):
                self.inner.update(count=len(rows), keys=list(zip(ids, values, strict=True)))
            else:
                self.inner.update_state(page)
        except DataError as exc:
            raise DataError(exc.message, fix=walk.stuck_fix) from None
        self.has_next, self.pages = self.inner.has_next, self.inner.pages


@dataclass
class SortedWalk:
    """How one source walks its lists (one per source: it remembers which kinds of list
    proved unsorted in this run). Every page asks ``size_param`` = ``page_size`` rows and
    page ``page_param`` (a number from 0, up to ``max_page``). :meth:`by_value` asks a
    list sorted (``sort`` params) and pages it by the last ``value`` seen
    (:class:`~lms_sync.http.paging.SortValuePaginator`; ``where(bound)`` are the params
    that filter rows of values >= bound) under a :class:`SortGuard`: a page
    out of order calls ``on_unsorted`` once per ``kind`` of list, and the list is read
    again from its start by page number, as is every list of that kind later in the run.
    :meth:`by_number` walks a list by page number. A whole walk must read as many rows as
    its first page's ``total_key`` says, else IncompleteRead (naming ``vendor``). A full
    page of fewer rows than asked (the body's ``limit_key``: DataError naming
    ``size_option``), a page repeating the one before (``loop_fix``) and paging past
    ``max_page`` (``stuck_fix``) are DataErrors.
    """

    http: HttpClient
    vendor: str
    page_param: str
    size_param: str
    page_size: int
    max_page: int
    sort: dict[str, Any]
    value: Callable[[dict[str, Any]], Any]
    where: Callable[[Any], dict[str, Any]]
    total_key: str | None = None
    limit_key: str | None = None
    id_key: str = "id"
    size_option: str = "options.page_size"
    loop_fix: str = ""
    stuck_fix: str = ""
    unsorted: set[str] = field(default_factory=set)
    names: dict[str, dict[str, str]] = field(default_factory=dict)  # lookups read in this run, by path
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def lookup(self, path: str, records: str, ctx: ReadContext, fix: str) -> dict[str, str]:
        """id -> name of a small list (``id_key``, ``name``), read once per run by page
        number (a bare array is the whole list). One that answers 403 or 404 costs the
        names, not the rows: ``lookup.unavailable`` (with ``fix``), no names."""
        if path not in self.names:
            try:
                self.names[path] = {str(r[self.id_key]): str(r["name"])
                                    for page in self.by_number(path, records, whole=False)
                                    for r in page.rows if r.get(self.id_key) and r.get("name")}
            except RequestRejected as exc:
                if exc.status not in (403, 404):
                    raise
                ctx.count("lookups_unavailable")
                ctx.log.warning("lookup.unavailable", path=path, status=exc.status, reason=exc.message,
                                fix=fix)
                self.names[path] = {}
        return self.names[path]

    def by_number(self, path: str, records: str, params: dict[str, Any] | None = None, *,
                  ctx: ReadContext | None = None, whole: bool = True,
                  restart: bool = False) -> Iterator[ListPage]:
        """Each page by page number; not ``whole`` (a lookup): no total to reach, and a
        bare array body is the whole list."""
        pager = PageNumberPaginator(self.page_param, 0, page_size=self.page_size, max_page=self.max_page)
        return self._walk(path, records, params or {}, pager, ctx, None, whole, restart)

    def by_value(self, path: str, records: str, start: Any = None, *, kind: str | None = None,
                 ctx: ReadContext | None = None,
                 on_unsorted: Callable[[str], None] | None = None) -> Iterator[ListPage]:
        """Each page of the list from the value ``start`` (None: all); the first page of a
        re-read by page number is marked ``restart``."""
        kind = kind or path
        if kind not in self.unsorted:
            pager = SortValuePaginator(self.page_param, page_size=self.page_size, start=start,
                                       max_page=self.max_page, where=self.where,
                                       key=lambda row: (row.get(self.id_key), self.value(row)))
            try:
                yield from self._walk(path, records, dict(self.sort), pager, ctx, SortGuard())
                return
            except Unsorted:
                with self._lock:
                    first = kind not in self.unsorted
                    self.unsorted.add(kind)
                if first and on_unsorted is not None:
                    on_unsorted(path)
        yield from self.by_number(path, records, self.where(start) if start is not None else {},
                                  ctx=ctx, restart=True)

    def _walk(self, path: str, records: str, params: dict[str, Any], pager: Paginator,
              ctx: ReadContext | None, guard: SortGuard | None, whole_list: bool = True,
              restart: bool = False) -> Iterator[ListPage]:
        checked = _Checked(pager, self, guard)
        rows_of: Any = records if whole_list else (lambda b: b if isinstance(b, list) else dig(b, records))
        total, counted = None, 0
        for page in self.http.paginate(path, checked, params={**params, self.size_param: self.page_size},
                                       records=rows_of):
            bare = isinstance(page.body, list)
            total = whole(dig(page.body, self.total_key)) if page.number == 1 else total
            if ctx is not None:
                ctx.count("pages")
            counted += len(page.rows)
            last = bare or not checked.has_next
            if whole_list and last and total is not None and counted < total:
                raise IncompleteRead(
                    f"read {counted} of the {total} rows {self.vendor} counts", source=self.http.source_id,
                    path=path, fix="rows read are kept, nothing was soft-deleted and the cursor was kept; "
                                   f"run again, and if it repeats report it to {self.vendor}")
            values = checked.values if len(page.rows) == len(checked.values or ()) else None  # none dropped
            yield ListPage(path, page.rows, total, isinstance(pager, SortValuePaginator), last,
                           restart and page.number == 1, values)
            if bare:
                return


class SortedStream(Stream):
    """A list read through a :class:`SortedWalk` (``path``, rows under ``records``),
    incremental by its rows' sort value, a last-edited time: the first run reads it whole;
    later runs from the saved cursor less ``overlap`` (or ``ctx.since`` if earlier; a part,
    so nothing is soft-deleted). The cursor is ``{cursor_key: <latest value read>}``
    (:func:`iso`; never moved back). A checkpoint follows each page walked by value, and
    the end of a list walked by page number (over an unsorted list only its end proves
    anything; its re-read first puts the saved cursor back). A whole read reports the
    first page's total. Subclasses set ``name``, ``path``, ``records``, ``cursor_key`` and
    implement :meth:`records_of`."""

    path: ClassVar[str]
    records: ClassVar[str]
    cursor_key: ClassVar[str]

    def __init__(self, walk: SortedWalk, overlap: timedelta,
                 on_unsorted: Callable[[str], None] | None = None) -> None:
        self.walk, self.overlap, self.on_unsorted = walk, overlap, on_unsorted

    def records_of(self, row: dict[str, Any], ctx: ReadContext) -> tuple[list[Record], datetime | None]:
        """One row's records and its sort value (validated once)."""
        raise NotImplementedError

    def window(self, ctx: ReadContext) -> tuple[datetime | None, datetime | None]:
        """(the saved cursor, the first value to read, to the second, or None: all)."""
        saved = (ctx.cursor or {}).get(self.cursor_key)
        saved_at = utc(datetime.fromisoformat(saved.replace("Z", "+00:00"))) if saved else None
        start = saved_at - self.overlap if saved_at else None
        if ctx.since is not None:
            start = min(start, utc(ctx.since)) if start else utc(ctx.since)
        if start is not None:
            ctx.partial = True
        return saved_at, start.replace(microsecond=0) if start else None

    def checkpoint(self, saved: datetime | None, seen: datetime | None) -> Checkpoint:
        best = max((d for d in (saved, seen) if d is not None), default=None)
        return Checkpoint({self.cursor_key: iso(best) if best else None})

    def pages(self, path: str, start: datetime | None, *, records: str | None = None, kind: str | None = None,
              ctx: ReadContext | None = None, gone: tuple[int, ...] = ()) -> Iterator[ListPage]:
        """The walk of one list by value (:meth:`SortedWalk.by_value`); a status in ``gone``
        is a list that went away (a parent deleted since it was listed): no pages."""
        try:
            yield from self.walk.by_value(path, records or self.records, start, kind=kind, ctx=ctx,
                                          on_unsorted=self.on_unsorted)
        except RequestRejected as exc:
            if exc.status not in gone:
                raise

    def read(self, ctx: ReadContext) -> Iterator[Record | Checkpoint]:
        saved, start = self.window(ctx)
        seen: datetime | None = None
        for page in self.pages(self.path, start, ctx=ctx):
            if page.restart:  # the sorted pages before proved nothing: back to the saved cursor
                yield self.checkpoint(saved, None)
            for records, edited in ctx.valid(page.rows, lambda r: self.records_of(r, ctx), self.walk.id_key):
                yield from records
                seen = (max(seen, utc(edited)) if seen else utc(edited)) if edited else seen
            if page.last and start is None and page.total is not None:
                ctx.report_total(page.total)
            if page.by_value or page.last:
                yield self.checkpoint(saved, seen)


class LookupStream(Stream):
    """A small list read whole every run through a :class:`SortedWalk` by page number (a
    bare array is the whole list; the first page's total reported), whose records' names
    also serve :meth:`SortedWalk.lookup` of ``path`` (one request fewer). A 403 or 404 is
    nothing listed: ``<name>.unavailable`` logged with ``fix`` and counted, ``ctx.partial``
    (nothing soft-deleted), no names. The checkpoint is ``{name: <records read>}``.
    Subclasses set ``name``, ``path``, ``records``, ``fix`` and implement :meth:`normalize`."""

    path: ClassVar[str]
    records: ClassVar[str]
    fix: ClassVar[str]

    def __init__(self, walk: SortedWalk) -> None:
        self.walk = walk

    def normalize(self, row: dict[str, Any]) -> Record:
        raise NotImplementedError

    def read(self, ctx: ReadContext) -> Iterator[Record | Checkpoint]:
        names: dict[str, str] = {}
        try:
            for page in self.walk.by_number(self.path, self.records, whole=False):
                ctx.count("pages")
                if page.last and page.total is not None:
                    ctx.report_total(page.total)
                for record in ctx.valid(page.rows, self.normalize, self.walk.id_key):
                    names[str(record.external_id)] = getattr(record, "name", None) or ""
                    yield record
        except RequestRejected as exc:
            if exc.status not in (403, 404):
                raise
            ctx.partial = True
            ctx.count(f"{self.name}_unavailable")
            ctx.log.warning(f"{self.name}.unavailable", status=exc.status, path=self.path, fix=self.fix)
            self.walk.names.setdefault(self.path, {})  # a lookup of it: no names, no retry
            return
        self.walk.names.setdefault(self.path, {k: v for k, v in names.items() if v})
        yield Checkpoint({self.name: len(names)})
