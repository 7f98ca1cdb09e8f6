"""iSpring Learn connector: pure normalization and XML parsing from fixture files, then the
real connector against the sandbox fake over loopback HTTP."""

from __future__ import annotations

import logging
import resource
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from lms_sync.canonical import CourseKind
from lms_sync.config import parse_config
from lms_sync.connectors.ispring import XmlRows, describe_error, token_path
from lms_sync.connectors.ispring_records import (
    STATUS_MAP,
    Department,
    IspringContentItem,
    IspringResult,
    IspringUser,
    content_titles,
    department_unit,
    normalize_result,
    normalize_user,
)
from lms_sync.errors import DataError
from lms_sync.pipeline import run_source
from lms_sync.sandbox.server import FakeVendor, SandboxServer
from lms_sync.status import collect_status, read_reported
from lms_sync.warehouse.tables import courses, enrollment_history, enrollments, learners, sync_runs
from tests.conftest import count_rows as count

FIXTURES = Path(__file__).parent.parent / "fixtures" / "ispring"

RESULTS = "/learners/modules/results"


def rows(name: str, tag: str) -> list[dict]:
    return list(XmlRows((FIXTURES / name).read_bytes(), tag))


# ---------------------------------------------------------------- normalization

EXPECTED_STATUS = {  # docs/contracts.md, "Warehouse", ispring row: vendor value -> (status, passed)
    "not_started": ("not_started", None), "in_progress": ("in_progress", None),
    "pending": ("pending", None), "complete": ("completed", None), "passed": ("completed", True),
    "accepted": ("completed", None), "incomplete": ("incomplete", None),
    "failed": ("failed", False), "declined": ("declined", None),
}


@pytest.mark.parametrize("row", rows("results_statuses.xml", "result"), ids=lambda r: r["completionStatus"])
def test_every_completion_status_maps_as_designed(row):
    _, _, enrollment = normalize_result(IspringResult.model_validate(row), row)
    assert (enrollment.status, enrollment.passed) == EXPECTED_STATUS[row["completionStatus"]]
    assert enrollment.vendor_status == row["completionStatus"]


def test_status_table_covers_exactly_the_documented_values():
    assert set(STATUS_MAP) == set(EXPECTED_STATUS)
    assert {r["completionStatus"] for r in rows("results_statuses.xml", "result")} == set(EXPECTED_STATUS)


def test_seed_sample_rows_normalize_value_by_value():
    page = XmlRows((FIXTURES / "results_seed.xml").read_bytes(), "result")
    first, second, third = list(page)
    assert page.next_token == "MmEzZTBiMjAtYmNmYi0xMWU5LTk2ODUtMGE1ODBhZjQwOTVj"

    course, module, e = normalize_result(IspringResult.model_validate(first), first)
    assert (course.external_id, course.kind, course.title) == (
        "f0e7400a-ca31-11e9-b6fc-0a580af40a22", CourseKind.COURSE, None)
    assert module.external_id == "f0e7400a-ca31-11e9-b6fc-0a580af40a22:5a98720f-41e2-11ea-8a66-0a580af40c6f"
    assert (module.kind, module.title, module.parent_external_id) == (
        CourseKind.MODULE, "Course 1", "f0e7400a-ca31-11e9-b6fc-0a580af40a22")
    assert e.external_id == "b9b41af0-f062-11eb-a99d-0242ac190033:5a98720f-41e2-11ea-8a66-0a580af40c6f"
    assert (e.learner_external_id, e.course_external_id) == (
        "114dba08-a75e-11eb-b4e5-0242ac13002a", module.external_id)
    assert (e.status, e.progress_pct, e.time_spent_seconds, e.is_overdue) == ("in_progress", 9.09, 10, False)
    assert e.enrolled_at == datetime(2021, 7, 28, 21, tzinfo=UTC)
    assert (e.due_at, e.expires_at, e.completed_at, e.score) == (None, None, None, None)
    assert e.raw["courseItemId"] == "553964ac-3c5c-11ef-b1c4-02420a200163"

    _, _, e2 = normalize_result(IspringResult.model_validate(second), second)
    assert (e2.progress_pct, e2.is_overdue) == (50, True)
    assert e2.due_at == e2.expires_at == datetime(2021, 7, 29, 21, tzinfo=UTC)

    _, _, e3 = normalize_result(IspringResult.model_validate(third), third)
    assert (e3.status, e3.progress_pct, e3.time_spent_seconds) == ("not_started", None, 0)


