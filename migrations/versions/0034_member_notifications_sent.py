"""Member notifications: when each was sent through the member-messaging webhook.

Why: expiry reminders waited in ``member_notifications`` with nothing to deliver them.
They now go out as ``member.points_expiring`` events (``alliance.services.reminders``);
``sent_at`` marks a reminder handed to the webhook outbox, so each is emitted once, and a
partial index finds the few not sent yet.

Revision ID: 0034
Revises: 0033
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

from alliance.models.base import UTCDateTime

revision = "0034"
down_revision = "0033"
branch_labels = None
depends_on = None

UNSENT = sa.text("sent_at IS NULL")


def upgrade() -> None:
    with op.batch_alter_table("member_notifications") as batch:
        batch.add_column(sa.Column("sent_at", UTCDateTime(), nullable=True))
    op.create_index("ix_member_notifications_unsent", "member_notifications", ["id"],
                    postgresql_where=UNSENT, sqlite_where=UNSENT)


def downgrade() -> None:
    op.drop_index("ix_member_notifications_unsent", table_name="member_notifications")
    with op.batch_alter_table("member_notifications") as batch:
        batch.drop_column("sent_at")
