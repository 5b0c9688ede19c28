"""The SDK over real HTTP against a hub on PostgreSQL, served in a thread on 127.0.0.1."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone

import pytest
from cryptography.hazmat.primitives import serialization

from alliance.extensions import hub_state
from alliance.services.member_verification import issue_redemption_code
from partners_sdk import (
    AllianceClient,
    AuthenticationError,
    DeclinedError,
    HttpClientTransport,
    HubUnreachable,
    MemberVerificationError,
    Purchase,
    PurchaseReport,
    Queued,
    TransportError,
)
from tests.factories import set_risk_policy
from tests.sdk_support import (
    PIN,
    ROOT,
    available_points,
    free_port,
    make_shop,
    purchase_rows,
    serve_in_thread,
    subprocess_environment,
)

pytestmark = pytest.mark.postgresql
FAST_RETRIES = {"max_retries": 1, "sleep": lambda seconds: None}


def sdk_client(shop, base_url: str, **options) -> AllianceClient:  # type: ignore[no-untyped-def]
    return AllianceClient(base_url, shop.partner.key_id, shop.partner.private_key, timeout_s=10, **options)


def report(client: AllianceClient, shop, receipt_id: str, amount_minor: int = 15_000):  # type: ignore[no-untyped-def]
    return client.report_purchase(receipt_id=receipt_id, card_number=shop.card_number, amount_minor=amount_minor,
                                  currency="EUR")


def test_every_partner_operation_works_through_the_sdk(pg_app):
    hub = hub_state(pg_app)
    shop = make_shop(hub)
    with serve_in_thread(pg_app) as base_url:
        client = sdk_client(shop, base_url)
        purchase = report(client, shop, "r-1")
        assert isinstance(purchase, Purchase) and purchase.points.total == 150
        assert purchase.breakdown.points_total == 150 and purchase.breakdown.tier == "standard"
        now = datetime.now(timezone.utc) - timedelta(minutes=1)
        batch = client.report_purchases([PurchaseReport("r-2", shop.card_number, 2_000, "EUR", now),
                                         PurchaseReport("r-3", "6390000000000000", 2_000, "EUR", now)])
        assert (batch.applied, batch.rejected) == (1, 1) and batch.results[1].problem is not None
        refund = client.refund_purchase("r-1", refund_id="f-1", amount_minor=5_000)
        assert refund.points_recovered == 50 and refund.purchase.refunded_amount_minor == 5_000
        assert client.get_purchase("r-1").refunded_amount_minor == 5_000
        held = client.authorize_redemption(reference="red-1", points=60, card_number=shop.card_number, pin=PIN)
        assert held.status == "authorized" and held.points_held == 60
        assert client.capture_redemption("red-1", points=50).points_captured == 50
        assert client.refund_redemption("red-1", refund_id="rr-1", points=20).points_refunded == 20
        assert client.get_redemption("red-1").status == "captured"
        with hub.unit_of_work() as uow:
            code, _ = issue_redemption_code(uow.session, member_id=shop.member_id, now=datetime.now(timezone.utc))
            uow.commit()
        by_code = client.authorize_redemption(reference="red-2", points=10, redemption_code=code)
        assert client.void_redemption(by_code.reference).status == "voided"
        balance = client.get_balance(card_number=shop.card_number, pin=PIN)
    assert balance.points_available == 150 + 20 - 50 - 50 + 20 == available_points(hub, shop.member_id)


def test_a_wrong_pin_is_a_member_verification_error(pg_app):
    shop = make_shop(hub_state(pg_app))
    with serve_in_thread(pg_app) as base_url:
        with pytest.raises(MemberVerificationError) as refused:
            sdk_client(shop, base_url).get_balance(card_number=shop.card_number, pin="0000")
    assert refused.value.code == "member_not_verified" and refused.value.http_status == 403
    assert refused.value.request_id


def test_the_risk_controls_hold_a_purchase_and_decline_one_as_the_sdk_reads_them(pg_app):
    hub = hub_state(pg_app)
    shop = make_shop(hub)
    set_risk_policy(hub, {"limits": [
        {"name": "card-hour", "scope": "card", "measure": "earn", "window_minutes": 60, "max_count": 1,
         "action": "hold"},
        {"name": "card-hour-hard", "scope": "card", "measure": "earn", "window_minutes": 60, "max_count": 2,
         "action": "refuse"}]})
    now = datetime.now(timezone.utc) - timedelta(minutes=1)
    with serve_in_thread(pg_app) as base_url:
        client = sdk_client(shop, base_url, **FAST_RETRIES)
        assert client.report_purchase(receipt_id="k-1", card_number=shop.card_number, amount_minor=1_000,
                                      currency="EUR", purchased_at=now).points.state == "active"
        held = client.report_purchase(receipt_id="k-2", card_number=shop.card_number, amount_minor=1_000,
                                      currency="EUR", purchased_at=now)
        assert held.points.state == "held_for_review" and held.points.pending_until is None
        with pytest.raises(DeclinedError) as declined:
            client.report_purchase(receipt_id="k-3", card_number=shop.card_number, amount_minor=1_000,
                                   currency="EUR", purchased_at=now)
    assert declined.value.http_status == 403 and not declined.value.retry_safe
    assert declined.value.decision is not None and declined.value.decision in declined.value.detail
    assert purchase_rows(hub, "k-3") == 0


def test_purchases_made_while_the_hub_is_down_are_delivered_exactly_once_when_it_is_back(pg_app, tmp_path):
    hub = hub_state(pg_app)
    shop = make_shop(hub)
    port = free_port()
    client = sdk_client(shop, f"http://127.0.0.1:{port}", queue=tmp_path / "q.sqlite3", **FAST_RETRIES)
    outcomes = [report(client, shop, f"r-{number}") for number in range(4)]
    outcomes.append(client.refund_purchase("r-0", refund_id="f-0", amount_minor=15_000))
    assert all(isinstance(outcome, Queued) for outcome in outcomes)
    assert client.flush().stopped_by is not None
    with pytest.raises(HubUnreachable):
        client.authorize_redemption(reference="red-1", points=10, card_number=shop.card_number, pin=PIN)
    assert client.queue.pending_count() == 5
    with serve_in_thread(pg_app, port=port):
        flushed = client.flush()
        assert (flushed.delivered, flushed.remaining, flushed.dead_lettered) == (5, 0, 0)
        assert client.flush().delivered == 0
    assert [purchase_rows(hub, f"r-{number}") for number in range(4)] == [1, 1, 1, 1]
    assert available_points(hub, shop.member_id) == 3 * 150


def test_the_background_drainer_delivers_once_the_hub_answers(pg_app, tmp_path):
    hub = hub_state(pg_app)
    shop = make_shop(hub)
    port = free_port()
    client = sdk_client(shop, f"http://127.0.0.1:{port}", queue=tmp_path / "q.sqlite3", **FAST_RETRIES)
    assert isinstance(report(client, shop, "r-1"), Queued)
    drainer = client.start_drainer(interval_s=0.05, max_interval_s=0.2)
    try:
        with serve_in_thread(pg_app, port=port):
            deadline = time.monotonic() + 20
            while client.queue.pending_count() and time.monotonic() < deadline:
                time.sleep(0.05)
    finally:
        assert drainer.stop(timeout_s=10)
    assert client.queue.pending_count() == 0 and purchase_rows(hub, "r-1") == 1


class ReplyLosingTransport:
    """Delivers each request to the hub, then loses the first ``losses`` replies, as a dropped connection would."""

    def __init__(self, losses: int) -> None:
        self.inner = HttpClientTransport()
        self.losses = losses
        self.replies: list[tuple[int, dict[str, str]]] = []

    def send(self, method, url, headers, body, timeout_s):  # type: ignore[no-untyped-def]
        status, reply_headers, reply_body = self.inner.send(method, url, headers, body, timeout_s)
        self.replies.append((status, reply_headers))
        if self.losses:
            self.losses -= 1
            raise TransportError("connection reset by peer after the request was sent")
        return status, reply_headers, reply_body


def test_a_reply_lost_after_the_hub_acted_is_recovered_by_the_retry_with_one_effect(pg_app):
    hub = hub_state(pg_app)
    shop = make_shop(hub)
    transport = ReplyLosingTransport(losses=2)
    with serve_in_thread(pg_app) as base_url:
        purchase = report(sdk_client(shop, base_url, transport=transport, max_retries=3, sleep=lambda s: None),
                          shop, "r-1")
    assert purchase.points.total == 150
    assert [(status, headers.get("idempotent-replayed")) for status, headers in transport.replies] == [
        (201, "false"), (201, "true"), (201, "true")]
    assert purchase_rows(hub, "r-1") == 1 and available_points(hub, shop.member_id) == 150


def test_a_queued_purchase_already_reported_under_another_key_counts_as_delivered(pg_app, tmp_path):
    hub = hub_state(pg_app)
    shop = make_shop(hub)
    port = free_port()
    queued_client = sdk_client(shop, f"http://127.0.0.1:{port}", queue=tmp_path / "q.sqlite3", **FAST_RETRIES)
    assert isinstance(report(queued_client, shop, "r-1"), Queued)
    assert isinstance(queued_client.report_purchase(receipt_id="bad-card", card_number="6390000000000000",
                                                    amount_minor=1_000, currency="EUR"), Queued)
    with serve_in_thread(pg_app, port=port) as base_url:
        # The same receipt reaches the hub another way first (say, a retry typed in by hand).
        assert isinstance(report(sdk_client(shop, base_url), shop, "r-1"), Purchase)
        flushed = queued_client.flush()
    assert (flushed.delivered, flushed.dead_lettered, flushed.remaining) == (1, 1, 0)
    [letter] = queued_client.queue.dead_letters()
    assert letter.reference == "bad-card" and letter.http_status in (404, 409, 422)
    assert purchase_rows(hub, "r-1") == 1 and available_points(hub, shop.member_id) == 150


def test_a_terminal_clock_ten_minutes_ahead_gets_a_clear_authentication_error(pg_app, tmp_path):
    shop = make_shop(hub_state(pg_app))

    def ahead() -> datetime:
        return datetime.now(timezone.utc) + timedelta(minutes=10)

    with serve_in_thread(pg_app) as base_url:
        with pytest.raises(AuthenticationError) as refused:
            sdk_client(shop, base_url, clock=ahead).get_balance(card_number=shop.card_number, pin=PIN)
        queued_client = sdk_client(shop, f"http://127.0.0.1:{free_port()}", queue=tmp_path / "q.sqlite3",
                                   clock=ahead, **FAST_RETRIES)
        report(queued_client, shop, "r-1")
        queued_client.base_url = base_url
        flushed = queued_client.flush()
    assert refused.value.code == "signature_from_future" and refused.value.http_status == 401
    assert "clock" in refused.value.detail and "clock" in str(refused.value)
    assert flushed.remaining == 1 and "signature_from_future" in flushed.stopped_by
    assert queued_client.queue.dead_letter_count() == 0


def test_the_cli_reports_a_purchase_and_exits_non_zero_with_the_code_on_refusal(pg_app, tmp_path):
    shop = make_shop(hub_state(pg_app))
    key_file = tmp_path / "till.pem"
    key_file.write_bytes(shop.partner.private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    with serve_in_thread(pg_app) as base_url:
        environment = subprocess_environment(ALLIANCE_POS_HUB=base_url, ALLIANCE_POS_KEY_ID=shop.partner.key_id,
                                             ALLIANCE_POS_KEY_FILE=str(key_file))
        command = [sys.executable, "-m", "partners_sdk.cli", "purchase", "--receipt-id", "cli-1", "--card",
                   shop.card_number, "--amount-minor", "15000", "--currency", "EUR"]
        first = subprocess.run(command, capture_output=True, text=True, env=environment, cwd=ROOT, timeout=60)
        second = subprocess.run(command, capture_output=True, text=True, env=environment, cwd=ROOT, timeout=60)
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["points"]["total"] == 150
    assert second.returncode == 1
    assert json.loads(second.stderr)["code"] == "receipt_already_reported"
