"""Org units, memberships, assignment and certificate columns (issue #21).

First the pure normalizers, value by value from fixture files; then every vendor's real
connector against its sandbox fake, the warehouse compared with the fake value by value
on SQLite, PostgreSQL and MariaDB; then an org unit removed upstream."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, text
from structlog.testing import capture_logs

from lms_sync.connectors import absorb_records, academy_records, ispring, udemy
from lms_sync.sandbox.academy import GROUPS
from lms_sync.sandbox.ispring import DEPARTMENTS as ISPRING_DEPARTMENTS
from lms_sync.warehouse.tables import enrollments, learner_org_units, learners, org_units
from tests.conftest import at, load_fixture
from tests.connectors.conftest import sync

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
NEW_COLUMNS = ("assigned", "assigned_at", "required", "certificate_id", "certificate_expires_at", "credits")
UNKNOWN = (None,) * len(NEW_COLUMNS)


# ---------------------------------------------------------------- normalization (pure)

def test_absorb_departments_make_a_tree_and_users_one_membership_each():
    rows = load_fixture("absorb", "departments_tree.json")["departments"]
    units = [absorb_records.normalize_department(r) for r in rows]
    assert [(u.external_id[-1], u.name, u.kind, (u.parent_external_id or "-")[-1]) for u in units] == [
        ("1", "Operations", "department", "-"), ("2", "Kitchen", "department", "1"),
        ("3", "Nachtschicht — Küche", "department", "2")]
    assert units[0].raw["useDepartmentAsGroup"] is True  # unknown fields kept
    user = load_fixture("absorb", "users_page.json")["users"][0]
    member = absorb_records.user_department(user)
    # keyed by the user: a move to another department updates this row
    assert (member.external_id, member.learner_external_id, member.org_unit_external_id) == (
        user["id"], user["id"], "d0000000-0000-0000-0000-00000000000a")
    assert absorb_records.user_department({**user, "departmentId": None}) is None


def test_absorb_certificate_columns_value_by_value():
    certified, access_only = (absorb_records.normalize_enrollment(r) for r in
                              load_fixture("absorb", "certified_enrollments.json")["enrollments"])
    assert (certified.certificate_id, certified.credits) == ("f0000000-0000-0000-0000-0000000000c1", 2.5)
    # [guess] a certificate lapses with its enrollment (dateExpires)
    assert certified.certificate_expires_at == certified.expires_at == at("2027-03-10T12:00:00Z")
    # no certificate: the enrollment still expires, no certificate does
    assert (access_only.certificate_id, access_only.certificate_expires_at) == (None, None)
    assert access_only.expires_at == at("2026-09-30T00:00:00Z") and access_only.credits == 0
    # Absorb says nothing of assignment or obligation (a due date or key is not read as either)
    for e in (certified, access_only):
        assert (e.assigned, e.assigned_at, e.required) == (None, None, None)


def test_ispring_departments_and_memberships():
    xml = (FIXTURES / "ispring" / "departments.xml").read_bytes()
    units = [ispring.department_unit(ispring.Department.model_validate(r), r)
             for r in ispring.XmlRows(xml, "department")]
    assert [(u.external_id, u.name, u.kind, u.parent_external_id) for u in units] == [
        ("d-root", "Ácme Group", "department", None),
        ("d-sales", "Vertrieb & Marketing", "department", "d-root")]
    assert units[1].raw["code"] == "S"
    users = list(ispring.XmlRows((FIXTURES / "ispring" / "users.xml").read_bytes(), "userProfile"))
    records = {r["userId"]: ispring.user_records(r, {}) for r in users}
    learner, member = records["u-active"]
    assert (learner.external_id, member.external_id, member.org_unit_external_id) == (
        "u-active", "u-active", "d-sales")
    assert records["u-left"][1] is None  # no departmentId


@pytest.mark.parametrize(("index", "assigned"), [(0, True), (1, False), (2, False), (3, True)])
def test_udemy_is_assigned(index, assigned):
    row = load_fixture("udemy", "user-course-activity.json")["results"][index]
    e = udemy.normalize_enrollment(row)
    assert (e.assigned, e.assigned_at, e.required, e.certificate_id) == (assigned, None, None, None)
    assert e.raw["assigned_by"] == row["assigned_by"]  # who assigned it: kept in raw


def test_udemy_without_is_assigned_is_unknown_not_false():
    row = load_fixture("udemy", "user-course-activity.json")["results"][0]
    for value in (None, "", "maybe"):
        assert udemy.normalize_enrollment({**row, "is_assigned": value}).assigned is None


def test_monotree_groups_by_kind_and_memberships():
    jane, mary = load_fixture("academy", "users_page.json")["data"][:2]
    pairs = academy_records.group_records(jane)
    assert [(u.external_id, u.name, u.kind, u.parent_external_id) for u, _ in pairs] == [
        ("55", "Nordics", "group", None), ("12", "Kitchen", "department", None)]
    assert [(m.external_id, m.learner_external_id, m.org_unit_external_id) for _, m in pairs] == [
        ("1001|55", "1001", "55"), ("1001|12", "1001", "12")]
    assert academy_records.group_records(mary) == []
    odd = {**jane, "groups": [{"id": 7, "name": "Baristas", "type": "team"}, "x", {"name": "no id"}]}
    assert [(u.external_id, u.kind) for u, _ in academy_records.group_records(odd)] == [("7", "group")]


def test_monotree_assigned_courses_and_required_onboarding():
    user = load_fixture("academy", "users_page.json")["data"][0]
    course = academy_records.course_enrollment(1001, load_fixture("academy", "user_courses.json")["data"][0])
    assert (course.assigned, course.required) == (True, None)  # the seed: "courses assigned to them"
    onboarding = load_fixture("academy", "user_onboarding.json")
    today = datetime(2026, 5, 2, tzinfo=UTC).date()
    made = {k: academy_records.onboarding_enrollment(user, v["data"], today) for k, v in onboarding.items()}
    # [guess] a time limit makes onboarding mandatory; none: unknown
    assert {k: (e.assigned, e.required) for k, e in made.items()} == {
        "completed": (True, True), "overdue": (True, True), "no_limit": (True, None)}


# ---------------------------------------------------------------- the warehouse against the fake

def _when(value: Any) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


def expected_absorb(fake) -> tuple[dict, dict, dict]:
    units = {d["id"]: (d["name"], "department", d["parentId"]) for d in fake.departments}
    members = {u["id"]: (u["id"], u["departmentId"]) for u in fake.users}
    rows = [r for rs in fake.enrollments.values() for r in rs if r["isActive"]]
    columns = {f"{r['userId']}:{r['courseId']}": (
        None, None, None, r["certificateId"], _when(r["dateExpires"]) if r["certificateId"] else None,
        r["credits"]) for r in rows}
    return units, members, columns


def expected_ispring(fake) -> tuple[dict, dict, dict]:
    ids = fake.dept_ids
    units = {ids[k]: (name, "department", ids.get(parent or ""))
             for k, name, parent, _ in ISPRING_DEPARTMENTS}
    members = {fake.user_id(p): (fake.user_id(p), fake.department_of(p)) for p in fake.members}
    return units, members, {key: UNKNOWN for key, _ in fake.all_results()}


def expected_udemy(fake) -> tuple[dict, dict, dict]:
    assigned = {"Yes": True, "No": False}
    columns = {f"{r['user_email'].strip().lower()}|{r['course_id']}":
               (assigned[r["is_assigned"]],) + UNKNOWN[1:]
               for r in fake.course_rows if r["user_email"] != "Anonymized User"}
    return {}, {}, columns


def expected_academy(fake) -> tuple[dict, dict, dict]:
    kinds = {"department": "department", "profession": "profession", "custom": "group"}
    used = {g for u in fake.users.values() for g in u.groups}
    units = {str(g): (GROUPS[g][0], kinds[GROUPS[g][1]], None) for g in used}
    members = {f"{u.id}|{g}": (str(u.id), str(g)) for u in fake.users.values() for g in u.groups}
    columns = {}
    for u in fake.users.values():
        if u.has_record:
            columns |= {f"{u.id}:{cid}": (True,) + UNKNOWN[1:] for cid in u.courses}
            columns[f"{u.id}:onboarding"] = (True, None, True, None, None, None)  # a time limit is set
    return units, members, columns


def expected_sessions(fake) -> tuple[dict, dict, dict]:
    """Sparkwise has no departments, groups, assignments, due dates or certificates."""
    return {}, {}, {c["id"]: UNKNOWN for c in fake.completions()}


EXPECTED = {"absorb": expected_absorb, "ispring": expected_ispring, "udemy": expected_udemy,
            "academy": expected_academy, "sessions": expected_sessions}
OPTIONS = {"absorb": {"courses": 3}, "udemy": {"courses": 30, "popular": 8}}


def warehouse_state(engine, source: str) -> tuple[dict, dict, dict]:
    u, p = org_units.alias("u"), org_units.alias("p")
    with engine.connect() as conn:
        units = {r[0]: tuple(r[1:]) for r in conn.execute(
            select(u.c.external_id, u.c.name, u.c.kind, p.c.external_id)
            .select_from(u.outerjoin(p, p.c.id == u.c.parent_id))
            .where(u.c.source_id == source, u.c.deleted_at.is_(None)))}
        m, lr = learner_org_units.c, learners.c
        members = {r[0]: (r[1], r[2]) for r in conn.execute(
            select(m.external_id, lr.external_id, org_units.c.external_id)
            .select_from(learner_org_units.join(learners, lr.id == m.learner_id)
                         .join(org_units, org_units.c.id == m.org_unit_id))
            .where(m.source_id == source, m.deleted_at.is_(None)))}
        e = enrollments.c
        columns = {r[0]: tuple(r[1:]) for r in conn.execute(
            select(e.external_id, *(e[c] for c in NEW_COLUMNS))
            .where(e.source_id == source, e.deleted_at.is_(None)))}
    return units, members, columns


def test_the_warehouse_holds_what_every_fake_serves(start_vendor, warehouse):
    """Every vendor into one warehouse (a migrated warehouse per database is the slow part)."""
    for kind, expected in EXPECTED.items():
        vendor = start_vendor(kind, learners=12, **OPTIONS.get(kind, {}))
        if kind == "absorb":
            vendor.source["options"]["lesson_enrollments"] = False  # not what this test is about
        result = sync(warehouse, {kind: vendor.source})
        assert result.ok, result.error
        units, members, columns = warehouse_state(warehouse.engine, kind)
        want_units, want_members, want_columns = expected(vendor.fake)
        assert units == want_units, kind
        assert members == want_members, kind
        if kind == "udemy":  # anonymized rows have keys of their own (and no assignment either way)
            columns = {k: v for k, v in columns.items() if not k.startswith("anon:")}
        assert columns == want_columns, kind
        if kind in {"absorb", "academy"}:  # the fake has values of each kind, not only NULLs
            assert any(v[0] or v[3] for v in columns.values()), kind


# ---------------------------------------------------------------- removed upstream

def live_units(engine, source: str) -> set[str]:
    with engine.connect() as conn:
        return set(conn.execute(select(org_units.c.external_id).where(
            org_units.c.source_id == source, org_units.c.deleted_at.is_(None))).scalars())


def compliance_units(engine) -> set[str]:
    with engine.connect() as conn:
        return set(conn.execute(text("SELECT org_unit_external_id FROM compliance")).scalars())


def test_an_absorb_department_removed_upstream_is_soft_deleted_by_the_next_run(start_vendor,
                                                                              sqlite_warehouse):
    vendor = start_vendor("absorb", learners=20, courses=3)
    vendor.source["options"]["lesson_enrollments"] = False
    fake, engine = vendor.fake, sqlite_warehouse.engine
    assert sync(sqlite_warehouse, {"absorb": vendor.source}).ok
    busy = next(u["departmentId"] for u in fake.users)  # a department with members and enrollments
    assert busy in compliance_units(engine)
    fake.departments[:] = [d for d in fake.departments if d["id"] != busy]
    again = sync(sqlite_warehouse, {"absorb": vendor.source})  # incremental: users are not re-read
    assert again.ok, again.error
    assert live_units(engine, "absorb") == {d["id"] for d in fake.departments}
    assert busy not in compliance_units(engine)
    with engine.connect() as conn:
        paths = dict(conn.execute(text(
            "SELECT DISTINCT learner_external_id, org_unit_path FROM learner_progress")).all())
    members = {u["id"] for u in fake.users if u["departmentId"] == busy}
    assert members and all(paths.get(m) is None for m in members)  # no live unit left


def test_a_monotree_group_gone_from_every_user_is_soft_deleted_with_its_memberships(start_vendor,
                                                                                   sqlite_warehouse):
    vendor = start_vendor("academy", learners=20)
    fake, engine = vendor.fake, sqlite_warehouse.engine
    assert sync(sqlite_warehouse, {"academy": vendor.source}).ok
    assert "55" in live_units(engine, "academy") and "55" in compliance_units(engine)
    moved = [u.id for u in fake.users.values() if 55 in u.groups]
    for user in fake.users.values():
        user.groups = [g for g in user.groups if g != 55]
    assert sync(sqlite_warehouse, {"academy": vendor.source}).ok
    assert "55" not in live_units(engine, "academy") and "55" not in compliance_units(engine)
    with engine.connect() as conn:
        gone = conn.execute(select(learner_org_units.c.external_id).where(
            learner_org_units.c.deleted_at.is_not(None))).scalars().all()
    assert sorted(gone) == sorted(f"{uid}|55" for uid in moved)


def test_absorb_departments_as_a_bare_array_land_with_their_tree(start_vendor, sqlite_warehouse):
    vendor = start_vendor("absorb", learners=10, courses=2, departments_as="array")
    vendor.source["options"]["lesson_enrollments"] = False
    result = sync(sqlite_warehouse, {"absorb": vendor.source})
    assert result.ok, result.error
    units, _, _ = warehouse_state(sqlite_warehouse.engine, "absorb")
    assert units == expected_absorb(vendor.fake)[0]
    assert next(s for s in result.streams if s.stream == "departments").vendor_total is None  # no count


@pytest.mark.parametrize("status", ["403", "404"])
def test_absorb_departments_refused_cost_the_units_not_the_memberships(start_vendor, sqlite_warehouse,
                                                                     status):
    vendor = start_vendor("absorb", learners=10, courses=2, departments_as=status)
    vendor.source["options"]["lesson_enrollments"] = False
    with capture_logs() as logs:
        result = sync(sqlite_warehouse, {"absorb": vendor.source})
    assert result.ok, result.error
    assert [(e["event"], e["status"]) for e in logs if e["event"].endswith(".unavailable")] == [
        ("departments.unavailable", int(status))]  # once: the users stream does not ask again
    _, members, _ = warehouse_state(sqlite_warehouse.engine, "absorb")
    assert members == expected_absorb(vendor.fake)[1]  # memberships land, by department id
    with sqlite_warehouse.engine.connect() as conn:  # their units are stubs: id only
        stubs = conn.execute(select(org_units.c.external_id, org_units.c.name, org_units.c.kind,
                                    org_units.c.row_hash)).all()
        paths = set(conn.execute(text("SELECT org_unit_path FROM compliance")).scalars())
    assert {s.external_id for s in stubs} == {d for _, d in members.values()}
    assert {(s.name, s.kind, s.row_hash) for s in stubs} == {(None, None, "")}
    assert paths == {"(unnamed)"}
