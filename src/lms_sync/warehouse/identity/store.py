"""Load and save what a matching pass works on, per database, under the identity lock.

``learners.email_key``/``hr_key`` store each learner's keys (indexed) and ``matched_at``
when it was last examined. An incremental pass loads its seed learners and everything
reachable from them (:meth:`Loader.closure`): the other learners of their persons (a link
may have gone) and the learners sharing their keys or overrides (a link may have come).
Those sets are complete components, so the pass is exact.

Passes are serialized across threads and processes (an advisory lock on PostgreSQL,
GET_LOCK on MySQL/MariaDB, a file in ``<database>.locks/`` for SQLite). Changing a
learner's ``person_id`` does not touch its ``updated_at`` (identity is derived data); a
person's ``updated_at`` moves when its email or name changes.

On PostgreSQL every lookup and write of a pass is one short statement over array
parameters (``= ANY(:ids)``, ``unnest(...)``), whatever the number of learners: a
closure level is one ``SELECT``, new persons one ``INSERT ... SELECT FROM unnest``, the
learners' person and keys one ``UPDATE ... FROM unnest``. Long ``IN (...)`` lists cost
a compile and an uncached driver parse per statement; SQLite and MySQL/MariaDB keep them.
"""

from __future__ import annotations

import threading
from array import array
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ARRAY,
    BigInteger,
    Connection,
    Engine,
    Result,
    String,
    Table,
    any_,
    bindparam,
    case,
    cast,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.types import NullType

from lms_sync.errors import UserError
from lms_sync.warehouse import dialect as dialects
from lms_sync.warehouse.identity.assign import Attributes, Learner, Override, Person
from lms_sync.warehouse.identity.rules import Keys, Rules
from lms_sync.warehouse.state import inserted_id
from lms_sync.warehouse.tables import identity_overrides, learners, person_merges, persons
from lms_sync.warehouse.upsert import chunks

LEARNER_COLUMNS = (
    learners.c.id, learners.c.source_id, learners.c.external_id, learners.c.email, learners.c.hr_id,
    learners.c.is_placeholder, learners.c.person_id, learners.c.first_name, learners.c.last_name,
    learners.c.display_name, learners.c.email_key, learners.c.hr_key,
    learners.c.deleted_at.is_not(None).label("gone"),  # a flag: no datetime made per row
)
"""The columns of :class:`assign.Learner`, in its order."""


def _ids(values: Iterable[int]) -> str:
    """A ``BIGINT[]`` literal, passed as one text parameter: psycopg dumps a list element by
    element in Python (~0.6 us each), ``join`` in C (~0.1 us)."""
    return "{" + ",".join(map(str, values)) + "}"


def _strs(values: Iterable[str | None]) -> str:
    """A ``TEXT[]`` literal (each element double-quoted, ``"`` and ``\\`` escaped). Mostly
    one ``join``: elements without ``"`` or ``\\`` (nearly all) need no escaping, and NULLs
    go in as a NUL element (no text in PostgreSQL holds one), replaced after."""
    items = ["\0" if v is None else v for v in values]
    body = '{"' + '","'.join(items) + '"}' if items else "{}"
    if "\\" in body or body.count('"') != 2 * len(items):
        return "{" + ",".join('"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
                              for v in items).replace('"\0"', "NULL") + "}"
    return body.replace('"\0"', "NULL")


def _array(name: str, of: Any) -> Any:
    """``CAST(:name AS of[])``: the parameter is an array literal (:func:`_ids`, :func:`_strs`).
    Untyped: psycopg sends a ``str`` as ``unknown``, so the server reads it as the array
    (a constant the planner sees). A ``TEXT`` parameter cast to an array is computed per
    row: no index, and ``= ANY`` scans the array for every row of the table."""
    return cast(bindparam(name, type_=NullType()), ARRAY(of))


_PG_CLOSURE = select(*LEARNER_COLUMNS).where(or_(
    learners.c.id == any_(_array("ids", BigInteger)),
    learners.c.email_key == any_(_array("eks", String)),
    learners.c.hr_key == any_(_array("hks", String)),
    learners.c.person_id == any_(_array("pids", BigInteger)),
))
"""One level of a closure on PostgreSQL: four arrays, one statement (a BitmapOr of the
four indexes), however many learners the level reaches."""

PG_ROWS = 20_000
"""Rows per ``unnest`` write on PostgreSQL (a pass slice's closure rarely needs two)."""

# --------------------------------------------------------------------------- locking

_PROCESS_LOCK = threading.Lock()


