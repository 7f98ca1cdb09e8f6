"""The connector contract (explained at length in docs/architecture.md, "Writing a connector").

A connector knows one vendor: its auth, paging, fields and status mapping. It yields
canonical records (:mod:`lms_sync.canonical`) and :class:`Checkpoint` objects and never
touches the database; the pipeline writes each batch in one transaction with the latest
checkpoint and knows nothing about vendors.

To add a vendor: subclass :class:`Connector` (``kind``; nested pydantic ``Auth``, secrets as
``SecretStr``, and ``Options``, every option with a default); build the HTTP client in
``__init__`` with :meth:`Connector.make_client`; return the streams from
:meth:`Connector.streams` in dependency order (learners and courses before enrollments);
register the kind in :data:`lms_sync.connectors.KINDS` and add a sandbox fake.

Streams: ``Stream.read(ctx)`` is a generator; ``ctx.cursor`` is the saved cursor (None on
the first run and on ``--full-refresh``). Yield ``Checkpoint(cursor)`` whenever every record
yielded so far is enough to resume from ``cursor``: records may repeat after a crash
(upserts are idempotent), never be lost. A read of part of the data sets ``ctx.partial``.

Totals: ``Stream.total_table`` names the table a vendor total counts (``ctx.report_total``).
After a full read, the distinct ids read + ``ctx.skipped`` + ``ctx.exclude()`` must reach it,
else the stream fails (``stream.incomplete``), deletes nothing and keeps its starting cursor;
:class:`~lms_sync.errors.IncompleteRead` does the same. Soft deletes: after a complete read,
rows of ``Stream.full_refresh_tables`` not seen get ``deleted_at``. Normalizers are pure
functions; an invalid record goes to ``ctx.skip()`` (fatal only with fail_on_invalid_records).
A stream that re-reads one whole list every run may opt in to the page skim (``Stream.skim``,
:mod:`lms_sync.connectors.skim`): pages equal to its last clean run's are not processed.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from lms_sync.canonical import Record
from lms_sync.errors import IncompleteRead, RecordError
from lms_sync.http.auth import Auth as RequestAuth  # the name Auth is the class's settings model
from lms_sync.http.client import HttpClient
from lms_sync.http.errors import ErrorDescriber

if TYPE_CHECKING:
    import structlog

    from lms_sync.config import SourceConfig
    from lms_sync.connectors.skim import PageSkim
    from lms_sync.provision.plan import RemoteUser, Wanted

T = TypeVar("T")

INVALID: tuple[type[Exception], ...] = (ValidationError, ValueError, TypeError, KeyError)
"""What a normalizer raises for a vendor record it cannot map: the record is skipped."""


class Settings(BaseModel):
    """Base for a connector's ``Auth`` and ``Options`` models."""

    model_config = ConfigDict(extra="forbid")


@dataclass(frozen=True)
class Checkpoint:
    """Everything yielded before this is enough to resume from ``cursor``."""

    cursor: dict[str, Any] | None


@dataclass
class ReadContext:
    """What a stream needs to know about the run it is part of."""

    source_id: str
    stream: str
    cursor: dict[str, Any] | None
    full_refresh: bool
    since: datetime | None
    started_at: datetime
    log: structlog.stdlib.BoundLogger
    fail_on_invalid: bool = False
    partial: bool = False
    """Set by the stream when it read only part of the data (incremental, --since):
    then nothing is soft-deleted."""
    skipped: int = 0
    counters: dict[str, int] = field(default_factory=dict)
    vendor_total: int | None = None
    """The vendor's own count of the ``Stream.total_table`` rows this read should see."""
    excluded: int = 0
    """Rows the vendor counts in its total that the stream leaves out by design."""
    skim: PageSkim | None = None
    """A ``Stream.skim`` stream's page digests (set by the pipeline; see
    :mod:`lms_sync.connectors.skim`): ``RestStream.pages`` skips the pages equal to the
    last clean run's."""

    def report_total(self, n: int) -> None:
        """Add a total the vendor reported for a list this read walks whole."""
        self.vendor_total = (self.vendor_total or 0) + int(n)

    def exclude(self, reason: str, n: int = 1) -> None:
        """Count rows of the vendor's total left out by design (counted under ``reason``)."""
        self.excluded += n
        self.count(reason, n)

    def skip(self, vendor_id: object, error: Exception | str) -> None:
        """Count and log a vendor record that cannot be normalized."""
        self.skipped += 1
        reason = _short_error(error)
        self.log.warning("record.skipped", vendor_id=str(vendor_id), reason=reason)
        if self.fail_on_invalid:
            raise RecordError(f"invalid record {vendor_id}: {reason}", source=self.source_id,
                              fix="set fail_on_invalid_records: false to skip such records")

    def count(self, key: str, n: int = 1) -> None:
        self.counters[key] = self.counters.get(key, 0) + n

    def valid(self, rows: Iterable[dict[str, Any]], fn: Callable[[dict[str, Any]], T],
              id_key: str = "id") -> Iterator[T]:
        """``fn(row)`` for each row; a row it cannot map (:data:`INVALID`) is skipped, named
        by its ``id_key`` field. For a page's rows: no lambda per row, as :meth:`normalize`
        takes."""
        for row in rows:
            try:
                out = fn(row)
            except INVALID as exc:
                self.skip(row.get(id_key), exc)
                continue
            yield out

    def normalize(self, vendor_id: object, fn: Callable[..., T]) -> T | None:
        """Run a normalizer; on a validation error, skip the record and return None.

        ``fn`` is called without arguments; it is typed ``Callable[..., T]`` because callers
        bind their loop variables as lambda defaults (``lambda r=row: ...``)."""
        try:
            return fn()
        except INVALID as exc:
            self.skip(vendor_id, exc)
            return None


