"""Every webhook event is written where its change happens, in the change's transaction, once, with its data;
member messages name the member by number only."""

from __future__ import annotations

import json
from datetime import datetime, time, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import select

from alliance.domain import webhooks as rules
from alliance.domain.grading import GradingConfig, Period
from alliance.domain.risk import Action
from alliance.extensions import HubState
from alliance.models import MemberNotification, Partner, WebhookEvent
from alliance.services import (
    grading,
    key_notices,
    ledger,
    purchases,
    redemptions,
    reminders,
    rewards,
    risk,
    tier_policy,
    webhooks,
)
from alliance.services.member_verification import active_card_holder
from alliance.services.partners import register_key
from settlement import finance
from settlement.closing import close_cycle
from settlement.cycles import cycle_containing
from settlement.keys import load_statement_private_key, private_key_pem, statement_key_id
from tests.factories import make_member, make_partner, set_risk_policy

UTC = timezone.utc
ONBOARDED_AT = datetime(2026, 10, 1, 8, 0, tzinfo=UTC)
DAY = datetime(2026, 11, 2, tzinfo=UTC)
FAR_EXPIRY = datetime(2028, 12, 31, tzinfo=UTC)
PROPOSER, APPROVER = "console:pam", "console:paul"
MEMBER_KEYS = {"member.points_expiring": {"member_number", "points", "expires_on"},
               "member.tier_changed": {"member_number", "from_tier", "to_tier"},
               "member.points_earned": {"member_number", "points", "partner"},
               "member.reward_shipped": {"member_number", "reward", "reference"}}


def at(hour: int, minute: int = 0, *, days: int = 0) -> datetime:
    return DAY.replace(hour=hour, minute=minute) + timedelta(days=days)


def run(hub: HubState, operation, **arguments):  # type: ignore[no-untyped-def]
    with hub.unit_of_work() as uow:
        result = operation(uow.session, **arguments)
        uow.commit()
    return result


@pytest.fixture()
def world(hub: HubState) -> dict[str, Any]:
    """``shop`` (daily cycles, 1 point per euro) and ``gifts`` subscribe to every partner event; the operator's
    member app (``app``) to every member message; a member with 5,000 points from ``shop``."""
    set_risk_policy(hub)
    ids = {code: make_partner(hub, now=ONBOARDED_AT, code=code, settlement_cycle="daily", time_zone="UTC",
                              issue_price_per_point=Decimal("0.0100"), redemption_price_per_point=Decimal("0.0080"))
           for code in ("shop", "gifts", "app")}
    member = make_member(hub, now=ONBOARDED_AT)
    with hub.unit_of_work() as uow:
        for code in ("shop", "gifts"):
            webhooks.register_endpoint(uow.session, partner=code, url=f"https://{code}.example/hooks",
                                       event_types=list(rules.PARTNER_EVENT_TYPES), actor=PROPOSER, now=ONBOARDED_AT)
        webhooks.register_endpoint(uow.session, partner="app", url="https://app.example/hooks", audience="member",
                                   event_types=list(rules.MEMBER_EVENT_TYPES), actor=PROPOSER, now=ONBOARDED_AT)
        ledger.earn(uow.session, member_id=member.member_id, partner_id=ids["shop"], points=5_000,
                    now=ONBOARDED_AT + timedelta(hours=1), expires_at=FAR_EXPIRY)
        uow.commit()
    return {**ids, "member": member.member_id, "member_number": member.member_number, "card": member.card_number}


def events(hub: HubState, event_type: str) -> list[tuple[str | None, dict[str, Any]]]:
    """The events of a type in the outbox, oldest first: (partner code, data)."""
    with hub.unit_of_work() as uow:
        rows = uow.session.execute(
            select(Partner.code, WebhookEvent.payload).outerjoin(Partner, Partner.id == WebhookEvent.partner_id)
            .where(WebhookEvent.type == event_type).order_by(WebhookEvent.id)).all()
    return [(code, json.loads(payload)) for code, payload in rows]


def report(hub: HubState, world: dict[str, Any], receipt: str, euros: int, moment: datetime,
           threshold: int = purchases.POINTS_NOTICE_THRESHOLD) -> purchases.ReportedPurchase:
    return run(hub, purchases.report_purchase, partner_id=world["shop"], now=moment, expiry_months=24,
               points_notice_threshold=threshold,
               report=purchases.PurchaseReport(receipt_id=receipt, card_number=world["card"],
                                               amount_minor=euros * 100, currency="EUR", purchased_at=moment))