def test_dates_are_utc_scores_and_unknown_fields_kept():
    by_status = {r["completionStatus"]: r for r in rows("results_statuses.xml", "result")}
    done = by_status["complete"]
    _, _, complete = normalize_result(IspringResult.model_validate(done), done)
    assert complete.completed_at == datetime(2026, 3, 2, 7, 15, tzinfo=UTC)  # +03:00 -> UTC
    assert complete.enrolled_at == datetime(2026, 2, 1, 7, tzinfo=UTC)
    passed = by_status["passed"]
    _, _, e = normalize_result(IspringResult.model_validate(passed), passed)
    assert (e.score, e.raw["passingScore"], e.completed_at) == (91, "80", datetime(2026, 3, 3, 8, tzinfo=UTC))
    first = by_status["not_started"]
    _, _, e = normalize_result(IspringResult.model_validate(first), first)
    assert e.raw["attemptsCount"] == "2"


def test_unknown_status_is_an_invalid_record():
    row = dict(rows("results_statuses.xml", "result")[0], completionStatus="archived")
    with pytest.raises(ValueError, match="archived"):
        normalize_result(IspringResult.model_validate(row), row)


def test_content_items_give_course_titles():
    page = XmlRows((FIXTURES / "contents.xml").read_bytes(), "contentItem")
    items = [IspringContentItem.model_validate(r) for r in page]
    assert page.next_token == "Yzoz"
    course, track, untitled = items
    assert (course.contentItemId, course.title, course.type, course.is_course) == (
        "f0e7400a-ca31-11e9-b6fc-0a580af40a22", "Охрана труда & Brandschutz", "Course", True)
    assert (track.is_course, untitled.title) == (False, None)
    assert course.model_extra["viewUrl"].startswith("https://myaccount.ispringlearn.com/view/")
    assert content_titles(items) == {
        "f0e7400a-ca31-11e9-b6fc-0a580af40a22": "Охрана труда & Brandschutz",
        "86479c62-4e4a-11e9-9ddf-e6163e60333c": "Sample Simulation - Car Sale Dialog"}
    # the first result of results_seed.xml names the course only through /contents
    first = rows("results_seed.xml", "result")[0]
    course_rec, module, _ = normalize_result(IspringResult.model_validate(first), first,
                                             content_titles(items).get(first["courseId"]))
    assert (course_rec.title, module.title) == ("Охрана труда & Brandschutz", "Course 1")


def test_content_item_field_names_are_read_tolerantly():
    odd = IspringContentItem.model_validate(
        {"id": "c-1", "name": "Première connexion", "contentType": "COURSE"})
    assert (odd.contentItemId, odd.title, odd.is_course) == ("c-1", "Première connexion", True)
    assert IspringContentItem.model_validate({"courseId": "c-2"}).is_course  # no type: a course
    same_id = [IspringContentItem.model_validate({"contentItemId": "x", "title": t, "type": k})
               for t, k in (("Kurs", "course"), ("Pfad", "LearningTrack"))]
    assert content_titles(same_id) == {"x": "Kurs"}
    with pytest.raises(ValueError):
        IspringContentItem.model_validate({"title": "no id"})


def test_users_status_names_department_and_hr_id():
    depts = {r["departmentId"]: Department.model_validate(r) for r in rows("departments.xml", "department")}
    page = XmlRows((FIXTURES / "users.xml").read_bytes(), "userProfile")
    active, blocked, left = (normalize_user(IspringUser.from_row(r), depts, r, "EMPLOYEE_ID") for r in page)
    assert page.next_token == "dToz"
    assert (active.external_id, active.email, active.first_name, active.last_name) == (
        "u-active", "björn.øverli@example.com", "Björn", "Øverli")
    assert (active.display_name, active.department, active.hr_id) == (
        "Björn Øverli", "Vertrieb & Marketing", "E100042")
    assert active.is_active is True
    assert (blocked.is_active, blocked.email, blocked.department, blocked.hr_id) == (
        False, "zoe.celik@example.com", None, None)
    assert (left.is_active, left.first_name, left.display_name) == (False, None, "ahmed")
    assert active.raw["addedDate"] == "2025-03-01T00:00:00+00:00"


