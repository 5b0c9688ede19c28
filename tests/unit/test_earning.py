"""Earning and clawback rules: hand-worked points for each rule, invalid inputs, properties."""

from __future__ import annotations

import ast
import json
import sys
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import alliance.domain.earning as earning_module
from alliance.domain.earning import (
    TIER_MULTIPLIERS,
    Campaign,
    CampaignPoints,
    Cap,
    EarnRule,
    Funder,
    LadderStep,
    Tier,
    clawback_target,
    compute_earn,
)
from alliance.domain.errors import ValidationFailed

EURO_CENTS = 100
# The demo ladder: below 100.00 ×1, from 100.00 ×1.5, from 300.00 ×2, one point per euro.
STORED_LADDER = [
    {"from_minor": 0, "multiplier": "1"},
    {"from_minor": 10_000, "multiplier": "1.5"},
    {"from_minor": 30_000, "multiplier": "2"},
]
LADDER_RULE = EarnRule.from_stored(Decimal("1"), STORED_LADDER, None, None)
FLAT_RULE = EarnRule(Decimal("1"), (), None, None)


def earn(amount_minor, *, rule=LADDER_RULE, tier="standard", campaigns=(), earned_today=0,
         minor_units_per_unit=EURO_CENTS):
    return compute_earn(
        amount_minor=amount_minor, minor_units_per_unit=minor_units_per_unit, rule=rule, tier=tier,
        tier_multiplier=TIER_MULTIPLIERS[tier], campaigns=campaigns, partner_points_earned_today=earned_today,
    )


def capped_rule(per_purchase_cap_points, per_member_day_cap_points):
    return EarnRule.from_stored(Decimal("1"), STORED_LADDER, per_purchase_cap_points, per_member_day_cap_points)


def campaign(campaign_id, funded_by, multiplier="1", bonus_points=0, min_amount_minor=0):
    return Campaign(campaign_id, f"campaign {campaign_id}", funded_by, Decimal(multiplier), bonus_points,
                    min_amount_minor)


# --- ladder -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("amount_minor", "ladder_multiplier", "rule_points"),
    [
        (1, Decimal("1"), 0),  # 1 × 1 / 100 = 0.01 → 0
        (100, Decimal("1"), 1),  # 100 × 1 / 100 = 1
        (9_999, Decimal("1"), 99),  # 9999 × 1 / 100 = 99.99 → 99
        (10_000, Decimal("1.5"), 150),  # exactly at the step: 10000 × 1.5 / 100 = 150
        (29_999, Decimal("1.5"), 449),  # 29999 × 1.5 / 100 = 449.985 → 449
        (30_000, Decimal("2"), 600),  # exactly at the step: 30000 × 2 / 100 = 600
        (123_456, Decimal("2"), 2_469),  # 123456 × 2 / 100 = 2469.12 → 2469
    ],
    ids=["one-cent", "one-euro", "just-below-100", "at-100", "just-below-300", "at-300", "far-above-300"],
)
def test_the_whole_amount_gets_the_multiplier_of_its_ladder_band(amount_minor, ladder_multiplier, rule_points):
    breakdown = earn(amount_minor)
    assert breakdown.ladder_multiplier == ladder_multiplier
    assert breakdown.rule_points == rule_points
    assert breakdown.points_total == rule_points


@pytest.mark.parametrize(
    ("amount_minor", "ladder_multiplier", "rule_points"),
    [
        (499, Decimal("1"), 4),  # below the first step, so ×1: 499 / 100 = 4.99 → 4
        (500, Decimal("2"), 10),  # at the first step: 500 × 2 / 100 = 10
    ],
)
def test_an_amount_below_the_first_step_gets_multiplier_one(amount_minor, ladder_multiplier, rule_points):
    rule = EarnRule.from_stored(Decimal("1"), [{"from_minor": 500, "multiplier": "2"}], None, None)
    breakdown = earn(amount_minor, rule=rule)
    assert (breakdown.ladder_multiplier, breakdown.rule_points) == (ladder_multiplier, rule_points)


