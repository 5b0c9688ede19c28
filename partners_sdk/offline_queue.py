"""A durable store-and-forward queue for purchase reports and refunds, in one SQLite file.

An operation is written here, with the exact bytes it will send and its idempotency
key, and committed (WAL, ``synchronous=FULL``, so it survives a power cut) BEFORE the
first attempt to send it. It leaves the queue only after a definitive reply from the
hub: delivered, or moved to the dead letters when the hub refused it for good. A
process killed at any moment therefore loses nothing, and resending after a lost reply
cannot double an effect: the hub answers a known idempotency key with its stored reply.

Request bodies hold card numbers, so each is stored sealed with AES-256-GCM (a fresh
nonce per body, bound to its idempotency key) and the file is created readable by its
owner only. The key is 32 random bytes the till holds: by default a file beside the
queue (``<queue>.key``, created with mode 0600 the first time the queue is opened), or
bytes the caller passes as ``key=`` (from the operating system's key store, say). A
key file beside the queue keeps card numbers out of a copy of the queue file alone (a
backup, a support bundle, ``sqlite3`` on the till); it cannot protect them from whoever
reads both files as the till's user. A queue written by an older SDK, in plaintext, is
sealed in place the first time it is opened, and the file rewritten so that no
plaintext is left in its free pages or its write-ahead log. A lost key is never
replaced by a new one: the queue then refuses to open, since what waits in it could
not be read.
"""

from __future__ import annotations

import dataclasses
import os
import sqlite3
import tempfile
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, TypeAlias

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from partners_sdk.errors import ConfigurationError, InvalidRequestError, QueueFullError

