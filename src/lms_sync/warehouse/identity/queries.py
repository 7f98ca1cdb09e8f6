"""Read-only lookups of persons: ``identity show``, ``report --person`` and ``status``."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, func, or_, select

from lms_sync.errors import UserError
from lms_sync.warehouse.identity.rules import Rules
from lms_sync.warehouse.tables import identity_overrides, learners, person_merges, persons
from lms_sync.warehouse.upsert import chunks


def find_persons(conn: Connection, token: str, settings: Any = None) -> list[int]:
    """Live person ids for EMAIL, PERSON_ID or SOURCE_ID:EXTERNAL_ID (a merged id follows its merge)."""
    token = token.strip()
    if token.isdigit():
        live = _live_heir(conn, int(token))
        return [] if live is None else [live]
    source_id, colon, external_id = token.partition(":")
    if colon and "@" not in source_id:
        pid = conn.execute(select(learners.c.person_id).where(
            learners.c.source_id == source_id, learners.c.external_id == external_id)).scalar()
        if pid is not None:
            return [pid]
    if "@" in token:
        return _by_email(conn, token, Rules.from_config(settings))
    return []


def _live_heir(conn: Connection, pid: int) -> int | None:
    """``pid`` if live, else the live person its merges lead to (None: unknown, or split away)."""
    for _ in range(100):  # a bound: merges form no cycle, but a corrupt table must not hang us
        row = conn.execute(select(persons.c.id, persons.c.deleted_at).where(persons.c.id == pid)).first()
        if row is None:
            return None
        if row.deleted_at is None:
            return pid
        nxt = conn.execute(
            select(person_merges.c.kept_person_id)
            .where(person_merges.c.merged_person_id == pid, person_merges.c.kind == "merge")
            .order_by(person_merges.c.id.desc()).limit(1)
        ).scalar()
        if nxt is None:
            return None
        pid = nxt
    return None


def _by_email(conn: Connection, token: str, rules: Rules) -> list[int]:
    key = rules.email_key(token)
    raw = token.strip().lower()
    found = set(conn.execute(select(learners.c.person_id).where(
        or_(learners.c.email_key == key, learners.c.email == raw),
        learners.c.person_id.is_not(None))).scalars())
    found |= set(conn.execute(select(persons.c.id).where(
        persons.c.primary_email == key, persons.c.deleted_at.is_(None))).scalars())
    if not found:
        return []
    return sorted(set(conn.execute(select(persons.c.id).where(
        persons.c.id.in_(sorted(found)), persons.c.deleted_at.is_(None))).scalars()))


def describe_person(conn: Connection, person_id: int) -> dict[str, Any]:
    """A person, its learners, its merge/split history and the overrides on its learners."""
    p = conn.execute(select(persons).where(persons.c.id == person_id)).mappings().first()
    if p is None:
        raise UserError(f"no person {person_id}")
    c = learners.c
    members = conn.execute(
        select(c.id, c.source_id, c.external_id, c.email, c.hr_id, c.first_name, c.last_name,
               c.display_name, c.is_placeholder, c.is_active, c.deleted_at)
        .where(c.person_id == person_id).order_by(c.id)
    ).mappings().all()
    pm = person_merges.c
    history = conn.execute(
        select(pm.at, pm.kind, pm.rule, pm.kept_person_id, pm.merged_person_id, pm.detail)
        .where(or_(pm.kept_person_id == person_id, pm.merged_person_id == person_id))
        .order_by(pm.id)
    ).mappings().all()
    oc = identity_overrides.c
    overrides: list[Any] = []
    for part in chunks([m["id"] for m in members]):
        overrides += conn.execute(
            select(oc.learner_a_id, oc.learner_b_id, oc.action, oc.note, oc.created_at)
            .where(or_(oc.learner_a_id.in_(part), oc.learner_b_id.in_(part)))
        ).mappings().all()
    return {
        "person": dict(p),
        "learners": [dict(m) for m in members],
        "history": [dict(h) for h in history],
        "overrides": [dict(o) for o in overrides],
    }


def summary(conn: Connection) -> dict[str, int]:
    """Identity totals for ``lms-sync status``."""
    c = learners.c
    live = c.deleted_at.is_(None)
    per_person = (select(c.person_id, func.count().label("n"), func.count(c.source_id.distinct())
                         .label("sources"))
                  .where(live, c.person_id.is_not(None)).group_by(c.person_id).subquery())
    alone = select(per_person.c.person_id).where(per_person.c.n == 1)
    return {
        "persons_in_several_sources": conn.execute(
            select(func.count()).select_from(per_person).where(per_person.c.sources > 1)).scalar() or 0,
        "unmatched_learners": conn.execute(
            select(func.count()).where(live, c.is_placeholder.is_(False), c.person_id.in_(alone))
        ).scalar() or 0,
        "placeholder_learners": conn.execute(
            select(func.count()).where(live, c.is_placeholder.is_(True))).scalar() or 0,
        "learners_without_person": conn.execute(
            select(func.count()).where(live, c.person_id.is_(None))).scalar() or 0,
    }
