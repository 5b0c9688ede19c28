"""Behaviour points: rules per event type, the events partners report, and the awards they gave.

Why: points came only from purchases. The operator (or a partner) now rewards daily
sign-ins (with a streak bonus), referrals (both sides, once the referred member's first
purchase lands), surveys, self-service, recharges and bill payments. ``behaviour_rules``
holds one rule per event type (points, funder, caps, eligibility, active period);
``behaviour_events`` each reported event once per (partner, event id); ``behaviour_awards``
each member's points for an event with the journal transaction that posted them. The
points move in the ledger as earns, so settlement needs nothing new.

Revision ID: 0024
Revises: 0023
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

from alliance.models.base import UTCDateTime

revision = "0024"
down_revision = "0023"
branch_labels = None
depends_on = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
EVENT_TYPES_SQL = "('sign_in', 'referral', 'survey', 'self_service', 'recharge', 'bill_payment')"


def upgrade() -> None:
    op.create_table(
        "behaviour_rules",
        sa.Column("id", ID, nullable=False),
        sa.Column("event_type", sa.String(length=20), nullable=False),
        sa.Column("points", sa.BigInteger(), nullable=False),
        sa.Column("per_amount_minor", sa.BigInteger(), nullable=True),
        sa.Column("currency", sa.String(length=3), nullable=True),
        sa.Column("referred_points", sa.BigInteger(), nullable=False),
        sa.Column("streak_days", sa.Integer(), nullable=True),
        sa.Column("streak_bonus_points", sa.BigInteger(), nullable=False),
        sa.Column("funded_by", sa.String(length=10), nullable=False),
        sa.Column("funding_partner_id", ID, nullable=True),
        sa.Column("cap_per_day", sa.BigInteger(), nullable=True),
        sa.Column("cap_per_month", sa.BigInteger(), nullable=True),
        sa.Column("eligible_tiers", sa.JSON(), nullable=True),
        sa.Column("min_tenure_months", sa.Integer(), nullable=False),
        sa.Column("starts_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("ends_at", UTCDateTime(timezone=True), nullable=True),
        sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", UTCDateTime(timezone=True), nullable=False),
        sa.CheckConstraint(f"event_type IN {EVENT_TYPES_SQL}", name=op.f("ck_behaviour_rules_event_type")),
        sa.CheckConstraint("points >= 0 AND referred_points >= 0 AND streak_bonus_points >= 0",
                           name=op.f("ck_behaviour_rules_points_not_negative")),
        sa.CheckConstraint("per_amount_minor IS NULL OR per_amount_minor > 0",
                           name=op.f("ck_behaviour_rules_per_amount_positive")),
        sa.CheckConstraint("(per_amount_minor IS NULL) = (currency IS NULL)",
                           name=op.f("ck_behaviour_rules_amount_has_currency")),
        sa.CheckConstraint("funded_by IN ('hub', 'reporter', 'partner')", name=op.f("ck_behaviour_rules_funded_by")),
        sa.CheckConstraint("(funded_by = 'partner') = (funding_partner_id IS NOT NULL)",
                           name=op.f("ck_behaviour_rules_named_funder")),
        sa.CheckConstraint("cap_per_day IS NULL OR cap_per_day >= 0", name=op.f("ck_behaviour_rules_cap_per_day")),
        sa.CheckConstraint("cap_per_month IS NULL OR cap_per_month >= 0",
                           name=op.f("ck_behaviour_rules_cap_per_month")),
        sa.CheckConstraint("streak_days IS NULL OR streak_days >= 2", name=op.f("ck_behaviour_rules_streak_days")),
        sa.CheckConstraint("min_tenure_months >= 0", name=op.f("ck_behaviour_rules_min_tenure")),
        sa.CheckConstraint("ends_at IS NULL OR ends_at > starts_at", name=op.f("ck_behaviour_rules_period")),
        sa.ForeignKeyConstraint(["funding_partner_id"], ["partners.id"],
                                name=op.f("fk_behaviour_rules_funding_partner_id_partners")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_behaviour_rules")),
        sa.UniqueConstraint("event_type", name=op.f("uq_behaviour_rules_event_type")),
    )
    op.create_table(
        "behaviour_events",
        sa.Column("id", ID, nullable=False),
        sa.Column("partner_id", ID, nullable=False),
        sa.Column("event_id", sa.String(length=64), nullable=False),
        sa.Column("event_type", sa.String(length=20), nullable=False),
        sa.Column("member_id", ID, nullable=False),
        sa.Column("occurred_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("local_day", sa.Date(), nullable=False),
        sa.Column("amount_minor", sa.BigInteger(), nullable=True),
        sa.Column("currency", sa.String(length=3), nullable=True),
        sa.Column("referred_member_id", ID, nullable=True),
        sa.Column("rule_id", ID, nullable=True),
        sa.Column("status", sa.String(length=12), nullable=False),
        sa.Column("reason", sa.String(length=40), nullable=True),
        sa.Column("points_awarded", sa.BigInteger(), nullable=False),
        sa.Column("streak_day", sa.Integer(), nullable=True),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("reported_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("awarded_at", UTCDateTime(timezone=True), nullable=True),
        sa.CheckConstraint(f"event_type IN {EVENT_TYPES_SQL}", name=op.f("ck_behaviour_events_event_type")),
        sa.CheckConstraint("status IN ('awarded', 'not_awarded', 'pending')", name=op.f("ck_behaviour_events_status")),
        sa.CheckConstraint("points_awarded >= 0", name=op.f("ck_behaviour_events_points_not_negative")),
        sa.CheckConstraint("amount_minor IS NULL OR amount_minor > 0",
                           name=op.f("ck_behaviour_events_amount_positive")),
        sa.CheckConstraint("(event_type = 'referral') = (referred_member_id IS NOT NULL)",
                           name=op.f("ck_behaviour_events_referral_names_member")),
        sa.ForeignKeyConstraint(["partner_id"], ["partners.id"], name=op.f("fk_behaviour_events_partner_id_partners")),
        sa.ForeignKeyConstraint(["member_id"], ["members.id"], name=op.f("fk_behaviour_events_member_id_members")),
        sa.ForeignKeyConstraint(["referred_member_id"], ["members.id"],
                                name=op.f("fk_behaviour_events_referred_member_id_members")),
        sa.ForeignKeyConstraint(["rule_id"], ["behaviour_rules.id"],
                                name=op.f("fk_behaviour_events_rule_id_behaviour_rules")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_behaviour_events")),
        sa.UniqueConstraint("partner_id", "event_id", name=op.f("uq_behaviour_events_partner_id_event_id")),
        sa.UniqueConstraint("referred_member_id", name=op.f("uq_behaviour_events_referred_member_id")),
    )
    op.create_index("ix_behaviour_events_member_type_day", "behaviour_events", ["member_id", "event_type", "local_day"])
    op.create_index("ix_behaviour_events_pending", "behaviour_events", ["status", "event_type"])
    op.create_table(
        "behaviour_awards",
        sa.Column("id", ID, nullable=False),
        sa.Column("event_id", ID, nullable=False),
        sa.Column("member_id", ID, nullable=False),
        sa.Column("rule_id", ID, nullable=False),
        sa.Column("side", sa.String(length=10), nullable=False),
        sa.Column("points", sa.BigInteger(), nullable=False),
        sa.Column("streak_bonus_points", sa.BigInteger(), nullable=False),
        sa.Column("funder_partner_id", ID, nullable=True),
        sa.Column("transaction_id", ID, nullable=False),
        sa.Column("local_day", sa.Date(), nullable=False),
        sa.Column("awarded_at", UTCDateTime(timezone=True), nullable=False),
        sa.CheckConstraint("points > 0", name=op.f("ck_behaviour_awards_points_positive")),
        sa.CheckConstraint("side IN ('member', 'referrer', 'referred')", name=op.f("ck_behaviour_awards_side")),
        sa.ForeignKeyConstraint(["event_id"], ["behaviour_events.id"],
                                name=op.f("fk_behaviour_awards_event_id_behaviour_events")),
        sa.ForeignKeyConstraint(["member_id"], ["members.id"], name=op.f("fk_behaviour_awards_member_id_members")),
        sa.ForeignKeyConstraint(["rule_id"], ["behaviour_rules.id"],
                                name=op.f("fk_behaviour_awards_rule_id_behaviour_rules")),
        sa.ForeignKeyConstraint(["funder_partner_id"], ["partners.id"],
                                name=op.f("fk_behaviour_awards_funder_partner_id_partners")),
        sa.ForeignKeyConstraint(["transaction_id"], ["journal_transactions.id"],
                                name=op.f("fk_behaviour_awards_transaction_id_journal_transactions")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_behaviour_awards")),
        sa.UniqueConstraint("event_id", "member_id", name=op.f("uq_behaviour_awards_event_id_member_id")),
    )
    op.create_index("ix_behaviour_awards_member_rule_day", "behaviour_awards", ["member_id", "rule_id", "local_day"])


def downgrade() -> None:
    op.drop_index("ix_behaviour_awards_member_rule_day", table_name="behaviour_awards")
    op.drop_table("behaviour_awards")
    op.drop_index("ix_behaviour_events_pending", table_name="behaviour_events")
    op.drop_index("ix_behaviour_events_member_type_day", table_name="behaviour_events")
    op.drop_table("behaviour_events")
    op.drop_table("behaviour_rules")
