"""Udemy Business: Courses API + Reporting API (``kind: udemy``).

Auth: HTTP Basic ``client_id:client_secret``. Paths under
``{base_url}/api-2.0/organizations/{organization_id}/``, paged by ``page``/``page_size``
(<= 100) and an absolute ``next`` link: one on another origin is asked of ``base_url``
(``http.next_rebased``), one outside the organization's path is refused.

Streams (each run reads everything; the warehouse writes only what changed):

* ``courses``      courses/list/?fields[course]=@all -> courses (full refresh)
* ``enrollments``  analytics/user-course-activity/   -> learners + enrollments
* ``progress``     analytics/user-progress/          -> activity_progress
* ``activity``     analytics/user-activity/          -> stat_snapshots ``udemy.user_activity``

Contract facts: each list's ``count`` is the vendor's total of the stream's table. The
Reporting API has no row ids, so keys are built from the lower-case email (learner
``<email>``, enrollment ``<email>|<course_id>``); ``"Anonymized User"`` rows are a
placeholder learner each. Reporting streams ask ``fields[<class>]=@all`` (option
``field_classes``, a guess). ``from_date``/``to_date`` make a partial read (nothing
soft-deleted); ``--since`` is ignored (no "changed since" filter).

See docs/vendors/udemy.md: paging, field classes, keys, anonymized rows, assignment, guesses.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, Any, ClassVar
from urllib.parse import quote

from pydantic import AliasChoices, BaseModel, BeforeValidator, Field, SecretStr, model_validator

from lms_sync.canonical import (
    ActivityProgress,
    Course,
    CourseKind,
    Enrollment,
    EnrollmentStatus,
    Learner,
    Record,
    Snapshot,
    stable_json,
)
from lms_sync.connectors.base import Checkpoint, Connector, ReadContext, Settings, Stream
from lms_sync.connectors.rest import Number, RestStream, Text, VendorModel, When, describe_json
from lms_sync.http import BasicAuth, HttpClient, NextUrlPaginator
from lms_sync.http.paging import Page
from lms_sync.keyset import KeySet

ANONYMIZED = "anonymized user"
ACTIVITY_METRIC = "udemy.user_activity"

# docs/contracts.md, "Warehouse", udemy row: the first field that is set decides; else not_started.
ENROLLMENT_STATUS_RULES: tuple[tuple[str, EnrollmentStatus], ...] = (
    ("course_completion_date", EnrollmentStatus.COMPLETED),
    ("course_first_completion_date", EnrollmentStatus.COMPLETED),
    ("completion_ratio", EnrollmentStatus.IN_PROGRESS),
    ("course_start_date", EnrollmentStatus.IN_PROGRESS),
)
ITEM_STATUS_RULES: tuple[tuple[str, EnrollmentStatus], ...] = (
    ("item_completion_time", EnrollmentStatus.COMPLETED),
    ("item_completion_ratio", EnrollmentStatus.IN_PROGRESS),
    ("item_start_time", EnrollmentStatus.IN_PROGRESS),
)
ITEM_KINDS: dict[str, str] = {
    "lecture": "lecture", "video lecture": "lecture", "nonvideo lecture": "lecture",
    "non-video lecture": "lecture", "quiz": "quiz", "practice test": "quiz",
    "coding exercise": "quiz", "assignment": "quiz",
}
ASSIGNED: dict[str, bool] = {"yes": True, "no": False}
"""``is_assigned`` (case and spaces ignored) -> ``assigned``; anything else: unknown (None)."""
USER_FIELDS = ("lms_user_id",)  # user-level fields without the user_ prefix
ANON_KEY_FIELDS = ("id", "lms_user_id", "course_id", "item_type", "item_id", "report_date",
                   "course_enroll_date", "course_start_date", "item_start_time", "user_joined_date")


class UdemyCourse(VendorModel):
    id: int
    title: Text = None
    description: Text = None
    estimated_content_length: Number = None
    categories: list[str] = Field(default_factory=list)


class UserRow(VendorModel):
    user_email: str
    user_name: Text = None
    user_surname: Text = None
    user_external_id: Text = None
    user_is_deactivated: bool | None = None


class CourseActivity(UserRow):
    course_id: int
    completion_ratio: Number = None
    num_video_consumed_minutes: Number = None
    course_enroll_date: When = None
    course_start_date: When = None
    course_completion_date: When = None
    course_first_completion_date: When = None
    course_last_accessed_date: When = None
    is_assigned: Text = None


class UserProgress(UserRow):
    course_id: int
    item_id: Decimal
    item_type: Text = None
    item_start_time: When = None
    item_completion_time: When = None
    # The vendor's table swaps two descriptions: this is the item's % complete (docs/vendors/udemy.md).
    item_completion_ratio: Number = None
    final_result: Text = Field(None, validation_alias=AliasChoices("item_final_result",
                                                                   "Item_final_result"))


class UserActivity(UserRow):
    report_date: datetime


# --------------------------------------------------------------------------- normalization


def is_anonymized(row: dict[str, Any]) -> bool:
    return str(row.get("user_email") or "").strip().lower() == ANONYMIZED


def anon_key(stream: str, row: dict[str, Any]) -> str:
    """A stable key for one anonymized row, from its identifying fields."""
    ident = {k: row.get(k) for k in ANON_KEY_FIELDS if row.get(k) not in (None, "")}
    digest = hashlib.sha1(stable_json([stream, ident]).encode(), usedforsecurity=False)
    return f"anon:{stream}:{digest.hexdigest()[:20]}"


def learner_key(row: UserRow, anon: str | None = None) -> str:
    return anon or row.user_email.strip().lower()


def status_of(row: BaseModel, rules: tuple[tuple[str, EnrollmentStatus], ...]) -> EnrollmentStatus:
    for name, status in rules:
        if getattr(row, name, None):
            return status
    return EnrollmentStatus.NOT_STARTED


def _pct(value: float | None) -> float | None:
    return None if value is None else min(100.0, max(0.0, float(value)))


def _score(text: str | None) -> float | None:
    """A quiz's final result as a number: ``80``, ``80%``, ``8/10`` (-> 80); else None."""
    if not text:
        return None
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(?:%|/\s*(\d+(?:\.\d+)?))?\s*", text)
    if not m:
        return None
    value = float(m.group(1))
    if m.group(2):
        return value / float(m.group(2)) * 100 if float(m.group(2)) else None
    return value


