"""Staff users may choose the time zone the console shows them dates in.

Why: finance in one city and a partner manager in another both read cycle ends and due
dates; each sees them in their own zone, with the zone named. A user who has not chosen
sees the alliance's zone (``ALLIANCE_ALLIANCE_TIME_ZONE``), so existing rows stay NULL.

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("staff_users", sa.Column("time_zone", sa.String(64), nullable=True))


def downgrade() -> None:
    op.drop_column("staff_users", "time_zone")
