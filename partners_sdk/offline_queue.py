"""A durable store-and-forward queue for purchase reports and refunds, in one SQLite file.

An operation is written here, with the exact bytes it will send and its idempotency
key, and committed (WAL, ``synchronous=FULL``, so it survives a power cut) BEFORE the
first attempt to send it. It leaves the queue only after a definitive reply from the
hub: delivered, or moved to the dead letters when the hub refused it for good. A
process killed at any moment therefore loses nothing, and resending after a lost reply
cannot double an effect: the hub answers a known idempotency key with its stored reply.

The file holds card numbers, so it is created readable by its owner only.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from partners_sdk.errors import ConfigurationError, InvalidRequestError, QueueFullError

SCHEMA_VERSION = 1
QUEUE_FILE_MODE = 0o600
DEFAULT_MAX_PENDING_OPERATIONS = 10_000
# The hub's default body limit; a larger operation could never be delivered.
DEFAULT_MAX_BODY_BYTES = 1_048_576
MAX_LISTED_ROWS = 1_000
MAX_ERROR_TEXT_CHARACTERS = 2_000
QUEUEABLE_KINDS = frozenset({"purchase", "purchase_batch", "purchase_refund", "batch_item"})

SCHEMA = ("""
CREATE TABLE IF NOT EXISTS pending_operations (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    method TEXT NOT NULL,
    path TEXT NOT NULL,
    body BLOB NOT NULL,
    idempotency_key TEXT NOT NULL UNIQUE,
    reference TEXT NOT NULL,
    queued_at TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT
)""", """
CREATE TABLE IF NOT EXISTS dead_letters (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    operation_id INTEGER,
    kind TEXT NOT NULL,
    method TEXT NOT NULL,
    path TEXT NOT NULL,
    body BLOB NOT NULL,
    idempotency_key TEXT NOT NULL,
    reference TEXT NOT NULL,
    queued_at TEXT NOT NULL,
    failed_at TEXT NOT NULL,
    http_status INTEGER,
    code TEXT NOT NULL,
    detail TEXT NOT NULL,
    request_id TEXT
)""")
PENDING_COLUMNS = "id, kind, method, path, body, idempotency_key, reference, queued_at, attempts, last_error"
DEAD_LETTER_COLUMNS = ("id, operation_id, kind, method, path, body, idempotency_key, reference, queued_at, failed_at, "
                       "http_status, code, detail, request_id")


@dataclass(frozen=True)
class PendingOperation:
    """An operation waiting to be delivered, with the exact request it will send."""

    id: int
    kind: str
    method: str
    path: str
    body: bytes
    idempotency_key: str
    reference: str
    queued_at: str
    attempts: int
    last_error: str | None


@dataclass(frozen=True)
class DeadLetter:
    """An operation the hub refused for good, and why; kept until someone discards it."""

    id: int
    operation_id: int | None
    kind: str
    method: str
    path: str
    body: bytes
    idempotency_key: str
    reference: str
    queued_at: str
    failed_at: str
    http_status: int | None
    code: str
    detail: str
    request_id: str | None


@dataclass(frozen=True)
class Refusal:
    """Why the hub refused an operation for good."""

    http_status: int | None
    code: str
    detail: str
    request_id: str | None


def _utc_now() -> datetime:
    return datetime.now(timezone.utc)


class OfflineQueue:
    """Pending operations in order, and dead letters, in a SQLite file shared safely by threads."""

    def __init__(self, path: str | os.PathLike[str], *, max_pending_operations: int = DEFAULT_MAX_PENDING_OPERATIONS,
                 max_body_bytes: int = DEFAULT_MAX_BODY_BYTES, busy_timeout_s: float = 10.0,
                 clock: Callable[[], datetime] = _utc_now) -> None:
        if max_pending_operations < 1 or max_body_bytes < 1:
            raise ValueError("queue limits must be positive")
        self.path = Path(path)
        self.max_pending_operations = max_pending_operations
        self.max_body_bytes = max_body_bytes
        self._clock = clock
        self._lock = threading.RLock()
        self._connection = self._open(busy_timeout_s)

    def _open(self, busy_timeout_s: float) -> sqlite3.Connection:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # Create the file owner-only before SQLite opens it; SQLite gives its -wal and
            # -shm companions the same permissions.
            os.close(os.open(self.path, os.O_CREAT | os.O_RDWR, QUEUE_FILE_MODE))
            connection = sqlite3.connect(self.path, timeout=busy_timeout_s, isolation_level=None,
                                         check_same_thread=False)
        except (OSError, sqlite3.Error) as error:
            raise ConfigurationError(f"cannot open the offline queue {self.path}: {error}") from error
        mode = connection.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if mode.lower() != "wal":
            raise ConfigurationError(f"the offline queue {self.path} cannot use WAL (got {mode})")
        connection.execute("PRAGMA synchronous=FULL")
        version = connection.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise ConfigurationError(f"the offline queue {self.path} was written by a newer SDK (schema {version})")
        with _Transaction(connection):
            for statement in SCHEMA:
                connection.execute(statement)
            connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        return connection

    def append(self, *, kind: str, method: str, path: str, body: bytes, idempotency_key: str, reference: str) -> int:
        """Store an operation at the end of the queue, durably; returns its id."""
        if kind not in QUEUEABLE_KINDS:
            raise ValueError(f"{kind!r} operations are never queued")
        if len(body) > self.max_body_bytes:
            raise InvalidRequestError(f"the operation is {len(body)} bytes, more than the {self.max_body_bytes} allowed",
                                      code="request_too_large")
        with self._lock, _Transaction(self._connection) as connection:
            count = connection.execute("SELECT count(*) FROM pending_operations").fetchone()[0]
            if count >= self.max_pending_operations:
                raise QueueFullError(f"the offline queue already holds {count} operations; deliver them first")
            cursor = connection.execute(
                "INSERT INTO pending_operations (kind, method, path, body, idempotency_key, reference, queued_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (kind, method, path, body, idempotency_key, reference, self._clock().isoformat()),
            )
            return int(cursor.lastrowid or 0)

    def next_pending(self, *, after_id: int = 0) -> PendingOperation | None:
        """The oldest pending operation after ``after_id``, or None."""
        with self._lock:
            row = self._connection.execute(
                f"SELECT {PENDING_COLUMNS} FROM pending_operations WHERE id > ? ORDER BY id LIMIT 1", (after_id,)
            ).fetchone()
        return PendingOperation(*row) if row else None

    def get_pending(self, operation_id: int) -> PendingOperation | None:
        """The pending operation with this id, or None once it has left the queue."""
        with self._lock:
            row = self._connection.execute(
                f"SELECT {PENDING_COLUMNS} FROM pending_operations WHERE id = ?", (operation_id,)
            ).fetchone()
        return PendingOperation(*row) if row else None

    def has_pending_before(self, operation_id: int) -> bool:
        """Whether an older operation still waits, so this one must not overtake it."""
        with self._lock:
            return self._connection.execute(
                "SELECT EXISTS (SELECT 1 FROM pending_operations WHERE id < ?)", (operation_id,)
            ).fetchone()[0] == 1

    def pending_count(self) -> int:
        """How many operations wait."""
        with self._lock:
            return int(self._connection.execute("SELECT count(*) FROM pending_operations").fetchone()[0])

    def pending(self, *, limit: int = 100) -> list[PendingOperation]:
        """Waiting operations, oldest first."""
        with self._lock:
            rows = self._connection.execute(
                f"SELECT {PENDING_COLUMNS} FROM pending_operations ORDER BY id LIMIT ?", (_bounded(limit),)
            ).fetchall()
        return [PendingOperation(*row) for row in rows]

    def record_failed_attempt(self, operation_id: int, error_text: str) -> None:
        """Count an attempt that got no definitive reply, and remember why."""
        with self._lock, _Transaction(self._connection) as connection:
            connection.execute(
                "UPDATE pending_operations SET attempts = attempts + 1, last_error = ? WHERE id = ?",
                (error_text[:MAX_ERROR_TEXT_CHARACTERS], operation_id),
            )

    def remove(self, operation_id: int) -> None:
        """Forget an operation the hub has definitively answered."""
        with self._lock, _Transaction(self._connection) as connection:
            connection.execute("DELETE FROM pending_operations WHERE id = ?", (operation_id,))

    def move_to_dead_letters(self, operation_id: int, refusal: Refusal) -> None:
        """Move an operation the hub refused for good out of the way, keeping it and the reason."""
        with self._lock, _Transaction(self._connection) as connection:
            connection.execute(
                "INSERT INTO dead_letters (operation_id, kind, method, path, body, idempotency_key, reference,"
                " queued_at, failed_at, http_status, code, detail, request_id)"
                " SELECT id, kind, method, path, body, idempotency_key, reference, queued_at, ?, ?, ?, ?, ?"
                " FROM pending_operations WHERE id = ?",
                (self._clock().isoformat(), refusal.http_status, refusal.code, refusal.detail[:MAX_ERROR_TEXT_CHARACTERS],
                 refusal.request_id, operation_id),
            )
            connection.execute("DELETE FROM pending_operations WHERE id = ?", (operation_id,))

    def settle_batch(self, operation: PendingOperation, rejected_items: list[tuple[str, bytes, Refusal]]) -> None:
        """Remove a delivered batch and keep each item the hub rejected as a dead letter, atomically."""
        with self._lock, _Transaction(self._connection) as connection:
            removed = connection.execute("DELETE FROM pending_operations WHERE id = ?", (operation.id,)).rowcount
            if removed == 0:
                # Another process sharing this file settled the batch first.
                return
            failed_at = self._clock().isoformat()
            for reference, body, refusal in rejected_items:
                connection.execute(
                    "INSERT INTO dead_letters (operation_id, kind, method, path, body, idempotency_key, reference,"
                    " queued_at, failed_at, http_status, code, detail, request_id)"
                    " VALUES (?, 'batch_item', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (operation.id, operation.method, operation.path, body, operation.idempotency_key, reference,
                     operation.queued_at, failed_at, refusal.http_status, refusal.code,
                     refusal.detail[:MAX_ERROR_TEXT_CHARACTERS], refusal.request_id),
                )

    def dead_letters(self, *, limit: int = 100) -> list[DeadLetter]:
        """Operations the hub refused for good, oldest first."""
        with self._lock:
            rows = self._connection.execute(
                f"SELECT {DEAD_LETTER_COLUMNS} FROM dead_letters ORDER BY id LIMIT ?", (_bounded(limit),)
            ).fetchall()
        return [DeadLetter(*row) for row in rows]

    def dead_letter_count(self) -> int:
        """How many dead letters are kept."""
        with self._lock:
            return int(self._connection.execute("SELECT count(*) FROM dead_letters").fetchone()[0])

    def discard_dead_letter(self, dead_letter_id: int) -> bool:
        """Delete one dead letter once someone has dealt with it; returns whether it existed."""
        with self._lock, _Transaction(self._connection) as connection:
            return connection.execute("DELETE FROM dead_letters WHERE id = ?", (dead_letter_id,)).rowcount == 1

    def close(self) -> None:
        """Close the file; the queue cannot be used afterwards."""
        with self._lock:
            self._connection.close()

    def __enter__(self) -> "OfflineQueue":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class _Transaction:
    """``BEGIN IMMEDIATE`` … ``COMMIT``, or ``ROLLBACK`` on any error."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._connection = connection

    def __enter__(self) -> sqlite3.Connection:
        # IMMEDIATE takes the write lock at once, so two processes sharing a queue file
        # queue up instead of failing half-way through a read-then-write.
        self._connection.execute("BEGIN IMMEDIATE")
        return self._connection

    def __exit__(self, exc_type: object, *rest: object) -> None:
        self._connection.execute("ROLLBACK" if exc_type is not None else "COMMIT")


def _bounded(limit: int) -> int:
    return max(1, min(int(limit), MAX_LISTED_ROWS))

