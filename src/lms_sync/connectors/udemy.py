"""Udemy Business: Courses API + Reporting API (``kind: udemy``).

HTTP Basic auth; lists under ``api-2.0/organizations/{organization_id}/`` paged by their
``next`` link, ``count`` their total. Streams: ``courses`` -> courses; ``enrollments`` ->
learners + enrollments; ``progress`` -> activity_progress; ``activity`` -> stat_snapshots.
Keys come from the lower-case email (an anonymized row: a placeholder learner of its own).
docs/vendors/udemy.md has paths, paging, field classes (a guess), keys and backfills.
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

from lms_sync import canonical
from lms_sync.canonical import ActivityProgress, Course, CourseKind, Enrollment, Learner, Record, Snapshot
from lms_sync.canonical import EnrollmentStatus as S
from lms_sync.connectors.base import Checkpoint, Connector, ReadContext, Settings, Stream
from lms_sync.connectors.rest import Number, RestStream, Text, VendorModel, When, describe_json
from lms_sync.http import BasicAuth, HttpClient, NextUrlPaginator
from lms_sync.keyset import KeySet

ANONYMIZED = "anonymized user"
ACTIVITY_METRIC = "udemy.user_activity"

# docs/contracts.md, "Warehouse", udemy row: the first field that is set decides; else not_started.
ENROLLMENT_STATUS_RULES = (("course_completion_date", S.COMPLETED),
                           ("course_first_completion_date", S.COMPLETED),
                           ("completion_ratio", S.IN_PROGRESS), ("course_start_date", S.IN_PROGRESS))
ITEM_STATUS_RULES = (("item_completion_time", S.COMPLETED), ("item_completion_ratio", S.IN_PROGRESS),
                     ("item_start_time", S.IN_PROGRESS))
ITEM_KINDS = {"lecture": "lecture", "video lecture": "lecture", "nonvideo lecture": "lecture",
              "non-video lecture": "lecture", "quiz": "quiz", "practice test": "quiz",
              "coding exercise": "quiz", "assignment": "quiz"}
ASSIGNED = {"yes": True, "no": False}  # is_assigned (case, spaces ignored); else unknown (None)
USER_FIELDS = ("lms_user_id",)  # user-level fields without the user_ prefix
ANON_KEY_FIELDS = ("id", "lms_user_id", "course_id", "item_type", "item_id", "report_date",
                   "course_enroll_date", "course_start_date", "item_start_time", "user_joined_date")


def status_of(row: BaseModel, rules: tuple[tuple[str, S], ...]) -> S:
    return next((status for name, status in rules if getattr(row, name, None)), S.NOT_STARTED)


def _pct(value: float | None) -> float | None:
    return None if value is None else min(100.0, max(0.0, float(value)))


def _score(text: str | None) -> float | None:
    """A quiz's final result as a number: ``80``, ``80%``, ``8/10`` (-> 80); else None."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(?:%|/\s*(\d+(?:\.\d+)?))?\s*", text or "")
    if not m or not m.group(2):
        return float(m.group(1)) if m else None
    return float(m.group(1)) / float(m.group(2)) * 100 if float(m.group(2)) else None


class UdemyCourse(VendorModel):
    id: int
    title: Text = None
    description: Text = None
    estimated_content_length: Number = None
    categories: list[str] = Field(default_factory=list)


class UserRow(VendorModel):  # the user part of a Reporting row, the same in every stream
    user_email: str
    user_name: Text = None
    user_surname: Text = None
    user_external_id: Text = None
    user_is_deactivated: bool | None = None

    def key(self, anon: str | None = None) -> str:
        return anon or self.user_email.strip().lower()

    @property
    def name(self) -> str | None:
        return " ".join(p for p in (self.user_name, self.user_surname) if p) or None


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


def is_anonymized(row: dict[str, Any]) -> bool:
    return str(row.get("user_email") or "").strip().lower() == ANONYMIZED


