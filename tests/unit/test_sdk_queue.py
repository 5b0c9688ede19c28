"""The offline queue: order, durability, dead letters, and how the client uses it."""

from __future__ import annotations

import json
import logging
import sqlite3
import stat
import time
from datetime import datetime, timezone

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from partners_sdk import (
    AllianceClient,
    HubUnreachable,
    InvalidRequestError,
    OfflineQueue,
    Purchase,
    PurchaseReport,
    Queued,
    QueueFullError,
    ReceiptAlreadyReportedError,
    TransportError,
)
from partners_sdk.offline_queue import Refusal
from tests.sdk_support import FakeTransport, RecordingSleep, json_reply, problem_reply, purchase_json

NOW = datetime(2026, 11, 2, 9, 30, tzinfo=timezone.utc)
CARD = "6390000000000013"


def append(queue: OfflineQueue, reference: str, kind: str = "purchase") -> int:
    return queue.append(kind=kind, method="POST", path="/partner/v1/purchases", body=b'{"r":"%s"}' % reference.encode(),
                        idempotency_key=f"key-{reference}", reference=reference)


def test_operations_come_back_in_the_order_they_were_queued(tmp_path):
    with OfflineQueue(tmp_path / "q.sqlite3") as queue:
        ids = [append(queue, f"r-{number}") for number in range(5)]
        queue.remove(ids[2])
        assert [operation.reference for operation in queue.pending()] == ["r-0", "r-1", "r-3", "r-4"]
        assert queue.next_pending().reference == "r-0"
        assert queue.next_pending(after_id=ids[1]).reference == "r-3"
        assert queue.has_pending_before(ids[3]) and not queue.has_pending_before(ids[0])


def test_queued_operations_survive_closing_and_reopening(tmp_path):
    path = tmp_path / "q.sqlite3"
    queue = OfflineQueue(path)
    append(queue, "r-1")
    append(queue, "r-2")
    queue.record_failed_attempt(queue.next_pending().id, "hub down")
    queue.close()
    with OfflineQueue(path) as reopened:
        pending = reopened.pending()
    assert [(operation.reference, operation.idempotency_key, operation.attempts) for operation in pending] == [
        ("r-1", "key-r-1", 1), ("r-2", "key-r-2", 0)]
    assert pending[0].body == b'{"r":"r-1"}' and pending[0].last_error == "hub down"


def test_the_file_is_private_and_written_durably(tmp_path):
    path = tmp_path / "q.sqlite3"
    with OfflineQueue(path) as queue:
        append(queue, "r-1")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    connection = sqlite3.connect(path)
    assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    connection.close()
    with OfflineQueue(path) as queue:
        assert queue._connection.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_dead_letters_keep_the_operation_and_the_reason(tmp_path):
    with OfflineQueue(tmp_path / "q.sqlite3") as queue:
        first = append(queue, "r-1")
        append(queue, "r-2")
        queue.move_to_dead_letters(first, Refusal(422, "validation_failed", "bad card", "req-9"))
        letters = queue.dead_letters()
        assert [operation.reference for operation in queue.pending()] == ["r-2"]
        assert len(letters) == 1
        letter = letters[0]
        assert (letter.reference, letter.idempotency_key, letter.http_status, letter.code, letter.request_id) == (
            "r-1", "key-r-1", 422, "validation_failed", "req-9")
        assert letter.body == b'{"r":"r-1"}'
        assert queue.discard_dead_letter(letter.id) and queue.dead_letter_count() == 0


def test_the_queue_refuses_more_than_its_limit(tmp_path):
    with OfflineQueue(tmp_path / "q.sqlite3", max_pending_operations=2, max_body_bytes=100) as queue:
        append(queue, "r-1")
        append(queue, "r-2")
        with pytest.raises(QueueFullError):
            append(queue, "r-3")
        with pytest.raises(InvalidRequestError):
            queue.append(kind="purchase", method="POST", path="/p", body=b"x" * 101, idempotency_key="k",
                         reference="big")
        with pytest.raises(ValueError):
            queue.append(kind="redemption", method="POST", path="/p", body=b"{}", idempotency_key="k2",
                         reference="never")


def queued_client(tmp_path, transport: FakeTransport) -> AllianceClient:
    return AllianceClient("http://hub.test", "till-1", Ed25519PrivateKey.generate(), transport=transport,
                          queue=tmp_path / "q.sqlite3", max_retries=1, sleep=RecordingSleep(), clock=lambda: NOW)


def report(client: AllianceClient, receipt_id: str):  # type: ignore[no-untyped-def]
    return client.report_purchase(receipt_id=receipt_id, card_number=CARD, amount_minor=15_000, currency="EUR")


def test_a_purchase_is_on_disk_before_the_first_attempt_is_sent(tmp_path):
    seen_on_disk = []

    def check_disk(attempt):  # type: ignore[no-untyped-def]
        # Another connection to the file sees the operation: it was committed before this attempt.
        with OfflineQueue(tmp_path / "q.sqlite3") as on_disk:
            seen_on_disk.append([(operation.idempotency_key, operation.body) for operation in on_disk.pending()])
        return json_reply(201, purchase_json("r-1"))

    transport = FakeTransport([check_disk])
    client = queued_client(tmp_path, transport)
    assert isinstance(report(client, "r-1"), Purchase)
    assert seen_on_disk == [[(transport.attempts[0].headers["Idempotency-Key"], transport.attempts[0].body)]]
    assert client.queue.pending_count() == 0


