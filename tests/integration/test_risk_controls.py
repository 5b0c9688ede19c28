"""Risk controls through the signed partner API and the back office: velocity limits on redemptions, card
testing from one till, transfers, the decisions kept with their evidence, and the policy as versioned data."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

import pytest
from sqlalchemy import func, select

from alliance.domain.errors import InvalidState, ValidationFailed
from alliance.domain.risk import DEFAULT_POLICY, Measure, RiskDeclined
from alliance.extensions import hub_state
from alliance.models import AuditLogEntry, Complaint, RiskDecision, RiskPolicyVersion, VerificationFailure
from alliance.services import ledger, member_admin, risk, risk_actions
from alliance.services.member_admin import TransferLimits
from alliance.services.member_verification import issue_redemption_code
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
REDEMPTIONS = "/partner/v1/redemptions"
PIN = "2468"


@pytest.fixture
def tills(app):  # type: ignore[no-untyped-def]
    """A shop whose key is bound to its till, a second shop, and a member with 3,000 points."""
    hub = hub_state(app)
    created = wall_clock_partner_time()
    shop = make_signing_partner(hub, now=created, code="shop", bind_key_to_terminal=True)
    other = make_signing_partner(hub, now=created, code="other", bind_key_to_terminal=True)
    member = make_member_with_pin(hub, now=created, pin=PIN)
    fund_member(hub, member_id=member.member_id, partner_id=other.partner_id, points=3_000)
    return SimpleNamespace(app=app, hub=hub, shop=shop, other=other, member=member, created=created,
                           client=SignedTestClient(app, shop), other_client=SignedTestClient(app, other))


def decisions(hub) -> list[RiskDecision]:  # type: ignore[no-untyped-def]
    with hub.unit_of_work() as uow:
        return list(uow.session.scalars(select(RiskDecision).order_by(RiskDecision.id)))


def redeem(client, member, reference: str, points: int = 10, pin: str = PIN):  # type: ignore[no-untyped-def]
    return client.post(REDEMPTIONS, {"reference": reference, "points": points, "card_number": member.card_number,
                                     "pin": pin})


def test_the_eleventh_redemption_in_an_hour_is_refused_without_figures_and_its_decision_is_kept(tills):
    for index in range(10):
        assert redeem(tills.client, tills.member, f"r-{index}").status == 201
    before = books(tills.hub)
    refused = redeem(tills.client, tills.member, "r-10")
    assert refused.status == 403 and refused.body["code"] == "declined"
    assert_books_unchanged(tills.hub, before)
    (kept,) = decisions(tills.hub)
    # The till learns the decision's reference, never the limit or the figures that stopped it.
    assert kept.token in refused.body["detail"]
    words = refused.body["detail"].replace(kept.token, "")
    assert not any(character.isdigit() for character in words) and "hour" not in words
    assert (kept.operation, kept.action, kept.review_status, kept.points, kept.reference) == (
        "redeem", "refuse", "open", 10, "r-10")
    assert (kept.partner_id, kept.terminal_id, kept.member_id, kept.policy_version) == (
        tills.shop.partner_id, tills.shop.terminal_id, tills.member.member_id, None)
    assert kept.evidence == [{"limit": "member-redemptions-hour", "scope": "member", "measure": "redeem",
                              "window_minutes": 60, "action": "refuse", "count": 11, "points": 110,
                              "max_count": 10, "max_points": None}]
    # A retry with the same idempotency key gets the same refusal; nothing is decided twice.
    assert len(decisions(tills.hub)) == 1


def test_a_flagging_limit_lets_the_redemption_through_and_keeps_the_decision_with_it(tills):
    set_risk_policy(tills.hub, {"limits": [
        {"name": "big-redemption", "scope": "card", "measure": "redeem", "window_minutes": 60, "max_points": 500,
         "action": "flag"}]})
    assert redeem(tills.client, tills.member, "small", points=400).status == 201
    assert decisions(tills.hub) == []
    flagged = redeem(tills.client, tills.member, "second", points=200)
    assert flagged.status == 201 and flagged.body["points_held"] == 200
    (kept,) = decisions(tills.hub)
    assert (kept.action, kept.policy_version, kept.card_id is not None) == ("flag", 1, True)
    assert kept.evidence[0]["points"] == 600 and kept.evidence[0]["count"] == 2


def test_card_testing_from_one_till_is_refused_after_five_cards_fail_while_other_tills_work(tills):
    created = tills.created
    cards = [make_member_with_pin(tills.hub, now=created, pin=PIN) for _ in range(7)]
    for index, card in enumerate(cards[:5]):
        reply = redeem(tills.client, card, f"t-{index}", pin="1357")
        assert reply.status == 403 and reply.body["code"] == "member_not_verified"
    # A sixth card from the same till: refused before its PIN is tried, even the right one.
    before = books(tills.hub)
    refused = redeem(tills.client, cards[5], "t-5", pin=PIN)
    assert refused.status == 403 and refused.body["code"] == "declined"
    assert_books_unchanged(tills.hub, before)
    # Trying one of the cards that already failed is still judged by its own PIN (these members have no
    # points: verified, then refused for the balance).
    assert redeem(tills.client, cards[0], "t-again", pin=PIN).body["code"] == "insufficient_points"
    # Another partner's till is not affected.
    assert redeem(tills.other_client, cards[6], "o-1", pin=PIN).body["code"] == "insufficient_points"
    with tills.hub.unit_of_work() as uow:
        failures = uow.session.execute(select(VerificationFailure.terminal_id, func.count(
            VerificationFailure.tried.distinct())).group_by(VerificationFailure.terminal_id)).all()
    assert failures == [(tills.shop.terminal_id, 5)]
    (kept,) = decisions(tills.hub)
    assert (kept.operation, kept.action, kept.terminal_id, kept.member_id) == (
        "verification", "refuse", tills.shop.terminal_id, None)
    assert kept.evidence[0]["limit"] == "terminal-failed-cards-15min" and kept.evidence[0]["count"] == 6


def test_unknown_card_numbers_and_bad_codes_count_as_failures_of_the_till(tills):
    for index in range(3):
        reply = tills.client.post(REDEMPTIONS, {"reference": f"c-{index}", "points": 5,
                                                "redemption_code": f"WRONG{index}XY"})
        assert reply.status == 403 and reply.body["code"] == "member_not_verified"
    for index, number in enumerate(("6390000000000021", "6390000000000039")):
        reply = tills.client.post(REDEMPTIONS, {"reference": f"n-{index}", "points": 5, "card_number": number,
                                                "pin": PIN})
        assert reply.status in (403, 404)
    with tills.hub.unit_of_work() as uow:
        methods = sorted(uow.session.scalars(select(VerificationFailure.method)))
        code, _ = issue_redemption_code(uow.session, member_id=tills.member.member_id, now=datetime.now(UTC))
        uow.commit()
    assert methods == ["code", "code", "code", "pin", "pin"]
    # Five different things tried and failed: a sixth, even a good code, is refused at this till.
    refused = tills.client.post(REDEMPTIONS, {"reference": "c-good", "points": 5, "redemption_code": code})
    assert refused.status == 403 and refused.body["code"] == "declined"
    # The code was not spent by the refusal: the member uses it at another partner's till.
    assert tills.other_client.post(REDEMPTIONS, {"reference": "o-good", "points": 5,
                                                 "redemption_code": code}).status == 201


def test_a_partner_override_switches_a_limit_off_for_that_partner_alone(tills):
    document = DEFAULT_POLICY.as_data()
    document["partners"] = {"other": {"member-redemptions-hour": {"enabled": False}}}
    set_risk_policy(tills.hub, document)
    for index in range(12):
        assert redeem(tills.other_client, tills.member, f"o-{index}").status == 201
    assert redeem(tills.client, tills.member, "s-1").status == 403


def test_transfers_past_the_daily_count_are_refused_and_the_refusal_is_kept(app):
    hub = hub_state(app)
    created = datetime.now(UTC) - timedelta(days=60)
    partner = make_signing_partner(hub, now=created, code="shop")
    sender, receiver = (make_member_with_pin(hub, now=created) for _ in range(2))
    fund_member(hub, member_id=sender.member_id, partner_id=partner.partner_id, points=1_000)
    limits = TransferLimits(max_points_per_transfer=500, max_points_per_day=5_000, min_membership_days=30)
    now = datetime.now(UTC)

    def transfer(points: int = 10):  # type: ignore[no-untyped-def]
        with hub.unit_of_work() as uow:
            member_admin.transfer_points(uow.session, from_member_number=sender.member_number,
                                         to_member_number=receiver.member_number, points=points, limits=limits,
                                         now=now, actor="console:cass")
            uow.commit()

    for _ in range(5):
        transfer()
    before = books(hub)
    with pytest.raises(RiskDeclined):
        transfer()
    assert_books_unchanged(hub, before)
    (kept,) = decisions(hub)
    assert (kept.operation, kept.action, kept.member_id, kept.partner_id) == (
        "transfer", "refuse", sender.member_id, None)


def test_figures_count_each_scope_over_its_window_only(tills):
    hub = tills.hub
    for index in range(3):
        assert redeem(tills.client, tills.member, f"w-{index}", points=20).status == 201
    limits = DEFAULT_POLICY.limits_for(Measure.REDEEM, partner_code="shop", tier=None)
    subject = risk.Subject(partner_id=tills.shop.partner_id, terminal_id=tills.shop.terminal_id,
                           member_id=tills.member.member_id)
    with hub.unit_of_work() as uow:
        now = datetime.now(UTC)
        seen = risk.figures(uow.session, limits, [subject], now=now)
        later = risk.figures(uow.session, limits, [subject], now=now + timedelta(hours=2))
        much_later = risk.figures(uow.session, limits, [subject], now=now + timedelta(days=2))
    member = tills.member.member_id
    assert {key: (figure.count, figure.points) for key, figure in seen.items()} == {
        ("member-redemptions-hour", member): (3, 60), ("member-redeemed-points-day", member): (3, 60)}
    # Outside a window there is nothing to count: the key has no figures.
    assert set(later) == {("member-redeemed-points-day", member)} and later[
        ("member-redeemed-points-day", member)].points == 60
    assert much_later == {}


def test_a_policy_version_is_checked_stored_audited_and_in_force_from_its_time(app):
    hub = hub_state(app)
    now = datetime(2026, 12, 1, 9, tzinfo=UTC)
    document = {"limits": [{"name": "card-hour", "scope": "card", "measure": "earn", "window_minutes": 60,
                            "max_count": 5, "action": "hold"}]}
    with hub.unit_of_work() as uow:
        refusals = [
            dict(document=document, effective_from=now + timedelta(seconds=30), reason="tighter"),
            dict(document=document, effective_from=now + timedelta(hours=1), reason=" "),
            dict(document={**document, "partners": {"nobody": {"card-hour": {"max_count": 9}}}},
                 effective_from=now + timedelta(hours=1), reason="tighter"),
            dict(document={"limits": [{"name": "x"}]}, effective_from=now + timedelta(hours=1), reason="tighter"),
        ]
        for arguments in refusals:
            with pytest.raises(ValidationFailed):
                risk.set_policy(uow.session, now=now, actor="console:rita", **arguments)
        assert uow.session.scalar(select(func.count()).select_from(RiskPolicyVersion)) == 0
        version = risk.set_policy(uow.session, document=document, effective_from=now + timedelta(hours=1),
                                  reason="tighter for the holidays", now=now, actor="console:rita")
        with pytest.raises(ValidationFailed, match="after version 1"):
            risk.set_policy(uow.session, document=document, effective_from=now + timedelta(minutes=30),
                            reason="again", now=now, actor="console:rita")
        uow.commit()
    assert version == 1
    with hub.unit_of_work() as uow:
        assert risk.policy_in_force(uow.session, at=now) == (None, DEFAULT_POLICY)
        in_force = risk.policy_in_force(uow.session, at=now + timedelta(hours=1))
        listed = risk.versions(uow.session, now=now)
        audited = uow.session.scalars(select(AuditLogEntry.action).where(
            AuditLogEntry.action == "risk.policy.set")).all()
    assert in_force[0] == 1 and [limit.name for limit in in_force[1].limits] == ["card-hour"]
    assert [(row["version"], row["status"], row["created_by"]) for row in listed] == [(1, "scheduled", "console:rita")]
    assert audited == ["risk.policy.set"]
    assert_audit_green(hub)


# -- purchases ----------------------------------------------------------------------------

PURCHASES = "/partner/v1/purchases"
BATCH = "/partner/v1/purchases/batch"
CARD_FOUR_AN_HOUR = {"limits": [
    {"name": "card-hour", "scope": "card", "measure": "earn", "window_minutes": 60, "max_count": 3,
     "action": "hold"},
    {"name": "till-hour", "scope": "terminal", "measure": "earn", "window_minutes": 60, "max_count": 5,
     "action": "refuse"},
    {"name": "member-points", "scope": "member", "measure": "earn", "window_minutes": 1440, "max_points": 800,
     "action": "flag"}]}


def purchase(client, member, receipt: str, amount_minor: int = 10_000):  # type: ignore[no-untyped-def]
    return client.post(PURCHASES, purchase_payload(receipt, member.card_number, amount_minor))


def spendable(hub, member_id: int) -> dict[str, int]:  # type: ignore[no-untyped-def]
    return balances(hub, member_id)


def test_a_purchase_past_a_holding_limit_is_recorded_with_its_points_pending_until_a_reviewer_releases_them(tills):
    set_risk_policy(tills.hub, CARD_FOUR_AN_HOUR)
    for index in range(3):
        assert purchase(tills.client, tills.member, f"p-{index}").body["points"]["state"] == "active"
    held = purchase(tills.client, tills.member, "p-3")
    # A normal answer: the purchase is recorded and says its points wait for a review.
    assert held.status == 201 and held.body["points"]["state"] == "held_for_review"
    assert held.body["points"]["pending_until"] is None and held.body["points"]["total"] == 100
    assert tills.client.get(f"{PURCHASES}/p-3").body["points"]["state"] == "held_for_review"
    assert spendable(tills.hub, tills.member.member_id) == {"available": 3_300, "pending": 100, "held": 0}
    (kept,) = decisions(tills.hub)
    assert (kept.operation, kept.action, kept.reference, kept.points) == ("earn", "hold", "p-3", 100)
    assert kept.evidence[0]["limit"] == "card-hour" and kept.evidence[0]["count"] == 4
    # The activation job leaves held lots pending, however late it runs.
    with tills.hub.unit_of_work() as uow:
        assert ledger.activate_due_lots(uow.session, now=datetime.now(UTC) + timedelta(days=400)) == 0
        uow.commit()
    assert spendable(tills.hub, tills.member.member_id)["pending"] == 100
    assert_audit_green(tills.hub)


def test_a_purchase_past_a_refusing_limit_is_declined_whole_and_its_decision_kept(tills):
    set_risk_policy(tills.hub, CARD_FOUR_AN_HOUR)
    others = [make_member_with_pin(tills.hub, now=tills.created) for _ in range(5)]
    for index, member in enumerate(others):
        assert purchase(tills.client, member, f"t-{index}").status == 201
    before = books(tills.hub)
    refused = purchase(tills.client, tills.member, "t-5")
    assert refused.status == 403 and refused.body["code"] == "declined"
    assert_books_unchanged(tills.hub, before)
    assert tills.client.get(f"{PURCHASES}/t-5").status == 404
    (kept,) = decisions(tills.hub)
    assert (kept.action, kept.terminal_id, kept.reference) == ("refuse", tills.shop.terminal_id, "t-5")
    # The receipt was not spent: once the till's hour has passed it can be reported (here: at another till).
    assert purchase(tills.other_client, tills.member, "t-5").status == 201


def test_a_flagged_purchase_earns_as_usual_and_is_kept_for_review(tills):
    set_risk_policy(tills.hub, CARD_FOUR_AN_HOUR)
    assert purchase(tills.client, tills.member, "f-1", amount_minor=70_000).body["points"]["state"] == "active"
    flagged = purchase(tills.client, tills.member, "f-2", amount_minor=20_000)
    assert flagged.status == 201 and flagged.body["points"]["state"] == "active"
    (kept,) = decisions(tills.hub)
    assert (kept.action, kept.evidence[0]["points"]) == ("flag", 900)


def test_a_batch_counts_its_own_items_and_decides_each_as_if_reported_alone(tills):
    set_risk_policy(tills.hub, CARD_FOUR_AN_HOUR)
    second = make_member_with_pin(tills.hub, now=tills.created)
    items = [purchase_payload(f"b-{index}", member.card_number, 1_000)
             for index, member in enumerate([tills.member] * 4 + [second] * 3)]
    reply = tills.client.post(BATCH, {"purchases": items})
    assert reply.status == 200
    results = reply.body["results"]
    states = [(result["status"], (result["purchase"] or {}).get("points", {}).get("state"),
               (result["problem"] or {}).get("code")) for result in results]
    # The card's fourth purchase is held; the till's sixth and seventh purchases pass its limit of five.
    assert states == [("applied", "active", None)] * 3 + [("applied", "held_for_review", None)] + [
        ("applied", "active", None), ("rejected", None, "declined"), ("rejected", None, "declined")]
    kept = decisions(tills.hub)
    assert [(row.action, row.reference) for row in kept] == [("hold", "b-3"), ("refuse", "b-5"), ("refuse", "b-6")]
    assert all(row.token in result["problem"]["detail"] for row, result in zip(kept[1:], results[5:], strict=True))
    assert_audit_green(tills.hub)


# -- review -------------------------------------------------------------------------------

def _held_purchase(tills) -> RiskDecision:  # type: ignore[no-untyped-def]
    set_risk_policy(tills.hub, CARD_FOUR_AN_HOUR)
    for index in range(4):
        purchase(tills.client, tills.member, f"h-{index}")
    (held,) = decisions(tills.hub)
    assert held.action == "hold"
    return held


def _review(hub, decision_id: int, action: str, note: str = "checked the till's journal",  # type: ignore[no-untyped-def]
            actor: str = "console:rita", threshold: int = 5_000):
    with hub.unit_of_work() as uow:
        outcome = risk.review(uow.session, decision_id=decision_id, action=action, note=note,
                              now=datetime.now(UTC), actor=actor, approval_threshold_points=threshold)
        uow.commit()
    return outcome


def test_releasing_a_hold_makes_its_points_spendable_and_is_audited(tills):
    held = _held_purchase(tills)
    outcome = _review(tills.hub, held.id, "release")
    assert (outcome.status, outcome.points_released) == ("released", 100)
    assert spendable(tills.hub, tills.member.member_id) == {"available": 3_400, "pending": 0, "held": 0}
    assert tills.client.get(f"{PURCHASES}/h-3").body["points"]["state"] == "active"
    with tills.hub.unit_of_work() as uow:
        audited = uow.session.scalars(select(AuditLogEntry.action).where(
            AuditLogEntry.subject == f"risk-decision:{held.id}")).all()
    assert audited == ["risk.review.release"]
    assert_audit_green(tills.hub)


def test_reversing_a_hold_takes_the_points_back_to_their_issuer_and_a_second_review_is_refused(tills):
    held = _held_purchase(tills)
    outcome = _review(tills.hub, held.id, "reverse")
    assert (outcome.status, outcome.points_reversed, outcome.points_unrecovered) == ("reversed", 100, 0)
    assert spendable(tills.hub, tills.member.member_id) == {"available": 3_300, "pending": 0, "held": 0}
    before = books(tills.hub)
    with pytest.raises(risk.AlreadyReviewed):
        _review(tills.hub, held.id, "release")
    assert_books_unchanged(tills.hub, before)


@pytest.mark.parametrize(("action", "note", "refusal"), [
    ("dismiss", "fine", InvalidState),  # a hold is released or reversed
    ("pardon", "fine", ValidationFailed),
    ("release", "   ", ValidationFailed),
])
def test_a_wrong_review_is_refused_and_changes_nothing(tills, action, note, refusal):
    held = _held_purchase(tills)
    before = books(tills.hub)
    with pytest.raises(refusal):
        _review(tills.hub, held.id, action, note)
    assert_books_unchanged(tills.hub, before)
    assert decisions(tills.hub)[0].review_status == "open"


def test_the_queue_groups_open_decisions_by_member_terminal_and_partner(tills):
    held = _held_purchase(tills)
    set_risk_policy(tills.hub, DEFAULT_POLICY.as_data())
    for index in range(11):
        redeem(tills.client, tills.member, f"q-{index}")  # the eleventh is refused
    with tills.hub.unit_of_work() as uow:
        by_member = risk.cases(uow.session, by="member")
        by_terminal = risk.cases(uow.session, by="terminal")
        listed = risk.decisions(uow.session, member_number=tills.member.member_number)
        found = risk.decisions(uow.session, token=held.token.lower(), status=None)
    assert [(case["subject"], case["decisions"], case["actions"]) for case in by_member] == [
        (tills.member.member_number, 2, {"hold": 1, "refuse": 1})]
    assert [case["subject"] for case in by_terminal] == ["shop/till-1"]
    assert [view.operation for view in listed] == ["redeem", "earn"]
    assert [view.decision_id for view in found] == [held.id]
    _review(tills.hub, held.id, "release")
    with tills.hub.unit_of_work() as uow:
        assert risk.cases(uow.session, by="member")[0]["decisions"] == 1
        with pytest.raises(ValidationFailed):
            risk.cases(uow.session, by="card")


def test_a_release_above_the_threshold_is_proposed_by_one_person_and_done_by_another(tills):
    held = _held_purchase(tills)  # 100 points
    first = _review(tills.hub, held.id, "release", threshold=50)
    assert first.status == "proposed"
    assert spendable(tills.hub, tills.member.member_id)["pending"] == 100
    with pytest.raises(risk.SameReviewer):
        _review(tills.hub, held.id, "release", threshold=50)
    # A different action from the second person replaces the proposal rather than carrying it out.
    assert _review(tills.hub, held.id, "reverse", actor="console:ravi", threshold=50).status == "proposed"
    done = _review(tills.hub, held.id, "reverse", threshold=50)
    assert (done.status, done.points_reversed) == ("reversed", 100)
    with tills.hub.unit_of_work() as uow:
        actions = uow.session.scalars(select(AuditLogEntry.action).where(
            AuditLogEntry.subject == f"risk-decision:{held.id}").order_by(AuditLogEntry.id)).all()
    assert actions == ["risk.review.propose_release", "risk.review.propose_reverse", "risk.review.reverse"]
    assert_audit_green(tills.hub)


def _act(hub, decision_id: int, action: str, note: str = "the till's journal shows the same card"):  # type: ignore[no-untyped-def]
    with hub.unit_of_work() as uow:
        done = risk_actions.act(uow.session, decision_id=decision_id, action=action, note=note, now=datetime.now(UTC),
                        actor="console:rita")
        uow.commit()
    return done


def test_a_reviewer_blocks_the_card_revokes_the_tills_keys_and_opens_a_complaint_with_the_partner(tills):
    held = _held_purchase(tills)
    assert _act(tills.hub, held.id, "block_card") == {"card_blocked": True}
    # The blocked card earns no more; the member's points stay theirs.
    assert purchase(tills.client, tills.member, "after-block").status in (403, 409, 422)
    done = _act(tills.hub, held.id, "open_complaint")
    with tills.hub.unit_of_work() as uow:
        complaint = uow.session.get_one(Complaint, done["complaint_id"])
        audited = uow.session.scalars(select(AuditLogEntry.action).where(
            AuditLogEntry.subject == f"risk-decision:{held.id}").order_by(AuditLogEntry.id)).all()
    assert (complaint.partner_id, complaint.member_id, complaint.category) == (
        tills.shop.partner_id, tills.member.member_id, "other")
    assert complaint.purchase_id is not None and held.token in complaint.description
    assert _act(tills.hub, held.id, "revoke_terminal_keys") == {"keys_revoked": ["shop-key"]}
    assert tills.client.get(f"{PURCHASES}/h-0").status == 401  # the till's key no longer signs
    assert audited == ["risk.act.block_card", "risk.act.open_complaint"]
    before = books(tills.hub)
    for action, refusal in (("block_card", InvalidState), ("revoke_terminal_keys", InvalidState),
                            ("shred", ValidationFailed)):
        with pytest.raises(refusal):
            _act(tills.hub, held.id, action)
    assert_books_unchanged(tills.hub, before)
