"""Running a mutating partner call under its ``Idempotency-Key``."""

from __future__ import annotations

import json
import re
from typing import Callable

from flask import Response, request

from alliance.api.errors import PROBLEM_CONTENT_TYPE, problem_body
from alliance.api.partner.auth import (
    RequestUnitOfWork,
    current_caller,
    replayed,
    request_unit_of_work,
    take_back_admission,
    utc_now,
)
from alliance.domain.errors import AllianceError, NotFound, ValidationFailed
from alliance.extensions import hub_state
from alliance.services import idempotency
from alliance.services.unit_of_work import UnitOfWork

IDEMPOTENCY_HEADER = "Idempotency-Key"
REPLAY_HEADER = "Idempotent-Replayed"
KEY_PATTERN = re.compile(r"^[\x21-\x7e]{1,255}\Z")

Operation = Callable[..., tuple[int, dict]]  # type: ignore[type-arg]
Preparation = Callable[[UnitOfWork], object]


def idempotency_key() -> str:
    """The request's key, which every mutating partner call must carry."""
    key = request.headers.get(IDEMPOTENCY_HEADER)
    if key is None:
        raise ValidationFailed("mutating partner calls need an Idempotency-Key header",
                               fields={IDEMPOTENCY_HEADER: ["missing"]})
    if not KEY_PATTERN.match(key):
        raise ValidationFailed("an Idempotency-Key is 1-255 visible ASCII characters",
                               fields={IDEMPOTENCY_HEADER: ["bad format"]})
    return key


def run_idempotent(operation: Operation, *, prepare: Preparation | None = None, operation_writes: bool = True,
                   first: tuple[idempotency.ClaimInFront, dict[str, object]] | None = None) -> Response:
    """Run ``operation`` once per key; later calls with the key get the stored reply.

    Everything happens in the request's one transaction, after its nonce: the claim, the
    operation, the stored reply, one commit. An operation that refuses (an
    ``AllianceError``) may already have written part of its work, so the transaction is
    taken back whole and the nonce, the claim and the refusal are written again; that
    costs a few statements on a refusal instead of a savepoint's two on every success.

    ``prepare`` (a member's PIN check, say) runs after the key is known to be new, and
    what it records (a failed PIN attempt) is kept even when the request is refused: with
    a preparation, the operation runs in a savepoint instead, unless it only reads
    (``operation_writes=False``: nothing of it to take back). Its result is passed to
    ``operation``. A retry of a completed request gets the stored reply without preparing again.

    ``first``: the operation's first statement with the claim in front of it
    (``idempotency.claim_in_front_of``) and its parameters. The claim then reads it in
    its own round trip and ``operation`` gets its rows as ``first_rows`` (None when it
    did not run there: on SQLite, or after the request started over).
    """
    if first is not None and prepare is not None:
        raise ValueError("an operation with a preparation has no first statement to carry the claim")
    caller = current_caller()
    key = idempotency_key()
    target = request.full_path if request.query_string else request.path
    body = request.get_data(cache=True)
    fingerprint = idempotency.request_fingerprint(request.method, target, body, key=hub_state().fingerprint_key)

    unit = request_unit_of_work()
    uow = unit.unit_of_work
    claim = _claim(unit, caller.partner_id, key, fingerprint, first)
    caller = current_caller()  # as the claim confirmed it
    if claim.status == "completed":
        uow.commit()
        return _reply(claim.response_status, claim.response_body, replayed=True)  # type: ignore[arg-type]
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
            unit.start_over()
            if not isinstance(error, NotFound):
                claim = _claim(unit, caller.partner_id, key, fingerprint)
                if claim.status == "completed":
                    # Another request under the key completed while this one started over.
                    uow.commit()
                    return _reply(claim.response_status, claim.response_body, replayed=True)  # type: ignore[arg-type]
        if isinstance(error, NotFound):
            # The request named something that does not exist (yet): nothing was done, so
            # the key is not spent; a retry once the object exists must be able to act.
            if prepare is not None:
                idempotency.forget(uow.session, record_id=claim.record_id)
            uow.commit()
            return _reply(error.http_status, json.dumps(problem_body(error), separators=(",", ":"), sort_keys=True),
                          replayed=False)
        status, body = error.http_status, problem_body(error)
    body_text = json.dumps(body, separators=(",", ":"), sort_keys=True)
    uow.commit_with(*idempotency.completion(record_id=claim.record_id, status=status, body=body_text, now=utc_now()))
    return _reply(status, body_text, replayed=False)


def _claim(unit: RequestUnitOfWork, partner_id: int, key: str, fingerprint: str,
           first: tuple[idempotency.ClaimInFront, dict[str, object]] | None = None) -> idempotency.Claim:
    """Spend the nonce (if not yet) and claim the key; a refusal (in flight, reused) still spends the nonce."""
    uow = unit.unit_of_work
    nonce = unit.take_unwritten_nonce()
    signing_key = unit.unconfirmed_key if nonce is not None else None
    try:
        claimed = idempotency.claim(uow.session, partner_id=partner_id, key=key, fingerprint=fingerprint,
                                    now=utc_now(), nonce=nonce, key_to_confirm=signing_key,
                                    first=first if nonce is not None else None)
    except idempotency.KeyNotAsVerified:
        # The cached key changed since: the database verifies the request again (its
        # refusal stands, a 401 with nothing kept) and the claim runs again.
        unit.verify_again()
        partner_now = current_caller().partner_id
        return _claim(unit, partner_now, key, fingerprint, first if partner_now == partner_id else None)
    except idempotency.NonceAlreadySpent:
        if signing_key is not None:
            # A replay verified against the cached key: not the partner's request.
            take_back_admission()
        raise replayed() from None
    except (idempotency.KeyInFlight, idempotency.KeyReused):
        unit.key_confirmed()
        uow.commit()
        raise
    unit.key_confirmed()
    return claimed


def _reply(status: int, body_text: str, *, replayed: bool) -> Response:
    content_type = "application/json" if status < 400 else PROBLEM_CONTENT_TYPE
    response = Response(body_text, status=status, content_type=content_type)
    response.headers[REPLAY_HEADER] = "true" if replayed else "false"
    return response
