"""The SDK's RFC 9421 signing: the RFC's own Ed25519 vector, and requests the hub's verifier accepts."""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import http_sf
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from http_message_signatures.exceptions import HTTPMessageSignaturesException
from hypothesis import given, settings
from hypothesis import strategies as st

from alliance.domain.signatures import (
    IncomingRequest,
    KeyLookup,
    PartnerKeyRecord,
    SignatureRejected,
    verify_signed_request,
)
from partners_sdk.signing import SIGNATURE_LIFETIME_S, RequestSigner, sign_message

VECTOR = json.loads((Path(__file__).resolve().parents[1] / "vectors" / "rfc9421-b26-ed25519.json").read_text())
NOW = datetime(2026, 11, 24, 12, 0, 7, 654321, tzinfo=timezone.utc)
URL = "https://hub.example/partner/v1/purchases?dry=1"
BODY = b'{"amount_minor":1250,"receipt_id":"r-1"}'


def from_base64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@pytest.fixture
def vector_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(from_base64url(VECTOR["key"]["jwk"]["d"]))


def sign_vector(private_key: Ed25519PrivateKey):  # type: ignore[no-untyped-def]
    request = VECTOR["request"]
    return sign_message(
        method=request["method"], url=request["target_uri"], headers=dict(request["headers"]),
        key_id=VECTOR["key"]["keyid"], private_key=private_key, label=VECTOR["label"],
        covered_components=VECTOR["covered_components"],
        created=datetime.fromtimestamp(VECTOR["created"], timezone.utc),
        expires=None, nonce=None, include_alg=False, digest_body=None,
    )


def test_rfc_vector_signature_base_is_reproduced_byte_for_byte(vector_key):
    assert sign_vector(vector_key).signature_base == VECTOR["signature_base"].encode()


def test_rfc_vector_signature_and_headers_are_reproduced_byte_for_byte(vector_key):
    signed = sign_vector(vector_key)
    assert signed.headers["Signature"] == VECTOR["signature"]
    assert signed.headers["Signature-Input"] == VECTOR["signature_input"]
    assert f'{VECTOR["label"]}={signed.signature_input}' == VECTOR["signature_input"]


class OneKey:
    def __init__(self, record: PartnerKeyRecord) -> None:
        self.record = record

    def look_up(self, key_id: str, nonce: str) -> KeyLookup:
        return KeyLookup(key=self.record if key_id == self.record.key_id else None, nonce_seen=False)


@pytest.fixture
def till_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def key_store(private_key: Ed25519PrivateKey) -> OneKey:
    public = private_key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return OneKey(PartnerKeyRecord(key_id="till-1", partner_id=7, public_key=public, status="active",
                                   expires_at=None, terminal_id=None))


def incoming(method: str, headers: dict[str, str], body: bytes) -> IncomingRequest:
    return IncomingRequest(method=method, url=URL, headers=tuple(headers.items()), body=body)


def test_a_signed_write_passes_the_hubs_verifier(till_key):
    signer = RequestSigner("till-1", till_key, clock=lambda: NOW)
    signed = signer.sign("POST", URL, body=BODY, idempotency_key="key-1")
    verified = verify_signed_request(incoming("POST", signed.headers, BODY), now=NOW, keys=key_store(till_key))
    assert verified.key.key_id == "till-1"
    assert verified.expires - verified.created == timedelta(seconds=SIGNATURE_LIFETIME_S)


def test_a_signed_read_passes_the_hubs_verifier(till_key):
    signed = RequestSigner("till-1", till_key, clock=lambda: NOW).sign("GET", URL)
    assert "Content-Digest" not in signed.headers
    verify_signed_request(incoming("GET", signed.headers, b""), now=NOW, keys=key_store(till_key))


def test_a_write_covers_body_headers_and_carries_every_parameter(till_key):
    signed = RequestSigner("till-1", till_key, clock=lambda: NOW).sign("POST", URL, body=BODY,
                                                                        idempotency_key="key-1")
    (label, (components, parameters)), = http_sf.parse(signed.headers["Signature-Input"].encode(),
                                                       tltype="dictionary").items()
    assert label == "pos"
    assert [name for name, _ in components] == ["@method", "@path", "@query", "content-type", "content-digest",
                                                 "idempotency-key"]
    assert parameters["alg"] == "ed25519" and parameters["keyid"] == "till-1"
    assert parameters["created"] == int(NOW.timestamp())
    assert parameters["expires"] - parameters["created"] == 300
    assert len(from_base64url(parameters["nonce"])) * 8 >= 128
    digest = base64.b64encode(hashlib.sha256(BODY).digest()).decode()
    assert signed.headers["Content-Digest"] == f"sha-256=:{digest}:"
    assert signed.headers["Idempotency-Key"] == "key-1"


