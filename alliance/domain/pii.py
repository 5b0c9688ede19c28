"""Personal data encrypted at rest under a rotating key ring, found through a keyed hash.

Names, phone numbers and e-mail addresses are stored only as tokens of the form
``v1.<key_id>.<base64url(nonce + ciphertext)>``: AES-256-GCM with a random 96-bit nonce,
and a ``context`` such as ``member:42:phone`` as associated data, so a token copied into
another member's row, or another column, does not decrypt. Encryption always uses the
active key; decryption uses whichever key the token names, so keys rotate without a
flag day: add a key, make it active, then re-encrypt the stale tokens at leisure.

A member is found by phone or e-mail through ``lookup_hash``, an HMAC-SHA256 of the
normalised value under a separate lookup secret. That secret does not rotate with the
encryption keys: rotating it would mean rehashing every row at once, and the hash
reveals nothing to someone who does not hold the secret.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Callable, Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from alliance.domain.base64url import decode_base64url, encode_base64url
from alliance.domain.errors import AllianceError, ConfigurationError, ValidationFailed

TOKEN_VERSION = "v1"
SECRET_LENGTH_BYTES = 32
MIN_LOOKUP_SECRET_LENGTH_BYTES = 32
# GCM's standard nonce; random nonces of this size stay safe for about 2**32 encryptions
# under one key, far beyond what a key sees between rotations.
NONCE_LENGTH_BYTES = 12
TAG_LENGTH_BYTES = 16
# Names, phone numbers and addresses are small; the limit keeps a bug from encrypting
# (and storing) something unbounded in a column meant for personal data.
MAX_PLAINTEXT_BYTES = 16 * 1024
# Key ids are at most 32 characters while a 32-byte secret is 43 characters of base64url,
# so a configuration error that names a key id can never be echoing a whole secret.
KEY_ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,32}\Z")
RESERVED_CONFIG_NAMES = frozenset({"active", "lookup"})
MAX_KEYS = 64
MAX_TOKEN_CHARACTERS = len(TOKEN_VERSION) + 2 + 32 + 4 * (
    (NONCE_LENGTH_BYTES + TAG_LENGTH_BYTES + MAX_PLAINTEXT_BYTES + 2) // 3
)
MAX_PHONE_INPUT_CHARACTERS = 64
MAX_EMAIL_CHARACTERS = 254
PHONE_SEPARATORS = re.compile(r"[\s\-.()]")
PHONE_DIGITS = re.compile(r"^\+?[0-9]{7,15}\Z")


class PiiKeyMissing(AllianceError):
    """A token encrypted under a key that is no longer, or not yet, in the key ring."""

    code = "pii_key_missing"
    http_status = 500
    title = "Personal data key missing"


class PiiDecryptionFailed(AllianceError):
    """A token that is garbled, tampered with, or bound to another context."""

    code = "pii_decryption_failed"
    http_status = 500
    title = "Personal data cannot be decrypted"


class LookupKind(StrEnum):
    """What a lookup hash is of; the kind is hashed too, so kinds never collide."""

    PHONE = "phone"
    EMAIL = "email"
    # A supplier's voucher code, as ``<reward id>:<code>``: finds a code uploaded twice.
    VOUCHER = "voucher"


@dataclass(frozen=True, slots=True)
class PiiKey:
    """One AES-256 key of the ring; the secret never appears in its repr."""

    key_id: str
    secret: bytes = field(repr=False)


@dataclass(frozen=True)
class KeyRing:
    """The keys personal data is encrypted under, the active one, and the lookup secret."""

    keys: Sequence[PiiKey]
    active_key_id: str
    lookup_secret: bytes = field(repr=False)
    _secrets_by_key_id: dict[str, bytes] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        keys = tuple(self.keys)
        object.__setattr__(self, "keys", keys)
        if not keys:
            raise ConfigurationError("the PII key ring needs at least one key")
        if len(keys) > MAX_KEYS:
            raise ConfigurationError(f"the PII key ring holds more than {MAX_KEYS} keys")
        secrets_by_key_id: dict[str, bytes] = {}
        for key in keys:
            _check_key_id(key.key_id)
            if key.key_id in secrets_by_key_id:
                raise ConfigurationError(f"PII key id {key.key_id} appears more than once")
            if not isinstance(key.secret, bytes) or len(key.secret) != SECRET_LENGTH_BYTES:
                raise ConfigurationError(f"the secret of PII key {key.key_id} must be exactly 32 bytes")
            secrets_by_key_id[key.key_id] = key.secret
        if self.active_key_id not in secrets_by_key_id:
            raise ConfigurationError("the active PII key id is not one of the keys in the ring")
        if not isinstance(self.lookup_secret, bytes) or len(self.lookup_secret) < MIN_LOOKUP_SECRET_LENGTH_BYTES:
            raise ConfigurationError("the PII lookup secret must be at least 32 bytes")
        object.__setattr__(self, "_secrets_by_key_id", secrets_by_key_id)

    @classmethod
    def from_config(cls, text: str) -> KeyRing:
        """Parse ``active=<id>;<id>=<secret>;...;lookup=<secret>``, secrets in base64url.

        Segments are separated by ``;`` and may come in any order; whitespace around
        segments, names and values is ignored, as is a trailing ``;``. ``active`` names
        the key new data is encrypted under; every other name except ``lookup`` is a key
        id (1 to 32 of ``A-Z a-z 0-9 _ -``) whose value is 32 random bytes in base64url,
        padding optional. ``lookup`` is the HMAC secret of lookup hashes, at least 32
        bytes. Errors name the segment or key id at fault, never the secret material.
        """
        if not isinstance(text, str) or not text.strip():
            raise ConfigurationError("the PII key ring configuration is empty")
        active_key_id: str | None = None
        lookup_secret: bytes | None = None
        keys: list[PiiKey] = []
        segments = [segment.strip() for segment in text.strip().split(";")]
        for position, segment in enumerate((segment for segment in segments if segment), start=1):
            name, equals, value = (part.strip() for part in segment.partition("="))
            if not equals:
                raise ConfigurationError(f"PII key ring configuration: segment {position} has no '='")
            if name == "active":
                if active_key_id is not None:
                    raise ConfigurationError("PII key ring configuration: 'active' appears more than once")
                if not KEY_ID_PATTERN.match(value):
                    raise ConfigurationError("PII key ring configuration: 'active' is not a valid key id")
                active_key_id = value
            elif name == "lookup":
                if lookup_secret is not None:
                    raise ConfigurationError("PII key ring configuration: 'lookup' appears more than once")
                lookup_secret = _decode_config_secret(value, "the lookup secret")
            else:
                if not KEY_ID_PATTERN.match(name):
                    raise ConfigurationError(
                        f"PII key ring configuration: segment {position} does not start with a valid key id"
                    )
                keys.append(PiiKey(name, _decode_config_secret(value, f"the secret of key {name}")))
        if active_key_id is None:
            raise ConfigurationError("PII key ring configuration: 'active' is missing")
        if lookup_secret is None:
            raise ConfigurationError("PII key ring configuration: 'lookup' is missing")
        return cls(keys, active_key_id, lookup_secret)

    def to_config(self) -> str:
        """The configuration text ``from_config`` reads back into this ring."""
        key_segments = [f"{key.key_id}={encode_base64url(key.secret)}" for key in self.keys]
        lookup_segment = f"lookup={encode_base64url(self.lookup_secret)}"
        return ";".join([f"active={self.active_key_id}", *key_segments, lookup_segment])

    def encrypt(self, plaintext: str, *, context: str) -> str:
        """A ``v1.<key_id>.<base64url>`` token of ``plaintext`` under the active key."""
        _check_context(context)
        plaintext_bytes = plaintext.encode("utf-8")
        if len(plaintext_bytes) > MAX_PLAINTEXT_BYTES:
            raise ValidationFailed(f"personal data is longer than the {MAX_PLAINTEXT_BYTES}-byte limit")
        nonce = secrets.token_bytes(NONCE_LENGTH_BYTES)
        ciphertext = AESGCM(self._secrets_by_key_id[self.active_key_id]).encrypt(
            nonce, plaintext_bytes, context.encode("utf-8")
        )
        return f"{TOKEN_VERSION}.{self.active_key_id}.{encode_base64url(nonce + ciphertext)}"

    def decrypt(self, token: str, *, context: str) -> str:
        """The plaintext of ``token``, which must have been encrypted for ``context``."""
        _check_context(context)
        key_id, sealed = _parse_token(token)
        secret = self._secrets_by_key_id.get(key_id)
        if secret is None:
            raise PiiKeyMissing(f"personal data is encrypted under key {key_id}, which is not in the key ring")
        nonce, ciphertext = sealed[:NONCE_LENGTH_BYTES], sealed[NONCE_LENGTH_BYTES:]
        try:
            plaintext_bytes = AESGCM(secret).decrypt(nonce, ciphertext, context.encode("utf-8"))
            return plaintext_bytes.decode("utf-8")
        except (InvalidTag, UnicodeDecodeError):
            raise PiiDecryptionFailed(
                "personal data does not decrypt: it was altered, or belongs to another record"
            ) from None

    def needs_reencryption(self, token: str) -> bool:
        """Whether ``token`` is under a key other than the active one."""
        return key_id_of(token) != self.active_key_id

    def reencrypt(self, token: str, *, context: str) -> str:
        """A fresh token of the same plaintext under the active key."""
        return self.encrypt(self.decrypt(token, context=context), context=context)

    def lookup_hash(self, value: str, *, kind: LookupKind | str) -> str:
        """The hex HMAC-SHA256 of the normalised ``value``, separated by ``kind``."""
        lookup_kind = LookupKind(kind)
        normalised = NORMALISERS[lookup_kind](value)
        # The kind and a NUL come first, so a phone hash can never equal an e-mail hash
        # of the same characters; neither a kind nor a normalised value contains a NUL.
        message = f"{lookup_kind.value}\x00{normalised}".encode("utf-8")
        return hmac.new(self.lookup_secret, message, hashlib.sha256).hexdigest()


def key_id_of(token: str) -> str:
    """The id of the key a token was encrypted under."""
    key_id, _ = _parse_token(token)
    return key_id


def generate_key_ring_config(key_ids: Sequence[str] = ("k1",)) -> str:
    """A fresh configuration with a random key per id (the last one active) and lookup secret."""
    if not key_ids:
        raise ConfigurationError("a PII key ring needs at least one key id")
    keys = [PiiKey(key_id, secrets.token_bytes(SECRET_LENGTH_BYTES)) for key_id in key_ids]
    ring = KeyRing(keys, key_ids[-1], secrets.token_bytes(MIN_LOOKUP_SECRET_LENGTH_BYTES))
    return ring.to_config()


def with_new_active_key(config_text: str, new_key_id: str) -> str:
    """``config_text`` with a new random key ``new_key_id`` added and made active.

    The old keys stay, so data encrypted under them stays readable until it has been
    re-encrypted; the lookup secret stays, so lookup hashes stay valid.
    """
    ring = KeyRing.from_config(config_text)
    if any(key.key_id == new_key_id for key in ring.keys):
        raise ConfigurationError(f"PII key id {new_key_id} is already in the key ring")
    new_key = PiiKey(new_key_id, secrets.token_bytes(SECRET_LENGTH_BYTES))
    return KeyRing([*ring.keys, new_key], new_key_id, ring.lookup_secret).to_config()


def normalise_phone(text: str) -> str:
    """``+33612345678`` from ``+33 6 12 34 56 78``, ``0033612345678`` or ``+33-6-12-34-56-78``.

    Numbers written without a country code are kept as written: guessing the country
    would make two members' numbers collide.
    """
    if not isinstance(text, str) or len(text) > MAX_PHONE_INPUT_CHARACTERS:
        raise ValidationFailed("the phone number is not valid", fields={"phone": ["not a phone number"]})
    compact = PHONE_SEPARATORS.sub("", text)
    if compact.startswith("00"):
        compact = "+" + compact[2:]
    if not PHONE_DIGITS.match(compact):
        raise ValidationFailed(
            "the phone number is not valid",
            fields={"phone": ["must be 7 to 15 digits, optionally after a leading + or 00"]},
        )
    return compact


def normalise_email(text: str) -> str:
    """The address trimmed and lower-cased, if it has the form ``local@domain.tld``."""
    if not isinstance(text, str):
        raise ValidationFailed("the e-mail address is not valid", fields={"email": ["not an e-mail address"]})
    address = text.strip().lower()
    local_part, _, domain = address.partition("@")
    problem = None
    if len(address) > MAX_EMAIL_CHARACTERS:
        problem = f"must be at most {MAX_EMAIL_CHARACTERS} characters"
    elif address.count("@") != 1 or not local_part or not domain:
        problem = "must contain exactly one @ with text on both sides"
    elif any(character.isspace() for character in address):
        problem = "must not contain spaces"
    elif "." not in domain or domain.startswith(".") or domain.endswith(".") or ".." in domain:
        problem = "the domain must contain a dot between non-empty parts"
    if problem:
        raise ValidationFailed("the e-mail address is not valid", fields={"email": [problem]})
    return address


def normalise_voucher(text: str) -> str:
    """A voucher code as uploaded, without surrounding spaces."""
    return text.strip()


NORMALISERS: dict[LookupKind, Callable[[str], str]] = {
    LookupKind.PHONE: normalise_phone, LookupKind.EMAIL: normalise_email, LookupKind.VOUCHER: normalise_voucher}


def _check_key_id(key_id: str) -> None:
    if not isinstance(key_id, str) or not KEY_ID_PATTERN.match(key_id):
        raise ConfigurationError("a PII key id must be 1 to 32 of A-Z, a-z, 0-9, '_' and '-'")
    if key_id.lower() in RESERVED_CONFIG_NAMES:
        raise ConfigurationError(f"{key_id} is a reserved name in the key ring configuration, not a key id")


def _check_context(context: str) -> None:
    # An empty context would bind a token to nothing, which is the mistake the
    # associated data exists to prevent.
    if not isinstance(context, str) or not context:
        raise ValueError("personal data needs a context such as 'member:42:phone'")


def _decode_config_secret(value: str, what: str) -> bytes:
    secret = decode_base64url(value)
    if secret is None:
        raise ConfigurationError(f"PII key ring configuration: {what} is not valid base64url")
    return secret


def _parse_token(token: str) -> tuple[str, bytes]:
    """The key id and the nonce-plus-ciphertext of a token, or PiiDecryptionFailed."""
    if not isinstance(token, str) or len(token) > MAX_TOKEN_CHARACTERS:
        raise PiiDecryptionFailed("personal data token is not a token of this hub")
    parts = token.split(".")
    if len(parts) != 3 or parts[0] != TOKEN_VERSION or not KEY_ID_PATTERN.match(parts[1]):
        raise PiiDecryptionFailed("personal data token is not a v1 token of this hub")
    # Tokens are written without padding, so a token with padding has been altered.
    sealed = None if "=" in parts[2] else decode_base64url(parts[2])
    if sealed is None or len(sealed) < NONCE_LENGTH_BYTES + TAG_LENGTH_BYTES:
        raise PiiDecryptionFailed("personal data token is garbled")
    return parts[1], sealed
