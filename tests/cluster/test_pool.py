"""`lms-sync worker` processes over many tenants: ticks, locks, dead workers, signals.

Every test has its own procrastinate queue (a schema), its own warehouse schemas and
its own sandbox vendors; the workers are real processes on the real PostgreSQL.
"""

from __future__ import annotations

import asyncio
import signal
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select

from lms_sync.cluster.queue import SYNC_TASK, QueueTarget, build_app
from lms_sync.cluster.tenants import Tenants
from lms_sync.cluster.ticker import defer_tick
from lms_sync.config import load_config
from lms_sync.pipeline import run_sources
from lms_sync.warehouse.db import make_engine, upgrade
from tests.cluster.conftest import (
    Worker,
    contents,
    enqueue,
    faults,
    jobs,
    lms_sync,
    lms_sync_at_once,
    no_overlap,
    queue_args,
    runs,
    stop_all,
    wait_until,
    write_tenant,
)
from tests.conftest import POSTGRES_URL

KINDS = ["absorb", "academy", "ispring", "sessions", "udemy"]


def reference_sync(path: Path, schema: str) -> dict[str, Any]:
    """The same tenant synced by one process (`run_sources`, as `lms-sync sync`) into `schema`."""
    cfg = load_config(path)
    cfg.warehouse.schema_ = schema
    engine = make_engine(POSTGRES_URL, schema)
    upgrade(engine)
    results = run_sources(engine, cfg, list(cfg.sources.values()))
    engine.dispose()
    assert all(r.ok for r in results), [(r.source_id, r.error) for r in results]
    return contents(schema)


def settled(target: QueueTarget, tenant_schemas: dict[str, str], per_tenant: int) -> bool:
    """Every source of every tenant has run, and the queue has nothing left to do."""
    if any(j["status"] in {"todo", "doing"} for j in jobs(target)):
        return False
    for schema in tenant_schemas.values():
        rows = runs(schema)
        if len({r["source_id"] for r in rows}) < per_tenant or any(r["result"] == "running" for r in rows):
            return False
    return True


def test_three_workers_run_each_due_source_once_per_tick_into_each_tenants_own_warehouse(
        tmp_path, schemas, queue, sandbox, daemons):
    folder = tmp_path / "tenants"
    tenant_schemas = {f"tenant{i}": schemas.new(f"w{i}") for i in range(4)}
    vendors = [sandbox(10, seed=1), sandbox(14, seed=2)]  # tenants 0 and 2 share one sandbox, 1 and 3
    paths = {name: write_tenant(folder, name, schema, vendors[i % 2], schedule="* * * * *")
             for i, (name, schema) in enumerate(tenant_schemas.items())}
    # the warehouses are new: the workers migrate them, one at a time
    workers = [Worker(folder, queue, tmp_path / f"w{i}.log", "--concurrency", "3") for i in range(3)]
    daemons.extend(workers)
    wait_until(lambda: settled(queue, tenant_schemas, len(KINDS)), "every source run", 120, workers)
    assert stop_all(workers) == [0, 0, 0]  # before the next minute's tick, if it has not come
    # the truth: each sandbox synced by one process
    truth = [reference_sync(paths[f"tenant{i}"], schemas.new("ref")) for i in range(2)]

    # one tick per minute, across three tickers; each due source queued once per tick
    ticks = [e["due"] for w in workers for e in w.all("tick.done")]
    assert ticks and len(ticks) == len(set(ticks)), ticks
    sync_jobs = [j for j in jobs(queue) if j["task_name"] == SYNC_TASK]
    per_tick = {due: sorted((j["args"]["tenant"], j["args"]["source"]) for j in sync_jobs
                            if j["args"]["due"] == due) for due in ticks}
    everything = sorted((t, f"{k}-sandbox") for t in tenant_schemas for k in KINDS)
    assert per_tick[min(ticks)] == everything  # the first tick: nothing was queued before it
    for due, queued in per_tick.items():
        assert len(queued) == len(set(queued)), due
    assert all(j["status"] == "succeeded" for j in sync_jobs)
    # the work was shared
    assert len({w.proc.pid for w in workers if w.all("job.started")}) >= 2

    for i, (name, schema) in enumerate(tenant_schemas.items()):
        rows = runs(schema)
        assert {r["result"] for r in rows} == {"succeeded"}
        assert len({r["run_id"] for r in rows}) == sum(
            1 for j in sync_jobs if j["args"]["tenant"] == name)  # one run per job
        no_overlap(rows)
        got = contents(schema)
        assert got["persons"][1] == 0  # every learner matched by the tenant's identity pass
        assert got == truth[i % 2], name
    for w in workers:
        assert not [e for e in w.events() if e["event"] == "<not json>"]
        assert w.event("worker.stopped")["clean"] is True


