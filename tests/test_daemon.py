"""`lms-sync daemon` as a real subprocess: schedules, failures, signals, locks, health.

The daemon runs the synthetic test connector, plus ``slow`` (below): the
synthetic users stream with a pause per record, or one that hangs, so a run is
still in flight when a signal or a second daemon arrives.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from sqlalchemy import func, select

from lms_sync.canonical import Learner
from lms_sync.warehouse import state
from lms_sync.warehouse.dialect import source_lock
from lms_sync.warehouse.tables import sync_runs
from tests.support.synthetic import Enrollments, SyntheticConnector, SyntheticOptions, Users

ROOT = Path(__file__).resolve().parent.parent
BOOT = ("from tests.support import synthetic; synthetic.register(); "
        "from lms_sync.connectors import KINDS; KINDS['slow'] = 'tests.test_daemon:SlowConnector'; "
        "from lms_sync.cli import main; raise SystemExit(main())")


# --------------------------------------------------------------------- the slow connector


class SlowOptions(SyntheticOptions):
    delay: float = 0.02   # seconds per user record
    hang: bool = False    # the users stream blocks without yielding (a vendor that never answers)


class SlowUsers(Users):
    def read(self, ctx):  # type: ignore[no-untyped-def]
        if self.opts.hang:
            time.sleep(3600)
        for item in super().read(ctx):
            if isinstance(item, Learner):
                time.sleep(self.opts.delay)
            yield item


class SlowConnector(SyntheticConnector):
    kind = "slow"
    Options = SlowOptions

    def streams(self):  # type: ignore[no-untyped-def]
        return [SlowUsers(self.options), Enrollments(self.options)]


# --------------------------------------------------------------------- helpers


class Daemon:
    """A `lms-sync daemon` subprocess with its stderr in a file."""

    def __init__(self, config: Path, log: Path) -> None:
        self.log_path = log
        self._log = open(log, "w", encoding="utf-8")  # noqa: SIM115 - closed in wait()
        env = {k: v for k, v in os.environ.items() if k != "LMS_SYNC_CONFIG"}
        self.proc = subprocess.Popen([sys.executable, "-c", BOOT, "daemon", "--config", str(config)],
                                     cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=self._log)

    def events(self) -> list[dict]:
        out = []
        for line in self.log_path.read_text(encoding="utf-8").splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                out.append({"event": "<not json>", "line": line})
        return out

    def wait_for(self, predicate, what: str, limit: float = 45.0):  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            if self.proc.poll() is not None:
                raise AssertionError(f"daemon exited ({self.proc.returncode}) before {what}:\n"
                                     + self.log_path.read_text()[-3000:])
            time.sleep(0.1)
        raise AssertionError(f"no {what} within {limit}s:\n" + self.log_path.read_text()[-3000:])

    def event(self, name: str, **match: object) -> dict | None:
        for e in self.events():
            if e.get("event") == name and all(e.get(k) == v for k, v in match.items()):
                return e
        return None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        finally:
            self._log.close()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._log.close()


@pytest.fixture
def daemons() -> Iterator[list[Daemon]]:
    started: list[Daemon] = []
    yield started
    for d in started:
        d.kill()


def write_config(path: Path, warehouse_block: dict, sources: dict, schedule: str = "* * * * *",
                 **daemon: object) -> Path:
    tree = {
        "warehouse": warehouse_block,
        "logging": {"format": "json", "level": "INFO"},
        "defaults": {"schedule": schedule},
        "daemon": {"run_on_start": True, "jitter_seconds": 0, **daemon},
        "sources": {
            sid: {"kind": opts.pop("kind", "synthetic"), "base_url": "http://127.0.0.1:9", "options": opts}
            for sid, opts in sources.items()
        },
    }
    path.write_text(yaml.safe_dump(tree), encoding="utf-8")
    return path


def runs(engine) -> list[dict]:  # type: ignore[no-untyped-def]
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(select(sync_runs).order_by(sync_runs.c.id)).mappings()]


def finished(engine, *source_ids: str):  # type: ignore[no-untyped-def]
    """True once every named source has a finished row for each of its streams."""
    done = {(r["source_id"], r["stream"]) for r in runs(engine) if r["result"] != "running"}
    return all((sid, s) in done for sid in source_ids for s in ("users", "enrollments"))


def http_get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:  # noqa: S310 - loopback test server
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


# --------------------------------------------------------------------- tests


def test_daemon_runs_sources_survives_failure_serves_health_and_stops_on_sigterm(
        tmp_path, sqlite_warehouse, daemons):
    cfg = write_config(tmp_path / "config.yaml", sqlite_warehouse.config_block(),
                       {"good": {"users": 120}, "bad": {"users": 10, "fail_stream": "users"}},
                       # run_on_start runs each source once; the cron (Jan 1st) adds no run here
                       schedule="0 0 1 1 *", health_port=0, health_host="127.0.0.1")
    d = Daemon(cfg, tmp_path / "daemon.log")
    daemons.append(d)
    started = d.wait_for(lambda: d.event("scheduler.started"), "scheduler.started")
    assert {j["source"] for j in started["jobs"]} == {"good", "bad"}
    assert all(j["schedule"] == "0 0 1 1 *" and j["next_run"] for j in started["jobs"])
    port = d.wait_for(lambda: d.event("health.listening"), "health.listening")["port"]
    base = f"http://127.0.0.1:{port}"
    # both runs over (the daemon's own account of them)
    d.wait_for(lambda: len(json.loads(http_get(base + "/healthz")[1])["last_results"]) == 2,
               "both sources run")

    results = {(r["source_id"], r["stream"]): r for r in runs(sqlite_warehouse.engine)}
    assert results["good", "users"]["result"] == "succeeded"
    assert results["good", "users"]["records_written"] == 120
    assert results["bad", "users"]["result"] == "failed"
    assert results["bad", "users"]["error"] == "synthetic failure"

    code, body = http_get(base + "/healthz")
    health = json.loads(body)
    assert code == 200 and health["status"] == "ok" and health["warehouse"] == "ok"
    # the failing source keeps its schedule
    jobs = {j["source"]: j for j in health["jobs"]}
    assert jobs["bad"]["next_run"] and jobs["good"]["next_run"]
    assert health["last_results"] == {"good": "succeeded", "bad": "failed"}

    code, text = http_get(base + "/metrics")
    assert code == 200
    assert 'lms_sync_records_written_total{source="good",table="learners"} 120.0' in text
    assert 'lms_sync_runs_total{result="failed",source="bad",stream="users"} 1.0' in text
    assert 'lms_sync_runs_total{result="succeeded",source="good",stream="users"} 1.0' in text
    assert 'lms_sync_last_success_timestamp_seconds{source="good"}' in text
    assert 'lms_sync_last_success_timestamp_seconds{source="bad"}' not in text
    assert 'lms_sync_run_duration_seconds_count{source="good"} 1.0' in text
    assert http_get(base + "/nope")[0] == 404

    assert d.stop() == 0
    assert all(r["result"] != "running" for r in runs(sqlite_warehouse.engine))
    stopped = d.event("scheduler.stopped")
    assert stopped and stopped["clean"] is True
    assert all(e["event"] != "<not json>" for e in d.events())


def test_sigterm_stops_a_run_in_flight_at_its_next_checkpoint(tmp_path, sqlite_warehouse, daemons):
    # batches of 1000 (the default) would take 10 s here; the users stream checkpoints every 50
    cfg = write_config(tmp_path / "config.yaml", sqlite_warehouse.config_block(),
                       {"slow": {"kind": "slow", "users": 100_000, "delay": 0.01}})
    d = Daemon(cfg, tmp_path / "daemon.log")
    daemons.append(d)
    d.wait_for(lambda: d.event("sync.started", source="slow"), "a run in flight")
    assert d.stop(signal.SIGINT) == 0

    rows = {r["stream"]: r for r in runs(sqlite_warehouse.engine)}
    assert rows["users"]["result"] == "failed" and rows["users"]["error"] == "interrupted"
    assert rows["enrollments"]["result"] == "failed" and "interrupted" in rows["enrollments"]["error"]
    # what was read is committed with the cursor it resumes from, before a batch filled up
    with sqlite_warehouse.engine.connect() as conn:
        cursor = state.load_cursor(conn, "slow", "users")
    written = rows["users"]["records_written"]
    assert 0 < written < 1000
    assert cursor == {"position": written - 1}
    assert d.event("scheduler.stopped")["clean"] is True


def test_a_run_that_does_not_stop_in_time_is_marked_interrupted(tmp_path, sqlite_warehouse, daemons):
    cfg = write_config(tmp_path / "config.yaml", sqlite_warehouse.config_block(),
                       {"stuck": {"kind": "slow", "hang": True}}, shutdown_timeout_seconds=0.5)
    d = Daemon(cfg, tmp_path / "daemon.log")
    daemons.append(d)
    d.wait_for(lambda: any(r["result"] == "running" for r in runs(sqlite_warehouse.engine)),
               "a run in flight")
    assert d.stop() == 0
    rows = runs(sqlite_warehouse.engine)
    assert [(r["stream"], r["result"], r["error"]) for r in rows] == [("users", "failed", "interrupted")]
    stopped = d.event("scheduler.stopped")
    assert stopped["clean"] is False and stopped["abandoned_in_flight"] == ["stuck"]


def test_runs_left_running_by_a_dead_process_are_marked_abandoned_unless_locked(
        tmp_path, sqlite_warehouse, daemons):
    engine = sqlite_warehouse.engine
    long_ago = datetime(2026, 1, 1, tzinfo=UTC)
    with engine.begin() as conn:
        for sid in ("dead", "alive"):
            state.ensure_source(conn, sid, "synthetic")
            state.start_run(conn, f"run-{sid}", sid, "users", long_ago)
    cfg = write_config(tmp_path / "config.yaml", sqlite_warehouse.config_block(),
                       {"dead": {"users": 5}, "alive": {"users": 5}})
    # another live process is running "alive": the daemon must leave its row alone
    with source_lock(engine, "alive"):
        d = Daemon(cfg, tmp_path / "daemon.log")
        daemons.append(d)
        d.wait_for(lambda: d.event("sync.skipped", source="alive"), "alive skipped")
        d.wait_for(lambda: finished(engine, "dead"), "dead source run")
        old = {r["run_id"]: r for r in runs(engine) if r["run_id"].startswith("run-")}
        assert old["run-dead"]["result"] == "failed" and "abandoned" in old["run-dead"]["error"]
        assert old["run-alive"]["result"] == "running"
    assert d.event("runs.abandoned")["runs"] == {"dead": 1}
    assert d.stop() == 0


def test_two_daemons_on_one_server_warehouse_never_overlap_a_source(
        tmp_path, server_warehouse, daemons):
    """PostgreSQL advisory locks and MariaDB's GET_LOCK: the second daemon skips both."""
    sources = {"s1": {"kind": "slow", "users": 100_000, "delay": 0.01},
               "s2": {"kind": "slow", "users": 100_000, "delay": 0.01}}
    block = {**server_warehouse.config_block(), "batch_size": 20}
    cfg_a = write_config(tmp_path / "a.yaml", block, {k: dict(v) for k, v in sources.items()})
    cfg_b = write_config(tmp_path / "b.yaml", block, {k: dict(v) for k, v in sources.items()})
    a = Daemon(cfg_a, tmp_path / "a.log")
    daemons.append(a)
    a.wait_for(lambda: a.event("batch.written", source="s1") and a.event("batch.written", source="s2"),
               "daemon A running both sources")
    b = Daemon(cfg_b, tmp_path / "b.log")
    daemons.append(b)
    b.wait_for(lambda: b.event("sync.skipped", source="s1") and b.event("sync.skipped", source="s2"),
               "daemon B skipping both sources")
    assert "already being synced by another process" in b.event("sync.skipped", source="s1")["reason"]
    assert b.stop() == 0
    assert a.stop() == 0

    rows = runs(server_warehouse.engine)
    assert rows and all(r["result"] != "running" for r in rows)
    for sid in ("s1", "s2"):
        mine = sorted((r for r in rows if r["source_id"] == sid and r["stream"] == "users"),
                      key=lambda r: r["started_at"])
        assert len({r["run_id"] for r in mine}) == 1  # only A ran it
        for earlier, later in zip(mine, mine[1:], strict=False):
            assert earlier["finished_at"] <= later["started_at"]
    assert not b.event("batch.written")


