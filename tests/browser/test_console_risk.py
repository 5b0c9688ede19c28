"""A risk reviewer works the review queue in a real browser: opens a held purchase's decision, releases its points
with the confirmation and a note and sees them given; then confirms a refused redemption as fraud. Customer
service opens a decision from the reference a till's refusal quotes. A queue longer than a page is paged with its
filter kept, and the pattern rules are read. Every page is scanned by axe-core and tried at 390 px wide.

The decisions are made as a till makes them, through the signed partner API.
"""

from __future__ import annotations

import re
from datetime import timedelta
from types import SimpleNamespace

import pytest
from playwright.sync_api import expect
from sqlalchemy import select

from alliance.domain.risk import Action
from alliance.extensions import hub_state
from alliance.models import AuditLogEntry, RiskDecision
from alliance.services import risk
from tests.browser.test_console_flows import menu, sign_in
from tests.console_support import add_staff
from tests.factories import make_member_with_pin, make_signing_partner, set_risk_policy
from tests.http_server import balances, fund_member, purchase_payload, wall_clock_partner_time
from tests.partner_client import SignedTestClient

PIN = "2468"
POLICY = {"limits": [
    {"name": "card-hour", "scope": "card", "measure": "earn", "window_minutes": 60, "max_count": 3,
     "action": "hold"},
    {"name": "member-redemptions", "scope": "member", "measure": "redeem", "window_minutes": 60, "max_count": 2,
     "action": "refuse"}]}
RELEASE_NOTE = "The member bought four gift cards for the office; the till's journal agrees."
FRAUD_NOTE = "Three redemptions in minutes on a card reported stolen the same morning."


@pytest.fixture
def risky(pg_app, console_hub):  # type: ignore[no-untyped-def]
    """A risk reviewer, and a shop's till that held a card's fourth purchase and refused its third redemption."""
    hub = hub_state(pg_app)
    add_staff(hub, "rita", "risk", display_name="Rita Risk")
    created = wall_clock_partner_time()
    shop = make_signing_partner(hub, now=created, code="shop", bind_key_to_terminal=True)
    member = make_member_with_pin(hub, now=created, pin=PIN)
    fund_member(hub, member_id=member.member_id, partner_id=shop.partner_id, points=500)
    set_risk_policy(hub, POLICY)
    client = SignedTestClient(pg_app, shop)
    for index in range(4):
        held = client.post("/partner/v1/purchases", purchase_payload(f"gift-{index}", member.card_number, 10_000))
    assert held.status == 201 and held.body["points"]["state"] == "held_for_review"
    for index in range(3):
        refused = client.post("/partner/v1/redemptions", {"reference": f"red-{index}", "points": 10,
                                                          "card_number": member.card_number, "pin": PIN})
    assert refused.status == 403 and refused.body["code"] == "declined"
    with hub.unit_of_work() as uow:
        kept = {row.action: (row.id, row.token) for row in uow.session.scalars(select(RiskDecision))}
    return SimpleNamespace(hub=hub, member=member, hold=kept["hold"], refusal=kept["refuse"],
                           base_url=console_hub[0], shop=shop, created=created)


def _status(hub, decision_id: int) -> str:  # type: ignore[no-untyped-def]
    with hub.unit_of_work() as uow:
        return uow.session.get(RiskDecision, decision_id).review_status


