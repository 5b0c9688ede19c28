"""Idempotency keys over the whole HTTP stack: one effect per key, the stored reply on retry.

Every retry here is signed afresh (new nonce), exactly as a till retrying after a
timeout would do; the signature layer's replay guard is tested elsewhere. Concurrent
retries over real HTTP are in ``test_partner_api_http.py``.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from sqlalchemy import func, select

from alliance.extensions import hub_state
from alliance.models import Card, IdempotencyRecord, Purchase, RedemptionHold
from alliance.services.member_verification import MAX_PIN_FAILURES
from tests.factories import make_member_with_pin, make_signing_partner
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
from tests.signing import sign_request

PURCHASES = "/partner/v1/purchases"
REDEMPTIONS = "/partner/v1/redemptions"
PIN = "2468"


@pytest.fixture
def shop(app):  # type: ignore[no-untyped-def]
    hub = hub_state(app)
    created = wall_clock_partner_time()
    partner = make_signing_partner(hub, now=created, code="shop")
    member = make_member_with_pin(hub, now=created, pin=PIN)
    return SimpleNamespace(app=app, hub=hub, partner=partner, member=member, client=SignedTestClient(app, partner),
                           http=app.test_client())


def _post_raw(shop, path: str, payload: dict, key: str, partner=None):  # type: ignore[no-untyped-def, type-arg]
    """POST signed afresh under ``key``; the raw Flask response, so bodies compare byte for byte."""
    partner = partner or shop.partner
    body = json.dumps(payload).encode()
    headers = sign_request(method="POST", url="http://localhost" + path, body=body, key_id=partner.key_id,
                           private_key=partner.private_key, idempotency_key=key)
    return shop.http.post(path, data=body, headers=headers)


def _count(hub, model) -> int:  # type: ignore[no-untyped-def]
    with hub.unit_of_work() as uow:
        return uow.session.scalar(select(func.count()).select_from(model))


def test_a_retry_with_the_same_key_gets_the_stored_reply_byte_for_byte_and_no_second_effect(shop):
    payload = purchase_payload("r-1", shop.member.card_number)

    first = _post_raw(shop, PURCHASES, payload, "key-1")
    after_first = books(shop.hub)
    retry = _post_raw(shop, PURCHASES, payload, "key-1")

    assert (first.status_code, first.headers["Idempotent-Replayed"]) == (201, "false")
    assert (retry.status_code, retry.headers["Idempotent-Replayed"]) == (201, "true")
    assert retry.get_data() == first.get_data()
    assert retry.content_type == first.content_type == "application/json"
    assert_books_unchanged(shop.hub, after_first)
    assert _count(shop.hub, Purchase) == 1
    assert balances(shop.hub, shop.member.member_id)["available"] == 123


def test_a_retried_capture_replays_its_success_instead_of_failing_as_already_captured(shop):
    fund_member(shop.hub, member_id=shop.member.member_id, partner_id=shop.partner.partner_id, points=300)
    assert shop.client.post(REDEMPTIONS, {"reference": "red-1", "points": 100, "card_number": shop.member.card_number,
                                          "pin": PIN}).status == 201
    first = _post_raw(shop, f"{REDEMPTIONS}/red-1/capture", {"points": 100}, "capture-1")
    after_first = books(shop.hub)

    retry = _post_raw(shop, f"{REDEMPTIONS}/red-1/capture", {"points": 100}, "capture-1")
    fresh_key = _post_raw(shop, f"{REDEMPTIONS}/red-1/capture", {"points": 100}, "capture-2")

    assert first.status_code == 200 and retry.status_code == 200
    assert retry.get_data() == first.get_data() and retry.headers["Idempotent-Replayed"] == "true"
    # Only a new key is a new attempt, and that one meets the captured hold.
    assert (fresh_key.status_code, fresh_key.get_json()["code"]) == (409, "invalid_state")
    assert_books_unchanged(shop.hub, after_first)
    assert audit_totals(shop.hub)["points_partner_redeemed"] == 100


def test_a_failed_operation_is_stored_and_replayed_even_after_it_would_succeed(shop):
    request = {"reference": "red-1", "points": 100, "card_number": shop.member.card_number, "pin": PIN}
    before = books(shop.hub)

    refused = _post_raw(shop, REDEMPTIONS, request, "key-1")
    assert (refused.status_code, refused.get_json()["code"]) == (422, "insufficient_points")
    assert_books_unchanged(shop.hub, before)

    # The member now has enough; the retry must still get the stored refusal, not a hold.
    fund_member(shop.hub, member_id=shop.member.member_id, partner_id=shop.partner.partner_id, points=300)
    funded = books(shop.hub)
    retry = _post_raw(shop, REDEMPTIONS, request, "key-1")

    assert retry.status_code == 422 and retry.headers["Idempotent-Replayed"] == "true"
    assert retry.content_type == "application/problem+json"
    assert retry.get_data() == refused.get_data()
    assert_books_unchanged(shop.hub, funded)
    assert _count(shop.hub, RedemptionHold) == 0
    # Proof that the retry was a replay and not a fresh refusal: a new key now succeeds.
    assert _post_raw(shop, REDEMPTIONS, request, "key-2").status_code == 201


def test_a_key_reused_for_a_different_request_is_refused_and_changes_nothing(shop):
    payload = purchase_payload("r-1", shop.member.card_number)
    original = _post_raw(shop, PURCHASES, payload, "key-1")
    assert original.status_code == 201
    before = books(shop.hub)

    other_body = _post_raw(shop, PURCHASES, dict(payload, receipt_id="r-2"), "key-1")
    other_path = _post_raw(shop, f"{PURCHASES}/r-1/refunds", {"refund_id": "rf-1", "amount_minor": 100}, "key-1")

    for reply in (other_body, other_path):
        assert (reply.status_code, reply.get_json()["code"]) == (422, "idempotency_key_reused")
    assert_books_unchanged(shop.hub, before)
    # The key still belongs to the original request, which replays unchanged.
    assert _post_raw(shop, PURCHASES, payload, "key-1").get_data() == original.get_data()


def test_idempotency_keys_are_scoped_to_the_partner(shop):
    rival = make_signing_partner(shop.hub, now=wall_clock_partner_time(), code="rival")
    payload = purchase_payload("r-1", shop.member.card_number)
    assert _post_raw(shop, PURCHASES, payload, "shared-key").status_code == 201

    # Same key, same bytes, another partner: its own first request, not the shop's replay.
    rivals = _post_raw(shop, PURCHASES, payload, "shared-key", partner=rival)

    assert (rivals.status_code, rivals.headers["Idempotent-Replayed"]) == (201, "false")
    assert _count(shop.hub, Purchase) == 2
    with shop.hub.unit_of_work() as uow:
        owners = uow.session.scalars(select(IdempotencyRecord.partner_id).order_by(IdempotencyRecord.partner_id)).all()
    assert owners == sorted([shop.partner.partner_id, rival.partner_id])


def test_a_retry_of_a_completed_pin_authorization_gets_its_stored_reply_even_after_the_card_locks(shop):
    fund_member(shop.hub, member_id=shop.member.member_id, partner_id=shop.partner.partner_id, points=300)
    request = {"reference": "red-1", "points": 100, "card_number": shop.member.card_number, "pin": PIN}
    first = _post_raw(shop, REDEMPTIONS, request, "key-1")
    assert first.status_code == 201
    # The till's connection dropped; meanwhile someone tries wrong PINs on the card elsewhere.
    for attempt in range(MAX_PIN_FAILURES):
        shop.client.post(REDEMPTIONS, {"reference": f"thief-{attempt}", "points": 1,
                                       "card_number": shop.member.card_number, "pin": "0000"})
    held = books(shop.hub)

    retry = _post_raw(shop, REDEMPTIONS, request, "key-1")

    assert_books_unchanged(shop.hub, held)
    assert retry.status_code == 201, retry.get_json()
    assert retry.headers["Idempotent-Replayed"] == "true"
    assert retry.get_data() == first.get_data()


def test_a_retried_wrong_pin_request_replays_its_refusal_without_counting_another_failure(shop):
    # A till retrying after a timeout must not burn the member's PIN attempts.
    request = {"reference": "red-1", "points": 10, "card_number": shop.member.card_number, "pin": "0000"}
    before = books(shop.hub)

    first = _post_raw(shop, REDEMPTIONS, request, "key-1")
    retry = _post_raw(shop, REDEMPTIONS, request, "key-1")

    assert (first.status_code, first.get_json()["code"]) == (403, "member_not_verified")
    assert (retry.status_code, retry.headers["Idempotent-Replayed"]) == (403, "true")
    assert retry.get_data() == first.get_data()
    with shop.hub.unit_of_work() as uow:
        assert uow.session.scalar(select(Card.failed_pin_attempts).where(Card.id == shop.member.card_id)) == 1
    assert_books_unchanged(shop.hub, before)
