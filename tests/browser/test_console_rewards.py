"""Rewards in a real browser: a partner manager proposes a voucher and cannot approve it himself (said on the
page), a second partner manager approves it and uploads its codes (counted, never shown); customer service orders
the voucher and a mug for a member (the voucher's code shown once); the first manager finds the mug's order in
Fulfilment and records it fulfilled. Every step is scanned by axe-core and tried at 390 px wide.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

from playwright.sync_api import expect
from sqlalchemy import select

from alliance.extensions import hub_state
from alliance.models import Member, Partner, Purchase, RewardOrder
from alliance.services import ledger, rewards
from tests.browser.test_console_flows import menu, sign_in
from tests.console_support import add_staff

CODES = ("WASH-7001", "WASH-7002", "WASH-7003")


def _prepare(pg_app) -> str:  # type: ignore[no-untyped-def]
    """A second partner manager, 5,000 more points for the busy member, and a listed mug at fuel; the member's
    number."""
    hub = hub_state(pg_app)
    add_staff(hub, "pia", "partner_manager", display_name="Pia Manager")
    now = datetime.now(timezone.utc)
    with hub.unit_of_work() as uow:
        session = uow.session
        member_id = session.scalar(select(Purchase.member_id).limit(1))
        aurora = session.scalar(select(Partner.id).where(Partner.code == "aurora"))
        assert member_id is not None and aurora is not None
        ledger.earn(session, member_id=member_id, partner_id=aurora, points=5_000, now=now - timedelta(hours=1),
                    expires_at=now + timedelta(days=700))
        rewards.propose_reward(session, supplier="fuel", code="travel-mug", kind="goods", title="Travel mug",
                               points_price=1_200, unit_price_minor=950, stock=10, actor="console:pia",
                               now=now - timedelta(days=1))
        rewards.approve_reward(session, code="travel-mug", actor="console:ada", now=now - timedelta(days=1))
        number = session.scalar(select(Member.member_number).where(Member.id == member_id))
        uow.commit()
    assert number is not None
    return number


def test_rewards_from_proposal_to_fulfilment(page, shots, console_hub, pg_app):
    base_url, _ = console_hub
    member_number = _prepare(pg_app)

    # Paco proposes a car-wash voucher at fuel.
    sign_in(page, base_url, "paco")
    menu(page, "Rewards").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Rewards")
    shots.check("catalog")
    form = page.locator("form", has=page.get_by_role("button", name="Propose the reward"))
    form.locator("select[name=supplier]").select_option("fuel")
    form.locator("input[name=code]").fill("car-wash")
    form.locator("select[name=kind]").select_option("voucher")
    form.locator("input[name=title]").fill("Car wash voucher")
    form.locator("input[name=points_price]").fill("800")
    form.locator("input[name=unit_price]").fill("6.50")
    form.get_by_role("button", name="Propose the reward").click()
    expect(page.get_by_role("status")).to_contain_text("Reward car-wash is proposed")
    expect(page.get_by_test_id("reward-status")).to_have_text("proposed")
    shots.check("proposed")

    # He cannot approve what he proposed: refused on the page, still proposed.
    page.get_by_role("button", name="Approve and list the reward").click()
    expect(page.get_by_role("alert")).to_contain_text("approved by a second person")
    expect(page.get_by_test_id("reward-status")).to_have_text("proposed")
    shots.check("same-approver")
    page.get_by_role("button", name="Log out").click()

    # Pia approves it and uploads the supplier's codes: the page counts them and never shows them.
    sign_in(page, base_url, "pia")
    menu(page, "Rewards").click()
    page.get_by_role("link", name="car-wash").click()
    page.get_by_role("button", name="Approve and list the reward").click()
    expect(page.get_by_role("status")).to_contain_text("approved and listed")
    expect(page.get_by_test_id("reward-approved")).to_contain_text("console:pia")
    page.get_by_role("textbox", name="Voucher codes").fill("\n".join(CODES))
    page.get_by_role("button", name="Upload the codes").click()
    expect(page.get_by_role("status")).to_contain_text("3 voucher codes added to car-wash; 3 left in its pool")
    expect(page.get_by_test_id("reward-left")).to_contain_text("3 voucher codes")
    for code in CODES:
        expect(page.get_by_text(code)).to_have_count(0)
    shots.check("codes-uploaded")
    page.get_by_role("button", name="Log out").click()

    # Customer service orders the voucher for the member (its code shown once), then a mug.
    sign_in(page, base_url, "cass")
    page.goto(f"{base_url}/console/members/{member_number}")
    expect(page.get_by_role("heading", name="Reward orders")).to_be_visible()
    shots.check("member-no-orders")
    section = page.locator("section#reward-orders")
    section.locator("select[name=reward]").select_option("car-wash")
    section.get_by_role("button", name="Order the reward").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text(f"Reward ordered for member {member_number}")
    expect(page.get_by_test_id("voucher-codes")).to_contain_text(re.compile(r"WASH-700[123]"))
    shots.check("voucher-shown-once")
    page.get_by_role("link", name=f"Back to member {member_number}").click()
    expect(page.get_by_text(re.compile(r"WASH-700[123]"))).to_have_count(0)
    section = page.locator("section#reward-orders")
    # With an order listed, the form is folded away behind its summary.
    section.locator("summary", has_text="Order a reward for the member").click()
    section.locator("select[name=reward]").select_option("travel-mug")
    section.locator("input[name=items]").fill("2")
    section.get_by_role("button", name="Order the reward").click()
    expect(page.get_by_test_id("placed-status")).to_contain_text("the points are held until fuel fulfils it")
    page.get_by_role("link", name=f"Back to member {member_number}").click()
    rows = page.locator("section#reward-orders tbody tr")
    expect(rows).to_have_count(2)
    expect(rows.filter(has_text="travel-mug").locator("td[data-label=Status]")).to_have_text("placed")
    expect(rows.filter(has_text="car-wash").locator("td[data-label=Status]")).to_have_text("fulfilled")
    shots.check("member-orders")
    page.get_by_role("button", name="Log out").click()

    # Paco finds the mug's order in Fulfilment, oldest first, and records it fulfilled.
    sign_in(page, base_url, "paco")
    menu(page, "Fulfilment").click()
    row = page.locator("tbody tr", has_text="travel-mug")
    expect(row).to_have_count(1)
    expect(row.locator("td[data-label=Member]")).to_have_text(member_number)
    expect(row.locator("td[data-label=Points]")).to_contain_text("2,400")
    expect(row.locator("td[data-label=Reimbursement]")).to_have_text("19.00 EUR")
    shots.check("fulfilment-queue")
    row.get_by_role("link").first.click()
    page.get_by_label("Note", exact=False).fill("parcel 7731")
    shots.check("order")
    page.get_by_role("button", name="Record fulfilment").click()
    expect(page.get_by_role("status")).to_contain_text("is fulfilled")
    expect(page.get_by_test_id("order-status")).to_have_text("fulfilled")
    shots.check("fulfilled")
    with hub_state(pg_app).unit_of_work() as uow:
        statuses = dict(uow.session.execute(select(RewardOrder.reference, RewardOrder.status)).all())
    assert sorted(statuses.values()) == ["fulfilled", "fulfilled"]
