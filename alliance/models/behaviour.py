"""Behaviour points: the rules per event type, the events partners report, and the awards they gave.

A rule says what an event type is worth (fixed points, or points per amount for
recharges and bill payments), who funds it, the caps per member per day and month,
who is eligible and when it is in force. An event is stored once per partner and
event id (its natural key); an award is one member's points for one event (a referral
gives two: the referrer's and the referred member's), with the journal transaction
that posted them. The points themselves move in the ledger (``alliance.services.behaviour_points``).
"""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import JSON, BigInteger, CheckConstraint, Date, ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from alliance.models.base import Base, IdType, UTCDateTime

EVENT_TYPES_SQL = "('sign_in', 'referral', 'survey', 'self_service', 'recharge', 'bill_payment')"


class BehaviourRule(Base):
    """What one event type is worth, who funds it, its caps, eligibility and active period."""

    __tablename__ = "behaviour_rules"
    __table_args__ = (
        CheckConstraint(f"event_type IN {EVENT_TYPES_SQL}", name="event_type"),
        CheckConstraint("points >= 0 AND referred_points >= 0 AND streak_bonus_points >= 0",
                        name="points_not_negative"),
        CheckConstraint("per_amount_minor IS NULL OR per_amount_minor > 0", name="per_amount_positive"),
        CheckConstraint("(per_amount_minor IS NULL) = (currency IS NULL)", name="amount_has_currency"),
        CheckConstraint("funded_by IN ('hub', 'reporter', 'partner')", name="funded_by"),
        CheckConstraint("(funded_by = 'partner') = (funding_partner_id IS NOT NULL)", name="named_funder"),
        CheckConstraint("cap_per_day IS NULL OR cap_per_day >= 0", name="cap_per_day"),
        CheckConstraint("cap_per_month IS NULL OR cap_per_month >= 0", name="cap_per_month"),
        CheckConstraint("streak_days IS NULL OR streak_days >= 2", name="streak_days"),
        CheckConstraint("min_tenure_months >= 0", name="min_tenure"),
        CheckConstraint("ends_at IS NULL OR ends_at > starts_at", name="period"),
    )

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    event_type: Mapped[str] = mapped_column(String(20), unique=True)
    points: Mapped[int] = mapped_column(BigInteger)
    # Recharges and bill payments: ``points`` per ``per_amount_minor`` of ``currency``, rounded down.
    per_amount_minor: Mapped[int | None] = mapped_column(BigInteger)
    currency: Mapped[str | None] = mapped_column(String(3))
    # Referrals: what the referred member gets (``points`` is the referrer's).
    referred_points: Mapped[int] = mapped_column(BigInteger, default=0)
    # Sign-ins: ``streak_bonus_points`` more on every ``streak_days``-th consecutive day.
    streak_days: Mapped[int | None] = mapped_column(Integer)
    streak_bonus_points: Mapped[int] = mapped_column(BigInteger, default=0)
    funded_by: Mapped[str] = mapped_column(String(10))
    funding_partner_id: Mapped[int | None] = mapped_column(ForeignKey("partners.id"))
    cap_per_day: Mapped[int | None] = mapped_column(BigInteger)
    cap_per_month: Mapped[int | None] = mapped_column(BigInteger)
    # None: every tier.
    eligible_tiers: Mapped[list[str] | None] = mapped_column(JSON)
    min_tenure_months: Mapped[int] = mapped_column(Integer, default=0)
    starts_at: Mapped[datetime] = mapped_column(UTCDateTime)
    ends_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class BehaviourEvent(Base):
    """One event a partner reported, once per (partner, event id), and what it gave."""

    __tablename__ = "behaviour_events"
    __table_args__ = (
        UniqueConstraint("partner_id", "event_id"),
        # A member is referred once, whoever reports it.
        UniqueConstraint("referred_member_id"),
        CheckConstraint(f"event_type IN {EVENT_TYPES_SQL}", name="event_type"),
        CheckConstraint("status IN ('awarded', 'not_awarded', 'pending')", name="status"),
        CheckConstraint("points_awarded >= 0", name="points_not_negative"),
        CheckConstraint("amount_minor IS NULL OR amount_minor > 0", name="amount_positive"),
        CheckConstraint("(event_type = 'referral') = (referred_member_id IS NOT NULL)", name="referral_names_member"),
        Index("ix_behaviour_events_member_type_day", "member_id", "event_type", "local_day"),
        Index("ix_behaviour_events_pending", "status", "event_type"),
    )

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    partner_id: Mapped[int] = mapped_column(ForeignKey("partners.id"))
    event_id: Mapped[str] = mapped_column(String(64))
    event_type: Mapped[str] = mapped_column(String(20))
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"))
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # The day of ``occurred_at`` in the alliance's time zone: caps and streaks count by it.
    local_day: Mapped[date] = mapped_column(Date)
    amount_minor: Mapped[int | None] = mapped_column(BigInteger)
    currency: Mapped[str | None] = mapped_column(String(3))
    referred_member_id: Mapped[int | None] = mapped_column(ForeignKey("members.id"))
    rule_id: Mapped[int | None] = mapped_column(ForeignKey("behaviour_rules.id"))
    # awarded, not_awarded (with a reason), or pending (a referral waiting for the first purchase).
    status: Mapped[str] = mapped_column(String(12))
    reason: Mapped[str | None] = mapped_column(String(40))
    points_awarded: Mapped[int] = mapped_column(BigInteger, default=0)
    # Sign-ins: the consecutive day this one is (1 when the streak starts); 0 when not counted.
    streak_day: Mapped[int | None] = mapped_column(Integer)
    # Digest of what the event says, so a different event under the same id is told apart.
    fingerprint: Mapped[str] = mapped_column(String(64))
    reported_at: Mapped[datetime] = mapped_column(UTCDateTime)
    awarded_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class BehaviourAward(Base):
    """One member's points for one event, as posted in the ledger."""

    __tablename__ = "behaviour_awards"
    __table_args__ = (
        UniqueConstraint("event_id", "member_id"),
        CheckConstraint("points > 0", name="points_positive"),
        CheckConstraint("side IN ('member', 'referrer', 'referred')", name="side"),
        Index("ix_behaviour_awards_member_rule_day", "member_id", "rule_id", "local_day"),
    )

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    event_id: Mapped[int] = mapped_column(ForeignKey("behaviour_events.id"))
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"))
    rule_id: Mapped[int] = mapped_column(ForeignKey("behaviour_rules.id"))
    side: Mapped[str] = mapped_column(String(10))
    points: Mapped[int] = mapped_column(BigInteger)
    streak_bonus_points: Mapped[int] = mapped_column(BigInteger, default=0)
    # The partner that issued (and pays for) the points; None when the hub funds them.
    funder_partner_id: Mapped[int | None] = mapped_column(ForeignKey("partners.id"))
    transaction_id: Mapped[int] = mapped_column(ForeignKey("journal_transactions.id"))
    local_day: Mapped[date] = mapped_column(Date)
    awarded_at: Mapped[datetime] = mapped_column(UTCDateTime)
