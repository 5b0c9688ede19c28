"""A signed partner request's one transaction, as one object: ``PartnerRequest``.

Every partner request runs in a single unit of work, in this order:

1. **Nonce.** The signature's nonce is spent. A read spends it and commits at once,
   without waiting for the disk (replaying a read changes nothing). A write spends it
   in its idempotency claim's statement, or, when refused before its claim (a 422),
   at the end of the request.
2. **Key confirmation.** A write verified against a cached key (``partner_keys.KeyCache``)
   has the key confirmed in the claim's statement: the nonce is spent only if the key
   still stands exactly so. When it no longer does, everything is taken back and the
   request is verified again from the database (``RequestVerifier``), whose verdict stands.
3. **Idempotency claim** (``idempotency.claim``): the key taken for this request, or its
   earlier reply found. The operation's first read may ride in the claim's round trip.
4. **Operation**, then its **reply stored** under the key, and the **commit**: the reply
   and the commit in one round trip where the database allows it
   (``UnitOfWork.commit_with``). The nonce, the claim, the effects and the stored reply
   commit together or not at all; a till that retries after a crash sends the same key.

Nothing else in a partner request commits. The web layer verifies the signature,
parses the request and presents the reply; this object owns the transaction.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from alliance.domain.errors import AllianceError, NotFound
from alliance.domain.signatures import MAX_CLOCK_AHEAD_S, PartnerKeyRecord, SignatureRejected, VerifiedSignature
from alliance.services import idempotency, partner_keys
from alliance.storage import FirstRead, NonceRow
from alliance.storage.unit_of_work import Session, UnitOfWork, keep_record

# An operation gets the unit of work (and, as the route declares, the preparation's
# result or the rows of its first read) and returns the reply's status and JSON body.
Operation = Callable[..., tuple[int, dict[str, Any]]]
Preparation = Callable[[UnitOfWork], object]
ProblemBody = Callable[[AllianceError], dict[str, Any]]


class RequestVerifier(Protocol):
    """How the web layer verifies the request again when the cached key it was verified with no longer stands."""

    def verify_from_database(self, session: Session, stale_key: PartnerKeyRecord | None) -> VerifiedSignature:
        """Verify the request against the keys in the database (``stale_key`` leaves the cache); raise its refusal."""

    def refused_as_replay(self) -> None:
        """A request admitted on a cached key turned out to be a replay: give back what admitting it took."""


@dataclass(frozen=True, slots=True)
class Reply:
    """What the partner gets: a status, a JSON body, and whether it is a stored reply to an earlier request."""

    status: int
    body: str
    replayed: bool


def replayed() -> SignatureRejected:
    """The refusal of a nonce another request has spent."""
    return SignatureRejected("signature_replayed", "this nonce was already used; sign every request afresh")


def nonce_row(verified: VerifiedSignature, seen_at: datetime) -> NonceRow:
    """The nonce's row, kept until no signature carrying it can be valid any more."""
    return NonceRow(nonce=verified.nonce, partner_id=verified.key.partner_id, key_id=verified.key.key_id,
                    seen_at=seen_at, prune_after=verified.expires + timedelta(seconds=MAX_CLOCK_AHEAD_S))


def _json(body: dict[str, Any]) -> str:
    return json.dumps(body, separators=(",", ":"), sort_keys=True)


