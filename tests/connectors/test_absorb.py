"""Absorb LMS connector: pure normalization from fixture files, then the real connector
against the sandbox fake over loopback HTTP."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy import select, text
from structlog.testing import capture_logs

import lms_sync.connectors.absorb as absorb_module
from lms_sync.canonical import CourseKind, EnrollmentStatus
from lms_sync.config import parse_config
from lms_sync.connectors import connector_class
from lms_sync.connectors.absorb import describe_error
from lms_sync.connectors.absorb_records import (
    STATUS_MAP,
    normalize_course,
    normalize_enrollment,
    normalize_lesson,
    normalize_user,
)
from lms_sync.connectors.base import Checkpoint, ReadContext
from lms_sync.connectors.fields import percent, timespan_seconds
from lms_sync.logs import get_logger
from lms_sync.pipeline import run_sources
from lms_sync.warehouse.tables import (
    activity_progress,
    courses,
    enrollment_history,
    enrollments,
    learners,
    sync_runs,
    sync_state,
)
from tests.conftest import at, load_fixture, make_config
from tests.conftest import count_rows as count
from tests.connectors.conftest import sync


def rows_by_status() -> dict[int, dict]:
    return {r["status"]: r for r in load("course_enrollments.json")["enrollments"][:13]}


# ---------------------------------------------------------------- normalization

EXPECTED_STATUS = {
    0: ("not_started", None, "NotStarted"),
    1: ("in_progress", None, "InProgress"),
    2: ("pending", None, "PendingApproval"),
    3: ("completed", None, "Complete"),
    4: ("incomplete", None, "NotComplete"),
    5: ("failed", False, "Failed"),
    6: ("declined", None, "Declined"),
    7: ("pending", None, "PendingEvaluationRequired"),
    8: ("waitlisted", None, "OnWaitlist"),
    9: ("absent", None, "Absent"),
    10: ("not_applicable", None, "NotApplicable"),
    11: ("pending", None, "PendingProctor"),
    12: ("pending", None, "ReadyForReview"),
}


@pytest.mark.parametrize("vendor_status", range(13))
def test_status_map_value_by_value(vendor_status):
    e = normalize_enrollment(rows_by_status()[vendor_status])
    assert (e.status, e.passed, e.vendor_status) == EXPECTED_STATUS[vendor_status]


def test_status_map_is_exactly_the_design_table():
    """The design table: the absorb row of docs/contracts.md, "Warehouse"."""
    assert set(STATUS_MAP) == set(range(13))
    assert {s for _, s, _ in STATUS_MAP.values()} <= set(EnrollmentStatus)


def test_unknown_status_is_rejected():
    with pytest.raises(ValueError, match="unknown enrollment status 13"):
        normalize_enrollment({**rows_by_status()[1], "status": 13})


def test_enrollment_fields_value_by_value():
    raw = rows_by_status()[3]
    e = normalize_enrollment(raw)
    assert e.external_id == "u0000000-0000-0000-0000-000000000003:c0000000-0000-0000-0000-000000000001"
    assert e.learner_external_id == "u0000000-0000-0000-0000-000000000003"
    assert e.course_external_id == "c0000000-0000-0000-0000-000000000001"
    assert (e.progress_pct, e.score) == (100, 85)
    assert e.time_spent_seconds == 93784.5  # 1 day 02:03:04.5
    assert e.enrolled_at == at("2026-02-28T00:00:00Z")
    assert e.started_at == at("2026-03-01T09:00:00Z")
    assert e.completed_at == at("2026-03-10T12:00:00Z")
    assert e.due_at == at("2026-04-01T00:00:00Z")
    assert e.expires_at is None
    assert e.last_activity_at == at("2026-03-10T12:03:00Z")
    assert e.raw["courseVersionId"] == "v0000000-0000-0000-0000-000000000001"  # unknown fields kept
    assert e.raw["id"] == "e0000000-0000-0000-0000-000000000003"


def test_ticks_win_and_percentages_are_clamped_within_tolerance():
    rows = load("course_enrollments.json")["enrollments"]
    ticks = normalize_enrollment(rows[-1])
    assert ticks.time_spent_seconds == 3600  # timeSpentTicks, the unparsable string ignored
    assert (ticks.progress_pct, ticks.score) == (100, 0)
    with pytest.raises(ValueError, match="progress 150"):
        normalize_enrollment(rows[-2])


@pytest.mark.parametrize(("text", "seconds"), [
    ("1.02:03:04.5", 93784.5), ("00:10:00", 600), ("12:00:00", 43200), ("0:00:01.25", 1.25),
    ("3.00:00:00", 259200), ("00:00:00.1234567", 0.1234567), ("PT1H30M", 5400), ("P1DT0.5S", 86400.5),
    (None, None), ("", None),
])
def test_timespan(text, seconds):
    assert timespan_seconds(text) == pytest.approx(seconds) if seconds is not None else (
        timespan_seconds(text) is None)


@pytest.mark.parametrize("text", ["1:2", "abc", "25:61:00x", "P", "PT"])
def test_bad_timespan(text):
    with pytest.raises(ValueError):
        timespan_seconds(text)


@pytest.mark.parametrize(("value", "expected"), [(None, None), (0, 0), (55.5, 55.5), (100.5, 100),
                                                  (-0.5, 0)])
def test_percent(value, expected):
    assert percent(value, "progress") == expected


def test_percent_out_of_range():
    with pytest.raises(ValueError):
        percent(101, "score")


def test_users_value_by_value():
    depts = {d["id"]: d["name"] for d in load("departments_page.json")["departments"]}
    zoe, kiosk = (normalize_user(u, depts) for u in load("users_page.json")["users"])
    assert zoe.external_id == "8b0f6f3e-1c1a-4a53-9a55-0d7a1f7f0001"
    assert (zoe.email, zoe.first_name, zoe.last_name) == ("zoe.overli@example.com", "Zoë", "Øverli")
    assert (zoe.display_name, zoe.hr_id, zoe.department, zoe.is_active) == (
        "Zoë Øverli", "E100042", "Opérations", True)
    assert zoe.raw["customFields"] == {"string1": "Nord"}
    assert (kiosk.email, kiosk.hr_id, kiosk.department, kiosk.is_active) == (None, None, None, False)
    assert kiosk.display_name == "kiosk-7"


def test_user_active_status_wins_and_is_active_alone_still_maps():
    row = load("users_page.json")["users"][0]
    assert row["activeStatus"] == 0 and "isActive" not in row  # the documented shape
    assert normalize_user({**row, "activeStatus": 1}).is_active is False
    assert normalize_user({**row, "activeStatus": 0, "isActive": False}).is_active is True
    older = {k: v for k, v in row.items() if k != "activeStatus"}
    assert normalize_user({**older, "isActive": False}).is_active is False
    assert normalize_user({**older, "isActive": True}).is_active is True
    assert normalize_user(older).is_active is None
    assert normalize_user({**row, "activeStatus": 7}).is_active is None  # not a documented value


def test_courses_value_by_value():
    cats = {c["id"]: c["name"] for c in load("categories_page.json")["categories"]}
    first, second = (normalize_course(c, cats) for c in load("courses_page.json")["courses"])
    assert (first.external_id, first.kind, first.title) == (
        "c0000000-0000-0000-0000-000000000001", CourseKind.COURSE, "Datenschutz & DSGVO")
    assert (first.category, first.duration_minutes, first.description) == ("Compliance", 90, "<p>DSGVO</p>")
    assert second.category is None and second.duration_minutes is None
    assert second.raw["courseType"] == "Curriculum"


def test_lessons_value_by_value():
    done, todo = (normalize_lesson(r, "u3", "c1") for r in load("user_course_lessons.json"))
    assert done.external_id == "u3:c1:l0000000-0000-0000-0000-000000000001"
    assert (done.learner_external_id, done.course_external_id, done.enrollment_external_id) == (
        "u3", "c1", "u3:c1")
    assert (done.activity_type, done.status, done.vendor_status, done.score) == (
        "assessment", "completed", "Complete", 90)
    assert done.time_spent_seconds == 750
    assert done.last_activity_at == at("2026-03-09T15:00:00Z")
    assert done.raw["name"] == "Abschlusstest" and done.raw["failures"] == 1
    assert (todo.activity_type, todo.status, todo.started_at) == ("lesson", "not_started", None)


def test_describe_error_reads_the_documented_body():
    request = httpx.Request("GET", "http://x/users")
    assert describe_error(httpx.Response(400, json=load("error.json"), request=request)) == (
        "Invalid paging parameters.; _limit must be between 1 and 1000")
    assert describe_error(httpx.Response(401, json="Invalid API key", request=request)) == "Invalid API key"
    assert describe_error(httpx.Response(500, json=[1], request=request)) is None


# ---------------------------------------------------------------- against the fake


def load(name: str):
    return load_fixture("absorb", name)


def by_stream(result):
    return {s.stream: s for s in result.streams}


def active_enrollments(fake) -> list[dict]:
    return [r for rows in fake.enrollments.values() for r in rows if r["isActive"]]


@pytest.mark.parametrize("ready_max", [None, 1])
def test_full_sync(start_vendor, sqlite_warehouse, ready_max, monkeypatch):
    if ready_max is not None:  # enrollment records let out behind lesson calls one by one
        monkeypatch.setattr(absorb_module, "READY_MAX", ready_max)
    vendor = start_vendor("absorb", learners=30)
    fake = vendor.fake
    result = sync(sqlite_warehouse, {"absorb": vendor.source})
    assert result.ok, result.error
    streams = by_stream(result)
    assert list(streams) == ["departments", "users", "courses", "enrollments"]
    assert all(s.skipped == 0 for s in result.streams)
    wh = sqlite_warehouse
    assert count(wh, learners) == 30 and count(wh, courses) == 8
    active = active_enrollments(fake)
    assert count(wh, enrollments) == len(active)
    assert count(wh, enrollment_history) == len(active)
    historical = sum(1 for rows in fake.enrollments.values() for r in rows if not r["isActive"])
    assert historical > 0  # skipped, not stored: one row per learner and course
    assert {s.stream: (s.vendor_total, s.distinct_read, s.excluded) for s in result.streams} == {
        "departments": (6, 6, 0), "users": (30, 30, 0), "courses": (8, 8, 0),
        "enrollments": (len(active) + historical, len(active), historical)}  # Absorb's totalItems
    with wh.engine.connect() as conn:
        statuses = set(conn.execute(select(enrollments.c.vendor_status)).scalars())
        hr_ids = set(conn.execute(select(learners.c.hr_id)).scalars())
        is_active = dict(conn.execute(select(learners.c.external_id, learners.c.is_active)).all())
        cursor = conn.execute(select(sync_state.c.cursor)
                              .where(sync_state.c.stream == "enrollments")).scalar()
    assert statuses == {name for name, _, _ in STATUS_MAP.values()}
    assert "E100000" in hr_ids
    assert is_active == {u["id"]: u["activeStatus"] == 0 for u in fake.users}  # documented activeStatus
    assert False in is_active.values()
    assert cursor == {"date_edited": max(r["dateEdited"] for rows in fake.enrollments.values() for r in rows)}
    # lessons: one call per active enrollment that is not an untouched NotStarted
    started = [r for r in active if r["status"] != 0 or r["progress"]]
    assert sum(n for p, n in fake.requests.items() if p.endswith("/lessons")) == len(started)
    assert count(wh, activity_progress) == sum(len(fake.lesson_rows(r)) for r in started)
    assert count(wh, activity_progress, activity_progress.c.enrollment_id.is_(None)) == 0
    assert fake.token_fetches == 1 and fake.filters == []  # a first run reads everything

    again = sync(wh, {"absorb": vendor.source})
    assert again.ok and sum(s.written for s in again.streams) == 0


def test_incremental_sync_changes_exactly_k_enrollments(start_vendor, sqlite_warehouse):
    vendor = start_vendor("absorb", learners=30)
    fake, wh = vendor.fake, sqlite_warehouse
    assert sync(wh, {"absorb": vendor.source}).ok
    with wh.engine.connect() as conn:
        before = dict(conn.execute(select(enrollments.c.external_id, enrollments.c.updated_at)).all())
        saved = conn.execute(select(sync_state.c.cursor).where(sync_state.c.stream == "enrollments")).scalar()
    history_before = count(wh, enrollment_history)
    changed = fake.change_enrollments(5)
    requests_before = sum(fake.requests.values())

    result = sync(wh, {"absorb": vendor.source})
    assert result.ok, result.error
    with wh.engine.connect() as conn:
        after = dict(conn.execute(select(enrollments.c.external_id, enrollments.c.updated_at)).all())
        done = set(conn.execute(select(enrollments.c.external_id)
                                .where(enrollments.c.vendor_status == "Complete")).scalars())
    assert sorted(k for k in after if after[k] != before[k]) == sorted(changed)
    assert set(changed) <= done
    assert count(wh, enrollment_history) - history_before == 5
    assert by_stream(result)["enrollments"].tables["enrollments"] == 5
    assert by_stream(result)["users"].written == 0
    # read with the overlap: 10 minutes before the saved cursor, sorted by dateEdited
    start = datetime.fromisoformat(saved["date_edited"].replace("Z", "+00:00")) - timedelta(minutes=10)
    assert f"dateEdited ge datetime'{start:%Y-%m-%dT%H:%M:%SZ}'" in fake.filters
    assert sum(fake.requests.values()) - requests_before < 40  # not a full re-read
    assert count(wh, enrollments, enrollments.c.deleted_at.is_not(None)) == 0


def test_since_backfill_keeps_the_cursor(start_vendor, sqlite_warehouse):
    vendor = start_vendor("absorb", learners=20, courses=3)
    vendor.source["options"]["lesson_enrollments"] = False
    fake, wh = vendor.fake, sqlite_warehouse
    assert sync(wh, {"absorb": vendor.source}).ok
    with wh.engine.connect() as conn:
        saved = dict(conn.execute(select(sync_state.c.stream, sync_state.c.cursor)).all())
    fake.remove_enrollments(1)
    result = sync(wh, {"absorb": vendor.source}, since=datetime(2026, 1, 1, tzinfo=UTC))
    assert result.ok, result.error
    assert "dateEdited ge datetime'2026-01-01T00:00:00Z'" in fake.filters
    with wh.engine.connect() as conn:
        now = dict(conn.execute(select(sync_state.c.stream, sync_state.c.cursor)).all())
    assert now == saved  # never moved backwards
    assert count(wh, enrollments, enrollments.c.deleted_at.is_not(None)) == 0  # partial: no deletes


def test_full_refresh_soft_deletes_removed_enrollments(start_vendor, sqlite_warehouse):
    vendor = start_vendor("absorb", learners=20, courses=3)
    vendor.source["options"]["lesson_enrollments"] = False
    wh = sqlite_warehouse
    assert sync(wh, {"absorb": vendor.source}).ok
    gone = vendor.fake.remove_enrollments(2)
    assert sync(wh, {"absorb": vendor.source}).ok
    assert count(wh, enrollments, enrollments.c.deleted_at.is_not(None)) == 0  # incremental
    filters = len(vendor.fake.filters)
    result = sync(wh, {"absorb": vendor.source}, full_refresh=True)
    assert result.ok, result.error
    with wh.engine.connect() as conn:
        deleted = set(conn.execute(select(enrollments.c.external_id)
                                   .where(enrollments.c.deleted_at.is_not(None))).scalars())
    assert deleted == set(gone)
    assert len(vendor.fake.filters) == filters  # a full refresh reads everything


def test_a_user_removed_upstream_leaves_the_warehouse_and_learner_progress(start_vendor, sqlite_warehouse):
    """Someone leaves: Absorb lists neither the user nor their enrollments any more. A full
    refresh soft-deletes the learner and the enrollments, and learner_progress (what HR
    reads) no longer shows them; the rows stay, with deleted_at."""
    vendor = start_vendor("absorb", learners=20, courses=3)
    vendor.source["options"]["lesson_enrollments"] = False
    fake, wh = vendor.fake, sqlite_warehouse
    assert sync(wh, {"absorb": vendor.source}).ok
    leaver = fake.users.pop(0)["id"]
    theirs = {f"{leaver}:{r['courseId']}" for rows in fake.enrollments.values() for r in rows
              if r["userId"] == leaver and r["isActive"]}
    for rows in fake.enrollments.values():
        rows[:] = [r for r in rows if r["userId"] != leaver]
    assert theirs
    result = sync(wh, {"absorb": vendor.source}, full_refresh=True)
    assert result.ok, result.error
    with wh.engine.connect() as conn:
        gone = set(conn.execute(select(learners.c.external_id)
                                .where(learners.c.deleted_at.is_not(None))).scalars())
        ended = set(conn.execute(select(enrollments.c.external_id)
                                 .where(enrollments.c.deleted_at.is_not(None))).scalars())
        shown = set(conn.execute(text("SELECT learner_external_id FROM learner_progress")).scalars())
    assert gone == {leaver} and ended == theirs
    assert leaver not in shown and len(shown) == 19


def test_token_invalidated_mid_run_reauthenticates_once(start_vendor, sqlite_warehouse):
    vendor = start_vendor("absorb", learners=30)
    fake = vendor.fake
    fake.invalidate_token_after(12)  # during the enrollments fan-out (4 requests in flight)
    result = sync(sqlite_warehouse, {"absorb": vendor.source})
    assert result.ok, result.error
    assert fake.token_fetches == 2 and fake.rejected >= 1
    assert count(sqlite_warehouse, enrollments) == len(active_enrollments(fake))


def test_throttling_storm_waits_what_retry_after_says(start_vendor, sqlite_warehouse):
    vendor = start_vendor("absorb", learners=20, courses=3)
    vendor.source["options"]["lesson_enrollments"] = False
    # five 429s in a row on the users page: one short of max_attempts (6)
    vendor.fake.faults.update({"fail_next": 5, "fail_status": 429, "retry_after": 0.1,
                               "path_filter": "/users"})
    with capture_logs() as logs:
        result = sync(sqlite_warehouse, {"absorb": vendor.source})
    assert result.ok, result.error
    assert result.http["throttled"] == 5 and result.http["retries"] == 5
    waits = [(e["status"], e["wait"]) for e in logs if e["event"] == "http.retry"]
    assert waits == [(429, 0.1)] * 5
    assert count(sqlite_warehouse, learners) == 20


def test_server_errors_then_success(start_vendor, sqlite_warehouse):
    vendor = start_vendor("absorb", learners=20, courses=3)
    vendor.source["options"]["lesson_enrollments"] = False
    vendor.fake.faults.update({"fail_next": 2, "fail_status": 503, "retry_after": 0.1,
                               "path_filter": "/enrollments"})
    result = sync(sqlite_warehouse, {"absorb": vendor.source})
    assert result.ok, result.error
    assert result.http["retries"] == 2
    assert count(sqlite_warehouse, enrollments) == len(active_enrollments(vendor.fake))


def test_wrong_api_key_fails_that_source_only(start_vendor, sqlite_warehouse):
    bad, good = start_vendor("absorb", learners=10, courses=2), start_vendor("absorb", learners=10, courses=2)
    good.source["options"]["lesson_enrollments"] = False
    bad.source["auth"]["api_key"] = "wrong-key-123"
    cfg = make_config(sqlite_warehouse, {"absorb-bad": bad.source, "absorb-good": good.source})
    first, second = run_sources(sqlite_warehouse.engine, cfg, list(cfg.sources.values()))
    assert not first.ok and second.ok
    assert first.error.startswith("source 'absorb-bad': Absorb refused the API key or admin login: "
                                  "Invalid API key. (HTTP 401 /authenticate); check auth.api_key")
    assert "\n" not in first.error and "wrong-key-123" not in first.error
    assert [s.result for s in first.streams] == ["failed"] * 4
    with sqlite_warehouse.engine.connect() as conn:
        runs = conn.execute(select(sync_runs.c.source_id, sync_runs.c.stream, sync_runs.c.result)).all()
    assert {(r.stream, r.result) for r in runs if r.source_id == "absorb-bad"} == {
        ("departments", "failed"), ("users", "failed"), ("courses", "failed"), ("enrollments", "failed")}
    assert {r.result for r in runs if r.source_id == "absorb-good"} == {"succeeded"}
    assert bad.fake.token_fetches == 0


def _one_edit_time(fake) -> None:
    """Every user edited at the same second (a bulk import): a run of one dateEdited."""
    for user in fake.users:
        user["dateEdited"] = "2026-03-01T00:00:00Z"


def test_paging_loop_is_a_clear_error(start_vendor, sqlite_warehouse):
    vendor = start_vendor("absorb", learners=30, courses=2, ignore_offset=True)
    vendor.source["options"]["page_size"] = 10
    _one_edit_time(vendor.fake)  # only a run of one value needs page numbers
    result = sync(sqlite_warehouse, {"absorb": vendor.source})
    assert not result.ok
    error = by_stream(result)["users"].error
    assert error.startswith("source 'absorb': paging loop: page 1 repeats the page before it (/users)")
    assert vendor.fake.requests["/users"] == 2


def test_a_vendor_that_ignores_offset_is_still_read_whole_by_edit_time(start_vendor, sqlite_warehouse):
    """Sorted lists page by the last dateEdited seen: they need no page number while the
    edit times differ."""
    vendor = start_vendor("absorb", learners=30, courses=2, ignore_offset=True)
    vendor.source["options"]["page_size"] = 10
    result = sync(sqlite_warehouse, {"absorb": vendor.source})
    assert result.ok, result.error
    assert count(sqlite_warehouse, learners) == 30
    assert count(sqlite_warehouse, enrollments) == len(active_enrollments(vendor.fake))


def test_paging_stops_at_max_page(start_vendor, sqlite_warehouse):
    vendor = start_vendor("absorb", learners=30, courses=2)
    vendor.source["options"].update(page_size=5, max_page=2)
    _one_edit_time(vendor.fake)
    result = sync(sqlite_warehouse, {"absorb": vendor.source})
    error = by_stream(result)["users"].error
    assert error == ("source 'absorb': paging went past page 2 without an end (/users); the vendor "
                     "keeps returning full pages; raise options.max_page or report it to Absorb")
    assert vendor.fake.requests["/users"] == 3


def test_a_run_of_one_edit_time_longer_than_a_page_is_read_once(start_vendor, sqlite_warehouse):
    vendor = start_vendor("absorb", learners=30, courses=2)
    vendor.source["options"]["page_size"] = 7
    _one_edit_time(vendor.fake)
    result = sync(sqlite_warehouse, {"absorb": vendor.source})
    assert result.ok, result.error
    users = by_stream(result)["users"]
    assert users.read == 60 and count(sqlite_warehouse, learners) == 30  # + 30 memberships
    assert vendor.fake.requests["/users"] == 5  # pages 0-3 of 7, the last one short


def test_enrollments_edited_while_they_are_read_are_all_kept(start_vendor, sqlite_warehouse):
    """A learner's progress edits an enrollment mid-read: it moves to the end of the list
    sorted by dateEdited. Page numbers then skipped the row that shifted back over each page
    edge (and a full read soft-deleted it); paging by edit time reads every row."""
    vendor = start_vendor("absorb", learners=60, courses=2)
    fake = vendor.fake
    vendor.source["options"].update(page_size=5, lesson_enrollments=False)
    assert sync(sqlite_warehouse, {"absorb": vendor.source}).ok
    edited: list[str] = []

    def edit_first_row(path: str, page: list[dict]) -> None:
        if path.endswith("/enrollments") and page and len(edited) < 6:
            with fake._state:
                row = next(r for r in fake.enrollments[page[0]["courseId"]] if r["id"] == page[0]["id"])
                fake.clock += timedelta(minutes=1)
                row["dateEdited"] = f"{fake.clock.replace(tzinfo=None).isoformat(timespec='seconds')}Z"
            edited.append(row["id"])

    fake.after_page = edit_first_row
    result = sync(sqlite_warehouse, {"absorb": vendor.source}, full_refresh=True)
    assert result.ok, result.error
    assert len(edited) == 6
    enr = by_stream(result)["enrollments"]
    assert enr.deleted == 0
    assert count(sqlite_warehouse, enrollments, enrollments.c.deleted_at.is_(None)) == \
        len(active_enrollments(fake))


def test_page_size_reaches_the_vendor(start_vendor, sqlite_warehouse):
    vendor = start_vendor("absorb", learners=30, courses=2)
    vendor.source["options"].update(page_size=7, lesson_enrollments=False)
    result = sync(sqlite_warehouse, {"absorb": vendor.source})
    assert result.ok, result.error
    assert vendor.fake.requests["/users"] == 5  # 30 users: 7+7+7+7+2
    assert count(sqlite_warehouse, learners) == 30
    assert count(sqlite_warehouse, activity_progress) == 0
    assert not any(p.endswith("/lessons") for p in vendor.fake.requests)


def test_a_vendor_that_pages_by_fewer_rows_than_asked_is_a_clear_error(start_vendor, sqlite_warehouse):
    """A full page of fewer rows than _limit is not the last one: stopping there would lose
    the rest (and soft-delete it on a full read)."""
    vendor = start_vendor("absorb", learners=30, courses=2, cap_limit=10)
    vendor.source["options"]["page_size"] = 25
    result = sync(sqlite_warehouse, {"absorb": vendor.source})
    assert not result.ok
    assert by_stream(result)["users"].error == (
        "source 'absorb': the vendor pages by 10 rows, not the 25 asked for (/users); "
        "set options.page_size to 10 or less")
    assert count(sqlite_warehouse, learners) == 0
    vendor.source["options"]["page_size"] = 10
    assert sync(sqlite_warehouse, {"absorb": vendor.source}).ok
    assert count(sqlite_warehouse, learners) == 30


def test_page_size_over_the_maximum_is_refused_by_config():
    from lms_sync.config import parse_config
    from lms_sync.errors import ConfigError

    tree = {"sources": {"a": {"kind": "absorb", "base_url": "https://rest.myabsorb.com",
                              "auth": {"api_key": "k", "username": "u", "password": "p"},
                              "options": {"page_size": 5000}}}}
    with pytest.raises(ConfigError, match="page_size"):
        parse_config(tree, "x.yaml")


def test_end_to_end_on_every_database(start_vendor, warehouse):
    vendor = start_vendor("absorb", learners=25, courses=4)
    first = sync(warehouse, {"absorb": vendor.source})
    assert first.ok, first.error
    active = len(active_enrollments(vendor.fake))
    changed = vendor.fake.change_enrollments(3, status=5)
    second = sync(warehouse, {"absorb": vendor.source})
    assert second.ok, second.error
    assert by_stream(second)["enrollments"].tables["enrollments"] == 3
    with warehouse.engine.connect() as conn:
        rows = conn.execute(text("SELECT learner_external_id, course_external_id, status, passed "
                                 "FROM learner_progress")).all()
    assert len(rows) == active
    failed = {f"{r.learner_external_id}:{r.course_external_id}" for r in rows if r.status == "failed"}
    assert set(changed) <= failed
    assert all(not r.passed for r in rows if r.status == "failed")


def test_course_deleted_between_listing_and_fan_out_is_skipped(start_vendor, sqlite_warehouse):
    vendor = start_vendor("absorb", learners=20, courses=3)
    vendor.source["options"]["lesson_enrollments"] = False
    vendor.fake.enrollments.pop(vendor.fake.courses[0]["id"])  # listed, but its enrollments 404
    result = sync(sqlite_warehouse, {"absorb": vendor.source})
    assert result.ok, result.error
    assert count(sqlite_warehouse, enrollments) == len(active_enrollments(vendor.fake)) > 0


def test_ids_with_url_characters_stay_one_path_segment(start_vendor, sqlite_warehouse):
    """A vendor id is sent percent-encoded: with '/', '?', '#', '%' or a space in a course's
    or a user's id, its enrollments and lessons are still read, not 404s or other paths."""
    vendor = start_vendor("absorb", learners=12, courses=3)
    fake = vendor.fake
    odd_course, odd_user = "c/1 ?x=#%2F", "u/../2?#"
    assert fake.enrollments  # generated from the original ids first
    old_course = fake.courses[0]["id"]
    fake.courses[0]["id"] = odd_course
    fake.enrollments[odd_course] = fake.enrollments.pop(old_course)
    for row in fake.enrollments[odd_course]:
        row["courseId"] = odd_course
    old_user = fake.users[0]["id"]
    fake.users[0]["id"] = odd_user
    mine = [r for rows in fake.enrollments.values() for r in rows if r["userId"] == old_user]
    for row in mine:
        row["userId"] = odd_user
    assert fake.enrollments[odd_course] and mine
    result = sync(sqlite_warehouse, {"absorb": vendor.source})
    assert result.ok, result.error
    assert all(s.skipped == 0 for s in result.streams)
    active = active_enrollments(fake)
    started = [r for r in active if r["status"] != 0 or r["progress"]]
    assert count(sqlite_warehouse, enrollments) == len(active)
    assert count(sqlite_warehouse, activity_progress) == sum(len(fake.lesson_rows(r)) for r in started)
    with sqlite_warehouse.engine.connect() as conn:
        ids = set(conn.execute(select(enrollments.c.external_id)).scalars())
    assert {f'{r["userId"]}:{odd_course}' for r in fake.enrollments[odd_course] if r["isActive"]} <= ids
    assert {f"{odd_user}:{r['courseId']}" for r in mine if r["isActive"]} <= ids


