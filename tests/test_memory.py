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


def test_a_command_spaces_the_cyclic_collector_and_freezes_its_start_up_objects(tmp_path) -> None:
    """In a process of its own (the switch is process-wide): `lms-sync check` on a missing
    config fails as a user error, after start-up has tuned the collector."""
    import subprocess
    import sys

    from lms_sync.memory import GC_THRESHOLDS

    code = ("import gc, sys; from lms_sync.cli import main; "
            f"rc = main(['check', '--config', {str(tmp_path / 'none.yaml')!r}]); "
            "print(rc, *gc.get_threshold(), gc.get_freeze_count() > 10_000)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["2", *map(str, GC_THRESHOLDS), "True"]
