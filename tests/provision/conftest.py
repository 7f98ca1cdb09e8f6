"""Provisioning against the sandbox: an Absorb fake (the HR source) and a Sparkwise fake
on real loopback sockets, one warehouse, and the config that joins them."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import select

from lms_sync.config import Config
from lms_sync.pipeline import SourceResult, run_source
from lms_sync.provision.run import ProvisionResult, run_provision
from lms_sync.sandbox.population import Population
from lms_sync.sandbox.registry import make_fake
from lms_sync.sandbox.server import SandboxServer
from lms_sync.warehouse.tables import provision_actions
from tests.conftest import Warehouse, make_config

HR, SPARKWISE = "absorb-main", "sparkwise"


@dataclass
class World:
    warehouse: Warehouse
    absorb: Any
    sessions: Any
    blocks: dict[str, dict[str, Any]]
    provision: dict[str, Any] = field(default_factory=lambda: {"from_sources": [HR]})

    def config(self) -> Config:
        sparkwise = {**self.blocks[SPARKWISE], "provision": self.provision}
        return make_config(self.warehouse, {HR: self.blocks[HR], SPARKWISE: sparkwise})

    def write_config(self, path: Path) -> str:
        tree = {"warehouse": self.warehouse.config_block(), "logging": {"format": "json"},
                "sources": {HR: self.blocks[HR],
                            SPARKWISE: {**self.blocks[SPARKWISE], "provision": self.provision}}}
        path.write_text(yaml.safe_dump(tree), encoding="utf-8")
        return str(path)

    def sync(self, source_id: str = HR, **kw: Any) -> SourceResult:
        cfg = self.config()
        result = run_source(self.warehouse.engine, cfg, cfg.sources[source_id], **kw)
        return result

    def run(self, **kw: Any) -> ProvisionResult:
        cfg = self.config()
        return run_provision(self.warehouse.engine, cfg, cfg.sources[SPARKWISE], **kw)

    def hr_people(self) -> dict[str, dict[str, Any]]:
        """HR id -> Absorb user, for the active users that carry one."""
        return {u["externalId"]: u for u in self.absorb.users
                if u["externalId"] and u["activeStatus"] == 0}  # 0: active

    def sparkwise_users(self) -> dict[str, dict[str, Any]]:
        return {u["remoteId"]: u for u in self.sessions.users() if u["remoteId"]}

    def actions(self) -> list[tuple[str, str, str, str | None]]:
        """(action, remote_id, result, error) recorded in provision_actions."""
        t = provision_actions.c
        with self.warehouse.engine.connect() as conn:
            return [tuple(r) for r in conn.execute(  # type: ignore[misc]
                select(t.action, t.remote_id, t.result, t.error).order_by(t.id))]


def make_world(warehouse: Warehouse, people: int = 40, **sessions_options: Any) -> Iterator[World]:
    population = Population(people, seed=7)
    absorb = make_fake("absorb", population)
    sessions = make_fake("sessions", population, **{"empty": True, **sessions_options})
    servers = [SandboxServer(absorb).start(), SandboxServer(sessions).start()]
    blocks = {HR: absorb.source_config(servers[0].url),
              SPARKWISE: sessions.source_config(servers[1].url)}
    blocks[HR]["options"] = {"lesson_enrollments": False}  # who works here, not their lessons
    for block in blocks.values():  # tests should not wait long on retries
        block["http"] = {"max_wait_seconds": 1, "max_attempts": 2}
    try:
        yield World(warehouse, absorb, sessions, blocks)
    finally:
        for server in servers:
            server.stop()


@pytest.fixture
def world(sqlite_warehouse: Warehouse) -> Iterator[World]:
    """HR in Absorb (40 people; 33 active with an HR id), an empty Sparkwise, SQLite."""
    yield from make_world(sqlite_warehouse)
