"""Column types that behave the same on PostgreSQL, SQLite and MySQL/MariaDB."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, DateTime
from sqlalchemy.dialects import mysql
from sqlalchemy.types import TypeDecorator


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC in Python everywhere.

    PostgreSQL stores ``timestamptz``; SQLite and MySQL store a naive UTC value
    (MySQL with microseconds), and we put the UTC tzinfo back on the way out.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: Any) -> Any:
        if dialect.name in {"mysql", "mariadb"}:
            return dialect.type_descriptor(mysql.DATETIME(fsp=6))
        return dialect.type_descriptor(DateTime(timezone=True))

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        value = value.astimezone(UTC)
        if dialect.name != "postgresql":
            value = value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: Any, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, str):
            value = datetime.fromisoformat(value)
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


JSONType = JSON().with_variant(mysql.JSON(), "mysql", "mariadb")


def exact_id_type(dialect: Any) -> mysql.VARCHAR:
    """MariaDB/MySQL: ``external_id`` as VARCHAR(255) compared byte by byte, no pad (as on
    PostgreSQL and SQLite): MariaDB ``utf8mb4_nopad_bin``, MySQL 8 ``utf8mb4_0900_bin``,
    older MySQL ``utf8mb4_bin`` (which still ignores trailing spaces). Migrations 0003, 0007."""
    if getattr(dialect, "is_mariadb", False):
        collation = "utf8mb4_nopad_bin"
    elif (dialect.server_version_info or (0,)) >= (8, 0):
        collation = "utf8mb4_0900_bin"
    else:
        collation = "utf8mb4_bin"
    return mysql.VARCHAR(255, charset="utf8mb4", collation=collation)