def test_healthz_is_503_with_the_reason_when_the_warehouse_or_scheduler_is_down(tmp_path):
    from lms_sync.config import parse_config
    from lms_sync.health import HealthServer
    from lms_sync.scheduler import Scheduler
    from lms_sync.warehouse.db import make_engine

    # nothing listens on port 1: the warehouse does not answer
    url = "postgresql+psycopg://lms:pw@127.0.0.1:1/lms"
    cfg = parse_config({"warehouse": {"url": url}, "daemon": {"jitter_seconds": 0}})
    engine = make_engine(url)
    scheduler = Scheduler(engine, cfg, [])
    scheduler.start()
    server = HealthServer("127.0.0.1", 0, engine, status=lambda: {"jobs": scheduler.jobs()},
                          alive=lambda: scheduler.running).start()
    try:
        code, body = http_get(f"http://127.0.0.1:{server.port}/healthz")
        health = json.loads(body)
        assert code == 503 and health["status"] == "unavailable"
        assert health["reason"].startswith("warehouse unreachable: ")
        assert "refused" in health["reason"].lower()
        scheduler.shutdown(timeout=1)
        code, body = http_get(f"http://127.0.0.1:{server.port}/healthz")
        assert code == 503 and json.loads(body)["reason"] == "scheduler is not running"
    finally:
        server.stop()
        engine.dispose()


