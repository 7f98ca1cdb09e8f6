"""iSpring Learn REST API (XML), ``kind: ispring``.

Auth: OAuth2 client credentials (``POST /api/v3/token``, or ``<base_url>/token`` when
``base_url`` ends in ``/api/v3``) -> a bearer token, renewed a minute before it expires and
once on a 401. Lists: XML paged by ``pageToken``, read safely (:mod:`lms_sync.http.xmlpage`).
No totals (status shows ``N/-``), no change feed: every run reads everything. The row models
and row -> records functions are in :mod:`lms_sync.connectors.ispring_records`.

* ``users``    GET /departments, GET /users/v2 -> org units (a tree), learners, memberships
* ``results``  GET /contents (titles), GET /learners/modules/results -> courses, modules,
               enrollments (``user_statuses`` 1 and 3 by default: leavers' history too)

``department_ids`` (and their sub-departments) restrict both streams. See
docs/vendors/ispring.md: external ids, course titles, statuses, XML, guesses.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from typing import Any, Literal

import httpx
from pydantic import Field, SecretStr

from lms_sync.canonical import OrgUnit, Record
from lms_sync.connectors.base import Checkpoint, Connector, ReadContext, Settings, Stream
from lms_sync.connectors.ispring_records import (
    Department,
    IspringContentItem,
    IspringResult,
    content_titles,
    department_unit,
    normalize_result,
    user_records,
)
from lms_sync.connectors.rest import RestStream, describe_json, fetch_token
from lms_sync.errors import RequestRejected
from lms_sync.http import xmlpage
from lms_sync.http.auth import Token, TokenAuth
from lms_sync.http.paging import PageTokenPaginator
from lms_sync.keyset import KeySet


class XmlRows(xmlpage.XmlRows):
    """A page of iSpring's: its next token is sometimes spelled ``nextPageToekn``."""

    token_tags = ("nextPageToken", "nextPageToekn")
    fix = "the vendor sent a broken page; retry later or report it to iSpring"
    dtd_fix = "check that base_url points at iSpring Learn"


def token_path(base_url: str) -> str:
    """The token endpoint under ``base_url``: ``/api/v3/token`` below the host (or a proxy's
    prefix), or just ``token`` when ``base_url`` already ends in the ``/api/v3`` root."""
    path = httpx.URL(base_url).path.rstrip("/")
    return "token" if path.endswith("/api/v3") else "/api/v3/token"


def describe_error(response: httpx.Response) -> str | None:
    """``<response><code/><message/></response>``, a JSON error, or a plain-text line."""
    body = response.content[:65536].strip()
    if body.startswith(b"<"):
        return xmlpage.xml_text(body, ("code", "message"))
    if body.startswith(b"{"):
        return describe_json("error_description", "message", "error")(response)
    text = body.decode("utf-8", "replace").strip()
    return text.splitlines()[0][:200] if text else None


class IspringAuth(Settings):
    client_id: str = Field(min_length=1)
    client_secret: SecretStr


class IspringOptions(Settings):
    page_size: int = Field(default=1000, ge=1, le=1000)
    user_statuses: list[int] = Field(default_factory=lambda: [1, 3], min_length=1)
    """[guess] the results endpoint documents 1 (active) and 3 (blocked; leavers are 3 there);
    the vendor's OpenAPI also lists 5 (terminated): add it if leavers' results are filed there."""
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
        self.make_client(auth=TokenAuth(self._fetch_token), describe_error=describe_error)
        self._departments: dict[str, OrgUnit] | None = None

    def _fetch_token(self, client: httpx.Client) -> Token:
        assert self.http is not None
        form = {"client_id": self.auth.client_id, "grant_type": "client_credentials",
                "client_secret": self.auth.client_secret.get_secret_value()}
        return fetch_token(
            client, self.http.url(token_path(self.source.base_url)), source=self.source.id,
            rejected=(400, 401, 403), refused="the token endpoint refused the client credentials",
            fix="check auth.client_id and auth.client_secret", describe=describe_error,
            parse=lambda d: Token(str(d["access_token"]),
                                  time.monotonic() + float(d.get("expires_in") or 1800)),
            data=form, headers={"Accept": "application/json"})

    def rows(self, ctx: ReadContext, path: str, tag: str,
             params: dict[str, Any] | None = None) -> Iterator[dict[str, Any]]:
        """Every ``tag`` row of a pageToken-paged XML list."""
        assert self.http is not None
        decode = XmlRows.decoder(tag, source=self.source.id, path=path)
        for page in self.http.paginate(path, PageTokenPaginator("pageToken", token_key="next"),
                                       params={**(params or {}), "pageSize": self.options.page_size},
                                       records="rows", decode=decode):
            ctx.count("pages")
            yield from page.rows
            page.rows.clear()  # this page's rows go before the next request (bounded memory)

    def valid(self, ctx: ReadContext, path: str, tag: str, key: Callable[[dict[str, Any]], Any],
              make: Callable[[dict[str, Any]], Any]) -> list[Any]:
        """What ``make`` makes of every row of a list, less the invalid ones (skipped)."""
        made = (ctx.normalize(key(row), lambda r=row: make(r)) for row in self.rows(ctx, path, tag))
        return [m for m in made if m is not None]

    def departments(self, ctx: ReadContext) -> dict[str, OrgUnit]:
        """Department id -> its org unit, read once per run."""
        if self._departments is None:
            units = self.valid(ctx, "/departments", "department", lambda r: r.get("departmentId"),
                               lambda r: department_unit(Department.model_validate(r), r))
            self._departments = {u.external_id: u for u in units}
        return self._departments

    def department_scope(self, ctx: ReadContext) -> set[str] | None:
        """``department_ids`` and all their sub-departments (None: no filter)."""
        if not (scope := set(self.options.department_ids)):
            return None
        units = self.departments(ctx).values()
        while more := {u.external_id for u in units if u.parent_external_id in scope} - scope:
            scope |= more
        return scope

    def streams(self) -> list[Stream]:
        return [UsersStream(self), ResultsStream(self)]


