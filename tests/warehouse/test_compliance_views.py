"""org_unit_paths, compliance and learner_progress's org unit columns, on every database.

The data is written with the real batch writer; the views are the migrations' SQL for
each dialect (date arithmetic and string concatenation differ)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import text, update

from lms_sync.canonical import Course, Enrollment, Learner, LearnerOrgUnit, OrgUnit
from lms_sync.warehouse.state import ensure_source, now_utc
from lms_sync.warehouse.tables import learners, org_units
from lms_sync.warehouse.upsert import BatchWriter

NOW = now_utc()
DAY = timedelta(days=1)


def _enrollment(who: str, course: str, status: str, **fields) -> Enrollment:
    return Enrollment(external_id=f"{who}:{course}", learner_external_id=who, course_external_id=course,
                      status=status, **fields)


def fill(warehouse) -> None:
    # "leads" is written first: the lowest id, so the primary-unit rule must prefer the
    # department over it by kind, not by age
    first = [OrgUnit(external_id="leads", name="Shift Leads", kind="profession")]
    units = [OrgUnit(external_id="ops", name="Operations"),
             OrgUnit(external_id="kitchen", name="Kitchen", parent_external_id="ops")]
    people = [Learner(external_id=x, email=f"{x}@example.com") for x in "abcd"]
    members = [LearnerOrgUnit(external_id=f"{w}|{u}", learner_external_id=w, org_unit_external_id=u)
               for w, u in (("a", "kitchen"), ("a", "leads"), ("b", "leads"), ("c", "kitchen"), ("d", "ops"))]
    courses = [Course(external_id="fire", title="Fire safety"), Course(external_id="food", title="Food")]
    enrollments = [
        _enrollment("a", "fire", "completed", assigned=True, required=True, completed_at=NOW - 9 * DAY,
                    certificate_id="cert-1", certificate_expires_at=NOW + 30 * DAY, credits=1.5),
        _enrollment("a", "food", "in_progress", assigned=True, due_at=NOW - DAY),
        _enrollment("b", "fire", "not_started", assigned=False, due_at=NOW + 10 * DAY),
        _enrollment("b", "food", "withdrawn", due_at=NOW - 5 * DAY),  # taken back: not overdue
        _enrollment("c", "fire", "in_progress", assigned=True, due_at=NOW - DAY),  # c leaves below
        _enrollment("d", "fire", "in_progress", assigned=True, is_overdue=True,  # the vendor says so
                    certificate_expires_at=NOW + 120 * DAY),
        _enrollment("d", "food", "expired", due_at=NOW - 5 * DAY, certificate_expires_at=NOW - 5 * DAY),
    ]
    with warehouse.engine.begin() as conn:
        ensure_source(conn, "hr", "absorb")
        BatchWriter(conn, "hr").write(first, now_utc())
    with warehouse.engine.begin() as conn:
        BatchWriter(conn, "hr").write([*units, *people, *members, *courses, *enrollments], now_utc())
        conn.execute(update(learners).where(learners.c.external_id == "c").values(deleted_at=now_utc()))


def compliance(warehouse) -> dict[tuple[str, str], tuple]:
    with warehouse.engine.connect() as conn:
        rows = conn.execute(text(
            "SELECT org_unit_external_id, course_external_id, org_unit_path, org_unit_kind, enrolled, "
            "assigned, required, completed, overdue, certificates_expiring_90d FROM compliance")).all()
    return {(r[0], r[1]): tuple(r[2:]) for r in rows}


def utc(value: str | datetime) -> datetime:
    """A view's timestamp as read raw: text on SQLite, naive UTC on MariaDB, aware on PostgreSQL."""
    value = datetime.fromisoformat(value) if isinstance(value, str) else value
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def progress(warehouse) -> dict[str, tuple]:
    with warehouse.engine.connect() as conn:
        rows = conn.execute(text(
            "SELECT learner_external_id, course_external_id, org_unit_path, assigned, required, "
            "certificate_expires_at FROM learner_progress")).all()
    return {f"{r[0]}:{r[1]}": tuple(r[2:]) for r in rows}


