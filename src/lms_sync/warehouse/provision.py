"""What ``lms-sync provision`` reads from and writes to the warehouse.

Reads: the accounts of the from_sources (:func:`accounts`) and whether each of those
sources can be trusted to say who left (:func:`unknown_reason`). Writes: one
``provision_actions`` row per user sent, and the run's ``sync_runs`` row (stream
``provision``), written whole when the run ends: a sync of the same source, which marks
rows left ``running`` abandoned, never sees one of a provisioning run in flight.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import Connection, Engine, func, select

from lms_sync.provision.plan import LearnerRow
from lms_sync.warehouse import state
from lms_sync.warehouse.tables import learners, provision_actions, sync_runs

STREAM = "provision"


def accounts(conn: Connection, source_ids: Sequence[str]) -> list[LearnerRow]:
    """Every non-placeholder learner of these sources, deleted ones included."""
    c = learners.c
    query = (select(c.id, c.person_id, c.source_id, c.hr_id, c.first_name, c.last_name,
                    c.display_name, c.is_active, c.deleted_at.is_not(None))
             .where(c.source_id.in_(list(source_ids)), c.is_placeholder.is_(False)))
    return [LearnerRow(*row) for row in conn.execute(query)]


def unknown_reason(conn: Connection, source_id: str, learner_streams: Sequence[str]) -> str | None:
    """Why the source cannot be trusted to say who left, or None.

    Unknown: it never ran, or the latest run of a stream that soft-deletes its learners
    failed, is still running, or skipped records (so it held its soft deletes).
    """
    latest = (select(func.max(sync_runs.c.id)).where(sync_runs.c.source_id == source_id)
              .group_by(sync_runs.c.stream))
    rows = {r.stream: r for r in conn.execute(
        select(sync_runs.c.stream, sync_runs.c.result, sync_runs.c.records_skipped)
        .where(sync_runs.c.id.in_(latest)))}
    rows.pop(STREAM, None)
    if not rows:
        return "it never ran"
    for stream in learner_streams:
        row = rows.get(stream)
        if row is None:
            return f"its {stream} stream never ran"
        if row.result != "succeeded":
            return f"its last {stream} run {'is still running' if row.result == 'running' else row.result}"
        if row.records_skipped:
            return (f"its last {stream} run skipped {row.records_skipped} record(s), so it "
                    "held its soft deletes")
    return None


def insert_actions(conn: Connection, run_id: str, source_id: str, action: str,
                   outcomes: Sequence[tuple[str, str | None]], at: datetime) -> None:
    """One row per user sent: (remote id, the vendor's error or None)."""
    if outcomes:
        conn.execute(provision_actions.insert(), [
        {"run_id": run_id, "source_id": source_id, "action": action, "remote_id": rid,
         "result": "failed" if error else "succeeded", "error": error, "at": at}
        for rid, error in outcomes])


def record_run(engine: Engine, run_id: str, source_id: str, kind: str, started_at: datetime, *,
               result: str, read: int, written: int, failed: int, error: str | None) -> None:
    with engine.begin() as conn:
        state.ensure_source(conn, source_id, kind)
        row = state.start_run(conn, run_id, source_id, STREAM, started_at)
        state.finish_run(conn, row, result=result, read=read, written=written, skipped=failed,
                         error=error)