class _List(RestStream):
    """A list of ``row_tag`` rows, read through the connector; the cursor counts the read."""

    row_tag: str
    counted: str

    def __init__(self, conn: IspringConnector) -> None:
        assert conn.http is not None
        super().__init__(conn.http)
        self.conn, self.options, self.n = conn, conn.options, 0

    def rows(self, ctx: ReadContext) -> Iterator[dict[str, Any]]:
        return self.conn.rows(ctx, self.path, self.row_tag, self.params_for(ctx))

    def cursor(self, ctx: ReadContext) -> Checkpoint:
        return Checkpoint({"full_read": True, self.counted: self.n})


class UsersStream(_List):
    name, path, row_tag, id_key, counted = "users", "/users/v2", "userProfile", "userId", "learners"
    full_refresh_tables = ("learners", "org_units", "learner_org_units")
    total_table = "learners"  # no vendor total: status shows the distinct rows read only

    def read(self, ctx: ReadContext) -> Iterator[Record | Checkpoint]:
        self.depts, self.scope, self.n = self.conn.departments(ctx), self.conn.department_scope(ctx), 0
        yield from (u for u in self.depts.values() if self.scope is None or u.external_id in self.scope)
        yield from super().read(ctx)

    def normalize(self, row: dict[str, Any], ctx: ReadContext) -> list[Record]:
        learner, member = user_records(row, self.depts, self.options.hr_id_field)
        if self.scope is not None and row.get("departmentId") not in self.scope:
            return []
        self.n += 1
        return [learner] if member is None else [learner, member]


class ResultsStream(_List):
    name, path, row_tag, counted = "results", "/learners/modules/results", "result", "results"
    full_refresh_tables = ("enrollments", "courses")
    total_table = "enrollments"  # no vendor total, as above

    def params_for(self, ctx: ReadContext) -> dict[str, Any]:
        scope, o = self.conn.department_scope(ctx), self.options
        params = {"userStatuses[]": o.user_statuses, "courseIds[]": o.course_ids,
                  "departmentIds[]": sorted(scope or ())}
        return {k: v for k, v in params.items() if v}

    def course_titles(self, ctx: ReadContext) -> dict[str, str]:
        """Content item id -> title from ``GET /contents``; empty (logged, counted) when the
        API user may not list content (403) or the account has no such endpoint (404)."""
        try:
            return content_titles(self.conn.valid(
                ctx, "/contents", "contentItem", lambda r: r.get("contentItemId") or r.get("id"),
                IspringContentItem.model_validate))
        except RequestRejected as exc:
            if exc.status not in (403, 404):
                raise
            ctx.count("contents_unavailable")
            ctx.log.warning("contents.unavailable", status=exc.status, path="/contents",
                            reason=exc.message, fix="allow the API user to view content "
                            "(\"View and enroll users into training programs\") to get course titles")
            return {}

    def read(self, ctx: ReadContext) -> Iterator[Record | Checkpoint]:
        params, self.titles, self.n = self.params_for(ctx), self.course_titles(ctx), 0
        self.seen = KeySet()  # courses and modules already emitted (every result repeats them)
        try:
            for row in self.conn.rows(ctx, self.path, self.row_tag, params):
                yield from ctx.normalize(f"{row.get('enrollmentId')}:{row.get('moduleId')}",
                                         lambda r=row: self.normalize(r, ctx)) or ()
        except RequestRejected as exc:
            raise self.statuses_rejected(exc) or exc from None
        yield self.cursor(ctx)

    def statuses_rejected(self, exc: RequestRejected) -> RequestRejected | None:
        """A 400 whose body names ``userStatuses``, as the config error it is (None: another 400)."""
        if exc.status != 400 or not re.search(r"user_?statuses|user status", exc.message, re.IGNORECASE):
            return None
        return RequestRejected(
            f"the results endpoint refused userStatuses {self.options.user_statuses} "
            f"({exc.message.split(': ', 1)[-1]})", source=exc.source, path=exc.path, status=400,
            fix="set options.user_statuses to statuses it accepts: 1 (active) and 3 (blocked, "
                "leavers included), the default [1, 3]")

    def normalize(self, row: dict[str, Any], ctx: ReadContext) -> list[Record]:
        course, module, enrollment = normalize_result(
            IspringResult.model_validate(row), row, self.titles.get(row.get("courseId") or ""),
            self.options.time_spent_unit)
        self.n += 1
        return [r for r in (course, module) if self.seen.add(f"{r.table}:{r.external_id}")] + [enrollment]
