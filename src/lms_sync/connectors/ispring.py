"""iSpring Learn REST API (XML), ``kind: ispring``.

Auth: ``POST /api/v3/token`` (client credentials) -> a bearer token, renewed a minute before
it expires and once on a 401 (a ``base_url`` ending in ``/api/v3`` gets it from
``<base_url>/token``). Lists are XML paged by ``pageToken``, parsed with lxml row by row
(entities, DTD and network off; a body declaring a DTD is refused).

Streams (no change feed: every run reads everything; the warehouse skips unchanged rows
and soft-deletes what a complete read no longer returns):

* ``users``    GET /departments, GET /users/v2 -> learners
* ``results``  GET /contents (titles), GET /learners/modules/results -> courses, modules,
               enrollments

Contract facts: iSpring reports no total for any list, so a short read cannot be proven
(``lms-sync status`` shows ``N/-``). Results are asked for ``user_statuses`` (default 1 and
3: the vendor's default, active only, would drop leavers' history). External ids: learner
``userId``; course ``courseId``; module ``courseId:moduleId``; enrollment
``enrollmentId:moduleId``, else ``userId:courseId:moduleId``. ``department_ids`` (with
their sub-departments) restrict both streams.

See docs/vendors/ispring.md: course titles, statuses, XML, guesses.
"""

from __future__ import annotations

import io
import json
import re
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any, Literal

import httpx
from lxml import etree
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, SecretStr

from lms_sync.canonical import Course, CourseKind, Enrollment, EnrollmentStatus, Learner
from lms_sync.connectors.base import Checkpoint, Connector, ReadContext, Settings, Stream
from lms_sync.errors import CredentialsRejected, DataError, RequestRejected
from lms_sync.http.auth import Token, TokenAuth
from lms_sync.http.errors import classify_response, classify_transport
from lms_sync.http.paging import PageTokenPaginator
from lms_sync.keyset import KeySet

TOKEN_PATH = "/api/v3/token"
API_ROOT = "/api/v3"
USER_STATUSES_REJECTED = re.compile(r"user_?statuses|user status", re.IGNORECASE)
SAFE_XML = dict(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False)

STATUS_MAP: dict[str, tuple[EnrollmentStatus, bool | None]] = {
    "not_started": (EnrollmentStatus.NOT_STARTED, None),
    "in_progress": (EnrollmentStatus.IN_PROGRESS, None),
    "pending": (EnrollmentStatus.PENDING, None),
    "complete": (EnrollmentStatus.COMPLETED, None),
    "passed": (EnrollmentStatus.COMPLETED, True),
    "accepted": (EnrollmentStatus.COMPLETED, None),
    "incomplete": (EnrollmentStatus.INCOMPLETE, None),
    "failed": (EnrollmentStatus.FAILED, False),
    "declined": (EnrollmentStatus.DECLINED, None),
}
ACTIVE_STATUS = 1
PROFILE_FIELDS = {"FIRST_NAME": "firstName", "LAST_NAME": "lastName", "EMAIL": "email", "LOGIN": "login"}


# ---------------------------------------------------------------------------- XML


