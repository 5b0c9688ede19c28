"""Every partner request is signed: verify it before anything else, admit it, then hand it its transaction.

The transaction itself (nonce, key confirmation, idempotency claim, operation, stored
reply, commit) is ``alliance.services.partner_request.PartnerRequest``'s.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import cast
from urllib.parse import quote

from flask import Response, g, request
from sqlalchemy.exc import DBAPIError

from alliance.api.errors import database_error_response, problem_body, problem_response
from alliance.domain.rate_limits import PartnerLimiter, RateLimited
from alliance.domain.signatures import (
    IncomingRequest,
    PartnerKeyRecord,
    SignatureRejected,
    VerifiedSignature,
    verify_signed_request,
)
from alliance.extensions import hub_state
from alliance.services import terminals
from alliance.services.partner_keys import CachedKeyStore, DatabaseKeyStore, KeyCache, KeyNotCached
from alliance.services.partner_request import PartnerRequest
from alliance.storage.unit_of_work import Session

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


def key_cache() -> KeyCache:
    """This process's cache of the partner keys requests were last verified with (see ``KeyCache``)."""
    extras = hub_state().extras
    cache = extras.get(KEY_CACHE_KEY)
    if cache is None:
        cache = extras.setdefault(KEY_CACHE_KEY, KeyCache())
    # The extras hold values of several kinds; under this key, always a KeyCache.
    return cast(KeyCache, cache)


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


class _Verifier:
    """``partner_request.RequestVerifier`` for the request being served."""

    def __init__(self, message: IncomingRequest, now: datetime) -> None:
        self._message = message
        self._now = now

    def verify_from_database(self, session: Session, stale_key: PartnerKeyRecord | None) -> VerifiedSignature:
        if stale_key is not None:
            key_cache().forget(stale_key.key_id)
        try:
            verified = verify_signed_request(self._message, now=self._now, keys=DatabaseKeyStore(session))
        except SignatureRejected:
            take_back_admission()
            raise
        key_cache().remember(verified.key)
        g.caller = _caller(verified)
        return verified

    def refused_as_replay(self) -> None:
        take_back_admission()


def authenticate_partner() -> None:
    """``before_request`` of the partner blueprints: verify, admit, take the nonce, set ``g.caller``.

    A write whose key is cached is verified without a query; its idempotency claim
    confirms the key in the claim's own statement (see ``partner_keys.KeyCache``).
    """
    message = incoming_request()
    now = utc_now()
    partner_request = PartnerRequest(hub_state().unit_of_work().__enter__(), now=now,
                                     verifier=_Verifier(message, now), problem_body=problem_body)
    g.partner_request = partner_request
    session = partner_request.unit_of_work.session
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
    partner_request.admit(verified, key_confirmed=key_confirmed, read=reading)
    g.caller = _caller(verified)


def current_partner_request() -> PartnerRequest:
    """The request's transaction (``partner_request.PartnerRequest``)."""
    partner_request: PartnerRequest = g.partner_request
    return partner_request


def commit_unclaimed_nonce(response: Response) -> Response:
    """``after_request``: keep the nonce of a write refused before its work began (a 422, say)."""
    partner_request: PartnerRequest | None = g.get("partner_request")
    if partner_request is not None and response.status_code < 500:
        verified_against_cache = partner_request.unconfirmed_key is not None
        try:
            partner_request.commit_unclaimed()
        except DBAPIError as error:
            # The database went away before the nonce was kept: nothing of the request is,
            # so its answer is the retry-safe 503 rather than the one it was about to get.
            return database_error_response(error)
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
    # The extras hold values of several kinds; under this key, the limiter init_app put there.
    limiter = cast(PartnerLimiter, hub_state().extras[LIMITER_KEY])
    g.partner_admission = limiter.admit(partner_id)


def finish_partner_request(_: BaseException | None = None) -> None:
    """``teardown_request`` of the partner blueprints: end the transaction, give the in-flight slot back."""
    partner_request: PartnerRequest | None = g.pop("partner_request", None)
    try:
        if partner_request is not None:
            partner_request.close()
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