# Version 1 stored bodies in plaintext; version 2 seals them.
SCHEMA_VERSION = 2
QUEUE_FILE_MODE = 0o600
KEY_FILE_MODE = 0o600
KEY_FILE_SUFFIX = ".key"
KEY_BYTES = 32
NONCE_BYTES = 12
# The first byte of a sealed body names its format, so another can follow one day.
SEALED_FORMAT = b"\x01"
# Sealed with the key when the queue is first keyed, to tell a wrong key from a corrupt row.
KEY_CHECK = b"alliance offline queue key check"
KEY_CHECK_NAME = "key_check"
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
)""", """
CREATE TABLE IF NOT EXISTS queue_settings (
    name TEXT PRIMARY KEY,
    value BLOB NOT NULL
)""")
PENDING_COLUMNS = "id, kind, method, path, body, idempotency_key, reference, queued_at, attempts, last_error"
DEAD_LETTER_COLUMNS = ("id, operation_id, kind, method, path, body, idempotency_key, reference, queued_at, failed_at, "
                       "http_status, code, detail, request_id")
# A row of PENDING_COLUMNS and one of DEAD_LETTER_COLUMNS, as SQLite returns them.
_PendingRow: TypeAlias = "tuple[int, str, str, str, bytes, str, str, str, int, str | None]"
_DeadLetterRow: TypeAlias = (
    "tuple[int, int | None, str, str, str, bytes, str, str, str, str, int | None, str, str, str | None]"
)


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


class _BodyCipher:
    """AES-256-GCM over request bodies, each sealed body bound to its idempotency key.

    Binding the key as associated data means a sealed body copied onto another row
    does not open, so one operation can never be sent under another's key.
    """

    def __init__(self, key: bytes) -> None:
        if not isinstance(key, bytes) or len(key) != KEY_BYTES:
            raise ConfigurationError(f"an offline queue key is exactly {KEY_BYTES} bytes")
        self._aead = AESGCM(key)

    def seal(self, body: bytes, idempotency_key: str) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return SEALED_FORMAT + nonce + self._aead.encrypt(nonce, body, idempotency_key.encode("utf-8"))

    def open(self, sealed: bytes, idempotency_key: str) -> bytes | None:
        """The body, or None if it was not sealed by this key for this idempotency key."""
        if not sealed.startswith(SEALED_FORMAT):
            return None
        nonce = sealed[len(SEALED_FORMAT):len(SEALED_FORMAT) + NONCE_BYTES]
        try:
            return self._aead.decrypt(nonce, sealed[len(SEALED_FORMAT) + NONCE_BYTES:],
                                      idempotency_key.encode("utf-8"))
        except InvalidTag:
            return None


def _read_key_file(path: Path) -> bytes:
    try:
        mode = path.stat().st_mode
        key = path.read_bytes()
    except FileNotFoundError:
        raise ConfigurationError(f"the offline queue key file {path} is missing; without it the operations "
                                 "waiting in the queue cannot be read (restore it, or pass key=)") from None
    except OSError as error:
        raise ConfigurationError(f"cannot read the offline queue key file {path}: {error.strerror}") from error
    if os.name == "posix" and mode & 0o077:
        raise ConfigurationError(f"the offline queue key file {path} is readable by group or others; chmod 600 it")
    if len(key) != KEY_BYTES:
        raise ConfigurationError(f"the offline queue key file {path} does not hold a {KEY_BYTES}-byte key")
    return key


def _create_key_file(path: Path) -> bytes:
    """Write a new random key, owner-only, under ``path``; durable before the queue relies on it."""
    key = os.urandom(KEY_BYTES)
    try:
        # A private temporary file linked into place: the key is never readable by others and
        # never half-written under its real name, and an existing key is never replaced.
        descriptor, temporary_name = tempfile.mkstemp(prefix=".queue-key-", dir=path.parent)
        try:
            os.fchmod(descriptor, KEY_FILE_MODE)
            with os.fdopen(descriptor, "wb") as handle:
                handle.write(key)
                handle.flush()
                os.fsync(handle.fileno())
            os.link(temporary_name, path)
        finally:
            Path(temporary_name).unlink(missing_ok=True)
        # The queue is about to rely on this key: its directory entry must survive a power cut too.
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
    except FileExistsError:
        # Another queue given the same key file created it first; share that key.
        return _read_key_file(path)
    except OSError as error:
        raise ConfigurationError(f"cannot create the offline queue key file {path}: {error.strerror}") from error
    return key


class OfflineQueue:
    """Pending operations in order, and dead letters, in a SQLite file shared safely by threads."""

    def __init__(self, path: str | os.PathLike[str], *, key: bytes | None = None,
                 key_file: str | os.PathLike[str] | None = None,
                 max_pending_operations: int = DEFAULT_MAX_PENDING_OPERATIONS,
                 max_body_bytes: int = DEFAULT_MAX_BODY_BYTES, busy_timeout_s: float = 10.0,
                 clock: Callable[[], datetime] = _utc_now) -> None:
        if max_pending_operations < 1 or max_body_bytes < 1:
            raise ValueError("queue limits must be positive")
        if key is not None and key_file is not None:
            raise ValueError("give the queue's key or its key file, not both")
        self.path = Path(path)
        self.key_file = None if key is not None else Path(key_file or f"{self.path}{KEY_FILE_SUFFIX}")
        self.max_pending_operations = max_pending_operations
        self.max_body_bytes = max_body_bytes
        self._clock = clock
        self._lock = threading.RLock()
        self._connection, self._cipher = self._open(busy_timeout_s, key)

    def _open(self, busy_timeout_s: float, key: bytes | None) -> tuple[sqlite3.Connection, _BodyCipher]:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # Create the file owner-only before SQLite opens it; SQLite gives its -wal and
            # -shm companions the same permissions.
            os.close(os.open(self.path, os.O_CREAT | os.O_RDWR, QUEUE_FILE_MODE))
            connection = sqlite3.connect(self.path, timeout=busy_timeout_s, isolation_level=None,
                                         check_same_thread=False)
        except (OSError, sqlite3.Error) as error:
            raise ConfigurationError(f"cannot open the offline queue {self.path}: {error}") from error
        try:
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
                cipher = self._keyed_cipher(connection, key)
                if version < SCHEMA_VERSION:
                    _seal_plaintext_bodies(connection, cipher)
                connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            _scrub_if_needed(connection)
        except BaseException:
            connection.close()
            raise
        return connection, cipher

    def _keyed_cipher(self, connection: sqlite3.Connection, key: bytes | None) -> _BodyCipher:
        """The cipher of this queue's key; the first opening of a queue keys it (inside its transaction)."""
        check = connection.execute("SELECT value FROM queue_settings WHERE name = ?", (KEY_CHECK_NAME,)).fetchone()
        if key is None:
            assert self.key_file is not None
            key = (_read_key_file(self.key_file) if check is not None or self.key_file.exists()
                   else _create_key_file(self.key_file))
        cipher = _BodyCipher(key)
        if check is None:
            connection.execute("INSERT INTO queue_settings (name, value) VALUES (?, ?)",
                               (KEY_CHECK_NAME, cipher.seal(KEY_CHECK, KEY_CHECK_NAME)))
        elif cipher.open(check[0], KEY_CHECK_NAME) != KEY_CHECK:
            raise ConfigurationError(f"this key does not open this queue {self.path}; it was keyed with another")
        return cipher

    def append(self, *, kind: str, method: str, path: str, body: bytes, idempotency_key: str, reference: str) -> int:
        """Store an operation at the end of the queue, durably; returns its id."""
        if kind not in QUEUEABLE_KINDS:
            raise ValueError(f"{kind!r} operations are never queued")
        if len(body) > self.max_body_bytes:
            raise InvalidRequestError(
                f"the operation is {len(body)} bytes, more than the {self.max_body_bytes} allowed",
                code="request_too_large",
            )
        with self._lock, _Transaction(self._connection) as connection:
            count = connection.execute("SELECT count(*) FROM pending_operations").fetchone()[0]
            if count >= self.max_pending_operations:
                raise QueueFullError(f"the offline queue already holds {count} operations; deliver them first")
            cursor = connection.execute(
                "INSERT INTO pending_operations (kind, method, path, body, idempotency_key, reference, queued_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (kind, method, path, self._cipher.seal(body, idempotency_key), idempotency_key, reference,
                 self._clock().isoformat()),
            )
            return int(cursor.lastrowid or 0)

    def next_pending(self, *, after_id: int = 0) -> PendingOperation | None:
        """The oldest pending operation after ``after_id``, or None."""
        with self._lock:
            row = self._connection.execute(
                f"SELECT {PENDING_COLUMNS} FROM pending_operations WHERE id > ? ORDER BY id LIMIT 1", (after_id,)
            ).fetchone()
        return self._pending(row) if row else None

    def get_pending(self, operation_id: int) -> PendingOperation | None:
        """The pending operation with this id, or None once it has left the queue."""
        with self._lock:
            row = self._connection.execute(
                f"SELECT {PENDING_COLUMNS} FROM pending_operations WHERE id = ?", (operation_id,)
            ).fetchone()
        return self._pending(row) if row else None

    def has_pending_before(self, operation_id: int) -> bool:
        """Whether an older operation still waits, so this one must not overtake it."""
        with self._lock:
            exists: int = self._connection.execute(
                "SELECT EXISTS (SELECT 1 FROM pending_operations WHERE id < ?)", (operation_id,)
            ).fetchone()[0]
        return exists == 1

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
        return [self._pending(row) for row in rows]

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
                (self._clock().isoformat(), refusal.http_status, refusal.code,
                 refusal.detail[:MAX_ERROR_TEXT_CHARACTERS], refusal.request_id, operation_id),
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
                    (operation.id, operation.method, operation.path,
                     self._cipher.seal(body, operation.idempotency_key), operation.idempotency_key, reference,
                     operation.queued_at, failed_at, refusal.http_status, refusal.code,
                     refusal.detail[:MAX_ERROR_TEXT_CHARACTERS], refusal.request_id),
                )

    def dead_letters(self, *, limit: int = 100) -> list[DeadLetter]:
        """Operations the hub refused for good, oldest first."""
        with self._lock:
            rows = self._connection.execute(
                f"SELECT {DEAD_LETTER_COLUMNS} FROM dead_letters ORDER BY id LIMIT ?", (_bounded(limit),)
            ).fetchall()
        return [self._dead_letter(row) for row in rows]

    def dead_letter_count(self) -> int:
        """How many dead letters are kept."""
        with self._lock:
            return int(self._connection.execute("SELECT count(*) FROM dead_letters").fetchone()[0])

    def discard_dead_letter(self, dead_letter_id: int) -> bool:
        """Delete one dead letter once someone has dealt with it; returns whether it existed."""
        with self._lock, _Transaction(self._connection) as connection:
            return connection.execute("DELETE FROM dead_letters WHERE id = ?", (dead_letter_id,)).rowcount == 1

    def _pending(self, row: _PendingRow) -> PendingOperation:
        operation = PendingOperation(*row)
        body = self._opened(operation.body, operation.idempotency_key, f"queued operation {operation.id}")
        return dataclasses.replace(operation, body=body)

    def _dead_letter(self, row: _DeadLetterRow) -> DeadLetter:
        letter = DeadLetter(*row)
        return dataclasses.replace(letter, body=self._opened(letter.body, letter.idempotency_key,
                                                             f"dead letter {letter.id}"))

    def _opened(self, sealed: bytes, idempotency_key: str, what: str) -> bytes:
        body = self._cipher.open(bytes(sealed), idempotency_key)
        if body is None:
            raise ConfigurationError(f"{what} in the offline queue {self.path} does not unseal: "
                                     "the file was altered or damaged")
        return body

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