def test_purchases_refunds_tiers_and_review_cases(hub, world):
    report(hub, world, "r-small", 999, at(9))
    assert events(hub, "member.points_earned") == []  # below the threshold: nothing
    report(hub, world, "r-large", 1_000, at(10))
    assert events(hub, "member.points_earned") == [
        (None, {"member_number": world["member_number"], "points": 1_000, "partner": "shop"})]
    report(hub, world, "r-lower", 50, at(10, 30), threshold=50)  # the threshold is the caller's setting
    assert [data["points"] for _, data in events(hub, "member.points_earned")] == [1_000, 50]

    run(hub, purchases.refund_purchase, partner_id=world["shop"], receipt_id="r-large", refund_id="rf-1",
        amount_minor=50_000, now=at(11))
    assert events(hub, "purchase.refunded") == [
        ("shop", {"receipt_id": "r-large", "refund_id": "rf-1", "points_clawed_back": 500})]

    # 1,549 euros spent in 12 months: gold (from 1,500).
    run(hub, tier_policy.recompute_tiers, now=at(12), currency="EUR", minor_units_per_unit=100)
    run(hub, tier_policy.recompute_tiers, now=at(13), currency="EUR", minor_units_per_unit=100)
    assert events(hub, "member.tier_changed") == [
        (None, {"member_number": world["member_number"], "from_tier": "standard", "to_tier": "gold"})]

    with hub.unit_of_work() as uow:
        decided = risk.record(uow.session, operation="earn", action=Action.FLAG,
                              subject=risk.Subject(partner_id=world["shop"], member_id=world["member"]), points=10,
                              reference="r-flag", evidence=[], now=at(14))
        decision_id = risk.keep(uow.session, decided)
        uow.commit()
    assert decided.record is not None
    assert events(hub, "review_case.opened") == [
        ("shop", {"decision_id": decision_id, "case": decided.record["token"], "action": "flag"})]


def close(hub: HubState, partner_id: int, day: datetime) -> int:
    key = load_statement_private_key(private_key_pem(Ed25519PrivateKey.generate()))
    cycle = cycle_containing(day, partner_code="shop", frequency="daily", time_zone="UTC", cutoff_local=time(0, 0))
    with hub.unit_of_work() as uow:
        closed = close_cycle(uow.session, partner_id=partner_id, cycle=cycle, now=day + timedelta(days=1, hours=1),
                             signing_key=key, key_id=statement_key_id(key.public_key()), payment_terms_days=14)
        again = close_cycle(uow.session, partner_id=partner_id, cycle=cycle, now=day + timedelta(days=1, hours=2),
                            signing_key=key, key_id=statement_key_id(key.public_key()), payment_terms_days=14)
        uow.commit()
    assert closed.newly_closed and not again.newly_closed
    return closed.statement_id


def test_statements_closed_overdue_and_paid_each_once(hub, world):
    report(hub, world, "r-1", 100, at(9))
    statement_id = close(hub, world["shop"], DAY)
    [(code, closed)] = events(hub, "statement.closed")
    assert code == "shop" and closed == {
        "statement_id": statement_id, "cycle_starts_at": DAY.isoformat(),
        "cycle_ends_at": (DAY + timedelta(days=1)).isoformat(), "net_minor": closed["net_minor"], "currency": "EUR"}
    assert closed["net_minor"] > 0
    run(hub, finance.mark_invoiced, statement_id=statement_id, reference="inv-1", actor="finance", now=at(9, days=2))
    status = run(hub, finance.statement_status, statement_id=statement_id)

    # Due on the 17th: overdue from the 18th. The first run of that day announces it, later runs do not.
    due = status.due_date
    first_day = datetime.combine(due + timedelta(days=1), time(6), tzinfo=UTC)
    assert run(hub, finance.announce_overdue, now=first_day - timedelta(days=1)) == 0
    assert run(hub, finance.announce_overdue, now=first_day) == 1
    assert run(hub, finance.announce_overdue, now=first_day + timedelta(hours=1), since=first_day.date()) == 0
    assert run(hub, finance.announce_overdue, now=first_day + timedelta(days=1), since=first_day.date()) == 0
    assert events(hub, "statement.overdue") == [("shop", {
        "statement_id": statement_id, "due_date": due.isoformat(), "outstanding_minor": status.net_minor,
        "currency": "EUR"})]
    # A scheduler stopped for days announces, on resuming, what fell overdue meanwhile.
    assert run(hub, finance.announce_overdue, now=first_day + timedelta(days=3), since=due - timedelta(days=2)) == 1

    part = status.net_minor // 2
    pay_day = first_day + timedelta(days=4)
    run(hub, finance.record_payment, statement_id=statement_id, amount_minor=part, paid_on=pay_day.date(),
        reference="pay-1", actor="finance", now=pay_day)
    assert events(hub, "statement.paid") == []  # not in full yet
    run(hub, finance.record_payment, statement_id=statement_id, amount_minor=status.net_minor - part,
        paid_on=pay_day.date(), reference="pay-2", actor="finance", now=pay_day)
    assert events(hub, "statement.paid") == [("shop", {
        "statement_id": statement_id, "paid_on": pay_day.date().isoformat(), "amount_minor": status.net_minor,
        "currency": "EUR"})]


