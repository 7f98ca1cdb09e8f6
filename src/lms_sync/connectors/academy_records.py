"""Monotree academy: the pure normalization, vendor row -> canonical records (no I/O).

The vendor row models, the status and kind tables, and one function per row shape;
each row is validated once and all its records are built from that model. Tested value
by value (tests/connectors/test_academy.py); the connector is ``connectors.academy``,
the vendor's fields and guesses are in docs/vendors/academy.md.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from pydantic import Field

from lms_sync.canonical import (
    Course,
    CourseKind,
    Enrollment,
    EnrollmentStatus,
    Learner,
    LearnerOrgUnit,
    OrgUnit,
    OrgUnitKind,
    Snapshot,
)
from lms_sync.connectors.rest import VendorModel

PLACEHOLDER_TYPES = {"kiosk": True, "bot": True}
"""User ``type`` -> never links to a person (shared device, machine account)."""
NO_RECORD_TYPES = frozenset({"kiosk", "bot", "shadow"})
"""User types the per-user endpoints 404 by design (docs/vendors/academy.md): no part of a 404 wave."""
COURSE_RULES: tuple[tuple[str, EnrollmentStatus, bool | None], ...] = (
    # first truthy field wins; has_passed is also true while awaiting sign-off, so that goes first
    ("awaits_manual_completion", EnrollmentStatus.PENDING, None),
    ("has_passed", EnrollmentStatus.COMPLETED, True),
    ("chapters_completed_count", EnrollmentStatus.IN_PROGRESS, None),
)
GROUP_KINDS: dict[str, OrgUnitKind] = {"department": OrgUnitKind.DEPARTMENT,
                                      "profession": OrgUnitKind.PROFESSION, "custom": OrgUnitKind.GROUP}
"""A user group's ``type`` -> org unit kind; any other type is a group."""
ONBOARDING_ID = "onboarding"
METRICS = {"onboarding": "academy.onboarding", "courses": "academy.course_completion",
           "journeys": "academy.journey_completion", "quiz": "academy.quiz_question"}


class VUser(VendorModel):
    id: int
    name: str | None = None
    email: str | None = None
    type: str | None = None
    groups: list[Any] = []
    hired_at: datetime | None = None
    registered_at: datetime | None = None


class VCourseRow(VendorModel):
    course_id: int
    title: str | None = None
    has_passed: bool = False
    completed_at: datetime | None = None
    chapters_completed_count: int = 0
    awaits_manual_completion: bool = False


class VOnboarding(VendorModel):
    onboarding_completed_at: datetime | None = None
    is_overdue: bool | None = None
    onboarding_days: int | None = None


class VFigures(VendorModel):
    id: int | None = None
    title: str | None = None
    type: str | None = None
    completed: int = Field(ge=0)
    not_completed: int = Field(ge=0)


class VQuestion(VendorModel):
    question_id: int
    body: str | None = None
    respondents: int = Field(ge=0)
    passed: int = Field(ge=0)
    pass_rate: float


# ---------------------------------------------------------------------- normalization (pure)
# One validation per vendor row: a row that makes two records builds both from its model.

def split_name(name: str | None) -> tuple[str | None, str | None]:
    parts = (name or "").strip().rsplit(" ", 1)
    return (parts[0] or None, None) if len(parts) == 1 else (parts[0], parts[1])


def user_records(row: dict[str, Any]) -> tuple[Learner, list[tuple[OrgUnit, LearnerOrgUnit]]]:
    """A listed user -> its learner (department: its group of type department) and its
    groups as (org unit, membership); groups without an id are left out."""
    u = VUser.model_validate(row)
    uid, first_last, groups = str(u.id), split_name(u.name), [g for g in u.groups if isinstance(g, dict)]
    department = next((g.get("name") for g in groups if g.get("type") == "department"), None)
    learner = Learner(external_id=uid, email=u.email, first_name=first_last[0], last_name=first_last[1],
                      display_name=(u.name or "").strip() or None, department=department,
                      is_placeholder=PLACEHOLDER_TYPES.get((u.type or "").lower(), False), raw=row)
    return learner, [
        (OrgUnit(external_id=str(g["id"]), name=g.get("name"), raw=g,
                 kind=GROUP_KINDS.get(str(g.get("type") or "").lower(), OrgUnitKind.GROUP)),
         LearnerOrgUnit(external_id=f"{uid}|{g['id']}", learner_external_id=uid,
                        org_unit_external_id=str(g["id"]), raw={"user_id": u.id, "group_id": g["id"]}))
        for g in groups if g.get("id") not in (None, "")]


