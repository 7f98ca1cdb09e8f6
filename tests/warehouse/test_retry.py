"""The warehouse retry policy on real servers: what is retried, what never is."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from sqlalchemy import text

from lms_sync.logs import configure
from lms_sync.warehouse import retry
from lms_sync.warehouse.db import make_engine
from lms_sync.warehouse.tables import sources
from tests.support.faultproxy import FaultProxy

PORTS = {"postgresql": 5432, "mysql": 3306}
NOW = datetime(2026, 1, 1, tzinfo=UTC)


def _source(conn, source_id: str = "s") -> None:  # type: ignore[no-untyped-def]
    conn.execute(sources.insert(), {"id": source_id, "kind": "absorb", "first_seen_at": NOW,
                                    "updated_at": NOW})


def test_a_permanent_error_is_raised_at_once_never_retried(server_warehouse):
    """A constraint violation and bad SQL: one attempt each, the error as the database
    gave it (not 'unreachable'), and no retry logged."""
    engine = server_warehouse.engine
    retry.transaction(engine, _source, window=30, op="seed")
    for work in (_source, lambda conn: conn.execute(text("SELEC 1"))):
        attempts: list[int] = []

        def once(conn, work=work, attempts=attempts):  # type: ignore[no-untyped-def]
            attempts.append(1)
            work(conn)

        with pytest.raises(Exception) as raised:
            retry.transaction(engine, once, window=30, op="test")
        assert len(attempts) == 1
        assert not isinstance(raised.value, retry.WarehouseUnreachable)
        assert not retry.is_retriable(raised.value)


def test_a_lost_connection_is_retried_until_the_warehouse_is_back(server_warehouse, capsys):
    """A transaction that meets a cut (its connection reset, new ones refused for 1 s) is
    redone whole once the warehouse answers; each retry is logged with attempt, wait and
    the error."""
    wh = server_warehouse
    configure("json", "INFO")
    with FaultProxy("127.0.0.1", PORTS[wh.dialect]) as hop:
        engine = make_engine(hop.url_for(wh.url), wh.schema)
        attempts: list[int] = []

        def work(conn):  # type: ignore[no-untyped-def]
            attempts.append(1)
            if len(attempts) == 1:
                hop.cut(1.0)  # in the middle of the transaction
            _source(conn, "after-cut")

        retry.transaction(engine, work, window=30, op="test")
        engine.dispose()
    assert len(attempts) >= 2
    with wh.engine.connect() as conn:
        assert conn.execute(text("SELECT COUNT(*) FROM sources")).scalar() == 1
    logged = [json.loads(line) for line in capsys.readouterr().err.splitlines()
              if line.startswith("{")]
    retries = [e for e in logged if e["event"] == "warehouse.retry"]
    assert retries and retries[0]["op"] == "test" and retries[0]["attempt"] == 1
    assert retries[0]["wait"] > 0 and retries[0]["error"] and retries[0]["connection_lost"]


def test_a_warehouse_away_past_the_window_is_one_line_naming_it_and_the_setting(
        postgres_warehouse):
    wh = postgres_warehouse
    with FaultProxy("127.0.0.1", PORTS["postgresql"]) as hop:
        engine = make_engine(hop.url_for(wh.url), wh.schema)
        hop.cut()
        with pytest.raises(retry.WarehouseUnreachable) as raised:
            retry.transaction(engine, _source, window=0.5, op="test")
        engine.dispose()
    message = str(raised.value)
    assert "\n" not in message
    assert message.startswith(f"the warehouse postgresql at 127.0.0.1:{hop.port}/test was "
                              "unreachable for warehouse.reconnect_seconds (0.5 s): ")
    assert "postgres@" not in message  # no user (nor password) in the line
