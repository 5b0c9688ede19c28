"""The rewards catalog and its orders at the service: points earned at one partner spent on a reward
another supplies, held, captured on fulfilment or released, returned in the window, voucher codes
taken from the pool once, every step idempotent, and the supplier reimbursed per item on its statement."""

from __future__ import annotations

import json
from datetime import datetime, time, timedelta, timezone
from decimal import Decimal

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import func, select

from alliance.domain.errors import Conflict, InsufficientPoints, InvalidState, NotFound, ValidationFailed
from alliance.extensions import HubState
from alliance.models import AuditLogEntry, LedgerAccount, RewardVoucherCode, SettlementStatement
from alliance.services import ledger, rewards
from settlement.closing import close_cycle, lot_traces
from settlement.cycles import cycle_containing
from settlement.keys import load_statement_private_key, private_key_pem, statement_key_id
from tests.factories import make_member, make_partner
from tests.http_server import assert_audit_green, assert_books_unchanged, books

UTC = timezone.utc
ONBOARDED_AT = datetime(2026, 11, 1, 8, 0, tzinfo=UTC)
DAY = datetime(2026, 11, 2, tzinfo=UTC)
FAR_EXPIRY = datetime(2028, 12, 31, tzinfo=UTC)
PROPOSER, APPROVER = "console:pam", "console:paul"


def at(hour: int, minute: int = 0, *, days: int = 0) -> datetime:
    return DAY.replace(hour=hour, minute=minute) + timedelta(days=days)


@pytest.fixture()
def world(hub: HubState) -> dict[str, int]:
    """``alpha`` issues 5,000 points to a member; ``gifts`` supplies goods and vouchers, ``telco`` bill credit."""
    ids = {code: make_partner(hub, now=ONBOARDED_AT, code=code, settlement_cycle="daily", time_zone="UTC",
                              issue_price_per_point=Decimal("0.0100"), redemption_price_per_point=Decimal("0.0080"))
           for code in ("alpha", "gifts", "telco")}
    member = make_member(hub, now=ONBOARDED_AT)
    with hub.unit_of_work() as uow:
        ledger.earn(uow.session, member_id=member.member_id, partner_id=ids["alpha"], points=5_000,
                    now=ONBOARDED_AT + timedelta(hours=1), expires_at=FAR_EXPIRY)
        for code, supplier, kind, stock, points_price, unit in (
                ("mug", "gifts", "goods", 3, 1_200, 950), ("cinema", "gifts", "voucher", None, 800, 700),
                ("phone-bill", "telco", "bill_credit", None, 100, 100)):
            rewards.propose_reward(uow.session, supplier=supplier, code=code, kind=kind, title=code.title(),
                                   points_price=points_price, unit_price_minor=unit, stock=stock, actor=PROPOSER,
                                   now=ONBOARDED_AT, return_days=0 if kind == "bill_credit" else 14)
            rewards.approve_reward(uow.session, code=code, actor=APPROVER, now=ONBOARDED_AT)
        rewards.upload_voucher_codes(uow.session, code="cinema", codes=["CINE-0001", "CINE-0002"],
                                     key_ring=hub.key_ring, actor=PROPOSER, now=ONBOARDED_AT)
        uow.commit()
    return {**ids, "member": member.member_id}


def order(hub: HubState, world: dict[str, int], reward: str, reference: str, *, items: int = 1,
          now: datetime = DAY) -> rewards.PlacedOrder:
    with hub.unit_of_work() as uow:
        placed = rewards.place_order(uow.session, reward_code=reward, member_id=world["member"], items=items,
                                     channel=rewards.BACK_OFFICE_CHANNEL, reference=reference,
                                     actor="console:cass", key_ring=hub.key_ring, now=now)
        uow.commit()
    return placed


def step(hub: HubState, operation, reference: str, **arguments):  # type: ignore[no-untyped-def]
    with hub.unit_of_work() as uow:
        result = operation(uow.session, channel=rewards.BACK_OFFICE_CHANNEL, reference=reference,
                           actor="console:cass", **arguments)
        uow.commit()
    return result


def balances(hub: HubState, member_id: int) -> dict[str, int]:
    with hub.unit_of_work() as uow:
        return {kind.removeprefix("member_"): points for kind, points in uow.session.execute(
            select(LedgerAccount.kind, LedgerAccount.balance_points).where(LedgerAccount.member_id == member_id))}


