"""RowIds: a set of warehouse row ids at 8 bytes an id.

A sync hands the ids of every learner it wrote to identity matching, and a first
sync writes every learner: as a ``set`` of ints (~70 bytes an id, the int object
and its hash-table slot) that state grew with the customer. Here ids append to one
signed 64-bit array, sorted and unique up to ``_clean``; once the unsorted tail is a
quarter of that (or 1,024 ids) the tail is sorted and merged in, and another RowIds
is merged in directly. Only the tail is ever a list of Python ints (~36 bytes an
id): sorting the whole array each time held one for every id.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Iterator
from heapq import merge


class RowIds:
    """Row ids, unordered on the way in, sorted and unique on the way out."""

    __slots__ = ("_ids", "_clean")

    def __init__(self, ids: Iterable[int] = ()) -> None:
        self._ids = array("q")
        self._clean = 0  # the first _clean ids are sorted and unique
        self.update(ids)

    def update(self, ids: Iterable[int]) -> None:
        if isinstance(ids, RowIds):
            self._merge(ids.sorted())
            return
        self._ids.extend(int(i) for i in ids)
        if len(self._ids) - self._clean >= max(1024, self._clean // 4):
            self._merge(self._tail())

    def sorted(self) -> array:
        """Every id once, ascending."""
        if self._clean != len(self._ids):
            self._merge(self._tail())
        return self._ids

    def __len__(self) -> int:
        return len(self.sorted())

    def __iter__(self) -> Iterator[int]:
        return iter(self.sorted())

    def _tail(self) -> list[int]:
        """The ids after ``_clean``, sorted, taken out of the array."""
        tail = sorted(self._ids[self._clean:])
        del self._ids[self._clean:]
        return tail

    def _merge(self, ids: Iterable[int]) -> None:
        """Merge the ascending ``ids`` into the clean array, one id at a time."""
        if self._clean != len(self._ids):
            ids = merge(self._tail(), ids)
        out = array("q")
        last = None
        for i in merge(self._ids, ids):
            if i != last:
                out.append(i)
                last = i
        self._ids, self._clean = out, len(out)
