"""Monotree academy: normalization value by value, then the real connector against FakeAcademy."""

from __future__ import annotations

import math
from collections import Counter
from datetime import UTC, date, datetime, timedelta

import httpx
import pytest
from sqlalchemy import func, select

from lms_sync.canonical import CourseKind, EnrollmentStatus
from lms_sync.config import parse_config
from lms_sync.connectors.academy import AcademyConnector, UsersStream, describe_error
from lms_sync.connectors.academy_records import (
    aggregate_records,
    course_enrollment,
    course_record,
    course_rows,
    figures_snapshot,
    group_records,
    journey_course,
    learner_from,
    onboarding_enrollment,
    question_snapshot,
    split_name,
    user_records,
)
from lms_sync.connectors.base import NotFoundWave, ReadContext
from lms_sync.connectors.rest import reworded
from lms_sync.errors import CredentialsRejected, DataError, IncompleteRead, RequestRejected
from lms_sync.http.paging import Page
from lms_sync.logs import get_logger
from lms_sync.sandbox.academy import API, FULL_KEY
from lms_sync.warehouse import state
from lms_sync.warehouse.tables import courses, enrollments, learners, stat_snapshots, sync_state
from tests.conftest import count_rows as count
from tests.conftest import load_fixture
from tests.connectors.conftest import sync


def fixture(name: str):
    return load_fixture("academy", name)


# ---------------------------------------------------------------------- normalization

def test_users_become_learners_kiosks_and_bots_are_placeholders():
    rows = fixture("users_page.json")["data"]
    got = {r["id"]: learner_from(r) for r in rows}
    jane = got[1001]
    assert (jane.external_id, jane.email, jane.first_name, jane.last_name, jane.display_name) == (
        "1001", "jane.doe@example.com", "Jane", "Doe", "Jane Doe")
    assert jane.department == "Kitchen"  # the department group, not the custom one listed first
    assert jane.is_placeholder is False and jane.is_active is True
    mary = got[1002]
    assert (mary.first_name, mary.last_name, mary.department) == ("Mary Ann", "O'Brien", None)
    assert mary.raw["favourite_colour"] == "teal"  # unknown fields stay in raw
    assert got[900001].is_placeholder is True and got[900001].raw["type"] == "kiosk"
    assert got[900002].is_placeholder is True and got[900002].email is None
    assert (got[1003].first_name, got[1003].last_name) == ("Cher", None)
    assert split_name("  ") == (None, None)


COURSE_EXPECTED = {  # course_id -> (status, passed, vendor_status, progress_pct, completed_at)
    12: (EnrollmentStatus.COMPLETED, True, "has_passed", 100.0, datetime(2026, 5, 1, 10, tzinfo=UTC)),
    13: (EnrollmentStatus.PENDING, None, "awaits_manual_completion", None, None),
    14: (EnrollmentStatus.IN_PROGRESS, None, "chapters_completed_count", None, None),
    15: (EnrollmentStatus.NOT_STARTED, None, "none", None, None),
}


@pytest.mark.parametrize("row", fixture("user_courses.json")["data"], ids=lambda r: str(r["course_id"]))
def test_course_rows_follow_the_rule_table(row):
    e = course_enrollment(1001, row)
    assert (e.status, e.passed, e.vendor_status, e.progress_pct, e.completed_at) == COURSE_EXPECTED[
        row["course_id"]]
    assert (e.external_id, e.learner_external_id, e.course_external_id) == (
        f"1001:{row['course_id']}", "1001", str(row["course_id"]))
    assert e.raw == row


def test_onboarding_becomes_an_enrollment_with_a_due_date():
    cases = fixture("user_onboarding.json")
    user = fixture("users_page.json")["data"][0]  # hired 2026-01-05
    today = date(2026, 5, 10)
    done = onboarding_enrollment(user, cases["completed"]["data"], today)
    assert (done.external_id, done.course_external_id, done.status, done.is_overdue) == (
        "1001:onboarding", "onboarding", EnrollmentStatus.COMPLETED, False)
    assert done.completed_at == datetime(2026, 5, 1, 10, tzinfo=UTC)
    assert done.due_at == datetime(2026, 5, 22, tzinfo=UTC)
    assert done.enrolled_at == datetime(2026, 1, 5, tzinfo=UTC)  # hired_at
    late = onboarding_enrollment(user, cases["overdue"]["data"], today)
    assert (late.status, late.is_overdue, late.vendor_status, late.due_at) == (
        EnrollmentStatus.IN_PROGRESS, True, "overdue", datetime(2026, 5, 7, tzinfo=UTC))
    unhired = fixture("users_page.json")["data"][1]
    open_ = onboarding_enrollment(unhired, cases["no_limit"]["data"], today)
    assert (open_.due_at, open_.vendor_status) == (None, "open")
    assert open_.enrolled_at == datetime(2026, 2, 1, 10, tzinfo=UTC)  # registered_at


def test_aggregates_become_snapshots():
    onb = figures_snapshot("onboarding", fixture("onboarding.json")["data"], "nordics")
    assert (onb.external_id, onb.metric, onb.subject_id, onb.group_key, onb.value) == (
        "academy.onboarding||nordics", "academy.onboarding", None, "nordics", 78.0)
    assert onb.figures == {"completed": 312, "not_completed": 88}
    c12, c13 = (figures_snapshot("courses", r) for r in fixture("courses.json")["data"])
    assert (c12.external_id, c12.subject_title, c12.value, c12.figures) == (
        "academy.course_completion|12|", "Food Safety Basics", 70.0,
        {"completed": 210, "not_completed": 90})
    assert c13.value is None  # nobody can access it: no rate, not 0 %
    j = [figures_snapshot("journeys", r) for r in fixture("journeys.json")["data"]]
    assert [(s.subject_id, s.figures["type"], s.value) for s in j] == [
        ("3", "onboarding", 78.0), ("7", "custom", 68.33)]
    q45, q46 = (question_snapshot(101, r) for r in fixture("quiz.json")["data"])
    assert (q45.external_id, q45.subject_title, q45.value) == (
        "academy.quiz_question|101:45|", "At what core temperature is poultry safe to serve?", 80)
    assert q45.figures == {"quiz_id": 101, "question_id": 45, "respondents": 120, "passed": 96,
                           "pass_rate": 80}
    assert q46.figures["respondents"] == 0


