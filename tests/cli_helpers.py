"""Run the real CLI in a subprocess (with the synthetic test connector registered)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BOOT = ("from tests.support import synthetic; synthetic.register(); "
        "from lms_sync.cli import main; raise SystemExit(main())")


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 120,
            **kw) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, **(env or {})}
    full_env.pop("LMS_SYNC_CONFIG", None) if env is None or "LMS_SYNC_CONFIG" not in env else None
    return subprocess.run([sys.executable, "-c", BOOT, *args], cwd=ROOT, env=full_env,
                          capture_output=True, text=True, timeout=timeout, **kw)
