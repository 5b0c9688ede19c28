"""Rewards through the signed partner API: a member orders at one partner's desk with points earned at
another, the supplier fulfils through its own signed call, exactly once under retries; refusals are
problem+json and leave the books as they were; a hub that dies after the capture keeps nothing."""

from __future__ import annotations

from datetime import datetime, timezone
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy import func, select

from alliance.extensions import HubState, hub_state
from alliance.models import RedemptionCode, RewardOrder, RewardVoucherCode
from alliance.models.rewards import Reward
from alliance.services import rewards
from alliance.services.member_verification import issue_redemption_code
from partners_sdk import AllianceClient, InsufficientPointsError, MemberVerificationError, NotFoundError
from tests.factories import make_member_with_pin, make_signing_partner
from tests.http_server import assert_books_unchanged, balances, books, fund_member, wall_clock_partner_time
from tests.partner_client import SignedTestClient
from tests.sdk_support import serve_in_thread

REWARDS = "/partner/v1/rewards"
ORDERS = "/partner/v1/reward-orders"
PIN = "2468"
PROBLEM = "application/problem+json"


@pytest.fixture
def desk(app):  # type: ignore[no-untyped-def]
    """``alpha`` issued the member 3,000 points; ``desk`` orders for the member; ``gifts`` and ``toys`` supply."""
    return _world(app)


def _world(app):  # type: ignore[no-untyped-def]
    hub = hub_state(app)
    created = wall_clock_partner_time()
    signing = {code: make_signing_partner(hub, now=created, code=code) for code in ("alpha", "desk", "gifts", "toys")}
    member = make_member_with_pin(hub, now=created, pin=PIN)
    fund_member(hub, member_id=member.member_id, partner_id=signing["alpha"].partner_id, points=3_000)
    with hub.unit_of_work() as uow:
        for code, supplier, kind, stock, points_price in (("mug", "gifts", "goods", 3, 1_200),
                                                          ("cinema", "gifts", "voucher", None, 800),
                                                          ("kite", "toys", "goods", 5, 500)):
            rewards.propose_reward(uow.session, supplier=supplier, code=code, kind=kind, title=code.title(),
                                   points_price=points_price, unit_price_minor=points_price - 200, stock=stock,
                                   actor="console:pam", now=created)
            rewards.approve_reward(uow.session, code=code, actor="console:paul", now=created)
        rewards.upload_voucher_codes(uow.session, code="cinema", codes=["CINE-0001", "CINE-0002"],
                                     key_ring=hub.key_ring, actor="console:pam", now=created)
        uow.commit()
    return SimpleNamespace(app=app, hub=hub, member=member, partners=signing,
                           **{code: SignedTestClient(app, partner) for code, partner in signing.items()})


def _order(world: Any, reference: str, reward: str = "mug", items: int = 1, *, key: str | None = None,
           **proof: Any) -> Any:
    proof = proof or {"card_number": world.member.card_number, "pin": PIN}
    return world.desk.post(ORDERS, {"reference": reference, "reward": reward, "items": items, **proof},
                           idempotency_key=key)


def _rewards_state(hub: HubState) -> dict[str, Any]:
    """What a reward request could change outside the ledger: orders, stock, vouchers handed out."""
    with hub.unit_of_work() as uow:
        session = uow.session
        return {
            "orders": sorted(session.execute(select(RewardOrder.reference, RewardOrder.status)).all()),
            "stock": sorted(session.execute(select(Reward.code, Reward.stock)).all()),
            "vouchers_assigned": len(session.scalars(select(RewardVoucherCode.id)
                                                     .where(RewardVoucherCode.order_id.is_not(None))).all()),
        }


def _refused(reply: Any, status: int, code: str) -> None:
    assert (reply.status, reply.body["code"]) == (status, code), reply.body
    assert reply.headers["Content-Type"].startswith(PROBLEM)


