"""Run bookkeeping: ``sources``, ``sync_runs`` and the per-stream cursor in ``sync_state``."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, CursorResult, Engine, select, update

from lms_sync.warehouse import dialect as dialects
from lms_sync.warehouse.tables import sources, sync_runs, sync_state


def now_utc() -> datetime:
    return datetime.now(UTC)


def ensure_source(conn: Connection, source_id: str, kind: str) -> None:
    now = now_utc()
    stmt = dialects.upsert_statement(sources, ["id"], ["kind"], dialects.name(conn))
    conn.execute(stmt, [{"id": source_id, "kind": kind, "first_seen_at": now, "updated_at": now}])


def mark_source_success(conn: Connection, source_id: str, at: datetime) -> None:
    conn.execute(update(sources).where(sources.c.id == source_id).values(last_success_at=at))


def load_cursor(conn: Connection, source_id: str, stream: str) -> dict[str, Any] | None:
    return conn.execute(
        select(sync_state.c.cursor).where(
            sync_state.c.source_id == source_id, sync_state.c.stream == stream
        )
    ).scalar()


def save_cursor(conn: Connection, source_id: str, stream: str, cursor: dict[str, Any] | None) -> None:
    """Write the stream's cursor; call inside the batch's transaction."""
    stmt = dialects.upsert_statement(
        sync_state, ["source_id", "stream"], ["cursor", "updated_at"], dialects.name(conn)
    )
    conn.execute(stmt, [{"source_id": source_id, "stream": stream, "cursor": cursor,
                         "updated_at": now_utc()}])


def start_run(conn: Connection, run_id: str, source_id: str, stream: str, started_at: datetime) -> int:
    result = conn.execute(
        sync_runs.insert().values(
            run_id=run_id, source_id=source_id, stream=stream, started_at=started_at,
            result="running", records_read=0, records_written=0, records_skipped=0,
        )
    )
    return inserted_id(result)


def inserted_id(result: CursorResult[Any]) -> int:
    """The id of the row a one-row INSERT made."""
    key = result.inserted_primary_key
    if key is None:  # only an INSERT of several rows at once has none
        raise RuntimeError("the database returned no id for the new row")
    return int(key[0])


def finish_run(conn: Connection, row_id: int, *, result: str, read: int, written: int,
               skipped: int = 0, error: str | None = None, cursor: Any = None,
               vendor_total: int | None = None, distinct_read: int | None = None,
               excluded: int | None = None) -> None:
    conn.execute(
        update(sync_runs).where(sync_runs.c.id == row_id).values(
            finished_at=now_utc(), result=result, records_read=read, records_written=written,
            records_skipped=skipped, error=(error or None) and error[:4000], cursor=cursor,
            vendor_total=vendor_total, distinct_read=distinct_read, records_excluded=excluded,
        )
    )


def fail_stale_runs(engine: Engine, reason: str, source_ids: list[str] | None = None,
                    since: datetime | None = None) -> int:
    """Mark runs left ``running`` (by a killed process) as failed with ``reason``.

    With ``since``, only runs started at or after it (one run that did not stop in time).
    """
    stmt = update(sync_runs).where(sync_runs.c.result == "running")
    if source_ids is not None:
        stmt = stmt.where(sync_runs.c.source_id.in_(source_ids))
    if since is not None:
        stmt = stmt.where(sync_runs.c.started_at >= since.replace(microsecond=0))
    with engine.begin() as conn:
        return conn.execute(stmt.values(result="failed", error=reason, finished_at=now_utc())).rowcount


def sources_with_running_runs(engine: Engine, source_ids: list[str] | None = None) -> list[str]:
    """Sources that have a run still marked ``running``."""
    query = select(sync_runs.c.source_id).where(sync_runs.c.result == "running").distinct()
    if source_ids is not None:
        query = query.where(sync_runs.c.source_id.in_(source_ids))
    with engine.connect() as conn:
        return [r[0] for r in conn.execute(query)]


def last_successes(engine: Engine, source_ids: list[str]) -> dict[str, datetime]:
    """When each source last succeeded completely (sources never successful are absent)."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(sources.c.id, sources.c.last_success_at)
            .where(sources.c.id.in_(source_ids), sources.c.last_success_at.is_not(None))
        ).all()
    return {source_id: at for source_id, at in rows}


def run_row(conn: Connection, run_id: str, stream: str) -> int | None:
    """The ``sync_runs`` row of a stream's run if it exists already: a start retried after a
    commit whose answer a lost connection never brought back must not add a second one."""
    return conn.execute(select(sync_runs.c.id).where(sync_runs.c.run_id == run_id,
                                                     sync_runs.c.stream == stream)).scalar()
