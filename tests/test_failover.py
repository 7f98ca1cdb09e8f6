"""A warehouse failover in the middle of a run, played by a TCP fault proxy between
lms-sync and the real PostgreSQL/MariaDB (tests/support/faultproxy.py): every connection
is reset and new ones are refused for a few seconds, as a restart or a failover does."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import func, select

from lms_sync.commands.sandbox import sandbox_config, start_all
from lms_sync.config import parse_config
from lms_sync.logs import configure
from lms_sync.pipeline import SourceResult, run_source, run_sources
from lms_sync.warehouse import state
from lms_sync.warehouse.tables import enrollments, learners, sync_runs
from tests.cli_helpers import BOOT, ROOT, run_cli
from tests.conftest import Warehouse, _make_warehouse, count_rows, make_config
from tests.support.faultproxy import FaultProxy
from tests.support.snapshot import differences, snapshot
from tests.test_daemon import Daemon, finished, http_get, runs, write_config

PORTS = {"postgresql": 5432, "mysql": 3306}


@pytest.fixture(scope="module")
def sandbox() -> Iterator[list]:
    """The five sandbox vendors, shared: every test here only reads them."""
    started = start_all(learners=100, seed=11)
    yield started
    for _kind, server, _block in started:
        server.stop()


@pytest.fixture
def proxy(server_warehouse: Warehouse) -> Iterator[FaultProxy]:
    with FaultProxy("127.0.0.1", PORTS[server_warehouse.dialect]) as hop:
        yield hop


def _tree(sandbox: list, wh: Warehouse, url: str, **warehouse: Any) -> dict:
    tree = sandbox_config(sandbox, url)
    tree["warehouse"].update({k: v for k, v in wh.config_block().items() if k != "url"}, **warehouse)
    for block in tree["sources"].values():
        block.setdefault("http", {})["max_wait_seconds"] = 1
    return tree


def _cli_sync(tmp_path: Path, tree: dict, *args: str) -> tuple[int, str, list[dict]]:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(tree), encoding="utf-8")
    proc = run_cli("sync", "--config", str(path), *args, timeout=300)
    events = [json.loads(line) for line in proc.stderr.splitlines() if line.startswith("{")]
    problems = [line for line in proc.stderr.splitlines() if '"level": "error"' in line
                or not line.startswith("{")]
    return proc.returncode, proc.stdout + "\n".join(problems)[-3000:], events


def _baseline(sandbox: list, dialect: str, tmp_path: Path, proxy: FaultProxy) -> dict:
    """A sync of the same vendors, uncut, into a warehouse of its own, through the proxy
    (to learn how many bytes a sync sends)."""
    gen = _make_warehouse(dialect, tmp_path / "baseline")
    wh = next(gen)
    try:
        cfg = parse_config(_tree(sandbox, wh, proxy.url_for(wh.url)), "baseline.yaml")
        engine = type(wh)(dialect, proxy.url_for(wh.url), wh.schema).engine
        results = run_sources(engine, cfg, list(cfg.sources.values()))
        assert all(r.ok for r in results), [r.error for r in results]
        engine.dispose()
        return snapshot(wh.engine)
    finally:
        gen.close()


def test_a_warehouse_cut_mid_sync_loses_nothing(sandbox, server_warehouse, proxy, tmp_path):
    """The warehouse drops every connection and refuses new ones for 3 s in the middle of
    a full sync of the sandbox: the sync rides it out (exit 0); the warehouse ends up equal
    to an uncut sync's, key for key and value for value, with every cursor saved and no
    history row twice."""
    wh = server_warehouse
    sent_before = proxy.bytes_up
    expected = _baseline(sandbox, wh.dialect, tmp_path, proxy)
    half = (proxy.bytes_up - sent_before) // 2
    proxy.cut_after_upstream(half, seconds=3.0)
    code, output, events = _cli_sync(tmp_path, _tree(sandbox, wh, proxy.url_for(wh.url),
                                                      reconnect_seconds=60))
    assert proxy.cuts == 1, "the cut did not happen during the sync"
    assert code == 0, output
    names = {e["event"] for e in events}
    assert names & {"batch.retry", "warehouse.retry"}, "nothing met the cut"
    assert "run.unrecorded" not in names and "sync.failed" not in names
    got = snapshot(wh.engine)
    assert not differences(expected, got)
    assert got["cursors"] and got["cursors"] == expected["cursors"]
    history = got["enrollment_history"]
    assert sum(history.values()) == len({dict(k)["enrollment_id"] for k in history})  # one each
    with wh.engine.connect() as conn:
        results = set(conn.execute(select(sync_runs.c.result)).scalars())
    assert results == {"succeeded"}, results  # none left running by a retried start


# --------------------------------------------------------------- one source, held mid-run


def _wait(predicate: Callable[[], Any], what: str, limit: float = 60.0) -> Any:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(0.05)
    raise AssertionError(f"no {what} within {limit} s")


def _synthetic(hold: Path, users: int = 200) -> dict:
    """A source whose reader stalls after its first 100 users until ``hold`` exists (in
    batches of 30, the cursor saved is then the one after the first 50 users)."""
    return {"kind": "synthetic", "base_url": "http://127.0.0.1:9",
            "options": {"users": users, "hold_file": str(hold)}}


def _cursor(wh: Warehouse, stream: str = "users") -> Any:
    with wh.engine.connect() as conn:
        return state.load_cursor(conn, "syn", stream)


def _run_in_thread(engine: Any, cfg: Any) -> tuple[threading.Thread, list[SourceResult]]:
    out: list[SourceResult] = []
    thread = threading.Thread(target=lambda: out.append(run_source(engine, cfg, cfg.sources["syn"])))
    thread.start()
    return thread, out


def _popen_sync(tmp_path: Path, tree: dict) -> subprocess.Popen[str]:
    path = tmp_path / "second.yaml"
    path.write_text(yaml.safe_dump(tree), encoding="utf-8")
    return subprocess.Popen([sys.executable, "-c", BOOT, "sync", "--config", str(path)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_a_run_whose_lock_another_process_took_during_a_cut_stops_and_writes_nothing_more(
        server_warehouse, proxy, tmp_path, capsys):
    """Run 1 holds the source lock on a connection through the proxy; the warehouse is
    cut; a second process (straight to the server) takes the lock and starts the same
    source; the warehouse comes back. Run 1 does not take the lock back: it stops,
    recorded as interrupted (lock lost), without writing after the cut, and the second
    run's data is complete."""
    wh = server_warehouse
    configure("json", "INFO")
    first, second = tmp_path / "go-first", tmp_path / "go-second"
    cfg = make_config(wh, {"syn": _synthetic(first)})
    cfg.warehouse.batch_size, cfg.warehouse.reconnect_seconds = 30, 60
    engine = Warehouse(wh.dialect, proxy.url_for(wh.url), wh.schema).engine
    thread, result = _run_in_thread(engine, cfg)
    _wait(lambda: _cursor(wh), "first batch of run 1")  # it holds the lock, and stalls
    proxy.cut()
    first.touch()  # run 1 reads on and meets the cut at its next batch
    tree = {"warehouse": {**wh.config_block()}, "logging": {"format": "json"},
            "sources": {"syn": _synthetic(second)}}
    other = _popen_sync(tmp_path, tree)
    try:
        _wait(lambda: count_rows(wh, sync_runs) >= 2, "the second process taking the lock")
        proxy.restore()
        thread.join(60)
        assert not thread.is_alive() and result
        run1 = result[0]
        assert run1.result == "failed" and run1.error.startswith("interrupted: lock lost")
        assert [s.error.split(":")[0] for s in run1.streams] == ["interrupted", "not run"]
    finally:
        second.touch()
        out, err = other.communicate(timeout=120)
    assert other.returncode == 0, out + err[-3000:]
    events = [json.loads(line) for line in capsys.readouterr().err.splitlines()
              if line.startswith("{")]
    names = [e["event"] for e in events]
    cut_met = min(names.index(n) for n in ("batch.retry", "warehouse.retry") if n in names)
    assert "lock.lost" in names and "lock.reacquired" not in names
    assert "batch.written" not in names[cut_met:], "run 1 wrote after the cut"
    with wh.engine.connect() as conn:
        rows = conn.execute(select(sync_runs.c.result, sync_runs.c.error)
                            .where(sync_runs.c.run_id == run1.run_id)).all()
    assert [r.error.split(":")[0] for r in rows] == ["interrupted", "not run"]
    assert count_rows(wh, learners) == count_rows(wh, enrollments) == 200
    assert _cursor(wh) == {"position": 199}
    engine.dispose()


