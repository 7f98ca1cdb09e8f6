"""The pipeline: run a source's streams into the warehouse. Knows no vendor.

For each stream: one ``sync_runs`` row; the connector's records are buffered
into batches; each batch is written in one transaction together with the
latest checkpoint's cursor, so a crash loses at most the batch in flight and
the next run resumes from the saved cursor. A failing stream fails its run but
not the other streams' or sources' runs. A stream (:class:`StreamRun`) is read in a
thread of its own (:class:`~lms_sync.producer.Producer`) a batch ahead of the writer, so
fetching and writing overlap. A ``Stream.skim`` stream gets its last clean run's page
digests (:mod:`lms_sync.connectors.skim`): unchanged, it writes nothing and reports that
run's counts; a clean run saves its own with its result.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

import structlog
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError

from lms_sync import memory, metrics
from lms_sync.batch import Batch
from lms_sync.canonical import Record
from lms_sync.config import Config, SourceConfig
from lms_sync.connectors import connector_class
from lms_sync.connectors.base import Checkpoint, Connector, ReadContext, Stream
from lms_sync.connectors.skim import PageSkim, SavedPages, skim_base
from lms_sync.errors import IncompleteRead, LmsSyncError
from lms_sync.logs import get_logger, one_line
from lms_sync.producer import Producer
from lms_sync.warehouse import identity, pages, retry, state
from lms_sync.warehouse.dialect import LockBusy, LockLost, SourceLock, source_lock
from lms_sync.warehouse.rowids import RowIds
from lms_sync.warehouse.seen import SeenKeys, mark_deleted
from lms_sync.warehouse.upsert import BatchWriter, WriteStats

_UNSET: Any = object()

# chunks in the reader's queue (one, plus the one being read). Read-ahead is memory that fills
# only on a big source, for every source at once (records carry their vendor rows: ~3 KB
# each); the writer is the faster side, so a short queue keeps it fed.
# benchmarks/sync.py --full-only, 3,000 / 30,000 people: peak RSS 125.0 / 146.8 MB with 4,
# 123.4 / 139.0 with 2 (16 held up to ~5,000 records per source); 4,300 / 43,000 people:
# 121.4 / 131.0 and 120.9 / 135.6 with 2, 120.6 / 129.6 with 1, whose 1,000-people full
# sync (6.8-7.4 s) and --latency-ms 50 (1.192 x) were no slower
_AHEAD = 1


class Interrupted(LmsSyncError):
    """The run was asked to stop (SIGTERM) and stopped after committing its batch."""


@dataclass
class StreamResult:
    stream: str
    result: str  # succeeded | failed
    read: int = 0
    written: int = 0
    skipped: int = 0
    deleted: int = 0
    error: str | None = None
    error_class: str | None = None
    cursor: Any = None
    tables: Counter[str] = field(default_factory=Counter)
    vendor_total: int | None = None
    distinct_read: int | None = None
    excluded: int = 0  # rows of the vendor's total left out by design
    exc: BaseException | None = field(default=None, repr=False, compare=False)
    """The error itself, for the streams after it (fatal ones are not run)."""

    @property
    def _exc(self) -> BaseException | None:
        """The former name of :attr:`exc`."""
        return self.exc


@dataclass
class SourceResult:
    source_id: str
    kind: str
    run_id: str
    result: str  # succeeded | failed | skipped
    streams: list[StreamResult] = field(default_factory=list)
    error: str | None = None
    http: Counter[str] = field(default_factory=Counter)
    duration: float = 0.0

    @property
    def ok(self) -> bool:
        return self.result == "succeeded"


def run_source(
    engine: Engine,
    cfg: Config,
    source: SourceConfig,
    *,
    full_refresh: bool = False,
    since: datetime | None = None,
    stop: threading.Event | None = None,
    learner_sink: RowIds | None = None,
) -> SourceResult:
    """Run every stream of ``source`` once; never raises for a source's own failure.

    Identity matching of the learners the run wrote follows the run, unless
    ``learner_sink`` is given: their ids are then added to it for the caller to match
    in one pass with other sources' (see :func:`run_sources`).
    """
    run_id = str(uuid.uuid4())
    result = SourceResult(source.id, source.kind, run_id, "succeeded")
    log = get_logger("lms_sync.pipeline")
    started = time.monotonic()
    with structlog.contextvars.bound_contextvars(run_id=run_id, source=source.id, kind=source.kind):
        try:
            with source_lock(engine, source.id, cfg.warehouse.reconnect_seconds) as lock:
                _run_locked(engine, cfg, source, result, full_refresh, since, stop, log,
                            learner_sink, lock)
        except LockBusy as exc:
            result.result, result.error = "skipped", str(exc)
            log.warning("sync.skipped", reason=str(exc))
        except Exception as exc:  # noqa: BLE001 - one source never stops the others
            result.result, result.error = "failed", one_line(exc)
            log.error("sync.failed", error_class=type(exc).__name__, error=one_line(exc),
                      exc_info=not isinstance(exc, LmsSyncError))
    result.duration = time.monotonic() - started
    metrics.run_duration.labels(source.id).observe(result.duration)
    return result


def _run_locked(engine: Engine, cfg: Config, source: SourceConfig, result: SourceResult,
                full_refresh: bool, since: datetime | None, stop: threading.Event | None,
                log: structlog.stdlib.BoundLogger, learner_sink: RowIds | None = None,
                lock: SourceLock | None = None) -> None:
    window = cfg.warehouse.reconnect_seconds
    retry.transaction(engine, lambda conn: state.ensure_source(conn, source.id, source.kind),
                      window=window, op="ensure_source")
    # We hold the source's lock, so a run still marked running died with its process.
    if retry.call(lambda: state.fail_stale_runs(
            engine, "abandoned: it ended without recording a result (the process stopped, or "
            "the warehouse was unreachable; see run.unrecorded in the log)", [source.id]),
            engine=engine, window=window, op="fail_stale_runs"):
        log.warning("sync.abandoned_runs_marked", reason="a previous run died without finishing")
    connector: Connector = connector_class(source.kind)(source, log)
    learner_ids = RowIds()
    fatal: BaseException | None = None
    try:
        for stream in connector.streams():
            with structlog.contextvars.bound_contextvars(stream=stream.name):
                if fatal is not None:
                    res = _record_not_run(engine, result.run_id, source.id, stream.name, fatal,
                                          window)
                else:
                    res = run_stream(engine, cfg, source, connector, stream, result.run_id,
                                     full_refresh=full_refresh, since=since, stop=stop,
                                     learner_ids=learner_ids, lock=lock)
                    if res.error_class in {"CredentialsRejected", "Interrupted", "LockLost"}:
                        fatal = res.exc
            result.streams.append(res)
    finally:
        if connector.http is not None:  # (the Prometheus counters count as requests go)
            result.http.update(connector.http.stats)
        connector.close()
    if isinstance(fatal, LockLost):
        pass  # the process that holds the source now matches its learners; we write nothing
    elif learner_sink is not None:
        learner_sink.update(learner_ids)
    else:  # also when nothing was written: learners an earlier pass left unmatched
        identity.after_run(engine, cfg.identity, learner_ids, window)
    if all(s.result == "succeeded" for s in result.streams):
        retry.transaction(engine, lambda conn: state.mark_source_success(conn, source.id,
                                                                         state.now_utc()),
                          window=window, op="mark_source_success")
        metrics.last_success.labels(source.id).set_to_current_time()
    else:
        result.result = "failed"
        result.error = next(s.error for s in result.streams if s.result != "succeeded")


def _record_not_run(engine: Engine, run_id: str, source_id: str, stream: str,
                    cause: BaseException, window: float = retry.DEFAULT_WINDOW) -> StreamResult:
    now = state.now_utc()

    def record(conn: Any) -> None:  # retried: it may find the row a lost commit made
        row = state.run_row(conn, run_id, stream) or state.start_run(conn, run_id, source_id,
                                                                     stream, now)
        state.finish_run(conn, row, result="failed", read=0, written=0,
                         error=f"not run: {one_line(cause)}")

    retry.transaction(engine, record, window=window, op="record_not_run")
    metrics.runs.labels(source_id, stream, "failed").inc()
    return StreamResult(stream, "failed", error=f"not run: {one_line(cause)}",
                        error_class=type(cause).__name__)


def run_stream(engine: Engine, cfg: Config, source: SourceConfig, connector: Connector | None,
               stream: Stream, run_id: str, *, full_refresh: bool = False,
               since: datetime | None = None, stop: threading.Event | None = None,
               learner_ids: RowIds | None = None, lock: SourceLock | None = None) -> StreamResult:
    """Run one stream; returns its result (failed streams are recorded, not raised).
    See :class:`StreamRun`."""
    return StreamRun(engine, cfg, source, stream, run_id, full_refresh=full_refresh, since=since,
                     stop=stop, learner_ids=learner_ids, lock=lock).run()


class StreamRun:
    """One run of one stream: its ``sync_runs`` row, the read (a :class:`Producer` thread a
    batch ahead), batches written with the latest checkpoint's cursor, the check against
    the vendor's total, soft deletes, and the row's result.

    Every warehouse call rides out a lost connection or a write conflict under the
    retry policy (:mod:`lms_sync.warehouse.retry`); before each batch the source ``lock``
    is checked, and taken again if its connection was lost."""

    def __init__(self, engine: Engine, cfg: Config, source: SourceConfig, stream: Stream,
                 run_id: str, *, full_refresh: bool = False, since: datetime | None = None,
                 stop: threading.Event | None = None, learner_ids: RowIds | None = None,
                 lock: SourceLock | None = None) -> None:
        self.engine, self.source, self.stream, self.run_id = engine, source, stream, run_id
        self.full_refresh, self.since, self.stop = full_refresh, since, stop
        self.learner_ids, self.lock = learner_ids, lock
        self.window = cfg.warehouse.reconnect_seconds
        self.batch_size = cfg.warehouse.batch_size
        self.log = get_logger("lms_sync.pipeline")
        self.started_at = state.now_utc()
        self.res = StreamResult(stream.name, "running")
        self.totals = WriteStats()
        # the batch in the making: records, and the latest checkpoint's cursor (if any)
        self.buffer = Batch(cfg.warehouse.batch_size, cfg.warehouse.batch_bytes)
        self.pending: Any = _UNSET
        self.saved_pages: SavedPages | None = None  # a skim stream's last clean run's pages
        self.seen = {t: SeenKeys() for t in stream.full_refresh_tables}  # for soft deletes
        self.keys = dict(self.seen)  # and for the vendor's total
        if stream.total_table and stream.total_table not in self.keys:
            self.keys[stream.total_table] = SeenKeys()

    def run(self) -> StreamResult:
        res, t0 = self.res, time.monotonic()
        row_id, prior, self.saved_pages = retry.transaction(self.engine, self._begin,
                                                            window=self.window, op="start_run")
        saved = None if self.full_refresh else prior
        res.cursor = saved
        self.log.info("sync.started", cursor=saved, full_refresh=self.full_refresh,
                      since=self.since.isoformat() if self.since else None)
        ctx = self.ctx = ReadContext(self.source.id, self.stream.name, saved, self.full_refresh,
                                     self.since, self.started_at, self.log,
                                     fail_on_invalid=self.source.fail_on_invalid_records,
                                     skim=self._skim())
        stop = self.stop
        reader: Producer[Record | Checkpoint] = Producer(
            lambda _: self.stream.read(ctx), [None], ahead=_AHEAD, chunk=min(256, self.batch_size),
            cut=lambda item: isinstance(item, Checkpoint),
            hold=None if stop is None else lambda item: isinstance(item, Checkpoint) and stop.is_set(),
            name="lms-sync-reader")
        try:
            self._read(reader)
            self._unchanged()
            self._reconcile()
            self._soft_delete()
            res.result = "succeeded"
        except Exception as exc:  # noqa: BLE001 - recorded on the run row and logged
            self._failed(exc, prior)
        finally:
            reader.close()  # the reader has ended: ctx is no longer touched by it
            for ids in self.keys.values():
                ids.close()
        res.skipped, res.excluded = ctx.skipped, ctx.excluded
        res.written = self.totals.written + res.deleted
        res.tables = Counter(self.totals.by_table())
        self._finish(row_id)
        if res.result == "succeeded":
            self.log.info("sync.finished", read=res.read, written=res.written, skipped=res.skipped,
                          deleted=res.deleted, tables=dict(res.tables), cursor=res.cursor,
                          duration=round(time.monotonic() - t0, 3), **ctx.counters)
        return res

    def _begin(self, conn: Any) -> tuple[int, Any, SavedPages | None]:
        # retried: it may find the row a lost commit made
        source_id, stream = self.source.id, self.stream.name
        row = state.run_row(conn, self.run_id, stream) or state.start_run(
            conn, self.run_id, source_id, stream, self.started_at)
        skim = self.stream.skim and not self.full_refresh and self.since is None
        return (row, state.load_cursor(conn, source_id, stream),
                _saved_pages(pages.load(conn, source_id, stream, row)) if skim else None)

    def _skim(self) -> PageSkim | None:
        """A skim stream's page digests: compared with the saved ones (if any still count),
        and taken for the next run."""
        if not self.stream.skim:
            return None
        source = self.source
        return PageSkim(skim_base(source.kind, source.base_url, source.options, self.stream.name),
                        self.saved_pages, self.log)

    @property
    def unchanged(self) -> bool:
        """Every page equalled the last clean run's: nothing was processed."""
        return self.ctx.skim is not None and self.ctx.skim.unchanged

    def _unchanged(self) -> None:
        """An unchanged stream reports what the run that saved its pages read."""
        if not self.unchanged or self.saved_pages is None:
            return
        saved, ctx = self.saved_pages, self.ctx
        self.res.read, ctx.excluded = saved.records_read, saved.excluded
        self.log.info("stream.unchanged", pages=saved.pages, records=saved.records_read)

    def _pages_to_save(self) -> SavedPages | None:
        """The run's page digests, if the run was clean: succeeded, a whole read (no
        ``--since``, not partial) that skipped no record (so its soft delete was done)."""
        ctx, res = self.ctx, self.res
        skim = ctx.skim
        if (skim is None or not skim.usable or res.result != "succeeded" or ctx.skipped
                or ctx.partial or self.since is not None):
            return None
        return SavedPages(self.run_id, skim.fingerprint, bytes(skim.digests), res.read,
                          res.distinct_read, ctx.excluded)

    def _read(self, items: Iterable[Record | Checkpoint]) -> None:
        res, keys, stop = self.res, self.keys, self.stop
        for item in items:
            if isinstance(item, Checkpoint):
                self.pending = item.cursor
                if stop is not None and stop.is_set():
                    self.flush()  # everything read so far resumes from this cursor: commit, stop
                    raise Interrupted("interrupted")
                continue
            res.read += 1
            if item.table in keys:
                keys[item.table].add(item.external_id)
            if self.add(item):
                self.flush()
                if stop is not None and stop.is_set():
                    raise Interrupted("interrupted")
        self.flush()

    def add(self, record: Record) -> bool:
        """The one spot a record joins the batch in the making; True: the batch is full."""
        return self.buffer.add(record)  # full at batch_size records or batch_bytes of raw

    def _keep_lock(self) -> None:
        if self.lock is not None:  # lost with its connection: taken again, or LockLost
            self.lock.keep(self.window)

    def _write(self) -> tuple[BatchWriter, WriteStats]:
        self._keep_lock()
        with self.engine.begin() as conn:
            writer = BatchWriter(conn, self.source.id, self.run_id)
            stats = writer.write(self.buffer, state.now_utc(), as_of=self.started_at)
            if self.pending is not _UNSET:
                state.save_cursor(conn, self.source.id, self.stream.name, self.pending)
        return writer, stats

    def flush(self) -> None:
        """Write the batch in the making with its cursor, in one transaction."""
        if not self.buffer and self.pending is _UNSET:
            return
        # a deadlock, or a connection lost mid-batch, rolled the batch back whole: it is
        # written again with its cursor (the reader waits, its queue full, and re-fetches
        # nothing)
        writer, stats = retry.call(self._write, engine=self.engine, window=self.window,
                                   event="batch.retry", records=len(self.buffer))
        cursor = self.pending is not _UNSET
        if cursor:
            self.res.cursor = self.pending
        if self.learner_ids is not None:
            self.learner_ids.update(writer.learner_ids)
        self.totals.merge(stats)
        self.log.info("batch.written", records=len(self.buffer), written=stats.written,
                      tables=stats.by_table(), cursor=self.res.cursor if cursor else None)
        self.buffer.clear()
        self.pending = _UNSET
        memory.trim()  # at most once a second for the process, whichever source gets there

    def _reconcile(self) -> None:
        distinct = self.saved_pages.distinct_read if self.unchanged and self.saved_pages else None
        _reconcile(self.ctx, self.stream, self.keys, self.res, self.log, distinct)

    def _soft_delete(self) -> None:
        ctx, seen, res = self.ctx, self.seen, self.res
        if not seen or ctx.partial or self.unchanged:  # unchanged: its saved run did it
            return
        if ctx.skipped:
            # a record skipped as invalid was still there: its row must not look deleted
            self.log.warning("rows.soft_delete_held", skipped=ctx.skipped, tables=sorted(seen),
                             reason="records were skipped as invalid; rows no longer listed are "
                                    "kept until a full read skips none")
            return

        def soft_delete() -> int:  # redone whole after a lost connection, lock first
            self._keep_lock()
            with self.engine.begin() as conn:
                now = state.now_utc()
                return sum(mark_deleted(conn, table, self.source.id, ids, now)
                           for table, ids in seen.items())

        res.deleted += retry.call(soft_delete, engine=self.engine, window=self.window,
                                  op="soft_delete")
        if res.deleted:
            self.log.info("rows.soft_deleted", count=res.deleted)

    def _failed(self, exc: Exception, prior: Any) -> None:
        res = self.res
        res.result, res.error, res.error_class = "failed", one_line(exc), type(exc).__name__
        res.exc = exc
        if isinstance(exc, Interrupted):
            res.error = "interrupted"
        if isinstance(exc, IncompleteRead):  # the next run reads this window again
            res.cursor = _restore_cursor(self.engine, self.source.id, self.stream.name, prior,
                                         self.log)
        self.log.error("sync.failed", error_class=res.error_class, error=res.error,
                       exc_info=not isinstance(exc, LmsSyncError))

    def _finish(self, row_id: int) -> None:
        res, source_id, stream = self.res, self.source.id, self.stream.name
        # metrics first: they must count a run whose result the warehouse cannot take
        metrics.runs.labels(source_id, stream, res.result).inc()
        metrics.records_read.labels(source_id).inc(res.read)
        for table, n in res.tables.items():
            metrics.records_written.labels(source_id, table).inc(n)
        gone = res.exc if isinstance(res.exc, retry.WarehouseUnreachable) else None
        keep = self._pages_to_save()

        def finish(conn: Any) -> None:  # with the pages of a clean run: both or neither
            state.finish_run(
                conn, row_id, result=res.result, read=res.read, written=res.written,
                skipped=res.skipped, error=res.error, cursor=res.cursor,
                vendor_total=res.vendor_total, distinct_read=res.distinct_read,
                excluded=res.excluded if res.vendor_total is not None else None)
            if keep is not None:
                pages.save(conn, source_id, stream, asdict(keep), keep.pages, state.now_utc())

        try:
            # after reconnecting; not waiting again if the stream failed on a warehouse gone
            retry.transaction(self.engine, finish, window=0 if gone is not None else self.window,
                              op="finish_run")
        except Exception as exc:
            # the warehouse did not come back in time: the run row stays `running` (the next
            # run marks it abandoned); the log keeps what it could not store
            self.log.error("run.unrecorded", result=res.result, error=res.error, read=res.read,
                           written=res.written, cause=one_line(exc))
            if gone is not None:  # its line names the warehouse and the setting that bounded the wait
                raise gone from exc
            raise


