"""The finance workflow around closed statements: adjustments, their application, invoices and payments.

An adjustment is requested by one staff client and decided (approved or rejected) by
another, once; the check constraint ``second_approver`` is the database's backstop for
the four-eyes rule. An approved adjustment lands in the first cycle of its partner
closed after the approval: the closing records that in ``adjustment_applications``,
which, like ``statement_events`` (invoiced, paid), is append-only, because a closed
statement and what happened to it are never edited. A dispute questions one statement
line; it is resolved by linking an approved adjustment of the same partner (which lands
in a later cycle) or rejected.
"""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import BigInteger, CheckConstraint, Date, ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from alliance.models.base import Base, IdType, UTCDateTime


class Adjustment(Base):
    """A credit (< 0, the hub owes the partner) or debit (> 0, the partner owes) awaiting or past its decision."""

    __tablename__ = "adjustments"
    __table_args__ = (
        UniqueConstraint("partner_id", "reference"),
        CheckConstraint("amount_minor <> 0", name="amount_not_zero"),
        CheckConstraint("status IN ('pending', 'approved', 'rejected')", name="status"),
        CheckConstraint("(status = 'pending') = (decided_by IS NULL)", name="decided_when_not_pending"),
        CheckConstraint("decided_by IS NULL OR decided_by <> requested_by", name="second_approver"),
        Index("ix_adjustments_partner_id_status", "partner_id", "status"),
    )

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    partner_id: Mapped[int] = mapped_column(ForeignKey("partners.id"))
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    reason: Mapped[str] = mapped_column(Text)
    reference: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(10))
    requested_by: Mapped[str] = mapped_column(String(200))
    requested_at: Mapped[datetime] = mapped_column(UTCDateTime)
    decided_by: Mapped[str | None] = mapped_column(String(200))
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class AdjustmentApplication(Base):
    """Which settlement run an approved adjustment landed in; one per adjustment, never changed."""

    __tablename__ = "adjustment_applications"

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    adjustment_id: Mapped[int] = mapped_column(ForeignKey("adjustments.id"), unique=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("settlement_runs.id"), index=True)


class StatementEvent(Base):
    """A statement was invoiced, or (part of) it was paid; append-only."""

    __tablename__ = "statement_events"
    __table_args__ = (
        CheckConstraint("kind IN ('invoiced', 'paid')", name="kind"),
        CheckConstraint(
            "(kind = 'paid' AND amount_minor > 0 AND paid_on IS NOT NULL) OR "
            "(kind = 'invoiced' AND amount_minor IS NULL AND paid_on IS NULL)",
            name="paid_has_amount_and_date",
        ),
        CheckConstraint("prepaid_block_id IS NULL OR kind = 'paid'", name="prepaid_is_a_payment"),
        Index("ix_statement_events_statement_id", "statement_id"),
        Index("ix_statement_events_prepaid_block_id", "prepaid_block_id"),
    )

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    statement_id: Mapped[int] = mapped_column(ForeignKey("statements.id"))
    kind: Mapped[str] = mapped_column(String(10))
    amount_minor: Mapped[int | None] = mapped_column(BigInteger)
    paid_on: Mapped[date | None] = mapped_column(Date)
    reference: Mapped[str] = mapped_column(String(64))
    actor: Mapped[str] = mapped_column(String(200))
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    # A payment drawn from money the partner paid ahead: the prepaid block it came from (NULL: paid otherwise).
    prepaid_block_id: Mapped[int | None] = mapped_column(ForeignKey("partner_prepaid_blocks.id"))


class StatementLineDispute(Base):
    """A question about one statement line, open until resolved by an approved adjustment or rejected."""

    __tablename__ = "statement_line_disputes"
    __table_args__ = (
        CheckConstraint("status IN ('open', 'adjusted', 'rejected')", name="status"),
        CheckConstraint("(status = 'open') = (resolved_by IS NULL)", name="resolved_when_not_open"),
        CheckConstraint("(status = 'adjusted') = (adjustment_id IS NOT NULL)", name="adjusted_has_adjustment"),
        Index("ix_statement_line_disputes_status", "status"),
    )

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    statement_line_id: Mapped[int] = mapped_column(ForeignKey("statement_lines.id"), index=True)
    reason: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(10))
    opened_by: Mapped[str] = mapped_column(String(200))
    opened_at: Mapped[datetime] = mapped_column(UTCDateTime)
    resolved_by: Mapped[str | None] = mapped_column(String(200))
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    adjustment_id: Mapped[int | None] = mapped_column(ForeignKey("adjustments.id"), unique=True)
