"""The ticker's due sources (the daemon's cron semantics), the `cluster:` config block, and
the pool's commands' one-line errors (run in this process: `lms_sync.cli.main`)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from lms_sync.cli import main
from lms_sync.cluster.queue import SYNC_TASK
from lms_sync.cluster.ticker import due_sources
from lms_sync.config import parse_config
from lms_sync.errors import ConfigError
from lms_sync.logs import configure
from tests.cluster.conftest import ROOT, Worker, jobs, no_overlap, runs, wait_until, write_tenant
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


def test_provisioning_falls_due_on_its_own_cron_in_the_source_s_time_zone_as_in_the_daemon():
    from lms_sync.cluster.ticker import due_provisions

    hr = {"kind": "synthetic", "base_url": "http://127.0.0.1:9", "schedule": "* * * * *"}
    sparkwise = {"kind": "sessions", "base_url": "http://127.0.0.1:9", "auth": {"api_key": "k"},
                 "schedule": "*/5 * * * *", "timezone": "Europe/Helsinki"}
    cfg = parse_config({"sources": {
        "hr": hr,
        "sw": {**sparkwise, "provision": {"from_sources": ["hr"], "schedule": "0 9 * * 1"}},
        "unscheduled": {**sparkwise, "provision": {"from_sources": ["hr"]}},
        "off": {**sparkwise, "provision": {"from_sources": ["hr"], "schedule": "* * * * *",
                                           "enabled": False}},
        "disabled": {**sparkwise, "enabled": False,
                     "provision": {"from_sources": ["hr"], "schedule": "* * * * *"}}}})

    def provisions(end: str) -> list[str]:
        stop = datetime.fromisoformat(end).replace(tzinfo=UTC)
        return sorted(s.id for s in due_provisions(cfg, stop - timedelta(minutes=1), stop))

    assert provisions("2026-03-02T07:00:00") == ["sw"]  # 09:00 Monday in Helsinki
    assert provisions("2026-03-02T09:00:00") == []
    assert provisions("2026-03-03T07:00:00") == []      # a Tuesday
    assert "sw" not in due(cfg, "2026-03-02T07:01:00")   # its sync keeps its own cron


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


def test_a_full_refresh_or_a_backfill_waits_beside_a_queued_plain_run_never_in_it(
        tmp_path, capsys, schemas, queue, sandbox, daemons):
    folder, schema = tmp_path / "tenants", schemas.new("w")
    path = write_tenant(folder, "acme", schema, sandbox(8, seed=4, kinds=["absorb"]))
    q = ["--config", str(path), "--queue-url", POSTGRES_URL, "--queue-schema", queue.schema]
    assert main(["enqueue", *q]) == 0
    assert main(["enqueue", *q]) == 0  # the ticker's, say: the same plain run
    assert main(["enqueue", *q, "--full-refresh"]) == 0
    assert main(["enqueue", *q, "--full-refresh"]) == 0
    assert main(["enqueue", *q, "--since", "2026-01-01T00:00:00Z"]) == 0
    out = [re.sub(r"job \d+", "job N", line) for line in capsys.readouterr().out.splitlines()]
    assert out == ["acme/absorb-sandbox: queued (job N)",
                   "acme/absorb-sandbox: a run is already queued; it serves this request",
                   "acme/absorb-sandbox: queued a full refresh (job N)",
                   "acme/absorb-sandbox: a full refresh is already queued; it serves this request",
                   "acme/absorb-sandbox: queued a run since 2026-01-01T00:00:00+00:00 (job N)"]
    waiting = [(j["args"]["full_refresh"], j["args"]["since"], j["lock"], j["queueing_lock"])
               for j in jobs(queue, "lock", "queueing_lock")]
    assert waiting == [
        (False, None, "acme:absorb-sandbox", "acme:absorb-sandbox"),
        (True, None, "acme:absorb-sandbox", "acme:absorb-sandbox#full-refresh"),
        (False, "2026-01-01T00:00:00+00:00", "acme:absorb-sandbox",
         "acme:absorb-sandbox#since=2026-01-01T00:00:00+00:00")]
    from tests.cluster.test_pool import status_rows

    assert status_rows(queue, folder)["absorb-sandbox"]["queued"] == (
        "yes; yes (full refresh); yes (since 2026-01-01T00:00:00+00:00)")

    # a worker runs all three, one after another (one lock), each as asked
    w = Worker(folder, queue, tmp_path / "w.log", "--concurrency", "3")
    daemons.append(w)
    wait_until(lambda: all(j["status"] == "succeeded" for j in jobs(queue) if j["task_name"] == SYNC_TASK),
               "the three runs", 60, [w])
    started = [(e["full_refresh"], e["since"]) for e in w.all("sync.started", stream="users")]
    assert sorted(started, key=str) == sorted(
        [(False, None), (True, None), (False, "2026-01-01T00:00:00+00:00")], key=str)
    rows = runs(schema)
    assert len({r["run_id"] for r in rows}) == 3 and {r["result"] for r in rows} == {"succeeded"}
    no_overlap(rows)
    assert w.stop() == 0


def _queue_conn(schema: str):  # type: ignore[no-untyped-def]
    import psycopg

    from lms_sync.cluster.queue import QueueTarget

    target = QueueTarget(POSTGRES_URL, schema, "test")
    return psycopg.connect(target.conninfo, options=target.options, autocommit=True)


def test_cluster_init_applies_the_procrastinate_migrations_an_older_queue_lacks(capsys, schemas, tmp_path):
    from lms_sync.cluster.queue import QueueTarget, build_app, defer_sync, sync_args
    from lms_sync.cluster.schema import fingerprint, procrastinate_version

    old, fresh = schemas.new("q"), schemas.new("q")
    init = ["cluster", "init", "--queue-url", POSTGRES_URL, "--queue-schema"]
    assert main([*init, fresh]) == 0
    version = procrastinate_version()
    assert capsys.readouterr().out == (
        f"job queue created: 127.0.0.1:5432/test schema {fresh} (procrastinate {version})\n")
    # a queue made by procrastinate 2.15 (its own schema.sql), with a job waiting in it
    with _queue_conn(old) as conn:
        conn.execute(f'CREATE SCHEMA "{old}"')
        conn.execute(Path(ROOT / "tests/fixtures/procrastinate/schema-2.15.0.sql").read_text())
        conn.execute("SELECT procrastinate_defer_job('lms_sync.sync', 'lms_sync.sync_source', 0, "
                     "'acme:s', 'acme:s', '{\"tenant\": \"acme\", \"source\": \"s\"}', NULL)")
    # today's procrastinate cannot use it yet: the commands say so
    tenant = write_tenant(tmp_path, "acme", "unused", {"s": {"kind": "synthetic", "base_url": "http://127.0.0.1:9"}})
    assert main(["enqueue", "--config", str(tenant), "--queue-url", POSTGRES_URL, "--queue-schema", old]) == 2
    assert capsys.readouterr().err.strip() == (
        f"lms-sync: error: the job queue at 127.0.0.1:5432/test schema {old} lacks procrastinate "
        f"{procrastinate_version()}'s procrastinate_cancel_job_v1, procrastinate_defer_jobs_v1, "
        "procrastinate_defer_periodic_job_v2 and more, --queue-url; stop the workers and run "
        "`lms-sync cluster init`: it applies the migrations it lacks")
    assert main([*init, old]) == 0
    assert main([*init, old]) == 0  # idempotent
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"job queue migrated: 127.0.0.1:5432/test schema {old} (9 migrations of "
                             f"procrastinate {version} applied: 03.00.00_01_pre_cancel_notification, ")
    assert out[0].endswith(", 03.04.00_50_post_add_retry_failed_job_procedure)")
    assert out[1] == f"job queue already there: 127.0.0.1:5432/test schema {old} " \
                     f"(up to date with procrastinate {version})"
    with _queue_conn(old) as conn, _queue_conn(fresh) as new:
        assert fingerprint(conn) == fingerprint(new)  # what procrastinate's schema.sql makes
        assert conn.execute("SELECT status::text, lock FROM procrastinate_jobs").fetchall() == [
            ("todo", "acme:s")]
        assert conn.execute("SELECT count(*) FROM pg_namespace WHERE nspname LIKE "
                            "'lms\\_sync\\_scratch\\_%'").fetchone() == (0,)  # scratch dropped
    app = build_app(QueueTarget(POSTGRES_URL, old, "test")).open()
    try:
        assert defer_sync(app, sync_args("acme", "t")) is not None  # today's procrastinate uses it
    finally:
        app.close()

    # a schema no procrastinate makes: nothing is done, one line says what to do
    with _queue_conn(old) as conn:
        conn.execute("ALTER TABLE procrastinate_jobs ADD COLUMN extra text")
    assert main([*init, old]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"lms-sync: error: the job queue at 127.0.0.1:5432/test schema {old} has "
                          "procrastinate tables that neither procrastinate ") and "\n" not in err
    assert "upgrade lms-sync here, else apply the missing scripts of " in err
    with _queue_conn(old) as conn:
        assert conn.execute("SELECT count(extra) FROM procrastinate_jobs").fetchone() == (0,)
