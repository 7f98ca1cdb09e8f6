"""Fixtures for connector tests: a fake vendor on a real loopback socket."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from lms_sync.config import Config
from lms_sync.pipeline import SourceResult, run_source
from lms_sync.sandbox.population import Population
from lms_sync.sandbox.registry import make_fake
from lms_sync.sandbox.server import FakeVendor, SandboxServer
from tests.conftest import Warehouse, make_config


@dataclass
class Vendor:
    """A started fake and the config block pointing at it."""

    kind: str
    fake: Any
    server: SandboxServer
    source: dict[str, Any]

    @property
    def url(self) -> str:
        return self.server.url


StartVendor = Callable[..., Vendor]


@pytest.fixture
def start_vendor() -> Iterator[StartVendor]:
    """start_vendor(kind, learners=50, seed=7, **fake_options) -> Vendor (stopped at teardown)."""
    servers: list[SandboxServer] = []

    def start(kind: str, learners: int = 50, seed: int = 7, **options: Any) -> Vendor:
        fake: FakeVendor = make_fake(kind, Population(learners, seed), **options)
        server = SandboxServer(fake).start()
        servers.append(server)
        block = fake.source_config(server.url)
        # tests should not wait long on retries
        block.setdefault("http", {}).setdefault("max_wait_seconds", 2)
        return Vendor(kind, fake, server, block)

    yield start
    for server in servers:
        server.stop()


def sync(warehouse: Warehouse, sources: dict[str, dict], source_id: str | None = None,
         **kw: Any) -> SourceResult:
    """Run one source of a config built from ``sources`` into ``warehouse``."""
    cfg: Config = make_config(warehouse, sources)
    sid = source_id or next(iter(sources))
    return run_source(warehouse.engine, cfg, cfg.sources[sid], **kw)