def test_department_unit_is_built_from_one_validation_and_keeps_the_vendor_row():
    root, sales = rows("departments.xml", "department")
    unit = department_unit(Department.model_validate(sales), sales)
    assert (unit.external_id, unit.name, unit.parent_external_id) == (
        "d-sales", "Vertrieb & Marketing", "d-root")
    assert unit.raw == sales == {"departmentId": "d-sales", "name": "Vertrieb & Marketing",
                                 "parentDepartmentId": "d-root", "code": "S"}  # the vendor's row
    assert department_unit(Department.model_validate(root), root).parent_external_id is None


# ---------------------------------------------------------------- XML safety and errors


def test_misspelled_next_page_token_is_read():
    page = XmlRows((FIXTURES / "results_misspelled_token.xml").read_bytes(), "result")
    assert list(page) == [] and page.next_token == "cGFnZS0y"


def test_not_well_formed_page_names_source_path_and_page():
    body = (FIXTURES / "results_seed.xml").read_bytes()[:900]
    page = XmlRows(body, "result", source="isp-main", path=RESULTS, page=7)
    with pytest.raises(DataError) as info:
        list(page)
    text = str(info.value)
    assert "isp-main" in text and "page 7" in text and RESULTS in text and "not well-formed" in text


def xxe_body(target: str) -> bytes:
    return (f'<?xml version="1.0"?>\n<!DOCTYPE response [<!ENTITY xxe SYSTEM "{target}">]>\n'
            '<response><results><result><userId>&xxe;</userId><courseId>c</courseId><moduleId>m</moduleId>'
            '<completionStatus>passed</completionStatus></result></results></response>').encode()