def close_day(hub: HubState, partner_id: int, code: str, day: datetime = DAY) -> dict:  # type: ignore[type-arg]
    key = load_statement_private_key(private_key_pem(Ed25519PrivateKey.generate()))
    cycle = cycle_containing(day, partner_code=code, frequency="daily", time_zone="UTC", cutoff_local=time(0, 0))
    with hub.unit_of_work() as uow:
        closed = close_cycle(uow.session, partner_id=partner_id, cycle=cycle, now=day + timedelta(days=1, hours=1),
                             signing_key=key, key_id=statement_key_id(key.public_key()), payment_terms_days=14)
        uow.commit()
    return json.loads(closed.document_json)


def test_an_order_holds_points_until_the_supplier_fulfils_it_and_the_supplier_is_reimbursed_per_item(hub, world):
    placed = order(hub, world, "mug", "ORD-1", items=2)
    assert (placed.order.status, placed.order.points, placed.order.amount_minor) == ("placed", 2_400, 1_900)
    assert balances(hub, world["member"]) == {"available": 2_600, "pending": 0, "held": 2_400}
    with hub.unit_of_work() as uow:
        assert rewards.reward_view(uow.session, "mug", now=DAY).stock == 1
    fulfilled = step(hub, rewards.fulfil_order, "ORD-1", supplier_id=world["gifts"], note="parcel 7731", now=at(9))
    assert (fulfilled.status, fulfilled.fulfilment_note) == ("fulfilled", "parcel 7731")
    assert fulfilled.returnable_until == at(9) + timedelta(days=14)
    assert balances(hub, world["member"]) == {"available": 2_600, "pending": 0, "held": 0}
    # Fulfilling again (a retried confirmation) changes nothing.
    before = books(hub)
    assert step(hub, rewards.fulfil_order, "ORD-1", supplier_id=world["gifts"], note=None, now=at(10)) == fulfilled
    assert_books_unchanged(hub, before)
    statement = close_day(hub, world["gifts"], "gifts")
    [line] = [line for line in statement["lines"] if line["line_kind"] == "rewards_supplied"]
    assert (line["reference"], line["count"], line["points"], line["amount_minor"]) == ("mug", 2, 2_400, -1_900)
    assert statement["net_minor"] == -1_900
    # The matrix traces the mug's points to alpha, which issued them.
    with hub.unit_of_work() as uow:
        traces = lot_traces(uow.session, cycle_ends_at=DAY + timedelta(days=1), currency="EUR")
    assert [(trace.issuer_partner_code, trace.redeemer_partner_code, trace.points) for trace in traces] == [
        ("alpha", "gifts", 2_400)]
    assert_audit_green(hub)


def test_an_order_the_supplier_cannot_fulfil_gives_the_points_and_the_stock_back_exactly_once(hub, world):
    order(hub, world, "mug", "ORD-2")
    failed = step(hub, rewards.fail_order, "ORD-2", supplier_id=world["gifts"], reason="broken in the warehouse",
                  now=at(9))
    assert failed.status == "failed"
    assert balances(hub, world["member"])["available"] == 5_000
    before = books(hub)
    assert step(hub, rewards.fail_order, "ORD-2", supplier_id=world["gifts"], reason="again", now=at(10)) == failed
    assert_books_unchanged(hub, before)
    with pytest.raises(InvalidState):
        step(hub, rewards.fulfil_order, "ORD-2", supplier_id=world["gifts"], note=None, now=at(11))
    with hub.unit_of_work() as uow:
        assert rewards.reward_view(uow.session, "mug", now=DAY).stock == 3
    statement = close_day(hub, world["gifts"], "gifts")
    assert [line for line in statement["lines"] if line["line_kind"].startswith("rewards_")] == []


def test_a_retried_order_is_found_not_placed_twice_and_another_order_under_its_reference_is_refused(hub, world):
    first = order(hub, world, "mug", "ORD-3")
    again = order(hub, world, "mug", "ORD-3")
    assert again.replayed and again.order == first.order
    assert balances(hub, world["member"])["held"] == 1_200
    with pytest.raises(Conflict):
        order(hub, world, "mug", "ORD-3", items=2)