def test_courses_and_journeys_become_course_records():
    onboarding, leadership = (journey_course(r) for r in fixture("journeys.json")["data"])
    assert (onboarding.external_id, onboarding.kind) == ("onboarding", CourseKind.ONBOARDING)
    assert (leadership.external_id, leadership.kind, leadership.title) == (
        "journey:7", CourseKind.JOURNEY, "Leadership Track")
    # the aggregate row and a user's row describe the same course: equal records, no churn
    aggregate = fixture("courses.json")["data"][0]
    per_user = fixture("user_courses.json")["data"][0]
    assert course_record(aggregate["id"], aggregate["title"]) == course_record(
        per_user["course_id"], per_user["title"])


def test_one_row_one_validation_makes_every_record_of_the_row():
    user = fixture("users_page.json")["data"][0]
    assert user_records(user) == (learner_from(user), group_records(user))
    c12 = fixture("courses.json")["data"][0]
    course, snap = aggregate_records("courses", c12)
    assert course == course_record(12, "Food Safety Basics") and snap == figures_snapshot("courses", c12)
    assert aggregate_records("courses", c12, "kitchen") == (None, figures_snapshot("courses", c12, "kitchen"))
    onboarding, leadership = fixture("journeys.json")["data"]
    assert aggregate_records("journeys", onboarding)[0].external_id == "onboarding"
    assert aggregate_records("journeys", leadership) == (journey_course(leadership),
                                                         figures_snapshot("journeys", leadership))
    assert aggregate_records("onboarding", fixture("onboarding.json")["data"])[0] is None
    with pytest.raises(ValueError, match="without an id"):
        aggregate_records("courses", {"title": "no id", "completed": 1, "not_completed": 0})
    emitted: set[str] = set()
    row = fixture("user_courses.json")["data"][0]
    course, first = course_rows(1001, row, emitted)
    assert course == course_record(row["course_id"], row["title"]) and emitted == {str(row["course_id"])}
    assert course_rows(1002, row, emitted)[0] is None  # the course once a run
    assert first == course_enrollment(1001, row)


def test_a_row_that_does_not_validate_is_skipped_whole_and_once():
    ctx = ReadContext("a", "progress", None, False, None, datetime.now(UTC), get_logger("test"))
    emitted: set[str] = set()
    bad = {**fixture("user_courses.json")["data"][0], "has_passed": "maybe"}
    assert ctx.normalize("1001:12", lambda: course_rows(1001, bad, emitted)) is None
    assert emitted == set() and ctx.skipped == 1  # no course either: a later valid row makes it
    course, _ = course_rows(1002, fixture("user_courses.json")["data"][0], emitted)
    assert course is not None and emitted == {"12"}
    negative = {**fixture("courses.json")["data"][0], "completed": -1}
    assert ctx.normalize("courses:12", lambda: aggregate_records("courses", negative)) is None
    assert ctx.normalize(None, lambda: user_records({"id": "not a number", "groups": [{"id": 7}]})) is None
    assert ctx.skipped == 3  # one per row, not one per record


def test_the_user_list_ends_on_an_empty_page_and_reports_the_largest_meta_total(monkeypatch):
    cfg = parse_config({"sources": {"a": {"kind": "academy", "base_url": "https://acme.monotree.com",
                                          "auth": {"api_key": "mono_x"}}}})
    pages = [Page("users", [{"id": 1}], {"meta": {"total": 2}}),
             Page("users", [{"id": 2}], {"meta": {"total": 3}}),
             Page("users", [{"id": 3}], {"meta": {"total": "4"}}), Page("users", [{"id": 4}], {})]
    log = get_logger("test")
    with AcademyConnector(cfg.sources["a"], log) as connector:
        assert connector.http is not None
        monkeypatch.setattr(connector.http, "paginate", lambda *a, **kw: iter(pages))
        ctx = ReadContext("a", "users", None, False, None, datetime.now(UTC), log)
        pager = UsersStream(connector).paginator(ctx)
        pager.update_state(Page("users", [], {"links": {"next": "https://acme.monotree.com/users?page=3"}}))
        assert pager.has_next is False  # an empty page ends the walk whatever links.next says
        assert [r["id"] for r in UsersStream(connector).rows(ctx)] == [1, 2, 3, 4]
        assert ctx.vendor_total == 3  # the largest whole number any page gave (users added mid-read)
        ctx = ReadContext("a", "users", None, False, None, datetime.now(UTC), log, partial=True)
        assert list(UsersStream(connector).rows(ctx)) and ctx.vendor_total is None  # a part: no total


def test_reworded_errors_keep_their_class_path_and_status():
    words = {401: ("the key was revoked", "make a new key"), 403: ("no scope", "grant it")}
    with pytest.raises(CredentialsRejected) as refused, reworded("s", words):
        raise CredentialsRejected("credentials rejected", source="s", path="/users", status=401)
    assert (refused.value.message, refused.value.fix, refused.value.path) == (
        "the key was revoked", "make a new key", "/users")
    with pytest.raises(RequestRejected, match="no scope.*grant it"), reworded("s", words):
        raise RequestRejected("forbidden", source="s", status=403)
    with pytest.raises(DataError, match="bad body"), reworded("s", words):
        raise DataError("bad body", source="s", status=200)  # other statuses pass as they are


