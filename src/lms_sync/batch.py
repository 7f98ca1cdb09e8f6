"""The pipeline's batch buffer: records bound for one transaction.

A batch is full at ``warehouse.batch_size`` records or ``warehouse.batch_bytes`` bytes of
encoded ``raw``, whichever comes first. Adding a record encodes it (``Record.encoded()``,
cached on the record), so the writer finds the JSON and the hash already made.
"""

from __future__ import annotations

from collections.abc import Iterator

from lms_sync.canonical import Record


class Batch:
    """An ordered buffer of records that says when it is full."""

    __slots__ = ("max_records", "max_bytes", "records", "size")

    def __init__(self, max_records: int, max_bytes: int) -> None:
        self.max_records, self.max_bytes = max_records, max_bytes
        self.records: list[Record] = []
        self.size = 0
        """Bytes of encoded ``raw`` held."""

    def add(self, record: Record) -> bool:
        """Add ``record``; True when the batch is now full."""
        self.records.append(record)
        self.size += record.encoded().size
        return len(self.records) >= self.max_records or self.size >= self.max_bytes

    def clear(self) -> None:
        self.records = []
        self.size = 0

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self) -> Iterator[Record]:
        return iter(self.records)
