"""Absorb's pure normalization (no I/O), tested value by value: the vendor row models (each
row validated once; times aware UTC), the enrollment status table and row -> canonical
records, built from the validated values without validating again (:func:`construct`). Ids:
``<userId>:<courseId>`` (enrollments), ``<userId>:<courseId>:<lessonId>`` (lessons)."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from lms_sync import canonical as cn
from lms_sync.canonical import EnrollmentStatus as S
from lms_sync.canonical import UTCTime
from lms_sync.canonical import normalize_email as email
from lms_sync.connectors.construct import construct
from lms_sync.connectors.fields import percent, timespan_seconds
from lms_sync.connectors.rest import VendorModel

PCT_TOLERANCE = 0.5

STATUS_MAP: dict[int, tuple[str, S, bool | None]] = {
    0: ("NotStarted", S.NOT_STARTED, None), 1: ("InProgress", S.IN_PROGRESS, None),
    2: ("PendingApproval", S.PENDING, None), 3: ("Complete", S.COMPLETED, None),
    4: ("NotComplete", S.INCOMPLETE, None), 5: ("Failed", S.FAILED, False),
    6: ("Declined", S.DECLINED, None), 7: ("PendingEvaluationRequired", S.PENDING, None),
    8: ("OnWaitlist", S.WAITLISTED, None), 9: ("Absent", S.ABSENT, None),
    10: ("NotApplicable", S.NOT_APPLICABLE, None), 11: ("PendingProctor", S.PENDING, None),
    12: ("ReadyForReview", S.PENDING, None),
}
"""Absorb enrollment status -> (vendor name, canonical status, passed): docs/contracts.md, "Warehouse"."""

ACTIVE_STATUS: dict[int, bool] = {0: True, 1: False}
"""User ``activeStatus`` -> is_active (public v2 schemas: 0 Active, 1 Inactive)."""

Opt = str | None  # an optional vendor string


class AbsorbUser(VendorModel):
    id: str = Field(min_length=1)
    username: Opt = None
    firstName: Opt = None
    lastName: Opt = None
    emailAddress: Opt = None
    externalId: Opt = None
    departmentId: Opt = None
    activeStatus: int | None = None
    isActive: bool | None = None  # older payloads (documented on enrollments, not users)
    dateEdited: UTCTime | None = None

    def learner(self, raw: dict[str, Any], departments: dict[str, str] | None = None) -> cn.Learner:
        names = [n for n in (self.firstName, self.lastName) if n]
        active = self.isActive if self.activeStatus is None else ACTIVE_STATUS.get(self.activeStatus)
        return construct(cn.Learner, external_id=self.id, email=email(self.emailAddress),
                         first_name=self.firstName, last_name=self.lastName,
                         display_name=" ".join(names) or self.username,
                         hr_id=(self.externalId or "").strip() or None, is_active=active,
                         department=(departments or {}).get(self.departmentId or ""), raw=raw)

    def membership(self) -> cn.LearnerOrgUnit | None:
        """The user's membership of its one department (None: no department)."""
        return construct(cn.LearnerOrgUnit, external_id=self.id, learner_external_id=self.id,
                         org_unit_external_id=self.departmentId,
                         raw={"departmentId": self.departmentId}) if self.departmentId else None


class AbsorbCourse(VendorModel):
    id: str = Field(min_length=1)
    name: Opt = None
    description: Opt = None
    categoryId: Opt = None
    estimatedDuration: Opt = None
    dateEdited: UTCTime | None = None

    def course(self, raw: dict[str, Any], categories: dict[str, str] | None = None) -> cn.Course:
        seconds = timespan_seconds(self.estimatedDuration, "estimatedDuration")
        return construct(cn.Course, external_id=self.id, kind=cn.CourseKind.COURSE.value, title=self.name,
                         description=self.description, category=(categories or {}).get(self.categoryId or ""),
                         duration_minutes=None if seconds is None else seconds / 60, raw=raw)