def test_a_cut_longer_than_reconnect_seconds_fails_in_one_line_and_the_next_run_resumes(
        postgres_warehouse, tmp_path):
    """The warehouse stays away longer than warehouse.reconnect_seconds: the sync fails
    with one line naming the warehouse and the setting; the next run, the warehouse back,
    resumes from the cursor saved before the cut and completes the source."""
    wh = postgres_warehouse
    hold = tmp_path / "go"
    with FaultProxy("127.0.0.1", PORTS["postgresql"]) as hop:
        tree = {"warehouse": {**wh.config_block(), "url": hop.url_for(wh.url), "batch_size": 30,
                              "reconnect_seconds": 1.5},
                "logging": {"format": "json"}, "sources": {"syn": _synthetic(hold)}}
        run = _popen_sync(tmp_path, tree)
        _wait(lambda: _cursor(wh), "the first batch")
        hop.cut()
        hold.touch()
        out, err = run.communicate(timeout=120)
        hop.restore()
        assert run.returncode == 1, out + err[-3000:]
        line = next(x for x in out.splitlines() if x.startswith("syn: "))
        assert line.startswith("syn: failed")
        where = f"the warehouse postgresql at 127.0.0.1:{hop.port}/test"
        assert f"{where} was unreachable for warehouse.reconnect_seconds (1.5 s)" in line
        assert "raise warehouse.reconnect_seconds" in line
        events = [json.loads(x) for x in err.splitlines() if x.startswith("{")]
        assert any(e["event"] == "run.unrecorded" for e in events)
        saved = _cursor(wh)
        assert saved == {"position": 49}
        code, output, events = _cli_sync(tmp_path, tree)
    assert code == 0, output[-3000:]
    started = next(e for e in events if e["event"] == "sync.started" and e["stream"] == "users")
    assert started["cursor"] == saved
    assert count_rows(wh, learners) == count_rows(wh, enrollments) == 200
    with wh.engine.connect() as conn:
        rows = conn.execute(select(sync_runs.c.result, func.count()).group_by(sync_runs.c.result)).all()
    assert dict(rows) == {"succeeded": 2, "failed": 1}  # the cut run, marked abandoned


