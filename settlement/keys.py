"""The hub's statement key: loading the Ed25519 private key, naming it, and the signer closings use.

The key id is derived from the public key, so it cannot drift from the key it names
and a partner can recompute it from the published public key.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from alliance.domain import ed25519_keys
from alliance.domain.ed25519_keys import private_key_pem, public_key_pem

KEY_ID_PREFIX = "stmt-"
# The PEM writers are the hub's one pair (``alliance.domain.ed25519_keys``), named here for settlement's callers.
__all__ = ["KEY_ID_PREFIX", "DEFAULT_PAYMENT_TERMS_DAYS", "StatementSigner", "load_public_key",
           "load_statement_private_key", "private_key_pem", "public_key_pem", "statement_key_id"]
DEFAULT_PAYMENT_TERMS_DAYS = 14


@dataclass(frozen=True, slots=True)
class StatementSigner:
    """The hub's statement key and its id, as ``close_cycle`` needs them, and the payment terms statements carry."""

    signing_key: Ed25519PrivateKey
    key_id: str
    payment_terms_days: int = DEFAULT_PAYMENT_TERMS_DAYS


def load_statement_private_key(pem_text: str) -> Ed25519PrivateKey:
    """The Ed25519 private key in unencrypted PKCS#8 PEM text, or ``ConfigurationError``."""
    return ed25519_keys.load_private_key(pem_text, what="the statement key")


def statement_key_id(public_key: Ed25519PublicKey) -> str:
    """``stmt-`` and the first 16 hex digits of SHA-256 over the raw public key."""
    return ed25519_keys.key_id(KEY_ID_PREFIX, public_key)


def load_public_key(pem_text: str) -> Ed25519PublicKey:
    """A published statement public key from its PEM text, or ``ConfigurationError``."""
    return ed25519_keys.load_public_key(pem_text, what="a statement public key")
