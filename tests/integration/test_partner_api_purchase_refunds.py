"""Refunding purchases through the partner API claws points back exactly, never overdrawing.

The clawback target is cumulative, ``floor(points × refunded total / amount)``, per
funder; each refund takes the difference to the previous target. So however a purchase
is refunded in parts, a full refund takes back exactly what it earned.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal

from sqlalchemy import select

from alliance.extensions import hub_state
from alliance.models import Campaign, PointLot
from tests.factories import make_member, make_member_with_pin, make_signing_partner
from tests.http_server import (
    assert_books_unchanged,
    audit_totals,
    balances,
    books,
    fund_member,
    purchase_payload,
    wall_clock_partner_time,
)
from tests.partner_client import SignedTestClient

PURCHASES = "/partner/v1/purchases"


def _setup(app, **terms):  # type: ignore[no-untyped-def]
    hub = hub_state(app)
    partner = make_signing_partner(hub, now=wall_clock_partner_time(), **terms)
    return hub, partner, SignedTestClient(app, partner)


def _refund(client, receipt_id: str, refund_id: str, amount_minor: int):  # type: ignore[no-untyped-def]
    return client.post(f"{PURCHASES}/{receipt_id}/refunds", {"refund_id": refund_id, "amount_minor": amount_minor})


def test_partial_refunds_then_the_rest_claw_back_exactly_every_point_of_both_funders(app):
    hub, partner, client = _setup(app)
    now = datetime.now(timezone.utc)
    with hub.unit_of_work() as uow:
        uow.session.add(Campaign(partner_id=None, name="alliance week", funded_by="hub", multiplier=Decimal(1),
                                 bonus_points=50, min_amount_minor=0, starts_at=now - timedelta(days=1),
                                 ends_at=now + timedelta(days=1)))
        uow.commit()
    member = make_member(hub, now=wall_clock_partner_time())
    purchase = client.post(PURCHASES, purchase_payload("r-1", member.card_number, amount_minor=12_345))
    assert purchase.body["points"] == {"total": 173, "partner_funded": 123, "hub_funded": 50, "state": "active",
                                       "pending_until": None}

    # Cumulative floors: partner 29, 59, 123 and hub 12, 24, 50 after 3,000, 6,000 and
    # 12,345 refunded; per-refund floors would have left 2 partner points behind.
    replies = [_refund(client, "r-1", "rf-1", 3_000), _refund(client, "r-1", "rf-2", 3_000),
               _refund(client, "r-1", "rf-3", 6_345)]

    assert [reply.status for reply in replies] == [201, 201, 201]
    assert [reply.body["points_recovered"] for reply in replies] == [29 + 12, 30 + 12, 64 + 26]
    assert [reply.body["points_unrecovered"] for reply in replies] == [0, 0, 0]
    assert [reply.body["purchase"]["refunded_amount_minor"] for reply in replies] == [3_000, 6_000, 12_345]
    assert sum(reply.body["points_recovered"] for reply in replies) == 173
    assert balances(hub, member.member_id) == {"available": 0, "pending": 0, "held": 0}
    totals = audit_totals(hub)
    assert totals["points_partner_issued"] == 0, "the partner is credited back every point it funded"
    assert totals["points_hub_marketing"] == 0, "the hub is credited back every point it funded"
    with hub.unit_of_work() as uow:
        assert uow.session.scalars(select(PointLot.points_remaining)).all() == [0, 0]

    # Nothing is left to refund.
    before = books(hub)
    over = _refund(client, "r-1", "rf-4", 1)
    assert (over.status, over.body["code"]) == (422, "validation_failed")
    assert_books_unchanged(hub, before)


def test_a_refund_inside_the_return_window_takes_the_pending_points_and_leaves_spendable_ones(app):
    hub, partner, client = _setup(app, return_window_days=14)
    member = make_member(hub, now=wall_clock_partner_time())
    fund_member(hub, member_id=member.member_id, partner_id=partner.partner_id, points=500)
    assert client.post(PURCHASES, purchase_payload("r-1", member.card_number, amount_minor=12_345)).status == 201
    assert balances(hub, member.member_id) == {"available": 500, "pending": 123, "held": 0}

    half = _refund(client, "r-1", "rf-1", 6_000)

    assert (half.status, half.body["points_recovered"], half.body["points_unrecovered"]) == (201, 59, 0)
    assert balances(hub, member.member_id) == {"available": 500, "pending": 64, "held": 0}
    rest = _refund(client, "r-1", "rf-2", 6_345)
    assert (rest.status, rest.body["points_recovered"]) == (201, 64)
    assert balances(hub, member.member_id) == {"available": 500, "pending": 0, "held": 0}
    audit_totals(hub)


def test_refunding_a_purchase_whose_points_were_spent_recovers_what_is_left_and_never_overdraws(app):
    hub, partner, client = _setup(app)
    member = make_member_with_pin(hub, now=wall_clock_partner_time())
    assert client.post(PURCHASES, purchase_payload("r-1", member.card_number, amount_minor=12_345)).status == 201
    assert client.post("/partner/v1/redemptions", {"reference": "red-1", "points": 100,
                                                   "card_number": member.card_number, "pin": "2468"}).status == 201
    assert client.post("/partner/v1/redemptions/red-1/capture", {"points": 100}).status == 200

    refund = _refund(client, "r-1", "rf-1", 12_345)

    # 23 points were still there; the 100 already spent stay spent and are reported.
    assert (refund.status, refund.body["points_recovered"], refund.body["points_unrecovered"]) == (201, 23, 100)
    assert balances(hub, member.member_id) == {"available": 0, "pending": 0, "held": 0}
    assert client.get(f"{PURCHASES}/r-1").body["refunded_amount_minor"] == 12_345
    audit_totals(hub)


def test_a_refund_exceeding_what_is_left_of_the_purchase_or_of_an_unknown_receipt_is_refused(app):
    hub, partner, client = _setup(app)
    member = make_member(hub, now=wall_clock_partner_time())
    assert client.post(PURCHASES, purchase_payload("r-1", member.card_number, amount_minor=12_345)).status == 201
    before_any = books(hub)
    too_much = _refund(client, "r-1", "rf-1", 12_346)
    assert (too_much.status, too_much.body["code"]) == (422, "validation_failed")
    assert too_much.body["errors"] == {"amount_minor": ["exceeds what is left to refund"]}
    assert_books_unchanged(hub, before_any)

    assert _refund(client, "r-1", "rf-2", 10_000).status == 201
    after_partial = books(hub)
    rest_plus_one = _refund(client, "r-1", "rf-3", 2_346)
    unknown_receipt = _refund(client, "r-never", "rf-4", 100)
    assert (rest_plus_one.status, rest_plus_one.body["code"]) == (422, "validation_failed")
    assert (unknown_receipt.status, unknown_receipt.body["code"]) == (404, "not_found")
    assert_books_unchanged(hub, after_partial)


def test_a_refund_id_is_used_once_per_partner(app):
    hub, partner, client = _setup(app)
    member, other_member = (make_member(hub, now=wall_clock_partner_time()),
                            make_member(hub, now=wall_clock_partner_time()))
    assert client.post(PURCHASES, purchase_payload("r-1", member.card_number)).status == 201
    assert client.post(PURCHASES, purchase_payload("r-2", other_member.card_number)).status == 201
    assert _refund(client, "r-1", "rf-1", 1_000).status == 201
    before = books(hub)

    # New idempotency keys: these are new refund requests, not retries.
    same_purchase = _refund(client, "r-1", "rf-1", 1_000)
    other_purchase = _refund(client, "r-2", "rf-1", 1_000)

    assert (same_purchase.status, same_purchase.body["code"]) == (409, "refund_already_recorded")
    assert (other_purchase.status, other_purchase.body["code"]) == (409, "refund_already_recorded")
    assert_books_unchanged(hub, before)
