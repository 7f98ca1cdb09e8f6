"""Engines and migrations for the configured warehouse."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, inspect
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError

from lms_sync.errors import ConfigError
from lms_sync.warehouse import dialect

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"


def make_engine(url: str, schema: str | None = None) -> Engine:
    """An engine for ``url`` with the per-dialect connection settings applied."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ConfigError(
            "warehouse.url is not a database URL", "warehouse.url",
            "use e.g. sqlite:///lms_sync.db or postgresql+psycopg://user@host/db",
        ) from None
    kwargs: dict = {"future": True}
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            folder = Path(parsed.database).parent
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise ConfigError(f"cannot create the SQLite file's folder {str(folder)!r} "
                                  f"({exc.strerror or type(exc).__name__})", "warehouse.url",
                                  "use a path in a writable folder") from None
    else:
        # a running source holds a lock connection and takes one per batch: 8 sources at
        # once (pipeline.default_parallelism) need 16, plus the identity pass and status
        kwargs.update(pool_pre_ping=True, pool_size=5, max_overflow=20)
    if parsed.get_backend_name() in {"mysql", "mariadb"}:
        parsed = parsed.update_query_dict({"charset": "utf8mb4"})
    try:
        engine = create_engine(parsed, **kwargs)
    except (NoSuchModuleError, ModuleNotFoundError) as exc:
        raise ConfigError(
            f"no database driver for {parsed.drivername!r} ({exc})", "warehouse.url",
            "install the extra: pip install 'lms-sync[postgres]' or 'lms-sync[mysql]'",
        ) from None
    try:
        dialect.prepare_engine(engine, schema)
    except ValueError as exc:
        raise ConfigError(str(exc), "warehouse.schema") from None
    return engine


def alembic_config(engine: Engine):
    from alembic.config import Config as AlembicConfig

    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["engine"] = engine
    return cfg


def upgrade(engine: Engine, revision: str = "head",
            on_applied: Callable[[str, str], None] | None = None) -> None:
    """Apply the alembic migrations up to ``revision``; ``on_applied(revision, description)``
    after each one that is applied."""
    from alembic import command

    cfg = alembic_config(engine)
    if on_applied is not None:
        def applied(*, step: Any, **_: Any) -> None:
            on_applied(step.up_revision_id, step.up_revision.doc)

        cfg.attributes["on_version_apply"] = applied
    command.upgrade(cfg, revision)


def current_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def is_migrated(engine: Engine) -> bool:
    return inspect(engine).has_table("sync_state")