# ---------------------------------------------------------------- impolite vendors (issue #18)


def read_stream(block: dict, name: str) -> list:
    """Everything one stream of the real connector yields on a first run, in order."""
    cfg = parse_config({"sources": {"absorb": block}})
    log = get_logger("test")
    with connector_class("absorb")(cfg.sources["absorb"], log) as conn:
        stream = next(s for s in conn.streams() if s.name == name)
        return list(stream.read(ReadContext("absorb", name, None, True, None, datetime.now(UTC), log)))


def enrollments_cursor(wh) -> dict | None:
    with wh.engine.connect() as conn:
        return conn.execute(select(sync_state.c.cursor).where(sync_state.c.stream == "enrollments")).scalar()


def real(wh, table) -> int:
    """Rows made from the vendor's records (not stubs that a reference to them made)."""
    return count(wh, table, table.c.row_hash != "")


def started_enrollments(fake) -> list[dict]:
    return [r for r in active_enrollments(fake) if r["status"] != 0 or r["progress"]]


def test_a_vendor_that_ignores_sort_is_still_read_whole(start_vendor, sqlite_warehouse):
    """Absorb ignores _sort=dateEdited: paging by the last dateEdited seen skipped every row
    edited before it that was not on the page read (682 of 1,595 enrollments, `succeeded`).
    The first page out of order is logged and the list is read again by page number; a full
    read then reconciles exactly, and an incremental window loses nothing either."""
    vendor = start_vendor("absorb", learners=60, courses=4, ignore_sort=True)
    fake, wh = vendor.fake, sqlite_warehouse
    vendor.source["options"]["page_size"] = 5
    with capture_logs() as logs:
        result = sync(wh, {"absorb": vendor.source})
    assert result.ok, result.error
    assert real(wh, learners) == len(fake.users) == 60 and real(wh, courses) == 4
    assert real(wh, enrollments) == len(active_enrollments(fake))
    assert real(wh, activity_progress) == sum(len(fake.lesson_rows(r)) for r in started_enrollments(fake))
    for s in result.streams:  # exact: historical rows left out by design, nothing else
        assert s.distinct_read + s.skipped + s.excluded == s.vendor_total, s
    unsorted = [e for e in logs if e["event"] == "absorb.unsorted"]
    assert [e["path"] for e in unsorted][:2] == ["/users", "/courses"] and len(unsorted) == 3
    assert unsorted[2]["path"].endswith("/enrollments")  # once for all the course lists
    assert unsorted[0]["reason"].startswith("Absorb ignores _sort=dateEdited on /users; ")
    assert {e["log_level"] for e in unsorted} == {"warning"}

    saved = enrollments_cursor(wh)["date_edited"]
    changed = fake.change_enrollments(12)  # more than two pages of one course's window...
    rows = [r for rs in fake.enrollments.values() for r in rs if f"{r['userId']}:{r['courseId']}" in changed
            and r["isActive"]]
    for row, edited in zip(rows, sorted((r["dateEdited"] for r in rows), reverse=True), strict=True):
        row["dateEdited"] = edited  # ...stored newest first: out of order on the window's first page
    with capture_logs() as logs:
        again = sync(wh, {"absorb": vendor.source})
    assert again.ok, again.error
    assert sum(e["path"].endswith("/enrollments") for e in logs if e["event"] == "absorb.unsorted") == 1
    start = datetime.fromisoformat(saved.replace("Z", "+00:00")) - timedelta(minutes=10)
    assert f"dateEdited ge datetime'{start:%Y-%m-%dT%H:%M:%SZ}'" in fake.filters  # the window, by page
    with wh.engine.connect() as conn:
        done = set(conn.execute(select(enrollments.c.external_id)
                                .where(enrollments.c.vendor_status == "Complete")).scalars())
    assert set(changed) <= done and len(changed) == 12
    latest = max(r["dateEdited"] for rows in fake.enrollments.values() for r in rows)
    assert enrollments_cursor(wh) == {"date_edited": latest}
    assert count(wh, enrollments, enrollments.c.deleted_at.is_not(None)) == 0


