"""iSpring Learn: the pure normalization, vendor row -> canonical records (no I/O).

The vendor row models, the status table, and one function per row shape; each row is
validated once and its records are built from that model without validating them again
(:func:`~lms_sync.connectors.construct.construct`; ``raw``: the vendor's row).
Tested value by value (tests/connectors/test_ispring.py); the connector is
``connectors.ispring``, the vendor's fields and guesses are in docs/vendors/ispring.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import AliasChoices, ConfigDict, Field

from lms_sync.canonical import (
    Course,
    CourseKind,
    Enrollment,
    EnrollmentStatus,
    Learner,
    LearnerOrgUnit,
    OrgUnit,
    OrgUnitKind,
)
from lms_sync.canonical import normalize_email as email
from lms_sync.connectors.construct import construct
from lms_sync.connectors.rest import Number, Text, VendorModel, When

STATUS_MAP: dict[str, tuple[EnrollmentStatus, bool | None]] = {
    "not_started": (EnrollmentStatus.NOT_STARTED, None),
    "in_progress": (EnrollmentStatus.IN_PROGRESS, None),
    "pending": (EnrollmentStatus.PENDING, None),
    "complete": (EnrollmentStatus.COMPLETED, None),
    "passed": (EnrollmentStatus.COMPLETED, True),
    "accepted": (EnrollmentStatus.COMPLETED, None),
    "incomplete": (EnrollmentStatus.INCOMPLETE, None),
    "failed": (EnrollmentStatus.FAILED, False),
    "declined": (EnrollmentStatus.DECLINED, None),
}
"""``completionStatus`` -> (status, passed); any other value is an invalid record."""
PROFILE_FIELDS = {"FIRST_NAME": "firstName", "LAST_NAME": "lastName", "EMAIL": "email", "LOGIN": "login"}
SECONDS_PER = {"seconds": 1, "minutes": 60}
"""``options.time_spent_unit`` -> seconds in one unit of ``timeSpent``."""
ACTIVE_STATUS = 1
"""A user's ``status``: 1 active, 3 blocked, 5 terminated; only 1 is ``is_active``."""


class IspringUser(VendorModel):
    userId: str = Field(min_length=1)
    status: int | None = None
    departmentId: Text = None
    login: Text = None
    email: Text = None
    firstName: Text = None
    lastName: Text = None
    fields: Any = None  # <fields><field><name>FIRST_NAME</name><value>…

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> IspringUser:
        """The profile fields read into the names they stand for (the row's own win)."""
        named = {PROFILE_FIELDS[f["name"]]: f.get("value") for f in reversed(row.get("fields") or [])
                 if isinstance(f, dict) and f.get("name") in PROFILE_FIELDS}
        return cls.model_validate({**named, **row})

    def field(self, name: str) -> str | None:
        """The value of the profile field ``name`` (None: not set)."""
        return next((f.get("value") for f in self.fields or []
                     if isinstance(f, dict) and f.get("name") == name), None)


class IspringResult(VendorModel):
    userId: str = Field(min_length=1)
    courseId: str = Field(min_length=1)
    moduleId: str = Field(min_length=1)
    moduleTitle: Text = None
    courseItemId: Text = None
    enrollmentId: Text = None
    accessDate: When = None
    dueDate: When = None
    expirationDate: When = None
    completionDate: When = None
    timeSpent: Number = None
    completionStatus: str
    progress: Number = None
    isOverdue: bool | None = None
    viewsCount: int | None = None
    awardedScore: Number = None
    passingScore: Number = None


class IspringContentItem(VendorModel):
    """A ``<contentItem>`` of ``GET /contents`` (field names read tolerantly: see the docs)."""

    model_config = ConfigDict(extra="allow")
    contentItemId: str = Field(min_length=1, validation_alias=AliasChoices(
        "contentItemId", "contentItemID", "id", "courseId"))
    title: Text = Field(default=None, validation_alias=AliasChoices("title", "name", "courseTitle"))
    type: Text = Field(default=None, validation_alias=AliasChoices("type", "contentType"))

    @property
    def is_course(self) -> bool:
        return (self.type or "course").lower() == "course"


