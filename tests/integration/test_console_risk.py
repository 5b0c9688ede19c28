"""Risk pages of the console: the review queue, a decision and its review, a refusal's reference, the policy,
the pattern rules.

The decisions are made the way a till makes them, through the signed partner API: a
card's fourth purchase in an hour is held, a member's purchases past 800 points in a day
are flagged, a member's third redemption in an hour is refused. The queue's paging is
tried on more open decisions than a page holds, kept as a pattern rule keeps its own.
"""

from __future__ import annotations

import dataclasses
import re
from datetime import timedelta
from types import SimpleNamespace

import pytest
from sqlalchemy import select

from alliance.domain.risk import Action
from alliance.extensions import hub_state
from alliance.models import RiskDecision
from alliance.services import risk, risk_console, risk_patterns
from tests.console_support import ConsoleClient, add_staff, audit_actions, signed_in, text_of
from tests.factories import make_member_with_pin, make_signing_partner, set_risk_policy
from tests.http_server import balances, fund_member, purchase_payload, wall_clock_partner_time
from tests.partner_client import SignedTestClient

QUEUE = "/console/risk"
LOOKUP = "/console/risk/lookup"
POLICY = "/console/risk/policy"
PATTERNS = "/console/risk/patterns"
PIN = "2468"
TEST_POLICY = {"limits": [
    {"name": "card-hour", "scope": "card", "measure": "earn", "window_minutes": 60, "max_count": 3,
     "action": "hold"},
    {"name": "member-points", "scope": "member", "measure": "earn", "window_minutes": 1440, "max_points": 800,
     "action": "flag"},
    {"name": "member-redemptions", "scope": "member", "measure": "redeem", "window_minutes": 60, "max_count": 2,
     "action": "refuse"}],
    "partners": {"shop": {"card-hour": {"max_count": 3, "action": "hold"}}},
    "tiers": {"gold": {"member-points": {"max_points": 2_000}}}}


def decision_path(decision_id: int) -> str:
    return f"/console/risk/decisions/{decision_id}"


@pytest.fixture
def risky(app):  # type: ignore[no-untyped-def]
    """A shop whose till held one member's purchase, flagged another's, and refused the first one's redemption."""
    hub = hub_state(app)
    created = wall_clock_partner_time()
    shop = make_signing_partner(hub, now=created, code="shop", bind_key_to_terminal=True)
    holder = make_member_with_pin(hub, now=created, pin=PIN)
    flagged = make_member_with_pin(hub, now=created, pin=PIN)
    fund_member(hub, member_id=holder.member_id, partner_id=shop.partner_id, points=1_000)
    set_risk_policy(hub, TEST_POLICY)
    client = SignedTestClient(app, shop)
    for index in range(4):
        reply = client.post("/partner/v1/purchases", purchase_payload(f"p-{index}", holder.card_number, 10_000))
        assert reply.status == 201
    assert reply.body["points"]["state"] == "held_for_review"
    for receipt, amount in (("f-1", 70_000), ("f-2", 20_000)):
        assert client.post("/partner/v1/purchases", purchase_payload(receipt, flagged.card_number, amount)).status \
            == 201
    for index in range(3):
        reply = client.post("/partner/v1/redemptions", {"reference": f"r-{index}", "points": 10,
                                                        "card_number": holder.card_number, "pin": PIN})
    assert reply.status == 403 and reply.body["code"] == "declined"
    with hub.unit_of_work() as uow:
        kept = {row.action: row for row in uow.session.scalars(select(RiskDecision).order_by(RiskDecision.id))}
    assert len(kept) == 3 and [kept[action].reference for action in ("hold", "flag", "refuse")] == [
        "p-3", "f-2", "r-2"]
    return SimpleNamespace(app=app, hub=hub, shop=shop, holder=holder, flagged=flagged, hold=kept["hold"],
                           flag=kept["flag"], refusal=kept["refuse"], refusal_detail=reply.body["detail"])