def slow_academy(sandbox, learners: int, latency_ms: float) -> tuple[dict[str, Any], str]:
    """Monotree's sweep: two requests per user, two at a time, each `latency_ms` late (the
    test mends it with faults(url, latency_ms=0)); a cursor committed every 20 records.
    Returns the sources block and the fake's URL."""
    sources = sandbox(learners, seed=5, kinds=["academy"], latency_ms=latency_ms)
    sources["academy-sandbox"]["http"]["max_concurrency"] = 2
    return sources, sources["academy-sandbox"]["base_url"]


def sweep_cursor(schema: str) -> dict[str, Any] | None:
    from lms_sync.warehouse import state

    engine = make_engine(POSTGRES_URL, schema)
    try:
        with engine.connect() as conn:
            return state.load_cursor(conn, "academy-sandbox", "progress")
    except Exception:  # noqa: BLE001 - no tables yet
        return None
    finally:
        engine.dispose()


def running_on(target: QueueTarget, pool: list[Worker]) -> Worker | None:
    doing = [j for j in jobs(target) if j["status"] == "doing" and j["task_name"] == SYNC_TASK]
    for w in pool:
        if doing and doing[0]["worker_id"] in w.worker_ids():
            return w
    return None


def test_a_killed_worker_s_run_is_retried_by_another_and_sigterm_requeues_a_run(
        tmp_path, schemas, queue, sandbox, daemons):
    folder, schema = tmp_path / "tenants", schemas.new("w")
    sources, url = slow_academy(sandbox, 200, latency_ms=20)
    path = write_tenant(folder, "acme", schema, sources)
    pool = [Worker(folder, queue, tmp_path / f"w{i}.log", "--concurrency", "1") for i in range(3)]
    daemons.extend(pool)
    for w in pool:
        w.worker_ids()
    assert enqueue(queue, path) != [None]

    # kill -9 the worker in the middle of the sweep, once a batch has been committed
    wait_until(lambda: (sweep_cursor(schema) or {}).get("after_id"), "a committed batch", 60, pool)
    victim = wait_until(lambda: running_on(queue, pool), "the running worker", 10, pool)
    victim.kill9()
    alive = [w for w in pool if w is not victim]
    stalled = wait_until(lambda: [e for w in alive for e in w.all("job.stalled")], "job.stalled", 30, alive)
    assert [(e["action"], e["tenant"]) for e in stalled] == [("requeued", "acme")]
    assert stalled[0]["dead_worker_id"] in victim.worker_ids()
    # another worker resumes from the committed cursor: no new sweep
    retrier = wait_until(lambda: running_on(queue, alive), "the retry", 30, alive)
    resumed = retrier.wait_for(lambda: retrier.event("sync.started", stream="progress"), "the retry", 30)
    assert resumed["cursor"]["after_id"] is not None
    assert not retrier.all("sweep.started")

    # SIGTERM: the run commits its batch, stops, and its job is queued again for the last one
    retrier.wait_for(lambda: retrier.all("batch.written", stream="progress"), "a batch", 30)
    assert retrier.stop() == 0
    assert retrier.event("job.interrupted")["requeued"] is True
    assert retrier.event("worker.stopped")["clean"] is True
    faults(url, latency_ms=0)
    last = next(w for w in alive if w is not retrier)
    wait_until(lambda: any(r["result"] == "succeeded" and r["stream"] == "progress" for r in runs(schema)),
               "the run to finish", 60, [last])
    assert last.event("sync.started", stream="progress")["cursor"]["after_id"] is not None
    assert last.stop() == 0

    rows = runs(schema)
    progress = [(r["result"], r["error"]) for r in rows if r["stream"] == "progress"]
    assert progress[0][0] == "failed" and "abandoned" in progress[0][1]
    assert progress[1:] == [("failed", "interrupted"), ("succeeded", None)]
    no_overlap(rows)
    # nothing lost, nothing twice: the same rows (and history) as one uninterrupted sync
    assert contents(schema) == reference_sync(path, schemas.new("ref"))