class XmlRows:
    """The ``row_tag`` elements of one XML page as dicts, streamed; ``next_token`` is set
    once the rows are exhausted. Errors name the source, path and page."""

    def __init__(self, body: bytes, row_tag: str, *, source: str = "", path: str = "",
                 page: int = 1) -> None:
        self.body, self.row_tag, self.source, self.path, self.page = body, row_tag, source, path, page
        self.next_token: str | None = None

    def _error(self, problem: str, fix: str = "the vendor sent a broken page; retry later or "
               "report it to iSpring") -> DataError:
        return DataError(f"page {self.page} of {self.path or 'the response'}: {problem}",
                         source=self.source, fix=fix)

    def _refuse_dtd(self, el: Any) -> None:
        if el is not None and el.getroottree().docinfo.doctype:
            raise self._error("the XML declares a DTD/entities; refused",
                              "check that base_url points at iSpring Learn")

    def __iter__(self) -> Iterator[dict[str, Any]]:
        tags = (self.row_tag, "nextPageToken", "nextPageToekn")
        events = etree.iterparse(io.BytesIO(self.body), events=("end",), tag=tags, **SAFE_XML)
        first = True
        try:
            for _, el in events:
                if first:
                    self._refuse_dtd(el)
                    first = False
                parent = el.getparent()
                grand = parent.getparent() if parent is not None else None
                if el.tag == self.row_tag:
                    if grand is not None and grand.getparent() is None:  # <response><list><row>
                        yield _element_dict(el)
                        el.clear(keep_tail=False)
                        while el.getprevious() is not None:
                            del parent[0]
                elif parent is not None and grand is None:  # a direct child of <response>
                    self.next_token = (el.text or "").strip() or self.next_token
            self._refuse_dtd(events.root)
        except etree.XMLSyntaxError as exc:
            detail = (getattr(exc, "msg", None) or str(exc)).splitlines()[0][:200]
            raise self._error(f"the XML is not well-formed ({detail})") from None


