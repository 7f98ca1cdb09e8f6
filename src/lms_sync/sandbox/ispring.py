"""Fake iSpring Learn: token auth, XML lists paged by nextPageToken, module results.

Serves ``POST /api/v3/token``, ``GET /departments``, ``GET /users/v2``, ``GET /contents``
(one ``<contentItem>`` of type ``Course`` per course, plus a learning track) and
``GET /learners/modules/results`` with XML bodies shaped as the vendor documents them
(optional elements absent when empty), ``<response><code/><message/></response>`` errors,
``userStatuses[]`` defaulting to active users only, and a 400 for an unknown id in a filter.

Data is generated lazily per person from the shared population (same emails as the other
vendors, non-ASCII names), so 10,000+ people cost nothing until a page is asked for.
Options: ``leaver_status`` is the ``userStatuses[]`` value the results endpoint files leavers
(status 5 on ``/users/v2``) under: 3 as its page documents (5: a vendor that keeps them apart);
``strict_user_statuses`` answers 400 (naming ``userStatuses``) to any value but 1 and 3, as a
validating server would; ``prefix`` mounts every route under a path (``/api/v3``: the API root
as a ``base_url``; the token then sits at ``/api/v3/token``, not below the prefix again).

Tests can expire tokens (:meth:`expire_tokens`, :meth:`expire_tokens_after`), break a page
(:meth:`break_results_page`), serve a hostile body (:meth:`serve_hostile`) and mutate
results (:meth:`remove_results`, :meth:`change_results`) and refuse the content list
(:meth:`deny_contents`); the framework's faults apply too.
"""

from __future__ import annotations

import base64
import hashlib
import random
import secrets
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any
from xml.sax.saxutils import escape

from lms_sync.sandbox.population import EPOCH, Person, Population
from lms_sync.sandbox.server import FakeVendor, Request, Response

NOW = EPOCH + timedelta(days=300)  # the sandbox's fixed "now"
STATUSES = ["not_started", "in_progress", "pending", "complete", "passed", "accepted",
            "incomplete", "failed", "declined"]
STATUS_WEIGHTS = [10, 20, 4, 15, 20, 4, 6, 8, 3]
DONE = {"complete", "passed", "accepted", "failed"}
COURSE_TITLES = ["Arbeitssicherheit – Grundlagen", "Охрана труда", "Code of Conduct 2026",
                 "Datenschutz & DSGVO", "Première connexion", "Kundenservice — Advanced",
                 "Información de seguridad", "Brandschutz <Basis>"]
MODULE_TITLES = ["Einführung", "Video: Überblick", "Quiz «Prüfung»", "Assignment & Review"]
DEPARTMENTS = [  # (key, name, parent key, code)
    ("root", "Ácme Group", None, "ACME"), ("sales", "Vertrieb & Marketing", "root", "S"),
    ("ops", "Opérations", "root", "OPS"), ("ops-n", "Nordic Øps", "ops", "OPS-N"),
    ("dev", "Отдел разработки", "root", "DEV"), ("hr", "People & Culture", "root", None),
]
XML_HEAD = '<?xml version="1.0" encoding="UTF-8"?>\n'


def _uuid(*parts: object) -> str:
    digest = hashlib.blake2b(":".join(map(str, parts)).encode(), digest_size=16).digest()
    return str(uuid.UUID(bytes=digest))


def _date(value: datetime) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%S+00:00")


def _xml(tag: str, fields: list[tuple[str, Any]]) -> str:
    """``<tag><k>v</k>…</tag>``; empty values are left out, as the vendor does."""
    inner = "".join(f"<{k}>{v if k == 'fields' else escape(str(v))}</{k}>"
                    for k, v in fields if v is not None and v != "")
    return f"<{tag}>{inner}</{tag}>"


def _token(*parts: object) -> str:
    return base64.urlsafe_b64encode(":".join(map(str, parts)).encode()).decode().rstrip("=")


def _untoken(value: str) -> list[int]:
    raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).decode()
    return [int(p) for p in raw.split(":")[1:]]


