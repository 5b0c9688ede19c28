"""Floor (c) of the HTTP benchmark (benchmarks/probe_app.py) checks a real signature, not nothing."""

from __future__ import annotations

import json

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from benchmarks.probe_app import minimal_signature_check
from partners_sdk.signing import RequestSigner


def _signed(private_key: Ed25519PrivateKey, body: bytes) -> dict[str, str]:
    signed = RequestSigner("till-1", private_key).sign("POST", "http://127.0.0.1:8000/partner/v1/purchases",
                                                       body=body, idempotency_key="earn-1")
    return {name.lower(): value for name, value in signed.headers.items()}


def test_the_hand_built_base_verifies_what_the_sdk_signed_and_nothing_changed():
    private_key = Ed25519PrivateKey.generate()
    keys = {"till-1": private_key.public_key()}
    headers = _signed(private_key, json.dumps({"receipt_id": "r-1", "amount_minor": 1250}).encode())

    assert minimal_signature_check("POST", "/partner/v1/purchases", "", headers, keys)
    # Any covered part changed, or another key, and the signature no longer verifies.
    assert not minimal_signature_check("PUT", "/partner/v1/purchases", "", headers, keys)
    assert not minimal_signature_check("POST", "/partner/v1/redemptions", "", headers, keys)
    assert not minimal_signature_check("POST", "/partner/v1/purchases", "x=1", headers, keys)
    assert not minimal_signature_check("POST", "/partner/v1/purchases", "", {**headers, "idempotency-key": "earn-2"},
                                       keys)
    assert not minimal_signature_check("POST", "/partner/v1/purchases", "", headers,
                                       {"till-1": Ed25519PrivateKey.generate().public_key()})
    assert not minimal_signature_check("POST", "/partner/v1/purchases", "", {}, keys)