class _Progress(VendorModel):
    id: Opt = None
    userId: str = Field(min_length=1)
    courseId: Opt = None
    status: int
    progress: float | None = None
    score: float | None = None
    timeSpent: Opt = None
    timeSpentTicks: int | None = None
    dateStarted: UTCTime | None = None
    dateCompleted: UTCTime | None = None
    dateEdited: UTCTime | None = None

    def progress_fields(self) -> dict[str, Any]:
        if self.status not in STATUS_MAP:
            raise ValueError(f"unknown enrollment status {self.status}")
        name, status, passed = STATUS_MAP[self.status]
        ticks = self.timeSpentTicks
        return dict(status=status.value, passed=passed, vendor_status=name,
                    progress_pct=percent(self.progress, "progress", PCT_TOLERANCE),
                    score=percent(self.score, "score", PCT_TOLERANCE), started_at=self.dateStarted,
                    time_spent_seconds=ticks / 10_000_000 if ticks is not None else
                    timespan_seconds(self.timeSpent, "timeSpent"), completed_at=self.dateCompleted)


class AbsorbEnrollment(_Progress):
    courseId: str = Field(min_length=1)
    isActive: bool = True
    dateAdded: UTCTime | None = None
    dateDue: UTCTime | None = None
    dateExpires: UTCTime | None = None
    certificateId: Opt = None
    credits: float | None = None


class AbsorbLesson(_Progress):
    lessonId: str = Field(min_length=1)
    type: Opt = None
    dateEnrolled: UTCTime | None = None
    lastAttempt: UTCTime | None = None


class AbsorbDepartment(VendorModel):
    id: str = Field(min_length=1)
    name: Opt = None
    parentId: Opt = None


def normalize_user(raw: dict[str, Any], departments: dict[str, str] | None = None) -> cn.Learner:
    return AbsorbUser.model_validate(raw).learner(raw, departments)


def user_department(raw: dict[str, Any]) -> cn.LearnerOrgUnit | None:
    return AbsorbUser.model_validate(raw).membership()


def normalize_course(raw: dict[str, Any], categories: dict[str, str] | None = None) -> cn.Course:
    return AbsorbCourse.model_validate(raw).course(raw, categories)


def normalize_department(raw: dict[str, Any]) -> cn.OrgUnit:
    d = AbsorbDepartment.model_validate(raw)
    return construct(cn.OrgUnit, external_id=d.id, name=d.name, kind=cn.OrgUnitKind.DEPARTMENT.value,
                     parent_external_id=d.parentId or None, raw=raw)


def normalize_enrollment(raw: dict[str, Any]) -> cn.Enrollment:
    e = AbsorbEnrollment.model_validate(raw)
    certificate = e.certificateId or None
    return construct(cn.Enrollment, external_id=f"{e.userId}:{e.courseId}", learner_external_id=e.userId,
                     course_external_id=e.courseId, enrolled_at=e.dateAdded, due_at=e.dateDue,
                     expires_at=e.dateExpires, last_activity_at=e.dateEdited,
                     certificate_id=certificate, credits=e.credits,
                     certificate_expires_at=e.dateExpires if certificate else None,  # [guess]
                     **e.progress_fields(), raw=raw)


def normalize_lesson(raw: dict[str, Any], user_id: str, course_id: str) -> cn.ActivityProgress:
    r = AbsorbLesson.model_validate({"userId": user_id, **raw})
    return construct(
        cn.ActivityProgress, external_id=f"{user_id}:{course_id}:{r.lessonId}", learner_external_id=user_id,
        course_external_id=course_id, enrollment_external_id=f"{user_id}:{course_id}",
        activity_type=(r.type or "lesson").lower(), enrolled_at=r.dateEnrolled,
        last_activity_at=r.lastAttempt or r.dateEdited, **r.progress_fields(), raw=raw)
