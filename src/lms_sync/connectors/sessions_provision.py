"""Sparkwise user provisioning: the write side of ``kind: sessions`` (``lms-sync provision``).

Reads the user list through the sessions connector (its client, auth and paging), and
writes with the two batch operations of the Account API [doc]:

``POST paths.upsert_users`` (default ``/v1/users/batch-upsert`` [guess])
    ``{"users": [UserTemplate, 1..200]}``, a UserTemplate being ``firstName``,
    ``lastName``, ``active``, ``remoteId``; users are created or updated by ``remoteId``.
    Answers ``data.success[]`` and ``data.failed[{user, error}]`` (e.g. a user outside
    the trusted domains): those are returned to the caller, who retries them next run.
``POST paths.deactivate_users`` (default ``/v1/users/batch-deactivate`` [guess])
    1..200 ``UserRef``. The seed shows the UserRef schema empty, so the body is a guess:
    ``{"users": [{"remoteId": ...}]}``; option ``user_ref: id`` sends the Sparkwise
    ``id`` instead. The answer is read like the upsert's (``data.failed[]`` if any).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from lms_sync.errors import DataError
from lms_sync.provision.plan import RemoteUser, Wanted

if TYPE_CHECKING:
    from lms_sync.connectors.sessions import SessionsConnector

BATCH_LIMIT = 200  # [doc]: 1..200 items per call


def remote_user(raw: dict[str, Any]) -> RemoteUser:
    return RemoteUser(id=str(raw["id"]), remote_id=(raw.get("remoteId") or None),
                      first_name=raw.get("firstName") or "", last_name=raw.get("lastName") or "",
                      active=raw.get("active") is not False)


def template(user: Wanted) -> dict[str, Any]:
    return {"firstName": user.first_name, "lastName": user.last_name, "active": user.active,
            "remoteId": user.remote_id}


def refused(data: dict[str, Any], ids: dict[str, str]) -> dict[str, str]:
    """``data.failed[{user, error}]`` -> {remoteId: the vendor's error (one line)}.

    ``ids`` maps Sparkwise ids to remoteIds, for an entry that names its user by ``id`` only.
    """
    out: dict[str, str] = {}
    for entry in data.get("failed") or []:
        if not isinstance(entry, dict):
            continue
        user = entry["user"] if isinstance(entry.get("user"), dict) else {}
        rid = user.get("remoteId") or ids.get(str(user.get("id"))) or str(user.get("id") or "?")
        error = str(entry.get("error") or "refused without a reason").splitlines()[0][:300]
        out[str(rid)] = error
    return out


class SessionsProvisioner:
    """:class:`~lms_sync.connectors.base.Provisioner` for Sparkwise."""

    batch_limit = BATCH_LIMIT

    def __init__(self, connector: SessionsConnector) -> None:
        self.c = connector

    def remote_users(self) -> list[RemoteUser]:
        return [remote_user(u) for page in self.c.user_pages() for u in page.rows if u.get("id")]

    def upsert(self, batch: Sequence[Wanted]) -> dict[str, str]:
        path = self.c.options.paths.upsert_users
        return refused(self._post(path, [template(u) for u in batch]), {})

    def deactivate(self, batch: Sequence[RemoteUser]) -> dict[str, str]:
        field = self.c.options.user_ref
        refs = [{field: u.remote_id if field == "remoteId" else u.id} for u in batch]
        ids = {u.id: u.remote_id for u in batch if u.remote_id}
        return refused(self._post(self.c.options.paths.deactivate_users, refs), ids)

    def _post(self, path: str, users: list[dict[str, Any]]) -> dict[str, Any]:
        response = self.c.client.request("POST", path, json={"users": users})
        try:
            body = response.json()
        except ValueError:
            raise DataError("the body is not valid JSON", source=self.c.source.id, path=path,
                            status=response.status_code) from None
        if isinstance(body, dict) and body.get("success") is not False and body.get("data") is None:
            return {}  # an answer without data: nothing was refused
        return self.c.envelope(body, path)
