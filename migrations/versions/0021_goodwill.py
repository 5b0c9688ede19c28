"""Goodwill credits and corrections by customer service, with four eyes above a threshold.

Why: customer service credits a member points as goodwill (tied to one of the member's
complaints, funded by the hub or charged to a named partner) and takes back points
credited by mistake. Above ``ALLIANCE_GOODWILL_APPROVAL_THRESHOLD_POINTS`` a request
waits for a second person; ``goodwill_requests`` keeps every request, who asked, who
decided and when it was posted. The points move in the ledger as earns and claw-backs,
so nothing else changes.

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

from alliance.models.base import UTCDateTime

revision = "0021"
down_revision = "0020"
branch_labels = None
depends_on = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "goodwill_requests",
        sa.Column("id", ID, nullable=False),
        sa.Column("member_id", ID, nullable=False),
        sa.Column("direction", sa.String(length=6), nullable=False),
        sa.Column("points", sa.BigInteger(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("complaint_id", ID, nullable=True),
        sa.Column("reference", sa.String(length=64), nullable=True),
        sa.Column("partner_id", ID, nullable=True),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("requested_by", sa.String(length=200), nullable=False),
        sa.Column("requested_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("decided_by", sa.String(length=200), nullable=True),
        sa.Column("decided_at", UTCDateTime(timezone=True), nullable=True),
        sa.Column("posted_at", UTCDateTime(timezone=True), nullable=True),
        sa.CheckConstraint("direction IN ('credit', 'debit')", name=op.f("ck_goodwill_requests_direction")),
        sa.CheckConstraint("status IN ('pending', 'posted', 'rejected')", name=op.f("ck_goodwill_requests_status")),
        sa.CheckConstraint("points > 0", name=op.f("ck_goodwill_requests_points_positive")),
        sa.CheckConstraint("direction = 'debit' OR complaint_id IS NOT NULL",
                           name=op.f("ck_goodwill_requests_credit_names_complaint")),
        sa.CheckConstraint("complaint_id IS NOT NULL OR reference IS NOT NULL",
                           name=op.f("ck_goodwill_requests_names_why")),
        sa.CheckConstraint("direction = 'credit' OR partner_id IS NULL",
                           name=op.f("ck_goodwill_requests_debit_has_no_funder")),
        sa.CheckConstraint("decided_by IS NULL OR decided_by <> requested_by",
                           name=op.f("ck_goodwill_requests_second_person")),
        sa.CheckConstraint("(status = 'posted') = (posted_at IS NOT NULL)",
                           name=op.f("ck_goodwill_requests_posted_when_posted")),
        sa.ForeignKeyConstraint(["member_id"], ["members.id"], name=op.f("fk_goodwill_requests_member_id_members")),
        sa.ForeignKeyConstraint(["complaint_id"], ["complaints.id"],
                                name=op.f("fk_goodwill_requests_complaint_id_complaints")),
        sa.ForeignKeyConstraint(["partner_id"], ["partners.id"], name=op.f("fk_goodwill_requests_partner_id_partners")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_goodwill_requests")),
    )
    op.create_index("ix_goodwill_requests_member_id", "goodwill_requests", ["member_id"])
    op.create_index("ix_goodwill_requests_status_requested", "goodwill_requests", ["status", "requested_at"])


def downgrade() -> None:
    op.drop_index("ix_goodwill_requests_status_requested", table_name="goodwill_requests")
    op.drop_index("ix_goodwill_requests_member_id", table_name="goodwill_requests")
    op.drop_table("goodwill_requests")