def test_an_order_at_the_desk_is_fulfilled_by_its_supplier_exactly_once_under_retries(desk):
    catalog = desk.desk.get(REWARDS)
    assert catalog.status == 200
    assert [(item["code"], item["supplier"], item["points_price"], item["stock"], item["vouchers_left"])
            for item in catalog.body["rewards"]] == [
        ("cinema", "gifts", 800, None, 2), ("kite", "toys", 500, 5, None), ("mug", "gifts", 1_200, 3, None)]

    placed = _order(desk, "ORD-1", key="order-1")
    assert placed.status == 201
    assert {name: placed.body[name] for name in ("channel", "reference", "reward", "supplier", "items", "points",
                                                 "status", "amount_minor")} == {
        "channel": "desk", "reference": "ORD-1", "reward": "mug", "supplier": "gifts", "items": 1, "points": 1_200,
        "status": "placed", "amount_minor": None}  # the supplier's reimbursement is not the desk's business
    assert balances(desk.hub, desk.member.member_id) == {"available": 1_800, "pending": 0, "held": 1_200}

    # The same Idempotency-Key replays the stored reply; a new key with the reference finds the order (200).
    before, state = books(desk.hub), _rewards_state(desk.hub)
    replay = _order(desk, "ORD-1", key="order-1")
    assert (replay.status, replay.body, replay.headers["Idempotent-Replayed"]) == (201, placed.body, "true")
    again = _order(desk, "ORD-1")
    assert (again.status, again.body["status"], again.headers["Idempotent-Replayed"]) == (200, "placed", "false")
    assert_books_unchanged(desk.hub, before)
    assert _rewards_state(desk.hub) == state

    # The supplier sees what it must fulfil, with its money; another supplier does not see it.
    to_fulfil = desk.gifts.get(f"{ORDERS}?status=placed")
    assert [(order["channel"], order["reference"], order["amount_minor"]) for order in to_fulfil.body["orders"]] == [
        ("desk", "ORD-1", 1_000)]
    assert desk.toys.get(f"{ORDERS}?status=placed").body["orders"] == []
    _refused(desk.toys.get(f"{ORDERS}/desk/ORD-1"), 404, "not_found")
    _refused(desk.toys.post(f"{ORDERS}/desk/ORD-1/fulfilment", {}), 404, "not_found")
    assert_books_unchanged(desk.hub, before)

    fulfilled = desk.gifts.post(f"{ORDERS}/desk/ORD-1/fulfilment", {"note": "parcel 7731"}, idempotency_key="ful-1")
    assert (fulfilled.status, fulfilled.body["status"], fulfilled.body["fulfilment_note"]) == (
        200, "fulfilled", "parcel 7731")
    assert balances(desk.hub, desk.member.member_id) == {"available": 1_800, "pending": 0, "held": 0}
    after = books(desk.hub)
    assert desk.gifts.post(f"{ORDERS}/desk/ORD-1/fulfilment", {"note": "parcel 7731"},
                           idempotency_key="ful-1").body == fulfilled.body
    retried = desk.gifts.post(f"{ORDERS}/desk/ORD-1/fulfilment", {})
    assert (retried.status, retried.body["status"], retried.body["fulfilled_at"]) == (
        200, "fulfilled", fulfilled.body["fulfilled_at"])
    _refused(desk.gifts.post(f"{ORDERS}/desk/ORD-1/failure", {"reason": "lost"}), 409, "invalid_state")
    assert_books_unchanged(desk.hub, after)
    assert desk.gifts.get(f"{ORDERS}/desk/ORD-1").body == fulfilled.body

    # Returned in the window: every point comes back, once.
    returned = desk.gifts.post(f"{ORDERS}/desk/ORD-1/return", {"reason": "broken handle"})
    assert (returned.status, returned.body["status"]) == (200, "returned")
    assert balances(desk.hub, desk.member.member_id) == {"available": 3_000, "pending": 0, "held": 0}


def test_a_voucher_order_hands_out_its_codes_once_and_a_code_proves_the_member(desk):
    with desk.hub.unit_of_work() as uow:
        code, _ = issue_redemption_code(uow.session, member_id=desk.member.member_id, now=datetime.now(timezone.utc))
        uow.commit()
    placed = _order(desk, "V-1", reward="cinema", card_number=desk.member.card_number, redemption_code=code)
    assert (placed.status, placed.body["status"], placed.body["voucher_codes"]) == (201, "fulfilled", ["CINE-0001"])
    found = _order(desk, "V-1", reward="cinema")
    assert found.status == 200 and "voucher_codes" not in found.body
    # Asked again with another one-time code under a new key: the order is found and that code stays unused.
    with desk.hub.unit_of_work() as uow:
        second, _ = issue_redemption_code(uow.session, member_id=desk.member.member_id,
                                          now=datetime.now(timezone.utc))
        uow.commit()
    again = _order(desk, "V-1", reward="cinema", card_number=desk.member.card_number, redemption_code=second)
    assert again.status == 200 and "voucher_codes" not in again.body
    with desk.hub.unit_of_work() as uow:
        assert uow.session.scalar(select(func.count()).select_from(RedemptionCode)
                                  .where(RedemptionCode.used_at.is_not(None))) == 1
    assert balances(desk.hub, desk.member.member_id)["available"] == 2_200


