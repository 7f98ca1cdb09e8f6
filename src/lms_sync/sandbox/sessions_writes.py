"""The write side of the fake Sparkwise Account API: batch upsert and batch deactivate.

As documented: ``{"users": [1..200 items]}`` (400 with the documented error body for 0
or more than 200, or no list); an upsert creates or updates by ``remoteId`` (idempotent:
the same body twice leaves the same users; a new user gets a 64-hex ``id``); users the
fake does not trust (``untrusted``, a regex on ``remoteId``) come back in
``data.failed[{user, error: "User is not using a trusted domain"}]``. A deactivation names
users by ``remoteId`` or ``id`` (the UserRef shape is not documented) and sets
``active: false``; unknown ones come back in ``failed[]``. Writes are POSTs: the request
log (``request_log``) shows whether any was sent.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from typing import Any

from lms_sync.sandbox.server import Request, Response

UNTRUSTED = "User is not using a trusted domain"
MAX_BATCH = 200
Index = dict[tuple[str, str], dict[str, Any]]  # ("id" | "remoteId", value) -> user


class UserWrites:
    """Mixed into the fake, which provides its users, lock, population and error body."""

    untrusted: str = ""
    _users: list[dict[str, Any]] | None
    _lock: Any
    population: Any
    request_log: list[tuple[str, str]]
    error_response: Callable[[str, int], Response]

    def _batch(self, request: Request) -> list[Any] | Response:
        try:
            body = request.json()
        except ValueError:
            return self.error_response("The request body is not valid JSON", 400)
        users = body.get("users") if isinstance(body, dict) else None
        if not isinstance(users, list) or not 1 <= len(users) <= MAX_BATCH:
            return self.error_response(f"'users' must be an array of 1 to {MAX_BATCH} items", 400)
        return users

    def _upsert_users(self, request: Request, _m: Any) -> Response:
        return self._write(request, self._upsert_one)

    def _deactivate_users(self, request: Request, _m: Any) -> Response:
        return self._write(request, self._deactivate_one)

    def _write(self, request: Request, apply: Callable[[Any, Index], dict[str, Any] | str]
               ) -> Response:
        """Apply to each item of the batch: the user it leaves, or why not (``failed[]``)."""
        batch = self._batch(request)
        if isinstance(batch, Response):
            return batch
        success, failed = [], []
        with self._lock:
            users = self._users or []
            index: Index = {**{("id", u["id"]): u for u in users},
                            **{("remoteId", u["remoteId"]): u for u in users if u.get("remoteId")}}
            for item in batch:
                got = apply(item, index)
                if isinstance(got, str):
                    failed.append({"user": item, "error": got})
                else:
                    success.append(dict(got))
        return Response.json({"success": True, "data": {"success": success, "failed": failed},
                              "error": None})

    def _upsert_one(self, item: Any, index: Index) -> dict[str, Any] | str:
        rid = item.get("remoteId") if isinstance(item, dict) else None
        if not isinstance(rid, str) or not rid:
            return "remoteId is required"
        if self.untrusted and re.search(self.untrusted, rid):
            return UNTRUSTED
        user = index.get(("remoteId", rid))
        if user is None:
            digest = hashlib.sha256(f"sparkwise:{self.population.seed}:{rid}".encode())
            user = index["remoteId", rid] = {"id": digest.hexdigest(), "firstName": None,
                                             "lastName": None, "active": True, "remoteId": rid}
            assert self._users is not None
            self._users.append(user)
        user.update({k: item[k] for k in ("firstName", "lastName", "active") if k in item})
        return user

    def _deactivate_one(self, ref: Any, index: Index) -> dict[str, Any] | str:
        key = next(((k, ref[k]) for k in ("remoteId", "id")
                    if isinstance(ref, dict) and isinstance(ref.get(k), str)), None)
        user = index.get(key) if key else None
        if user is None:
            return "User not found"
        user["active"] = False
        return user

    def writes(self) -> list[tuple[str, str]]:
        """Every write request received (method, path), refused ones too."""
        return [(m, p) for m, p in self.request_log if m != "GET"]

