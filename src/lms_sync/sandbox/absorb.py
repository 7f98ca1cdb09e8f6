"""Fake Absorb LMS Integration API v2.

Serves ``POST /authenticate`` (bare JSON string token; one live token per admin: a new one
makes the old one 401), then, with ``x-api-key`` + ``x-api-version: 2`` + ``Authorization:
Bearer``: ``GET /users``, ``/departments``, ``/categories``, ``/courses``,
``/courses/{id}/enrollments`` (paged collections: ``_limit`` <= 1000, ``_offset`` = page
number <= 65535, 400 beyond; ``_filter=dateEdited ge|gt datetime'...'``; ``_sort=[-]dateEdited``)
and ``GET /users/{userId}/enrollments/{courseId}/lessons`` (a bare array). Errors use the
documented body ``{"validations", "code", "message", "term", "_meta"}``.

Everyone in the population is an Absorb user (same emails and HR ids as the other fakes);
each has 1-3 course enrollments with every one of the 13 statuses present, TimeSpan strings,
and some superseded (``isActive: false``) enrollments. Departments form a tree (``parentId``);
completed enrollments carry a certificate, credits and an expiry (``dateExpires``, spread
around the real date), and half the enrollments a due date. Users carry ``activeStatus``
(0 active, 1 inactive), as public v2 schemas do. Data is built on first use.

Test hooks: :meth:`change_enrollments` (K enrollments change status, ``dateEdited`` bumped),
:meth:`remove_enrollments`, :meth:`invalidate_token` / :meth:`invalidate_token_after`
(someone else authenticated), ``ignore_offset`` (every page is page 0), ``ignore_sort`` (lists keep their
stored order whatever ``_sort`` says; ``_filter`` still applies), ``categories_as`` (``paged``,
``array``: a bare JSON array, or ``404`` / ``403``), ``departments_as`` (the same for
``/departments``), ``lesson_path`` (where lessons are
served; elsewhere every lesson call is a 404), and the framework's faults and page cache.
"""

from __future__ import annotations

import hashlib
import random
import re
import secrets
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import cached_property
from typing import Any

from lms_sync.sandbox.population import EPOCH, Population
from lms_sync.sandbox.server import FakeVendor, Handler, Request, Response

NOW = EPOCH + timedelta(days=300)
STATUS_WEIGHTS = [14, 22, 3, 30, 4, 5, 2, 2, 2, 2, 2, 1, 1]  # statuses 0..12
COURSES = [("Arbeitssicherheit – Grundlagen", "OnlineCourse"), ("Code of Conduct 2026", "OnlineCourse"),
           ("Datenschutz & DSGVO", "OnlineCourse"), ("Leadership Essentials", "InstructorLedCourse"),
           ("Première connexion", "OnlineCourse"), ("Охрана труда", "OnlineCourse"),
           ("Onboarding Path", "Curriculum"), ("Información de seguridad", "OnlineCourse")]
CATEGORIES = ["Compliance", "Leadership", "Onboarding", "Sicherheit"]
DEPARTMENTS = ["Ácme Group", "Vertrieb & Marketing", "Opérations", "Отдел разработки", "People & Culture",
               "Küche"]
DEPARTMENT_PARENTS = [None, 0, 0, 0, 0, 2]  # index of each department's parent: a tree 3 deep
EXPIRY_SPREAD = (-60, 300)
"""Days from the real today over which completed enrollments (and their certificates) expire:
relative to the real date, as Monotree's onboarding deadline is, so that the sandbox always
has certificates that lapsed lately and ones that lapse this quarter."""
LESSON_TYPES = ["ObjectLesson", "Assessment", "Video", "ObjectLesson"]
LESSON_PATH = "/users/{userId}/enrollments/{courseId}/lessons"
_FILTER = re.compile(r"^\s*dateEdited\s+(ge|gt)\s+datetime'([^']+)'\s*$")


def _uuid(*parts: object) -> str:
    h = hashlib.blake2b(":".join(map(str, parts)).encode(), digest_size=16).hexdigest()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _date(value: datetime | None) -> str | None:
    return value.replace(tzinfo=None).isoformat(timespec="seconds") + "Z" if value else None


def _timespan(seconds: float) -> str:
    days, rest = divmod(seconds, 86400)
    h, rest = divmod(rest, 3600)
    m, s = divmod(rest, 60)
    text = f"{int(h):02d}:{int(m):02d}:{int(s):02d}"
    frac = round(s - int(s), 1)
    text += f".{int(frac * 10)}" if frac else ""
    return f"{int(days)}.{text}" if days else text


