"""``lms-sync report``: unified progress from the ``learner_progress`` view.

    lms-sync report --person EMAIL|PERSON_ID|SOURCE_ID:EXTERNAL_ID [--format table|csv|json]
    lms-sync report [--format table|csv|json]          every enrollment of every person
    lms-sync report --by org-unit [--course TITLE|ID]  the compliance matrix (commands/compliance.py)
    lms-sync report --expiring 90d                     certificates and completions expiring

The report goes to stdout (logs stay on stderr). ``csv`` and ``json`` carry
every column of the view (``REPORT_COLUMNS``, in that order) for an HR or LMS
import: times are ISO 8601 UTC (``2026-03-01T09:30:00Z``), booleans
``true``/``false``, empty cells/``null`` for unknown values. ``table`` is for
people: one line per enrollment. Rows are ordered by person, source, course.
An unknown person is one error line and exit status 2.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections.abc import Iterable, Iterator
from datetime import datetime, timedelta
from typing import Any, TextIO

from sqlalchemy import Boolean, Float, Integer, String, column, func, select, table

from lms_sync.cli import EXIT_OK, open_warehouse, setup
from lms_sync.commands import command, compliance
from lms_sync.commands.identity import resolve_person
from lms_sync.warehouse import state
from lms_sync.warehouse.types import UTCDateTime

_TYPES: dict[str, Any] = {
    "enrollment_id": Integer, "person_id": Integer, "person_email": String,
    "person_name": String, "learner_id": Integer, "source_id": String, "source_kind": String,
    "learner_external_id": String, "learner_email": String, "hr_id": String,
    "first_name": String, "last_name": String, "course_id": Integer,
    "course_external_id": String, "course_kind": String, "course_title": String,
    "course_category": String, "status": String, "passed": Boolean, "progress_pct": Float,
    "score": Float, "time_spent_seconds": Float, "enrolled_at": UTCDateTime,
    "started_at": UTCDateTime, "completed_at": UTCDateTime, "due_at": UTCDateTime,
    "expires_at": UTCDateTime, "last_activity_at": UTCDateTime, "is_overdue": Boolean,
    "vendor_status": String, "updated_at": UTCDateTime, "org_unit_path": String,
    "assigned": Boolean, "required": Boolean, "certificate_expires_at": UTCDateTime,
}
REPORT_COLUMNS = list(_TYPES)
"""The columns of ``csv``/``json`` output: the ``learner_progress`` view's, in order."""

learner_progress = table("learner_progress", *(column(n, t()) for n, t in _TYPES.items()))

_TABLE = [("source", "source_id"), ("course", "course_title"), ("kind", "course_kind"),
          ("status", "status"), ("passed", "passed"), ("progress", "progress_pct"),
          ("score", "score"), ("started", "started_at"), ("completed", "completed_at"),
          ("due", "due_at")]


@command
def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("report", parents=[common],
                       help="one person's progress across every source, or an export of all")
    what = p.add_mutually_exclusive_group()
    what.add_argument("--person", metavar="EMAIL|ID|SOURCE_ID:EXTERNAL_ID",
                      help="only this person (default: every person)")
    what.add_argument("--by", choices=["org-unit"],
                      help="the compliance matrix: org units (with their path) by course")
    what.add_argument("--expiring", metavar="WINDOW",
                      help="certificates and completions expiring within WINDOW (90d, 12w), per person")
    p.add_argument("--course", metavar="TITLE|ID", help="with --by org-unit: only this course")
    p.add_argument("--format", choices=["table", "csv", "json"], default="table")
    p.add_argument("--no-migrate", action="store_true", help="do not apply migrations first")
    p.set_defaults(func=cmd_report)


def cmd_report(args: argparse.Namespace) -> int:
    if args.course and not args.by:
        from lms_sync.errors import UserError

        raise UserError("--course goes with --by org-unit; add --by org-unit")
    window = compliance.parse_window(args.expiring) if args.expiring else None
    cfg = setup(args)
    engine = open_warehouse(cfg, migrate=not args.no_migrate)
    if args.by or window:
        _compliance_report(engine, args, window)
        engine.dispose()
        return EXIT_OK
    v = learner_progress.c
    # the same order on every database: unmatched learners (no person) last, titles by
    # lower case (collations differ: PostgreSQL's C puts "Z" before "a", MariaDB ignores case)
    query = select(learner_progress).order_by(v.person_id.is_(None), v.person_id, v.source_id,
                                              func.lower(v.course_title), v.enrollment_id)
    person = None
    if args.person:
        ids = resolve_person(engine, cfg, args.person)
        if len(ids) > 1:
            from lms_sync.errors import UserError

            raise UserError(f"{args.person!r} matches several persons ({', '.join(map(str, ids))}); "
                            "give a person id (see lms-sync identity show)")
        person = ids[0]
        query = query.where(v.person_id == person)
    out = _stdout(args.format)
    try:
        with engine.connect() as conn:
            rows = (dict(r) for r in conn.execution_options(yield_per=1000).execute(query).mappings())
            if args.format == "csv":
                write_csv(rows, out)
            elif args.format == "json":
                write_json(rows, out)
            else:
                if person is not None:
                    out.write(_person_header(conn, person) + "\n")
                write_table(list(rows), out, with_person=person is None)
        out.flush()
    except BrokenPipeError:  # `lms-sync report | head`
        sys.stderr.close()
    engine.dispose()
    return EXIT_OK


