"""Absorb LMS Integration API v2 (``kind: absorb``).

Auth: ``POST /authenticate`` (API key + admin login) -> one bearer token per admin (4 h),
shared by the source, renewed single-flight on a 401. Lists: ``_limit``/``_offset`` (page
number), ``totalItems``; walked by the last ``dateEdited`` seen, unsorted ones by page
(:class:`~lms_sync.connectors.walks.SortedWalk`). Streams: ``departments`` (org units, whole
every run), ``users`` (learners + department memberships), ``courses``, ``enrollments`` (per
course; lessons -> activity_progress), incremental by ``dateEdited`` (cursor ``{"date_edited":
<max seen>}``, ``overlap_minutes`` re-read). Full reads report ``totalItems``; a walk short of
it is IncompleteRead. Ids: ``<userId>:<courseId>`` (historical rows skipped),
``<userId>:<courseId>:<lessonId>``. Rows -> records, status 0..12: :mod:`.absorb_records`.

See docs/vendors/absorb.md: paging guards, unsorted lists, lessons, org units, values, guesses.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

from pydantic import Field, SecretStr, field_validator

from lms_sync.canonical import EnrollmentStatus, Record
from lms_sync.connectors import fields, rest, walks
from lms_sync.connectors.absorb_records import (
    AbsorbCourse,
    AbsorbUser,
    normalize_department,
    normalize_enrollment,
    normalize_lesson,
)
from lms_sync.connectors.base import Checkpoint, Connector, ReadContext, Settings, Stream
from lms_sync.errors import DataError, IncompleteRead
from lms_sync.http.auth import Token, TokenAuth

AUTH_PATH = "/authenticate"
NOT_STARTED = EnrollmentStatus.NOT_STARTED.value
READY_MAX = 1000  # enrollment records waiting behind lesson calls, at most
API_VERSION = "2"
TOKEN_SECONDS = 4 * 3600
LESSON_404_MIN = 10  # lesson calls made before a majority of 404s fails the stream

describe_error = rest.describe_json("message", "Message", lists=("validations",))
"""``{"validations": [...], "code", "message", "term"}``, or a bare JSON string."""


def _token(body: Any) -> Token:
    if not isinstance(body, str) or not body:
        raise DataError("the authenticate answer is not a JSON string token", path=AUTH_PATH)
    return Token(body, time.monotonic() + TOKEN_SECONDS)


class AbsorbAuth(Settings):
    api_key: SecretStr
    username: str = Field(min_length=1)
    password: SecretStr


class AbsorbOptions(Settings):
    page_size: int = Field(default=500, ge=1, le=1000)
    lesson_enrollments: bool = True
    overlap_minutes: float = Field(default=10, ge=0)
    max_page: int = Field(default=65535, ge=1, le=65535)
    """Highest ``_offset`` (page number) we ask for; the vendor's documented maximum."""
    lesson_path: str = "/users/{userId}/enrollments/{courseId}/lessons"
    """A user's lesson enrollments in one course (``{userId}``, ``{courseId}`` filled in). A
    GUESS (docs/vendors/absorb.md, "Guesses"); if most calls answer 404 the enrollments
    stream fails naming this option."""

    @field_validator("lesson_path")
    @classmethod
    def _lesson_path(cls, value: str) -> str:
        return fields.path_template(value, "userId", "courseId")