def error(status: int, message: str, *validations: str) -> Response:
    return Response.json({"validations": list(validations), "code": status, "message": message,
                          "term": None, "_meta": {}}, status)


class FakeAbsorb(FakeVendor):
    name = "absorb"
    API_KEY = "sandbox-absorb-api-key"
    USERNAME = "sandbox-admin"
    PASSWORD = "sandbox-absorb-password"  # noqa: S105 - sandbox credential

    def __init__(self, population: Population, courses: int = 8, token_ttl: float = 4 * 3600,
                 ignore_offset: bool = False, cap_limit: int | None = None, ignore_sort: bool = False,
                 categories_as: str = "paged", lesson_path: str = LESSON_PATH,
                 departments_as: str = "paged", cache_pages: bool = False, **_: Any) -> None:
        super().__init__(population, cache_pages)
        self.n_courses, self.token_ttl, self.ignore_offset = courses, token_ttl, ignore_offset
        self.cap_limit = cap_limit  # a server that pages by fewer rows than _limit asks for
        self.ignore_sort, self.categories_as = ignore_sort, categories_as
        self.departments_as = departments_as
        seed = population.seed
        self.dept_ids = [_uuid(seed, "dept", i) for i in range(len(DEPARTMENTS))]
        self.category_ids = [_uuid(seed, "cat", i) for i in range(len(CATEGORIES))]
        self.token: str | None = None
        self.token_expires = 0.0
        self.token_fetches = 0
        self.rejected = 0          # requests answered 401
        self.filters: list[str] = []  # every _filter received, in order
        self.after_page: Callable[[str, list[dict[str, Any]]], None] | None = None
        """Tests: called with (path, rows) after each list page is made, to edit the data
        while a client reads it."""
        self.clock = NOW + timedelta(days=1)  # dateEdited of mutations, later than any seed data
        self._invalidate_after: int | None = None
        self._state = threading.Lock()
        self.route("POST", "/authenticate", self._authenticate)
        for key in ("users", "courses"):
            self.route("GET", f"/{key}", self._guarded(self._lister(key)))
        for key in ("departments", "categories"):  # lookups: paged, a bare array, or refused
            self.route("GET", f"/{key}", self._guarded(self._lookup(key)))
        self.route("GET", "/courses/([^/]+)/enrollments", self._guarded(self._course_enrollments))
        lessons = re.escape(lesson_path).replace(r"\{userId\}", "(?P<user>[^/]+)")
        self.route("GET", lessons.replace(r"\{courseId\}", "(?P<course>[^/]+)"), self._guarded(self._lessons))

    def source_config(self, base_url: str) -> dict[str, Any]:
        return {"kind": "absorb", "base_url": base_url,
                "auth": {"api_key": self.API_KEY, "username": self.USERNAME, "password": self.PASSWORD},
                "options": {}}

    # ------------------------------------------------------------------ data

    @cached_property
    def departments(self) -> list[dict[str, Any]]:
        return [{"id": i, "name": n, "parentId": None if up is None else self.dept_ids[up],
                 "externalId": f"D{k}", "dateEdited": _date(EPOCH)}
                for k, (i, n, up) in enumerate(zip(self.dept_ids, DEPARTMENTS, DEPARTMENT_PARENTS,
                                                   strict=True))]

    @cached_property
    def categories(self) -> list[dict[str, Any]]:
        return [{"id": i, "name": n, "parentId": None, "description": None}
                for i, n in zip(self.category_ids, CATEGORIES, strict=True)]

    @cached_property
    def courses(self) -> list[dict[str, Any]]:
        rng, seed, out = self.population.rng("absorb-courses"), self.population.seed, []
        for c in range(self.n_courses):
            title, kind = COURSES[c % len(COURSES)]
            lessons = [{"lessonId": _uuid(seed, "lesson", c, k), "chapterId": _uuid(seed, "chapter", c),
                        "name": f"Lektion {k + 1}: {title}", "type": LESSON_TYPES[k % len(LESSON_TYPES)]}
                       for k in range(1 + rng.randrange(4))]
            out.append({"id": _uuid(seed, "course", c), "courseType": kind,
                        "name": title if c < len(COURSES) else f"{title} ({c})",
                        "description": f"<p>{title}</p>",
                        "categoryId": self.category_ids[c % len(CATEGORIES)],
                        "estimatedDuration": _timespan(rng.choice([15, 30, 45, 90, 120]) * 60),
                        "activeStatus": 1, "tagIds": [], "externalId": f"C-{c:03d}",
                        "dateAdded": _date(EPOCH - timedelta(days=30)),
                        "dateEdited": _date(self.population.when(rng, 200)), "_lessons": lessons})
        return out

    @cached_property
    def users(self) -> list[dict[str, Any]]:
        out = []
        for person in self.population.members("absorb"):
            rng = random.Random((self.population.seed * 1_000_003 + person.index) * 2)
            added = self.population.when(rng, 200)
            out.append({
                "id": self.user_id(person.index),
                "departmentId": self.dept_ids[person.key("absorb-dept") % len(DEPARTMENTS)],
                "firstName": person.first_name, "middleName": None, "lastName": person.last_name,
                "username": person.email.split("@")[0], "emailAddress": person.vendor_email("absorb"),
                "externalId": person.hr_id if person.key("absorb-hr") % 10 else None,
                "jobTitle": rng.choice(["Engineer", "Sales Rep", "Nurse", "Analyst", None]),
                "activeStatus": 0 if person.key("absorb-active") % 20 else 1,
                "isLearner": True, "isAdmin": False,
                "customFields": {"string1": "Nord"}, "dateAdded": _date(added),
                "dateEdited": _date(added + timedelta(days=rng.randrange(90))),
                "lastLoginDate": _date(self.population.when(rng, 300)),
            })
        return out

    def user_id(self, index: int) -> str:
        return _uuid(self.population.seed, "user", index)

    @cached_property
    def enrollments(self) -> dict[str, list[dict[str, Any]]]:
        """courseId -> enrollment rows (mutable: tests change them)."""
        by_course: dict[str, list[dict[str, Any]]] = {c["id"]: [] for c in self.courses}
        seed = self.population.seed
        for pos, (person, user) in enumerate(zip(self.population.members("absorb"), self.users, strict=True)):
            rng = random.Random((seed * 1_000_003 + person.index) * 2 + 1)
            picked = rng.sample(range(len(self.courses)), 1 + rng.randrange(min(3, len(self.courses))))
            for n, c in enumerate(picked):
                course = self.courses[c]
                status = pos if pos < 13 and n == 0 else rng.choices(range(13), STATUS_WEIGHTS)[0]
                row = self._enrollment(rng, user, course, status, _uuid(seed, "enr", person.index, c))
                if pos == 13 or (status in (0, 1) and rng.random() < 0.15):  # re-enrolled: keep the old one
                    old = self._enrollment(rng, user, course, 3, _uuid(seed, "enr-old", person.index, c))
                    old.update(isActive=False, dateEdited=row["dateAdded"])
                    by_course[course["id"]].append(old)
                by_course[course["id"]].append(row)
        return by_course

    def _enrollment(self, rng: random.Random, user: dict[str, Any], course: dict[str, Any], status: int,
                    enrollment_id: str) -> dict[str, Any]:
        added = self.population.when(rng, 250)
        started = added + timedelta(hours=rng.randrange(1, 400)) if status not in (0, 6, 8) else None
        done = status in (3, 5)
        progress = (100.0 if done or status in (2, 7, 11, 12) else
                    0.0 if not started else float(rng.randrange(1, 100)))
        seconds = rng.randrange(60, 3 * 86400) + rng.choice([0, 0.5]) if started else 0
        completed = started + timedelta(hours=rng.randrange(1, 200)) if done and started else None
        edited = max(d for d in (added, started, completed) if d is not None)
        return {
            "id": enrollment_id, "courseId": course["id"], "courseName": course["name"],
            "progress": progress, "score": float(rng.randrange(40, 101)) if done else 0.0, "status": status,
            "dateCompleted": _date(completed),
            "dateExpires": _date(self._expiry(completed)) if status == 3 and completed else None,
            "fullName": f"{user['firstName']} {user['lastName']}", "jobTitle": user["jobTitle"],
            "courseVersionId": _uuid(course["id"], "v1"), "userId": user["id"],
            "acceptedTermsAndConditions": True, "timeSpent": _timespan(seconds),
            "dateStarted": _date(started), "enrollmentKeyId": None,
            "certificateId": _uuid(enrollment_id, "cert") if status == 3 else None,
            "credits": 1.5 if status == 3 else 0, "isActive": True,
            "dateDue": _date(added + timedelta(days=30)) if rng.random() < 0.5 else None,
            "dateEdited": _date(edited), "dateAdded": _date(added),
        }

    @staticmethod
    def _expiry(completed: datetime) -> datetime:
        """A completion's expiry: spread over ``EXPIRY_SPREAD`` around today, after the completion."""
        low, high = EXPIRY_SPREAD
        today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        offset = low + int(completed.timestamp()) // 3600 % (high - low)
        return max(completed + timedelta(days=1), today + timedelta(days=offset))

    def active(self, user_id: str, course_id: str) -> dict[str, Any] | None:
        for row in self.enrollments.get(course_id, []):
            if row["userId"] == user_id and row["isActive"]:
                return row
        return None

    def lesson_rows(self, enrollment: dict[str, Any]) -> list[dict[str, Any]]:
        course = next(c for c in self.courses if c["id"] == enrollment["courseId"])
        lessons, status = course["_lessons"], enrollment["status"]
        done = len(lessons) if status in (3, 5) else round(len(lessons) * enrollment["progress"] / 100)
        rows = []
        for k, lesson in enumerate(lessons):
            st = 3 if k < done else (1 if k == done and status != 0 else 0)
            rows.append({
                "id": _uuid(enrollment["id"], lesson["lessonId"]),
                "chapterEnrollmentId": _uuid(enrollment["id"], "ch"),
                "type": lesson["type"], "attempts": 1 if st else 0, "failures": 0,
                "lastAttempt": enrollment["dateEdited"] if st else None,
                "courseEnrollmentId": enrollment["id"], "chapterId": lesson["chapterId"],
                "lessonId": lesson["lessonId"], "name": lesson["name"], "userId": enrollment["userId"],
                "fullName": enrollment["fullName"], "status": st, "progress": 100.0 if st == 3 else 0.0,
                "score": enrollment["score"] if st == 3 and lesson["type"] == "Assessment" else 0.0,
                "timeSpent": _timespan(600 * k + 90) if st else "00:00:00",
                "dateEnrolled": enrollment["dateAdded"],
                "dateStarted": enrollment["dateStarted"] if st else None,
                "dateCompleted": enrollment["dateEdited"] if st == 3 else None,
                "dateEdited": enrollment["dateEdited"], "dateAdded": enrollment["dateAdded"],
            })
        return rows

    # ------------------------------------------------------------------ test hooks

    def change_enrollments(self, k: int, status: int = 3) -> list[str]:
        """Move ``k`` active enrollments (not already ``status``) to ``status``; returns their
        ``userId:courseId`` keys. ``dateEdited`` moves past everything seen before."""
        changed: list[str] = []
        with self._state:
            for rows in self.enrollments.values():
                for row in rows:
                    if len(changed) == k:
                        break
                    if row["isActive"] and row["status"] != status:
                        self.clock += timedelta(minutes=1)
                        row.update(status=status, dateEdited=_date(self.clock))
                        if status in (3, 5):
                            row.update(progress=100.0, dateCompleted=_date(self.clock),
                                       dateStarted=row["dateStarted"] or _date(self.clock))
                        changed.append(f"{row['userId']}:{row['courseId']}")
        self.clear_pages()
        return changed

    def make_progress(self, k: int) -> int:
        return len(self.change_enrollments(k))

    def remove_enrollments(self, k: int) -> list[str]:
        """Delete ``k`` active enrollments outright (a full read soft-deletes them)."""
        removed: list[str] = []
        with self._state:
            for rows in self.enrollments.values():
                for row in [r for r in rows if r["isActive"]][: k - len(removed)]:
                    rows.remove(row)
                    removed.append(f"{row['userId']}:{row['courseId']}")
        self.clear_pages()
        return removed

    def remove_users(self, hr_ids: set[str]) -> int:
        """Delete the users with these HR ids (``externalId``) outright, with their
        enrollments, as offboarding does; a full read soft-deletes them. Returns how many."""
        enrollments = self.enrollments  # built from the full user list: before it shrinks
        with self._state:
            gone = {u["id"] for u in self.users if u["externalId"] in hr_ids}
            self.users[:] = [u for u in self.users if u["id"] not in gone]
            for rows in enrollments.values():
                rows[:] = [r for r in rows if r["userId"] not in gone]
        self.clear_pages()
        return len(gone)

    def invalidate_token(self) -> None:
        """As if the same admin authenticated elsewhere: the live token stops working."""
        with self._state:
            self.token = secrets.token_urlsafe(24)

    def invalidate_token_after(self, requests: int) -> None:
        self._invalidate_after = requests

    # ------------------------------------------------------------------ handlers

    def _authenticate(self, req: Request, _m: Any) -> Response:
        if req.headers.get("x-api-version") != "2":
            return error(400, "Unsupported API version.", "x-api-version header must be 2")
        try:
            body = req.json() or {}
        except ValueError:
            return error(400, "The request body is not valid JSON.")
        if req.headers.get("x-api-key") != self.API_KEY or body.get("privateKey") != self.API_KEY:
            return error(401, "Invalid API key.")
        if (body.get("username"), body.get("password")) != (self.USERNAME, self.PASSWORD):
            return error(401, "Invalid username or password.")
        with self._state:
            self.token = secrets.token_urlsafe(24)
            self.token_expires = time.monotonic() + self.token_ttl
            self.token_fetches += 1
            return Response.json(self.token)

    def _guarded(self, handler: Handler) -> Handler:
        def guarded(req: Request, match: Any) -> Response:
            if req.headers.get("x-api-version") != "2":
                return error(400, "Unsupported API version.", "x-api-version header must be 2")
            with self._state:
                ok = (req.headers.get("x-api-key") == self.API_KEY and self.token is not None
                      and req.headers.get("authorization") == f"Bearer {self.token}"
                      and time.monotonic() < self.token_expires)
                if not ok:
                    self.rejected += 1
                    return error(401, "Authorization has been denied for this request.")
                if self._invalidate_after is not None:
                    self._invalidate_after -= 1
                    if self._invalidate_after <= 0:
                        self._invalidate_after = None
                        self.token = secrets.token_urlsafe(24)
            return handler(req, match)
        return guarded

    def _lister(self, key: str) -> Handler:
        return lambda req, _match: self._list(req, key, getattr(self, key))

    def _list(self, req: Request, key: str, rows: list[dict[str, Any]]) -> Response:
        flt = req.arg("_filter")
        if flt:
            with self._state:
                self.filters.append(flt)
        if self.after_page is not None:  # tests edit the data as it is read: nothing to store
            return self._render_list(req, key, rows)
        return self.page(req, lambda: self._render_list(req, key, rows))

    def _render_list(self, req: Request, key: str, rows: list[dict[str, Any]]) -> Response:
        try:
            limit, offset = int(req.arg("_limit") or 20), int(req.arg("_offset") or 0)
        except ValueError:
            return error(400, "Invalid paging parameters.", "_limit and _offset must be integers")
        if not 1 <= limit <= 1000:
            return error(400, "Invalid paging parameters.", "_limit must be between 1 and 1000")
        if not 0 <= offset <= 65535:
            return error(400, "Invalid paging parameters.", "_offset must be between 0 and 65535")
        if self.cap_limit:
            limit = min(limit, self.cap_limit)
        flt, sort = req.arg("_filter"), req.arg("_sort")
        if flt:
            m = _FILTER.match(flt)
            if not m:
                return error(400, "Invalid filter.", f"unsupported _filter: {flt}")
            try:
                bound = _date(datetime.fromisoformat(m.group(2).replace("Z", "+00:00")))
            except ValueError:
                return error(400, "Invalid filter.", f"not a datetime: {m.group(2)}")
            ge = m.group(1) == "ge"
            rows = [r for r in rows if (r["dateEdited"] >= bound if ge else r["dateEdited"] > bound)]
        if sort:
            if sort.lstrip("-") != "dateEdited":
                return error(400, "Invalid sort.", f"cannot sort by {sort}")
        if sort and not self.ignore_sort:
            rows = sorted(rows, key=lambda r: (r["dateEdited"], r["id"]), reverse=sort.startswith("-"))
        page = rows[:limit] if self.ignore_offset else rows[offset * limit:(offset + 1) * limit]
        page = [{k: v for k, v in r.items() if not k.startswith("_")} for r in page]
        if self.after_page is not None:  # tests: the vendor's data changes while it is read
            self.after_page(req.path, page)
        return Response.json({"totalItems": len(rows), "returnedItems": len(page), "limit": limit,
                              "offset": offset, key: page})

    def _course_enrollments(self, req: Request, m: Any) -> Response:
        rows = self.enrollments.get(m.group(1))
        if rows is None:
            return error(404, "Course not found.")
        with self._state:
            rows = list(rows)
        return self._list(req, "enrollments", rows)

    def _lookup(self, key: str) -> Handler:
        """A lookup list served as ``<key>_as`` says: paged, a bare array, or 403/404."""
        def serve(req: Request, _match: Any) -> Response:
            shape, rows = getattr(self, f"{key}_as"), getattr(self, key)
            if shape in ("403", "404"):
                return error(int(shape), "Access denied." if shape == "403" else "Resource not found.")
            if shape == "array":
                return Response.json(rows)
            return self._list(req, key, rows)
        return serve

    def _lessons(self, req: Request, m: Any) -> Response:
        enrollment = self.active(m.group("user"), m.group("course"))
        if enrollment is None:
            return error(404, "Enrollment not found.")
        return Response.json(self.lesson_rows(enrollment))
