"""The hub's statement key: loading the Ed25519 private key, naming it, and the signer closings use.

The key id is derived from the public key, so it cannot drift from the key it names
and a partner can recompute it from the published public key.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from alliance.domain.errors import ConfigurationError

KEY_ID_PREFIX = "stmt-"
# 64 bits of the digest: ample to tell a handful of rotated keys apart.
KEY_ID_HEX_DIGITS = 16
DEFAULT_PAYMENT_TERMS_DAYS = 14


@dataclass(frozen=True, slots=True)
class StatementSigner:
    """The hub's statement key and its id, as ``close_cycle`` needs them, and the payment terms statements carry."""

    signing_key: Ed25519PrivateKey
    key_id: str
    payment_terms_days: int = DEFAULT_PAYMENT_TERMS_DAYS


def load_statement_private_key(pem_text: str) -> Ed25519PrivateKey:
    """The Ed25519 private key in unencrypted PKCS#8 PEM text, or ``ConfigurationError``."""
    try:
        key = serialization.load_pem_private_key(pem_text.encode("ascii"), password=None)
    except (ValueError, TypeError, UnicodeEncodeError):
        raise ConfigurationError("the statement key is not an unencrypted PEM private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigurationError("the statement key must be an Ed25519 key")
    return key


def statement_key_id(public_key: Ed25519PublicKey) -> str:
    """``stmt-`` and the first 16 hex digits of SHA-256 over the raw public key."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return KEY_ID_PREFIX + hashlib.sha256(raw).hexdigest()[:KEY_ID_HEX_DIGITS]


def private_key_pem(private_key: Ed25519PrivateKey) -> str:
    """A private key as unencrypted PKCS#8 PEM text, for ``alliance statements new-key``."""
    return private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode("ascii")


def public_key_pem(public_key: Ed25519PublicKey) -> str:
    """A public key as SubjectPublicKeyInfo PEM text, the form the hub publishes."""
    return public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode("ascii")


def load_public_key(pem_text: str) -> Ed25519PublicKey:
    """A published statement public key from its PEM text, or ``ConfigurationError``."""
    try:
        key = serialization.load_pem_public_key(pem_text.encode("ascii"))
    except (ValueError, TypeError, UnicodeEncodeError):
        raise ConfigurationError("the statement public key is not PEM") from None
    if not isinstance(key, Ed25519PublicKey):
        raise ConfigurationError("a statement public key must be an Ed25519 key")
    return key
