"""Risk controls: the policy versions, the decisions they gave, the lots held for review, failed verifications.

The policy is a document (``alliance.domain.risk``) per version, in force from its time.
A decision other than *allow* is kept with the limits the operation passed and the
figures each saw (``evidence``) and waits in the review queue (``review_status`` open)
until a reviewer settles it. A held purchase's lots are listed in ``risk_held_lots`` and
stay pending while their decision is open. ``verification_failures`` counts a till's
failed PINs and redemption codes per card (or code) tried, for the card-testing limit.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, BigInteger, CheckConstraint, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from alliance.models.base import Base, IdType, UTCDateTime

OPERATIONS = ("earn", "redeem", "verification", "transfer", "refund")
ACTIONS = ("flag", "hold", "refuse")
REVIEW_STATUSES = ("open", "released", "reversed", "dismissed", "confirmed")


def _sql_list(values: tuple[str, ...]) -> str:
    return "(" + ", ".join(f"'{value}'" for value in values) + ")"


class RiskPolicyVersion(Base):
    """One version of the risk policy: its document, when it takes effect, who set it and why."""

    __tablename__ = "risk_policy_versions"
    __table_args__ = (CheckConstraint("version >= 1", name="version_positive"),)

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    version: Mapped[int] = mapped_column(Integer, unique=True)
    document: Mapped[dict] = mapped_column(JSON)
    effective_from: Mapped[datetime] = mapped_column(UTCDateTime, unique=True)
    reason: Mapped[str] = mapped_column(Text)
    created_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class RiskDecision(Base):
    """A decision other than allow: the operation, what was decided, the evidence, and its review."""

    __tablename__ = "risk_decisions"
    __table_args__ = (
        CheckConstraint(f"operation IN {_sql_list(OPERATIONS)}", name="operation"),
        CheckConstraint(f"action IN {_sql_list(ACTIONS)}", name="action"),
        CheckConstraint(f"review_status IN {_sql_list(REVIEW_STATUSES)}", name="review_status"),
        CheckConstraint("points >= 0", name="points_not_negative"),
        Index("ix_risk_decisions_review_decided", "review_status", "decided_at"),
        Index("ix_risk_decisions_member", "member_id"),
        Index("ix_risk_decisions_terminal", "terminal_id"),
    )

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    # The reference a refusal gives the till (no figures), which customer service looks up.
    token: Mapped[str] = mapped_column(String(16), unique=True)
    decided_at: Mapped[datetime] = mapped_column(UTCDateTime)
    operation: Mapped[str] = mapped_column(String(20))
    action: Mapped[str] = mapped_column(String(10))
    # None: the built-in default policy (no version stored yet).
    policy_version: Mapped[int | None] = mapped_column(Integer)
    partner_id: Mapped[int | None] = mapped_column(ForeignKey("partners.id"))
    terminal_id: Mapped[int | None] = mapped_column(ForeignKey("terminals.id"))
    member_id: Mapped[int | None] = mapped_column(ForeignKey("members.id"))
    card_id: Mapped[int | None] = mapped_column(ForeignKey("cards.id"))
    # The partner's receipt id or redemption reference, or the transfer's id.
    reference: Mapped[str | None] = mapped_column(String(64))
    points: Mapped[int] = mapped_column(BigInteger)
    evidence: Mapped[list] = mapped_column(JSON)
    review_status: Mapped[str] = mapped_column(String(10))
    reviewed_by: Mapped[str | None] = mapped_column(String(200))
    reviewed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    review_note: Mapped[str | None] = mapped_column(Text)
    # A release or reversal above the approval threshold, proposed by one reviewer and waiting for a second.
    proposed_action: Mapped[str | None] = mapped_column(String(10))
    proposed_by: Mapped[str | None] = mapped_column(String(200))
    proposed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    proposed_note: Mapped[str | None] = mapped_column(Text)


class RiskHeldLot(Base):
    """A lot of a held purchase: pending, and not activated, while its decision is open."""

    __tablename__ = "risk_held_lots"
    __table_args__ = (Index("ix_risk_held_lots_decision", "decision_id"),)

    lot_id: Mapped[int] = mapped_column(ForeignKey("point_lots.id"), primary_key=True)
    decision_id: Mapped[int] = mapped_column(ForeignKey("risk_decisions.id"))


class VerificationFailure(Base):
    """A failed PIN or redemption code at a partner's till, with what was tried (a card id or a code's hash)."""

    __tablename__ = "verification_failures"
    __table_args__ = (
        CheckConstraint("method IN ('pin', 'code')", name="method"),
        Index("ix_verification_failures_terminal_failed", "terminal_id", "failed_at"),
        Index("ix_verification_failures_partner_failed", "partner_id", "failed_at"),
    )

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    failed_at: Mapped[datetime] = mapped_column(UTCDateTime)
    partner_id: Mapped[int] = mapped_column(ForeignKey("partners.id"))
    terminal_id: Mapped[int | None] = mapped_column(ForeignKey("terminals.id"))
    tried: Mapped[str] = mapped_column(String(64))
    method: Mapped[str] = mapped_column(String(10))
