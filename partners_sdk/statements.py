"""Checking a hub statement offline: its detached Ed25519 signature by a published hub key.

The hub signs the exact bytes of each statement's JSON rendering and ships the signature
as a small JSON file (``{"algorithm": "ed25519", "key_id": ..., "signature_b64": ...}``).
Its public statement keys are published, so a partner can verify with no call to the hub.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Mapping

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from partners_sdk.errors import AllianceError

SIGNATURE_ALGORITHM = "ed25519"
SIGNATURE_FIELDS = frozenset({"algorithm", "key_id", "signature_b64"})
ED25519_PUBLIC_KEY_BYTES = 32


class StatementNotAuthentic(AllianceError):
    """A statement whose signature does not verify with any published hub key."""

    default_code = "statement_signature_rejected"


@dataclass(frozen=True, slots=True)
class StatementSignature:
    """A detached statement signature, as the hub ships it."""

    key_id: str
    algorithm: str
    signature: bytes


def parse_signature(document: bytes) -> StatementSignature:
    """Read a detached signature file; exactly its three fields."""
    try:
        fields = json.loads(document.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise StatementNotAuthentic(detail="the signature file is not JSON", code="malformed_signature") from None
    if not isinstance(fields, dict) or set(fields) != SIGNATURE_FIELDS or not all(
            isinstance(value, str) for value in fields.values()):
        raise StatementNotAuthentic(detail=f"a signature file holds exactly {sorted(SIGNATURE_FIELDS)}",
                                    code="malformed_signature")
    try:
        signature = base64.b64decode(fields["signature_b64"], validate=True)
    except (binascii.Error, ValueError):
        raise StatementNotAuthentic(detail="the signature is not base64", code="malformed_signature") from None
    return StatementSignature(key_id=fields["key_id"], algorithm=fields["algorithm"], signature=signature)


def public_key_from_raw(raw: bytes) -> Ed25519PublicKey:
    """An Ed25519 public key from its 32 raw bytes (as the hub publishes them, base64-decoded)."""
    if len(raw) != ED25519_PUBLIC_KEY_BYTES:
        raise StatementNotAuthentic(detail="an Ed25519 public key is 32 bytes", code="malformed_key")
    return Ed25519PublicKey.from_public_bytes(raw)


def verify_statement(document: bytes, signature_file: bytes, public_keys: Mapping[str, Ed25519PublicKey]) -> str:
    """Verify a statement's exact bytes against its signature file; returns the key id used."""
    signature = parse_signature(signature_file)
    if signature.algorithm != SIGNATURE_ALGORITHM:
        raise StatementNotAuthentic(detail=f"statements are signed with {SIGNATURE_ALGORITHM}",
                                    code="unsupported_algorithm")
    public_key = public_keys.get(signature.key_id)
    if public_key is None:
        raise StatementNotAuthentic(detail=f"no published hub statement key has id {signature.key_id!r}",
                                    code="unknown_key")
    try:
        public_key.verify(signature.signature, document)
    except InvalidSignature:
        raise StatementNotAuthentic(detail="the statement was changed or not signed by this key",
                                    code="signature_mismatch") from None
    return signature.key_id
