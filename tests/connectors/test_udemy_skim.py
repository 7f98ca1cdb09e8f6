"""The page skim (connectors/skim.py) on Udemy's four streams, against the sandbox fake over
real sockets and real warehouses: an unchanged re-sync processes no row and writes none; a
change lands, whatever page it is on; anything that may make the saved pages lie (a failed
run, --full-refresh, other options, another normalization, a result never recorded) means
a real read."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select

from lms_sync.connectors import skim
from lms_sync.sandbox.server import Response
from lms_sync.warehouse.tables import (
    activity_progress,
    courses,
    enrollment_history,
    enrollments,
    learners,
    stream_pages,
    sync_runs,
)
from tests.conftest import Warehouse, _make_warehouse
from tests.conftest import count_rows as count
from tests.connectors.conftest import sync

STREAMS = ["courses", "enrollments", "progress", "activity"]
API = "/api-2.0/organizations/8888/"


@pytest.fixture(params=["sqlite", "postgresql"])
def wh(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Warehouse]:
    yield from _make_warehouse(request.param, tmp_path)


def events(caplog, name: str) -> list[dict]:
    return [r.msg for r in caplog.records if isinstance(r.msg, dict) and r.msg.get("event") == name]


def by_stream(caplog, name: str) -> dict[str, dict]:
    return {e["stream"]: e for e in events(caplog, name)}


def run(wh: Warehouse, source: dict, caplog, **kw):
    """One sync with its log lines only in ``caplog``."""
    caplog.clear()
    with caplog.at_level(logging.INFO):
        result = sync(wh, {"u": source}, **kw)
    assert result.ok, result.error
    return result


def runs(wh: Warehouse, run_id: str) -> dict[str, tuple]:
    with wh.engine.connect() as conn:
        rows = conn.execute(select(sync_runs.c.stream, sync_runs.c.records_read,
                                   sync_runs.c.records_written, sync_runs.c.vendor_total,
                                   sync_runs.c.distinct_read)
                            .where(sync_runs.c.run_id == run_id)).all()
    return {r.stream: tuple(r[1:]) for r in rows}


def records_batched(caplog) -> int:
    """Records that reached a batch: every record a stream made does."""
    return sum(e["records"] for e in events(caplog, "batch.written"))


def test_an_unchanged_resync_processes_nothing_and_reports_the_saved_counts(
        start_vendor, warehouse, caplog):
    vendor = start_vendor("udemy", learners=30, courses=120)
    vendor.source["options"]["page_size"] = 20
    first = run(warehouse, vendor.source, caplog)
    assert records_batched(caplog) == sum(s.read for s in first.streams) > 0
    assert events(caplog, "stream.unchanged") == []
    fetched = dict(vendor.fake.requests)

    second = run(warehouse, vendor.source, caplog)
    unchanged = by_stream(caplog, "stream.unchanged")
    assert sorted(unchanged) == sorted(STREAMS)
    assert records_batched(caplog) == 0  # not one record was made
    assert events(caplog, "stream.changed") == []
    finished = by_stream(caplog, "sync.finished")
    for s in first.streams:
        pages = finished[s.stream]["pages"]
        assert finished[s.stream]["pages_skimmed"] == pages == unchanged[s.stream]["pages"]
        assert unchanged[s.stream]["records"] == s.read
    # every page fetched again, and no more
    assert {p: n - fetched[p] for p, n in vendor.fake.requests.items()} == fetched
    assert runs(warehouse, second.run_id) == {
        stream: (read, 0, total, distinct)
        for stream, (read, _w, total, distinct) in runs(warehouse, first.run_id).items()}
    assert {s.stream: (s.written, s.deleted) for s in second.streams} == dict.fromkeys(
        STREAMS, (0, 0))
    with warehouse.engine.connect() as conn:  # saved again by the unchanged run
        saved = dict(conn.execute(select(stream_pages.c.stream, stream_pages.c.run_id)).all())
    assert saved == dict.fromkeys(STREAMS, second.run_id)

    run(warehouse, vendor.source, caplog)  # and so on, run after run
    assert sorted(by_stream(caplog, "stream.unchanged")) == sorted(STREAMS)


def test_a_row_changed_mid_report_lands_alone_and_a_removed_row_is_soft_deleted(
        start_vendor, wh, caplog):
    vendor = start_vendor("udemy", learners=40, courses=60)
    vendor.source["options"]["page_size"] = 10
    fake = vendor.fake
    run(wh, vendor.source, caplog)
    live = {t: count(wh, t) for t in (learners, courses, enrollments, enrollment_history)}
    pages = -(-len(fake.course_rows) // 10)
    assert pages >= 6

    todo = [(e, c) for e, c in fake.incomplete(len(fake.course_rows))
            if fake.course_rows.index(fake.enrollment(e, c)) >= len(fake.course_rows) // 2]
    email, course_id = todo[0]
    index = fake.course_rows.index(fake.enrollment(email, course_id))
    fake.complete(email, course_id)
    before = fake.requests[API + "analytics/user-course-activity/"]
    result = run(wh, vendor.source, caplog)
    res = {s.stream: s for s in result.streams}

    changed = by_stream(caplog, "stream.changed")["enrollments"]
    assert (changed["page"], changed["restart"]) == (index // 10 + 1, True)
    assert changed["page"] > 1
    assert "courses" in by_stream(caplog, "stream.unchanged")
    assert "enrollments" not in by_stream(caplog, "stream.unchanged")
    # the pages before the change were fetched twice: skimmed, then read in order
    assert fake.requests[API + "analytics/user-course-activity/"] - before == (
        index // 10 + 1 + pages)
    assert dict(res["enrollments"].tables) == {"enrollments": 1, "enrollment_history": 1}
    assert res["enrollments"].read == runs(wh, result.run_id)["enrollments"][0]
    assert res["courses"].written == 0
    key = f"{email.strip().lower()}|{course_id}"
    with wh.engine.connect() as conn:
        status = conn.execute(select(enrollments.c.status)
                              .where(enrollments.c.external_id == key)).scalar()
    assert status == "completed"
    # nothing else (progress items and activity figures follow the completion upstream)
    assert {t: count(wh, t) for t in (learners, courses, enrollments, enrollment_history)} == {
        learners: live[learners], courses: live[courses], enrollments: live[enrollments],
        enrollment_history: live[enrollment_history] + 1}
    assert count(wh, activity_progress) == len(fake.progress_rows)

    gone = next(r for r in fake.course_rows[index + 1:] if r["user_email"] != "Anonymized User")
    gone_key = f"{gone['user_email'].strip().lower()}|{gone['course_id']}"
    fake.remove(gone["user_email"], gone["course_id"])
    result = run(wh, vendor.source, caplog)
    assert by_stream(caplog, "stream.changed")["enrollments"]["page"] == 1  # its count changed
    assert {s.stream: s.deleted for s in result.streams}["enrollments"] == 1
    with wh.engine.connect() as conn:
        deleted = conn.execute(select(enrollments.c.external_id)
                               .where(enrollments.c.deleted_at.is_not(None))).scalars().all()
    assert deleted == [gone_key]
    assert count(wh, enrollments, enrollments.c.deleted_at.is_(None)) == len(fake.course_rows)


def test_a_failed_run_in_between_means_a_real_read(start_vendor, wh, caplog):
    vendor = start_vendor("udemy", learners=30, courses=60)
    vendor.source["options"]["page_size"] = 10
    vendor.source["http"]["max_attempts"] = 1
    fake = vendor.fake
    run(wh, vendor.source, caplog)
    report = fake._report

    def page_3_fails(request, match, attr):
        if attr == "progress_rows" and request.arg("page") == "3":
            return Response.json({"detail": "Server Error (500)"}, 500)
        return report(request, match, attr)

    fake._report = page_3_fails
    caplog.clear()
    failed = sync(wh, {"u": vendor.source})
    assert not failed.ok
    assert {s.stream: s.result for s in failed.streams}["progress"] == "failed"
    fake._report = report

    result = run(wh, vendor.source, caplog)
    assert sorted(by_stream(caplog, "stream.unchanged")) == ["activity", "courses", "enrollments"]
    progress = {s.stream: s for s in result.streams}["progress"]
    assert "pages_skimmed" not in by_stream(caplog, "sync.finished")["progress"]
    assert records_batched(caplog) == progress.read > len(fake.progress_rows)  # and learners
    assert (progress.distinct_read, progress.written) == (len(fake.progress_rows), 0)

    run(wh, vendor.source, caplog)  # that real read was clean: skimmed again
    assert sorted(by_stream(caplog, "stream.unchanged")) == sorted(STREAMS)


def test_full_refresh_never_skims_and_saves_for_the_next_run(start_vendor, wh, caplog):
    vendor = start_vendor("udemy", learners=20, courses=45)
    first = run(wh, vendor.source, caplog)
    refresh = run(wh, vendor.source, caplog, full_refresh=True)
    assert events(caplog, "stream.unchanged") == []
    assert records_batched(caplog) == sum(s.read for s in first.streams)
    assert [s.written for s in refresh.streams] == [0, 0, 0, 0]
    run(wh, vendor.source, caplog)
    assert sorted(by_stream(caplog, "stream.unchanged")) == sorted(STREAMS)


@pytest.mark.parametrize("change", [
    {"field_classes": {"activity": ["aggregate_organization_user_activity", "x"]}},
    {"page_size": 50},
])
def test_other_options_never_skim(start_vendor, sqlite_warehouse, caplog, change):
    """The fake ignores field classes: the pages are the same bytes, the options are not."""
    vendor = start_vendor("udemy", learners=20, courses=45)
    run(sqlite_warehouse, vendor.source, caplog)
    other = {**vendor.source, "options": {**vendor.source["options"], **change}}
    result = run(sqlite_warehouse, other, caplog)
    assert events(caplog, "stream.unchanged") == []
    assert records_batched(caplog) == sum(s.read for s in result.streams)
    run(sqlite_warehouse, other, caplog)
    assert sorted(by_stream(caplog, "stream.unchanged")) == sorted(STREAMS)


def test_another_normalization_version_never_skims(start_vendor, sqlite_warehouse, caplog,
                                                   monkeypatch):
    vendor = start_vendor("udemy", learners=20, courses=45)
    run(sqlite_warehouse, vendor.source, caplog)
    monkeypatch.setattr(skim, "SKIM_VERSION", skim.SKIM_VERSION + 1)
    run(sqlite_warehouse, vendor.source, caplog)
    assert events(caplog, "stream.unchanged") == []
    assert records_batched(caplog) > 0


def test_pages_are_saved_only_with_the_result_of_their_run(start_vendor, sqlite_warehouse, caplog):
    """The run's result cannot be recorded (the warehouse went away): no pages are saved,
    and the next run reads for real."""
    vendor = start_vendor("udemy", learners=20, courses=45)
    engine = sqlite_warehouse.engine
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TRIGGER gone BEFORE UPDATE ON sync_runs WHEN NEW.result != "
                             "'running' BEGIN SELECT RAISE(ABORT, 'warehouse gone'); END")
    assert not sync(sqlite_warehouse, {"u": vendor.source}).ok
    assert count(sqlite_warehouse, courses) == 45  # its rows were written, its result was not
    assert count(sqlite_warehouse, stream_pages) == 0
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP TRIGGER gone")
    run(sqlite_warehouse, vendor.source, caplog)
    assert events(caplog, "stream.unchanged") == []
    assert count(sqlite_warehouse, stream_pages) == 4


def saved_by(wh: Warehouse) -> dict[str, str]:
    with wh.engine.connect() as conn:
        return dict(conn.execute(select(stream_pages.c.stream, stream_pages.c.run_id)).all())


def test_a_date_window_is_not_saved_and_ends_the_skim(start_vendor, sqlite_warehouse, caplog):
    vendor = start_vendor("udemy", learners=20, courses=45)
    first = run(sqlite_warehouse, vendor.source, caplog)
    window = {**vendor.source, "options": {**vendor.source["options"], "from_date": "2026-01-01"}}
    backfill = run(sqlite_warehouse, window, caplog)
    assert events(caplog, "stream.unchanged") == []
    # a partial read saves nothing (courses has no window: a whole read, saved)
    assert saved_by(sqlite_warehouse) == {**dict.fromkeys(STREAMS, first.run_id),
                                          "courses": backfill.run_id}
    run(sqlite_warehouse, vendor.source, caplog)  # runs since, other options: a real read
    assert events(caplog, "stream.unchanged") == []
    run(sqlite_warehouse, vendor.source, caplog)
    assert sorted(by_stream(caplog, "stream.unchanged")) == sorted(STREAMS)


def test_since_never_skims_nor_saves(start_vendor, sqlite_warehouse, caplog):
    vendor = start_vendor("udemy", learners=20, courses=45)
    first = run(sqlite_warehouse, vendor.source, caplog)
    run(sqlite_warehouse, vendor.source, caplog, since=datetime(2026, 1, 1, tzinfo=UTC))
    assert events(caplog, "stream.unchanged") == []
    assert saved_by(sqlite_warehouse) == dict.fromkeys(STREAMS, first.run_id)
    run(sqlite_warehouse, vendor.source, caplog)  # the --since run came after: a real read
    assert events(caplog, "stream.unchanged") == []
