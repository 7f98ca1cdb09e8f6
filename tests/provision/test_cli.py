"""`lms-sync provision` as a real subprocess against the sandbox fakes: the safety cap,
--force, and --dry-run (which sends nothing)."""

from __future__ import annotations

import json

from sqlalchemy import select

from lms_sync.warehouse.tables import provision_actions, sync_runs
from tests.cli_helpers import run_cli
from tests.conftest import count_rows
from tests.provision.conftest import SPARKWISE


def test_ten_percent_leavers_are_refused_in_one_line_and_force_sends(tmp_path, world):
    world.sync()
    assert world.run().ok
    active = len(world.hr_people())
    leavers = set(sorted(world.hr_people())[:4])  # 4 of 33: 12%, over the default 5%
    world.absorb.remove_users(leavers)
    world.sync(full_refresh=True)
    config = world.write_config(tmp_path / "config.yaml")
    writes = len(world.sessions.writes())

    proc = run_cli("provision", "--config", config, "--source", SPARKWISE)
    assert proc.returncode == 1, proc.stderr
    assert proc.stdout == (f"{SPARKWISE}: provision refused — would deactivate 4 of {active} active "
                           f"users (12.1%), more than max_deactivate_fraction 0.05; nothing was "
                           "sent\n")
    assert len(world.sessions.writes()) == writes
    assert all(u["active"] for u in world.sparkwise_users().values())
    refused = [json.loads(line) for line in proc.stderr.splitlines()
               if '"provision.refused"' in line]
    assert len(refused) == 1 and refused[0]["source"] == SPARKWISE
    with world.warehouse.engine.connect() as conn:
        last = conn.execute(select(sync_runs.c.result, sync_runs.c.error)
                            .where(sync_runs.c.stream == "provision")
                            .order_by(sync_runs.c.id.desc()).limit(1)).one()
    assert last.result == "failed" and last.error.startswith("would deactivate 4 of")

    proc = run_cli("provision", "--config", config, "--source", SPARKWISE, "--force")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == (f"{SPARKWISE}: provision succeeded (0 created, 0 updated, "
                           f"4 deactivated, {active - 4} unchanged)\n")
    users = world.sparkwise_users()
    assert {h for h, u in users.items() if not u["active"]} == leavers
    assert not [u for u in users.values() if u["lastName"] in proc.stderr]  # no names logged
    assert world.blocks[SPARKWISE]["auth"]["api_key"] not in proc.stderr + proc.stdout


def test_dry_run_prints_the_plan_and_sends_nothing(tmp_path, world):
    world.sync()
    config = world.write_config(tmp_path / "config.yaml")
    proc = run_cli("provision", "--config", config, "--source", SPARKWISE, "--dry-run")
    assert proc.returncode == 0, proc.stderr
    people = world.hr_people()
    lines = proc.stdout.splitlines()
    assert lines[0] == (f"{SPARKWISE}: plan from absorb-main (dry run, nothing sent): "
                        f"{len(people)} create, 0 update, 0 deactivate, 0 unchanged")
    first = sorted(people)[0]
    assert lines[2].split() == ["create", first, people[first]["firstName"],
                                *people[first]["lastName"].split()]
    assert lines[-1].strip().startswith(f"create      … and {len(people) - 10} more")
    assert world.sessions.writes() == []  # the fake saw no write
    assert count_rows(world.warehouse, provision_actions) == 0
    assert count_rows(world.warehouse, sync_runs, sync_runs.c.stream == "provision") == 0
    assert people[first]["lastName"] not in proc.stderr  # names only where the plan is asked for