def test_cron_weekday_numbers_mean_what_crontab_means():
    from lms_sync.scheduler import cron_trigger

    monday = datetime(2026, 3, 2, tzinfo=UTC)
    assert monday.strftime("%A") == "Monday"

    def next_days(expr: str, n: int = 3) -> list[str]:
        trigger, when, out = cron_trigger(expr, "UTC"), monday, []
        for _ in range(n):
            when = trigger.get_next_fire_time(None, when)
            out.append(when.strftime("%a %H:%M"))
            when = when.replace(minute=when.minute + 1)
        return out

    assert next_days("0 3 * * 0", 1) == ["Sun 03:00"]
    assert next_days("0 3 * * 7", 1) == ["Sun 03:00"]
    assert next_days("30 6 * * 1-5", 6) == ["Mon 06:30", "Tue 06:30", "Wed 06:30", "Thu 06:30",
                                            "Fri 06:30", "Mon 06:30"]
    assert next_days("0 0 * * */2", 4) == ["Tue 00:00", "Thu 00:00", "Sat 00:00", "Sun 00:00"]
    assert next_days("0 0 * * sat,sun", 2) == ["Sat 00:00", "Sun 00:00"]
    # day of month and day of week both restricted: either matches, as in crontab
    trigger, when, fires = cron_trigger("0 6 1 * 1", "UTC"), monday, []
    for _ in range(6):
        when = trigger.get_next_fire_time(None, when)
        fires.append(when.strftime("%a %d %b"))
        when = when.replace(minute=1)
    assert fires == ["Mon 02 Mar", "Mon 09 Mar", "Mon 16 Mar", "Mon 23 Mar", "Mon 30 Mar", "Wed 01 Apr"]
    # with a time zone: 09:00 in Helsinki is 07:00 UTC in March
    trigger = cron_trigger("0 9 * * 1", "Europe/Helsinki")
    assert trigger.get_next_fire_time(None, monday).astimezone(UTC).strftime("%a %H:%M") == "Mon 07:00"


