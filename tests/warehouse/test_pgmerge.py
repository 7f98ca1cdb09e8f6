"""PostgreSQL's merge: its lookups are index probes by key, whatever the statistics say.

A first sync into fresh tables ran on statistics taken while a table held another
source's rows (or none): the planner, expecting one row, joined each batch against every
row of the source in a nested loop, so each batch cost more than the last (benchmarks/sync.py
--workload bulk: 1.3 s for one batch of 2,500 enrollments, 10 million comparisons).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from sqlalchemy import text

from lms_sync.canonical import (
    ActivityProgress,
    Course,
    Enrollment,
    Learner,
    LearnerOrgUnit,
    Snapshot,
)
from lms_sync.warehouse import pgmerge
from lms_sync.warehouse.state import ensure_source, now_utc
from lms_sync.warehouse.tables import (
    activity_progress,
    courses,
    enrollments,
    learner_org_units,
    learners,
    stat_snapshots,
)
from lms_sync.warehouse.upsert import BatchWriter

WAREHOUSE_TABLES = {"learners", "courses", "enrollments", "activity_progress", "stat_snapshots",
                    "enrollment_history", "org_units", "learner_org_units"}


def _scans(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The plan's scans of warehouse tables."""
    if node.get("Relation Name") in WAREHOUSE_TABLES and node["Node Type"] != "ModifyTable":
        yield node
    for child in node.get("Plans", []):
        yield from _scans(child)


def _records(source: str, n: int) -> list[Any]:
    out: list[Any] = []
    for i in range(n):
        out += [Learner(external_id=f"{source}-u{i}", email=f"{source}{i}@example.com"),
                Enrollment(external_id=f"{source}-u{i}:c{i}", learner_external_id=f"{source}-u{i}",
                           course_external_id=f"c{i}", status="in_progress"),
                ActivityProgress(external_id=f"{source}-a{i}", learner_external_id=f"{source}-u{i}",
                                 course_external_id=f"c{i}", activity_type="lesson"),
                Snapshot(external_id=f"{source}-s{i}", metric="m", value=float(i)),
                Course(external_id=f"c{i}", title="t", parent_external_id=f"c{i // 2}"),
                LearnerOrgUnit(external_id=f"{source}-u{i}", learner_external_id=f"{source}-u{i}",
                               org_unit_external_id=f"o{i}")]
    return out


def test_every_lookup_of_a_stored_row_is_an_index_probe_on_stale_statistics(postgres_warehouse):
    engine = postgres_warehouse.engine
    with engine.begin() as conn:  # statistics taken while only another source was there
        ensure_source(conn, "other", "absorb")
        BatchWriter(conn, "other").write(_records("other", 3000), now_utc())
        for table in WAREHOUSE_TABLES:
            conn.execute(text(f'ANALYZE "{table}"'))
        ensure_source(conn, "new", "absorb")
        BatchWriter(conn, "new").write(_records("new", 3000), now_utc())  # stats now stale
    cases = [(learners, Learner), (enrollments, Enrollment), (activity_progress, ActivityProgress),
             (stat_snapshots, Snapshot), (courses, Course), (learner_org_units, LearnerOrgUnit)]
    params = {"src": "new", "now": now_utc(), "run": "r", "as_of": now_utc()}
    with engine.begin() as conn:
        cur = conn.connection.driver_connection.cursor()
        for table, cls in cases:
            p = pgmerge.plan(table, cls)
            cur.execute(p.create)
            with cur.copy(p.copy) as copy:
                copy.set_types(p.types)
                for record in [r for r in _records("new", 3000) if type(r) is cls][:2500]:
                    copy.write_row(record.encoded().row)
            cur.execute(text_of(p.merge), params)
            plans = [cur.fetchone()[0][0]["Plan"]]
            if p.link is not None:  # the parents' statement, for 100 children
                ids = [r[0] for r in conn.execute(text(
                    f"SELECT id FROM \"{table.name}\" WHERE source_id = 'new' LIMIT 100"))]
                cur.execute(text_of(p.link), {**params, "ids": ids,
                                               "parents": [f"c{i}" for i in range(len(ids))]})
                plans.append(cur.fetchone()[0][0]["Plan"])
            scans = [scan for plan in plans for scan in _scans(plan)]
            assert scans, table.name  # the stored rows are looked up
            for scan in scans:  # each by key: a batch costs the same whatever the table holds
                where = " ".join(str(scan.get(k, "")) for k in ("Index Cond", "Recheck Cond"))
                # (a scan of the source's rows by the unique index is a seq scan in disguise:
                # once per batch, the batch's cost grows with the source; per row, quadratic)
                assert re.search(r"\bid\b|_id\b", where.replace("source_id", "")), (
                    table.name, scan["Relation Name"], scan.get("Alias"), where, scan.get("Filter"),
                    scan.get("Parent Relationship"), scan["Total Cost"])
        conn.rollback()


def text_of(merge: str) -> str:
    return "EXPLAIN (FORMAT JSON) " + merge
