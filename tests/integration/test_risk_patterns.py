"""Risk pattern rules, each scheme played through the signed partner API (transfers through the back-office
service): an earn-then-burn loop between two tills, refunds after the points were spent, a purchase split to
dodge the per-purchase cap, a chain of transfers from new members, an amount far above the partner's own; and
the honest look-alikes none of them fires on."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

import pytest
from sqlalchemy import select

from alliance.domain.errors import ValidationFailed
from alliance.domain.risk import RiskDeclined
from alliance.extensions import hub_state
from alliance.models import AuditLogEntry, PartnerAmountProfile, RiskDecision
from alliance.services import ledger, member_admin, risk_patterns
from alliance.services.member_admin import TransferLimits
from tests.factories import make_member_with_pin, make_signing_partner, set_risk_policy
from tests.http_server import (
    assert_audit_green,
    assert_books_unchanged,
    balances,
    books,
    fund_member,
    purchase_payload,
    wall_clock_partner_time,
)
from tests.partner_client import SignedTestClient

UTC = timezone.utc
PIN = "2468"
PURCHASES = "/partner/v1/purchases"
BATCH = "/partner/v1/purchases/batch"
REDEMPTIONS = "/partner/v1/redemptions"


def decisions(hub) -> list[RiskDecision]:  # type: ignore[no-untyped-def]
    with hub.unit_of_work() as uow:
        return list(uow.session.scalars(select(RiskDecision).order_by(RiskDecision.id)))


def set_rule(hub, name: str, actor: str = "console:rita", **changes):  # type: ignore[no-untyped-def]
    with hub.unit_of_work() as uow:
        rule = risk_patterns.set_rule(uow.session, name=name, now=datetime.now(UTC), actor=actor, **changes)
        uow.commit()
    return rule


def buy(client, member, receipt: str, amount_minor: int):  # type: ignore[no-untyped-def]
    return client.post(PURCHASES, purchase_payload(receipt, member.card_number, amount_minor))


def redeem(client, member, reference: str, points: int):  # type: ignore[no-untyped-def]
    return client.post(REDEMPTIONS, {"reference": reference, "points": points, "card_number": member.card_number,
                                     "pin": PIN})


@pytest.fixture
def alliance(app):  # type: ignore[no-untyped-def]
    """Two partners, aurora (where points are earned) and borealis (where they are spent), each key bound to its
    till, under a risk policy without velocity limits, so only the patterns decide."""
    hub = hub_state(app)
    created = wall_clock_partner_time()
    aurora = make_signing_partner(hub, now=created, code="aurora", bind_key_to_terminal=True)
    borealis = make_signing_partner(hub, now=created, code="borealis", bind_key_to_terminal=True)
    set_risk_policy(hub)
    return SimpleNamespace(hub=hub, created=created, aurora=aurora, borealis=borealis,
                           at_aurora=SignedTestClient(app, aurora), at_borealis=SignedTestClient(app, borealis))


def members(alliance, count: int):  # type: ignore[no-untyped-def]
    return [make_member_with_pin(alliance.hub, now=alliance.created, pin=PIN) for _ in range(count)]


# -- 1. earn-then-burn loop --------------------------------------------------------------------

def test_points_earned_at_one_till_and_burned_at_another_on_a_third_card_are_flagged(alliance):
    cards = members(alliance, 3)
    for index, member in enumerate(cards):
        assert buy(alliance.at_aurora, member, f"loop-{index}", 40_000).status == 201
        assert redeem(alliance.at_borealis, member, f"burn-{index}", 400).status == 201
        # The first two cards are remembered, not yet flagged: one card burning fast is a member in a hurry.
        assert len(decisions(alliance.hub)) == (0 if index < 2 else 1)
    (flag,) = decisions(alliance.hub)
    assert (flag.operation, flag.action, flag.reference, flag.points, flag.member_id, flag.terminal_id) == (
        "redeem", "flag", "burn-2", 400, cards[2].member_id, alliance.borealis.terminal_id)
    (evidence,) = flag.evidence
    assert evidence["pattern"] == "quick-burn" and evidence["earned_at_partner"] == "aurora"
    assert (evidence["points"], evidence["cards"], evidence["max_cards"], evidence["minutes_between"]) == (
        400, 3, 2, 0)
    assert evidence["tills"] == f"t{alliance.aurora.terminal_id}>t{alliance.borealis.terminal_id}"
    assert_audit_green(alliance.hub)


def test_honest_redemptions_do_not_fire_the_quick_burn(alliance):
    cards = members(alliance, 6)
    long_ago = datetime.now(UTC) - timedelta(hours=2)
    for index, member in enumerate(cards[:3]):
        # Earned at aurora and spent there: no loop between partners.
        assert buy(alliance.at_aurora, member, f"same-{index}", 40_000).status == 201
        assert redeem(alliance.at_aurora, member, f"same-{index}", 400).status == 201
    for index, member in enumerate(cards[3:]):
        # Earned at aurora two hours ago, spent at borealis now.
        with alliance.hub.unit_of_work() as uow:
            ledger.earn(uow.session, member_id=member.member_id, partner_id=alliance.aurora.partner_id, points=400,
                        now=long_ago, expires_at=long_ago + timedelta(days=30))
            uow.commit()
        # Fresh aurora points too, but the redemption draws the older lot first (it expires sooner).
        assert buy(alliance.at_aurora, member, f"fresh-{index}", 40_000).status == 201
        assert redeem(alliance.at_borealis, member, f"old-{index}", 400).status == 201
    assert decisions(alliance.hub) == []


def test_a_refusing_quick_burn_declines_the_third_card_and_keeps_the_books_and_the_record(alliance):
    rule = set_rule(alliance.hub, "quick-burn", action="refuse", terms={"cards": 2})
    assert (rule.action.word, dict(rule.terms)) == ("refuse", {"earned_within_minutes": 30, "cards": 2,
                                                                "window_minutes": 1440})
    first, second = members(alliance, 2)
    assert buy(alliance.at_aurora, first, "loop-a", 30_000).status == 201
    assert redeem(alliance.at_borealis, first, "burn-a", 300).status == 201
    assert buy(alliance.at_aurora, second, "loop-b", 30_000).status == 201
    before = books(alliance.hub)
    refused = redeem(alliance.at_borealis, second, "burn-b", 250)
    assert refused.status == 403 and refused.body["code"] == "declined"
    assert_books_unchanged(alliance.hub, before)
    (kept,) = decisions(alliance.hub)
    assert kept.token in refused.body["detail"]
    assert (kept.operation, kept.action, kept.points, kept.evidence[0]["pattern"], kept.evidence[0]["cards"]) == (
        "redeem", "refuse", 250, "quick-burn", 2)
    with alliance.hub.unit_of_work() as uow:
        audited = uow.session.execute(select(AuditLogEntry.action, AuditLogEntry.actor, AuditLogEntry.subject)
                                      .where(AuditLogEntry.action == "risk.pattern.set")).all()
    assert audited == [("risk.pattern.set", "console:rita", "risk-pattern:quick-burn")]


def test_a_rule_change_is_checked(alliance):
    for changes in ({"terms": {"cards": 0}}, {"terms": {"nonsense": 3}}, {"action": "hold"},
                    {"terms": {"cards": True}}):
        with pytest.raises(ValidationFailed):
            set_rule(alliance.hub, "quick-burn", **changes)
    with pytest.raises(ValidationFailed):
        set_rule(alliance.hub, "no-such-pattern")
    with alliance.hub.unit_of_work() as uow:
        rules = {rule.name.value: rule for rule in risk_patterns.rules_in_force(uow.session)}
    assert rules["quick-burn"].action.word == "flag" and rules["quick-burn"].term("cards") == 3


def test_a_disabled_pattern_does_not_run(alliance):
    set_rule(alliance.hub, "quick-burn", enabled=False, terms={"cards": 1})
    (member,) = members(alliance, 1)
    assert buy(alliance.at_aurora, member, "loop", 20_000).status == 201
    assert redeem(alliance.at_borealis, member, "burn", 200).status == 201
    assert decisions(alliance.hub) == []


# -- 2. refund abuse ---------------------------------------------------------------------------

def test_a_refund_after_the_points_were_spent_is_flagged_and_under_a_refusing_rule_the_repeat_is_declined(alliance):
    set_rule(alliance.hub, "refund-abuse", action="refuse")
    (member,) = members(alliance, 1)
    for index in range(2):
        assert buy(alliance.at_aurora, member, f"tv-{index}", 100_000).status == 201
        assert redeem(alliance.at_borealis, member, f"spent-{index}", 1_000).status == 201
        assert alliance.at_borealis.post(f"{REDEMPTIONS}/spent-{index}/capture", {"points": 1_000}).status == 200
    # The first return after spending the points elsewhere can be honest: it goes through, flagged.
    refund = alliance.at_aurora.post(f"{PURCHASES}/tv-0/refunds", {"refund_id": "back-0", "amount_minor": 100_000})
    assert refund.status == 201 and refund.body["points_unrecovered"] == 1_000
    # The repeat within the window is declined at the till (the rule's action; flag by default), as a
    # return-fraud check declines a return;
    # nothing of it is kept but the decision, and the purchase stands unrefunded.
    before = books(alliance.hub)
    declined = alliance.at_aurora.post(f"{PURCHASES}/tv-1/refunds", {"refund_id": "back-1", "amount_minor": 100_000})
    assert (declined.status, declined.body["code"]) == (403, "declined")
    assert set(declined.body) >= {"decision"} and "refund" not in declined.body["detail"].lower()
    assert_books_unchanged(alliance.hub, before)
    assert alliance.at_aurora.get(f"{PURCHASES}/tv-1").body["refunded_amount_minor"] == 0
    first, second = decisions(alliance.hub)
    assert (first.operation, first.action, first.reference, first.points, first.member_id, first.partner_id) == (
        "refund", "flag", "back-0", 1_000, member.member_id, alliance.aurora.partner_id)
    assert first.evidence == [{"pattern": "refund-abuse", "receipt_id": "tv-0", "points_unrecovered": 1_000,
                               "points_recovered": 0, "member_refunds_unrecovered": 1, "window_days": 30,
                               "repeated": False}]
    assert (second.operation, second.action, second.reference, second.token) == (
        "refund", "refuse", "back-1", declined.body["decision"])
    assert second.evidence[0]["member_refunds_unrecovered"] == 2 and second.evidence[0]["repeated"] is True
    assert_audit_green(alliance.hub)


def test_a_refund_whose_points_come_back_is_not_flagged(alliance):
    (member,) = members(alliance, 1)
    assert buy(alliance.at_aurora, member, "kept", 100_000).status == 201
    refund = alliance.at_aurora.post(f"{PURCHASES}/kept/refunds", {"refund_id": "back", "amount_minor": 50_000})
    assert refund.status == 201 and refund.body["points_unrecovered"] == 0
    assert decisions(alliance.hub) == []


# -- 4. transfer chains ------------------------------------------------------------------------

LIMITS = TransferLimits(max_points_per_transfer=500, max_points_per_day=5_000, min_membership_days=0)


def _transfer(hub, sender, receiver, now: datetime, points: int = 100) -> None:  # type: ignore[no-untyped-def]
    with hub.unit_of_work() as uow:
        member_admin.transfer_points(uow.session, from_member_number=sender.member_number,
                                     to_member_number=receiver.member_number, points=points, limits=LIMITS,
                                     now=now, actor="console:cass")
        uow.commit()


def test_a_third_new_member_sending_points_to_one_receiver_is_refused_and_the_refusal_kept(alliance):
    hub, now = alliance.hub, datetime.now(UTC)
    receiver = make_member_with_pin(hub, now=now - timedelta(days=400))
    senders = [make_member_with_pin(hub, now=now - timedelta(days=2)) for _ in range(3)]
    for sender in senders:
        fund_member(hub, member_id=sender.member_id, partner_id=alliance.aurora.partner_id, points=300)
    _transfer(hub, senders[0], receiver, now)
    _transfer(hub, senders[1], receiver, now)
    # The same sender again is not one more.
    _transfer(hub, senders[1], receiver, now)
    assert decisions(hub) == []
    before = books(hub)
    with pytest.raises(RiskDeclined):
        _transfer(hub, senders[2], receiver, now)
    assert_books_unchanged(hub, before)
    (kept,) = decisions(hub)
    assert (kept.operation, kept.action, kept.member_id, kept.points, kept.partner_id) == (
        "transfer", "refuse", receiver.member_id, 100, None)
    assert kept.evidence == [{"pattern": "transfer-chain", "new_senders": 3, "max_new_senders": 2,
                              "enrolled_within_days": 30, "window_days": 7,
                              "from_member": senders[2].member_number, "to_member": receiver.member_number}]


def test_transfers_from_established_members_to_one_receiver_are_not_a_chain(alliance):
    hub, now = alliance.hub, datetime.now(UTC)
    receiver = make_member_with_pin(hub, now=now - timedelta(days=400))
    senders = [make_member_with_pin(hub, now=now - timedelta(days=90)) for _ in range(4)]
    for sender in senders:
        fund_member(hub, member_id=sender.member_id, partner_id=alliance.aurora.partner_id, points=300)
        _transfer(hub, sender, receiver, now)
    # New members' transfers to different receivers are not a chain either.
    for _ in range(3):
        sender = make_member_with_pin(hub, now=now - timedelta(days=1))
        fund_member(hub, member_id=sender.member_id, partner_id=alliance.aurora.partner_id, points=300)
        _transfer(hub, sender, make_member_with_pin(hub, now=now - timedelta(days=400)), now)
    assert decisions(hub) == []


# -- 3. split purchases ------------------------------------------------------------------------

@pytest.fixture
def capped(app, alliance):  # type: ignore[no-untyped-def]
    """A partner capping each purchase at 500 points (1 point a euro), its key bound to its till."""
    partner = make_signing_partner(alliance.hub, now=alliance.created, code="capped", bind_key_to_terminal=True,
                                   per_purchase_cap_points=500)
    return SimpleNamespace(partner=partner, client=SignedTestClient(app, partner))


def test_a_purchase_split_at_one_till_past_the_per_purchase_cap_is_held(alliance, capped):
    (member,) = members(alliance, 1)
    first = buy(capped.client, member, "split-1", 40_000)
    assert first.status == 201 and first.body["points"]["state"] == "active"
    held = buy(capped.client, member, "split-2", 30_000)
    assert held.status == 201 and held.body["points"]["state"] == "held_for_review"
    assert balances(alliance.hub, member.member_id)["pending"] == 300
    (kept,) = decisions(alliance.hub)
    assert (kept.operation, kept.action, kept.reference, kept.points, kept.terminal_id) == (
        "earn", "hold", "split-2", 300, capped.partner.terminal_id)
    assert kept.evidence == [{"pattern": "split-purchase", "purchases": 2, "amount_minor": 70_000, "points": 700,
                              "per_purchase_cap_points": 500, "window_minutes": 10}]
    assert_audit_green(alliance.hub)


def test_a_batch_splitting_a_purchase_holds_the_later_items(alliance, capped):
    first, second = members(alliance, 2)
    items = [purchase_payload("b-1", first.card_number, 30_000), purchase_payload("b-2", second.card_number, 30_000),
             purchase_payload("b-3", first.card_number, 30_000)]
    reply = capped.client.post(BATCH, {"purchases": items})
    assert reply.status == 200
    states = [result["purchase"]["points"]["state"] for result in reply.body["results"]]
    assert states == ["active", "active", "held_for_review"]
    (kept,) = decisions(alliance.hub)
    assert (kept.reference, kept.evidence[0]["points"], kept.evidence[0]["purchases"]) == ("b-3", 600, 2)


def test_small_purchases_under_the_cap_and_uncapped_partners_are_not_split_purchases(alliance, capped):
    (member,) = members(alliance, 1)
    assert buy(capped.client, member, "small-1", 20_000).status == 201
    assert buy(capped.client, member, "small-2", 20_000).status == 201
    # aurora caps nothing: any split is just two purchases.
    assert buy(alliance.at_aurora, member, "big-1", 40_000).status == 201
    assert buy(alliance.at_aurora, member, "big-2", 40_000).status == 201
    assert decisions(alliance.hub) == []


def test_a_refusing_split_rule_declines_the_later_purchase_and_keeps_the_books(alliance, capped):
    set_rule(alliance.hub, "split-purchase", action="refuse")
    (member,) = members(alliance, 1)
    assert buy(capped.client, member, "r-1", 40_000).status == 201
    before = books(alliance.hub)
    refused = buy(capped.client, member, "r-2", 30_000)
    assert refused.status == 403 and refused.body["code"] == "declined"
    assert_books_unchanged(alliance.hub, before)
    (kept,) = decisions(alliance.hub)
    assert (kept.action, kept.reference, kept.evidence[0]["pattern"]) == ("refuse", "r-2", "split-purchase")


# -- 5. amount outliers ------------------------------------------------------------------------

def _profile(hub) -> int:  # type: ignore[no-untyped-def]
    with hub.unit_of_work() as uow:
        profiled = risk_patterns.profile_partner_amounts(uow.session, now=datetime.now(UTC), limit=1_000)
        uow.commit()
    return profiled


def test_an_amount_far_above_the_partners_own_is_flagged_once_it_has_a_profile(alliance):
    set_rule(alliance.hub, "amount-outlier", terms={"min_purchases": 20})
    shoppers = members(alliance, 1)
    items = [purchase_payload(f"usual-{index}", shoppers[0].card_number, 9_000 + 100 * (index % 5))
             for index in range(20)]
    assert alliance.at_aurora.post(BATCH, {"purchases": items}).status == 200
    assert _profile(alliance.hub) == 1
    with alliance.hub.unit_of_work() as uow:
        profile = uow.session.get_one(PartnerAmountProfile, alliance.aurora.partner_id)
    assert (profile.purchases, profile.mean_minor) == (20, 9_200)
    threshold = (profile.mean_minor + 3 * profile.stddev_minor) * 5
    assert buy(alliance.at_aurora, shoppers[0], "large-but-usual", threshold).status == 201
    assert decisions(alliance.hub) == []
    flagged = buy(alliance.at_aurora, shoppers[0], "huge", threshold + 1)
    assert flagged.status == 201 and flagged.body["points"]["state"] == "active"
    (kept,) = decisions(alliance.hub)
    assert (kept.operation, kept.action, kept.reference) == ("earn", "flag", "huge")
    assert kept.evidence == [{"pattern": "amount-outlier", "amount_minor": threshold + 1, "threshold_minor": threshold,
                              "mean_minor": profile.mean_minor, "stddev_minor": profile.stddev_minor,
                              "profile_purchases": 20, "stddevs": 3, "factor": 5}]
    assert_audit_green(alliance.hub)


def test_a_holding_outlier_rule_keeps_the_huge_purchases_points_pending_for_a_reviewer(alliance):
    set_rule(alliance.hub, "amount-outlier", terms={"min_purchases": 20}, action="hold")
    (shopper,) = members(alliance, 1)
    items = [purchase_payload(f"usual-{index}", shopper.card_number, 9_000 + 100 * (index % 5)) for index in range(20)]
    assert alliance.at_aurora.post(BATCH, {"purchases": items}).status == 200
    assert _profile(alliance.hub) == 1
    held = buy(alliance.at_aurora, shopper, "huge", 5_000_000)
    # A normal answer that says the points wait for a reviewer; they cannot be spent meanwhile.
    assert held.status == 201 and held.body["points"]["state"] == "held_for_review"
    (kept,) = decisions(alliance.hub)
    assert (kept.operation, kept.action, kept.reference, kept.evidence[0]["pattern"]) == (
        "earn", "hold", "huge", "amount-outlier")
    spend = redeem(alliance.at_borealis, shopper, "spend-the-huge-one", held.body["points"]["total"])
    assert spend.status == 422, spend.body
    assert_audit_green(alliance.hub)


def test_no_profile_or_one_below_the_minimum_purchases_flags_nothing(alliance):
    (member,) = members(alliance, 1)
    assert buy(alliance.at_aurora, member, "one", 1_000).status == 201
    assert buy(alliance.at_aurora, member, "before-any-profile", 5_000_000).status == 201
    assert _profile(alliance.hub) == 1
    assert buy(alliance.at_aurora, member, "huge", 5_000_000).status == 201
    assert decisions(alliance.hub) == []


def test_the_profile_job_runs_by_hand_from_the_cli_and_keeps_a_profile_per_partner(app, alliance):
    from click.testing import CliRunner

    from alliance.cli import main

    (member,) = members(alliance, 1)
    assert buy(alliance.at_aurora, member, "a", 1_000).status == 201
    assert buy(alliance.at_borealis, member, "b", 3_000).status == 201
    with app.app_context():
        ran = CliRunner().invoke(main, ["jobs", "profile-partner-amounts"], catch_exceptions=False)
    assert ran.exit_code == 0 and "2 partners profiled" in ran.output, ran.output
    with alliance.hub.unit_of_work() as uow:
        profiles = sorted((row.partner_id, row.purchases, row.mean_minor, row.stddev_minor)
                          for row in uow.session.scalars(select(PartnerAmountProfile)))
    assert profiles == sorted([(alliance.aurora.partner_id, 1, 1_000, 0), (alliance.borealis.partner_id, 1, 3_000, 0)])


def test_a_pattern_finding_joins_the_purchases_velocity_decision_in_one_record(alliance, capped):
    set_risk_policy(alliance.hub, {"limits": [
        {"name": "member-points", "scope": "member", "measure": "earn", "window_minutes": 1440, "max_points": 500,
         "action": "flag"}]})
    (member,) = members(alliance, 1)
    assert buy(capped.client, member, "j-1", 40_000).status == 201
    held = buy(capped.client, member, "j-2", 30_000)
    assert held.status == 201 and held.body["points"]["state"] == "held_for_review"
    (kept,) = decisions(alliance.hub)
    # The stricter action of the two, and both evidences: the velocity limit's and the pattern's.
    assert (kept.action, kept.reference, kept.policy_version is not None) == ("hold", "j-2", True)
    assert [item.get("limit") or item.get("pattern") for item in kept.evidence] == ["member-points",
                                                                                    "split-purchase"]
    assert_audit_green(alliance.hub)
