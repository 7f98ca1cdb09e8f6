"""The warehouse writer alone: BatchWriter on PostgreSQL, CPU per record, this tree against a baseline.

    python benchmarks/writer.py [--records 20000] [--batch 5000] [--repeat 3] [--baseline main]

Each round runs one child process per tree, alternating (the machine is shared and noisy):
the baseline (``--baseline``, a git ref extracted with ``git archive`` into a temporary
folder; ``--baseline none`` skips it) and this working tree. A child builds ``--records``
synthetic records of each of learners, courses, enrollments and activity_progress (plus
reference stubs: every course has a parent, a tenth of enrollments name an unseen learner),
in a scratch schema of its own, and writes them through ``BatchWriter.write`` in
``--batch``-record transactions, three passes:

* insert: into empty tables;
* unchanged: the same records again (new objects, so each is encoded/hashed again);
* changed: every enrollment's and activity's status and progress changed (history rows).

Per pass: microseconds per record of CPU of the child (``cpu_us``: Python, driver) and of its
PostgreSQL backend (``db_us``, from /proc when the server is local), their sum and wall time.
Records are built per batch, outside the timings (one batch
alive at a time, as in a sync). Prints one JSON object on stdout: every round's
figures and, per pass, the medians and the ratio baseline / this tree (> 1: this tree is
cheaper).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_URL = os.environ.get("LMS_SYNC_TEST_POSTGRES_URL",
                             "postgresql+psycopg://postgres@127.0.0.1:5432/test")
PASSES = ("insert", "unchanged", "changed")


def _backend_cpu(pid: int) -> float | None:
    """CPU seconds (user + system) of a local PostgreSQL backend, or None."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _records(n: int, changed: bool, start: int = 0, stop: int | None = None) -> list[Any]:
    """Records ``start``..``stop`` of the 4 x ``n``: learners, courses, enrollments, activities."""
    from datetime import UTC, datetime, timedelta

    from lms_sync.canonical import ActivityProgress, Course, Enrollment, Learner

    begin = datetime(2024, 1, 1, tzinfo=UTC)
    status, pct = ("completed", 100.0) if changed else ("in_progress", 40.0)
    out: list[Any] = []
    for k in range(start, 4 * n if stop is None else min(stop, 4 * n)):
        table, i = divmod(k, n)
        if table == 0:
            out.append(Learner(
                external_id=f"u{i}", email=f"user{i}@example.com", first_name=f"First{i}",
                last_name="Last", hr_id=f"E{i:06d}", department="Sales",
                raw={"id": f"u{i}", "emailAddress": f"user{i}@example.com", "firstName": f"First{i}",
                     "lastName": "Last", "externalId": f"E{i:06d}", "departmentId": "d-1",
                     "isActive": True, "dateAdded": "2023-04-05T06:07:08Z"}))
        elif table == 1:
            out.append(Course(
                external_id=f"c{i}", title=f"Course {i}", category="Compliance", duration_minutes=30.0,
                parent_external_id=f"p{i % 50}",
                raw={"id": f"c{i}", "name": f"Course {i}", "category": "Compliance",
                     "duration": "00:30:00", "tags": ["a", "b"]}))
        elif table == 2:
            user = f"x{i}" if i % 10 == 0 else f"u{i}"
            out.append(Enrollment(
                external_id=f"{user}:c{i}", learner_external_id=user, course_external_id=f"c{i}",
                status=status, progress_pct=pct, score=88.5, time_spent_seconds=1234.0,
                enrolled_at=begin, started_at=begin + timedelta(days=1), vendor_status=status,
                raw={"userId": user, "courseId": f"c{i}", "status": 1, "progress": pct, "score": 88.5,
                     "dateAdded": "2024-01-01T00:00:00Z", "dateStarted": "2024-01-02T00:00:00Z",
                     "timeSpentTicks": 12340000000}))
        else:
            out.append(ActivityProgress(
                external_id=f"u{i}:c{i}:l1", learner_external_id=f"u{i}", course_external_id=f"c{i}",
                enrollment_external_id=f"u{i}:c{i}", activity_type="lesson", status=status,
                progress_pct=pct, raw={"userId": f"u{i}", "lessonId": "l1", "status": 1, "progress": pct}))
    return out