def anon_key(stream: str, row: dict[str, Any]) -> str:
    """A stable key for one anonymized row, from its identifying fields."""
    ident = {k: row.get(k) for k in ANON_KEY_FIELDS if row.get(k) not in (None, "")}
    digest = hashlib.sha1(canonical.stable_json([stream, ident]).encode(), usedforsecurity=False)
    return f"anon:{stream}:{digest.hexdigest()[:20]}"


# Normalizers take the row and, where the caller validated it already, its model (validated once).

def normalize_course(raw: dict[str, Any]) -> Course:
    c = UdemyCourse.model_validate(raw)
    return Course(external_id=str(c.id), kind=CourseKind.COURSE, title=c.title,
                  category=c.categories[0] if c.categories else None, description=c.description,
                  duration_minutes=c.estimated_content_length, raw=raw)


def normalize_learner(raw: dict[str, Any], anon: str | None = None, u: UserRow | None = None) -> Learner:
    user_raw = {k: v for k, v in raw.items() if k.startswith("user_") or k in USER_FIELDS}
    if anon:
        return Learner(external_id=anon, display_name="Anonymized User", is_placeholder=True,
                       is_active=None, raw=user_raw)
    u = u or UserRow.model_validate(raw)
    return Learner(external_id=u.key(), email=u.user_email, first_name=u.user_name,
                   last_name=u.user_surname, display_name=u.name, hr_id=u.user_external_id,
                   is_active=not u.user_is_deactivated, raw=user_raw)


def normalize_enrollment(raw: dict[str, Any], anon: str | None = None,
                         r: CourseActivity | None = None) -> Enrollment:
    r = r or CourseActivity.model_validate(raw)
    who, minutes = r.key(anon), r.num_video_consumed_minutes
    return Enrollment(
        external_id=f"{who}|{r.course_id}", learner_external_id=who,
        course_external_id=str(r.course_id), status=status_of(r, ENROLLMENT_STATUS_RULES),
        progress_pct=_pct(r.completion_ratio),
        time_spent_seconds=None if minutes is None else max(0.0, minutes * 60),
        enrolled_at=r.course_enroll_date, started_at=r.course_start_date,
        completed_at=r.course_completion_date or r.course_first_completion_date,
        last_activity_at=r.course_last_accessed_date,
        assigned=ASSIGNED.get((r.is_assigned or "").lower()), raw=raw)


def normalize_progress(raw: dict[str, Any], anon: str | None = None,
                       r: UserProgress | None = None) -> ActivityProgress:
    r = r or UserProgress.model_validate(raw)
    who, item_type = r.key(anon), (r.item_type or "lecture").lower()
    kind = ITEM_KINDS.get(item_type, "quiz" if "quiz" in item_type else "lecture")
    status, pct = status_of(r, ITEM_STATUS_RULES), _pct(r.item_completion_ratio)
    if pct is None and status == S.COMPLETED:
        pct = 100.0
    item = str(int(r.item_id)) if r.item_id == r.item_id.to_integral_value() else str(r.item_id)
    return ActivityProgress(
        external_id=f"{who}|{r.course_id}|{kind}:{item}", learner_external_id=who,
        course_external_id=str(r.course_id),
        enrollment_external_id=None if anon else f"{who}|{r.course_id}",
        activity_type=item_type, status=status, progress_pct=pct,
        score=_score(r.final_result) if kind == "quiz" else None,
        started_at=r.item_start_time, completed_at=r.item_completion_time, raw=raw)


def normalize_activity(raw: dict[str, Any], anon: str | None = None) -> Snapshot:
    r = UserActivity.model_validate(raw)
    figures = {k: v for k, v in raw.items()
               if k.startswith("num_") and isinstance(v, int | float) and not isinstance(v, bool)}
    return Snapshot.series(ACTIVITY_METRIC, r.key(anon), group_key=r.report_date.date().isoformat(),
                           subject_title="Anonymized User" if anon else r.name,
                           figures=figures, raw=raw)


describe_error = describe_json("detail", "detail.message", "message", "error")
"""Udemy (Django REST framework) error bodies: ``{"detail": "..."}``."""


class UdemyAuth(Settings):
    client_id: SecretStr
    client_secret: SecretStr