def test_an_empty_ladder_multiplies_by_one():
    # 12345 × 1 × 1 / 100 = 123.45 → 123
    breakdown = earn(12_345, rule=FLAT_RULE)
    assert (breakdown.ladder_multiplier, breakdown.rule_points) == (Decimal("1"), 123)


# --- tiers, currencies and flooring -----------------------------------------------------------


@pytest.mark.parametrize(
    ("tier", "rule_points"),
    [
        ("standard", 150),  # 10000 × 1.5 × 1 / 100 = 150
        ("silver", 187),  # 10000 × 1.5 × 1.25 / 100 = 187.5 → 187
        ("gold", 225),  # 10000 × 1.5 × 1.5 / 100 = 225
        ("diamond", 300),  # 10000 × 1.5 × 2 / 100 = 300
    ],
)
def test_the_tier_multiplier_applies_after_the_ladder(tier, rule_points):
    breakdown = earn(10_000, tier=tier)
    assert breakdown.tier == tier
    assert breakdown.tier_multiplier == TIER_MULTIPLIERS[tier]
    assert breakdown.rule_points == rule_points


def test_the_documented_tier_multipliers():
    assert dict(TIER_MULTIPLIERS) == {
        "standard": Decimal("1"), "silver": Decimal("1.25"), "gold": Decimal("1.5"), "diamond": Decimal("2"),
    }


def test_the_caller_chooses_the_tier_multiplier():
    # 10000 × 1.5 × 3 / 100 = 450, whatever the table says about gold.
    breakdown = compute_earn(
        amount_minor=10_000, minor_units_per_unit=EURO_CENTS, rule=LADDER_RULE, tier="gold",
        tier_multiplier=Decimal("3"), campaigns=(), partner_points_earned_today=0,
    )
    assert breakdown.rule_points == 450


@pytest.mark.parametrize(
    ("amount_minor", "minor_units_per_unit", "base_points_per_unit", "tier", "rule_points"),
    [
        (1_999, 1, Decimal("0.01"), "standard", 19),  # yen: 1999 × 0.01 = 19.99 → 19
        (1_999, 1, Decimal("0.01"), "gold", 29),  # yen: 1999 × 0.01 × 1.5 = 29.985 → 29
        (12_345, 1_000, Decimal("1"), "standard", 12),  # dinar fils: 12345 / 1000 = 12.345 → 12
        (10, 3, Decimal("1"), "standard", 3),  # a unit of 3 minor units: 10 / 3 = 3.33… → 3
    ],
    ids=["jpy", "jpy-gold", "kwd", "thirds"],
)
def test_minor_units_per_unit_sets_the_currency_unit(
    amount_minor, minor_units_per_unit, base_points_per_unit, tier, rule_points
):
    rule = EarnRule(base_points_per_unit, (), None, None)
    breakdown = earn(amount_minor, rule=rule, tier=tier, minor_units_per_unit=minor_units_per_unit)
    assert breakdown.minor_units_per_unit == minor_units_per_unit
    assert breakdown.rule_points == rule_points


def test_points_are_floored_exactly_even_where_decimal_precision_would_round_up():
    # (3·10^28 − 1) / 3 = 10^28 − 1/3, whose floor is 10^28 − 1; 28-digit Decimal
    # division would round it up to 10^28.
    breakdown = earn(3 * 10**28 - 1, rule=FLAT_RULE, minor_units_per_unit=3)
    assert breakdown.rule_points == 10**28 - 1


def test_a_tiny_purchase_earns_zero_points():
    breakdown = earn(99)  # 99 / 100 = 0.99 → 0
    assert (breakdown.rule_points, breakdown.points_total, breakdown.capped_by) == (0, 0, ())


def test_a_zero_base_rate_earns_only_campaign_bonuses():
    rule = EarnRule(Decimal("0"), (), None, None)
    breakdown = earn(10_000, rule=rule, campaigns=[campaign(1, "hub", bonus_points=25)])
    assert (breakdown.rule_points, breakdown.hub_points, breakdown.points_total) == (0, 25, 25)


