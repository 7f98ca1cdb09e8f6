"""Canonical records: what every connector yields and the warehouse stores.

A connector maps its vendor's shapes to these models (pure functions, no I/O).
Records point at each other by the vendor's ids (``learner_external_id``...),
never by warehouse ids: the warehouse resolves them when it writes a batch.
``raw`` keeps the vendor record as JSON for audit and re-normalizing.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any, ClassVar, overload

from pydantic import BaseModel, ConfigDict, Field, field_validator


class EnrollmentStatus(StrEnum):
    """Canonical enrollment status (docs/contracts.md, "Warehouse")."""

    NOT_STARTED = "not_started"
    IN_PROGRESS = "in_progress"
    PENDING = "pending"
    COMPLETED = "completed"
    INCOMPLETE = "incomplete"
    FAILED = "failed"
    DECLINED = "declined"
    ABSENT = "absent"
    WAITLISTED = "waitlisted"
    NOT_APPLICABLE = "not_applicable"


class CourseKind(StrEnum):
    COURSE = "course"
    MODULE = "module"
    JOURNEY = "journey"
    ONBOARDING = "onboarding"
    SESSION = "session"
    LESSON = "lesson"
    CHAPTER = "chapter"
    LECTURE = "lecture"
    QUIZ = "quiz"


@overload
def utc(value: datetime) -> datetime: ...


@overload
def utc(value: None) -> None: ...


def utc(value: datetime | None) -> datetime | None:
    """Return ``value`` as an aware UTC datetime (naive values are taken as UTC)."""
    if value is None:
        return None
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


_STABLE = json.JSONEncoder(sort_keys=True, separators=(",", ":"), default=_json_default)
"""Built once: ``json.dumps`` with these options builds an encoder per call (~3 us of ~25)."""


def stable_json(value: Any) -> str:
    """JSON with sorted keys: equal content gives equal text (used for hashing)."""
    return _STABLE.encode(value)


class Record(BaseModel):
    """Base of every canonical record."""

    model_config = ConfigDict(extra="forbid", frozen=False, use_enum_values=True)

    table: ClassVar[str]
    external_id: str = Field(min_length=1, max_length=255)
    raw: dict[str, Any] | list[Any] | None = None

    @field_validator("*", mode="after")
    @classmethod
    def _aware_utc(cls, value: Any) -> Any:
        return utc(value) if isinstance(value, datetime) else value

    def content_hash(self) -> str:
        """A digest of everything we store for this record, ``raw`` included."""
        data = self.model_dump(mode="json")
        return hashlib.sha1(stable_json(data).encode(), usedforsecurity=False).hexdigest()


class Learner(Record):
    """A user account in one source."""

    table: ClassVar[str] = "learners"
    email: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    display_name: str | None = None
    hr_id: str | None = None
    department: str | None = None
    is_active: bool | None = True
    is_placeholder: bool = False
    """True for identities that must never link to a person (anonymized, shared...)."""

    @field_validator("email")
    @classmethod
    def _normalize_email(cls, value: str | None) -> str | None:
        value = (value or "").strip().lower()
        return value or None


class Course(Record):
    """A learning item in one source (course, module, session, lecture...)."""

    table: ClassVar[str] = "courses"
    kind: CourseKind = CourseKind.COURSE
    title: str | None = None
    category: str | None = None
    description: str | None = None
    duration_minutes: float | None = None
    parent_external_id: str | None = None


class _Progress(Record):
    status: EnrollmentStatus = EnrollmentStatus.NOT_STARTED
    passed: bool | None = None
    progress_pct: float | None = Field(default=None, ge=0, le=100)
    score: float | None = None
    time_spent_seconds: float | None = Field(default=None, ge=0)
    enrolled_at: datetime | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None
    due_at: datetime | None = None
    expires_at: datetime | None = None
    last_activity_at: datetime | None = None
    is_overdue: bool | None = None
    vendor_status: str | None = None


class Enrollment(_Progress):
    """A learner's assignment to / progress in a course."""

    table: ClassVar[str] = "enrollments"
    learner_external_id: str
    course_external_id: str


class ActivityProgress(_Progress):
    """Progress below course level: lesson, chapter, lecture, quiz, attempt, session."""

    table: ClassVar[str] = "activity_progress"
    learner_external_id: str
    course_external_id: str
    enrollment_external_id: str | None = None
    activity_type: str | None = None


class Snapshot(Record):
    """An aggregate figure a vendor reports.

    ``external_id`` names the series (metric + subject + group); the warehouse
    adds a row only when ``figures`` differ from the series' latest row.
    """

    table: ClassVar[str] = "stat_snapshots"
    metric: str
    subject_id: str | None = None
    subject_title: str | None = None
    group_key: str = ""
    value: float | None = None
    figures: dict[str, Any] = Field(default_factory=dict)

    @classmethod
    def series(cls, metric: str, subject_id: object = None, group_key: str = "", **kw: Any):
        """Build a snapshot whose ``external_id`` is derived from its series."""
        sid = "" if subject_id is None else str(subject_id)
        return cls(
            external_id=f"{metric}|{sid}|{group_key}"[:255],
            metric=metric,
            subject_id=sid or None,
            group_key=group_key,
            **kw,
        )


RECORD_TYPES: tuple[type[Record], ...] = (Learner, Course, Enrollment, ActivityProgress, Snapshot)
"""In the order a batch is written: referenced rows before the rows that reference them."""