def _item_id(value: Decimal) -> str:
    return str(int(value)) if value == value.to_integral_value() else str(value)


def normalize_course(raw: dict[str, Any]) -> Course:
    c = UdemyCourse.model_validate(raw)
    return Course(external_id=str(c.id), kind=CourseKind.COURSE, title=c.title,
                  category=c.categories[0] if c.categories else None, description=c.description,
                  duration_minutes=c.estimated_content_length, raw=raw)


def normalize_learner(raw: dict[str, Any], anon: str | None = None) -> Learner:
    """The user part of a reporting row (same fields in every stream: no churn)."""
    u = UserRow.model_validate(raw)
    user_raw = {k: v for k, v in raw.items() if k.startswith("user_") or k in USER_FIELDS}
    if anon:
        return Learner(external_id=anon, display_name="Anonymized User", is_placeholder=True,
                       is_active=None, raw=user_raw)
    name = " ".join(p for p in (u.user_name, u.user_surname) if p) or None
    return Learner(external_id=learner_key(u), email=u.user_email, first_name=u.user_name,
                   last_name=u.user_surname, display_name=name, hr_id=u.user_external_id,
                   is_active=not u.user_is_deactivated, raw=user_raw)


def normalize_enrollment(raw: dict[str, Any], anon: str | None = None) -> Enrollment:
    r = CourseActivity.model_validate(raw)
    who = learner_key(r, anon)
    minutes = r.num_video_consumed_minutes
    return Enrollment(
        external_id=f"{who}|{r.course_id}", learner_external_id=who,
        course_external_id=str(r.course_id), status=status_of(r, ENROLLMENT_STATUS_RULES),
        progress_pct=_pct(r.completion_ratio),
        time_spent_seconds=None if minutes is None else max(0.0, minutes * 60),
        enrolled_at=r.course_enroll_date, started_at=r.course_start_date,
        completed_at=r.course_completion_date or r.course_first_completion_date,
        last_activity_at=r.course_last_accessed_date,
        assigned=ASSIGNED.get((r.is_assigned or "").lower()), raw=raw,
    )


