"""Behaviour points as pure rules: what an event is worth, streaks, caps, eligibility, the local day.

An event type's rule gives fixed points (a sign-in, a survey, self-service, a referral
for each side) or points per amount (a recharge or a bill payment: ``points`` for every
whole ``per_amount_minor`` of the rule's currency, rounded down, in exact integers).
A sign-in on the ``streak_days``-th consecutive day (and every multiple of it) earns
``streak_bonus_points`` more. Caps limit the points one member earns under one rule per
day and per calendar month of the alliance's time zone: an award that would pass a cap
is cut to what is left of it, and is 0 once the cap is reached. Eligibility is the
member's tier (when the rule lists tiers) and tenure (whole months since enrolment).
Nothing here touches a database.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo

from alliance.domain.clock import add_months
from alliance.domain.errors import ValidationFailed


class EventType(StrEnum):
    """The kinds of behaviour a partner reports."""

    SIGN_IN = "sign_in"
    REFERRAL = "referral"
    SURVEY = "survey"
    SELF_SERVICE = "self_service"
    RECHARGE = "recharge"
    BILL_PAYMENT = "bill_payment"


EVENT_TYPES = tuple(event_type.value for event_type in EventType)
# Events that carry an amount: their points are per unit of it.
AMOUNT_EVENTS = frozenset({EventType.RECHARGE.value, EventType.BILL_PAYMENT.value})
FUNDERS = ("hub", "reporter", "partner")
TIERS = ("standard", "silver", "gold", "diamond")
MAX_POINTS = 10**9


class Reason(StrEnum):
    """Why an event gave no points (or fewer than its rule's): a normal answer, not an error."""

    NO_RULE = "no_rule_in_force"
    TIER = "tier_not_eligible"
    TENURE = "tenure_too_short"
    DAY_CAP = "day_cap_reached"
    MONTH_CAP = "month_cap_reached"
    ALREADY_SIGNED_IN = "already_signed_in_today"
    BELOW_UNIT = "amount_below_one_unit"
    ALREADY_REFERRED = "already_referred"
    NOT_NEW = "referred_member_not_new"
    AWAITING_PURCHASE = "awaiting_first_purchase"


@dataclass(frozen=True, slots=True)
class Rule:
    """An event type's rule as the domain needs it."""

    event_type: str
    points: int
    per_amount_minor: int | None = None
    currency: str | None = None
    referred_points: int = 0
    streak_days: int | None = None
    streak_bonus_points: int = 0
    cap_per_day: int | None = None
    cap_per_month: int | None = None
    eligible_tiers: tuple[str, ...] | None = None
    min_tenure_months: int = 0
    starts_at: datetime | None = None
    ends_at: datetime | None = None

    def in_force(self, moment: datetime) -> bool:
        """Whether the rule applies to an event at ``moment``."""
        return ((self.starts_at is None or self.starts_at <= moment)
                and (self.ends_at is None or moment < self.ends_at))


def _whole(value: object, field: str, *, minimum: int, maximum: int = MAX_POINTS) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
        raise ValidationFailed(f"{field} must be a whole number from {minimum} to {maximum:,}",
                               fields={field: ["out of range"]})
    return value


def validate_rule(rule: Rule) -> Rule:
    """A rule that makes sense for its event type, or ``ValidationFailed`` naming the field."""
    if rule.event_type not in EVENT_TYPES:
        raise ValidationFailed(f"event_type must be one of {', '.join(EVENT_TYPES)}",
                               fields={"event_type": ["unknown"]})
    _whole(rule.points, "points", minimum=0)
    _whole(rule.referred_points, "referred_points", minimum=0)
    _whole(rule.streak_bonus_points, "streak_bonus_points", minimum=0)
    _whole(rule.min_tenure_months, "min_tenure_months", minimum=0, maximum=1200)
    for name, cap in (("cap_per_day", rule.cap_per_day), ("cap_per_month", rule.cap_per_month)):
        if cap is not None:
            _whole(cap, name, minimum=0)
    if rule.event_type in AMOUNT_EVENTS:
        if rule.per_amount_minor is None or rule.currency is None:
            raise ValidationFailed("a recharge or bill payment rule gives points per amount: name per_amount_minor "
                                   "and currency", fields={"per_amount_minor": ["required"]})
        _whole(rule.per_amount_minor, "per_amount_minor", minimum=1, maximum=10**12)
    elif rule.per_amount_minor is not None or rule.currency is not None:
        raise ValidationFailed(f"a {rule.event_type} rule gives fixed points, not points per amount",
                               fields={"per_amount_minor": ["only for recharge and bill_payment"]})
    if rule.event_type != EventType.REFERRAL and rule.referred_points:
        raise ValidationFailed("referred_points is for referral rules", fields={"referred_points": ["only referral"]})
    if rule.event_type == EventType.SIGN_IN:
        if (rule.streak_days is None) != (rule.streak_bonus_points == 0):
            raise ValidationFailed("a streak bonus names both streak_days and streak_bonus_points",
                                   fields={"streak_days": ["with streak_bonus_points"]})
        if rule.streak_days is not None:
            _whole(rule.streak_days, "streak_days", minimum=2, maximum=366)
    elif rule.streak_days is not None or rule.streak_bonus_points:
        raise ValidationFailed("a streak bonus is for sign_in rules", fields={"streak_days": ["only sign_in"]})
    if rule.eligible_tiers is not None:
        unknown = sorted(set(rule.eligible_tiers) - set(TIERS))
        if unknown or not rule.eligible_tiers:
            raise ValidationFailed(f"eligible_tiers lists tiers among {', '.join(TIERS)}",
                                   fields={"eligible_tiers": ["unknown tier" if unknown else "empty"]})
    if rule.starts_at is not None and rule.ends_at is not None and rule.ends_at <= rule.starts_at:
        raise ValidationFailed("ends_at must be after starts_at", fields={"ends_at": ["not after starts_at"]})
    return rule


def base_points(rule: Rule, *, amount_minor: int | None) -> int:
    """The points an event earns under its rule before streaks and caps (per amount: rounded down)."""
    if rule.event_type in AMOUNT_EVENTS:
        assert rule.per_amount_minor is not None and amount_minor is not None
        return amount_minor // rule.per_amount_minor * rule.points
    return rule.points


def streak_day(previous_day_streak: int | None) -> int:
    """The consecutive day a sign-in is, given the streak of the day before (None: no sign-in then)."""
    return (previous_day_streak or 0) + 1


def streak_bonus(rule: Rule, day: int) -> int:
    """The bonus of the ``day``-th consecutive sign-in: on every multiple of the rule's streak length."""
    if rule.streak_days is None or day <= 0 or day % rule.streak_days:
        return 0
    return rule.streak_bonus_points


def ineligibility(rule: Rule, *, tier: str, enrolled_at: datetime, at: datetime) -> Reason | None:
    """Why a member of ``tier`` enrolled at ``enrolled_at`` may not earn under ``rule`` at ``at`` (None: they may)."""
    if rule.eligible_tiers is not None and tier not in rule.eligible_tiers:
        return Reason.TIER
    if rule.min_tenure_months and add_months(enrolled_at, rule.min_tenure_months) > at:
        return Reason.TENURE
    return None


@dataclass(frozen=True, slots=True)
class Capped:
    """Points after the caps, and the cap that cut them (None when none did)."""

    points: int
    cut_by: Reason | None


def apply_caps(rule: Rule, points: int, *, earned_today: int, earned_this_month: int) -> Capped:
    """Cut ``points`` to what is left of the rule's day and month caps for this member."""
    left = points
    cut_by: Reason | None = None
    for cap, earned, reason in ((rule.cap_per_day, earned_today, Reason.DAY_CAP),
                                (rule.cap_per_month, earned_this_month, Reason.MONTH_CAP)):
        if cap is not None and left > cap - earned:
            left, cut_by = max(cap - earned, 0), reason
    return Capped(points=left, cut_by=cut_by)


def local_day(moment: datetime, time_zone: str) -> date:
    """The calendar day of ``moment`` in the alliance's time zone."""
    return moment.astimezone(ZoneInfo(time_zone)).date()


def month_of(day: date) -> tuple[date, date]:
    """The first and last day of ``day``'s calendar month."""
    first = day.replace(day=1)
    following = (first + timedelta(days=32)).replace(day=1)
    return first, following - timedelta(days=1)


def tiers_of(value: Sequence[str] | None) -> tuple[str, ...] | None:
    """A stored tier list as a tuple (None: every tier)."""
    return None if value is None else tuple(value)
