"""RowIds: a compact set of row ids (what a sync hands to identity matching)."""

from __future__ import annotations

import random

from lms_sync.warehouse.rowids import RowIds


def test_behaves_as_a_sorted_set():
    rng = random.Random(3)
    values = [rng.randrange(-5, 50_000) for _ in range(20_000)]
    ids = RowIds(values[:7_000])
    for v in values[7_000:15_000]:
        ids.update([v])
    ids.update(values[15_000:])
    assert list(ids) == sorted(set(values))
    assert list(ids.sorted()) == sorted(set(values))
    assert len(ids) == len(set(values))


def test_repeats_do_not_grow_it():
    ids = RowIds()
    for _ in range(50):
        ids.update(range(1_000))
    assert len(ids._ids) < 3_000  # compacted as it goes, not 50,000 entries
    assert list(ids) == list(range(1_000))


def test_empty_is_false_and_iterates_nothing():
    assert not RowIds() and list(RowIds()) == []
    assert RowIds([4])


def test_merging_another_rowids_keeps_one_of_each():
    rng = random.Random(5)
    a_vals = [rng.randrange(0, 30_000) for _ in range(12_000)]
    b_vals = [rng.randrange(10_000, 60_000) for _ in range(9_000)]
    a, b = RowIds(a_vals), RowIds()
    b.update(b_vals[:500])  # b still has an unsorted tail when it is merged
    b.update(b_vals[500:])
    a.update([7, 7, 59_999])  # and so does a
    a.update(b)
    assert list(a) == sorted(set(a_vals) | set(b_vals) | {7, 59_999})
    assert list(b) == sorted(set(b_vals))  # the merged one is unchanged
