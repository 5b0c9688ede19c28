"""RFC 9421 verification: the RFC's own Ed25519 vector, and every way a request is refused."""

from __future__ import annotations

import base64
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from http_message_signatures import HTTPMessageSigner, algorithms

from alliance.domain.signatures import (
    IncomingRequest,
    KeyLookup,
    PartnerKeyRecord,
    SignatureRejected,
    check_signature,
    verify_signed_request,
)
from tests.signing import sign_request

VECTOR = json.loads((Path(__file__).resolve().parents[1] / "vectors" / "rfc9421-b26-ed25519.json").read_text())
NOW = datetime(2026, 11, 24, 12, 0, tzinfo=timezone.utc)
URL = "https://hub.example/partner/v1/purchases?dry=1"
BODY = b'{"receipt_id": "r-1", "amount_minor": 1250}'


def from_base64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class VectorMessage:
    def __init__(self) -> None:
        self.method = VECTOR["request"]["method"]
        self.url = VECTOR["request"]["target_uri"]
        self.headers = dict(VECTOR["request"]["headers"])


class VectorKeys:
    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self.private_key = private_key

    def resolve_private_key(self, key_id: str) -> Ed25519PrivateKey:
        return self.private_key


@pytest.fixture
def vector_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(from_base64url(VECTOR["key"]["jwk"]["d"]))


def sign_vector(private_key: Ed25519PrivateKey, *, prepare_only: bool = False):  # type: ignore[no-untyped-def]
    signer = HTTPMessageSigner(signature_algorithm=algorithms.ED25519, key_resolver=VectorKeys(private_key))
    message = VectorMessage()
    arguments = dict(
        key_id=VECTOR["key"]["keyid"], created=datetime.fromtimestamp(VECTOR["created"], timezone.utc),
        label=VECTOR["label"], include_alg=False, covered_component_ids=VECTOR["covered_components"],
    )
    if prepare_only:
        return signer.prepare(message, **arguments)
    signer.sign(message, **arguments)
    return message


def test_rfc_vector_public_key_matches_the_private_key(vector_key):
    public = vector_key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert public == from_base64url(VECTOR["key"]["jwk"]["x"])


def test_rfc_vector_signature_base_is_reproduced_byte_for_byte(vector_key):
    prepared = sign_vector(vector_key, prepare_only=True)
    assert prepared.signature_base == VECTOR["signature_base"].encode()


def test_rfc_vector_signature_is_reproduced_byte_for_byte(vector_key):
    signature = vector_key.sign(VECTOR["signature_base"].encode())
    assert base64.b64encode(signature).decode() == VECTOR["signature_b64"]
    message = sign_vector(vector_key)
    assert message.headers["Signature-Input"] == VECTOR["signature_input"]
    assert message.headers["Signature"] == VECTOR["signature"]


def test_hub_signature_check_accepts_the_rfc_vector(vector_key):
    headers = dict(VECTOR["request"]["headers"])
    headers["Signature-Input"] = VECTOR["signature_input"]
    headers["Signature"] = VECTOR["signature"]
    request = IncomingRequest(method="POST", url=VECTOR["request"]["target_uri"], headers=tuple(headers.items()),
                              body=VECTOR["request"]["body"].encode())
    # The vector is 2021's; the cryptographic check is independent of the hub's clock policy.
    check_signature(request, key_id=VECTOR["key"]["keyid"], public_key=vector_key.public_key())


class FakeKeys:
    def __init__(self, *records: PartnerKeyRecord, seen: set[str] | None = None) -> None:
        self.records = {record.key_id: record for record in records}
        self.seen = seen or set()

    def look_up(self, key_id: str, nonce: str) -> KeyLookup:
        return KeyLookup(key=self.records.get(key_id), nonce_seen=nonce in self.seen)


@pytest.fixture
def private_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def record_for(private_key: Ed25519PrivateKey, key_id: str = "till-key", **overrides) -> PartnerKeyRecord:  # type: ignore[no-untyped-def]
    public = private_key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    values = dict(key_id=key_id, partner_id=7, public_key=public, status="active", expires_at=None, terminal_id=None)
    values.update(overrides)
    return PartnerKeyRecord(**values)


