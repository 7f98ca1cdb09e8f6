"""Canonical records: what every connector yields and the warehouse stores.

A connector maps its vendor's shapes to these models (pure functions, no I/O).
Records point at each other by the vendor's ids (``learner_external_id``...),
never by warehouse ids: the warehouse resolves them when it writes a batch.
``raw`` keeps the vendor record as JSON for audit and re-normalizing.
``Record.encoded()`` serializes a record once (``raw`` with orjson, sorted keys) and takes
its content hash from those bytes; the warehouse writes what it returns.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum
from operator import itemgetter
from typing import Annotated, Any, ClassVar, NamedTuple, Self, overload

import orjson
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PrivateAttr, field_validator


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
    EXPIRED = "expired"
    """A completion or enrollment that lapsed, where the vendor's status says so."""
    WITHDRAWN = "withdrawn"
    """Taken back (unassigned, cancelled), where the vendor's status says so."""


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


def normalize_email(value: str | None) -> str | None:
    """An email as :class:`Learner` keeps it: trimmed, lower-case, or None."""
    value = (value or "").strip().lower()
    return value or None


UTCTime = Annotated[datetime, AfterValidator(utc)]
"""A datetime field that always holds an aware UTC value (naive input is taken as UTC):
binary COPY and the content hash need one form per instant."""


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


_ORJSON_SORTED = orjson.OPT_SORT_KEYS


def dump_json(value: Any) -> bytes:
    """Compact JSON with sorted keys, as bytes (orjson; stdlib json for what orjson refuses:
    integers beyond 64 bits, non-string keys)."""
    try:
        return orjson.dumps(value, default=_json_default, option=_ORJSON_SORTED)
    except orjson.JSONEncodeError:
        return stable_json(value).encode()


class Encoded(NamedTuple):
    """A record as the warehouse stores it."""

    row: tuple[Any, ...]
    """Every field's value in field order (``Record.fields()``), ``raw`` as JSON text, then
    the digest: the row the PostgreSQL writer COPYs."""
    digest: str
    """sha1 of all the values: equal digests, equal rows."""
    size: int
    """Bytes of the encoded ``raw``: what a batch counts towards ``warehouse.batch_bytes``."""


_GETTERS: dict[type, Any] = {}


class Record(BaseModel):
    """Base of every canonical record."""

    model_config = ConfigDict(extra="forbid", frozen=False, use_enum_values=True)

    table: ClassVar[str]
    external_id: str = Field(min_length=1, max_length=255)
    raw: dict[str, Any] | list[Any] | None = None
    _encoded: Encoded | None = PrivateAttr(default=None)

    @classmethod
    def fields(cls) -> tuple[str, ...]:
        """The field names in the order of ``Encoded.row``: ``external_id``, ``raw``, then
        the rest as declared."""
        return tuple(cls.model_fields)

    def encoded(self) -> Encoded:
        """Serialize once (cached until a field is set): ``raw`` with orjson, sorted keys; the
        digest is of those bytes and of every other field's value (references included)."""
        # a plain dict access: pydantic's __getattr__ for a private attribute costs ~1 us
        private: dict[str, Any] = self.__pydantic_private__  # type: ignore[assignment]
        enc = private["_encoded"]
        if enc is None:
            getter = _GETTERS.get(type(self))
            if getter is None:
                getter = _GETTERS[type(self)] = itemgetter(*self.fields())
            values = getter(self.__dict__)
            raw = dump_json(values[1])
            rest = values[:1] + values[2:]
            digest = hashlib.sha1(dump_json(rest), usedforsecurity=False)
            digest.update(raw)
            hexdigest = digest.hexdigest()
            enc = private["_encoded"] = Encoded((values[0], raw.decode(), *values[2:], hexdigest),
                                                hexdigest, len(raw))
        return enc

    def content_hash(self) -> str:
        """A digest of everything we store for this record, ``raw`` included."""
        return self.encoded().digest

    def __setattr__(self, name: str, value: Any) -> None:
        super().__setattr__(name, value)
        self.__pydantic_private__["_encoded"] = None  # type: ignore[index]  # encode again

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Self:
        copied = super().model_copy(update=update, deep=deep)
        copied.__pydantic_private__["_encoded"] = None  # type: ignore[index]
        return copied


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
        return normalize_email(value)


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
    enrolled_at: UTCTime | None = None
    started_at: UTCTime | None = None
    completed_at: UTCTime | None = None
    due_at: UTCTime | None = None
    expires_at: UTCTime | None = None
    last_activity_at: UTCTime | None = None
    is_overdue: bool | None = None
    vendor_status: str | None = None


class Enrollment(_Progress):
    """A learner's assignment to / progress in a course.

    ``assigned`` and ``required`` are None when the vendor does not say (never a guess
    of False): a compliance count of assigned or mandatory training must not count
    enrollments nobody described.
    """

    table: ClassVar[str] = "enrollments"
    learner_external_id: str
    course_external_id: str
    assigned: bool | None = None
    assigned_at: UTCTime | None = None
    required: bool | None = None
    certificate_id: str | None = Field(default=None, max_length=255)
    certificate_expires_at: UTCTime | None = None
    credits: float | None = None


class ActivityProgress(_Progress):
    """Progress below course level: lesson, chapter, lecture, quiz, attempt, session."""

    table: ClassVar[str] = "activity_progress"
    learner_external_id: str
    course_external_id: str
    enrollment_external_id: str | None = None
    activity_type: str | None = None


class OrgUnitKind(StrEnum):
    DEPARTMENT = "department"
    PROFESSION = "profession"
    GROUP = "group"


class OrgUnit(Record):
    """A department, profession or group of one source; ``parent_external_id`` makes a tree."""

    table: ClassVar[str] = "org_units"
    name: str | None = None
    kind: OrgUnitKind = OrgUnitKind.DEPARTMENT
    parent_external_id: str | None = None


class LearnerOrgUnit(Record):
    """A learner's membership of an org unit (many to many).

    ``external_id`` is built by the connector: ``<learner>|<unit>`` where a user has
    several units; the learner's own id where a vendor gives one department per user, so
    a move to another department updates the one row (an incremental read of the user
    never lists the old membership, so it could not be soft-deleted).
    """

    table: ClassVar[str] = "learner_org_units"
    learner_external_id: str
    org_unit_external_id: str


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


RECORD_TYPES: tuple[type[Record], ...] = (Learner, Course, OrgUnit, Enrollment, ActivityProgress,
                                          LearnerOrgUnit, Snapshot)
"""In the order a batch is written: referenced rows before the rows that reference them."""
