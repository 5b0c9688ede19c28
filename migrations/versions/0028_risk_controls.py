"""Risk controls: velocity limits as data, the decisions they give, and failed verifications per till.

Why: a points alliance turns points earned at one merchant into cash at another, so a
scripted till, a stolen card or a colluding merchant drains every partner. The hub now
decides every earn, redemption, card verification and transfer against a policy of
velocity limits (``risk_policy_versions``: one document per version, in force from its
time), counted from rows the hub already writes (purchases, holds, transfers) and from
``verification_failures`` (a till's failed PINs and codes, per card tried), so no counter
row is updated on every request. A decision other than *allow* is kept in
``risk_decisions`` with the limits passed and the figures each saw; a held purchase's lots
are listed in ``risk_held_lots`` and stay pending until a reviewer releases them. Two
indexes let a terminal's and a partner's purchases in a window be counted without a scan.

Revision ID: 0028
Revises: 0027
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

from alliance.models.base import UTCDateTime

revision = "0028"
down_revision = "0027"
branch_labels = None
depends_on = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "risk_policy_versions",
        sa.Column("id", ID, nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("document", sa.JSON(), nullable=False),
        sa.Column("effective_from", UTCDateTime(timezone=True), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("created_by", sa.String(length=200), nullable=False),
        sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
        sa.CheckConstraint("version >= 1", name=op.f("ck_risk_policy_versions_version_positive")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_risk_policy_versions")),
        sa.UniqueConstraint("version", name=op.f("uq_risk_policy_versions_version")),
        sa.UniqueConstraint("effective_from", name=op.f("uq_risk_policy_versions_effective_from")),
    )
    op.create_table(
        "risk_decisions",
        sa.Column("id", ID, nullable=False),
        sa.Column("token", sa.String(length=16), nullable=False),
        sa.Column("decided_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("operation", sa.String(length=20), nullable=False),
        sa.Column("action", sa.String(length=10), nullable=False),
        sa.Column("policy_version", sa.Integer(), nullable=True),
        sa.Column("partner_id", ID, nullable=True),
        sa.Column("terminal_id", ID, nullable=True),
        sa.Column("member_id", ID, nullable=True),
        sa.Column("card_id", ID, nullable=True),
        sa.Column("reference", sa.String(length=64), nullable=True),
        sa.Column("points", sa.BigInteger(), nullable=False),
        sa.Column("evidence", sa.JSON(), nullable=False),
        sa.Column("review_status", sa.String(length=10), nullable=False),
        sa.Column("reviewed_by", sa.String(length=200), nullable=True),
        sa.Column("reviewed_at", UTCDateTime(timezone=True), nullable=True),
        sa.Column("review_note", sa.Text(), nullable=True),
        sa.Column("proposed_action", sa.String(length=10), nullable=True),
        sa.Column("proposed_by", sa.String(length=200), nullable=True),
        sa.Column("proposed_at", UTCDateTime(timezone=True), nullable=True),
        sa.Column("proposed_note", sa.Text(), nullable=True),
        sa.CheckConstraint("operation IN ('earn', 'redeem', 'verification', 'transfer', 'refund')",
                           name=op.f("ck_risk_decisions_operation")),
        sa.CheckConstraint("action IN ('flag', 'hold', 'refuse')", name=op.f("ck_risk_decisions_action")),
        sa.CheckConstraint("review_status IN ('open', 'released', 'reversed', 'dismissed', 'confirmed')",
                           name=op.f("ck_risk_decisions_review_status")),
        sa.CheckConstraint("points >= 0", name=op.f("ck_risk_decisions_points_not_negative")),
        sa.ForeignKeyConstraint(["partner_id"], ["partners.id"], name=op.f("fk_risk_decisions_partner_id_partners")),
        sa.ForeignKeyConstraint(["terminal_id"], ["terminals.id"],
                                name=op.f("fk_risk_decisions_terminal_id_terminals")),
        sa.ForeignKeyConstraint(["member_id"], ["members.id"], name=op.f("fk_risk_decisions_member_id_members")),
        sa.ForeignKeyConstraint(["card_id"], ["cards.id"], name=op.f("fk_risk_decisions_card_id_cards")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_risk_decisions")),
        sa.UniqueConstraint("token", name=op.f("uq_risk_decisions_token")),
    )
    op.create_index("ix_risk_decisions_review_decided", "risk_decisions", ["review_status", "decided_at"])
    op.create_index("ix_risk_decisions_member", "risk_decisions", ["member_id"])
    op.create_index("ix_risk_decisions_terminal", "risk_decisions", ["terminal_id"])
    op.create_table(
        "risk_held_lots",
        sa.Column("lot_id", ID, nullable=False),
        sa.Column("decision_id", ID, nullable=False),
        sa.ForeignKeyConstraint(["lot_id"], ["point_lots.id"], name=op.f("fk_risk_held_lots_lot_id_point_lots")),
        sa.ForeignKeyConstraint(["decision_id"], ["risk_decisions.id"],
                                name=op.f("fk_risk_held_lots_decision_id_risk_decisions")),
        sa.PrimaryKeyConstraint("lot_id", name=op.f("pk_risk_held_lots")),
    )
    op.create_index("ix_risk_held_lots_decision", "risk_held_lots", ["decision_id"])
    op.create_table(
        "verification_failures",
        sa.Column("id", ID, nullable=False),
        sa.Column("failed_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("partner_id", ID, nullable=False),
        sa.Column("terminal_id", ID, nullable=True),
        sa.Column("tried", sa.String(length=64), nullable=False),
        sa.Column("method", sa.String(length=10), nullable=False),
        sa.CheckConstraint("method IN ('pin', 'code')", name=op.f("ck_verification_failures_method")),
        sa.ForeignKeyConstraint(["partner_id"], ["partners.id"],
                                name=op.f("fk_verification_failures_partner_id_partners")),
        sa.ForeignKeyConstraint(["terminal_id"], ["terminals.id"],
                                name=op.f("fk_verification_failures_terminal_id_terminals")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_verification_failures")),
    )
    op.create_index("ix_verification_failures_terminal_failed", "verification_failures", ["terminal_id", "failed_at"])
    op.create_index("ix_verification_failures_partner_failed", "verification_failures", ["partner_id", "failed_at"])
    op.create_index("ix_purchases_terminal_reported", "purchases", ["terminal_id", "reported_at"])
    op.create_index("ix_purchases_partner_reported", "purchases", ["partner_id", "reported_at"])
    op.create_index("ix_redemption_holds_terminal_created", "redemption_holds", ["terminal_id", "created_at"])
    op.create_index("ix_redemption_holds_partner_created", "redemption_holds", ["partner_id", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_redemption_holds_partner_created", table_name="redemption_holds")
    op.drop_index("ix_redemption_holds_terminal_created", table_name="redemption_holds")
    op.drop_index("ix_purchases_partner_reported", table_name="purchases")
    op.drop_index("ix_purchases_terminal_reported", table_name="purchases")
    op.drop_index("ix_verification_failures_partner_failed", table_name="verification_failures")
    op.drop_index("ix_verification_failures_terminal_failed", table_name="verification_failures")
    op.drop_table("verification_failures")
    op.drop_index("ix_risk_held_lots_decision", table_name="risk_held_lots")
    op.drop_table("risk_held_lots")
    op.drop_index("ix_risk_decisions_terminal", table_name="risk_decisions")
    op.drop_index("ix_risk_decisions_member", table_name="risk_decisions")
    op.drop_index("ix_risk_decisions_review_decided", table_name="risk_decisions")
    op.drop_table("risk_decisions")
    op.drop_table("risk_policy_versions")
