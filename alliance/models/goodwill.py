"""Goodwill credits and corrections by customer service, as requested, approved and posted.

A request below the approval threshold is posted when it is made; one above it waits
for a second person, and is posted only on approval. The request row is the record of
who asked, why (a complaint of the member, or a written reference), who decided and
when it was posted; the points themselves move in the ledger (``alliance.services.goodwill``).
The check constraint ``second_person`` is the database's backstop against one actor
deciding their own request (the service compares the people behind two actors).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from alliance.models.base import Base, IdType, UTCDateTime


class GoodwillRequest(Base):
    """One goodwill credit or correction (debit) of a member's points, pending, posted or rejected."""

    __tablename__ = "goodwill_requests"
    __table_args__ = (
        CheckConstraint("direction IN ('credit', 'debit')", name="direction"),
        CheckConstraint("status IN ('pending', 'posted', 'rejected')", name="status"),
        CheckConstraint("points > 0", name="points_positive"),
        CheckConstraint("direction = 'debit' OR complaint_id IS NOT NULL", name="credit_names_complaint"),
        CheckConstraint("complaint_id IS NOT NULL OR reference IS NOT NULL", name="names_why"),
        CheckConstraint("direction = 'credit' OR partner_id IS NULL", name="debit_has_no_funder"),
        CheckConstraint("decided_by IS NULL OR decided_by <> requested_by", name="second_person"),
        CheckConstraint("(status = 'posted') = (posted_at IS NOT NULL)", name="posted_when_posted"),
        Index("ix_goodwill_requests_status_requested", "status", "requested_at"),
    )

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"), index=True)
    direction: Mapped[str] = mapped_column(String(6))
    points: Mapped[int] = mapped_column(BigInteger)
    reason: Mapped[str] = mapped_column(Text)
    complaint_id: Mapped[int | None] = mapped_column(ForeignKey("complaints.id"))
    reference: Mapped[str | None] = mapped_column(String(64))
    # The partner charged for a credit; NULL when the hub funds it (and always for a debit).
    partner_id: Mapped[int | None] = mapped_column(ForeignKey("partners.id"))
    status: Mapped[str] = mapped_column(String(10))
    requested_by: Mapped[str] = mapped_column(String(200))
    requested_at: Mapped[datetime] = mapped_column(UTCDateTime)
    decided_by: Mapped[str | None] = mapped_column(String(200))
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    posted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
