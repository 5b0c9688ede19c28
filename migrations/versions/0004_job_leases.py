"""Job leases: one row per scheduled job saying which scheduler process may run it.

Why: the scheduler runs in its own process, and an operator may start two by mistake
(or on purpose, for failover). A lease taken with a conditional update makes each job
exclusive on PostgreSQL and SQLite alike, without relying on the scheduler's memory.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-24
"""

import sqlalchemy as sa
from alembic import op

from alliance.models.base import UTCDateTime

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('job_leases',
    sa.Column('job_name', sa.String(length=60), nullable=False),
    sa.Column('holder', sa.String(length=120), nullable=True),
    sa.Column('lease_until', UTCDateTime(timezone=True), nullable=True),
    sa.Column('last_started_at', UTCDateTime(timezone=True), nullable=True),
    sa.Column('last_finished_at', UTCDateTime(timezone=True), nullable=True),
    sa.Column('last_outcome', sa.String(length=200), nullable=True),
    sa.PrimaryKeyConstraint('job_name', name=op.f('pk_job_leases'))
    )


def downgrade() -> None:
    op.drop_table('job_leases')
