"""Sparkwise users, read and written (``kind: sessions``): the user list, paged, with the
ids completions name participants by (:class:`SparkwiseUsers`, the connector's client,
auth and envelope), and provisioning (``lms-sync provision``) with the two batch
operations of the Account API [doc]:

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

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from lms_sync.errors import DataError
from lms_sync.http.paging import CountedPageNumberPaginator, Page, dig
from lms_sync.keyset import KeySet
from lms_sync.provision.plan import RemoteUser, Wanted

if TYPE_CHECKING:
    from lms_sync.connectors.sessions import SessionsConnector

BATCH_LIMIT = 200  # [doc]: 1..200 items per call
FIX_PATHS = "check the paths option against the vendor's API"


def error_message(body: Any) -> str | None:
    """The message of a failure body (as ``sessions.describe_error`` reads it), or None."""
    error = dig(body, "error")
    message = (dig(error, "message") if isinstance(error, dict) else error) or dig(body, "message")
    return str(message).splitlines()[0][:300] if message else None


def envelope(body: Any, path: str, source: str) -> dict[str, Any]:
    """``data`` of a ``{"success", "data"}`` body; a failure body is a DataError."""
    if isinstance(body, dict) and body.get("success") is not False and isinstance(body.get("data"), dict):
        return body["data"]
    raise DataError(f"the vendor sent no data: {error_message(body) or 'unexpected body shape'}",
                    source=source, path=path, fix=FIX_PATHS)


def items(body: Any, path: str, source: str) -> list[dict[str, Any]]:
    """The objects of ``data.items`` (others passed over)."""
    return [i for i in envelope(body, path, source).get("items") or [] if isinstance(i, dict)]


class SparkwiseUsers:
    """The user list, page by page, and which ids a completion may name its participant by,
    at ~8 bytes a user: ``direct`` (remoteIds, and the ids of users without one: each its
    learner's key) and ``aliased`` (ids of users with a remoteId; the remoteId is looked up
    on need, as a dict of every user's two ids costs ~260 bytes a user)."""

    def __init__(self, connector: SessionsConnector) -> None:
        self.c = connector
        self.direct: KeySet | None = None  # set by a walk read to the end
        self.aliased = KeySet()
        self.aliases: dict[str, str] | None = None  # Sparkwise id -> remoteId, read on need

    def pages(self) -> Iterator[Page]:
        """The user list, page by page; read to the end, it leaves the participant ids."""
        path, size = self.c.options.paths.users, self.c.options.page_size
        # by data.totalPages (else total / size), not next: the documented sample shows
        # next: null on a list of one page only; next decides when neither count is given
        pager = CountedPageNumberPaginator(start=0, page_size=size, total_pages_key="data.totalPages",
                                           total_key="data.total", size_key="data.size", next_key="data.next")
        direct, aliased = KeySet(), KeySet()
        for page in self.c.client.paginate(path, pager, params={"pageSize": size}, fix=FIX_PATHS,
                                           records=lambda body: items(body, path, self.c.source.id)):
            self.c.log.debug("page.fetched", path=path, page=page.number - 1, count=len(page.rows))
            for u in page.rows:
                if u.get("id"):
                    direct.add(u.get("remoteId") or u["id"])
                    if u.get("remoteId"):
                        aliased.add(u["id"])
            yield page
        self.direct, self.aliased = direct, aliased

    def learner_key_of(self, participant: str) -> str | None:
        """The learner key a completion's ``remoteUserId`` names; None: no such user."""
        if self.direct is None:
            for _ in self.pages():
                pass
        assert self.direct is not None
        if participant in self.direct:
            return participant
        if participant not in self.aliased:
            return None
        if self.aliases is None:
            self.c.log.warning("participant.by_sparkwise_id", remote_user_id=participant,
                               note="completions should name participants by remoteId; "
                                    "reading the user list again to map Sparkwise ids")
            self.aliases = {u["id"]: u["remoteId"] for page in self.pages() for u in page.rows
                            if u.get("id") and u.get("remoteId")}
        return self.aliases.get(participant)


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
        return [remote_user(u) for page in self.c.users.pages() for u in page.rows if u.get("id")]

    def upsert(self, batch: Sequence[Wanted]) -> dict[str, str]:
        path = self.c.options.paths.upsert_users
        return refused(self._post(path, [template(u) for u in batch]), {})

    def deactivate(self, batch: Sequence[RemoteUser]) -> dict[str, str]:
        field = self.c.options.user_ref
        refs = [{field: u.remote_id if field == "remoteId" else u.id} for u in batch]
        ids = {u.id: u.remote_id for u in batch if u.remote_id}
        return refused(self._post(self.c.options.paths.deactivate_users, refs), ids)

    def _post(self, path: str, users: list[dict[str, Any]]) -> dict[str, Any]:
        body = self.c.client.json_of(self.c.client.request("POST", path, json={"users": users}))
        if isinstance(body, dict) and body.get("success") is not False and body.get("data") is None:
            return {}  # an answer without data: nothing was refused
        return envelope(body, path, self.c.source.id)
