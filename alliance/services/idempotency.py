"""Idempotency keys: one effect per (partner, key), the stored reply for every retry.

A key is claimed with an insert that the unique constraint arbitrates, in the same
transaction as the operation's effects and its stored reply, so an effect without a
stored reply (or the reverse) cannot exist. A request that finds the key held by a
request still running is told to retry; if the process holding it dies, the database
rolls its transaction back, claim included, and a retry proceeds.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import BigInteger, Select, String, bindparam, delete, exists, func, literal, select, text, true, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import BindParameter
from sqlalchemy.sql.visitors import replacement_traverse

from alliance.db import DriverStatement
from alliance.domain.errors import AllianceError, Conflict
from alliance.domain.signatures import PartnerKeyRecord
from alliance.models import IdempotencyRecord, SeenNonce
from alliance.models.base import UTCDateTime, insert_unless_conflicting
from alliance.services.partner_keys import (
    KEY_STILL_AS_VERIFIED,
    confirmation_parameters,
    key_still_as_verified,
    record_nonce,
)

MINIMUM_RETENTION = timedelta(hours=72)
IN_FLIGHT_RETRY_AFTER_S = 1
# The insert happens only if the advisory lock was free; then the unique constraint decides.
CLAIM_UNDER_ADVISORY_LOCK = text("""
    INSERT INTO idempotency_keys (partner_id, idempotency_key, request_fingerprint, status, created_at)
    SELECT :partner_id, :key, :fingerprint, 'in_flight', :now WHERE pg_try_advisory_xact_lock(:lock_key)
    ON CONFLICT (partner_id, idempotency_key) DO NOTHING
    RETURNING id