def test_error_bodies_are_read():
    bodies = fixture("errors.json")
    request = httpx.Request("GET", "https://acme.monotree.com/api/open/v1/users")
    assert describe_error(httpx.Response(429, json=bodies["throttled"], request=request)) == (
        "Too Many Attempts.")
    assert describe_error(httpx.Response(422, json=bodies["unknown_group"], request=request)) == (
        "The selected group_ids.1 is invalid.")
    assert describe_error(httpx.Response(500, json=[], request=request)) is None


# ---------------------------------------------------------------------- against the fake

def read_stream(block: dict, name: str, cursor: dict | None = None):
    """Run one stream of the real connector; returns (records, ctx)."""
    cfg = parse_config({"sources": {"a": block}})
    log = get_logger("test")
    with AcademyConnector(cfg.sources["a"], log) as connector:
        stream = next(s for s in connector.streams() if s.name == name)
        ctx = ReadContext("a", name, cursor, False, None, datetime.now(UTC), log)
        return list(stream.read(ctx)), ctx


def snapshot_rows(engine):
    with engine.connect() as conn:
        return conn.execute(select(stat_snapshots).order_by(stat_snapshots.c.id)).all()


def test_aggregates_land_as_snapshots_and_only_changes_add_rows(start_vendor, sqlite_warehouse):
    v = start_vendor("academy", learners=40)
    v.source["options"]["group_sets"] = {"kitchen": [12], "front": [40, 41]}
    first = sync(sqlite_warehouse, {"a": v.source})
    assert first.ok, first.error
    rows = snapshot_rows(sqlite_warehouse.engine)
    per_pass = 1 + 5 + 3  # onboarding + 5 courses + 3 journeys
    assert len(rows) == per_pass * 3 + 5  # three passes + 5 quiz questions
    assert {r.group_key for r in rows} == {"", "kitchen", "front"}
    as_of_1 = {r.as_of for r in rows}
    assert len(as_of_1) == 1

    # a shift lead (group 41 only) passes Allergen Awareness; a quiz question gets more passes
    fake = v.fake
    uid = next(u.id for u in fake.users.values() if u.has_record and u.groups == [41]
               and not u.courses[13].has_passed)
    fake.complete_course(uid, 13)
    fake.set_quiz_question(101, 46, 72)
    second = sync(sqlite_warehouse, {"a": v.source})
    assert second.ok, second.error
    stats = next(s for s in second.streams if s.stream == "stats")
    assert stats.tables == {"stat_snapshots": 3}
    rows2 = snapshot_rows(sqlite_warehouse.engine)
    new = {r.external_id: r for r in rows2[len(rows):]}
    assert set(new) == {"academy.course_completion|13|", "academy.course_completion|13|front",
                        "academy.quiz_question|101:46|"}
    old = {r.external_id: r for r in rows}
    assert new["academy.course_completion|13|front"].figures["completed"] == (
        old["academy.course_completion|13|front"].figures["completed"] + 1)
    assert new["academy.quiz_question|101:46|"].figures["passed"] == 72
    assert all(r.as_of > max(as_of_1) for r in new.values())
    # unchanged series keep their single row, dated when that value was first seen
    assert {r.as_of for r in rows2[: len(rows)]} == as_of_1

    third = sync(sqlite_warehouse, {"a": v.source})
    assert third.ok and len(snapshot_rows(sqlite_warehouse.engine)) == len(rows2)


def test_budgeted_sweep_visits_every_user_once_per_sweep(start_vendor, sqlite_warehouse):
    # budget, not pacing (tests below): each run's client starts with a fresh token bucket,
    # so back-to-back runs inside one 40-request window could meet a 429, which costs budget
    v = start_vendor("academy", learners=30, rate_limit=10_000)
    # every sweep full, as before incremental sweeps: the second one visits everyone again
    v.source["options"].update(quiz_ids=[], max_requests_per_run=12, full_sweep_every_days=0)
    fake = v.fake
    swept = sorted(u.id for u in fake.users.values() if u.type == "employee")
    with_record = fake.employee_ids()
    assert len(swept) > len(with_record) > 12  # some banned users, and more users than budget
    overhead = 1 + 3  # one users page, three aggregates
    per_run = (12 - overhead) // 2
    runs_needed = math.ceil(len(swept) / per_run)

    def visits(kind: str) -> dict[int, int]:
        counts = fake.path_counts(rf"^{API}/stats/academy/users/\d+/{kind}$")
        return {int(p.split("/")[-2]): n for p, n in counts.items()}

    cursors = []
    for run in range(runs_needed):
        result = sync(sqlite_warehouse, {"a": v.source})
        assert result.ok, result.error
        assert result.http["requests"] <= 12
        cursors.append(next(s for s in result.streams if s.stream == "progress").cursor)
        if run < runs_needed - 1:
            assert cursors[-1]["sweep"] == 1 and cursors[-1]["done"] == per_run * (run + 1)
    assert {k: cursors[-1][k] for k in ("sweep", "after_id", "done", "total", "mode")} == {
        "sweep": 2, "after_id": None, "done": 0, "total": len(swept), "mode": None}
    assert cursors[-1]["last_full_on"] == cursors[-1]["last_sweep_on"] is not None
    assert visits("courses") == dict.fromkeys(swept, 1)
    assert visits("onboarding") == dict.fromkeys(with_record, 1)  # a 404 user costs one call
    with sqlite_warehouse.engine.connect() as conn:
        enrolled = {int(x) for x in conn.execute(
            select(learners.c.external_id).join(enrollments, enrollments.c.learner_id == learners.c.id)
            .distinct()).scalars()}
        saved = conn.execute(select(sync_state.c.cursor).where(sync_state.c.stream == "progress")).scalar()
    assert enrolled == set(with_record)
    assert saved["sweep"] == 2

    # the next sweep starts over from the lowest id, again once per user
    sync(sqlite_warehouse, {"a": v.source})
    assert visits("courses") == {uid: 2 if uid in swept[:per_run] else 1 for uid in swept}
    assert fake.throttled == 0