@pytest.fixture
def rita(app):  # type: ignore[no-untyped-def]
    return signed_in(app, "rita", "risk")


def status_of(hub, decision_id: int) -> tuple[str, str | None]:  # type: ignore[no-untyped-def]
    with hub.unit_of_work() as uow:
        row = uow.session.get(RiskDecision, decision_id)
        return row.review_status, row.proposed_action


def flashed(browser: ConsoleClient, response) -> str:  # type: ignore[no-untyped-def]
    """The page the browser lands on after a form, as text."""
    assert response.status_code == 303, response.get_data(as_text=True)
    return text_of(browser.get(response.headers["Location"]))


# -- reading --------------------------------------------------------------------------------

def test_the_queue_shows_cases_by_member_and_the_open_decisions_with_their_evidence_in_words(risky, rita):
    page = rita.get(QUEUE)
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    shown = text_of(page)
    assert "3 decisions wait for a review" in shown
    # The holder's case comes first: two decisions, a hold and a refusal.
    cases = re.findall(r'case=([0-9A-Za-z-]+)', html)
    assert cases[:2] == [risky.holder.member_number, risky.flagged.member_number]
    assert "1 held, 1 refused" in shown
    assert "card-hour: 4 purchases with this card in 60 minutes, limit 3" in shown
    assert "member-points: 900 points from 2 purchases by this member in 1 day, limit 800 points" in shown
    assert "member-redemptions: 3 redemptions by this member in 60 minutes, limit 2" in shown
    assert '"max_count"' not in html and "{&#39;limit" not in html and "&#34;limit" not in html
    for decision in (risky.hold, risky.flag, risky.refusal):
        assert decision_path(decision.id) in html and decision.token in shown
    # A risk reviewer may not open the member page, so the member number is not a link for them.
    assert f"/console/members/{risky.holder.member_number}" not in html


def test_cases_group_by_till_and_partner_and_a_case_narrows_the_decisions(risky, rita):
    by_till = text_of(rita.get(QUEUE, by="till"))
    assert "shop/till-1" in by_till and "Cases by till" in by_till
    by_partner = rita.get(QUEUE, by="partner").get_data(as_text=True)
    assert "case=shop" in by_partner
    narrowed = rita.get(QUEUE, by="member", case=risky.flagged.member_number).get_data(as_text=True)
    assert risky.flag.token in narrowed and risky.hold.token not in narrowed and risky.refusal.token not in narrowed
    assert rita.get(QUEUE, by="card").status_code == 400


def test_the_queue_sorts_by_time_points_and_action(risky, rita):
    def tokens(**query: str) -> list[str]:
        html = rita.get(QUEUE, **query).get_data(as_text=True)
        return [token for token in re.findall(r">(R[0-9A-F]{12})</a>", html)]

    assert tokens() == [risky.refusal.token, risky.flag.token, risky.hold.token]
    assert tokens(sort="time", order="asc") == [risky.hold.token, risky.flag.token, risky.refusal.token]
    assert tokens(sort="points", order="desc") == [risky.flag.token, risky.hold.token, risky.refusal.token]
    assert tokens(sort="action", order="asc") == [risky.flag.token, risky.hold.token, risky.refusal.token]
    assert 'aria-sort="descending"' in rita.get(QUEUE, sort="points", order="desc").get_data(as_text=True)
    assert rita.get(QUEUE, sort="member").status_code == 400


def test_an_empty_queue_and_the_default_policy_say_so(app, rita):
    shown = text_of(rita.get(QUEUE))
    assert "0 decisions wait for a review" in shown and "No decision waits for a review." in shown
    policy = text_of(rita.get(POLICY))
    assert "In force now: built-in default" in policy
    assert "card-earns-hour each card purchases 60 minutes 20 purchases hold its points for review" in policy
    assert "No version stored" in policy
    assert "back-office API or the command line" in policy