def learner_from(row: dict[str, Any]) -> Learner:
    return user_records(row)[0]


def group_records(row: dict[str, Any]) -> list[tuple[OrgUnit, LearnerOrgUnit]]:
    return user_records(row)[1]


def course_record(course_id: object, title: str | None, kind: CourseKind = CourseKind.COURSE) -> Course:
    """Raw holds only id and title, so the aggregate and the per-user rows make equal records."""
    return Course(external_id=str(course_id), kind=kind, title=title,
                  raw={"id": course_id, "title": title})


def _course(kind: str, f: VFigures) -> Course:
    if kind == "courses":
        if f.id is None:
            raise ValueError("a course without an id")
        return course_record(f.id, f.title)
    if f.type == "onboarding":
        return course_record(ONBOARDING_ID, f.title, CourseKind.ONBOARDING)
    return course_record(f"journey:{f.id}", f.title, CourseKind.JOURNEY)


def aggregate_records(kind: str, row: dict[str, Any], group_key: str = "") -> tuple[Course | None, Snapshot]:
    """An onboarding / courses / journeys aggregate row -> (its course or journey, but on a
    group pass and for onboarding; its snapshot, onboarding's without a subject)."""
    f = VFigures.model_validate(row)
    figures: dict[str, Any] = {"completed": f.completed, "not_completed": f.not_completed}
    if f.type is not None:
        figures["type"] = f.type
    done = f.completed + f.not_completed
    snapshot = Snapshot.series(METRICS[kind], None if kind == "onboarding" else f.id, group_key,
                               subject_title="Onboarding" if kind == "onboarding" else f.title,
                               value=round(f.completed * 100 / done, 2) if done else None,
                               figures=figures, raw=row)
    return None if group_key or kind == "onboarding" else _course(kind, f), snapshot


def journey_course(row: dict[str, Any]) -> Course:
    return _course("journeys", VFigures.model_validate(row))


def figures_snapshot(kind: str, row: dict[str, Any], group_key: str = "") -> Snapshot:
    return aggregate_records(kind, row, group_key)[1]


def question_snapshot(quiz_id: int, row: dict[str, Any]) -> Snapshot:
    q = VQuestion.model_validate(row)
    return Snapshot.series(METRICS["quiz"], f"{quiz_id}:{q.question_id}", subject_title=q.body,
                           value=q.pass_rate, raw=row,
                           figures={"quiz_id": quiz_id, "question_id": q.question_id,
                                    "respondents": q.respondents, "passed": q.passed,
                                    "pass_rate": q.pass_rate})


def course_rows(user_id: int, row: dict[str, Any], emitted: set[str]) -> tuple[Course | None, Enrollment]:
    """A user's course row -> (its course unless in ``emitted``, which it then joins; its
    enrollment, by :data:`COURSE_RULES`)."""
    r = VCourseRow.model_validate(row)
    status, passed, why = next(((s, p, f) for f, s, p in COURSE_RULES if getattr(r, f)),
                               (EnrollmentStatus.NOT_STARTED, None, "none"))
    enrollment = Enrollment(
        external_id=f"{user_id}:{r.course_id}", learner_external_id=str(user_id),
        course_external_id=str(r.course_id), status=status, passed=passed,
        progress_pct=100.0 if status == EnrollmentStatus.COMPLETED else None,
        completed_at=r.completed_at, vendor_status=why, assigned=True, raw=row)
    if str(r.course_id) in emitted:
        return None, enrollment
    emitted.add(str(r.course_id))
    return course_record(r.course_id, r.title), enrollment


def course_enrollment(user_id: int, row: dict[str, Any]) -> Enrollment:
    return course_rows(user_id, row, set())[1]


def onboarding_enrollment(user: dict[str, Any], row: dict[str, Any], today: date) -> Enrollment:
    u, o = VUser.model_validate(user), VOnboarding.model_validate(row)
    done, days = o.onboarding_completed_at is not None, o.onboarding_days
    return Enrollment(
        external_id=f"{u.id}:{ONBOARDING_ID}", learner_external_id=str(u.id),
        course_external_id=ONBOARDING_ID,
        status=EnrollmentStatus.COMPLETED if done else EnrollmentStatus.IN_PROGRESS,
        completed_at=o.onboarding_completed_at, is_overdue=o.is_overdue,
        due_at=None if days is None else datetime.combine(today + timedelta(days=days), time(), UTC),
        enrolled_at=u.hired_at or u.registered_at, assigned=True,
        required=True if days is not None else None,  # [guess] docs/vendors/academy.md
        vendor_status="completed" if done else ("overdue" if o.is_overdue else "open"), raw=row)
