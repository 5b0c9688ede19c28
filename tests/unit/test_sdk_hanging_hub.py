"""A hub that accepts connections and never answers must not freeze a checkout.

These tests use the client's default settings on purpose: the defaults are what a
till gets, and they must bound a call to a few seconds.
"""

from __future__ import annotations

import time

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from partners_sdk import AllianceClient, HubUnreachable, Queued
from tests.sdk_support import hanging_hub

CARD = "6390000000000013"
# The documented default deadline is 8 s; the rest is slack for a busy test machine.
CHECKOUT_BOUND_S = 10.0


def test_a_purchase_sent_to_a_hanging_hub_is_queued_within_the_default_deadline(tmp_path):
    with hanging_hub() as base_url:
        with AllianceClient(base_url, "till-1", Ed25519PrivateKey.generate(), queue=tmp_path / "q.sqlite3") as client:
            started_s = time.monotonic()
            result = client.report_purchase(receipt_id="r-1", card_number=CARD, amount_minor=15_000, currency="EUR")
            elapsed_s = time.monotonic() - started_s
            pending = client.queue.pending()
    assert isinstance(result, Queued) and "no reply from the hub" in result.reason
    assert elapsed_s < CHECKOUT_BOUND_S
    assert [operation.reference for operation in pending] == ["r-1"]
    assert pending[0].attempts == 1 and "timed out" in (pending[0].last_error or "")


def test_a_read_from_a_hanging_hub_fails_with_a_clear_error_within_the_default_deadline():
    with hanging_hub() as base_url:
        client = AllianceClient(base_url, "till-1", Ed25519PrivateKey.generate())
        started_s = time.monotonic()
        with pytest.raises(HubUnreachable) as unreachable:
            client.get_purchase("r-1")
        elapsed_s = time.monotonic() - started_s
    assert elapsed_s < CHECKOUT_BOUND_S
    assert unreachable.value.retry_safe and unreachable.value.http_status is None
    assert unreachable.value.detail.startswith("no reply from the hub")
    assert "timed out" in unreachable.value.detail