class UdemyFieldClasses(Settings):  # fields[<class>]=@all per stream: guesses but activity's
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
    """An organization's list; a Reporting one asks its field classes, and ``records_of``."""

    records = "results"
    total_key = "count"
    fix = "check base_url and organization_id"
    reporting: ClassVar[bool] = True

    def __init__(self, http: HttpClient, options: UdemyOptions) -> None:
        super().__init__(http)
        self.options = options
        self.api = f"api-2.0/organizations/{quote(options.organization_id, safe='')}/"

    def params_for(self, ctx: ReadContext) -> dict[str, Any]:
        o = self.options
        params: dict[str, Any] = {**self.params, "page": 1, "page_size": o.page_size}
        if self.reporting:
            params.update({f"fields[{c}]": "@all" for c in getattr(o.field_classes, self.name)})
            params.update({k: v.isoformat() for k in ("from_date", "to_date") if (v := getattr(o, k))})
        return params

    def paginator(self, ctx: ReadContext) -> NextUrlPaginator:
        return NextUrlPaginator(f"{self.http.base_url}{self.api}", params=self.params_for(ctx),
                                source=self.http.source_id, log=ctx.log)

    def rows(self, ctx: ReadContext) -> Iterator[dict[str, Any]]:
        params = self.params_for(ctx)
        asked, warned = {k[7:-1] for k in params if k.startswith("fields[")}, False
        for page in self.pages(ctx, self.api + self.path, params):
            kind = next((r.get("_class") for r in page.rows), None)
            if not warned and isinstance(kind, str) and kind not in asked:
                warned = True  # a guess of ours is wrong: some fields may be missing
                ctx.log.warning("udemy.field_class_unasked", row_class=kind, asked=sorted(asked),
                                fix=f"add {kind!r} to options.field_classes.{self.name}")
            yield from page.rows

    def read(self, ctx: ReadContext) -> Iterator[Record | Checkpoint]:
        if not self.reporting:
            yield from super().read(ctx)
            return
        keys: dict[str, int] = {}  # anonymous keys given so far: a repeat gets #n
        self.seen = KeySet()  # the learners emitted: one per person, not per row
        ctx.partial = bool(self.options.from_date or self.options.to_date)
        for row in self.rows(ctx):
            anon = None
            if is_anonymized(row):
                anon = anon_key(self.name, row)
                keys[anon] = keys.get(anon, 0) + 1
                anon = anon if keys[anon] == 1 else f"{anon}#{keys[anon]}"
                ctx.count("anonymized")
            vendor_id = anon or f"{row.get('user_email')}|{row.get('course_id')}"
            yield from ctx.normalize(vendor_id, lambda r=row, a=anon: self.records_of(r, a)) or ()
        yield self.cursor(ctx)

    def records_of(self, row: dict[str, Any], anon: str | None) -> list[Record]:
        raise NotImplementedError

    def cursor(self, ctx: ReadContext) -> Checkpoint:
        window = {k: v.isoformat() if (v := getattr(self.options, k)) else None
                  for k in ("from_date", "to_date")} if self.reporting else {}
        return Checkpoint({"read_at": ctx.started_at.isoformat(), **window})


class Courses(_Reader):
    name = "courses"
    path = "courses/list/"
    params: ClassVar[dict[str, Any]] = {"fields[course]": "@all"}
    reporting: ClassVar[bool] = False
    full_refresh_tables = ("courses",)
    total_table = "courses"

    def normalize(self, row: dict[str, Any], ctx: ReadContext) -> Record:
        return normalize_course(row)


class Enrollments(_Reader):
    name = "enrollments"
    path = "analytics/user-course-activity/"
    full_refresh_tables = ("enrollments",)
    total_table = "enrollments"  # one row, one enrollment (its learner once per person)

    def records_of(self, row: dict[str, Any], anon: str | None) -> list[Record]:
        r = CourseActivity.model_validate(row)
        record = normalize_enrollment(row, anon, r)
        return [normalize_learner(row, anon, r), record] if self.seen.add(r.key(anon)) else [record]


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