# --- campaigns ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("funded_by", "multiplier", "bonus_points", "campaign_points", "partner_points", "hub_points"),
    [
        ("partner", "2", 0, 150, 300, 0),  # 150 × (2 − 1) = 150, partner: 150 + 150
        ("hub", "2", 0, 150, 150, 150),  # the same, paid by the hub
        ("hub", "1", 50, 50, 150, 50),  # a flat bonus only
        ("partner", "1.25", 10, 47, 197, 0),  # 150 × 0.25 = 37.5 → 37, + 10 = 47
    ],
)
def test_a_campaign_adds_points_charged_to_its_funder(
    funded_by, multiplier, bonus_points, campaign_points, partner_points, hub_points
):
    # Rule points: 10000 × 1.5 / 100 = 150.
    breakdown = earn(10_000, campaigns=[campaign(5, funded_by, multiplier, bonus_points)])
    assert breakdown.campaigns == (CampaignPoints(5, "campaign 5", Funder(funded_by), campaign_points),)
    assert (breakdown.partner_points, breakdown.hub_points) == (partner_points, hub_points)
    assert breakdown.points_total == 150 + campaign_points


def test_campaigns_do_not_compound_and_are_listed_by_campaign_id():
    # Rule points 150; ×2 adds 150 and ×3 adds 300, each on the rule points (not 150 × 6 = 900).
    breakdown = earn(10_000, campaigns=[campaign(9, "partner", "3"), campaign(2, "hub", "2")])
    assert [(line.campaign_id, line.points) for line in breakdown.campaigns] == [(2, 150), (9, 300)]
    # Partner: 150 + 300 = 450; hub: 150; total 600.
    assert (breakdown.partner_points, breakdown.hub_points, breakdown.points_total) == (450, 150, 600)
    assert breakdown.points_before_caps == 600


@pytest.mark.parametrize(
    ("min_amount_minor", "applies"),
    [(9_999, True), (10_000, True), (10_001, False)],
    ids=["below-the-amount", "exactly-the-amount", "above-the-amount"],
)
def test_a_campaign_applies_only_from_its_minimum_amount(min_amount_minor, applies):
    breakdown = earn(10_000, campaigns=[campaign(1, "hub", bonus_points=40, min_amount_minor=min_amount_minor)])
    assert breakdown.hub_points == (40 if applies else 0)
    assert len(breakdown.campaigns) == (1 if applies else 0)


@pytest.mark.parametrize(
    ("amount_minor", "multiplier", "bonus_points"),
    [
        (10_000, "1", 0),  # 150 × 0 + 0 = 0
        (50, "2", 0),  # rule points 0.5 → 0, so 0 × 1 + 0 = 0
        (500, "1.1", 0),  # rule points 5; 5 × 0.1 = 0.5 → 0
    ],
)
def test_campaign_lines_worth_zero_points_are_left_out(amount_minor, multiplier, bonus_points):
    breakdown = earn(amount_minor, campaigns=[campaign(1, "partner", multiplier, bonus_points)])
    assert breakdown.campaigns == ()


def test_a_hub_bonus_shows_even_on_a_purchase_earning_no_rule_points():
    breakdown = earn(50, campaigns=[campaign(3, "hub", bonus_points=5)])
    assert breakdown.rule_points == 0
    assert breakdown.campaigns == (CampaignPoints(3, "campaign 3", Funder.HUB, 5),)
    assert breakdown.points_total == 5


def test_the_same_campaign_twice_is_refused():
    with pytest.raises(ValidationFailed, match="once"):
        earn(10_000, campaigns=[campaign(1, "hub", bonus_points=5), campaign(1, "hub", bonus_points=5)])


