"""Tier policy as data: versions effective at a stated time, and members' tier history.

Why: tiers were fixed in code (spend thresholds 500 / 1,500 / 3,000 currency units over
twelve months, multipliers 1.25 / 1.5 / 2). The hub now sets them as data: the basis
(spend, points or tenure), the window, the downgrade rule and each tier's benefits, in
versions that take effect at a stated time and are kept. Version 1, effective from the
epoch, is the policy that was in code, so existing hubs behave exactly as before.
``member_tier_history`` records every change of a member's tier from now on.

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-06
"""

from datetime import datetime, timezone

import sqlalchemy as sa
from alembic import op

from alliance.models.base import UTCDateTime

revision = "0022"
down_revision = "0021"
branch_labels = None
depends_on = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
BUILT_IN_TIERS = [
    {"tier": "standard", "threshold": 0, "multiplier": "1", "birthday_bonus_points": 0},
    {"tier": "silver", "threshold": 500, "multiplier": "1.25", "birthday_bonus_points": 0},
    {"tier": "gold", "threshold": 1500, "multiplier": "1.5", "birthday_bonus_points": 0},
    {"tier": "diamond", "threshold": 3000, "multiplier": "2", "birthday_bonus_points": 0},
]


def upgrade() -> None:
    versions = op.create_table(
        "tier_policy_versions",
        sa.Column("id", ID, nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("effective_from", UTCDateTime(timezone=True), nullable=False),
        sa.Column("basis", sa.String(length=10), nullable=False),
        sa.Column("window_months", sa.Integer(), nullable=True),
        sa.Column("downgrade", sa.String(length=10), nullable=False),
        sa.Column("period_months", sa.Integer(), nullable=True),
        sa.Column("tiers", sa.JSON(), nullable=False),
        sa.Column("created_by", sa.String(length=200), nullable=False),
        sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
        sa.CheckConstraint("basis IN ('spend', 'points', 'tenure')", name=op.f("ck_tier_policy_versions_basis")),
        sa.CheckConstraint("downgrade IN ('one_step', 'to_earned')", name=op.f("ck_tier_policy_versions_downgrade")),
        sa.CheckConstraint("version >= 1", name=op.f("ck_tier_policy_versions_version_positive")),
        sa.CheckConstraint("(basis = 'tenure') = (window_months IS NULL)",
                           name=op.f("ck_tier_policy_versions_window_unless_tenure")),
        sa.CheckConstraint("window_months IS NULL OR window_months >= 1",
                           name=op.f("ck_tier_policy_versions_window_positive")),
        sa.CheckConstraint("(downgrade = 'one_step') = (period_months IS NOT NULL)",
                           name=op.f("ck_tier_policy_versions_period_for_one_step")),
        sa.CheckConstraint("period_months IS NULL OR period_months >= 1",
                           name=op.f("ck_tier_policy_versions_period_positive")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tier_policy_versions")),
        sa.UniqueConstraint("version", name=op.f("uq_tier_policy_versions_version")),
        sa.UniqueConstraint("effective_from", name=op.f("uq_tier_policy_versions_effective_from")),
    )
    op.create_table(
        "member_tier_history",
        sa.Column("id", ID, nullable=False),
        sa.Column("member_id", ID, nullable=False),
        sa.Column("from_tier", sa.String(length=10), nullable=False),
        sa.Column("to_tier", sa.String(length=10), nullable=False),
        sa.Column("changed_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("policy_version_id", ID, nullable=False),
        sa.Column("reason", sa.String(length=200), nullable=False),
        sa.ForeignKeyConstraint(["member_id"], ["members.id"], name=op.f("fk_member_tier_history_member_id_members")),
        sa.ForeignKeyConstraint(["policy_version_id"], ["tier_policy_versions.id"],
                                name=op.f("fk_member_tier_history_policy_version_id_tier_policy_versions")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_member_tier_history")),
    )
    op.create_index("ix_member_tier_history_member_changed", "member_tier_history", ["member_id", "changed_at"])
    op.bulk_insert(versions, [{
        "version": 1, "effective_from": EPOCH, "basis": "spend", "window_months": 12, "downgrade": "to_earned",
        "period_months": None, "tiers": BUILT_IN_TIERS, "created_by": "migration:0022", "created_at": EPOCH,
    }])


def downgrade() -> None:
    op.drop_index("ix_member_tier_history_member_changed", table_name="member_tier_history")
    op.drop_table("member_tier_history")
    op.drop_table("tier_policy_versions")
