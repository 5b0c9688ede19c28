"""The console's rewards pages: the catalog for partner managers (propose, approve by a second person, withdraw,
prices, stock, voucher codes counted but never shown), fulfilment on a supplier's behalf, a member's reward orders
for customer service (voucher codes shown once), and the supplier's reward lines on the statement page in words.
Each page answers only its roles, and every refusal is said on the page and changes nothing."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest
from flask import Flask
from sqlalchemy import func, select
from werkzeug.test import TestResponse

from alliance.extensions import HubState, hub_state
from alliance.models import AuditLogEntry, LedgerAccount, RewardOrder, RewardPrice, RewardVoucherCode
from alliance.models.rewards import Reward
from alliance.models.settlement import SettlementStatement
from alliance.services import ledger, rewards
from tests.console_support import ConsoleClient, signed_in, text_of
from tests.factories import make_member, make_partner
from tests.integration.test_rewards import close_day, order, world  # noqa: F401

UTC = timezone.utc
CODES = ("CINE-1001", "CINE-1002", "CINE-1003")


@pytest.fixture()
def shop(app: Flask) -> dict[str, object]:
    """Dated from now (the console's clock): ``alpha`` issued 5,000 points to a member; ``gifts`` supplies a mug
    (3 in stock) and a cinema voucher (two codes), proposed by pam and approved by paul."""
    hub = hub_state(app)
    now = datetime.now(UTC)
    onboarded = now - timedelta(days=10)
    ids = {code: make_partner(hub, now=onboarded, code=code, settlement_cycle="daily", time_zone="UTC",
                              issue_price_per_point=Decimal("0.0100"), redemption_price_per_point=Decimal("0.0080"))
           for code in ("alpha", "gifts")}
    member = make_member(hub, now=onboarded)
    other = make_member(hub, now=onboarded)
    with hub.unit_of_work() as uow:
        for enrolled in (member, other):
            ledger.earn(uow.session, member_id=enrolled.member_id, partner_id=ids["alpha"], points=5_000,
                        now=now - timedelta(days=1), expires_at=now + timedelta(days=700))
        for code, kind, stock, points_price, unit in (("mug", "goods", 3, 1_200, 950),
                                                      ("cinema", "voucher", None, 800, 700)):
            rewards.propose_reward(uow.session, supplier="gifts", code=code, kind=kind, title=code.title(),
                                   points_price=points_price, unit_price_minor=unit, stock=stock,
                                   actor="console:pam", now=onboarded)
            rewards.approve_reward(uow.session, code=code, actor="console:paul", now=onboarded)
        rewards.upload_voucher_codes(uow.session, code="cinema", codes=["CINE-0001", "CINE-0002"],
                                     key_ring=hub.key_ring, actor="console:pam", now=onboarded)
        uow.commit()
    return {"member": member.member_number, "member_id": member.member_id, "other": other.member_number,
            "other_id": other.member_id, **ids}


def follow(browser: ConsoleClient, response: TestResponse) -> str:
    """The text of the page a POST redirected to (where its message is shown)."""
    assert response.status_code == 303, response.get_data(as_text=True)
    return text_of(browser.get(response.headers["Location"]))


def audit_count(hub: HubState) -> int:
    with hub.unit_of_work() as uow:
        return uow.session.scalar(select(func.count()).select_from(AuditLogEntry)) or 0


def reward_row(hub: HubState, code: str) -> tuple[str, int | None, int]:
    """(status, stock, prices) of a reward as stored."""
    with hub.unit_of_work() as uow:
        reward = uow.session.scalars(select(Reward).where(Reward.code == code)).one()
        prices = uow.session.scalar(select(func.count()).select_from(RewardPrice)
                                    .where(RewardPrice.reward_id == reward.id)) or 0
        return reward.status, reward.stock, prices


def order_statuses(hub: HubState) -> dict[str, str]:
    with hub.unit_of_work() as uow:
        return dict(uow.session.execute(select(RewardOrder.reference, RewardOrder.status)).all())


def available(hub: HubState, member_id: int) -> int:
    with hub.unit_of_work() as uow:
        return uow.session.scalar(select(LedgerAccount.balance_points).where(
            LedgerAccount.member_id == member_id, LedgerAccount.kind == "member_available")) or 0


def test_each_page_answers_only_its_roles(app, shop):
    finance = signed_in(app, "fiona", "finance")
    service = signed_in(app, "cass", "customer_service")
    manager = signed_in(app, "pam", "partner_manager")
    member_orders = f"/console/members/{shop['member']}/reward-orders"
    for browser, path in ((finance, "/console/rewards"), (finance, "/console/reward-orders"),
                          (service, "/console/rewards"), (service, "/console/rewards/mug"),
                          (service, "/console/reward-orders"), (manager, f"/console/members/{shop['member']}")):
        refused = browser.get(path)
        assert refused.status_code == 403, path
    before = audit_count(hub_state(app))
    assert service.post("/console/rewards/mug/stock", {"items": "5"}).status_code == 403
    assert manager.post(member_orders, {"reward": "mug", "items": "1", "reference": "X-1"}).status_code == 403
    assert finance.post("/console/rewards", {"supplier": "gifts"}).status_code == 403
    assert audit_count(hub_state(app)) == before and order_statuses(hub_state(app)) == {}
    anonymous = ConsoleClient(app).get("/console/rewards")
    assert anonymous.status_code == 302 and "/console/login" in anonymous.headers["Location"]
    assert "Rewards" in text_of(manager.get("/console/")) and "Fulfilment" in text_of(manager.get("/console/"))
    admin = signed_in(app, "ada", "admin")
    for path in ("/console/rewards", "/console/reward-orders", "/console/rewards/cinema",
                 f"/console/members/{shop['member']}"):
        assert admin.get(path).status_code == 200, path


def test_the_catalog_lists_filters_and_sorts(app, shop):
    manager = signed_in(app, "pam", "partner_manager")
    listed = text_of(manager.get("/console/rewards"))
    assert "Rewards (2)" in listed and "digital voucher" in listed and "2 codes" in listed and "3 items" in listed
    assert "1,200" in listed and "9.50 EUR" in listed
    page = manager.get("/console/rewards", sort="price", order="desc").get_data(as_text=True)
    assert page.index("/console/rewards/mug") < page.index("/console/rewards/cinema")
    page = manager.get("/console/rewards", sort="price").get_data(as_text=True)
    assert page.index("/console/rewards/cinema") < page.index("/console/rewards/mug")
    assert "No reward matches" in text_of(manager.get("/console/rewards", status="withdrawn"))
    assert "Rewards listed supplied by gifts (2)" in text_of(manager.get("/console/rewards", status="listed",
                                                                          supplier="gifts"))
    assert manager.get("/console/rewards", status="sold").status_code == 400
    assert manager.get("/console/rewards", supplier="nobody").status_code == 400
    assert manager.get("/console/rewards", sort="colour").status_code == 400
    assert manager.get("/console/rewards/teapot").status_code == 404


def test_a_reward_is_proposed_approved_by_another_person_priced_stocked_and_withdrawn(app, shop):
    hub = hub_state(app)
    pam = signed_in(app, "pam", "partner_manager")
    paul = signed_in(app, "paul", "partner_manager")
    proposal = {"supplier": "gifts", "code": "kettle", "kind": "goods", "title": "Kettle", "points_price": "2,000",
                "unit_price": "12.50", "stock": "2", "per_member_limit": "1", "min_tier": "silver",
                "fulfilment_days": "5", "return_days": ""}
    # Refusals first: a bad code and a reimbursement that is not money; nothing is proposed.
    before = audit_count(hub)
    shown = follow(pam, pam.post("/console/rewards", {**proposal, "code": "Bad Code"}))
    assert "Invalid input: code must be 2-40 lower-case letters" in shown
    shown = follow(pam, pam.post("/console/rewards", {**proposal, "unit_price": "twelve"}))
    assert "Invalid input: The reimbursement per item in EUR" in shown
    assert pam.post("/console/rewards", {**proposal, "kind": "pony"}).status_code == 400
    assert audit_count(hub) == before
    with hub.unit_of_work() as uow:
        assert uow.session.scalar(select(Reward.id).where(Reward.code == "kettle")) is None

    shown = follow(pam, pam.post("/console/rewards", proposal))
    assert "Reward kettle is proposed" in shown and "Status proposed" in shown
    assert "12.50 EUR an item" in shown and "2 items in stock" in shown and "silver members and above" in shown
    assert "at most 1 items a member" in shown and "returnable for 14 days" in shown
    assert "not yet: another person than console:pam approves it" in shown
    # The proposer cannot approve it: said on the page, still proposed.
    before = audit_count(hub)
    shown = follow(pam, pam.post("/console/rewards/kettle/approval"))
    assert "Conflict: a reward is approved by a second person, not by whoever proposed it" in shown
    assert reward_row(hub, "kettle")[0] == "proposed" and audit_count(hub) == before
    shown = follow(paul, paul.post("/console/rewards/kettle/approval"))
    assert "Reward kettle is approved and listed" in shown and "by console:paul" in shown
    assert reward_row(hub, "kettle")[0] == "listed"
    assert "Approve and list" not in shown

    # A price in the past is refused; one in the future is listed as scheduled beside the one in force.
    local = datetime.now(UTC)
    shown = follow(paul, paul.post("/console/rewards/kettle/prices", {
        "points_price": "1800", "unit_price": "11.00", "effective_from": (local - timedelta(days=1)).strftime(
            "%Y-%m-%dT%H:%M")}))
    assert "Invalid input: a new price takes effect in the future" in shown and reward_row(hub, "kettle")[2] == 1
    shown = follow(paul, paul.post("/console/rewards/kettle/prices", {
        "points_price": "1800", "unit_price": "11.00", "effective_from": (local + timedelta(days=3)).strftime(
            "%Y-%m-%dT%H:%M")}))
    assert "A new price of kettle is scheduled" in shown and reward_row(hub, "kettle")[2] == 2
    assert re.search(r"2,000 points? 12.50 EUR .* in force .* 1,800 points? 11.00 EUR .* scheduled", shown)

    # Stock: added to goods; refused for nonsense and for a voucher.
    shown = follow(paul, paul.post("/console/rewards/kettle/stock", {"items": "3"}))
    assert "Stock of kettle is now 5 items" in shown and reward_row(hub, "kettle")[1] == 5
    assert paul.post("/console/rewards/kettle/stock", {"items": "three"}).status_code == 400
    before = audit_count(hub)
    shown = follow(paul, paul.post("/console/rewards/cinema/stock", {"items": "3"}))
    assert "Invalid input: a voucher has no stock to add to" in shown and audit_count(hub) == before

    # Withdrawal needs the box ticked and a reason.
    refused = paul.post("/console/rewards/kettle/withdrawal", {"reason": "Supplier stopped the line"})
    assert refused.status_code == 400 and "Tick the box" in text_of(refused)
    assert reward_row(hub, "kettle")[0] == "listed"
    shown = follow(paul, paul.post("/console/rewards/kettle/withdrawal", {"reason": "Supplier stopped the line",
                                                                          "confirm": "yes"}))
    assert "Reward kettle is withdrawn" in shown and "Supplier stopped the line" in shown
    assert reward_row(hub, "kettle")[0] == "withdrawn" and "Withdraw the reward" not in shown
    with hub.unit_of_work() as uow:
        actions = [(entry.actor, entry.action) for entry in uow.session.scalars(
            select(AuditLogEntry).where(AuditLogEntry.subject == "reward:kettle").order_by(AuditLogEntry.sequence))]
    assert actions == [("console:pam", "reward.propose"), ("console:paul", "reward.approve"),
                       ("console:paul", "reward.price"), ("console:paul", "reward.stock"),
                       ("console:paul", "reward.withdraw")]


def test_voucher_codes_are_counted_never_shown_and_a_repeated_code_refuses_the_upload(app, shop):
    hub = hub_state(app)
    manager = signed_in(app, "pam", "partner_manager")
    response = manager.post("/console/rewards/cinema/voucher-codes", {"codes": "\n".join(CODES) + "\n\n"})
    shown = follow(manager, response)
    assert "3 voucher codes added to cinema; 5 left in its pool" in shown and "5 voucher codes in the pool" in shown
    assert not any(code in shown for code in CODES)
    before = audit_count(hub)
    shown = follow(manager, manager.post("/console/rewards/cinema/voucher-codes",
                                         {"codes": "CINE-2001\nCINE-1002"}))
    assert "Conflict: line(s) 2 hold codes already in the pool of cinema; nothing was added" in shown
    assert "CINE-2001" not in shown and "5 voucher codes in the pool" in shown
    shown = follow(manager, manager.post("/console/rewards/mug/voucher-codes", {"codes": "MUG-0001"}))
    assert "Invalid input: reward mug is not a voucher" in shown
    assert manager.post("/console/rewards/cinema/voucher-codes", {"codes": " \n "}).status_code == 400
    with hub.unit_of_work() as uow:
        assert uow.session.scalar(select(func.count()).select_from(RewardVoucherCode)) == 5
    assert audit_count(hub) == before


def test_customer_service_orders_for_a_member_sees_voucher_codes_once_cancels_and_returns(app, shop):
    hub = hub_state(app)
    service = signed_in(app, "cass", "customer_service")
    member_page = f"/console/members/{shop['member']}"
    page = service.get(member_page)
    shown = text_of(page)
    assert "Reward orders" in shown and "No reward ordered for this member" in shown
    reference = re.search(r'name="reference" required maxlength="64" value="(CS-[0-9A-F]{12})"',
                          page.get_data(as_text=True))
    assert reference is not None

    # A voucher: fulfilled at once, its code on the page answering the order, and never again.
    placed = service.post(f"{member_page}/reward-orders", {"reward": "cinema", "items": "1",
                                                           "reference": reference.group(1)})
    assert placed.status_code == 200
    shown = text_of(placed)
    assert "Shown only this once" in shown and "Status fulfilled" in shown
    [code] = [value for value in ("CINE-0001", "CINE-0002") if value in shown]
    again = follow(service, service.post(f"{member_page}/reward-orders", {"reward": "cinema", "items": "1",
                                                                          "reference": reference.group(1)}))
    assert "was already placed (fulfilled); nothing new was ordered" in again and code not in again
    assert code not in text_of(service.get(member_page))
    assert available(hub, shop["member_id"]) == 4_200

    # Goods: placed, its points held; refusals are said and change nothing.
    before = (audit_count(hub), available(hub, shop["member_id"]))
    shown = follow(service, service.post(f"{member_page}/reward-orders", {"reward": "mug", "items": "4",
                                                                          "reference": "CS-MUG-1"}))
    assert "Conflict: mug has fewer than 4 item(s) left" in shown
    shown = follow(service, service.post(f"{member_page}/reward-orders", {"reward": "teapot", "items": "1",
                                                                          "reference": "CS-MUG-1"}))
    assert "Not found: no reward 'teapot'" in shown
    assert service.post(f"{member_page}/reward-orders", {"reward": "mug", "items": "one",
                                                         "reference": "CS-MUG-1"}).status_code == 400
    assert (audit_count(hub), available(hub, shop["member_id"])) == before
    assert set(order_statuses(hub)) == {reference.group(1)}
    placed = service.post(f"{member_page}/reward-orders", {"reward": "mug", "items": "1", "reference": "CS-MUG-1"})
    assert placed.status_code == 200 and "the points are held until gifts fulfils it" in text_of(placed)
    shown = text_of(service.get(member_page))
    assert re.search(r"CS-MUG-1 placed mug from gifts 1 1,200 points?", shown)
    assert available(hub, shop["member_id"]) == 3_000

    # Cancelling needs the box ticked; an order of another member is not found through this member's page.
    cancel = f"{member_page}/reward-orders/cancellation/back-office/CS-MUG-1"
    assert service.post(cancel, {"reason": "changed their mind"}).status_code == 400
    other_cancel = f"/console/members/{shop['other']}/reward-orders/cancellation/back-office/CS-MUG-1"
    shown = follow(service, service.post(other_cancel, {"reason": "wrong member", "confirm": "yes"}))
    assert f"Not found: member {shop['other']} has no reward order 'CS-MUG-1'" in shown
    assert order_statuses(hub)["CS-MUG-1"] == "placed"
    shown = follow(service, service.post(cancel, {"reason": "changed their mind", "confirm": "yes"}))
    assert "Order CS-MUG-1 is cancelled" in shown and available(hub, shop["member_id"]) == 4_200

    # A cancelled order cannot be returned; the voucher, within its window, can.
    shown = follow(service, service.post(f"{member_page}/reward-orders/return/back-office/CS-MUG-1",
                                         {"reason": "no", "confirm": "yes"}))
    assert "Invalid state: order CS-MUG-1 is cancelled; only a fulfilled order can be returned" in shown
    shown = follow(service, service.post(f"{member_page}/reward-orders/return/back-office/{reference.group(1)}",
                                         {"reason": "code did not work", "confirm": "yes"}))
    assert f"Order {reference.group(1)} is returned" in shown and available(hub, shop["member_id"]) == 5_000
    assert order_statuses(hub) == {reference.group(1): "returned", "CS-MUG-1": "cancelled"}


def test_a_partner_manager_follows_orders_and_records_fulfilment_or_failure(app, shop):
    hub = hub_state(app)
    manager = signed_in(app, "pam", "partner_manager")
    now = datetime.now(UTC)
    with hub.unit_of_work() as uow:
        for minutes, reference, member_id in ((30, "OLD-1", shop["member_id"]), (10, "NEW-1", shop["other_id"])):
            rewards.place_order(uow.session, reward_code="mug", member_id=member_id, items=1,
                                channel=rewards.BACK_OFFICE_CHANNEL, reference=reference, actor="console:cass",
                                key_ring=hub.key_ring, now=now - timedelta(minutes=minutes))
        uow.commit()
    listed = manager.get("/console/reward-orders")
    shown = text_of(listed)
    assert "Orders placed (2)" in shown and "oldest first" in shown and shop["member"] in shown
    assert "9.50 EUR" in shown and "1,200" in shown
    assert listed.get_data(as_text=True).index("OLD-1") < listed.get_data(as_text=True).index("NEW-1")
    newest = manager.get("/console/reward-orders", sort="placed", order="desc").get_data(as_text=True)
    assert newest.index("NEW-1") < newest.index("OLD-1")
    assert "No order is fulfilled" in text_of(manager.get("/console/reward-orders", status="fulfilled"))
    chosen = manager.get("/console/reward-orders", status="all", supplier="gifts", reward="mug")
    assert "Orders supplied by gifts of mug (2)" in text_of(chosen)
    assert "1–2 of 2" in text_of(manager.get("/console/reward-orders", page_size=10))
    assert manager.get("/console/reward-orders", status="lost").status_code == 400
    assert manager.get("/console/reward-orders", reward="teapot").status_code == 400

    order_page = text_of(manager.get("/console/reward-orders/back-office/OLD-1"))
    assert "Fulfil by" in order_page and "Record fulfilment" in order_page and "9.50 EUR (1 × 9.50 EUR)" in order_page
    shown = follow(manager, manager.post("/console/reward-orders/fulfilment/back-office/OLD-1",
                                         {"note": "parcel 7731"}))
    assert "Order OLD-1 is fulfilled" in shown and "parcel 7731" in shown and "Returnable until" in shown
    # Failure needs the box ticked; an order already fulfilled cannot fail.
    assert manager.post("/console/reward-orders/failure/back-office/NEW-1", {"reason": "broken"}).status_code == 400
    before = audit_count(hub)
    shown = follow(manager, manager.post("/console/reward-orders/failure/back-office/OLD-1",
                                         {"reason": "broken", "confirm": "yes"}))
    assert "Invalid state: order OLD-1 is fulfilled; it cannot be failed" in shown and audit_count(hub) == before
    shown = follow(manager, manager.post("/console/reward-orders/failure/back-office/NEW-1",
                                         {"reason": "broken in the warehouse", "confirm": "yes"}))
    assert "Order NEW-1 is failed" in shown and "broken in the warehouse" in shown
    assert order_statuses(hub) == {"OLD-1": "fulfilled", "NEW-1": "failed"}
    assert available(hub, shop["other_id"]) == 5_000
    shown = follow(manager, manager.post("/console/reward-orders/fulfilment/back-office/NOPE", {}))
    assert "Not found: no reward order 'NOPE'" in shown
    reward_page = text_of(manager.get("/console/rewards/mug"))
    assert re.search(r"fulfilled 1 1 1,200 points? failed 1 1 1,200 points?", reward_page)


def test_the_statement_page_names_the_reward_lines_in_words(app, request):
    hub = hub_state(app)
    made = request.getfixturevalue("world")
    order(hub, made, "mug", "ORD-1", items=2)
    with hub.unit_of_work() as uow:
        rewards.fulfil_order(uow.session, channel=rewards.BACK_OFFICE_CHANNEL, reference="ORD-1",
                             supplier_id=None, note=None, actor="console:pam",
                             now=datetime(2026, 11, 2, 9, 0, tzinfo=UTC))
        uow.commit()
    close_day(hub, made["gifts"], "gifts")
    with hub.unit_of_work() as uow:
        statement_id = uow.session.scalar(select(SettlementStatement.id).where(
            SettlementStatement.partner_id == made["gifts"]))
    finance = signed_in(app, "fiona", "finance")
    shown = text_of(finance.get(f"/console/finance/statements/{statement_id}"))
    assert re.search(r"Rewards supplied \(mug\) 2,400 points 2 items mug -19.00 EUR", shown), shown
