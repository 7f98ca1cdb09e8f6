"""org units, memberships, assignment and certificate columns; the compliance views

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03 22:00:00

* ``org_units`` (departments, professions, groups of one source, a tree by
  ``parent_id``) and ``learner_org_units`` (learner <-> org unit, many to many), keyed
  and soft-deleted like every vendor table;
* ``enrollments`` gains ``assigned``, ``assigned_at``, ``required``, ``certificate_id``,
  ``certificate_expires_at`` and ``credits`` (NULL: the vendor does not say). Existing
  rows keep NULLs until their source reads them again: run ``lms-sync sync
  --full-refresh`` once to fill them for every row (an incremental Absorb run reads only
  what was edited);
* views: ``org_unit_paths`` (a unit's path from the top), ``learner_progress`` replaced
  by one with the learner's primary org unit path and the new columns appended, and
  ``compliance`` (one row per org unit and course).
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

from lms_sync.warehouse.dialect import name as dialect_name
from lms_sync.warehouse.types import JSONType, UTCDateTime, exact_id_type
from lms_sync.warehouse.views import (
    DROP_COMPLIANCE_SQL,
    DROP_LEARNER_PROGRESS_SQL,
    DROP_ORG_UNIT_PATHS_SQL,
    LEARNER_PROGRESS_SQL,
    LEARNER_PROGRESS_SQL_V2,
    compliance_sql,
    org_unit_paths_sql,
)

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.INTEGER(), 'sqlite')
_NUMBER = sa.Float().with_variant(mysql.DOUBLE(asdecimal=False), 'mysql', 'mariadb')


def _external_id() -> sa.types.TypeEngine:
    bind = op.get_bind()
    return exact_id_type(bind.dialect) if dialect_name(bind) == 'mysql' else sa.String(255)


def _keyed(table: str, *columns: sa.Column | sa.ForeignKeyConstraint) -> None:
    """A vendor table: id, source_id, external_id, ``columns``, the lifecycle columns."""
    op.create_table(
        table,
        sa.Column('id', _ID, autoincrement=True, nullable=False),
        sa.Column('source_id', sa.String(100), nullable=False),
        sa.Column('external_id', _external_id(), nullable=False),
        *columns,
        sa.Column('raw', JSONType, nullable=True),
        sa.Column('row_hash', sa.String(40), nullable=False),
        sa.Column('first_seen_at', UTCDateTime(), nullable=False),
        sa.Column('updated_at', UTCDateTime(), nullable=False),
        sa.Column('deleted_at', UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(['source_id'], ['sources.id'], name=op.f(f'fk_{table}_source_id_sources')),
        sa.PrimaryKeyConstraint('id', name=op.f(f'pk_{table}')),
        sa.UniqueConstraint('source_id', 'external_id', name=op.f(f'uq_{table}_source_id_external_id')),
    )


def upgrade() -> None:
    _keyed('org_units',
           sa.Column('kind', sa.String(20), nullable=True),
           sa.Column('name', sa.String(500), nullable=True),
           sa.Column('parent_id', _ID, nullable=True),
           sa.ForeignKeyConstraint(['parent_id'], ['org_units.id'],
                                   name=op.f('fk_org_units_parent_id_org_units')))
    _keyed('learner_org_units',
           sa.Column('learner_id', _ID, nullable=False),
           sa.Column('org_unit_id', _ID, nullable=False),
           sa.ForeignKeyConstraint(['learner_id'], ['learners.id'],
                                   name=op.f('fk_learner_org_units_learner_id_learners')),
           sa.ForeignKeyConstraint(['org_unit_id'], ['org_units.id'],
                                   name=op.f('fk_learner_org_units_org_unit_id_org_units')))
    op.create_index(op.f('ix_learner_org_units_learner_id'), 'learner_org_units', ['learner_id'])
    op.create_index(op.f('ix_learner_org_units_org_unit_id'), 'learner_org_units', ['org_unit_id'])
    op.execute(DROP_LEARNER_PROGRESS_SQL)  # before its table changes (SQLite may rebuild it)
    with op.batch_alter_table('enrollments') as batch:
        batch.add_column(sa.Column('assigned', sa.Boolean(), nullable=True))
        batch.add_column(sa.Column('assigned_at', UTCDateTime(), nullable=True))
        batch.add_column(sa.Column('required', sa.Boolean(), nullable=True))
        batch.add_column(sa.Column('certificate_id', sa.String(255), nullable=True))
        batch.add_column(sa.Column('certificate_expires_at', UTCDateTime(), nullable=True))
        batch.add_column(sa.Column('credits', _NUMBER, nullable=True))
    dialect = dialect_name(op.get_bind())
    op.execute(org_unit_paths_sql(dialect))
    op.execute(LEARNER_PROGRESS_SQL)
    op.execute(compliance_sql(dialect))


def downgrade() -> None:
    op.execute(DROP_COMPLIANCE_SQL)
    op.execute(DROP_LEARNER_PROGRESS_SQL)
    op.execute(DROP_ORG_UNIT_PATHS_SQL)
    # plain ALTER TABLE ... DROP COLUMN (SQLite 3.35+): a batch rebuild of enrollments would
    # drop the table its history rows reference, which SQLite's foreign keys refuse
    for column in ('credits', 'certificate_expires_at', 'certificate_id', 'required',
                   'assigned_at', 'assigned'):
        op.drop_column('enrollments', column)
    op.execute(LEARNER_PROGRESS_SQL_V2)
    op.drop_table('learner_org_units')  # its indexes with it (MariaDB refuses to drop an FK's index)
    op.drop_table('org_units')
