"""Transient write conflicts are recognised per database, from real driver errors."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from lms_sync.pipeline import run_source
from lms_sync.warehouse.dialect import is_transient, source_lock
from tests.conftest import make_config, synthetic_source


@pytest.mark.parametrize("warehouse", ["postgresql", "mysql"], indirect=True)
def test_real_deadlock_is_transient(warehouse):
    engine = warehouse.engine
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE dl (id INT PRIMARY KEY, v INT)"))
        conn.execute(text("INSERT INTO dl VALUES (1, 0), (2, 0)"))
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def worker(first: int, second: int) -> None:
        try:
            with engine.begin() as conn:
                conn.execute(text("UPDATE dl SET v = v + 1 WHERE id = :i"), {"i": first})
                barrier.wait(5)
                conn.execute(text("UPDATE dl SET v = v + 1 WHERE id = :i"), {"i": second})
        except DBAPIError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(1, 2)), threading.Thread(target=worker, args=(2, 1))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(errors) == 1 and is_transient(errors[0])


def test_other_errors_are_not_transient(warehouse):
    with pytest.raises(DBAPIError) as err, warehouse.engine.connect() as conn:
        conn.execute(text("SELECT * FROM no_such_table"))
    assert not is_transient(err.value)


def test_sqlite_busy_is_transient(sqlite_warehouse):
    from sqlalchemy import create_engine

    url = sqlite_warehouse.url
    holder = create_engine(url, connect_args={"timeout": 0.1})
    waiter = create_engine(url, connect_args={"timeout": 0.1})
    with holder.connect() as a:
        a.exec_driver_sql("BEGIN IMMEDIATE")
        with pytest.raises(DBAPIError) as err, waiter.begin() as b:
            b.execute(text("DELETE FROM sync_state"))
        a.exec_driver_sql("ROLLBACK")
    holder.dispose()
    waiter.dispose()
    assert is_transient(err.value)


def test_sqlite_locks_live_in_one_folder_and_still_exclude(sqlite_warehouse, tmp_path):
    """A sync leaves no lock files beside the database (``git status`` after ``make demo``
    listed one per source), and a second run of the same source is still refused."""
    cfg = make_config(sqlite_warehouse, {"syn-a": synthetic_source(users=5)})
    assert run_source(sqlite_warehouse.engine, cfg, cfg.sources["syn-a"]).ok
    beside = {p.name for p in tmp_path.iterdir() if not p.name.startswith("warehouse.db-")}
    assert beside == {"warehouse.db", "warehouse.db.locks"}
    assert {p.name for p in (tmp_path / "warehouse.db.locks").iterdir()} == {"syn-a.lock", "identity.lock"}
    with source_lock(sqlite_warehouse.engine, "syn-a"):
        busy = run_source(sqlite_warehouse.engine, cfg, cfg.sources["syn-a"])
    assert not busy.ok and "already being synced" in busy.error