def _element_dict(el: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for child in el:
        if isinstance(child.tag, str):
            out[child.tag] = _element_value(child) if len(child) else (child.text or "").strip() or None
    return out


def _element_value(el: Any) -> Any:
    kids = [c for c in el if isinstance(c.tag, str)]
    if not kids:
        return (el.text or "").strip() or None
    if len({c.tag for c in kids}) == 1 and (len(kids) > 1 or el.tag == kids[0].tag + "s"):
        return [_element_value(c) for c in kids]  # <fields><field>...: a list
    return _element_dict(el)


def token_path(base_url: str) -> str:
    """The token endpoint under ``base_url``: ``/api/v3/token`` below the host (or a proxy's
    prefix), or just ``token`` when ``base_url`` already ends in the ``/api/v3`` root."""
    path = httpx.URL(base_url).path.rstrip("/")
    return "token" if path.endswith(API_ROOT) else TOKEN_PATH


def user_statuses_rejected(exc: RequestRejected, statuses: list[int]) -> RequestRejected | None:
    """A 400 whose body names ``userStatuses``, as the config error it is (None: another 400)."""
    if exc.status != 400 or not USER_STATUSES_REJECTED.search(exc.message):
        return None
    return RequestRejected(
        f"the results endpoint refused userStatuses {statuses} ({exc.message.split(': ', 1)[-1]})",
        source=exc.source, path=exc.path, status=400,
        fix="set options.user_statuses to statuses it accepts: 1 (active) and 3 (blocked, "
            "leavers included), the default [1, 3]")


def describe_error(response: httpx.Response) -> str | None:
    """``<response><code/><message/></response>``, a JSON error, or a plain-text line."""
    body = response.content[:65536].strip()
    if body.startswith(b"<"):
        try:
            root = etree.fromstring(body, etree.XMLParser(**SAFE_XML))
        except etree.XMLSyntaxError:
            return None
        if root.getroottree().docinfo.doctype:
            return None
        parts = [(root.findtext(t) or "").strip() for t in ("code", "message")]
        return ": ".join(p for p in parts if p)[:300] or None
    if body.startswith(b"{"):
        try:
            data = json.loads(body)
        except ValueError:
            return None
        text = data.get("error_description") or data.get("message") or data.get("error")
        return str(text)[:300] if text else None
    text = body.decode("utf-8", "replace").strip()
    return text.splitlines()[0][:200] if text else None


# ---------------------------------------------------------------------------- models


class IspringUser(BaseModel):
    model_config = ConfigDict(extra="allow")
    userId: str = Field(min_length=1)
    status: int | None = None
    departmentId: str | None = None
    login: str | None = None
    email: str | None = None
    firstName: str | None = None
    lastName: str | None = None

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> IspringUser:
        """Profile fields come as ``<fields><field><name>FIRST_NAME</name><value>``."""
        data = dict(row)
        for field in row.get("fields") or []:
            if isinstance(field, dict) and field.get("name") in PROFILE_FIELDS:
                data.setdefault(PROFILE_FIELDS[field["name"]], field.get("value"))
        return cls.model_validate(data)

    def field(self, name: str) -> str | None:
        for field in getattr(self, "fields", None) or []:
            if isinstance(field, dict) and field.get("name") == name:
                return field.get("value")
        return None


class IspringResult(BaseModel):
    model_config = ConfigDict(extra="allow")
    userId: str = Field(min_length=1)
    courseId: str = Field(min_length=1)
    moduleId: str = Field(min_length=1)
    moduleTitle: str | None = None
    courseItemId: str | None = None
    enrollmentId: str | None = None
    accessDate: datetime | None = None
    dueDate: datetime | None = None
    expirationDate: datetime | None = None
    completionDate: datetime | None = None
    timeSpent: float | None = None
    completionStatus: str
    progress: float | None = None
    isOverdue: bool | None = None
    viewsCount: int | None = None
    awardedScore: float | None = None
    passingScore: float | None = None


class IspringContentItem(BaseModel):
    """A ``<contentItem>`` of ``GET /contents`` (field names read tolerantly, see above)."""

    model_config = ConfigDict(extra="allow")
    contentItemId: str = Field(min_length=1, validation_alias=AliasChoices(
        "contentItemId", "contentItemID", "id", "courseId"))
    title: str | None = Field(default=None, validation_alias=AliasChoices("title", "name", "courseTitle"))
    type: str | None = Field(default=None, validation_alias=AliasChoices("type", "contentType"))

    @property
    def is_course(self) -> bool:
        return (self.type or "course").strip().lower() == "course"


def content_titles(items: list[IspringContentItem]) -> dict[str, str]:
    """Content item id -> title; a course wins over another kind of item with the same id."""
    titles: dict[str, str] = {}
    for item in sorted(items, key=lambda i: i.is_course):  # courses last, so they win
        if item.title:
            titles[item.contentItemId] = item.title
    return titles


def normalize_user(user: IspringUser, departments: dict[str, Department], raw: dict[str, Any],
                   hr_id_field: str | None = None) -> Learner:
    dept = departments.get(user.departmentId or "")
    names = [n for n in (user.firstName, user.lastName) if n]
    return Learner(
        external_id=user.userId, email=user.email, first_name=user.firstName,
        last_name=user.lastName, display_name=" ".join(names) or user.login,
        hr_id=user.field(hr_id_field) if hr_id_field else None,
        department=dept.name if dept else None, is_active=user.status == ACTIVE_STATUS, raw=raw,
    )


SECONDS_PER = {"seconds": 1, "minutes": 60}
"""``options.time_spent_unit`` -> seconds in one unit of ``timeSpent``."""


def normalize_result(result: IspringResult, raw: dict[str, Any], course_title: str | None = None,
                     time_unit: str = "seconds") -> tuple[Course, Course, Enrollment]:
    """``course_title`` comes from ``GET /contents`` (results name only the module);
    ``time_unit`` is the unit of ``timeSpent`` (no public document states it)."""
    spent = None if result.timeSpent is None else result.timeSpent * SECONDS_PER[time_unit]
    if result.completionStatus not in STATUS_MAP:
        raise ValueError(f"unknown completionStatus {result.completionStatus!r}")
    status, passed = STATUS_MAP[result.completionStatus]
    course = Course(external_id=result.courseId, kind=CourseKind.COURSE, title=course_title,
                    raw={"courseId": result.courseId})
    module_id = f"{result.courseId}:{result.moduleId}"
    module = Course(external_id=module_id, kind=CourseKind.MODULE, title=result.moduleTitle,
                    parent_external_id=result.courseId,
                    raw={k: raw.get(k) for k in ("courseId", "moduleId", "moduleTitle", "courseItemId")})
    key = (f"{result.enrollmentId}:{result.moduleId}" if result.enrollmentId
           else f"{result.userId}:{result.courseId}:{result.moduleId}")
    enrollment = Enrollment(
        external_id=key, learner_external_id=result.userId, course_external_id=module_id,
        status=status, passed=passed, vendor_status=result.completionStatus,
        progress_pct=result.progress, score=result.awardedScore, time_spent_seconds=spent,
        enrolled_at=result.accessDate, completed_at=result.completionDate, due_at=result.dueDate,
        expires_at=result.expirationDate, is_overdue=result.isOverdue, raw=raw,
    )
    return course, module, enrollment


# ---------------------------------------------------------------------------- connector


class Department(BaseModel):
    model_config = ConfigDict(extra="allow")
    departmentId: str
    name: str | None = None
    parentDepartmentId: str | None = None


class IspringAuth(Settings):
    client_id: str = Field(min_length=1)
    client_secret: SecretStr


class IspringOptions(Settings):
    page_size: int = Field(default=1000, ge=1, le=1000)
    user_statuses: list[int] = Field(default_factory=lambda: [1, 3], min_length=1)
    """[guess] the results endpoint documents 1 (active) and 3 (blocked; leavers are 3 there)."""
    department_ids: list[str] = Field(default_factory=list)
    course_ids: list[str] = Field(default_factory=list)
    hr_id_field: str | None = None
    """Name of a user profile field holding the employee id (e.g. a custom EMPLOYEE_ID)."""
    time_spent_unit: Literal["seconds", "minutes"] = "seconds"
    """[guess] the unit of a result's ``timeSpent``: no public document states it."""


class IspringConnector(Connector):
    kind = "ispring"
    Auth = IspringAuth
    Options = IspringOptions

    def __init__(self, source: Any, log: Any) -> None:
        super().__init__(source, log)
        self.token_auth = TokenAuth(self._fetch_token)
        self.make_client(auth=self.token_auth, describe_error=describe_error)
        self._departments: dict[str, Department] | None = None
        self._titles: dict[str, str] | None = None

    def _fetch_token(self, client: httpx.Client) -> Token:
        assert self.http is not None
        sid = self.source.id
        url = self.http.url(token_path(self.source.base_url))
        form = {"client_id": self.auth.client_id, "grant_type": "client_credentials",
                "client_secret": self.auth.client_secret.get_secret_value()}
        try:
            resp = client.post(url, data=form, headers={"Accept": "application/json"})
        except httpx.TransportError as exc:
            raise classify_transport(exc, sid, url.path) from None
        if resp.status_code in (400, 401, 403):
            detail = describe_error(resp)
            raise CredentialsRejected(
                "the token endpoint refused the client credentials" + (f": {detail}" if detail else ""),
                source=sid, path=url.path, status=resp.status_code,
                fix="check auth.client_id and auth.client_secret")
        error = classify_response(resp, sid, describe_error)
        if error is not None:
            raise error
        try:
            data = resp.json()
            return Token(str(data["access_token"]), time.monotonic() + float(data.get("expires_in") or 1800))
        except (ValueError, KeyError, TypeError):
            raise DataError("the token response is not JSON with access_token", source=sid,
                            path=url.path, status=resp.status_code) from None

    def pages(self, path: str, row_tag: str, params: list[tuple[str, Any]],
              ctx: ReadContext) -> Iterator[dict[str, Any]]:
        """Every row of a pageToken-paged XML list."""
        assert self.http is not None
        pager, page = PageTokenPaginator("pageToken"), 0
        while pager.has_next:
            page += 1
            query = [*params, ("pageSize", self.options.page_size), *pager.next_request().params.items()]
            rows = XmlRows(self.http.get(path, params=query).content, row_tag,
                           source=self.source.id, path=path, page=page)
            count = 0
            for row in rows:
                count += 1
                yield row
            token = rows.next_token
            del rows  # free this page's body before the next request
            ctx.count("pages")
            pager.update(count=count, next_token=token)

    def departments(self, ctx: ReadContext) -> dict[str, Department]:
        if self._departments is None:
            found = {}
            for row in self.pages("/departments", "department", [], ctx):
                dept = ctx.normalize(row.get("departmentId"), lambda r=row: Department.model_validate(r))
                if dept is not None:
                    found[dept.departmentId] = dept
            self._departments = found
        return self._departments

    def course_titles(self, ctx: ReadContext) -> dict[str, str]:
        """Content item id -> title from ``GET /contents``, read once per run; empty (logged,
        counted) when the API user may not list content (403) or the account has no such
        endpoint (404)."""
        if self._titles is None:
            items: list[IspringContentItem] = []
            try:
                for row in self.pages("/contents", "contentItem", [], ctx):
                    item = ctx.normalize(row.get("contentItemId") or row.get("id"),
                                         lambda r=row: IspringContentItem.model_validate(r))
                    if item is not None:
                        items.append(item)
            except RequestRejected as exc:
                if exc.status not in (403, 404):
                    raise
                ctx.count("contents_unavailable")
                ctx.log.warning("contents.unavailable", status=exc.status, path="/contents",
                                reason=exc.message, fix="allow the API user to view content "
                                "(\"View and enroll users into training programs\") to get course titles")
                items = []
            self._titles = content_titles(items)
        return self._titles

    def department_scope(self, ctx: ReadContext) -> set[str] | None:
        """``department_ids`` and all their sub-departments (None: no filter)."""
        if not self.options.department_ids:
            return None
        depts, scope = self.departments(ctx), set(self.options.department_ids)
        grew = True
        while grew:
            more = {d.departmentId for d in depts.values() if d.parentDepartmentId in scope}
            grew = bool(more - scope)
            scope |= more
        return scope

    def streams(self) -> list[Stream]:
        return [UsersStream(self), ResultsStream(self)]


class UsersStream(Stream):
    name = "users"
    full_refresh_tables = ("learners",)
    total_table = "learners"  # no vendor total: status shows the distinct rows read only

    def __init__(self, conn: IspringConnector) -> None:
        self.conn = conn

    def read(self, ctx: ReadContext) -> Iterator[Learner | Checkpoint]:
        depts, scope = self.conn.departments(ctx), self.conn.department_scope(ctx)
        hr_field, n = self.conn.options.hr_id_field, 0
        for row in self.conn.pages("/users/v2", "userProfile", [], ctx):
            learner = ctx.normalize(row.get("userId"), lambda r=row: normalize_user(
                IspringUser.from_row(r), depts, r, hr_field))
            if learner is None or (scope is not None and row.get("departmentId") not in scope):
                continue
            n += 1
            yield learner
        yield Checkpoint({"full_read": True, "learners": n})


class ResultsStream(Stream):
    name = "results"
    full_refresh_tables = ("enrollments", "courses")
    total_table = "enrollments"  # no vendor total, as above

    def __init__(self, conn: IspringConnector) -> None:
        self.conn = conn

    def read(self, ctx: ReadContext) -> Iterator[Course | Enrollment | Checkpoint]:
        opts = self.conn.options
        params: list[tuple[str, Any]] = [("userStatuses[]", s) for s in opts.user_statuses]
        params += [("courseIds[]", c) for c in opts.course_ids]
        scope = self.conn.department_scope(ctx)
        params += [("departmentIds[]", d) for d in sorted(scope or ())]
        titles = self.conn.course_titles(ctx)
        seen = KeySet()  # learners and courses already emitted (every result repeats them)
        n = 0
        try:
            for row in self.conn.pages("/learners/modules/results", "result", params, ctx):
                records = ctx.normalize(f"{row.get('enrollmentId')}:{row.get('moduleId')}",
                                        lambda r=row: normalize_result(
                                            IspringResult.model_validate(r), r,
                                            titles.get(r.get("courseId") or ""), opts.time_spent_unit))
                if records is None:
                    continue
                for record in records[:2]:
                    if seen.add(f"{record.table}:{record.external_id}"):
                        yield record
                n += 1
                yield records[2]
        except RequestRejected as exc:
            raise user_statuses_rejected(exc, opts.user_statuses) or exc from None
        yield Checkpoint({"full_read": True, "results": n})
