"""tune_malloc: the fixed mmap threshold is applied where glibc is."""

from __future__ import annotations

import platform

from lms_sync.memory import tune_malloc


def test_tune_malloc_applies_on_glibc_and_is_a_no_op_elsewhere() -> None:
    expected = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"
    assert tune_malloc() is expected
    assert tune_malloc() is expected  # idempotent: every entry point may call it


def test_trim_runs_on_glibc_at_most_once_per_interval() -> None:
    from lms_sync.memory import trim

    glibc = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"
    assert trim(every=0) is glibc
    assert trim(every=3600) is False  # just ran: the next one waits for the interval