def test_daemon_refuses_a_config_with_nothing_to_run_or_a_busy_health_port(tmp_path, sqlite_warehouse):
    from tests.cli_helpers import run_cli

    cfg = write_config(tmp_path / "none.yaml", sqlite_warehouse.config_block(), {})
    proc = run_cli("daemon", "--config", str(cfg))
    assert proc.returncode == 2
    assert proc.stderr.strip() == (f"lms-sync: error: no enabled source to schedule, {cfg}: sources; "
                                   "add a source or set enabled: true on one")

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        cfg = write_config(tmp_path / "busy.yaml", sqlite_warehouse.config_block(), {"s": {"users": 1}},
                           health_port=port, health_host="127.0.0.1")
        proc = run_cli("daemon", "--config", str(cfg))
    assert proc.returncode == 2
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"lms-sync: error: cannot listen on 127.0.0.1:{port} (")
    assert last.endswith(f"{cfg}: daemon.health_port; choose a free port, or remove daemon.health_port")
    assert "Traceback" not in proc.stderr


def test_a_fire_during_the_previous_run_runs_once_that_run_ends(sqlite_warehouse):
    """max_instances=1 dropped a fire that came while the source still ran, with no event
    of ours: now it is logged (sync.skipped) and run as soon as the previous run ends,
    since that is within daemon.misfire_grace_seconds."""
    from structlog.testing import capture_logs

    from lms_sync.scheduler import Scheduler
    from tests.conftest import make_config, synthetic_source

    cfg = make_config(sqlite_warehouse, {"slow": {**synthetic_source(users=100, delay_ms=1500),
                                                  "schedule": "0 0 1 1 *"}},
                      daemon={"jitter_seconds": 0})
    sched = Scheduler(sqlite_warehouse.engine, cfg)
    with capture_logs() as events:
        sched.start()
        try:
            job = sched._scheduler.get_job("slow")
            job.modify(next_run_time=datetime.now(UTC))
            deadline = time.monotonic() + 10
            while not sched.in_flight() and time.monotonic() < deadline:
                time.sleep(0.02)
            assert sched.in_flight() == ["slow"]  # the first run takes ~3 s
            job.modify(next_run_time=datetime.now(UTC))  # fires while the first run goes on
            while time.monotonic() < deadline:
                with sqlite_warehouse.engine.connect() as conn:
                    done = conn.execute(select(func.count()).select_from(sync_runs).where(
                        sync_runs.c.stream == "users", sync_runs.c.result == "succeeded")).scalar()
                if done == 2:
                    break
                time.sleep(0.05)
        finally:
            sched.shutdown(timeout=10)
    assert done == 2
    skipped = [e for e in events if e["event"] == "sync.skipped"]
    assert len(skipped) == 1 and skipped[0]["source"] == "slow"