def test_compliance_and_learner_progress_by_org_unit(warehouse):
    """One test per database: a migrated warehouse is the slow part on MariaDB."""
    fill(warehouse)
    compliance_counts_direct_members_per_unit_and_course(warehouse)
    learner_progress_shows_the_primary_unit_and_the_new_columns(warehouse)
    a_removed_unit_leaves_the_views_and_its_children_start_their_own_path(warehouse)


def compliance_counts_direct_members_per_unit_and_course(warehouse):
    assert compliance(warehouse) == {
        # path, kind, enrolled, assigned, required, completed, overdue, expiring in 90 days
        ("kitchen", "fire"): ("Operations / Kitchen", "department", 1, 1, 1, 1, 0, 1),  # c left
        ("kitchen", "food"): ("Operations / Kitchen", "department", 1, 1, 0, 0, 1, 0),
        ("leads", "fire"): ("Shift Leads", "profession", 2, 1, 1, 1, 0, 1),
        ("leads", "food"): ("Shift Leads", "profession", 2, 1, 0, 0, 1, 0),  # withdrawn: not overdue
        # direct members only: a (kitchen) does not count in its parent; d's certificate
        # expires in 120 days, its expired one is past
        ("ops", "fire"): ("Operations", "department", 1, 1, 0, 0, 1, 0),
        ("ops", "food"): ("Operations", "department", 1, 0, 0, 0, 0, 0),
    }


def learner_progress_shows_the_primary_unit_and_the_new_columns(warehouse):
    shown = progress(warehouse)
    assert {k: v[0] for k, v in shown.items()} == {  # a department before a profession
        "a:fire": "Operations / Kitchen", "a:food": "Operations / Kitchen", "b:fire": "Shift Leads",
        "b:food": "Shift Leads", "d:fire": "Operations", "d:food": "Operations"}
    path, assigned, required, expires = shown["a:fire"]
    assert (assigned, required) == (True, True)
    assert abs(utc(expires) - (NOW + 30 * DAY)) < timedelta(seconds=1)
    assert shown["b:food"][1:3] == (None, None)  # the vendor did not say: unknown, not False


def a_removed_unit_leaves_the_views_and_its_children_start_their_own_path(warehouse):
    with warehouse.engine.begin() as conn:  # as a full read that no longer lists "ops" leaves it
        conn.execute(update(org_units).where(org_units.c.external_id == "ops").values(deleted_at=now_utc()))
    shown = compliance(warehouse)
    assert {unit for unit, _ in shown} == {"kitchen", "leads"}
    assert shown[("kitchen", "fire")][0] == "Kitchen"
    assert progress(warehouse)["d:fire"][0] is None  # d has no live unit left


def test_0007_downgrades_to_the_views_and_columns_before_it_and_upgrades_again(sqlite_warehouse):
    from alembic import command
    from alembic.script import ScriptDirectory
    from sqlalchemy import inspect

    from lms_sync.warehouse.db import alembic_config, current_revision, upgrade

    fill(sqlite_warehouse)
    engine = sqlite_warehouse.engine
    head, cfg = current_revision(engine), alembic_config(engine)
    command.downgrade(cfg, ScriptDirectory.from_config(cfg).get_revision("0007").down_revision)
    insp = inspect(engine)
    assert "org_units" not in insp.get_table_names() and "compliance" not in insp.get_view_names()
    assert "assigned" not in {c["name"] for c in insp.get_columns("enrollments")}
    assert len(progress_v2(sqlite_warehouse)) == 6  # the old view, the rows kept
    upgrade(engine)
    assert current_revision(engine) == head and compliance(sqlite_warehouse) == {}


def progress_v2(warehouse) -> list:
    with warehouse.engine.connect() as conn:
        return conn.execute(text(
            "SELECT learner_external_id, course_external_id FROM learner_progress")).all()
