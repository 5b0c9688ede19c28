"""Job leases record when each job last succeeded and how long its last run took.

Why: an operator is warned when a scheduled job has not succeeded on time, whichever
host ran it. The lease row is the one record every scheduler process shares, so the
moment of the last success lives there (``last_outcome`` says only how the last run
ended, and a failure would hide when the job last worked). Rows written before this
revision take their last finish as the last success when that run did not fail.

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

from alliance.models.base import UTCDateTime

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("job_leases", sa.Column("last_succeeded_at", UTCDateTime(timezone=True), nullable=True))
    leases = sa.table("job_leases", sa.column("last_finished_at", UTCDateTime()), sa.column("last_outcome"),
                      sa.column("last_succeeded_at", UTCDateTime()))
    op.get_bind().execute(sa.update(leases)
                          .where(leases.c.last_finished_at.is_not(None), leases.c.last_outcome != "failed")
                          .values(last_succeeded_at=leases.c.last_finished_at))


def downgrade() -> None:
    op.drop_column("job_leases", "last_succeeded_at")