class PartnerRequest:
    """The one transaction of a signed partner request: nonce, key confirmation, claim, operation, reply, commit."""

    def __init__(self, unit_of_work: UnitOfWork, *, now: datetime, verifier: RequestVerifier,
                 problem_body: ProblemBody) -> None:
        self.unit_of_work = unit_of_work
        self.now = now
        self._verifier = verifier
        self._problem_body = problem_body
        self._nonce: NonceRow | None = None
        self._nonce_written = False
        # Whether anything of the request waits for ``commit_unclaimed``.
        self._pending = False
        # The cached key the request was verified with, until the database confirms it.
        self.unconfirmed_key: PartnerKeyRecord | None = None
        self.partner_id = 0

    # --- 1 and 2: the nonce, and the key it was signed with ------------------------------

    def admit(self, verified: VerifiedSignature, *, key_confirmed: bool, read: bool) -> None:
        """Take the verified request's nonce: a read spends it and commits now, a write keeps it for its claim.

        ``key_confirmed=False``: verified against a cached key, which the claim (or the
        end of the request) confirms before the nonce is written.
        """
        self._nonce, self._nonce_written = nonce_row(verified, self.now), False
        self.unconfirmed_key = None if key_confirmed else verified.key
        self.partner_id = verified.key.partner_id
        self._pending = True
        if read:
            # Losing a read's nonce in a crash is harmless: a replay of a read changes nothing.
            self.unit_of_work.defer_commit_flush()
            self._write_nonce()
            self.commit_unclaimed()

    def commit_unclaimed(self) -> None:
        """Keep what the request has written outside ``run`` (its nonce, when refused before its claim)."""
        if self._pending:
            if not self._nonce_written:
                self._write_nonce()
            self.unit_of_work.commit()
            self._pending = False

    def close(self) -> None:
        """End the transaction; whatever was not committed (an unexpected error's half-done work) is rolled back."""
        self.unit_of_work.__exit__(None, None, None)

    def _write_nonce(self) -> None:
        if self.unconfirmed_key is not None:
            # A write refused before its claim (a 422, say): its key is confirmed here, by
            # verifying it again from the database, before its nonce is kept.
            self._verify_again()
        assert self._nonce is not None
        if not partner_keys.record_nonce(self.unit_of_work.session, self._nonce):
            raise replayed()
        self._nonce_written = True
        self._pending = True

    def _take_unwritten_nonce(self) -> NonceRow | None:
        """The nonce for the claim to spend, if not spent yet; it counts as spent from here."""
        if self._nonce is None or self._nonce_written:
            return None
        self._nonce_written = True
        return self._nonce

    def _verify_again(self) -> None:
        """The cached key no longer stands: take everything back and let the database's verification decide."""
        stale, self.unconfirmed_key = self.unconfirmed_key, None
        self.unit_of_work.session.rollback()
        self._nonce, self._nonce_written, self._pending = None, False, False
        verified = self._verifier.verify_from_database(self.unit_of_work.session, stale)
        self._nonce, self._nonce_written = nonce_row(verified, self.now), False
        self.partner_id = verified.key.partner_id
        self._pending = True

    def _start_over(self) -> None:
        """Take back everything of the transaction except the nonce, which is spent again."""
        self.unit_of_work.session.rollback()
        self._write_nonce()

    # --- 3 and 4: the claim, the operation, the reply and the commit ---------------------

    def run(self, *, key: str, fingerprint: str, operation: Operation, prepare: Preparation | None = None,
            operation_writes: bool = True, first: FirstRead | None = None) -> Reply:
        """Run ``operation`` once per idempotency key; later requests with the key get the stored reply.

        An operation that refuses (an ``AllianceError``) may already have written part of
        its work, so the transaction is taken back whole and the nonce, the claim and the
        refusal are written again; that costs a few statements on a refusal instead of a
        savepoint's two on every success.

        ``prepare`` (a member's PIN check, say) runs after the key is known to be new, and
        what it records (a failed PIN attempt) is kept even when the request is refused:
        with a preparation, the operation runs in a savepoint instead, unless it only reads
        (``operation_writes=False``). Its result is passed to ``operation``. A retry of a
        completed request gets the stored reply without preparing again.

        ``first``: the operation's first read, carried by the claim's round trip where the
        database allows it; ``operation`` gets its rows as ``first_rows`` (None when they
        were not read there: the operation reads them itself).
        """
        if first is not None and prepare is not None:
            raise ValueError("an operation with a preparation has no first read to carry with the claim")
        self._pending = False
        uow = self.unit_of_work
        claim = self._claim(key, fingerprint, first)
        if claim.status == "completed":
            uow.commit()
            return Reply(claim.response_status or 0, claim.response_body or "", replayed=True)
        try:
            if first is not None:
                status, body = operation(uow, first_rows=claim.first_rows)
            elif prepare is None:
                status, body = operation(uow)
            else:
                prepared = prepare(uow)
                if operation_writes:
                    with uow.session.begin_nested():
                        status, body = operation(uow, prepared)
                else:
                    status, body = operation(uow, prepared)
        except AllianceError as error:
            if prepare is None:
                self._start_over()
                if not isinstance(error, NotFound):
                    claim = self._claim(key, fingerprint)
                    if claim.status == "completed":
                        # Another request under the key completed while this one started over.
                        uow.commit()
                        return Reply(claim.response_status or 0, claim.response_body or "", replayed=True)
            # What the refusal keeps (a risk decision, a failed verification) commits with its reply.
            keep_record(uow.session, error)
            if isinstance(error, NotFound):
                # The request named something that does not exist (yet): nothing was done, so
                # the key is not spent; a retry once the object exists must be able to act.
                if prepare is not None:
                    idempotency.forget(uow.session, partner_id=claim.partner_id, key=claim.key)
                uow.commit()
                return Reply(error.http_status, _json(self._problem_body(error)), replayed=False)
            status, body = error.http_status, self._problem_body(error)
        body_text = _json(body)
        uow.commit_with(idempotency.reply_write(uow.session, partner_id=claim.partner_id, key=claim.key, status=status,
                                                body=body_text, now=self.now))
        return Reply(status, body_text, replayed=False)

    def _claim(self, key: str, fingerprint: str, first: FirstRead | None = None) -> idempotency.Claim:
        """Spend the nonce (if not yet) and claim the key; a refusal (in flight, reused) still spends the nonce."""
        uow = self.unit_of_work
        nonce = self._take_unwritten_nonce()
        signing_key = self.unconfirmed_key if nonce is not None else None
        partner_id = self.partner_id
        try:
            claimed = idempotency.claim(uow.session, partner_id=partner_id, key=key, fingerprint=fingerprint,
                                        now=self.now, nonce=nonce, key_to_confirm=signing_key,
                                        first=first if nonce is not None else None)
        except idempotency.KeyNotAsVerified:
            # The cached key changed since: the database verifies the request again (its
            # refusal stands, a 401 with nothing kept) and the claim runs again; the first
            # read rides along only if the request still speaks for the same partner.
            self._verify_again()
            return self._claim(key, fingerprint, first if self.partner_id == partner_id else None)
        except idempotency.NonceAlreadySpent:
            if signing_key is not None:
                # A replay verified against the cached key: not the partner's request.
                self._verifier.refused_as_replay()
            raise replayed() from None
        except (idempotency.KeyInFlight, idempotency.KeyReused):
            self.unconfirmed_key = None
            uow.commit()
            raise
        self.unconfirmed_key = None
        return claimed
