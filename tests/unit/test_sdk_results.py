"""Typed results parsed from the hub's JSON, and requests checked before they are sent."""

from __future__ import annotations

import dataclasses
import json
from datetime import datetime, timezone
from decimal import Decimal

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from partners_sdk import (
    AllianceClient,
    Balance,
    BatchResult,
    InsufficientPointsError,
    InvalidRequestError,
    Purchase,
    PurchaseRefund,
    Redemption,
    UnexpectedReplyError,
)
from partners_sdk.results import to_json_ready
from tests.sdk_support import FakeTransport, RecordingSleep, json_reply, problem_reply, purchase_json

NOW = datetime(2026, 11, 2, 9, 30, tzinfo=timezone.utc)
CARD = "6390000000000013"
REDEMPTION = {"reference": "red-1", "status": "captured", "points_held": 200, "points_captured": 150,
              "points_refunded": 0, "created_at": "2026-11-02T09:30:00+00:00",
              "expires_at": "2026-11-02T09:45:00+00:00", "closed_at": "2026-11-02T09:31:00+00:00", "terminal": None}


def client_answering(*replies) -> tuple[AllianceClient, FakeTransport]:  # type: ignore[no-untyped-def]
    transport = FakeTransport(list(replies))
    client = AllianceClient("http://hub.test/", "till-1", Ed25519PrivateKey.generate(), transport=transport,
                            sleep=RecordingSleep(), clock=lambda: NOW)
    return client, transport


def test_a_purchase_reply_becomes_a_frozen_typed_purchase_with_its_breakdown():
    purchase = Purchase.from_json(purchase_json("r-1", points_total=225))
    assert purchase.points.total == 225 and purchase.points.state == "active"
    assert purchase.breakdown.ladder_multiplier == Decimal("1.5")
    assert purchase.breakdown.base_points_per_unit == Decimal("1.0000")
    assert purchase.purchased_at == datetime(2026, 11, 2, 9, 29, tzinfo=timezone.utc)
    assert type(purchase.amount_minor) is int
    with pytest.raises(dataclasses.FrozenInstanceError):
        purchase.amount_minor = 1  # type: ignore[misc]


def test_fields_the_hub_adds_later_are_ignored_and_missing_ones_are_refused():
    assert Purchase.from_json({**purchase_json(), "loyalty_tier_after": "gold"}).receipt_id == "r-1"
    broken = purchase_json()
    del broken["points"]["total"]
    with pytest.raises(UnexpectedReplyError):
        Purchase.from_json(broken)
    with pytest.raises(UnexpectedReplyError):
        Purchase.from_json({**purchase_json(), "amount_minor": 150.0})
    with pytest.raises(UnexpectedReplyError):
        Purchase.from_json({**purchase_json(), "reported_at": "2026-11-02T09:30:00"})


