"""The risk policy document and the decision it gives, as pure functions."""

from __future__ import annotations

import copy

import pytest

from alliance.domain.errors import ValidationFailed
from alliance.domain.risk import (
    ALLOWED,
    DEFAULT_POLICY,
    DEFAULT_POLICY_DATA,
    Action,
    Figures,
    Measure,
    RiskDeclined,
    decide,
    policy_from_data,
)


def policy(*limits, partners=None, tiers=None):
    data = {"limits": list(limits)}
    if partners is not None:
        data["partners"] = partners
    if tiers is not None:
        data["tiers"] = tiers
    return policy_from_data(data)


CARD_HOUR = {"name": "card-hour", "scope": "card", "measure": "earn", "window_minutes": 60, "max_count": 3,
             "action": "hold"}
MEMBER_POINTS = {"name": "member-points", "scope": "member", "measure": "earn", "window_minutes": 1440,
                 "max_points": 1000, "action": "flag"}
REDEEM = {"name": "member-redeem", "scope": "member", "measure": "redeem", "window_minutes": 60, "max_count": 2,
          "action": "refuse"}


def test_the_default_policy_reads_back_as_the_document_it_came_from():
    assert policy_from_data(DEFAULT_POLICY.as_data()) == DEFAULT_POLICY
    assert [limit["name"] for limit in DEFAULT_POLICY.as_data()["limits"]] == [
        limit["name"] for limit in DEFAULT_POLICY_DATA["limits"]]


def test_a_limit_lets_its_maximum_through_and_stops_the_next():
    limits = policy(CARD_HOUR).limits_for(Measure.EARN, partner_code=None, tier=None)
    assert decide(limits, {"card-hour": Figures(2, 0)}, points=10) is ALLOWED  # the third
    decision = decide(limits, {"card-hour": Figures(3, 30)}, points=10)  # the fourth
    assert decision.action is Action.HOLD and decision.allowed
    assert [seen.as_data() for seen in decision.passed] == [{
        "limit": "card-hour", "scope": "card", "measure": "earn", "window_minutes": 60, "action": "hold",
        "count": 4, "points": 40, "max_count": 3, "max_points": None}]


def test_points_caps_count_the_operations_points_and_the_strictest_action_wins():
    limits = policy(CARD_HOUR, MEMBER_POINTS).limits_for(Measure.EARN, partner_code=None, tier=None)
    flagged = decide(limits, {"card-hour": Figures(0, 0), "member-points": Figures(5, 990)}, points=11)
    assert flagged.action is Action.FLAG and [seen.limit for seen in flagged.passed] == ["member-points"]
    assert decide(limits, {"card-hour": Figures(0, 0), "member-points": Figures(5, 990)}, points=10) is ALLOWED
    both = decide(limits, {"card-hour": Figures(3, 0), "member-points": Figures(5, 990)}, points=11)
    assert both.action is Action.HOLD and {seen.limit for seen in both.passed} == {"card-hour", "member-points"}


def test_a_limit_without_figures_is_not_applied():
    limits = policy(CARD_HOUR).limits_for(Measure.EARN, partner_code=None, tier=None)
    assert decide(limits, {}, points=10**6) is ALLOWED


def test_refusal_is_the_only_action_that_stops_the_operation():
    limits = policy(REDEEM).limits_for(Measure.REDEEM, partner_code=None, tier=None)
    decision = decide(limits, {"member-redeem": Figures(2, 0)}, points=5)
    assert decision.action is Action.REFUSE and not decision.allowed


def test_partner_overrides_come_after_tier_overrides_and_can_switch_a_limit_off():
    rules = policy(CARD_HOUR, partners={"fuel": {"card-hour": {"max_count": 10, "action": "flag"}},
                                        "cafe": {"card-hour": {"enabled": False}}},
                   tiers={"gold": {"card-hour": {"max_count": 6}}})
    (plain,) = rules.limits_for(Measure.EARN, partner_code="shop", tier="standard")
    (gold,) = rules.limits_for(Measure.EARN, partner_code="shop", tier="gold")
    (fuel_gold,) = rules.limits_for(Measure.EARN, partner_code="fuel", tier="gold")
    assert (plain.max_count, gold.max_count, fuel_gold.max_count) == (3, 6, 10)
    assert fuel_gold.action is Action.FLAG and gold.action is Action.HOLD
    assert rules.limits_for(Measure.EARN, partner_code="cafe", tier="gold") == ()
    assert rules.limits_for(Measure.REDEEM, partner_code="shop", tier=None) == ()


@pytest.mark.parametrize(("change", "where"), [
    ({"scope": "till"}, "limits[0].scope"),
    ({"measure": "spend"}, "limits[0].measure"),
    ({"window_minutes": 0}, "limits[0].window_minutes"),
    ({"window_minutes": 60.0}, "limits[0].window_minutes"),
    ({"window_minutes": 31 * 24 * 60 + 1}, "limits[0].window_minutes"),
    ({"action": "block"}, "limits[0].action"),
    ({"max_count": -1}, "limits[0].max_count"),
    ({"max_count": True}, "limits[0].max_count"),
    ({"max_count": None}, "limits[0]"),  # no cap at all
    ({"name": "Card Hour"}, "limits[0].name"),
    ({"colour": "red"}, "limits[0]"),
    ({"measure": "redeem", "action": "hold"}, "limits[0].action"),  # only purchases are held
    ({"measure": "transfer_out", "scope": "card"}, "limits[0].scope"),
    ({"measure": "verification_failure", "scope": "member", "action": "refuse"}, "limits[0].scope"),
])
def test_a_malformed_limit_is_refused_naming_where(change, where):
    limit = {**CARD_HOUR, **change}
    with pytest.raises(ValidationFailed) as refused:
        policy(limit)
    assert where in refused.value.fields


@pytest.mark.parametrize(("partners", "tiers", "where"), [
    ({"Fuel Stop": {"card-hour": {"max_count": 1}}}, None, "partners.Fuel Stop"),
    ({"fuel": {"no-such": {"max_count": 1}}}, None, "partners.fuel.no-such"),
    ({"fuel": {"card-hour": {"scope": "member"}}}, None, "partners.fuel.card-hour"),
    ({"fuel": {"card-hour": {}}}, None, "partners.fuel.card-hour"),
    (None, {"platinum": {"card-hour": {"max_count": 1}}}, "tiers.platinum"),
    (None, {"gold": {"card-hour": {"enabled": "no"}}}, "tiers.gold.card-hour.enabled"),
    (None, {"gold": {"member-redeem": {"action": "hold"}}}, "tiers.gold.member-redeem.action"),
])
def test_a_malformed_override_is_refused_naming_where(partners, tiers, where):
    with pytest.raises(ValidationFailed) as refused:
        policy(CARD_HOUR, REDEEM, partners=partners, tiers=tiers)
    assert where in refused.value.fields


def test_names_must_be_unique_and_the_document_must_have_its_shape():
    with pytest.raises(ValidationFailed, match="a name of its own"):
        policy(CARD_HOUR, copy.deepcopy(CARD_HOUR))
    for document in (None, [], {"limits": "none"}, {"rules": []}, {"limits": [], "extra": 1}):
        with pytest.raises(ValidationFailed):
            policy_from_data(document)


def test_a_refusal_names_the_decision_but_no_figure():
    refusal = RiskDeclined("R-42")
    assert refusal.code == "declined" and refusal.http_status == 403
    assert "R-42" in refusal.detail and not any(ch.isdigit() for ch in refusal.detail.replace("R-42", ""))
