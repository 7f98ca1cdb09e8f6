"""One contract, every registered connector (each must have a sandbox fake).

Records validate (the pipeline would skip or fail otherwise) and equal what validating
their own dump gives (value types and aware-UTC times included: records may be built
without validating, :mod:`lms_sync.connectors.construct`) and reach the warehouse
whole (no stubs left), a stream that reports the vendor's total reads exactly it, keys
are unique within a read of a stream, every stream that
ends with a cursor has it saved, a second run writes nothing, and after learners make
progress upstream (``FakeVendor.make_progress``) the next run writes it and every
incremental stream that picked it up has moved its cursor on.
"""

from __future__ import annotations

import time
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from lms_sync.canonical import Record
from lms_sync.config import parse_config
from lms_sync.connectors import available_kinds, connector_class
from lms_sync.connectors.base import Checkpoint, ReadContext
from lms_sync.logs import get_logger
from lms_sync.sandbox.registry import available_fakes
from lms_sync.warehouse.tables import RECORD_TABLES, sync_runs, sync_state
from tests.connectors.conftest import sync

KINDS = sorted(set(available_kinds()) - {"synthetic"})

VENDOR_TOTALS = {  # the streams whose vendor reports a total to reconcile a full read with
    "absorb": {"departments", "users", "courses", "enrollments"},
    "udemy": {"courses", "enrollments", "progress", "activity"},
    "sessions": {"users", "clusters"},
    "academy": {"users"},
    "ispring": set(),  # iSpring reports no totals
}


def test_every_connector_has_a_fake():
    """A connector without a sandbox fake would be left out of this contract silently."""
    assert KINDS and set(KINDS) <= set(available_fakes())


def read_all(block: dict) -> dict[str, tuple[list, dict | None]]:
    """Each stream of a first run, read in order by one connector as the pipeline does:
    stream -> (records, the last checkpoint's cursor)."""
    cfg = parse_config({"sources": {"src": block}})
    log = get_logger("contract")
    out = {}
    with connector_class(cfg.sources["src"].kind)(cfg.sources["src"], log) as connector:
        for stream in connector.streams():
            ctx = ReadContext("src", stream.name, None, False, None, datetime.now(UTC), log)
            records, cursor = [], None
            for item in stream.read(ctx):
                if isinstance(item, Checkpoint):
                    cursor = item.cursor
                else:
                    records.append(item)
            out[stream.name] = (records, cursor)
    return out


def assert_as_validated(record: Record) -> None:
    """``record`` equals the record validated from its own dump, value types included (an
    enum member where validating keeps its value, a naive or non-UTC time would differ)."""
    again = type(record).model_validate(record.model_dump())
    assert record == again, (record, again)
    types = {k: type(v) for k, v in record.__dict__.items()}
    assert types == {k: type(v) for k, v in again.__dict__.items()}, record
    assert record.model_fields_set <= set(type(record).model_fields), record
    for name, value in record.__dict__.items():
        if isinstance(value, datetime):
            assert value.utcoffset() == timedelta(0) and value.tzinfo is UTC, (name, record)


def cursors(engine) -> dict[str, dict | None]:
    with engine.connect() as conn:
        return {r.stream: r.cursor for r in conn.execute(select(sync_state.c.stream, sync_state.c.cursor))}


@pytest.mark.parametrize("kind", KINDS)
def test_contract(kind, start_vendor, sqlite_warehouse):
    vendor = start_vendor(kind, learners=40)
    read = read_all(vendor.source)
    for stream, (records, _) in read.items():
        keys = Counter((r.table, r.external_id) for r in records)
        assert [k for k, n in keys.items() if n > 1] == [], f"{stream} repeats keys"
        for r in records:  # built without validating (construct) or not: as validating makes it
            assert_as_validated(r)
    assert sum(len(records) for records, _ in read.values()) > 0

    first = sync(sqlite_warehouse, {"src": vendor.source})
    assert first.ok, first.error
    assert all(s.skipped == 0 for s in first.streams), [(s.stream, s.skipped) for s in first.streams]
    assert {s.stream: s.read for s in first.streams} == {k: len(r) for k, (r, _) in read.items()}
    assert sum(s.written for s in first.streams) > 0
    assert {s.stream for s in first.streams if s.vendor_total is not None} == VENDOR_TOTALS[kind]
    for s in first.streams:  # a stream with the vendor's own total reads exactly that
        if s.vendor_total is not None:
            assert s.distinct_read + s.skipped + s.excluded == s.vendor_total, (
                s.stream, s.distinct_read, s.skipped, s.excluded, s.vendor_total)
    engine = sqlite_warehouse.engine
    with engine.connect() as conn:
        for table in RECORD_TABLES.values():
            stubs = conn.execute(select(func.count()).select_from(table)
                                 .where(table.c.row_hash == "")).scalar()
            assert stubs == 0, f"{table.name} has {stubs} stub rows (emit the real records)"
        streams = {r.stream for r in conn.execute(select(sync_runs.c.stream)).all()}
    assert streams == set(read) and all(n == n.lower() and " " not in n for n in streams)
    saved = cursors(engine)
    ended_with_cursor = {name for name, (_, cursor) in read.items() if cursor is not None}
    assert ended_with_cursor, "no stream saved a cursor"
    assert {name for name, cursor in saved.items() if cursor is not None} >= ended_with_cursor

    second = sync(sqlite_warehouse, {"src": vendor.source})
    assert second.ok, second.error
    assert {s.stream: s.written for s in second.streams} == {s.stream: 0 for s in second.streams}

    # streams that read from their cursor (less than a first run) must move it on when
    # they pick up new progress; streams that read everything each run keep a cursor
    # only as information
    incremental = {s.stream for s, f in zip(second.streams, first.streams, strict=True)
                   if s.read < f.read}
    before = cursors(engine)
    assert vendor.fake.make_progress(3) == 3
    time.sleep(1.05)  # cursors are read times to the second: the next run starts a second later
    third = sync(sqlite_warehouse, {"src": vendor.source})
    assert third.ok, third.error
    assert sum(s.written for s in third.streams) >= 3, [(s.stream, s.written) for s in third.streams]
    after = cursors(engine)
    for s in third.streams:
        if s.stream in incremental and s.written:
            assert after[s.stream] != before[s.stream], (s.stream, before, after)
