"""What a warehouse holds, by natural keys: two syncs of the same vendors compare equal
whatever surrogate ids, bookkeeping times or retries each went through."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from sqlalchemy import Engine, select

from lms_sync.warehouse.tables import (
    activity_progress,
    courses,
    enrollment_history,
    enrollments,
    learners,
    stat_snapshots,
    sync_state,
)

# our own bookkeeping, which differs from one sync to another by design
_OWN = {"id", "first_seen_at", "updated_at", "matched_at", "person_id", "as_of", "observed_at",
        "run_id"}
_REFS = {"learner_id": learners, "course_id": courses, "enrollment_id": enrollments,
         "parent_course_id": courses}


def _value(value: Any) -> Any:
    return json.dumps(value, sort_keys=True, default=str) if isinstance(value, dict | list) else value


def snapshot(engine: Engine) -> dict[str, Any]:
    """Every vendor table as a multiset of rows (references as the referenced row's
    vendor id); persons as groups of learner keys; the streams that have a cursor."""
    out: dict[str, Any] = {}
    with engine.connect() as conn:
        keys = {t.name: {r.id: (r.source_id, r.external_id) for r in
                         conn.execute(select(t.c.id, t.c.source_id, t.c.external_id))}
                for t in (learners, courses, enrollments)}
        for table in (learners, courses, enrollments, activity_progress, stat_snapshots,
                      enrollment_history):
            rows = Counter()
            for row in conn.execute(select(table)).mappings():
                rows[tuple(sorted(
                    (col, keys[_REFS[col].name].get(val) if col in _REFS else _value(val))
                    for col, val in row.items() if col not in _OWN))] += 1
            out[table.name] = rows
        people: dict[int, set[tuple[str, str]]] = {}
        for row in conn.execute(select(learners.c.person_id, learners.c.source_id,
                                       learners.c.external_id)):
            people.setdefault(row.person_id, set()).add((row.source_id, row.external_id))
        out["persons"] = sorted(sorted(group) for group in people.values())
        out["cursors"] = sorted((r.source_id, r.stream) for r in conn.execute(
            select(sync_state.c.source_id, sync_state.c.stream)
            .where(sync_state.c.cursor.is_not(None))))
    return out


def differences(a: dict[str, Any], b: dict[str, Any]) -> dict[str, str]:
    """Per part that differs, a short account of how (for an assertion message)."""
    out = {}
    for part in a:
        if a[part] != b[part]:
            if isinstance(a[part], Counter):
                only_a, only_b = a[part] - b[part], b[part] - a[part]
                out[part] = (f"{sum(only_a.values())} rows only in the first, "
                             f"{sum(only_b.values())} only in the second; e.g. "
                             f"{next(iter(only_a or only_b))}")
            else:
                out[part] = f"{len(a[part])} vs {len(b[part])}"
    return out
