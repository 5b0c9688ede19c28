"""The SDK verifies hub-signed statements offline, byte for byte, with the published keys."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from partners_sdk.statements import StatementNotAuthentic, public_key_from_raw, verify_statement
from settlement.statements import render_signature, sign_statement

DOCUMENT = b'{"format":"points-alliance-statement/1","net_minor":1234,"partner_code":"cafe-aurora"}'


@pytest.fixture
def hub_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def signature_file(key: Ed25519PrivateKey, document: bytes = DOCUMENT, key_id: str = "stmt-1") -> bytes:
    return render_signature(sign_statement(document, key, key_id))


def test_a_hub_signed_statement_verifies_with_the_published_key(hub_key):
    assert verify_statement(DOCUMENT, signature_file(hub_key), {"stmt-1": hub_key.public_key()}) == "stmt-1"


def test_a_rotated_key_set_still_verifies_old_statements(hub_key):
    newer = Ed25519PrivateKey.generate()
    keys = {"stmt-1": hub_key.public_key(), "stmt-2": newer.public_key()}
    assert verify_statement(DOCUMENT, signature_file(hub_key), keys) == "stmt-1"
    assert verify_statement(DOCUMENT, signature_file(newer, key_id="stmt-2"), keys) == "stmt-2"


@pytest.mark.parametrize("position", [0, 10, len(DOCUMENT) - 1])
def test_any_changed_byte_is_detected(hub_key, position):
    changed = bytearray(DOCUMENT)
    changed[position] ^= 0x01
    with pytest.raises(StatementNotAuthentic) as caught:
        verify_statement(bytes(changed), signature_file(hub_key), {"stmt-1": hub_key.public_key()})
    assert caught.value.code == "signature_mismatch"


def test_an_unknown_key_or_algorithm_or_garbled_file_is_refused(hub_key):
    keys = {"stmt-1": hub_key.public_key()}
    with pytest.raises(StatementNotAuthentic) as unknown:
        verify_statement(DOCUMENT, signature_file(hub_key, key_id="stmt-9"), keys)
    assert unknown.value.code == "unknown_key"
    other_algorithm = signature_file(hub_key).replace(b'"ed25519"', b'"rsa-pss"')
    with pytest.raises(StatementNotAuthentic) as algorithm:
        verify_statement(DOCUMENT, other_algorithm, keys)
    assert algorithm.value.code == "unsupported_algorithm"
    with pytest.raises(StatementNotAuthentic) as garbled:
        verify_statement(DOCUMENT, b"not json", keys)
    assert garbled.value.code == "malformed_signature"


def test_public_keys_load_from_their_raw_bytes(hub_key):
    from cryptography.hazmat.primitives import serialization

    raw = hub_key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert verify_statement(DOCUMENT, signature_file(hub_key), {"stmt-1": public_key_from_raw(raw)}) == "stmt-1"
    with pytest.raises(StatementNotAuthentic):
        public_key_from_raw(raw[:31])