def test_pacing_from_rate_limit_headers_avoids_429(start_vendor, sqlite_warehouse):
    v = start_vendor("academy", learners=30, rate_limit=20)
    v.source["options"]["requests_per_minute"] = 1_000_000  # only the headers pace
    result = sync(sqlite_warehouse, {"a": v.source})
    assert result.ok, result.error
    assert result.http["requests"] > 2 * 20  # the limit was binding for several windows
    assert v.fake.throttled == 0
    assert result.http.get("throttled", 0) == 0


def test_the_configured_rate_alone_avoids_429_when_reset_comes_with_429_only(start_vendor,
                                                                              sqlite_warehouse):
    """Without X-RateLimit-Reset on a 200 only requests_per_minute paces: at exactly the
    vendor's limit it must stay within every window, a first burst included."""
    v = start_vendor("academy", learners=8, rate_limit=5, reset_on_429_only=True)
    v.source["options"]["requests_per_minute"] = 300  # 5 a second: the fake's limit
    result = sync(sqlite_warehouse, {"a": v.source})
    assert result.ok, result.error
    assert result.http["requests"] > 3 * 5  # several windows
    assert v.fake.throttled == 0 and result.http.get("throttled", 0) == 0


def test_throttled_key_gets_429_and_a_run_waits_it_out(start_vendor, sqlite_warehouse):
    v = start_vendor("academy", learners=4, rate_limit=5)
    headers = {"Authorization": f"Bearer {FULL_KEY}"}
    with httpx.Client(base_url=v.url, headers=headers) as client:
        statuses = [client.get(f"{API}/stats/academy/onboarding") for _ in range(6)]
    last = statuses[-1]
    if last.status_code == 200:  # the window turned over mid-loop; exhaust the new one
        with httpx.Client(base_url=v.url, headers=headers) as client:
            while last.status_code == 200:
                last = client.get(f"{API}/stats/academy/onboarding")
    assert last.status_code == 429
    assert last.json() == {"message": "Too Many Attempts."}
    assert int(last.headers["Retry-After"]) >= 1 and last.headers["X-RateLimit-Remaining"] == "0"
    assert statuses[0].headers["X-RateLimit-Limit"] == "5"
    v.source["options"].update(quiz_ids=[], requests_per_minute=1_000_000)
    result = sync(sqlite_warehouse, {"a": v.source})
    assert result.ok, result.error
    assert count(sqlite_warehouse, learners) == len(v.fake.users)  # the data landed all the same


def test_users_without_an_academy_record_are_counted_not_failed(start_vendor):
    v = start_vendor("academy", learners=30)
    fake = v.fake
    v.source["options"]["sweep_skip_types"] = []  # sweep kiosks and the bot too
    no_record = [u.id for u in fake.users.values() if not u.has_record]
    assert {fake.users[i].type for i in no_record} == {"employee", "kiosk", "bot"}
    records, ctx = read_stream(v.source, "progress")
    assert ctx.counters["users_without_record"] == len(no_record)
    assert ctx.counters["users_swept"] == len(fake.users)
    assert ctx.skipped == 0
    learners_enrolled = {r.learner_external_id for r in records if getattr(r, "table", "") == "enrollments"}
    assert learners_enrolled == {str(i) for i in fake.employee_ids()}


def test_users_are_paged_and_kiosks_kept(start_vendor, sqlite_warehouse):
    v = start_vendor("academy", learners=100)
    result = sync(sqlite_warehouse, {"a": v.source})
    assert result.ok, result.error
    assert v.fake.requests[f"{API}/users"] == math.ceil(len(v.fake.users) / 50) >= 2
    with sqlite_warehouse.engine.connect() as conn:
        rows = conn.execute(select(learners.c.external_id, learners.c.is_placeholder)).all()
    assert len(rows) == len(v.fake.users)
    placeholders = {int(r.external_id) for r in rows if r.is_placeholder}
    assert placeholders == {u.id for u in v.fake.users.values() if u.type in ("kiosk", "bot")}


def test_missing_scope_and_revoked_key_are_clear_errors(start_vendor, sqlite_warehouse):
    v = start_vendor("academy", learners=10)
    v.fake.keys["mono_stats_only"] = {"read:stats"}
    v.source["auth"]["api_key"] = "mono_stats_only"
    result = sync(sqlite_warehouse, {"a": v.source})
    assert not result.ok
    by_stream = {s.stream: s for s in result.streams}
    assert "lacks the read:users scope" in by_stream["users"].error
    assert "grant the key the read:users scope" in by_stream["users"].error
    assert by_stream["stats"].result == "succeeded"  # read:stats is enough for the figures
    assert len(snapshot_rows(sqlite_warehouse.engine)) > 0

    v.fake.keys["mono_users_only"] = {"read:users"}
    v.source["auth"]["api_key"] = "mono_users_only"
    result = sync(sqlite_warehouse, {"a": v.source})
    assert "lacks the read:stats scope" in {s.stream: s for s in result.streams}["stats"].error

    v.source["auth"]["api_key"] = "mono_revoked"
    result = sync(sqlite_warehouse, {"a": v.source})
    assert not result.ok
    assert "API key was rejected (expired or revoked)" in result.error
    assert "mono_revoked" not in result.error
    assert [s.error_class for s in result.streams][0] == "CredentialsRejected"
    assert all(s.error.startswith("not run") for s in result.streams[1:])


