"""SeenKeys and mark_deleted: what a stream remembers of the ids it read, for soft deletes."""

from __future__ import annotations

import random
import sys

from sqlalchemy import select

from lms_sync.canonical import Learner
from lms_sync.warehouse.seen import SeenKeys, mark_deleted
from lms_sync.warehouse.state import ensure_source, now_utc
from lms_sync.warehouse.tables import learners
from lms_sync.warehouse.upsert import BatchWriter


def test_seen_keys_answers_membership_like_a_set() -> None:
    rng = random.Random(3)
    read = [f"user-{rng.randrange(10**9)}:course-{i % 40}" for i in range(12_000)]
    seen = SeenKeys()
    for external_id in read:
        seen.add(external_id)
    assert len(seen) == len(read) and not seen.spilled
    assert all(x in seen for x in read)
    others = [f"gone-{i}" for i in range(12_000)]
    assert not any(x in seen for x in others)  # each would be a row wrongly kept alive
    assert 17 not in seen


def test_adding_after_a_lookup_is_seen() -> None:
    seen = SeenKeys()
    seen.add("a")
    assert "b" not in seen
    seen.add("b")
    seen.add("b")  # duplicates are harmless
    assert "a" in seen and "b" in seen


def test_a_million_keys_fit_in_about_eight_bytes_each() -> None:
    seen = SeenKeys(spill_at=0)
    for i in range(200_000):
        seen.add(f"enrollment-{i}")
    assert "enrollment-199999" in seen
    size = sum(sys.getsizeof(b) for b in seen._buckets)
    assert size < 200_000 * 10  # a set of the same digests takes ~66 bytes a key


def test_a_long_read_holds_at_most_spill_at_keys_and_loses_none() -> None:
    seen = SeenKeys(spill_at=1_000)
    read = [f"enrollment-{i}" for i in range(25_000)] + ["enrollment-7"]  # a repeat too
    held = 0
    for external_id in read:
        seen.add(external_id)
        held = max(held, sum(len(b) for b in seen._buckets))
    assert seen.spilled and held <= 1_000  # the rest waits in the temporary file
    # one record a spill (not one a bucket a spill): a low threshold stays cheap
    assert len(seen._spills) == 25 and sum(sys.getsizeof(s) for _o, s in seen._spills) < 25 * 1_200
    assert all(x in seen for x in read)
    assert not any(f"gone-{i}" in seen for i in range(25_000))
    seen.add("late")  # after the lookups nothing more is spilled: it is kept and found
    assert "late" in seen and "enrollment-24999" in seen
    seen.close()
    assert not seen.spilled


def test_mark_deleted_keeps_every_read_row_of_a_spilled_read(warehouse) -> None:
    """The rows read (their ids partly in the temporary file) stay; the rest are gone."""
    rows = [Learner(external_id=f"u-{i}", email=f"u{i}@example.com") for i in range(3_000)]
    with warehouse.engine.begin() as conn:
        ensure_source(conn, "src", "absorb")
        BatchWriter(conn, "src").write(rows, now_utc())
    seen = SeenKeys(spill_at=500)
    for record in rows:
        if not record.external_id.endswith("7"):  # one row in ten is gone upstream
            seen.add(record.external_id)
    assert seen.spilled
    with warehouse.engine.begin() as conn:
        gone = mark_deleted(conn, "learners", "src", seen, now_utc())
    with warehouse.engine.connect() as conn:
        deleted = set(conn.execute(select(learners.c.external_id)
                                   .where(learners.c.deleted_at.is_not(None))).scalars())
    assert gone == 300 and deleted == {f"u-{i}" for i in range(3_000) if i % 10 == 7}