def test_a_reviewer_releases_a_held_purchase_and_confirms_a_refused_redemption_as_fraud(page, shots, risky):
    hold_id, hold_token = risky.hold
    refusal_id, refusal_token = risky.refusal
    pending_before = balances(risky.hub, risky.member.member_id)["pending"]
    sign_in(page, risky.base_url, "rita")
    shots.check("start")
    menu(page, "Review queue").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Risk review queue")
    expect(page.get_by_text("card-hour: 4 purchases with this card in 60 minutes, limit 3")).to_be_visible()
    shots.check("queue")
    page.get_by_label("Group cases by").select_option("till")
    page.get_by_role("button", name="Show").click()
    expect(page.get_by_role("link", name="shop/till-1")).to_be_visible()
    shots.check("queue-by-till")

    # The held purchase: its evidence in words, then released with the box ticked and a note.
    page.get_by_role("link", name=hold_token).click()
    expect(page.get_by_role("heading", level=1)).to_contain_text(hold_token)
    expect(page.get_by_test_id("review-status")).to_contain_text("open")
    expect(page.get_by_test_id("evidence")).to_contain_text("card-hour: 4 purchases with this card")
    shots.check("held-decision")
    release = page.locator("details.confirm", has=page.locator("summary", has_text="Release the points"))
    release.locator("summary").click()
    release.get_by_label("Note (kept in the audit trail)").fill(RELEASE_NOTE)
    release.get_by_role("checkbox").check()
    shots.check("release-form")
    release.get_by_role("button", name="Release the points").click()
    expect(page.get_by_role("status")).to_contain_text("100 points are released to the member")
    expect(page.get_by_test_id("review-status")).to_contain_text("released")
    expect(page.get_by_test_id("history")).to_contain_text(
        f"Rita Risk (risk) released the points, noting “{RELEASE_NOTE}”")
    shots.check("released")
    assert _status(risky.hub, hold_id) == "released"
    assert balances(risky.hub, risky.member.member_id)["pending"] == pending_before - 100

    # The refused redemption: confirmed as fraud with a note.
    menu(page, "Review queue").click()
    expect(page.get_by_role("link", name=hold_token)).to_have_count(0)
    page.get_by_role("link", name=refusal_token).click()
    expect(page.get_by_role("heading", level=1)).to_contain_text(refusal_token)
    expect(page.get_by_test_id("evidence")).to_contain_text("member-redemptions: 3 redemptions by this member")
    review = page.locator("form", has=page.get_by_role("button", name="Confirm fraud"))
    review.get_by_label("Note (kept in the audit trail)").fill(FRAUD_NOTE)
    review.get_by_role("button", name="Confirm fraud").click()
    expect(page.get_by_role("status")).to_contain_text("confirmed as fraud")
    expect(page.get_by_test_id("review-status")).to_contain_text("confirmed as fraud")
    shots.check("confirmed")
    # Then the card it came from is blocked, with a note.
    block = page.locator("details.confirm", has=page.locator("summary", has_text="Block the card"))
    block.locator("summary").click()
    block.get_by_label("Note (kept in the audit trail)").fill("Reported stolen; the member has a new card.")
    block.get_by_role("checkbox").check()
    block.get_by_role("button", name="Block the card").click()
    expect(page.get_by_role("status")).to_contain_text("The card is blocked")
    expect(page.get_by_test_id("history")).to_contain_text("blocked the card")
    shots.check("card-blocked")
    assert _status(risky.hub, refusal_id) == "confirmed"
    with risky.hub.unit_of_work() as uow:
        audited = uow.session.scalars(select(AuditLogEntry.action).where(
            AuditLogEntry.actor == "console:rita", AuditLogEntry.action.startswith("risk.review"))
            .order_by(AuditLogEntry.sequence)).all()
    assert audited == ["risk.review.release", "risk.review.confirm"]

    menu(page, "Review queue").click()
    expect(page.get_by_text("No decision waits for a review.")).to_be_visible()
    shots.check("queue-empty")
    menu(page, "Risk policy").click()
    expect(page.get_by_test_id("policy-version")).to_have_text("version 1")
    shots.check("policy")


def test_customer_service_opens_the_decision_a_refusal_quotes(page, shots, risky):
    refusal_id, refusal_token = risky.refusal
    sign_in(page, risky.base_url, "cass")
    menu(page, "Decision reference").click()
    shots.check("lookup")
    page.get_by_label("Decision reference").fill("R000000000000")
    page.get_by_role("button", name="Open the decision").click()
    expect(page.get_by_role("alert")).to_contain_text("No decision has the reference R000000000000.")
    shots.check("lookup-not-found")
    page.get_by_label("Decision reference").fill(refusal_token.lower())
    page.get_by_role("button", name="Open the decision").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text(refusal_token)
    expect(page.get_by_text("Reviewers with the risk role settle this decision.")).to_be_visible()
    expect(page.get_by_role("button", name="Confirm fraud")).to_have_count(0)
    shots.check("decision-read-only")
    assert _status(risky.hub, refusal_id) == "open"


def test_a_reviewer_pages_through_a_long_queue_with_its_filter_kept_and_reads_the_pattern_rules(page, shots, risky):
    # Forty flags more at the same till, as a pattern rule keeps them: 42 open decisions with the hold and the refusal.
    with risky.hub.unit_of_work() as uow:
        for index in range(40):
            risk.keep(uow.session, risk.record(
                uow.session, operation="earn", action=Action.FLAG, points=20, reference=f"more-{index}",
                now=risky.created + timedelta(minutes=index), evidence=[{"pattern": "test", "index": index}],
                subject=risk.Subject(partner_id=risky.shop.partner_id, terminal_id=risky.shop.terminal_id,
                                     member_id=risky.member.member_id)))
        uow.commit()
    sign_in(page, risky.base_url, "rita")
    menu(page, "Review queue").click()
    pager = page.get_by_role("navigation", name="Pages")
    expect(pager).to_contain_text("1–25 of 42")
    expect(page.get_by_role("cell", name="42", exact=True)).to_be_visible()
    page.get_by_label("Action").select_option("flag")
    page.get_by_role("button", name="Show").click()
    expect(pager).to_contain_text("1–25 of 40")
    pager.get_by_role("link", name="Next →").click()
    expect(pager).to_contain_text("26–40 of 40")
    expect(page.get_by_label("Action")).to_have_value("flag")
    expect(page.get_by_role("heading", name="Open decisions, flagged")).to_be_visible()
    expect(page.locator("tbody").last.get_by_role("row")).to_have_count(15)
    shots.check("queue-page-2")
    pager.get_by_role("link", name="← Previous").click()
    expect(pager).to_contain_text("1–25 of 40")

    menu(page, "Pattern rules").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Risk pattern rules")
    expect(page.get_by_role("row", name=re.compile("^quick-burn"))).to_contain_text("never: the built-in rule")
    expect(page.get_by_text("alliance risk patterns set")).to_be_visible()
    shots.check("pattern-rules")
