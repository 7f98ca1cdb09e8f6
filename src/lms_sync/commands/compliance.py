"""The compliance reports of ``lms-sync report`` (not a command of its own):

    lms-sync report --by org-unit [--course TITLE|ID] [--format table|csv|json]
    lms-sync report --expiring 90d [--format table|csv|json]

``--by org-unit`` is the ``compliance`` view: one row per org unit (with its path) and
course, counts of enrollments of the unit's direct members. ``--expiring`` lists, per
person, the certificates (``certificate_expires_at``) and completions (a completed
enrollment's ``expires_at``) that expire from now until the end of the window, from
``learner_progress``. ``--course`` takes a course id (the warehouse's), a vendor course id
or a title (case ignored). Output streams as the progress export does.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any, TextIO

from sqlalchemy import Integer, Select, String, case, column, func, literal, or_, select, table

from lms_sync.commands.identity import table as text_table
from lms_sync.errors import UserError
from lms_sync.warehouse.tables import courses
from lms_sync.warehouse.types import UTCDateTime

_COMPLIANCE_TYPES: dict[str, Any] = {
    "org_unit_path": String, "org_unit_kind": String, "org_unit_name": String,
    "source_id": String, "org_unit_id": Integer, "org_unit_external_id": String,
    "course_id": Integer, "course_external_id": String, "course_title": String,
    "enrolled": Integer, "assigned": Integer, "required": Integer, "completed": Integer,
    "overdue": Integer, "certificates_expiring_90d": Integer,
}
COMPLIANCE_COLUMNS = list(_COMPLIANCE_TYPES)
"""The columns of ``report --by org-unit`` as csv/json, in order."""

compliance = table("compliance", *(column(n, t()) for n, t in _COMPLIANCE_TYPES.items()))

_PROGRESS = table("learner_progress", *(column(n, t()) for n, t in {
    "person_id": Integer, "person_email": String, "person_name": String, "source_id": String,
    "learner_external_id": String, "org_unit_path": String, "course_id": Integer,
    "course_external_id": String, "course_title": String, "status": String,
    "completed_at": UTCDateTime, "expires_at": UTCDateTime, "certificate_expires_at": UTCDateTime,
}.items()))
EXPIRING_COLUMNS = ["person_id", "person_email", "person_name", "source_id", "learner_external_id",
                    "org_unit_path", "course_id", "course_external_id", "course_title", "status",
                    "completed_at", "what", "expires_at"]
"""The columns of ``report --expiring`` as csv/json, in order (``what``: certificate or
completion; ``expires_at``: when it lapses)."""

_WINDOW = re.compile(r"^\s*(\d+)\s*([dw]?)\s*$")


def parse_window(text: str) -> timedelta:
    """``90d``, ``12w`` or ``90`` (days) -> a timedelta; UserError otherwise."""
    m = _WINDOW.match(text or "")
    if not m or int(m.group(1)) == 0:
        raise UserError(f"--expiring {text!r} is not a window; give days or weeks, e.g. 90d or 12w")
    return timedelta(days=int(m.group(1)) * (7 if m.group(2) == "w" else 1))


def compliance_query(course: str | None) -> Select:
    v = compliance.c
    query = select(*(v[c] for c in COMPLIANCE_COLUMNS)).order_by(
        func.lower(v.org_unit_path), v.source_id, v.org_unit_id, func.lower(v.course_title), v.course_id)
    return query.where(_course_filter(v, course)) if course else query


def _course_filter(v: Any, course: str) -> Any:
    """A course by warehouse id, vendor id or title (case ignored)."""
    wanted = [func.lower(v.course_title) == course.strip().lower(), v.course_external_id == course]
    if course.strip().isdigit():
        wanted.append(v.course_id == int(course))
    return or_(*wanted)


def check_course(conn: Any, course: str) -> None:
    """UserError when no live course matches ``--course`` (rather than an empty report)."""
    found = conn.execute(select(func.count()).select_from(courses).where(
        courses.c.deleted_at.is_(None), _course_filter(_CourseColumns, course))).scalar()
    if not found:
        raise UserError(f"--course {course!r} matches no course; give a course id, a vendor "
                        "course id or a title (see lms-sync report --format csv)")


class _CourseColumns:
    """``courses`` columns under the names the compliance view uses (for ``_course_filter``)."""

    course_title = courses.c.title
    course_external_id = courses.c.external_id
    course_id = courses.c.id


def expiring_query(now: datetime, window: timedelta) -> Select:
    """Certificates, and completions without one, that expire in [now, now + window)."""
    v = _PROGRESS.c
    lapses = func.coalesce(v.certificate_expires_at, v.expires_at)
    what = case((v.certificate_expires_at.is_not(None), literal("certificate")), else_=literal("completion"))
    cols = [v[c] for c in EXPIRING_COLUMNS if c not in {"what", "expires_at"}]
    return (
        select(*cols, what.label("what"), lapses.label("expires_at"))
        .where(or_(v.certificate_expires_at.is_not(None), v.status == "completed"),
               lapses >= now, lapses < now + window)
        .order_by(v.person_id.is_(None), v.person_id, v.source_id, lapses, func.lower(v.course_title))
    )


# ---------------------------------------------------------------------- tables (people)

_COMPLIANCE_TABLE = [("org unit", "org_unit_path"), ("kind", "org_unit_kind"), ("source", "source_id"),
                     ("course", "course_title"), ("enrolled", "enrolled"), ("assigned", "assigned"),
                     ("required", "required"), ("completed", "completed"), ("overdue", "overdue"),
                     ("expiring 90d", "certificates_expiring_90d")]
_EXPIRING_TABLE = [("person", "person_email"), ("source", "source_id"), ("org unit", "org_unit_path"),
                   ("course", "course_title"), ("what", "what"), ("expires", "expires_at")]


def write_compliance_table(rows: Iterable[dict[str, Any]], out: TextIO) -> None:
    rows = list(rows)
    _write(out, _COMPLIANCE_TABLE, rows)
    units = len({r["org_unit_id"] for r in rows})
    out.write(f"{len(rows)} row(s): {units} org unit(s); {sum(r['overdue'] for r in rows)} overdue, "
              f"{sum(r['certificates_expiring_90d'] for r in rows)} certificate(s) expiring in 90 days\n")


def write_expiring_table(rows: Iterable[dict[str, Any]], out: TextIO, window: timedelta) -> None:
    rows = [{**r, "expires_at": r["expires_at"].strftime("%Y-%m-%d")} for r in rows]
    _write(out, _EXPIRING_TABLE, rows)
    people = len({r["person_id"] for r in rows})
    out.write(f"{len(rows)} expiring in the next {window.days} days, {people} person(s)\n")


def _write(out: TextIO, cols: list[tuple[str, str]], rows: list[dict[str, Any]]) -> None:
    for line in text_table([h for h, _ in cols], [[r[k] for _, k in cols] for r in rows]):
        out.write(line + "\n")
