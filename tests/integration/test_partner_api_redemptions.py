"""Redemptions through the partner API: member proof, holds, capture, void, expiry, refunds.

The member starts with 300 spendable points earned at another partner, so every
redemption here crosses partners the way the alliance is meant to work.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

import pytest

from alliance.extensions import hub_state
from alliance.services import ledger
from alliance.services.member_verification import MAX_PIN_FAILURES, issue_redemption_code
from tests.factories import make_member, make_member_with_pin, make_signing_partner
from tests.http_server import (
    HubClock,
    assert_books_unchanged,
    audit_totals,
    balances,
    books,
    fund_member,
    wall_clock_partner_time,
)
from tests.partner_client import SignedTestClient

REDEMPTIONS = "/partner/v1/redemptions"
BALANCE = "/partner/v1/balance-inquiries"
PIN = "2468"


@pytest.fixture
def shop(app):  # type: ignore[no-untyped-def]
    """A redeeming shop, an issuer elsewhere, and a member with 300 points from the issuer."""
    hub = hub_state(app)
    created = wall_clock_partner_time()
    partner = make_signing_partner(hub, now=created, code="shop")
    issuer = make_signing_partner(hub, now=created, code="issuer")
    member = make_member_with_pin(hub, now=created, pin=PIN)
    fund_member(hub, member_id=member.member_id, partner_id=issuer.partner_id, points=300)
    return SimpleNamespace(app=app, hub=hub, partner=partner, member=member, client=SignedTestClient(app, partner))


def _authorize(shop, reference: str, points: int, **proof):  # type: ignore[no-untyped-def]
    proof = proof or {"card_number": shop.member.card_number, "pin": PIN}
    return shop.client.post(REDEMPTIONS, {"reference": reference, "points": points, **proof})


def _balances(shop) -> dict[str, int]:  # type: ignore[no-untyped-def]
    return balances(shop.hub, shop.member.member_id)


def test_card_and_pin_authorize_a_hold_that_reads_back_the_same_and_its_reference_is_spent(shop):
    reply = _authorize(shop, "red-1", 100)

    assert reply.status == 201
    assert {key: reply.body[key] for key in ("reference", "status", "points_held", "points_captured",
                                             "points_refunded", "closed_at")} == {
        "reference": "red-1", "status": "authorized", "points_held": 100, "points_captured": 0,
        "points_refunded": 0, "closed_at": None}
    created_at, expires_at = (datetime.fromisoformat(reply.body[key]) for key in ("created_at", "expires_at"))
    assert expires_at - created_at == timedelta(seconds=shop.app.extensions["alliance"].settings.hold_ttl_s)
    assert _balances(shop) == {"available": 200, "pending": 0, "held": 100}
    assert shop.client.get(f"{REDEMPTIONS}/red-1").body == reply.body
    audit_totals(shop.hub)

    before = books(shop.hub)
    same_reference = _authorize(shop, "red-1", 10)
    beyond_balance = _authorize(shop, "red-2", 201)
    assert (same_reference.status, same_reference.body["code"]) == (409, "reference_already_used")
    assert (beyond_balance.status, beyond_balance.body["code"]) == (422, "insufficient_points")
    assert_books_unchanged(shop.hub, before)


def test_wrong_pins_are_refused_and_the_fifth_locks_the_card_even_against_the_right_pin(shop):
    before = books(shop.hub)
    wrong = [_authorize(shop, f"red-{attempt}", 10, card_number=shop.member.card_number, pin="0000")
             for attempt in range(MAX_PIN_FAILURES)]
    assert {reply.status for reply in wrong} == {403}
    assert [reply.body["code"] for reply in wrong] == ["member_not_verified"] * (MAX_PIN_FAILURES - 1) + ["pin_locked"]
    assert_books_unchanged(shop.hub, before)

    right_pin = _authorize(shop, "red-right", 10)
    inquiry = shop.client.post(BALANCE, {"card_number": shop.member.card_number, "pin": PIN})

    assert (right_pin.status, right_pin.body["code"]) == (403, "pin_locked")
    assert (inquiry.status, inquiry.body["code"]) == (403, "pin_locked")
    assert_books_unchanged(shop.hub, before)


def test_a_one_time_code_proves_the_member_exactly_once(shop):
    with shop.hub.unit_of_work() as uow:
        code, _ = issue_redemption_code(uow.session, member_id=shop.member.member_id, now=datetime.now(timezone.utc))
        uow.commit()
    before = books(shop.hub)

    # A redemption refused for lack of points rolls back with the code: it is not used up.
    too_much = _authorize(shop, "red-0", 301, redemption_code=code)
    assert (too_much.status, too_much.body["code"]) == (422, "insufficient_points")
    assert_books_unchanged(shop.hub, before)  # books() counts used redemption codes too

    first = _authorize(shop, "red-1", 50, redemption_code=code)
    assert (first.status, first.body["points_held"]) == (201, 50)
    before_second = books(shop.hub)
    second = _authorize(shop, "red-2", 50, redemption_code=code)

    assert (second.status, second.body["code"]) == (403, "member_not_verified")
    assert_books_unchanged(shop.hub, before_second)
    assert _balances(shop) == {"available": 250, "pending": 0, "held": 50}


def test_partial_capture_spends_part_and_releases_the_rest_once(shop):
    assert _authorize(shop, "red-1", 100).status == 201
    before_capture = books(shop.hub)
    beyond_hold = shop.client.post(f"{REDEMPTIONS}/red-1/capture", {"points": 101})
    assert (beyond_hold.status, beyond_hold.body["code"]) == (422, "validation_failed")
    assert_books_unchanged(shop.hub, before_capture)

    captured = shop.client.post(f"{REDEMPTIONS}/red-1/capture", {"points": 60})

    assert captured.status == 200
    assert (captured.body["status"], captured.body["points_captured"]) == ("captured", 60)
    assert captured.body["closed_at"] is not None
    assert _balances(shop) == {"available": 240, "pending": 0, "held": 0}
    assert audit_totals(shop.hub)["points_partner_redeemed"] == 60

    before = books(shop.hub)
    again = shop.client.post(f"{REDEMPTIONS}/red-1/capture", {"points": 40})
    void_after = shop.client.post(f"{REDEMPTIONS}/red-1/void", {})
    assert (again.status, again.body["code"]) == (409, "invalid_state")
    assert (void_after.status, void_after.body["code"]) == (409, "invalid_state")
    assert_books_unchanged(shop.hub, before)


def test_void_releases_every_held_point_and_closes_the_redemption(shop):
    assert _authorize(shop, "red-1", 100).status == 201

    voided = shop.client.post(f"{REDEMPTIONS}/red-1/void", {})

    assert voided.status == 200
    assert (voided.body["status"], voided.body["points_captured"]) == ("voided", 0)
    assert _balances(shop) == {"available": 300, "pending": 0, "held": 0}
    before = books(shop.hub)
    capture = shop.client.post(f"{REDEMPTIONS}/red-1/capture", {"points": 100})
    refund = shop.client.post(f"{REDEMPTIONS}/red-1/refunds", {"refund_id": "rf-1", "points": 1})
    assert (capture.status, capture.body["code"]) == (409, "invalid_state")
    assert (refund.status, refund.body["code"]) == (409, "invalid_state")
    assert_books_unchanged(shop.hub, before)
    assert audit_totals(shop.hub)["points_partner_redeemed"] == 0


def test_a_hold_past_its_ttl_cannot_be_captured_and_the_expiry_job_gives_its_points_back(shop, monkeypatch):
    clock = HubClock(monkeypatch)
    reply = shop.client.post(REDEMPTIONS, {"reference": "red-1", "points": 100, "ttl_s": 60,
                                           "card_number": shop.member.card_number, "pin": PIN},
                             created=clock.now())
    assert reply.status == 201
    expires_at = datetime.fromisoformat(reply.body["expires_at"])

    clock.advance(61)
    before = books(shop.hub)
    late_capture = shop.client.post(f"{REDEMPTIONS}/red-1/capture", {"points": 100}, created=clock.now())

    assert (late_capture.status, late_capture.body["code"]) == (409, "invalid_state")
    assert "expired" in late_capture.body["detail"]
    # Nothing was spent; the points stay held until the expiry job releases them.
    assert_books_unchanged(shop.hub, before)
    assert _balances(shop) == {"available": 200, "pending": 0, "held": 100}

    with shop.hub.unit_of_work() as uow:
        assert ledger.expire_holds(uow.session, now=expires_at - timedelta(seconds=1)) == 0
        assert ledger.expire_holds(uow.session, now=clock.now()) == 1
        uow.commit()

    assert _balances(shop) == {"available": 300, "pending": 0, "held": 0}
    assert shop.client.get(f"{REDEMPTIONS}/red-1", created=clock.now()).body["status"] == "expired"
    after_expiry = books(shop.hub)
    capture = shop.client.post(f"{REDEMPTIONS}/red-1/capture", {"points": 100}, created=clock.now())
    assert (capture.status, capture.body["code"]) == (409, "invalid_state")
    assert_books_unchanged(shop.hub, after_expiry)
    audit_totals(shop.hub)


def test_refunds_of_a_captured_redemption_give_points_back_up_to_what_was_captured(shop):
    assert _authorize(shop, "red-1", 100).status == 201
    assert shop.client.post(f"{REDEMPTIONS}/red-1/capture", {"points": 60}).status == 200

    first = shop.client.post(f"{REDEMPTIONS}/red-1/refunds", {"refund_id": "rf-1", "points": 20})

    assert (first.status, first.body["points_refunded"], first.body["status"]) == (200, 20, "captured")
    assert _balances(shop) == {"available": 260, "pending": 0, "held": 0}
    before = books(shop.hub)
    over = shop.client.post(f"{REDEMPTIONS}/red-1/refunds", {"refund_id": "rf-2", "points": 41})
    duplicate = shop.client.post(f"{REDEMPTIONS}/red-1/refunds", {"refund_id": "rf-1", "points": 20})
    assert (over.status, over.body["code"]) == (422, "validation_failed")
    assert (duplicate.status, duplicate.body["code"]) == (409, "refund_already_recorded")
    assert_books_unchanged(shop.hub, before)

    rest = shop.client.post(f"{REDEMPTIONS}/red-1/refunds", {"refund_id": "rf-3", "points": 40})
    assert (rest.status, rest.body["points_refunded"]) == (200, 60)
    assert _balances(shop) == {"available": 300, "pending": 0, "held": 0}
    assert audit_totals(shop.hub)["points_partner_redeemed"] == 0


def test_a_balance_inquiry_reports_available_pending_and_held_points(shop):
    fund_member(shop.hub, member_id=shop.member.member_id, partner_id=shop.partner.partner_id, points=40,
                pending_until=datetime.now(timezone.utc) + timedelta(days=14))
    assert _authorize(shop, "red-1", 120).status == 201
    before = books(shop.hub)

    reply = shop.client.post(BALANCE, {"card_number": shop.member.card_number, "pin": PIN})

    assert reply.status == 200
    assert reply.body == {"card_number": "•" * 12 + shop.member.card_number[-4:], "tier": "standard",
                          "points_available": 180, "points_pending": 40, "points_held": 120}
    assert "pin" not in reply.body
    assert_books_unchanged(shop.hub, before)


@pytest.mark.parametrize("with_pin", [False, True], ids=["card_and_code", "card_pin_and_code"])
@pytest.mark.parametrize("app", ["sqlite"], indirect=True)  # refused by the schema: the backend does not matter
def test_a_redemption_mixing_card_proof_and_a_one_time_code_is_refused(shop, with_pin):
    someone_else = make_member(shop.hub, now=wall_clock_partner_time())
    fund_member(shop.hub, member_id=someone_else.member_id, partner_id=shop.partner.partner_id, points=300)
    with shop.hub.unit_of_work() as uow:
        code, _ = issue_redemption_code(uow.session, member_id=someone_else.member_id,
                                        now=datetime.now(timezone.utc))
        uow.commit()
    before = books(shop.hub)
    proof = {"card_number": shop.member.card_number, "redemption_code": code, **({"pin": PIN} if with_pin else {})}

    reply = _authorize(shop, "red-1", 10, **proof)

    # Two proofs naming two different members: which one pays must not be guessed.
    assert_books_unchanged(shop.hub, before)
    assert (reply.status, reply.body["code"]) == (422, "validation_failed")