def test_the_policy_page_shows_the_version_in_force_its_overrides_and_every_version(risky, rita):
    policy = text_of(rita.get(POLICY))
    assert "In force now: version 1" in policy
    assert "member-redemptions each member redemptions 60 minutes 2 redemptions refuse it" in policy
    assert "shop card-hour hold its points for review, at most 3 operations" in policy
    assert "gold member-points at most 2,000 points" in policy
    assert "in force" in policy and "a test's own policy" in policy


def test_a_decision_page_shows_everything_and_the_hold_review_forms_to_a_reviewer(risky, rita):
    page = rita.get(decision_path(risky.hold.id))
    shown = text_of(page)
    assert f"Risk decision {risky.hold.token}" in shown
    assert "purchase earning points, points held for review" in shown
    assert "version 1 of the risk policy" in shown
    assert "Reference p-3" in shown and "Held pending 100 points in 1 lot" in shown
    assert f"ending {risky.holder.card_number[-4:]}" in shown and risky.holder.card_number not in shown
    assert "card-hour: 4 purchases with this card in 60 minutes, limit 3" in shown
    assert "Release the points" in shown and "Reverse the points" in shown and "Confirm fraud" not in shown
    refusal = text_of(rita.get(decision_path(risky.refusal.id)))
    assert "Dismiss (false alarm)" in refusal and "Confirm fraud" in refusal and "Release the points" not in refusal
    assert rita.get(decision_path(999_999)).status_code == 404


# -- who may ---------------------------------------------------------------------------------

def test_anonymous_visitors_go_to_the_login_and_other_roles_are_refused(app, risky):
    anonymous = ConsoleClient(app)
    for path in (QUEUE, LOOKUP, POLICY, PATTERNS, decision_path(risky.hold.id)):
        response = anonymous.get(path)
        assert response.status_code == 302 and "/console/login" in response.headers["Location"]
    finance = signed_in(app, "fiona", "finance")
    for path in (QUEUE, LOOKUP, POLICY, PATTERNS, decision_path(risky.hold.id)):
        assert finance.get(path).status_code == 403
    assert "Review queue" not in text_of(finance.get("/console/"))
    assert "Pattern rules" not in text_of(finance.get("/console/"))
    service = signed_in(app, "cass", "customer_service")
    assert service.get(QUEUE).status_code == 403 and service.get(POLICY).status_code == 403
    assert service.get(PATTERNS).status_code == 403
    # Customer service reads a decision (the member link is theirs to follow) but cannot review it.
    page = service.get(decision_path(risky.hold.id))
    assert page.status_code == 200 and "Release the points" not in text_of(page)
    assert f"/console/members/{risky.holder.member_number}" in page.get_data(as_text=True)
    assert service.post(f"{decision_path(risky.hold.id)}/release", {"confirm": "yes", "reason": "ok"}).status_code \
        == 403
    admin = signed_in(app, "ada", "admin")
    assert admin.get(QUEUE).status_code == 200 and admin.get(POLICY).status_code == 200
    assert admin.get(PATTERNS).status_code == 200
    assert admin.post(f"{decision_path(risky.flag.id)}/review", {"action": "dismiss", "note": "ok"}).status_code \
        == 403
    assert status_of(risky.hub, risky.hold.id) == ("open", None)
    assert status_of(risky.hub, risky.flag.id) == ("open", None)
    home = text_of(signed_in(app, "ravi", "risk").get("/console/"))
    assert "Review queue" in home and "Risk policy" in home and "Decision reference" in home
    assert "Pattern rules" in home


# -- reviewing --------------------------------------------------------------------------------

def test_releasing_a_hold_with_the_confirmation_and_a_note_gives_the_points_and_is_audited(risky, rita):
    before = balances(risky.hub, risky.holder.member_id)
    response = rita.post(f"{decision_path(risky.hold.id)}/release",
                         {"confirm": "yes", "reason": "The member bought gifts for the office."})
    shown = flashed(rita, response)
    assert f"Decision {risky.hold.token} is released: 100 points are released to the member." in shown
    assert "Outcome released" in shown and "The member bought gifts for the office." in shown
    assert "Rita (risk)" in shown
    after = balances(risky.hub, risky.holder.member_id)
    assert (after["available"] - before["available"], before["pending"] - after["pending"]) == (100, 100)
    assert ("console:rita", "risk.review.release", f"risk-decision:{risky.hold.id}") in audit_actions(risky.hub)
    assert risky.hold.token not in rita.get(QUEUE).get_data(as_text=True)


