"""Idempotency keys: one effect per (partner, key), the stored reply for every retry.

A key is claimed with an insert that the unique constraint arbitrates. The request
that then holds the key's row lock runs the operation and stores its reply in the same
transaction as the operation's effects, so an effect without a stored reply (or the
reverse) cannot exist. A request that finds the row locked is told to retry; if the
process holding it dies, the database releases the lock and a retry proceeds.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from alliance.domain.errors import AllianceError, Conflict
from alliance.models import IdempotencyRecord
from alliance.models.base import defer_commit_flush, insert_unless_conflicting

MINIMUM_RETENTION = timedelta(hours=72)
IN_FLIGHT_RETRY_AFTER_S = 1
POSTGRESQL_LOCK_NOT_AVAILABLE = "55P03"


class KeyInFlight(Conflict):
    """Another request with this key is being processed right now."""

    code = "idempotency_key_in_flight"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.retry_after_s = IN_FLIGHT_RETRY_AFTER_S


class KeyReused(AllianceError):
    """The key was already used for a different request."""

    code = "idempotency_key_reused"
    http_status = 422
    title = "Idempotency key reused"


def request_fingerprint(method: str, target: str, body: bytes) -> str:
    """A digest of what makes two requests the same request."""
    digest = hashlib.sha256()
    for part in (method.upper().encode(), target.encode(), body):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


def claim(session: Session, *, partner_id: int, key: str, fingerprint: str, now: datetime) -> None:
    """Create the key's record unless it exists; the unique constraint decides races.

    The claim commits on its own, before the operation, without waiting for the disk:
    the operation's transaction locks the claimed row and commits after it, synchronously,
    and that flush makes the claim durable too. A crash can only lose a claim whose
    operation had not committed, which is a key never used.
    """
    defer_commit_flush(session)
    session.execute(insert_unless_conflicting(session, IdempotencyRecord, "partner_id", "idempotency_key").values(
        partner_id=partner_id, idempotency_key=key, request_fingerprint=fingerprint, status="in_flight",
        created_at=now,
    ))


def lock(session: Session, *, partner_id: int, key: str, fingerprint: str) -> IdempotencyRecord:
    """Take the key's row lock without waiting; refuse a different request under the key."""
    try:
        record = session.scalars(
            select(IdempotencyRecord)
            .where(IdempotencyRecord.partner_id == partner_id, IdempotencyRecord.idempotency_key == key)
            .with_for_update(nowait=True)
        ).one()
    except OperationalError as error:
        if getattr(error.orig, "sqlstate", None) == POSTGRESQL_LOCK_NOT_AVAILABLE:
            raise KeyInFlight("a request with this idempotency key is still being processed; retry shortly") from None
        raise
    if record.request_fingerprint != fingerprint:
        raise KeyReused("this idempotency key was used for a different request; use a new key for a new request")
    return record


def complete(session: Session, *, record_id: int, status: int, body: str, now: datetime) -> None:
    """Store the reply that every retry with this key will get."""
    session.execute(
        update(IdempotencyRecord).where(IdempotencyRecord.id == record_id)
        .values(status="completed", response_status=status, response_body=body, completed_at=now)
    )


def forget(session: Session, *, record_id: int) -> None:
    """Drop a key whose request never reached anything to act on, so a retry can act."""
    session.execute(delete(IdempotencyRecord).where(IdempotencyRecord.id == record_id))


def prune(session: Session, *, now: datetime, retention: timedelta = MINIMUM_RETENTION, limit: int = 10_000) -> int:
    """Forget keys older than the retention (never less than 72 hours); returns how many."""
    retention = max(retention, MINIMUM_RETENTION)
    old = (select(IdempotencyRecord.id).where(IdempotencyRecord.created_at < now - retention)
           .limit(limit).scalar_subquery())
    return session.execute(delete(IdempotencyRecord).where(IdempotencyRecord.id.in_(old))).rowcount
