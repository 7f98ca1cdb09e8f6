"""The ticker's due sources (the daemon's cron semantics), the `cluster:` config block, and
the pool's commands' one-line errors (run in this process: `lms_sync.cli.main`)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from lms_sync.cli import main
from lms_sync.cluster.ticker import due_sources
from lms_sync.config import parse_config
from lms_sync.errors import ConfigError
from lms_sync.logs import configure
from tests.cluster.conftest import write_tenant
from tests.conftest import POSTGRES_URL


@pytest.fixture(autouse=True)
def _logging_as_the_suite_has_it():
    """`main()` configures logging from the command's config (INFO): put the suite's back."""
    yield
    configure("json", "WARNING")


def config(**schedules: str | tuple[str, str]):  # type: ignore[no-untyped-def]
    sources = {}
    for sid, spec in schedules.items():
        expr, tz = spec if isinstance(spec, tuple) else (spec, None)
        sources[sid] = {"kind": "synthetic", "base_url": "http://127.0.0.1:9", "schedule": expr,
                        **({"timezone": tz} if tz else {})}
    return parse_config({"sources": sources})


def due(cfg, end: str) -> list[str]:  # type: ignore[no-untyped-def]
    """The sources the tick for the minute ending at `end` (UTC) queues."""
    stop = datetime.fromisoformat(end).replace(tzinfo=UTC)
    return sorted(s.id for s in due_sources(cfg, stop - timedelta(minutes=1), stop))


def test_a_tick_queues_the_sources_whose_cron_fell_due_in_its_minute():
    cfg = config(every="* * * * *", half_hour="*/30 * * * *", sunday="0 3 * * 0",
                 sunday7="0 3 * * 7", helsinki=("0 9 * * 1", "Europe/Helsinki"),
                 either_day="0 6 1 * 1")
    assert due(cfg, "2026-03-02T06:30:00") == ["every", "half_hour"]  # a Monday
    assert due(cfg, "2026-03-02T06:31:00") == ["every"]
    assert due(cfg, "2026-03-02T06:30:30") == ["every", "half_hour"]  # a late tick: its minute
    # crontab weekday numbers: 0 and 7 are Sunday (APScheduler alone would say Monday)
    assert due(cfg, "2026-03-08T03:00:00") == ["every", "half_hour", "sunday", "sunday7"]
    assert due(cfg, "2026-03-09T03:00:00") == ["every", "half_hour"]
    # the source's time zone: 09:00 in Helsinki is 07:00 UTC in March
    assert due(cfg, "2026-03-02T07:00:00") == ["every", "half_hour", "helsinki"]
    # day of month and day of week both given: either one, as in crontab
    assert "either_day" in due(cfg, "2026-03-09T06:00:00")  # a Monday
    assert "either_day" in due(cfg, "2026-04-01T06:00:00")  # a Wednesday, the 1st
    assert "either_day" not in due(cfg, "2026-04-02T06:00:00")


def test_a_disabled_source_is_never_due():
    cfg = parse_config({"sources": {"off": {"kind": "synthetic", "base_url": "http://127.0.0.1:9",
                                            "schedule": "* * * * *", "enabled": False}}})
    assert due(cfg, "2026-03-02T06:30:00") == []


def test_the_cluster_block_defaults_to_the_environment_and_is_validated(monkeypatch):
    monkeypatch.setenv("LMS_SYNC_QUEUE_URL", "postgresql://q:s3cret-pw@db/queue")
    cfg = parse_config({})
    assert (cfg.cluster.queue_url, cfg.cluster.queue_schema) == ("postgresql://q:s3cret-pw@db/queue",
                                                                  "lms_sync_queue")
    assert (cfg.cluster.retries, cfg.cluster.retry_wait_seconds) == (5, 60.0)
    assert "s3cret-pw" in cfg.secret_values()  # scrubbed from every log line
    assert "s3cret-pw" not in repr(cfg)
    with pytest.raises(ConfigError) as bad:
        parse_config({"cluster": {"queue_schema": "drop table"}}, "t.yaml")
    assert str(bad.value).startswith("String should match pattern")
    assert "t.yaml: cluster.queue_schema" in str(bad.value)


@pytest.mark.parametrize("argv, error", [
    (["worker", "--configs", "/nonexistent/tenants"],
     "tenant folder /nonexistent/tenants does not exist, --configs; "
     "give a folder of one config file per tenant"),
    (["cluster", "init", "--queue-url", "mysql+pymysql://root@127.0.0.1/test"],
     "the job queue must be a PostgreSQL database URL, --queue-url; "
     "use e.g. postgresql://user@host:5432/db"),
    (["cluster", "init", "--queue-url", "postgresql://nobody:pw@127.0.0.1:1/queue"],
     "cannot reach the job queue at 127.0.0.1:1/queue schema lms_sync_queue ("),
])
def test_pool_commands_fail_in_one_line_without_a_traceback(argv, error, capsys, monkeypatch):
    monkeypatch.delenv("LMS_SYNC_QUEUE_URL", raising=False)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"lms-sync: error: {error}") and "\n" not in err
    assert "pw@" not in err


def test_enqueue_without_a_queue_or_before_cluster_init_says_what_to_do(tmp_path, capsys, monkeypatch,
                                                                          schemas):
    monkeypatch.delenv("LMS_SYNC_QUEUE_URL", raising=False)
    path = write_tenant(tmp_path, "acme", "unused", {
        "s": {"kind": "synthetic", "base_url": "http://127.0.0.1:9"}})
    assert main(["enqueue", "--config", str(path)]) == 2
    assert capsys.readouterr().err.strip() == (
        "lms-sync: error: no job queue is configured, cluster.queue_url; set it in the config, "
        "export LMS_SYNC_QUEUE_URL or pass --queue-url")
    fresh = schemas.new("q")
    assert main(["enqueue", "--config", str(path), "--queue-url", POSTGRES_URL, "--queue-schema", fresh]) == 2
    assert capsys.readouterr().err.strip().endswith(
        f"schema {fresh} has no procrastinate tables yet, --queue-url; run `lms-sync cluster init` once")
    assert main(["cluster", "init", "--queue-url", POSTGRES_URL, "--queue-schema", fresh]) == 0
    assert main(["cluster", "init", "--queue-url", POSTGRES_URL, "--queue-schema", fresh]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in out] == ["job queue created", "job queue already there"]
    assert main(["enqueue", "--config", str(path), "--queue-url", POSTGRES_URL, "--queue-schema", fresh,
                 "--source", "s"]) == 0
    assert capsys.readouterr().out.startswith("acme/s: queued (job ")