def test_an_unsorted_list_moves_the_cursor_only_past_rows_it_has_read(start_vendor):
    """A checkpoint says every row edited before it is read: over an unsorted list only the
    end of the list can say so."""
    vendor = start_vendor("absorb", learners=40, courses=2, ignore_sort=True)
    vendor.source["options"]["page_size"] = 5
    items = read_stream(vendor.source, "users")
    edited = {u["id"]: u["dateEdited"] for u in vendor.fake.users}
    read: set[str] = set()
    for item in items:
        if isinstance(item, Checkpoint):
            mark = item.cursor["date_edited"]
            assert mark is None or {i for i, d in edited.items() if d < mark} <= read, mark
        else:
            read.add(item.external_id)
    assert read == set(edited)
    assert items[-1] == Checkpoint({"date_edited": max(edited.values())})


def test_a_short_walk_the_sort_guard_cannot_see_fails_and_deletes_nothing(start_vendor, sqlite_warehouse):
    """Pages of one row look sorted whatever the vendor does: the walk's count against
    totalItems is what catches the rows it skipped."""
    vendor = start_vendor("absorb", learners=20, courses=2)
    vendor.source["options"]["lesson_enrollments"] = False
    wh = sqlite_warehouse
    assert sync(wh, {"absorb": vendor.source}).ok
    with wh.engine.connect() as conn:
        before = dict(conn.execute(select(sync_state.c.stream, sync_state.c.cursor)).all())
    vendor.fake.ignore_sort = True
    vendor.source["options"]["page_size"] = 1
    result = sync(wh, {"absorb": vendor.source}, full_refresh=True)
    assert not result.ok
    error = by_stream(result)["users"].error
    assert error.startswith("source 'absorb': read ") and "of the 20 rows Absorb counts (/users); " in error
    assert "nothing was soft-deleted" in error and "\n" not in error
    assert by_stream(result)["users"].result == "failed"
    for table in (learners, courses, enrollments):
        assert count(wh, table, table.c.deleted_at.is_not(None)) == 0
    with wh.engine.connect() as conn:
        assert dict(conn.execute(select(sync_state.c.stream, sync_state.c.cursor)).all()) == before


