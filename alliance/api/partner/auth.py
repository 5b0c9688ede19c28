"""Every partner request is signed: verify it before anything else, then remember its nonce."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from urllib.parse import quote

from flask import Response, g, request

from alliance.api.errors import problem_response
from alliance.domain.rate_limits import PartnerLimiter, RateLimited
from alliance.domain.signatures import (
    MAX_CLOCK_AHEAD_S,
    IncomingRequest,
    PartnerKeyRecord,
    SignatureRejected,
    VerifiedSignature,
    verify_signed_request,
)
from alliance.extensions import hub_state
from alliance.services import terminals
from alliance.services.partner_keys import CachedKeyStore, DatabaseKeyStore, KeyCache, KeyNotCached, record_nonce
from alliance.services.unit_of_work import Session, UnitOfWork

LIMITER_KEY = "partner_limiter"
KEY_CACHE_KEY = "partner_key_cache"


@dataclass(frozen=True, slots=True)
class Caller:
    """The partner (and the terminal its key is bound to, if any) behind a verified request."""

    partner_id: int
    key_id: str
    bound_terminal_id: int | None


def utc_now() -> datetime:
    """The hub's clock, in one place so every request uses the same notion of now."""
    return datetime.now(timezone.utc)


def incoming_request() -> IncomingRequest:
    """The request as the signer saw it: method, the target exactly as sent, headers, raw body."""
    environ = request.environ
    target = environ.get("RAW_URI") or environ.get("REQUEST_URI")
    if not target or not target.startswith("/"):
        target = quote(environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", ""), safe="/:@!$&'()*+,;=-._~")
        if environ.get("QUERY_STRING"):
            target += "?" + environ["QUERY_STRING"]
    return IncomingRequest(
        method=request.method,
        url=f"{request.scheme}://{request.host}{target}",
        headers=tuple(request.headers.items()),
        body=request.get_data(cache=True),
    )


READ_METHODS = frozenset({"GET", "HEAD"})


class RequestUnitOfWork:
    """The one database transaction of a partner request: its nonce, then (for a write) its work.

    A write's nonce, idempotency claim, effects and stored reply commit together, with a
    single synchronous commit: a crash before it loses all of them (the till retries the
    same request under the same key), never some. A read commits its nonce at once, without
    waiting for the disk (``defer_commit_flush``): replaying a read changes nothing.

    A write's nonce is written with its idempotency claim, in the claim's statement
    (``take_unwritten_nonce``), or, for a write refused before its claim, at ``commit``.
    A replay was already refused by the verifier, which saw the nonce; the unique index
    still decides between two copies of one request arriving at the same moment.
    """

    def __init__(self, unit_of_work: UnitOfWork, message: IncomingRequest, now: datetime) -> None:
        self.unit_of_work = unit_of_work
        self.message = message
        self.now = now
        self.pending = False
        self._nonce: dict[str, object] | None = None
        self._nonce_written = False
        # The cached key the request was verified with, until the database confirms it.
        self.unconfirmed_key: PartnerKeyRecord | None = None

    def record_nonce(self, verified: VerifiedSignature, now: datetime, *, at_once: bool = True,
                     key_confirmed: bool = True) -> None:
        """Spend the request's nonce in this transaction, or raise ``signature_replayed``.

        ``at_once=False`` (a write) leaves the insert to the idempotency claim or ``commit``.
        ``key_confirmed=False``: the request was verified against a cached key, which the
        claim (or ``commit``) confirms before the nonce is written.
        """
        self._nonce = {"nonce": verified.nonce, "partner_id": verified.key.partner_id, "key_id": verified.key.key_id,
                       "seen_at": now, "prune_after": verified.expires + timedelta(seconds=MAX_CLOCK_AHEAD_S)}
        self._nonce_written = False
        self.unconfirmed_key = None if key_confirmed else verified.key
        self.pending = True
        if at_once:
            self._write_nonce()

    def take_unwritten_nonce(self) -> dict[str, object] | None:
        """The nonce's row for the caller to insert now, if not written yet; it counts as written from here.

        With ``unconfirmed_key`` set, the caller confirms the key in the same statement and
        calls ``key_confirmed`` or, if it no longer stands, ``verify_again``.
        """
        if self._nonce is None or self._nonce_written:
            return None
        self._nonce_written = True
        return self._nonce

    def key_confirmed(self) -> None:
        """The database showed the cached key to stand as the request was verified with it."""
        self.unconfirmed_key = None

    def verify_again(self) -> None:
        """The cached key no longer stands: verify the request from the database, as if nothing was cached.

        Everything of the transaction is taken back, the key leaves the cache, and the
        database's verdict stands: its refusal (nothing of the request is kept) or the key
        as it now is, with the nonce to be spent again (``g.caller`` follows the key).
        """
        stale = self.unconfirmed_key
        self.unconfirmed_key = None
        self.unit_of_work.session.rollback()
        if stale is not None:
            key_cache().forget(stale.key_id)
        self._nonce, self._nonce_written, self.pending = None, False, False
        try:
            verified = verify_signed_request(self.message, now=self.now,
                                             keys=DatabaseKeyStore(self.unit_of_work.session))
        except SignatureRejected:
            take_back_admission()
            raise
        key_cache().remember(verified.key)
        self.record_nonce(verified, self.now, at_once=False)
        g.caller = _caller(verified)

    def start_over(self) -> None:
        """Take back everything of this transaction except the nonce, which is spent again."""
        self.unit_of_work.session.rollback()
        self._write_nonce()

    def _write_nonce(self) -> None:
        if self.unconfirmed_key is not None:
            # A write refused before its claim (a 422, say): its key is confirmed here,
            # in a lookup of its own, before its nonce is kept.
            self.verify_again()
        if not record_nonce(self.unit_of_work.session, **self._nonce):  # type: ignore[arg-type]
            raise replayed()
        self._nonce_written = True
        self.pending = True

    def commit(self) -> None:
        """Commit what the request has written so far, its nonce included (a no-op once committed)."""
        if self.pending:
            if not self._nonce_written:
                self._write_nonce()
            self.unit_of_work.commit()
            self.pending = False


def replayed() -> SignatureRejected:
    """The refusal of a nonce another request has spent."""
    return SignatureRejected("signature_replayed", "this nonce was already used; sign every request afresh")


def key_cache() -> KeyCache:
    """This process's cache of the partner keys requests were last verified with (see ``KeyCache``)."""
    extras = hub_state().extras
    cache = extras.get(KEY_CACHE_KEY)
    if cache is None:
        cache = extras.setdefault(KEY_CACHE_KEY, KeyCache())
    return cache  # type: ignore[return-value]


def _caller(verified: VerifiedSignature) -> Caller:
    return Caller(partner_id=verified.key.partner_id, key_id=verified.key.key_id,
                  bound_terminal_id=verified.key.terminal_id)


def _verify_against_cache(message: IncomingRequest, now: datetime) -> VerifiedSignature | None:
    """A write verified against the cached key (confirmed later, in its claim), or None: ask the database.

    Any refusal that depends on the key is left to the database's verification, so a
    refused request gets exactly the refusal it would get without the cache; one that
    came before the key was looked up (a malformed header) stands as it is.
    """
    store = CachedKeyStore(key_cache())
    try:
        return verify_signed_request(message, now=now, keys=store)
    except KeyNotCached:
        return None
    except SignatureRejected:
        if store.consulted:
            return None
        raise


def authenticate_partner() -> None:
    """``before_request`` of the partner blueprints: verify, record the nonce, set ``g.caller``.

    A write whose key is cached is verified without a query; its idempotency claim
    confirms the key in the claim's own statement (see ``partner_keys.KeyCache``).
    """
    message = incoming_request()
    now = utc_now()
    unit = RequestUnitOfWork(hub_state().unit_of_work().__enter__(), message, now)
    g.partner_unit_of_work = unit
    session = unit.unit_of_work.session
    reading = request.method in READ_METHODS
    verified = None if reading else _verify_against_cache(message, now)
    key_confirmed = verified is None
    if verified is None:
        verified = verify_signed_request(message, now=now, keys=DatabaseKeyStore(session))
        key_cache().remember(verified.key)
    # Who signed, for the request's log line and figures, whatever the answer turns out to be.
    g.signer = (verified.key.partner_id, verified.key.key_id)
    # Admission comes after the signature, so an unauthenticated flood cannot spend a
    # partner's budget, and before the nonce is written, so a refused request leaves
    # no trace at all: no nonce, no idempotency record, nothing in the books.
    try:
        _admit(verified.key.partner_id)
    except RateLimited:
        if not key_confirmed:
            # Refused for the partner's limits on the strength of a cached key: the
            # database's verdict on the key and the nonce comes first, as it would have.
            key_cache().forget(verified.key.key_id)
            verified = verify_signed_request(message, now=now, keys=DatabaseKeyStore(session))
            key_cache().remember(verified.key)
        raise
    if reading:
        unit.unit_of_work.defer_commit_flush()
    unit.record_nonce(verified, now, at_once=reading, key_confirmed=key_confirmed)
    if reading:
        unit.commit()
    g.caller = _caller(verified)


def request_unit_of_work() -> RequestUnitOfWork:
    """The request's transaction, holding its nonce; the caller commits its work with it."""
    unit: RequestUnitOfWork = g.partner_unit_of_work
    unit.pending = False
    return unit


def commit_unclaimed_nonce(response: Response) -> Response:
    """``after_request``: keep the nonce of a write refused before its work began (a 422, say)."""
    unit: RequestUnitOfWork | None = g.get("partner_unit_of_work")
    if unit is not None and response.status_code < 500:
        verified_against_cache = unit.unconfirmed_key is not None
        try:
            unit.commit()
        except SignatureRejected as refusal:
            if verified_against_cache:
                # Verified against a cached key that no longer stands, or a nonce already
                # spent: the database's refusal is the answer, as it would have been at
                # the start had the key not been cached.
                return problem_response(refusal)
            # The same request, arriving twice at once, and the other copy spent the
            # nonce first: this copy's refusal stands, and nothing of it is kept.
    return response


def take_back_admission() -> None:
    """A request admitted on a cached key but refused by the database spends none of the partner's budget."""
    admission = g.get("partner_admission")
    if admission is not None:
        admission.take_back()


def _admit(partner_id: int) -> None:
    """Take a token and an in-flight slot of the partner's limits, or raise ``RateLimited``."""
    limiter: PartnerLimiter = hub_state().extras[LIMITER_KEY]  # type: ignore[assignment]
    g.partner_admission = limiter.admit(partner_id)


def finish_partner_request(_: BaseException | None = None) -> None:
    """``teardown_request`` of the partner blueprints: end the transaction, give the in-flight slot back."""
    unit: RequestUnitOfWork | None = g.pop("partner_unit_of_work", None)
    try:
        if unit is not None:
            # Rolls back whatever was not committed (an unexpected error's half-done work).
            unit.unit_of_work.__exit__(None, None, None)
    finally:
        admission = g.pop("partner_admission", None)
        if admission is not None:
            admission.release()


def current_caller() -> Caller:
    """The verified caller of this request."""
    return g.caller


def resolve_terminal(session: Session, caller: Caller, terminal_code: str | None) -> int | None:
    """The terminal a request of ``caller`` acts for (``terminals.resolve_terminal``)."""
    return terminals.resolve_terminal(session, partner_id=caller.partner_id, key_id=caller.key_id,
                                      bound_terminal_id=caller.bound_terminal_id, terminal_code=terminal_code)
