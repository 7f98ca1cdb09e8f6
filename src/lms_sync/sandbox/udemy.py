"""Fake Udemy Business: Courses API + Reporting API, Basic auth, ``next``-link paging.

Serves ``/api-2.0/organizations/{org}/courses/list/`` and
``.../analytics/{user-activity,user-course-activity,user-progress}/`` with the
documented body ``{"count", "next", "previous", "results"}`` (absolute ``next``
links built from the request's Host, or from ``next_origin`` / ``next_path`` to
simulate a vendor that points elsewhere: such a link carries ``page`` only, as the
vendor's documented example, docs/vendors/udemy.md), Django-REST-style error bodies
(``{"detail": ...}``), a ``page_size`` maximum, rows of erased users
(``"Anonymized User"``) and fields the vendor's documentation does not list
(``user_is_deactivated``, ``lms_user_id``, ``course_first_completion_date``,
``item_marked_complete``). With ``default_fields``, reporting rows keep
``user_external_id`` and ``course_first_completion_date`` only for a request that asks
``fields[<the row's _class>]=@all``. List pages go through the framework's page cache.
"""

from __future__ import annotations

import base64
import hmac
import random
import re
from datetime import UTC, date, datetime, timedelta
from functools import cached_property
from typing import Any
from urllib.parse import urlencode

from lms_sync.sandbox.population import Population
from lms_sync.sandbox.server import FakeVendor, Request, Response

ANONYMIZED = "Anonymized User"
DEFAULT_OMITTED = ("user_external_id", "course_first_completion_date")
TOPICS = ["Python", "SQL", "Leadership", "Excel", "Kubernetes", "Negotiation", "Design",
          "Security", "Agile", "Data Science", "Public Speaking", "Go", "React", "Finance"]
LEVELS = ["Foundations", "Bootcamp", "Masterclass", "in 30 Days", "for Managers", "Deep Dive"]
CATEGORIES = ["Development", "Business", "IT & Software", "Office Productivity", "Design",
              "Leadership", "Engineering Team"]
COMPLETED_AT = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
REPORT_DAY = datetime(2026, 11, 30, 7, 0, tzinfo=UTC)


def _iso(value: datetime | None) -> str | None:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ") if value else None


