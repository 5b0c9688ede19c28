"""The rewards catalog: what partners supply for points, at what price, and the orders for it.

A reward is supplied by one partner (goods, a digital voucher, an experience or perk, or
credit on a bill at the operator partner). It is proposed, and listed only once a partner
manager approves it. Its prices have effective dates: members pay ``points_price`` per
item and the hub reimburses the supplier ``unit_price_minor`` per item, in the supplier's
currency. An order holds the member's points (a redemption hold at the supplier), is
captured when the supplier confirms fulfilment, and is released when it cannot be
fulfilled; the ledger's ``reward_capture`` and ``reward_return`` postings name the order's
hold, and settlement reimburses the supplier per item from the order row.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from alliance.models.base import Base, IdType, UTCDateTime


class Reward(Base):
    """One item of the catalog, supplied by a partner."""

    __tablename__ = "rewards"
    __table_args__ = (
        CheckConstraint("kind IN ('goods', 'voucher', 'experience', 'bill_credit')", name="kind"),
        CheckConstraint("status IN ('proposed', 'listed', 'withdrawn')", name="status"),
        CheckConstraint("stock IS NULL OR stock >= 0", name="stock"),
        CheckConstraint("per_member_limit IS NULL OR per_member_limit > 0", name="per_member_limit"),
        CheckConstraint("fulfilment_days BETWEEN 1 AND 30", name="fulfilment_days"),
        CheckConstraint("return_days BETWEEN 0 AND 365", name="return_days"),
        CheckConstraint("valid_until IS NULL OR valid_until > valid_from", name="validity"),
        CheckConstraint("approved_by IS NULL OR approved_by <> proposed_by", name="second_person"),
        CheckConstraint("status <> 'listed' OR approved_at IS NOT NULL", name="listed_when_approved"),
    )

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    code: Mapped[str] = mapped_column(String(40), unique=True)
    supplier_partner_id: Mapped[int] = mapped_column(ForeignKey("partners.id"), index=True)
    kind: Mapped[str] = mapped_column(String(12))
    title: Mapped[str] = mapped_column(String(120))
    description: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(10))
    # The lowest tier that may order it (and every tier above); NULL: every member.
    min_tier: Mapped[str | None] = mapped_column(String(10))
    # Items one member may hold in orders not failed, cancelled or returned; NULL: no limit.
    per_member_limit: Mapped[int | None] = mapped_column(Integer)
    # Items left to order; NULL: not counted (bill credit, or a voucher's pool of codes).
    stock: Mapped[int | None] = mapped_column(Integer)
    fulfilment_days: Mapped[int] = mapped_column(Integer)
    return_days: Mapped[int] = mapped_column(Integer)
    valid_from: Mapped[datetime] = mapped_column(UTCDateTime)
    valid_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    proposed_by: Mapped[str] = mapped_column(String(200))
    proposed_at: Mapped[datetime] = mapped_column(UTCDateTime)
    approved_by: Mapped[str | None] = mapped_column(String(200))
    approved_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    withdrawn_by: Mapped[str | None] = mapped_column(String(200))
    withdrawn_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    withdrawn_reason: Mapped[str | None] = mapped_column(Text)


class RewardPrice(Base):
    """A reward's price from a moment on: points per item, and the supplier's reimbursement per item."""

    __tablename__ = "reward_prices"
    __table_args__ = (
        UniqueConstraint("reward_id", "effective_from"),
        CheckConstraint("points_price > 0", name="points_price"),
        CheckConstraint("unit_price_minor >= 0", name="unit_price"),
    )

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    reward_id: Mapped[int] = mapped_column(ForeignKey("rewards.id"))
    points_price: Mapped[int] = mapped_column(BigInteger)
    unit_price_minor: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    effective_from: Mapped[datetime] = mapped_column(UTCDateTime)
    set_by: Mapped[str] = mapped_column(String(200))
    set_at: Mapped[datetime] = mapped_column(UTCDateTime)


class RewardOrder(Base):
    """A member's order of some items of one reward, from its hold to its end."""

    __tablename__ = "reward_orders"
    __table_args__ = (
        UniqueConstraint("channel", "reference"),
        CheckConstraint("status IN ('placed', 'fulfilled', 'failed', 'cancelled', 'returned', 'expired')",
                        name="status"),
        CheckConstraint("items > 0 AND points > 0 AND amount_minor >= 0", name="amounts"),
        CheckConstraint("amount_minor = items * unit_price_minor", name="amount_is_items_times_price"),
        CheckConstraint("(status IN ('fulfilled', 'returned')) = (capture_transaction_id IS NOT NULL)",
                        name="captured_when_fulfilled"),
        CheckConstraint("(status = 'returned') = (return_transaction_id IS NOT NULL)", name="returned"),
        Index("ix_reward_orders_member_reward", "member_id", "reward_id"),
        Index("ix_reward_orders_supplier_status", "supplier_partner_id", "status", "placed_at"),
    )

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    # Who placed it: ``back-office`` or the partner code of the desk that did, with that
    # channel's own order reference: unique together, so a retried order is found, not placed twice.
    channel: Mapped[str] = mapped_column(String(40))
    reference: Mapped[str] = mapped_column(String(64))
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"))
    reward_id: Mapped[int] = mapped_column(ForeignKey("rewards.id"))
    price_id: Mapped[int] = mapped_column(ForeignKey("reward_prices.id"))
    supplier_partner_id: Mapped[int] = mapped_column(ForeignKey("partners.id"))
    items: Mapped[int] = mapped_column(Integer)
    points: Mapped[int] = mapped_column(BigInteger)
    unit_price_minor: Mapped[int] = mapped_column(BigInteger)
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    hold_id: Mapped[int] = mapped_column(ForeignKey("redemption_holds.id"), unique=True)
    status: Mapped[str] = mapped_column(String(10))
    placed_by: Mapped[str] = mapped_column(String(200))
    placed_at: Mapped[datetime] = mapped_column(UTCDateTime)
    fulfilled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The supplier's note on fulfilment (a parcel's tracking number, the bill it was credited on).
    fulfilment_note: Mapped[str | None] = mapped_column(String(200))
    # Why it failed, was cancelled or was returned.
    end_reason: Mapped[str | None] = mapped_column(Text)
    capture_transaction_id: Mapped[int | None] = mapped_column(ForeignKey("journal_transactions.id"), unique=True)
    return_transaction_id: Mapped[int | None] = mapped_column(ForeignKey("journal_transactions.id"), unique=True)


class RewardVoucherCode(Base):
    """One code of a voucher's pool, encrypted at rest; given to exactly one order, shown once."""

    __tablename__ = "reward_voucher_codes"
    __table_args__ = (
        UniqueConstraint("reward_id", "code_digest"),
        Index("ix_reward_voucher_codes_free", "reward_id", "order_id"),
    )

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    reward_id: Mapped[int] = mapped_column(ForeignKey("rewards.id"))
    # The keyed hash of the code (finds a duplicate upload) and the code under the key ring.
    code_digest: Mapped[str] = mapped_column(String(64))
    code_encrypted: Mapped[str] = mapped_column(Text)
    uploaded_by: Mapped[str] = mapped_column(String(200))
    uploaded_at: Mapped[datetime] = mapped_column(UTCDateTime)
    order_id: Mapped[int | None] = mapped_column(ForeignKey("reward_orders.id"), unique=True)
    assigned_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
