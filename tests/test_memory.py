"""tune_malloc: the fixed mmap threshold is applied where glibc is."""

from __future__ import annotations

import platform

from lms_sync.memory import tune_malloc


def test_tune_malloc_applies_on_glibc_and_is_a_no_op_elsewhere() -> None:
    expected = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"
    assert tune_malloc() is expected
    assert tune_malloc() is expected  # idempotent: every entry point may call it
