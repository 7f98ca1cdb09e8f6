"""A test connector standing in for a vendor: deterministic, no HTTP.

Streams: ``users`` (incremental by a version counter, checkpoint every 50 rows)
and ``enrollments`` (full refresh). Options control size, which rows changed,
which were removed, and a crash after N records (``crash_after``; with
``crash_hard`` the process dies with os._exit, like a kill -9, when the pipeline's writer
reaches the N-th record: the stream itself is read ahead in a thread of its own).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

from pydantic import SecretStr, model_serializer

from lms_sync.canonical import Course, Enrollment, Learner
from lms_sync.connectors.base import Checkpoint, Connector, ReadContext, Settings, Stream


class SyntheticAuth(Settings):
    token: SecretStr = SecretStr("synthetic-token")


class SyntheticOptions(Settings):
    users: int = 300
    courses: int = 5
    changed: list[int] = []      # user indexes whose enrollment progressed
    removed: list[int] = []      # user indexes whose enrollment disappeared
    invalid: list[int] = []      # user indexes whose enrollment fails validation (skipped)
    version: int = 1             # users with index < bumped get this version
    bumped: int = 0
    crash_after: int | None = None
    crash_hard: bool = False
    fail_stream: str | None = None
    fail_message: str = "synthetic failure"  # e.g. a vendor error body that echoes a secret
    delay_ms: float = 0          # wait per 50 users read (a slow vendor)
    users_reported: int = 0      # the vendor's total of users = users + this (full reads)
    enrollments_reported: int | None = None  # the vendor's total of enrollments, if any
    enrollments_excluded: int = 0  # of that total, left out by design
    hold_file: str | None = None  # after the first 100 users, wait until this file exists


class _KilledWhenWritten(Learner):
    """A learner whose serialization (by the writer, never by the reader) kills the process:
    ``encoded()`` runs when the record joins the writer's batch; a dump, in any writer."""

    @model_serializer(mode="wrap")
    def _die(self, handler):  # type: ignore[no-untyped-def]
        os._exit(9)

    def encoded(self):  # type: ignore[no-untyped-def]
        os._exit(9)


class Users(Stream):
    name = "users"
    full_refresh_tables = ()
    total_table = "learners"

    def __init__(self, opts: SyntheticOptions) -> None:
        self.opts = opts

    def read(self, ctx: ReadContext) -> Iterator[Learner | Checkpoint]:
        if self.opts.fail_stream == self.name:
            raise RuntimeError(self.opts.fail_message)
        last = (ctx.cursor or {}).get("position", -1)
        ctx.partial = ctx.cursor is not None
        if not ctx.partial:
            ctx.report_total(self.opts.users + self.opts.users_reported)
        emitted = 0
        for i in range(last + 1, self.opts.users):
            version = self.opts.version if i < self.opts.bumped else 1
            crash = self.opts.crash_after is not None and emitted + 1 >= self.opts.crash_after
            cls = _KilledWhenWritten if crash and self.opts.crash_hard else Learner
            yield cls(external_id=f"u{i}", email=f"User{i}@Example.com ", first_name="Ünï",
                      last_name=f"Number{i}", hr_id=f"H{i}", raw={"i": i, "v": version})
            emitted += 1
            if crash and not self.opts.crash_hard:
                raise RuntimeError("synthetic crash")
            if i % 50 == 49:
                if self.opts.delay_ms:
                    time.sleep(self.opts.delay_ms / 1000)
                yield Checkpoint({"position": i})
                while i == 99 and self.opts.hold_file and not os.path.exists(self.opts.hold_file):
                    time.sleep(0.02)  # a vendor that stalls until the test lets it go on
        yield Checkpoint({"position": self.opts.users - 1})


class Enrollments(Stream):
    name = "enrollments"
    full_refresh_tables = ("enrollments",)
    total_table = "enrollments"

    def __init__(self, opts: SyntheticOptions) -> None:
        self.opts = opts

    def read(self, ctx: ReadContext) -> Iterator[Course | Enrollment | Checkpoint]:
        if self.opts.fail_stream == self.name:
            raise RuntimeError(self.opts.fail_message)
        if self.opts.enrollments_reported is not None:
            ctx.report_total(self.opts.enrollments_reported)
            if self.opts.enrollments_excluded:
                ctx.exclude("synthetic_filtered", self.opts.enrollments_excluded)
        for c in range(self.opts.courses):
            yield Course(external_id=f"c{c}", title=f"Course {c}", duration_minutes=30 + c)
        for i in range(self.opts.users):
            if i in self.opts.removed:
                continue
            done = i in self.opts.changed
            if i in self.opts.invalid:  # a vendor row that no longer validates
                ctx.normalize(f"e{i}", lambda i=i: Enrollment(
                    external_id=f"u{i}:c{i % self.opts.courses}", learner_external_id=f"u{i}",
                    course_external_id=f"c{i % self.opts.courses}", progress_pct=250))
                continue
            yield Enrollment(
                external_id=f"u{i}:c{i % self.opts.courses}", learner_external_id=f"u{i}",
                course_external_id=f"c{i % self.opts.courses}",
                status="completed" if done else "in_progress", progress_pct=100 if done else 40,
                passed=True if done else None, raw={"i": i, "done": done},
            )


class SyntheticConnector(Connector):
    kind = "synthetic"
    Auth = SyntheticAuth
    Options = SyntheticOptions

    def streams(self) -> list[Stream]:
        return [Users(self.options), Enrollments(self.options)]


def register() -> None:
    from lms_sync.connectors import KINDS

    KINDS.setdefault("synthetic", "tests.support.synthetic:SyntheticConnector")