# --- caps -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("per_purchase_cap_points", "per_member_day_cap_points", "earned_today", "partner_points", "capped_by"),
    [
        (None, None, 0, 600, ()),
        (200, None, 0, 200, (Cap.PER_PURCHASE,)),
        (600, None, 0, 600, ()),  # exactly at the cap does not bite
        (None, 1_000, 0, 600, ()),
        (None, 1_000, 900, 100, (Cap.PER_MEMBER_DAY,)),  # room 1000 − 900 = 100
        (None, 1_000, 400, 600, ()),  # room 600, exactly enough
        (None, 1_000, 1_000, 0, (Cap.PER_MEMBER_DAY,)),  # the day's allowance is used up
        (None, 1_000, 1_200, 0, (Cap.PER_MEMBER_DAY,)),  # already over the cap: room max(0, −200) = 0
        (500, 1_000, 700, 300, (Cap.PER_PURCHASE, Cap.PER_MEMBER_DAY)),  # 600 → 500, then room 300
        (500, 1_000, 200, 500, (Cap.PER_PURCHASE,)),  # 600 → 500, room 800 is enough
    ],
)
def test_caps_limit_the_partner_points(
    per_purchase_cap_points, per_member_day_cap_points, earned_today, partner_points, capped_by
):
    # Rule points: 30000 × 2 / 100 = 600.
    breakdown = earn(30_000, rule=capped_rule(per_purchase_cap_points, per_member_day_cap_points),
                     earned_today=earned_today)
    assert breakdown.points_before_caps == 600
    assert breakdown.partner_points == partner_points
    assert breakdown.capped_by == capped_by
    assert breakdown.points_total == partner_points


def test_caps_count_partner_funded_campaign_points():
    # Rule 600 + partner campaign 600 = 1200, capped to 1000 per purchase.
    breakdown = earn(30_000, rule=capped_rule(1_000, None), campaigns=[campaign(1, "partner", "2")])
    assert (breakdown.points_before_caps, breakdown.partner_points) == (1_200, 1_000)
    assert breakdown.capped_by == (Cap.PER_PURCHASE,)


def test_caps_leave_hub_funded_points_alone():
    # Partner: 600 + 600 = 1200 → 100 by the purchase cap → 0 by the spent day cap.
    # Hub: 600 × 1 = 600 plus a 50 bonus, uncapped.
    breakdown = earn(
        30_000, rule=capped_rule(100, 1_000), earned_today=1_000,
        campaigns=[campaign(1, "partner", "2"), campaign(2, "hub", "2", bonus_points=50)],
    )
    assert breakdown.points_before_caps == 1_850
    assert (breakdown.partner_points, breakdown.hub_points, breakdown.points_total) == (0, 650, 650)
    assert breakdown.capped_by == (Cap.PER_PURCHASE, Cap.PER_MEMBER_DAY)


# --- the breakdown as JSON --------------------------------------------------------------------


def test_the_breakdown_is_json_ready_with_decimals_as_strings():
    # 10000 × 1.5 × 1.25 / 100 = 187.5 → 187; hub campaign adds 187 × 1 = 187 + 20 = 207.
    breakdown = earn(10_000, tier="silver", campaigns=[campaign(4, "hub", "2", bonus_points=20)],
                     rule=capped_rule(150, None))
    expected = {
        "amount_minor": 10_000,
        "minor_units_per_unit": 100,
        "base_points_per_unit": "1",
        "ladder_multiplier": "1.5",
        "tier": "silver",
        "tier_multiplier": "1.25",
        "rule_points": 187,
        "campaigns": [{"campaign_id": 4, "name": "campaign 4", "funded_by": "hub", "points": 207}],
        "points_before_caps": 394,
        "capped_by": ["per_purchase_cap"],
        "partner_points": 150,
        "hub_points": 207,
        "points_total": 357,
    }
    assert breakdown.to_dict() == expected
    assert json.loads(json.dumps(breakdown.to_dict())) == expected
    # Plain strings, not the enums, so that any JSON encoder or marshmallow field takes them.
    as_dict = breakdown.to_dict()
    assert all(type(value) is str for value in (as_dict["tier"], *as_dict["capped_by"]))
    assert type(as_dict["campaigns"][0]["funded_by"]) is str


def test_the_breakdown_writes_decimals_without_exponents():
    rule = EarnRule(Decimal("1E+1"), (), None, None)
    breakdown = earn(100, rule=rule)  # 100 × 10 / 100 = 10
    assert breakdown.to_dict()["base_points_per_unit"] == "10"
    assert breakdown.rule_points == 10


