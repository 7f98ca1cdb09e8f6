"""The shared REST stream layer: what every connector would otherwise write again.

A list endpoint is declared, not looped over: a :class:`RestStream` names its ``path``,
``params``, where the rows are (``records``), the vendor's total (``total_key``), its
paginator, its cursor and a pure ``normalize`` function; :meth:`HttpClient.paginate
<lms_sync.http.client.HttpClient.paginate>` owns the page loop. Here too, once: the
vendor base model (:class:`VendorModel`, and the blank-tolerant field types ``Text``,
``When`` (aware UTC, as :data:`~lms_sync.canonical.UTCTime`), ``Number``), :class:`Cursor`, the token fetch
(:func:`fetch_token`), the JSON error describer (:func:`describe_json`) and the date helper
:func:`iso`.

A connector keeps only vendor knowledge: auth, paths, fields, status tables, quirks.
docs/architecture.md, "Writing a connector", walks through one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Self

import httpx
import orjson
from pydantic import BaseModel, BeforeValidator, ConfigDict, ValidationError

from lms_sync.canonical import Record, UTCTime, utc
from lms_sync.connectors.base import Checkpoint, ReadContext, Stream, whole
from lms_sync.connectors.skim import Step
from lms_sync.errors import CredentialsRejected, DataError, SourceError
from lms_sync.http.auth import Token
from lms_sync.http.errors import ErrorDescriber, classify_response, classify_transport
from lms_sync.http.paging import Page, Paginator, dig

if TYPE_CHECKING:
    from lms_sync.http.client import HttpClient


def _blank(value: Any) -> Any:
    """A vendor's empty string is a missing value."""
    if isinstance(value, str):
        value = value.strip()
        return value or None
    return value


Text = Annotated[str | None, BeforeValidator(_blank)]
When = Annotated[UTCTime | None, BeforeValidator(_blank)]
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
    * :meth:`cursor`: the checkpoint after the last page (default: none to resume from);
    * ``skim``: opt in to the page skim (a whole list re-read every run, one walk a read).

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
        """Every page of the list; reports its total when the read is whole. A ``skim``
        stream's pages equal to its last clean run's are fetched but not yielded
        (:mod:`lms_sync.connectors.skim`)."""
        path = path or self.path
        params = self.params_for(ctx) if params is None else params
        skim = ctx.skim if self.skim else None
        if skim is not None:
            skim.begin(path, params)
        while True:
            total, again = None, False
            # (a walk left by ``break`` is closed as it is dropped)
            for page in self.http.paginate(path, self.paginator(ctx), params=params,
                                           records=self.records, fix=self.fix):
                if (count := whole(dig(page.body, self.total_key))) is not None:
                    total = max(total or 0, count)
                ctx.count("pages")
                if skim is not None:
                    assert page.response is not None  # paginate keeps every page's response
                    step = skim.page(page.response.content)
                    if step is Step.SKIP:
                        ctx.count("pages_skimmed")
                        continue
                    if step is Step.RESTART:  # rows must be read in order from page 1
                        again = True
                        break
                yield page
            if skim is None or not (again or skim.end()):
                break
            skim.restart()
        if total is not None and not ctx.partial:
            ctx.report_total(total)

    def rows(self, ctx: ReadContext) -> Iterator[dict[str, Any]]:
        for page in self.pages(ctx):
            yield from page.rows

    def read(self, ctx: ReadContext) -> Iterator[Record | Checkpoint]:
        for out in ctx.valid(self.rows(ctx), lambda row: self.normalize(row, ctx), self.id_key):
            if isinstance(out, Record):
                yield out
            elif out is not None:
                yield from out
        yield self.cursor(ctx)


# --------------------------------------------------------------------------- errors and JSON bodies


@contextmanager
def reworded(source: str, words: dict[int, tuple[str, str]]) -> Iterator[None]:
    """Within the block, a :class:`~lms_sync.errors.SourceError` whose HTTP status is in
    ``words`` is raised again, of the same class, as ``words[status]`` = (message, fix):
    the vendor's terms for a generic failure (a revoked key for 401, a missing scope for
    403). Around a generator's loop it rewords what the generator's requests raise."""
    try:
        yield
    except SourceError as exc:
        if exc.status not in words:
            raise
        message, fix = words[exc.status]
        raise type(exc)(message, source=source, path=exc.path, status=exc.status, fix=fix) from None


def json_or_none(response: httpx.Response) -> Any:
    """The response's JSON body, or None when it is not JSON (an error body, read leniently)."""
    try:
        return orjson.loads(response.content)
    except orjson.JSONDecodeError:
        return None


def json_member(response: httpx.Response, key: str, want: type, source: str) -> Any:
    """The ``key`` member (dotted) of a JSON body, which must be a ``want`` (e.g. the
    ``data`` list of a ``{"data": [...]}`` envelope); anything else, a body that is not
    JSON included, is a DataError "expected a JSON body with a <key> <want>"."""
    if not isinstance(value := dig(json_or_none(response), key), want):
        raise DataError(f"expected a JSON body with a {key} {want.__name__}", source=source,
                        path=response.request.url.path, status=response.status_code)
    return value

# --------------------------------------------------------------------------- time windows
# (issue #19, added with the sessions port: reads of a list without a change feed)


def time_window(saved_to: str | None, since: datetime | None, now: datetime, *, lag_days: float,
                start: datetime | None, default_days: float = 365) -> tuple[datetime, datetime]:
    """[from, to) of a read by time window, in whole UTC seconds, ``to`` being ``now``:
    from ``since`` (``--since``), else the saved ``to`` less ``lag_days`` (the time the
    vendor takes to settle a row), else ``start``, else ``default_days`` before ``now``.
    The caller asks nothing when from >= to."""
    to = now.astimezone(UTC).replace(microsecond=0)
    if since is not None:
        begin = utc(since)
    elif saved_to:
        begin = datetime.fromisoformat(saved_to) - timedelta(days=lag_days)
    else:
        begin = utc(start) if start is not None else to - timedelta(days=default_days)
    return begin.astimezone(UTC).replace(microsecond=0), to


def time_slices(start: datetime, end: datetime, days: float) -> list[tuple[datetime, datetime]]:
    """[start, end) cut into consecutive slices of at most ``days``; none when start >= end."""
    out, step = [], timedelta(days=days)
    while start < end:
        out.append((start, min(start + step, end)))
        start = out[-1][1]
    return out
