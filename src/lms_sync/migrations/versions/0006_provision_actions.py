"""provision_actions: what `lms-sync provision` sent to a vendor, one row per user

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-05 09:00:00
"""
import sqlalchemy as sa
from alembic import op

from lms_sync.warehouse.types import UTCDateTime

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'provision_actions',
        sa.Column('id', sa.BigInteger().with_variant(sa.INTEGER(), 'sqlite'), autoincrement=True,
                  nullable=False),
        sa.Column('run_id', sa.String(length=36), nullable=False),
        sa.Column('source_id', sa.String(length=100), nullable=False),
        sa.Column('action', sa.String(length=20), nullable=False),
        sa.Column('remote_id', sa.String(length=255), nullable=False),
        sa.Column('result', sa.String(length=20), nullable=False),
        sa.Column('error', sa.Text(), nullable=True),
        sa.Column('at', UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(['source_id'], ['sources.id'],
                                name=op.f('fk_provision_actions_source_id_sources')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_provision_actions')),
    )
    op.create_index(op.f('ix_provision_actions_source_id_at'), 'provision_actions',
                    ['source_id', 'at'], unique=False)
    op.create_index(op.f('ix_provision_actions_run_id'), 'provision_actions', ['run_id'],
                    unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_provision_actions_run_id'), table_name='provision_actions')
    op.drop_index(op.f('ix_provision_actions_source_id_at'), table_name='provision_actions')
    op.drop_table('provision_actions')