def test_reversing_a_hold_takes_the_points_back(risky, rita):
    before = balances(risky.hub, risky.holder.member_id)
    response = rita.post(f"{decision_path(risky.hold.id)}/reverse", {"confirm": "yes", "reason": "Stolen card."})
    assert "100 points were taken back to their issuers" in flashed(rita, response)
    assert balances(risky.hub, risky.holder.member_id)["pending"] == before["pending"] - 100
    assert status_of(risky.hub, risky.hold.id) == ("reversed", None)
    assert ("console:rita", "risk.review.reverse", f"risk-decision:{risky.hold.id}") in audit_actions(risky.hub)


@pytest.mark.parametrize(("which", "action", "status", "said"), [
    ("flag", "dismiss", "dismissed", "dismissed as a false alarm"),
    ("flag", "confirm", "confirmed", "confirmed as fraud"),
    ("refusal", "confirm", "confirmed", "confirmed as fraud"),
    ("refusal", "dismiss", "dismissed", "dismissed as a false alarm"),
])
def test_a_flag_or_a_refusal_is_dismissed_or_confirmed_with_a_note(risky, rita, which, action, status, said):
    decision = getattr(risky, which)
    response = rita.post(f"{decision_path(decision.id)}/review", {"action": action, "note": "Checked with the till."})
    assert f"Decision {decision.token} is {said}." in flashed(rita, response)
    assert status_of(risky.hub, decision.id) == (status, None)
    assert ("console:rita", f"risk.review.{action}", f"risk-decision:{decision.id}") in audit_actions(risky.hub)


def test_a_release_without_the_ticked_box_or_a_note_changes_nothing(risky, rita):
    path = f"{decision_path(risky.hold.id)}/release"
    assert rita.post(path, {"reason": "fine"}).status_code == 400
    assert rita.post(path, {"confirm": "yes", "reason": "  "}).status_code == 400
    assert rita.post(f"{decision_path(risky.flag.id)}/review", {"action": "dismiss", "note": ""}).status_code == 400
    assert rita.post(f"{decision_path(risky.flag.id)}/review", {"action": "pardon", "note": "x"}).status_code == 400
    assert rita.post(f"{decision_path(risky.hold.id)}/pardon", {"confirm": "yes", "reason": "x"}).status_code == 404
    assert status_of(risky.hub, risky.hold.id) == ("open", None)
    assert status_of(risky.hub, risky.flag.id) == ("open", None)
    assert not [entry for entry in audit_actions(risky.hub) if entry[1].startswith("risk.review")]


def test_a_decision_already_reviewed_or_the_wrong_kind_of_review_is_refused_on_the_page(risky, rita):
    rita.post(f"{decision_path(risky.flag.id)}/review", {"action": "dismiss", "note": "Fine."})
    again = rita.post(f"{decision_path(risky.flag.id)}/review", {"action": "confirm", "note": "Actually fraud."})
    assert "was already dismissed by console:rita" in flashed(rita, again)
    assert status_of(risky.hub, risky.flag.id) == ("dismissed", None)
    wrong = rita.post(f"{decision_path(risky.hold.id)}/review", {"action": "dismiss", "note": "Fine."})
    assert "a hold decision is released or reversed" in flashed(rita, wrong)
    assert status_of(risky.hub, risky.hold.id) == ("open", None)


