"""Shared fixtures: a fresh warehouse on SQLite, PostgreSQL and MariaDB; configs."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, Table, create_engine, func, select, text

from lms_sync.config import Config, parse_config
from lms_sync.logs import configure
from lms_sync.warehouse.db import make_engine, upgrade
from tests.support import synthetic

synthetic.register()
configure("json", "WARNING")

POSTGRES_URL = os.environ.get(
    "LMS_SYNC_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
MYSQL_URL = os.environ.get("LMS_SYNC_TEST_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306/test")
REQUIRE = os.environ.get("LMS_SYNC_REQUIRE_SERVERS") == "1"
DIALECTS = ["sqlite", "postgresql", "mysql"]

_reachable: dict[str, str | None] = {}


def _server_problem(url: str) -> str | None:
    if url not in _reachable:
        try:
            engine = create_engine(url)
            with engine.connect():
                pass
            engine.dispose()
            _reachable[url] = None
        except Exception as exc:  # noqa: BLE001
            _reachable[url] = f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
    return _reachable[url]


def need_server(url: str) -> None:
    problem = _server_problem(url)
    if problem:
        message = f"database server not reachable at {url.split('@')[-1]}: {problem}"
        if REQUIRE:
            pytest.fail(message + " (LMS_SYNC_REQUIRE_SERVERS=1)")
        pytest.skip(message)


class Warehouse:
    """A migrated, empty warehouse of its own on one dialect."""

    def __init__(self, dialect: str, url: str, schema: str | None) -> None:
        self.dialect, self.url, self.schema = dialect, url, schema
        self.engine = make_engine(url, schema)

    def config_block(self) -> dict:
        block = {"url": self.url}
        if self.schema:
            block["schema"] = self.schema
        return block




@pytest.fixture(params=DIALECTS)
def warehouse(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Warehouse]:
    """A fresh, migrated warehouse, once per dialect."""
    yield from _make_warehouse(request.param, tmp_path)


@pytest.fixture
def sqlite_warehouse(tmp_path: Path) -> Iterator[Warehouse]:
    yield from _make_warehouse("sqlite", tmp_path)


@pytest.fixture(params=["postgresql", "mysql"])
def server_warehouse(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Warehouse]:
    """A fresh warehouse on each database server (per-source locks are server locks there)."""
    yield from _make_warehouse(request.param, tmp_path)


@pytest.fixture
def postgres_warehouse(tmp_path: Path) -> Iterator[Warehouse]:
    yield from _make_warehouse("postgresql", tmp_path)


def _make_warehouse(dialect: str, tmp_path: Path, migrate: bool = True) -> Iterator[Warehouse]:
    name = f"t_{uuid.uuid4().hex[:12]}"
    if dialect == "sqlite":
        wh = Warehouse("sqlite", f"sqlite:///{tmp_path / 'warehouse.db'}", None)
        cleanup = None
    elif dialect == "postgresql":
        need_server(POSTGRES_URL)
        wh = Warehouse("postgresql", POSTGRES_URL, name)

        def cleanup() -> None:
            admin = create_engine(POSTGRES_URL)
            with admin.begin() as conn:
                conn.execute(text(f'DROP SCHEMA IF EXISTS "{name}" CASCADE'))
            admin.dispose()
    else:
        need_server(MYSQL_URL)
        admin = create_engine(MYSQL_URL)
        with admin.begin() as conn:
            conn.execute(text(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4"))
        admin.dispose()
        base = MYSQL_URL.rsplit("/", 1)[0]
        wh = Warehouse("mysql", f"{base}/{name}", None)

        def cleanup() -> None:
            admin = create_engine(MYSQL_URL)
            with admin.begin() as conn:
                conn.execute(text(f"DROP DATABASE IF EXISTS `{name}`"))
            admin.dispose()
    try:
        if migrate:
            upgrade(wh.engine)
        yield wh
    finally:
        wh.engine.dispose()
        if cleanup:
            cleanup()


@pytest.fixture
def unmigrated_warehouse(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Warehouse]:
    yield from _make_warehouse(getattr(request, "param", "sqlite"), tmp_path, migrate=False)


FIXTURES = Path(__file__).parent / "fixtures"


def load_fixture(kind: str, name: str) -> Any:
    """A JSON fixture file of one vendor, from tests/fixtures/<kind>/."""
    return json.loads((FIXTURES / kind / name).read_text(encoding="utf-8"))


def at(text: str) -> datetime:
    """An ISO 8601 time as an aware datetime ("Z" accepted)."""
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def count_rows(bind: Warehouse | Engine, table: Table, *where: Any) -> int:
    """Rows of ``table`` matching ``where`` in a warehouse (or on an engine)."""
    engine = getattr(bind, "engine", bind)
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(table).where(*where)).scalar()


def make_config(warehouse: Warehouse, sources: dict, **extra) -> Config:
    tree = {"warehouse": warehouse.config_block(), "sources": sources, **extra}
    return parse_config(tree, "test-config.yaml")


def synthetic_source(**options) -> dict:
    return {"kind": "synthetic", "base_url": "http://127.0.0.1:9", "options": options}