def normalize_progress(raw: dict[str, Any], anon: str | None = None) -> ActivityProgress:
    r = UserProgress.model_validate(raw)
    who = learner_key(r, anon)
    item_type = (r.item_type or "lecture").lower()
    kind = ITEM_KINDS.get(item_type, "quiz" if "quiz" in item_type else "lecture")
    status = status_of(r, ITEM_STATUS_RULES)
    pct = _pct(r.item_completion_ratio)
    if pct is None and status == EnrollmentStatus.COMPLETED:
        pct = 100.0
    return ActivityProgress(
        external_id=f"{who}|{r.course_id}|{kind}:{_item_id(r.item_id)}", learner_external_id=who,
        course_external_id=str(r.course_id),
        enrollment_external_id=None if anon else f"{who}|{r.course_id}",
        activity_type=item_type, status=status, progress_pct=pct,
        score=_score(r.final_result) if kind == "quiz" else None,
        started_at=r.item_start_time, completed_at=r.item_completion_time, raw=raw,
    )


def normalize_activity(raw: dict[str, Any], anon: str | None = None) -> Snapshot:
    r = UserActivity.model_validate(raw)
    figures = {k: v for k, v in raw.items()
               if k.startswith("num_") and isinstance(v, int | float) and not isinstance(v, bool)}
    name = " ".join(p for p in (r.user_name, r.user_surname) if p) or None
    return Snapshot.series(ACTIVITY_METRIC, learner_key(r, anon),
                           group_key=r.report_date.date().isoformat(),
                           subject_title="Anonymized User" if anon else name,
                           figures=figures, raw=raw)


describe_error = describe_json("detail", "detail.message", "message", "error")
"""Udemy (Django REST framework) error bodies: ``{"detail": "..."}``."""


# --------------------------------------------------------------------------- streams


class UdemyAuth(Settings):
    client_id: SecretStr
    client_secret: SecretStr


class UdemyFieldClasses(Settings):
    """The classes each reporting stream asks ``fields[<class>]=@all`` of: the default field
    set is not documented and may leave out ``user_external_id`` or
    ``course_first_completion_date``. Only the user-activity class is documented; the
    others are guesses (the first from public client code, the second after the rows'
    ``_class``); asking a class a row is not of is harmless (the documentation's own
    ``fields[courses]``). See docs/vendors/udemy.md, "Field classes"."""

    enrollments: list[str] = ["aggregate_organization_user_course_activity", "user_course_activity"]
    progress: list[str] = ["aggregate_organization_user_progress", "user_progress"]
    activity: list[str] = ["aggregate_organization_user_activity"]


class UdemyOptions(Settings):
    organization_id: Annotated[str, BeforeValidator(lambda v: str(v) if isinstance(v, int) else v)] = (
        Field(min_length=1, pattern=r"^[A-Za-z0-9_-]+$"))
    page_size: int = Field(default=100, ge=1, le=100)  # the documented maximum
    from_date: date | None = None
    to_date: date | None = None
    field_classes: UdemyFieldClasses = Field(default_factory=UdemyFieldClasses)

    @model_validator(mode="after")
    def _window(self) -> UdemyOptions:
        if self.from_date and self.to_date and self.from_date > self.to_date:
            raise ValueError("from_date must not be after to_date")
        return self


