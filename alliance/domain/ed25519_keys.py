"""The hub's Ed25519 keys as text: loading a private key, writing PEM, and naming a key by its public half.

The hub signs statements and webhook deliveries, each with its own key. Both are kept as
unencrypted PKCS#8 PEM text in the settings, published as SubjectPublicKeyInfo PEM, and
named by a prefix and the first 16 hex digits of SHA-256 over the raw public key, so an
id cannot drift from its key and anyone can recompute it from the published key.
"""

from __future__ import annotations

import hashlib

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from alliance.domain.errors import ConfigurationError

# 64 bits of the digest: ample to tell a handful of rotated keys apart.
KEY_ID_HEX_DIGITS = 16


def load_private_key(pem_text: str, *, what: str) -> Ed25519PrivateKey:
    """The Ed25519 private key in unencrypted PKCS#8 PEM text, or ``ConfigurationError`` naming ``what`` it is."""
    try:
        key = serialization.load_pem_private_key(pem_text.encode("ascii"), password=None)
    except (ValueError, TypeError, UnicodeEncodeError):
        raise ConfigurationError(f"{what} is not an unencrypted PEM private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigurationError(f"{what} must be an Ed25519 key")
    return key


def load_public_key(pem_text: str, *, what: str) -> Ed25519PublicKey:
    """A published Ed25519 public key from its PEM text, or ``ConfigurationError`` naming ``what`` it is."""
    try:
        key = serialization.load_pem_public_key(pem_text.encode("ascii"))
    except (ValueError, TypeError, UnicodeEncodeError):
        raise ConfigurationError(f"{what} is not PEM") from None
    if not isinstance(key, Ed25519PublicKey):
        raise ConfigurationError(f"{what} must be an Ed25519 key")
    return key


def key_id(prefix: str, public_key: Ed25519PublicKey) -> str:
    """``prefix`` and the first 16 hex digits of SHA-256 over the raw public key."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return prefix + hashlib.sha256(raw).hexdigest()[:KEY_ID_HEX_DIGITS]


def private_key_pem(private_key: Ed25519PrivateKey) -> str:
    """A private key as unencrypted PKCS#8 PEM text, as the ``new-key`` commands print it."""
    return private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode("ascii")


def public_key_pem(public_key: Ed25519PublicKey) -> str:
    """A public key as SubjectPublicKeyInfo PEM text, the form the hub publishes."""
    return public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode("ascii")
