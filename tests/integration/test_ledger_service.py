"""The ledger service on a real database: each operation's effect on balances, lots and holds."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from sqlalchemy import func, select

from alliance.domain.errors import InsufficientPoints, InvalidState, NotFound, ValidationFailed
from alliance.models import JournalEntry, JournalTransaction, LotConsumption, PointLot, RedemptionHold
from alliance.services import ledger
from alliance.services.accounts import member_balances
from alliance.services.audit import run_audit
from tests.factories import make_member, make_partner

EXPIRY = timedelta(days=730)


@pytest.fixture
def alliance_setup(hub, now):
    """Two partners and one member; returns (issuer_id, redeemer_id, member_id)."""
    issuer = make_partner(hub, now=now, code="issuer", issue_price_per_point=Decimal("0.0125"))
    redeemer = make_partner(hub, now=now, code="redeemer", redemption_price_per_point=Decimal("0.0075"))
    member = make_member(hub, now=now)
    return issuer, redeemer, member.member_id


def run(hub, operation, **arguments):
    """Run one service call in its own committed unit of work."""
    with hub.unit_of_work() as uow:
        result = operation(uow.session, **arguments)
        uow.commit()
    return result


def balances(hub, member_id):
    with hub.unit_of_work() as uow:
        return member_balances(uow.session, member_id)


def assert_books_clean(hub):
    with hub.unit_of_work() as uow:
        report = run_audit(uow.session)
    assert report.ok, report.first_failure


def test_earn_records_the_issue_price_in_force(hub, now, alliance_setup):
    issuer, _, member_id = alliance_setup
    result = run(hub, ledger.earn, member_id=member_id, partner_id=issuer, points=120, now=now, expires_at=now + EXPIRY)
    with hub.unit_of_work() as uow:
        transaction = uow.session.get(JournalTransaction, result.transaction_id)
        assert transaction.price_per_point == Decimal("0.0125")
        assert transaction.currency == "EUR"
        lot = uow.session.get(PointLot, result.lot_id)
        assert (lot.partner_id, lot.points_earned, lot.points_remaining, lot.state) == (issuer, 120, 120, "active")
    assert balances(hub, member_id) == {"available": 120, "pending": 0, "held": 0}
    assert_books_clean(hub)


def test_pending_points_are_not_spendable_until_activated(hub, now, alliance_setup):
    issuer, redeemer, member_id = alliance_setup
    run(hub, ledger.earn, member_id=member_id, partner_id=issuer, points=80, now=now, expires_at=now + EXPIRY,
        pending_until=now + timedelta(days=14))
    assert balances(hub, member_id) == {"available": 0, "pending": 80, "held": 0}
    with pytest.raises(InsufficientPoints):
        run(hub, ledger.authorize_hold, member_id=member_id, partner_id=redeemer, points=1, now=now, ttl_s=60)
    assert run(hub, ledger.activate_due_lots, now=now + timedelta(days=13)) == 0
    assert run(hub, ledger.activate_due_lots, now=now + timedelta(days=14)) == 1
    assert balances(hub, member_id) == {"available": 80, "pending": 0, "held": 0}
    assert_books_clean(hub)


def test_hold_then_partial_capture_spends_soonest_expiring_lots(hub, now, alliance_setup):
    issuer, redeemer, member_id = alliance_setup
    late = run(hub, ledger.earn, member_id=member_id, partner_id=issuer, points=100, now=now, expires_at=now + EXPIRY)
    soon = run(hub, ledger.earn, member_id=member_id, partner_id=None, points=50, now=now,
               expires_at=now + timedelta(days=30))
    hold = run(hub, ledger.authorize_hold, member_id=member_id, partner_id=redeemer, points=120, now=now, ttl_s=600)
    assert balances(hub, member_id) == {"available": 30, "pending": 0, "held": 120}
    run(hub, ledger.capture_hold, hold_id=hold.hold_id, points=70, now=now + timedelta(seconds=5))
    assert balances(hub, member_id) == {"available": 80, "pending": 0, "held": 0}
    with hub.unit_of_work() as uow:
        # 70 points spent: all 50 of the soon-expiring hub lot, then 20 of the partner lot.
        traced = dict(uow.session.execute(
            select(LotConsumption.lot_id, func.sum(LotConsumption.points))
            .where(LotConsumption.hold_id == hold.hold_id).group_by(LotConsumption.lot_id)
        ).all())
        assert traced == {soon.lot_id: 50, late.lot_id: 20}
        capture = uow.session.execute(
            select(JournalTransaction).where(JournalTransaction.hold_id == hold.hold_id,
                                             JournalTransaction.kind == "capture")
        ).scalar_one()
        assert capture.price_per_point == Decimal("0.0075")
        assert uow.session.get(RedemptionHold, hold.hold_id).status == "captured"
    assert_books_clean(hub)


def test_capture_is_allowed_once_and_never_above_the_hold(hub, now, alliance_setup):
    issuer, redeemer, member_id = alliance_setup
    run(hub, ledger.earn, member_id=member_id, partner_id=issuer, points=100, now=now, expires_at=now + EXPIRY)
    hold = run(hub, ledger.authorize_hold, member_id=member_id, partner_id=redeemer, points=60, now=now, ttl_s=600)
    with pytest.raises(ValidationFailed, match="exceeds the hold"):
        run(hub, ledger.capture_hold, hold_id=hold.hold_id, points=61, now=now)
    run(hub, ledger.capture_hold, hold_id=hold.hold_id, points=60, now=now)
    with pytest.raises(InvalidState, match="already captured"):
        run(hub, ledger.capture_hold, hold_id=hold.hold_id, points=10, now=now)
    with pytest.raises(InvalidState):
        run(hub, ledger.void_hold, hold_id=hold.hold_id, now=now)
    assert balances(hub, member_id) == {"available": 40, "pending": 0, "held": 0}
    assert_books_clean(hub)


def test_void_and_expiry_give_every_held_point_back(hub, now, alliance_setup):
    issuer, redeemer, member_id = alliance_setup
    run(hub, ledger.earn, member_id=member_id, partner_id=issuer, points=100, now=now, expires_at=now + EXPIRY)
    voided = run(hub, ledger.authorize_hold, member_id=member_id, partner_id=redeemer, points=30, now=now, ttl_s=600)
    lapsing = run(hub, ledger.authorize_hold, member_id=member_id, partner_id=redeemer, points=40, now=now, ttl_s=60)
    run(hub, ledger.void_hold, hold_id=voided.hold_id, now=now)
    with pytest.raises(InvalidState, match="expired"):
        run(hub, ledger.capture_hold, hold_id=lapsing.hold_id, points=40, now=now + timedelta(seconds=60))
    assert run(hub, ledger.expire_holds, now=now + timedelta(seconds=61)) == 1
    assert run(hub, ledger.expire_holds, now=now + timedelta(seconds=62)) == 0
    assert balances(hub, member_id) == {"available": 100, "pending": 0, "held": 0}
    with hub.unit_of_work() as uow:
        assert uow.session.get(RedemptionHold, lapsing.hold_id).status == "expired"
    assert_books_clean(hub)


def test_redemption_refund_returns_points_up_to_what_was_captured(hub, now, alliance_setup):
    issuer, redeemer, member_id = alliance_setup
    run(hub, ledger.earn, member_id=member_id, partner_id=issuer, points=100, now=now, expires_at=now + EXPIRY)
    hold = run(hub, ledger.authorize_hold, member_id=member_id, partner_id=redeemer, points=80, now=now, ttl_s=600)
    with pytest.raises(InvalidState, match="only a captured"):
        run(hub, ledger.refund_redemption, hold_id=hold.hold_id, points=10, now=now)
    run(hub, ledger.capture_hold, hold_id=hold.hold_id, points=50, now=now)
    run(hub, ledger.refund_redemption, hold_id=hold.hold_id, points=30, now=now)
    with pytest.raises(ValidationFailed, match="exceeds"):
        run(hub, ledger.refund_redemption, hold_id=hold.hold_id, points=21, now=now)
    run(hub, ledger.refund_redemption, hold_id=hold.hold_id, points=20, now=now)
    assert balances(hub, member_id) == {"available": 100, "pending": 0, "held": 0}
    assert_books_clean(hub)


def test_clawback_takes_pending_points_of_the_purchase(hub, now, alliance_setup):
    issuer, _, member_id = alliance_setup
    earned = run(hub, ledger.earn, member_id=member_id, partner_id=issuer, points=90, now=now,
                 expires_at=now + EXPIRY, pending_until=now + timedelta(days=7))
    result = run(hub, ledger.clawback_earn, earn_transaction_id=earned.transaction_id, points=30, now=now)
    assert (result.points_recovered, result.points_unrecovered) == (30, 0)
    assert balances(hub, member_id) == {"available": 0, "pending": 60, "held": 0}
    with pytest.raises(ValidationFailed, match="exceeds"):
        run(hub, ledger.clawback_earn, earn_transaction_id=earned.transaction_id, points=61, now=now)
    assert_books_clean(hub)


def test_clawback_takes_only_the_purchase_lot_and_reports_spent_points(hub, now, alliance_setup):
    issuer, redeemer, member_id = alliance_setup
    earned = run(hub, ledger.earn, member_id=member_id, partner_id=issuer, points=100, now=now,
                 expires_at=now + timedelta(days=10))
    other = make_partner(hub, now=now, code="other-issuer")
    bonus = run(hub, ledger.earn, member_id=member_id, partner_id=other, points=20, now=now, expires_at=now + EXPIRY)
    hold = run(hub, ledger.authorize_hold, member_id=member_id, partner_id=redeemer, points=90, now=now, ttl_s=600)
    run(hub, ledger.capture_hold, hold_id=hold.hold_id, points=90, now=now)
    # 10 left in the purchase's own lot. The other issuer's 20 points are not its to take:
    # they stay with the member, and the other 40 are reported as spent.
    result = run(hub, ledger.clawback_earn, earn_transaction_id=earned.transaction_id, points=50, now=now)
    assert (result.points_recovered, result.points_unrecovered) == (10, 40)
    assert balances(hub, member_id) == {"available": 20, "pending": 0, "held": 0}
    with hub.unit_of_work() as uow:
        assert uow.session.get(PointLot, bonus.lot_id).points_remaining == 20
    assert_books_clean(hub)


def test_points_past_their_expiry_cannot_be_spent_before_the_sweep(hub, now, alliance_setup):
    issuer, redeemer, member_id = alliance_setup
    run(hub, ledger.earn, member_id=member_id, partner_id=issuer, points=100, now=now,
        expires_at=now + timedelta(days=1))
    run(hub, ledger.earn, member_id=member_id, partner_id=issuer, points=30, now=now, expires_at=now + EXPIRY)
    later = now + timedelta(days=2)
    with pytest.raises(InsufficientPoints):
        run(hub, ledger.authorize_hold, member_id=member_id, partner_id=redeemer, points=31, now=later, ttl_s=60)
    run(hub, ledger.authorize_hold, member_id=member_id, partner_id=redeemer, points=30, now=later, ttl_s=60)
    # The expired 100 went to breakage when the member spent, not to the redeemer.
    with hub.unit_of_work() as uow:
        report = run_audit(uow.session)
    assert report.ok and report.totals["points_hub_breakage"] == 100
    assert balances(hub, member_id) == {"available": 0, "pending": 0, "held": 30}


def test_expiry_moves_only_expired_points_to_breakage(hub, now, alliance_setup):
    issuer, _, member_id = alliance_setup
    run(hub, ledger.earn, member_id=member_id, partner_id=issuer, points=70, now=now,
        expires_at=now + timedelta(days=5))
    run(hub, ledger.earn, member_id=member_id, partner_id=issuer, points=30, now=now, expires_at=now + EXPIRY)
    assert run(hub, ledger.expire_due_lots, now=now + timedelta(days=4)) == 0
    assert run(hub, ledger.expire_due_lots, now=now + timedelta(days=5)) == 70
    assert balances(hub, member_id) == {"available": 30, "pending": 0, "held": 0}
    with hub.unit_of_work() as uow:
        report = run_audit(uow.session)
    assert report.ok and report.totals["points_hub_breakage"] == 70


def test_overdraft_is_refused_and_changes_nothing(hub, now, alliance_setup):
    issuer, redeemer, member_id = alliance_setup
    run(hub, ledger.earn, member_id=member_id, partner_id=issuer, points=10, now=now, expires_at=now + EXPIRY)
    with hub.unit_of_work() as uow:
        entries_before = uow.session.scalar(select(func.count()).select_from(JournalEntry))
    with pytest.raises(InsufficientPoints):
        run(hub, ledger.authorize_hold, member_id=member_id, partner_id=redeemer, points=11, now=now, ttl_s=60)
    with hub.unit_of_work() as uow:
        assert uow.session.scalar(select(func.count()).select_from(JournalEntry)) == entries_before
        assert uow.session.scalar(select(func.count()).select_from(RedemptionHold)) == 0
    assert balances(hub, member_id)["available"] == 10


def test_suspended_partners_can_neither_issue_nor_redeem(hub, now):
    suspended = make_partner(hub, now=now, code="paused", status="suspended")
    member = make_member(hub, now=now)
    with pytest.raises(InvalidState, match="suspended"):
        run(hub, ledger.earn, member_id=member.member_id, partner_id=suspended, points=5, now=now,
            expires_at=now + EXPIRY)
    with pytest.raises(InvalidState, match="suspended"):
        run(hub, ledger.authorize_hold, member_id=member.member_id, partner_id=suspended, points=1, now=now, ttl_s=60)


@pytest.mark.parametrize(
    ("arguments", "error"),
    [
        ({"points": 0}, ValidationFailed),
        ({"points": -5}, ValidationFailed),
        ({"member_id": 999_999}, NotFound),
        ({"partner_id": 999_999}, NotFound),
        ({"expires_in": timedelta(0)}, ValidationFailed),
    ],
    ids=["zero", "negative", "unknown-member", "unknown-partner", "already-expired"],
)
def test_earn_refuses_bad_input(hub, now, alliance_setup, arguments, error):
    issuer, _, member_id = alliance_setup
    arguments = dict(arguments)
    call = {"member_id": member_id, "partner_id": issuer, "points": 10, "now": now,
            "expires_at": now + arguments.pop("expires_in", EXPIRY)}
    call.update(arguments)
    with pytest.raises(error):
        run(hub, ledger.earn, **call)
    assert balances(hub, member_id) == {"available": 0, "pending": 0, "held": 0}


def test_hold_ttl_is_bounded(hub, now, alliance_setup):
    issuer, redeemer, member_id = alliance_setup
    run(hub, ledger.earn, member_id=member_id, partner_id=issuer, points=10, now=now, expires_at=now + EXPIRY)
    for ttl_s in (0, ledger.MAX_HOLD_TTL_S + 1):
        with pytest.raises(ValidationFailed, match="hold lives"):
            run(hub, ledger.authorize_hold, member_id=member_id, partner_id=redeemer, points=1, now=now, ttl_s=ttl_s)


def test_a_partner_without_a_price_in_force_cannot_issue(hub, now, alliance_setup):
    issuer, _, member_id = alliance_setup
    with pytest.raises(InvalidState, match="no price in force"):
        run(hub, ledger.earn, member_id=member_id, partner_id=issuer, points=10, now=now - timedelta(days=1),
            expires_at=now + EXPIRY)
