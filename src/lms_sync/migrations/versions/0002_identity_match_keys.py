"""identity match keys on learners

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24 19:15:00

``learners.email_key`` / ``learners.hr_key`` are the normalized keys identity
matching links by (indexed, so an incremental pass finds a learner's component
without loading every learner); ``learners.matched_at`` is when the learner was
last examined (a learner updated after it is re-examined by the next pass).
Existing rows get NULLs and so are all matched by the first pass after upgrade.
"""
from alembic import op
import sqlalchemy as sa

from lms_sync.warehouse.types import UTCDateTime

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('learners') as batch:
        batch.add_column(sa.Column('email_key', sa.String(length=320), nullable=True))
        batch.add_column(sa.Column('hr_key', sa.String(length=255), nullable=True))
        batch.add_column(sa.Column('matched_at', UTCDateTime(), nullable=True))
    op.create_index(op.f('ix_learners_email_key'), 'learners', ['email_key'], unique=False)
    op.create_index(op.f('ix_learners_hr_key'), 'learners', ['hr_key'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_learners_hr_key'), table_name='learners')
    op.drop_index(op.f('ix_learners_email_key'), table_name='learners')
    with op.batch_alter_table('learners') as batch:
        batch.drop_column('matched_at')
        batch.drop_column('hr_key')
        batch.drop_column('email_key')