def test_above_the_threshold_one_person_proposes_and_only_another_can_approve(risky, rita, app):
    risky.hub.settings = dataclasses.replace(risky.hub.settings, risk_approval_threshold_points=0)
    path = f"{decision_path(risky.hold.id)}/release"
    proposed = flashed(rita, rita.post(path, {"confirm": "yes", "reason": "Looks honest."}))
    assert f"The release of decision {risky.hold.token} is proposed; another person must approve it" in proposed
    assert "Waiting for a second person: Rita (risk) proposed to release the points" in proposed
    assert "Looks honest." in proposed and "You proposed it" in proposed
    assert status_of(risky.hub, risky.hold.id) == ("open", "release")
    refused = flashed(rita, rita.post(path, {"confirm": "yes", "reason": "Still honest."}))
    assert "console:rita proposed this release; another person must approve it" in refused
    assert status_of(risky.hub, risky.hold.id) == ("open", "release")
    # The same person through a second login is still the same pair of eyes.
    add_staff(risky.hub, "rita2", "risk", person="rita")
    second_login = ConsoleClient(app)
    second_login.login("rita2")
    assert "another person must approve it" in flashed(second_login, second_login.post(
        path, {"confirm": "yes", "reason": "Me again."}))
    ravi = signed_in(app, "ravi", "risk")
    done = flashed(ravi, ravi.post(path, {"confirm": "yes", "reason": "Agreed."}))
    assert "is released: 100 points are released to the member" in done
    assert [entry[1] for entry in audit_actions(risky.hub) if entry[2] == f"risk-decision:{risky.hold.id}"] == [
        "risk.review.propose_release", "risk.review.release"]


def test_a_review_without_the_forms_token_is_refused(risky, rita):
    assert rita.post(f"{decision_path(risky.hold.id)}/release", {"confirm": "yes", "reason": "x"},
                     csrf=None).status_code == 400
    assert rita.post(f"{decision_path(risky.flag.id)}/review", {"action": "confirm", "note": "x"},
                     csrf="forged").status_code == 400
    assert rita.post(LOOKUP, {"reference": risky.refusal.token}, csrf=None).status_code == 400
    assert status_of(risky.hub, risky.hold.id) == ("open", None)
    assert status_of(risky.hub, risky.flag.id) == ("open", None)


# -- a refusal's reference -------------------------------------------------------------------

def test_customer_service_opens_the_decision_a_refusal_quotes(risky, app):
    service = signed_in(app, "cass", "customer_service")
    assert "Decision reference" in text_of(service.get(LOOKUP))
    # The member reads the reference off the till's refusal, perhaps in lower case.
    assert risky.refusal.token in risky.refusal_detail
    found = service.post(LOOKUP, {"reference": f" {risky.refusal.token.lower()} "})
    assert found.status_code == 303 and found.headers["Location"].endswith(decision_path(risky.refusal.id))
    page = text_of(service.get(found.headers["Location"]))
    assert "redemption, refused" in page and "member-redemptions: 3 redemptions" in page
    missing = service.post(LOOKUP, {"reference": "R000000000000"})
    assert missing.status_code == 404 and "No decision has the reference R000000000000." in text_of(missing)
    nonsense = service.post(LOOKUP, {"reference": "hello"})
    assert nonsense.status_code == 404 and "is not a decision reference" in text_of(nonsense)
    assert service.post(LOOKUP, {"reference": ""}).status_code == 400


# -- acting on what a decision found ----------------------------------------------------------