@pytest.mark.parametrize("shape", ["paged", "array"])
def test_category_names_land_from_a_paged_object_or_a_bare_array(start_vendor, sqlite_warehouse, shape):
    vendor = start_vendor("absorb", learners=10, courses=4, categories_as=shape)
    vendor.source["options"]["lesson_enrollments"] = False
    result = sync(sqlite_warehouse, {"absorb": vendor.source})
    assert result.ok, result.error
    names = {c["id"]: c["name"] for c in vendor.fake.categories}
    expected = {c["id"]: names[c["categoryId"]] for c in vendor.fake.courses}
    with sqlite_warehouse.engine.connect() as conn:
        got = dict(conn.execute(select(courses.c.external_id, courses.c.category)).all())
    assert got == expected and None not in got.values()


@pytest.mark.parametrize("status", ["404", "403"])
def test_a_lookup_that_is_refused_costs_names_not_rows(start_vendor, sqlite_warehouse, status):
    vendor = start_vendor("absorb", learners=10, courses=4, categories_as=status)
    vendor.source["options"]["lesson_enrollments"] = False
    with capture_logs() as logs:
        result = sync(sqlite_warehouse, {"absorb": vendor.source})
    assert result.ok, result.error
    assert real(sqlite_warehouse, courses) == 4 and real(sqlite_warehouse, learners) == 10
    with sqlite_warehouse.engine.connect() as conn:
        assert set(conn.execute(select(courses.c.category)).scalars()) == {None}
        assert None not in set(conn.execute(select(learners.c.department)).scalars())  # departments fine
    unavailable = [e for e in logs if e["event"] == "lookup.unavailable"]
    assert [(e["path"], e["status"], e["log_level"]) for e in unavailable] == [
        ("/categories", int(status), "warning")]
    assert by_stream(result)["courses"].result == "succeeded"