@contextmanager
def locked_transaction(engine: Engine, timeout: int = 600) -> Iterator[Connection]:
    """A transaction holding the warehouse-wide identity lock (one pass at a time)."""
    with _PROCESS_LOCK:
        try:
            with dialects.locked_transaction(engine, "identity:", timeout) as conn:
                yield conn
        except dialects.LockBusy:
            raise UserError("identity matching is busy in another process; try again later") from None


# --------------------------------------------------------------------------- loading


def stale_ids(conn: Connection) -> array[int]:
    """Learners without a person, or updated since they were matched (a run that died before
    its pass). Streamed into 8 bytes an id: after a first load that is every learner."""
    c = learners.c
    found = array("q")
    for part in conn.execution_options(stream_results=True, yield_per=10_000).execute(
        select(c.id).where(or_(c.person_id.is_(None), c.matched_at.is_(None),
                               c.updated_at > c.matched_at))
    ).scalars().partitions():
        found.extend(part)
    return found


def load_overrides(conn: Connection) -> list[Override]:
    oc = identity_overrides.c
    return [Override(*row) for row in conn.execute(select(oc.learner_a_id, oc.learner_b_id, oc.action))]


class Loader:
    """The learners a pass examines, with the keys the rules give them now."""

    def __init__(self, conn: Connection, rules: Rules) -> None:
        self.conn = conn
        self.rules = rules
        self.learners: dict[int, Learner] = {}
        self.keys: dict[int, Keys] = {}

    def _add(self, result: Result[Any]) -> list[Learner]:
        """The learners of ``result`` not loaded before (fetched many rows a call: a row
        at a time costs more than the row)."""
        new = []
        known, keys, keys_of = self.learners, self.keys, self.rules.keys_of
        for row in (row for rows in result.partitions(10_000) for row in rows):
            if row[0] not in known:
                learner = Learner._make(row)
                known[learner.id] = learner
                keys[learner.id] = keys_of(learner.source_id, learner.email, learner.hr_id,
                                           learner.is_placeholder)
                new.append(learner)
        return new

    def everyone(self) -> None:
        self._add(self.conn.execute(select(*LEARNER_COLUMNS)))

    def _where(self, column: Any, values: Iterable[Any]) -> list[Learner]:
        found: list[Learner] = []
        for part in chunks(sorted(values)):
            found += self._add(self.conn.execute(select(*LEARNER_COLUMNS).where(column.in_(part))))
        return found

    def _level(self, ids: set[int], eks: set[str], hks: set[str], pids: set[int]) -> list[Learner]:
        """The learners with one of these ids, email keys, HR keys or persons, not yet loaded."""
        if not (ids or eks or hks or pids):
            return []
        if self.conn.dialect.name == "postgresql":
            return self._add(self.conn.execute(_PG_CLOSURE, {
                "ids": _ids(ids), "eks": _strs(eks), "hks": _strs(hks), "pids": _ids(pids)}))
        c = learners.c
        return (self._where(c.email_key, eks) + self._where(c.hr_key, hks)
                + self._where(c.person_id, pids) + self._where(c.id, ids))

    def closure(self, seeds: set[int], overrides: Sequence[Override]) -> None:
        """The seeds and every learner linked to them, before or after this pass."""
        partners: dict[int, set[int]] = defaultdict(set)
        for o in overrides:
            partners[o.learner_a_id].add(o.learner_b_id)
            partners[o.learner_b_id].add(o.learner_a_id)
        seen_e: set[str] = set()
        seen_h: set[str] = set()
        seen_p: set[int] = set()
        frontier = self._level(seeds, set(), set(), set())
        while frontier:
            new_e, new_h, new_p, new_ids = set(), set(), set(), set()
            for row in frontier:
                ek, hk = self.keys[row.id]
                if ek is not None and ek not in seen_e:
                    new_e.add(ek)
                if hk is not None and hk not in seen_h:
                    new_h.add(hk)
                if row.person_id is not None and row.person_id not in seen_p:
                    new_p.add(row.person_id)
                new_ids |= {p for p in partners.get(row.id, ()) if p not in self.learners}
            seen_e |= new_e
            seen_h |= new_h
            seen_p |= new_p
            frontier = self._level(new_ids, new_e, new_h, new_p)


