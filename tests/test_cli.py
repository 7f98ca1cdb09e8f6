"""The real CLI end to end, on every database: sync, status, db upgrade, check, logs."""

from __future__ import annotations

import json

import yaml
from sqlalchemy import func, select

from lms_sync.warehouse.tables import learners, sync_runs
from tests.cli_helpers import run_cli

SECRET = "tok-Sup3rSecret-9d8f7e"


def write_config(tmp_path, warehouse, fmt="json", **sources):
    tree = {
        "warehouse": warehouse.config_block(),
        "logging": {"format": fmt, "level": "DEBUG"},
        "sources": {
            sid: {"kind": "synthetic", "base_url": "http://127.0.0.1:9",
                  "auth": {"token": "${SYN_SECRET}"}, "options": opts}
            for sid, opts in sources.items()
        },
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(tree), encoding="utf-8")
    return str(path)


def test_sync_status_and_failing_source(tmp_path, warehouse):
    cfg = write_config(tmp_path, warehouse, good={"users": 120},
                       bad={"users": 10, "fail_stream": "enrollments"})
    env = {"SYN_SECRET": SECRET}
    proc = run_cli("sync", "--config", cfg, env=env)
    assert proc.returncode == 1, proc.stderr
    assert "good: succeeded" in proc.stdout and "bad: failed" in proc.stdout
    with warehouse.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(learners)
                            .where(learners.c.source_id == "good")).scalar() == 120
        results = dict(conn.execute(
            select(sync_runs.c.source_id + ":" + sync_runs.c.stream, sync_runs.c.result)).all())
    assert results == {"good:users": "succeeded", "good:enrollments": "succeeded",
                       "bad:users": "succeeded", "bad:enrollments": "failed"}

    events = [json.loads(line) for line in proc.stderr.splitlines()]
    assert {"sync.started", "batch.written", "sync.finished", "sync.failed"} <= {e["event"] for e in events}
    run_lines = [e for e in events if e["event"] in {"sync.started", "batch.written", "sync.finished"}]
    assert all({"run_id", "source", "kind", "stream"} <= e.keys() for e in run_lines)
    assert SECRET not in proc.stderr + proc.stdout

    proc = run_cli("sync", "--config", cfg, "--source", "good", env=env)
    assert proc.returncode == 0
    assert "good: succeeded (users 0 read/0 written, enrollments 125 read/0 written)" in proc.stdout

    status = run_cli("status", "--config", cfg, env=env)
    assert status.returncode == 0, status.stderr
    lines = status.stdout.splitlines()
    assert lines[0].split()[:4] == ["SOURCE", "STREAM", "LAST_RUN", "RESULT"]
    good_users = next(line for line in lines if line.startswith("good") and " users " in line)
    assert "succeeded" in good_users and '{"position":119}' in good_users
    assert any(line.startswith("  ! bad/enrollments: synthetic failure") for line in lines)
    assert "learners per source: bad=10, good=120" in status.stdout

    as_json = json.loads(run_cli("status", "--config", cfg, "--format", "json", env=env).stdout)
    assert {r["source"] for r in as_json["streams"]} == {"good", "bad"}


def test_db_upgrade_and_no_migrate(tmp_path, unmigrated_warehouse):
    cfg = write_config(tmp_path, unmigrated_warehouse, s={"users": 5})
    env = {"SYN_SECRET": SECRET}
    proc = run_cli("sync", "--config", cfg, "--no-migrate", env=env)
    assert proc.returncode == 2 and "no lms-sync tables yet" in proc.stderr
    proc = run_cli("db", "upgrade", "--config", cfg, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "warehouse at revision" in proc.stdout
    events = [json.loads(line) for line in proc.stderr.splitlines()]
    assert events and all("event" in e for e in events)  # alembic's lines are JSON too
    assert run_cli("sync", "--config", cfg, "--no-migrate", env=env).returncode == 0


def test_alembic_is_quiet_but_db_upgrade_logs_each_migration_applied(tmp_path):
    """Alembic's INFO chatter ("Context impl SQLiteImpl.") cluttered report, status and identity
    show; `db upgrade` says instead, as one event each, which migrations it applied."""
    path = tmp_path / "c.yaml"
    path.write_text(f"warehouse: {{url: 'sqlite:///{tmp_path / 'w.db'}'}}\n")  # logging at INFO
    report = run_cli("report", "--person", "jane@example.com", "--config", str(path))
    assert "no person matches 'jane@example.com'" in report.stderr
    assert report.stderr.count("\n") == 1 and "alembic" not in report.stderr.lower()
    (tmp_path / "w.db").unlink()
    first = run_cli("db", "upgrade", "--config", str(path))
    events = [json.loads(line) for line in first.stderr.splitlines()]
    assert all(e["logger"] == "lms_sync.cli" for e in events)
    migrated = [(e["revision"], e["description"]) for e in events if e["event"] == "db.migrated"]
    assert migrated[0] == ("0001", "initial schema")
    assert f"warehouse at revision {migrated[-1][0]}" in first.stdout
    again = run_cli("db", "upgrade", "--config", str(path))
    assert [json.loads(line)["event"] for line in again.stderr.splitlines()] == ["db.upgraded"]


def test_unreachable_warehouse_is_one_line(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("warehouse: {url: 'postgresql+psycopg://nobody:pw-secret-77@127.0.0.1:1/x'}\n")
    proc = run_cli("sync", "--config", str(path))
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "cannot reach the warehouse" in proc.stderr
    assert "pw-secret-77" not in proc.stderr


def test_console_format_is_readable_and_redacted(tmp_path, sqlite_warehouse):
    cfg = write_config(tmp_path, sqlite_warehouse, fmt="console", s={"users": 5})
    proc = run_cli("sync", "--config", cfg, env={"SYN_SECRET": SECRET})
    assert proc.returncode == 0
    assert "sync.finished" in proc.stderr and not proc.stderr.lstrip().startswith("{")
    assert SECRET not in proc.stderr


def test_check_validates_without_writing(tmp_path, sqlite_warehouse):
    cfg = write_config(tmp_path, sqlite_warehouse, s={"users": 5})
    proc = run_cli("check", "--config", cfg, env={"SYN_SECRET": SECRET})
    assert proc.returncode == 0, proc.stderr
    assert "s: ok" in proc.stdout and "valid, 1 source(s)" in proc.stdout
    with sqlite_warehouse.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(sync_runs)).scalar() == 0


def test_killed_sync_resumes_from_saved_cursor(tmp_path, warehouse):
    """kill -9 between batches: the next run resumes at the cursor, no duplicates, no loss."""
    cfg = write_config(tmp_path, warehouse, s={"users": 300, "crash_after": 175, "crash_hard": True})
    tree = yaml.safe_load(open(cfg))
    tree["warehouse"]["batch_size"] = 60
    tree["logging"]["level"] = "INFO"
    open(cfg, "w").write(yaml.safe_dump(tree))
    env = {"SYN_SECRET": SECRET}
    proc = run_cli("sync", "--config", cfg, env=env)
    assert proc.returncode == 9  # died mid-stream, like a kill -9
    with warehouse.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(learners)).scalar() == 120
        assert conn.execute(select(sync_runs.c.result)).scalars().all() == ["running"]

    tree["sources"]["s"]["options"] = {"users": 300}
    open(cfg, "w").write(yaml.safe_dump(tree))
    proc = run_cli("sync", "--config", cfg, env=env)
    assert proc.returncode == 0, proc.stderr
    # resumed after position 99, not from 0; rows 100-119 were already committed
    assert "users 200 read/180 written" in proc.stdout
    with warehouse.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(learners)).scalar() == 300
        killed = conn.execute(select(sync_runs.c.result, sync_runs.c.error)
                              .order_by(sync_runs.c.id)).first()
        assert killed.result == "failed" and killed.error.startswith("abandoned: it ended without")
        assert conn.execute(select(func.count(func.distinct(learners.c.external_id)))).scalar() == 300