def test_the_daemon_rides_out_a_cut_and_healthz_says_so(postgres_warehouse, tmp_path):
    """A daemon's run meets a cut: /healthz answers 503 "warehouse unreachable" during it
    and 200 after, the daemon does not exit, and the run completes once the warehouse is
    back."""
    wh = postgres_warehouse
    hold = tmp_path / "go"
    with FaultProxy("127.0.0.1", PORTS["postgresql"]) as hop:
        block = {**wh.config_block(), "url": hop.url_for(wh.url), "batch_size": 30,
                 "reconnect_seconds": 60}
        config = write_config(tmp_path / "daemon.yaml", block,
                              {"syn": {"users": 200, "hold_file": str(hold)}},
                              schedule="0 0 1 1 *", health_port=0, health_host="127.0.0.1")
        d = Daemon(config, tmp_path / "daemon.log")
        try:
            port = d.wait_for(lambda: d.event("health.listening"), "health.listening")["port"]
            health = f"http://127.0.0.1:{port}/healthz"
            _wait(lambda: _cursor(wh), "the first batch")
            assert http_get(health)[0] == 200
            hop.cut()
            hold.touch()
            d.wait_for(lambda: d.event("warehouse.retry") or d.event("batch.retry"), "the cut met")
            code, body = http_get(health)
            assert code == 503 and json.loads(body)["reason"].startswith("warehouse unreachable")
            hop.restore()
            d.wait_for(lambda: finished(wh.engine, "syn"), "the end of the run")
            assert http_get(health)[0] == 200
            assert d.proc.poll() is None
            assert d.stop() == 0
        finally:
            d.kill()
    assert [r["result"] for r in runs(wh.engine)] == ["succeeded", "succeeded"]
    assert count_rows(wh, learners) == count_rows(wh, enrollments) == 200


def test_the_soft_delete_after_a_full_read_rides_out_a_lost_connection(postgres_warehouse):
    """The connection is reset under the query that looks for rows a full read no longer
    lists: the soft-delete is done again on a new connection, and the run succeeds."""
    wh = postgres_warehouse
    cfg = make_config(wh, {"syn": {"kind": "synthetic", "base_url": "http://127.0.0.1:9",
                                   "options": {"users": 30}}})
    assert run_source(wh.engine, cfg, cfg.sources["syn"]).ok
    cfg.sources["syn"].options.removed = [5]  # type: ignore[attr-defined]
    with FaultProxy("127.0.0.1", PORTS["postgresql"]) as hop:
        engine = Warehouse("postgresql", hop.url_for(wh.url), wh.schema).engine
        hop.reset_response(b"enrollments.deleted_at IS NULL AND enrollments.row_hash", after=0)
        result = run_source(engine, cfg, cfg.sources["syn"])
        engine.dispose()
    assert hop.resets == 1
    assert result.ok, result.error
    assert result.streams[1].deleted == 1
    with wh.engine.connect() as conn:
        gone = conn.execute(select(enrollments.c.external_id)
                            .where(enrollments.c.deleted_at.is_not(None))).scalars().all()
    assert gone == ["u5:c0"]
