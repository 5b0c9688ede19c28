"""Malformed partner input is refused with 422 validation_failed, naming the field, and changes nothing.

Schema errors (unknown fields, floats for integers, formats) are caught at the edge;
some checks need data (the card's check digit, the partner's currency) and come from
the services with the same problem shape. All of it happens after the signature
passed: these requests are correctly signed, so the 422 is about the body alone.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

from alliance.extensions import hub_state
from tests.factories import make_member_with_pin, make_signing_partner
from tests.http_server import api_traces, assert_books_unchanged, books, purchase_payload, wall_clock_partner_time
from tests.partner_client import SignedTestClient
from tests.signing import sign_request

PURCHASES = "/partner/v1/purchases"
REDEMPTIONS = "/partner/v1/redemptions"
PIN = "2468"


def _cases(card_number: str) -> list[tuple[str, str, dict, str]]:  # type: ignore[type-arg]
    """(name, path, body, field named in the problem's errors)."""
    purchase = purchase_payload("r-1", card_number)
    authorize = {"reference": "red-1", "points": 10, "card_number": card_number, "pin": PIN}
    wrong_digit = card_number[:-1] + str((int(card_number[-1]) + 1) % 10)
    return [
        ("unknown_field", PURCHASES, dict(purchase, coupon="FREE"), "coupon"),
        ("mass_assigned_points", PURCHASES, dict(purchase, points_partner=10_000), "points_partner"),
        ("float_amount", PURCHASES, dict(purchase, amount_minor=100.5), "amount_minor"),
        ("integral_float_amount", PURCHASES, dict(purchase, amount_minor=100.0), "amount_minor"),
        ("string_amount", PURCHASES, dict(purchase, amount_minor="100"), "amount_minor"),
        ("zero_amount", PURCHASES, dict(purchase, amount_minor=0), "amount_minor"),
        ("missing_card", PURCHASES, {k: v for k, v in purchase.items() if k != "card_number"}, "card_number"),
        ("card_check_digit_wrong", PURCHASES, dict(purchase, card_number=wrong_digit), "card_number"),
        ("wrong_currency", PURCHASES, dict(purchase, currency="USD"), "currency"),
        ("lower_case_currency", PURCHASES, dict(purchase, currency="eur"), "currency"),
        ("purchased_at_without_offset", PURCHASES,
         dict(purchase, purchased_at=datetime.now().replace(tzinfo=None).isoformat()), "purchased_at"),
        ("purchased_at_tomorrow", PURCHASES,
         dict(purchase, purchased_at=(datetime.now(timezone.utc) + timedelta(days=1)).isoformat()), "purchased_at"),
        ("receipt_id_with_a_slash", PURCHASES, dict(purchase, receipt_id="r/1"), "receipt_id"),
        # Valid with their offsets, but before year 1 or after year 9999 in UTC.
        ("purchased_at_before_year_1_in_utc", PURCHASES, dict(purchase, purchased_at="0001-01-01T00:00:00+00:01"),
         "purchased_at"),
        ("purchased_at_after_year_9999_in_utc", PURCHASES, dict(purchase, purchased_at="9999-12-31T23:59:59-00:01"),
         "purchased_at"),
        # Python's $ also matches before a final newline; the patterns must not.
        ("card_with_a_final_newline", PURCHASES, dict(purchase, card_number=card_number + "\n"), "card_number"),
        ("receipt_id_with_a_final_newline", PURCHASES, dict(purchase, receipt_id="r-1\n"), "receipt_id"),
        ("currency_with_a_final_newline", PURCHASES, dict(purchase, currency=purchase["currency"] + "\n"), "currency"),
        ("pin_with_a_final_newline", REDEMPTIONS, dict(authorize, pin=PIN + "\n"), "pin"),
        ("reference_with_a_final_newline", REDEMPTIONS, dict(authorize, reference="red-1\n"), "reference"),
        ("negative_points", REDEMPTIONS, dict(authorize, points=-10), "points"),
        ("ttl_below_30_s", REDEMPTIONS, dict(authorize, ttl_s=5), "ttl_s"),
        ("pin_without_card", REDEMPTIONS, {k: v for k, v in authorize.items() if k != "card_number"}, "pin"),
        ("no_member_proof", REDEMPTIONS, {"reference": "red-1", "points": 10}, "pin"),
        ("zero_capture", f"{REDEMPTIONS}/red-1/capture", {"points": 0}, "points"),
        ("field_on_a_void", f"{REDEMPTIONS}/red-1/void", {"points": 10}, "points"),
        ("refund_without_id", f"{PURCHASES}/r-1/refunds", {"amount_minor": 100}, "refund_id"),
    ]


def test_each_malformed_request_is_a_422_naming_its_field_and_changes_nothing(app, subtests):
    hub = hub_state(app)
    partner = make_signing_partner(hub, now=wall_clock_partner_time())
    member = make_member_with_pin(hub, now=wall_clock_partner_time(), pin=PIN)
    client = SignedTestClient(app, partner)
    for name, path, body, field in _cases(member.card_number):
        with subtests.test(msg=name, field=field):
            before = books(hub)
            reply = client.post(path, body)
            assert reply.status == 422, reply.body
            assert reply.headers["Content-Type"] == "application/problem+json"
            assert reply.body["code"] == "validation_failed"
            assert field in reply.body["errors"], reply.body
            assert reply.body["request_id"] == reply.headers["X-Request-Id"]
            assert_books_unchanged(hub, before)


def test_idempotency_key_rules_are_enforced(app):
    hub = hub_state(app)
    partner = make_signing_partner(hub, now=wall_clock_partner_time())
    member = make_member_with_pin(hub, now=wall_clock_partner_time(), pin=PIN)
    client = SignedTestClient(app, partner)
    body = json.dumps(purchase_payload("r-1", member.card_number)).encode()
    before, traces_before = books(hub), api_traces(hub)

    # No key at all: the signature cannot cover a header that is not there, so the
    # signature layer refuses it before any body or key validation.
    unsigned_key = sign_request(method="POST", url="http://localhost" + PURCHASES, body=body, key_id=partner.key_id,
                                private_key=partner.private_key,
                                components=["@method", "@path", "@query", "content-type", "content-digest"])
    assert "Idempotency-Key" not in unsigned_key
    missing = client.client.post(PURCHASES, data=body, headers=unsigned_key)
    assert (missing.status_code, missing.get_json()["code"]) == (401, "signature_components")
    assert_books_unchanged(hub, before)
    assert api_traces(hub) == traces_before

    # A signed key that is not 1-255 visible ASCII characters is a validation failure.
    for bad_key in ("has space", "x" * 256):
        reply = client.post(PURCHASES, json.loads(body), idempotency_key=bad_key)
        assert (reply.status, reply.body["code"]) == (422, "validation_failed"), bad_key
        assert reply.body["errors"] == {"Idempotency-Key": ["bad format"]}
    assert_books_unchanged(hub, before)
