"""Partners, their prices, earn rules, terminals and signing keys."""

from __future__ import annotations

from datetime import datetime, time
from decimal import Decimal

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    ForeignKey,
    Integer,
    LargeBinary,
    String,
    Time,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from alliance.models.base import Base, ExactDecimal, IdType, UTCDateTime


class Partner(Base):
    """A merchant in the alliance."""

    __tablename__ = "partners"
    __table_args__ = (
        CheckConstraint("status IN ('pending', 'active', 'suspended', 'terminated')", name="status"),
        CheckConstraint("settlement_cycle IN ('daily', 'weekly', 'monthly')", name="settlement_cycle"),
        CheckConstraint("length(currency) = 3", name="currency"),
        CheckConstraint("return_window_days >= 0 AND return_window_days <= 365", name="return_window"),
        CheckConstraint("cycle_fee_minor >= 0", name="cycle_fee"),
    )

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    code: Mapped[str] = mapped_column(String(40), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(20), default="pending")
    currency: Mapped[str] = mapped_column(String(3))
    time_zone: Mapped[str] = mapped_column(String(64))
    settlement_cycle: Mapped[str] = mapped_column(String(10), default="monthly")
    settlement_cutoff_local: Mapped[time] = mapped_column(Time, default=time(0, 0))
    return_window_days: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # A fixed fee the partner pays per settlement cycle, in minor units of its currency.
    cycle_fee_minor: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    # When the partner became terminated; cycles starting after it carry no cycle fee.
    terminated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class PartnerPrice(Base):
    """Issue and redemption prices per point, each in force from a moment on."""

    __tablename__ = "partner_prices"
    __table_args__ = (
        UniqueConstraint("partner_id", "effective_from"),
        CheckConstraint("issue_price_per_point >= 0", name="issue_price"),
        CheckConstraint("redemption_price_per_point >= 0", name="redemption_price"),
    )

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    partner_id: Mapped[int] = mapped_column(ForeignKey("partners.id"))
    effective_from: Mapped[datetime] = mapped_column(UTCDateTime)
    issue_price_per_point: Mapped[Decimal] = mapped_column(ExactDecimal())
    redemption_price_per_point: Mapped[Decimal] = mapped_column(ExactDecimal())


class PartnerEarnRule(Base):
    """How a partner turns a purchase into points, in force from a moment on.

    ``amount_ladder`` is a list of ``{"from_minor": int, "multiplier": "1.5"}`` steps,
    multipliers as decimal strings so no float ever enters the rule.
    """

    __tablename__ = "partner_earn_rules"
    __table_args__ = (
        UniqueConstraint("partner_id", "effective_from"),
        CheckConstraint("base_points_per_unit >= 0", name="base_rate"),
        CheckConstraint("per_purchase_cap_points IS NULL OR per_purchase_cap_points > 0", name="purchase_cap"),
        CheckConstraint("per_member_day_cap_points IS NULL OR per_member_day_cap_points > 0", name="day_cap"),
    )

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    partner_id: Mapped[int] = mapped_column(ForeignKey("partners.id"))
    effective_from: Mapped[datetime] = mapped_column(UTCDateTime)
    base_points_per_unit: Mapped[Decimal] = mapped_column(ExactDecimal(12, 4))
    amount_ladder: Mapped[list] = mapped_column(JSON, default=list)
    per_purchase_cap_points: Mapped[int | None] = mapped_column(Integer)
    per_member_day_cap_points: Mapped[int | None] = mapped_column(Integer)


class Terminal(Base):
    """A point-of-sale terminal of a partner."""

    __tablename__ = "terminals"
    __table_args__ = (
        UniqueConstraint("partner_id", "code"),
        CheckConstraint("status IN ('active', 'retired')", name="status"),
    )

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    partner_id: Mapped[int] = mapped_column(ForeignKey("partners.id"))
    code: Mapped[str] = mapped_column(String(40))
    status: Mapped[str] = mapped_column(String(10), default="active")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class PartnerKey(Base):
    """An Ed25519 public key a partner signs requests with; the hub keeps no secret."""

    __tablename__ = "partner_keys"
    __table_args__ = (
        CheckConstraint("status IN ('active', 'revoked')", name="status"),
        CheckConstraint("length(public_key) = 32", name="ed25519_length"),
    )

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    partner_id: Mapped[int] = mapped_column(ForeignKey("partners.id"), index=True)
    key_id: Mapped[str] = mapped_column(String(100), unique=True)
    public_key: Mapped[bytes] = mapped_column(LargeBinary(32))
    status: Mapped[str] = mapped_column(String(10), default="active")
    terminal_id: Mapped[int | None] = mapped_column(ForeignKey("terminals.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