class FakeUdemy(FakeVendor):
    name = "udemy"

    def __init__(self, population: Population, *, courses: int = 600, popular: int = 40,
                 anonymized: int = 3, report_days: int = 2, max_page_size: int = 100,
                 client_id: str = "udemy-client-id", client_secret: str = "udemy-client-secret",
                 organization_id: str = "8888", next_origin: str | None = None,
                 next_path: str | None = None, default_fields: bool = False,
                 lose_rows: int = 0, cache_pages: bool = False) -> None:
        super().__init__(population, cache_pages)
        self.num_courses, self.popular = courses, max(1, min(popular, courses))
        self.anonymized, self.report_days = anonymized, report_days
        self.max_page_size = max_page_size
        self.client_id, self.client_secret = client_id, client_secret
        self.organization_id = organization_id
        self.next_origin = next_origin
        """Build ``next`` links on this origin (e.g. another host) instead of the request's."""
        self.next_path = next_path
        """Build ``next`` links with this path instead of the request's (a rogue link)."""
        self.default_fields = default_fields
        """Reporting rows leave out DEFAULT_OMITTED unless ``fields[<their _class>]=@all``
        is asked (Udemy does not document its default field set)."""
        self.lose_rows = lose_rows
        """Pages leave out the last N rows of every list that ``count`` still counts."""
        self.seen_auth: list[str | None] = []
        token = base64.b64encode(f"{client_id}:{client_secret}".encode()).decode()
        self._expected = f"Basic {token}"
        base = r"/api-2.0/organizations/(?P<org>[^/]+)"
        self.route("GET", base + r"/courses/list/?", self._courses)
        self.route("GET", base + r"/analytics/user-course-activity/?", self._table("course_rows"))
        self.route("GET", base + r"/analytics/user-progress/?", self._table("progress_rows"))
        self.route("GET", base + r"/analytics/user-activity/?", self._table("activity_rows"))

    def source_config(self, base_url: str) -> dict[str, Any]:
        return {
            "kind": "udemy", "base_url": base_url,
            "auth": {"client_id": self.client_id, "client_secret": self.client_secret},
            "options": {"organization_id": self.organization_id},
        }

    # ------------------------------------------------------------------ data

    def course(self, i: int) -> dict[str, Any]:
        rng = random.Random(f"{self.population.seed}:udemy-course:{i}")
        cid = 100_000 + i * 37
        title = f"{rng.choice(TOPICS)} {rng.choice(LEVELS)} #{i}"
        slug = re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")
        lectures = rng.randint(4, 40)
        return {
            "_class": "course", "id": cid, "title": title,
            "description": f"<p>{title}: a course.</p>", "url": f"https://learning.udemy.com/{slug}/",
            "estimated_content_length": rng.randint(20, 900),
            "categories": [rng.choice(CATEGORIES)], "num_lectures": lectures,
            "num_videos": lectures - rng.randint(0, 3), "instructors": ["Nancy E", "Joan S"],
            "requirements": {"list": []}, "what_you_will_learn": {"list": [f"Learn {title}"]},
            "promo_video_url": [], "images": {"size_48x27": f"https://img.udemy.test/{cid}.png"},
            "locale": "en_US",  # a field the vendor's documentation does not list
        }

    @cached_property
    def course_rows(self) -> list[dict[str, Any]]:
        """user-course-activity rows (one per user x course), mutable by the helpers below."""
        rows: list[dict[str, Any]] = []
        rng = self.population.rng("udemy")
        users = [self._user(p) for p in self.population.members("udemy")]
        users += [self._anon_user(n) for n in range(self.anonymized)]
        catalog = [self.course(i) for i in range(self.popular)]
        for user in users:
            n = 2 if user["user_email"] == ANONYMIZED else rng.randint(0, 5)
            for i in sorted(rng.sample(range(self.popular), min(n, self.popular))):
                rows.append(self._enrollment(rng, user, catalog[i]))
        return rows

    def _user(self, person: Any) -> dict[str, Any]:
        k = person.key("udemy")
        return {
            "user_name": person.first_name, "user_surname": person.last_name,
            "user_email": person.vendor_email("udemy"), "user_role": "admin" if k % 29 == 0 else "student",
            "user_external_id": person.hr_id, "user_is_deactivated": k % 23 == 0,
            "lms_user_id": 5_000_000 + person.index,
        }

    def _anon_user(self, n: int) -> dict[str, Any]:
        return {"user_name": "Anonymized", "user_surname": "User", "user_email": ANONYMIZED,
                "user_role": "student", "user_external_id": None, "lms_user_id": None,
                "user_is_deactivated": True}

    def _enrollment(self, rng: random.Random, user: dict[str, Any], course: dict[str, Any]) -> dict:
        enrolled = self.population.when(rng, days=200)
        started = enrolled + timedelta(hours=rng.randint(1, 400)) if rng.random() < 0.8 else None
        done = started is not None and rng.random() < 0.35
        ratio = 100 if done else (rng.randint(1, 95) if started else 0)
        completed = started + timedelta(days=rng.randint(1, 60)) if done and started else None
        length = course["estimated_content_length"]
        assigned = rng.random() < 0.4
        rng.random()  # a draw an older version made: kept, so the rows after stay the same
        return {
            "_class": "user_course_activity", **user,
            "course_id": course["id"], "course_title": course["title"],
            "course_category": course["categories"][0], "course_subcategory": None,
            "course_duration": float(length), "completion_ratio": ratio,
            "num_video_consumed_minutes": round(length * ratio / 100),
            "course_enroll_date": _iso(enrolled), "course_start_date": _iso(started),
            "course_completion_date": _iso(completed), "course_first_completion_date": _iso(completed),
            "course_last_accessed_date": _iso(completed or started),
            "is_assigned": "Yes" if assigned else "No",
            # the seed: the assigning admin's email, empty when the user enrolled themselves
            "assigned_by": "admin@example.com" if assigned else None,
        }

    @cached_property
    def progress_rows(self) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        for enrollment in self.course_rows:
            rows.extend(self._items(enrollment))
        return rows

    def _items(self, e: dict[str, Any]) -> list[dict[str, Any]]:
        """Lecture/quiz rows of one enrollment: the started part of a 5-item course."""
        started = max(1, 5 * e["completion_ratio"] // 100) if e["course_start_date"] else 0
        user = {k: v for k, v in e.items() if k.startswith("user_") or k == "lms_user_id"}
        out = []
        for j in range(started):
            quiz = j == 4
            done = e["completion_ratio"] == 100 or j < started - 1
            out.append({
                "_class": "user_progress", **user, "course_id": e["course_id"],
                "course_title": e["course_title"], "course_category": e["course_category"],
                "course_subcategory": None, "item_id": e["course_id"] * 10 + j,
                "item_type": "Quiz" if quiz else "Lecture", "Item_title": f"Part {j + 1}",
                "item_start_time": e["course_start_date"],
                "item_completion_time": (e["course_completion_date"] or e["course_start_date"])
                if done else None,
                "item_completion_ratio": 100 if done else 40,
                "course_last_accessed_date": e["course_last_accessed_date"],
                "Item_final_result": ("80%" if done else "") if quiz else "",
                "item_marked_complete": done and not quiz,
            })
        return out

    @cached_property
    def activity_rows(self) -> list[dict[str, Any]]:
        by_user: dict[str, list[dict[str, Any]]] = {}
        for e in self.course_rows:
            key = e["user_email"] if e["user_email"] != ANONYMIZED else f"anon{e['course_enroll_date']}"
            by_user.setdefault(key, []).append(e)
        rows = []
        for n, enrollments in enumerate(by_user.values()):
            first = enrollments[0]
            for d in range(self.report_days):
                rows.append({
                    "_class": "aggregate_organization_user_activity", "id": 700_000 + n * 10 + d,
                    **{k: v for k, v in first.items() if k.startswith("user_") or k == "lms_user_id"},
                    "report_date": _iso(REPORT_DAY - timedelta(days=d)),
                    "num_new_enrolled_courses": len(enrollments),
                    "num_new_started_courses": sum(1 for e in enrollments if e["course_start_date"]),
                    "num_completed_courses": sum(1 for e in enrollments if e["course_completion_date"]),
                    "num_video_consumed_minutes": sum(e["num_video_consumed_minutes"] for e in enrollments),
                    "num_completed_lectures": 3 * len(enrollments), "num_web_visited_days": 4,
                    "num_new_assigned_courses": sum(1 for e in enrollments if e["is_assigned"] == "Yes"),
                    "last_date_visit": first["course_last_accessed_date"],
                    "user_joined_date": first["course_enroll_date"],
                })
        return rows

    # ------------------------------------------------------------------ mutators

    def enrollment(self, email: str, course_id: int) -> dict[str, Any]:
        for row in self.course_rows:
            if row["user_email"].strip().lower() == email.strip().lower() and row["course_id"] == course_id:
                return row
        raise KeyError((email, course_id))

    def complete(self, email: str, course_id: int, when: datetime = COMPLETED_AT) -> dict[str, Any]:
        """Complete one course for one user, as Udemy's next daily refresh would show it."""
        row = self.enrollment(email, course_id)
        row.update(completion_ratio=100, course_completion_date=_iso(when),
                   course_last_accessed_date=_iso(when),
                   num_video_consumed_minutes=round(row["course_duration"]))
        row["course_start_date"] = row["course_start_date"] or _iso(when)
        row["course_first_completion_date"] = row["course_first_completion_date"] or _iso(when)
        self.__dict__.pop("progress_rows", None)
        self.__dict__.pop("activity_rows", None)
        self.clear_pages()
        return row

    def incomplete(self, k: int) -> list[tuple[str, int]]:
        """(email, course_id) of the first ``k`` named users' enrollments not completed yet."""
        return [(r["user_email"], r["course_id"]) for r in self.course_rows
                if r["user_email"] != ANONYMIZED and not r["course_completion_date"]][:k]

    def make_progress(self, k: int) -> int:
        todo = self.incomplete(k)
        for email, course_id in todo:
            self.complete(email, course_id)
        return len(todo)

    def remove(self, email: str, course_id: int) -> None:
        self.course_rows.remove(self.enrollment(email, course_id))
        self.__dict__.pop("progress_rows", None)
        self.__dict__.pop("activity_rows", None)
        self.clear_pages()

    # ------------------------------------------------------------------ handlers

    def _check(self, request: Request, match: Any) -> Response | None:
        header = request.headers.get("authorization")
        if len(self.seen_auth) < 10_000:
            self.seen_auth.append(header)
        if not header:
            return Response.json({"detail": "Authentication credentials were not provided."}, 401,
                                 **{"WWW-Authenticate": 'Basic realm="api"'})
        if not hmac.compare_digest(header, self._expected):
            return Response.json({"detail": "Invalid username/password."}, 401,
                                 **{"WWW-Authenticate": 'Basic realm="api"'})
        if match["org"] != self.organization_id:
            return Response.json({"detail": "Not found."}, 404)
        return None

    def _courses(self, request: Request, match: Any) -> Response:
        denied = self._check(request, match)
        if denied is not None:
            return denied
        fields = request.arg("fields[course]") or request.arg("fields[courses]") or "@default"
        keep = None if fields == "@all" else (
            {"_class", "id", "title", "url"} if fields in ("@min", "@default") else
            {"_class", "id", *fields.split(",")})

        def page(start: int, stop: int) -> list[dict[str, Any]]:
            rows = [self.course(i) for i in range(start, min(stop, self.num_courses))]
            return rows if keep is None else [{k: v for k, v in r.items() if k in keep} for r in rows]

        return self.page(request, lambda: self._page(request, match, self.num_courses, page))

    def _table(self, attr: str):
        def handler(request: Request, match: Any) -> Response:
            denied = self._check(request, match)
            if denied is not None:
                return denied
            return self.page(request, lambda: self._report(request, match, attr))
        return handler

    def _report(self, request: Request, match: Any, attr: str) -> Response:
        rows = getattr(self, attr)
        try:
            rows = self._filter(request, rows)
        except ValueError as exc:
            return Response.json({"detail": str(exc)}, 400)
        return self._page(request, match, len(rows), lambda a, b: self._fields(request, rows[a:b]))

    def _fields(self, request: Request, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if not self.default_fields:
            return rows
        return [r if request.arg(f"fields[{r['_class']}]") == "@all" else
                {k: v for k, v in r.items() if k not in DEFAULT_OMITTED} for r in rows]

    def _filter(self, request: Request, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        email, course = request.arg("user_email"), request.arg("course_id")
        if email:
            rows = [r for r in rows if r["user_email"].strip().lower() == email.strip().lower()]
        if course:
            rows = [r for r in rows if str(r["course_id"]) == course]
        bounds = []
        for name in ("from_date", "to_date"):
            value = request.arg(name)
            try:
                bounds.append(date.fromisoformat(value).isoformat() if value else None)
            except ValueError:
                raise ValueError(f"{name}: Enter a valid date (YYYY-MM-DD).") from None
        low, high = bounds
        if low or high:
            def day(r: dict[str, Any]) -> str:
                return (r.get("report_date") or r.get("course_last_accessed_date")
                        or r.get("course_enroll_date") or "")[:10]
            rows = [r for r in rows if (not low or day(r) >= low) and (not high or day(r) <= high)]
        return rows

    def _page(self, request: Request, match: Any, count: int, slice_: Any) -> Response:
        try:
            page = int(request.arg("page") or 1)
            size = int(request.arg("page_size") or 12)
        except ValueError:
            return Response.json({"detail": "Invalid page."}, 404)
        if size > self.max_page_size or size < 1:
            return Response.json(
                {"detail": f"page_size must be between 1 and {self.max_page_size}."}, 400)
        last = max(1, -(-count // size))
        if page < 1 or page > last:
            return Response.json({"detail": "Invalid page."}, 404)
        results = slice_((page - 1) * size, min(page * size, count - self.lose_rows))
        return Response.json({
            "count": count,
            "next": self._link(request, page + 1) if page < last else None,
            "previous": self._link(request, page - 1) if page > 1 else None,
            "results": results,
        })

    def _link(self, request: Request, page: int) -> str:
        origin = self.next_origin or f"http://{request.headers.get('host', '127.0.0.1')}"
        # as the vendor's documented example (docs/vendors/udemy.md): a link on another
        # origin carries the page only
        query = {} if self.next_origin else {k: v[0] for k, v in request.query.items()}
        query["page"] = str(page)
        return f"{origin.rstrip('/')}{self.next_path or request.path}?{urlencode(query)}"

