"""MariaDB/MySQL: vendor ids compared exactly, numbers stored as DOUBLE

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25 07:20:00

On MariaDB/MySQL only (PostgreSQL and SQLite already behave so):

* ``external_id`` of the record tables gets a binary no-pad collation (MariaDB
  ``utf8mb4_nopad_bin``, MySQL 8 ``utf8mb4_0900_bin``; older MySQL ``utf8mb4_bin``, which
  still ignores trailing spaces). The default collation compares case-, accent- and
  trailing-space-insensitively, so a source's ``abc`` and ``ABC`` shared one row,
  rewritten (and soft-deleted and revived) on every run. Rows the old collation merged
  come back as their own rows on the next run of their source.
* ``Float`` columns become ``DOUBLE``: ``FLOAT`` there is 4 bytes (~7 significant
  digits), so 195605.5 seconds read back as 195606, and a progress of 33.333333 %
  read back changed, which appended enrollment_history rows no other database did.
"""
from alembic import op
from sqlalchemy.dialects import mysql

from lms_sync.warehouse.types import exact_id_type

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None

_NUMBERS = {
    'courses': ['duration_minutes'],
    'stat_snapshots': ['value'],
    'enrollments': ['progress_pct', 'score', 'time_spent_seconds'],
    'activity_progress': ['progress_pct', 'score', 'time_spent_seconds'],
    'enrollment_history': ['progress_pct'],
}
_KEYED = ['learners', 'courses', 'enrollments', 'activity_progress', 'stat_snapshots']


def _mysql() -> bool:
    return op.get_bind().dialect.name in ('mysql', 'mariadb')


def _exact() -> mysql.VARCHAR:
    return exact_id_type(op.get_bind().dialect)


def upgrade() -> None:
    if not _mysql():
        return
    for table, columns in _NUMBERS.items():
        for column in columns:
            op.alter_column(table, column, type_=mysql.DOUBLE(), existing_type=mysql.FLOAT(),
                            existing_nullable=True)
    for table in _KEYED:
        op.alter_column(table, 'external_id', type_=_exact(), existing_type=mysql.VARCHAR(255),
                        existing_nullable=False)


def downgrade() -> None:
    if not _mysql():
        return
    for table in _KEYED:
        op.alter_column(table, 'external_id', type_=mysql.VARCHAR(255),
                        existing_type=_exact(),
                        existing_nullable=False)
    for table, columns in _NUMBERS.items():
        for column in columns:
            op.alter_column(table, column, type_=mysql.FLOAT(), existing_type=mysql.DOUBLE(),
                            existing_nullable=True)