def test_an_unreachable_hub_queues_the_purchase_and_flush_delivers_it_with_the_same_key(tmp_path):
    transport = FakeTransport([TransportError("down"), TransportError("down")])
    client = queued_client(tmp_path, transport)
    queued = report(client, "r-1")
    assert isinstance(queued, Queued) and "down" in queued.reason
    transport.replies = [json_reply(201, purchase_json("r-1"), **{"idempotent-replayed": "false"})]
    flushed = client.flush()
    assert (flushed.delivered, flushed.remaining, flushed.stopped_by) == (1, 0, None)
    keys = {attempt.headers["Idempotency-Key"] for attempt in transport.attempts}
    assert keys == {queued.idempotency_key}
    assert len({attempt.body for attempt in transport.attempts}) == 1


def test_a_new_purchase_never_overtakes_older_queued_ones(tmp_path):
    transport = FakeTransport([TransportError("down"), TransportError("down")])
    client = queued_client(tmp_path, transport)
    assert isinstance(report(client, "r-1"), Queued)
    transport.replies = [json_reply(201, purchase_json("r-1")), json_reply(201, purchase_json("r-2"))]
    second = report(client, "r-2")
    assert isinstance(second, Purchase) and second.receipt_id == "r-2"
    sent = [json.loads(attempt.body)["receipt_id"] for attempt in transport.attempts[2:]]
    assert sent == ["r-1", "r-2"]


def test_a_backlog_that_cannot_be_sent_keeps_the_new_purchase_behind_it(tmp_path):
    transport = FakeTransport(default=TransportError("down"))
    client = queued_client(tmp_path, transport)
    report(client, "r-1")
    second = report(client, "r-2")
    assert isinstance(second, Queued) and "older operations" in second.reason
    assert [operation.reference for operation in client.queue.pending()] == ["r-1", "r-2"]


def test_a_checkout_behind_a_slow_backlog_ends_within_its_own_deadline(tmp_path):
    clock = [0.0]

    def slow_success(attempt):  # type: ignore[no-untyped-def]
        clock[0] += 1.0
        return json_reply(201, purchase_json(json.loads(attempt.body)["receipt_id"]))

    transport = FakeTransport(default=TransportError("down"))
    client = AllianceClient("http://hub.test", "till-1", Ed25519PrivateKey.generate(), transport=transport,
                            queue=tmp_path / "q.sqlite3", max_retries=0, deadline_s=3.0, clock=lambda: NOW)
    client._pacing.monotonic = lambda: clock[0]
    for number in range(10):
        report(client, f"r-{number}")
    transport.default = slow_success
    started_s = clock[0]
    checkout = report(client, "r-new")
    # The hub takes a second a request: three older operations fit in the checkout's 3 s.
    assert clock[0] - started_s == 3.0
    assert isinstance(checkout, Queued) and "older operations" in checkout.reason
    assert [operation.reference for operation in client.queue.pending()] == [
        *(f"r-{number}" for number in range(3, 10)), "r-new"]


def test_flush_moves_definitive_refusals_to_dead_letters_and_carries_on(tmp_path):
    transport = FakeTransport(default=TransportError("down"))
    client = queued_client(tmp_path, transport)
    for receipt_id in ("r-1", "r-2", "r-3"):
        report(client, receipt_id)
    transport.default = None
    transport.replies = [problem_reply(422, "validation_failed"), problem_reply(409, "receipt_already_reported"),
                         json_reply(201, purchase_json("r-3"))]
    flushed = client.flush()
    assert (flushed.delivered, flushed.dead_lettered, flushed.remaining) == (2, 1, 0)
    assert [(letter.reference, letter.code) for letter in client.queue.dead_letters()] == [("r-1", "validation_failed")]


def test_a_queued_refund_the_hub_already_recorded_counts_as_delivered(tmp_path):
    transport = FakeTransport([TransportError("down"), TransportError("down")])
    client = queued_client(tmp_path, transport)
    assert isinstance(client.refund_purchase("r-1", refund_id="f-1", amount_minor=100), Queued)
    transport.replies = [problem_reply(409, "refund_already_recorded")]
    flushed = client.flush()
    assert (flushed.delivered, flushed.dead_lettered, flushed.remaining) == (1, 0, 0)
    assert transport.attempts[-1].url.endswith("/partner/v1/purchases/r-1/refunds")


def test_flush_stops_at_the_first_operation_the_hub_cannot_take_yet(tmp_path):
    transport = FakeTransport(default=TransportError("down"))
    client = queued_client(tmp_path, transport)
    for receipt_id in ("r-1", "r-2"):
        report(client, receipt_id)
    transport.default = None
    transport.replies = [problem_reply(401, "signature_from_future")]
    flushed = client.flush()
    assert (flushed.delivered, flushed.dead_lettered, flushed.remaining) == (0, 0, 2)
    assert "signature_from_future" in flushed.stopped_by
    assert client.queue.dead_letter_count() == 0