def _seal_plaintext_bodies(connection: sqlite3.Connection, cipher: _BodyCipher) -> None:
    """Seal the bodies an older SDK stored in plaintext, and mark the file for scrubbing."""
    sealed = 0
    for table in ("pending_operations", "dead_letters"):
        rows = connection.execute(f"SELECT id, body, idempotency_key FROM {table}").fetchall()
        for row_id, body, idempotency_key in rows:
            connection.execute(f"UPDATE {table} SET body = ? WHERE id = ?",
                               (cipher.seal(bytes(body), idempotency_key), row_id))
        sealed += len(rows)
    if sealed:
        connection.execute("INSERT OR REPLACE INTO queue_settings (name, value) VALUES ('scrub_pending', x'01')")


def _scrub_if_needed(connection: sqlite3.Connection) -> None:
    """Rewrite the file after plaintext bodies were sealed, so none is left in free pages or the log.

    The mark is committed with the sealing and cleared only after the rewrite, so a till
    that stops in between scrubs the file the next time it opens the queue.
    """
    if connection.execute("SELECT 1 FROM queue_settings WHERE name = 'scrub_pending'").fetchone() is None:
        return
    # VACUUM writes every page afresh; the checkpoint copies them over the old file and
    # empties the write-ahead log, which still holds the pages as they were.
    connection.execute("VACUUM")
    busy = connection.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
    if busy:
        # Another connection is reading: the log could not be emptied; try at the next opening.
        return
    with _Transaction(connection):
        connection.execute("DELETE FROM queue_settings WHERE name = 'scrub_pending'")


def _bounded(limit: int) -> int:
    return max(1, min(int(limit), MAX_LISTED_ROWS))

