"""A test-side RFC 9421 signer built on the ``http-message-signatures`` library.

It is independent of the hub's verifier code: it signs the way any standard client
would, so the tests prove interoperability rather than agreement with ourselves.
"""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta, timezone
from typing import Sequence

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from http_message_signatures import ContentDigest, HTTPMessageSigner, algorithms

from alliance.domain.signatures import BODY_COMPONENTS, REQUIRED_COMPONENTS


class _Message:
    def __init__(self, method: str, url: str, headers: dict[str, str]) -> None:
        self.method = method
        self.url = url
        self.headers = headers


class _Keys:
    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._private_key = private_key

    def resolve_private_key(self, key_id: str) -> Ed25519PrivateKey:
        return self._private_key


def sign_request(
    *,
    method: str,
    url: str,
    body: bytes,
    key_id: str,
    private_key: Ed25519PrivateKey,
    headers: dict[str, str] | None = None,
    idempotency_key: str | None = None,
    created: datetime | None = None,
    lifetime_s: int = 300,
    nonce: str | None = None,
    components: Sequence[str] | None = None,
    include_alg: bool = True,
    label: str = "pos",
) -> dict[str, str]:
    """Return the request headers, signed: Content-Digest, Signature-Input, Signature."""
    signed_headers = {"Content-Type": "application/json"} if method != "GET" else {}
    if idempotency_key is not None:
        signed_headers["Idempotency-Key"] = idempotency_key
    signed_headers.update(headers or {})
    created = created or datetime.now(timezone.utc)
    if components is None:
        components = list(REQUIRED_COMPONENTS) + (list(BODY_COMPONENTS) if method != "GET" else [])
    covers_digest = "content-digest" in components
    if method != "GET" and not covers_digest:
        # The library adds digest coverage whenever it is given the body; to leave the
        # digest uncovered (a rejection test), send the header without covering it.
        signed_headers["Content-Digest"] = ContentDigest.create(body)
    message = _Message(method, url, signed_headers)
    HTTPMessageSigner(signature_algorithm=algorithms.ED25519, key_resolver=_Keys(private_key)).sign(
        message, key_id=key_id, created=created, expires=created + timedelta(seconds=lifetime_s),
        nonce=nonce or secrets.token_urlsafe(16), label=label, include_alg=include_alg,
        covered_component_ids=components, body=body if method != "GET" and covers_digest else None,
        use_existing_digest=method != "GET" and not covers_digest,
    )
    return dict(message.headers)
