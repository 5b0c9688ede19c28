"""PINs kept as keyed hashes: HMAC-SHA256 under a secret the database does not hold.

A PIN has 4 to 12 digits, often 4: no hash is slow enough to protect ten thousand
candidates from someone who holds the table and can compute the hash (at 29 ms a guess,
scrypt gave up a 4-digit PIN in five minutes), while a slow hash made every PIN check at
a till slow. A hash keyed with a secret kept outside the database makes a stolen table
useless on its own; guessing online is bounded by the lockout after repeated failures.

Stored form: ``hmac-sha256$<key id>$<salt>$<digest>``, salt and digest in base64url
without padding, digest = HMAC-SHA256(key, salt ‖ PIN) with 16 random bytes of salt per
hash, so two cards with the same PIN never share a hash. The salt has a fixed length,
so salt ‖ PIN cannot be read two ways.

Keys rotate: the ring holds every key a stored hash may name and one active key that new
hashes use. A hash under another key of the ring verifies, and ``needs_rehash`` tells
the caller to hash the PIN again under the active key while it has it. Hashes written
before keyed hashing (``scrypt$N$r$p$<salt>$<digest>``, standard base64) verify the same
way, slowly, once. A hash under a key that has left the ring cannot be checked at all;
that is not the member's mistake, so it is refused as ``PinResetRequired`` rather than
counted as a wrong PIN.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from base64 import b64decode
from collections.abc import Sequence
from dataclasses import dataclass, field

from alliance.domain.base64url import decode_base64url, encode_base64url
from alliance.domain.errors import AllianceError, ConfigurationError

KEYED_SCHEME = "hmac-sha256"
LEGACY_SCHEME = "scrypt"
SECRET_LENGTH_BYTES = 32
SALT_LENGTH_BYTES = 16
DIGEST_LENGTH_BYTES = hashlib.sha256().digest_size
# The same shape as personal-data key ids: a 32-byte secret is 43 characters of
# base64url, so an error that names a key id can never be echoing a whole secret. No
# '$', so a key id never breaks the stored form apart. Used with fullmatch, since '$'
# in a pattern would let a trailing newline through.
KEY_ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,32}")
RESERVED_CONFIG_NAMES = frozenset({"active"})
MAX_KEYS = 64
# Generated key ids are derived from their secret, so two rings made independently (a
# development instance folder made afresh, a production ring generated twice) never
# share an id. Were they to, a PIN hashed under one key would be checked under the
# other and count as wrong, locking members out through no fault of theirs.
GENERATED_KEY_ID_PREFIX = "pin-"
GENERATED_KEY_ID_HEX_DIGITS = 12
GENERATED_KEY_ID_CONTEXT = b"alliance pin key id\x00"
# The hub wrote scrypt hashes with N=2^14, r=8, p=1 (16 MiB). A stored hash asking for
# far more memory or time than that is damaged, not a PIN to spend a minute on.
LEGACY_SCRYPT_MAX_WORK_BYTES = 64 * 1024 * 1024
SCRYPT_BLOCK_BYTES = 128
# The hub wrote 64-byte scrypt digests; a much shorter one would be a weak check.
LEGACY_SCRYPT_DIGEST_BYTES = range(16, 65)


class PinResetRequired(AllianceError):
    """A stored PIN hash the hub cannot check; customer service must set a new PIN."""

    code = "pin_reset_required"
    http_status = 403
    title = "PIN reset required"


@dataclass(frozen=True, slots=True)
class PinKey:
    """One HMAC key of the ring; the secret never appears in its repr."""

    key_id: str
    secret: bytes = field(repr=False)


@dataclass(frozen=True)
class PinKeyRing:
    """The keys stored PIN hashes may be under, and the active one new hashes use."""

    keys: Sequence[PinKey]
    active_key_id: str
    _secrets_by_key_id: dict[str, bytes] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        keys = tuple(self.keys)
        object.__setattr__(self, "keys", keys)
        if not keys:
            raise ConfigurationError("PIN key ring: it needs at least one key")
        if len(keys) > MAX_KEYS:
            raise ConfigurationError(f"PIN key ring: it holds more than {MAX_KEYS} keys")
        secrets_by_key_id: dict[str, bytes] = {}
        for key in keys:
            _check_key_id(key.key_id)
            if key.key_id in secrets_by_key_id:
                raise ConfigurationError(f"PIN key ring: key id {key.key_id} appears more than once")
            if not isinstance(key.secret, bytes) or len(key.secret) != SECRET_LENGTH_BYTES:
                raise ConfigurationError(
                    f"PIN key ring: the secret of key {key.key_id} must be exactly {SECRET_LENGTH_BYTES} bytes")
            secrets_by_key_id[key.key_id] = key.secret
        if self.active_key_id not in secrets_by_key_id:
            raise ConfigurationError("PIN key ring: the active key id is not one of the keys in the ring")
        object.__setattr__(self, "_secrets_by_key_id", secrets_by_key_id)

    @classmethod
    def from_config(cls, text: str) -> PinKeyRing:
        """Parse ``active=<id>;<id>=<secret>;...``, each secret 32 random bytes in base64url.

        Segments are separated by ``;`` and may come in any order; whitespace around
        segments, names and values is ignored, as is a trailing ``;``. ``active`` names
        the key new hashes use; every other name is a key id (1 to 32 of
        ``A-Z a-z 0-9 _ -``), padding of its secret optional. Errors name the segment or
        key id at fault, never the secret material.
        """
        if not isinstance(text, str) or not text.strip():
            raise ConfigurationError("PIN key ring: the configuration is empty")
        active_key_id: str | None = None
        keys: list[PinKey] = []
        segments = [segment.strip() for segment in text.strip().split(";")]
        for position, segment in enumerate((segment for segment in segments if segment), start=1):
            name, equals, value = (part.strip() for part in segment.partition("="))
            if not equals:
                raise ConfigurationError(f"PIN key ring: segment {position} has no '='")
            if name == "active":
                if active_key_id is not None:
                    raise ConfigurationError("PIN key ring: 'active' appears more than once")
                if not KEY_ID_PATTERN.fullmatch(value):
                    raise ConfigurationError("PIN key ring: 'active' is not a valid key id")
                active_key_id = value
            elif KEY_ID_PATTERN.fullmatch(name):
                secret = decode_base64url(value)
                if secret is None:
                    raise ConfigurationError(f"PIN key ring: the secret of key {name} is not valid base64url")
                keys.append(PinKey(name, secret))
            else:
                raise ConfigurationError(f"PIN key ring: segment {position} does not start with a valid key id")
        if active_key_id is None:
            raise ConfigurationError("PIN key ring: 'active' is missing")
        return cls(keys, active_key_id)

    def to_config(self) -> str:
        """The configuration text ``from_config`` reads back into this ring."""
        key_segments = [f"{key.key_id}={encode_base64url(key.secret)}" for key in self.keys]
        return ";".join([f"active={self.active_key_id}", *key_segments])

    def hash(self, pin: str) -> str:
        """A fresh ``hmac-sha256$<key id>$<salt>$<digest>`` of ``pin`` under the active key."""
        salt = secrets.token_bytes(SALT_LENGTH_BYTES)
        digest = _keyed_digest(self._secrets_by_key_id[self.active_key_id], salt, pin)
        return f"{KEYED_SCHEME}${self.active_key_id}${encode_base64url(salt)}${encode_base64url(digest)}"

    def verify(self, pin: str, stored: str) -> bool:
        """Whether ``stored`` was made from ``pin``, compared in constant time.

        Raises ``PinResetRequired`` when ``stored`` names a key the ring lacks, or is not
        a hash of this hub: no PIN could be checked against it.
        """
        scheme = stored.partition("$")[0]
        if scheme == KEYED_SCHEME:
            key_id, salt, digest = _parse_keyed(stored)
            secret = self._secrets_by_key_id.get(key_id)
            if secret is None:
                raise PinResetRequired(
                    "this card's PIN was set under a PIN key the hub no longer holds, so it cannot be checked; "
                    "customer service must set a new PIN (this attempt was not counted)")
            return hmac.compare_digest(_keyed_digest(secret, salt, pin), digest)
        if scheme == LEGACY_SCHEME:
            return _legacy_scrypt_matches(pin, stored)
        raise _unreadable()

    def needs_rehash(self, stored: str) -> bool:
        """Whether ``stored`` is under anything but the active key (an older key, or scrypt)."""
        return not stored.startswith(f"{KEYED_SCHEME}${self.active_key_id}$")


def generated_key_id(secret: bytes) -> str:
    """``pin-`` and 12 hex digits of a hash of ``secret``: names the key, reveals nothing of it."""
    digest = hashlib.sha256(GENERATED_KEY_ID_CONTEXT + secret).hexdigest()
    return GENERATED_KEY_ID_PREFIX + digest[:GENERATED_KEY_ID_HEX_DIGITS]


def generate_pin_key_ring_config(key_id: str | None = None) -> str:
    """A fresh configuration of one random 256-bit key, active; its id is derived from it unless given."""
    key = _new_key(key_id)
    return PinKeyRing([key], key.key_id).to_config()


def with_new_active_pin_key(config_text: str, new_key_id: str | None = None) -> str:
    """``config_text`` with a new random key added and made active; its id is derived from it unless given.

    The old keys stay, so PINs hashed under them keep verifying (and are rehashed under
    the new key when next used) until the old key is dropped from the ring.
    """
    ring = PinKeyRing.from_config(config_text)
    new_key = _new_key(new_key_id)
    if any(key.key_id == new_key.key_id for key in ring.keys):
        raise ConfigurationError(f"PIN key ring: key id {new_key.key_id} is already in the ring")
    return PinKeyRing([*ring.keys, new_key], new_key.key_id).to_config()


def _new_key(key_id: str | None) -> PinKey:
    secret = secrets.token_bytes(SECRET_LENGTH_BYTES)
    return PinKey(key_id or generated_key_id(secret), secret)


def _keyed_digest(secret: bytes, salt: bytes, pin: str) -> bytes:
    return hmac.new(secret, salt + pin.encode("utf-8"), hashlib.sha256).digest()


def _parse_keyed(stored: str) -> tuple[str, bytes, bytes]:
    """The key id, salt and digest of a keyed hash, or ``PinResetRequired``."""
    parts = stored.split("$")
    if len(parts) != 4 or not KEY_ID_PATTERN.fullmatch(parts[1]) or "=" in parts[2] + parts[3]:
        raise _unreadable()
    salt, digest = decode_base64url(parts[2]), decode_base64url(parts[3])
    if salt is None or len(salt) != SALT_LENGTH_BYTES or digest is None or len(digest) != DIGEST_LENGTH_BYTES:
        raise _unreadable()
    return parts[1], salt, digest


def _legacy_scrypt_matches(pin: str, stored: str) -> bool:
    """Check a ``scrypt$N$r$p$<salt>$<digest>`` hash from before keyed hashing."""
    parts = stored.split("$")
    if len(parts) != 6 or not all(part.isascii() and part.isdigit() for part in parts[1:4]):
        raise _unreadable()
    n, r, p = (int(part) for part in parts[1:4])
    if min(n, r, p) < 1 or SCRYPT_BLOCK_BYTES * n * r * p > LEGACY_SCRYPT_MAX_WORK_BYTES:
        raise _unreadable()
    try:
        salt, digest = b64decode(parts[4], validate=True), b64decode(parts[5], validate=True)
    except ValueError:
        # binascii.Error, raised for bad base64, is a ValueError.
        raise _unreadable() from None
    if len(digest) not in LEGACY_SCRYPT_DIGEST_BYTES:
        raise _unreadable()
    try:
        candidate = hashlib.scrypt(pin.encode("utf-8"), salt=salt, n=n, r=r, p=p, dklen=len(digest),
                                   maxmem=2 * LEGACY_SCRYPT_MAX_WORK_BYTES)
    except ValueError:
        # N is not a power of two.
        raise _unreadable() from None
    return hmac.compare_digest(candidate, digest)


def _unreadable() -> PinResetRequired:
    return PinResetRequired("this card's stored PIN is not in a form the hub can check; customer service must "
                            "set a new PIN (this attempt was not counted)")


def _check_key_id(key_id: str) -> None:
    if not isinstance(key_id, str) or not KEY_ID_PATTERN.fullmatch(key_id):
        raise ConfigurationError("PIN key ring: a key id must be 1 to 32 of A-Z, a-z, 0-9, '_' and '-'")
    if key_id.lower() in RESERVED_CONFIG_NAMES:
        raise ConfigurationError(f"PIN key ring: {key_id} is a reserved name in the configuration, not a key id")