def _saved_pages(stored: dict[str, Any] | None) -> SavedPages | None:
    return None if stored is None else SavedPages(**stored)


def _reconcile(ctx: ReadContext, stream: Stream, keys: dict[str, SeenKeys], res: StreamResult,
               log: structlog.stdlib.BoundLogger, distinct: int | None = None) -> None:
    """Check a full read against the vendor's own total; raise IncompleteRead if short.
    ``distinct``: the distinct ids read, when not ``keys`` (an unchanged stream's saved count)."""
    table = stream.total_table
    if table is None:
        return
    res.distinct_read = keys[table].distinct() if distinct is None else distinct
    res.vendor_total = ctx.vendor_total
    if ctx.vendor_total is None or ctx.partial:
        return
    if res.distinct_read + ctx.skipped + ctx.excluded >= ctx.vendor_total:
        return
    log.error("stream.incomplete", table=table, vendor_total=ctx.vendor_total,
              distinct_read=res.distinct_read, skipped=ctx.skipped, excluded=ctx.excluded)
    raise IncompleteRead(
        f"read {res.distinct_read} distinct {table} of the {ctx.vendor_total} the vendor reports "
        f"({ctx.skipped} skipped, {ctx.excluded} left out by design)", source=ctx.source_id,
        fix="rows read are kept, nothing was soft-deleted and the cursor was kept; run again, "
            "and if it repeats report it (the vendor's paging may ignore its parameters)")


