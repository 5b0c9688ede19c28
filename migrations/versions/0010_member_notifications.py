"""Member notifications: an outbox of expiry reminders.

Why: members are reminded before their points expire (docs/design.md, "Expiry").
The hub has no e-mail or SMS channel of its own; it writes each reminder once (unique per
lot) to an outbox that the operator's member app reads and delivers.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-24
"""

import sqlalchemy as sa
from alembic import op

from alliance.models.base import UTCDateTime

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "member_notifications",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("member_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("lot_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("points", sa.BigInteger(), nullable=False),
        sa.Column("expires_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
        sa.CheckConstraint("kind IN ('expiry_reminder')", name=op.f("ck_member_notifications_kind")),
        sa.ForeignKeyConstraint(["lot_id"], ["point_lots.id"], name=op.f("fk_member_notifications_lot_id_point_lots")),
        sa.ForeignKeyConstraint(["member_id"], ["members.id"], name=op.f("fk_member_notifications_member_id_members")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_member_notifications")),
        sa.UniqueConstraint("kind", "lot_id", name=op.f("uq_member_notifications_kind_lot_id")),
    )
    op.create_index(op.f("ix_member_notifications_member_id"), "member_notifications", ["member_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_member_notifications_member_id"), table_name="member_notifications")
    op.drop_table("member_notifications")
