"""Process-wide memory settings (glibc): a fixed mmap threshold, applied once by the
command-line entry point, and :func:`trim`, called by the pipeline between batches.

glibc raises its mmap threshold each time a large block is freed (up to 32 MiB), so
after the first few response bodies every later body — hundreds of KB, allocated
and freed by several threads — comes from the heap, which fragments and does not
shrink. A fixed 128 KiB threshold (glibc's initial value) keeps big buffers in mmap,
returned to the system on free. benchmarks/sync.py, 20,000 sandbox people, one
source per process: Absorb's peak RSS 113 -> 101 MB, Sessions' 113 -> 108 MB.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import sys
import threading
import time

M_MMAP_THRESHOLD = -3  # glibc <malloc.h>
MMAP_THRESHOLD = 128 * 1024


_LIBC: list[ctypes.CDLL | None] = []  # loaded once


def _libc() -> ctypes.CDLL | None:
    if not _LIBC:
        try:
            found = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6") \
                if sys.platform.startswith("linux") else None
        except OSError:
            found = None
        _LIBC.append(found)
    return _LIBC[0]


def tune_malloc() -> bool:
    """Fix glibc's mmap threshold; False where there is no glibc (nothing to do)."""
    libc = _libc()
    try:
        return bool(libc and libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD))
    except AttributeError:  # musl and others: no mallopt
        return False


GC_THRESHOLDS = (50_000, 20, 10)
"""Python's are (700, 10, 10). A sync keeps a batch of records alive (thousands of dicts
and models per source) while it allocates: at 700, a young collection every few records
walked the live batch again and again. benchmarks/sync.py --workload bulk: 13.7 -> 9.6
CPU-s for the full sync, 8.1 -> 5.7 for the re-sync, peak RSS 149 -> 151 MB."""


def tune_gc() -> None:
    """Collect, freeze what start-up made (modules, models, config: never garbage, so no
    later full collection walks it again), and space the cyclic collector's passes
    (:data:`GC_THRESHOLDS`). Records hold no cycles: reference counting frees them. Called
    once per process, at start; a second call only collects and freezes again."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


_trim_lock = threading.Lock()
_trimmed_at = 0.0
TRIM_EVERY_S = 1.0


def trim(every: float = TRIM_EVERY_S) -> bool:
    """Hand free heap pages back to the system (glibc ``malloc_trim``), at most once
    every ``every`` seconds per process; True if it ran.

    Freed memory inside glibc's heaps stays resident: several sources' batches, pages and
    parsed bodies, freed in turn by different threads, leave holes that no later request
    fits exactly, so the resident set ratchets up with the run's length. malloc_trim
    releases those holes' pages (madvise), not only the heap tops. It costs ~24 ms on a
    fragmented 150 MB heap. benchmarks/sync.py --full-only, 4,300 / 43,000 people:
    peak RSS 137.1 / 184.2 MB without, 129.3 / 160.4 MB with.
    """
    global _trimmed_at
    now = time.monotonic()
    if now - _trimmed_at < every or not _trim_lock.acquire(blocking=False):
        return False
    try:
        _trimmed_at = now
        libc = _libc()
        if libc is None or not hasattr(libc, "malloc_trim"):
            return False
        libc.malloc_trim(0)
        return True
    finally:
        _trim_lock.release()

