"""SeenKeys: what a stream remembers of the ids it read, for soft deletes."""

from __future__ import annotations

import random
import sys

from lms_sync.warehouse.upsert import SeenKeys


def test_seen_keys_answers_membership_like_a_set() -> None:
    rng = random.Random(3)
    read = [f"user-{rng.randrange(10**9)}:course-{i % 40}" for i in range(20_000)]
    seen = SeenKeys()
    for external_id in read:
        seen.add(external_id)
    assert len(seen) == len(read)
    assert all(x in seen for x in read)
    others = [f"gone-{i}" for i in range(20_000)]
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
    seen = SeenKeys()
    for i in range(200_000):
        seen.add(f"enrollment-{i}")
    assert "enrollment-199999" in seen
    size = sum(sys.getsizeof(b) for b in seen._buckets)
    assert size < 200_000 * 10  # a set of the same digests takes ~66 bytes a key
