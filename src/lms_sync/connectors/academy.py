"""Monotree academy (``kind: academy``): Open API statistics, users, per-user progress.

A ``mono_`` key as Bearer, scopes ``read:stats`` (``/stats/academy/*``) and ``read:users``;
a 401 is fatal for the source, a 403 fails the stream naming the scope. Budget:
``requests_per_minute`` (burst 1), ``max_requests_per_run``. Streams, in order:

* ``users``     /users (``links.next``, ``meta.total``) -> learners (kiosk, bot:
                ``is_placeholder``), their ``groups[]`` -> org units, memberships
* ``stats``     /stats/academy/* aggregates -> stat_snapshots (+ the courses, journeys)
* ``progress``  the user sweep (its state and cursor: ``academy_sweep``):
                /stats/academy/users/{id}/courses and .../onboarding -> enrollments

See docs/vendors/academy.md: external ids, full and incremental sweeps, 404 waves, guesses.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import replace
from datetime import UTC, date
from typing import Any

import httpx
from pydantic import Field, SecretStr

from lms_sync.canonical import CourseKind, Record
from lms_sync.connectors.academy_records import (
    NO_RECORD_TYPES,
    ONBOARDING_ID,
    aggregate_records,
    course_record,
    course_rows,
    onboarding_enrollment,
    question_snapshot,
    user_records,
)
from lms_sync.connectors.academy_sweep import FULL, INCREMENTAL, SweepState, SweepUser, SweepUsers
from lms_sync.connectors.base import Checkpoint, Connector, NotFoundWave, ReadContext, Settings, Stream
from lms_sync.connectors.rest import RestStream, describe_json, json_member, json_or_none, reworded
from lms_sync.errors import RequestRejected
from lms_sync.http.auth import HeaderAuth
from lms_sync.http.paging import NextUrlPaginator, dig

CHECKPOINT_EVERY = 50
"""Users per sweep checkpoint: a crash re-visits at most this many (2 requests each)."""
WAVE_WHAT = "users visited (/stats/academy/users/{id}/courses or /onboarding)"
WAVE_FIX = ("check base_url (the customer's own host, https://<customer>.monotree.com) and that "
            "auth.api_key is that customer's key; if both are right, report it to Monotree")

describe_error = describe_json("message")
"""Monotree (Laravel) error bodies: ``{"message": "..."}``."""


class AcademyAuth(Settings):
    api_key: SecretStr


class AcademyOptions(Settings):
    quiz_ids: list[int] = []
    group_sets: dict[str, list[int]] = {}
    requests_per_minute: float = Field(default=60, gt=0)
    max_requests_per_run: int | None = Field(default=None, ge=1)
    page_size: int = Field(default=50, ge=1, le=50)
    sweep_skip_types: list[str] = ["kiosk", "bot"]  # [guess] no academy record (they 404): not swept
    full_sweep_every_days: int = Field(default=7, ge=0)  # 0: every sweep full (docs/vendors/academy.md)


class AcademyConnector(Connector):
    kind = "academy"
    Auth = AcademyAuth
    Options = AcademyOptions

    def __init__(self, source: Any, log: Any) -> None:
        super().__init__(source, log)
        rps = min(filter(None, (self.options.requests_per_minute / 60, source.http.requests_per_second)))
        key = self.auth.api_key.get_secret_value()
        # burst 1: the vendor counts per fixed minute; a burst would let 63 through a run's first (60 allowed)
        self.http = self.make_client(HeaderAuth({"Authorization": f"Bearer {key}"}),
                                     describe_error, requests_per_second=rps, burst=1)
        self.prefix = "" if source.base_url.rstrip("/").endswith("/api/open/v1") else "api/open/v1/"
        self.users: SweepUsers | None = None  # the complete list, once read this run
        self.emitted: set[str] = set()                    # course ids yielded this run
        self.course_ids: set[str] | None = None           # from the unfiltered aggregate, this run
        self.onboarding_course = course_record(ONBOARDING_ID, "Onboarding", CourseKind.ONBOARDING)

    def streams(self) -> list[Stream]:
        return [UsersStream(self), StatsStream(self), ProgressStream(self)]

    def check(self) -> None:
        self.get("users", "read:users", params={"page": 1, "per_page": 1})
        self.get("stats/academy/onboarding", "read:stats")

    def scoped(self, scope: str) -> AbstractContextManager[None]:
        """A block whose failures are made readable (a revoked key, a missing ``scope``)."""
        return reworded(self.source.id, {
            401: ("the API key was rejected (expired or revoked)",
                  "create a mono_ key with scopes read:stats and read:users; set auth.api_key"),
            403: (f"the API key lacks the {scope} scope", f"grant the key the {scope} scope in Monotree")})

    def get(self, path: str, scope: str, *, params: Any = None,
            accept: tuple[int, ...] = ()) -> httpx.Response:
        assert self.http is not None
        with self.scoped(scope):
            return self.http.get(self.prefix + path, params=params, accept=accept)

    def body(self, response: httpx.Response, want: type = list) -> Any:
        """The ``data`` member of the JSON body."""
        return json_member(response, "data", want, self.source.id)

    def all_users(self, ctx: ReadContext) -> SweepUsers:
        """Every user the sweep visits (not of ``sweep_skip_types``), slimmed to what it
        reads; listed once a run (by the users stream, else here: whole, no total)."""
        if self.users is None:
            whole = replace(ctx, since=None, partial=True, counters={})
            self.users = SweepUsers.of(UsersStream(self).rows(whole), self.options.sweep_skip_types)
        return self.users

    def aggregate(self, what: str, set_name: str, ids: list[int] | None, want: type) -> Any:
        if not ids:
            return self.body(self.get(f"stats/academy/{what}", "read:stats"), want)
        response = self.get(f"stats/academy/{what}", "read:stats",
                            params={"group_ids": ",".join(map(str, ids))}, accept=(422,))
        if response.status_code == 422:
            errors = dig(json_or_none(response), "errors") or {}
            bad = sorted({ids[int(n)] for key in errors
                          for n in re.findall(r"group_ids\.(\d+)", key) if int(n) < len(ids)})
            raise RequestRejected(
                f"group set {set_name!r}: unknown group id(s) {', '.join(map(str, bad or ids))}",
                source=self.source.id, path=response.request.url.path, status=422,
                fix=f"remove them from options.group_sets.{set_name} (Monotree group ids)")
        return self.body(response, want)

    def fetch_progress(self, user: SweepUser) -> tuple[SweepUser, Any, Any]:
        base = f"stats/academy/users/{user.id}"
        courses = self.get(f"{base}/courses", "read:stats", accept=(404,))
        if courses.status_code == 404:
            return user, None, None  # no academy record: onboarding would 404 too
        onboarding = self.get(f"{base}/onboarding", "read:stats", accept=(404,))
        return (user, self.body(courses),
                None if onboarding.status_code == 404 else self.body(onboarding, dict))

    def sweep_size(self, wanted: int, ctx: ReadContext) -> int:
        if (cap := self.options.max_requests_per_run) is None or self.http is None:
            return wanted
        if (left := cap - self.http.stats["requests"]) < 2:
            ctx.log.warning("sweep.budget_exhausted", max_requests_per_run=cap,
                            used=self.http.stats["requests"], fix="raise max_requests_per_run")
        return min(wanted, max(1, left // 2))


class UsersStream(RestStream):
    name = "users"
    full_refresh_tables = ("learners", "org_units", "learner_org_units")
    total_table = "learners"  # meta.total of a full read; kiosks and bots are yielded too
    path, records, total_key = "users", "data", "meta.total"

    def __init__(self, c: AcademyConnector) -> None:
        assert c.http is not None
        super().__init__(c.http)
        self.c = c

    def params_for(self, ctx: ReadContext) -> dict[str, Any]:
        return {"page": 1, "per_page": self.c.options.page_size,
                **({"since": ctx.since.isoformat()} if ctx.since else {})}

    def paginator(self, ctx: ReadContext) -> NextUrlPaginator:
        return NextUrlPaginator(next_key="links.next")

    def rows(self, ctx: ReadContext) -> Iterator[dict[str, Any]]:
        with self.c.scoped("read:users"):
            for page in self.pages(ctx, self.c.prefix + self.path):
                yield from page.rows

    def read(self, ctx: ReadContext) -> Iterator[Record | Checkpoint]:
        ctx.partial = ctx.since is not None
        kept = None if ctx.partial else SweepUsers(self.c.options.sweep_skip_types)  # for the sweep
        units: set[str] = set()  # groups yielded this read (every member repeats them)
        for row in self.rows(ctx):
            if kept is not None:
                kept.add(row)
            learner, groups = ctx.normalize(row.get("id"), lambda r=row: user_records(r)) or (None, [])
            yield from [learner] if learner else []
            for unit, member in groups:
                if unit.external_id not in units:
                    units.add(unit.external_id)
                    yield unit
                yield member
        if kept is not None:
            self.c.users = kept.sorted()
        yield Checkpoint({"listed_at": ctx.started_at.isoformat()})  # informative: always full


class StatsStream(Stream):
    name = "stats"
    full_refresh_tables = ()  # no soft deletes of courses: the sweep yields courses too (docs)

    def __init__(self, c: AcademyConnector) -> None:
        self.c = c

    def read(self, ctx: ReadContext) -> Iterator[Record | Checkpoint]:
        c = self.c
        for key, ids in [("", None), *c.options.group_sets.items()]:
            rows = [("onboarding", c.aggregate("onboarding", key, ids, dict))]
            rows += [(k, r) for k in ("courses", "journeys") for r in c.aggregate(k, key, ids, list)]
            if not key:  # the course list decides whether the next user sweep must be full
                c.course_ids = {str(r.get("id")) for k, r in rows if k == "courses" and isinstance(r, dict)}
            for kind, row in rows:
                if not isinstance(row, dict):
                    ctx.skip(kind, f"not an object: {str(row)[:50]}")
                    continue
                course, snap = ctx.normalize(f"{kind}:{row.get('id', '')}", lambda k=kind, r=row, g=key:
                                             aggregate_records(k, r, g)) or (None, None)
                if course is not None and course.external_id == ONBOARDING_ID:
                    c.onboarding_course = course
                elif course is not None:
                    yield course
                    c.emitted.add(course.external_id)
                yield from [snap] if snap else []
        yield c.onboarding_course
        c.emitted.add(ONBOARDING_ID)
        for quiz_id in c.options.quiz_ids:
            response = c.get(f"stats/academy/quizzes/{quiz_id}", "read:stats", accept=(404,))
            if response.status_code == 404:
                ctx.count("quizzes_gone")
                ctx.log.warning("quiz.gone", quiz_id=quiz_id, fix="remove it from options.quiz_ids")
                continue
            for row in c.body(response):
                snap = ctx.normalize(f"quiz {quiz_id}", lambda r=row, q=quiz_id: question_snapshot(q, r))
                yield from [snap] if snap else []
        yield Checkpoint({"as_of": ctx.started_at.isoformat()})


class ProgressStream(Stream):
    name = "progress"
    full_refresh_tables = ("enrollments",)

    def __init__(self, c: AcademyConnector) -> None:
        self.c = c

    def read(self, ctx: ReadContext) -> Iterator[Record | Checkpoint]:
        c, st = self.c, SweepState.from_cursor(ctx.cursor)
        users = c.all_users(ctx)  # in id order, without the types the sweep skips
        ids, today = users.ids, ctx.started_at.astimezone(UTC).date()  # ids: a user's position by bisect
        fresh = st.after_id is None  # this run starts a sweep
        if fresh:
            first = "full refresh" if ctx.full_refresh else "first sweep" if ctx.cursor is None else None
            reason = st.plan(c.course_ids, c.options.full_sweep_every_days, today, first)
            ctx.log.info("sweep.started", sweep=st.sweep, mode=st.mode, reason=reason)
        rest, todo, why = st.pick(users, today)  # positions, not users
        batch = todo[: c.sweep_size(len(todo), ctx)]
        complete = len(batch) == len(todo)
        if ONBOARDING_ID not in c.emitted:
            yield c.onboarding_course
            c.emitted.add(ONBOARDING_ID)
        assert c.http is not None
        wave = NotFoundWave(WAVE_WHAT, WAVE_FIX)
        for visited, (user, courses, onboarding) in enumerate(
                c.http.map_concurrent(c.fetch_progress, (users[i] for i in batch)), 1):
            if (user.type or "").lower() not in NO_RECORD_TYPES:
                wave.add(courses is not None and onboarding is not None)
            if courses is None:
                ctx.count("users_without_record")
            else:
                yield from self.records(ctx, user, courses, onboarding, today)
            ctx.count("users_swept")
            st.note(user.id, courses, onboarding, today)
            st.after_id, st.done, st.total = user.id, users.position_after(user.id), len(users)
            if visited % CHECKPOINT_EVERY == 0 or visited == len(batch):
                wave.check(ctx.source_id)  # a wave of 404s never reaches a cursor
                yield Checkpoint(st.to_cursor())  # not per user: docs/vendors/academy.md
            if visited % 100 == 0:
                ctx.log.info("sweep.progress", sweep=st.sweep, mode=st.mode, done=st.done, total=st.total)
        # users this run passed over without a visit (the rest wait for the next run)
        end = None if complete or not batch else ids[batch[-1]]
        skipped = sum(1 for i in rest if end is None or ids[i] <= end) - len(batch)
        ctx.count("users_unchanged", skipped)
        ctx.partial = not (fresh and st.mode == FULL and complete)
        reasons = {w: sum(1 for i in batch if why.get(ids[i]) == w) for w in ("new", "active", "open")}
        ctx.log.info("sweep.progress", sweep=st.sweep, mode=st.mode, done=len(users) if complete else st.done,
                     total=len(users), complete=complete, visited=len(batch), skipped=skipped,
                     **({"why": reasons} if st.mode == INCREMENTAL else {}))
        if complete:
            st.total = len(users)
            st.finish(ids)
            yield Checkpoint(st.to_cursor())

    def records(self, ctx: ReadContext, user: SweepUser, courses: list[Any],
                onboarding: dict[str, Any] | None, today: date) -> Iterator[Record]:
        uid, emitted = user.id, self.c.emitted
        for row in courses:
            cid = row.get("course_id") if isinstance(row, dict) else None
            pair = ctx.normalize(f"{uid}:{cid}", lambda r=row: course_rows(uid, r, emitted)) or ()
            yield from (record for record in pair if record is not None)
        if onboarding is not None:
            enrollment = ctx.normalize(f"{uid}:onboarding",
                                       lambda: onboarding_enrollment(user._asdict(), onboarding, today))
            yield from [enrollment] if enrollment else []
