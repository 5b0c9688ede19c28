"""Settlement: one run per closed (partner, cycle), its signed statement and the statement's lines.

A closed cycle is never edited: a late correction is an adjustment in a later cycle.
The statement keeps the exact bytes that were signed, so a re-run returns them as they
are rather than rendering them again. Rounding residues are money, not points, so the
hub's money rounding account is the sum of the statements' residues per currency (the
ledger's ``hub:rounding`` account counts points and cannot hold them).
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal

from sqlalchemy import BigInteger, CheckConstraint, Date, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from alliance.models.base import Base, ExactDecimal, IdType, UTCDateTime

# A residue is at most half a minor unit per line; a price has 8 decimal places and a
# currency at most 4 minor-unit digits, so 8 places always hold a residue exactly.
RESIDUE_PRECISION, RESIDUE_SCALE = 24, 8


class SettlementRun(Base):
    """The closing of one partner's cycle; the unique constraint makes it happen once."""

    __tablename__ = "settlement_runs"
    __table_args__ = (
        UniqueConstraint("partner_id", "cycle_starts_at"),
        CheckConstraint("cycle_starts_at < cycle_ends_at", name="cycle_bounds"),
        Index("ix_settlement_runs_cycle_ends_at", "cycle_ends_at"),
    )

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    partner_id: Mapped[int] = mapped_column(ForeignKey("partners.id"))
    cycle_frequency: Mapped[str] = mapped_column(String(10))
    cycle_starts_at: Mapped[datetime] = mapped_column(UTCDateTime)
    cycle_ends_at: Mapped[datetime] = mapped_column(UTCDateTime)
    closed_at: Mapped[datetime] = mapped_column(UTCDateTime)


class SettlementStatement(Base):
    """A partner's signed statement for one run, as the bytes that were signed."""

    __tablename__ = "statements"
    __table_args__ = (
        CheckConstraint(
            "closing_balance_minor = opening_balance_minor + net_minor", name="closing_is_opening_plus_net"
        ),
        CheckConstraint("length(currency) = 3", name="currency"),
        Index("ix_statements_partner_id", "partner_id"),
    )

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("settlement_runs.id"), unique=True)
    partner_id: Mapped[int] = mapped_column(ForeignKey("partners.id"))
    currency: Mapped[str] = mapped_column(String(3))
    opening_balance_minor: Mapped[int] = mapped_column(BigInteger)
    net_minor: Mapped[int] = mapped_column(BigInteger)
    closing_balance_minor: Mapped[int] = mapped_column(BigInteger)
    due_date: Mapped[date] = mapped_column(Date)
    rounding_residue_minor: Mapped[Decimal] = mapped_column(ExactDecimal(RESIDUE_PRECISION, RESIDUE_SCALE))
    document_json: Mapped[str] = mapped_column(Text)
    document_csv: Mapped[str] = mapped_column(Text)
    # Detached signatures over the JSON and the CSV bytes, as ``render_signature`` writes them.
    signature_json: Mapped[str] = mapped_column(Text)
    signature_csv: Mapped[str] = mapped_column(Text)
    key_id: Mapped[str] = mapped_column(String(64))


class SettlementStatementLine(Base):
    """One line of a stored statement, in statement order; disputes will point at these."""

    __tablename__ = "statement_lines"
    __table_args__ = (
        UniqueConstraint("statement_id", "line_number"),
        CheckConstraint("count >= 1", name="count_positive"),
    )

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    statement_id: Mapped[int] = mapped_column(ForeignKey("statements.id"))
    line_number: Mapped[int] = mapped_column(Integer)
    line_kind: Mapped[str] = mapped_column(String(30))
    price_per_point: Mapped[Decimal | None] = mapped_column(ExactDecimal())
    points: Mapped[int | None] = mapped_column(BigInteger)
    count: Mapped[int] = mapped_column(BigInteger)
    reference: Mapped[str | None] = mapped_column(String(64))
    # The exact amount is amount plus residue; storing both parts keeps it exact on SQLite too.
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    rounding_residue_minor: Mapped[Decimal] = mapped_column(ExactDecimal(RESIDUE_PRECISION, RESIDUE_SCALE))
