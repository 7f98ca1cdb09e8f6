"""KeySet: the connectors' de-duplication of what they emit, at ~8 bytes a key."""

from __future__ import annotations

import random
import tracemalloc

from lms_sync.keyset import RECENT_MAX, KeySet


def test_add_says_whether_the_key_is_new_across_merged_runs():
    rng = random.Random(5)
    keys = [f"user-{rng.randrange(200_000)}@example.com" for _ in range(50_000)]
    seen, expected = KeySet(), set()
    for key in keys:
        assert seen.add(key) is (key not in expected)
        expected.add(key)
    assert len(seen) == len(expected)
    assert all(k in seen for k in keys[:500]) and "nobody@example.com" not in seen
    assert len(seen) > 10 * RECENT_MAX and 1 <= len(seen._runs) <= 4  # merged: few to search
    assert 0 not in seen and None not in seen


def test_keeps_about_eight_bytes_a_key():
    keys = [f"learner-{i:08d}-{'x' * 40}" for i in range(40_000)]
    tracemalloc.start()
    seen = KeySet()
    for key in keys:
        seen.add(key)
    held = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    # a set of the strings would hold ~40,000 x ~100 bytes; digests ~8 bytes plus at
    # most one unsorted batch (a small set)
    assert held < 40_000 * 8 * 1.3 + RECENT_MAX * 80