def child(url: str, n: int, batch: int) -> dict[str, Any]:
    """Run in the tree under test (its ``src`` first on ``sys.path``)."""
    from sqlalchemy import text

    from lms_sync.warehouse.db import make_engine, upgrade
    from lms_sync.warehouse.state import ensure_source, now_utc
    from lms_sync.warehouse.upsert import BatchWriter

    schema = f"bench_w_{uuid.uuid4().hex[:10]}"
    engine = make_engine(url, schema)
    upgrade(engine)
    try:
        with engine.begin() as conn:
            ensure_source(conn, "bench", "absorb")
        with engine.connect() as conn:  # one pooled connection: the writer's backend
            pid = conn.execute(text("SELECT pg_backend_pid()")).scalar_one()
            conn.rollback()
        import lms_sync

        out: dict[str, Any] = {"module": lms_sync.__file__}
        for name in PASSES:
            written = total = 0
            cpu = wall = 0.0
            db: float | None = 0.0
            for i in range(0, 4 * n, batch):
                # built per batch, untimed: as in a sync, only a batch of records is alive (the
                # collector's full passes walk every live object)
                records = _records(n, name == "changed", i, i + batch)
                backend0, cpu0, wall0 = _backend_cpu(pid), time.process_time(), time.perf_counter()
                with engine.begin() as conn:
                    stats = BatchWriter(conn, "bench", "bench-run").write(records, now_utc())
                    written += stats.written
                cpu += time.process_time() - cpu0
                wall += time.perf_counter() - wall0
                backend1 = _backend_cpu(pid)
                if db is not None and backend0 is not None and backend1 is not None:
                    db += backend1 - backend0
                else:
                    db = None  # not a local server
                total += len(records)
                del records
            out[name] = {"records": total, "written": written, "cpu_us": round(cpu / total * 1e6, 2),
                         "db_us": round(db / total * 1e6, 2) if db is not None else None,
                         "total_us": round((cpu + (db or 0)) / total * 1e6, 2),
                         "wall_us": round(wall / total * 1e6, 2)}
        return out
    finally:
        engine.dispose()
        from sqlalchemy import create_engine

        admin = create_engine(url)
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()


def _run_child(src: Path, args: argparse.Namespace) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(src)}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", "--warehouse", args.warehouse,
           "--records", str(args.records), "--batch", str(args.batch)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if done.returncode:
        raise SystemExit(f"the child for {src} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--warehouse", default=DEFAULT_URL, metavar="URL", help="a PostgreSQL URL")
    p.add_argument("--records", type=int, default=20_000, help="records per table")
    p.add_argument("--batch", type=int, default=5000, help="records per transaction")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--baseline", default="main", help="git ref to compare with, or none")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(args.warehouse, args.records, args.batch)))
        return
    trees: dict[str, Path] = {"this": ROOT / "src"}
    with tempfile.TemporaryDirectory(prefix="lms-writer-") as tmp:
        if args.baseline != "none":
            archive = subprocess.run(["git", "-C", str(ROOT), "archive", args.baseline, "src"],
                                     capture_output=True, check=True).stdout
            subprocess.run(["tar", "-x", "-C", tmp], input=archive, check=True)
            trees = {"baseline": Path(tmp) / "src", **trees}
        rounds: list[dict[str, Any]] = []
        for _ in range(args.repeat):  # alternating: a noisy spell hits both sides alike
            rounds.append({name: _run_child(src, args) for name, src in trees.items()})
    summary: dict[str, Any] = {}
    for name in PASSES:
        figures = {tree: {k: statistics.median(r[tree][name][k] or 0 for r in rounds)
                          for k in ("cpu_us", "db_us", "total_us", "wall_us")} for tree in trees}
        entry: dict[str, Any] = {**figures}
        if "baseline" in trees:
            entry["ratio"] = {k: round(figures["baseline"][k] / figures["this"][k], 2)
                              for k in figures["this"] if figures["this"][k]}
        summary[name] = entry
    print(json.dumps({"records_per_table": args.records, "batch": args.batch,
                      "baseline": args.baseline, "summary": summary, "rounds": rounds}, indent=1))


if __name__ == "__main__":
    main()
