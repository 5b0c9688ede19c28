"""The double-entry points ledger: accounts, journal transactions and entries, lots, holds.

Journal transactions, entries and lot consumptions are append-only: database triggers
refuse UPDATE and DELETE on them. Stored balances (member accounts only) and lot
remainders are maintained by triggers on INSERT of entries and consumptions, and
CHECK constraints stop them going below zero inside the very write that would do it.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from alliance.models.base import Base, ExactDecimal, IdType, UTCDateTime

BALANCE_NOT_NEGATIVE = "ck_ledger_accounts_balance_not_negative"
LOT_REMAINING_IN_RANGE = "ck_point_lots_remaining_in_range"
HOLD_AMOUNTS_IN_RANGE = "ck_redemption_holds_amounts_in_range"


class LedgerAccount(Base):
    """An account of points. Only member accounts keep a stored balance."""

    __tablename__ = "ledger_accounts"
    __table_args__ = (
        CheckConstraint(
            "kind IN ('member_available', 'member_pending', 'member_held', 'partner_issued',"
            " 'partner_redeemed', 'hub_marketing', 'hub_breakage', 'hub_rounding')",
            name="kind",
        ),
        CheckConstraint("balance_points IS NULL OR balance_points >= 0", name="balance_not_negative"),
        CheckConstraint(
            "(kind IN ('member_available', 'member_pending', 'member_held')"
            " AND member_id IS NOT NULL AND partner_id IS NULL AND balance_points IS NOT NULL)"
            " OR (kind IN ('partner_issued', 'partner_redeemed')"
            " AND partner_id IS NOT NULL AND member_id IS NULL AND balance_points IS NULL)"
            " OR (kind IN ('hub_marketing', 'hub_breakage', 'hub_rounding')"
            " AND member_id IS NULL AND partner_id IS NULL AND balance_points IS NULL)",
            name="owner_matches_kind",
        ),
    )

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    code: Mapped[str] = mapped_column(String(60), unique=True)
    kind: Mapped[str] = mapped_column(String(20))
    # Every posting locks a member's accounts by member id, and every balance inquiry
    # reads them so: without this index each would scan all accounts.
    member_id: Mapped[int | None] = mapped_column(ForeignKey("members.id"), index=True)
    partner_id: Mapped[int | None] = mapped_column(ForeignKey("partners.id"))
    balance_points: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class JournalTransaction(Base):
    """One movement of points; its entries sum to zero. Never updated or deleted."""

    __tablename__ = "journal_transactions"
    __table_args__ = (
        Index("ix_journal_transactions_partner_posted", "partner_id", "posted_at"),
        Index("ix_journal_transactions_member_posted", "member_id", "posted_at"),
    )

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    kind: Mapped[str] = mapped_column(String(20))
    member_id: Mapped[int | None] = mapped_column(ForeignKey("members.id"))
    partner_id: Mapped[int | None] = mapped_column(ForeignKey("partners.id"))
    posted_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # The price in force when this posted, so settlement never re-prices history.
    price_per_point: Mapped[Decimal | None] = mapped_column(ExactDecimal())
    currency: Mapped[str | None] = mapped_column(String(3))
    hold_id: Mapped[int | None] = mapped_column(ForeignKey("redemption_holds.id"))
    reverses_transaction_id: Mapped[int | None] = mapped_column(ForeignKey("journal_transactions.id"))
    transfer_id: Mapped[int | None] = mapped_column(ForeignKey("member_transfers.id"))
    memo: Mapped[str | None] = mapped_column(String(200))


class JournalEntry(Base):
    """One signed line of a journal transaction. Never updated or deleted."""

    __tablename__ = "journal_entries"
    __table_args__ = (CheckConstraint("amount_points <> 0", name="amount_not_zero"),)

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    transaction_id: Mapped[int] = mapped_column(ForeignKey("journal_transactions.id"), index=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("ledger_accounts.id"), index=True)
    amount_points: Mapped[int] = mapped_column(BigInteger)


class PointLot(Base):
    """Points a member earned in one transaction, with the issuer and the expiry."""

    __tablename__ = "point_lots"
    __table_args__ = (
        CheckConstraint("state IN ('pending', 'active')", name="state"),
        CheckConstraint("points_earned > 0", name="earned_positive"),
        CheckConstraint("points_remaining >= 0 AND points_remaining <= points_earned", name="remaining_in_range"),
        Index("ix_point_lots_member_state_expiry", "member_id", "state", "expires_at"),
    )

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"))
    # The issuer; NULL when the hub's marketing account funded the points.
    partner_id: Mapped[int | None] = mapped_column(ForeignKey("partners.id"))
    funding_account_id: Mapped[int] = mapped_column(ForeignKey("ledger_accounts.id"))
    earn_transaction_id: Mapped[int] = mapped_column(ForeignKey("journal_transactions.id"), unique=True)
    # For points received in a transfer: the sender's lot they came from (issuer and
    # expiry are carried over, so tracing and expiry stay exact).
    origin_lot_id: Mapped[int | None] = mapped_column(ForeignKey("point_lots.id"))
    state: Mapped[str] = mapped_column(String(10))
    points_earned: Mapped[int] = mapped_column(BigInteger)
    points_remaining: Mapped[int] = mapped_column(BigInteger)
    earned_at: Mapped[datetime] = mapped_column(UTCDateTime)
    activates_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)


class LotConsumption(Base):
    """Points taken from (positive) or given back to (negative) a lot. Never updated."""

    __tablename__ = "lot_consumptions"
    __table_args__ = (CheckConstraint("points <> 0", name="points_not_zero"),)

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    lot_id: Mapped[int] = mapped_column(ForeignKey("point_lots.id"), index=True)
    transaction_id: Mapped[int] = mapped_column(ForeignKey("journal_transactions.id"), index=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"))
    # Set for consumptions made for a redemption, so captured points trace to lots.
    hold_id: Mapped[int | None] = mapped_column(ForeignKey("redemption_holds.id"), index=True)
    points: Mapped[int] = mapped_column(BigInteger)


class RedemptionHold(Base):
    """Points set aside by an authorization until it is captured, voided or expires."""

    __tablename__ = "redemption_holds"
    __table_args__ = (
        # A unique index rather than a constraint: SQLite can add one without a table rebuild.
        Index("uq_redemption_holds_partner_id_reference", "partner_id", "reference", unique=True),
        CheckConstraint("status IN ('open', 'captured', 'voided', 'expired')", name="status"),
        CheckConstraint(
            "points_held > 0 AND points_captured >= 0 AND points_captured <= points_held"
            " AND points_refunded >= 0 AND points_refunded <= points_captured",
            name="amounts_in_range",
        ),
        Index("ix_redemption_holds_status_expires", "status", "expires_at"),
        # A till's and a partner's redemptions in a window, for the risk controls' velocity limits.
        Index("ix_redemption_holds_terminal_created", "terminal_id", "created_at"),
        Index("ix_redemption_holds_partner_created", "partner_id", "created_at"),
    )

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"), index=True)
    partner_id: Mapped[int] = mapped_column(ForeignKey("partners.id"))
    status: Mapped[str] = mapped_column(String(10))
    points_held: Mapped[int] = mapped_column(BigInteger)
    points_captured: Mapped[int] = mapped_column(BigInteger, default=0)
    points_refunded: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The partner's own reference for the redemption; unique per partner.
    reference: Mapped[str | None] = mapped_column(String(64))
    terminal_id: Mapped[int | None] = mapped_column(ForeignKey("terminals.id"))
    card_id: Mapped[int | None] = mapped_column(ForeignKey("cards.id"))