def test_lesson_calls_that_mostly_404_fail_the_stream_and_hold_deletes(start_vendor, sqlite_warehouse):
    """The guessed lesson path answered 404 on every call, read as "no lessons": 0 of 837
    activity rows, `succeeded` (and a full refresh soft-deleted them all). Now the stream
    fails naming options.lesson_path: nothing deleted, the cursor put back."""
    polite = start_vendor("absorb", learners=30, courses=3)
    elsewhere = "/lessonEnrollments/{userId}/{courseId}"
    moved = start_vendor("absorb", learners=30, courses=3, lesson_path=elsewhere)  # same data
    wh = sqlite_warehouse
    assert sync(wh, {"absorb": polite.source}).ok
    lessons = count(wh, activity_progress)
    assert lessons == sum(len(moved.fake.lesson_rows(r)) for r in started_enrollments(moved.fake)) > 0
    before = enrollments_cursor(wh)
    changed = moved.fake.change_enrollments(3)  # the cursor would move on
    result = sync(wh, {"absorb": moved.source}, full_refresh=True)
    assert not result.ok
    enr = by_stream(result)["enrollments"]
    assert enr.result == "failed" and enr.error_class == "IncompleteRead"
    assert enr.error.startswith("source 'absorb': ") and "lesson enrollment calls answered 404 " in enr.error
    assert "(/users/{userId}/enrollments/{courseId}/lessons); set options.lesson_path to " in enr.error
    assert "\n" not in enr.error
    assert count(wh, activity_progress, activity_progress.c.deleted_at.is_not(None)) == 0
    assert count(wh, enrollments, enrollments.c.deleted_at.is_not(None)) == 0
    assert enrollments_cursor(wh) == before
    # the option set to the portal's path: every lesson lands, the changes too
    moved.source["options"]["lesson_path"] = elsewhere
    fixed = sync(wh, {"absorb": moved.source}, full_refresh=True)
    assert fixed.ok, fixed.error
    assert count(wh, activity_progress, activity_progress.c.deleted_at.is_(None)) == sum(
        len(moved.fake.lesson_rows(r)) for r in started_enrollments(moved.fake))
    with wh.engine.connect() as conn:
        done = set(conn.execute(select(enrollments.c.external_id)
                                .where(enrollments.c.vendor_status == "Complete")).scalars())
    assert set(changed) <= done