def error(status: int, code: str, message: str) -> Response:
    body = f"{XML_HEAD}<response><code>{escape(code)}</code><message>{escape(message)}</message></response>"
    return Response.xml(body, status)


class FakeIspring(FakeVendor):
    name = "ispring"
    CLIENT_ID = "sandbox-ispring-client"
    CLIENT_SECRET = "sandbox-ispring-secret"  # noqa: S105 - sandbox credential

    def __init__(self, population: Population, token_ttl: int = 1800, courses: int = 8,
                 max_results: int | None = None, leaver_status: int = 3,
                 strict_user_statuses: bool = False, prefix: str = "", **_: Any) -> None:
        super().__init__(population)
        self.token_ttl, self.max_results = token_ttl, max_results
        self.leaver_status, self.strict_user_statuses = leaver_status, strict_user_statuses
        self.prefix = prefix.rstrip("/")
        self.members: list[Person] = population.members("ispring")
        seed = population.seed
        self.dept_ids = {key: _uuid(seed, "dept", key) for key, *_ in DEPARTMENTS}
        rng = population.rng("ispring")
        self.catalog: list[tuple[str, str, list[tuple[str, str, str]]]] = []
        for c in range(courses):
            course_id = _uuid(seed, "course", c)
            modules = [(_uuid(seed, "module", c, m), f"{MODULE_TITLES[m]} ({COURSE_TITLES[c % 8]})",
                        _uuid(seed, "item", c, m)) for m in range(1 + rng.randrange(4))]
            self.catalog.append((course_id, COURSE_TITLES[c % len(COURSE_TITLES)], modules))
        self.course_ids = {c[0] for c in self.catalog}
        # even a tiny population has a blocked user and a leaver
        self._forced_status = {p.index: s for p, s in zip(self.members[1:3], (3, 5), strict=False)}
        self.tokens: dict[str, float] = {}
        self.token_fetches = 0
        self.unauthorized = 0
        self.results_pages = 0
        self.removed: set[str] = set()            # "enrollmentId:moduleId"
        self.changes: dict[str, dict[str, Any]] = {}
        self._expire_after: int | None = None
        self._break_at: int | None = None
        self._hostile: bytes | None = None
        self.contents_status: int | None = None  # set by deny_contents
        self.contents_pages = 0
        self._state = threading.Lock()
        root = self.prefix.removesuffix("/api/v3")  # the token lives in the /api/v3 root
        self.route("POST", f"{root}/api/v3/token", self._token)
        self.route("GET", f"{self.prefix}/departments", self._departments)
        self.route("GET", f"{self.prefix}/users/v2", self._users)
        self.route("GET", f"{self.prefix}/contents", self._contents)
        self.route("GET", f"{self.prefix}/learners/modules/results", self._results)

    def source_config(self, base_url: str) -> dict[str, Any]:
        return {"kind": "ispring", "base_url": base_url + self.prefix,
                "auth": {"client_id": self.CLIENT_ID, "client_secret": self.CLIENT_SECRET},
                "options": {"hr_id_field": "EMPLOYEE_ID"}}

    # ------------------------------------------------------------------ people and data

    def user_id(self, person: Person) -> str:
        return _uuid(self.population.seed, "user", person.index)

    def user_status(self, person: Person) -> int:
        if person.index in self._forced_status:
            return self._forced_status[person.index]
        k = person.key("ispring-status") % 100
        return 1 if k < 80 else 3 if k < 92 else 5

    def results_status(self, person: Person) -> int:
        """The ``userStatuses[]`` value the results endpoint files ``person`` under."""
        status = self.user_status(person)
        return self.leaver_status if status == 5 else status

    def department_of(self, person: Person) -> str:
        keys = [d[0] for d in DEPARTMENTS]
        return self.dept_ids[keys[person.key("ispring-dept") % len(keys)]]

    def person_results(self, pos: int) -> list[dict[str, Any]]:
        """Result rows of the member at ``pos`` (documented element order), mutations applied."""
        person = self.members[pos]
        rng = random.Random(f"{self.population.seed}:ispring:{person.index}")
        rows: list[dict[str, Any]] = []
        picked = rng.sample(self.catalog, 1 + rng.randrange(min(4, len(self.catalog))))
        for course_id, _title, modules in picked:
            for module_id, module_title, item_id in modules:
                status = rng.choices(STATUSES, STATUS_WEIGHTS)[0]
                if pos < len(STATUSES) and not rows:
                    status = STATUSES[pos]  # every status appears even in a tiny population
                access = self.population.when(rng, 250)
                due = access + timedelta(days=rng.choice([14, 30, 60])) if rng.random() < 0.6 else None
                expires = due + timedelta(days=30) if due and rng.random() < 0.3 else None
                done = status in DONE
                progress = {"not_started": None, "pending": "100", "accepted": "100"}.get(
                    status, "100" if done else f"{rng.randrange(1, 9999) / 100:g}")
                passing = rng.choice([70, 80]) if status in {"passed", "failed"} else None
                score = (rng.randrange(passing, 101) if passing and status == "passed" else
                         rng.randrange(0, passing) if passing else None)
                row = {
                    "userId": self.user_id(person), "courseId": course_id, "moduleTitle": module_title,
                    "moduleId": module_id, "courseItemId": item_id,
                    "enrollmentId": _uuid(self.population.seed, "enr", person.index, module_id),
                    "accessDate": _date(access), "dueDate": _date(due) if due else None,
                    "expirationDate": _date(expires) if expires else None,
                    "completionDate": _date(access + timedelta(hours=rng.randrange(1, 900)))
                    if done else None,
                    "timeSpent": 0 if status == "not_started" else rng.randrange(30, 20000),
                    "completionStatus": status, "progress": progress,
                    "isOverdue": int(bool(due and due < NOW and not done)),
                    "viewsCount": 0 if status == "not_started" else rng.randrange(1, 40),
                    "awardedScore": score, "passingScore": passing,
                }
                key = f"{row['enrollmentId']}:{module_id}"
                if key in self.removed:
                    continue
                row.update(self.changes.get(key, {}))
                rows.append(row)
        return rows

    def all_results(self) -> Iterator[tuple[str, dict[str, Any]]]:
        """(connector external id, row) of every result, any user status."""
        for pos in range(len(self.members)):
            for row in self.person_results(pos):
                yield f"{row['enrollmentId']}:{row['moduleId']}", row

    # ------------------------------------------------------------------ test controls

    def expire_tokens(self) -> None:
        """Every issued token is refused from now on (as if 30 minutes had passed)."""
        with self._state:
            self.tokens.clear()

    def expire_tokens_after(self, requests: int) -> None:
        """Tokens expire after ``requests`` more authorized API calls."""
        with self._state:
            self._expire_after = requests

    def break_results_page(self, page: int = 1) -> None:
        """The ``page``-th results page served from now on is not well-formed XML."""
        with self._state:
            self._break_at = self.results_pages + page

    def serve_hostile(self, body: bytes) -> None:
        """Serve ``body`` (200, application/xml) for the next results page."""
        with self._state:
            self._hostile = body

    def remove_results(self, n: int = 1) -> list[str]:
        keys = [key for key, _ in _take(self.all_results(), n)]
        self.removed.update(keys)
        return keys

    def change_results(self, n: int = 1, **fields: Any) -> list[str]:
        """Change ``n`` results that are not yet passed (default: now passed, 100%)."""
        fields = fields or {"completionStatus": "passed", "progress": "100", "awardedScore": 95,
                            "passingScore": 80, "completionDate": _date(NOW), "isOverdue": 0}
        todo = (item for item in self.all_results() if item[1]["completionStatus"] != "passed")
        keys = [key for key, _ in _take(todo, n)]
        for key in keys:
            self.changes.setdefault(key, {}).update(fields)
        return keys

    def make_progress(self, k: int) -> int:
        return len(self.change_results(k))

    def deny_contents(self, status: int = 403) -> None:
        """``GET /contents`` answers ``status`` (403: permission denied, 404: plain text)."""
        self.contents_status = status

    def content_items(self) -> list[list[tuple[str, Any]]]:
        """The ``<contentItem>`` fields of the content list (documented element order)."""
        seed, owner = self.population.seed, _uuid(self.population.seed, "owner")
        items = []
        for c, (course_id, title, modules) in enumerate(self.catalog):
            items.append([("contentItemId", course_id), ("title", title),
                          ("subtitle", f"{len(modules)} Module"),
                          ("description", f"Pflichtschulung: {title}"),
                          ("userId", owner), ("addedDate", _date(EPOCH - timedelta(days=30 + c))),
                          ("viewUrl", f"https://sandbox.ispringlearn.com/view/{c:06d}"), ("type", "Course")])
        items.append([("contentItemId", _uuid(seed, "track", 0)), ("title", "Onboarding-Pfad für Neue"),
                      ("userId", owner), ("addedDate", _date(EPOCH)), ("type", "LearningTrack")])
        return items

    # ------------------------------------------------------------------ routes

    def _token(self, req: Request, _m: Any) -> Response:
        form = req.form()
        if form.get("grant_type") != "client_credentials":
            return error(400, "BAD_REQUEST", "grant_type must be client_credentials")
        if (form.get("client_id"), form.get("client_secret")) != (self.CLIENT_ID, self.CLIENT_SECRET):
            return error(401, "UNAUTHORIZED", "Invalid client_id or client_secret")
        token = secrets.token_urlsafe(24)
        with self._state:
            self.token_fetches += 1
            self.tokens[token] = time.monotonic() + self.token_ttl
        return Response.json({"access_token": token, "expires_in": self.token_ttl, "token_type": "bearer"})

    def _authorized(self, req: Request) -> Response | None:
        header = req.headers.get("authorization", "").strip()
        token = header[7:].strip() if header.lower().startswith("bearer ") else header
        with self._state:
            ok = self.tokens.get(token, 0) > time.monotonic()
            if ok and self._expire_after is not None:
                self._expire_after -= 1
                if self._expire_after < 0:
                    self.tokens.clear()
                    self._expire_after, ok = None, False
            if not ok:
                self.unauthorized += 1
        return None if ok else error(401, "UNAUTHORIZED", "Access token is invalid or expired")

    def _list_request(self, req: Request) -> tuple[int, list[int] | None] | Response:
        """(page size, position) of an authorized list request, or the error to answer."""
        denied = self._authorized(req)
        if denied:
            return denied
        try:
            size = int(req.arg("pageSize") or 1000)
            token = req.arg("pageToken")
            position = _untoken(token) if token else None
        except ValueError:
            return error(400, "BAD_REQUEST", "Invalid pageSize or pageToken")
        if not 1 <= size <= 1000:
            return error(400, "BAD_REQUEST", "pageSize must be between 1 and 1000")
        return size, position

    def _page(self, list_tag: str, rows: list[str], token: str | None) -> Response:
        tail = f"<nextPageToken>{token}</nextPageToken>" if token else ""
        return Response.xml(f"{XML_HEAD}<response><{list_tag}>{''.join(rows)}</{list_tag}>{tail}</response>")

    def _departments(self, req: Request, _m: Any) -> Response:
        paging = self._list_request(req)
        if isinstance(paging, Response):
            return paging
        size, pos = paging
        start = pos[0] if pos else 0
        rows = [_xml("department", [("departmentId", self.dept_ids[key]), ("name", name),
                                    ("parentDepartmentId", self.dept_ids.get(parent or "")),
                                    ("code", code)])
                for key, name, parent, code in DEPARTMENTS[start:start + size]]
        more = start + size < len(DEPARTMENTS)
        return self._page("departments", rows, _token("d", start + size) if more else None)

    def _users(self, req: Request, _m: Any) -> Response:
        paging = self._list_request(req)
        if isinstance(paging, Response):
            return paging
        size, pos = paging
        start = pos[0] if pos else 0
        rows = []
        for person in self.members[start:start + size]:
            fields = "".join(_xml("field", [("name", n), ("value", v)]) for n, v in (
                ("FIRST_NAME", person.first_name), ("LAST_NAME", person.last_name),
                ("EMPLOYEE_ID", person.hr_id)))
            rows.append(_xml("userProfile", [
                ("userId", self.user_id(person)), ("departmentId", self.department_of(person)),
                ("status", self.user_status(person)), ("login", person.email.split("@")[0]),
                ("email", person.vendor_email("ispring").strip()), ("fields", fields),
                ("addedDate", _date(EPOCH - timedelta(days=person.key("ispring") % 900)))]))
        more = start + size < len(self.members)
        return self._page("userProfiles", rows, _token("u", start + size) if more else None)

    def _contents(self, req: Request, _m: Any) -> Response:
        paging = self._list_request(req)
        if isinstance(paging, Response):
            return paging
        with self._state:
            self.contents_pages += 1
        if self.contents_status == 404:
            return Response.text("Not Found", 404)
        if self.contents_status is not None:
            return error(self.contents_status, "PERMISSION_DENIED",
                         "The user doesn't have enough permissions to complete the request")
        size, pos = paging
        start, items = (pos[0] if pos else 0), self.content_items()
        rows = [_xml("contentItem", fields) for fields in items[start:start + size]]
        more = start + size < len(items)
        return self._page("contentItems", rows, _token("c", start + size) if more else None)

    def _matching(self, member: int, skip: int, statuses: set[int], users: set[str], depts: set[str],
                  courses: set[str]) -> Iterator[tuple[int, int, dict[str, Any]]]:
        for at in range(member, len(self.members)):
            person = self.members[at]
            if (self.results_status(person) not in statuses or (users and self.user_id(person) not in users)
                    or (depts and self.department_of(person) not in depts)):
                continue
            for idx, row in enumerate(self.person_results(at)):
                if (at == member and idx < skip) or (courses and row["courseId"] not in courses):
                    continue
                yield at, idx, row

    def _results(self, req: Request, _m: Any) -> Response:
        paging = self._list_request(req)
        if isinstance(paging, Response):
            return paging
        size, pos = paging
        asked = req.query.get("userStatuses[]", ["1"])
        odd = sorted(set(asked) - {"1", "3"})
        if self.strict_user_statuses and odd:
            return error(400, "BAD_REQUEST", f"Invalid userStatuses value: {odd[0]}")
        statuses = {int(s) for s in asked if s.isdigit()}
        users, courses = set(req.query.get("userIds[]", [])), set(req.query.get("courseIds[]", []))
        depts = set(req.query.get("departmentIds[]", []))
        for wanted, known, what in ((courses, self.course_ids, "course"),
                                    (depts, set(self.dept_ids.values()), "department")):
            if wanted - known:
                return error(400, "BAD_REQUEST", f"Invalid {what} id: {sorted(wanted - known)[0]}")
        with self._state:
            self.results_pages += 1
            broken = self._break_at == self.results_pages
            hostile, self._hostile = self._hostile, None
        if hostile is not None:
            return Response(200, hostile, {"Content-Type": "application/xml; charset=utf-8"})
        member, skip, served = pos or (0, 0, 0)
        rows: list[str] = []
        token = None
        for at, idx, row in self._matching(member, skip, statuses, users, depts, courses):
            if self.max_results is not None and served >= self.max_results:
                break
            if len(rows) == size:
                token = _token("r", at, idx, served)
                break
            rows.append(_xml("result", list(row.items())))
            served += 1
        response = self._page("results", rows, token)
        if broken:
            response.body = response.body[: len(response.body) * 2 // 3]
        return response


def _take(items: Iterator[Any], n: int) -> list[Any]:
    out: list[Any] = []
    for item in items:
        if len(out) >= n:
            break
        out.append(item)
    return out
