"""Processes dying at the worst moment: the hub mid-request, the till mid-drain. One effect each, nothing lost."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time

import pytest
from cryptography.hazmat.primitives import serialization
from sqlalchemy import func, select, text

from alliance.extensions import hub_state
from alliance.models import Purchase
from partners_sdk import (
    AllianceClient,
    HttpClientTransport,
    OfflineQueue,
    Queued,
    RetryPolicy,
    TransportError,
)
from partners_sdk import (
    Purchase as PurchaseResult,
)
from tests.sdk_support import (
    ROOT,
    available_points,
    free_port,
    make_shop,
    purchase_rows,
    serve_in_thread,
    start_hub_process,
    subprocess_environment,
)

pytestmark = pytest.mark.postgresql
WAIT_S = 20.0

# Run in a child process: flush the queue, and if told to, SIGKILL itself right after the
# hub's N-th reply has arrived, before the queue could record the delivery.
DRAIN_SCRIPT = """
import os, signal, sys
from partners_sdk import AllianceClient, HttpClientTransport, load_private_key

class DieAfterReplies:
    def __init__(self, replies):
        self.inner, self.left = HttpClientTransport(), replies

    def send(self, *arguments):
        reply = self.inner.send(*arguments)
        self.left -= 1
        if self.left == 0:
            os.kill(os.getpid(), signal.SIGKILL)
        return reply

hub, key_id, key_file, queue, die_after = sys.argv[1:6]
transport = DieAfterReplies(int(die_after)) if int(die_after) else None
client = AllianceClient(hub, key_id, load_private_key(key_file), queue=queue, transport=transport)
print(client.flush())
"""


def wait_until(condition, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + WAIT_S
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


class RecordingTransport:
    """The default transport, noting how each attempt ended: a status, or the error that cut it short."""

    def __init__(self) -> None:
        self.inner = HttpClientTransport()
        self.outcomes: list[object] = []

    def send(self, *arguments):  # type: ignore[no-untyped-def]
        try:
            reply = self.inner.send(*arguments)
        except TransportError as error:
            self.outcomes.append(str(error).split(":")[0])
            raise
        self.outcomes.append(reply[0])
        return reply


def waiting_on_a_lock(hub) -> bool:  # type: ignore[no-untyped-def]
    with hub.engine.connect() as connection:
        return connection.scalar(text(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )) > 0


def test_a_hub_killed_mid_request_leaves_exactly_one_effect_after_the_retry(pg_app, postgres_url, tmp_path):
    hub = hub_state(pg_app)
    shop = make_shop(hub)
    port = free_port()
    server = start_hub_process(postgres_url, tmp_path / "hub", port)
    policy = RetryPolicy(max_retries=10, initial_backoff_s=0.2, max_backoff_s=1.0, deadline_s=60)
    transport = RecordingTransport()
    client = AllianceClient(f"http://127.0.0.1:{port}", shop.partner.key_id, shop.partner.private_key,
                            timeout_s=30, retry_policy=policy, transport=transport)
    outcome: list[object] = []
    locker = hub.engine.connect()
    try:
        # Hold the member's account rows, so the hub's purchase blocks inside its transaction.
        transaction = locker.begin()
        locker.execute(text("SELECT id FROM ledger_accounts WHERE member_id = :member FOR UPDATE"),
                       {"member": shop.member_id})
        till = threading.Thread(target=lambda: outcome.append(client.report_purchase(
            receipt_id="r-1", card_number=shop.card_number, amount_minor=15_000, currency="EUR")))
        till.start()
        wait_until(lambda: waiting_on_a_lock(hub), "the purchase to block in the hub")
        server.send_signal(signal.SIGKILL)
        server.wait(timeout=10)
        transaction.rollback()
        server = start_hub_process(postgres_url, tmp_path / "hub", port)
        till.join(timeout=60)
    finally:
        locker.close()
        server.kill()
        server.wait(timeout=10)
    assert len(outcome) == 1 and isinstance(outcome[0], PurchaseResult)
    # The first attempt lost its connection when the hub died; a later one succeeded.
    assert isinstance(transport.outcomes[0], str) and transport.outcomes[-1] == 201, transport.outcomes
    assert purchase_rows(hub, "r-1") == 1
    assert available_points(hub, shop.member_id) == outcome[0].points.total == 150


def drain_in_child(base_url: str, shop, key_file, queue_path, *, die_after: int) -> subprocess.CompletedProcess[str]:  # type: ignore[no-untyped-def]
    return subprocess.run(
        [sys.executable, "-c", DRAIN_SCRIPT, base_url, shop.partner.key_id, str(key_file), str(queue_path),
         str(die_after)],
        capture_output=True, text=True, env=subprocess_environment(), cwd=ROOT, timeout=120,
    )


def test_a_till_killed_mid_drain_delivers_the_rest_later_without_duplicates(pg_app, tmp_path):
    hub = hub_state(pg_app)
    shop = make_shop(hub)
    key_file = tmp_path / "till.pem"
    key_file.write_bytes(shop.partner.private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    queue_path = tmp_path / "q.sqlite3"
    port = free_port()
    offline = AllianceClient(f"http://127.0.0.1:{port}", shop.partner.key_id, shop.partner.private_key,
                             queue=queue_path, max_retries=0)
    receipts = [f"r-{number}" for number in range(6)]
    assert all(isinstance(offline.report_purchase(receipt_id=receipt_id, card_number=shop.card_number,
                                                  amount_minor=5_000, currency="EUR"), Queued)
               for receipt_id in receipts)
    offline.close()
    with serve_in_thread(pg_app, port=port) as base_url:
        killed = drain_in_child(base_url, shop, key_file, queue_path, die_after=3)
        assert killed.returncode == -signal.SIGKILL, killed.stderr
        assert purchase_rows(hub) == 3
        with OfflineQueue(queue_path) as queue:
            # The third was delivered, but its removal never happened: it is still pending.
            assert [operation.reference for operation in queue.pending()] == receipts[2:]
        finished = drain_in_child(base_url, shop, key_file, queue_path, die_after=0)
        assert finished.returncode == 0, finished.stderr
        assert "delivered=4" in finished.stdout and "remaining=0" in finished.stdout
    assert [purchase_rows(hub, receipt_id) for receipt_id in receipts] == [1] * 6
    with hub.unit_of_work() as uow:
        earned = uow.session.scalar(select(func.sum(Purchase.points_partner + Purchase.points_hub)))
    assert available_points(hub, shop.member_id) == earned == 6 * 50
    with OfflineQueue(queue_path) as queue:
        assert queue.pending_count() == 0 and queue.dead_letter_count() == 0