def signed(private_key: Ed25519PrivateKey, *, body: bytes = BODY, method: str = "POST", url: str = URL,
           key_id: str = "till-key", **options) -> IncomingRequest:  # type: ignore[no-untyped-def]
    headers = sign_request(method=method, url=url, body=body, key_id=key_id, private_key=private_key,
                           idempotency_key="idem-1" if method != "GET" else None,
                           created=options.pop("created", NOW), **options)
    return IncomingRequest(method=method, url=url, headers=tuple(headers.items()), body=body)


def test_a_well_signed_request_is_accepted(private_key):
    verified = verify_signed_request(signed(private_key), now=NOW, keys=FakeKeys(record_for(private_key)))
    assert verified.key.partner_id == 7
    assert verified.created == NOW


def test_a_signed_get_needs_no_body_components(private_key):
    request = signed(private_key, method="GET", body=b"", url="https://hub.example/partner/v1/purchases/r-1")
    assert verify_signed_request(request, now=NOW, keys=FakeKeys(record_for(private_key))).key.key_id == "till-key"


def test_a_signer_may_cover_more_such_as_date(private_key):
    request = signed(private_key, headers={"Date": "Tue, 24 Nov 2026 12:00:00 GMT"},
                     components=["date", "@method", "@path", "@query", "content-type", "content-digest",
                                 "idempotency-key"])
    assert verify_signed_request(request, now=NOW, keys=FakeKeys(record_for(private_key)))


def replace_header(request: IncomingRequest, name: str, value: str | None) -> IncomingRequest:
    headers = tuple((field, content) for field, content in request.headers if field.lower() != name.lower())
    if value is not None:
        headers += ((name, value),)
    return IncomingRequest(request.method, request.url, headers, request.body)


def rejection(request: IncomingRequest, keys: FakeKeys, now: datetime = NOW) -> str:
    with pytest.raises(SignatureRejected) as caught:
        verify_signed_request(request, now=now, keys=keys)
    assert caught.value.http_status == 401
    return caught.value.code


def test_no_signature_is_refused(private_key):
    request = replace_header(replace_header(signed(private_key), "Signature", None), "Signature-Input", None)
    assert rejection(request, FakeKeys(record_for(private_key))) == "signature_missing"


def test_two_signatures_are_refused(private_key):
    request = signed(private_key)
    second = signed(private_key, label="pos2")
    doubled = replace_header(replace_header(request, "Signature-Input",
                                            f"{request.header('Signature-Input')}, {second.header('Signature-Input')}"),
                             "Signature", f"{request.header('Signature')}, {second.header('Signature')}")
    assert rejection(doubled, FakeKeys(record_for(private_key))) == "signature_multiple"


def test_a_signature_with_another_label_is_refused(private_key):
    assert rejection(signed(private_key, label="sig1"), FakeKeys(record_for(private_key))) == "signature_label"


@pytest.mark.parametrize("left_out",
                         ["@method", "@path", "@query", "content-type", "content-digest", "idempotency-key"])
def test_a_required_component_left_uncovered_is_refused(private_key, left_out):
    components = [name for name in ("@method", "@path", "@query", "content-type", "content-digest", "idempotency-key")
                  if name != left_out]
    assert rejection(signed(private_key, components=components),
                     FakeKeys(record_for(private_key))) == "signature_components"


def test_a_missing_alg_is_refused(private_key):
    assert rejection(signed(private_key, include_alg=False), FakeKeys(record_for(private_key))) == "signature_algorithm"


def test_a_wrong_alg_is_refused(private_key):
    request = signed(private_key)
    tampered = request.header("Signature-Input").replace('alg="ed25519"', 'alg="hmac-sha256"')
    assert rejection(replace_header(request, "Signature-Input", tampered),
                     FakeKeys(record_for(private_key))) == "signature_algorithm"


