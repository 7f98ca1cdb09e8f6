"""The shared REST stream layer: what every connector would otherwise write again.

A list endpoint is declared, not looped over: a :class:`RestStream` names its ``path``,
``params``, where the rows are (``records``), the vendor's total (``total_key``), its
paginator, its cursor and a pure ``normalize`` function; :meth:`HttpClient.paginate
<lms_sync.http.client.HttpClient.paginate>` owns the page loop. Here too, once: the
vendor base model (:class:`VendorModel`, and the blank-tolerant field types ``Text``,
``When``, ``Number``), :class:`Cursor`, the token fetch (:func:`fetch_token`), the JSON
error describer (:func:`describe_json`) and the date helper :func:`iso`.

A connector keeps only vendor knowledge: auth, paths, fields, status tables, quirks.
docs/architecture.md, "Writing a connector", walks through one.
"""

from __future__ import annotations

import re
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Self, TypeVar
from urllib.parse import quote

import httpx
import orjson
from pydantic import BaseModel, BeforeValidator, ConfigDict, ValidationError

from lms_sync.canonical import Record, utc
from lms_sync.connectors.base import Checkpoint, ReadContext, Stream, whole
from lms_sync.errors import CredentialsRejected, DataError, IncompleteRead, RequestRejected
from lms_sync.http.auth import Token
from lms_sync.http.errors import ErrorDescriber, classify_response, classify_transport
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


def _blank(value: Any) -> Any:
    """A vendor's empty string is a missing value."""
    if isinstance(value, str):
        value = value.strip()
        return value or None
    return value


Text = Annotated[str | None, BeforeValidator(_blank)]
When = Annotated[datetime | None, BeforeValidator(_blank)]
Number = Annotated[float | None, BeforeValidator(_blank)]


class VendorModel(BaseModel):
    """Base of a vendor row model: unknown fields ignored (vendors add them), field names
    as the vendor spells them."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)


def iso(value: datetime) -> str:
    """A time as vendors' filters want it: UTC, whole seconds, ``Z``."""
    return utc(value).strftime("%Y-%m-%dT%H:%M:%SZ")


class Cursor(BaseModel):
    """A stream's saved position, as a model: ``load`` the saved JSON once (a cursor of
    another shape, from an older version, reads as None: the stream starts over, which
    re-reads but loses nothing), ``checkpoint()`` to save it. Field names are the stored
    JSON's keys, so a connector keeps its stored shape."""

    model_config = ConfigDict(extra="ignore")

    @classmethod
    def load(cls, ctx: ReadContext) -> Self | None:
        if not ctx.cursor:
            return None
        try:
            return cls.model_validate(ctx.cursor)
        except ValidationError:
            ctx.log.warning("cursor.unreadable", cursor=ctx.cursor, note="read from the start")
            return None

    def checkpoint(self) -> Checkpoint:
        return Checkpoint(self.model_dump(mode="json"))


def describe_json(*keys: str, lists: tuple[str, ...] = ()) -> ErrorDescriber:
    """An error describer for a JSON error body: the first of ``keys`` (dotted) that is
    set, then every item of the ``lists`` keys; a bare JSON string is the message."""

    def describe(response: httpx.Response) -> str | None:
        try:
            body = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            return None
        if isinstance(body, str):
            return body.strip()[:300] or None
        first = next((v for k in keys if (v := dig(body, k)) and not isinstance(v, dict)), None)
        parts = [str(first).strip()] if first else []
        parts += [str(v) for k in lists for v in (dig(body, k) or []) if v]
        text = "; ".join(p for p in parts if p).splitlines()
        return text[0][:300] if text else None

    return describe


def fetch_token(client: httpx.Client, url: httpx.URL, *, source: str, rejected: tuple[int, ...],
                refused: str, fix: str, parse: Callable[[Any], Token],
                describe: ErrorDescriber | None = None, **send: Any) -> Token:
    """POST to a token endpoint (``send``: ``json=``, ``data=``, ``headers=``) and ``parse``
    its JSON answer. A status in ``rejected`` is :class:`CredentialsRejected` (``refused``
    and the vendor's own words, ``fix``); an answer ``parse`` cannot read is a DataError."""
    try:
        response = client.post(url, **send)
    except httpx.TransportError as exc:
        raise classify_transport(exc, source, url.path) from None
    if response.status_code in rejected:
        error = classify_response(response, source, describe)
        detail = error.message.partition(": ")[2] if error else ""
        raise CredentialsRejected(refused + (f": {detail}" if detail else ""), source=source,
                                  path=url.path, status=response.status_code, fix=fix)
    if (error := classify_response(response, source, describe)) is not None:
        raise error
    try:
        return parse(orjson.loads(response.content))
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        raise DataError("the token answer is not the JSON expected", source=source,
                        path=url.path, status=response.status_code) from None


