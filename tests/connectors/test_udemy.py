"""Udemy Business connector: normalization from fixtures, then the real connector
against the sandbox fake over real sockets."""

from __future__ import annotations

import json
import logging
import threading
from datetime import date
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from lms_sync.canonical import EnrollmentStatus
from lms_sync.connectors import udemy, udemy_records
from lms_sync.warehouse.tables import (
    activity_progress,
    courses,
    enrollment_history,
    enrollments,
    learners,
    stat_snapshots,
)
from tests.conftest import count_rows as count
from tests.connectors.conftest import sync

FIXTURES = Path(__file__).parent.parent / "fixtures" / "udemy"


def rows(name: str) -> list[dict]:
    return json.loads((FIXTURES / name).read_text())["results"]


# --------------------------------------------------------------------------- normalization


def test_course_fields_from_the_catalog_page():
    first, second = (udemy.normalize_course(r) for r in rows("courses-list.json"))
    assert (first.external_id, first.kind, first.title, first.category, first.duration_minutes) == (
        "12345678", "course", "Data Engineering", "Engineering Team", 42.0)
    assert first.description == "<p>Course on Data Engineering</p>"
    assert first.raw["locale"] == {"locale": "en_US"}  # undocumented field kept
    assert (second.title, second.category, second.duration_minutes, second.description) == (
        "Ed Tech Data Engineering Meetup", None, 95.0, None)  # trimmed; "" is no description


@pytest.mark.parametrize(("index", "status", "pct", "completed"), [
    (0, EnrollmentStatus.COMPLETED, 100.0, "2018-05-10T22:44:51+00:00"),  # completion date
    (1, EnrollmentStatus.IN_PROGRESS, 37.5, None),                         # ratio > 0
    (2, EnrollmentStatus.IN_PROGRESS, 0.0, None),                          # start date only
    (3, EnrollmentStatus.NOT_STARTED, 0.0, None),                          # nothing yet
])
def test_enrollment_status_mapping(index, status, pct, completed):
    e = udemy.normalize_enrollment(rows("user-course-activity.json")[index])
    assert e.status == status
    assert e.progress_pct == pct
    assert (e.completed_at.isoformat() if e.completed_at else None) == completed
    assert e.passed is None and e.vendor_status is None


def test_enrollment_keys_dates_and_raw():
    row = rows("user-course-activity.json")[0]
    e = udemy.normalize_enrollment(row)
    assert e.external_id == "josh.obrien@ufb.com|12345678"
    assert (e.learner_external_id, e.course_external_id) == ("josh.obrien@ufb.com", "12345678")
    assert e.enrolled_at.isoformat() == "2018-04-21T07:00:00+00:00"
    assert e.started_at.isoformat() == "2018-04-22T08:30:00+00:00"
    assert e.last_activity_at.isoformat() == "2018-05-10T22:44:51+00:00"
    assert e.time_spent_seconds == 2400
    assert (e.raw["is_assigned"], e.raw["assigned_by"], e.raw["lms_user_id"]) == (
        "Yes", "admin@ufb.com", 4411)
    first_completion = udemy.normalize_enrollment({**row, "course_completion_date": None})
    assert first_completion.status == "completed"
    assert first_completion.completed_at.isoformat() == "2018-05-09T10:00:00+00:00"


def test_learner_from_a_reporting_row():
    josh = udemy.normalize_learner(rows("user-course-activity.json")[0])
    assert (josh.external_id, josh.email, josh.first_name, josh.last_name, josh.hr_id) == (
        "josh.obrien@ufb.com", "josh.obrien@ufb.com", "Josh", "Obrien", "00wYuHIx7")
    assert josh.is_active is True and josh.is_placeholder is False
    assert "course_id" not in josh.raw and josh.raw["user_is_deactivated"] is False
    mei = udemy.normalize_learner(rows("user-course-activity.json")[2])
    assert (mei.hr_id, mei.is_active, mei.display_name) == (None, False, "Mei Nakamura")