def test_unknown_group_id_names_the_group_set(start_vendor, sqlite_warehouse):
    v = start_vendor("academy", learners=10)
    v.source["options"]["group_sets"] = {"kitchen": [12], "typo": [40, 999]}
    result = sync(sqlite_warehouse, {"a": v.source})
    stats = {s.stream: s for s in result.streams}["stats"]
    assert stats.result == "failed"
    assert "group set 'typo': unknown group id(s) 999" in stats.error
    assert "options.group_sets.typo" in stats.error


def test_a_deleted_quiz_is_counted_not_fatal(start_vendor):
    v = start_vendor("academy", learners=10)
    v.fake.delete_quiz(102)
    records, ctx = read_stream(v.source, "stats")
    assert ctx.counters["quizzes_gone"] == 1
    quiz_subjects = {r.subject_id for r in records if getattr(r, "metric", "") == "academy.quiz_question"}
    assert quiz_subjects == {"101:45", "101:46", "101:47"}


def test_end_to_end_on_every_warehouse(start_vendor, warehouse):
    v = start_vendor("academy", learners=20)
    result = sync(warehouse, {"a": v.source})
    assert result.ok, result.error
    fake = v.fake
    with warehouse.engine.connect() as conn:
        n_learners = conn.execute(select(func.count()).select_from(learners)).scalar()
        kinds = dict(conn.execute(select(courses.c.external_id, courses.c.kind)).all())
        stubs = conn.execute(select(func.count()).select_from(courses)
                             .where(courses.c.row_hash == "")).scalar()
        statuses = {r.status for r in conn.execute(select(enrollments.c.status))}
        n_enrollments = conn.execute(select(func.count()).select_from(enrollments)).scalar()
    assert n_learners == len(fake.users)
    assert kinds["onboarding"] == "onboarding" and kinds["journey:7"] == "journey" and kinds["12"] == "course"
    assert stubs == 0
    expected = sum(len(fake.users[i].courses) + 1 for i in fake.employee_ids())
    assert n_enrollments == expected
    assert {"completed", "in_progress"} <= statuses
    again = sync(warehouse, {"a": v.source})
    assert again.ok and sum(s.written for s in again.streams) == 0


# ---------------------------------------------------------------------- incremental sweeps

def sweep_visits(fake) -> Counter[int]:
    """Per user id: how often the fake answered (or 404ed) /users/{id}/courses so far."""
    counts = fake.path_counts(rf"^{API}/stats/academy/users/\d+/courses$")
    return Counter({int(p.split("/")[-2]): n for p, n in counts.items()})


def synced(warehouse, v, **kw):
    """One run; returns (result, progress stream result, users visited by this run)."""
    before = sweep_visits(v.fake)
    result = sync(warehouse, {"a": v.source}, **kw)
    assert result.ok, result.error
    progress = next(s for s in result.streams if s.stream == "progress")
    return result, progress, sweep_visits(v.fake) - before


def once(ids) -> Counter[int]:
    return Counter(dict.fromkeys(ids, 1))


def employees(fake) -> list[int]:
    """Users the sweep covers (banned ones included: they are listed and 404)."""
    return sorted(u.id for u in fake.users.values() if u.type == "employee")


def awaiting(fake) -> set[int]:
    return {u.id for u in fake.users.values()
            if u.has_record and any(p.awaiting for p in u.courses.values())}


def edit_cursor(warehouse, **changes) -> dict:
    with warehouse.engine.begin() as conn:
        cursor = {**state.load_cursor(conn, "a", "progress"), **changes}
        state.save_cursor(conn, "a", "progress", cursor)
    return cursor


def live_enrollments(warehouse, learner_id: int) -> dict[str, tuple]:
    with warehouse.engine.connect() as conn:
        rows = conn.execute(
            select(enrollments.c.external_id, enrollments.c.status, enrollments.c.passed,
                   enrollments.c.deleted_at)
            .join(learners, enrollments.c.learner_id == learners.c.id)
            .where(learners.c.external_id == str(learner_id))).all()
    return {r.external_id: (r.status, r.passed) for r in rows if r.deleted_at is None}


def test_a_resync_with_nothing_changed_visits_only_open_users(start_vendor, sqlite_warehouse):
    v = start_vendor("academy", learners=60)
    fake = v.fake
    _first, progress, visits = synced(sqlite_warehouse, v)
    assert visits == once(employees(fake))
    assert set(progress.cursor["awaiting"]) == awaiting(fake)

    result, progress, visits = synced(sqlite_warehouse, v)
    today = datetime.now(UTC).date().isoformat()
    due_now = {uid for d, ids in progress.cursor["due"].items() if d <= today for uid in ids}
    open_users = awaiting(fake) | due_now
    assert 0 < len(open_users) < len(employees(fake)) / 3
    assert visits == once(open_users)
    assert {s.stream: s.written for s in result.streams} == dict.fromkeys(("users", "stats", "progress"), 0)
    pages, aggregates, quizzes = math.ceil(len(fake.users) / 50), 3, len(fake.quizzes)
    assert result.http["requests"] == pages + aggregates + quizzes + 2 * len(open_users)
    assert progress.deleted == 0
    assert progress.cursor["mode"] is None and progress.cursor["sweep"] == 3

    # the skipped users are counted
    _records, ctx = read_stream(v.source, "progress", progress.cursor)
    assert ctx.counters["users_unchanged"] == len(employees(fake)) - len(open_users)
    assert ctx.counters["users_swept"] == len(open_users)


