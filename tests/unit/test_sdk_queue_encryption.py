"""The offline queue keeps card numbers encrypted at rest, and alliance-pos never prints them whole."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
from datetime import datetime, timezone
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from partners_sdk import AllianceClient, ConfigurationError, OfflineQueue, Queued, TransportError
from partners_sdk.cli import main
from tests.sdk_support import FakeTransport, RecordingSleep, json_reply, problem, problem_reply, purchase_json

NOW = datetime(2026, 11, 2, 9, 30, tzinfo=timezone.utc)
CARD = "6390000000000013"
OTHER_CARD = "6390000000000021"
# The schema an SDK before encryption wrote (user_version 1), bodies in plaintext.
OLDER_SDK_SCHEMA = """
CREATE TABLE pending_operations (
    id INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL, method TEXT NOT NULL, path TEXT NOT NULL,
    body BLOB NOT NULL, idempotency_key TEXT NOT NULL UNIQUE, reference TEXT NOT NULL, queued_at TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0, last_error TEXT);
CREATE TABLE dead_letters (
    id INTEGER PRIMARY KEY AUTOINCREMENT, operation_id INTEGER, kind TEXT NOT NULL, method TEXT NOT NULL,
    path TEXT NOT NULL, body BLOB NOT NULL, idempotency_key TEXT NOT NULL, reference TEXT NOT NULL,
    queued_at TEXT NOT NULL, failed_at TEXT NOT NULL, http_status INTEGER, code TEXT NOT NULL, detail TEXT NOT NULL,
    request_id TEXT);
