"""The hub reads the SDK's request shape the short way; every request must get the answer the general way gives.

``alliance.domain.signatures`` reads a request of exactly the shape the SDK sends
without the structured-field parser or the http-message-signatures library, and sends
every other request the general way. Here both ways judge the same requests, signed by
the SDK and then altered in the ways a till, a proxy or an attacker might alter them:
the outcome (the signer, or the refusal's code and words) must be the same.
"""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import datetime, timedelta, timezone

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from alliance.domain import signatures
from alliance.domain.signatures import (
    IncomingRequest,
    KeyLookup,
    PartnerKeyRecord,
    SignatureRejected,
    VerifiedSignature,
    verify_signed_request,
)
from partners_sdk.signing import RequestSigner

SIGNED_AT = datetime(2026, 12, 7, 10, 0, tzinfo=timezone.utc)
PRIVATE_KEY = Ed25519PrivateKey.generate()
OTHER_KEY = Ed25519PrivateKey.generate()


def _raw(private_key: Ed25519PrivateKey) -> bytes:
    return private_key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


class _Keys:
    def __init__(self, nonce_seen: bool = False) -> None:
        self.nonce_seen = nonce_seen

    def look_up(self, key_id: str, nonce: str) -> KeyLookup:
        known = {"till-1": _raw(PRIVATE_KEY), "till-2": _raw(OTHER_KEY)}
        raw = known.get(key_id)
        record = None if raw is None else PartnerKeyRecord(key_id, 7, raw, "active", None, None)
        return KeyLookup(record, self.nonce_seen)


def _outcome(request: IncomingRequest, *, now: datetime, keys: _Keys) -> VerifiedSignature | tuple[str, str]:
    try:
        return verify_signed_request(request, now=now, keys=keys)
    except SignatureRejected as refusal:
        return (refusal.code, str(refusal))


def _both_ways(request: IncomingRequest, monkeypatch: pytest.MonkeyPatch, *, now: datetime = SIGNED_AT,
               keys: _Keys | None = None) -> tuple[object, object]:
    keys = keys or _Keys()
    short = _outcome(request, now=now, keys=keys)
    with monkeypatch.context() as patched:
        patched.setattr(signatures, "_canonical", lambda request: None)
        general = _outcome(request, now=now, keys=keys)
    return short, general


def _signed(*, method: str = "POST", url: str = "http://hub.example:8000/partner/v1/purchases",
            body: bytes | None = b'{"receipt_id":"r-1","amount_minor":1250}', idempotency_key: str = "earn-r-1",
            key_id: str = "till-1", private_key: Ed25519PrivateKey = PRIVATE_KEY) -> IncomingRequest:
    signer = RequestSigner(key_id, private_key, clock=lambda: SIGNED_AT)
    signed = signer.sign(method, url, body=body, idempotency_key=idempotency_key if body is not None else None)
    headers = tuple(signed.headers.items()) + (("Host", "hub.example:8000"),)
    return IncomingRequest(method=method, url=url, headers=headers, body=body or b"")


def _with_header(request: IncomingRequest, name: str, value: str | None, *, append: bool = False) -> IncomingRequest:
    kept = request.headers if append else tuple((n, v) for n, v in request.headers if n.lower() != name.lower())
    added = () if value is None else ((name, value),)
    return IncomingRequest(request.method, request.url, kept + added, request.body)


def _header(request: IncomingRequest, name: str) -> str:
    value = request.header(name)
    assert value is not None
    return value


def test_an_sdk_request_takes_the_short_way_and_is_accepted_both_ways(monkeypatch: pytest.MonkeyPatch):
    for request in (_signed(), _signed(method="GET", url="http://hub.example/partner/v1/members/1?x=1", body=None)):
        assert signatures._canonical(request) is not None
        short, general = _both_ways(request, monkeypatch)
        assert isinstance(short, VerifiedSignature) and short == general


