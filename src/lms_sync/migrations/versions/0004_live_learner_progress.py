"""learner_progress: only enrollments of live learners and courses

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25 07:45:00

The view kept the enrollments of soft-deleted learner accounts (people who left) and
courses: HR counted them as enrolled, overdue or not started. Now an enrollment shows
only while its enrollment, learner and course rows are all live.
"""
from alembic import op

from lms_sync.warehouse.views import (
    DROP_LEARNER_PROGRESS_SQL,
    LEARNER_PROGRESS_SQL_V1,
    LEARNER_PROGRESS_SQL_V2,
)

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(DROP_LEARNER_PROGRESS_SQL)
    op.execute(LEARNER_PROGRESS_SQL_V2)


def downgrade() -> None:
    op.execute(DROP_LEARNER_PROGRESS_SQL)
    op.execute(LEARNER_PROGRESS_SQL_V1)
