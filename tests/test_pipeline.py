"""The pipeline over the synthetic connector, on every database."""

from __future__ import annotations

import io
import json
import threading

import structlog
from sqlalchemy import func, select

from lms_sync.canonical import Learner
from lms_sync.connectors.base import Checkpoint, Stream
from lms_sync.logs import configure
from lms_sync.pipeline import run_source, run_stream
from lms_sync.warehouse import state
from lms_sync.warehouse.tables import enrollment_history, enrollments, learners, sync_runs, sync_state
from tests.conftest import count_rows as _count
from tests.conftest import make_config, synthetic_source


def test_second_run_writes_nothing(warehouse):
    cfg = make_config(warehouse, {"syn": synthetic_source(users=300)})
    first = run_source(warehouse.engine, cfg, cfg.sources["syn"])
    assert first.ok, first.error
    assert [s.read for s in first.streams] == [300, 305]
    assert _count(warehouse.engine, learners) == 300
    assert _count(warehouse.engine, enrollments) == 300
    assert _count(warehouse.engine, enrollment_history) == 300
    with warehouse.engine.connect() as conn:
        stamps = conn.execute(select(func.max(learners.c.updated_at))).scalar()

    again = run_source(warehouse.engine, cfg, cfg.sources["syn"], full_refresh=True)
    assert again.ok
    assert [s.written for s in again.streams] == [0, 0]
    assert _count(warehouse.engine, enrollment_history) == 300
    with warehouse.engine.connect() as conn:
        assert conn.execute(select(func.max(learners.c.updated_at))).scalar() == stamps
        runs = conn.execute(select(sync_runs.c.result, sync_runs.c.records_written)).all()
    assert len(runs) == 4 and all(r.result == "succeeded" for r in runs)


def test_changed_rows_and_history(warehouse):
    cfg = make_config(warehouse, {"syn": synthetic_source(users=100)})
    run_source(warehouse.engine, cfg, cfg.sources["syn"])
    cfg2 = make_config(warehouse, {"syn": synthetic_source(users=100, changed=[3, 7, 9], removed=[50])})
    res = run_source(warehouse.engine, cfg2, cfg2.sources["syn"])
    assert res.ok
    enr = res.streams[1]
    assert enr.tables["enrollments"] == 3 and enr.deleted == 1
    assert _count(warehouse.engine, enrollment_history) == 103
    assert _count(warehouse.engine, enrollments, enrollments.c.deleted_at.is_not(None)) == 1
    assert _count(warehouse.engine, enrollments, enrollments.c.status == "completed") == 3
    # the removed row comes back: deleted_at cleared, nothing else churns
    res3 = run_source(warehouse.engine, cfg, cfg.sources["syn"])
    assert res3.streams[1].tables["enrollments"] == 4  # 3 revert + 1 revived
    assert _count(warehouse.engine, enrollments, enrollments.c.deleted_at.is_not(None)) == 0


def test_a_record_skipped_as_invalid_keeps_its_row_and_holds_soft_deletes(sqlite_warehouse, capsys):
    """A full read that skipped an invalid record did not see all rows: the skipped one was
    still listed by the vendor, so nothing is soft-deleted (warning ``rows.soft_delete_held``)
    until a full read skips none; then rows no longer listed are soft-deleted as usual."""
    engine = sqlite_warehouse.engine
    configure("json", "INFO")
    cfg = make_config(sqlite_warehouse, {"syn": synthetic_source(users=40)})
    assert run_source(engine, cfg, cfg.sources["syn"]).ok
    bad = make_config(sqlite_warehouse, {"syn": synthetic_source(users=40, invalid=[3], removed=[5])})
    res = run_source(engine, bad, bad.sources["syn"], full_refresh=True)
    assert res.ok, res.error
    assert res.streams[1].skipped == 1 and res.streams[1].deleted == 0
    assert _count(engine, enrollments, enrollments.c.deleted_at.is_not(None)) == 0
    events = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")]
    held = [e for e in events if e["event"] == "rows.soft_delete_held"]
    assert len(held) == 1 and held[0]["skipped"] == 1 and held[0]["stream"] == "enrollments"
    fixed = make_config(sqlite_warehouse, {"syn": synthetic_source(users=40, removed=[5])})
    res = run_source(engine, fixed, fixed.sources["syn"], full_refresh=True)
    assert res.ok and res.streams[1].deleted == 1
    with engine.connect() as conn:
        gone = conn.execute(select(enrollments.c.external_id)
                            .where(enrollments.c.deleted_at.is_not(None))).scalars().all()
    assert gone == ["u5:c0"]


