"""The SQLAlchemy models and the alembic migrations agree, on every database."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text

from lms_sync.warehouse.db import current_revision, upgrade
from lms_sync.warehouse.tables import metadata


def _ignore_equivalent_types(context, inspected, metadata_col, inspected_type, metadata_type):
    # MariaDB reports JSON as LONGTEXT; SQLite has no separate BIGINT/DATETIME affinity.
    names = {type(inspected_type).__name__.upper(), type(metadata_type).__name__.upper()}
    if names <= {"LONGTEXT", "JSON"}:
        return False
    return None


def test_models_match_migrations(warehouse):
    with warehouse.engine.connect() as conn:
        ctx = MigrationContext.configure(
            conn, opts={"compare_type": _ignore_equivalent_types, "target_metadata": metadata}
        )
        diff = compare_metadata(ctx, metadata)
    assert diff == []


def test_upgrade_is_idempotent_and_creates_the_view(warehouse):
    upgrade(warehouse.engine)  # second time: nothing to do
    assert current_revision(warehouse.engine) is not None
    insp = inspect(warehouse.engine)
    assert "learner_progress" in insp.get_view_names()
    with warehouse.engine.connect() as conn:
        cols = conn.execute(text("SELECT * FROM learner_progress WHERE 1=0")).keys()
    assert {"person_id", "source_id", "course_title", "status", "passed", "progress_pct",
            "completed_at"} <= set(cols)


def test_0008_stream_pages_downgrades_and_upgrades_again_keeping_big_digest_sets(warehouse):
    """stream_pages holds a stream's page digests: 10,000 pages (160 KB, past MariaDB's
    64 KiB BLOB) round-trip on every database; 0008 goes down and up again."""
    from dataclasses import asdict

    from alembic import command

    from lms_sync.connectors.skim import SavedPages
    from lms_sync.warehouse import pages
    from lms_sync.warehouse.db import alembic_config
    from lms_sync.warehouse.state import ensure_source, finish_run, now_utc, start_run

    engine = warehouse.engine
    digests = b"".join(i.to_bytes(16, "big") for i in range(10_000))
    saved = SavedPages("run-1", "f" * 32, digests, 123, 120, 3)
    with engine.begin() as conn:
        ensure_source(conn, "s", "udemy")
        row = start_run(conn, "run-1", "s", "progress", now_utc())
        finish_run(conn, row, result="succeeded", read=123, written=0)
        pages.save(conn, "s", "progress", asdict(saved), saved.pages, now_utc())
        current = start_run(conn, "run-2", "s", "progress", now_utc())
    with engine.connect() as conn:
        assert SavedPages(**pages.load(conn, "s", "progress", current)) == saved
    head = current_revision(engine)
    command.downgrade(alembic_config(engine), "0007")
    assert "stream_pages" not in inspect(engine).get_table_names(schema=warehouse.schema)
    upgrade(engine)
    assert current_revision(engine) == head
    with engine.connect() as conn:  # empty again: the next run reads for real
        assert pages.load(conn, "s", "progress", current) is None