def test_a_voucher_is_fulfilled_at_once_with_a_code_from_the_pool_shown_once(hub, world):
    placed = order(hub, world, "cinema", "ORD-4")
    assert placed.order.status == "fulfilled" and placed.voucher_codes == ("CINE-0001",)
    assert order(hub, world, "cinema", "ORD-4").voucher_codes is None
    second = order(hub, world, "cinema", "ORD-5")
    assert second.voucher_codes == ("CINE-0002",)
    before = books(hub)
    with pytest.raises(rewards.OutOfStock):
        order(hub, world, "cinema", "ORD-6")
    assert_books_unchanged(hub, before)
    with hub.unit_of_work() as uow:
        stored = uow.session.scalars(select(RewardVoucherCode.code_encrypted)).all()
        assert all("CINE" not in token for token in stored)
        with pytest.raises(Conflict):
            rewards.upload_voucher_codes(uow.session, code="cinema", codes=["NEW-0001", "CINE-0001"],
                                         key_ring=hub.key_ring, actor=PROPOSER, now=DAY)


def test_a_return_inside_the_window_gives_every_point_back_and_charges_the_supplier_back(hub, world):
    order(hub, world, "mug", "ORD-7")
    step(hub, rewards.fulfil_order, "ORD-7", supplier_id=None, note=None, now=at(9))
    returned = step(hub, rewards.cancel_order, "ORD-7", reason="changed my mind", now=at(12))
    assert returned.status == "returned"
    assert balances(hub, world["member"])["available"] == 5_000
    statement = close_day(hub, world["gifts"], "gifts")
    kinds = {line["line_kind"]: line["amount_minor"] for line in statement["lines"]}
    assert kinds == {"rewards_supplied": -950, "rewards_returned": 950}
    assert statement["net_minor"] == 0
    order(hub, world, "mug", "ORD-8")
    step(hub, rewards.fulfil_order, "ORD-8", supplier_id=None, note=None, now=at(9))
    with pytest.raises(rewards.ReturnWindowClosed):
        step(hub, rewards.return_order, "ORD-8", supplier_id=None, reason="late", now=at(9, days=14))
    assert_audit_green(hub)


def test_bill_credit_converts_points_at_the_operators_rate_and_is_not_returned(hub, world):
    placed = order(hub, world, "phone-bill", "BILL-1", items=25)
    assert (placed.order.points, placed.order.amount_minor, placed.order.currency) == (2_500, 2_500, "EUR")
    fulfilled = step(hub, rewards.fulfil_order, "BILL-1", supplier_id=world["telco"], note="bill 2026-11",
                     now=at(9))
    assert fulfilled.returnable_until is None
    with pytest.raises(rewards.ReturnWindowClosed):
        step(hub, rewards.return_order, "BILL-1", supplier_id=None, reason="no", now=at(10))
    statement = close_day(hub, world["telco"], "telco")
    [line] = statement["lines"]
    assert (line["line_kind"], line["reference"], line["count"], line["amount_minor"]) == (
        "rewards_supplied", "phone-bill", 25, -2_500)


def test_orders_are_refused_with_nothing_written_when_they_cannot_be_placed(hub, world):
    before = books(hub)
    with pytest.raises(InsufficientPoints):
        order(hub, world, "phone-bill", "BILL-2", items=51)
    with pytest.raises(rewards.OutOfStock):
        order(hub, world, "mug", "ORD-9", items=4)
    with pytest.raises(NotFound):
        order(hub, world, "nothing", "ORD-10")
    with pytest.raises(ValidationFailed):
        order(hub, world, "mug", "ORD 11")
    with pytest.raises(ValidationFailed):
        order(hub, world, "mug", "ORD-12", items=0)
    with hub.unit_of_work() as uow:
        rewards.propose_reward(uow.session, supplier="gifts", code="spa-day", kind="experience", title="Spa day",
                               points_price=100, unit_price_minor=5_000, stock=5, min_tier="gold",
                               per_member_limit=1, actor=PROPOSER, now=ONBOARDED_AT)
        uow.commit()
    with pytest.raises(rewards.RewardUnavailable):
        order(hub, world, "spa-day", "ORD-13")  # proposed, not listed
    with hub.unit_of_work() as uow:
        with pytest.raises(Conflict):
            rewards.approve_reward(uow.session, code="spa-day", actor=PROPOSER, now=DAY)
        rewards.approve_reward(uow.session, code="spa-day", actor=APPROVER, now=DAY)
        uow.commit()
    with pytest.raises(rewards.RewardUnavailable):
        order(hub, world, "spa-day", "ORD-14")  # the member is standard, the spa day for gold and above
    assert_books_unchanged(hub, before)
    with hub.unit_of_work() as uow:
        assert uow.session.scalar(select(func.count()).select_from(AuditLogEntry)
                                  .where(AuditLogEntry.action == "reward.order")) == 0


