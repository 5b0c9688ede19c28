"""Rows behind the partner API: purchases and their refunds, redemption refunds,
idempotency records, seen signature nonces, one-time redemption codes and campaigns."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import (
    CHAR,
    JSON,
    BigInteger,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from alliance.models.base import Base, ExactDecimal, IdType, UTCDateTime


class Purchase(Base):
    """A purchase a partner reported, and the points it earned."""

    __tablename__ = "purchases"
    __table_args__ = (
        UniqueConstraint("partner_id", "receipt_id"),
        CheckConstraint("amount_minor > 0", name="amount_positive"),
        CheckConstraint("refunded_amount_minor >= 0 AND refunded_amount_minor <= amount_minor", name="refund_in_range"),
        CheckConstraint("points_partner >= 0 AND points_hub >= 0", name="points_not_negative"),
        Index("ix_purchases_member_partner_reported", "member_id", "partner_id", "reported_at"),
        # A till's and a partner's purchases in a window, for the risk controls' velocity limits.
        Index("ix_purchases_terminal_reported", "terminal_id", "reported_at"),
        Index("ix_purchases_partner_reported", "partner_id", "reported_at"),
    )

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    partner_id: Mapped[int] = mapped_column(ForeignKey("partners.id"))
    receipt_id: Mapped[str] = mapped_column(String(64))
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"))
    card_id: Mapped[int] = mapped_column(ForeignKey("cards.id"))
    terminal_id: Mapped[int | None] = mapped_column(ForeignKey("terminals.id"))
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    purchased_at: Mapped[datetime] = mapped_column(UTCDateTime)
    reported_at: Mapped[datetime] = mapped_column(UTCDateTime)
    points_partner: Mapped[int] = mapped_column(BigInteger)
    points_hub: Mapped[int] = mapped_column(BigInteger)
    earn_transaction_id: Mapped[int | None] = mapped_column(ForeignKey("journal_transactions.id"))
    bonus_transaction_id: Mapped[int | None] = mapped_column(ForeignKey("journal_transactions.id"))
    pending_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    breakdown: Mapped[dict] = mapped_column(JSON)
    refunded_amount_minor: Mapped[int] = mapped_column(BigInteger, default=0)


class PurchaseRefund(Base):
    """A full or partial refund of a purchase, and the points it took back."""

    __tablename__ = "purchase_refunds"
    __table_args__ = (
        UniqueConstraint("partner_id", "refund_id"),
        CheckConstraint("amount_minor > 0", name="amount_positive"),
    )

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    purchase_id: Mapped[int] = mapped_column(ForeignKey("purchases.id"), index=True)
    partner_id: Mapped[int] = mapped_column(ForeignKey("partners.id"))
    refund_id: Mapped[str] = mapped_column(String(64))
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    points_recovered: Mapped[int] = mapped_column(BigInteger)
    points_unrecovered: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class RedemptionRefund(Base):
    """Points given back for a captured redemption."""

    __tablename__ = "redemption_refunds"
    __table_args__ = (
        UniqueConstraint("partner_id", "refund_id"),
        CheckConstraint("points > 0", name="points_positive"),
    )

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    hold_id: Mapped[int] = mapped_column(ForeignKey("redemption_holds.id"), index=True)
    partner_id: Mapped[int] = mapped_column(ForeignKey("partners.id"))
    refund_id: Mapped[str] = mapped_column(String(64))
    points: Mapped[int] = mapped_column(BigInteger)
    transaction_id: Mapped[int] = mapped_column(ForeignKey("journal_transactions.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class IdempotencyRecord(Base):
    """One ``Idempotency-Key`` of one partner: the request it named and the stored reply."""

    __tablename__ = "idempotency_keys"
    __table_args__ = (
        CheckConstraint("status IN ('in_flight', 'completed')", name="status"),
        Index("ix_idempotency_keys_created_at", "created_at"),
        # Room on each page for the reply a claimed row grows by, so its update stays HOT (migration 0037).
        {"postgresql_with": {"fillfactor": 90}},
    )

    # The natural key is the key (the distribution column first): a surrogate id would
    # cost every signed write a sequence call and one more index entry, and the claim,
    # the reply and the pruning job all name the record by this key anyway.
    idempotency_key: Mapped[str] = mapped_column(String(255), primary_key=True)
    partner_id: Mapped[int] = mapped_column(ForeignKey("partners.id"), primary_key=True)
    request_fingerprint: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(10))
    response_status: Mapped[int | None] = mapped_column(Integer)
    response_body: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class SeenNonce(Base):
    """A signature nonce already used; the primary key is the replay guard."""

    __tablename__ = "signature_nonces"
    __table_args__ = (Index("ix_signature_nonces_prune_after", "prune_after"),)

    # The nonce is the key: a surrogate id would cost every signed request a sequence
    # call and one more index entry, for nothing but the pruning job (which needs none).
    nonce: Mapped[str] = mapped_column(String(128), primary_key=True)
    partner_id: Mapped[int] = mapped_column(ForeignKey("partners.id"))
    key_id: Mapped[str] = mapped_column(String(100))
    seen_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # Past this moment no signature carrying the nonce can be valid any more.
    prune_after: Mapped[datetime] = mapped_column(UTCDateTime)


class RedemptionCode(Base):
    """A one-time code a member shows to redeem without a PIN; only its hash is kept."""

    __tablename__ = "redemption_codes"

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"), index=True)
    code_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    used_by_partner_id: Mapped[int | None] = mapped_column(ForeignKey("partners.id"))


class Campaign(Base):
    """Extra points for purchases in a period; ``funded_by`` says who pays for them."""

    __tablename__ = "campaigns"
    __table_args__ = (
        CheckConstraint("funded_by IN ('partner', 'hub', 'joint')", name="funded_by"),
        CheckConstraint("funded_by <> 'partner' OR partner_id IS NOT NULL", name="partner_funds_own"),
        CheckConstraint("budget_points IS NULL OR (budget_points > 0 AND budget_used_points <= budget_points)",
                        name="budget"),
        CheckConstraint("(budget_minor IS NULL) = (budget_currency IS NULL)", name="budget_currency"),
        CheckConstraint("budget_minor IS NULL OR (budget_minor > 0 AND budget_used_amount <= budget_minor)",
                        name="budget_money"),
        CheckConstraint("budget_used_amount >= 0", name="budget_used_amount"),
        CheckConstraint("budget_points IS NULL OR budget_minor IS NULL", name="one_budget"),
        CheckConstraint("min_tenure_months IS NULL OR min_tenure_months >= 0", name="tenure"),
        CheckConstraint("multiplier >= 1 AND bonus_points >= 0 AND min_amount_minor >= 0", name="terms"),
        CheckConstraint("ends_at > starts_at", name="period"),
        Index("ix_campaigns_period", "starts_at", "ends_at"),
    )

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    # NULL means every partner of the alliance (only the hub can fund that).
    partner_id: Mapped[int | None] = mapped_column(ForeignKey("partners.id"))
    name: Mapped[str] = mapped_column(String(200))
    funded_by: Mapped[str] = mapped_column(String(10))
    multiplier: Mapped[Decimal] = mapped_column(ExactDecimal(8, 4))
    bonus_points: Mapped[int] = mapped_column(Integer, default=0)
    min_amount_minor: Mapped[int] = mapped_column(BigInteger, default=0)
    starts_at: Mapped[datetime] = mapped_column(UTCDateTime)
    ends_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # Stopped early by an operator: from then on it awards nothing.
    stopped_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    stop_reason: Mapped[str | None] = mapped_column(Text)
    # A budget in points; each award adds to ``budget_used_points`` under the campaign's row lock.
    budget_points: Mapped[int | None] = mapped_column(BigInteger)
    budget_used_points: Mapped[int] = mapped_column(BigInteger, default=0)
    # Or a budget in money (minor units of ``budget_currency``): what the funders are charged for the
    # awards at their issue prices, the exact cost (fractions of a minor unit) in ``budget_used_amount``.
    budget_minor: Mapped[int | None] = mapped_column(BigInteger)
    budget_currency: Mapped[str | None] = mapped_column(CHAR(3))
    budget_used_amount: Mapped[Decimal] = mapped_column(ExactDecimal(20, 8), default=Decimal(0))
    # Targeting: tiers (None = every tier), tenure in whole months since enrolment, and a
    # segment (the members listed in ``campaign_segment_members``) when ``segment_name`` is set.
    target_tiers: Mapped[list[str] | None] = mapped_column(JSON)
    min_tenure_months: Mapped[int | None] = mapped_column(Integer)
    segment_name: Mapped[str | None] = mapped_column(String(100))