def load_persons(conn: Connection, ids: Iterable[int] | None) -> dict[int, Person]:
    """The persons ``ids`` (deleted ones too), or every live person for ``None``."""
    pc = persons.c
    query = select(pc.id, pc.primary_email, pc.display_name, pc.deleted_at.is_(None))
    if ids is None:
        rows: Iterable[Any] = conn.execute(query.where(pc.deleted_at.is_(None)))
    elif conn.dialect.name == "postgresql":
        rows = (row for part in conn.execute(query.where(pc.id == any_(_array("ids", BigInteger))),
                                             {"ids": _ids(ids)}).partitions(10_000)
                for row in part) if ids else ()
    else:
        rows = (row for part in chunks(sorted(ids)) for row in conn.execute(query.where(pc.id.in_(part))))
    return {pid: Person(email, name, bool(live)) for pid, email, name, live in rows}


# --------------------------------------------------------------------------- saving


def insert_persons(conn: Connection, attrs: list[Attributes], now: datetime) -> list[int]:
    """New persons, their ids in the order of ``attrs``."""
    rows = [{"primary_email": e, "display_name": n, "first_seen_at": now, "updated_at": now}
            for e, n in attrs]
    if not rows:
        return []
    if conn.dialect.name == "postgresql":
        return _insert_persons_postgresql(conn, attrs, now)
    if conn.dialect.insert_executemany_returning_sort_by_parameter_order:
        stmt = persons.insert().returning(persons.c.id, sort_by_parameter_order=True)
        return list(conn.execute(stmt, rows).scalars())
    return [inserted_id(conn.execute(persons.insert().values(**r))) for r in rows]


_NOW = bindparam("now", type_=persons.c.updated_at.type)

_PG_INSERT_PERSONS = text(
    "INSERT INTO persons (primary_email, display_name, first_seen_at, updated_at) "
    "SELECT v.e, v.n, :now, :now FROM unnest(CAST(:emails AS TEXT[]), CAST(:names AS TEXT[])) "
    "WITH ORDINALITY AS v(e, n, o) ORDER BY v.o RETURNING id"
).bindparams(_NOW)

_PG_UPDATE_PERSONS = text(
    "UPDATE persons AS p SET primary_email = v.e, display_name = v.n, updated_at = :now "
    "FROM unnest(CAST(:pids AS BIGINT[]), CAST(:emails AS TEXT[]), CAST(:names AS TEXT[])) "
    "AS v(pid, e, n) WHERE p.id = v.pid"
).bindparams(_NOW)


def _insert_persons_postgresql(conn: Connection, attrs: list[Attributes], now: datetime) -> list[int]:
    """One ``INSERT ... SELECT FROM unnest`` in the order of ``attrs``: the rows take their
    ids from the sequence in that order, so the ids sorted are the ids of ``attrs`` (what
    SQLAlchemy's insertmanyvalues relies on for a SERIAL key, too)."""
    ids: list[int] = []
    for part in chunks(attrs, PG_ROWS):
        ids += sorted(conn.execute(_PG_INSERT_PERSONS, {
            "emails": _strs(e for e, _ in part), "names": _strs(n for _, n in part), "now": now}
        ).scalars())
    return ids


def update_persons(conn: Connection, changes: list[dict[str, Any]], now: datetime) -> None:
    if changes and conn.dialect.name == "postgresql":
        for part in chunks(changes, PG_ROWS):
            conn.execute(_PG_UPDATE_PERSONS, {
                "pids": _ids(x["pid"] for x in part), "emails": _strs(x["email"] for x in part),
                "names": _strs(x["name"] for x in part), "now": now})
    elif changes:
        conn.execute(update(persons).where(persons.c.id == bindparam("pid"))
                     .values(primary_email=bindparam("email"), display_name=bindparam("name"),
                             updated_at=now),
                     changes)


def delete_persons(conn: Connection, ids: list[int], now: datetime) -> None:
    """Soft-delete: persons are never hard-deleted (their merges point at them)."""
    if ids and conn.dialect.name == "postgresql":
        conn.execute(update(persons).where(persons.c.id == any_(_array("ids", BigInteger)))
                     .values(deleted_at=now, updated_at=now), {"ids": _ids(ids)})
        return
    for part in chunks(ids):
        conn.execute(update(persons).where(persons.c.id.in_(part)).values(deleted_at=now, updated_at=now))


def insert_history(conn: Connection, records: list[dict[str, Any]]) -> None:
    if records:
        conn.execute(person_merges.insert(), records)


