"""Idempotency keys: one effect per (partner, key), the stored reply for every retry.

A key is claimed with an insert that the unique constraint arbitrates, in the same
transaction as the operation's effects and its stored reply, so an effect without a
stored reply (or the reverse) cannot exist. A request that finds the key held by a
request still running is told to retry; if the process holding it dies, the database
rolls its transaction back, claim included, and a retry proceeds. How each database
takes a claim is the storage adapter's (``Storage.claim``); what a claim means is here.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, delete, select, tuple_
from sqlalchemy.orm import Session

from alliance.domain.errors import AllianceError, Conflict
from alliance.domain.signatures import PartnerKeyRecord
from alliance.models import IdempotencyRecord
from alliance.storage import ClaimAttempt, FirstRead, NonceRow, PendingWrite
from alliance.storage.adapters import storage_for

MINIMUM_RETENTION = timedelta(hours=72)
IN_FLIGHT_RETRY_AFTER_S = 1


class KeyInFlight(Conflict):
    """Another request with this key is being processed right now."""

    code = "idempotency_key_in_flight"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.retry_after_s = IN_FLIGHT_RETRY_AFTER_S


class NonceAlreadySpent(Exception):
    """The nonce handed to ``claim`` was spent by another request (the same request, sent twice at once)."""


class KeyNotAsVerified(Exception):
    """The key handed to ``claim`` no longer stands as the request was verified with it; nothing was written."""


class KeyReused(AllianceError):
    """The key was already used for a different request."""

    code = "idempotency_key_reused"
    http_status = 422
    title = "Idempotency key reused"


def request_fingerprint(method: str, target: str, body: bytes, *, key: bytes) -> str:
    """A keyed digest (HMAC-SHA256 under ``key``) of what makes two requests the same request.

    Keyed because a body may carry a member's PIN (balance inquiries, PIN redemptions):
    a plain digest, kept 72 hours, would let anyone holding the table try all 10^4 PINs
    of a known card against it. Under a key the database never holds it reveals nothing.
    """
    return _fingerprint(hmac.new(key, digestmod=hashlib.sha256), method, target, body)


def _fingerprint(digest: Any, method: str, target: str, body: bytes) -> str:
    for part in (method.upper().encode(), target.encode(), body):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return str(digest.hexdigest())


@dataclass(frozen=True, slots=True)
class Claim:
    """The key's record as this request holds it: new (``in_flight``) or ``completed`` earlier.

    ``partner_id`` and ``key`` name the record (its primary key).
    """

    partner_id: int
    key: str
    status: str
    response_status: int | None = None
    response_body: str | None = None
    # The rows of the first read the claim carried (``claim(first=...)``), if it ran with the claim.
    first_rows: list[Any] | None = None


def claim(session: Session, *, partner_id: int, key: str, fingerprint: str, now: datetime,
          nonce: NonceRow | None = None, key_to_confirm: PartnerKeyRecord | None = None,
          first: FirstRead | None = None) -> Claim:
    """Take the key for this request, or find its earlier completion; refuse a key in use.

    The claim lives and commits in the request's transaction: the key is spent exactly
    when the effects and the stored reply are (see ``reply_write``). A second request
    under a key whose first is still running is told at once to retry (409 with
    Retry-After) instead of queueing behind it.

    ``nonce`` is the request's signature nonce, spent first, in the claim's own round
    trip where the database allows it; ``NonceAlreadySpent`` when another request spent
    it, and nothing is claimed. ``key_to_confirm`` (with ``nonce``): the request was
    verified against a cached key (``partner_keys.KeyCache``), which must still stand
    exactly so at the nonce's ``seen_at``; ``KeyNotAsVerified`` when it does not, and
    nothing is written. ``first``: the operation's first read, run in the claim's round
    trip where the database allows it; its rows come back in ``Claim.first_rows`` when
    the key was claimed there (else None: the operation reads it itself).
    """
    if key_to_confirm is not None and nonce is None:
        raise ValueError("a key is confirmed together with the request's nonce")
    outcome = storage_for(session).claim(session, ClaimAttempt(
        partner_id=partner_id, key=key, fingerprint=fingerprint, now=now, lock_key=_advisory_lock_key(partner_id, key),
        nonce=nonce, key_to_confirm=key_to_confirm, first=first))
    if not outcome.key_held:
        raise KeyNotAsVerified()
    if not outcome.nonce_spent:
        raise NonceAlreadySpent()
    if outcome.claimed:
        return Claim(partner_id=partner_id, key=key, status="in_flight", first_rows=outcome.first_rows)
    # Nothing inserted: the key is taken, or another request holds its lock right now.
    row = session.execute(
        select(IdempotencyRecord.status, IdempotencyRecord.request_fingerprint,
               IdempotencyRecord.response_status, IdempotencyRecord.response_body)
        .where(IdempotencyRecord.partner_id == partner_id, IdempotencyRecord.idempotency_key == key)
        .with_for_update(skip_locked=True)
    ).first()
    if row is None:
        raise KeyInFlight("a request with this idempotency key is still being processed; retry shortly")
    if row.request_fingerprint != fingerprint:
        raise KeyReused("this idempotency key was used for a different request; use a new key for a new request")
    return Claim(partner_id=partner_id, key=key, status=row.status, response_status=row.response_status,
                 response_body=row.response_body)


def _advisory_lock_key(partner_id: int, key: str) -> int:
    """A signed 64-bit name for the (partner, key) pair; a collision only delays a retry."""
    digest = hashlib.sha256(b"idempotency\0" + str(partner_id).encode() + b"\0" + key.encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def reply_write(session: Session, *, partner_id: int, key: str, status: int, body: str,
                now: datetime) -> PendingWrite:
    """The write storing the reply every retry with the partner's ``key`` will get.

    For the unit of work to run with its commit, in one round trip where the database
    allows it (``UnitOfWork.commit_with``): services never commit.
    """
    return storage_for(session).reply_write(partner_id=partner_id, key=key, status=status, body=body, now=now)


def forget(session: Session, *, partner_id: int, key: str) -> None:
    """Drop a key whose request never reached anything to act on, so a retry can act."""
    session.execute(delete(IdempotencyRecord).where(IdempotencyRecord.partner_id == partner_id,
                                                    IdempotencyRecord.idempotency_key == key))


def prune(session: Session, *, now: datetime, retention: timedelta = MINIMUM_RETENTION, limit: int = 10_000) -> int:
    """Forget keys older than the retention (never less than 72 hours); returns how many."""
    retention = max(retention, MINIMUM_RETENTION)
    old = (select(IdempotencyRecord.idempotency_key, IdempotencyRecord.partner_id)
           .where(IdempotencyRecord.created_at < now - retention).limit(limit).subquery())
    # A DELETE's result is a CursorResult; Session.execute types every result as Result.
    return cast(CursorResult[*tuple[Any, ...]], session.execute(
        delete(IdempotencyRecord).where(tuple_(IdempotencyRecord.idempotency_key, IdempotencyRecord.partner_id)
                                        .in_(select(old.c.idempotency_key, old.c.partner_id))))).rowcount