def test_an_unknown_key_is_refused(private_key):
    assert rejection(signed(private_key, key_id="nobody"), FakeKeys(record_for(private_key))) == "key_unknown"


def test_a_revoked_key_is_refused(private_key):
    assert rejection(signed(private_key), FakeKeys(record_for(private_key, status="revoked"))) == "key_revoked"


def test_an_expired_key_is_refused(private_key):
    keys = FakeKeys(record_for(private_key, expires_at=NOW - timedelta(seconds=1)))
    assert rejection(signed(private_key), keys) == "key_expired"


def test_a_signature_by_another_key_is_refused(private_key):
    impostor = Ed25519PrivateKey.generate()
    assert rejection(signed(impostor), FakeKeys(record_for(private_key))) == "signature_invalid"


@pytest.mark.parametrize(
    ("created_offset_s", "code"),
    [(-301, "signature_expired"), (61, "signature_from_future")],
    ids=["too-old", "too-far-ahead"],
)
def test_created_outside_the_window_is_refused(private_key, created_offset_s, code):
    request = signed(private_key, created=NOW + timedelta(seconds=created_offset_s))
    assert rejection(request, FakeKeys(record_for(private_key))) == code


def test_created_within_the_window_is_accepted(private_key):
    for offset_s in (-299, 59):
        request = signed(private_key, created=NOW + timedelta(seconds=offset_s), lifetime_s=300)
        assert verify_signed_request(request, now=NOW, keys=FakeKeys(record_for(private_key)))


def test_expires_too_far_after_created_is_refused(private_key):
    assert rejection(signed(private_key, lifetime_s=301), FakeKeys(record_for(private_key))) == "signature_lifetime"


def test_an_expired_signature_is_refused(private_key):
    request = signed(private_key, created=NOW - timedelta(seconds=100), lifetime_s=60)
    assert rejection(request, FakeKeys(record_for(private_key))) == "signature_expired"


def test_a_replayed_nonce_is_refused(private_key):
    request = signed(private_key, nonce="n" * 22)
    assert rejection(request, FakeKeys(record_for(private_key), seen={"n" * 22})) == "signature_replayed"


def test_a_short_nonce_is_refused(private_key):
    assert rejection(signed(private_key, nonce="short"), FakeKeys(record_for(private_key))) == "signature_nonce"


def test_one_changed_body_byte_is_refused(private_key):
    request = signed(private_key)
    changed = IncomingRequest(request.method, request.url, request.headers, BODY.replace(b"1250", b"1251"))
    assert rejection(changed, FakeKeys(record_for(private_key))) == "content_digest_mismatch"


def test_a_digest_header_changed_with_the_body_breaks_the_signature(private_key):
    request = signed(private_key)
    new_body = BODY.replace(b"1250", b"9250")
    import hashlib

    digest = "sha-256=:" + base64.b64encode(hashlib.sha256(new_body).digest()).decode() + ":"
    forged = replace_header(IncomingRequest(request.method, request.url, request.headers, new_body),
                            "Content-Digest", digest)
    assert rejection(forged, FakeKeys(record_for(private_key))) == "signature_invalid"


def test_a_missing_digest_is_refused(private_key):
    request = replace_header(signed(private_key), "Content-Digest", None)
    assert rejection(request, FakeKeys(record_for(private_key))) == "content_digest_missing"


def test_a_changed_path_or_query_breaks_the_signature(private_key):
    request = signed(private_key)
    for url in ("https://hub.example/partner/v1/purchases?dry=0", "https://hub.example/partner/v1/refunds?dry=1"):
        moved = IncomingRequest(request.method, url, request.headers, request.body)
        assert rejection(moved, FakeKeys(record_for(private_key))) == "signature_invalid"


def test_a_malformed_signature_header_is_refused(private_key):
    request = replace_header(signed(private_key), "Signature-Input", "pos=this is not a list")
    assert rejection(request, FakeKeys(record_for(private_key))) == "signature_malformed"