def test_a_reviewer_blocks_the_card_revokes_the_tills_keys_and_opens_a_complaint(risky, rita):
    base = decision_path(risky.refusal.id)
    page = text_of(rita.get(base))
    assert "Block the card" in page and "Revoke the till's keys" in page and "Open a complaint" in page
    assert "Nobody has reviewed or acted on this decision yet." in page
    assert rita.post(f"{base}/act/block_card", {"reason": "stolen"}).status_code == 400
    assert rita.post(f"{base}/act/explode", {"confirm": "yes", "reason": "x"}).status_code == 404
    blocked = flashed(rita, rita.post(f"{base}/act/block_card", {"confirm": "yes", "reason": "Reported stolen."}))
    assert "The card is blocked" in blocked
    again = flashed(rita, rita.post(f"{base}/act/block_card", {"confirm": "yes", "reason": "Again."}))
    assert "the card is not active any more" in again
    revoked = flashed(rita, rita.post(f"{base}/act/revoke_terminal_keys", {"confirm": "yes", "reason": "Scripted."}))
    assert "The till's keys are revoked: shop-key." in revoked
    assert "Rita (risk) blocked the card, noting “Reported stolen.”" in revoked
    assert "revoked the till's keys (shop-key)" in revoked
    # A complaint about the flagged purchase (a refused operation was never recorded, so the flag's is used).
    flag = decision_path(risky.flag.id)
    opened = flashed(rita, rita.post(f"{flag}/act/open_complaint", {"confirm": "yes", "reason": "Ask the shop."}))
    complaint = re.search(r"Complaint #(\d+) is opened with the partner", opened)
    assert complaint, opened
    assert (f"Rita (risk) opened a complaint with the partner (complaint #{complaint.group(1)}), noting "
            "“Ask the shop.”") in opened
    assert [entry[1] for entry in audit_actions(risky.hub) if entry[2] == f"risk-decision:{risky.refusal.id}"] == [
        "risk.act.block_card", "risk.act.revoke_terminal_keys"]
    assert [entry[1] for entry in audit_actions(risky.hub) if entry[2] == f"risk-decision:{risky.flag.id}"] == [
        "risk.act.open_complaint"]
    # The review is still to do: acting does not settle the decision.
    assert status_of(risky.hub, risky.refusal.id) == ("open", None)
    assert status_of(risky.hub, risky.flag.id) == ("open", None)


def test_only_a_reviewer_may_act_on_a_decision(risky, app):
    for username, role in (("cass", "customer_service"), ("ada", "admin")):
        browser = signed_in(app, username, role)
        assert "Block the card" not in text_of(browser.get(decision_path(risky.refusal.id)))
        assert browser.post(f"{decision_path(risky.refusal.id)}/act/block_card",
                            {"confirm": "yes", "reason": "x"}).status_code == 403
    assert not [entry for entry in audit_actions(risky.hub) if entry[1].startswith("risk.act")]


def test_a_patterns_evidence_is_said_in_words_and_an_unknown_shape_field_by_field_never_as_json():
    assert risk_console.evidence_words({
        "pattern": "quick-burn", "earned_at_partner": "fuel", "earned_terminal_id": 4, "tills": "t4>t9",
        "minutes_between": 12, "points": 300, "cards": 3, "max_cards": 2, "window_minutes": 60,
        "earned_within_minutes": 30}) == (
        "quick-burn: 300 points earned at fuel 12 minutes before being redeemed here; 3 cards did so between these "
        "tills in 60 minutes, limit 2")
    assert risk_console.evidence_words({
        "pattern": "split-purchase", "purchases": 3, "amount_minor": 90_000, "points": 900,
        "per_purchase_cap_points": 500, "window_minutes": 10}) == (
        "split-purchase: 3 purchases with this card at this till in 10 minutes earn 900 points together (amount "
        "90,000 in minor units), more than the per-purchase cap of 500 points")
    assert risk_console.evidence_words({
        "pattern": "transfer-chain", "new_senders": 5, "max_new_senders": 4, "enrolled_within_days": 30,
        "window_days": 7}) == ("transfer-chain: 5 members enrolled within 30 days sent points to this member in "
                               "7 days, limit 4")
    said = risk_console.evidence_words({"pattern": "earn-then-burn", "cards": 7, "terminals": ["a", "b"],
                                        "within_minutes": 10, "seen": True})
    assert said == "earn-then-burn: cards 7, seen yes, terminals a, b, within minutes 10"
    assert risk_console.evidence_words({"limit": "till-cards", "scope": "terminal", "measure":
                                        "verification_failure", "window_minutes": 15, "action": "refuse",
                                        "count": 6, "points": 0, "max_count": 5, "max_points": None}) == (
        "till-cards: 6 different cards or codes tried and failed at this till in 15 minutes, limit 5")


