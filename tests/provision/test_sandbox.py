"""`lms-sync provision` runs against the Sparkwise fake over real HTTP, with Absorb as HR."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from sqlalchemy import select
from structlog.testing import capture_logs

from lms_sync.pipeline import run_source
from lms_sync.provision.run import run_provision
from lms_sync.scheduler import Scheduler
from lms_sync.status import collect_status
from lms_sync.warehouse.tables import learners, sync_runs
from tests.conftest import make_config, synthetic_source
from tests.provision.conftest import HR, SPARKWISE, make_world


def provision_rows(world) -> list[dict]:
    with world.warehouse.engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(
            select(sync_runs).where(sync_runs.c.stream == "provision").order_by(sync_runs.c.id))]


def test_empty_sparkwise_gets_every_hr_person_then_all_unchanged(warehouse):
    for world in make_world(warehouse):
        assert world.sync().ok
        people = world.hr_people()
        first = world.run()
        assert first.ok, first.error
        assert first.sent == {"create": len(people), "update": 0, "deactivate": 0}
        made = world.sparkwise_users()
        assert set(made) == set(people)
        assert all((made[h]["firstName"], made[h]["lastName"], made[h]["active"])
                   == (u["firstName"], u["lastName"], True) for h, u in people.items())
        assert all(len(u["id"]) == 64 for u in made.values())
        writes = len(world.sessions.writes())

        second = world.run()
        assert second.ok and second.plan.unchanged == len(people)
        assert (second.plan.create, second.plan.update, second.plan.deactivate) == ([], [], [])
        assert len(world.sessions.writes()) == writes  # nothing sent the second time

        assert sorted(a[1] for a in world.actions()) == sorted(people)
        assert {a[0] for a in world.actions()} == {"create"}
        rows = provision_rows(world)
        assert [(r["source_id"], r["result"], r["records_written"]) for r in rows] == [
            (SPARKWISE, "succeeded", len(people)), (SPARKWISE, "succeeded", 0)]


def test_a_person_removed_upstream_is_deactivated_at_the_next_run(world):
    world.sync()
    world.run()
    leaver = sorted(world.hr_people())[0]
    assert world.absorb.remove_users({leaver}) == 1
    assert world.sync(full_refresh=True).ok  # Absorb's user list is incremental otherwise
    result = world.run()
    assert result.ok and result.sent == {"create": 0, "update": 0, "deactivate": 1}
    users = world.sparkwise_users()
    assert users[leaver]["active"] is False
    assert sum(u["active"] for u in users.values()) == len(world.hr_people())
    assert world.actions()[-1] == ("deactivate", leaver, "succeeded", None)
    # and the next sync of Sparkwise reads the result back
    assert world.sync(SPARKWISE).ok
    with world.warehouse.engine.connect() as conn:
        active = conn.execute(select(learners.c.is_active).where(
            learners.c.source_id == SPARKWISE, learners.c.external_id == leaver)).scalar()
    assert active is False


def test_a_failed_hr_run_deactivates_no_one_until_a_good_run(world):
    world.sync()
    world.run()
    leaver = sorted(world.hr_people())[0]
    world.absorb.remove_users({leaver})
    assert world.sync(full_refresh=True).ok  # the leaver's learner is soft-deleted...
    world.absorb.faults.update({"fail_next": 100, "fail_status": 400})
    assert not world.sync().ok              # ...but HR's last run failed: unknown
    world.absorb.faults.update({"fail_next": 0})
    writes = len(world.sessions.writes())
    with capture_logs() as logs:
        held = world.run()
    assert held.ok and held.sent["deactivate"] == 0
    assert [u.remote_id for u in held.plan.held] == [leaver]
    assert world.sparkwise_users()[leaver]["active"] is True
    assert len(world.sessions.writes()) == writes
    warning = next(e for e in logs if e["event"] == "provision.deactivations_held")
    assert warning["from_source"] == HR and "failed" in warning["reason"]

    assert world.sync().ok  # HR answers again: the leaver goes now
    assert world.run().sent["deactivate"] == 1
    assert world.sparkwise_users()[leaver]["active"] is False


def test_users_sparkwise_refuses_are_logged_counted_and_retried(sqlite_warehouse):
    for world in make_world(sqlite_warehouse, untrusted=r"^E10000[0-4]$"):
        world.sync()
        refused = {h for h in world.hr_people() if h < "E100005"}
        assert refused
        with capture_logs() as logs:
            first = world.run()
        assert first.ok and first.failed == len(refused)
        assert set(world.sparkwise_users()) == set(world.hr_people()) - refused
        lines = [e for e in logs if e["event"] == "provision.user_failed"]
        assert {e["remote_id"] for e in lines} == refused
        assert {e["error"] for e in lines} == {"User is not using a trusted domain"}
        assert sorted(a[1] for a in world.actions() if a[2] == "failed") == sorted(refused)
        assert provision_rows(world)[-1]["records_skipped"] == len(refused)

        world.sessions.untrusted = ""  # the domain is trusted now: the next run retries them
        second = world.run()
        assert second.sent["create"] == len(refused) and second.failed == 0
        assert set(world.sparkwise_users()) == set(world.hr_people())


def test_batches_of_at_most_200(tmp_path, sqlite_warehouse):
    for world in make_world(sqlite_warehouse, people=4):
        cfg = make_config(sqlite_warehouse, {
            "hr": synthetic_source(users=450),
            SPARKWISE: {**world.blocks[SPARKWISE], "provision": {"from_sources": ["hr"]}}})
        assert run_source(sqlite_warehouse.engine, cfg, cfg.sources["hr"]).ok
        result = run_provision(sqlite_warehouse.engine, cfg, cfg.sources[SPARKWISE])
        assert result.ok and result.sent["create"] == 450
        assert world.sessions.writes() == [("POST", "/v1/users/batch-upsert")] * 3
        assert len(world.sparkwise_users()) == 450


def test_the_daemon_runs_provisioning_on_its_own_schedule_and_status_shows_it(world):
    world.provision = {"from_sources": [HR], "schedule": "30 6 * * *"}
    world.sync()
    cfg = world.config()
    cfg.daemon.jitter_seconds = 0
    sched = Scheduler(world.warehouse.engine, cfg, [cfg.sources[SPARKWISE]])
    sched.start()
    try:
        jobs = {j.get("job", j["source"]): j for j in sched.jobs()}
        assert jobs[f"{SPARKWISE}:provision"]["schedule"] == "30 6 * * *"
        sched._scheduler.get_job(f"{SPARKWISE}:provision").modify(next_run_time=datetime.now(UTC))
        deadline = time.monotonic() + 20
        while not provision_rows(world) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        sched.shutdown(timeout=10)
    assert [r["result"] for r in provision_rows(world)] == ["succeeded"]
    assert set(world.sparkwise_users()) == set(world.hr_people())
    assert sched.last_results[f"{SPARKWISE}:provision"] == "succeeded"

    rows, _ = collect_status(world.warehouse.engine, cfg)
    row = next(r for r in rows if r["stream"] == "provision")
    assert row["source"] == SPARKWISE and row["written"] == len(world.hr_people())
    assert row["next_run"].strftime("%H:%M") == "06:30"