def test_anonymized_rows_are_placeholders_of_their_own():
    row = rows("user-course-activity.json")[4]
    assert udemy.is_anonymized(row)
    key = udemy.anon_key("enrollments", row)
    assert key == udemy.anon_key("enrollments", dict(row))  # stable
    other = udemy.anon_key("enrollments", {**row, "course_id": 55555})
    assert key.startswith("anon:") and other != key
    learner = udemy.normalize_learner(row, key)
    assert (learner.external_id, learner.email, learner.hr_id, learner.is_placeholder) == (
        key, None, None, True)
    e = udemy.normalize_enrollment(row, key)
    assert (e.learner_external_id, e.external_id, e.status) == (key, f"{key}|12345678", "in_progress")


def test_progress_items_keys_scores_and_the_swapped_fields():
    lecture, quiz, pending, anon = rows("user-progress.json")
    a = udemy.normalize_progress(lecture)
    b = udemy.normalize_progress(quiz)
    assert a.external_id == "josh.obrien@ufb.com|12345678|lecture:901"
    assert b.external_id == "josh.obrien@ufb.com|12345678|quiz:901"  # same id, other kind
    assert a.enrollment_external_id == b.enrollment_external_id == "josh.obrien@ufb.com|12345678"
    assert (a.activity_type, a.status, a.progress_pct, a.score) == ("lecture", "completed", 100.0, None)
    assert (b.activity_type, b.status, b.score) == ("quiz", "completed", 80.0)
    assert b.completed_at.isoformat() == "2018-04-23T08:45:00+00:00"
    assert a.raw["item_marked_complete"] is True and a.raw["Item_title"] == "Introduction"
    # item_completion_ratio is the % complete (the vendor's table swaps it with a date;
    # docs/vendors/udemy.md, "progress")
    c = udemy.normalize_progress(pending)
    assert (c.status, c.progress_pct, c.score, c.started_at) == ("in_progress", 45.5, None, None)
    key = udemy.anon_key("progress", anon)
    d = udemy.normalize_progress(anon, key)
    assert (d.learner_external_id, d.enrollment_external_id, d.score) == (key, None, 75.0)


@pytest.mark.parametrize(("text", "score"), [
    ("80", 80.0), ("80%", 80.0), (" 7.5 / 10 ", 75.0), ("", None), ("passed", None), (None, None),
])
def test_quiz_final_result_to_score(text, score):
    assert udemy_records._score(text) == score


def test_user_activity_snapshot_series():
    josh, anon = rows("user-activity.json")
    s = udemy.normalize_activity(josh)
    assert (s.metric, s.subject_id, s.group_key, s.subject_title) == (
        "udemy.user_activity", "josh.obrien@ufb.com", "2018-05-21", "Josh Obrien")
    assert s.external_id == "udemy.user_activity|josh.obrien@ufb.com|2018-05-21"
    assert s.figures["num_video_consumed_minutes"] == 365 and s.figures["num_completed_courses"] == 10
    assert "last_date_visit" not in s.figures and s.raw["last_date_visit"] == "2018-05-10T22:44:51Z "
    t = udemy.normalize_activity(anon, udemy.anon_key("activity", anon))
    assert t.subject_id.startswith("anon:") and t.subject_title == "Anonymized User"


def test_vendor_error_body_is_one_readable_line():
    body = (FIXTURES / "error-page-size.json").read_bytes()
    response = httpx.Response(400, content=body, headers={"content-type": "application/json"})
    assert udemy.describe_error(response) == "page_size must be between 1 and 100."


# --------------------------------------------------------------------------- against the fake


def by_stream(result) -> dict:
    return {s.stream: s for s in result.streams}