def status_rows(target: QueueTarget, folder: Path) -> dict[str, dict[str, Any]]:
    """`lms-sync cluster status --configs FOLDER`'s rows (in this process), by source."""
    from lms_sync.cluster.status import collect

    tenants = Tenants([folder], [], target, migrate=False)
    tenants.refresh()
    app = build_app(target).open()
    try:
        return {row["source"]: row for row in collect(app, tenants)}
    finally:
        app.close()
        tenants.close()


def tick(target: QueueTarget, timestamp: int, tickers: int = 2) -> list[int | None]:
    """What procrastinate's periodic deferrer does on `tickers` workers at once when the
    clock reaches `timestamp` (the real ones do it once a minute)."""

    async def go() -> list[int | None]:
        async with build_app(target).open_async() as app:
            return await asyncio.gather(*(defer_tick(app, timestamp) for _ in range(tickers)))

    return asyncio.run(go())


def test_two_tickers_queue_a_source_once_and_a_running_source_once_more_after_its_run(
        tmp_path, schemas, queue, sandbox, daemons):
    folder, schema = tmp_path / "tenants", schemas.new("w")
    academy, url = slow_academy(sandbox, 200, latency_ms=150)  # running until the test mends it
    write_tenant(folder, "acme", schema, {**academy, **sandbox(8, seed=6, kinds=["absorb"])},
                 schedule="* * * * *")
    pool = [Worker(folder, queue, tmp_path / f"w{i}.log", "--concurrency", "2") for i in range(2)]
    daemons.extend(pool)

    # both tickers start: the minute that just passed is ticked once
    first = wait_until(lambda: [e for w in pool for e in w.all("tick.done")], "the first tick", 30, pool)
    t0 = int(datetime.fromisoformat(first[0]["due"]).timestamp())
    wait_until(lambda: [e for w in pool for e in w.all("sweep.started")], "the sweep under way", 60, pool)

    # more ticks come while the sweep still runs, each from two tickers at once. They are for
    # minutes already past: procrastinate's tickers only go forward, so no real one repeats them
    assert sorted(tick(queue, t0 - 60), key=bool)[0] is None  # one of the two was refused
    wait_until(lambda: sum(len(w.all("tick.done")) for w in pool) >= 2, "the second tick", 20, pool)
    tick(queue, t0 - 120)
    wait_until(lambda: sum(len(w.all("tick.done")) for w in pool) >= 3, "the third tick", 20, pool)
    academy_row = status_rows(queue, folder)["academy-sandbox"]  # what `cluster status` shows
    assert (academy_row["queued"], academy_row["running"].split()[0]) == ("yes", "worker")
    faults(url, latency_ms=0)
    wait_until(lambda: not [j for j in jobs(queue) if j["status"] in {"todo", "doing"}],
               "every run", 90, pool)

    ticks = [e["due"] for w in pool for e in w.all("tick.done")]
    manual = [datetime.fromtimestamp(t0 - s, UTC).isoformat() for s in (0, 60, 120)]
    assert set(manual) <= set(ticks) and len(ticks) == len(set(ticks))  # (a real one may come too)
    # the third tick found a second run still waiting (queued by the second tick, or by a real
    # one when the minute turned between the first two): it coalesced, never a third job
    coalesced = {e["due"] for w in pool for e in w.all("sync.coalesced", source="academy-sandbox")}
    assert manual[2] in coalesced and coalesced <= set(ticks), (coalesced, ticks)
    academy_jobs = [j for j in jobs(queue) if j["args"].get("source") == "academy-sandbox"]
    queued = [(j["args"]["due"], j["status"]) for j in academy_jobs]
    assert queued[0] == (manual[0], "succeeded") and queued[1][1] == "succeeded", queued
    assert queued[1][0] == manual[1] or manual[1] in coalesced, queued  # the second tick's run
    rows = [r for r in runs(schema) if r["source_id"] == "academy-sandbox"]
    assert len({r["run_id"] for r in rows}) == len(academy_jobs)
    no_overlap(rows)  # the second ran after the first
    assert stop_all(pool) == [0, 0]