# --- invalid inputs -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "changes",
    [
        {"amount_minor": 0},
        {"amount_minor": -100},
        {"amount_minor": 100.0},
        {"amount_minor": True},
        {"minor_units_per_unit": 0},
        {"minor_units_per_unit": -1},
        {"tier_multiplier": 1.5},
        {"tier_multiplier": Decimal("0")},
        {"tier_multiplier": Decimal("NaN")},
        {"tier": "platinum"},
        {"partner_points_earned_today": -1},
        {"rule": {"base_points_per_unit": "1"}},
        {"campaigns": [{"campaign_id": 1}]},
    ],
    ids=lambda changes: "-".join(f"{key}={value!r}" for key, value in changes.items()),
)
def test_compute_earn_refuses_invalid_inputs(changes):
    arguments = {
        "amount_minor": 10_000, "minor_units_per_unit": 100, "rule": LADDER_RULE, "tier": "standard",
        "tier_multiplier": Decimal("1"), "campaigns": (), "partner_points_earned_today": 0,
    }
    with pytest.raises(ValidationFailed):
        compute_earn(**(arguments | changes))


@pytest.mark.parametrize(
    ("base_points_per_unit", "amount_ladder", "per_purchase_cap_points", "per_member_day_cap_points"),
    [
        (Decimal("1"), [{"from_minor": 0, "multiplier": 1.5}], None, None),
        (Decimal("1"), [{"from_minor": 0, "multiplier": 2}], None, None),
        (Decimal("1"), [{"from_minor": 0, "multiplier": "abc"}], None, None),
        (Decimal("1"), [{"from_minor": 0, "multiplier": "NaN"}], None, None),
        (Decimal("1"), [{"from_minor": 0, "multiplier": "Infinity"}], None, None),
        (Decimal("1"), [{"from_minor": 0, "multiplier": "0"}], None, None),
        (Decimal("1"), [{"from_minor": 0, "multiplier": "-1"}], None, None),
        (Decimal("1"), [{"from_minor": 10_000, "multiplier": "1.5"}, {"from_minor": 0, "multiplier": "1"}],
         None, None),
        (Decimal("1"), [{"from_minor": 0, "multiplier": "1"}, {"from_minor": 0, "multiplier": "2"}], None, None),
        (Decimal("1"), [{"from_minor": -1, "multiplier": "1"}], None, None),
        (Decimal("1"), [{"from_minor": "100", "multiplier": "1"}], None, None),
        (Decimal("1"), [{"from_minor": 100.0, "multiplier": "1"}], None, None),
        (Decimal("1"), [{"from_minor": 0}], None, None),
        (Decimal("1"), [{"from_minor": 0, "multiplier": "1", "until_minor": 10}], None, None),
        (Decimal("1"), [[0, "1"]], None, None),
        (Decimal("1"), {"from_minor": 0, "multiplier": "1"}, None, None),
        (1.0, [], None, None),
        (Decimal("-1"), [], None, None),
        (Decimal("1"), [], 0, None),
        (Decimal("1"), [], None, -5),
        (Decimal("1"), [], 10.0, None),
    ],
    ids=[
        "float-multiplier", "int-multiplier", "text-multiplier", "nan-multiplier", "infinite-multiplier",
        "zero-multiplier", "negative-multiplier", "descending-steps", "repeated-step", "negative-from",
        "text-from", "float-from", "missing-key", "extra-key", "step-not-a-dict", "ladder-not-a-list",
        "float-base-rate", "negative-base-rate", "zero-purchase-cap", "negative-day-cap", "float-cap",
    ],
)
def test_a_stored_rule_with_bad_values_is_refused(
    base_points_per_unit, amount_ladder, per_purchase_cap_points, per_member_day_cap_points
):
    with pytest.raises(ValidationFailed):
        EarnRule.from_stored(
            base_points_per_unit, amount_ladder, per_purchase_cap_points, per_member_day_cap_points
        )


def test_a_stored_rule_reads_decimal_strings_exactly():
    assert LADDER_RULE.ladder == (
        LadderStep(0, Decimal("1")), LadderStep(10_000, Decimal("1.5")), LadderStep(30_000, Decimal("2")),
    )


