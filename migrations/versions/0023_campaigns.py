"""Campaigns an operator runs: stop early, joint funders, targeting, a budget, and awards.

Why: campaigns could only be created. An operator now stops one early (``stopped_at``,
``stop_reason``), splits a joint campaign's bonus between named partners by shares in
basis points (``campaign_funders``; ``funded_by = 'joint'``), targets tiers, tenure and a
segment (the members listed in ``campaign_segment_members``), and caps a campaign by a
budget in points (``budget_points``, with ``budget_used_points`` counted under the
campaign's row lock and a check that it never passes the budget). ``campaign_awards``
records which campaign gave which points on which purchase, and who paid them.

Revision ID: 0023
Revises: 0022
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

from alliance.models.base import UTCDateTime

revision = "0023"
down_revision = "0022"
branch_labels = None
depends_on = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("campaigns") as batch:
        batch.add_column(sa.Column("stopped_at", UTCDateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("stop_reason", sa.Text(), nullable=True))
        batch.add_column(sa.Column("budget_points", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("budget_used_points", sa.BigInteger(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("target_tiers", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("min_tenure_months", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("segment_name", sa.String(length=100), nullable=True))
        batch.drop_constraint(op.f("ck_campaigns_funded_by"), type_="check")
        batch.drop_constraint(op.f("ck_campaigns_partner_funds_own"), type_="check")
        batch.create_check_constraint("funded_by", "funded_by IN ('partner', 'hub', 'joint')")
        batch.create_check_constraint("partner_funds_own", "funded_by <> 'partner' OR partner_id IS NOT NULL")
        batch.create_check_constraint(
            "budget", "budget_points IS NULL OR (budget_points > 0 AND budget_used_points <= budget_points)")
        batch.create_check_constraint("tenure", "min_tenure_months IS NULL OR min_tenure_months >= 0")
    op.create_table(
        "campaign_funders",
        sa.Column("campaign_id", ID, nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("partner_id", ID, nullable=False),
        sa.Column("share_bp", sa.Integer(), nullable=False),
        sa.CheckConstraint("share_bp > 0 AND share_bp <= 10000", name=op.f("ck_campaign_funders_share")),
        sa.CheckConstraint("position >= 0", name=op.f("ck_campaign_funders_position")),
        sa.ForeignKeyConstraint(["campaign_id"], ["campaigns.id"],
                                name=op.f("fk_campaign_funders_campaign_id_campaigns")),
        sa.ForeignKeyConstraint(["partner_id"], ["partners.id"], name=op.f("fk_campaign_funders_partner_id_partners")),
        sa.PrimaryKeyConstraint("campaign_id", "position", name=op.f("pk_campaign_funders")),
        sa.UniqueConstraint("campaign_id", "partner_id", name=op.f("uq_campaign_funders_campaign_id_partner_id")),
    )
    op.create_table(
        "campaign_segment_members",
        sa.Column("member_id", ID, nullable=False),
        sa.Column("campaign_id", ID, nullable=False),
        sa.ForeignKeyConstraint(["member_id"], ["members.id"],
                                name=op.f("fk_campaign_segment_members_member_id_members")),
        sa.ForeignKeyConstraint(["campaign_id"], ["campaigns.id"],
                                name=op.f("fk_campaign_segment_members_campaign_id_campaigns")),
        sa.PrimaryKeyConstraint("member_id", "campaign_id", name=op.f("pk_campaign_segment_members")),
    )
    op.create_table(
        "campaign_awards",
        sa.Column("member_id", ID, nullable=False),
        sa.Column("purchase_id", ID, nullable=False),
        sa.Column("campaign_id", ID, nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("funder_partner_id", ID, nullable=True),
        sa.Column("points", sa.BigInteger(), nullable=False),
        sa.Column("transaction_id", ID, nullable=True),
        sa.Column("awarded_at", UTCDateTime(timezone=True), nullable=False),
        sa.CheckConstraint("points > 0", name=op.f("ck_campaign_awards_points_positive")),
        sa.ForeignKeyConstraint(["member_id"], ["members.id"], name=op.f("fk_campaign_awards_member_id_members")),
        sa.ForeignKeyConstraint(["campaign_id"], ["campaigns.id"],
                                name=op.f("fk_campaign_awards_campaign_id_campaigns")),
        sa.ForeignKeyConstraint(["funder_partner_id"], ["partners.id"],
                                name=op.f("fk_campaign_awards_funder_partner_id_partners")),
        sa.PrimaryKeyConstraint("member_id", "purchase_id", "campaign_id", "position",
                                name=op.f("pk_campaign_awards")),
    )
    op.create_index(op.f("ix_campaign_awards_campaign_id"), "campaign_awards", ["campaign_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_campaign_awards_campaign_id"), table_name="campaign_awards")
    op.drop_table("campaign_awards")
    op.drop_table("campaign_segment_members")
    op.drop_table("campaign_funders")
    op.execute("DELETE FROM campaigns WHERE funded_by = 'joint'")
    with op.batch_alter_table("campaigns") as batch:
        batch.drop_constraint(op.f("ck_campaigns_tenure"), type_="check")
        batch.drop_constraint(op.f("ck_campaigns_budget"), type_="check")
        batch.drop_constraint(op.f("ck_campaigns_partner_funds_own"), type_="check")
        batch.drop_constraint(op.f("ck_campaigns_funded_by"), type_="check")
        batch.create_check_constraint("funded_by", "funded_by IN ('partner', 'hub')")
        batch.create_check_constraint("partner_funds_own", "funded_by = 'hub' OR partner_id IS NOT NULL")
        for column in ("segment_name", "min_tenure_months", "target_tiers", "budget_used_points", "budget_points",
                       "stop_reason", "stopped_at"):
            batch.drop_column(column)