def test_activity_and_new_users_are_picked_up_by_the_next_incremental_sweep(start_vendor, sqlite_warehouse):
    v = start_vendor("academy", learners=60)
    fake = v.fake
    synced(sqlite_warehouse, v)
    open_users = awaiting(fake)
    uid, cid = next((u.id, cid) for u in fake.users.values() if u.has_record and u.id not in open_users
                    for cid, p in u.courses.items() if not p.has_passed and not p.awaiting)
    fake.complete_course(uid, cid)
    # an imported account nobody has used yet: only "new" can find it, not "active"
    new_uid = fake.add_user("Nora Newman", "nora.newman@example.com", [40], active=False)
    assert fake.users[new_uid].last_active_on is None

    result, progress, visits = synced(sqlite_warehouse, v)
    assert visits == once(open_users | {uid, new_uid})
    new_courses = len(fake.users[new_uid].courses)
    changed = 1 + new_courses + 1  # the completion; the new user's courses and onboarding
    assert progress.tables == {"enrollments": changed, "enrollment_history": changed}
    # the new learner, and the active one (its raw last_active_on moved); the new one's group
    assert next(s for s in result.streams if s.stream == "users").tables == {
        "learners": 2, "learner_org_units": 1}
    assert live_enrollments(sqlite_warehouse, uid)[f"{uid}:{cid}"] == ("completed", True)
    new_rows = live_enrollments(sqlite_warehouse, new_uid)
    assert new_rows[f"{new_uid}:onboarding"][0] == "in_progress"
    assert {st for k, (st, _) in new_rows.items() if k != f"{new_uid}:onboarding"} == {"not_started"}
    assert len(new_rows) == new_courses + 1
    assert progress.cursor["max_id"] == new_uid
    assert new_uid in {u for ids in progress.cursor["due"].values() for u in ids}  # 30 days to go

    # last_active_on / registered_at are dates: whatever happened today may have happened after
    # this visit, so sweeps look again until the day after tomorrow (and find nothing new)
    _result, progress, visits = synced(sqlite_warehouse, v)
    assert visits == once(open_users | {uid, new_uid}) and progress.written == 0


def test_an_admin_sign_off_is_picked_up_without_user_activity(start_vendor, sqlite_warehouse):
    v = start_vendor("academy", learners=60)
    fake = v.fake
    synced(sqlite_warehouse, v)
    uid, cid = next((u.id, cid) for u in fake.users.values() if u.has_record
                    for cid, p in u.courses.items() if p.awaiting
                    and sum(q.awaiting for q in u.courses.values()) == 1)
    active = fake.users[uid].last_active_on
    assert active < datetime.now(UTC).date() - timedelta(days=1)  # not "active" since the last sweep
    assert live_enrollments(sqlite_warehouse, uid)[f"{uid}:{cid}"] == ("pending", None)
    fake.sign_off(uid, cid)
    assert fake.users[uid].last_active_on == active

    _result, progress, visits = synced(sqlite_warehouse, v)
    assert visits[uid] == 1
    assert progress.tables == {"enrollments": 1, "enrollment_history": 1}
    assert live_enrollments(sqlite_warehouse, uid)[f"{uid}:{cid}"] == ("completed", True)
    assert uid not in progress.cursor["awaiting"]

    _result, _progress, visits = synced(sqlite_warehouse, v)
    assert uid not in visits  # nothing of theirs is open any more


def test_onboarding_is_revisited_from_its_due_date_on(start_vendor, sqlite_warehouse):
    v = start_vendor("academy", learners=20)
    fake = v.fake
    synced(sqlite_warehouse, v)
    today = datetime.now(UTC).date()
    # imported accounts (registered long ago, never used): found as new by their ids only
    imported = datetime.now(UTC) - timedelta(days=40)
    due_today, due_later = (
        fake.add_user(name, f"{name.lower().replace(' ', '.')}@example.com", [12], active=False,
                      hired_at=today - timedelta(days=days), registered_at=imported)
        for name, days in (("Dana Due", 30), ("Liam Later", 29)))
    _result, progress, visits = synced(sqlite_warehouse, v)
    assert visits == once(awaiting(fake) | {due_today, due_later})
    assert due_today in progress.cursor["due"][today.isoformat()]
    assert due_later in progress.cursor["due"][(today + timedelta(days=1)).isoformat()]

    # not overdue yet (0 days left): is_overdue may flip any moment, so every sweep looks again
    _result, progress, visits = synced(sqlite_warehouse, v)
    assert visits == once(awaiting(fake) | {due_today})
    assert progress.written == 0


def test_full_refresh_and_zero_days_sweep_everyone_and_only_full_sweeps_delete(start_vendor,
                                                                              sqlite_warehouse):
    v = start_vendor("academy", learners=60)
    fake = v.fake
    synced(sqlite_warehouse, v)
    open_users = awaiting(fake)
    quiet = next(u.id for u in fake.users.values() if u.has_record and u.id not in open_users)
    noisy = min(open_users)
    fake.ban(quiet)  # admin actions: neither user was active
    fake.ban(noisy)

    _result, progress, visits = synced(sqlite_warehouse, v)
    assert visits == once(open_users)  # the banned open user 404s ...
    assert progress.deleted == 0       # ... but an incremental sweep deletes nothing
    assert live_enrollments(sqlite_warehouse, quiet) and live_enrollments(sqlite_warehouse, noisy)
    assert noisy not in progress.cursor["awaiting"]

    _result, progress, visits = synced(sqlite_warehouse, v, full_refresh=True)
    assert visits == once(employees(fake))
    assert progress.deleted == len(fake.users[quiet].courses) + len(fake.users[noisy].courses) + 2
    assert not live_enrollments(sqlite_warehouse, quiet) and not live_enrollments(sqlite_warehouse, noisy)

    v.source["options"]["full_sweep_every_days"] = 0
    for _ in range(2):
        _result, progress, visits = synced(sqlite_warehouse, v)
        assert visits == once(employees(fake)) and progress.written == 0


