"""``lms-sync demo``: the newcomer's first command.

Starts every sandbox vendor that has a connector on loopback (any free ports),
writes a throw-away config pointing at them, syncs each source into a fresh
SQLite file (``./lms_sync_demo.db``) and prints what landed: rows per source and
table, persons matched across sources, and a few learners' progress from the
``learner_progress`` view. Progress goes to stderr (one updating line on a
terminal, plain lines otherwise); the summary goes to stdout.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, TextIO

import yaml

from lms_sync.commands import command
from lms_sync.errors import UserError

SUMMARY_TABLES = ("learners", "courses", "enrollments", "activity_progress", "stat_snapshots")


@command
def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("demo", help="sandbox vendors -> local SQLite -> summary (no accounts needed)")
    p.add_argument("--learners", type=int, default=200, help="people in the sandbox population")
    p.add_argument("--seed", type=int, default=7, help="seed of the sandbox population")
    p.add_argument("--db", default="lms_sync_demo.db", metavar="PATH",
                   help="SQLite file to create (replaced if it exists)")
    p.add_argument("--config", metavar="PATH", help="accepted, as by every command, but not read: "
                   "the demo makes its own config")
    p.set_defaults(func=run)


def demo_kinds() -> list[str]:
    """Every vendor with both a sandbox fake and a connector in this installation."""
    import importlib.util  # noqa: F401 - the registries call importlib.util.find_spec

    from lms_sync.connectors import available_kinds
    from lms_sync.sandbox.registry import available_fakes

    kinds = set(available_kinds())
    return [k for k in available_fakes() if k in kinds]


def run(args: argparse.Namespace) -> int:
    from lms_sync.commands.sandbox import sandbox_config, start_all
    from lms_sync.config import load_config
    from lms_sync.logs import configure
    from lms_sync.pipeline import run_source
    from lms_sync.warehouse.db import make_engine, upgrade

    if args.learners < 1:
        raise UserError(f"--learners {args.learners} must be at least 1")
    kinds = demo_kinds()
    if not kinds:
        raise UserError("no vendor in this installation has both a connector and a sandbox; "
                        "reinstall lms-sync")
    db = Path(args.db).resolve()
    _remove_db(db)
    progress = Progress(sys.stderr)
    t0 = time.monotonic()
    progress.note(f"starting {len(kinds)} sandbox vendor(s) with {args.learners} people: "
                  + ", ".join(kinds))
    started = start_all(args.learners, args.seed, kinds, port_base=0)
    try:
        with tempfile.TemporaryDirectory(prefix="lms-sync-demo-") as tmp:
            tree = sandbox_config(started, f"sqlite:///{db}")
            tree["logging"] = {"format": "console", "level": "WARNING"}
            path = Path(tmp) / "config.yaml"
            path.write_text(yaml.safe_dump(tree, sort_keys=False), encoding="utf-8")
            cfg = load_config(path)
        configure(cfg.logging.format, cfg.logging.level, cfg.secret_values())
        _route_pipeline_logs(progress)
        engine = make_engine(cfg.warehouse.url)
        upgrade(engine)
        results = []
        for source in cfg.sources.values():
            progress.begin(source.id)
            result = run_source(engine, cfg, source)
            progress.end(result)
            results.append(result)
    finally:
        stoppers = [threading.Thread(target=server.stop) for _kind, server, _block in started]
        for t in stoppers:
            t.start()
        for t in stoppers:
            t.join()
    elapsed = time.monotonic() - t0
    print(render_summary(engine, results, db, elapsed))
    engine.dispose()
    _remove_locks(db)  # the run locks, free now
    return 0 if all(r.ok for r in results) else 1


def _remove_db(db: Path) -> None:
    """A fresh file each run: the database, its WAL files and its lock files."""
    for path in [db, Path(f"{db}-wal"), Path(f"{db}-shm"), Path(f"{db}-journal")]:
        path.unlink(missing_ok=True)
    _remove_locks(db)


def _remove_locks(db: Path) -> None:
    from lms_sync.warehouse.dialect import lock_folder

    shutil.rmtree(lock_folder(str(db)), ignore_errors=True)


def _route_pipeline_logs(progress: Progress) -> None:
    """Pipeline events drive the progress display instead of printing log lines."""
    root = logging.getLogger()
    for handler in root.handlers:
        handler.addFilter(lambda r: not r.name.startswith("lms_sync.pipeline"))
    pipeline = logging.getLogger("lms_sync.pipeline")
    pipeline.setLevel(logging.INFO)
    pipeline.addHandler(progress)


# ---------------------------------------------------------------------- progress


class Progress(logging.Handler):
    """Per-source progress from the pipeline's structured events."""

    def __init__(self, out: TextIO) -> None:
        super().__init__(logging.INFO)
        self.out = out
        self.tty = out.isatty()
        self.source = ""
        self.rows: dict[str, int] = {}
        self.stream = ""
        self.started = 0.0
        self.errors: list[str] = []

    def note(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def begin(self, source_id: str) -> None:
        self.source, self.rows, self.stream, self.errors = source_id, {}, "", []
        self.started = time.monotonic()
        self._draw()

    def end(self, result: Any) -> None:
        took = time.monotonic() - self.started
        total = sum(s.read for s in result.streams)
        mark = "ok" if result.ok else result.result.upper()
        line = f"  {mark:<7} {self.source:<20} {total:>8,} records in {took:5.1f} s"
        if not result.ok and result.error:
            line += f" — {result.error}"
        if self.tty:
            self.out.write("\r\x1b[2K")
        print(line, file=self.out, flush=True)

    def emit(self, record: logging.LogRecord) -> None:
        event = record.msg if isinstance(record.msg, dict) else {}
        name = event.get("event")
        stream = event.get("stream") or self.stream
        if name == "sync.started":
            self.stream = stream
        elif name == "batch.written":
            self.rows[stream] = self.rows.get(stream, 0) + int(event.get("records") or 0)
        elif name == "sync.finished":
            self.rows[stream] = int(event.get("read") or 0)
            if not self.tty:
                print(f"  ...     {self.source:<20} {stream}: {self.rows[stream]:,} records",
                      file=self.out, flush=True)
        elif name == "sync.failed":
            self.errors.append(f"{stream}: {event.get('error')}")
            if not self.tty:
                print(f"  ...     {self.source:<20} {stream}: failed — {event.get('error')}",
                      file=self.out, flush=True)
        else:
            return
        self._draw()

    def _draw(self) -> None:
        if not self.tty:
            return
        parts = ", ".join(f"{s} {n:,}" for s, n in self.rows.items()) or "connecting"
        elapsed = time.monotonic() - self.started
        line = f"  syncing {self.source:<20} {parts} ({elapsed:.1f} s)"
        self.out.write("\r\x1b[2K" + line[:200])
        self.out.flush()


# ---------------------------------------------------------------------- summary


def render_summary(engine: Any, results: list[Any], db: Path, elapsed: float) -> str:
    from sqlalchemy import text

    lines: list[str] = []
    ok = sum(r.ok for r in results)
    lines.append("")
    lines.append(f"lms-sync demo: {ok} of {len(results)} source(s) synced into {db} in {elapsed:.1f} s")
    with engine.connect() as conn:
        counts: dict[str, dict[str, int]] = {r.source_id: {} for r in results}
        for table in SUMMARY_TABLES:
            rows = conn.execute(text(
                f"SELECT source_id, COUNT(*) FROM {table} WHERE deleted_at IS NULL GROUP BY source_id"
            )).all()
            for source_id, n in rows:
                counts.setdefault(source_id, {})[table] = n
        lines.append("")
        lines.append("Rows per source and table")
        width = {t: len(t) + 2 for t in SUMMARY_TABLES}
        first = max([20, *(len(s) + 1 for s in counts)])
        lines.append(f"  {'source':<{first}}" + "".join(f"{t:>{width[t]}}" for t in SUMMARY_TABLES))
        for source_id, per in counts.items():
            lines.append(f"  {source_id:<{first}}"
                         + "".join(f"{per.get(t, 0):>{width[t]},}" for t in SUMMARY_TABLES))
        totals = {t: sum(per.get(t, 0) for per in counts.values()) for t in SUMMARY_TABLES}
        lines.append(f"  {'total':<{first}}" + "".join(f"{totals[t]:>{width[t]},}" for t in SUMMARY_TABLES))

        spread = conn.execute(text(
            "SELECT person_id, COUNT(DISTINCT source_id) AS n FROM learners "
            "WHERE person_id IS NOT NULL AND deleted_at IS NULL GROUP BY person_id"
        )).all()
        persons = len(spread)
        multi = sum(1 for _p, n in spread if n >= 2)
        everywhere = sum(1 for _p, n in spread if n == len(results)) if len(results) > 1 else 0
        learner_count = totals["learners"]
        lines.append("")
        lines.append("Identity")
        lines.append(f"  {learner_count:,} learner accounts are {persons:,} persons; "
                     f"{multi:,} persons matched across two or more sources"
                     + (f", {everywhere:,} in all {len(results)}" if len(results) > 1 else ""))

        top = conn.execute(text(
            "SELECT person_id FROM learner_progress WHERE person_id IS NOT NULL "
            "GROUP BY person_id ORDER BY COUNT(DISTINCT source_id) DESC, person_id LIMIT 3"
        )).scalars().all()
        if top:
            lines.append("")
            lines.append("A few learners (from the learner_progress view)")
        for person_id in top:
            rows = conn.execute(text(
                "SELECT person_name, person_email, source_id, course_title, status, progress_pct "
                "FROM learner_progress WHERE person_id = :p ORDER BY source_id, course_title"
            ), {"p": person_id}).all()
            name, email = rows[0][0], rows[0][1]
            sources = sorted({r[2] for r in rows})
            lines.append(f"  {name or '(no name)'} <{email or '-'}> — {len(rows)} enrollment(s) "
                         f"in {', '.join(sources)}")
            for r in rows[:6]:
                pct = "" if r[5] is None else f"{r[5]:.0f}%"
                lines.append(f"    {r[2]:<20} {(r[3] or '')[:40]:<40} {r[4]:<12} {pct:>5}")
            if len(rows) > 6:
                lines.append(f"    … and {len(rows) - 6} more")
    failed = [r for r in results if not r.ok]
    if failed:
        lines.append("")
        lines.append("Failed")
        for r in failed:
            lines.append(f"  {r.source_id}: {r.error}")
    lines.append("")
    lines.append("Next: explore the warehouse, e.g.")
    lines.append(f"  sqlite3 {db} 'SELECT person_name, source_id, course_title, status "
                 "FROM learner_progress LIMIT 10'")
    lines.append("  lms-sync sandbox --write-config sandbox.yaml   # keep the vendors up, then:")
    lines.append("  lms-sync sync --config sandbox.yaml && lms-sync status --config sandbox.yaml")
    return "\n".join(lines)
