"""Risk pattern rules: the schemes velocity limits do not see, their terms as data, and partners' amount profiles.

Why: a velocity limit counts one kind of operation in one scope; an earn-then-burn loop
between two colluding tills, a refund after the points were spent elsewhere, a purchase
split to dodge the per-purchase cap, a chain of transfers from new members into one, or
an amount far above what a partner ever sells, each looks ordinary counted alone.
``risk_pattern_rules`` holds an operator's change of a pattern's terms, action or switch
(the built-in defaults apply while a pattern has no row). ``risk_pattern_sightings``
remembers each time a pattern that counts across cards saw its scheme (an earn-then-burn
loop per pair of tills), so the next sighting is counted without re-reading history.
``partner_amount_profiles`` is each partner's purchase amounts over the last 90 days
(count, mean, standard deviation), computed daily by the ``profile-partner-amounts`` job
and read with one primary-key read when a purchase is reported.

Revision ID: 0029
Revises: 0028
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

from alliance.models.base import UTCDateTime

revision = "0029"
down_revision = "0028"
branch_labels = None
depends_on = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "risk_pattern_rules",
        sa.Column("name", sa.String(length=40), nullable=False),
        sa.Column("terms", sa.JSON(), nullable=False),
        sa.Column("action", sa.String(length=10), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("updated_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_by", sa.String(length=200), nullable=False),
        sa.CheckConstraint("action IN ('flag', 'hold', 'refuse')", name=op.f("ck_risk_pattern_rules_action")),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_risk_pattern_rules")),
    )
    op.create_table(
        "risk_pattern_sightings",
        sa.Column("id", ID, nullable=False),
        sa.Column("pattern", sa.String(length=40), nullable=False),
        sa.Column("subject", sa.String(length=100), nullable=False),
        sa.Column("card_id", ID, nullable=False),
        sa.Column("seen_at", UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["card_id"], ["cards.id"], name=op.f("fk_risk_pattern_sightings_card_id_cards")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_risk_pattern_sightings")),
    )
    op.create_index("ix_risk_pattern_sightings_subject_seen", "risk_pattern_sightings",
                    ["pattern", "subject", "seen_at"])
    op.create_table(
        "partner_amount_profiles",
        sa.Column("partner_id", ID, nullable=False),
        sa.Column("purchases", sa.Integer(), nullable=False),
        sa.Column("mean_minor", sa.BigInteger(), nullable=False),
        sa.Column("stddev_minor", sa.BigInteger(), nullable=False),
        sa.Column("since", UTCDateTime(timezone=True), nullable=False),
        sa.Column("computed_at", UTCDateTime(timezone=True), nullable=False),
        sa.CheckConstraint("purchases >= 0", name=op.f("ck_partner_amount_profiles_purchases_not_negative")),
        sa.ForeignKeyConstraint(["partner_id"], ["partners.id"],
                                name=op.f("fk_partner_amount_profiles_partner_id_partners")),
        sa.PrimaryKeyConstraint("partner_id", name=op.f("pk_partner_amount_profiles")),
    )


def downgrade() -> None:
    op.drop_table("partner_amount_profiles")
    op.drop_index("ix_risk_pattern_sightings_subject_seen", table_name="risk_pattern_sightings")
    op.drop_table("risk_pattern_sightings")
    op.drop_table("risk_pattern_rules")