def test_a_tenant_with_a_missing_variable_is_skipped_in_one_line_and_the_others_run(
        tmp_path, schemas, queue, sandbox, daemons):
    folder = tmp_path / "tenants"
    vendor = sandbox(8, seed=2, kinds=["absorb"])
    good_schema, late_schema = schemas.new("w"), schemas.new("w")
    good = write_tenant(folder, "good", good_schema, vendor)
    broken = {"absorb-sandbox": {**vendor["absorb-sandbox"],
                                 "auth": {**vendor["absorb-sandbox"]["auth"],
                                          "password": "${LMS_SYNC_TEST_NOT_SET}"}}}
    bad = write_tenant(folder, "bad", schemas.new("w"), broken)
    w = Worker(folder, queue, tmp_path / "w.log", "--health-port", "0", "--health-host", "127.0.0.1")
    daemons.append(w)
    queued, refused = lms_sync_at_once(["enqueue", "--config", str(good), *queue_args(queue)],
                                       ["enqueue", "--config", str(bad), *queue_args(queue)])
    started = w.wait_for(lambda: w.event("worker.started"), "worker.started")
    assert started["tenants"] == ["good"] and started["skipped"] == [str(bad)]
    skipped = w.all("tenant.skipped")
    assert [(e["tenant"], e["error"]) for e in skipped] == [(
        "bad", f"environment variable LMS_SYNC_TEST_NOT_SET is not set, {bad}: "
               "sources.absorb-sandbox.auth.password; export LMS_SYNC_TEST_NOT_SET=... "
               "(or write ${LMS_SYNC_TEST_NOT_SET:-default})")]

    assert queued.returncode == 0 and queued.stdout.startswith("good/absorb-sandbox: queued (job ")
    assert refused.returncode == 2 and refused.stderr.strip() == f"lms-sync: error: {skipped[0]['error']}"
    # a tenant added while the worker runs is served without a restart
    late = write_tenant(folder, "late", late_schema, vendor)
    w.wait_for(lambda: w.event("tenant.loaded", tenant="late"), "the new tenant")
    enqueue(queue, late)

    port = w.event("health.listening")["port"]
    done = 'lms_sync_tenant_runs_total{result="succeeded",source="absorb-sandbox",tenant="%s"} 1.0'
    metrics = wait_until(lambda: next((m for m in [_get(port, "/metrics")] if done % "late" in m), None),
                         "the new tenant's run", 60, [w])
    assert done % "good" in metrics and 'lms_sync_tenants{state="skipped"} 1.0' in metrics
    health = _get(port, "/healthz")
    assert '"status": "ok"' in health and str(bad) in health
    status = lms_sync("cluster", "status", "--configs", str(folder), *queue_args(queue))
    table = [line.split()[:5] for line in status.stdout.splitlines()]
    assert table[1:3] == [["good", "absorb-sandbox", "-", "-", "succeeded"],
                          ["late", "absorb-sandbox", "-", "-", "succeeded"]], status.stdout
    assert status.stdout.splitlines()[-1] == f"  ! skipped {bad} (see the error above)"
    assert status.stderr.count("tenant.skipped") == 1 and "Traceback" not in status.stderr
    # the file mended: the tenant is served; a file removed: its tenant is dropped
    write_tenant(folder, "bad", schemas.new("w"), vendor)
    late.unlink()
    w.wait_for(lambda: w.event("tenant.loaded", tenant="bad") and w.event("tenant.removed", tenant="late"),
               "the mended and the removed tenant")
    assert w.stop() == 0
    assert "Traceback" not in w.log_path.read_text()


