"""stream_pages: the page digests of a stream's last clean run (the page skim)

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-08 10:00:00

One row per source and stream that opts in to the page skim (Udemy's four streams): the
run that saved it, a fingerprint of what shaped its records, every page's digest (16
bytes each) and the run's counts. An unchanged list is then fetched but not processed
(``stream.unchanged``); ``lms-sync sync --full-refresh`` always reads for real.
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

from lms_sync.warehouse.types import UTCDateTime

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'stream_pages',
        sa.Column('source_id', sa.String(length=100), nullable=False),
        sa.Column('stream', sa.String(length=50), nullable=False),
        sa.Column('run_id', sa.String(length=36), nullable=False),
        sa.Column('fingerprint', sa.String(length=32), nullable=False),
        sa.Column('pages', sa.Integer(), nullable=False),
        sa.Column('digests', sa.LargeBinary().with_variant(mysql.LONGBLOB(), 'mysql', 'mariadb'),
                  nullable=False),
        sa.Column('records_read', sa.Integer(), nullable=False),
        sa.Column('distinct_read', sa.Integer(), nullable=True),
        sa.Column('records_excluded', sa.Integer(), nullable=False),
        sa.Column('saved_at', UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(['source_id'], ['sources.id'],
                                name=op.f('fk_stream_pages_source_id_sources')),
        sa.PrimaryKeyConstraint('source_id', 'stream', name=op.f('pk_stream_pages')),
    )


def downgrade() -> None:
    op.drop_table('stream_pages')
