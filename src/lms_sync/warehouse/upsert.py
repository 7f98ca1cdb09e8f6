"""Writing canonical records: idempotent, batched, per-dialect upserts.

``BatchWriter.write`` writes one batch of records in the caller's transaction:

* a record whose ``row_hash`` equals the stored one is not written at all (no
  ``updated_at`` churn), unless its row was soft-deleted (then it is revived);
* new and changed rows go through one dialect upsert statement per table;
* references by vendor id (an enrollment's learner and course, a course's or an
  org unit's parent, a membership's learner and org unit) are resolved to warehouse
  ids; a reference to a row we have not seen yet creates a stub row (``row_hash``
  empty) that the real record fills later;
* a new enrollment, or one whose status/passed/progress/completed_at changed,
  appends one ``enrollment_history`` row;
* a snapshot series gains a row only when its figures differ from its latest row.

PostgreSQL writes each table's batch with a binary COPY and one merge statement that does
all of the above (``pgmerge``); SQLite and MySQL/MariaDB look rows up and use executemany.
``row_hash`` is ``Record.encoded().digest``; a row whose stored hash has an older form but
whose values are equal is rewritten once (new hash) with no history row.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache
from typing import Any

from sqlalchemy import (
    Connection,
    Select,
    String,
    Table,
    and_,
    bindparam,
    func,
    select,
    text,
    update,
)

from lms_sync.canonical import ActivityProgress, Course, Enrollment, LearnerOrgUnit, OrgUnit, Record
from lms_sync.warehouse import dialect as dialects
from lms_sync.warehouse import pgmerge
from lms_sync.warehouse.tables import (
    RECORD_TABLES,
    activity_progress,
    courses,
    enrollment_history,
    enrollments,
    learners,
    org_units,
    stat_snapshots,
)

CHUNK = 500  # keys per IN (...) lookup: well below every driver's parameter limit
_KEY = ("source_id", "external_id")
_HISTORY_FIELDS = pgmerge.HISTORY_FIELDS
_REFS = {"learner_external_id", "course_external_id", "enrollment_external_id", "parent_external_id",
         "org_unit_external_id"}
_PARENT_COLUMN = {"courses": "parent_course_id", "org_units": "parent_id"}
"""The tables whose records name a parent of the same table, and the column it goes to."""


def _update_cols(row: dict[str, Any]) -> list[str]:
    """The columns an upsert overwrites on conflict: all but the key and first_seen_at."""
    return [c for c in row if c not in {"source_id", "external_id", "first_seen_at"}]


@dataclass
class WriteStats:
    """What one batch wrote, per table."""

    inserted: Counter[str] = field(default_factory=Counter)
    updated: Counter[str] = field(default_factory=Counter)
    unchanged: Counter[str] = field(default_factory=Counter)
    stubs: Counter[str] = field(default_factory=Counter)
    history: int = 0

    @property
    def written(self) -> int:
        return sum(self.inserted.values()) + sum(self.updated.values())

    def merge(self, other: WriteStats) -> None:
        self.inserted.update(other.inserted)
        self.updated.update(other.updated)
        self.unchanged.update(other.unchanged)
        self.stubs.update(other.stubs)
        self.history += other.history

    def by_table(self) -> dict[str, int]:
        out: Counter[str] = Counter()
        out.update(self.inserted)
        out.update(self.updated)
        if self.history:
            out["enrollment_history"] += self.history
        return dict(out)


@cache
def _stored_fields(cls: type[Record], table: Table) -> tuple[tuple[int, str], ...]:
    """(position in ``Encoded.row``, name) of the fields of ``cls`` that are columns of
    ``table``, ``raw`` aside (references are resolved apart)."""
    return tuple((i, f) for i, f in enumerate(cls.fields())
                 if f not in _REFS and f in table.c and f != "raw")


@cache
def _text_limits(table: Table) -> tuple[tuple[str, int], ...]:
    """(column, length) of the table's bounded text columns, keys aside (``external_id`` is
    validated to fit, and a cut key would merge rows)."""
    return tuple((c.name, c.type.length) for c in table.c
                 if isinstance(c.type, String) and c.type.length and c.name not in _KEY
                 and c.name != "row_hash")


def _fit(table: Table, row: dict[str, Any]) -> dict[str, Any]:
    """Cut text longer than its column (a 1,200-character course title): PostgreSQL and
    MariaDB refuse it, which failed the whole batch on every run, SQLite kept it whole.
    The row hash is of the record as read, so a cut value does not churn."""
    for name, length in _text_limits(table):
        value = row.get(name)
        if isinstance(value, str) and len(value) > length:
            row[name] = value[:length]
    return row


@cache
def _lookup_statement(table: Table, extra: tuple[str, ...]) -> Select:
    """One statement per table, so SQLAlchemy compiles it once (SQLite, MySQL/MariaDB)."""
    cols = [table.c.external_id, table.c.id, table.c.row_hash, table.c.deleted_at]
    cols += [table.c[c] for c in extra]
    ids = table.c.external_id.in_(bindparam("b_ids", expanding=True))
    return select(*cols).where(table.c.source_id == bindparam("b_source"), ids)


def chunks(items: Sequence[Any], size: int = CHUNK) -> Iterable[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


class BatchWriter:
    """Writes batches of canonical records for one source."""

    def __init__(self, conn: Connection, source_id: str, run_id: str | None = None) -> None:
        self.conn = conn
        self.source_id = source_id
        self.run_id = run_id
        self.dialect = dialects.name(conn)
        self.learner_ids: set[int] = set()
        """Ids of learners inserted or changed: what identity matching re-examines."""
        if self.dialect == "postgresql":
            # psycopg prepares a statement after 5 runs and PostgreSQL then may switch to a
            # generic plan; on a table loaded since its last ANALYZE such a plan once filtered
            # every row of the source instead of using the unique index, so each batch cost
            # O(table) and a first load went quadratic (benchmarks/sync.py: 0.3 s per 500-key
            # lookup at 10,000 rows). A merge is planned once per table and batch (~1 ms).
            # The settings end with the transaction.
            conn.execute(text(pgmerge.SETTINGS))

    def write(self, records: Iterable[Record], now: datetime, as_of: datetime | None = None) -> WriteStats:
        """Write ``records``; snapshots get ``as_of`` (default ``now``)."""
        by_table: dict[str, dict[str, Record]] = {name: {} for name in RECORD_TABLES}
        for record in records:
            by_table[record.table][record.external_id] = record  # last one wins
        stats = WriteStats()
        for name, table in RECORD_TABLES.items():
            batch = list(by_table[name].values())
            if not batch:
                continue
            if self.dialect == "postgresql":
                self._merge(table, batch, now, stats, as_of)
            elif table is stat_snapshots:
                self._write_snapshots(batch, as_of or now, stats)
            else:
                self._write_rows(table, batch, now, stats)
        return stats

    # ------------------------------------------------------------------ lookups

    def existing(self, table: Table, external_ids: Sequence[str], *extra: str) -> dict[str, Any]:
        """external_id -> row (id, row_hash, deleted_at, *extra) for this source (SQLite,
        MySQL/MariaDB: PostgreSQL's merge needs no lookup)."""
        stmt = _lookup_statement(table, extra)
        out: dict[str, Any] = {}
        for part in chunks(list(external_ids)):
            for row in self.conn.execute(stmt, {"b_source": self.source_id, "b_ids": list(part)}):
                out[row.external_id] = row
        return out

    def resolve(self, table: Table, external_ids: set[str], now: datetime,
                stats: WriteStats) -> dict[str, int]:
        """external_id -> id, creating stub rows for ids not seen yet."""
        if not external_ids:
            return {}
        found = {k: row.id for k, row in self.existing(table, sorted(external_ids)).items()}
        missing = sorted(external_ids - found.keys())
        if missing:
            stub: dict[str, Any] = {"row_hash": "", "first_seen_at": now, "updated_at": now}
            if table is courses:
                stub["kind"] = "course"
            if table is learners:
                stub["is_placeholder"] = False
            rows = [{"source_id": self.source_id, "external_id": x, **stub} for x in missing]
            self.conn.execute(dialects.insert_ignore_statement(table, _KEY, self.dialect), rows)
            stats.stubs[table.name] += len(missing)
            if missing_after := [x for x in missing if x not in found]:
                found.update({k: row.id for k, row in self.existing(table, missing_after).items()})
        return found

    # ------------------------------------------------------------------ writers

    def _merge(self, table: Table, batch: list[Record], now: datetime, stats: WriteStats,
               as_of: datetime | None) -> None:
        """PostgreSQL: one COPY and one merge per record class (one class per table today)."""
        by_class: dict[type[Record], list[Record]] = {}
        for record in batch:
            by_class.setdefault(type(record), []).append(record)
        cur = self._driver_cursor()
        try:
            for cls, records in by_class.items():
                done = pgmerge.merge(cur, table, cls, records, self.source_id, self.run_id, now,
                                     as_of)
                for counter, n in ((stats.inserted, done.inserted), (stats.updated, done.updated),
                                   (stats.unchanged, done.staged - done.inserted - done.updated)):
                    if n:
                        counter[table.name] += n
                for name, n in done.stubs.items():
                    if n:
                        stats.stubs[name] += n
                stats.history += done.history
                if table is learners:
                    self.learner_ids.update(done.ids)
        finally:
            cur.close()

    def _write_rows(self, table: Table, batch: list[Record], now: datetime, stats: WriteStats) -> None:
        """SQLite, MySQL/MariaDB: look the rows up, skip the unchanged, executemany the rest."""
        extra = _HISTORY_FIELDS if table is enrollments else ()
        current = self.existing(table, [r.external_id for r in batch], *extra)
        todo: list[Record] = []
        for record in batch:
            row = current.get(record.external_id)
            if row is not None and row.row_hash == record.encoded().digest and row.deleted_at is None:
                stats.unchanged[table.name] += 1
                continue
            todo.append(record)
        if not todo:
            return
        refs = self._references(table, todo, now, stats)
        rows = [self._row(table, record, now, refs) for record in todo]
        stmt = dialects.upsert_statement(table, _KEY, _update_cols(rows[0]), self.dialect)
        self.conn.execute(stmt, rows)
        for record in todo:
            if record.external_id in current:
                stats.updated[table.name] += 1
            else:
                stats.inserted[table.name] += 1
        if not (table is learners or table.name in _PARENT_COLUMN or table is enrollments):
            return
        # the rows we had plus one lookup of the new ones
        ids = {r.external_id: current[r.external_id].id for r in todo if r.external_id in current}
        added = [r.external_id for r in todo if r.external_id not in current]
        ids.update({k: row.id for k, row in self.existing(table, added).items()})
        if table is learners:
            self.learner_ids.update(ids.values())
        if table.name in _PARENT_COLUMN:
            self._link_parents(table, [r for r in todo if isinstance(r, Course | OrgUnit)], ids, now,
                               stats)
        if table is enrollments:
            self._append_history(todo, current, ids, now, stats)
            if new := [r for r in todo if r.external_id not in current and isinstance(r, Enrollment)]:
                self._adopt_activities(new, refs, now)

    def _driver_cursor(self) -> Any:
        """The driver's own cursor (psycopg's COPY), in this connection's transaction."""
        driver = self.conn.connection.dbapi_connection
        if driver is None:  # only a closed connection has none
            raise RuntimeError("the warehouse connection is closed")
        return driver.cursor()

    def _references(self, table: Table, records: list[Record], now: datetime, stats: WriteStats) -> dict:
        refs: dict[str, dict[str, int]] = {}
        linked = [r for r in records if isinstance(r, Enrollment | ActivityProgress)]
        if linked:
            refs["learner"] = self.resolve(learners, {r.learner_external_id for r in linked}, now, stats)
            refs["course"] = self.resolve(courses, {r.course_external_id for r in linked}, now, stats)
        members = [r for r in records if isinstance(r, LearnerOrgUnit)]
        if members:
            refs["learner"] = self.resolve(learners, {r.learner_external_id for r in members}, now, stats)
            refs["org_unit"] = self.resolve(org_units, {r.org_unit_external_id for r in members}, now,
                                            stats)
        if "enrollment_id" in table.c:
            wanted = {r.enrollment_external_id for r in linked
                      if isinstance(r, ActivityProgress) and r.enrollment_external_id}
            found = self.existing(enrollments, sorted(wanted)) if wanted else {}
            refs["enrollment"] = {k: row.id for k, row in found.items()}
        return refs

    def _row(self, table: Table, record: Record, now: datetime, refs: dict) -> dict[str, Any]:
        enc = record.encoded()
        values = enc.row
        row = {name: values[i] for i, name in _stored_fields(type(record), table)}
        row.update(raw=record.raw, source_id=self.source_id, row_hash=enc.digest, first_seen_at=now,
                   updated_at=now, deleted_at=None)
        if table.name in _PARENT_COLUMN:  # set again below for a row that has one (_link_parents)
            row[_PARENT_COLUMN[table.name]] = None
        if isinstance(record, Enrollment | ActivityProgress):
            row["learner_id"] = refs["learner"][record.learner_external_id]
            row["course_id"] = refs["course"][record.course_external_id]
        if isinstance(record, LearnerOrgUnit):
            row["learner_id"] = refs["learner"][record.learner_external_id]
            row["org_unit_id"] = refs["org_unit"][record.org_unit_external_id]
        if isinstance(record, ActivityProgress):
            row["enrollment_id"] = refs["enrollment"].get(record.enrollment_external_id)
        return _fit(table, row)

    def _link_parents(self, table: Table, records: Sequence[Course | OrgUnit], ids: dict[str, int],
                      now: datetime, stats: WriteStats) -> None:
        children = {r.external_id: r.parent_external_id for r in records if r.parent_external_id}
        if not children:
            return
        parents = self.resolve(table, set(children.values()), now, stats)
        # one executemany, not one UPDATE round trip per child row
        self.conn.execute(
            update(table).where(table.c.id == bindparam("b_id"))
            .values({_PARENT_COLUMN[table.name]: bindparam("b_parent")}),
            [{"b_id": ids[child], "b_parent": parents[parent]} for child, parent in children.items()],
        )

    def _adopt_activities(self, new: list[Enrollment], refs: dict, now: datetime) -> None:
        """Activities written before their enrollment existed got no ``enrollment_id``, and
        an activity that does not change is never written again: fill it in when the
        enrollment (same source, learner and course) arrives."""
        learner_ids = sorted({refs["learner"][r.learner_external_id] for r in new})
        e, a = enrollments.alias("e"), activity_progress
        match = (select(func.min(e.c.id)).where(e.c.source_id == a.c.source_id,
                                                 e.c.learner_id == a.c.learner_id,
                                                 e.c.course_id == a.c.course_id)
                 .scalar_subquery())
        for part in chunks(learner_ids):
            self.conn.execute(
                update(a).where(a.c.source_id == self.source_id, a.c.enrollment_id.is_(None),
                                a.c.learner_id.in_(part), match.is_not(None))
                .values(enrollment_id=match, updated_at=now))

    def _append_history(self, todo: list[Record], before: dict, ids: dict[str, int],
                        now: datetime, stats: WriteStats) -> None:
        changed = []
        for record in todo:
            old = before.get(record.external_id)
            new = tuple(getattr(record, f) for f in _HISTORY_FIELDS)
            if old is None or old.row_hash == "" or tuple(getattr(old, f) for f in _HISTORY_FIELDS) != new:
                changed.append(record)
        if not changed:
            return
        rows = [
            {"enrollment_id": ids[r.external_id], "run_id": self.run_id, "observed_at": now,
             **{f: getattr(r, f) for f in _HISTORY_FIELDS}}
            for r in changed
        ]
        self.conn.execute(enrollment_history.insert(), rows)
        stats.history += len(rows)

    def _write_snapshots(self, batch: list[Record], now: datetime, stats: WriteStats) -> None:
        t = stat_snapshots
        latest: dict[str, Any] = {}
        series = [r.external_id for r in batch]
        for part in chunks(series):
            newest = (
                select(t.c.external_id, func.max(t.c.as_of).label("as_of"))
                .where(t.c.source_id == self.source_id, t.c.external_id.in_(part))
                .group_by(t.c.external_id)
                .subquery()
            )
            found = self.conn.execute(
                select(t).join(
                    newest, and_(t.c.external_id == newest.c.external_id, t.c.as_of == newest.c.as_of)
                ).where(t.c.source_id == self.source_id)
            )
            latest.update({row.external_id: row for row in found})
        rows, rehash = [], []
        for record in batch:
            digest = record.encoded().digest
            data = _fit(t, {k: v for k, v in record.__dict__.items() if k in t.c})
            old = latest.get(record.external_id)
            if old is not None and old.row_hash != digest and all(
                    getattr(old, k) == v for k, v in data.items()):
                # the same figures under a hash of an older form: no new observation
                rehash.append({"b_id": old.id, "b_hash": digest})
                stats.unchanged[t.name] += 1
                continue
            if old is not None and old.row_hash == digest:
                stats.unchanged[t.name] += 1
                continue
            rows.append({**data, "source_id": self.source_id, "as_of": now, "row_hash": digest,
                         "first_seen_at": now, "updated_at": now})
        if rehash:
            self.conn.execute(update(t).where(t.c.id == bindparam("b_id"))
                              .values(row_hash=bindparam("b_hash")), rehash)
        if rows:
            self.conn.execute(t.insert(), rows)
            stats.inserted[t.name] += len(rows)