def test_every_signature_gets_a_new_nonce(till_key):
    signer = RequestSigner("till-1", till_key, clock=lambda: NOW)
    inputs = {signer.sign("POST", URL, body=BODY, idempotency_key="k").headers["Signature-Input"] for _ in range(20)}
    assert len(inputs) == 20


def test_a_tampered_body_is_refused_by_the_hub(till_key):
    signed = RequestSigner("till-1", till_key, clock=lambda: NOW).sign("POST", URL, body=BODY,
                                                                        idempotency_key="key-1")
    with pytest.raises(SignatureRejected) as refused:
        verify_signed_request(incoming("POST", signed.headers, BODY.replace(b"1250", b"9250")), now=NOW,
                              keys=key_store(till_key))
    assert refused.value.code == "content_digest_mismatch"


def test_a_clock_ten_minutes_ahead_is_refused_as_from_the_future(till_key):
    ahead = RequestSigner("till-1", till_key, clock=lambda: NOW + timedelta(minutes=10))
    signed = ahead.sign("GET", URL)
    with pytest.raises(SignatureRejected) as refused:
        verify_signed_request(incoming("GET", signed.headers, b""), now=NOW, keys=key_store(till_key))
    assert refused.value.code == "signature_from_future"


def test_a_naive_clock_and_a_write_without_key_are_refused(till_key):
    with pytest.raises(ValueError):
        RequestSigner("till-1", till_key, clock=lambda: datetime(2026, 1, 1)).sign("GET", URL)
    with pytest.raises(ValueError):
        RequestSigner("till-1", till_key).sign("POST", URL, body=BODY)
    with pytest.raises(TypeError):
        RequestSigner("till-1", b"not a key")  # type: ignore[arg-type]


_VISIBLE = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=1, max_size=24)
_URL_SAFE = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABC0123456789-._~%", min_size=1, max_size=16)


@settings(max_examples=300, deadline=None)
@given(method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "post"]),
       path=st.lists(_URL_SAFE, min_size=1, max_size=4).map(lambda parts: "/" + "/".join(parts)),
       query=st.one_of(st.just(""), st.lists(st.tuples(_URL_SAFE, _URL_SAFE), max_size=3).map(
           lambda pairs: "&".join(f"{key}={value}" for key, value in pairs))),
       key_id=_VISIBLE, nonce=_VISIBLE, idempotency_key=_VISIBLE, content_type=_VISIBLE,
       body=st.one_of(st.none(), st.binary(max_size=64)))
def test_the_fast_path_signs_exactly_as_the_general_library_path(method, path, query, key_id, nonce,
                                                                  idempotency_key, content_type, body):
    """The SDK's direct signature base for its own component set is byte for byte the library's."""
    from partners_sdk.signing import _sign_fixed_components

    key = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
    url = "http://hub.test:8080" + path + (f"?{query}" if query else "")
    headers = {} if body is None else {"Content-Type": content_type, "Idempotency-Key": idempotency_key}
    fast = _sign_fixed_components(method=method, url=url, headers=headers, key_id=key_id, private_key=key,
                                  created=NOW, nonce=nonce, body=body)
    components = ["@method", "@path", "@query"] + ([] if body is None else
                                                   ["content-type", "content-digest", "idempotency-key"])
    try:
        general = sign_message(method=method, url=url, headers=headers, key_id=key_id, private_key=key, label="pos",
                               covered_components=components, created=NOW,
                               expires=NOW + timedelta(seconds=SIGNATURE_LIFETIME_S), nonce=nonce, include_alg=True,
                               digest_body=body)
    except HTTPMessageSignaturesException:
        assert fast is None, "the fast path signed what the library refuses"
        return
    if fast is None:
        # Only text that would need RFC 8941 escaping goes the general way.
        assert any(character in '"\\' for character in key_id + nonce + idempotency_key + content_type)
        return
    assert (fast.signature_base, fast.headers, fast.signature_input) == (
        general.signature_base, general.headers, general.signature_input)