class AbsorbConnector(Connector):
    kind = "absorb"
    Auth = AbsorbAuth
    Options = AbsorbOptions

    def __init__(self, source: Any, log: Any) -> None:
        super().__init__(source, log)
        self.headers = {"x-api-key": self.auth.api_key.get_secret_value(), "x-api-version": API_VERSION}
        http = self.make_client(auth=TokenAuth(self._fetch_token, static_headers=self.headers),
                                describe_error=describe_error)
        self.walk = walks.SortedWalk(
            http, "Absorb", "_offset", "_limit", self.options.page_size, self.options.max_page,
            {"_sort": "dateEdited"}, lambda row: fields.second_of(row.get("dateEdited")),
            lambda at: {"_filter": f"dateEdited ge datetime'{rest.iso(at)}'"},
            total_key="totalItems", limit_key="limit",
            loop_fix="the vendor ignores _offset; report it to Absorb",
            stuck_fix="the vendor keeps returning full pages; raise options.max_page or report it to Absorb")

    def _fetch_token(self, client: Any) -> Token:
        assert self.http is not None
        login = {"username": self.auth.username, "password": self.auth.password.get_secret_value(),
                 "privateKey": self.headers["x-api-key"]}
        return rest.fetch_token(
            client, self.http.url(AUTH_PATH), source=self.source.id, rejected=(400, 401, 403, 404),
            refused="Absorb refused the API key or admin login", parse=_token, describe=describe_error,
            fix="check auth.api_key, auth.username and auth.password (an admin with API access)",
            json=login, headers=self.headers)

    def unsorted(self, path: str) -> None:
        """A list ignores ``_sort=dateEdited`` (docs/vendors/absorb.md, "Change detection")."""
        self.log.warning("absorb.unsorted", path=path, fix="none needed; report it to Absorb",
                         reason=f"Absorb ignores _sort=dateEdited on {path}; its lists of "
                         "this kind are read again by page number in this run")

    def lookup(self, path: str, key: str, ctx: ReadContext) -> dict[str, str]:
        return self.walk.lookup(path, key, ctx, f"allow the API admin to list {key} to get their names")

    def streams(self) -> list[Stream]:
        return [DepartmentsStream(self.walk), UsersStream(self), CoursesStream(self), EnrollmentsStream(self)]


class DepartmentsStream(walks.LookupStream):
    name, path, records = "departments", "/departments", "departments"
    full_refresh_tables = ("org_units",)
    total_table = "org_units"
    fix = "let the API admin's role view departments to get org units"

    def normalize(self, row: dict[str, Any]) -> Record:
        return normalize_department(row)


class _Stream(walks.SortedStream):
    cursor_key = "date_edited"

    def __init__(self, conn: AbsorbConnector) -> None:
        super().__init__(conn.walk, timedelta(minutes=conn.options.overlap_minutes), conn.unsorted)
        self.conn = conn


class UsersStream(_Stream):
    name, path, records = "users", "/users", "users"
    full_refresh_tables = ("learners", "learner_org_units")
    total_table = "learners"

    def read(self, ctx: ReadContext) -> Iterator[Record | Checkpoint]:
        self.departments = self.conn.lookup("/departments", "departments", ctx)
        yield from super().read(ctx)

    def records_of(self, row: dict[str, Any], ctx: ReadContext) -> tuple[list[Record], datetime | None]:
        u = AbsorbUser.model_validate(row)  # once: the learner and its membership
        member = u.membership()
        return [u.learner(row, self.departments), *([member] if member else [])], u.dateEdited


class CoursesStream(_Stream):
    name, path, records = "courses", "/courses", "courses"
    full_refresh_tables = ("courses",)
    total_table = "courses"

    def read(self, ctx: ReadContext) -> Iterator[Record | Checkpoint]:
        self.categories = self.conn.lookup("/categories", "categories", ctx)
        yield from super().read(ctx)

    def records_of(self, row: dict[str, Any], ctx: ReadContext) -> tuple[list[Record], datetime | None]:
        c = AbsorbCourse.model_validate(row)
        return [c.course(row, self.categories)], c.dateEdited


Pair = tuple[str, str]  # (user id, course id)
KIND = "/courses/{id}/enrollments"  # every course's list: one kind (sorted or not alike)


