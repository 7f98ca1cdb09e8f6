"""Sparkwise sessions connector: pure normalization from fixture files, then the real
connector against the sandbox fake over loopback HTTP."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy import func, select

from lms_sync.canonical import CourseKind, EnrollmentStatus
from lms_sync.config import Config
from lms_sync.connectors.sessions import (
    STATUS_RULES,
    SessionsOptions,
    cluster_from_completion,
    describe_error,
    normalize_cluster,
    normalize_completion,
    normalize_module,
    normalize_user,
    slices,
    status_of,
    stub_learner,
    window,
)
from lms_sync.pipeline import run_source, run_sources
from lms_sync.warehouse import state
from lms_sync.warehouse.tables import courses, enrollment_history, enrollments, learners, sync_state
from tests.conftest import at, load_fixture, make_config
from tests.conftest import count_rows as table_count
from tests.connectors.conftest import sync

# ---------------------------------------------------------------- normalization


def test_users_keyed_by_remote_id_else_sparkwise_id():
    john, aino = (normalize_user(u) for u in load("users_page.json")["data"]["items"])
    assert john.external_id == "remote-123"
    assert john.hr_id == "remote-123"
    assert (john.first_name, john.last_name, john.display_name) == ("John", "Doe", "John Doe")
    assert john.is_active is True and john.email is None
    assert john.raw["id"].startswith("73efc9e3")
    assert aino.external_id == "0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9"
    assert aino.hr_id is None and aino.is_active is False
    assert aino.raw["department"] == "Sales"  # unknown fields kept


def test_stub_learner_for_unknown_participant():
    stub = stub_learner("ext-user-999")
    assert (stub.external_id, stub.hr_id, stub.is_active) == ("ext-user-999", "ext-user-999", None)
    assert stub.content_hash() == stub_learner("ext-user-999").content_hash()


def test_cluster_becomes_session_under_its_module():
    first, adhoc = load("clusters.json")["data"]["items"]
    course = normalize_cluster(first)
    assert course.external_id == "e4dba565-5a00-450c-a3ea-3552c42f462c"
    assert course.kind == CourseKind.SESSION
    assert course.title == "Effective Communication"
    assert course.category == "Leadership"
    assert course.description.startswith("Communicate efficiently")
    assert course.duration_minutes == 60
    assert course.parent_external_id == "module:2e1b0aaa-e0e9-4284-babc-b2a8be20a625"
    assert "iframeCode" in course.raw
    module = normalize_module(first)
    assert module.external_id == course.parent_external_id
    assert (module.kind, module.title, module.duration_minutes) == (CourseKind.MODULE,
                                                                     "Effective Communication", 60)
    assert normalize_module(adhoc) is None
    assert normalize_cluster(adhoc).parent_external_id is None


def test_cluster_rebuilt_from_a_completion():
    row = load("completions.json")[0]
    course = normalize_cluster(cluster_from_completion(row))
    assert course.external_id == row["clusterId"]
    assert course.title == "Team Collaboration" and course.kind == CourseKind.SESSION


@pytest.mark.parametrize(("now", "expected"), [
    # after the session: attended / no-show / left early
    ("2024-06-16T00:00:00Z", ["completed", "absent", "absent"]),
    # during it: attended is already final; not visited yet; visited
    ("2024-06-15T14:30:00Z", ["completed", "not_started", "in_progress"]),
])
def test_completion_status_by_time(now, expected):
    rows = load("completions.json")[:3]
    assert [normalize_completion(r, at(now)).status for r in rows] == expected


def test_completion_fields_value_by_value():
    first, _, third, _ = load("completions.json")
    e = normalize_completion(first, at("2024-07-01T00:00:00Z"), "learner-key")
    assert e.external_id == "526dc132-a881-4388-96aa-116db3722d31"
    assert e.learner_external_id == "learner-key"
    assert e.course_external_id == "e4dba565-5a00-450c-a3ea-3552c42f462c"
    assert e.progress_pct == 80
    assert e.time_spent_seconds == 53 * 60
    assert e.started_at == at("2024-06-15T14:02:00Z")
    assert e.last_activity_at == at("2024-06-15T14:55:00Z")
    assert e.completed_at == at("2024-06-15T14:55:00Z")
    assert e.due_at == at("2024-06-15T14:00:00Z")
    assert e.passed is None and e.vendor_status == "attended"
    assert e.raw["hash"] == "abc123def456" and e.raw["sessionScheduledEndAt"] == "2024-06-15T15:00:00Z"
    other = normalize_completion(third, at("2024-07-01T00:00:00Z"))
    assert other.learner_external_id == "ext-user-789"  # no user known: the HR id itself
    assert other.completed_at is None and other.vendor_status == "not_attended"
    assert other.raw["breakoutRoom"] == "B"


def test_invalid_completion_is_rejected():
    with pytest.raises(ValueError):
        normalize_completion(load("completions.json")[3], at("2024-07-01T00:00:00Z"))


@pytest.mark.parametrize("attended", [True, False])
@pytest.mark.parametrize("ended", [True, False])
@pytest.mark.parametrize("visited", [True, False])
def test_status_rule_table(attended, ended, visited):
    expected = ("completed" if attended else "absent" if ended else
                "in_progress" if visited else "not_started")
    assert status_of({"attended": attended, "ended": ended, "visited": visited}) == expected
    assert {status for _, status in STATUS_RULES} <= set(EnrollmentStatus)


def test_describe_error_reads_the_documented_body():
    request = httpx.Request("GET", "http://x/v1/users")
    assert describe_error(httpx.Response(400, json=load("error.json"), request=request)) == "Error message"
    assert describe_error(httpx.Response(502, text="<html>bad gateway", request=request)) is None


def test_window_rules():
    now = at("2026-06-01T12:00:00.750Z")
    opts = SessionsOptions()
    assert window(None, None, now, opts) == (at("2025-06-01T12:00:00Z"), at("2026-06-01T12:00:00Z"))
    assert window({"to": "2026-05-31T00:00:00Z"}, None, now, opts)[0] == at("2026-05-24T00:00:00Z")
    lagless = SessionsOptions(lag_days=0, start_date="2026-01-01")
    assert window(None, None, now, lagless)[0] == at("2026-01-01T00:00:00Z")
    assert window({"to": "2026-05-31T00:00:00Z"}, at("2026-02-01T00:00:00Z"), now, opts)[0] == \
        at("2026-02-01T00:00:00Z")
    start, end = window({"to": "2026-06-01T12:00:00Z"}, None, now, lagless)
    assert start >= end  # a run in the same second: nothing to ask for
    parts = slices(at("2026-01-01T00:00:00Z"), at("2026-03-01T00:00:00Z"), 31)
    assert parts[0] == (at("2026-01-01T00:00:00Z"), at("2026-02-01T00:00:00Z"))
    assert parts[-1][1] == at("2026-03-01T00:00:00Z") and len(parts) == 2
    assert all(lo < hi for lo, hi in parts)
    assert slices(end, start, 31) == []


# ---------------------------------------------------------------- against the fake


def load(name: str):
    return load_fixture("sessions", name)


def by_stream(result) -> dict:
    return {s.stream: s for s in result.streams}


def completions_requests(fake):
    return [w for w in fake.windows if w[0] == fake.paths["completions"]]


def visible(fake):
    """Completions the connector's first run should see: sessions started before now."""
    now = fake.now.strftime("%Y-%m-%dT%H:%M:%SZ")
    cutoff = (fake.now - timedelta(days=365)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return [r for r in fake.completions() if cutoff <= r["sessionScheduledStartAt"] < now]


def test_full_sync(start_vendor, sqlite_warehouse):
    vendor = start_vendor("sessions", learners=40)
    fake = vendor.fake
    result = sync(sqlite_warehouse, {"sessions": vendor.source})
    assert result.ok, result.error
    assert [s.stream for s in result.streams] == ["users", "clusters", "completions"]
    users, rows = fake.users(), visible(fake)
    assert table_count(sqlite_warehouse, learners) == len(users)
    assert table_count(sqlite_warehouse, enrollments) == len(rows)
    assert table_count(sqlite_warehouse, courses, courses.c.kind == "session") == len(fake._clusters)
    with sqlite_warehouse.engine.connect() as conn:
        statuses = set(conn.execute(select(enrollments.c.status)).scalars())
        # every completion's learner is the user's row (named), not a stub
        linked = conn.execute(
            select(learners.c.hr_id, learners.c.first_name, enrollments.c.raw)
            .join(learners, learners.c.id == enrollments.c.learner_id)).all()
        cursor = conn.execute(select(sync_state.c.cursor)
                              .where(sync_state.c.stream == "completions")).scalar()
        parents = conn.execute(select(func.count()).select_from(courses).where(
            courses.c.kind == "session", courses.c.parent_course_id.is_not(None))).scalar()
    assert statuses == {"completed", "absent", "in_progress", "not_started"}
    assert all(hr == raw["remoteUserId"] and first for hr, first, raw in linked)
    assert parents == len(fake._clusters)
    assert at(cursor["to"]) >= fake.now
    assert all(status == 200 for *_, status in fake.windows)
    assert len(completions_requests(fake)) == 12  # 365 days in 31-day slices
    modules = {c["moduleId"] for c in fake._clusters}
    assert {s.stream: (s.vendor_total, s.distinct_read) for s in result.streams} == {
        "users": (len(users), len(users)),  # data.total
        "clusters": (len(fake._clusters) + len(modules),) * 2,  # data.total + the module courses
        "completions": (None, None)}  # a bare array: no total


def test_users_paged_by_total_pages_when_next_is_always_null(start_vendor, sqlite_warehouse):
    """The documented sample only ever shows ``next: null``: totalPages / total decide."""
    vendor = start_vendor("sessions", learners=40, users_next_null=True)
    options = {**vendor.source["options"], "page_size": 4}
    result = sync(sqlite_warehouse, {"s": {**vendor.source, "options": options}})
    assert result.ok, result.error
    users = vendor.fake.users()
    assert len(users) > 8  # three pages at least
    with sqlite_warehouse.engine.connect() as conn:  # as users, not as completions' stubs
        landed = dict(conn.execute(select(learners.c.external_id, learners.c.first_name)).all())
    assert landed == {u["remoteId"] or u["id"]: u["firstName"] for u in users}
    assert vendor.fake.requests["/v1/users"] == -(-len(users) // 4)
    assert result.streams[0].vendor_total == len(users)


def test_windowed_resync_writes_nothing(start_vendor, sqlite_warehouse):
    vendor = start_vendor("sessions", learners=30)
    assert sync(sqlite_warehouse, {"s": vendor.source}).ok
    with sqlite_warehouse.engine.connect() as conn:
        saved = conn.execute(select(sync_state.c.cursor).where(sync_state.c.stream == "completions")).scalar()
    history = table_count(sqlite_warehouse, enrollment_history)
    before = len(vendor.fake.windows)
    second = sync(sqlite_warehouse, {"s": vendor.source})
    assert second.ok, second.error
    assert {s.stream: s.written for s in second.streams} == {"users": 0, "clusters": 0, "completions": 0}
    assert table_count(sqlite_warehouse, enrollment_history) == history
    (path, lo, hi, status), = [w for w in vendor.fake.windows[before:] if "completions" in w[0]]
    assert at(lo) == at(saved["to"]) - timedelta(days=7) and at(hi) > at(lo) and status == 200


def test_changed_completion_updates_one_row_and_adds_history(start_vendor, sqlite_warehouse):
    vendor = start_vendor("sessions", learners=30)
    assert sync(sqlite_warehouse, {"s": vendor.source}).ok
    history = table_count(sqlite_warehouse, enrollment_history)
    changed = vendor.fake.change_completion()
    again = sync(sqlite_warehouse, {"s": vendor.source})
    assert again.ok, again.error
    completions = next(s for s in again.streams if s.stream == "completions")
    assert dict(completions.tables) == {"enrollments": 1, "enrollment_history": 1}
    assert table_count(sqlite_warehouse, enrollment_history) == history + 1
    with sqlite_warehouse.engine.connect() as conn:
        row = conn.execute(select(enrollments).where(enrollments.c.external_id == changed["id"])).one()
    expected = "completed" if changed["attended"] else "absent"
    assert (row.status, row.progress_pct, row.raw["hash"]) == (expected, 100, changed["hash"])


def test_unknown_participant_lands_as_a_stub_learner(start_vendor, sqlite_warehouse, caplog):
    vendor = start_vendor("sessions", learners=30)
    assert sync(sqlite_warehouse, {"s": vendor.source}).ok
    row = vendor.fake.add_unknown_completion("EXT-999")
    with caplog.at_level(logging.WARNING):
        again = sync(sqlite_warehouse, {"s": vendor.source})
    assert again.ok, again.error
    assert any(isinstance(r.msg, dict) and r.msg.get("event") == "learner.unknown"
               and r.msg.get("remote_user_id") == "EXT-999" for r in caplog.records)
    with sqlite_warehouse.engine.connect() as conn:
        learner = conn.execute(select(learners).where(learners.c.external_id == "EXT-999")).one()
        enrollment = conn.execute(select(enrollments).where(enrollments.c.external_id == row["id"])).one()
    assert learner.hr_id == "EXT-999" and learner.row_hash != ""
    assert enrollment.learner_id == learner.id
    third = sync(sqlite_warehouse, {"s": vendor.source})
    assert third.ok and sum(s.written for s in third.streams) == 0


def test_participant_named_by_sparkwise_id_resolves_to_the_users_learner(
        start_vendor, sqlite_warehouse, caplog):
    vendor = start_vendor("sessions", learners=30)
    assert sync(sqlite_warehouse, {"s": vendor.source}).ok
    learners_before = table_count(sqlite_warehouse, learners)
    row = vendor.fake.add_completion_by_sparkwise_id()
    users_path = "/" + vendor.fake.paths["users"].lstrip("/")
    users_read = vendor.fake.request_log.count(("GET", users_path))
    with caplog.at_level(logging.WARNING):
        again = sync(sqlite_warehouse, {"s": vendor.source})
    assert again.ok, again.error
    events = [r.msg.get("event") for r in caplog.records if isinstance(r.msg, dict)]
    assert events.count("participant.by_sparkwise_id") == 1 and "learner.unknown" not in events
    with sqlite_warehouse.engine.connect() as conn:
        learner = conn.execute(select(learners).join(enrollments, enrollments.c.learner_id == learners.c.id)
                               .where(enrollments.c.external_id == row["id"])).one()
    assert learner.external_id == row["remoteId"] and learner.first_name  # the user's row, no stub
    assert table_count(sqlite_warehouse, learners) == learners_before
    # the user list was read twice in that run: by the users stream, then once for the aliases
    reads = vendor.fake.request_log.count(("GET", users_path)) - users_read
    assert reads == 2 * -(-len(vendor.fake.users()) // 200)


def test_full_refresh_rereads_what_the_window_no_longer_covers(start_vendor, sqlite_warehouse):
    vendor = start_vendor("sessions", learners=30)
    assert sync(sqlite_warehouse, {"s": vendor.source}).ok
    now = vendor.fake.now.strftime("%Y-%m-%dT%H:%M:%SZ")
    old = next(r for r in visible(vendor.fake) if r["sessionScheduledStartAt"] <
               (vendor.fake.now - timedelta(days=60)).strftime("%Y-%m-%dT%H:%M:%SZ") < now)
    vendor.fake.change_completion(old["id"])
    windowed = sync(sqlite_warehouse, {"s": vendor.source})
    assert windowed.ok and sum(s.written for s in windowed.streams) == 0  # outside the lag: not seen
    full = sync(sqlite_warehouse, {"s": vendor.source}, full_refresh=True)
    assert full.ok and dict(full.streams[2].tables)["enrollments"] == 1


def test_empty_window_is_never_requested(start_vendor, sqlite_warehouse):
    vendor = start_vendor("sessions", learners=20)
    future = (datetime.now(UTC) + timedelta(days=3)).strftime("%Y-%m-%dT%H:%M:%SZ")
    source = {**vendor.source, "options": {**vendor.source["options"], "start_date": future}}
    result = sync(sqlite_warehouse, {"s": source})
    assert result.ok, result.error
    assert completions_requests(vendor.fake) == []
    # a saved cursor ahead of the clock (skew) with no lag: again nothing to ask for
    source["options"] = {**vendor.source["options"], "lag_days": 0}
    with sqlite_warehouse.engine.begin() as conn:
        state.save_cursor(conn, "s", "completions", {"to": future})
    assert sync(sqlite_warehouse, {"s": source}).ok
    assert completions_requests(vendor.fake) == []
    assert all(status == 200 for *_, status in vendor.fake.windows)


def test_fake_rejects_invalid_windows(start_vendor):
    vendor = start_vendor("sessions", learners=10)
    url = vendor.url + vendor.fake.paths["completions"]
    headers = {"x-api-key": vendor.source["auth"]["api_key"]}
    cases = [{"from": "2026-02-01T00:00:00Z", "to": "2026-02-01T00:00:00Z"},
             {"from": "2026-02-02T00:00:00Z", "to": "2026-02-01T00:00:00Z"},
             {"from": "yesterday", "to": "2026-02-01T00:00:00Z"},
             {"from": "2026-02-01T00:00:00Z"}]
    for params in cases:
        response = httpx.get(url, params=params, headers=headers)
        assert response.status_code == 400
        assert response.json()["success"] is False and response.json()["error"]["message"]
    ok = httpx.get(url, params={"from": "2000-01-01T00:00:00Z", "to": "2100-01-01T00:00:00Z"},
                   headers=headers)
    assert ok.status_code == 200 and len(ok.json()) == len(vendor.fake.completions())
    assert httpx.get(url, params={"from": "2000-01-01T00:00:00Z", "to": "2100-01-01T00:00:00Z"}
                     ).status_code == 401


def test_rejected_api_key_fails_only_its_source(start_vendor, sqlite_warehouse):
    vendor = start_vendor("sessions", learners=20)
    bad = {**vendor.source, "auth": {"api_key": "wrong-key-0123"}}
    cfg: Config = make_config(sqlite_warehouse, {"bad": bad, "good": vendor.source})
    failed, ok = run_sources(sqlite_warehouse.engine, cfg, list(cfg.sources.values()))
    assert ok.ok, ok.error
    assert failed.result == "failed"
    assert "source 'bad'" in failed.error and "credentials rejected" in failed.error
    assert "HTTP 401" in failed.error and "auth" in failed.error
    assert "wrong-key-0123" not in failed.error
    assert [s.stream for s in failed.streams] == ["users", "clusters", "completions"]
    assert table_count(sqlite_warehouse, learners, learners.c.source_id == "good") > 0
    assert table_count(sqlite_warehouse, learners, learners.c.source_id == "bad") == 0


def test_a_401_names_the_guessed_header_and_paths_without_the_key(start_vendor, sqlite_warehouse):
    """Sparkwise publishes neither the key's header nor the paths: a 401 says both are ours."""
    vendor = start_vendor("sessions", learners=20, api_key_header="X-Sparkwise-Token")
    source = {**vendor.source, "options": {}}  # a customer on our guessed defaults
    result = sync(sqlite_warehouse, {"s": source})
    assert not result.ok
    error = by_stream(result)["users"].error
    assert error == (
        "source 's': credentials rejected (HTTP 401 /v1/users); check auth.api_key, then "
        "options.api_key_header (sent: 'x-api-key') and options.paths (users: '/v1/users'): "
        "Sparkwise publishes neither, ours are guesses")
    assert all(s.result == "failed" for s in result.streams)
    assert vendor.fake.api_key not in repr([s.error for s in result.streams])
    assert table_count(sqlite_warehouse, learners) == 0


def test_vendor_error_body_is_shown(start_vendor, sqlite_warehouse):
    vendor = start_vendor("sessions", learners=10)
    options = {**vendor.source["options"], "paths": {"completions": "/v2/completions"}}
    result = sync(sqlite_warehouse, {"s": {**vendor.source, "options": options}})
    assert not result.ok
    assert "Not found: GET /v2/completions" in result.error and "HTTP 404" in result.error


def test_header_name_paths_and_paging_are_options(start_vendor, sqlite_warehouse):
    vendor = start_vendor("sessions", learners=40, api_key_header="X-Sparkwise-Key",
                          paths={"users": "/api/people", "clusters": "/api/clusters"})
    vendor.fake.faults.update({"fail_next": 2, "fail_status": 503, "path_filter": "/api/people"})
    options = {**vendor.source["options"], "page_size": 5}
    result = sync(sqlite_warehouse, {"s": {**vendor.source, "options": options}})
    assert result.ok, result.error
    users = len(vendor.fake.users())
    assert table_count(sqlite_warehouse, learners) == users
    assert vendor.fake.requests["/api/people"] == -(-users // 5) + 2  # pages + the retried 503s


def test_truncated_and_failing_responses_are_retried(start_vendor, sqlite_warehouse):
    vendor = start_vendor("sessions", learners=30)
    vendor.fake.faults.update({"truncate_next": 2, "path_filter": "completions"})
    result = sync(sqlite_warehouse, {"s": vendor.source})
    assert result.ok, result.error
    assert vendor.fake.faults.truncate_next == 0
    assert table_count(sqlite_warehouse, enrollments) == len(visible(vendor.fake))


def test_malformed_completions_array_fails_clearly_and_the_next_run_loses_nothing(
        start_vendor, sqlite_warehouse):
    vendor = start_vendor("sessions", learners=40)
    vendor.fake.faults.update({"garble_next": 1, "path_filter": "completions"})
    # one window, small batches: rows decoded before the bad item are written, the
    # window's cursor is not
    source = {**vendor.source, "options": {**vendor.source["options"], "window_days": 400}}
    cfg = make_config(sqlite_warehouse, {"s": source})
    cfg.warehouse.batch_size = 3
    failed = run_source(sqlite_warehouse.engine, cfg, cfg.sources["s"])
    assert not failed.ok
    assert "the JSON array is malformed" in failed.error and "session-completions" in failed.error
    assert "the next run reads it again" in failed.error  # the fix, on the same line
    assert [s.result for s in failed.streams] == ["succeeded", "succeeded", "failed"]
    assert vendor.fake.faults.garble_next == 0
    with sqlite_warehouse.engine.connect() as conn:
        assert state.load_cursor(conn, "s", "completions") is None  # the window is read again
    assert 0 < table_count(sqlite_warehouse, enrollments) < len(visible(vendor.fake))
    result = run_source(sqlite_warehouse.engine, cfg, cfg.sources["s"])
    assert result.ok, result.error
    assert table_count(sqlite_warehouse, enrollments) == len(visible(vendor.fake))


def test_end_to_end_on_every_warehouse(start_vendor, warehouse):
    vendor = start_vendor("sessions", learners=30)
    assert sync(warehouse, {"sessions": vendor.source}).ok
    again = sync(warehouse, {"sessions": vendor.source})
    assert again.ok and sum(s.written for s in again.streams) == 0
    changed = vendor.fake.change_completion()
    vendor.fake.add_unknown_completion("EXT-E2E")
    third = sync(warehouse, {"sessions": vendor.source})
    assert third.ok, third.error
    assert dict(third.streams[2].tables) == {"learners": 1, "enrollments": 2, "enrollment_history": 2}
    with warehouse.engine.connect() as conn:
        status = conn.execute(select(enrollments.c.status)
                              .where(enrollments.c.external_id == changed["id"])).scalar()
        stub = conn.execute(select(learners.c.hr_id).where(learners.c.external_id == "EXT-E2E")).scalar()
    assert status == ("completed" if changed["attended"] else "absent") and stub == "EXT-E2E"
