"""PostgreSQL's write path: one table's batch in a binary COPY and one merge statement.

1. ``CREATE TEMP TABLE IF NOT EXISTS`` a stage for the record class (one per connection,
   typed like the record's fields; ``ON COMMIT DELETE ROWS`` so it never grows);
2. binary COPY of each record's ``Record.encoded().row`` (its values and digest) into it;
3. one statement: the stage is emptied (``DELETE … RETURNING``); the rows whose ``row_hash``
   differs from the stored one, or that were soft-deleted, go to ``INSERT … ON CONFLICT DO
   UPDATE`` (an unchanged row never reaches ON CONFLICT, which would lock it).
   Beside it, CTEs create the stub rows of references not seen yet, append
   ``enrollment_history`` (a new enrollment, or a changed status/passed/progress/completed_at)
   and give activities written before their enrollment its id. It returns the counts
   (inserted: ``xmax = 0``; unchanged: staged minus returned) and the ids the caller needs.
There is no existence query. Courses and org units that name a parent take one more
statement after the rows exist (stub parents, then the links), as the old path did.

Every lookup of a stored row is an index probe by key (a LATERAL … LIMIT 1 or a scalar
subquery, which the planner cannot turn into a join), so a batch costs the same whatever
the tables hold and whatever their statistics say: planned as joins on a fresh table's
stale statistics, they became nested loops over every row of the source, per batch
(tests/warehouse/test_pgmerge.py checks the plans).

Every CTE of a statement sees the same snapshot: ``old`` reads the enrollments as they were
before the merge, and a reference is found either in its table or in its stub CTE.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any

from sqlalchemy import JSON, Boolean, Float, Integer, String, Table

from lms_sync.canonical import Record
from lms_sync.warehouse.tables import courses, enrollments, learners, org_units, stat_snapshots
from lms_sync.warehouse.types import UTCDateTime

SETTINGS = ("SELECT set_config('plan_cache_mode', 'force_custom_plan', true), "
            "set_config('jit', 'off', true), set_config('work_mem', '64MB', true)")
"""Once per transaction. JIT compiles a merge for ~100 ms that runs in a few; the stub and
history joins hash the batch in memory. (force_custom_plan: see BatchWriter.)"""

HISTORY_FIELDS = ("status", "passed", "progress_pct", "completed_at")


@dataclass(frozen=True)
class Ref:
    """A record field holding a vendor id that the row stores as a warehouse id."""

    field: str
    column: str
    target: Table
    stub: tuple[tuple[str, str], ...] | None
    """(column, SQL literal) of a stub row beyond the common ones; None: never stubbed."""


_LEARNER = Ref("learner_external_id", "learner_id", learners, (("is_placeholder", "false"),))
_COURSE = Ref("course_external_id", "course_id", courses, (("kind", "'course'"),))
REFS: dict[str, tuple[Ref, ...]] = {
    "enrollments": (_LEARNER, _COURSE),
    "activity_progress": (_LEARNER, _COURSE,
                          Ref("enrollment_external_id", "enrollment_id", enrollments, None)),
    "learner_org_units": (_LEARNER, Ref("org_unit_external_id", "org_unit_id", org_units, ())),
}
PARENTS: dict[str, Ref] = {
    "courses": Ref("parent_external_id", "parent_course_id", courses, (("kind", "'course'"),)),
    "org_units": Ref("parent_external_id", "parent_id", org_units, ()),
}
_NOT_UPDATED = {"source_id", "external_id", "first_seen_at"}


@dataclass(frozen=True)
class Plan:
    """The statements of one (table, record class)."""

    create: str
    copy: str
    types: tuple[str, ...]
    merge: str
    outputs: tuple[str, ...]
    link: str | None


@dataclass
class Merged:
    """What one merge did."""

    staged: int
    inserted: int
    updated: int
    stubs: dict[str, int]
    history: int
    ids: list[int]
    """Learners: the ids of the rows written (identity re-examines them)."""


def _pg_type(table: Table, name: str) -> str:
    kind = table.c[name].type
    if isinstance(kind, JSON) and name != "raw":  # a dict (snapshot figures): psycopg dumps it
        return "json"
    if isinstance(kind, UTCDateTime):
        return "timestamptz"
    if isinstance(kind, Boolean):
        return "bool"
    if isinstance(kind, Float):
        return "float8"
    if isinstance(kind, Integer):
        return "int8"
    if isinstance(kind, String | JSON):  # JSON staged as its text, cast by the merge
        return "text"
    raise TypeError(f"no stage type for {table.name}.{name} ({kind!r})")


def _probe(table: str, key: str, column: str = "id") -> str:
    """A scalar subquery: ``column`` of the ``table`` row of this source whose external id is
    ``key``. A scalar subquery is never turned into a join, so it is one index probe per row
    whatever the table's statistics say (a join planned on a fresh table's stale statistics
    became a nested loop over every row of the source, per batch: quadratic)."""
    return (f'(SELECT {column} FROM "{table}" WHERE source_id = %(src)s::text '
            f"AND external_id = {key})")


def _stub_cte(name: str, ref: Ref, rel: str, col: str) -> str:
    """``name`` inserts a stub row for each distinct ``rel.col`` not in ``ref.target`` yet."""
    extra = ref.stub or ()
    cols = "".join(f", {c}" for c, _ in extra)
    vals = "".join(f", {v}" for _, v in extra)
    return (f'{name} AS (INSERT INTO "{ref.target.name}" (source_id, external_id, row_hash, '
            f"first_seen_at, updated_at{cols}) SELECT %(src)s::text, d.x, '', %(now)s::timestamptz, "
            f"%(now)s::timestamptz{vals} FROM (SELECT DISTINCT {rel}.{col} AS x FROM {rel} "
            f"WHERE {rel}.{col} IS NOT NULL) d WHERE {_probe(ref.target.name, 'd.x')} IS NULL "
            "ON CONFLICT (source_id, external_id) DO NOTHING RETURNING id, external_id)")


@cache
def plan(table: Table, cls: type[Record]) -> Plan:
    fields = cls.fields()
    refs = {r.field: r for r in REFS.get(table.name, ())}
    parent = PARENTS.get(table.name)
    skip = set(refs) | ({parent.field} if parent else set())
    stored = [f for f in fields if f not in skip]
    missing = [f for f in stored if f not in table.c]
    if missing:
        raise TypeError(f"{cls.__name__} fields {missing} are not columns of {table.name}")
    types = tuple("text" if f in skip else _pg_type(table, f) for f in fields) + ("text",)
    stage = f"lms_stage2_{table.name}_{cls.__name__.lower()}"
    staged = ", ".join(f'"{f}"' for f in (*fields, "row_hash"))
    create = (f"CREATE TEMP TABLE IF NOT EXISTS {stage} ("
              + ", ".join(f'"{f}" {t}' for f, t in zip((*fields, "row_hash"), types, strict=True))
              + ") ON COMMIT DELETE ROWS")

    def value(f: str, rel: str = "w") -> str:
        kind = table.c[f].type
        if f == "raw":
            return f'{rel}."{f}"::json'
        length = getattr(kind, "length", None)
        if isinstance(kind, String) and length and f not in {"external_id", "row_hash"}:
            # text longer than its column is cut (PostgreSQL refuses it; the hash is of the
            # record as read, so a cut value does not churn)
            return f'left({rel}."{f}", {length})'
        return f'{rel}."{f}"'

    if table is stat_snapshots:
        return Plan(create, f"COPY {stage} ({staged}) FROM STDIN (FORMAT BINARY)", types,
                    _snapshot_merge(stage, stored, value), ("staged", "inserted", "rehashed"), None)

    cols = ["source_id", *stored, "row_hash", "first_seen_at", "updated_at", "deleted_at"]
    vals = ["%(src)s::text", *(value(f) for f in stored), "w.row_hash", "%(now)s::timestamptz",
            "%(now)s::timestamptz", "NULL"]
    # w: the staged rows to write. An unchanged row must not even reach ON CONFLICT: DO
    # UPDATE … WHERE false still locks it (a tuple header written, WAL) on every no-change run
    history = table is enrollments
    kept = ("id", "row_hash", "deleted_at", *(HISTORY_FIELDS if history else ()))
    # o: the stored row, one index probe per staged row (LIMIT 1 keeps the subquery from
    # becoming a join; see _probe)
    ctes = ["s AS (DELETE FROM " + stage + " RETURNING *)",
            "w AS (SELECT s.*, " + ", ".join(f'o.{c} AS "_o_{c}"' for c in kept)
            + " FROM s LEFT JOIN LATERAL (SELECT " + ", ".join(f"t.{c}" for c in kept)
            + f' FROM "{table.name}" t WHERE t.source_id = %(src)s::text AND t.external_id = '
            "s.external_id LIMIT 1) o ON true WHERE o.id IS NULL OR o.row_hash <> s.row_hash "
            "OR o.deleted_at IS NOT NULL)"]
    joins = []
    outputs = ["staged", "inserted", "updated"]
    selects = ["(SELECT count(*) FROM s)", "(SELECT count(*) FROM up WHERE ins)",
               "(SELECT count(*) FROM up WHERE NOT ins)"]
    for i, ref in enumerate(refs.values()):
        found = _probe(ref.target.name, f'w."{ref.field}"')
        cols.append(ref.column)
        if ref.stub is None:
            vals.append(found)
            continue
        ctes.append(_stub_cte(f"r{i}", ref, "w", f'"{ref.field}"'))
        joins.append(f'LEFT JOIN r{i} ON r{i}.external_id = w."{ref.field}"')
        vals.append(f"COALESCE({found}, r{i}.id)")
        outputs.append(f"stubs:{ref.target.name}")
        selects.append(f"(SELECT count(*) FROM r{i})")
    if parent is not None:  # linked by the second statement, once the rows exist
        cols.append(parent.column)
        vals.append("NULL")
    returning = "t.id, t.external_id, (t.xmax = 0) AS ins"
    if history:
        returning += ", t.learner_id, t.course_id, " + ", ".join(f"t.{f}" for f in HISTORY_FIELDS)
        ctes.append("old AS (SELECT " + ", ".join(f'w."_o_{c}" AS {c}' for c in kept if c != "deleted_at")
                    + ' FROM w WHERE w."_o_id" IS NOT NULL)')
    sets = ", ".join(f'"{c}" = EXCLUDED."{c}"' for c in cols if c not in _NOT_UPDATED)
    ctes.append(f'up AS (INSERT INTO "{table.name}" AS t ({", ".join(cols)}) SELECT {", ".join(vals)} '
                f"FROM w {' '.join(joins)} ON CONFLICT (source_id, external_id) DO UPDATE SET {sets} "
                "WHERE t.row_hash <> EXCLUDED.row_hash OR t.deleted_at IS NOT NULL "
                f"RETURNING {returning})")
    if history:
        old = ", ".join(f"old.{f}" for f in HISTORY_FIELDS)
        new = ", ".join(f"up.{f}" for f in HISTORY_FIELDS)
        ctes.append("hist AS (INSERT INTO enrollment_history (enrollment_id, run_id, observed_at, "
                    + ", ".join(HISTORY_FIELDS) + ") SELECT up.id, %(run)s::text, %(now)s::timestamptz, "
                    + new + " FROM up LEFT JOIN old ON old.id = up.id WHERE old.id IS NULL OR "
                    f"old.row_hash = '' OR ({old}) IS DISTINCT FROM ({new}) RETURNING 1)")
        # activities written before their enrollment existed have no enrollment_id, and an
        # unchanged activity is never written again: a new enrollment (same source, learner
        # and course) fills it in, the lowest id of those that match (existing ids are lower)
        # learner ids are per source, so a learner's rows need no source test (which would
        # let the planner walk the source's rows by the unique index); the fence (OFFSET 0)
        # keeps `enrollment_id IS NULL` out of the probe, which its own index would answer
        # with every unadopted activity
        ctes.append("adopt AS (UPDATE activity_progress a SET enrollment_id = q.eid, updated_at = "
                    "%(now)s::timestamptz FROM (SELECT p.id, COALESCE((SELECT min(e.id) FROM "
                    "enrollments e WHERE e.learner_id = m.learner_id AND e.course_id = m.course_id), "
                    "m.id) AS eid FROM (SELECT learner_id, course_id, min(id) AS id FROM up WHERE ins "
                    "GROUP BY learner_id, course_id) m CROSS JOIN LATERAL (SELECT ap.id, "
                    "ap.enrollment_id FROM activity_progress ap WHERE ap.learner_id = m.learner_id "
                    "AND ap.course_id = m.course_id OFFSET 0) p WHERE p.enrollment_id IS NULL) q "
                    "WHERE a.id = q.id RETURNING 1)")
        outputs += ["history", "adopted"]
        selects += ["(SELECT count(*) FROM hist)", "(SELECT count(*) FROM adopt)"]
    if table is learners:
        outputs.append("ids")
        selects.append("(SELECT array_agg(id) FROM up)")
    link = None
    if parent is not None:
        child = 'FROM up JOIN w ON w.external_id = up.external_id WHERE w."parent_external_id" IS NOT NULL'
        outputs += ["child_ids", "parents"]
        selects += [f"(SELECT array_agg(up.id ORDER BY up.id) {child})",
                    f'(SELECT array_agg(w."parent_external_id" ORDER BY up.id) {child})']
        link = ("WITH c AS (SELECT * FROM unnest(%(ids)s::int8[], %(parents)s::text[]) AS c(id, x)), "
                + _stub_cte("p", parent, "c", "x")
                + f', u AS (UPDATE "{table.name}" t SET {parent.column} = COALESCE('
                f"{_probe(table.name, 'c.x')}, p.id) "
                "FROM c LEFT JOIN p ON p.external_id = c.x WHERE t.id = c.id AND t.id = ANY(%(ids)s::int8[]) "
                "RETURNING 1) "
                "SELECT (SELECT count(*) FROM p)")
    merge = "WITH " + ", ".join(ctes) + " SELECT " + ", ".join(selects)
    return Plan(create, f"COPY {stage} ({staged}) FROM STDIN (FORMAT BINARY)", types, merge,
                tuple(outputs), link)


def _snapshot_merge(stage: str, stored: list[str], value: Any) -> str:
    """A series gains a row only when its values differ from its latest row's. The same
    values under a hash of an older form take the new hash in place: nothing was observed."""
    plain = [f for f in stored if f not in {"raw", "figures"}]
    old = ", ".join(f"l.{f}" for f in plain)
    new = ", ".join(value(f, "s") for f in plain)
    cols = ["source_id", *stored, "as_of", "row_hash", "first_seen_at", "updated_at"]
    # as the other path: a snapshot's first_seen_at and updated_at are its as_of
    vals = ["%(src)s::text", *(value(f, "c") for f in stored), "%(as_of)s::timestamptz", "c.row_hash",
            "%(as_of)s::timestamptz", "%(as_of)s::timestamptz"]
    return (f"WITH s AS (DELETE FROM {stage} RETURNING *), "
            "c AS (SELECT s.*, l.id AS old_id, l.row_hash AS old_hash, (l.id IS NOT NULL AND "
            f"l.row_hash <> s.row_hash AND ({old}) IS NOT DISTINCT FROM ({new}) AND "
            "l.figures::jsonb IS NOT DISTINCT FROM s.figures::jsonb AND l.raw::jsonb IS NOT DISTINCT "
            "FROM s.raw::jsonb) AS same FROM s LEFT JOIN LATERAL (SELECT t.id, t.row_hash, t.raw, "
            f"t.figures, {', '.join('t.' + f for f in plain)} FROM stat_snapshots t "
            "WHERE t.source_id = %(src)s::text AND t.external_id = s.external_id "
            "ORDER BY t.as_of DESC LIMIT 1) l ON true), "
            f"ins AS (INSERT INTO stat_snapshots ({', '.join(cols)}) SELECT {', '.join(vals)} FROM c "
            "WHERE (c.old_id IS NULL OR c.old_hash <> c.row_hash) AND NOT c.same RETURNING 1), "
            "re AS (UPDATE stat_snapshots t SET row_hash = c.row_hash FROM c WHERE c.same "
            "AND t.id = c.old_id AND t.id = ANY(ARRAY(SELECT old_id FROM c WHERE same)) RETURNING 1) "
            "SELECT (SELECT count(*) FROM s), (SELECT count(*) FROM ins), (SELECT count(*) FROM re)")


def merge(cur: Any, table: Table, cls: type[Record], records: list[Record], source_id: str,
          run_id: str | None, now: datetime, as_of: datetime | None = None) -> Merged:
    """Write ``records`` (one class, distinct external ids) into ``table`` with the driver
    cursor ``cur``, in the caller's transaction."""
    p = plan(table, cls)
    cur.execute(p.create)
    with cur.copy(p.copy) as copy:
        copy.set_types(p.types)
        write = copy.write_row
        for record in records:
            write(record.encoded().row)
    params = {"src": source_id, "now": now, "run": run_id, "as_of": as_of or now}
    cur.execute(p.merge, params)
    got = dict(zip(p.outputs, cur.fetchone(), strict=True))
    stubs = {k.removeprefix("stubs:"): v for k, v in got.items() if k.startswith("stubs:")}
    out = Merged(got["staged"], got["inserted"], got.get("updated", 0), stubs, got.get("history", 0),
                 got.get("ids") or [])
    if p.link is not None and got["child_ids"]:
        parent = PARENTS[table.name]
        cur.execute(p.link, {**params, "ids": got["child_ids"], "parents": got["parents"]})
        made = cur.fetchone()[0]
        if made:
            out.stubs[parent.target.name] = out.stubs.get(parent.target.name, 0) + made
    return out