class Department(VendorModel):
    departmentId: str
    name: Text = None
    parentDepartmentId: Text = None


def content_titles(items: list[IspringContentItem]) -> dict[str, str]:
    """Content item id -> title; a course wins over another kind of item with the same id."""
    ordered = sorted(items, key=lambda i: i.is_course)  # courses last, so they win
    return {item.contentItemId: item.title for item in ordered if item.title}


def normalize_user(user: IspringUser, departments: Mapping[str, Department | OrgUnit],
                   raw: dict[str, Any], hr_id_field: str | None = None) -> Learner:
    dept = departments.get(user.departmentId or "")
    names = [n for n in (user.firstName, user.lastName) if n]
    hr_id = user.field(hr_id_field) if hr_id_field else None
    if hr_id is not None and not isinstance(hr_id, str):  # (a field's value is free-form XML)
        raise ValueError(f"profile field {hr_id_field} is not text")
    return construct(
        Learner, external_id=user.userId, email=email(user.email), first_name=user.firstName,
        last_name=user.lastName, display_name=" ".join(names) or user.login, hr_id=hr_id,
        department=dept.name if dept else None, is_active=user.status == ACTIVE_STATUS, raw=raw)


def department_unit(dept: Department, raw: dict[str, Any]) -> OrgUnit:
    return construct(OrgUnit, external_id=dept.departmentId, name=dept.name,
                     kind=OrgUnitKind.DEPARTMENT.value, parent_external_id=dept.parentDepartmentId or None,
                     raw=raw)


def user_records(row: dict[str, Any], departments: Mapping[str, Department | OrgUnit],
                 hr_id_field: str | None = None) -> tuple[Learner, LearnerOrgUnit | None]:
    """A ``<userProfile>`` -> its learner and its membership of its one department (if any)."""
    user = IspringUser.from_row(row)
    member = None if not user.departmentId else construct(
        LearnerOrgUnit, external_id=user.userId, learner_external_id=user.userId,
        org_unit_external_id=user.departmentId, raw={"departmentId": user.departmentId})
    return normalize_user(user, departments, row, hr_id_field), member


def normalize_result(result: IspringResult, raw: dict[str, Any], course_title: str | None = None,
                     time_unit: str = "seconds") -> tuple[Course, Course, Enrollment]:
    """``course_title`` comes from ``GET /contents`` (results name only the module);
    ``time_unit`` is the unit of ``timeSpent`` (no public document states it)."""
    r = result
    if r.completionStatus not in STATUS_MAP:
        raise ValueError(f"unknown completionStatus {r.completionStatus!r}")
    status, passed = STATUS_MAP[r.completionStatus]
    course = construct(Course, external_id=r.courseId, kind=CourseKind.COURSE.value, title=course_title,
                       raw={"courseId": r.courseId})
    module_id = f"{r.courseId}:{r.moduleId}"
    module = construct(Course, external_id=module_id, kind=CourseKind.MODULE.value, title=r.moduleTitle,
                       parent_external_id=r.courseId,
                       raw={k: raw.get(k) for k in ("courseId", "moduleId", "moduleTitle", "courseItemId")})
    key = f"{r.enrollmentId}:{r.moduleId}" if r.enrollmentId else f"{r.userId}:{module_id}"
    enrollment = construct(
        Enrollment, external_id=key, learner_external_id=r.userId, course_external_id=module_id,
        status=status.value, passed=passed, vendor_status=r.completionStatus, progress_pct=r.progress,
        score=r.awardedScore,
        time_spent_seconds=None if r.timeSpent is None else r.timeSpent * SECONDS_PER[time_unit],
        enrolled_at=r.accessDate, completed_at=r.completionDate, due_at=r.dueDate,
        expires_at=r.expirationDate, is_overdue=r.isOverdue, raw=raw)
    return course, module, enrollment