def test_full_sync_resync_and_one_completion(start_vendor, warehouse):
    """End to end on every warehouse: everything lands, a re-sync writes nothing,
    and a course completed upstream changes exactly that enrollment."""
    vendor = start_vendor("udemy", learners=30, courses=120)
    fake = vendor.fake
    first = sync(warehouse, {"u": vendor.source})
    assert first.ok, first.error
    assert [s.stream for s in first.streams] == ["courses", "enrollments", "progress", "activity"]
    assert count(warehouse, courses) == 120
    assert count(warehouse, enrollments) == len(fake.course_rows)
    assert count(warehouse, activity_progress) == len(fake.progress_rows)
    assert count(warehouse, stat_snapshots) == len(fake.activity_rows)
    assert count(warehouse, enrollment_history) == len(fake.course_rows)
    named = {r["user_email"].strip().lower() for r in fake.course_rows
             if r["user_email"] != "Anonymized User"}
    assert count(warehouse, learners, learners.c.is_placeholder.is_(False)) == len(named)

    second = sync(warehouse, {"u": vendor.source})
    assert second.ok, second.error
    assert {s.stream: s.written for s in second.streams} == dict.fromkeys(by_stream(second), 0)

    email, course_id = fake.incomplete(1)[0]
    fake.complete(email, course_id)
    third = sync(warehouse, {"u": vendor.source})
    assert third.ok, third.error
    assert dict(by_stream(third)["enrollments"].tables) == {"enrollments": 1, "enrollment_history": 1}
    assert by_stream(third)["courses"].written == 0
    key = f"{email.strip().lower()}|{course_id}"
    with warehouse.engine.connect() as conn:
        row = conn.execute(select(enrollments).where(enrollments.c.external_id == key)).one()
        history = conn.execute(select(enrollment_history.c.status)
                               .where(enrollment_history.c.enrollment_id == row.id)
                               .order_by(enrollment_history.c.id)).scalars().all()
    assert (row.status, row.progress_pct) == ("completed", 100)
    assert row.completed_at.isoformat().startswith("2026-12-01T09:00:00")
    assert history[-1] == "completed" and len(history) == 2
    assert count(warehouse, enrollment_history) == len(fake.course_rows) + 1


