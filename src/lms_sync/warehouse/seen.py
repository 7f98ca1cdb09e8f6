"""Soft deletes: what a stream remembers of the ids it read, and the rows it did not.

A stream that reads a table whole (``Stream.full_refresh_tables``) adds every id it
reads to a :class:`SeenKeys`; once the stream has ended, :func:`mark_deleted`
soft-deletes the source's live rows of that table whose id was not read.

An id is kept as an 8-byte digest (:func:`seen_key`), in 256 buckets by its top byte.
While a stream reads, at most ``spill_at`` digests stay in memory: more are appended
to an unnamed temporary file, bucket by bucket. The lookups come only after the whole
read, so a bucket is read back (and sorted) on its first lookup. A source's ids then
take no memory while its stream runs — side by side with the other sources' streams,
when their working sets peak together — and ~8 bytes an id for the few seconds of its
``mark_deleted``. Where no temporary file can be written, the digests stay in memory.
"""

from __future__ import annotations

import tempfile
from array import array
from bisect import bisect_left
from datetime import datetime
from typing import IO

from sqlalchemy import Connection, select, update

from lms_sync.warehouse.tables import RECORD_TABLES
from lms_sync.warehouse.upsert import chunks

SPILL_AT = 1 << 14
"""Digests a stream holds in memory (128 KiB) before it appends them to its file.

Every stream that reads a table whole holds this much at once, side by side with the
other sources' streams; each spill costs ~1 KiB of bookkeeping (1 M ids: ~60 KiB)."""

_BUCKETS = 256


_MASK = (1 << 64) - 1


def seen_key(external_id: str) -> int:
    """What a stream keeps of each id it read, for ``mark_deleted``: an 8-byte digest, the
    string's own ``hash()`` (SipHash, keyed per process: the keys never leave the run that
    made them; ~0.05 us where blake2b took ~0.6, for every id read and every live row).

    Two ids share a digest with odds ~2^-64: a row gone upstream whose digest equals a
    read one's is then not soft-deleted (at 10^6 rows: ~5e-14 per row).
    """
    return hash(external_id) & _MASK


class SeenKeys:
    """The ``seen_key`` of every id a stream read: at most ``spill_at`` in memory while
    it reads, and ~8 bytes a key once looked up.

    A ``set`` of ints costs ~66 bytes a key (the int object plus its hash-table slot:
    66 MiB of peak RSS per million rows read). The first lookup in a bucket reads back
    its spilled digests and sorts the bucket once (one bucket at a time, so the
    transient list is 1/256 of the keys); later lookups bisect. From the first lookup
    on, nothing more is spilled; adding after a lookup re-sorts the bucket on the next.
    """

    __slots__ = ("_buckets", "_sorted", "_count", "_held", "_spill_at", "_file", "_spills", "_loaded")

    def __init__(self, spill_at: int = SPILL_AT) -> None:
        self._buckets = [array("Q") for _ in range(_BUCKETS)]
        self._sorted = [True] * _BUCKETS
        self._count = self._held = 0
        self._spill_at = spill_at  # 0: never spill (after a lookup, or with no usable file)
        self._file: IO[bytes] | None = None
        # one per spill: its file offset, and where each bucket starts in it (in keys)
        self._spills: list[tuple[int, array]] = []
        self._loaded = bytearray(_BUCKETS)  # 1: the bucket's spilled digests are back in memory

    def add(self, external_id: str) -> None:
        key = seen_key(external_id)
        bucket = key >> 56
        self._buckets[bucket].append(key)
        self._sorted[bucket] = False
        self._count += 1
        self._held += 1
        if self._spill_at and self._held >= self._spill_at:
            self._spill()

    def __len__(self) -> int:
        return self._count

    def __contains__(self, external_id: object) -> bool:
        if not isinstance(external_id, str):
            return False
        self._spill_at = 0
        key = seen_key(external_id)
        bucket = key >> 56
        if not self._sorted[bucket]:
            self._load(bucket)
        keys = self._buckets[bucket]
        i = bisect_left(keys, key)
        return i < len(keys) and keys[i] == key

    def distinct(self) -> int:
        """How many different ids were added (reads every bucket back, once)."""
        self._spill_at = 0
        for bucket in range(_BUCKETS):
            if not self._sorted[bucket] or (self._file is not None and not self._loaded[bucket]):
                self._load(bucket)
        return sum(len(keys) for keys in self._buckets)

    @property
    def spilled(self) -> bool:
        """Whether some digests went to the temporary file."""
        return self._file is not None

    def close(self) -> None:
        """Drop the temporary file (also done when the object is collected)."""
        if self._file is not None:
            self._file.close()
            self._file = None
        self._spills = []

    def _spill(self) -> None:
        try:
            if self._file is None:
                self._file = tempfile.TemporaryFile(prefix="lms-sync-seen-")  # noqa: SIM115
            fh = self._file
            offset = fh.seek(0, 2)
            starts, n = array("I", [0]), 0
            for keys in self._buckets:
                keys.tofile(fh)
                n += len(keys)
                starts.append(n)
            fh.flush()
        except OSError:  # no temp dir, disk full: keep the digests in memory instead
            self._spill_at = 0
            return
        self._spills.append((offset, starts))
        self._buckets = [array("Q") for _ in range(_BUCKETS)]
        self._held = 0

    def _load(self, bucket: int) -> None:
        keys = self._buckets[bucket]
        if self._file is not None and not self._loaded[bucket]:
            self._loaded[bucket] = 1
            for offset, starts in self._spills:
                if starts[bucket + 1] > starts[bucket]:
                    self._file.seek(offset + 8 * starts[bucket])
                    keys.fromfile(self._file, starts[bucket + 1] - starts[bucket])
        self._buckets[bucket] = array("Q", sorted(set(keys)))
        self._sorted[bucket] = True


def mark_deleted(conn: Connection, table_name: str, source_id: str, seen: SeenKeys,
                 now: datetime) -> int:
    """Soft-delete this source's live rows of ``table_name`` whose id is not in ``seen``."""
    table = RECORD_TABLES[table_name]
    # streamed (server-side cursor where the driver has one): holding every live row of a
    # big table at once cost ~150 bytes a row of peak RSS; only the gone ids are kept.
    # 2,000 rows a fetch (~0.3 MB): sources end their streams while others still run
    live = conn.execute(
        select(table.c.id, table.c.external_id).where(
            table.c.source_id == source_id, table.c.deleted_at.is_(None), table.c.row_hash != ""
        ),
        execution_options={"yield_per": 2_000},  # this statement only
    )
    gone = [row_id for row_id, external_id in live if external_id not in seen]
    live.close()
    for part in chunks(gone):
        conn.execute(update(table).where(table.c.id.in_(part)).values(deleted_at=now, updated_at=now))
    return len(gone)
