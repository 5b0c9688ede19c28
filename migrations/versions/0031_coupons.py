"""Partner coupons: series, coupons issued to members, and their uses.

Why: a partner (or the hub) sends chosen members coupons (a fixed bonus, a multiplier on
a purchase, or an amount off paid for in points) that a till presents in the same signed
call as the purchase or redemption they apply to. ``coupon_series`` holds each offer and
its funder (NULL: the hub), ``coupon_series_partners`` where it may be used (no rows:
everywhere), ``coupons`` one per member and series with its own code and its use count
(kept within ``uses_allowed`` by a check), ``coupon_uses`` each use with the purchase or
redemption hold it went with. No existing table is altered.

Revision ID: 0031
Revises: 0030
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

from alliance.models.base import ExactDecimal, UTCDateTime

revision = "0031"
down_revision = "0030"
branch_labels = None
depends_on = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TERMS = (
    "(kind = 'bonus' AND bonus_points > 0 AND multiplier IS NULL AND amount_off_minor IS NULL"
    " AND points_cost IS NULL)"
    " OR (kind = 'multiplier' AND multiplier > 1 AND bonus_points IS NULL AND amount_off_minor IS NULL"
    " AND points_cost IS NULL)"
    " OR (kind = 'amount_off' AND amount_off_minor > 0 AND currency IS NOT NULL AND points_cost > 0"
    " AND bonus_points IS NULL AND multiplier IS NULL)"
)


def upgrade() -> None:
    op.create_table(
        "coupon_series",
        sa.Column("id", ID, nullable=False),
        sa.Column("code", sa.String(length=64), nullable=False),
        sa.Column("title", sa.String(length=200), nullable=False),
        sa.Column("funder_partner_id", ID, nullable=True),
        sa.Column("kind", sa.String(length=12), nullable=False),
        sa.Column("bonus_points", sa.BigInteger(), nullable=True),
        sa.Column("multiplier", ExactDecimal(precision=20, scale=8), nullable=True),
        sa.Column("amount_off_minor", sa.BigInteger(), nullable=True),
        sa.Column("currency", sa.String(length=3), nullable=True),
        sa.Column("points_cost", sa.BigInteger(), nullable=True),
        sa.Column("valid_from", UTCDateTime(timezone=True), nullable=False),
        sa.Column("valid_until", UTCDateTime(timezone=True), nullable=False),
        sa.Column("uses_per_coupon", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=8), nullable=False),
        sa.Column("stopped_reason", sa.Text(), nullable=True),
        sa.Column("stopped_by", sa.String(length=200), nullable=True),
        sa.Column("stopped_at", UTCDateTime(timezone=True), nullable=True),
        sa.Column("created_by", sa.String(length=200), nullable=False),
        sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
        sa.CheckConstraint("kind IN ('bonus', 'multiplier', 'amount_off')", name=op.f("ck_coupon_series_kind")),
        sa.CheckConstraint("status IN ('active', 'stopped')", name=op.f("ck_coupon_series_status")),
        sa.CheckConstraint(TERMS, name=op.f("ck_coupon_series_terms_of_kind")),
        sa.CheckConstraint("valid_until > valid_from", name=op.f("ck_coupon_series_validity")),
        sa.CheckConstraint("uses_per_coupon >= 1", name=op.f("ck_coupon_series_uses_positive")),
        sa.CheckConstraint("(status = 'stopped') = (stopped_at IS NOT NULL)",
                           name=op.f("ck_coupon_series_stopped_when_stopped")),
        sa.ForeignKeyConstraint(["funder_partner_id"], ["partners.id"],
                                name=op.f("fk_coupon_series_funder_partner_id_partners")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_coupon_series")),
        sa.UniqueConstraint("code", name=op.f("uq_coupon_series_code")),
    )
    op.create_table(
        "coupon_series_partners",
        sa.Column("series_id", ID, nullable=False),
        sa.Column("partner_id", ID, nullable=False),
        sa.ForeignKeyConstraint(["series_id"], ["coupon_series.id"],
                                name=op.f("fk_coupon_series_partners_series_id_coupon_series")),
        sa.ForeignKeyConstraint(["partner_id"], ["partners.id"],
                                name=op.f("fk_coupon_series_partners_partner_id_partners")),
        sa.PrimaryKeyConstraint("series_id", "partner_id", name=op.f("pk_coupon_series_partners")),
    )
    op.create_table(
        "coupons",
        sa.Column("id", ID, nullable=False),
        sa.Column("series_id", ID, nullable=False),
        sa.Column("member_id", ID, nullable=False),
        sa.Column("code", sa.String(length=16), nullable=False),
        sa.Column("uses_allowed", sa.Integer(), nullable=False),
        sa.Column("uses", sa.Integer(), nullable=False),
        sa.Column("issued_by", sa.String(length=200), nullable=False),
        sa.Column("issued_at", UTCDateTime(timezone=True), nullable=False),
        sa.CheckConstraint("uses >= 0 AND uses <= uses_allowed", name=op.f("ck_coupons_uses_in_range")),
        sa.ForeignKeyConstraint(["series_id"], ["coupon_series.id"], name=op.f("fk_coupons_series_id_coupon_series")),
        sa.ForeignKeyConstraint(["member_id"], ["members.id"], name=op.f("fk_coupons_member_id_members")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_coupons")),
        sa.UniqueConstraint("code", name=op.f("uq_coupons_code")),
        sa.UniqueConstraint("series_id", "member_id", name=op.f("uq_coupons_series_id_member_id")),
    )
    op.create_index("ix_coupons_member_id", "coupons", ["member_id"])
    op.create_table(
        "coupon_uses",
        sa.Column("id", ID, nullable=False),
        sa.Column("coupon_id", ID, nullable=False),
        sa.Column("series_id", ID, nullable=False),
        sa.Column("member_id", ID, nullable=False),
        sa.Column("partner_id", ID, nullable=False),
        sa.Column("purchase_id", ID, nullable=True),
        sa.Column("hold_id", ID, nullable=True),
        sa.Column("points", sa.BigInteger(), nullable=False),
        sa.Column("amount_off_minor", sa.BigInteger(), nullable=True),
        sa.Column("transaction_id", ID, nullable=True),
        sa.Column("used_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("returned_at", UTCDateTime(timezone=True), nullable=True),
        sa.CheckConstraint("(purchase_id IS NULL) <> (hold_id IS NULL)", name=op.f("ck_coupon_uses_one_subject")),
        sa.CheckConstraint("points > 0", name=op.f("ck_coupon_uses_points_positive")),
        sa.ForeignKeyConstraint(["coupon_id"], ["coupons.id"], name=op.f("fk_coupon_uses_coupon_id_coupons")),
        sa.ForeignKeyConstraint(["series_id"], ["coupon_series.id"],
                                name=op.f("fk_coupon_uses_series_id_coupon_series")),
        sa.ForeignKeyConstraint(["member_id"], ["members.id"], name=op.f("fk_coupon_uses_member_id_members")),
        sa.ForeignKeyConstraint(["partner_id"], ["partners.id"], name=op.f("fk_coupon_uses_partner_id_partners")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_coupon_uses")),
    )
    op.create_index("ix_coupon_uses_coupon_id", "coupon_uses", ["coupon_id"])
    op.create_index("ix_coupon_uses_series_id", "coupon_uses", ["series_id"])
    op.create_index("uq_coupon_uses_member_id_purchase_id", "coupon_uses", ["member_id", "purchase_id"], unique=True)
    op.create_index("uq_coupon_uses_member_id_hold_id", "coupon_uses", ["member_id", "hold_id"], unique=True)


def downgrade() -> None:
    op.drop_table("coupon_uses")
    op.drop_table("coupons")
    op.drop_table("coupon_series_partners")
    op.drop_table("coupon_series")
