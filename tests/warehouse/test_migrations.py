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