def test_an_order_not_fulfilled_in_time_expires_and_its_points_come_back(hub, world):
    placed = order(hub, world, "mug", "ORD-15")
    assert placed.order.fulfil_by == DAY + timedelta(days=7)
    with hub.unit_of_work() as uow:
        assert rewards.expire_orders(uow.session, now=DAY + timedelta(days=7)) == 1
        uow.commit()
    with hub.unit_of_work() as uow:
        view = rewards.order_view(uow.session, channel=rewards.BACK_OFFICE_CHANNEL, reference="ORD-15",
                                  now=DAY + timedelta(days=8))
        assert rewards.reward_view(uow.session, "mug", now=DAY).stock == 3
    assert view.status == "expired"
    assert balances(hub, world["member"])["available"] == 5_000
    with pytest.raises(InvalidState):
        step(hub, rewards.fulfil_order, "ORD-15", supplier_id=None, note=None, now=DAY + timedelta(days=8))
    assert_audit_green(hub)


def test_a_price_change_applies_to_orders_placed_after_it_and_each_price_is_its_own_line(hub, world):
    with hub.unit_of_work() as uow:
        rewards.schedule_price(uow.session, code="mug", points_price=1_000, unit_price_minor=900,
                               effective_from=at(12), actor=PROPOSER, now=at(8))
        uow.commit()
    order(hub, world, "mug", "ORD-16", now=at(9))
    order(hub, world, "mug", "ORD-17", now=at(13))
    for reference in ("ORD-16", "ORD-17"):
        step(hub, rewards.fulfil_order, reference, supplier_id=None, note=None, now=at(14))
    statement = close_day(hub, world["gifts"], "gifts")
    supplied = [(line["points"], line["count"], line["amount_minor"]) for line in statement["lines"]
                if line["line_kind"] == "rewards_supplied"]
    assert supplied == [(1_000, 1, -900), (1_200, 1, -950)]
    assert statement["net_minor"] == -1_850


def test_the_operators_file_of_bill_credits_reconciles_against_the_orders_it_fulfilled(hub, world):
    from settlement.reconciliation import reconcile_statement

    order(hub, world, "phone-bill", "BILL-7", items=10)
    order(hub, world, "phone-bill", "BILL-8", items=5)
    step(hub, rewards.fulfil_order, "BILL-7", supplier_id=world["telco"], note="bill 2026-11", now=at(9))
    step(hub, rewards.fulfil_order, "BILL-8", supplier_id=world["telco"], note="bill 2026-11", now=at(9))
    statement = close_day(hub, world["telco"], "telco")
    with hub.unit_of_work() as uow:
        statement_id = uow.session.scalar(select(SettlementStatement.id).where(
            SettlementStatement.partner_id == world["telco"]))
        document = ("receipt_id,amount_minor,currency,occurred_on\r\n"
                    "back-office:BILL-7,1000,EUR,2026-11-02\r\n"
                    "back-office:BILL-8,400,EUR,2026-11-02\r\n").encode()
        report = reconcile_statement(uow.session, statement_id=statement_id, document=document, source="back_office",
                                     actor="console:fiona", now=DAY + timedelta(days=2))
        uow.commit()
    assert statement["net_minor"] == -1_500
    found = json.loads(report.report_json)
    assert found["counts"] == {"matched": 1, "mismatched": 1, "missing_at_hub": 0, "missing_at_partner": 0}
    assert [line["receipt_id"] for line in found["matched"]] == ["back-office:BILL-7"]
    assert [(line["receipt_id"], line["differing_fields"]) for line in found["mismatched"]] == [
        ("back-office:BILL-8", ["amount_minor"])]