def billion_laughs() -> bytes:
    ents = ['<!ENTITY lol0 "lollollollollollollollollollol">']
    ents += [f'<!ENTITY lol{i} "{f"&lol{i - 1};" * 10}">' for i in range(1, 10)]
    return (f'<?xml version="1.0"?>\n<!DOCTYPE response [{"".join(ents)}]>\n'
            '<response><results><result><userId>&lol9;</userId></result></results></response>').encode()


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def test_parser_refuses_external_entities_without_reading_the_file(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("MARKER-7f3a-not-for-you")
    for target in (secret.as_uri(), "file:///etc/passwd"):
        with pytest.raises(DataError, match="DTD") as info:
            list(XmlRows(xxe_body(target), "result", source="isp", path=RESULTS))
        assert "MARKER" not in str(info.value) and "root:" not in str(info.value)
    assert describe_error(httpx.Response(400, content=xxe_body(secret.as_uri()))) is None


def test_parser_fetches_no_network_dtd_or_entity():
    probe = SandboxServer(FakeVendor()).start()  # counts whatever reaches it
    try:
        body = (f'<?xml version="1.0"?>\n<!DOCTYPE response SYSTEM "{probe.url}/evil.dtd" '
                f'[<!ENTITY e SYSTEM "{probe.url}/entity">]>\n<response><results/></response>').encode()
        with pytest.raises(DataError):
            list(XmlRows(body, "result"))
    finally:
        probe.stop()
    assert sum(probe.vendor.requests.values()) == 0


def test_parser_refuses_billion_laughs_without_blowing_memory():
    before = peak_rss_mb()
    with pytest.raises(DataError):
        list(XmlRows(billion_laughs(), "result", source="isp", path=RESULTS))
    assert peak_rss_mb() - before < 100  # expanded, it would be ~3 GB


def test_describe_error_reads_xml_json_and_text_bodies():
    xml = httpx.Response(400, content=(FIXTURES / "error_400.xml").read_bytes())
    assert describe_error(xml) == "BAD_REQUEST: Invalid course id: 00000000-0000-0000-0000-000000000000"
    assert describe_error(httpx.Response(404, text="Not Found\nmore")) == "Not Found"
    assert describe_error(httpx.Response(400, json={"error": "invalid_client"})) == "invalid_client"
    assert describe_error(httpx.Response(500, content=b"")) is None


# ---------------------------------------------------------------- against the sandbox


def run(wh, source: dict, batch_size: int | None = None, **kw):
    block = wh.config_block()
    if batch_size:
        block["batch_size"] = batch_size
    cfg = parse_config({"warehouse": block, "sources": {"isp": source}}, "test-config.yaml")
    return run_source(wh.engine, cfg, cfg.sources["isp"], **kw)


def by_stream(result) -> dict:
    return {s.stream: s for s in result.streams}


@pytest.fixture
def isp(start_vendor):
    vendor = start_vendor("ispring", learners=40)
    vendor.source["options"]["page_size"] = 25
    return vendor


def test_full_sync_then_resync_writes_nothing(isp, warehouse):
    fake, engine = isp.fake, warehouse.engine
    expected = dict(fake.all_results())
    first = run(warehouse, isp.source)
    assert first.ok, first.error
    assert by_stream(first)["results"].read > len(expected)  # enrollments + courses + modules
    assert count(engine, learners) == len(fake.members)
    assert count(engine, enrollments) == len(expected)
    assert fake.token_fetches == 1 and fake.unauthorized == 0  # one token for the whole run
    with engine.connect() as conn:
        statuses = {r.vendor_status for r in conn.execute(select(enrollments.c.vendor_status))}
        assert statuses == set(EXPECTED_STATUS)
        kinds = dict(conn.execute(select(courses.c.kind, func.count()).group_by(courses.c.kind)).all())
        assert kinds["course"] == len({r["courseId"] for r in expected.values()})
        assert kinds["module"] == len({(r["courseId"], r["moduleId"]) for r in expected.values()})
        orphans = conn.execute(select(func.count()).select_from(courses).where(
            courses.c.kind == "module", courses.c.parent_course_id.is_(None))).scalar()
        assert orphans == 0
        people = {r.external_id: r for r in conn.execute(select(learners))}
        terminated = [p for p in fake.members if fake.user_status(p) == 5]
        assert terminated, "the seeded population should have leavers"
        leaver = people[fake.user_id(terminated[0])]
        assert leaver.is_active is False
        leaver_rows = conn.execute(select(func.count()).select_from(enrollments).where(
            enrollments.c.learner_id == leaver.id)).scalar()
        assert leaver_rows == len(fake.person_results(fake.members.index(terminated[0])))
        assert any(not r.first_name.isascii() for r in people.values())
        assert all(r.department for r in people.values())
        titles = dict(conn.execute(select(courses.c.external_id, courses.c.title)
                                   .where(courses.c.kind == "course")).all())
        assert titles == {cid: title for cid, title, _ in fake.catalog if cid in titles}
        assert all(titles.values()) and any(not t.isascii() for t in titles.values())
        modules = conn.execute(select(courses.c.title).where(courses.c.kind == "module")).scalars().all()
        assert all(modules) and set(modules).isdisjoint(titles.values())  # module titles kept
    assert fake.contents_pages == 1  # 9 items, page size 25: read once per run
    second = run(warehouse, isp.source)
    assert second.ok, second.error
    assert {s.stream: s.written for s in second.streams} == {"users": 0, "results": 0}


def test_removed_result_is_soft_deleted_and_changed_result_updates(isp, sqlite_warehouse):
    engine = sqlite_warehouse.engine
    assert run(sqlite_warehouse, isp.source).ok
    gone = isp.fake.remove_results(2)
    changed = isp.fake.change_results(1)
    result = run(sqlite_warehouse, isp.source)
    assert result.ok, result.error
    assert by_stream(result)["results"].deleted == 2
    with engine.connect() as conn:
        deleted = {r.external_id for r in conn.execute(
            select(enrollments.c.external_id).where(enrollments.c.deleted_at.is_not(None)))}
        assert deleted == set(gone)
        row = conn.execute(select(enrollments).where(enrollments.c.external_id == changed[0])).one()
        assert (row.status, row.passed, row.progress_pct) == ("completed", True, 100)
        assert row.vendor_status == "passed"
        history = conn.execute(select(func.count()).select_from(enrollment_history).where(
            enrollment_history.c.enrollment_id == row.id)).scalar()
        assert history == 2


def test_token_expiring_mid_run_is_renewed(isp, sqlite_warehouse):
    isp.fake.expire_tokens_after(3)
    result = run(sqlite_warehouse, isp.source)
    assert result.ok, result.error
    assert isp.fake.unauthorized == 1 and isp.fake.token_fetches == 2
    assert count(sqlite_warehouse.engine, enrollments) == len(dict(isp.fake.all_results()))


def test_wrong_secret_is_one_clear_line_without_the_secret(isp, sqlite_warehouse):
    isp.source["auth"]["client_secret"] = "wrong-secret-value"
    result = run(sqlite_warehouse, isp.source)
    assert not result.ok
    assert "client_secret" in result.error and "Invalid client_id or client_secret" in result.error
    assert "wrong-secret-value" not in result.error
    assert by_stream(result)["results"].error.startswith("not run")


def test_malformed_page_fails_clearly_and_keeps_earlier_batches(isp, sqlite_warehouse):
    isp.source["options"]["page_size"] = 10
    isp.fake.break_results_page(4)
    result = run(sqlite_warehouse, isp.source, batch_size=20)
    assert not result.ok
    results = by_stream(result)["results"]
    assert by_stream(result)["users"].result == "succeeded"
    assert "'isp'" in results.error and "page 4" in results.error and RESULTS in results.error
    assert "not well-formed" in results.error
    kept = count(sqlite_warehouse.engine, enrollments)
    assert 0 < kept < len(dict(isp.fake.all_results()))
    assert count(sqlite_warehouse.engine, courses, courses.c.deleted_at.is_not(None)) == 0
    again = run(sqlite_warehouse, isp.source)  # the vendor recovers: the next run completes
    assert again.ok and count(sqlite_warehouse.engine, enrollments) == len(dict(isp.fake.all_results()))


@pytest.mark.parametrize("hostile", ["xxe", "billion_laughs"])
def test_hostile_xml_from_the_vendor_is_refused(hostile, isp, sqlite_warehouse, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("MARKER-0b1d-not-for-you")
    assert run(sqlite_warehouse, isp.source).ok
    before_rss = peak_rss_mb()
    isp.fake.serve_hostile(xxe_body(secret.as_uri()) if hostile == "xxe" else billion_laughs())
    result = run(sqlite_warehouse, isp.source)
    assert peak_rss_mb() - before_rss < 100
    assert not result.ok
    error = by_stream(result)["results"].error
    assert "page 1" in error and "MARKER" not in error
    with sqlite_warehouse.engine.connect() as conn:
        raws = " ".join(str(r.raw) for r in conn.execute(select(enrollments.c.raw)))
        assert "MARKER" not in raws
        assert count(sqlite_warehouse.engine, enrollments, enrollments.c.deleted_at.is_not(None)) == 0
        runs = conn.execute(select(sync_runs.c.error).where(sync_runs.c.result == "failed")).all()
        assert len(runs) == 1


def test_filters_user_statuses_courses_and_departments(isp, sqlite_warehouse):
    fake, engine = isp.fake, sqlite_warehouse.engine
    course_id = fake.catalog[0][0]
    opts = isp.source["options"]
    opts.update(user_statuses=[1], course_ids=[course_id])
    assert run(sqlite_warehouse, isp.source).ok
    active = {fake.user_id(p) for p in fake.members if fake.user_status(p) == 1}
    with engine.connect() as conn:
        got = conn.execute(select(learners.c.external_id, courses.c.external_id, courses.c.kind)
                           .join(enrollments, enrollments.c.learner_id == learners.c.id)
                           .join(courses, courses.c.id == enrollments.c.course_id)).all()
    assert got and {g[0] for g in got} <= active
    assert {g[1].split(":")[0] for g in got} == {course_id}

    ops, nordic = fake.dept_ids["ops"], fake.dept_ids["ops-n"]
    opts.update(user_statuses=[1, 3, 5], course_ids=[], department_ids=[ops])
    assert run(sqlite_warehouse, isp.source).ok
    scoped = {fake.user_id(p) for p in fake.members if fake.department_of(p) in (ops, nordic)}
    with engine.connect() as conn:
        live = {r.external_id for r in conn.execute(
            select(learners.c.external_id).where(learners.c.deleted_at.is_(None)))}
    assert live == scoped  # sub-department included, others soft-deleted

    opts.update(department_ids=[], course_ids=["00000000-0000-0000-0000-000000000000"])
    result = run(sqlite_warehouse, isp.source)
    assert not result.ok
    assert "HTTP 400" in result.error and "Invalid course id" in result.error


def test_vendor_defaults_to_active_users_only(isp):
    token = httpx.post(isp.url + "/api/v3/token", data={
        "client_id": isp.fake.CLIENT_ID, "client_secret": isp.fake.CLIENT_SECRET,
        "grant_type": "client_credentials"}).json()["access_token"]
    body = httpx.get(isp.url + RESULTS, headers={"Authorization": token}).content  # bare token
    users = {r["userId"] for r in XmlRows(body, "result")}
    active = {isp.fake.user_id(p) for p in isp.fake.members if isp.fake.user_status(p) == 1}
    assert users and users <= active


def test_transient_503s_are_retried(isp, sqlite_warehouse):
    isp.fake.faults.update({"fail_next": 2, "fail_status": 503, "retry_after": 0, "path_filter": RESULTS})
    result = run(sqlite_warehouse, isp.source)
    assert result.ok, result.error
    assert result.http["retries"] == 2


def test_contents_paged_with_small_pages(isp, sqlite_warehouse):
    isp.source["options"]["page_size"] = 2
    result = run(sqlite_warehouse, isp.source)
    assert result.ok, result.error
    assert isp.fake.contents_pages == 5  # 8 courses + 1 learning track, 2 a page
    with sqlite_warehouse.engine.connect() as conn:
        titles = dict(conn.execute(select(courses.c.external_id, courses.c.title)
                                   .where(courses.c.kind == "course")).all())
    catalog = {cid: title for cid, title, _ in isp.fake.catalog}
    assert titles and all(titles[cid] == catalog[cid] for cid in titles)


@pytest.mark.parametrize("status", [403, 404])
def test_contents_refused_still_syncs_without_course_titles(status, isp, sqlite_warehouse, caplog):
    isp.fake.deny_contents(status)
    with caplog.at_level(logging.INFO):
        result = run(sqlite_warehouse, isp.source)
    assert result.ok, result.error
    results = by_stream(result)["results"]
    assert results.skipped == 0
    engine = sqlite_warehouse.engine
    assert count(engine, enrollments) == len(dict(isp.fake.all_results()))
    with engine.connect() as conn:
        kinds = conn.execute(select(courses.c.kind, courses.c.title)).all()
        run_row = conn.execute(select(sync_runs).where(sync_runs.c.stream == "results")).one()
    assert {t for k, t in kinds if k == "course"} == {None}
    assert all(t for k, t in kinds if k == "module")
    assert run_row.result == "succeeded"
    events = [r.msg for r in caplog.records if isinstance(r.msg, dict)]
    warned = [e for e in events if e["event"] == "contents.unavailable"]
    assert len(warned) == 1 and warned[0]["status"] == status and warned[0]["level"] == "warning"
    finished = [e for e in events if e["event"] == "sync.finished" and e["stream"] == "results"]
    assert finished and finished[0]["contents_unavailable"] == 1

    isp.fake.contents_status = None  # permission granted: the next run names the courses
    again = run(sqlite_warehouse, isp.source)
    assert again.ok, again.error
    assert count(engine, courses, courses.c.kind == "course", courses.c.title.is_(None)) == 0


# ---------------------------------------------------------------- no total; user statuses; token URL


def test_no_vendor_total_status_shows_distinct_rows_read_only(isp, sqlite_warehouse):
    result = run(sqlite_warehouse, isp.source)
    assert result.ok, result.error
    streams = by_stream(result)
    expected = {"users": len(isp.fake.members), "results": len(dict(isp.fake.all_results()))}
    assert {s: (streams[s].distinct_read, streams[s].vendor_total) for s in expected} == {
        s: (n, None) for s, n in expected.items()}
    cfg = parse_config({"warehouse": sqlite_warehouse.config_block(), "sources": {"isp": isp.source}},
                       "test-config.yaml")
    rows, _ = collect_status(sqlite_warehouse.engine, cfg)
    assert {r["stream"]: read_reported(r) for r in rows} == {s: f"{n}/-" for s, n in expected.items()}


def test_the_token_url_is_not_doubled_under_a_base_url_path():
    assert token_path("https://x.ispringlearn.com") == "/api/v3/token"
    assert token_path("https://x.ispringlearn.com/api/v3/") == "token"
    assert token_path("https://proxy.example.com/ispring") == "/api/v3/token"


@pytest.mark.parametrize("prefix", ["/api/v3", "/lms/ispring"])
def test_a_base_url_with_a_path_gets_its_token_and_every_row(prefix, start_vendor, sqlite_warehouse):
    vendor = start_vendor("ispring", learners=12, prefix=prefix)
    assert vendor.source["base_url"] == vendor.url + prefix
    result = run(sqlite_warehouse, vendor.source)
    assert result.ok, result.error
    token_url = prefix.removesuffix("/api/v3") + "/api/v3/token"
    assert vendor.fake.requests[token_url] == vendor.fake.token_fetches == 1
    assert [p for p in vendor.fake.requests if "/api/v3/api/v3" in p] == []
    assert count(sqlite_warehouse.engine, enrollments) == len(dict(vendor.fake.all_results()))


def test_a_validating_vendor_gets_statuses_1_and_3_and_leavers_results_land(start_vendor,
                                                                             sqlite_warehouse):
    """The vendor answers 400 to any userStatuses[] but 1 and 3 and files leavers under 3."""
    vendor = start_vendor("ispring", learners=40, strict_user_statuses=True)
    vendor.source["options"]["page_size"] = 25
    fake, engine = vendor.fake, sqlite_warehouse.engine
    result = run(sqlite_warehouse, vendor.source)
    assert result.ok, result.error
    expected = dict(fake.all_results())
    with engine.connect() as conn:
        got = set(conn.execute(select(enrollments.c.external_id)).scalars())
        leavers = {fake.user_id(p) for p in fake.members if fake.user_status(p) == 5}
        landed = set(conn.execute(select(learners.c.external_id).join(
            enrollments, enrollments.c.learner_id == learners.c.id)).scalars())
    assert got == set(expected)
    assert leavers and leavers <= landed

    vendor.source["options"]["user_statuses"] = [1, 2, 3]
    failed = run(sqlite_warehouse, vendor.source)
    assert not failed.ok
    results = by_stream(failed)["results"]
    assert by_stream(failed)["users"].result == "succeeded"
    assert results.error_class == "RequestRejected" and "\n" not in results.error
    assert results.error.startswith("source 'isp': the results endpoint refused userStatuses [1, 2, 3]")
    assert "HTTP 400" in results.error and "set options.user_statuses" in results.error
    assert count(engine, enrollments, enrollments.c.deleted_at.is_not(None)) == 0
    assert count(engine, courses, courses.c.deleted_at.is_not(None)) == 0


def test_leavers_filed_under_5_land_with_user_statuses_1_3_5(start_vendor, sqlite_warehouse):
    """A vendor that keeps leavers apart (5) on the results endpoint: the option brings them."""
    vendor = start_vendor("ispring", learners=40, leaver_status=5)
    vendor.source["options"].update(page_size=25, user_statuses=[1, 3, 5])
    result = run(sqlite_warehouse, vendor.source)
    assert result.ok, result.error
    assert count(sqlite_warehouse.engine, enrollments) == len(dict(vendor.fake.all_results()))


@pytest.mark.parametrize(("unit", "seconds"), [("seconds", 754.0), ("minutes", 754.0 * 60)])
def test_time_spent_unit_is_an_option(unit, seconds):
    row = rows("results_statuses.xml", "result")[0] | {"timeSpent": "754"}
    _, _, enrollment = normalize_result(IspringResult.model_validate(row), row, None, unit)
    assert enrollment.time_spent_seconds == seconds