def mark_matched(conn: Connection, ids: Sequence[int] | None, started_at: datetime) -> None:
    """``matched_at`` of the stale learners among ``ids`` (every learner for ``None``): an
    up-to-date learner stays up to date."""
    c = learners.c
    stale = or_(c.matched_at.is_(None), c.updated_at > c.matched_at)
    if ids is None:
        conn.execute(update(learners).where(stale).values(matched_at=started_at))
        return
    if ids and conn.dialect.name == "postgresql":
        conn.execute(update(learners).where(c.id == any_(_array("ids", BigInteger)), stale)
                     .values(matched_at=started_at), {"ids": _ids(ids)})
        return
    for part in chunks(ids):
        conn.execute(update(learners).where(c.id.in_(part), stale).values(matched_at=started_at))


def update_learners(conn: Connection, changes: list[dict[str, Any]], started_at: datetime) -> None:
    """Write person and keys of changed learners (and matched_at, so each row is written once)."""
    if not changes:
        return
    dialect = dialects.name(conn)
    if dialect == "postgresql":
        _update_learners_postgresql(conn, changes, started_at)
    elif dialect == "sqlite":
        _update_learners_sqlite(conn, changes, started_at)
    else:
        _update_learners_mysql(conn, changes, started_at)


_MATCHED_SQL = ("CASE WHEN l.matched_at IS NULL OR l.updated_at > l.matched_at "
                "THEN :started ELSE l.matched_at END")


def _update_learners_postgresql(conn: Connection, changes: list[dict[str, Any]],
                                started_at: datetime) -> None:
    """One statement per ``PG_ROWS`` learners: arrays unnested into a join."""
    stmt = text(
        f"UPDATE {_qualified(learners)} AS l SET person_id = v.pid, email_key = v.ek, "
        f"hr_key = v.hk, matched_at = {_MATCHED_SQL} "
        "FROM unnest(CAST(:lids AS BIGINT[]), CAST(:pids AS BIGINT[]), "
        "CAST(:eks AS TEXT[]), CAST(:hks AS TEXT[])) AS v(lid, pid, ek, hk) WHERE l.id = v.lid"
    ).bindparams(bindparam("started", type_=learners.c.matched_at.type))
    for part in chunks(changes, PG_ROWS):
        conn.execute(stmt, {"lids": _ids(x["lid"] for x in part), "pids": _ids(x["pid"] for x in part),
                            "eks": _strs(x["ek"] for x in part), "hks": _strs(x["hk"] for x in part),
                            "started": started_at})


def _update_learners_sqlite(conn: Connection, changes: list[dict[str, Any]],
                            started_at: datetime) -> None:
    """SQLite runs executemany in-process: one UPDATE per learner costs no round trip."""
    c = learners.c
    matched = case((or_(c.matched_at.is_(None), c.updated_at > c.matched_at),
                    bindparam("started", started_at, type_=c.matched_at.type)),
                   else_=c.matched_at)
    conn.execute(
        update(learners).where(c.id == bindparam("lid"))
        .values(person_id=bindparam("pid"), email_key=bindparam("ek"), hr_key=bindparam("hk"),
                matched_at=matched),
        [{**x, "started": started_at} for x in changes],
    )


def _update_learners_mysql(conn: Connection, changes: list[dict[str, Any]],
                           started_at: datetime) -> None:
    """The changes go into a temporary table (PyMySQL batches an INSERT executemany into
    multi-row INSERTs), then one UPDATE ... JOIN writes them all. (MySQL assigns SET columns
    left to right: matched_at's CASE reads no column set before it.)"""
    conn.execute(text("CREATE TEMPORARY TABLE IF NOT EXISTS lms_sync_identity_changes "
                      "(lid BIGINT PRIMARY KEY, pid BIGINT, ek VARCHAR(320), hk VARCHAR(255)) "
                      "CHARACTER SET utf8mb4"))
    conn.execute(text("DELETE FROM lms_sync_identity_changes"))
    conn.execute(text("INSERT INTO lms_sync_identity_changes (lid, pid, ek, hk) "
                      "VALUES (:lid, :pid, :ek, :hk)"), changes)
    conn.execute(text(
        "UPDATE learners l JOIN lms_sync_identity_changes t ON l.id = t.lid "
        f"SET l.person_id = t.pid, l.email_key = t.ek, l.hr_key = t.hk, l.matched_at = {_MATCHED_SQL}"
    ).bindparams(bindparam("started", type_=learners.c.matched_at.type)), {"started": started_at})
    conn.execute(text("DROP TEMPORARY TABLE lms_sync_identity_changes"))


def _qualified(table: Table) -> str:
    return f'"{table.schema}"."{table.name}"' if table.schema else f'"{table.name}"'