@pytest.mark.parametrize(
    "changes",
    [
        {"campaign_id": 0},
        {"name": ""},
        {"funded_by": "bank"},
        {"multiplier": Decimal("0.5")},
        {"multiplier": 2.0},
        {"bonus_points": -1},
        {"bonus_points": 1.5},
        {"min_amount_minor": -1},
    ],
    ids=lambda changes: "-".join(f"{key}={value!r}" for key, value in changes.items()),
)
def test_a_campaign_with_bad_values_is_refused(changes):
    fields = {"campaign_id": 1, "name": "Spring", "funded_by": "hub", "multiplier": Decimal("2"),
              "bonus_points": 0, "min_amount_minor": 0}
    with pytest.raises(ValidationFailed):
        Campaign(**(fields | changes))


def test_a_campaign_takes_its_funder_as_plain_text():
    assert campaign(1, "partner").funded_by is Funder.PARTNER


# --- clawback -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("points_earned", "amount_minor", "refunded_amount_minor_total", "target_points"),
    [
        (150, 10_000, 0, 0),  # nothing refunded yet
        (150, 10_000, 2_500, 37),  # 150 × 2500 / 10000 = 37.5 → 37
        (150, 10_000, 5_000, 75),  # 150 × 5000 / 10000 = 75
        (150, 10_000, 9_999, 149),  # 150 × 9999 / 10000 = 149.985 → 149
        (150, 10_000, 10_000, 150),  # a full refund takes back everything
        (0, 10_000, 10_000, 0),  # a purchase that earned nothing gives nothing back
        (7, 3, 1, 2),  # 7 × 1 / 3 = 2.33… → 2
    ],
)
def test_the_clawback_target_is_proportional_to_the_refunded_total(
    points_earned, amount_minor, refunded_amount_minor_total, target_points
):
    assert clawback_target(
        points_earned=points_earned, amount_minor=amount_minor,
        refunded_amount_minor_total=refunded_amount_minor_total,
    ) == target_points


def test_cumulative_partial_refunds_claw_back_exactly_what_was_earned():
    # Targets after 33.33, 66.66, 100.00 refunded: 33 (33.33), 66 (66.66), 100;
    # each refund's share is the new target minus what was already clawed back.
    clawed_back_points = 0
    shares = []
    for refunded_total in (3_333, 6_666, 10_000):
        target = clawback_target(
            points_earned=100, amount_minor=10_000, refunded_amount_minor_total=refunded_total
        )
        shares.append(target - clawed_back_points)
        clawed_back_points = target
    assert shares == [33, 33, 34]
    assert clawed_back_points == 100


@pytest.mark.parametrize(
    ("points_earned", "amount_minor", "refunded_amount_minor_total"),
    [
        (150, 10_000, 10_001),  # more refunded than was paid
        (150, 10_000, -1),
        (150, 0, 0),
        (-1, 10_000, 100),
        (150, 10_000, 100.0),
        (150.0, 10_000, 100),
    ],
    ids=["over-refund", "negative-refund", "zero-amount", "negative-points", "float-refund", "float-points"],
)
def test_the_clawback_target_refuses_impossible_refunds(points_earned, amount_minor, refunded_amount_minor_total):
    with pytest.raises(ValidationFailed):
        clawback_target(
            points_earned=points_earned, amount_minor=amount_minor,
            refunded_amount_minor_total=refunded_amount_minor_total,
        )


# --- properties ------------------------------------------------------------------------------------

multipliers = st.decimals(min_value=Decimal("0.01"), max_value=Decimal("5"), places=2)
optional_caps = st.none() | st.integers(min_value=1, max_value=50_000)


@st.composite
def earn_rules(draw):
    starts = sorted(draw(st.sets(st.integers(min_value=0, max_value=1_000_000), max_size=5)))
    stored_ladder = [{"from_minor": start, "multiplier": str(draw(multipliers))} for start in starts]
    base_points_per_unit = draw(st.decimals(min_value=Decimal("0"), max_value=Decimal("20"), places=4))
    return EarnRule.from_stored(base_points_per_unit, stored_ladder, draw(optional_caps), draw(optional_caps))