class _Reader(RestStream):
    """One endpoint under the organization, paged by its absolute ``next`` link (rebased
    onto base_url); ``count`` is the list's total. Reporting streams ask their field
    classes and keep their rows' user fields for the learner records."""

    records = "results"
    total_key = "count"
    fix = "check base_url and organization_id"
    reporting: ClassVar[bool] = True

    def __init__(self, http: HttpClient, options: UdemyOptions) -> None:
        super().__init__(http)
        self.options = options
        self.api = f"api-2.0/organizations/{quote(options.organization_id, safe='')}/"

    def params_for(self, ctx: ReadContext) -> dict[str, Any]:
        params: dict[str, Any] = {**self.params, "page": 1, "page_size": self.options.page_size}
        if self.reporting:
            params.update({f"fields[{c}]": "@all" for c in getattr(self.options.field_classes,
                                                                    self.name)})
            for name in ("from_date", "to_date"):
                if getattr(self.options, name):
                    params[name] = getattr(self.options, name).isoformat()
        return params

    def paginator(self, ctx: ReadContext) -> NextUrlPaginator:
        return NextUrlPaginator(f"{self.http.base_url}{self.api}", params=self.params_for(ctx),
                                source=self.http.source_id, log=ctx.log)

    def pages(self, ctx: ReadContext, path: str | None = None,
              params: dict[str, Any] | None = None) -> Iterator[Page]:
        params = self.params_for(ctx)
        asked = {k[7:-1] for k in params if k.startswith("fields[")}
        unasked = None
        for page in super().pages(ctx, self.api + self.path, params):
            kind = next((r.get("_class") for r in page.rows), None)
            if unasked is None and isinstance(kind, str) and kind not in asked:
                unasked = kind  # a guess of ours is wrong: some fields may be missing
                ctx.log.warning("udemy.field_class_unasked", row_class=kind, asked=sorted(asked),
                                fix=f"add {kind!r} to options.field_classes.{self.name}")
            yield page

    def rows_keyed(self, ctx: ReadContext) -> Iterator[tuple[dict[str, Any], str | None]]:
        """(row, its anonymous key or None) for every row of a reporting list."""
        keys: dict[str, int] = {}
        ctx.partial = bool(self.options.from_date or self.options.to_date)
        for row in self.rows(ctx):
            anon = None
            if is_anonymized(row):
                anon = anon_key(self.name, row)
                keys[anon] = keys.get(anon, 0) + 1
                anon = anon if keys[anon] == 1 else f"{anon}#{keys[anon]}"
                ctx.count("anonymized")
            yield row, anon

    def read(self, ctx: ReadContext) -> Iterator[Record | Checkpoint]:
        for row, anon in self.rows_keyed(ctx):
            vendor_id = anon or f"{row.get('user_email')}|{row.get('course_id')}"
            out = ctx.normalize(vendor_id, lambda r=row, a=anon: self.records_of(r, a))
            yield from out or ()
        yield self.cursor(ctx)

    def records_of(self, row: dict[str, Any], anon: str | None) -> list[Record]:
        raise NotImplementedError

    def cursor(self, ctx: ReadContext) -> Checkpoint:
        o = self.options
        return Checkpoint({"read_at": ctx.started_at.isoformat(),
                           "from_date": o.from_date.isoformat() if o.from_date else None,
                           "to_date": o.to_date.isoformat() if o.to_date else None})


class Courses(_Reader):
    name = "courses"
    path = "courses/list/"
    params: ClassVar[dict[str, Any]] = {"fields[course]": "@all"}
    reporting: ClassVar[bool] = False
    full_refresh_tables = ("courses",)
    total_table = "courses"

    def read(self, ctx: ReadContext) -> Iterator[Record | Checkpoint]:
        yield from RestStream.read(self, ctx)

    def normalize(self, row: dict[str, Any], ctx: ReadContext) -> Record:
        return normalize_course(row)

    def cursor(self, ctx: ReadContext) -> Checkpoint:
        return Checkpoint({"read_at": ctx.started_at.isoformat()})


class Enrollments(_Reader):
    name = "enrollments"
    path = "analytics/user-course-activity/"
    full_refresh_tables = ("enrollments",)
    total_table = "enrollments"  # one row, one enrollment (its learner once per person)

    def read(self, ctx: ReadContext) -> Iterator[Record | Checkpoint]:
        self.seen = KeySet()  # learners already emitted: one per person, not per enrollment
        yield from super().read(ctx)

    def records_of(self, row: dict[str, Any], anon: str | None) -> list[Record]:
        record = normalize_enrollment(row, anon)
        if self.seen.add(record.learner_external_id):
            return [normalize_learner(row, anon), record]
        return [record]


class Progress(_Reader):
    name = "progress"
    path = "analytics/user-progress/"
    full_refresh_tables = ("activity_progress",)
    total_table = "activity_progress"

    def records_of(self, row: dict[str, Any], anon: str | None) -> list[Record]:
        record = normalize_progress(row, anon)  # an anonymized row: its own placeholder learner
        return [normalize_learner(row, anon), record] if anon else [record]


class Activity(_Reader):
    name = "activity"
    path = "analytics/user-activity/"
    total_table = "stat_snapshots"  # one row, one series (user x report_date)

    def records_of(self, row: dict[str, Any], anon: str | None) -> list[Record]:
        return [normalize_activity(row, anon)]


class UdemyConnector(Connector):
    kind = "udemy"
    Auth = UdemyAuth
    Options = UdemyOptions

    def __init__(self, source: Any, log: Any) -> None:
        super().__init__(source, log)
        auth = BasicAuth(self.auth.client_id.get_secret_value(),
                         self.auth.client_secret.get_secret_value())
        self.make_client(auth=auth, describe_error=describe_error)

    def streams(self) -> list[Stream]:
        assert self.http is not None
        return [cls(self.http, self.options) for cls in (Courses, Enrollments, Progress, Activity)]
