"""Running a mutating partner call under its ``Idempotency-Key``: the web side of ``PartnerRequest.run``."""

from __future__ import annotations

import re

from flask import Response, request

from alliance.api.errors import PROBLEM_CONTENT_TYPE
from alliance.api.partner.auth import current_partner_request
from alliance.domain.errors import ValidationFailed
from alliance.extensions import hub_state
from alliance.services import idempotency
from alliance.services.partner_request import Operation, Preparation
from alliance.storage import FirstRead

IDEMPOTENCY_HEADER = "Idempotency-Key"
REPLAY_HEADER = "Idempotent-Replayed"
KEY_PATTERN = re.compile(r"^[\x21-\x7e]{1,255}\Z")


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
                   first: FirstRead | None = None) -> Response:
    """Run ``operation`` once per key (``PartnerRequest.run``); later calls with the key get the stored reply.

    The request's fingerprint (method, target and body, keyed) tells a retry from a
    different request reusing the key.
    """
    key = idempotency_key()
    target = request.full_path if request.query_string else request.path
    fingerprint = idempotency.request_fingerprint(request.method, target, request.get_data(cache=True),
                                                  key=hub_state().fingerprint_key)
    reply = current_partner_request().run(key=key, fingerprint=fingerprint, operation=operation, prepare=prepare,
                                          operation_writes=operation_writes, first=first)
    content_type = "application/json" if reply.status < 400 else PROBLEM_CONTENT_TYPE
    response = Response(reply.body, status=reply.status, content_type=content_type)
    response.headers[REPLAY_HEADER] = "true" if reply.replayed else "false"
    return response