@st.composite
def campaign_lists(draw):
    campaign_ids = draw(st.sets(st.integers(min_value=1, max_value=1_000), max_size=4))
    return [
        Campaign(
            campaign_id, f"campaign {campaign_id}", draw(st.sampled_from(list(Funder))),
            draw(st.decimals(min_value=Decimal("1"), max_value=Decimal("4"), places=2)),
            draw(st.integers(min_value=0, max_value=1_000)), draw(st.integers(min_value=0, max_value=200_000)),
        )
        for campaign_id in campaign_ids
    ]


@st.composite
def refund_totals(draw, amount_minor):
    """Increasing refunded totals ending at the full amount: a sequence of partial refunds."""
    if amount_minor == 1:
        return [1]
    cuts = draw(st.sets(st.integers(min_value=1, max_value=amount_minor - 1), max_size=6))
    return [*sorted(cuts), amount_minor]


@settings(max_examples=300, deadline=None)
@given(
    rule=earn_rules(),
    amount_minor=st.integers(min_value=1, max_value=5_000_000),
    minor_units_per_unit=st.sampled_from([1, 100, 1_000]),
    tier=st.sampled_from(list(Tier)),
    campaigns=campaign_lists(),
    earned_today=st.integers(min_value=0, max_value=100_000),
    data=st.data(),
)
def test_earn_and_clawback_properties(
    rule, amount_minor, minor_units_per_unit, tier, campaigns, earned_today, data
):
    breakdown = compute_earn(
        amount_minor=amount_minor, minor_units_per_unit=minor_units_per_unit, rule=rule, tier=tier,
        tier_multiplier=TIER_MULTIPLIERS[tier], campaigns=campaigns, partner_points_earned_today=earned_today,
    )
    assert breakdown.points_total == breakdown.partner_points + breakdown.hub_points
    assert 0 <= breakdown.partner_points and 0 <= breakdown.hub_points
    assert breakdown.points_total <= breakdown.points_before_caps
    if rule.per_purchase_cap_points is not None:
        assert breakdown.partner_points <= rule.per_purchase_cap_points
    if rule.per_member_day_cap_points is not None:
        assert breakdown.partner_points <= max(0, rule.per_member_day_cap_points - earned_today)
    assert breakdown.hub_points == sum(line.points for line in breakdown.campaigns if line.funded_by == "hub")
    json.dumps(breakdown.to_dict())

    clawed_back_points = 0
    for refunded_total in data.draw(refund_totals(amount_minor)):
        target = clawback_target(points_earned=breakdown.points_total, amount_minor=amount_minor,
                                 refunded_amount_minor_total=refunded_total)
        assert target >= clawed_back_points, "a later refund never gives points back"
        clawed_back_points = target
    assert clawed_back_points == breakdown.points_total


# --- dependencies -------------------------------------------------------------------------------------


def test_the_earning_module_imports_only_the_standard_library_and_the_domain():
    tree = ast.parse(Path(earning_module.__file__).read_text())
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    outside = {
        module for module in imported
        if module != "__future__" and module.split(".")[0] not in sys.stdlib_module_names
        and not module.startswith("alliance.domain.")
    }
    assert outside == set()


@settings(max_examples=400, deadline=None)
@given(
    amount=st.integers(-(10**15), 10**15),
    decimals=st.lists(st.decimals(allow_nan=False, allow_infinity=False, places=None, min_value=-(10**9),
                                  max_value=10**9), min_size=0, max_size=4),
    divisor=st.integers(1, 10**6),
)
def test_floor_of_product_is_the_exact_fraction_floor(amount, decimals, divisor):
    import math
    from fractions import Fraction

    exact = Fraction(amount)
    for value in decimals:
        exact *= Fraction(value)
    assert earning_module.floor_of_product(amount, *decimals, divisor=divisor) == math.floor(exact / divisor)


def test_floor_of_product_keeps_hundredths_exact():
    # As binary floats 100 × 0.29 is 28.999999999999996, whose floor is a point short.
    assert earning_module.floor_of_product(100, Decimal("0.29")) == 29
    assert earning_module.floor_of_product(7, Decimal("1.0"), divisor=10) == 0
    assert earning_module.floor_of_product(29_999, Decimal("1"), Decimal("1.5"), divisor=100) == 449
