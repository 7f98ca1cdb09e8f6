"""The worker pool against the real PostgreSQL: a queue schema and warehouse schemas of
each test's own (dropped afterwards), sandbox vendors on loopback, and `lms-sync worker`
as real processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import create_engine, select, text

from lms_sync.cluster.queue import QueueTarget, init_queue
from lms_sync.commands.sandbox import start_all
from lms_sync.warehouse.db import make_engine
from lms_sync.warehouse.tables import (
    activity_progress,
    courses,
    enrollments,
    learners,
    stat_snapshots,
    sync_runs,
)
from tests.conftest import POSTGRES_URL, need_server
from tests.test_daemon import Daemon, daemons  # noqa: F401 - the fixture: processes killed at the end

ROOT = Path(__file__).resolve().parents[2]
NEVER = "0 0 1 1 *"  # due at no tick a test sees: runs come from `lms-sync enqueue`


def drop_schemas(names: list[str]) -> None:
    admin = create_engine(POSTGRES_URL)
    with admin.begin() as conn:
        for name in names:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{name}" CASCADE'))
    admin.dispose()


class Schemas:
    """Unique PostgreSQL schema names for one test, all dropped at its end."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def new(self, prefix: str) -> str:
        self.names.append(f"{prefix}_{uuid.uuid4().hex[:10]}")
        return self.names[-1]


@pytest.fixture
def schemas() -> Iterator[Schemas]:
    need_server(POSTGRES_URL)
    made = Schemas()
    yield made
    drop_schemas(made.names)


@pytest.fixture
def queue(schemas: Schemas) -> QueueTarget:
    """An initialized job queue in a schema of its own."""
    target = QueueTarget(POSTGRES_URL, schemas.new("q"), "test")
    init_queue(target)
    return target


@pytest.fixture
def sandbox() -> Iterator[Callable[..., dict[str, dict[str, Any]]]]:
    """sandbox(learners, seed, kinds=None, latency_ms=0) -> {source id: config block}."""
    started: list[Any] = []

    def start(learners: int, seed: int, kinds: list[str] | None = None,
              latency_ms: float = 0.0) -> dict[str, dict[str, Any]]:
        fakes = start_all(learners, seed, kinds, latency_ms=latency_ms)
        started.extend(fakes)
        return {f"{kind}-sandbox": {**block, "http": {"max_wait_seconds": 1}}
                for kind, _server, block in fakes}

    yield start
    for _kind, server, _block in started:
        server.stop()


def write_tenant(folder: Path, name: str, schema: str, sources: dict[str, dict[str, Any]],
                 schedule: str = NEVER, **cluster: Any) -> Path:
    """A tenant's config file: its warehouse is `schema` on the test server."""
    folder.mkdir(parents=True, exist_ok=True)
    tree = {"warehouse": {"url": POSTGRES_URL, "schema": schema, "batch_size": 20},
            "logging": {"format": "json", "level": "INFO"},
            "defaults": {"schedule": schedule},
            "cluster": {"retries": 2, "retry_wait_seconds": 0.5, **cluster},
            "sources": sources}
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(tree, sort_keys=False), encoding="utf-8")
    return path


def faults(base_url: str, **fields: Any) -> None:
    """Break (or mend) a running sandbox vendor: POST /_sandbox/faults (latency_ms, fail_next...)."""
    import urllib.request

    req = urllib.request.Request(base_url + "/_sandbox/faults", json.dumps(fields).encode(),
                                 {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10):  # noqa: S310 - the loopback sandbox
        pass


def cli_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("LMS_SYNC_")}


def lms_sync(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "lms_sync", *args], cwd=ROOT, env=cli_env(),
                          capture_output=True, text=True, timeout=timeout)


def enqueue(target: QueueTarget, path: Path) -> list[int | None]:
    """What `lms-sync enqueue --config PATH` does, without a process's start-up: queue a run
    of each enabled source of the tenant."""
    from lms_sync.cluster.queue import build_app, defer_sync, sync_args
    from lms_sync.config import load_config

    cfg = load_config(path)
    app = build_app(target).open()
    try:
        return [defer_sync(app, sync_args(path.stem, s.id)) for s in cfg.sources.values() if s.enabled]
    finally:
        app.close()


