"""Udemy Business: Courses API + Reporting API (``kind: udemy``).

HTTP Basic auth; lists under ``api-2.0/organizations/{organization_id}/`` paged by their
``next`` link, ``count`` their total. Streams: ``courses`` -> courses; ``enrollments`` ->
learners + enrollments; ``progress`` -> activity_progress; ``activity`` -> stat_snapshots.
Rows become records in ``udemy_records`` (pure; keys from the lower-case email).
docs/vendors/udemy.md has paths, paging, field classes (a guess), keys and backfills.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from typing import Annotated, Any, ClassVar
from urllib.parse import quote

from pydantic import BeforeValidator, Field, SecretStr, model_validator

from lms_sync.canonical import Record
from lms_sync.connectors.base import INVALID, Checkpoint, Connector, ReadContext, Settings, Stream
from lms_sync.connectors.rest import RestStream, describe_json
from lms_sync.connectors.udemy_records import (  # noqa: F401 - the public normalizers, re-exported
    ACTIVITY_METRIC,
    CourseActivity,
    anon_key,
    is_anonymized,
    normalize_activity,
    normalize_course,
    normalize_enrollment,
    normalize_learner,
    normalize_progress,
)
from lms_sync.http import BasicAuth, HttpClient, NextUrlPaginator
from lms_sync.keyset import KeySet

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
    skim: ClassVar[bool] = True  # no change feed: an unchanged list is skimmed, not processed

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
            try:
                records = self.records_of(row, anon)
            except INVALID as exc:
                ctx.skip(anon or f"{row.get('user_email')}|{row.get('course_id')}", exc)
                continue
            yield from records
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
