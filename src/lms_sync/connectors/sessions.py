"""Sparkwise Account API (live facilitated sessions), ``kind: sessions``.

An API key in a header (option ``api_key_header``) on the paths of option ``paths``, both
guesses a 401 names. Streams: ``users`` -> learners (keyed ``remoteId``, else ``id``; the list
in sessions_provision.py); ``clusters`` (whole, every run) -> session and module courses;
``completions`` (time windows, cursor ``{"to": iso}``) -> enrollments, with stubs for the
participants and clusters the lists lack. docs/vendors/sessions.md has the details.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import Field, SecretStr

from lms_sync.canonical import Course, CourseKind, Enrollment, EnrollmentStatus, Learner, Record, utc
from lms_sync.connectors.base import Checkpoint, Connector, ReadContext, Settings, Stream, whole
from lms_sync.connectors.rest import VendorModel, describe_json, iso, time_slices, time_window
from lms_sync.connectors.sessions_provision import FIX_PATHS, SessionsProvisioner, SparkwiseUsers, items
from lms_sync.http import HeaderAuth
from lms_sync.http.paging import dig
from lms_sync.keyset import KeySet

S = EnrollmentStatus
STATUS_RULES: tuple[tuple[dict[str, bool], EnrollmentStatus], ...] = (
    ({"attended": True}, S.COMPLETED), ({"ended": True}, S.ABSENT),
    ({"visited": True}, S.IN_PROGRESS), ({}, S.NOT_STARTED))
"""Facts of a completion -> canonical status; the first rule whose facts all hold wins."""

MODULE_FIELDS = ("moduleId", "moduleName", "moduleCategory", "moduleDescription",
                 "moduleThumbnailUrl", "duration")


class SessionsAuth(Settings):
    api_key: SecretStr


class SessionsPaths(Settings):
    clusters: str = "/v1/session-clusters"
    completions: str = "/v1/session-completions"
    users: str = "/v1/users"
    upsert_users: str = "/v1/users/batch-upsert"          # lms-sync provision (guess)
    deactivate_users: str = "/v1/users/batch-deactivate"  # lms-sync provision (guess)


class SessionsOptions(Settings):
    api_key_header: str = Field("x-api-key", min_length=1)
    paths: SessionsPaths = Field(default_factory=SessionsPaths)
    start_date: datetime | None = None  # default: 365 days before the run
    lag_days: float = Field(7, ge=0)
    window_days: float = Field(31, gt=0)  # one completions request covers at most this
    page_size: int = Field(200, ge=1, le=200)
    user_ref: Literal["remoteId", "id"] = "remoteId"  # how a deactivation names a user (guess)


class User(VendorModel):
    id: str = Field(min_length=1)
    firstName: str | None = None
    lastName: str | None = None
    active: bool | None = None
    remoteId: str | None = None


class Cluster(VendorModel):
    clusterId: str = Field(min_length=1)
    moduleId: str | None = None
    moduleName: str | None = None
    moduleCategory: str | None = None
    moduleDescription: str | None = None
    duration: float | None = None


class Completion(Cluster):
    id: str = Field(min_length=1)
    remoteUserId: str = Field(min_length=1)
    attended: bool = False
    sessionScheduledStartAt: datetime | None = None
    sessionScheduledEndAt: datetime | None = None
    participantFirstVisitedAt: datetime | None = None
    participantLastVisitedAt: datetime | None = None
    timeInSessionMins: float | None = Field(None, ge=0)
    stepsVisited: int | None = None
    percentageStepsVisited: float | None = None
    hash: str | None = None


# Normalizers take the row and, where the caller validated it already, its model (validated once).

def normalize_user(raw: dict[str, Any]) -> Learner:
    u = User.model_validate(raw)
    name = " ".join(p for p in (u.firstName, u.lastName) if p) or None
    return Learner(external_id=u.remoteId or u.id, first_name=u.firstName, last_name=u.lastName,
                   display_name=name, hr_id=u.remoteId, is_active=u.active, raw=raw)


def stub_learner(remote_user_id: str) -> Learner:
    """A participant Sparkwise has no user for: known only by the customer's HR id."""
    return Learner(external_id=remote_user_id, hr_id=remote_user_id, is_active=None,
                   raw={"remoteUserId": remote_user_id, "stub": "no Sparkwise user has this remoteId"})


def normalize_module(raw: dict[str, Any], m: Cluster | None = None) -> Course | None:
    m = m or Cluster.model_validate({"clusterId": "-", **raw})
    if not m.moduleId:
        return None
    return Course(external_id=f"module:{m.moduleId}", kind=CourseKind.MODULE, title=m.moduleName,
                  category=m.moduleCategory, description=m.moduleDescription,
                  duration_minutes=m.duration, raw={k: raw.get(k) for k in MODULE_FIELDS})