def test_a_result_the_warehouse_cannot_take_is_logged_counted_and_marked_later(sqlite_warehouse, capsys):
    """The warehouse refuses the run's final write (it went away): the run still counts in
    the metrics, its result and error are logged (run.unrecorded), the source is reported
    failed, and the next run marks the row it left `running` as abandoned, saying why."""
    from lms_sync import metrics

    engine = sqlite_warehouse.engine
    configure("json", "INFO")
    cfg = make_config(sqlite_warehouse, {"syn": synthetic_source(users=30)})
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TRIGGER gone BEFORE UPDATE ON sync_runs WHEN NEW.result != "
                             "'running' BEGIN SELECT RAISE(ABORT, 'warehouse gone'); END")

    def counted_runs() -> float:
        return metrics.registry.get_sample_value(
            "lms_sync_runs_total", {"source": "syn", "stream": "users", "result": "succeeded"}) or 0

    before = counted_runs()
    res = run_source(engine, cfg, cfg.sources["syn"])
    assert res.result == "failed" and "warehouse gone" in res.error
    assert counted_runs() == before + 1
    events = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")]
    lost = [e for e in events if e["event"] == "run.unrecorded"]
    assert lost and lost[0]["result"] == "succeeded" and lost[0]["read"] == 30
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP TRIGGER gone")
    assert run_source(engine, cfg, cfg.sources["syn"]).ok
    with engine.connect() as conn:
        first = conn.execute(select(sync_runs.c.result, sync_runs.c.error).order_by(sync_runs.c.id)).first()
    assert first.result == "failed" and "warehouse was unreachable" in first.error


def test_crash_between_batches_resumes_from_cursor(warehouse):
    cfg = make_config(warehouse, {"syn": synthetic_source(users=300, crash_after=175)})
    cfg.warehouse.batch_size = 60
    res = run_source(warehouse.engine, cfg, cfg.sources["syn"])
    assert not res.ok and "synthetic crash" in res.error
    # batches of 60: 120 rows committed; the cursor saved with them is position 99
    # (the enrollments stream still ran and made stub learners for the rest)
    assert _count(warehouse.engine, learners, learners.c.row_hash != "") == 120
    with warehouse.engine.connect() as conn:
        assert conn.execute(select(sync_state.c.cursor)).scalar() == {"position": 99}
    ok = make_config(warehouse, {"syn": synthetic_source(users=300)})
    res = run_source(warehouse.engine, ok, ok.sources["syn"])
    assert res.ok
    assert res.streams[0].read == 200  # resumed at 100, not at 0
    assert _count(warehouse.engine, learners) == 300
    assert _count(warehouse.engine, learners, learners.c.row_hash == "") == 0


class _LoggingStream(Stream):
    """Reads in the pipeline's reader thread: logs a skip, yields one learner, then fails."""

    name = "users"

    def read(self, ctx):  # type: ignore[no-untyped-def]
        ctx.skip("v1", "no email")
        yield Learner(external_id="u1")
        yield Checkpoint({"position": 1})
        raise RuntimeError("vendor went away")


def test_reader_thread_logs_with_the_run_context_and_its_error_fails_the_stream(sqlite_warehouse):
    out = io.StringIO()
    configure("json", "INFO", stream=out)
    try:
        cfg = make_config(sqlite_warehouse, {"syn": synthetic_source(users=1)})
        engine = sqlite_warehouse.engine
        with engine.begin() as conn:
            state.ensure_source(conn, "syn", "synthetic")
        with structlog.contextvars.bound_contextvars(run_id="run-1", source="syn", stream="users"):
            res = run_stream(engine, cfg, cfg.sources["syn"], None, _LoggingStream(), "run-1")
    finally:
        configure("json", "WARNING")
    assert (res.result, res.error, res.error_class, res.read, res.skipped) == (
        "failed", "vendor went away", "RuntimeError", 1, 1)
    assert not [t for t in threading.enumerate() if t.name == "lms-sync-reader"]
    events = [json.loads(line) for line in out.getvalue().splitlines()]
    skipped = next(e for e in events if e["event"] == "record.skipped")
    assert (skipped["run_id"], skipped["source"], skipped["stream"]) == ("run-1", "syn", "users")
    failed = next(e for e in events if e["event"] == "sync.failed")
    assert failed["error_class"] == "RuntimeError" and failed["error"] == "vendor went away"
    assert _count(engine, learners) == 0  # the failure came before the batch was written