def test_a_redirect_from_a_proxy_never_settles_a_queued_operation(tmp_path):
    transport = FakeTransport([(301, {"location": "https://hub.test/"}, b"")])
    client = queued_client(tmp_path, transport)
    assert isinstance(report(client, "r-1"), Queued)
    transport.replies = [(308, {"location": "https://hub.test/"}, b"")]
    flushed = client.flush()
    assert (flushed.delivered, flushed.dead_lettered, flushed.remaining) == (0, 0, 1)
    assert "308" in flushed.stopped_by


def test_a_definitive_refusal_of_a_live_report_goes_to_the_caller_not_the_queue(tmp_path):
    client = queued_client(tmp_path, FakeTransport([problem_reply(409, "receipt_already_reported"),
                                                    json_reply(200, purchase_json("r-1"))]))
    with pytest.raises(ReceiptAlreadyReportedError) as refused:
        report(client, "r-1")
    assert refused.value.existing_purchase.receipt_id == "r-1"
    assert client.queue.pending_count() == 0 and client.queue.dead_letter_count() == 0


def test_a_receipt_already_reported_is_raised_even_when_the_existing_purchase_cannot_be_fetched(tmp_path):
    transport = FakeTransport([problem_reply(409, "receipt_already_reported")], default=TransportError("down"))
    client = queued_client(tmp_path, transport)
    with pytest.raises(ReceiptAlreadyReportedError) as refused:
        report(client, "r-1")
    assert refused.value.existing_purchase is None and refused.value.code == "receipt_already_reported"
    assert [attempt.method for attempt in transport.attempts] == ["POST", "GET", "GET"]


def test_a_delivered_batch_keeps_its_rejected_items_as_dead_letters(tmp_path):
    transport = FakeTransport([TransportError("down"), TransportError("down")])
    client = queued_client(tmp_path, transport)
    reports = [PurchaseReport(f"r-{number}", CARD, 1_000, "EUR", NOW) for number in range(3)]
    assert isinstance(client.report_purchases(reports), Queued)
    rejected = {"status": 422, "code": "validation_failed", "title": "Invalid", "detail": "bad", "request_id": "x"}
    already = {**rejected, "status": 409, "code": "receipt_already_reported"}
    transport.replies = [json_reply(200, {"applied": 1, "rejected": 2, "results": [
        {"index": 0, "receipt_id": "r-0", "status": "applied", "purchase": purchase_json("r-0"), "problem": None},
        {"index": 1, "receipt_id": "r-1", "status": "rejected", "purchase": None, "problem": rejected},
        {"index": 2, "receipt_id": "r-2", "status": "rejected", "purchase": None, "problem": already},
    ]})]
    assert client.flush().delivered == 1
    letters = client.queue.dead_letters()
    assert [(letter.kind, letter.reference, letter.code) for letter in letters] == [
        ("batch_item", "r-1", "validation_failed")]
    assert json.loads(letters[0].body)["receipt_id"] == "r-1"


def test_redemptions_are_never_queued(tmp_path):
    client = queued_client(tmp_path, FakeTransport(default=TransportError("down")))
    with pytest.raises(HubUnreachable) as unreachable:
        client.authorize_redemption(reference="red-1", points=100, card_number=CARD, pin="1234")
    assert "never queued" in unreachable.value.detail
    with pytest.raises(HubUnreachable):
        client.get_balance(card_number=CARD, pin="1234")
    assert client.queue.pending_count() == 0


def test_the_drainer_delivers_in_the_background(tmp_path):
    transport = FakeTransport(default=TransportError("down"))
    client = queued_client(tmp_path, transport)
    report(client, "r-1")
    transport.default = json_reply(201, purchase_json("r-1"))
    drainer = client.start_drainer(interval_s=0.01, max_interval_s=0.05)
    try:
        for _ in range(500):
            if client.queue.pending_count() == 0:
                break
            drainer.wake()
            time.sleep(0.01)
    finally:
        assert drainer.stop(timeout_s=5)
    assert client.queue.pending_count() == 0


def test_the_drainer_logs_a_warning_when_the_hub_refuses_a_queued_operation_for_good(tmp_path, caplog):
    transport = FakeTransport(default=TransportError("down"))
    client = queued_client(tmp_path, transport)
    report(client, "r-1")
    transport.default = problem_reply(422, "validation_failed")
    caplog.set_level(logging.WARNING, logger="partners_sdk.drainer")
    drainer = client.start_drainer(interval_s=0.01, max_interval_s=0.05)
    try:
        for _ in range(500):
            if client.queue.dead_letter_count() == 1:
                break
            time.sleep(0.01)
    finally:
        assert drainer.stop(timeout_s=5)
    [letter] = client.queue.dead_letters()
    assert letter.reference == "r-1" and letter.code == "validation_failed"
    warnings = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert warnings == ["offline queue: the hub refused 1 queued operation for good; see the dead letters "
                        "(client.queue.dead_letters(), alliance-pos queue)"]
