"""Identity matching: link learners of every source into persons.

Placeholder until the identity issue lands: every learner gets a person; learners
sharing a normalized email or HR id share a person.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import Engine, select, update

from lms_sync.warehouse.state import now_utc
from lms_sync.warehouse.tables import learners, persons


def after_run(engine: Engine, settings: Any, learner_ids: Iterable[int]) -> None:
    """Give every learner touched by a run a person (simple email/HR id rule)."""
    ids = sorted(set(learner_ids))
    if not ids:
        return
    with engine.begin() as conn:
        rows = conn.execute(
            select(learners.c.id, learners.c.email, learners.c.hr_id, learners.c.person_id,
                   learners.c.is_placeholder, learners.c.first_name, learners.c.last_name)
            .where(learners.c.id.in_(ids))
        ).all()
        now = now_utc()
        for row in rows:
            if row.person_id is not None:
                continue
            person_id = None
            if not row.is_placeholder and (row.email or row.hr_id):
                cond = []
                if row.email:
                    cond.append(learners.c.email == row.email)
                if row.hr_id:
                    cond.append(learners.c.hr_id == row.hr_id)
                from sqlalchemy import or_
                person_id = conn.execute(
                    select(learners.c.person_id).where(or_(*cond), learners.c.person_id.is_not(None),
                                                       learners.c.is_placeholder.is_(False)).limit(1)
                ).scalar()
            if person_id is None:
                name = " ".join(p for p in (row.first_name, row.last_name) if p) or None
                person_id = conn.execute(
                    persons.insert().values(primary_email=row.email, display_name=name,
                                            first_seen_at=now, updated_at=now)
                ).inserted_primary_key[0]
            conn.execute(update(learners).where(learners.c.id == row.id).values(person_id=person_id))