def test_expired_redemption_holds_but_not_reward_orders_holds(hub, world):
    with hub.unit_of_work() as uow:
        holder = active_card_holder(uow.session, world["card"])
        redemptions.authorize(uow.session, partner_id=world["shop"], holder=holder, reference="red-1", points=300,
                              ttl_s=900, terminal_id=None, now=at(9))
        rewards.propose_reward(uow.session, supplier="gifts", code="mug", kind="goods", title="Mug", points_price=100,
                               unit_price_minor=90, stock=5, actor=PROPOSER, now=at(8), return_days=14)
        rewards.approve_reward(uow.session, code="mug", actor=APPROVER, now=at(8))
        rewards.place_order(uow.session, reward_code="mug", member_id=world["member"], items=1,
                            channel=rewards.BACK_OFFICE_CHANNEL, reference="o-1", actor="console:cass",
                            key_ring=hub.key_ring, now=at(9))
        uow.commit()
    assert run(hub, ledger.expire_holds, now=at(9, days=30)) == 2
    assert events(hub, "redemption.hold_expired") == [
        ("shop", {"reference": "red-1", "points": 300, "expired_at": at(9, days=30).isoformat()})]


def test_reward_orders_placed_fulfilled_and_cancelled(hub, world):
    with hub.unit_of_work() as uow:
        rewards.propose_reward(uow.session, supplier="gifts", code="mug", kind="goods", title="Mug", points_price=100,
                               unit_price_minor=90, stock=5, actor=PROPOSER, now=at(8), return_days=14)
        rewards.approve_reward(uow.session, code="mug", actor=APPROVER, now=at(8))
        uow.commit()
    placed = []
    for reference in ("o-1", "o-2"):
        with hub.unit_of_work() as uow:
            placed.append(rewards.place_order(
                uow.session, reward_code="mug", member_id=world["member"], items=2, channel=rewards.BACK_OFFICE_CHANNEL,
                reference=reference, actor="console:cass", key_ring=hub.key_ring, now=at(9)))
            uow.commit()
    assert events(hub, "reward_order.placed") == [
        ("gifts", {"channel": "back-office", "reference": reference, "reward": "mug", "items": 2,
                   "fulfil_by": order.order.fulfil_by.isoformat()})
        for reference, order in zip(("o-1", "o-2"), placed, strict=True)]
    for _ in range(2):  # fulfilling or cancelling again changes nothing, and tells nobody again
        with hub.unit_of_work() as uow:
            rewards.fulfil_order(uow.session, channel="back-office", reference="o-1", supplier_id=world["gifts"],
                                 note=None, actor="partner:gifts", now=at(10))
            rewards.cancel_order(uow.session, channel="back-office", reference="o-2", reason="changed my mind",
                                 actor="console:cass", now=at(10))
            uow.commit()
    assert events(hub, "member.reward_shipped") == [
        (None, {"member_number": world["member_number"], "reward": "mug", "reference": "o-1"})]
    assert events(hub, "reward_order.cancelled") == [
        ("gifts", {"channel": "back-office", "reference": "o-2", "reward": "mug", "status": "cancelled"})]


