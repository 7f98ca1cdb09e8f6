"""``lms-sync report --by org-unit`` / ``--expiring`` and ``identity show`` on the demo sandbox:
the numbers equal a count made here, in Python, from the tables (not the views)."""

from __future__ import annotations

import csv
import io
import json
import sqlite3
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from sqlalchemy import create_engine

from lms_sync.commands import compliance
from lms_sync.commands.identity import _render as render_person
from lms_sync.errors import UserError
from tests.cli_helpers import run_cli

MEMBERS_ENROLLMENTS = """
SELECT u.id, e.course_id, e.assigned, e.required, e.status, e.is_overdue, e.due_at,
       e.certificate_expires_at
FROM enrollments e
JOIN learners l ON l.id = e.learner_id
JOIN courses c ON c.id = e.course_id
JOIN learner_org_units m ON m.learner_id = l.id
JOIN org_units u ON u.id = m.org_unit_id
WHERE e.deleted_at IS NULL AND l.deleted_at IS NULL AND c.deleted_at IS NULL
  AND m.deleted_at IS NULL AND u.deleted_at IS NULL
"""


def test_compliance_reports_on_the_demo_sandbox(tmp_path):
    """One demo run (the slow part) for every report on it."""
    demo = run_demo(tmp_path)
    rows = report_by_org_unit_equals_a_count_over_enrollments(demo)
    report_by_org_unit_for_one_course(demo, rows)
    report_expiring_lists_certificates_and_completions_in_the_window(demo)
    identity_show_lists_the_org_units_of_every_account(demo)


def run_demo(tmp: Path) -> tuple[Path, str, str]:
    """(database, config path, the demo's stdout)."""
    db = tmp / "demo.db"
    proc = run_cli("demo", "--learners", "30", "--db", str(db))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    config = tmp / "config.yaml"
    config.write_text(yaml.safe_dump({"warehouse": {"url": f"sqlite:///{db}"},
                                      "logging": {"format": "json", "level": "WARNING"}}))
    return db, str(config), proc.stdout


def when(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text).replace(tzinfo=UTC) if text else None


def counted(db: Path) -> dict[tuple[int, int], Counter]:
    """(org unit id, course id) -> counts, from the tables."""
    now = datetime.now(UTC)
    out: dict[tuple[int, int], Counter] = {}
    with sqlite3.connect(db) as conn:
        for unit, course, assigned, required, status, overdue, due, cert in conn.execute(MEMBERS_ENROLLMENTS):
            c = out.setdefault((unit, course), Counter())
            c["enrolled"] += 1
            c["assigned"] += assigned == 1
            c["required"] += required == 1
            c["completed"] += status == "completed"
            late = overdue == 1 or (when(due) is not None and when(due) < now)
            c["overdue"] += late and status not in {"completed", "not_applicable", "withdrawn", "expired"}
            soon = cert is not None and now <= when(cert) < now + timedelta(days=90)
            c["certificates_expiring_90d"] += soon
    return out


FIGURES = ("enrolled", "assigned", "required", "completed", "overdue", "certificates_expiring_90d")


def report_by_org_unit_equals_a_count_over_enrollments(demo: tuple[Path, str, str]) -> list[dict]:
    db, config, stdout = demo
    proc = run_cli("report", "--by", "org-unit", "--format", "json", "--config", config)
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    reported = {(r["org_unit_id"], r["course_id"]): Counter({k: r[k] for k in FIGURES}) for r in rows}
    want = counted(db)
    assert reported == {k: Counter({f: v[f] for f in FIGURES}) for k, v in want.items()}
    assert sum(c["overdue"] for c in want.values()) and sum(c["assigned"] for c in want.values())
    assert all(r["org_unit_path"] for r in rows)
    assert any(" / " in r["org_unit_path"] for r in rows)  # department trees (Absorb, iSpring)
    # the demo's own table is the top of the same view
    section = stdout.split("Compliance: most overdue org units and courses", 1)[1].split("\n\n")[0]
    assert len(section.strip().splitlines()) >= 3
    top = max(r["overdue"] for r in rows)
    assert f" {top} " in section.splitlines()[2]
    return rows