@dataclass
class NotFoundWave:
    """Per-item lookups where a 404 means "no record": a few are normal, a wave is not.

    More than ``share`` of the items looked up answering 404, and at least ``minimum`` of
    them, is a wrong path or tenant rather than that many missing records: :meth:`check`
    raises :class:`~lms_sync.errors.IncompleteRead` (the run keeps its starting cursor and
    deletes nothing, so the next run looks those items up again).
    """

    what: str
    """The items and where they 404, for the message (``users visited (/x/{id})``)."""
    fix: str
    minimum: int = 10
    share: float = 0.5
    looked_up: int = 0
    not_found: int = 0

    def add(self, found: bool) -> None:
        self.looked_up += 1
        self.not_found += not found

    def check(self, source_id: str) -> None:
        """Raise if the lookups so far are a wave (call before each checkpoint)."""
        if self.not_found >= self.minimum and self.not_found > self.share * self.looked_up:
            raise IncompleteRead(
                f"{self.not_found} of {self.looked_up} {self.what} answered 404, more than "
                f"{self.share:.0%}: a wrong path or tenant, not missing records; nothing was "
                "deleted and the next run looks them up again",
                source=source_id, fix=self.fix)


def whole(value: Any) -> int | None:
    """A count as a vendor sent it (``count``, ``total``, ``totalPages``): a non-negative
    int, else None (a bool, a string, a float, missing)."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _short_error(error: Exception | str) -> str:
    if isinstance(error, ValidationError):
        first = error.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        return f"{loc}: {first['msg']}" if loc else first["msg"]
    return str(error).splitlines()[0][:300] if str(error) else type(error).__name__


class Stream(ABC):
    """One named stream of a connector (``users``, ``courses``, ``enrollments``...)."""

    name: ClassVar[str]
    full_refresh_tables: tuple[str, ...] = ()  # a class attribute; a stream may set its own
    total_table: str | None = None  # the table the vendor's total counts (see above)
    skim: ClassVar[bool] = False
    """Opt-in page skim (:mod:`lms_sync.connectors.skim`): the stream re-reads one whole
    list every run, walked once by ``RestStream.pages``, and its records depend only on
    that list's pages, in order. Never for a walk steered by page contents (sorted walks,
    sweeps)."""

    @abstractmethod
    def read(self, ctx: ReadContext) -> Iterator[Record | Checkpoint]:
        """Yield canonical records and checkpoints."""


class Provisioner(Protocol):
    """The write side of a vendor's user list (``lms-sync provision``).

    ``upsert`` and ``deactivate`` take at most ``batch_limit`` users and return the ones
    the vendor refused: ``{remoteId: the vendor's error}``; a request that fails whole
    raises a :class:`~lms_sync.errors.SourceError`.
    """

    batch_limit: int

    def remote_users(self) -> list[RemoteUser]: ...

    def upsert(self, batch: Sequence[Wanted]) -> dict[str, str]: ...

    def deactivate(self, batch: Sequence[RemoteUser]) -> dict[str, str]: ...


class Connector(ABC):
    """One vendor. Subclasses set ``kind``, ``Auth`` and ``Options``."""

    kind: ClassVar[str]
    Auth: ClassVar[type[BaseModel]] = Settings
    Options: ClassVar[type[BaseModel]] = Settings

    def __init__(self, source: SourceConfig, log: structlog.stdlib.BoundLogger) -> None:
        self.source = source
        self.auth: Any = source.auth
        self.options: Any = source.options
        self.log = log
        self.http: HttpClient | None = None

    def make_client(self, auth: RequestAuth | None = None, describe_error: ErrorDescriber | None = None,
                    **overrides: Any) -> HttpClient:
        """The source's HTTP client, configured from its ``http`` settings."""
        h = self.source.http
        settings: dict[str, Any] = dict(
            timeout=h.timeout_seconds, max_attempts=h.max_attempts, max_wait=h.max_wait_seconds,
            max_concurrency=h.max_concurrency, requests_per_second=h.requests_per_second,
        )
        settings.update(overrides)
        self.http = HttpClient(self.source.id, self.source.base_url, auth=auth,
                               describe_error=describe_error, **settings)
        return self.http

    @abstractmethod
    def streams(self) -> list[Stream]:
        """The streams of this source, in the order they run."""

    def check(self) -> None:
        """Prove the credentials work with one cheap request; raise SourceError if not."""
        streams = self.streams()
        ctx = ReadContext(self.source.id, streams[0].name, None, True, None,
                          datetime.now().astimezone(), self.log)
        for _ in streams[0].read(ctx):
            break

    def provisioner(self) -> Provisioner | None:
        """The write side of the vendor's users, for kinds that can provision them."""
        return None

    @classmethod
    def can_provision(cls) -> bool:
        return cls.provisioner is not Connector.provisioner

    def close(self) -> None:
        if self.http is not None:
            self.http.close()

    def __enter__(self) -> Connector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