def test_a_few_lesson_404s_are_enrollments_gone_meanwhile(start_vendor, sqlite_warehouse):
    vendor = start_vendor("absorb", learners=30, courses=3)
    fake = vendor.fake
    gone = {(r["userId"], r["courseId"]) for r in started_enrollments(fake)[:2]}
    real = fake.active
    fake.active = lambda u, c: None if (u, c) in gone else real(u, c)  # removed after listing
    with capture_logs() as logs:
        result = sync(sqlite_warehouse, {"absorb": vendor.source})
    assert result.ok, result.error
    finished = next(e for e in logs if e["event"] == "sync.finished" and "lesson_calls" in e)
    assert finished["lesson_404"] == 2 and finished["lesson_calls"] == len(started_enrollments(fake))
    kept = [r for r in started_enrollments(fake) if (r["userId"], r["courseId"]) not in gone]
    assert count(sqlite_warehouse, activity_progress) == sum(len(fake.lesson_rows(r)) for r in kept)


def test_lesson_path_is_an_option_that_must_name_both_ids():
    from lms_sync.errors import ConfigError

    def config(path: str):
        return parse_config({"sources": {"a": {
            "kind": "absorb", "base_url": "https://rest.myabsorb.com",
            "auth": {"api_key": "k", "username": "u", "password": "p"},
            "options": {"lesson_path": path}}}}, "x.yaml")

    assert config("/v2/{courseId}/lessons/{userId}").sources["a"].options.lesson_path == (
        "/v2/{courseId}/lessons/{userId}")
    for bad in ("/users/{userId}/lessons", "users/{userId}/{courseId}", "/x/{userId}/{courseId}/{other}"):
        with pytest.raises(ConfigError, match="lesson_path"):
            config(bad)