def normalize_cluster(raw: dict[str, Any], c: Cluster | None = None) -> Course:
    c = c or Cluster.model_validate(raw)
    return Course(external_id=c.clusterId, kind=CourseKind.SESSION, title=c.moduleName,
                  category=c.moduleCategory, description=c.moduleDescription,
                  duration_minutes=c.duration,
                  parent_external_id=f"module:{c.moduleId}" if c.moduleId else None, raw=raw)


def cluster_courses(raw: dict[str, Any], c: Cluster | None = None) -> list[Course]:
    """A cluster's module course (when it names a module), then its session course."""
    c = c or Cluster.model_validate(raw)
    module = normalize_module(raw, c)
    return [module, normalize_cluster(raw, c)] if module else [normalize_cluster(raw, c)]


def cluster_from_completion(raw: dict[str, Any]) -> dict[str, Any]:
    """The cluster fields a completion repeats (for a cluster the list lacks)."""
    return {"clusterId": raw["clusterId"], **{k: raw.get(k) for k in MODULE_FIELDS},
            "source": "completion"}


def status_of(facts: dict[str, bool]) -> EnrollmentStatus:
    for when, status in STATUS_RULES:
        if all(facts.get(k) == v for k, v in when.items()):
            return status
    raise ValueError(f"no status rule matches {facts}")


def normalize_completion(raw: dict[str, Any], now: datetime, learner_id: str | None = None,
                         c: Completion | None = None) -> Enrollment:
    c = c or Completion.model_validate(raw)
    end = utc(c.sessionScheduledEndAt)
    if end is None and c.sessionScheduledStartAt and c.duration is not None:
        end = utc(c.sessionScheduledStartAt) + timedelta(minutes=c.duration)
    status = status_of({"attended": c.attended, "ended": end is not None and end <= now,
                        "visited": bool(c.participantFirstVisitedAt or c.timeInSessionMins
                                        or c.stepsVisited)})
    return Enrollment(
        external_id=c.id, learner_external_id=learner_id or c.remoteUserId,
        course_external_id=c.clusterId, status=status, passed=None,
        progress_pct=c.percentageStepsVisited,
        time_spent_seconds=None if c.timeInSessionMins is None else c.timeInSessionMins * 60,
        started_at=c.participantFirstVisitedAt, last_activity_at=c.participantLastVisitedAt,
        completed_at=(c.participantLastVisitedAt or end) if status == S.COMPLETED else None,
        due_at=c.sessionScheduledStartAt,
        vendor_status="attended" if c.attended else "not_attended", raw=raw)


def window(cursor: dict[str, Any] | None, since: datetime | None, now: datetime,
           opts: SessionsOptions) -> tuple[datetime, datetime]:
    """[from, to) of this run (first run: from ``start_date``, else 365 days back)."""
    return time_window(cursor.get("to") if cursor else None, since, now, lag_days=opts.lag_days,
                       start=opts.start_date)


slices = time_slices


describe_error = describe_json("error.message", "error", "message")
"""``{"success": false, "error": {"message"}}`` -> the message."""


class SessionsConnector(Connector):
    kind = "sessions"
    Auth = SessionsAuth
    Options = SessionsOptions

    def __init__(self, source: Any, log: Any) -> None:
        super().__init__(source, log)
        key, o = self.auth.api_key.get_secret_value(), self.options
        # both are guesses until a customer confirms them: a 401 names them
        fix = (f"check auth.api_key, then options.api_key_header (sent: {o.api_key_header!r}) and "
               f"options.paths (users: {o.paths.users!r}): Sparkwise publishes neither, ours are guesses")
        self.client = self.make_client(HeaderAuth({o.api_key_header: key}, rejected_fix=fix),
                                       describe_error=describe_error)
        # after the clusters stream only the ids are kept (the rows are ~1 KB each)
        self.known: tuple[KeySet, set[str]] | None = None  # cluster ids, module course ids
        self.users = SparkwiseUsers(self)

    def streams(self) -> list[Stream]:
        return [UsersStream(self), ClustersStream(self), CompletionsStream(self)]

    def provisioner(self) -> SessionsProvisioner:
        return SessionsProvisioner(self)

    def clusters(self) -> tuple[dict[str, dict[str, Any]], int | None, tuple[KeySet, set[str]]]:
        """The cluster list, read now: clusterId -> row, ``data.total`` and the ids kept."""
        path = self.options.paths.clusters
        body = self.client.get_json(path)
        clusters = {c["clusterId"]: c for c in items(body, path, self.source.id) if c.get("clusterId")}
        ids = KeySet()  # a few clusters a person: ~8 bytes each, not ~120 as a set of strings
        for cid in clusters:
            ids.add(cid)
        self.known = (ids, {f"module:{c['moduleId']}" for c in clusters.values() if c.get("moduleId")})
        return clusters, whole(body["data"].get("total")), self.known

    def completions(self, bounds: tuple[datetime, datetime]) -> Iterator[dict[str, Any]]:
        """The window's completions, decoded one at a time as they are consumed."""
        path, lo = self.options.paths.completions, iso(bounds[0])
        rows = self.client.get_json_array(path, params={"from": lo, "to": iso(bounds[1])}, fix=FIX_PATHS)
        self.log.debug("page.fetched", path=path, **{"from": lo})
        return (row for row in rows if isinstance(row, dict))