def _alterations(request: IncomingRequest) -> dict[str, IncomingRequest]:
    signature_input, signature = _header(request, "Signature-Input"), _header(request, "Signature")
    digest = _header(request, "Content-Digest")
    flipped = base64.b64decode(signature.split("=:", 1)[1].rstrip(":"))
    flipped = bytes([flipped[0] ^ 1]) + flipped[1:]
    other_body = b'{"receipt_id":"r-1","amount_minor":9999}'
    sha512 = base64.b64encode(hashlib.sha512(request.body).digest()).decode()
    return {
        "as signed": request,
        "body changed": IncomingRequest(request.method, request.url, request.headers, other_body),
        "digest of the changed body": _with_header(
            IncomingRequest(request.method, request.url, request.headers, other_body), "Content-Digest",
            f"sha-256=:{base64.b64encode(hashlib.sha256(other_body).digest()).decode()}:"),
        "sha-512 digest added": _with_header(request, "Content-Digest", f"{digest}, sha-512=:{sha512}:"),
        "digest repeated on a second line": _with_header(request, "Content-Digest", digest, append=True),
        "digest without padding": _with_header(request, "Content-Digest", digest.replace("=:", ":").replace(
            "sha-256:", "sha-256=:")),
        "digest removed": _with_header(request, "Content-Digest", None),
        "signature flipped": _with_header(request, "Signature", f"pos=:{base64.b64encode(flipped).decode()}:"),
        "signature unpadded": _with_header(request, "Signature", signature.rstrip(":").rstrip("=") + ":"),
        "signature relabelled": _with_header(request, "Signature", "sig" + signature[3:]),
        "signature input relabelled": _with_header(request, "Signature-Input", "sig" + signature_input[3:]),
        "signature input repeated": _with_header(request, "Signature-Input", signature_input, append=True),
        "spaces after the semicolons": _with_header(request, "Signature-Input", signature_input.replace(";", "; ")),
        "space before the list": _with_header(request, "Signature-Input", signature_input.replace("=(", "= (")),
        "created with a leading zero": _with_header(request, "Signature-Input",
                                                    signature_input.replace(";created=", ";created=0")),
        "parameters reordered": _with_header(request, "Signature-Input", signature_input.replace(
            ';alg="ed25519"', "").replace(";nonce=", ';alg="ed25519";nonce=')),
        "alg as a token": _with_header(request, "Signature-Input", signature_input.replace('"ed25519"', "ed25519")),
        "another algorithm": _with_header(request, "Signature-Input", signature_input.replace('"ed25519"',
                                                                                              '"rsa-pss-sha512"')),
        "unknown key": _with_header(request, "Signature-Input", signature_input.replace('"till-1"', '"till-9"')),
        "another registered key": _with_header(request, "Signature-Input", signature_input.replace('"till-1"',
                                                                                                  '"till-2"')),
        "short nonce": _with_header(request, "Signature-Input", signature_input.replace(';nonce="', ';nonce="x').split(
            ';nonce="')[0] + ';nonce="abc"'),
        "idempotency key padded": _with_header(request, "Idempotency-Key", " " + _header(request, "Idempotency-Key")),
        "idempotency key changed": _with_header(request, "Idempotency-Key", "earn-r-2"),
        "content type changed": _with_header(request, "Content-Type", "text/plain"),
        "content type removed": _with_header(request, "Content-Type", None),
        "method lower case": IncomingRequest(request.method.lower(), request.url, request.headers, request.body),
        "method changed": IncomingRequest("PUT", request.url, request.headers, request.body),
        "path changed": IncomingRequest(request.method, request.url.replace("purchases", "redemptions"),
                                        request.headers, request.body),
        "query added": IncomingRequest(request.method, request.url + "?dry=1", request.headers, request.body),
        "empty query added": IncomingRequest(request.method, request.url + "?", request.headers, request.body),
        "url not ascii": IncomingRequest(request.method, request.url.replace("purchases", "pürchases"),
                                         request.headers, request.body),
        "component list cut": _with_header(request, "Signature-Input", signature_input.replace(
            ' "content-type" "content-digest" "idempotency-key"', "")),
    }


def test_each_alteration_gets_the_same_answer_both_ways(monkeypatch: pytest.MonkeyPatch):
    request = _signed()
    for name, altered in _alterations(request).items():
        short, general = _both_ways(altered, monkeypatch)
        assert short == general, name
    # The short way refuses as the general way does, in the same order of checks.
    assert _both_ways(request, monkeypatch, keys=_Keys(nonce_seen=True))[0] == (
        "signature_replayed", "this nonce was already used; sign every request afresh")
    for now in (SIGNED_AT + timedelta(seconds=301), SIGNED_AT - timedelta(seconds=61)):
        short, general = _both_ways(request, monkeypatch, now=now)
        assert short == general and isinstance(short, tuple)


_FIELD_TEXT = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=1, max_size=40)


@settings(max_examples=150, deadline=None)
@given(body=st.binary(max_size=300), idempotency_key=_FIELD_TEXT,
       path=st.text(st.sampled_from("abcxyz019-._~%/"), max_size=20),
       query=st.none() | st.text(st.sampled_from("abc=&%19+/?"), max_size=12),
       method=st.sampled_from(["POST", "GET", "PUT", "DELETE", "PATCH"]), with_body=st.booleans(),
       key=st.sampled_from([PRIVATE_KEY, OTHER_KEY]))
def test_any_sdk_request_and_its_alterations_get_the_same_answer_both_ways(
        body: bytes, idempotency_key: str, path: str, query: str | None, method: str, with_body: bool,
        key: Ed25519PrivateKey) -> None:
    url = f"http://hub.example/partner/v1/{path}" + ("" if query is None else f"?{query}")
    try:
        request = _signed(method=method, url=url, body=body if with_body else None,
                          idempotency_key=idempotency_key)
    except Exception:
        return  # the SDK refused to sign it (an invalid URL): nothing reaches the hub
    with pytest.MonkeyPatch.context() as monkeypatch:
        for name, altered in _alterations(request).items() if with_body else {"as signed": request}.items():
            short, general = _both_ways(altered, monkeypatch)
            assert short == general, name


def test_a_json_body_is_what_the_digest_covers(monkeypatch: pytest.MonkeyPatch):
    body = json.dumps({"receipt_id": "r-2", "amount_minor": 100}).encode()
    request = _signed(body=body, idempotency_key="earn-r-2")
    tampered = IncomingRequest(request.method, request.url, request.headers, body + b" ")
    assert _both_ways(tampered, monkeypatch) == (("content_digest_mismatch",
                                                  "the sha-256 digest does not match the body received"),) * 2
