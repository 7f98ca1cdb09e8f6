"""A flaky network between lms-sync and a vendor: a connection reset in the middle of a
response body (a TCP fault proxy, tests/support/faultproxy.py, in front of the sandbox
fake), and a body that stops halfway where HTTP cannot tell (no Content-Length, the
connection closed). Each is one request asked again: the run succeeds, the fake's
request log shows the extra request, and the warehouse equals an undisturbed sync's."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from lms_sync.pipeline import run_source
from lms_sync.warehouse.db import upgrade
from tests.conftest import Warehouse, make_config
from tests.connectors.conftest import Vendor
from tests.support.faultproxy import FaultProxy
from tests.support.snapshot import differences, snapshot

PAGES = {"absorb": "/users", "ispring": "/users/v2", "sessions": "/v1/session-completions"}


def _sync(vendor: Vendor, folder: Path, source: dict[str, Any]) -> tuple[dict, Counter[str]]:
    """A sync of ``source`` into a new SQLite warehouse: what it holds, and the requests
    the fake got meanwhile."""
    folder.mkdir()
    wh = Warehouse("sqlite", f"sqlite:///{folder / 'warehouse.db'}", None)
    upgrade(wh.engine)
    before = Counter(vendor.fake.requests)
    cfg = make_config(wh, {"s": source})
    result = run_source(wh.engine, cfg, cfg.sources["s"])
    assert result.ok, result.error
    try:
        return snapshot(wh.engine), Counter(vendor.fake.requests) - before
    finally:
        wh.engine.dispose()


@pytest.mark.parametrize("kind", ["absorb", "ispring"])
def test_a_connection_reset_mid_body_is_asked_again(kind, start_vendor, tmp_path):
    vendor = start_vendor(kind, learners=25)
    expected, requests = _sync(vendor, tmp_path / "plain", vendor.source)
    with FaultProxy("127.0.0.1", vendor.server.port) as hop:
        hop.reset_response(f"GET {PAGES[kind]}".encode(), after=1500)
        got, cut = _sync(vendor, tmp_path / "cut", {**vendor.source,
                                                    "base_url": hop.url_for(vendor.url)})
    assert hop.resets == 1  # the answer was cut 1,500 bytes in, in the middle of its body
    assert cut[PAGES[kind]] == requests[PAGES[kind]] + 1
    assert not differences(expected, got)


@pytest.mark.parametrize("kind", ["absorb", "ispring", "sessions"])
def test_a_body_cut_short_without_a_length_is_asked_again_never_used_in_part(
        kind, start_vendor, tmp_path):
    vendor = start_vendor(kind, learners=25)
    expected, requests = _sync(vendor, tmp_path / "plain", vendor.source)
    vendor.fake.faults.update({"cut_unframed_next": 1, "path_filter": PAGES[kind]})
    got, cut = _sync(vendor, tmp_path / "cut", vendor.source)
    assert vendor.fake.faults.cut_unframed_next == 0
    assert cut[PAGES[kind]] == requests[PAGES[kind]] + 1
    assert not differences(expected, got)
