"""Partner coupons: a series (one offer), the coupons issued from it (one per member) and their uses.

``coupon_series`` holds the offer: who funds it (a partner, or NULL for the hub), its
kind (``bonus``: fixed points on the purchase; ``multiplier``: the purchase's base
points times an exact decimal; ``amount_off``: money off paid for with stated points at
a redemption), its validity and how many times each coupon may be used.
``coupon_series_partners`` lists where a series may be used; a series without rows is
valid at every partner (a hub series issued without a list). ``coupons`` holds one row
per member and series, each with its own code, and the uses counted so far: the count
is raised by a conditional update and its check keeps it within ``uses_allowed`` (the
series' uses per coupon, copied at issue). ``coupon_uses`` records each use, naming the
purchase or the redemption hold it was presented with; an amount_off use whose hold was
voided or expired is given back (``returned_at``) and its count taken off.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from alliance.models.base import Base, ExactDecimal, IdType, UTCDateTime

COUPON_KINDS = ("bonus", "multiplier", "amount_off")
SERIES_STATUSES = ("active", "stopped")


class CouponSeries(Base):
    """One coupon offer: its kind and terms, its funder, its validity and its status."""

    __tablename__ = "coupon_series"
    __table_args__ = (
        CheckConstraint("kind IN ('bonus', 'multiplier', 'amount_off')", name="kind"),
        CheckConstraint("status IN ('active', 'stopped')", name="status"),
        CheckConstraint(
            "(kind = 'bonus' AND bonus_points > 0 AND multiplier IS NULL AND amount_off_minor IS NULL"
            " AND points_cost IS NULL)"
            " OR (kind = 'multiplier' AND multiplier > 1 AND bonus_points IS NULL AND amount_off_minor IS NULL"
            " AND points_cost IS NULL)"
            " OR (kind = 'amount_off' AND amount_off_minor > 0 AND currency IS NOT NULL AND points_cost > 0"
            " AND bonus_points IS NULL AND multiplier IS NULL)",
            name="terms_of_kind"),
        CheckConstraint("valid_until > valid_from", name="validity"),
        CheckConstraint("uses_per_coupon >= 1", name="uses_positive"),
        CheckConstraint("(status = 'stopped') = (stopped_at IS NOT NULL)", name="stopped_when_stopped"),
    )

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    code: Mapped[str] = mapped_column(String(64), unique=True)
    title: Mapped[str] = mapped_column(String(200))
    # NULL: the hub funds it from its marketing account.
    funder_partner_id: Mapped[int | None] = mapped_column(ForeignKey("partners.id"))
    kind: Mapped[str] = mapped_column(String(12))
    bonus_points: Mapped[int | None] = mapped_column(BigInteger)
    multiplier: Mapped[Decimal | None] = mapped_column(ExactDecimal())
    amount_off_minor: Mapped[int | None] = mapped_column(BigInteger)
    currency: Mapped[str | None] = mapped_column(String(3))
    points_cost: Mapped[int | None] = mapped_column(BigInteger)
    valid_from: Mapped[datetime] = mapped_column(UTCDateTime)
    valid_until: Mapped[datetime] = mapped_column(UTCDateTime)
    uses_per_coupon: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(8))
    stopped_reason: Mapped[str | None] = mapped_column(Text)
    stopped_by: Mapped[str | None] = mapped_column(String(200))
    stopped_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class CouponSeriesPartner(Base):
    """A partner at whose tills a series may be used."""

    __tablename__ = "coupon_series_partners"

    series_id: Mapped[int] = mapped_column(ForeignKey("coupon_series.id"), primary_key=True)
    partner_id: Mapped[int] = mapped_column(ForeignKey("partners.id"), primary_key=True)


class Coupon(Base):
    """One member's coupon of a series, its code, and how many times it was used."""

    __tablename__ = "coupons"
    __table_args__ = (
        UniqueConstraint("series_id", "member_id"),
        CheckConstraint("uses >= 0 AND uses <= uses_allowed", name="uses_in_range"),
    )

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    series_id: Mapped[int] = mapped_column(ForeignKey("coupon_series.id"))
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"), index=True)
    code: Mapped[str] = mapped_column(String(16), unique=True)
    uses_allowed: Mapped[int] = mapped_column(Integer)
    uses: Mapped[int] = mapped_column(Integer, default=0)
    issued_by: Mapped[str] = mapped_column(String(200))
    issued_at: Mapped[datetime] = mapped_column(UTCDateTime)


class CouponUse(Base):
    """One use of a coupon: with a purchase (bonus, multiplier) or a redemption hold (amount_off).

    ``purchase_id``, ``hold_id`` and ``transaction_id`` (the coupon's points posting) are
    plain ids: they live on the member's shard (alliance/models/distribution.py).
    """

    __tablename__ = "coupon_uses"
    __table_args__ = (
        CheckConstraint("(purchase_id IS NULL) <> (hold_id IS NULL)", name="one_subject"),
        CheckConstraint("points > 0", name="points_positive"),
        Index("ix_coupon_uses_coupon_id", "coupon_id"),
        Index("ix_coupon_uses_series_id", "series_id"),
        # One coupon per purchase and per redemption (ids are unique, the member keeps it on one shard).
        Index("uq_coupon_uses_member_id_purchase_id", "member_id", "purchase_id", unique=True),
        Index("uq_coupon_uses_member_id_hold_id", "member_id", "hold_id", unique=True),
    )

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    coupon_id: Mapped[int] = mapped_column(ForeignKey("coupons.id"))
    series_id: Mapped[int] = mapped_column(ForeignKey("coupon_series.id"))
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"))
    partner_id: Mapped[int] = mapped_column(ForeignKey("partners.id"))
    purchase_id: Mapped[int | None] = mapped_column(IdType)
    hold_id: Mapped[int | None] = mapped_column(IdType)
    # Bonus or multiplier: the points posted; amount_off: the points the member paid for it.
    points: Mapped[int] = mapped_column(BigInteger)
    amount_off_minor: Mapped[int | None] = mapped_column(BigInteger)
    transaction_id: Mapped[int | None] = mapped_column(IdType)
    used_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # An amount_off use whose redemption was voided or expired: the use was given back.
    returned_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
