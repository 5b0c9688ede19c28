"""A reported purchase's decision: refused, or how many points it earns and when they count.

One pure function, ``decide_purchase``, decides a single report and every item of a
batch, from the facts read for it (``PurchaseFacts``): the reporting partner, whether
the receipt is known, the card and its member, the earn rule in force when the
purchase was made, the campaigns running then, and the points the partner already
gave the member that local day. Where the facts come from (one round trip on the
single path, set-based reads for a batch) is the storage's business; what they mean
is decided here, once.

The refusals come in the order a partner would fix them: the partner, the report
(currency, the till's clock), the receipt, the card, the rule.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Protocol, Sequence
from zoneinfo import ZoneInfo

from alliance.domain.cards import require_usable_card, require_valid_card_number
from alliance.domain.earning import (
    BUILT_IN_TIER_SCHEDULE,
    Campaign,
    EarnBreakdown,
    EarnRule,
    TierSchedule,
    compute_earn,
)
from alliance.domain.errors import Conflict, InvalidState, NotFound, ValidationFailed
from alliance.domain.money import minor_units_per_unit

# A till that was offline may report late, but not from another season.
MAX_REPORT_DELAY = timedelta(days=90)
MAX_CLOCK_AHEAD = timedelta(minutes=5)


class ReceiptAlreadyReported(Conflict):
    """A receipt id this partner has already reported."""

    code = "receipt_already_reported"


class PurchaseReportLike(Protocol):
    """What a till says about one purchase (a single report or a batch item)."""

    @property
    def receipt_id(self) -> str: ...

    @property
    def card_number(self) -> str: ...

    @property
    def amount_minor(self) -> int: ...

    @property
    def currency(self) -> str: ...

    @property
    def purchased_at(self) -> datetime: ...


@dataclass(frozen=True, slots=True)
class ReportingPartner:
    """The partner reporting the purchase, as deciding it needs."""

    id: int
    code: str
    status: str
    currency: str
    time_zone: str
    return_window_days: int | None


@dataclass(frozen=True, slots=True)
class CardFacts:
    """The reported card and its member."""

    card_id: int
    card_status: str
    member_id: int
    member_status: str
    tier: str


@dataclass(frozen=True, slots=True)
class PurchaseFacts:
    """Everything ``decide_purchase`` needs that the storage read for one purchase.

    ``partner`` is None when no partner has the id; ``card`` when no card has the number;
    ``rule`` when no earn rule was in force at the purchase time. ``campaigns`` are those
    running at the purchase time; ``partner_points_today`` the points this partner gave
    the member on the purchase's local day (only read under a per-member-day cap);
    ``tier_schedule`` the tier policy versions, which give the member's tier its
    multiplier at the purchase time (never later than now: a till's clock may run ahead).
    """

    partner_id: int
    partner: ReportingPartner | None
    receipt_reported: bool
    card: CardFacts | None
    rule: EarnRule | None
    campaigns: Sequence[Campaign] = ()
    partner_points_today: int = 0
    tier_schedule: TierSchedule = BUILT_IN_TIER_SCHEDULE


@dataclass(frozen=True, slots=True)
class PurchaseDecision:
    """An accepted purchase: its card, its points, and until when they wait in pending."""

    partner: ReportingPartner
    card: CardFacts
    breakdown: EarnBreakdown
    pending_until: datetime | None


def decide_purchase(report: PurchaseReportLike, facts: PurchaseFacts, now: datetime) -> PurchaseDecision:
    """Accept the purchase with its points, or raise the first refusal a partner would fix."""
    partner = issuing_partner(facts.partner, facts.partner_id)
    check_report(report, partner, now)
    if facts.receipt_reported:
        raise ReceiptAlreadyReported(f"receipt {report.receipt_id!r} was already reported")
    require_valid_card_number(report.card_number)
    card = facts.card
    if card is None:
        raise NotFound("no card with this number")
    require_usable_card(card.card_status, card.member_status)
    if facts.rule is None:
        raise InvalidState(f"partner {partner.code} has no earn rule in force at {report.purchased_at.isoformat()}")
    breakdown = compute_earn(
        amount_minor=report.amount_minor, minor_units_per_unit=minor_units_per_unit(partner.currency),
        rule=facts.rule, tier=card.tier,
        tier_multiplier=facts.tier_schedule.multiplier(card.tier, min(report.purchased_at, now)),
        campaigns=facts.campaigns, partner_points_earned_today=facts.partner_points_today,
    )
    pending_until = None
    if partner.return_window_days:
        pending_until = report.purchased_at + timedelta(days=partner.return_window_days)
    return PurchaseDecision(partner, card, breakdown, pending_until)


def issuing_partner(partner: ReportingPartner | None, partner_id: int) -> ReportingPartner:
    """The partner, if it exists and may issue points now."""
    if partner is None:
        raise NotFound(f"no partner {partner_id}")
    if partner.status != "active":
        raise InvalidState(f"partner {partner.code} is {partner.status} and cannot issue points")
    return partner


def check_report(report: PurchaseReportLike, partner: ReportingPartner, now: datetime) -> None:
    """Refuse a report in another currency than the partner's, from the future, or too old."""
    if report.currency != partner.currency:
        raise ValidationFailed(f"this partner reports in {partner.currency}",
                               fields={"currency": [f"must be {partner.currency}"]})
    if report.purchased_at > now + MAX_CLOCK_AHEAD:
        raise ValidationFailed("the purchase is in the future; check the till's clock",
                               fields={"purchased_at": ["in the future"]})
    if report.purchased_at < now - MAX_REPORT_DELAY:
        raise ValidationFailed(f"purchases older than {MAX_REPORT_DELAY.days} days cannot be reported",
                               fields={"purchased_at": ["too old"]})


def in_report_window(purchased_at: datetime, now: datetime) -> bool:
    """Whether a purchase at ``purchased_at`` may be reported at ``now`` (``check_report``'s clock checks)."""
    return now - MAX_REPORT_DELAY <= purchased_at <= now + MAX_CLOCK_AHEAD


@dataclass(frozen=True, slots=True)
class LocalDay:
    """A calendar day in the partner's time zone, as the half-open UTC-comparable range a day cap sums over."""

    day: date
    start: datetime
    end: datetime


def local_day(moment: datetime, time_zone: str) -> LocalDay:
    """The partner's local calendar day holding ``moment``: the span a per-member-day cap counts."""
    zone = ZoneInfo(time_zone)
    day = moment.astimezone(zone).date()
    return LocalDay(day, datetime.combine(day, time(0), zone), datetime.combine(day + timedelta(days=1), time(0), zone))
