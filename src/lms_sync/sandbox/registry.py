"""Fake vendors by source kind (imported lazily, like the connectors)."""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any

from lms_sync.sandbox.population import Population
from lms_sync.sandbox.server import FakeVendor

FAKES: dict[str, str] = {
    "absorb": "lms_sync.sandbox.absorb:FakeAbsorb",
    "ispring": "lms_sync.sandbox.ispring:FakeIspring",
    "udemy": "lms_sync.sandbox.udemy:FakeUdemy",
    "sessions": "lms_sync.sandbox.sessions:FakeSessions",
    "academy": "lms_sync.sandbox.academy:FakeAcademy",
}


def available_fakes() -> list[str]:
    return [k for k, t in FAKES.items() if importlib.util.find_spec(t.split(":")[0]) is not None]


def make_fake(kind: str, population: Population, **options: Any) -> FakeVendor:
    module, _, attr = FAKES[kind].partition(":")
    return getattr(importlib.import_module(module), attr)(population, **options)
