"""Partners' credit exposure: the snapshot the request path reads, limit changes and alerts.

``partner_credit`` holds one row per partner with a limit or a computed exposure: the
limit (NULL: none), the exposure in minor units of the partner's currency and its state,
as ``settlement.credit`` last computed them. The request path only reads the state; the
snapshot is rewritten by the refresh job and by the events that change what a partner
owes (a payment, a closed cycle, a limit). ``partner_credit_limit_changes`` records every
limit asked for, with who decided it (a second person for a raise or a removal);
``partner_credit_alerts`` each time a partner's exposure entered the warning band or
passed its limit. ``partner_prepaid_blocks`` records the point blocks a partner paid for
ahead (money that covers its issuance); what of them paid its statements is the
``statement_events`` rows of kind ``paid`` that name a block (``prepaid_block_id``).
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal

from sqlalchemy import BigInteger, CheckConstraint, Date, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from alliance.models.base import Base, ExactDecimal, IdType, UTCDateTime

CREDIT_STATES = ("ok", "warning", "over")
LIMIT_CHANGE_STATUSES = ("pending", "approved", "rejected")


class PartnerCredit(Base):
    """A partner's credit limit and its last computed exposure and state."""

    __tablename__ = "partner_credit"
    __table_args__ = (
        CheckConstraint("state IN ('ok', 'warning', 'over')", name="state"),
        CheckConstraint("limit_minor IS NULL OR limit_minor >= 0", name="limit_not_negative"),
        CheckConstraint("exposure_minor >= 0", name="exposure_not_negative"),
        CheckConstraint("limit_minor IS NOT NULL OR state = 'ok'", name="no_limit_is_ok"),
        CheckConstraint("(limit_minor IS NULL) = (warning_minor IS NULL)", name="warning_with_limit"),
    )

    partner_id: Mapped[int] = mapped_column(ForeignKey("partners.id"), primary_key=True)
    limit_minor: Mapped[int | None] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    # Where the warning band starts (the limit x ALLIANCE_CREDIT_WARNING_PERCENT, rounded up), kept with the
    # limit so a refresh that runs without the settings (a payment, a closing) draws the same line.
    warning_minor: Mapped[int | None] = mapped_column(BigInteger)
    exposure_minor: Mapped[int] = mapped_column(BigInteger)
    state: Mapped[str] = mapped_column(String(8))
    computed_at: Mapped[datetime] = mapped_column(UTCDateTime)
    warned_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class PartnerCreditLimitChange(Base):
    """A limit asked for (NULL: remove the limit), applied at once or waiting for a second person."""

    __tablename__ = "partner_credit_limit_changes"
    __table_args__ = (
        CheckConstraint("status IN ('pending', 'approved', 'rejected')", name="status"),
        CheckConstraint("limit_minor IS NULL OR limit_minor >= 0", name="limit_not_negative"),
        CheckConstraint("length(reason) > 0", name="reason_given"),
        CheckConstraint("(status = 'pending') = (decided_at IS NULL)", name="decided_when_decided"),
        Index("ix_partner_credit_limit_changes_partner_status", "partner_id", "status"),
    )

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    partner_id: Mapped[int] = mapped_column(ForeignKey("partners.id"))
    limit_minor: Mapped[int | None] = mapped_column(BigInteger)
    reason: Mapped[str] = mapped_column(Text)
    requested_by: Mapped[str] = mapped_column(String(200))
    requested_at: Mapped[datetime] = mapped_column(UTCDateTime)
    decided_by: Mapped[str | None] = mapped_column(String(200))
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    status: Mapped[str] = mapped_column(String(10))


class PartnerCreditAlert(Base):
    """A partner's exposure entered the warning band or reached its limit; its managers and finance see it."""

    __tablename__ = "partner_credit_alerts"
    __table_args__ = (
        CheckConstraint("state IN ('warning', 'over')", name="state"),
        Index("ix_partner_credit_alerts_partner_raised", "partner_id", "raised_at"),
    )

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    partner_id: Mapped[int] = mapped_column(ForeignKey("partners.id"))
    state: Mapped[str] = mapped_column(String(8))
    exposure_minor: Mapped[int] = mapped_column(BigInteger)
    limit_minor: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    raised_at: Mapped[datetime] = mapped_column(UTCDateTime)


class PartnerPrepaidBlock(Base):
    """Points a partner paid for ahead, at its issue price in force then; never changed.

    ``amount_minor`` is what the partner paid: ``points`` x ``price_per_point`` in minor
    units of ``currency``, rounded up to a whole minor unit. The money covers the
    partner's issuance until statements are paid from it (``statement_events`` of kind
    ``paid`` naming the block).
    """

    __tablename__ = "partner_prepaid_blocks"
    __table_args__ = (
        UniqueConstraint("partner_id", "reference"),
        CheckConstraint("points > 0", name="points_positive"),
        CheckConstraint("price_per_point > 0", name="price_positive"),
        CheckConstraint("amount_minor > 0", name="amount_positive"),
    )

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    partner_id: Mapped[int] = mapped_column(ForeignKey("partners.id"))
    points: Mapped[int] = mapped_column(Integer)
    price_per_point: Mapped[Decimal] = mapped_column(ExactDecimal())
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    # Finance's receipt reference for the money received.
    reference: Mapped[str] = mapped_column(String(64))
    paid_on: Mapped[date] = mapped_column(Date)
    recorded_by: Mapped[str] = mapped_column(String(200))
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime)
