"""A terminated partner settles to zero: every posting against it lands in exactly one closed statement.

The partner "shop" settles daily at midnight UTC with a fixed fee of 1.00 EUR per cycle.
It issues 1,000 points on 11-02, a member spends 200 of them there, and it is terminated
on 11-03 at 09:00. After termination a purchase refund claws back 100 points (11-03)
and the redemption is refunded in part (11-05), then again much later (11-25). Its
cycles must close up to the last of these and no further, and the fee stops with the
cycles that start after the termination.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import and_, func, select

from alliance.models import JournalTransaction, SettlementRun
from alliance.services import ledger
from alliance.services.partner_admin import change_status
from settlement import finance
from settlement.closing import charges_cycle_fee, close_due_cycles, due_by_partner
from settlement.cycles import cycle_containing
from settlement.keys import StatementSigner, statement_key_id
from settlement.netting import LINE_KIND_BY_TRANSACTION_KIND
from tests.factories import make_member, make_partner

UTC = timezone.utc
ONBOARDED_AT = datetime(2026, 11, 1, 8, 0, tzinfo=UTC)
TERMINATED_AT = datetime(2026, 11, 3, 9, 0, tzinfo=UTC)
FAR_EXPIRY = datetime(2028, 12, 31, tzinfo=UTC)
CYCLE_FEE_MINOR = 100
SETTLING_KINDS = [kind.value for kind in LINE_KIND_BY_TRANSACTION_KIND]


@pytest.fixture(scope="module")
def signer() -> StatementSigner:
    key = Ed25519PrivateKey.generate()
    return StatementSigner(signing_key=key, key_id=statement_key_id(key.public_key()), payment_terms_days=14)


@pytest.fixture
def terminated_shop(hub):  # type: ignore[no-untyped-def]
    """The partner's activity up to 11-05; returns (partner id, the captured hold's id)."""
    partner_id = make_partner(hub, now=ONBOARDED_AT, code="shop", settlement_cycle="daily", time_zone="UTC",
                              cycle_fee_minor=CYCLE_FEE_MINOR)
    member_id = make_member(hub, now=ONBOARDED_AT).member_id
    day = datetime(2026, 11, 2, tzinfo=UTC)
    with hub.unit_of_work() as uow:
        earn = ledger.earn(uow.session, member_id=member_id, partner_id=partner_id, points=1000,
                           now=day.replace(hour=10), expires_at=FAR_EXPIRY)
        hold = ledger.authorize_hold(uow.session, member_id=member_id, partner_id=partner_id, points=200,
                                     now=day.replace(hour=12), ttl_s=600)
        ledger.capture_hold(uow.session, hold_id=hold.hold_id, points=200, now=day.replace(hour=12, minute=1))
        uow.commit()
    with hub.unit_of_work() as uow:
        change_status(uow.session, code="shop", status="terminated", now=TERMINATED_AT, actor="test")
        uow.commit()
    with hub.unit_of_work() as uow:
        ledger.clawback_earn(uow.session, earn_transaction_id=earn.transaction_id, points=100,
                             now=datetime(2026, 11, 3, 10, tzinfo=UTC))
        ledger.refund_redemption(uow.session, hold_id=hold.hold_id, points=50,
                                 now=datetime(2026, 11, 5, 15, tzinfo=UTC))
        uow.commit()
    return partner_id, hold.hold_id


def unsettled_postings(hub, partner_id: int) -> list[int]:  # type: ignore[no-untyped-def]
    """Settling transactions of the partner that do not lie in exactly one closed cycle."""
    with hub.unit_of_work() as uow:
        runs_holding = (
            select(func.count(SettlementRun.id))
            .where(and_(SettlementRun.partner_id == partner_id,
                        SettlementRun.cycle_starts_at <= JournalTransaction.posted_at,
                        SettlementRun.cycle_ends_at > JournalTransaction.posted_at))
            .scalar_subquery()
        )
        return list(uow.session.scalars(
            select(JournalTransaction.id)
            .where(JournalTransaction.partner_id == partner_id, JournalTransaction.kind.in_(SETTLING_KINDS),
                   runs_holding != 1)
        ))


def closed_days(closed, partner_id: int) -> list[int]:  # type: ignore[no-untyped-def]
    return [item.cycle_starts_at.day for item in closed if item.partner_id == partner_id]


def lines_of(item) -> list[tuple[str, int, int]]:  # type: ignore[no-untyped-def]
    """(kind, points, amount) of each line of a closed statement."""
    return [(line["line_kind"], line["points"], line["amount_minor"])
            for line in json.loads(item.document_json)["lines"]]


def test_a_terminated_partners_postings_before_and_after_termination_all_settle(hub, signer, terminated_shop):
    partner_id, _ = terminated_shop
    closed = close_due_cycles(hub.session_factory, now=datetime(2026, 11, 10, 1, tzinfo=UTC), signer=signer)
    # Up to the cycle of the last posting (11-05), not the empty days after it.
    assert closed_days(closed, partner_id) == [1, 2, 3, 4, 5]
    assert unsettled_postings(hub, partner_id) == []
    by_day = {item.cycle_starts_at.day: item for item in closed}
    assert lines_of(by_day[2]) == [("points_issued", 1000, 1000), ("points_redeemed", 200, -160),
                                   ("fee", None, CYCLE_FEE_MINOR)]
    # The termination day's cycle started before it, so it carries the fee; later ones do not.
    assert lines_of(by_day[3]) == [("issuance_reversed", 100, -100), ("fee", None, CYCLE_FEE_MINOR)]
    assert lines_of(by_day[4]) == []
    assert lines_of(by_day[5]) == [("redemptions_refunded", 50, 40)]
    assert by_day[5].closing_balance_minor == 1000 - 160 - 100 + 40 + 3 * CYCLE_FEE_MINOR


def test_a_settled_terminated_partner_closes_nothing_more_until_something_posts(hub, signer, terminated_shop):
    partner_id, hold_id = terminated_shop
    close_due_cycles(hub.session_factory, now=datetime(2026, 11, 10, 1, tzinfo=UTC), signer=signer)
    assert close_due_cycles(hub.session_factory, now=datetime(2026, 11, 24, 1, tzinfo=UTC), signer=signer) == []
    with hub.unit_of_work() as uow:
        ledger.refund_redemption(uow.session, hold_id=hold_id, points=50, now=datetime(2026, 11, 25, 9, tzinfo=UTC))
        uow.commit()
    closed = close_due_cycles(hub.session_factory, now=datetime(2026, 11, 28, 1, tzinfo=UTC), signer=signer)
    # Cycles close in order, so the empty days between come first; none of them has a fee.
    assert closed_days(closed, partner_id) == list(range(6, 26))
    assert all(lines_of(item) == [] for item in closed[:-1])
    assert lines_of(closed[-1]) == [("redemptions_refunded", 50, 40)]
    assert unsettled_postings(hub, partner_id) == []


def test_an_adjustment_approved_after_termination_lands_in_a_statement(hub, signer, terminated_shop):
    partner_id, _ = terminated_shop
    close_due_cycles(hub.session_factory, now=datetime(2026, 11, 10, 1, tzinfo=UTC), signer=signer)
    approved_at = datetime(2026, 11, 12, 14, tzinfo=UTC)
    with hub.unit_of_work() as uow:
        adjustment = finance.request_adjustment(uow.session, partner_code="shop", amount_minor=-250,
                                                reason="goodwill for the last month", reference="ADJ-1",
                                                actor="finance-one", now=approved_at - timedelta(hours=1))
        finance.decide_adjustment(uow.session, adjustment_id=adjustment.id, decision="approve",
                                  actor="finance-two", now=approved_at)
        uow.commit()
    closed = close_due_cycles(hub.session_factory, now=datetime(2026, 11, 20, 1, tzinfo=UTC), signer=signer)
    assert closed_days(closed, partner_id) == [6, 7, 8, 9, 10, 11, 12]
    assert lines_of(closed[-1]) == [("adjustment", None, -250)]


def test_the_console_and_closing_agree_on_what_a_terminated_partner_still_owes_a_statement(hub, terminated_shop):
    with hub.unit_of_work() as uow:
        due = due_by_partner(uow.session, now=datetime(2026, 11, 10, 1, tzinfo=UTC))
    assert [(item.partner.code, [cycle.starts_at.day for cycle in item.cycles]) for item in due] == [
        ("shop", [1, 2, 3, 4, 5])]


def test_the_cycle_fee_is_owed_for_cycles_that_start_before_termination():
    cycle = cycle_containing(TERMINATED_AT, partner_code="shop", frequency="daily", time_zone="UTC",
                             cutoff_local=datetime.min.time())
    assert charges_cycle_fee(None, cycle)
    assert charges_cycle_fee(TERMINATED_AT, cycle)
    assert not charges_cycle_fee(cycle.starts_at, cycle)
    assert not charges_cycle_fee(TERMINATED_AT, cycle_containing(TERMINATED_AT + timedelta(days=1), partner_code="shop",
                                                                 frequency="daily", time_zone="UTC",
                                                                 cutoff_local=datetime.min.time()))