def test_every_operation_returns_its_typed_result_from_the_right_endpoint():
    refund = {"refund_id": "f-1", "amount_minor": 5_000, "points_recovered": 50, "points_unrecovered": 0,
              "created_at": "2026-11-02T09:35:00+00:00", "purchase": purchase_json()}
    balance = {"card_number": "••••0013", "tier": "gold", "points_available": 900, "points_pending": 10,
               "points_held": 0}
    client, transport = client_answering(
        json_reply(201, purchase_json()), json_reply(201, refund), json_reply(200, purchase_json()),
        json_reply(201, REDEMPTION), json_reply(200, REDEMPTION), json_reply(200, REDEMPTION),
        json_reply(200, REDEMPTION), json_reply(200, REDEMPTION), json_reply(200, balance))
    assert isinstance(client.report_purchase(receipt_id="r-1", card_number=CARD, amount_minor=15_000,
                                             currency="EUR"), Purchase)
    assert isinstance(client.refund_purchase("r-1", refund_id="f-1", amount_minor=5_000), PurchaseRefund)
    assert isinstance(client.get_purchase("r-1"), Purchase)
    assert isinstance(client.authorize_redemption(reference="red-1", points=200, redemption_code="ABC123"),
                      Redemption)
    assert isinstance(client.capture_redemption("red-1", points=150), Redemption)
    assert isinstance(client.void_redemption("red-1"), Redemption)
    assert isinstance(client.refund_redemption("red-1", refund_id="rr-1", points=10), Redemption)
    assert client.get_redemption("red-1").closed_at == datetime(2026, 11, 2, 9, 31, tzinfo=timezone.utc)
    assert client.get_balance(card_number=CARD, pin="1234") == Balance("••••0013", "gold", 900, 10, 0)
    assert [(attempt.method, attempt.url.removeprefix("http://hub.test")) for attempt in transport.attempts] == [
        ("POST", "/partner/v1/purchases"), ("POST", "/partner/v1/purchases/r-1/refunds"),
        ("GET", "/partner/v1/purchases/r-1"), ("POST", "/partner/v1/redemptions"),
        ("POST", "/partner/v1/redemptions/red-1/capture"), ("POST", "/partner/v1/redemptions/red-1/void"),
        ("POST", "/partner/v1/redemptions/red-1/refunds"), ("GET", "/partner/v1/redemptions/red-1"),
        ("POST", "/partner/v1/balance-inquiries")]
    assert json.loads(transport.attempts[3].body) == {"reference": "red-1", "points": 200,
                                                      "redemption_code": "ABC123"}
    assert json.loads(transport.attempts[5].body) == {}


def test_a_batch_reply_has_a_result_per_item():
    problem = {"status": 404, "code": "not_found", "title": "Not found", "detail": "no card", "request_id": "q"}
    batch = BatchResult.from_json({"applied": 1, "rejected": 1, "results": [
        {"index": 0, "receipt_id": "r-1", "status": "applied", "purchase": purchase_json(), "problem": None},
        {"index": 1, "receipt_id": "r-2", "status": "rejected", "purchase": None, "problem": problem}]})
    assert [item.applied for item in batch.results] == [True, False]
    assert batch.results[1].problem.code == "not_found"
    assert batch.results[0].purchase.points.total == 150


def test_insufficient_points_has_its_own_error_class():
    client, _ = client_answering(problem_reply(422, "insufficient_points"))
    with pytest.raises(InsufficientPointsError):
        client.authorize_redemption(reference="red-1", points=10**6, card_number=CARD, pin="1234")


@pytest.mark.parametrize("arguments", [
    {"amount_minor": 150.0}, {"amount_minor": True}, {"amount_minor": 0}, {"currency": "eur"},
    {"card_number": "1234"}, {"receipt_id": "has space"}, {"purchased_at": datetime(2026, 11, 2, 9, 0)},
])
def test_a_malformed_purchase_is_refused_before_anything_is_sent(arguments):
    client, transport = client_answering()
    values = {"receipt_id": "r-1", "card_number": CARD, "amount_minor": 15_000, "currency": "EUR", **arguments}
    with pytest.raises(InvalidRequestError) as refused:
        client.report_purchase(**values)
    assert refused.value.http_status is None and refused.value.field_errors
    assert transport.attempts == []


def test_member_proof_must_be_card_and_pin_or_a_code_alone():
    client, transport = client_answering()
    for proof in ({"card_number": CARD}, {"card_number": CARD, "pin": "1234", "redemption_code": "ABC123"}, {}):
        with pytest.raises(InvalidRequestError):
            client.authorize_redemption(reference="red-1", points=10, **proof)
    assert transport.attempts == []


def test_a_success_without_json_is_an_unexpected_reply():
    client, _ = client_answering((200, {}, b"<html>proxy</html>"))
    with pytest.raises(UnexpectedReplyError):
        client.get_purchase("r-1")


def test_results_turn_into_plain_json_without_floats():
    ready = to_json_ready(Purchase.from_json(purchase_json()))
    assert ready["breakdown"]["ladder_multiplier"] == "1.5"
    assert ready["purchased_at"] == "2026-11-02T09:29:00+00:00"
    json.dumps(ready)
