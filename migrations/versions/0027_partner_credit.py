"""Partners' credit exposure: a limit per partner, its snapshot, limit changes and alerts.

Why: a partner is charged for the points it issues on its next statement and pays
later, so the hub lends it money until then. ``partner_credit`` keeps each partner's
limit (NULL: none), where its warning band starts, and the exposure and state (ok, warning, over) last computed by
``settlement.credit``; the signed earn reads the state inside a read it already makes
and refuses new issuance when it is ``over``. ``partner_credit_limit_changes`` records
every limit asked for and who decided it (a raise or a removal needs a second person);
``partner_credit_alerts`` each entry into the warning band or past the limit.

Revision ID: 0027
Revises: 0026
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

from alliance.models.base import UTCDateTime

revision = "0027"
down_revision = "0026"
branch_labels = None
depends_on = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "partner_credit",
        sa.Column("partner_id", ID, nullable=False),
        sa.Column("limit_minor", sa.BigInteger(), nullable=True),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("warning_minor", sa.BigInteger(), nullable=True),
        sa.Column("exposure_minor", sa.BigInteger(), nullable=False),
        sa.Column("state", sa.String(length=8), nullable=False),
        sa.Column("computed_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("warned_at", UTCDateTime(timezone=True), nullable=True),
        sa.CheckConstraint("state IN ('ok', 'warning', 'over')", name=op.f("ck_partner_credit_state")),
        sa.CheckConstraint("limit_minor IS NULL OR limit_minor >= 0",
                           name=op.f("ck_partner_credit_limit_not_negative")),
        sa.CheckConstraint("exposure_minor >= 0", name=op.f("ck_partner_credit_exposure_not_negative")),
        sa.CheckConstraint("limit_minor IS NOT NULL OR state = 'ok'", name=op.f("ck_partner_credit_no_limit_is_ok")),
        sa.CheckConstraint("(limit_minor IS NULL) = (warning_minor IS NULL)",
                           name=op.f("ck_partner_credit_warning_with_limit")),
        sa.ForeignKeyConstraint(["partner_id"], ["partners.id"], name=op.f("fk_partner_credit_partner_id_partners")),
        sa.PrimaryKeyConstraint("partner_id", name=op.f("pk_partner_credit")),
    )
    op.create_table(
        "partner_credit_limit_changes",
        sa.Column("id", ID, nullable=False),
        sa.Column("partner_id", ID, nullable=False),
        sa.Column("limit_minor", sa.BigInteger(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("requested_by", sa.String(length=200), nullable=False),
        sa.Column("requested_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("decided_by", sa.String(length=200), nullable=True),
        sa.Column("decided_at", UTCDateTime(timezone=True), nullable=True),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.CheckConstraint("status IN ('pending', 'approved', 'rejected')",
                           name=op.f("ck_partner_credit_limit_changes_status")),
        sa.CheckConstraint("limit_minor IS NULL OR limit_minor >= 0",
                           name=op.f("ck_partner_credit_limit_changes_limit_not_negative")),
        sa.CheckConstraint("length(reason) > 0", name=op.f("ck_partner_credit_limit_changes_reason_given")),
        sa.CheckConstraint("(status = 'pending') = (decided_at IS NULL)",
                           name=op.f("ck_partner_credit_limit_changes_decided_when_decided")),
        sa.ForeignKeyConstraint(["partner_id"], ["partners.id"],
                                name=op.f("fk_partner_credit_limit_changes_partner_id_partners")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_partner_credit_limit_changes")),
    )
    op.create_index("ix_partner_credit_limit_changes_partner_status", "partner_credit_limit_changes",
                    ["partner_id", "status"])
    op.create_table(
        "partner_credit_alerts",
        sa.Column("id", ID, nullable=False),
        sa.Column("partner_id", ID, nullable=False),
        sa.Column("state", sa.String(length=8), nullable=False),
        sa.Column("exposure_minor", sa.BigInteger(), nullable=False),
        sa.Column("limit_minor", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("raised_at", UTCDateTime(timezone=True), nullable=False),
        sa.CheckConstraint("state IN ('warning', 'over')", name=op.f("ck_partner_credit_alerts_state")),
        sa.ForeignKeyConstraint(["partner_id"], ["partners.id"],
                                name=op.f("fk_partner_credit_alerts_partner_id_partners")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_partner_credit_alerts")),
    )
    op.create_index("ix_partner_credit_alerts_partner_raised", "partner_credit_alerts", ["partner_id", "raised_at"])


def downgrade() -> None:
    op.drop_index("ix_partner_credit_alerts_partner_raised", table_name="partner_credit_alerts")
    op.drop_table("partner_credit_alerts")
    op.drop_index("ix_partner_credit_limit_changes_partner_status", table_name="partner_credit_limit_changes")
    op.drop_table("partner_credit_limit_changes")
    op.drop_table("partner_credit")