def _stdout(fmt: str) -> TextIO:
    out = sys.stdout
    if fmt in {"csv", "json"} and hasattr(out, "reconfigure"):
        # an export is UTF-8 whatever the locale (a cp1252 console failed on the first
        # Cyrillic title, half-way through the file)
        out.reconfigure(encoding="utf-8")
    return out


def _compliance_report(engine: Any, args: argparse.Namespace, window: timedelta | None) -> None:
    """``--by org-unit`` or ``--expiring``: the query, streamed in the asked format."""
    if window is not None:
        query, columns = compliance.expiring_query(state.now_utc(), window), compliance.EXPIRING_COLUMNS
    else:
        query, columns = compliance.compliance_query(args.course), compliance.COMPLIANCE_COLUMNS
    out = _stdout(args.format)
    try:
        with engine.connect() as conn:
            if args.course:
                compliance.check_course(conn, args.course)
            rows = (dict(r) for r in conn.execution_options(yield_per=1000).execute(query).mappings())
            if args.format == "csv":
                write_csv(rows, out, columns)
            elif args.format == "json":
                write_json(rows, out, columns)
            elif window is not None:
                compliance.write_expiring_table(rows, out, window)
            else:
                compliance.write_compliance_table(rows, out)
        out.flush()
    except BrokenPipeError:  # `lms-sync report ... | head`
        sys.stderr.close()


# ---------------------------------------------------------------------- writers


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return _iso(value)
    return str(value)


def _iso(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _csv_cell(value: Any) -> str:
    """A CSV cell; text a spreadsheet would run as a formula (a vendor's or learner's
    ``=HYPERLINK(...)`` as a name or title) gets a leading ``'``, as OWASP advises."""
    text = _text(value)
    if isinstance(value, str) and text.startswith(_FORMULA_START):
        return "'" + text
    return text


def write_csv(rows: Iterable[dict[str, Any]], out: TextIO, columns: list[str] = REPORT_COLUMNS) -> None:
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_csv_cell(row[c]) for c in columns])


def write_json(rows: Iterable[dict[str, Any]], out: TextIO, columns: list[str] = REPORT_COLUMNS) -> None:
    """A JSON array of row objects, written as it is read (exports can be large)."""
    out.write("[")
    for i, row in enumerate(rows):
        item = {c: _iso(row[c]) if isinstance(row[c], datetime) else row[c] for c in columns}
        out.write(("\n" if i == 0 else ",\n") + json.dumps(item, ensure_ascii=False))
    out.write("\n]\n")


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d")
    if isinstance(value, float):
        return f"{value:g}"
    text = str(value)
    return text if len(text) <= 60 else text[:57] + "..."


def write_table(rows: list[dict[str, Any]], out: TextIO, with_person: bool) -> None:
    cols = ([("person", "person_email")] if with_person else []) + _TABLE
    cells = [[_cell(r[key]) for _, key in cols] for r in rows]
    widths = [max([len(h)] + [len(c[i]) for c in cells]) for i, (h, _) in enumerate(cols)]
    lines: Iterator[str] = (
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells)
    out.write("  ".join(h.upper().ljust(w) for (h, _), w in zip(cols, widths, strict=True)).rstrip()
              + "\n")
    for line in lines:
        out.write(line + "\n")
    done = sum(1 for r in rows if r["status"] == "completed")
    out.write(f"{len(rows)} enrollment(s), {done} completed\n")


def _person_header(conn: Any, person_id: int) -> str:
    from lms_sync.warehouse.tables import learners, persons

    p = conn.execute(select(persons.c.primary_email, persons.c.display_name)
                     .where(persons.c.id == person_id)).first()
    accounts = conn.execute(select(learners.c.source_id, learners.c.external_id)
                            .where(learners.c.person_id == person_id)
                            .order_by(learners.c.source_id, learners.c.external_id)).all()
    where = ", ".join(f"{a.source_id}:{a.external_id}" for a in accounts) or "no accounts"
    return (f"person {person_id}: {p.primary_email or '-'} ({p.display_name or 'no name'}); "
            f"accounts: {where}\n")