# -- more open decisions than a page holds ----------------------------------------------------

def tokens_of(response) -> list[str]:  # type: ignore[no-untyped-def]
    """The decision tokens the queue's list shows, in order."""
    return re.findall(r">(R[0-9A-F]{12})</a>", response.get_data(as_text=True))


def next_link(response) -> str | None:  # type: ignore[no-untyped-def]
    found = re.search(r'<a rel="next" href="([^"]+)"', response.get_data(as_text=True))
    return found.group(1).replace("&amp;", "&") if found else None


def follow(browser: ConsoleClient, link: str | None):  # type: ignore[no-untyped-def]
    """The page a link on the last one (its query string included) opens."""
    assert link is not None
    return browser.client.get(link)


@pytest.fixture
def crowded(app):  # type: ignore[no-untyped-def]
    """230 open decisions, a minute apart: 210 of one member (every third a hold, the others flags), 20 refusals of
    another, all at the shop's till, kept as a pattern rule keeps its own (``risk.record`` + ``risk.keep``)."""
    hub = hub_state(app)
    created = wall_clock_partner_time()
    shop = make_signing_partner(hub, now=created, code="shop")
    busy = make_member_with_pin(hub, now=created, pin=PIN)
    other = make_member_with_pin(hub, now=created, pin=PIN)
    with hub.unit_of_work() as uow:
        for index in range(230):
            member, action = ((busy, Action.HOLD if index % 3 == 0 else Action.FLAG) if index < 210
                              else (other, Action.REFUSE))
            risk.keep(uow.session, risk.record(
                uow.session, operation="earn", action=action, points=10 + index, reference=f"c-{index}",
                now=created + timedelta(minutes=index), evidence=[{"pattern": "test", "index": index}],
                subject=risk.Subject(partner_id=shop.partner_id, terminal_id=shop.terminal_id,
                                     member_id=busy.member_id if member is busy else other.member_id)))
        uow.commit()
        newest_first = list(uow.session.scalars(select(RiskDecision.token).order_by(
            RiskDecision.decided_at.desc(), RiskDecision.id.desc())))
        busy_flags = list(uow.session.scalars(select(RiskDecision.token).where(
            RiskDecision.action == "flag", RiskDecision.reference.in_([f"c-{index}" for index in range(210)]))
            .order_by(RiskDecision.decided_at.desc(), RiskDecision.id.desc())))
    return SimpleNamespace(busy=busy, other=other, newest_first=newest_first, busy_flags=busy_flags)


def test_the_queue_pages_through_every_open_decision_newest_first(crowded, rita):
    first = rita.get(QUEUE, page_size=100)
    shown = text_of(first)
    assert "230 decisions wait for a review" in shown
    assert "1–100 of 230" in shown and "page 1 of 3" in shown and "Previous" not in shown
    assert tokens_of(first) == crowded.newest_first[:100]
    second = follow(rita, next_link(first))
    assert "101–200 of 230" in text_of(second) and tokens_of(second) == crowded.newest_first[100:200]
    last = follow(rita, next_link(second))
    assert "201–230 of 230" in text_of(last) and next_link(last) is None
    assert tokens_of(last) == crowded.newest_first[200:]
    assert 'rel="prev"' in last.get_data(as_text=True)
    # Oldest first, the last page starts where the newest page ended.
    oldest = rita.get(QUEUE, page_size=100, page=3, sort="time", order="asc")
    assert tokens_of(oldest) == list(reversed(crowded.newest_first[:30]))
    # The console's own page size, and a page past the last one says so.
    assert len(tokens_of(rita.get(QUEUE))) == 25 and "1–25 of 230" in text_of(rita.get(QUEUE))
    assert "past the last one" in text_of(rita.get(QUEUE, page=4, page_size=100))
    assert rita.get(QUEUE, page=0).status_code == 400
    assert rita.get(QUEUE, page_size=7).status_code == 400
    assert rita.get(QUEUE, action="allow").status_code == 400


