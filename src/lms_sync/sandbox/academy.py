"""Fake Monotree Open API: academy statistics, per-user progress, the user list.

Serves ``/api/open/v1`` as the vendor documents it: bearer ``mono_`` keys with scopes
(401 unknown/revoked key, 403 missing scope), a fixed-window rate limit per key with
``X-RateLimit-Limit/Remaining/Reset`` headers and ``429`` + ``Retry-After``,
``page``/``per_page`` paging with ``links``/``meta``, ``group_ids`` filters (unknown id
-> 422), quiz 404, and 404 on the per-user endpoints for kiosk, bot and banned users and
unknown ids.

Knobs: ``rate_limit``/``rate_window`` (default 300 requests per 1 s window, a compressed
"minute"; windows aligned on the epoch clock); ``not_found_share`` (0..1: that share of
the users with a record answer 404 on the per-user endpoints, a wave as a wrong tenant
would give; 0 switches it off); ``page_shift`` (n: pages of ``/users`` start later, as
when n users listed earlier go away while a client pages; ``meta.total`` counted them).

``last_active_on`` behaves like the vendor's: a user's own activity
(:meth:`FakeAcademy.complete_course`, :meth:`FakeAcademy.complete_onboarding`,
:meth:`FakeAcademy.add_user` with ``active``) sets it to today (UTC); admin actions
(:meth:`FakeAcademy.sign_off`, :meth:`FakeAcademy.ban`) leave it alone. Generated history
ends at least two days before the real "now": a fresh re-sync has nobody recently active.

The details: docs/vendors/academy.md, "Sandbox fake".
"""

from __future__ import annotations

import math
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from lms_sync.sandbox.population import EPOCH, Population
from lms_sync.sandbox.server import FakeVendor, Request, Response

API = "/api/open/v1"
FULL_KEY = "mono_sandbox_5f2c9a1e7b3d4c6f"
SCOPES = frozenset({"read:stats", "read:users"})

GROUPS = {12: ("Kitchen", "department"), 40: ("Front of House", "department"),
          41: ("Shift Leads", "profession"), 55: ("Nordics", "custom")}
# course id -> (title, chapters, targeted group ids; empty = everyone)
COURSES = {
    12: ("Food Safety Basics", 4, (12, 40)),
    13: ("Allergen Awareness", 3, ()),
    14: ("Customer Service 101", 5, (40,)),
    15: ("Fire Safety", 2, ()),
    16: ("Leading a Shift", 6, (41,)),
}
ONBOARDING_JOURNEY = (3, "Onboarding")
JOURNEYS = {7: "Leadership Track", 8: "Barista Path"}
QUIZZES = {
    101: [(45, "At what core temperature is poultry safe to serve?", 120, 96),
          (46, "How long may cooked rice stay at room temperature?", 118, 71),
          (47, "Which allergens must be declared?", 117, 102)],
    102: [(51, "Where is the nearest fire assembly point?", 80, 77),
          (52, "Which extinguisher is used on fat fires?", 79, 40)],
}
ONBOARDING_LIMIT_DAYS = 30


@dataclass
class Progress:
    chapters: int = 0
    has_passed: bool = False
    awaiting: bool = False
    completed_at: datetime | None = None


@dataclass
class User:
    id: int
    name: str
    email: str
    type: str
    groups: list[int]
    created_at: datetime
    registered_at: datetime
    hired_at: date | None
    is_away: bool
    last_active_on: date | None
    banned: bool = False
    courses: dict[int, Progress] = field(default_factory=dict)
    onboarding_completed_at: datetime | None = None
    journeys_done: set[int] = field(default_factory=set)

    @property
    def has_record(self) -> bool:
        """Academy resolves active employees only (kiosk, bot, banned -> 404)."""
        return self.type == "employee" and not self.banned

    def listed(self) -> dict[str, Any]:
        return {
            "id": self.id, "name": self.name, "email": self.email, "type": self.type,
            "groups": [{"id": g, "name": GROUPS[g][0], "type": GROUPS[g][1]} for g in self.groups],
            "hired_at": self.hired_at.isoformat() if self.hired_at else None,
            "is_away": self.is_away,
            "last_active_on": self.last_active_on.isoformat() if self.last_active_on else None,
            "registered_at": _iso(self.registered_at), "created_at": _iso(self.created_at),
        }


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


