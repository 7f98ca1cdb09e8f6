"""Alembic environment: the engine comes from lms-sync (``lms-sync db upgrade``),
or, when alembic is run by hand, from ``LMS_SYNC_DATABASE_URL`` / alembic.ini."""

from __future__ import annotations

import os

from alembic import context

from lms_sync.warehouse.tables import metadata

config = context.config
target_metadata = metadata


def _engine():
    engine = config.attributes.get("engine")
    if engine is not None:
        return engine
    from lms_sync.warehouse.db import make_engine

    url = os.environ.get("LMS_SYNC_DATABASE_URL") or config.get_main_option("sqlalchemy.url")
    return make_engine(url, os.environ.get("LMS_SYNC_DATABASE_SCHEMA") or None)


def run_migrations_offline() -> None:
    context.configure(
        url=os.environ.get("LMS_SYNC_DATABASE_URL") or config.get_main_option("sqlalchemy.url"),
        target_metadata=target_metadata,
        literal_binds=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        context.configure(connection=connection, target_metadata=target_metadata,
                          on_version_apply=config.attributes.get("on_version_apply"))
        with context.begin_transaction():
            context.run_migrations()
        return
    with _engine().connect() as connection:
        context.configure(connection=connection, target_metadata=target_metadata,
                          on_version_apply=config.attributes.get("on_version_apply"))
        with context.begin_transaction():
            context.run_migrations()
        connection.commit()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