def test_a_full_sweep_comes_round_every_n_days_and_when_the_course_list_changes(start_vendor,
                                                                                sqlite_warehouse):
    v = start_vendor("academy", learners=30)
    fake = v.fake
    everyone, open_users = once(employees(fake)), once(awaiting(fake))
    synced(sqlite_warehouse, v)
    today = datetime.now(UTC).date()
    # as if the last full sweep had started 6 days ago, then 7 (full_sweep_every_days: 7)
    edit_cursor(sqlite_warehouse, last_full_on=(today - timedelta(days=6)).isoformat())
    assert synced(sqlite_warehouse, v)[2] == open_users
    edit_cursor(sqlite_warehouse, last_full_on=(today - timedelta(days=7)).isoformat())
    _result, progress, visits = synced(sqlite_warehouse, v)
    assert visits == everyone and progress.cursor["last_full_on"] == today.isoformat()
    assert synced(sqlite_warehouse, v)[2] == open_users

    # the course list the last sweep started with differs from today's (a course published)
    edit_cursor(sqlite_warehouse, courses="0" * 16)
    assert synced(sqlite_warehouse, v)[2] == everyone
    assert synced(sqlite_warehouse, v)[2] == open_users


def test_old_cursors_are_accepted(start_vendor, sqlite_warehouse):
    v = start_vendor("academy", learners=30)
    fake = v.fake
    ids = employees(fake)
    synced(sqlite_warehouse, v)
    mid = ids[len(ids) // 2]
    with sqlite_warehouse.engine.begin() as conn:
        state.save_cursor(conn, "a", "progress",
                          {"sweep": 3, "after_id": mid, "done": len(ids) // 2 + 1, "total": len(ids)})
    # an old sweep under way goes on where it stopped, as a full one
    _result, progress, visits = synced(sqlite_warehouse, v)
    assert visits == once(i for i in ids if i > mid)
    assert progress.deleted == 0  # it did not start in this run
    assert (progress.cursor["sweep"], progress.cursor["after_id"]) == (4, None)
    assert progress.cursor["last_full_on"] is None  # when it started is unknown ...
    assert synced(sqlite_warehouse, v)[2] == once(ids)  # ... so the next sweep is full

    with sqlite_warehouse.engine.begin() as conn:
        state.save_cursor(conn, "a", "progress", {"sweep": 7, "after_id": None, "done": 0, "total": 5})
    _result, progress, visits = synced(sqlite_warehouse, v)
    assert visits == once(ids) and progress.cursor["sweep"] == 8
    assert synced(sqlite_warehouse, v)[2] == once(awaiting(fake))


def test_a_budgeted_incremental_sweep_resumes_across_runs(start_vendor, sqlite_warehouse):
    # budget, not pacing (tests below): each run's client starts with a fresh token bucket,
    # so back-to-back runs inside one 40-request window could meet a 429, which costs budget
    v = start_vendor("academy", learners=30, rate_limit=10_000)
    v.source["options"].update(quiz_ids=[], max_requests_per_run=12)
    fake = v.fake
    per_run = (12 - 4) // 2  # one users page and three aggregates come first
    for _ in range(math.ceil(len(employees(fake)) / per_run)):
        _result, progress, _visits = synced(sqlite_warehouse, v)
    assert progress.cursor["sweep"] == 2 and progress.cursor["after_id"] is None

    active = [u for u in fake.employee_ids() if u not in awaiting(fake)][::2][:9]
    for uid in active:
        fake.complete_onboarding(uid)
    expected = sorted(awaiting(fake) | set(active))
    assert len(expected) > 2 * per_run
    runs = math.ceil(len(expected) / per_run)
    total: Counter[int] = Counter()
    for run in range(runs):
        result, progress, visits = synced(sqlite_warehouse, v)
        assert result.http["requests"] <= 12 and progress.deleted == 0
        assert visits == once(expected[run * per_run:(run + 1) * per_run])
        total += visits
        if run < runs - 1:
            assert progress.cursor["mode"] == "incremental"
            assert progress.cursor["after_id"] == expected[(run + 1) * per_run - 1]
    assert total == once(expected)
    assert progress.cursor["sweep"] == 3 and progress.cursor["after_id"] is None
    with sqlite_warehouse.engine.connect() as conn:
        done = set(conn.execute(select(learners.c.external_id)
                                .join(enrollments, enrollments.c.learner_id == learners.c.id)
                                .where(enrollments.c.course_id == select(courses.c.id).where(
                                    courses.c.external_id == "onboarding").scalar_subquery(),
                                    enrollments.c.status == "completed")).scalars())
    assert {str(u) for u in active} <= done


# ---------------------------------------------------------------------- proving a read whole

def streams_of(result) -> dict:
    return {s.stream: s for s in result.streams}


def test_a_full_user_read_reaches_meta_total_and_a_since_read_reports_none(start_vendor,
                                                                           sqlite_warehouse):
    v = start_vendor("academy", learners=60)
    users = streams_of(sync(sqlite_warehouse, {"a": v.source}))["users"]
    assert users.result == "succeeded"
    assert (users.vendor_total, users.distinct_read, users.skipped, users.excluded) == (
        len(v.fake.users), len(v.fake.users), 0, 0)  # kiosks and the bot are learners too
    later = streams_of(sync(sqlite_warehouse, {"a": v.source}, since=datetime.now(UTC)))["users"]
    assert later.result == "succeeded" and later.vendor_total is None


def test_a_user_list_short_of_meta_total_fails_and_deletes_nothing(start_vendor, sqlite_warehouse):
    v = start_vendor("academy", learners=100)
    assert len(v.fake.users) > 50 and sync(sqlite_warehouse, {"a": v.source}).ok  # two pages
    v.fake.page_shift = 3  # three users slip between pages: never listed, still counted
    result = sync(sqlite_warehouse, {"a": v.source})
    users = streams_of(result)["users"]
    assert not result.ok and users.error_class == "IncompleteRead"
    assert f"read {len(v.fake.users) - 3} distinct learners of the {len(v.fake.users)}" in users.error
    assert count(sqlite_warehouse, learners, learners.c.deleted_at.is_not(None)) == 0
    v.fake.page_shift = 0
    again = sync(sqlite_warehouse, {"a": v.source})
    assert again.ok, again.error
    assert count(sqlite_warehouse, learners, learners.c.deleted_at.is_(None)) == len(v.fake.users)


def expected_enrollments(fake) -> set[str]:
    return {f"{uid}:{cid}" for uid in fake.employee_ids() for cid in fake.users[uid].courses} | {
        f"{uid}:onboarding" for uid in fake.employee_ids()}


def enrollment_ids(warehouse, live: bool = True) -> set[str]:
    with warehouse.engine.connect() as conn:
        where = enrollments.c.deleted_at.is_(None) if live else enrollments.c.deleted_at.is_not(None)
        return set(conn.execute(select(enrollments.c.external_id).where(where)).scalars())


def test_a_wave_of_404s_fails_the_sweep_deletes_nothing_and_is_visited_again(start_vendor,
                                                                             sqlite_warehouse):
    v = start_vendor("academy", learners=40, not_found_share=0.7)  # a wrong tenant, say
    fake = v.fake
    lost = {uid for uid in fake.employee_ids() if fake.lost(uid)}
    assert len(lost) >= 10 and len(lost) > len(employees(fake)) / 2
    result = sync(sqlite_warehouse, {"a": v.source})
    progress = streams_of(result)["progress"]
    assert not result.ok and progress.error_class == "IncompleteRead"
    assert [s.result for s in result.streams] == ["succeeded", "succeeded", "failed"]
    line = progress.error
    assert "\n" not in line and line.startswith("source 'a': ") and " answered 404, more than 50%" in line
    assert "/stats/academy/users/{id}/courses" in line and "check base_url" in line and "auth.api_key" in line
    with sqlite_warehouse.engine.connect() as conn:  # no visit reached the cursor
        assert state.load_cursor(conn, "a", "progress") is None
    assert {int(e.split(":")[0]) for e in enrollment_ids(sqlite_warehouse)}.isdisjoint(lost)

    fake.not_found_share = 0
    before = sweep_visits(fake)
    again = sync(sqlite_warehouse, {"a": v.source})
    assert again.ok, again.error
    assert set(sweep_visits(fake) - before) >= lost  # the users of the wave are visited again
    assert enrollment_ids(sqlite_warehouse) == expected_enrollments(fake)

    # a full sweep in a wave soft-deletes nothing, and keeps the cursor it started from
    fake.not_found_share = 0.7
    with sqlite_warehouse.engine.connect() as conn:
        cursor = state.load_cursor(conn, "a", "progress")
    failed = sync(sqlite_warehouse, {"a": v.source}, full_refresh=True)
    assert streams_of(failed)["progress"].error_class == "IncompleteRead"
    assert streams_of(failed)["progress"].deleted == 0
    assert enrollment_ids(sqlite_warehouse, live=False) == set()
    assert enrollment_ids(sqlite_warehouse) == expected_enrollments(fake)
    with sqlite_warehouse.engine.connect() as conn:
        assert state.load_cursor(conn, "a", "progress") == cursor


def test_a_few_404s_are_users_without_a_record(start_vendor, sqlite_warehouse):
    v = start_vendor("academy", learners=40, not_found_share=0.3)  # below the wave line
    fake = v.fake
    lost = {uid for uid in fake.employee_ids() if fake.lost(uid)}
    assert 10 <= len(lost) + len(employees(fake)) - len(fake.employee_ids()) < len(employees(fake)) / 2
    result = sync(sqlite_warehouse, {"a": v.source})
    assert result.ok, result.error
    assert {int(e.split(":")[0]) for e in enrollment_ids(sqlite_warehouse)} == set(fake.employee_ids()) - lost


def test_shadow_users_404_by_design_and_make_no_wave(start_vendor, sqlite_warehouse):
    v = start_vendor("academy", learners=40)
    fake = v.fake
    shadows = fake.employee_ids()[: len(fake.employee_ids()) * 3 // 4]
    for uid in shadows:
        fake.users[uid].type = "shadow"  # listed, swept, and 404 as documented (docs/vendors/academy.md)
    result = sync(sqlite_warehouse, {"a": v.source})
    assert result.ok, result.error
    assert {int(e.split(":")[0]) for e in enrollment_ids(sqlite_warehouse)} == set(fake.employee_ids())


def test_not_found_wave_thresholds():
    wave = NotFoundWave("items", "fix it")
    for found in [False] * 9 + [True] * 8:
        wave.add(found)
    wave.check("s")  # 9 of 17: more than half, but fewer than 10
    wave.add(False)
    with pytest.raises(IncompleteRead, match="^source 's': 10 of 18 items answered 404, more than 50%"):
        wave.check("s")
    wave.add(True), wave.add(True)
    wave.check("s")  # 10 of 20: not more than half