class FakeAcademy(FakeVendor):
    name = "academy"

    def __init__(self, population: Population, rate_limit: int = 300, rate_window: float = 1.0,
                 kiosks: int | None = None, banned_share: float = 0.05,
                 reset_on_429_only: bool = False, not_found_share: float = 0.0, page_shift: int = 0,
                 **_: Any) -> None:
        super().__init__(population)
        self.rate_limit, self.rate_window = rate_limit, rate_window
        self.not_found_share, self.page_shift = not_found_share, page_shift
        # the doc names the headers, not when each is sent; Laravel's throttle (which the
        # 429 body suggests) sends X-RateLimit-Reset with a 429 only
        self.reset_on_429_only = reset_on_429_only
        self.keys: dict[str, set[str]] = {FULL_KEY: set(SCOPES)}
        self.throttled = 0                      # 429s sent
        self.throttle_log: list[float] = []     # when each 429 was sent (time.time())
        self._windows: dict[str, tuple[float, int]] = {}
        self._rate_lock = threading.Lock()
        self.quizzes: dict[int, list[list[Any]]] = {q: [list(row) for row in rows]
                                                    for q, rows in QUIZZES.items()}
        self.users: dict[int, User] = {}
        self._generate(kiosks, banned_share)
        self.route("GET", f"{API}/users", self._list_users)
        self.route("GET", f"{API}/stats/academy/onboarding", self._onboarding)
        self.route("GET", f"{API}/stats/academy/courses", self._courses)
        self.route("GET", f"{API}/stats/academy/journeys", self._journeys)
        self.route("GET", f"{API}/stats/academy/quizzes/(\\d+)", self._quiz)
        self.route("GET", f"{API}/stats/academy/users/(\\d+)/courses", self._user_courses)
        self.route("GET", f"{API}/stats/academy/users/(\\d+)/onboarding", self._user_onboarding)

    # ------------------------------------------------------------------ data

    def _generate(self, kiosks: int | None, banned_share: float) -> None:
        rng = self.population.rng("academy")
        members = self.population.members("academy")
        # the population's dates run to EPOCH + 300 days, which may be after the real now;
        # nothing generated may be later than QUIET (registered_at is up to 4 days after created)
        quiet = datetime.now(UTC).replace(microsecond=0) - timedelta(days=2)
        for i, person in enumerate(members):
            created = min(self.population.when(rng), quiet - timedelta(days=4))
            groups = sorted(rng.sample(sorted(GROUPS), rng.choice((1, 1, 2))))
            user = User(
                id=1001 + i, name=f"{person.first_name} {person.last_name}",
                email=person.vendor_email("academy"), type="employee", groups=groups,
                created_at=created, registered_at=created + timedelta(hours=rng.randrange(1, 96)),
                hired_at=(created - timedelta(days=rng.randrange(0, 20))).date()
                if rng.random() < 0.8 else None,
                is_away=rng.random() < 0.05,
                last_active_on=min(created + timedelta(days=rng.randrange(0, 60)), quiet).date(),
                banned=rng.random() < banned_share,
            )
            for cid, (_title, chapters, targets) in COURSES.items():
                if targets and not set(targets) & set(groups):
                    continue
                roll, p = rng.random(), Progress()
                if roll < 0.4:
                    p.chapters, p.has_passed = chapters, True
                    p.completed_at = min(created + timedelta(days=rng.randrange(1, 60)), quiet)
                elif roll < 0.45:
                    p.chapters, p.has_passed, p.awaiting = chapters, True, True
                elif roll < 0.7:
                    p.chapters = rng.randrange(1, chapters)
                user.courses[cid] = p
            if rng.random() < 0.7:
                user.onboarding_completed_at = min(created + timedelta(days=rng.randrange(1, 30)), quiet)
            user.journeys_done = {j for j in JOURNEYS if rng.random() < 0.3}
            # completing something is activity: the last active day is never before it
            done = [p.completed_at for p in user.courses.values() if p.completed_at]
            done += [user.onboarding_completed_at] if user.onboarding_completed_at else []
            days = [user.last_active_on, *(d.date() for d in done)]
            user.last_active_on = max(day for day in days if day is not None)
            self.users[user.id] = user
        n_kiosks = max(1, len(members) // 25) if kiosks is None else kiosks
        extra = [(f"Kiosk {k + 1}", "kiosk") for k in range(n_kiosks)] + [("Integration Bot", "bot")]
        for k, (name, kind) in enumerate(extra):
            uid = 900001 + k
            self.users[uid] = User(uid, name, f"{kind}{k + 1}@devices.example.com", kind, [12],
                                   EPOCH, EPOCH, None, False, None)

    def employee_ids(self) -> list[int]:
        """Ids of users who have an academy record (the per-user endpoints answer 200)."""
        return sorted(u.id for u in self.users.values() if u.has_record)

    # ------------------------------------------------------------------ mutators

    def _active(self, user: User) -> datetime:
        """The user did something now: the vendor dates ``last_active_on`` today (UTC)."""
        now = datetime.now(UTC).replace(microsecond=0)
        user.last_active_on = now.date()
        return now

    def complete_course(self, user_id: int, course_id: int) -> None:
        """The user finishes a course (user activity)."""
        user = self.users[user_id]
        p = user.courses.setdefault(course_id, Progress())
        p.chapters, p.has_passed, p.awaiting = COURSES[course_id][1], True, False
        p.completed_at = self._active(user)

    def complete_onboarding(self, user_id: int) -> None:
        """The user finishes onboarding (user activity)."""
        user = self.users[user_id]
        user.onboarding_completed_at = self._active(user)

    def make_progress(self, k: int) -> int:
        todo = [(uid, cid) for uid in self.employee_ids()
                for cid, p in sorted(self.users[uid].courses.items()) if not p.has_passed][:k]
        for uid, cid in todo:
            self.complete_course(uid, cid)
        return len(todo)

    def sign_off(self, user_id: int, course_id: int) -> None:
        """An admin signs off a course awaiting manual completion: not the user's activity."""
        p = self.users[user_id].courses[course_id]
        if not p.awaiting:
            raise ValueError(f"user {user_id} course {course_id} awaits no sign-off")
        p.awaiting, p.has_passed = False, True
        p.completed_at = datetime.now(UTC).replace(microsecond=0)

    def add_user(self, name: str, email: str, groups: list[int], *, active: bool = True,
                 hired_at: date | None = None, registered_at: datetime | None = None) -> int:
        """A new employee with the next id, assigned the courses of their groups, none started.

        ``active=False``: an account registered on the user's behalf (an import) that has
        not been used yet, so ``last_active_on`` is empty. ``registered_at`` (and
        ``created_at``) default to now; an import may carry an older date.
        """
        uid = max((u for u in self.users if u < 900001), default=1000) + 1
        now = datetime.now(UTC).replace(microsecond=0)
        joined = registered_at or now
        user = User(uid, name, email, "employee", sorted(groups), joined, joined, hired_at, False,
                    now.date() if active else None)
        for cid, (_title, _chapters, targets) in COURSES.items():
            if not targets or set(targets) & set(groups):
                user.courses[cid] = Progress()
        self.users[uid] = user
        return uid

    def set_quiz_question(self, quiz_id: int, question_id: int, passed: int) -> None:
        for row in self.quizzes[quiz_id]:
            if row[0] == question_id:
                row[3] = passed

    def delete_quiz(self, quiz_id: int) -> None:
        self.quizzes.pop(quiz_id, None)

    def ban(self, user_id: int) -> None:
        self.users[user_id].banned = True

    def source_config(self, base_url: str) -> dict[str, Any]:
        return {
            "kind": "academy", "base_url": base_url, "auth": {"api_key": FULL_KEY},
            "options": {"quiz_ids": sorted(self.quizzes),
                        "requests_per_minute": self.rate_limit * 60 / self.rate_window},
        }

    # ------------------------------------------------------------------ gatekeeping

    def dispatch(self, request: Request) -> Response:
        auth = request.headers.get("authorization", "")
        key = auth[7:] if auth.startswith("Bearer ") else ""
        if request.path.startswith(API) and key not in self.keys:
            with self._lock:
                self.requests[request.path] += 1
                self.request_log.append((request.method, request.path))
            return Response.json({"message": "Unauthenticated."}, 401)
        limited, headers = self._take(key)
        if limited is not None:
            with self._lock:
                self.requests[request.path] += 1
                self.request_log.append((request.method, request.path + " 429"))
            return limited
        need = "read:users" if request.path == f"{API}/users" else "read:stats"
        if request.path.startswith(API) and need not in self.keys.get(key, ()):
            response = Response.json({"message": "This action is unauthorized."}, 403)
            with self._lock:
                self.requests[request.path] += 1
                self.request_log.append((request.method, request.path))
        else:
            response = super().dispatch(request)
        response.headers.update(headers)
        return response

    def _take(self, key: str) -> tuple[Response | None, dict[str, str]]:
        now = time.time()
        with self._rate_lock:
            start = math.floor(now / self.rate_window) * self.rate_window
            w_start, used = self._windows.get(key, (start, 0))
            if w_start != start:
                w_start, used = start, 0
            reset = w_start + self.rate_window
            headers = {"X-RateLimit-Limit": str(self.rate_limit),
                       "X-RateLimit-Reset": str(math.ceil(reset))}
            if used >= self.rate_limit:
                self.throttled += 1
                self.throttle_log.append(now)
                headers["X-RateLimit-Remaining"] = "0"
                headers["Retry-After"] = str(max(1, math.ceil(reset - now)))
                return Response.json({"message": "Too Many Attempts."}, 429, **headers), {}
            used += 1
            self._windows[key] = (w_start, used)
            headers["X-RateLimit-Remaining"] = str(self.rate_limit - used)
            if self.reset_on_429_only:
                del headers["X-RateLimit-Reset"]
            return None, headers

    # ------------------------------------------------------------------ helpers

    def _group_filter(self, req: Request) -> tuple[set[int] | None, Response | None]:
        raw = req.arg("group_ids")
        if not raw:
            return None, None
        ids: set[int] = set()
        for n, part in enumerate(raw.split(",")):
            if not part.strip().isdigit() or int(part) not in GROUPS:
                msg = f"The selected group_ids.{n} is invalid."
                return None, Response.json({"message": msg, "errors": {f"group_ids.{n}": [msg]}}, 422)
            ids.add(int(part))
        return ids, None

    def _counted(self, groups: set[int] | None) -> list[User]:
        """Users the figures cover: resolved employees (never kiosks), narrowed by groups."""
        return [u for u in self.users.values()
                if u.has_record and (groups is None or set(u.groups) & groups)]

    def _onboarding_totals(self, users: list[User]) -> dict[str, int]:
        done = sum(1 for u in users if u.onboarding_completed_at)
        return {"completed": done, "not_completed": len(users) - done}

    # ------------------------------------------------------------------ handlers

    def _list_users(self, req: Request, _m: re.Match[str]) -> Response:
        try:
            page = max(1, int(req.arg("page", "1") or 1))
            per_page = min(50, max(1, int(req.arg("per_page", "25") or 25)))
        except ValueError:
            return Response.json({"message": "The page must be an integer."}, 422)
        users = sorted(self.users.values(), key=lambda u: u.id)
        if req.arg("group_id"):
            users = [u for u in users if int(req.arg("group_id") or 0) in u.groups]
        if req.arg("since"):
            since = datetime.fromisoformat(str(req.arg("since")).replace("Z", "+00:00"))
            since = since if since.tzinfo else since.replace(tzinfo=UTC)
            users = [u for u in users if u.created_at >= since]
        total = len(users)
        last = max(1, math.ceil(total / per_page))
        shift = self.page_shift if page > 1 else 0
        chunk = users[(page - 1) * per_page + shift: page * per_page + shift]
        base = f"http://{req.headers.get('host', '127.0.0.1')}{req.path}"
        extra = {k: v[0] for k, v in req.query.items() if k not in ("page", "per_page")}

        def link(n: int) -> str:
            return f"{base}?{urlencode({**extra, 'page': n, 'per_page': per_page})}"

        start = (page - 1) * per_page
        return Response.json({
            "data": [u.listed() for u in chunk],
            "links": {"first": link(1), "last": link(last),
                      "prev": link(page - 1) if page > 1 else None,
                      "next": link(page + 1) if page < last else None},
            "meta": {"current_page": page, "last_page": last, "per_page": per_page, "total": total,
                     "from": start + 1 if chunk else None, "to": start + len(chunk) if chunk else None},
        })

    def _onboarding(self, req: Request, _m: re.Match[str]) -> Response:
        groups, error = self._group_filter(req)
        return error or Response.json({"data": self._onboarding_totals(self._counted(groups))})

    def _courses(self, req: Request, _m: re.Match[str]) -> Response:
        groups, error = self._group_filter(req)
        if error:
            return error
        users = self._counted(groups)
        data = []
        for cid, (title, _chapters, _targets) in COURSES.items():
            assigned = [u.courses[cid] for u in users if cid in u.courses]
            done = sum(1 for p in assigned if p.has_passed)
            data.append({"id": cid, "title": title, "completed": done,
                         "not_completed": len(assigned) - done})
        return Response.json({"data": data})

    def _journeys(self, req: Request, _m: re.Match[str]) -> Response:
        groups, error = self._group_filter(req)
        if error:
            return error
        users = self._counted(groups)
        jid, title = ONBOARDING_JOURNEY
        data = [{"id": jid, "title": title, "type": "onboarding", **self._onboarding_totals(users)}]
        for jid, title in JOURNEYS.items():
            done = sum(1 for u in users if jid in u.journeys_done)
            data.append({"id": jid, "title": title, "type": "custom", "completed": done,
                         "not_completed": len(users) - done})
        return Response.json({"data": data})

    def _quiz(self, req: Request, m: re.Match[str]) -> Response:
        rows = self.quizzes.get(int(m.group(1)))
        if rows is None:
            return Response.json({"message": "Not found."}, 404)
        return Response.json({"data": [
            {"question_id": q, "body": body, "respondents": n, "passed": ok,
             "pass_rate": round(ok * 100 / n) if n else 0}
            for q, body, n, ok in rows
        ]})

    def lost(self, user_id: int) -> bool:
        """The user's per-user endpoints 404 although they have a record (``not_found_share``)."""
        return (user_id * 2654435761) % 1000 < self.not_found_share * 1000

    def _resolved(self, m: re.Match[str]) -> User | None:
        user = self.users.get(int(m.group(1)))
        return user if user is not None and user.has_record and not self.lost(user.id) else None

    def _user_courses(self, req: Request, m: re.Match[str]) -> Response:
        user = self._resolved(m)
        if user is None:
            return Response.json({"message": "Not found."}, 404)
        return Response.json({"data": [
            {"course_id": cid, "title": COURSES[cid][0], "has_passed": p.has_passed,
             "completed_at": _iso(p.completed_at), "chapters_completed_count": p.chapters,
             "awaits_manual_completion": p.awaiting}
            for cid, p in sorted(user.courses.items())
        ]})

    def _user_onboarding(self, req: Request, m: re.Match[str]) -> Response:
        user = self._resolved(m)
        if user is None:
            return Response.json({"message": "Not found."}, 404)
        start = user.hired_at or user.registered_at.date()
        days_left = (start + timedelta(days=ONBOARDING_LIMIT_DAYS) - datetime.now(UTC).date()).days
        done = user.onboarding_completed_at
        return Response.json({"data": {
            "onboarding_completed_at": _iso(done),
            "is_overdue": done is None and days_left < 0,
            "onboarding_days": days_left,
        }})

    def path_counts(self, pattern: str) -> Counter[str]:
        """Requests per path matching ``pattern`` (a regex), from the request log."""
        rx = re.compile(pattern)
        return Counter(p for _m, p in self.request_log if rx.search(p))