""")
COMPLETE = (
    update(IdempotencyRecord).where(IdempotencyRecord.id == bindparam("record_id"))
    .values(status="completed", response_status=bindparam("reply_status"), response_body=bindparam("reply_body"),
            completed_at=bindparam("completed_at_"))
)
# Every partner write runs these; straight through psycopg on PostgreSQL.
_CLAIM_ON_DRIVER = DriverStatement(CLAIM_UNDER_ADVISORY_LOCK)
_COMPLETE_ON_DRIVER = DriverStatement(COMPLETE)


def _claim_row(confirm_key: bool):  # type: ignore[no-untyped-def]
    """The request's nonce and its claim (and the signing key's confirmation) as a one-row subquery.

    Its binds are prefixed ``claim_`` (and ``key_`` for the key's confirmation), so the
    statement it is put in front of keeps its own names.
    """
    key_held = KEY_STILL_AS_VERIFIED.cte("key_held") if confirm_key else None
    nonce_row = select(bindparam("claim_nonce", type_=String), bindparam("claim_nonce_partner_id", type_=BigInteger),
                       bindparam("claim_nonce_key_id", type_=String), bindparam("claim_seen_at", type_=UTCDateTime),
                       bindparam("claim_prune_after", type_=UTCDateTime))
    if key_held is not None:
        nonce_row = nonce_row.where(exists(key_held.select()))
    spent = (postgresql_insert(SeenNonce).from_select(["nonce", "partner_id", "key_id", "seen_at", "prune_after"], nonce_row)
             .on_conflict_do_nothing(index_elements=["nonce"]).returning(SeenNonce.id).cte("spent"))
    claim_row = select(bindparam("claim_partner_id", type_=BigInteger), bindparam("claim_key", type_=String),
                       bindparam("claim_fingerprint", type_=String), literal("in_flight"),
                       bindparam("claim_now", type_=UTCDateTime)).where(
        exists(spent.select()), func.pg_try_advisory_xact_lock(bindparam("claim_lock_key", type_=BigInteger)))
    claimed = (postgresql_insert(IdempotencyRecord)
               .from_select(["partner_id", "idempotency_key", "request_fingerprint", "status", "created_at"], claim_row)
               .on_conflict_do_nothing(index_elements=["partner_id", "idempotency_key"])
               .returning(IdempotencyRecord.id).cte("claimed"))
    return select(
        (exists(key_held.select()) if key_held is not None else literal(True)).label("claim_key_held"),
        exists(spent.select()).label("claim_nonce_spent"),
        select(claimed.c.id).scalar_subquery().label("claim_record_id"),
    ).subquery("claim")


@dataclass(frozen=True)
class ClaimInFront:
    """An operation's first statement with the request's claim in front of it, in one round trip (PostgreSQL).

    Built by ``claim_in_front_of``; ``claim(first=...)`` runs it. The nonce is spent and
    the key claimed first (the subquery's CTEs run before the statement's rows are
    read), and the statement runs only if the claim was taken: a request refused or
    answered from a stored reply reads and locks nothing of it.
    """

    statements: dict[bool, DriverStatement]  # by whether a cached signing key is confirmed too


# The three namespaces of the claim-in-front statement's binds: the claim's own, the
# signing key's confirmation (``partner_keys.confirmation_parameters``) and the first
# statement's, renamed into its own when the statement is built. No name can be in two.
FIRST_PREFIX = "first_"


def _in_first_namespace(statement: Select) -> Select:  # type: ignore[type-arg]
    """``statement`` with each named bind renamed ``first_<name>`` (anonymous binds keep their generated names)."""
    def rename(element):  # type: ignore[no-untyped-def]
        if isinstance(element, BindParameter) and not element.unique:
            return bindparam(FIRST_PREFIX + element.key, value=element.value, type_=element.type,
                             required=element.required)
        return None

    return replacement_traverse(statement, {}, rename)  # type: ignore[no-any-return]


def claim_in_front_of(first: Select) -> ClaimInFront:  # type: ignore[type-arg]
    """``first`` (a Core select) with the claim in front; its parameters are passed under their own names."""
    first = _in_first_namespace(first)
    statements = {}
    for confirm_key in (False, True):
        claim_row = _claim_row(confirm_key)
        carried = (first.add_columns(literal(True).label("claim_first_row"))
                   .where(claim_row.c.claim_record_id.is_not(None)).lateral("first_statement"))
        statements[confirm_key] = DriverStatement(select(claim_row, carried).select_from(claim_row.outerjoin(carried, true())))
    return ClaimInFront(statements)


# The same claim, after spending the request's signature nonce in the same statement: no
# claim (and no lock) unless the nonce was new. By whether a cached signing key is
# confirmed too: then the nonce is spent (and the key claimed) only if the key still
# stands exactly as the request was verified with it (``partner_keys.KEY_STILL_AS_VERIFIED``).
CLAIM_WITH_NONCE_UNDER_ADVISORY_LOCK = {confirm_key: select(_claim_row(confirm_key)) for confirm_key in (False, True)}
_CLAIM_WITH_NONCE_ON_DRIVER = {confirm_key: DriverStatement(statement)
                               for confirm_key, statement in CLAIM_WITH_NONCE_UNDER_ADVISORY_LOCK.items()}


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


def _fingerprint(digest, method: str, target: str, body: bytes) -> str:  # type: ignore[no-untyped-def]
    for part in (method.upper().encode(), target.encode(), body):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


@dataclass(frozen=True, slots=True)
class Claim:
    """The key's record as this request holds it: new (``in_flight``) or ``completed`` earlier."""

    record_id: int
    status: str
    response_status: int | None = None
    response_body: str | None = None
    # The rows of the statement the claim was put in front of (``claim(first=...)``), if it ran.
    first_rows: list | None = None  # type: ignore[type-arg]


def claim(session: Session, *, partner_id: int, key: str, fingerprint: str, now: datetime,
          nonce: Mapping[str, object] | None = None,
          key_to_confirm: PartnerKeyRecord | None = None,
          first: tuple[ClaimInFront, Mapping[str, object]] | None = None) -> Claim:
    """Take the key for this request, or find its earlier completion; refuse a key in use.

    On PostgreSQL the claim first takes a transaction-scoped advisory lock named after
    the (partner, key) without waiting, so a second request under a key whose first is
    still running is told at once to retry (409 with Retry-After) instead of queueing
    behind it. The claim then lives and commits in the request's transaction: the key
    is spent exactly when the effects and the stored reply are (see ``complete``).

    ``nonce`` (``partner_keys.record_nonce``'s arguments) is the request's signature
    nonce, spent first, in the claim's own statement on PostgreSQL: one round trip for
    both. ``NonceAlreadySpent`` when another request spent it, and nothing is claimed.

    ``key_to_confirm`` (with ``nonce``): the request was verified against a cached key
    (``partner_keys.KeyCache``); the claim first confirms, in the same statement on
    PostgreSQL, that the key still stands exactly so at the nonce's ``seen_at``.
    ``KeyNotAsVerified`` when it does not, and nothing is written.

    ``first`` (with ``nonce``, on PostgreSQL): the operation's first statement
    (``claim_in_front_of``) and its parameters, run in the claim's round trip; its rows
    come back in ``Claim.first_rows`` when the key was claimed, else it did not run.
    """
    if key_to_confirm is not None and nonce is None:
        raise ValueError("a key is confirmed together with the request's nonce")
    connection = session.connection()
    if connection.dialect.name == "postgresql":
        parameters = {"partner_id": partner_id, "key": key, "fingerprint": fingerprint, "now": now,
                      "lock_key": _advisory_lock_key(partner_id, key)}
        if nonce is None:
            claimed = _CLAIM_ON_DRIVER.rows(connection, parameters)
            record_id = claimed[0].id if claimed else None
        else:
            # The claim as ``_claim_row`` builds it: its binds prefixed ``claim_``.
            confirm_key = key_to_confirm is not None
            claim_parameters = {
                **{f"claim_{name}": value for name, value in parameters.items()},
                "claim_nonce": nonce["nonce"], "claim_nonce_partner_id": nonce["partner_id"],
                "claim_nonce_key_id": nonce["key_id"], "claim_seen_at": nonce["seen_at"],
                "claim_prune_after": nonce["prune_after"],
                **(confirmation_parameters(key_to_confirm, nonce["seen_at"]) if confirm_key else {}),  # type: ignore[arg-type]
            }
            if first is not None:
                carrier, first_parameters = first
                rows = carrier.statements[confirm_key].rows(connection, {
                    **{FIRST_PREFIX + name: value for name, value in first_parameters.items()}, **claim_parameters})
            else:
                rows = _CLAIM_WITH_NONCE_ON_DRIVER[confirm_key].rows(connection, claim_parameters)
            outcome = rows[0]
            if not outcome.claim_key_held:
                raise KeyNotAsVerified()
            if not outcome.claim_nonce_spent:
                raise NonceAlreadySpent()
            record_id = outcome.claim_record_id
            if record_id is not None and first is not None:
                return Claim(record_id=record_id, status="in_flight",
                             first_rows=[row for row in rows if row.claim_first_row])
    else:
        if key_to_confirm is not None and not key_still_as_verified(session, key_to_confirm, nonce["seen_at"]):  # type: ignore[index, arg-type]
            raise KeyNotAsVerified()
        if nonce is not None and not record_nonce(session, **nonce):  # type: ignore[arg-type]
            raise NonceAlreadySpent()
        # SQLite: BEGIN IMMEDIATE already serialises every writing transaction.
        record_id = session.execute(insert_unless_conflicting(session, IdempotencyRecord, "partner_id", "idempotency_key")
                                    .values(partner_id=partner_id, idempotency_key=key, request_fingerprint=fingerprint,
                                            status="in_flight", created_at=now)
                                    .returning(IdempotencyRecord.id)).scalar()
    if record_id is not None:
        return Claim(record_id=record_id, status="in_flight")
    # Nothing inserted: the key is taken, or another request holds its lock right now.
    # A record claimed but never completed (left by an earlier version, which committed
    # claims on their own) is locked and run again, as its request never took effect.
    row = session.execute(
        select(IdempotencyRecord.id, IdempotencyRecord.status, IdempotencyRecord.request_fingerprint,
               IdempotencyRecord.response_status, IdempotencyRecord.response_body)
        .where(IdempotencyRecord.partner_id == partner_id, IdempotencyRecord.idempotency_key == key)
        .with_for_update(skip_locked=True)
    ).first()
    if row is None:
        raise KeyInFlight("a request with this idempotency key is still being processed; retry shortly")
    if row.request_fingerprint != fingerprint:
        raise KeyReused("this idempotency key was used for a different request; use a new key for a new request")
    return Claim(record_id=row.id, status=row.status, response_status=row.response_status,
                 response_body=row.response_body)


def _advisory_lock_key(partner_id: int, key: str) -> int:
    """A signed 64-bit name for the (partner, key) pair; a collision only delays a retry."""
    digest = hashlib.sha256(b"idempotency\0" + str(partner_id).encode() + b"\0" + key.encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def completion(*, record_id: int, status: int, body: str, now: datetime) -> tuple[DriverStatement, dict[str, object]]:
    """The statement storing the reply every retry with this key will get, and its values.

    For the unit of work to run with its commit, in one round trip on PostgreSQL
    (``UnitOfWork.commit_with``): services never commit.
    """
    return _COMPLETE_ON_DRIVER, {"record_id": record_id, "reply_status": status, "reply_body": body,
                                 "completed_at_": now}


def complete(session: Session, *, record_id: int, status: int, body: str, now: datetime) -> None:
    """Store the reply in the session's transaction (its commit is the caller's)."""
    statement, parameters = completion(record_id=record_id, status=status, body=body, now=now)
    session.connection().execute(statement.statement, parameters)


def forget(session: Session, *, record_id: int) -> None:
    """Drop a key whose request never reached anything to act on, so a retry can act."""
    session.execute(delete(IdempotencyRecord).where(IdempotencyRecord.id == record_id))


def prune(session: Session, *, now: datetime, retention: timedelta = MINIMUM_RETENTION, limit: int = 10_000) -> int:
    """Forget keys older than the retention (never less than 72 hours); returns how many."""
    retention = max(retention, MINIMUM_RETENTION)
    old = (select(IdempotencyRecord.id).where(IdempotencyRecord.created_at < now - retention)
           .limit(limit).scalar_subquery())
    return session.execute(delete(IdempotencyRecord).where(IdempotencyRecord.id.in_(old))).rowcount