class Recorder:
    """A second listener (another origin) that records whatever reaches it."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str | None]] = []
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                recorder.requests.append((self.path, self.headers.get("Authorization")))
                body = b'{"count": 0, "next": null, "previous": null, "results": []}'
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def events(caplog, name: str) -> list[dict]:
    return [r.msg for r in caplog.records if isinstance(r.msg, dict) and r.msg.get("event") == name]


def test_next_links_on_another_origin_are_asked_of_the_configured_one(
        start_vendor, sqlite_warehouse, caplog):
    """Udemy's documented example (docs/vendors/udemy.md, "Paging"): next links on
    learning.udemy.com for a call to <org>.udemy.com.
    Every row lands, nothing (no credentials) reaches the other origin, one log line a stream."""
    recorder = Recorder()
    try:
        httpx.get(recorder.url + "/probe")  # the recorder does record what reaches it
        assert recorder.requests == [("/probe", None)]
        recorder.requests.clear()
        # the link carries the page only (as the documented one): page_size and fields[...] are put back
        vendor = start_vendor("udemy", learners=10, courses=60, next_origin=recorder.url,
                              default_fields=True)
        vendor.source["options"]["page_size"] = 10
        with caplog.at_level(logging.INFO):
            result = sync(sqlite_warehouse, {"u": vendor.source})
    finally:
        recorder.close()
    assert result.ok, result.error
    fake = vendor.fake
    assert recorder.requests == []
    assert count(sqlite_warehouse, courses) == 60
    assert count(sqlite_warehouse, enrollments) == len(fake.course_rows)
    assert count(sqlite_warehouse, activity_progress) == len(fake.progress_rows)
    assert count(sqlite_warehouse, stat_snapshots) == len(fake.activity_rows)
    assert fake.requests["/api-2.0/organizations/8888/courses/list/"] == 6  # every page, here
    with sqlite_warehouse.engine.connect() as conn:
        described = conn.execute(select(func.count()).select_from(courses)
                                 .where(courses.c.description.is_not(None))).scalar()
        hr_ids = conn.execute(select(func.count()).select_from(learners)
                              .where(learners.c.hr_id.is_not(None))).scalar()
    assert described == 60  # fields[course]=@all on every page
    assert hr_ids == len({r["user_email"] for r in fake.course_rows if r["user_external_id"]})
    rebased = events(caplog, "http.next_rebased")
    assert sorted(e["stream"] for e in rebased) == ["activity", "courses", "enrollments", "progress"]
    assert {e["origin"] for e in rebased} == {recorder.url}


def test_next_link_outside_the_api_fails_without_sending_credentials(start_vendor, sqlite_warehouse):
    recorder = Recorder()
    try:
        # The recorder does record what reaches it (so the assertion below can fail).
        httpx.get(recorder.url + "/probe", headers={"Authorization": "Basic probe"})
        assert recorder.requests == [("/probe", "Basic probe")]
        recorder.requests.clear()

        vendor = start_vendor("udemy", learners=10, courses=250, next_origin=recorder.url,
                              next_path="/collect/")
        assert sync(sqlite_warehouse, {"u": {**vendor.source, "options": {
            **vendor.source["options"], "page_size": 100}}}).ok is False
        vendor.fake.next_origin = None  # a good run, then a rogue link on the same origin too
        vendor.fake.next_path = None
        assert sync(sqlite_warehouse, {"u": vendor.source}).ok
        vendor.fake.next_path = "/collect/"
        result = sync(sqlite_warehouse, {"u": vendor.source})
    finally:
        recorder.close()
    assert not result.ok
    courses_run = by_stream(result)["courses"]
    assert courses_run.result == "failed" and courses_run.error_class == "DataError"
    assert courses_run.error.startswith("source 'u': refusing a next link outside the API path "
                                        "/api-2.0/organizations/8888/ (/collect/); ")
    assert recorder.requests == []  # not one request, so no Authorization header either
    assert "/collect/" not in vendor.fake.requests
    assert "udemy-client-secret" not in courses_run.error and "\n" not in courses_run.error
    assert count(sqlite_warehouse, courses, courses.c.deleted_at.is_not(None)) == 0  # no soft-delete


def test_reporting_fields_asked_for_land(start_vendor, sqlite_warehouse):
    """A vendor whose default field set leaves out the HR id and the first completion date."""
    vendor = start_vendor("udemy", learners=30, courses=60, default_fields=True)
    result = sync(sqlite_warehouse, {"u": vendor.source})
    assert result.ok, result.error
    fake = vendor.fake
    hr_ids = {r["user_email"].strip().lower(): r["user_external_id"] for r in fake.course_rows
              if r["user_email"] != "Anonymized User"}
    assert sum(1 for v in hr_ids.values() if v) > 10
    with sqlite_warehouse.engine.connect() as conn:
        landed = dict(conn.execute(select(learners.c.external_id, learners.c.hr_id)
                                   .where(learners.c.is_placeholder.is_(False))).all())
        raws = conn.execute(select(enrollments.c.raw)).scalars().all()
        items = conn.execute(select(activity_progress.c.raw)).scalars().all()
        days = conn.execute(select(stat_snapshots.c.raw)).scalars().all()
    assert landed == hr_ids
    assert all("course_first_completion_date" in r for r in raws)
    assert all("user_external_id" in r for r in [*raws, *items, *days])


def test_a_field_class_not_asked_is_warned_about(start_vendor, sqlite_warehouse, caplog):
    vendor = start_vendor("udemy", learners=20, courses=30, default_fields=True)
    vendor.source["options"]["field_classes"] = {"enrollments": ["aggregate_organization_x"]}
    with caplog.at_level(logging.WARNING):
        result = sync(sqlite_warehouse, {"u": vendor.source})
    assert result.ok, result.error
    (warning,) = events(caplog, "udemy.field_class_unasked")
    assert (warning["stream"], warning["row_class"], warning["asked"]) == (
        "enrollments", "user_course_activity", ["aggregate_organization_x"])
    assert "options.field_classes.enrollments" in warning["fix"]
    assert count(sqlite_warehouse, learners, learners.c.hr_id.is_not(None)) == 0  # why it warns


def test_every_stream_reports_the_vendors_count(start_vendor, sqlite_warehouse):
    vendor = start_vendor("udemy", learners=20, courses=45)
    vendor.source["options"]["page_size"] = 20
    result = sync(sqlite_warehouse, {"u": vendor.source})
    assert result.ok, result.error
    fake = vendor.fake
    assert {s.stream: (s.vendor_total, s.distinct_read) for s in result.streams} == {
        "courses": (45, 45), "enrollments": (len(fake.course_rows),) * 2,
        "progress": (len(fake.progress_rows),) * 2, "activity": (len(fake.activity_rows),) * 2}


def test_pages_short_of_the_count_fail_and_delete_nothing(start_vendor, sqlite_warehouse, caplog):
    vendor = start_vendor("udemy", learners=20, courses=45)
    assert sync(sqlite_warehouse, {"u": vendor.source}).ok
    vendor.fake.lose_rows = 1
    with caplog.at_level(logging.ERROR):
        result = sync(sqlite_warehouse, {"u": vendor.source})
    assert not result.ok
    assert all(s.result == "failed" and s.error_class == "IncompleteRead" for s in result.streams)
    assert by_stream(result)["courses"].error.startswith(
        "source 'u': read 44 distinct courses of the 45 the vendor reports")
    assert len(events(caplog, "stream.incomplete")) == 4
    for table in (courses, enrollments, activity_progress):
        assert count(sqlite_warehouse, table, table.c.deleted_at.is_not(None)) == 0


def test_anonymized_rows_kept_one_placeholder_each_and_counted(start_vendor, sqlite_warehouse, caplog):
    vendor = start_vendor("udemy", learners=20, courses=60, anonymized=3)
    with caplog.at_level(logging.INFO):
        result = sync(sqlite_warehouse, {"u": vendor.source})
    assert result.ok, result.error
    fake = vendor.fake
    anon_enrollments = [r for r in fake.course_rows if r["user_email"] == "Anonymized User"]
    anon_items = [r for r in fake.progress_rows if r["user_email"] == "Anonymized User"]
    anon_days = [r for r in fake.activity_rows if r["user_email"] == "Anonymized User"]
    assert len(anon_enrollments) == 6 and anon_items
    with sqlite_warehouse.engine.connect() as conn:
        placeholders = conn.execute(select(learners).where(learners.c.is_placeholder.is_(True))).all()
    assert len(placeholders) == len(anon_enrollments) + len(anon_items)
    assert all(p.email is None and p.hr_id is None for p in placeholders)
    persons = {p.person_id for p in placeholders}
    assert None not in persons and len(persons) == len(placeholders)  # never merged
    with sqlite_warehouse.engine.connect() as conn:
        shared = conn.execute(select(func.count()).select_from(learners)
                              .where(learners.c.person_id.in_(persons),
                                     learners.c.is_placeholder.is_(False))).scalar()
    assert shared == 0
    finished = {r.msg["stream"]: r.msg.get("anonymized") for r in caplog.records
                if isinstance(r.msg, dict) and r.msg.get("event") == "sync.finished"}
    assert finished == {"courses": None, "enrollments": len(anon_enrollments),
                        "progress": len(anon_items), "activity": len(anon_days)}


def test_unknown_fields_are_kept_in_raw(start_vendor, sqlite_warehouse):
    vendor = start_vendor("udemy", learners=20, courses=60)
    assert sync(sqlite_warehouse, {"u": vendor.source}).ok
    with sqlite_warehouse.engine.connect() as conn:
        e = conn.execute(select(enrollments.c.raw).limit(1)).scalar()
        p = conn.execute(select(activity_progress.c.raw).limit(1)).scalar()
        c = conn.execute(select(courses.c.raw).limit(1)).scalar()
        le = conn.execute(select(learners.c.raw)
                          .where(learners.c.is_placeholder.is_(False)).limit(1)).scalar()
    assert {"user_is_deactivated", "lms_user_id", "course_first_completion_date", "is_assigned",
            "assigned_by"} <= e.keys()
    assert "item_marked_complete" in p and "Item_final_result" in p
    assert c["locale"] == "en_US"
    assert {"user_is_deactivated", "lms_user_id"} <= le.keys()


def test_catalog_pages_through_next_links(start_vendor, sqlite_warehouse):
    vendor = start_vendor("udemy", learners=10, courses=230)
    vendor.source["options"]["page_size"] = 20
    result = sync(sqlite_warehouse, {"u": vendor.source})
    assert result.ok, result.error
    assert vendor.fake.requests["/api-2.0/organizations/8888/courses/list/"] == 12
    assert count(sqlite_warehouse, courses) == 230


def test_page_size_over_the_documented_maximum_is_a_config_error():
    from lms_sync.config import parse_config
    from lms_sync.errors import ConfigError

    block = {"kind": "udemy", "base_url": "https://acme.udemy.com",
             "auth": {"client_id": "id", "client_secret": "s3cr3t"},
             "options": {"organization_id": "8888", "page_size": 500}}
    with pytest.raises(ConfigError) as exc:
        parse_config({"sources": {"u": block}}, "c.yaml")
    assert str(exc.value).startswith("Input should be less than or equal to 100 (got 500), "
                                     "c.yaml: sources.u.options.page_size; ")
    assert "\n" not in str(exc.value)
    block["options"]["page_size"] = 100
    assert parse_config({"sources": {"u": block}}, "c.yaml").sources["u"].options.page_size == 100


def test_throttled_requests_wait_and_succeed(start_vendor, sqlite_warehouse):
    vendor = start_vendor("udemy", learners=10, courses=30)
    vendor.fake.faults.update({"fail_next": 2, "fail_status": 429, "retry_after": 0})
    result = sync(sqlite_warehouse, {"u": vendor.source})
    assert result.ok, result.error
    assert result.http["throttled"] == 2 and result.http["retries"] == 2
    assert count(sqlite_warehouse, courses) == 30


def test_wrong_secret_fails_every_stream_without_leaking_it(start_vendor, sqlite_warehouse):
    vendor = start_vendor("udemy", learners=10, courses=30)
    vendor.source["auth"]["client_secret"] = "not-the-secret"
    result = sync(sqlite_warehouse, {"u": vendor.source})
    assert not result.ok
    assert "credentials rejected" in result.error and "Invalid username/password." in repr(
        result.streams[0]._exc.__cause__)
    assert all(s.result == "failed" for s in result.streams)
    assert all("not-the-secret" not in (s.error or "") for s in result.streams)
    assert vendor.fake.seen_auth and vendor.fake.seen_auth[0].startswith("Basic ")


def test_removed_enrollment_soft_deleted_but_not_by_a_backfill(start_vendor, sqlite_warehouse):
    vendor = start_vendor("udemy", learners=20, courses=60)
    fake = vendor.fake
    assert sync(sqlite_warehouse, {"u": vendor.source}).ok
    row = next(r for r in fake.course_rows if r["user_email"] != "Anonymized User")
    key = f"{row['user_email'].strip().lower()}|{row['course_id']}"
    fake.remove(row["user_email"], row["course_id"])

    backfill = {**vendor.source, "options": {**vendor.source["options"], "from_date": "2026-01-01",
                                             "to_date": "2026-12-31"}}
    assert sync(sqlite_warehouse, {"u": backfill}).ok
    assert count(sqlite_warehouse, enrollments, enrollments.c.deleted_at.is_not(None)) == 0

    result = sync(sqlite_warehouse, {"u": vendor.source})
    assert result.ok
    with sqlite_warehouse.engine.connect() as conn:
        gone = conn.execute(select(enrollments.c.external_id)
                            .where(enrollments.c.deleted_at.is_not(None))).scalars().all()
    assert gone == [key]


def test_options_from_yaml_values():
    from lms_sync.config import parse_config
    from lms_sync.errors import ConfigError

    def source(**options):
        return {"sources": {"u": {"kind": "udemy", "base_url": "https://acme.udemy.com",
                                  "auth": {"client_id": "id", "client_secret": "s3cr3t"},
                                  "options": options}}}

    cfg = parse_config(source(organization_id=8888, from_date=date(2026, 1, 1)), "c.yaml")
    options = cfg.sources["u"].options
    assert (options.organization_id, options.page_size, str(options.from_date)) == ("8888", 100, "2026-01-01")
    with pytest.raises(ConfigError, match="organization_id"):
        parse_config(source(), "c.yaml")
    with pytest.raises(ConfigError, match="from_date must not be after to_date"):
        parse_config(source(organization_id="1", from_date="2026-02-01", to_date="2026-01-01"), "c.yaml")
