"""Page skim: a whole list re-read every run, skipped page by page while nothing changed.

A stream without a change feed (Udemy's reports) reads its whole list each run, only for
the warehouse to find nothing changed. A stream that opts in (``Stream.skim``) walks its
list with :meth:`RestStream.pages <lms_sync.connectors.rest.RestStream.pages>`, which asks
a :class:`PageSkim` about every page it fetches: the page's bytes' digest is compared
with the one at the same position of the stream's last clean run (:class:`SavedPages`,
table ``stream_pages``, loaded and saved by the pipeline). While they match the page's
rows are not processed at all (no validation, no records). Then:

* every page matches and the page count is the same: the stream is unchanged; it yields
  only its checkpoint, and the pipeline reports the saved run's counts, writes nothing and
  skips the soft delete (the saved run did it);
* page 1 differs: the walk goes on as a normal read;
* page k > 1 differs, or the count differs: ``stream.changed``, and the walk starts over
  from page 1 with a fresh paginator, every page processed (rows in order from the start,
  so a stream's state, e.g. numbering, stays as a full read makes it).

Saved digests are used only when the fingerprint of what shapes the records matches
(:func:`skim_base`, plus the first request's path and params) and the pipeline found the
saving run to be the stream's latest. The fingerprint holds a digest of the connectors'
and canonical models' source, so changed normalization voids saved pages by itself;
:data:`SKIM_VERSION` is for what that cannot see (the page digest itself).
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lms_sync import __version__
from lms_sync.canonical import dump_json

if TYPE_CHECKING:
    import structlog

SKIM_VERSION = 2
"""Part of every fingerprint: bump it when the records a skim stream makes of the same
pages change (a normalizer, a new canonical field), or the page digest does, so that no
saved page set is used. (2: sha256 page digests.)"""

DIGEST_SIZE = 16
"""Bytes of one page's digest (sha256, truncated)."""


def page_digest(content: bytes) -> bytes:
    """The digest of one page's body, as fetched: sha256, which CPUs with SHA extensions
    hash at twice blake2b's speed (100 KB: 56 us vs 110 us), and which hashlib computes
    without the GIL."""
    return hashlib.sha256(content).digest()[:DIGEST_SIZE]


def _hash(value: Any) -> str:
    return hashlib.sha256(dump_json(value)).hexdigest()[:2 * DIGEST_SIZE]


def code_digest(files: Iterable[Path]) -> str:
    """A digest of these files' names and bytes ('' for one that cannot be read)."""
    digest = hashlib.sha256()
    for path in sorted(files):
        try:
            data = path.read_bytes()
        except OSError:
            data = b""
        digest.update(f"{path.name}\0{len(data)}\0".encode())
        digest.update(data)
    return digest.hexdigest()[:32]


def record_code_files() -> list[Path]:
    """The code that turns pages into records: every connector module and the canonical
    models."""
    here = Path(__file__).resolve().parent
    return [*here.glob("*.py"), here.parent / "canonical.py"]


@functools.cache
def _record_code() -> str:
    """Any change to :func:`record_code_files` (a normalizer fixed between two releases, a
    field added) voids every saved page set, so no one has to remember
    :data:`SKIM_VERSION`; the next run of each skim stream reads for real once."""
    return code_digest(record_code_files())


def skim_base(kind: str, base_url: str, options: Any, stream: str) -> str:
    """The part of a stream's fingerprint the pipeline knows: lms-sync's version,
    :data:`SKIM_VERSION`, the record code's digest, the source's kind, base URL and
    options (a pydantic model or a dict), and the stream's name."""
    dumped = options.model_dump(mode="json") if hasattr(options, "model_dump") else options
    return _hash([__version__, SKIM_VERSION, _record_code(), kind, base_url, dumped, stream])


@dataclass(frozen=True)
class SavedPages:
    """The pages of a stream's last clean run, and what that run read."""

    run_id: str
    fingerprint: str
    digests: bytes
    """Every page's digest, in order, :data:`DIGEST_SIZE` bytes each."""
    records_read: int
    distinct_read: int | None
    excluded: int

    @property
    def pages(self) -> int:
        return len(self.digests) // DIGEST_SIZE

    def digest(self, index: int) -> bytes:
        return self.digests[index * DIGEST_SIZE:(index + 1) * DIGEST_SIZE]


class Step(Enum):
    """What the walk does with a page just fetched."""

    KEEP = "keep"  # process its rows
    SKIP = "skip"  # equal to the saved page: its rows are not processed
    RESTART = "restart"  # a later page differs: walk again from page 1, processing every page


class PageSkim:
    """One run's page digests of a skim stream, compared with the saved ones while they match.

    ``saved`` is None when there is nothing to compare with (first run, ``--full-refresh``,
    ``--since``, another run since): the digests are still taken, for the pipeline to save
    after a clean run. A stream walks one list a read: a second walk makes the run's digests
    unusable (:attr:`usable`)."""

    def __init__(self, base: str, saved: SavedPages | None,
                 log: structlog.stdlib.BoundLogger) -> None:
        self.base, self.saved, self.log = base, saved, log
        self.fingerprint = ""
        self.digests = bytearray()
        self.walks = 0
        self.skimming = False
        self.complete = False  # a walk reached its last page
        self.unchanged = False  # ... and every page equalled the saved run's

    @property
    def usable(self) -> bool:
        """The digests describe one whole walk of the stream's list."""
        return self.complete and self.walks == 1

    def begin(self, path: str, params: dict[str, Any] | None) -> None:
        """A walk starts with this first request; the saved pages count if it is the same
        list, asked the same way, as when they were saved."""
        self.walks += 1
        self.fingerprint = _hash([self.base, path, params or {}])
        self.digests, self.complete, self.unchanged = bytearray(), False, False
        saved = self.saved
        self.skimming = (self.walks == 1 and saved is not None and saved.pages > 0
                         and saved.fingerprint == self.fingerprint)

    def page(self, content: bytes) -> Step:
        """Take the digest of the page just fetched (the next one of the walk)."""
        index = len(self.digests) // DIGEST_SIZE
        digest = page_digest(content)
        self.digests += digest
        if not self.skimming:
            return Step.KEEP
        assert self.saved is not None
        if index < self.saved.pages and self.saved.digest(index) == digest:
            return Step.SKIP
        return self._changed(index + 1)

    def end(self) -> bool:
        """The walk reached its last page; True: it must be walked again (it skipped pages,
        and there are fewer than saved)."""
        if self.skimming:
            assert self.saved is not None
            pages = len(self.digests) // DIGEST_SIZE
            if pages != self.saved.pages:
                self._changed(pages + 1)
                return True
            self.unchanged = True
        self.complete = True
        return False

    def restart(self) -> None:
        """The walk starts over from page 1 (the same first request), skimming nothing."""
        self.digests, self.skimming = bytearray(), False

    def _changed(self, page: int) -> Step:
        assert self.saved is not None
        self.skimming = False
        self.log.info("stream.changed", page=page, pages_saved=self.saved.pages,
                      restart=page > 1)
        return Step.RESTART if page > 1 else Step.KEEP
