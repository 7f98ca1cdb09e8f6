"""KeySet: remember which string keys a run has seen, at ~8 bytes a key.

Connectors de-duplicate what they emit (Udemy's learners, one per enrollment row;
iSpring's learners and courses, repeated on every result). A ``set`` of the key
strings keeps each string alive (~60-100 bytes with its hash-table slot), so that
state grew with the customer. Here a key is kept as its 64-bit ``hash()`` (SipHash,
keyed per process: fine for a set that lives within one run). New digests gather in
a small set, sorted into an array when full; a new array is merged with the last one
while that is no bigger, so there are O(log n) arrays to bisect. An add costs ~3.5 us
(a set's: ~0.3 us), and a merge (``heapq.merge``, one key at a time) briefly holds the
two arrays and the merged one, ~16 bytes a key (``sorted()`` of both held a Python int
per key, ~44 bytes): right for sets of a few tens of thousands of keys; the soft-delete
ids (millions, appended then tested once) stay in ``warehouse.seen.SeenKeys``.

Two keys share a digest with odds ~2^-64 each (100,000 keys: ~3e-10 that any pair
does); the second would then count as seen.
"""

from __future__ import annotations

from array import array
from bisect import bisect_left
from heapq import merge

RECENT_MAX = 4096


class KeySet:
    """A set of strings, as digests; ``add`` says whether the key is new."""

    __slots__ = ("_recent", "_runs", "_count")

    def __init__(self) -> None:
        self._recent: set[int] = set()
        self._runs: list[array] = []  # sorted, unique, sizes decreasing
        self._count = 0

    def add(self, key: str) -> bool:
        """Remember ``key``; True if it was not seen before."""
        digest = hash(key)
        if digest in self._recent or self._in_runs(digest):
            return False
        self._recent.add(digest)
        self._count += 1
        if len(self._recent) >= RECENT_MAX:
            self._flush()
        return True

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, str):
            return False
        digest = hash(key)
        return digest in self._recent or self._in_runs(digest)

    def __len__(self) -> int:
        return self._count

    def _in_runs(self, digest: int) -> bool:
        for run in self._runs:
            i = bisect_left(run, digest)
            if i < len(run) and run[i] == digest:
                return True
        return False

    def _flush(self) -> None:
        run = array("q", sorted(self._recent))
        self._recent = set()
        while self._runs and len(self._runs[-1]) <= len(run):  # a binary counter of runs
            # merged one key at a time: sorted() of both would hold a Python int per key
            run = array("q", merge(self._runs.pop(), run))
        self._runs.append(run)
