"""sync_runs: the vendor's own total beside the distinct rows a run read

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03 21:30:00

A full read is checked against the count the vendor reports (Absorb totalItems,
Udemy count, Monotree meta.total, Sparkwise data.total); both figures are kept per
run (with the rows of that total a stream leaves out by design) so that `lms-sync status`
shows read / reported.
"""
import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("sync_runs") as batch:
        batch.add_column(sa.Column("vendor_total", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("distinct_read", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("records_excluded", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("sync_runs") as batch:
        batch.drop_column("records_excluded")
        batch.drop_column("distinct_read")
        batch.drop_column("vendor_total")
