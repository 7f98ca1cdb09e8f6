"""Org units as people read them: a person's units with their paths (``identity show``).

The tables are ``org_units`` and ``learner_org_units``; the paths come from the
``org_unit_paths`` view (see ``views.py``).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, Integer, String, column, select, table

from lms_sync.warehouse.tables import learner_org_units, learners, org_units

org_unit_paths = table("org_unit_paths", column("org_unit_id", Integer), column("path", String))


def person_org_units(conn: Connection, person_id: int) -> list[dict[str, Any]]:
    """The union of the live org units of a person's live accounts, each once, by source
    and path: ``source_id``, ``external_id``, ``kind``, ``name``, ``path``."""
    m, u, lr, pp = learner_org_units.c, org_units.c, learners.c, org_unit_paths.c
    query = (
        select(u.source_id, u.external_id, u.kind, u.name, pp.path).distinct()
        .select_from(learner_org_units.join(org_units, u.id == m.org_unit_id)
                     .join(learners, lr.id == m.learner_id)
                     .outerjoin(org_unit_paths, pp.org_unit_id == u.id))
        .where(lr.person_id == person_id, lr.deleted_at.is_(None), m.deleted_at.is_(None),
               u.deleted_at.is_(None))
    )
    rows = [dict(r) for r in conn.execute(query).mappings()]
    return sorted(rows, key=lambda r: (r["source_id"], (r["path"] or "").lower(), r["external_id"]))
