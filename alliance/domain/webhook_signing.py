"""Signing webhook deliveries: the hub's webhook key, its id, the keys it publishes, and each delivery's signature.

A delivery carries one RFC 9421 HTTP Message Signature labelled ``hub``: ``alg="ed25519"``,
``keyid`` (``whk-`` and 16 hex digits of SHA-256 over the raw public key), ``created``,
``expires`` (300 s later), a fresh ``nonce`` and ``tag="alliance-webhook"``, covering
``"@method" "@target-uri" "content-type" "content-digest" "alliance-event-id"``; the body
is covered by an RFC 9530 ``Content-Digest: sha-256=:…:``. The signature base is built by
the ``http-message-signatures`` library (``prepare``) and signed with its Ed25519 algorithm,
as the partner SDK signs requests.

One key signs for every endpoint; receivers hold only public keys. To rotate, publish the
next public key (``ALLIANCE_WEBHOOK_PUBLISHED_KEYS``) for a while, then sign with it
(``ALLIANCE_WEBHOOK_KEY``) and keep the old one published until the last delivery signed
with it can no longer be retried.
"""

from __future__ import annotations

import base64
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Mapping

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from http_message_signatures import HTTPMessageSigner, algorithms

from alliance.domain import ed25519_keys
from alliance.domain.ed25519_keys import public_key_pem
from alliance.domain.errors import ConfigurationError

KEY_ID_PREFIX = "whk-"
SIGNATURE_LABEL = "hub"
SIGNATURE_TAG = "alliance-webhook"
COVERED_COMPONENTS = ("@method", "@target-uri", "content-type", "content-digest", "alliance-event-id")
SIGNATURE_LIFETIME = timedelta(seconds=300)
EVENT_ID_HEADER = "Alliance-Event-Id"
CONTENT_TYPE = "application/json"
NONCE_BYTES = 24
_PEM_PUBLIC_BLOCK = re.compile(r"-----BEGIN PUBLIC KEY-----.+?-----END PUBLIC KEY-----", re.DOTALL)


@dataclass(frozen=True, slots=True)
class PublishedKey:
    """A public key receivers may verify deliveries with, and its id."""

    key_id: str
    public_key_pem: str
    active: bool


@dataclass(frozen=True, slots=True)
class WebhookSigner:
    """The hub's webhook key, its id, and the extra public keys published during a rotation's overlap."""

    private_key: Ed25519PrivateKey
    key_id: str
    extra_public_keys: tuple[Ed25519PublicKey, ...] = ()

    @classmethod
    def from_pem(cls, private_pem: str, published_pem: str | None = None) -> "WebhookSigner":
        """The signer of ``ALLIANCE_WEBHOOK_KEY`` with ``ALLIANCE_WEBHOOK_PUBLISHED_KEYS``; ``ConfigurationError``."""
        private_key = load_webhook_private_key(private_pem)
        return cls(private_key=private_key, key_id=webhook_key_id(private_key.public_key()),
                   extra_public_keys=load_published_keys(published_pem or ""))

    def published_keys(self) -> list[PublishedKey]:
        """The active public key first, then the extra ones (without repeating the active one)."""
        keys = [PublishedKey(self.key_id, public_key_pem(self.private_key.public_key()), active=True)]
        for public_key in self.extra_public_keys:
            key_id = webhook_key_id(public_key)
            if all(key.key_id != key_id for key in keys):
                keys.append(PublishedKey(key_id, public_key_pem(public_key), active=False))
        return keys

    def sign(self, *, url: str, body: bytes, event_id: str, now: datetime,
             nonce: str | None = None) -> dict[str, str]:
        """The headers of one delivery POST: Content-Type, Alliance-Event-Id, Content-Digest and the signature."""
        if now.tzinfo is None:
            raise ValueError("the signing moment must be timezone-aware")
        created = now.replace(microsecond=0)
        message = _Message("POST", url, {"Content-Type": CONTENT_TYPE, EVENT_ID_HEADER: event_id})
        prepared = HTTPMessageSigner(signature_algorithm=algorithms.ED25519).prepare(
            message, key_id=self.key_id, created=created, expires=created + SIGNATURE_LIFETIME,
            nonce=nonce or secrets.token_urlsafe(NONCE_BYTES), label=SIGNATURE_LABEL, tag=SIGNATURE_TAG,
            include_alg=True, covered_component_ids=list(COVERED_COMPONENTS), body=body,
        )
        signature = algorithms.ED25519(private_key=self.private_key).sign(prepared.signature_base)
        # Each header is a one-member RFC 8941 dictionary: `hub=(...);params` and `hub=:base64:`.
        message.headers["Signature-Input"] = f"{prepared.label}={prepared.signature_params}"
        message.headers["Signature"] = f"{prepared.label}=:{base64.b64encode(signature).decode('ascii')}:"
        return dict(message.headers)


class _Message:
    """The request shape ``http-message-signatures`` reads and writes headers through."""

    def __init__(self, method: str, url: str, headers: Mapping[str, str]) -> None:
        self.method = method
        self.url = url
        self.headers = dict(headers)


def load_webhook_private_key(pem_text: str) -> Ed25519PrivateKey:
    """The Ed25519 private key in unencrypted PKCS#8 PEM text, or ``ConfigurationError``."""
    return ed25519_keys.load_private_key(pem_text, what="ALLIANCE_WEBHOOK_KEY")


def load_published_keys(pem_text: str) -> tuple[Ed25519PublicKey, ...]:
    """Every ``PUBLIC KEY`` PEM block of ``ALLIANCE_WEBHOOK_PUBLISHED_KEYS``; ``ConfigurationError`` on any other."""
    blocks = _PEM_PUBLIC_BLOCK.findall(pem_text)
    leftover = _PEM_PUBLIC_BLOCK.sub("", pem_text).strip()
    if leftover:
        raise ConfigurationError("ALLIANCE_WEBHOOK_PUBLISHED_KEYS must hold only PEM public keys "
                                 "(-----BEGIN PUBLIC KEY----- blocks)")
    keys = []
    for block in blocks:
        try:
            key = serialization.load_pem_public_key(block.encode("ascii"))
        except (ValueError, TypeError, UnicodeEncodeError):
            raise ConfigurationError("ALLIANCE_WEBHOOK_PUBLISHED_KEYS holds a block that is not a public key") from None
        if not isinstance(key, Ed25519PublicKey):
            raise ConfigurationError("ALLIANCE_WEBHOOK_PUBLISHED_KEYS must hold Ed25519 public keys")
        keys.append(key)
    return tuple(keys)


def webhook_key_id(public_key: Ed25519PublicKey) -> str:
    """``whk-`` and the first 16 hex digits of SHA-256 over the raw public key."""
    return ed25519_keys.key_id(KEY_ID_PREFIX, public_key)
