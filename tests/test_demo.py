"""`lms-sync demo` as a subprocess: every vendor with a connector and a fake, one summary.

Besides the real vendors present in this installation, the subprocess registers
two synthetic "vendors" (the synthetic test connector under two kinds, with a
fake that only hands out its config), so the demo has at least two sources whose
people match, whatever connectors have landed.
"""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

from lms_sync.commands.demo import demo_kinds
from lms_sync.sandbox.server import FakeVendor

ROOT = Path(__file__).resolve().parent.parent
BOOT = (
    "from tests.support import synthetic; synthetic.register(); "
    "from lms_sync.connectors import KINDS; "
    "KINDS['synthetic2'] = 'tests.support.synthetic:SyntheticConnector'; "
    "from lms_sync.sandbox.registry import FAKES; "
    "FAKES['synthetic'] = 'tests.test_demo:FakeSynthetic'; "
    "FAKES['synthetic2'] = 'tests.test_demo:FakeSynthetic2'; "
    "from lms_sync.cli import main; raise SystemExit(main())"
)


class FakeSynthetic(FakeVendor):
    """The synthetic connector reads no HTTP; its fake only hands out a config block."""

    kind = "synthetic"

    def __init__(self, population, **options) -> None:  # type: ignore[no-untyped-def]
        super().__init__(population)

    def source_config(self, base_url: str) -> dict:
        return {"kind": self.kind, "base_url": base_url,
                "options": {"users": self.population.size, "courses": 3}}


class FakeSynthetic2(FakeSynthetic):
    kind = "synthetic2"


def run_demo(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "LMS_SYNC_CONFIG"}
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.run([sys.executable, "-c", BOOT, "demo", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def test_demo_syncs_every_vendor_and_prints_a_summary(tmp_path):
    proc = run_demo(tmp_path, "--learners", "40")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    kinds = [*demo_kinds(), "synthetic", "synthetic2"]
    assert f"{len(kinds)} of {len(kinds)} source(s) synced" in out
    db = tmp_path / "lms_sync_demo.db"
    assert f"into {db}" in out
    assert [p.name for p in tmp_path.iterdir()] == ["lms_sync_demo.db"]  # no lock files left beside it

    # rows per source and table, as the warehouse has them
    with sqlite3.connect(db) as conn:
        per_source = dict(conn.execute(
            "SELECT source_id, COUNT(*) FROM learners WHERE deleted_at IS NULL GROUP BY source_id"))
        persons_across = conn.execute(
            "SELECT COUNT(*) FROM (SELECT person_id FROM learners GROUP BY person_id "
            "HAVING COUNT(DISTINCT source_id) >= 2)").fetchone()[0]
    assert set(per_source) == {f"{k}-sandbox" for k in kinds}
    assert per_source["synthetic-sandbox"] == 40
    table = out.split("Rows per source and table\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert table[0].split() == ["source", "learners", "courses", "enrollments", "activity_progress",
                                "stat_snapshots"]
    synthetic_row = next(line.split() for line in table if line.split()[0] == "synthetic-sandbox")
    assert synthetic_row[1:4] == ["40", "3", "40"]
    for kind in kinds:
        row = next(line.split() for line in table if line.split()[0] == f"{kind}-sandbox")
        assert int(row[1].replace(",", "")) == per_source[f"{kind}-sandbox"]

    # the same 40 people in both synthetic sources are matched
    assert persons_across >= 40
    assert f"{persons_across:,} persons matched across two or more sources" in out
    # a few learners' progress from the view, as the view has it
    learners_part = out.split("A few learners (from the learner_progress view)\n", 1)[1].split("\n\n")[0]
    heads = re.findall(r"^  \S.* <(.+)> — (\d+) enrollment\(s\) in (.+)$", learners_part, re.M)
    assert 1 <= len(heads) <= 3
    with sqlite3.connect(db) as conn:
        for email, count, sources in heads:
            rows = conn.execute("SELECT source_id, status FROM learner_progress WHERE person_email = ?",
                                (email,)).fetchall()
            assert len(rows) == int(count)
            assert sorted({r[0] for r in rows}) == sources.split(", ")
            assert len(sources.split(", ")) >= 2  # the people shown are matched across sources

    # progress went to stderr, as plain lines (not a terminal)
    assert "\r" not in proc.stderr
    assert "synthetic-sandbox" in proc.stderr and "users: 40 records" in proc.stderr



def test_demo_reruns_into_a_fresh_custom_db_and_rejects_a_bad_size(tmp_path):
    outputs = []
    for _ in range(2):
        proc = run_demo(tmp_path, "--learners", "5", "--db", "sub/dir/x.db")
        assert proc.returncode == 0, proc.stderr
        outputs.append(proc.stdout)
        with sqlite3.connect(tmp_path / "sub/dir/x.db") as conn:
            assert conn.execute("SELECT COUNT(*) FROM learners WHERE source_id = 'synthetic-sandbox'"
                                ).fetchone()[0] == 5
            # a fresh database each time: one run per stream, not two
            assert conn.execute("SELECT COUNT(DISTINCT run_id) FROM sync_runs "
                                "WHERE source_id = 'synthetic-sandbox'").fetchone()[0] == 1
    assert not (tmp_path / "lms_sync_demo.db").exists()
    tables = [o.split("Rows per source and table")[1].split("Identity")[0] for o in outputs]
    assert tables[0] == tables[1]

    bad = run_demo(tmp_path, "--learners", "0")
    assert bad.returncode == 2
    assert bad.stderr.strip() == "lms-sync: error: --learners 0 must be at least 1"