def test_a_vendor_error_that_echoes_the_secret_is_printed_and_stored_without_it(tmp_path, warehouse):
    """A vendor's error body can quote the key it refused: sync's and check's output, the
    run row (sync_runs.error), status in both formats and the logs show *** instead."""
    cfg = write_config(tmp_path, warehouse, bad={"users": 10, "fail_stream": "users",
                                                 "fail_message": f"Invalid API key {SECRET}"})
    env = {"SYN_SECRET": SECRET}
    sync = run_cli("sync", "--config", cfg, env=env)
    assert sync.returncode == 1
    assert "bad: failed" in sync.stdout and "Invalid API key ***" in sync.stdout
    check = run_cli("check", "--config", cfg, env=env)
    assert check.returncode == 1 and "bad: FAILED — RuntimeError: Invalid API key ***" in check.stdout
    status = run_cli("status", "--config", cfg, env=env)
    status_json = run_cli("status", "--config", cfg, "--format", "json", env=env)
    assert "Invalid API key ***" in status.stdout and "Invalid API key ***" in status_json.stdout
    with warehouse.engine.connect() as conn:
        errors = conn.execute(select(sync_runs.c.error).where(sync_runs.c.stream == "users")).scalars().all()
    assert errors == ["Invalid API key ***"]
    for proc in (sync, check, status, status_json):
        assert SECRET not in proc.stdout + proc.stderr


def test_status_before_any_migration_and_an_unknown_revision_are_one_line(tmp_path):
    db = tmp_path / "fresh.db"
    path = tmp_path / "c.yaml"
    path.write_text(f"warehouse: {{url: 'sqlite:///{db}'}}\n")
    for args in (["status"], ["report", "--no-migrate"], ["sync", "--no-migrate"]):
        proc = run_cli(*args, "--config", str(path))
        assert proc.returncode == 2, (args, proc.stderr)
        assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
        assert "no lms-sync tables yet" in proc.stderr and "lms-sync db upgrade" in proc.stderr
    assert run_cli("db", "upgrade", "--config", str(path)).returncode == 0
    import sqlite3

    with sqlite3.connect(db) as conn:  # as if a newer lms-sync had migrated it
        conn.execute("UPDATE alembic_version SET version_num = 'f00dfeedbeef'")
    for args in (["sync"], ["db", "upgrade"]):
        proc = run_cli(*args, "--config", str(path))
        assert proc.returncode == 2, (args, proc.stderr)
        plain = [line for line in proc.stderr.splitlines() if not line.startswith("{")]  # not logs
        assert len(plain) == 1 and "Traceback" not in proc.stderr
        assert plain[0].startswith("lms-sync: error: the warehouse is at a schema revision this "
                                   "lms-sync does not know")


def test_every_command_takes_config():
    """docs/contracts.md, "Command line": every command takes --config PATH (demo and
    sandbox accept it too)."""
    import argparse

    from lms_sync.cli import _load_extra_commands, _parser

    _load_extra_commands()

    def commands(parser: argparse.ArgumentParser, prefix: str = "") -> dict[str, argparse.ArgumentParser]:
        out = {}
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    inner = commands(sub, f"{prefix}{name} ")
                    out.update(inner or {f"{prefix}{name}": sub})
        return out

    found = commands(_parser())
    assert {"sync", "daemon", "status", "db upgrade", "check", "demo", "sandbox"} <= set(found)
    for name, sub in found.items():
        assert any("--config" in a.option_strings for a in sub._actions), name
