"""One contract, every registered connector that has a sandbox fake.

Records validate (the pipeline would skip or fail otherwise), keys are unique
within a stream, the cursor is saved, and a second run writes nothing.
"""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from lms_sync.connectors import available_kinds
from lms_sync.sandbox.registry import available_fakes
from lms_sync.warehouse.tables import RECORD_TABLES, sync_runs, sync_state
from tests.connectors.conftest import sync

KINDS = sorted(set(available_kinds()) & set(available_fakes()))


@pytest.mark.parametrize("kind", KINDS)
def test_contract(kind, start_vendor, sqlite_warehouse):
    vendor = start_vendor(kind, learners=40)
    first = sync(sqlite_warehouse, {"src": vendor.source})
    assert first.ok, first.error
    assert all(s.skipped == 0 for s in first.streams), [(s.stream, s.skipped) for s in first.streams]
    assert sum(s.read for s in first.streams) > 0
    assert sum(s.written for s in first.streams) > 0
    engine = sqlite_warehouse.engine
    with engine.connect() as conn:
        for table in RECORD_TABLES.values():
            if "as_of" in table.c:
                continue
            dupes = conn.execute(
                select(table.c.external_id).group_by(table.c.source_id, table.c.external_id)
                .having(func.count() > 1)
            ).all()
            assert not dupes
            stubs = conn.execute(select(func.count()).select_from(table)
                                 .where(table.c.row_hash == "")).scalar()
            assert stubs == 0, f"{table.name} has {stubs} stub rows (emit the real records)"
        streams = {r.stream for r in conn.execute(select(sync_runs.c.stream)).all()}
        saved = {r.stream for r in conn.execute(select(sync_state.c.stream)).all()}
    assert streams and all(name == name.lower() and " " not in name for name in streams)
    assert saved, "no stream saved a cursor"

    second = sync(sqlite_warehouse, {"src": vendor.source})
    assert second.ok, second.error
    assert {s.stream: s.written for s in second.streams} == {s.stream: 0 for s in second.streams}
