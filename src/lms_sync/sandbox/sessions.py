"""Fake Sparkwise Account API (``kind: sessions``).

Serves session clusters (``{"success", "data": {"items", "total"}}``),
participant completions (a bare JSON array) and paged users, behind an API key
in a header (401 without it), with error bodies
``{"success": false, "error": {"message", "metadata"}, "data": null}``.

``from``/``to`` rules as documented: ISO 8601 date-times, ``from`` inclusive,
``to`` exclusive, ``to`` later than ``from`` (400 otherwise). The sandbox is
stricter than the docs in one place on purpose: completions *require* both
bounds (400 when one is missing), so a connector that forgets its window shows
up. Every window request is logged in ``windows`` with its status.

Sessions are scheduled relative to ``now`` (the fake's construction time, to the
minute): one session is under way (participants visited or not), one ended a
day ago (``recent_cluster``: inside any re-read lag), one lies in the future and
the rest spread over the past year, so every canonical status occurs. Data is
generated on first request. Mutators: :meth:`change_completion` (new hash),
:meth:`add_unknown_completion` (a ``remoteUserId`` no user has).

Batch upsert and deactivate of users: :mod:`.sessions_writes` (``empty=True`` starts
with no user, ``untrusted`` is a regex of remoteIds an upsert refuses).
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from lms_sync.sandbox.population import Population
from lms_sync.sandbox.server import FakeVendor, Request, Response
from lms_sync.sandbox.sessions_writes import UserWrites

API_KEY = "sandbox-sparkwise-key"
PATHS = {"clusters": "/v1/session-clusters", "completions": "/v1/session-completions",
         "users": "/v1/users",
         "upsert_users": "/v1/users/batch-upsert", "deactivate_users": "/v1/users/batch-deactivate"}
MODULES = [
    ("Effective Communication", "Leadership", 60,
     "Communicate efficiently by stating the main point up front, followed by structured arguments"),
    ("Team Collaboration", "Teamwork", 90, "Agree on goals, roles and ways of working"),
    ("Giving Feedback", "Leadership", 60, "Feedback that is specific, timely and kind"),
    ("Running Meetings", "Productivity", 45, "Shorter meetings with clear outcomes"),
    ("Psychological Safety", "Teamwork", 75, "Make it safe to speak up"),
    ("Time Management", "Productivity", 60, "Plan the week around what matters"),
]


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _hash(row: dict[str, Any]) -> str:
    body = json.dumps({k: v for k, v in row.items() if k != "hash"}, sort_keys=True)
    return hashlib.sha1(body.encode(), usedforsecurity=False).hexdigest()[:16]


def _error(message: str, status: int) -> Response:
    return Response.json({"success": False, "error": {"message": message, "metadata": {}},
                          "data": None}, status)


class FakeSessions(UserWrites, FakeVendor):
    name = "sessions"
    error_response = staticmethod(_error)

    def __init__(self, population: Population, *, api_key: str = API_KEY,
                 api_key_header: str = "x-api-key", paths: dict[str, str] | None = None,
                 now: datetime | None = None, no_remote_id_every: int = 0,
                 users_next_null: bool = False, empty: bool = False, untrusted: str = "") -> None:
        super().__init__(population)
        # The documented users sample shows only ``next: null`` (on a list of one page):
        # with this, every page says so, and only totalPages / total tell there is more.
        self.users_next_null = users_next_null
        # empty: no user yet (completions still name the population's participants), for
        # provisioning; untrusted: a regex of remoteIds an upsert refuses (sessions_writes)
        self.empty, self.untrusted = empty, untrusted
        # Real Sparkwise accounts may lack a remoteId (then nothing links them to a
        # person); off by default so the sandbox's people match across vendors exactly.
        self.no_remote_id_every = no_remote_id_every
        self.api_key, self.api_key_header = api_key, api_key_header.lower()
        self.paths = {**PATHS, **(paths or {})}
        self.now = (now or datetime.now(UTC)).astimezone(UTC).replace(second=0, microsecond=0)
        self.windows: list[tuple[str, str | None, str | None, int]] = []
        self._users: list[dict[str, Any]] | None = None
        self._clusters: list[dict[str, Any]] = []
        self._created: dict[str, datetime] = {}
        self._completions: list[dict[str, Any]] = []
        self.route("GET", re.escape(self.paths["clusters"]), self._get_clusters)
        self.route("GET", re.escape(self.paths["completions"]), self._get_completions)
        self.route("GET", re.escape(self.paths["users"]), self._get_users)
        self.route("POST", re.escape(self.paths["upsert_users"]), self._upsert_users)
        self.route("POST", re.escape(self.paths["deactivate_users"]), self._deactivate_users)

    def source_config(self, base_url: str) -> dict[str, Any]:
        return {"kind": "sessions", "base_url": base_url, "auth": {"api_key": self.api_key},
                "options": {"api_key_header": self.api_key_header, "paths": dict(self.paths)}}

    def not_found(self, request: Request) -> Response:
        return _error(f"Not found: {request.method} {request.path}", 404)

    def dispatch(self, request: Request) -> Response:
        if request.headers.get(self.api_key_header) != self.api_key:
            with self._lock:
                self.requests[request.path] += 1
                self.request_log.append((request.method, request.path))
            return _error("Invalid or missing API key", 401)
        self._generate()
        return super().dispatch(request)

    # ------------------------------------------------------------------ data

    def _generate(self) -> None:
        with self._lock:
            if self._users is not None:
                return
            rng, seed = self.population.rng("sessions"), self.population.seed
            members = self.population.members("sessions")
            every = self.no_remote_id_every
            users: list[dict[str, Any]] = []
            for p in members:
                k = p.key("sessions")
                users.append({
                    "id": hashlib.sha256(f"sparkwise:{seed}:{p.index}".encode()).hexdigest(),
                    "firstName": p.first_name, "lastName": p.last_name,
                    "active": k % 13 != 0,
                    "remoteId": None if every and k % every == 0 else p.hr_id,
                })
            now = self.now
            offsets = [timedelta(minutes=-20), timedelta(days=-1, hours=-2), timedelta(days=9)]
            offsets += [-timedelta(days=rng.randrange(2, 350), hours=rng.randrange(0, 10))
                        for _ in range(max(6, len(members) // 4))]
            for i, offset in enumerate(offsets):
                name, category, minutes, description = MODULES[i % len(MODULES)]
                start = now + offset
                cluster: dict[str, Any] = {
                    "clusterId": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                    "moduleId": str(uuid.UUID(int=hash_int(seed, name), version=4)),
                    "moduleName": name, "moduleCategory": category, "moduleThumbnailUrl":
                    f"https://cdn.sparkwise.example/modules/{i % len(MODULES)}.png",
                    "moduleDescription": description, "duration": minutes,
                    "_start": start,
                }
                if i % 3 == 0:
                    cluster["iframeCode"] = (f'<iframe src="https://sparkwise.example/signup/'
                                             f'{cluster["clusterId"]}" width="100%" height="100%"></iframe>')
                self._clusters.append(cluster)
                self._created[cluster["clusterId"]] = start - timedelta(days=rng.randrange(3, 60))
            people = [u for u in users if u["remoteId"]]
            # the first people make every status occur: visited / not yet in the session
            # under way, attended / no-show in the recent one
            forced = {0: (0, 0.1), 1: (0, 0.95), 2: (1, 0.1), 3: (1, 0.95)}
            for n, user in enumerate(people):
                picks = rng.sample(range(len(self._clusters)), k=rng.randint(1, 3))
                if n in forced:
                    picks = [c for c in picks if c != forced[n][0]]
                    self._completions.append(self._row(rng, user["remoteId"],
                                                       self._clusters[forced[n][0]], forced[n][1]))
                for c in picks:
                    self._completions.append(self._row(rng, user["remoteId"], self._clusters[c]))
            self._users = [] if self.empty else users

    def _row(self, rng: Any, remote_id: str, cluster: dict[str, Any], outcome: float | None = None
             ) -> dict[str, Any]:
        start: datetime = cluster["_start"]
        minutes = cluster["duration"]
        end = start + timedelta(minutes=minutes)
        r = rng.random() if outcome is None else outcome
        attended = end <= self.now and r < 0.7
        visited = start <= self.now and (attended or r < 0.85)
        total = 10
        steps = (rng.randint(7, 10) if attended else rng.randint(1, 4)) if visited else 0
        first = start + timedelta(minutes=rng.randint(0, 5)) if visited else None
        last = min(end, self.now) - timedelta(minutes=rng.randint(1, 5)) if visited else None
        if first and last and last < first:
            last = first
        row = {
            "id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            "remoteUserId": remote_id,
            **{k: v for k, v in cluster.items() if not k.startswith("_") and k != "iframeCode"},
            "attended": attended,
            "sessionScheduledStartAt": _iso(start), "sessionScheduledEndAt": _iso(end),
            "participantFirstVisitedAt": _iso(first) if first else None,
            "participantLastVisitedAt": _iso(last) if last else None,
            "timeInSessionMins": int((last - first).total_seconds() // 60) if first and last else 0,
            "stepsVisited": steps, "totalSteps": total,
            "percentageStepsVisited": steps * 100 // total,
        }
        row["hash"] = _hash(row)
        return row

    # ------------------------------------------------------------------ mutators

    @property
    def recent_cluster(self) -> dict[str, Any]:
        """The session that ended about a day ago (inside any re-read lag)."""
        self._generate()
        return self._clusters[1]

    def completions(self) -> list[dict[str, Any]]:
        self._generate()
        with self._lock:
            return [dict(r) for r in self._completions]

    def users(self) -> list[dict[str, Any]]:
        self._generate()
        return [dict(u) for u in self._users or []]

    def change_completion(self, completion_id: str | None = None) -> dict[str, Any]:
        """Flip a recent completion's attendance (as Sparkwise does once attendance is
        confirmed); the row gets a new hash. Default: the first row of the recent session."""
        self._generate()
        with self._lock:
            cid = self._clusters[1]["clusterId"]
            row = next(r for r in self._completions
                       if r["id"] == completion_id or (completion_id is None and r["clusterId"] == cid))
            row["attended"] = not row["attended"]
            row["stepsVisited"], row["percentageStepsVisited"] = 10, 100
            row["timeInSessionMins"] = row["duration"]
            row["participantFirstVisitedAt"] = row["sessionScheduledStartAt"]
            row["participantLastVisitedAt"] = row["sessionScheduledEndAt"]
            row["hash"] = _hash(row)
            return dict(row)

    def make_progress(self, k: int) -> int:
        self._generate()
        with self._lock:
            cid = self._clusters[1]["clusterId"]
            ids = [r["id"] for r in self._completions if r["clusterId"] == cid][:k]
        for completion_id in ids:
            self.change_completion(completion_id)
        return len(ids)

    def add_unknown_completion(self, remote_user_id: str = "EXT-UNKNOWN-1") -> dict[str, Any]:
        """A completion of the recent session by someone Sparkwise has no user for."""
        self._generate()
        with self._lock:
            rng = self.population.rng(f"sessions:{remote_user_id}")
            row = self._row(rng, remote_user_id, self._clusters[1], outcome=0.1)
            self._completions.append(row)
            return dict(row)

    def add_completion_by_sparkwise_id(self) -> dict[str, Any]:
        """Out of the docs: a completion of the recent session naming a user that has a
        remoteId by the user's Sparkwise ``id`` instead."""
        self._generate()
        with self._lock:
            assert self._users is not None
            user = next(u for u in self._users if u["remoteId"])
            row = self._row(self.population.rng("sessions:by-id"), user["id"], self._clusters[1],
                            outcome=0.1)
            self._completions.append(row)
            return {**row, "remoteId": user["remoteId"]}

    # ------------------------------------------------------------------ handlers

    def _window(self, request: Request, required: bool) -> tuple[datetime | None, datetime | None] | Response:
        raw = {k: request.arg(k) for k in ("from", "to")}
        bounds: dict[str, datetime | None] = {}
        problem = None
        for name, value in raw.items():
            if value is None:
                bounds[name] = None
                if required:
                    problem = f"'{name}' is required (ISO 8601 date-time)"
                continue
            try:
                parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                problem = f"Invalid '{name}': {value!r} is not an ISO 8601 date-time"
                continue
            bounds[name] = parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
        lo, hi = bounds.get("from"), bounds.get("to")
        if problem is None and lo is not None and hi is not None and hi <= lo:
            problem = "'to' must be later than 'from'"
        with self._lock:
            self.windows.append((request.path, raw["from"], raw["to"], 400 if problem else 200))
        return _error(problem, 400) if problem else (lo, hi)

    def _get_clusters(self, request: Request, _m: Any) -> Response:
        window = self._window(request, required=False)
        if isinstance(window, Response):
            return window
        lo, hi = window
        with self._lock:
            items = [{k: v for k, v in c.items() if not k.startswith("_")} for c in self._clusters
                     if (lo is None or self._created[c["clusterId"]] >= lo)
                     and (hi is None or self._created[c["clusterId"]] < hi)]
        return Response.json({"success": True, "data": {"items": items, "total": len(items)}})

    def _get_completions(self, request: Request, _m: Any) -> Response:
        window = self._window(request, required=True)
        if isinstance(window, Response):
            return window
        lo, hi = window
        assert lo is not None and hi is not None
        lo_s, hi_s = _iso(lo), _iso(hi)
        with self._lock:  # ISO 'Z' strings of one shape compare like the moments they name
            rows = [dict(r) for r in self._completions if lo_s <= r["sessionScheduledStartAt"] < hi_s]
        rows.sort(key=lambda r: (r["sessionScheduledStartAt"], r["id"]))
        return Response.json(rows)

    def _get_users(self, request: Request, _m: Any) -> Response:
        try:
            page = int(request.arg("page", "0") or "0")
            size = int(request.arg("pageSize", "200") or "200")
        except ValueError:
            return _error("page and pageSize must be integers", 400)
        if page < 0 or not 1 <= size <= 200:
            return _error("page must be >= 0 and pageSize between 1 and 200", 400)
        users = self._users or []
        total_pages = (len(users) + size - 1) // size
        items = users[page * size:(page + 1) * size]
        return Response.json({"success": True, "data": {
            "items": items, "page": page, "size": size,
            "next": page + 1 if page + 1 < total_pages and not self.users_next_null else None,
            "prev": page - 1 if page > 0 else None,
            "totalPages": total_pages, "total": len(users),
        }, "error": None})


def hash_int(seed: int, text: str) -> int:
    return int.from_bytes(hashlib.blake2b(f"{seed}:{text}".encode(), digest_size=16).digest(), "big")