PRAGMA user_version = 1;
"""


def queued_client(path: Path, transport: FakeTransport) -> AllianceClient:
    return AllianceClient("http://hub.test", "till-1", Ed25519PrivateKey.generate(), transport=transport,
                          queue=path, max_retries=0, sleep=RecordingSleep(), clock=lambda: NOW)


def report(client: AllianceClient, receipt_id: str, card_number: str = CARD):  # type: ignore[no-untyped-def]
    return client.report_purchase(receipt_id=receipt_id, card_number=card_number, amount_minor=15_000,
                                  currency="EUR")


def queue_files_bytes(path: Path) -> bytes:
    """Everything SQLite keeps on disk for this queue: the database, its WAL and shared memory."""
    return b"".join(Path(f"{path}{suffix}").read_bytes() for suffix in ("", "-wal", "-shm")
                    if Path(f"{path}{suffix}").exists())


def test_card_numbers_never_reach_the_queue_file_and_draining_sends_the_original_request(tmp_path):
    path = tmp_path / "q.sqlite3"
    transport = FakeTransport(default=TransportError("down"))
    client = queued_client(path, transport)
    assert isinstance(report(client, "r-1", OTHER_CARD), Queued)
    queued = report(client, "r-2")
    assert isinstance(queued, Queued)
    transport.default = None
    transport.replies = [problem_reply(422, "validation_failed")]
    assert client.flush(limit=1).dead_lettered == 1
    on_disk = queue_files_bytes(path)
    assert CARD.encode() not in on_disk and OTHER_CARD.encode() not in on_disk
    assert b"r-2" in on_disk  # the receipt id (a reference, not card data) stays readable
    transport.replies = [json_reply(201, purchase_json("r-2"))]
    assert client.flush().delivered == 1
    assert transport.attempts[-1].headers["Idempotency-Key"] == queued.idempotency_key
    assert json.loads(transport.attempts[-1].body) == {
        "receipt_id": "r-2", "card_number": CARD, "amount_minor": 15_000, "currency": "EUR",
        "purchased_at": NOW.isoformat()}
    [letter] = client.queue.dead_letters()
    assert json.loads(letter.body)["card_number"] == OTHER_CARD
    client.close()


def test_alliance_pos_queue_shows_only_the_last_four_digits_of_a_card(tmp_path, capsys):
    path = tmp_path / "q.sqlite3"
    transport = FakeTransport(default=TransportError("down"))
    with queued_client(path, transport) as client:
        report(client, "r-1", OTHER_CARD)
        report(client, "r-2")
        transport.default = None
        refusal = problem(422, "validation_failed", detail=f"card {OTHER_CARD} refused")
        transport.replies = [(422, {"content-type": "application/problem+json"}, refusal)]
        client.flush(limit=1)
    assert main(["queue", "--queue", str(path)]) == 0
    printed = capsys.readouterr().out
    assert CARD not in printed and OTHER_CARD not in printed
    listing = json.loads(printed)
    assert listing["pending"][0]["body"]["card_number"] == "••••••••••••0013"
    assert listing["dead_letters"][0]["body"]["card_number"] == "••••••••••••0021"
    assert listing["dead_letters"][0]["detail"] == "card ••••••••••••0021 refused"


def test_a_queue_an_older_sdk_left_in_plaintext_is_encrypted_when_opened_and_still_drains(tmp_path):
    path = tmp_path / "q.sqlite3"
    body = json.dumps({"receipt_id": "r-1", "card_number": CARD, "amount_minor": 15_000, "currency": "EUR",
                       "purchased_at": NOW.isoformat()}, separators=(",", ":"), sort_keys=True).encode()
    older = sqlite3.connect(path)
    older.executescript(OLDER_SDK_SCHEMA)
    older.execute("INSERT INTO pending_operations (kind, method, path, body, idempotency_key, reference, queued_at)"
                  " VALUES ('purchase', 'POST', '/partner/v1/purchases', ?, 'key-1', 'r-1', ?)",
                  (body, NOW.isoformat()))
    older.execute("INSERT INTO dead_letters (kind, method, path, body, idempotency_key, reference, queued_at,"
                  " failed_at, code, detail) VALUES ('purchase', 'POST', '/partner/v1/purchases', ?, 'key-0',"
                  " 'r-0', ?, ?, 'validation_failed', 'refused')", (body.replace(b"r-1", b"r-0"), NOW.isoformat(),
                                                                      NOW.isoformat()))
    older.commit()
    older.close()
    assert CARD.encode() in queue_files_bytes(path)
    transport = FakeTransport([json_reply(201, purchase_json("r-1"))])
    with queued_client(path, transport) as client:
        assert CARD.encode() not in queue_files_bytes(path)
        assert json.loads(client.queue.dead_letters()[0].body)["card_number"] == CARD
        assert client.flush().delivered == 1
    assert transport.attempts[0].body == body and transport.attempts[0].headers["Idempotency-Key"] == "key-1"
    assert stat.S_IMODE(Path(f"{path}.key").stat().st_mode) == 0o600


def test_a_queue_cannot_be_read_without_its_own_key(tmp_path):
    path = tmp_path / "q.sqlite3"
    with queued_client(path, FakeTransport(default=TransportError("down"))) as client:
        report(client, "r-1")
    key_file = Path(f"{path}.key")
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    with pytest.raises(ConfigurationError, match="does not open this queue"):
        OfflineQueue(path, key=os.urandom(32))
    key = key_file.read_bytes()
    key_file.unlink()
    # A lost key is never silently replaced: the operations waiting would be unreadable.
    with pytest.raises(ConfigurationError, match="key file .* is missing"):
        OfflineQueue(path)
    assert not key_file.exists()
    with OfflineQueue(path, key=key) as queue:
        assert json.loads(queue.pending()[0].body)["card_number"] == CARD


def test_a_key_the_caller_holds_leaves_no_key_file_and_alliance_pos_takes_a_key_file(tmp_path, capsys):
    path = tmp_path / "q.sqlite3"
    key = os.urandom(32)
    with OfflineQueue(path, key=key) as queue:
        queue.append(kind="purchase", method="POST", path="/partner/v1/purchases",
                     body=json.dumps({"card_number": CARD}).encode(), idempotency_key="key-1", reference="r-1")
    assert not Path(f"{path}.key").exists()
    key_file = tmp_path / "till-queue.key"
    key_file.write_bytes(key)
    key_file.chmod(0o600)
    assert main(["queue", "--queue", str(path), "--queue-key-file", str(key_file)]) == 0
    assert json.loads(capsys.readouterr().out)["pending"][0]["body"]["card_number"] == "••••••••••••0013"
    key_file.chmod(0o644)
    assert main(["queue", "--queue", str(path), "--queue-key-file", str(key_file)]) == 2
    assert "chmod 600" in capsys.readouterr().err