def _restore_cursor(engine: Engine, source_id: str, stream: str, cursor: Any,
                    log: structlog.stdlib.BoundLogger) -> Any:
    """Put back the cursor a run started from (its batches saved later ones)."""
    try:
        with engine.begin() as conn:
            state.save_cursor(conn, source_id, stream, cursor)
    except DBAPIError as exc:  # the run fails anyway; its result says why
        log.error("cursor.unrestored", cause=one_line(exc))
    return cursor


def default_parallelism(cfg: Config, engine: Engine) -> int:
    """How many sources ``sync`` runs at once: ``defaults.parallel_sources``, else 8 on
    PostgreSQL and 1 on SQLite/MySQL (one writer at a time suits SQLite; InnoDB gap
    locks can deadlock concurrent inserts into one unique index).

    8, not the cores: a source mostly waits on its vendor (latency, rate limits), and a
    source queued behind the others becomes the critical path (benchmarks/sync.py, five
    sources: the rate-limited one started last and alone set the wall time). Each running
    source holds two pooled connections at most (its lock, a batch): pool 5 + overflow 20."""
    from lms_sync.warehouse.dialect import name

    if cfg.defaults.parallel_sources:
        return cfg.defaults.parallel_sources
    return 8 if name(engine) == "postgresql" else 1