def test_the_cases_count_every_open_decision_not_only_a_pages(crowded, rita):
    page = rita.get(QUEUE, page_size=10)
    rows = re.findall(r'case=([0-9A-Za-z-]+)[^>]*>[^<]+</a></th>\s*<td data-label="Decisions" class="num">([0-9,]+)<',
                      page.get_data(as_text=True))
    assert rows == [(crowded.busy.member_number, "210"), (crowded.other.member_number, "20")]
    shown = text_of(page)
    assert "140 flagged, 70 held" in shown and "20 refused" in shown
    by_till = text_of(rita.get(QUEUE, by="till", page_size=10))
    assert "shop/till-1 230" in by_till and "230 refused" not in by_till
    assert "shop 230" in text_of(rita.get(QUEUE, by="partner"))


def test_the_filters_and_the_sort_survive_paging(crowded, rita):
    first = rita.get(QUEUE, by="member", case=crowded.busy.member_number, action="flag", page_size=100)
    shown = text_of(first)
    assert "1–100 of 140" in shown and f"Open decisions of member {crowded.busy.member_number}, flagged" in shown
    assert tokens_of(first) == crowded.busy_flags[:100]
    link = next_link(first)
    assert link is not None
    for kept in (f"case={crowded.busy.member_number}", "action=flag", "page_size=100", "by=member", "page=2"):
        assert kept in link
    second = follow(rita, link)
    assert "101–140 of 140" in text_of(second) and tokens_of(second) == crowded.busy_flags[100:]
    # The sort is kept too, and a till's case narrows by partner and till.
    by_points = rita.get(QUEUE, by="till", case="shop/till-1", action="refuse", sort="points", order="desc",
                         page_size=10)
    assert "1–10 of 20" in text_of(by_points)
    link = next_link(by_points)
    assert link is not None and "sort=points" in link and "order=desc" in link and "case=shop/till-1" in link
    refusals = tokens_of(by_points) + tokens_of(follow(rita, link))
    assert refusals == crowded.newest_first[:20]
    assert "No open decision belongs to this case" in text_of(rita.get(QUEUE, by="till", case="shop/till-9"))


# -- the pattern rules -------------------------------------------------------------------------

def test_the_pattern_rules_page_shows_each_rule_in_force_and_who_changed_it(app, rita):
    page = rita.get(PATTERNS)
    assert page.status_code == 200
    shown = text_of(page)
    for name in ("quick-burn", "refund-abuse", "split-purchase", "transfer-chain", "amount-outlier"):
        assert name in shown
    assert "quick-burn points earned at one partner and redeemed at another" in shown
    assert "earned within 30 minutes" in shown and "window 1 day" in shown
    assert "split-purchase" in shown and "hold its points for review" in shown
    assert shown.count("never: the built-in rule") == 5
    assert "PATCH /back-office/v1/risk/patterns/&lt;name&gt;" in shown and "alliance risk patterns set" in shown
    assert 'href="/console/risk/patterns"' in rita.get(POLICY).get_data(as_text=True)
    with hub_state(app).unit_of_work() as uow:
        risk_patterns.set_rule(uow.session, name="quick-burn", terms={"cards": 5}, action="refuse", enabled=False,
                               now=wall_clock_partner_time(), actor="console:rita")
        uow.commit()
    changed = rita.get(PATTERNS).get_data(as_text=True)
    row = text_of(rita.get(PATTERNS)).split("quick-burn", 1)[1].split("refund-abuse", 1)[0]
    assert "cards 5 (built in: 3)" in row and "refuse it" in row and "no, switched off" in row
    assert "by Rita (risk)" in row
    assert 'id="pattern-quick-burn" class="muted"' in changed
    assert text_of(rita.get(PATTERNS)).count("never: the built-in rule") == 4
