"""``decide_purchase``: the one decision a single report and every batch item go through."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest

from alliance.domain.cards import CardNotUsable
from alliance.domain.earning import Campaign, EarnRule
from alliance.domain.errors import InvalidState, NotFound, ValidationFailed
from alliance.domain.purchases import (
    CardFacts,
    PurchaseFacts,
    ReceiptAlreadyReported,
    ReportingPartner,
    decide_purchase,
    in_report_window,
    local_day,
)

NOW = datetime(2026, 11, 2, 9, 30, tzinfo=timezone.utc)
VALID_CARD = "4000000000000002"


@dataclass(frozen=True)
class Report:
    receipt_id: str = "r-1"
    card_number: str = VALID_CARD
    amount_minor: int = 12_345
    currency: str = "EUR"
    purchased_at: datetime = NOW - timedelta(minutes=1)


PARTNER = ReportingPartner(id=7, code="cafe", status="active", currency="EUR", time_zone="Europe/Lisbon",
                           return_window_days=None)
CARD = CardFacts(card_id=3, card_status="active", member_id=11, member_status="active", tier="standard")
RULE = EarnRule.from_stored(Decimal("1"), [], None, None)
FACTS = PurchaseFacts(partner_id=7, partner=PARTNER, receipt_reported=False, card=CARD, rule=RULE)


def test_an_accepted_purchase_earns_by_the_rule_with_no_pending_window():
    decision = decide_purchase(Report(), FACTS, NOW)
    assert decision.card == CARD and decision.partner == PARTNER
    assert decision.breakdown.partner_points == 123 and decision.breakdown.hub_points == 0
    assert decision.pending_until is None


def test_a_return_window_keeps_the_points_pending_from_the_purchase_time():
    facts = replace(FACTS, partner=replace(PARTNER, return_window_days=14))
    decision = decide_purchase(Report(), facts, NOW)
    assert decision.pending_until == Report().purchased_at + timedelta(days=14)


def test_a_campaign_and_the_day_cap_take_part_in_the_points():
    capped = EarnRule.from_stored(Decimal("1"), [], None, 130)
    campaign = Campaign(campaign_id=1, name="double", funded_by="hub", multiplier=Decimal("2"), bonus_points=0,
                        min_amount_minor=0)
    decision = decide_purchase(Report(), replace(FACTS, rule=capped, campaigns=[campaign],
                                                 partner_points_today=100), NOW)
    # 123 base points, cut to the 30 left under the day's cap; the hub's campaign adds its own.
    assert decision.breakdown.partner_points == 30
    assert decision.breakdown.hub_points > 0


# Each refusal, with every later check failing too: the first one a partner would fix wins.
STAGES = ["partner", "report", "receipt", "card", "rule"]
LATER_FAILURES = {"receipt": {"receipt_reported": True}, "card": {"card": None}, "rule": {"rule": None}}


@pytest.mark.parametrize(("stage", "change", "report_change", "refusal", "text"), [
    ("partner", {"partner": None}, {}, NotFound, "no partner 7"),
    ("partner", {"partner": replace(PARTNER, status="suspended")}, {}, InvalidState,
     "is suspended and cannot issue points"),
    ("report", {}, {"currency": "USD"}, ValidationFailed, "this partner reports in EUR"),
    ("report", {}, {"purchased_at": NOW + timedelta(minutes=6)}, ValidationFailed, "in the future"),
    ("report", {}, {"purchased_at": NOW - timedelta(days=91)}, ValidationFailed, "older than 90 days"),
    ("receipt", {"receipt_reported": True}, {}, ReceiptAlreadyReported, "already reported"),
    ("card", {}, {"card_number": "4000000000000003"}, ValidationFailed, "card number is not valid"),
    ("card", {"card": None}, {}, NotFound, "no card with this number"),
    ("card", {"card": replace(CARD, card_status="blocked")}, {}, CardNotUsable, "the card is blocked"),
    ("rule", {"rule": None}, {}, InvalidState, "no earn rule in force"),
])
def test_refusals_come_in_the_order_a_partner_fixes_them(stage, change, report_change, refusal, text):
    later = {name: value for later_stage, failure in LATER_FAILURES.items()
             if STAGES.index(later_stage) > STAGES.index(stage) for name, value in failure.items()}
    with pytest.raises(refusal, match=text):
        decide_purchase(replace(Report(), **report_change), replace(FACTS, **later, **change), NOW)


def test_the_reporting_window_and_the_local_day():
    assert in_report_window(NOW - timedelta(days=90), NOW) and not in_report_window(NOW - timedelta(days=91), NOW)
    assert in_report_window(NOW + timedelta(minutes=5), NOW) and not in_report_window(NOW + timedelta(minutes=6), NOW)
    # 23:30 UTC on 28 March 2027 is 00:30 on the 29th in Lisbon (summer time began at 01:00 UTC).
    day = local_day(datetime(2027, 3, 28, 23, 30, tzinfo=timezone.utc), "Europe/Lisbon")
    assert day.day.isoformat() == "2027-03-29"
    assert day.end.astimezone(timezone.utc) - day.start.astimezone(timezone.utc) == timedelta(hours=24)
    # The day summer time begins is 23 hours long.
    spring = local_day(datetime(2027, 3, 28, 12, tzinfo=timezone.utc), "Europe/Lisbon")
    assert spring.end.astimezone(timezone.utc) - spring.start.astimezone(timezone.utc) == timedelta(hours=23)