def run_sources(engine: Engine, cfg: Config, sources: list[SourceConfig], *,
                parallel: int | None = None, stop: threading.Event | None = None,
                **kw: Any) -> list[SourceResult]:
    """Run several sources, up to ``parallel`` at a time; results in the given order.

    Each source is isolated from the others' failures. On Ctrl-C the runs in
    flight stop at their next checkpoint (their committed batches are kept).
    """
    workers = min(parallel or default_parallelism(cfg, engine), len(sources))
    # one identity pass after all sources, not one per source: each pass loads every
    # learner linked to the ones written, i.e. most of the warehouse after a first load
    sinks = {s.id: RowIds() for s in sources}
    if workers <= 1:
        results = [run_source(engine, cfg, s, stop=stop, learner_sink=sinks[s.id], **kw)
                   for s in sources]
    else:
        stop = stop or threading.Event()
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="source") as pool:
            futures = [pool.submit(run_source, engine, cfg, s, stop=stop,
                                   learner_sink=sinks[s.id], **kw) for s in sources]
            try:
                results = [f.result() for f in futures]
            except KeyboardInterrupt:
                stop.set()
                raise
    _match_written(engine, cfg, sinks, results)
    return results


def _match_written(engine: Engine, cfg: Config, sinks: dict[str, RowIds],
                   results: list[SourceResult]) -> None:
    """The deferred identity pass of :func:`run_sources`. If it fails, the sources that
    wrote learners are reported failed (their rows are kept; the next pass matches them).

    It runs even when no learner was written: the pass also takes up learners left
    unmatched (a pass that failed or never ran), and a no-change run must mend those too.
    """
    ids = RowIds()
    for sink in sinks.values():
        ids.update(sink)
    try:
        identity.after_run(engine, cfg.identity, ids, cfg.warehouse.reconnect_seconds)
    except Exception as exc:  # noqa: BLE001 - reported on the sources, never a traceback
        get_logger("lms_sync.pipeline").error("identity.failed", error_class=type(exc).__name__,
                                              error=one_line(exc), learners=len(ids),
                                              exc_info=not isinstance(exc, LmsSyncError))
        for res in results:
            if sinks.get(res.source_id) and res.result == "succeeded":
                res.result, res.error = "failed", f"identity matching failed: {one_line(exc)}"