def lms_sync_at_once(*commands: list[str]) -> list[subprocess.CompletedProcess[str]]:
    """Several `lms-sync` commands side by side (each process's start-up takes seconds here)."""
    procs = [subprocess.Popen([sys.executable, "-m", "lms_sync", *args], cwd=ROOT, env=cli_env(),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for args in commands]
    out = []
    for args, proc in zip(commands, procs, strict=True):
        stdout, stderr = proc.communicate(timeout=60)
        out.append(subprocess.CompletedProcess(args, proc.returncode, stdout, stderr))
    return out


def queue_args(target: QueueTarget) -> list[str]:
    return ["--queue-url", target.url, "--queue-schema", target.schema]


class Worker(Daemon):
    """An `lms-sync worker` process, its stderr (JSON lines) in a file."""

    def __init__(self, folder: Path, target: QueueTarget, log: Path, *extra: str,
                 boot: str | None = None) -> None:
        """``boot``: Python code that registers test connectors and runs the CLI."""
        self.log_path = log
        self._log = open(log, "w", encoding="utf-8")  # noqa: SIM115 - closed by stop()/kill()
        args = ["worker", "--configs", str(folder), *queue_args(target), "--heartbeat-seconds", "1",
                "--stalled-seconds", "3", "--reload-seconds", "0.3", *extra]
        start = ["-c", boot] if boot else ["-m", "lms_sync"]
        self.proc = subprocess.Popen([sys.executable, *start, *args], cwd=ROOT,
                                     env=cli_env(), stdout=subprocess.DEVNULL, stderr=self._log)

    def worker_ids(self) -> list[int]:
        started = self.wait_for(lambda: self.event("worker.started"), "worker.started")
        return started["worker_ids"]

    def all(self, name: str, **match: object) -> list[dict]:
        return [e for e in self.events()
                if e.get("event") == name and all(e.get(k) == v for k, v in match.items())]

    def wait(self, timeout: float = 30) -> int:
        try:
            return self.proc.wait(timeout)
        finally:
            self._log.close()

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self._log.close()


def stop_all(pool: list[Worker]) -> list[int]:
    """SIGTERM to every worker at once; their exit codes."""
    for w in pool:
        w.proc.send_signal(signal.SIGTERM)
    return [w.wait() for w in pool]


def wait_until(predicate: Callable[[], Any], what: str, limit: float = 60.0,
               logs: list[Worker] = ()) -> Any:  # type: ignore[assignment]
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    tails = "\n".join(w.log_path.read_text()[-2500:] for w in logs)
    raise AssertionError(f"no {what} within {limit}s\n{tails}")


def runs(schema: str) -> list[dict[str, Any]]:
    engine = make_engine(POSTGRES_URL, schema)
    try:
        with engine.connect() as conn:
            return [dict(r) for r in conn.execute(select(sync_runs).order_by(sync_runs.c.id)).mappings()]
    except Exception:  # noqa: BLE001 - not migrated yet: no runs
        return []
    finally:
        engine.dispose()


def jobs(target: QueueTarget, *columns: str) -> list[dict[str, Any]]:
    """Every job row of the queue (and these further columns), arguments decoded."""
    import psycopg
    from psycopg.rows import dict_row

    more = "".join(f", {c}" for c in columns)
    with psycopg.connect(target.conninfo, options=target.options, row_factory=dict_row) as conn:
        rows = conn.execute("SELECT id, task_name, status::text AS status, args, worker_id, attempts"
                            f"{more} FROM procrastinate_jobs ORDER BY id").fetchall()
    return [{**r, "args": r["args"] if isinstance(r["args"], dict) else json.loads(r["args"])}
            for r in rows]


def no_overlap(rows: list[dict[str, Any]]) -> None:
    """Assert that the runs (run_id) of each source never overlap in time."""
    spans: dict[str, list[tuple[Any, Any]]] = {}
    by_run: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_run.setdefault(r["run_id"], []).append(r)
    for run in by_run.values():
        spans.setdefault(run[0]["source_id"], []).append(
            (min(r["started_at"] for r in run), max(r["finished_at"] for r in run)))
    for source, found in spans.items():
        found.sort()
        for (_, end), (start, _) in zip(found, found[1:], strict=False):
            assert end <= start, f"{source}: two runs overlap"


def contents(schema: str) -> dict[str, Any]:
    """What a user compares between two warehouses of the same vendors: every vendor row by
    its key and content hash (live or deleted), history rows per source, persons."""
    engine = make_engine(POSTGRES_URL, schema)
    out: dict[str, Any] = {}
    try:
        with engine.connect() as conn:
            for table in (learners, courses, enrollments, activity_progress, stat_snapshots):
                c = table.c
                out[table.name] = sorted(conn.execute(select(
                    c.source_id, c.external_id, c.row_hash, c.deleted_at.is_(None))).all())
            out["history"] = sorted(conn.execute(text(
                "SELECT e.source_id, e.external_id, count(*) FROM enrollment_history h "
                "JOIN enrollments e ON e.id = h.enrollment_id GROUP BY 1, 2")).all())
            out["persons"] = conn.execute(text(
                "SELECT count(DISTINCT person_id), count(*) FILTER (WHERE person_id IS NULL) "
                "FROM learners")).one()
    finally:
        engine.dispose()
    return out
