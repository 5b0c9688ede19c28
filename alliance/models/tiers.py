"""Tier policy versions and members' tier history.

A policy version says how members qualify for tiers (the basis: spend in the alliance
currency, points earned, or months since enrolment; the rolling window), how they fall
(one step per period, or straight to the level earned) and what each tier gives (an
earn multiplier and a birthday bonus). A version takes effect at ``effective_from``
and is never edited afterwards: a change is a new version, so the versions are the
history. The tiers of a version are kept as one JSON list (a handful of entries, always
read and written whole, never queried by their parts), which lets the earn's cache load
the whole schedule with one query. ``member_tier_history`` records each change of a
member's tier, under which version and why.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, CheckConstraint, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from alliance.models.base import Base, IdType, UTCDateTime


class TierPolicyVersion(Base):
    """One version of the tier policy, in force from ``effective_from`` until the next version's."""

    __tablename__ = "tier_policy_versions"
    __table_args__ = (
        CheckConstraint("basis IN ('spend', 'points', 'tenure')", name="basis"),
        CheckConstraint("downgrade IN ('one_step', 'to_earned')", name="downgrade"),
        CheckConstraint("version >= 1", name="version_positive"),
        CheckConstraint("(basis = 'tenure') = (window_months IS NULL)", name="window_unless_tenure"),
        CheckConstraint("window_months IS NULL OR window_months >= 1", name="window_positive"),
        CheckConstraint("(downgrade = 'one_step') = (period_months IS NOT NULL)", name="period_for_one_step"),
        CheckConstraint("period_months IS NULL OR period_months >= 1", name="period_positive"),
    )

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    version: Mapped[int] = mapped_column(Integer, unique=True)
    effective_from: Mapped[datetime] = mapped_column(UTCDateTime, unique=True)
    basis: Mapped[str] = mapped_column(String(10))
    # The rolling window of the spend and points bases, in months; NULL for tenure.
    window_months: Mapped[int | None] = mapped_column(Integer)
    downgrade: Mapped[str] = mapped_column(String(10))
    # With one_step: a member falls at most one tier per this many months held; NULL with to_earned.
    period_months: Mapped[int | None] = mapped_column(Integer)
    # [{"tier": "silver", "threshold": 500, "multiplier": "1.25", "birthday_bonus_points": 0}, ...],
    # lowest first; the threshold is in whole currency units, points or months by the basis.
    tiers: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    created_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class MemberTierChange(Base):
    """One change of a member's tier: from, to, when, under which policy version and why."""

    __tablename__ = "member_tier_history"
    __table_args__ = (Index("ix_member_tier_history_member_changed", "member_id", "changed_at"),)

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"))
    from_tier: Mapped[str] = mapped_column(String(10))
    to_tier: Mapped[str] = mapped_column(String(10))
    changed_at: Mapped[datetime] = mapped_column(UTCDateTime)
    policy_version_id: Mapped[int] = mapped_column(ForeignKey("tier_policy_versions.id"))
    reason: Mapped[str] = mapped_column(String(200))
