"""Members and their cards."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import CheckConstraint, ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from alliance.models.base import Base, IdType, UTCDateTime


class Member(Base):
    """One alliance membership; personal data arrives with the back office."""

    __tablename__ = "members"
    __table_args__ = (
        CheckConstraint("status IN ('active', 'closed')", name="status"),
        CheckConstraint("tier IN ('standard', 'silver', 'gold', 'diamond')", name="tier"),
    )

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    member_number: Mapped[str] = mapped_column(String(20), unique=True)
    status: Mapped[str] = mapped_column(String(10), default="active")
    tier: Mapped[str] = mapped_column(String(10), default="standard")
    enrolled_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Card(Base):
    """A membership card; its number carries a Luhn check digit."""

    __tablename__ = "cards"
    __table_args__ = (
        CheckConstraint("status IN ('active', 'blocked', 'replaced')", name="status"),
        CheckConstraint("failed_pin_attempts >= 0", name="failed_pin_attempts"),
    )

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"), index=True)
    card_number: Mapped[str] = mapped_column(String(19), unique=True)
    status: Mapped[str] = mapped_column(String(10), default="active")
    pin_hash: Mapped[str | None] = mapped_column(String(200))
    failed_pin_attempts: Mapped[int] = mapped_column(Integer, default=0)
    issued_at: Mapped[datetime] = mapped_column(UTCDateTime)
    blocked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
