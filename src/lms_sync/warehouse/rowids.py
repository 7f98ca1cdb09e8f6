"""RowIds: a set of warehouse row ids at 8 bytes an id.

A sync hands the ids of every learner it wrote to identity matching, and a first
sync writes every learner: as a ``set`` of ints (~70 bytes an id, the int object
and its hash-table slot) that state grew with the customer. Here ids append to one
signed 64-bit array; it is sorted and de-duplicated in place when it has doubled
since the last time, and when read, so repeats never make it grow without bound.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Iterator


class RowIds:
    """Row ids, unordered on the way in, sorted and unique on the way out."""

    __slots__ = ("_ids", "_clean")

    def __init__(self, ids: Iterable[int] = ()) -> None:
        self._ids = array("q")
        self._clean = 0  # the first _clean ids are sorted and unique
        self.update(ids)

    def update(self, ids: Iterable[int]) -> None:
        self._ids.extend(int(i) for i in ids)
        self._grew()

    def sorted(self) -> array:
        """Every id once, ascending."""
        if self._clean != len(self._ids):
            self._compact()
        return self._ids

    def __len__(self) -> int:
        return len(self.sorted())

    def __iter__(self) -> Iterator[int]:
        return iter(self.sorted())

    def _grew(self) -> None:
        if len(self._ids) >= max(1024, 2 * self._clean):
            self._compact()

    def _compact(self) -> None:
        ordered = sorted(self._ids)
        out = array("q")
        last = None
        for i in ordered:  # one transient list, never a set
            if i != last:
                out.append(i)
                last = i
        self._ids, self._clean = out, len(out)