class RestStream(Stream):
    """One list endpoint as data. Subclasses set ``name``, ``path`` and implement
    :meth:`paginator` and :meth:`normalize`; the rest has defaults:

    * ``params`` sent with the first request (:meth:`params_for` to vary them per run);
    * ``records``: where a page holds its rows (a dotted key; None: the body is the list);
    * ``total_key``: the vendor's count of ``total_table`` rows on a page (the largest any
      page gives is reported when the read is whole);
    * ``id_key``: the row field that names a record skipped as invalid;
    * :meth:`cursor`: the checkpoint after the last page (default: none to resume from).

    ``read`` walks the pages and yields each row's records; override :meth:`rows` or
    :meth:`read` for what the declaration cannot say.
    """

    path: ClassVar[str]
    params: ClassVar[dict[str, Any]] = {}
    records: ClassVar[str | None] = None
    total_key: ClassVar[str | None] = None
    id_key: ClassVar[str] = "id"
    fix: ClassVar[str] = "check base_url and the source's options"

    def __init__(self, http: HttpClient) -> None:
        self.http = http

    def paginator(self, ctx: ReadContext) -> Paginator:
        raise NotImplementedError

    def normalize(self, row: dict[str, Any], ctx: ReadContext) -> Record | Iterable[Record] | None:
        """A pure mapping of one vendor row to its canonical record(s)."""
        raise NotImplementedError

    def params_for(self, ctx: ReadContext) -> dict[str, Any]:
        return dict(self.params)

    def cursor(self, ctx: ReadContext) -> Checkpoint:
        return Checkpoint(None)

    def pages(self, ctx: ReadContext, path: str | None = None,
              params: dict[str, Any] | None = None) -> Iterator[Page]:
        """Every page of the list; reports its total when the read is whole."""
        total = None
        for page in self.http.paginate(path or self.path, self.paginator(ctx),
                                       params=self.params_for(ctx) if params is None else params,
                                       records=self.records, fix=self.fix):
            if (count := whole(dig(page.body, self.total_key))) is not None:
                total = max(total or 0, count)
            ctx.count("pages")
            yield page
        if total is not None and not ctx.partial:
            ctx.report_total(total)

    def rows(self, ctx: ReadContext) -> Iterator[dict[str, Any]]:
        for page in self.pages(ctx):
            yield from page.rows

    def read(self, ctx: ReadContext) -> Iterator[Record | Checkpoint]:
        normalize, id_key = self.normalize, self.id_key
        for row in self.rows(ctx):
            out = ctx.normalize(row.get(id_key), lambda r=row: normalize(r, ctx))
            if isinstance(out, Record):
                yield out
            elif out is not None:
                yield from out
        yield self.cursor(ctx)


# --------------------------------------------------------------------------- sorted walks
# Vendor-free, parameterized by the vendor's keys: a list sorted by a value that grows when
# a row changes, walked by the last value seen under a SortGuard, read again by page number
# when it turns out unsorted; every whole walk checked against its first page's total
# (:class:`SortedWalk`); a stream incremental by that value (:class:`SortedStream`); a
# small list read whole that also names ids for a lookup (:class:`LookupStream`);
# per-record calls run beside a stream of records (:func:`calls_beside`); and the value
# helpers :func:`timespan_seconds`, :func:`percent`, :func:`second_of`, :func:`segment`,
# :func:`path_template`.

_TIMESPAN = re.compile(r"^(-)?(?:(\d+)\.)?(\d{1,2}):(\d{2}):(\d{2})(?:\.(\d{1,7}))?$")
_ISO_DURATION = re.compile(r"^P(?:(\d+(?:\.\d+)?)D)?(?:T(?:(\d+(?:\.\d+)?)H)?(?:(\d+(?:\.\d+)?)M)?"
                           r"(?:(\d+(?:\.\d+)?)S)?)?$")


def timespan_seconds(value: str | None, name: str = "duration") -> float | None:
    """A .NET TimeSpan ``"[-][d.]hh:mm:ss[.fffffff]"`` (or ISO 8601 ``P1DT2H``) -> seconds;
    blank -> None; anything else a ValueError naming the field (``name``)."""
    if value is None or not str(value).strip():
        return None
    text = str(value).strip()
    m = _TIMESPAN.match(text)
    if m:
        sign, days, h, mins, s, frac = m.groups()
        total: float = int(days or 0) * 86400 + int(h) * 3600 + int(mins) * 60 + int(s)
        total += float(f"0.{frac}") if frac else 0.0
        return -total if sign else total
    m = _ISO_DURATION.match(text)
    if m and text not in ("P", "PT") and not text.endswith("T"):
        d, h, mins, s = (float(x or 0) for x in m.groups())
        return d * 86400 + h * 3600 + mins * 60 + s
    raise ValueError(f"{name} {text!r} is not a TimeSpan")


def second_of(value: Any) -> datetime | None:
    """An ISO 8601 time (``Z`` or an offset; naive: UTC) to the second; None when blank or
    not a time."""
    try:
        return utc(datetime.fromisoformat(str(value).replace("Z", "+00:00"))).replace(microsecond=0) \
            if value else None
    except ValueError:
        return None