def _get(port: int, path: str) -> str:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as resp:  # noqa: S310
        return resp.read().decode()


def test_a_failed_run_is_retried_with_backoff_and_rejected_credentials_are_not(
        tmp_path, schemas, queue, sandbox, daemons):
    folder = tmp_path / "tenants"
    flaky = sandbox(8, seed=3, kinds=["absorb"])
    url = flaky["absorb-sandbox"]["base_url"]
    faults(url, fail_next=10_000, fail_status=503)
    flaky["absorb-sandbox"]["http"] = {"max_attempts": 1, "max_wait_seconds": 0}
    flaky_path = write_tenant(folder, "flaky", schemas.new("w"), flaky, retries=2, retry_wait_seconds=3)
    wrong = sandbox(8, seed=3, kinds=["ispring"])
    wrong["ispring-sandbox"]["auth"]["client_secret"] = "not-the-secret"
    wrong_path = write_tenant(folder, "wrong", schemas.new("w"), wrong)
    w = Worker(folder, queue, tmp_path / "w.log")
    daemons.append(w)
    w.worker_ids()
    for path in (flaky_path, wrong_path):
        enqueue(queue, path)
    retried = w.wait_for(lambda: w.event("job.retried", tenant="flaky"), "a retry", 60)
    assert (retried["attempt"], retried["next_attempt"], retried["wait_seconds"]) == (1, 2, 3.0)
    faults(url, fail_next=0)  # the vendor is back
    wait_until(lambda: not [j for j in jobs(queue) if j["status"] in {"todo", "doing"}],
               "the retried run", 60, [w])
    rejected = w.wait_for(lambda: w.event("job.failed", tenant="wrong"), "the rejected run", 60)
    assert rejected["retry"] is False and "credentials" in rejected["reason"]
    assert not w.event("job.retried", tenant="wrong")
    statuses = [(j["args"]["tenant"], j["args"]["attempt"], j["status"]) for j in jobs(queue)
                if j["task_name"] == SYNC_TASK]
    assert sorted(statuses) == [("flaky", 1, "failed"), ("flaky", 2, "succeeded"), ("wrong", 1, "failed")]
    assert w.stop() == 0
    assert "not-the-secret" not in w.log_path.read_text()


def test_a_run_that_does_not_stop_in_time_is_marked_interrupted_and_queued_again(
        tmp_path, schemas, queue, daemons, monkeypatch):
    from lms_sync.connectors import KINDS
    from tests.test_daemon import BOOT

    monkeypatch.setitem(KINDS, "slow", "tests.test_daemon:SlowConnector")  # the vendor never answers
    folder, schema = tmp_path / "tenants", schemas.new("w")
    path = write_tenant(folder, "acme", schema, {"stuck": {"kind": "slow", "base_url": "http://127.0.0.1:9",
                                                           "options": {"hang": True}}})
    w = Worker(folder, queue, tmp_path / "w.log", "--shutdown-timeout", "0.5", boot=BOOT)
    daemons.append(w)
    [job_id] = enqueue(queue, path)
    wait_until(lambda: [r for r in runs(schema) if r["result"] == "running"], "the run in flight", 60, [w])
    assert w.stop() == 0
    stopped = w.event("worker.stopped")
    assert stopped["clean"] is False and stopped["abandoned"] == [job_id]
    assert [(r["stream"], r["result"], r["error"]) for r in runs(schema)] == [
        ("users", "failed", "interrupted")]
    assert [(j["id"] == job_id, j["status"], j["args"]["source"]) for j in jobs(queue)
            if j["task_name"] == SYNC_TASK] == [(True, "aborted", "stuck"), (False, "todo", "stuck")]