def report_by_org_unit_for_one_course(demo: tuple[Path, str, str], everything: list[dict]) -> None:
    db, config, _ = demo
    title = Counter(r["course_title"] for r in everything).most_common(1)[0][0]
    proc = run_cli("report", "--by", "org-unit", "--course", title.upper(), "--format", "csv",
                   "--config", config)
    assert proc.returncode == 0, proc.stderr
    rows = list(csv.DictReader(io.StringIO(proc.stdout)))
    assert [(r["org_unit_id"], r["course_id"]) for r in rows] == [
        (str(r["org_unit_id"]), str(r["course_id"])) for r in everything if r["course_title"] == title]
    table = run_cli("report", "--by", "org-unit", "--course", title, "--config", config).stdout
    assert table.startswith("ORG UNIT") and table.splitlines()[-1].startswith(f"{len(rows)} row(s)")
    engine = create_engine(f"sqlite:///{db}")  # (in-process: a CLI run costs a second of CPU)
    with engine.connect() as conn, pytest.raises(UserError) as missing:
        compliance.check_course(conn, "No such course")
    engine.dispose()
    assert str(missing.value).startswith("--course 'No such course' matches no course; give a course id")


def report_expiring_lists_certificates_and_completions_in_the_window(demo: tuple[Path, str, str]) -> None:
    db, config, _ = demo
    now = datetime.now(UTC)
    proc = run_cli("report", "--expiring", "90d", "--format", "csv", "--config", config)
    assert proc.returncode == 0, proc.stderr
    rows = list(csv.DictReader(io.StringIO(proc.stdout)))
    with sqlite3.connect(db) as conn:
        found = conn.execute(
            "SELECT e.id, e.certificate_expires_at, e.expires_at, e.status FROM enrollments e "
            "JOIN learners l ON l.id = e.learner_id JOIN courses c ON c.id = e.course_id "
            "WHERE e.deleted_at IS NULL AND l.deleted_at IS NULL AND c.deleted_at IS NULL").fetchall()
    want = Counter()
    for _id, cert, expires, status in found:
        lapses = when(cert) or (when(expires) if status == "completed" else None)
        if lapses is not None and now <= lapses < now + timedelta(days=90):
            want["certificate" if cert else "completion"] += 1
    assert want["certificate"] > 0  # Absorb's certificates lapse a year after completion
    assert Counter(r["what"] for r in rows) == want
    persons = [int(r["person_id"]) for r in rows if r["person_id"]]
    assert persons == sorted(persons)  # per person
    assert all(now <= when(r["expires_at"].replace("Z", "")) < now + timedelta(days=90) for r in rows)


def identity_show_lists_the_org_units_of_every_account(demo: tuple[Path, str, str]) -> None:
    db, config, _ = demo
    with sqlite3.connect(db) as conn:
        person, _email = conn.execute(  # someone with org units in two sources or more
            "SELECT p.id, p.primary_email FROM persons p JOIN learners l ON l.person_id = p.id "
            "JOIN learner_org_units m ON m.learner_id = l.id AND m.deleted_at IS NULL "
            "GROUP BY p.id, p.primary_email HAVING COUNT(DISTINCT l.source_id) >= 2 "
            "ORDER BY p.id LIMIT 1").fetchone()
        units = set(conn.execute(
            "SELECT DISTINCT u.source_id, u.external_id FROM org_units u "
            "JOIN learner_org_units m ON m.org_unit_id = u.id JOIN learners l ON l.id = m.learner_id "
            "WHERE l.person_id = ? AND m.deleted_at IS NULL AND u.deleted_at IS NULL "
            "AND l.deleted_at IS NULL", (person,)).fetchall())
    proc = run_cli("identity", "show", str(person), "--format", "json", "--config", config)
    assert proc.returncode == 0, proc.stderr
    shown = json.loads(proc.stdout)[0]["org_units"]
    assert {(u["source_id"], u["external_id"]) for u in shown} == units
    assert len({u["source_id"] for u in shown}) >= 2  # the union over the person's accounts
    table = render_person(json.loads(proc.stdout)[0])  # what `identity show` prints as a table
    assert "\norg units:\n" in table and all(u["path"] in table for u in shown)


@pytest.mark.parametrize(("text", "days"), [("90d", 90), ("90", 90), ("12w", 84), (" 1d ", 1)])
def test_expiring_windows(text, days):
    assert compliance.parse_window(text) == timedelta(days=days)


@pytest.mark.parametrize("text", ["soon", "0d", "-5d", "3m", ""])
def test_an_expiring_window_that_is_not_one_is_a_one_line_error(text):
    with pytest.raises(UserError, match="is not a window; give days or weeks, e.g. 90d or 12w"):
        compliance.parse_window(text)