def test_sources_run_in_parallel_and_stay_isolated(warehouse):
    from lms_sync.pipeline import run_sources

    sources = {f"s{i}": synthetic_source(users=200, delay_ms=150) for i in range(3)}
    sources["broken"] = synthetic_source(users=20, fail_stream="enrollments")
    cfg = make_config(warehouse, sources)
    results = run_sources(warehouse.engine, cfg, list(cfg.sources.values()), parallel=4)
    assert [r.source_id for r in results] == ["s0", "s1", "s2", "broken"]
    assert [r.result for r in results] == ["succeeded"] * 3 + ["failed"]
    with warehouse.engine.connect() as conn:
        runs = conn.execute(select(sync_runs.c.source_id, sync_runs.c.started_at,
                                   sync_runs.c.finished_at)
                            .where(sync_runs.c.stream == "users")).all()
        assert _count(warehouse.engine, learners, learners.c.row_hash != "") == 620
        # one identity pass after all sources matched every learner they wrote
        assert _count(warehouse.engine, learners, learners.c.person_id.is_(None)) == 0
        assert _count(warehouse.engine, learners, learners.c.matched_at.is_(None)) == 0
    spans = {r.source_id: (r.started_at, r.finished_at) for r in runs}
    # each users stream sleeps 4 x 150 ms: run one after another they could not overlap
    assert spans["s0"][0] < spans["s1"][1] and spans["s1"][0] < spans["s0"][1]
    again = run_sources(warehouse.engine, cfg, list(cfg.sources.values())[:3], parallel=3)
    assert all(r.ok and sum(s.written for s in r.streams) == 0 for r in again)


def test_identity_failure_fails_the_sources_that_wrote_learners_and_keeps_their_rows(sqlite_warehouse):
    """The deferred identity pass fails for real (the warehouse refuses new persons): the
    sources that wrote learners are reported failed with one clear line, their rows stay,
    and the next run's pass matches them."""
    from sqlalchemy import text

    from lms_sync.pipeline import run_sources
    from lms_sync.warehouse.tables import persons

    engine = sqlite_warehouse.engine
    with engine.begin() as conn:
        conn.execute(text("CREATE TRIGGER no_persons BEFORE INSERT ON persons "
                          "BEGIN SELECT RAISE(ABORT, 'persons is read-only'); END"))
    cfg = make_config(sqlite_warehouse, {"a": synthetic_source(users=30), "b": synthetic_source(users=20)})
    out = io.StringIO()
    configure("json", "INFO", stream=out)
    try:
        results = run_sources(engine, cfg, list(cfg.sources.values()), parallel=1)
    finally:
        configure("json", "WARNING")
    assert [r.result for r in results] == ["failed", "failed"]
    assert all(r.error.startswith("identity matching failed: ") and "persons is read-only" in r.error
               and "\n" not in r.error for r in results)
    events = [json.loads(line) for line in out.getvalue().splitlines()]
    failed = [e for e in events if e["event"] == "identity.failed"]
    assert len(failed) == 1 and failed[0]["learners"] == 50
    assert (failed[0]["error_class"], failed[0]["error"]) == (
        "IntegrityError", "persons is read-only")  # the database's own message
    assert _count(engine, learners) == 50 and _count(engine, enrollments) == 50  # rows kept
    assert _count(engine, learners, learners.c.person_id.is_not(None)) == 0

    with engine.begin() as conn:
        conn.execute(text("DROP TRIGGER no_persons"))
    again = run_sources(engine, cfg, list(cfg.sources.values()), parallel=1)
    assert [r.result for r in again] == ["succeeded", "succeeded"]
    assert _count(engine, learners, learners.c.person_id.is_(None)) == 0
    assert _count(engine, persons) > 0


def test_a_no_change_run_of_one_source_matches_learners_a_failed_pass_left(sqlite_warehouse):
    """``run_source`` alone (as the daemon runs each source): its identity pass fails, the
    run is failed; the next run writes nothing and still matches the learners left over."""
    from sqlalchemy import text

    engine = sqlite_warehouse.engine
    with engine.begin() as conn:
        conn.execute(text("CREATE TRIGGER no_persons BEFORE INSERT ON persons "
                          "BEGIN SELECT RAISE(ABORT, 'persons is read-only'); END"))
    cfg = make_config(sqlite_warehouse, {"syn": synthetic_source(users=40)})
    first = run_source(engine, cfg, cfg.sources["syn"])
    assert first.result == "failed" and "persons is read-only" in first.error
    assert _count(engine, learners, learners.c.person_id.is_(None)) == 40
    with engine.begin() as conn:
        conn.execute(text("DROP TRIGGER no_persons"))
    again = run_source(engine, cfg, cfg.sources["syn"])
    assert again.ok and sum(s.written for s in again.streams) == 0
    assert _count(engine, learners, learners.c.person_id.is_(None)) == 0