class EnrollmentsStream(_Stream):
    name, records = "enrollments", "enrollments"
    total_table = "enrollments"

    def __init__(self, conn: AbsorbConnector) -> None:
        super().__init__(conn)
        lessons = self.conn.options.lesson_enrollments
        self.full_refresh_tables = ("enrollments", "activity_progress") if lessons else ("enrollments",)
        self.http = self.walk.http
        self.seen: datetime | None = None

    def read(self, ctx: ReadContext) -> Iterator[Record | Checkpoint]:
        saved, start = self.window(ctx)
        course_ids = list(dict.fromkeys(r["id"] for page in self.pages("/courses", None, records="courses")
                                        for r in page.rows if r.get("id")))
        ctx.count("course_calls", len(course_ids))  # (worker threads do not touch ctx)
        self.seen = None
        pairs = self.enrollments(ctx, start, course_ids)
        if self.conn.options.lesson_enrollments:  # lesson calls: most of this source's requests
            yield from fields.calls_beside(self.http, pairs, self.fetch,
                                           lambda got: self.lessons(ctx, *got), READY_MAX)
        else:
            yield from (record for record, _ in pairs)
        yield self.checkpoint(saved, self.seen)

    def enrollments(self, ctx: ReadContext, start: datetime | None,
                    course_ids: list[str]) -> Iterator[tuple[Record, Pair | None]]:
        """(record, the (user, course) whose lessons to read, or None), page by page: pages of
        several courses at once, never a whole course in memory. A course's total and its
        historical rows count when its list has been read whole."""
        historical: dict[str, int] = {}  # per course list being read: its superseded rows
        for page in self.http.interleave(lambda c: self.pages(  # 404: a course deleted since listed
                f"/courses/{fields.segment(c)}/enrollments", start, kind=KIND, gone=(404,)), course_ids):
            before = historical.pop(page.path, 0)
            old = 0 if page.restart else before  # a re-read counts its list afresh
            values = page.values or [fields.second_of(row.get("dateEdited")) for row in page.rows]
            if edited := max(filter(None, values), default=None):
                self.seen = max(self.seen, edited) if self.seen else edited
            active = [row for row in page.rows if row.get("isActive") is not False]
            old += len(page.rows) - len(active)
            for record in ctx.valid(active, normalize_enrollment):
                started = record.status != NOT_STARTED or record.progress_pct
                yield record, (record.learner_external_id, record.course_external_id) if started else None
            if not page.last:
                historical[page.path] = old
                continue
            if old:  # in Absorb's total, not stored: one row per learner and course
                ctx.exclude("historical_skipped", old)
            if start is None and page.total is not None:
                ctx.report_total(page.total)

    def lesson_path(self, user_id: str, course_id: str) -> str:
        return self.conn.options.lesson_path.format(userId=fields.segment(user_id),
                                                    courseId=fields.segment(course_id))

    def fetch(self, pair: Pair) -> tuple[str, str, Any]:
        """A (user, course)'s lesson enrollments (None: 404), in a worker thread."""
        resp = self.http.get(self.lesson_path(*pair), accept=(404,))
        return *pair, None if resp.status_code == 404 else self.http.json_of(resp)

    def lessons(self, ctx: ReadContext, user_id: str, course_id: str, body: Any) -> Iterator[Record]:
        """One call's lesson records. A 404 is an enrollment gone meanwhile, unless most of at
        least LESSON_404_MIN calls are: a lesson path this portal lacks, IncompleteRead."""
        ctx.count("lesson_calls")
        if body is None:
            ctx.count("lesson_404")
            calls, missing = ctx.counters["lesson_calls"], ctx.counters["lesson_404"]
            if calls >= LESSON_404_MIN and 2 * missing > calls:
                raise IncompleteRead(
                    f"{missing} of {calls} lesson enrollment calls answered 404", source=self.conn.source.id,
                    path=self.conn.options.lesson_path,
                    fix="set options.lesson_path to this portal's path of a user's lesson enrollments in a "
                        "course (or options.lesson_enrollments: false); enrollments read are kept, nothing "
                        "was soft-deleted and the cursor was kept")
            return
        rows = body.get("lessonEnrollments") if isinstance(body, dict) else body
        if not isinstance(rows, list):
            raise DataError("lesson enrollments are not a list", source=self.conn.source.id,
                            path=self.lesson_path(user_id, course_id))
        yield from ctx.valid(rows, lambda row: normalize_lesson(row, user_id, course_id))