def test_keys_expiring_within_the_notice_period_are_announced_once(hub, world):
    with hub.unit_of_work() as uow:
        for key_id, days in (("shop-soon", 10), ("shop-later", 20), ("shop-never", None)):
            register_key(uow.session, partner_id=world["shop"], key_id=key_id, now=ONBOARDED_AT,
                         public_key=Ed25519PrivateKey.generate().public_key().public_bytes_raw(),
                         expires_at=DAY + timedelta(days=days) if days else None)
        uow.commit()
    assert run(hub, key_notices.announce_expiring_keys, now=DAY, notice_days=14) == 1
    # The next day's run announces only the key whose notice moment came since the last run.
    assert run(hub, key_notices.announce_expiring_keys, now=DAY + timedelta(days=1), notice_days=14, since=DAY) == 0
    assert run(hub, key_notices.announce_expiring_keys, now=DAY + timedelta(days=7), notice_days=14,
               since=DAY + timedelta(days=1)) == 1
    assert events(hub, "key.expiring") == [
        ("shop", {"key_id": "shop-soon", "expires_at": (DAY + timedelta(days=10)).isoformat()}),
        ("shop", {"key_id": "shop-later", "expires_at": (DAY + timedelta(days=20)).isoformat()})]


def test_grades_published_when_computed_changed_or_overridden(hub, world):
    report(hub, world, "r-1", 100, datetime(2026, 10, 5, 9, tzinfo=UTC))
    config = GradingConfig(min_transactions=1, min_active_members=1)
    october = Period.parse("2026-10")
    for _ in range(2):  # a recomputation with the same grade says nothing new
        run(hub, grading.compute, period=october, config=config, time_zone="UTC", now=at(9), actor="job:grades")
    [(code, published)] = events(hub, "grade.published")
    assert code == "shop" and published["period"] == "2026-10" and published["grade"] in "ABCD"
    other = "D" if published["grade"] != "D" else "C"
    run(hub, grading.override, code="shop", period="2026-10", grade=other, reason="a reviewed complaint", now=at(10),
        actor="console:gina")
    assert events(hub, "grade.published")[1:] == [("shop", {"period": "2026-10", "grade": other})]


def test_expiry_reminders_go_out_once_as_member_messages(hub, world):
    expires_at = at(9, days=20)
    run(hub, ledger.earn, member_id=world["member"], partner_id=world["shop"], points=250, now=at(8),
        expires_at=expires_at)
    assert run(hub, reminders.remind_expiring_points, now=at(9)) == 1
    assert run(hub, reminders.remind_expiring_points, now=at(10)) == 0
    assert events(hub, "member.points_expiring") == [
        (None, {"member_number": world["member_number"], "points": 250, "expires_on": expires_at.date().isoformat()})]
    with hub.unit_of_work() as uow:
        assert uow.session.scalars(select(MemberNotification.sent_at)).all() == [at(9)]


def test_a_change_rolled_back_leaves_no_event(hub, world):
    with hub.unit_of_work() as uow:
        report_in = purchases.PurchaseReport(receipt_id="r-back", card_number=world["card"], amount_minor=200_000,
                                             currency="EUR", purchased_at=at(9))
        purchases.report_purchase(uow.session, partner_id=world["shop"], now=at(9), expiry_months=24,
                                  report=report_in)
        assert uow.session.scalar(select(WebhookEvent.type)) == "member.points_earned"
        # Leaving without a commit rolls the purchase back, and its event with it.
    assert events(hub, "member.points_earned") == []


def test_member_messages_carry_only_the_member_number_and_the_message(hub, world):
    test_reward_orders_placed_fulfilled_and_cancelled(hub, world)
    test_expiry_reminders_go_out_once_as_member_messages(hub, world)
    report(hub, world, "r-large", 2_000, at(11))
    run(hub, tier_policy.recompute_tiers, now=at(12), currency="EUR", minor_units_per_unit=100)
    seen = {event_type: [data for _, data in events(hub, event_type)] for event_type in rules.MEMBER_EVENT_TYPES}
    assert all(seen.values()), seen
    for event_type, messages in seen.items():
        assert all(set(data) == MEMBER_KEYS[event_type] for data in messages), event_type
