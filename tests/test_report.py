"""``lms-sync report``: one person's progress across every source, and the full export."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime

import pytest
import yaml

from lms_sync.canonical import Course, Enrollment, Learner
from lms_sync.commands.report import REPORT_COLUMNS
from lms_sync.config import IdentityConfig
from lms_sync.warehouse import identity
from lms_sync.warehouse.state import ensure_source, now_utc
from lms_sync.warehouse.upsert import BatchWriter
from tests.cli_helpers import run_cli

DONE = datetime(2026, 3, 1, 9, 30, tzinfo=UTC)

DATA = {
    # source: (kind, learners (ext, email, hr id), courses (ext, title),
    #          enrollments (learner, course, status, passed, pct))
    "absorb-main": ("absorb", [("a1", "jane@example.com", "E1"), ("a2", "bob@example.com", "E2")],
                    [("c1", "Fire safety")],
                    [("a1", "c1", "completed", True, 100.0), ("a2", "c1", "in_progress", None, 40.0)]),
    "ispring-eu": ("ispring", [("i1", "JANE@example.com", None)], [("q9", "GDPR basics, 2026")],
                   [("i1", "q9", "failed", False, 100.0)]),
    "udemy-biz": ("udemy", [("u7", "someone@example.com", "e1")], [("l5", "Python")],
                  [("u7", "l5", "not_started", None, 0.0)]),
}


def fill(wh, tmp_path) -> str:
    """DATA written and matched into ``wh``; the path of a config pointing at it."""
    ids: set[int] = set()
    for source, (kind, people, courses, enrollments) in DATA.items():
        with wh.engine.begin() as conn:
            ensure_source(conn, source, kind)
            writer = BatchWriter(conn, source)
            records = [Learner(external_id=e, email=m, hr_id=h, first_name="Jane" if e in {"a1"} else None)
                       for e, m, h in people]
            records += [Course(external_id=c, title=t) for c, t in courses]
            records += [Enrollment(external_id=f"{lr}:{c}", learner_external_id=lr, course_external_id=c,
                                   status=st, passed=ok, progress_pct=pct,
                                   completed_at=DONE if st == "completed" else None)
                        for lr, c, st, ok, pct in enrollments]
            writer.write(records, now_utc())
            ids |= writer.learner_ids
    identity.after_run(wh.engine, IdentityConfig(), ids)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"warehouse": wh.config_block(),
                                    "logging": {"format": "json", "level": "WARNING"}}))
    return str(path)


@pytest.fixture
def progress(sqlite_warehouse, tmp_path):
    return fill(sqlite_warehouse, tmp_path)


def test_the_export_has_the_same_order_on_every_database(warehouse, tmp_path):
    """Rows by person (unmatched learners last), source, title regardless of case."""
    cfg = fill(warehouse, tmp_path)
    with warehouse.engine.begin() as conn:
        BatchWriter(conn, "udemy-biz").write([
            Learner(external_id="u8", email="zoe@example.com"),
            Course(external_id="l1", title="advanced Python"), Course(external_id="l2", title="Zen"),
            Enrollment(external_id="u8:l2", learner_external_id="u8", course_external_id="l2"),
            Enrollment(external_id="u8:l1", learner_external_id="u8", course_external_id="l1"),
        ], now_utc())  # not matched yet: no person
    proc = run_cli("report", "--format", "csv", "--config", cfg)
    assert proc.returncode == 0, proc.stderr
    rows = list(csv.DictReader(io.StringIO(proc.stdout)))
    assert [r["course_title"] for r in rows[-2:]] == ["advanced Python", "Zen"]
    assert all(r["person_id"] for r in rows[:-2]) and not any(r["person_id"] for r in rows[-2:])
    persons = [int(r["person_id"]) for r in rows[:-2]]
    assert persons == sorted(persons)


def test_person_report_as_table_spans_every_source(progress):
    proc = run_cli("report", "--person", " Jane@Example.com ", "--config", progress)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("person ") and "jane@example.com (Jane)" in lines[0]
    assert "absorb-main:a1, ispring-eu:i1, udemy-biz:u7" in lines[0]  # e1 == E1: the same HR id
    header = next(i for i, line in enumerate(lines) if line.startswith("SOURCE"))
    body = lines[header + 1:-1]
    assert [line.split()[0] for line in body] == ["absorb-main", "ispring-eu", "udemy-biz"]
    assert "Fire safety" in body[0] and "completed" in body[0] and "yes" in body[0]
    assert "2026-03-01" in body[0]
    assert "failed" in body[1] and " no " in body[1]
    assert lines[-1] == "3 enrollment(s), 1 completed"
    assert "bob" not in proc.stdout
    assert proc.stderr == ""  # logs would go to stderr, never into the report


def test_csv_export_has_every_row_and_column(progress):
    proc = run_cli("report", "--format", "csv", "--config", progress)
    assert proc.returncode == 0, proc.stderr
    rows = list(csv.DictReader(io.StringIO(proc.stdout)))
    assert list(rows[0]) == REPORT_COLUMNS
    assert len(rows) == 4
    jane = [r for r in rows if r["person_email"] == "jane@example.com"]
    assert {r["source_id"] for r in jane} == set(DATA)
    assert len({r["person_id"] for r in jane}) == 1
    fire = next(r for r in jane if r["course_title"] == "Fire safety")
    assert (fire["status"], fire["passed"], fire["progress_pct"], fire["completed_at"]) == \
        ("completed", "true", "100.0", "2026-03-01T09:30:00Z")
    gdpr = next(r for r in rows if r["course_external_id"] == "q9")
    assert gdpr["course_title"] == "GDPR basics, 2026" and gdpr["passed"] == "false"
    bob = next(r for r in rows if r["learner_external_id"] == "a2")
    assert bob["passed"] == "" and bob["completed_at"] == ""


def test_json_report_for_a_person_id(progress):
    export = json.loads(run_cli("report", "--format", "json", "--config", progress).stdout)
    bob_id = next(r["person_id"] for r in export if r["learner_email"] == "bob@example.com")
    proc = run_cli("report", "--person", str(bob_id), "--format", "json", "--config", progress)
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    assert len(rows) == 1 and set(rows[0]) == set(REPORT_COLUMNS)
    assert rows[0]["person_id"] == bob_id
    assert (rows[0]["status"], rows[0]["passed"], rows[0]["progress_pct"]) == ("in_progress", None, 40.0)
    assert len(export) == 4 and all(r["person_id"] is not None for r in export)


def test_unknown_person_is_one_line_and_exit_2(progress):
    proc = run_cli("report", "--person", "nobody@example.com", "--format", "csv", "--config", progress)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.splitlines() == [
        "lms-sync: error: no person matches 'nobody@example.com'; give an email, a person id or "
        "SOURCE_ID:EXTERNAL_ID of a synced learner"]


def test_csv_cells_a_spreadsheet_would_run_are_quoted_and_the_export_is_utf8(progress, sqlite_warehouse):
    """A title or name starting with = + - @ is a formula in Excel: it gets a leading '.
    The export is UTF-8 even where the console's encoding is cp1252."""
    with sqlite_warehouse.engine.begin() as conn:
        BatchWriter(conn, "udemy-biz").write([
            Learner(external_id="u9", email="ivan@example.com", first_name="=HYPERLINK(\"http://x\")"),
            Course(external_id="l9", title="Охрана труда"), Course(external_id="l8", title="-2+3"),
            Enrollment(external_id="u9:l9", learner_external_id="u9", course_external_id="l9"),
            Enrollment(external_id="u9:l8", learner_external_id="u9", course_external_id="l8",
                       progress_pct=0.0)], now_utc())
    proc = run_cli("report", "--format", "csv", "--config", progress, env={"PYTHONIOENCODING": "cp1252"})
    assert proc.returncode == 0, proc.stderr
    rows = [r for r in csv.DictReader(io.StringIO(proc.stdout)) if r["learner_external_id"] == "u9"]
    assert {r["course_title"] for r in rows} == {"Охрана труда", "'-2+3"}
    assert {r["first_name"] for r in rows} == {"'=HYPERLINK(\"http://x\")"}
    assert {r["progress_pct"] for r in rows} == {"", "0.0"}  # numbers are not text