def segment(value: Any) -> str:
    """A vendor id as one URL path segment: ``/``, ``?``, ``#``, ``%`` and spaces escaped, so
    an id never changes which resource is asked for."""
    return quote(str(value), safe="")


def path_template(value: str, *names: str) -> str:
    """A path option with placeholders: from ``/``, with ``{name}`` for each of ``names``
    and no other ``{}``; else a ValueError saying so."""
    try:
        value.format(**{name: name for name in names})
    except (KeyError, IndexError, ValueError):
        value = ""
    if not value.startswith("/") or any(f"{{{name}}}" not in value for name in names):
        wanted = " and ".join(f"{{{name}}}" for name in names)
        raise ValueError(f"must be a path from / with {wanted} (and no other {{}})")
    return value


def percent(value: float | None, name: str, tolerance: float = 0.5) -> float | None:
    """A percentage clamped to 0..100; further out than ``tolerance`` is a ValueError."""
    if value is None:
        return None
    if not -tolerance <= value <= 100 + tolerance:
        raise ValueError(f"{name} {value} is not a percentage")
    return min(100.0, max(0.0, float(value)))


class Unsorted(Exception):
    """A page of a list asked sorted by a value is not in that order."""


class _Checked(Paginator):
    """``inner`` with the checks of a :class:`SortedWalk` run on each page before ``inner``
    reads it (so ``inner``'s own loop check never speaks first)."""

    def __init__(self, inner: Paginator, walk: SortedWalk, guard: SortGuard | None) -> None:
        self.inner, self.walk, self.guard = inner, walk, guard
        self.asked: Any = None
        self.previous: list[Any] | None = None

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
        if self.guard is not None and not self.guard.ordered(walk.value(row) for row in rows):
            raise Unsorted(page.path)
        self.previous = ids
        try:
            self.inner.update_state(page)
        except DataError as exc:
            raise DataError(exc.message, fix=walk.stuck_fix) from None
        self.has_next, self.pages = self.inner.has_next, self.inner.pages


@dataclass
class SortedWalk:
    """How one source walks its lists (one per source: it remembers which kinds of list
    proved unsorted in this run). Every page asks ``size_param`` = ``page_size`` rows and
    page ``page_param`` (a number from 0, up to ``max_page``).

    :meth:`by_value` asks a list sorted (``sort`` params) and pages it by the last
    ``value`` seen (:class:`~lms_sync.http.paging.SortValuePaginator`; ``where(bound)``
    are the params that filter rows of values >= bound) under a :class:`SortGuard`: a page
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
    names: dict[str, dict[str, str]] = field(default_factory=dict)
    """Lookups read in this run (:meth:`lookup`), by path."""
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
            if page.number == 1:
                total = whole(dig(page.body, self.total_key))
            if ctx is not None:
                ctx.count("pages")
            counted += len(page.rows)
            last = bare or not checked.has_next
            if whole_list and last and total is not None and counted < total:
                raise IncompleteRead(
                    f"read {counted} of the {total} rows {self.vendor} counts", source=self.http.source_id,
                    path=path, fix="rows read are kept, nothing was soft-deleted and the cursor was kept; "
                                   f"run again, and if it repeats report it to {self.vendor}")
            yield ListPage(path, page.rows, total, isinstance(pager, SortValuePaginator), last,
                           restart and page.number == 1)
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
            for row in page.rows:
                out = ctx.normalize(row.get(self.walk.id_key), lambda r=row: self.records_of(r, ctx))
                if out is not None:
                    yield from out[0]
                    edited = utc(out[1]) if out[1] else None
                    seen = max(seen, edited) if seen and edited else edited or seen
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
                for row in page.rows:
                    if record := ctx.normalize(row.get(self.walk.id_key), lambda r=row: self.normalize(r)):
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


V = TypeVar("V")
J = TypeVar("J")
F = TypeVar("F")


def calls_beside(http: HttpClient, items: Iterable[tuple[V, J | None]], fetch: Callable[[J], F],
                 then: Callable[[F], Iterable[V]], held: int) -> Iterator[V]:
    """Each item's value, and ``then(fetch(job))`` for each item with a job (e.g. a
    record and the per-record call it needs). The calls run back to back on
    ``http.map_concurrent``, which pulls ``items`` (in this thread) as workers free up;
    ``fetch`` runs in a worker, ``then`` here. Values made meanwhile wait, at most
    ``held`` of them (then a no-op job lets them out), and come before the next call's."""
    ready: deque[V] = deque()

    def jobs() -> Iterator[J | None]:
        for value, job in items:
            ready.append(value)
            if job is not None:
                yield job
            elif len(ready) >= held:
                yield None

    for fetched in http.map_concurrent(lambda job: None if job is None else (fetch(job),), jobs()):
        while ready:
            yield ready.popleft()
        if fetched is not None:
            yield from then(fetched[0])
    yield from ready