def _runs(engine, stream):
    with engine.connect() as conn:
        return conn.execute(select(sync_runs.c.result, sync_runs.c.distinct_read,
                                   sync_runs.c.vendor_total, sync_runs.c.error)
                            .where(sync_runs.c.stream == stream).order_by(sync_runs.c.id)).all()


def test_a_full_read_short_of_the_vendor_total_fails_keeps_rows_and_deletes_nothing(warehouse, capsys):
    configure("json", "INFO")
    try:
        cfg = make_config(warehouse, {"syn": synthetic_source(users=40, enrollments_reported=40)})
        assert run_source(warehouse.engine, cfg, cfg.sources["syn"]).ok
        # the vendor still counts 40 enrollments, but one is missing from its pages
        short = make_config(warehouse, {"syn": synthetic_source(users=40, removed=[5],
                                                                 enrollments_reported=40)})
        res = run_source(warehouse.engine, short, short.sources["syn"])
        assert not res.ok
        assert "read 39 distinct enrollments of the 40 the vendor reports" in res.error
        assert _count(warehouse.engine, enrollments, enrollments.c.deleted_at.is_not(None)) == 0
        events = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")]
        incomplete = [e for e in events if e["event"] == "stream.incomplete"]
        assert [(e["distinct_read"], e["vendor_total"], e["stream"]) for e in incomplete] == [
            (39, 40, "enrollments")]
        # when the vendor's total agrees, the row that went is soft-deleted
        agreed = make_config(warehouse, {"syn": synthetic_source(users=40, removed=[5],
                                                                  enrollments_reported=39)})
        assert run_source(warehouse.engine, agreed, agreed.sources["syn"]).ok
        assert _count(warehouse.engine, enrollments, enrollments.c.deleted_at.is_not(None)) == 1
    finally:
        configure("json", "WARNING")
    assert [r[:3] for r in _runs(warehouse.engine, "enrollments")] == [
        ("succeeded", 40, 40), ("failed", 39, 40), ("succeeded", 39, 39)]


def test_skipped_records_account_for_the_vendor_total(sqlite_warehouse):
    cfg = make_config(sqlite_warehouse, {"syn": synthetic_source(users=40, invalid=[3],
                                                                 enrollments_reported=40)})
    res = run_source(sqlite_warehouse.engine, cfg, cfg.sources["syn"])
    assert res.ok, res.error
    assert (res.streams[1].distinct_read, res.streams[1].skipped) == (39, 1)


def test_an_incomplete_read_puts_back_the_cursor_it_started_from(sqlite_warehouse):
    engine = sqlite_warehouse.engine
    cfg = make_config(sqlite_warehouse, {"syn": synthetic_source(users=40)})
    assert run_source(engine, cfg, cfg.sources["syn"]).ok
    with engine.connect() as conn:
        assert state.load_cursor(conn, "syn", "users") == {"position": 39}
    # a full refresh of 60 users that the vendor counts as 65: rows kept, cursor put back
    short = make_config(sqlite_warehouse, {"syn": synthetic_source(users=60, users_reported=5)})
    res = run_source(engine, short, short.sources["syn"], full_refresh=True)
    assert not res.ok and "read 60 distinct learners of the 65" in res.error
    assert _count(engine, learners) == 60
    with engine.connect() as conn:
        assert state.load_cursor(conn, "syn", "users") == {"position": 39}
    assert [r[:3] for r in _runs(engine, "users")] == [("succeeded", 40, 40), ("failed", 60, 65)]


def test_status_shows_read_over_reported(sqlite_warehouse):
    from lms_sync.status import collect_status, render_table

    cfg = make_config(sqlite_warehouse, {"syn": synthetic_source(
        users=30, enrollments_reported=32, enrollments_excluded=2)})
    assert run_source(sqlite_warehouse.engine, cfg, cfg.sources["syn"]).ok
    rows, summary = collect_status(sqlite_warehouse.engine, cfg)
    assert {r["stream"]: (r["distinct_read"], r["vendor_total"], r["excluded"]) for r in rows} == {
        "users": (30, 30, 0), "enrollments": (30, 32, 2)}
    lines = render_table(rows, summary).splitlines()
    assert "READ/REPORTED" in lines[0]
    assert [line.split()[1] for line in lines if " 30/30 " in line] == ["users"]
    assert [line.split()[1] for line in lines if " 30/32 +2 excluded " in line] == ["enrollments"]