def test_a_signal_during_startup_or_idle_exits_cleanly(tmp_path, queue, daemons):
    folder = tmp_path / "tenants"
    folder.mkdir()
    w = Worker(folder, queue, tmp_path / "w.log")
    daemons.append(w)
    w.worker_ids()
    w.proc.send_signal(signal.SIGINT)
    assert w.proc.wait(30) == 0


def test_a_scheduled_provisioning_run_is_queued_by_the_tick_and_waits_for_the_source_s_sync(
        tmp_path, schemas, queue, sandbox, daemons):
    from lms_sync.cluster.queue import PROVISION_TASK
    from lms_sync.warehouse.tables import provision_actions

    folder, schema = tmp_path / "tenants", schemas.new("w")
    sources = sandbox(20, seed=8, kinds=["absorb", "sessions"])
    url = sources["sessions-sandbox"]["base_url"]
    # Sparkwise's users follow Absorb's people, at 02:30 on 1 March (UTC: the default zone)
    sources["sessions-sandbox"]["provision"] = {"from_sources": ["absorb-sandbox"],
                                                "schedule": "30 2 1 3 *", "max_deactivate_fraction": 1.0}
    path = write_tenant(folder, "acme", schema, sources)
    pool = [Worker(folder, queue, tmp_path / f"w{i}.log", "--concurrency", "2") for i in range(2)]
    daemons.extend(pool)
    for w in pool:
        w.worker_ids()
    faults(url, latency_ms=400)  # Sparkwise's sync is still running when its provisioning falls due
    enqueue(queue, path)
    wait_until(lambda: any(r["source_id"] == "absorb-sandbox" and r["result"] == "succeeded"
                           for r in runs(schema)) and
               any(r["source_id"] == "sessions-sandbox" and r["result"] == "running" for r in runs(schema)),
               "Absorb synced and Sparkwise's sync running", 60, pool)
    due = int(datetime(2026, 3, 1, 2, 30, tzinfo=UTC).timestamp())
    assert sorted(tick(queue, due), key=bool)[0] is None  # two tickers: one tick
    [prov] = wait_until(lambda: [j for j in jobs(queue) if j["task_name"] == PROVISION_TASK],
                        "the provisioning job", 20, pool)
    assert prov["args"] == {"tenant": "acme", "source": "sessions-sandbox",
                            "due": "2026-03-01T02:30:00+00:00"}
    # three slots are free, but the source's lock holds it until the sync ends
    time.sleep(2)
    states = {j["task_name"]: j["status"] for j in jobs(queue)
              if j["args"].get("source") == "sessions-sandbox"}
    assert states == {SYNC_TASK: "doing", PROVISION_TASK: "todo"}, states
    faults(url, latency_ms=0)
    wait_until(lambda: not [j for j in jobs(queue) if j["status"] in {"todo", "doing"}],
               "every job", 60, pool)

    assert [j["status"] for j in jobs(queue) if j["task_name"] == PROVISION_TASK] == ["succeeded"]
    ticked = [e for w in pool for e in w.all("tick.done") if e["due"] == "2026-03-01T02:30:00+00:00"]
    assert [(e["queued"], e["provisions"]) for e in ticked] == [(0, 1)]
    rows = [r for r in runs(schema) if r["source_id"] == "sessions-sandbox"]
    assert [r["result"] for r in rows if r["stream"] == "provision"] == ["succeeded"]
    no_overlap(rows)  # the provisioning run started after the sync's last stream ended
    engine = make_engine(POSTGRES_URL, schema)
    with engine.connect() as conn:
        sent = conn.execute(select(provision_actions.c.action, provision_actions.c.result)).all()
    engine.dispose()
    written = next(r["records_written"] for r in rows if r["stream"] == "provision")
    assert written == len(sent) > 0 and {r for _a, r in sent} == {"succeeded"}
    assert stop_all(pool) == [0, 0]
