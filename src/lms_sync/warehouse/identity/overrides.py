"""Manual corrections (``identity_overrides``): ``link`` forces two learners into one person,
``apart`` keeps them in different persons even when an email or HR id says otherwise.

A learner is named by its numeric id or as ``SOURCE_ID:EXTERNAL_ID``. Placeholders never link,
not even by an override. One row per pair: a new override replaces the pair's old one.
"""

from __future__ import annotations

from sqlalchemy import Connection, or_, select

from lms_sync.errors import UserError
from lms_sync.warehouse.identity.assign import Learner
from lms_sync.warehouse.identity.rules import LINK
from lms_sync.warehouse.identity.store import LEARNER_COLUMNS
from lms_sync.warehouse.state import now_utc
from lms_sync.warehouse.tables import identity_overrides, learners


def resolve_learner(conn: Connection, token: str) -> Learner:
    """A learner by numeric id or ``source_id:external_id``; UserError if unknown."""
    token = token.strip()
    c = learners.c
    if token.isdigit():
        row = conn.execute(select(*LEARNER_COLUMNS).where(c.id == int(token))).first()
    else:
        source_id, colon, external_id = token.partition(":")
        row = None
        if colon:
            row = conn.execute(select(*LEARNER_COLUMNS).where(c.source_id == source_id,
                                                              c.external_id == external_id)).first()
    if row is None:
        raise UserError(f"no learner {token!r} in the warehouse; name a learner as "
                        "SOURCE_ID:EXTERNAL_ID or by its numeric id (see lms-sync identity show EMAIL)")
    return Learner._make(row)


def record_override(conn: Connection, a: str, b: str, action: str,
                    note: str | None = None) -> tuple[Learner, Learner]:
    """Store a ``link`` or ``apart`` of learners ``a`` and ``b``; UserError if it cannot be."""
    la, lb = resolve_learner(conn, a), resolve_learner(conn, b)
    if la.id == lb.id:
        raise UserError(f"{a!r} and {b!r} are the same learner; name two different learners")
    if action == LINK:
        for token, row in ((a, la), (b, lb)):
            if row.is_placeholder:
                raise UserError(f"learner {token!r} is a placeholder identity (anonymized or "
                                "shared) and never links to anyone; nothing was changed")
    lo, hi = min(la.id, lb.id), max(la.id, lb.id)
    oc = identity_overrides.c
    conn.execute(identity_overrides.delete().where(
        or_((oc.learner_a_id == lo) & (oc.learner_b_id == hi),
            (oc.learner_a_id == hi) & (oc.learner_b_id == lo))))
    conn.execute(identity_overrides.insert().values(
        learner_a_id=lo, learner_b_id=hi, action=action, note=note, created_at=now_utc()))
    return la, lb
