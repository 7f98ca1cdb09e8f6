"""Sandbox-wide identity: every fake vendor synced into one warehouse gives one person
per generated human, plus one per placeholder learner (Udemy's anonymized rows,
Monotree kiosk/bot accounts), which never link to anyone.

Runs over every kind that has both a fake (sandbox registry) and a connector, so
it grows as vendors land; with none available it checks an empty warehouse.
"""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from lms_sync.connectors import available_kinds
from lms_sync.pipeline import run_source, run_sources
from lms_sync.sandbox.population import Population
from lms_sync.sandbox.registry import available_fakes, make_fake
from lms_sync.sandbox.server import SandboxServer
from lms_sync.warehouse import identity
from lms_sync.warehouse.tables import learners, persons
from tests.conftest import make_config

PEOPLE = 60


@pytest.mark.parametrize("mode", ["a pass per source", "one pass in slices of 7 seeds"])
def test_persons_are_the_generated_people_plus_placeholders(sqlite_warehouse, mode, monkeypatch):
    if mode != "a pass per source":  # the slicing a 120,000-learner first load goes through
        monkeypatch.setattr(identity, "PASS_SEEDS", 7)
    kinds = [k for k in available_fakes() if k in set(available_kinds())]
    population = Population(PEOPLE, seed=3)
    servers = []
    try:
        blocks = {}
        for kind in kinds:
            fake = make_fake(kind, population)
            server = SandboxServer(fake).start()
            servers.append(server)
            block = fake.source_config(server.url)
            block.setdefault("http", {}).setdefault("max_wait_seconds", 2)
            blocks[f"{kind}-sandbox"] = block
        cfg = make_config(sqlite_warehouse, blocks)
        if mode == "a pass per source":
            results = [run_source(sqlite_warehouse.engine, cfg, s) for s in cfg.sources.values()]
        else:
            results = run_sources(sqlite_warehouse.engine, cfg, list(cfg.sources.values()))
        for result in results:
            assert result.ok, f"{result.source_id}: {result.error}"
    finally:
        for server in servers:
            server.stop()

    expected_people = {p.index for kind in kinds for p in population.members(kind)}
    with sqlite_warehouse.engine.connect() as conn:
        placeholders = conn.execute(select(func.count())
                                    .where(learners.c.is_placeholder.is_(True))).scalar()
        person_count = conn.execute(select(func.count()).select_from(persons)
                                    .where(persons.c.deleted_at.is_(None))).scalar()
        without = conn.execute(select(func.count()).where(learners.c.person_id.is_(None))).scalar()
        emails = set(conn.execute(select(persons.c.primary_email)
                                  .where(persons.c.deleted_at.is_(None))).scalars())
        bare = conn.execute(select(func.count()).where(
            learners.c.is_placeholder.is_(False), learners.c.email.is_(None),
            learners.c.hr_id.is_(None))).scalar()
    assert without == 0 and bare == 0
    assert person_count == len(expected_people) + placeholders, (kinds, placeholders)
    if len(kinds) >= 2:  # the same humans really were matched across vendors
        with sqlite_warehouse.engine.connect() as conn:
            live = conn.execute(select(func.count()).select_from(learners)).scalar()
        assert live > person_count
    by_index = {p.index: p.email for p in population.people}
    assert {by_index[i] for i in expected_people} <= emails