class _Sparkwise(Stream):
    def __init__(self, connector: SessionsConnector) -> None:
        self.c = connector

    def courses(self, ctx: ReadContext, cid: str, raw: dict[str, Any], modules: set[str],
                c: Cluster | None = None) -> Iterator[Course]:
        """A cluster's courses, its module's only the first time ``modules`` meets it."""
        for course in ctx.normalize(cid, lambda: cluster_courses(raw, c)) or ():
            if course.kind == CourseKind.MODULE:
                if course.external_id in modules:
                    continue
                modules.add(course.external_id)
            yield course


class UsersStream(_Sparkwise):
    name = "users"
    total_table = "learners"  # data.total: one user, one learner (keyed remoteId, else id)

    def read(self, ctx: ReadContext) -> Iterator[Record | Checkpoint]:
        total = None
        for page in self.c.users.pages():
            if (count := whole(dig(page.body, "data.total"))) is not None:
                total = max(total or 0, count)
            for raw in page.rows:
                if (record := ctx.normalize(raw.get("id"), lambda r=raw: normalize_user(r))) is not None:
                    yield record
        if total is not None:
            ctx.report_total(total)
        yield Checkpoint({"read_at": iso(ctx.started_at)})


class ClustersStream(_Sparkwise):
    name = "clusters"
    total_table = "courses"

    def read(self, ctx: ReadContext) -> Iterator[Record | Checkpoint]:
        modules: set[str] = set()
        clusters, total, _ = self.c.clusters()
        for cid, raw in clusters.items():
            yield from self.courses(ctx, cid, raw, modules)
        if total is not None:  # data.total counts clusters; each distinct module is a course too
            ctx.report_total(total + len(modules))
        yield Checkpoint({"read_at": iso(ctx.started_at)})


class CompletionsStream(_Sparkwise):
    name = "completions"

    def read(self, ctx: ReadContext) -> Iterator[Record | Checkpoint]:
        ctx.partial = True  # a window, never the whole history
        opts = self.c.options
        start, end = window(ctx.cursor, ctx.since, ctx.started_at, opts)
        if start >= end:
            ctx.log.info("window.empty", **{"from": iso(start), "to": iso(end)})
            return
        clusters, known_modules = self.c.known or self.c.clusters()[2]
        stubs, extra_clusters, modules = set[str](), set[str](), set(known_modules)
        parts = slices(start, end, opts.window_days)
        # two windows held at a time, decoded item by item (docs/vendors/sessions.md, memory)
        fetched = self.c.client.map_concurrent(self.c.completions, parts, window=2)
        for bounds, rows in zip(parts, fetched, strict=True):
            for raw in rows:
                c = ctx.normalize(raw.get("id"), lambda raw=raw: Completion.model_validate(raw))
                if c is None:
                    continue
                rid, cid = c.remoteUserId, c.clusterId
                key = self.c.users.learner_key_of(rid)
                if key is None and rid not in stubs:
                    stubs.add(rid)
                    ctx.count("unknown_users")
                    ctx.log.warning("learner.unknown", remote_user_id=rid, completion_id=c.id)
                    yield stub_learner(rid)
                if cid not in clusters and cid not in extra_clusters:
                    extra_clusters.add(cid)
                    ctx.count("unknown_clusters")
                    yield from self.courses(ctx, cid, cluster_from_completion(raw), modules, c)
                record = ctx.normalize(c.id, lambda raw=raw, key=key, c=c:
                                       normalize_completion(raw, end, key, c))
                if record is not None:
                    yield record
            yield Checkpoint({"to": iso(bounds[1])})
