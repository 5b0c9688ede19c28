"""Refusals a till meets at the counter, through the signed partner API: a way forward, and no internal ids."""

from __future__ import annotations

import json
import re

import pytest

from alliance.extensions import hub_state
from partners_sdk import (
    AllianceClient,
    ConflictError,
    InsufficientPointsError,
    InvalidRequestError,
    NotFoundError,
    Purchase,
    ReceiptAlreadyReportedError,
)
from partners_sdk.cli import main
from partners_sdk.keys import write_private_key
from tests.sdk_support import PIN, make_shop, purchase_rows, serve_in_thread

pytestmark = pytest.mark.postgresql
# How an internal row id would read in a sentence: "member 3", "hold 12", "account 7"...
INTERNAL_ID = re.compile(r"\b(member|members|hold|account|transaction|partner|lot|card|purchase)\s+#?\d+\b",
                         re.IGNORECASE)


def test_a_receipt_reported_twice_comes_back_with_the_purchase_the_hub_already_has(pg_app, tmp_path):
    hub = hub_state(pg_app)
    shop = make_shop(hub)
    with serve_in_thread(pg_app) as base_url:
        client = AllianceClient(base_url, shop.partner.key_id, shop.partner.private_key,
                                queue=tmp_path / "q.sqlite3")
        first = client.report_purchase(receipt_id="r-1", card_number=shop.card_number, amount_minor=15_000,
                                       currency="EUR")
        # A till restarted mid-sale reports it again, under a new idempotency key.
        with pytest.raises(ReceiptAlreadyReportedError) as again:
            client.report_purchase(receipt_id="r-1", card_number=shop.card_number, amount_minor=15_000,
                                   currency="EUR")
        client.close()
    assert isinstance(first, Purchase)
    error = again.value
    assert isinstance(error, ConflictError) and error.http_status == 409 and error.code == "receipt_already_reported"
    assert error.existing_purchase == first
    assert purchase_rows(hub, "r-1") == 1


def test_alliance_pos_prints_the_purchase_already_reported_with_the_refusal(pg_app, tmp_path, capsys):
    shop = make_shop(hub_state(pg_app))
    key_file = tmp_path / "till.pem"
    write_private_key(shop.partner.private_key, key_file)
    with serve_in_thread(pg_app) as base_url:
        purchase = ["purchase", "--hub", base_url, "--key-id", shop.partner.key_id, "--key-file", str(key_file),
                    "--receipt-id", "r-1", "--card", shop.card_number, "--amount-minor", "15000", "--currency", "EUR"]
        assert main(purchase) == 0
        capsys.readouterr()
        assert main(purchase) == 1
    refusal = json.loads(capsys.readouterr().err)
    assert refusal["code"] == "receipt_already_reported"
    assert refusal["existing_purchase"]["receipt_id"] == "r-1"
    assert refusal["existing_purchase"]["points"]["total"] == 150


def refusal_details(client: AllianceClient, card_number: str) -> dict[str, str]:
    """Drive the common refusals; each one's problem detail, by what was tried."""
    details = {}

    def refused(name: str, error_class: type[Exception], call) -> None:  # type: ignore[no-untyped-def]
        with pytest.raises(error_class) as refusal:
            call()
        details[name] = refusal.value.detail  # type: ignore[attr-defined]

    refused("overdraft", InsufficientPointsError, lambda: client.authorize_redemption(
        reference="red-big", points=10_000, card_number=card_number, pin=PIN))
    client.authorize_redemption(reference="red-1", points=50, card_number=card_number, pin=PIN)
    refused("refund before capture", ConflictError,
            lambda: client.refund_redemption("red-1", refund_id="rr-1", points=10))
    refused("capture over the hold", InvalidRequestError, lambda: client.capture_redemption("red-1", points=80))
    client.capture_redemption("red-1", points=50)
    refused("capture twice", ConflictError, lambda: client.capture_redemption("red-1", points=50))
    refused("void after capture", ConflictError, lambda: client.void_redemption("red-1"))
    client.authorize_redemption(reference="red-2", points=20, card_number=card_number, pin=PIN)
    client.void_redemption("red-2")
    refused("refund of a voided redemption", ConflictError,
            lambda: client.refund_redemption("red-2", refund_id="rr-2", points=10))
    refused("unknown redemption", NotFoundError, lambda: client.capture_redemption("red-none", points=1))
    refused("unknown card", NotFoundError, lambda: client.report_purchase(
        receipt_id="r-2", card_number="6390000000000021", amount_minor=1_000, currency="EUR"))
    return details


def test_common_refusals_say_what_is_wrong_without_internal_ids(pg_app):
    shop = make_shop(hub_state(pg_app))
    with serve_in_thread(pg_app) as base_url:
        client = AllianceClient(base_url, shop.partner.key_id, shop.partner.private_key)
        client.report_purchase(receipt_id="r-1", card_number=shop.card_number, amount_minor=15_000, currency="EUR")
        details = refusal_details(client, shop.card_number)
    assert {name: detail for name, detail in details.items() if INTERNAL_ID.search(detail)} == {}
    assert details["overdraft"] == "the card's available points do not cover 10000"
    assert details["capture twice"] == details["void after capture"] == "the redemption is already captured"
    assert details["refund before capture"] == (
        "the redemption is authorized; only a captured redemption can be refunded")
    assert details["refund of a voided redemption"] == (
        "the redemption is voided; only a captured redemption can be refunded")