def test_refusals_are_problem_json_and_leave_the_books_and_the_catalog_unchanged(desk):
    before, state = books(desk.hub), _rewards_state(desk.hub)
    _refused(_order(desk, "R-1", card_number=desk.member.card_number, pin="0000"), 403, "member_not_verified")
    _refused(_order(desk, "R-2", reward="yacht"), 404, "not_found")
    _refused(_order(desk, "R-3", items=3), 422, "insufficient_points")
    _refused(_order(desk, "R-4", items=4), 409, "out_of_stock")
    _refused(_order(desk, "R-5", card_number=desk.member.card_number), 422, "validation_failed")
    _refused(desk.gifts.post(f"{ORDERS}/desk/NOPE/fulfilment", {}), 404, "not_found")
    assert_books_unchanged(desk.hub, before)
    assert _rewards_state(desk.hub) == state


def test_a_hub_that_dies_after_the_capture_keeps_nothing_and_the_retry_fulfils_once(desk, monkeypatch):
    assert _order(desk, "ORD-C").status == 201
    before, state = books(desk.hub), _rewards_state(desk.hub)
    audit = rewards._audit_order

    def crash(*arguments: Any, **keywords: Any) -> None:
        # Called inside the transaction, after ledger.capture_reward_hold wrote the capture.
        raise RuntimeError("the hub dies before the commit")
    monkeypatch.setattr(rewards, "_audit_order", crash)
    died = desk.gifts.post(f"{ORDERS}/desk/ORD-C/fulfilment", {"note": "n"}, idempotency_key="ful-c")
    assert died.status == 500 and died.headers["Content-Type"].startswith(PROBLEM)
    assert_books_unchanged(desk.hub, before)
    assert _rewards_state(desk.hub) == state

    monkeypatch.setattr(rewards, "_audit_order", audit)
    retried = desk.gifts.post(f"{ORDERS}/desk/ORD-C/fulfilment", {"note": "n"}, idempotency_key="ful-c")
    assert (retried.status, retried.body["status"], retried.headers["Idempotent-Replayed"]) == (
        200, "fulfilled", "false")
    assert balances(desk.hub, desk.member.member_id) == {"available": 1_800, "pending": 0, "held": 0}
    after = books(desk.hub)
    assert after["journal_transactions"] == before["journal_transactions"] + 1
    assert desk.gifts.post(f"{ORDERS}/desk/ORD-C/fulfilment", {"note": "n"}, idempotency_key="ful-c").body == \
        retried.body
    assert_books_unchanged(desk.hub, after)


@pytest.mark.postgresql
def test_the_sdk_orders_at_the_desk_and_the_supplier_fulfils_over_http(pg_app):
    world = _world(pg_app)
    with serve_in_thread(pg_app) as base_url:
        def client(code: str) -> AllianceClient:
            partner = world.partners[code]
            return AllianceClient(base_url, partner.key_id, partner.private_key, timeout_s=10)
        desk, gifts = client("desk"), client("gifts")
        assert [reward.code for reward in desk.list_rewards()] == ["cinema", "kite", "mug"]
        order = desk.order_reward("S-1", "mug", 1, world.member.card_number, pin=PIN)
        assert (order.status, order.points, order.already_ordered) == ("placed", 1_200, False)
        assert desk.order_reward("S-1", "mug", 1, world.member.card_number, pin=PIN).already_ordered
        voucher = desk.order_reward("S-2", "cinema", 1, world.member.card_number, pin=PIN)
        assert voucher.voucher_codes == ("CINE-0001",)
        assert [(placed.reference, placed.amount_minor) for placed in gifts.reward_orders(status="placed")] == [
            ("S-1", 1_000)]
        fulfilled = gifts.fulfil_reward_order("desk", "S-1", note="parcel 1")
        assert (fulfilled.status, fulfilled.fulfilment_note) == ("fulfilled", "parcel 1")
        assert gifts.return_reward_order("desk", "S-1", "changed mind").status == "returned"
        with pytest.raises(MemberVerificationError):
            desk.order_reward("S-3", "kite", 1, world.member.card_number, pin="0000")
        with pytest.raises(InsufficientPointsError):
            desk.order_reward("S-4", "kite", 5, world.member.card_number, pin=PIN)
        with pytest.raises(NotFoundError):
            client("toys").fulfil_reward_order("desk", "S-2")
        assert balances(world.hub, world.member.member_id) == {"available": 2_200, "pending": 0, "held": 0}
