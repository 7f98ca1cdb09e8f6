"""``stream_pages``: the page digests of a stream's last clean run (connectors/skim.py).

Loaded when a skim stream's run starts, only if that clean run is still the stream's latest
(any run since, failed or not, may have written what the digests do not describe); saved
in the transaction that records a clean run's result, so digests never outlive a write
that did not happen. A saved set is a plain mapping, the fields of
``lms_sync.connectors.skim.SavedPages`` (the pipeline makes one of the other): the
warehouse knows the table, not the walk.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, select

from lms_sync.warehouse import dialect as dialects
from lms_sync.warehouse.tables import stream_pages, sync_runs


def load(conn: Connection, source_id: str, stream: str, current_row: int) -> dict[str, Any] | None:
    """The stream's saved pages, if the run that saved them is its latest run before the
    ``sync_runs`` row ``current_row`` (this run's) and succeeded."""
    saved = conn.execute(select(stream_pages).where(
        stream_pages.c.source_id == source_id, stream_pages.c.stream == stream)).first()
    if saved is None:
        return None
    latest = conn.execute(
        select(sync_runs.c.run_id, sync_runs.c.result)
        .where(sync_runs.c.source_id == source_id, sync_runs.c.stream == stream,
               sync_runs.c.id != current_row)
        .order_by(sync_runs.c.started_at.desc(), sync_runs.c.id.desc()).limit(1)).first()
    if latest is None or latest.run_id != saved.run_id or latest.result != "succeeded":
        return None
    return {"run_id": saved.run_id, "fingerprint": saved.fingerprint,
            "digests": bytes(saved.digests), "records_read": saved.records_read,
            "distinct_read": saved.distinct_read, "excluded": saved.records_excluded}


def save(conn: Connection, source_id: str, stream: str, pages: Mapping[str, Any], page_count: int,
         at: datetime) -> None:
    """Replace the stream's saved pages (call in the transaction finishing the run)."""
    row = {"source_id": source_id, "stream": stream, "run_id": pages["run_id"],
           "fingerprint": pages["fingerprint"], "pages": page_count, "digests": pages["digests"],
           "records_read": pages["records_read"], "distinct_read": pages["distinct_read"],
           "records_excluded": pages["excluded"], "saved_at": at}
    stmt = dialects.upsert_statement(stream_pages, ["source_id", "stream"],
                                     [c for c in row if c not in ("source_id", "stream")],
                                     dialects.name(conn))
    conn.execute(stmt, [row])
