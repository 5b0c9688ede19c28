"""The SDK's behaviour event call against scripted replies: the body it signs, the typed event it returns, a
stored event told apart, retries under one idempotency key, and refusals raised before anything is sent."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from partners_sdk import AllianceClient, ConflictError, Event, InvalidRequestError
from partners_sdk.transport import TransportError
from tests.sdk_support import FakeTransport, RecordingSleep, json_reply, problem_reply

NOW = datetime(2026, 11, 2, 9, 30, tzinfo=timezone.utc)
CARD = "6390000000000013"
MEMBER = "0123456789abcdef"
EVENT = {"event_id": "ev-1", "event_type": "referral", "member_number": MEMBER,
         "occurred_at": "2026-11-02T09:30:00+00:00", "amount_minor": None, "currency": None,
         "referred_member": "fedcba9876543210", "status": "awarded", "reason": None, "points_awarded": 100,
         "streak_day": None, "reported_at": "2026-11-02T09:30:01+00:00",
         "awards": [{"member_number": MEMBER, "side": "referrer", "points": 100, "streak_bonus_points": 0,
                     "funded_by": "hub", "awarded_at": "2026-11-03T10:00:00+00:00"}]}


def client_answering(*replies) -> tuple[AllianceClient, FakeTransport]:  # type: ignore[no-untyped-def]
    transport = FakeTransport(list(replies))
    client = AllianceClient("http://hub.test/", "till-1", Ed25519PrivateKey.generate(), transport=transport,
                            sleep=RecordingSleep(), clock=lambda: NOW)
    return client, transport


def test_an_event_is_posted_signed_with_its_body_and_parsed_into_a_typed_event():
    client, transport = client_answering(json_reply(201, EVENT))
    event = client.report_event(event_id="ev-1", event_type="referral", member_number=MEMBER,
                                referred_member="fedcba9876543210")
    assert isinstance(event, Event) and not event.already_reported
    assert (event.status, event.points_awarded, event.awards[0].side) == ("awarded", 100, "referrer")
    attempt = transport.attempts[0]
    assert (attempt.method, attempt.url) == ("POST", "http://hub.test/partner/v1/events")
    assert json.loads(attempt.body) == {"event_id": "ev-1", "event_type": "referral", "member_number": MEMBER,
                                        "referred_member": "fedcba9876543210",
                                        "occurred_at": "2026-11-02T09:30:00+00:00"}
    assert "Signature" in attempt.headers and attempt.headers["Idempotency-Key"]


def test_a_stored_event_is_told_apart_and_a_lost_reply_is_retried_under_the_same_key():
    client, transport = client_answering(TransportError("reset"), json_reply(200, EVENT))
    event = client.report_event(event_id="ev-1", event_type="survey", card_number=CARD)
    assert event.already_reported
    keys = {attempt.headers["Idempotency-Key"] for attempt in transport.attempts}
    assert len(transport.attempts) == 2 and len(keys) == 1


def test_another_event_under_a_used_event_id_is_a_conflict():
    client, _ = client_answering(problem_reply(409, "event_already_reported"))
    with pytest.raises(ConflictError) as raised:
        client.report_event(event_id="ev-1", event_type="survey", card_number=CARD)
    assert raised.value.code == "event_already_reported"


@pytest.mark.parametrize("arguments", [
    {"event_type": "birthday", "card_number": CARD},
    {"event_type": "survey"},
    {"event_type": "survey", "card_number": CARD, "member_number": MEMBER},
    {"event_type": "recharge", "card_number": CARD, "amount_minor": 0, "currency": "EUR"},
    {"event_type": "referral", "card_number": CARD, "referred_member": "not a member"},
])
def test_malformed_events_are_refused_before_anything_is_sent(arguments):
    client, transport = client_answering()
    with pytest.raises(InvalidRequestError):
        client.report_event(event_id="ev-1", **arguments)
    assert transport.attempts == []
