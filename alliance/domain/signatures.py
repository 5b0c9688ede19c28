"""Verifying RFC 9421 HTTP Message Signatures on partner requests, fail-closed.

The checks run in the order docs/design.md ("Verification order") fixes, and the first
failure ends the request with a 401 naming it: exactly one signature labelled ``pos``
covering every required component; ``alg`` present and ``ed25519`` (the request never
chooses the algorithm); the key known, active, unexpired; ``created`` at most 300 s old
and 60 s ahead, ``expires`` at most 300 s after it and not passed; a well-formed nonce
never seen before; the RFC 9530 ``Content-Digest`` recomputed over the raw body; and
only then the signature itself, whose base the ``http-message-signatures`` library
builds. The body is parsed only after all of this. Recording the nonce is left to the
caller, after success, so unauthenticated requests never write to the database.

The shape the SDK sends (``_canonical``: its one label, component list and parameter
order, plain values, one field line each) is read and its base built without the
structured-field parser or the library, with the same checks in the same order; any
other request goes the general way. Both ways give the same answer for every request
(``tests/unit/test_signature_fast_path.py`` compares them on signed and altered ones).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Iterable, Iterator, Mapping, Protocol

import http_sf
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from http_message_signatures import (
    HTTPMessageSignaturesException,
    HTTPMessageVerifier,
    HTTPSignatureKeyResolver,
    algorithms,
)

from alliance.domain.errors import AllianceError

SIGNATURE_LABEL = "pos"
SIGNATURE_ALGORITHM = "ed25519"
REQUIRED_COMPONENTS = ("@method", "@path", "@query")
BODY_COMPONENTS = ("content-type", "content-digest", "idempotency-key")
BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
MAX_SIGNATURE_AGE_S = 300
MAX_CLOCK_AHEAD_S = 60
MAX_SIGNATURE_VALIDITY_S = 300
# 128 random bits are 22 characters of base64 or 32 of hex; the ceiling bounds storage.
NONCE_PATTERN = re.compile(r"^[A-Za-z0-9+/=_-]{22,128}\Z")
INACTIVE_PARTNER_STATUSES = frozenset({"pending", "terminated"})
DIGEST_ALGORITHMS = {"sha-256": hashlib.sha256, "sha-512": hashlib.sha512}

# The parameters of a signature (``alg``, ``keyid``, ``created``...) as RFC 8941 parses them.
SignatureParameters = Mapping[str, http_sf.types.BareItemType]


class SignatureRejected(AllianceError):
    """A partner request whose signature, key or digest does not pass; always a 401."""

    http_status = 401
    title = "Signature rejected"

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        # The partner whose registered key the request named, when it named one: whom
        # the refusal concerns (for the operator's figures), never part of the answer.
        self.partner_id: int | None = None


@dataclass(frozen=True, slots=True)
class PartnerKeyRecord:
    """What the verifier needs to know about a registered key."""

    key_id: str
    partner_id: int
    public_key: bytes
    status: str
    expires_at: datetime | None
    terminal_id: int | None
    # Pending and terminated partners have no business on the partner API at all;
    # a suspended one may still look up, void and refund (the services refuse the rest).
    partner_status: str = "active"


@dataclass(frozen=True, slots=True)
class KeyLookup:
    """The key registered under a key id (None if none is) and whether a nonce was already used."""

    key: PartnerKeyRecord | None
    nonce_seen: bool


class KeyStore(Protocol):
    """Where the verifier looks up keys and asks about nonces, both in one question."""

    def look_up(self, key_id: str, nonce: str) -> KeyLookup:
        """The key registered under ``key_id``, and whether a request with ``nonce`` was already accepted."""


@dataclass(frozen=True, slots=True)
class IncomingRequest:
    """The parts of an HTTP request a signature covers, exactly as received."""

    method: str
    url: str
    headers: tuple[tuple[str, str], ...]
    body: bytes

    def header(self, name: str) -> str | None:
        """All field lines of ``name`` joined as RFC 9110 combines them, or None."""
        values = [value for field, value in self.headers if field.lower() == name.lower()]
        return ", ".join(values) if values else None


@dataclass(frozen=True, slots=True)
class VerifiedSignature:
    """A request that passed every check, and who signed it."""

    key: PartnerKeyRecord
    nonce: str
    created: datetime
    expires: datetime


def verify_signed_request(request: IncomingRequest, *, now: datetime, keys: KeyStore) -> VerifiedSignature:
    """Run every check in order; return the signer or raise ``SignatureRejected``."""
    canonical = _canonical(request)
    if canonical is None:
        label, components, parameters = _the_one_signature(request)
        _require_components(request, components)
    else:
        label, parameters = SIGNATURE_LABEL, canonical.parameters
    key_id, created, expires, nonce = _parameters(parameters)
    lookup = keys.look_up(key_id, nonce)
    try:
        key = _usable_key(lookup.key, key_id, now)
        _require_fresh(created, expires, now)
        if lookup.nonce_seen:
            raise SignatureRejected("signature_replayed", "this nonce was already used; sign every request afresh")
        if canonical is None:
            _require_matching_digest(request)
            _require_valid_signature(request, key, label)
        else:
            _require_matching_digest_of(request, canonical)
            _require_valid_canonical_signature(canonical, key)
    except SignatureRejected as refusal:
        if lookup.key is not None:
            refusal.partner_id = lookup.key.partner_id
        raise
    return VerifiedSignature(key=key, nonce=nonce, created=created, expires=expires)


def _sf_dictionary(
    data: bytes, on_duplicate_key: http_sf.OnDuplicateKeyType | None = None
) -> http_sf.DictionaryType:
    """An RFC 8941 dictionary field; ValueError (or the parser's own error) when it is not one."""
    parsed = http_sf.parse(data, tltype="dictionary", on_duplicate_key=on_duplicate_key)
    if not isinstance(parsed, dict):
        raise ValueError("not a structured-field dictionary")
    return parsed


def _parse_dictionary(request: IncomingRequest, name: str) -> http_sf.DictionaryType:
    value = request.header(name)
    if value is None:
        raise SignatureRejected(
            "signature_missing", f"the request has no {name} header; partner requests must be signed"
        )

    def refuse_duplicate(key: str, context: str) -> None:
        raise SignatureRejected("signature_malformed", f"{name} repeats the member {key!r}")

    try:
        parsed = _sf_dictionary(value.encode("latin-1"), on_duplicate_key=refuse_duplicate)
    except SignatureRejected:
        raise
    except Exception:
        raise SignatureRejected("signature_malformed", f"{name} is not a structured-field dictionary") from None
    return parsed


def _the_one_signature(request: IncomingRequest) -> tuple[str, list[str], SignatureParameters]:
    inputs = _parse_dictionary(request, "Signature-Input")
    signatures = _parse_dictionary(request, "Signature")
    if len(inputs) != 1 or len(signatures) != 1:
        raise SignatureRejected("signature_multiple", "exactly one signature is accepted per request")
    (label, signature_input), = inputs.items()
    if label != SIGNATURE_LABEL or set(signatures) != {label}:
        raise SignatureRejected(
            "signature_label", f"the signature must be labelled {SIGNATURE_LABEL!r} in both headers"
        )
    members: http_sf.types.BareItemType | list[http_sf.types.ItemType] | None = None
    parameters: SignatureParameters = {}
    if isinstance(signature_input, tuple):
        members, parameters = signature_input
    signature_member = signatures[label]
    signature_value = signature_member[0] if isinstance(signature_member, tuple) else None
    if not isinstance(members, list) or not isinstance(signature_value, bytes):
        raise SignatureRejected(
            "signature_malformed", "Signature-Input must be an inner list and Signature a byte sequence"
        )
    # Every member an item (a value with its parameters) whose value is a string, or refused.
    components = [member[0] for member in members if isinstance(member, tuple) and isinstance(member[0], str)]
    if len(components) != len(members):
        raise SignatureRejected("signature_malformed", "covered components must be strings")
    return label, components, parameters


def _require_components(request: IncomingRequest, components: list[str]) -> None:
    required = list(REQUIRED_COMPONENTS)
    if request.method.upper() in BODY_METHODS or request.body:
        required += BODY_COMPONENTS
    missing = [name for name in required if name not in components]
    if missing:
        raise SignatureRejected("signature_components", f"the signature must cover {', '.join(missing)}")
    if len(set(components)) != len(components):
        raise SignatureRejected("signature_malformed", "a component is covered twice")


def _parameters(parameters: SignatureParameters) -> tuple[str, datetime, datetime, str]:
    algorithm = parameters.get("alg")
    if algorithm != SIGNATURE_ALGORITHM:
        raise SignatureRejected("signature_algorithm", f'the signature must carry alg="{SIGNATURE_ALGORITHM}"')
    key_id = parameters.get("keyid")
    if not isinstance(key_id, str) or not key_id:
        raise SignatureRejected("signature_parameters", "the signature must carry keyid")
    created = _integer_parameter(parameters, "created")
    expires = _integer_parameter(parameters, "expires")
    nonce = parameters.get("nonce")
    if not isinstance(nonce, str) or not NONCE_PATTERN.match(nonce):
        raise SignatureRejected("signature_nonce", "the signature must carry a nonce of at least 128 random bits")
    try:
        return (key_id, datetime.fromtimestamp(created, timezone.utc), datetime.fromtimestamp(expires, timezone.utc),
                nonce)
    except (OverflowError, OSError, ValueError):
        raise SignatureRejected("signature_parameters", "created or expires is not a valid time") from None


def _integer_parameter(parameters: SignatureParameters, name: str) -> int:
    value = parameters.get(name)
    # type(), not isinstance(): a boolean is not an integer here.
    if type(value) is not int:
        raise SignatureRejected("signature_parameters", f"the signature must carry {name} as an integer")
    return value


def _usable_key(key: PartnerKeyRecord | None, key_id: str, now: datetime) -> PartnerKeyRecord:
    if key is None:
        raise SignatureRejected("key_unknown", f"no key {key_id!r} is registered")
    if key.status != "active":
        raise SignatureRejected("key_revoked", f"key {key_id!r} is {key.status}")
    if key.expires_at is not None and key.expires_at <= now:
        raise SignatureRejected("key_expired", f"key {key_id!r} expired at {key.expires_at.isoformat()}")
    if key.partner_status in INACTIVE_PARTNER_STATUSES:
        raise SignatureRejected("partner_inactive", f"the partner of key {key_id!r} is {key.partner_status}")
    return key


def _require_fresh(created: datetime, expires: datetime, now: datetime) -> None:
    if now - created > timedelta(seconds=MAX_SIGNATURE_AGE_S):
        raise SignatureRejected("signature_expired", f"the signature was created more than {MAX_SIGNATURE_AGE_S} s ago")
    if created - now > timedelta(seconds=MAX_CLOCK_AHEAD_S):
        raise SignatureRejected(
            "signature_from_future",
            f"the signature was created {int((created - now).total_seconds())} s in the future;"
            " check the terminal's clock",
        )
    if not timedelta(0) < expires - created <= timedelta(seconds=MAX_SIGNATURE_VALIDITY_S):
        raise SignatureRejected(
            "signature_lifetime", f"expires must be after created and at most {MAX_SIGNATURE_VALIDITY_S} s later"
        )
    if expires <= now:
        raise SignatureRejected("signature_expired", "the signature has expired")


def _require_matching_digest(request: IncomingRequest) -> None:
    header = request.header("Content-Digest")
    if header is None:
        if request.body or request.method.upper() in BODY_METHODS:
            raise SignatureRejected("content_digest_missing", "a request with a body needs a Content-Digest header")
        return
    try:
        digests = _sf_dictionary(header.encode("latin-1"))
    except Exception:
        raise SignatureRejected(
            "content_digest_malformed", "Content-Digest is not a structured-field dictionary"
        ) from None
    known = {name: value for name, value in digests.items() if name in DIGEST_ALGORITHMS}
    if not known:
        raise SignatureRejected("content_digest_malformed", "Content-Digest needs a sha-256 or sha-512 member")
    for name, member in known.items():
        # A dictionary member is always a value with its parameters.
        value = member[0] if isinstance(member, tuple) else None
        expected = DIGEST_ALGORITHMS[name](request.body).digest()
        if not isinstance(value, bytes) or not hmac.compare_digest(value, expected):
            raise SignatureRejected("content_digest_mismatch", f"the {name} digest does not match the body received")


# The SDK's request shape (partners_sdk/signing.py): one signature labelled ``pos`` over
# its fixed components, its five parameters in its order, integers without leading
# zeros and strings without escapes; a Signature of 64 bytes in padded base64; one
# sha-256 Content-Digest. Whatever does not match exactly goes the general way.
_SF_TEXT = r'[\x20\x21\x23-\x5b\x5d-\x7e]*'
_SF_INTEGER = r'(?:0|[1-9][0-9]{0,14})'
_CANONICAL_INPUT = re.compile(
    r'pos=(?P<params>\("@method" "@path" "@query"(?P<body> "content-type" "content-digest" "idempotency-key")?\)'
    rf';created=(?P<created>{_SF_INTEGER});keyid="(?P<keyid>{_SF_TEXT})";alg="ed25519"'
    rf';expires=(?P<expires>{_SF_INTEGER});nonce="(?P<nonce>{_SF_TEXT})")')
_CANONICAL_SIGNATURE = re.compile(r'pos=:(?P<value>[A-Za-z0-9+/]{86}==):')
_CANONICAL_DIGEST = re.compile(r'sha-256=:(?P<value>[A-Za-z0-9+/]{43}=):')
# A field value that RFC 9421's trimming and RFC 9110's line joining leave as it is.
_PLAIN_FIELD_VALUE = re.compile(r'[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?')
_CANONICAL_FIELDS = ("signature-input", "signature", "content-type", "content-digest", "idempotency-key")

parse_url: Callable[[str], Any] | None
try:  # The library's strict URL reading, so both ways agree on what a URL's path and query are.
    from http_message_signatures._url import parse_url
except ImportError:  # pragma: no cover - another library version: every request goes the general way
    parse_url = None


@dataclass(frozen=True, slots=True)
class _Canonical:
    """A request of the SDK's shape: its parameters, signature, digest and signature base."""

    parameters: dict[str, str | int]
    signature: bytes
    digest: bytes | None
    base: bytes


def _canonical(request: IncomingRequest) -> _Canonical | None:
    """The request read the short way, or None when anything about it is not the SDK's shape."""
    if parse_url is None:
        return None
    fields: dict[str, str] = {}
    for name, value in request.headers:
        lowered = name.lower()
        if lowered in _CANONICAL_FIELDS:
            if lowered in fields:
                return None  # several field lines: the general way joins them
            fields[lowered] = value
    signature_input = _CANONICAL_INPUT.fullmatch(fields.get("signature-input", ""))
    signature = _CANONICAL_SIGNATURE.fullmatch(fields.get("signature", ""))
    method = request.method.upper()
    if signature_input is None or signature is None or not method.isalpha() or not method.isascii():
        return None
    try:
        url = parse_url(request.url)
    except Exception:
        return None
    lines = [f'"@method": {method}', f'"@path": {url.path or "/"}', f'"@query": ?{url.query or ""}']
    digest = None
    if signature_input["body"]:
        for name in BODY_COMPONENTS:
            covered = fields.get(name)
            if covered is None or not _PLAIN_FIELD_VALUE.fullmatch(covered):
                return None
            lines.append(f'"{name}": {covered}')
        digest_value = _CANONICAL_DIGEST.fullmatch(fields["content-digest"])
        if digest_value is None:
            return None
        digest = base64.b64decode(digest_value["value"])
    elif "content-digest" in fields or request.body or method in BODY_METHODS:
        return None  # the general way says what is missing
    lines.append(f'"@signature-params": {signature_input["params"]}')
    return _Canonical(
        parameters={"created": int(signature_input["created"]), "keyid": signature_input["keyid"], "alg": "ed25519",
                    "expires": int(signature_input["expires"]), "nonce": signature_input["nonce"]},
        signature=base64.b64decode(signature["value"]), digest=digest, base="\n".join(lines).encode("ascii"))


def _require_matching_digest_of(request: IncomingRequest, canonical: _Canonical) -> None:
    if canonical.digest is not None and not hmac.compare_digest(canonical.digest,
                                                                hashlib.sha256(request.body).digest()):
        raise SignatureRejected("content_digest_mismatch", "the sha-256 digest does not match the body received")


def _require_valid_canonical_signature(canonical: _Canonical, key: PartnerKeyRecord) -> None:
    public_key = _usable_public_key(key)
    try:
        public_key.verify(canonical.signature, canonical.base)
    except InvalidSignature:
        raise SignatureRejected("signature_invalid", "the signature does not verify with the registered key") from None


class _Message:
    """The shape ``http-message-signatures`` reads a request through."""

    def __init__(self, request: IncomingRequest) -> None:
        self.method = request.method.upper()
        self.url = request.url
        self.headers = _HeaderLines(request.headers)


class _HeaderLines:
    """Header field lines in order, repeated names kept, read-only."""

    def __init__(self, lines: Iterable[tuple[str, str]]) -> None:
        self._lines = list(lines)

    def items(self) -> list[tuple[str, str]]:
        return list(self._lines)

    def __iter__(self) -> Iterator[str]:
        return iter(dict.fromkeys(name for name, _ in self._lines))

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and any(field.lower() == name.lower() for field, _ in self._lines)


class _CryptographicVerifier(HTTPMessageVerifier):
    """The library's verifier, minus its wall-clock checks.

    ``verify_signed_request`` has already checked created and expires against the
    hub's clock and limits; a second check against a different clock would make the
    outcome depend on which one ran.
    """

    def validate_created_and_expires(self, sig_input: object, max_age: object = None) -> None:
        return None


class _SingleKeyResolver(HTTPSignatureKeyResolver):
    def __init__(self, key_id: str, public_key: Ed25519PublicKey) -> None:
        self._key_id = key_id
        self._public_key = public_key

    def resolve_public_key(self, key_id: str) -> Ed25519PublicKey | None:
        return self._public_key if key_id == self._key_id else None


@functools.lru_cache(maxsize=4096)
def _public_key(raw: bytes) -> Ed25519PublicKey:
    """The key object of a raw public key, loaded once per process (it is immutable)."""
    return Ed25519PublicKey.from_public_bytes(raw)


def _usable_public_key(key: PartnerKeyRecord) -> Ed25519PublicKey:
    try:
        return _public_key(key.public_key)
    except ValueError:
        raise SignatureRejected("key_unusable", f"key {key.key_id!r} is not an Ed25519 public key") from None


def _require_valid_signature(request: IncomingRequest, key: PartnerKeyRecord, label: str) -> None:
    check_signature(request, key_id=key.key_id, public_key=_usable_public_key(key))


def check_signature(request: IncomingRequest, *, key_id: str, public_key: Ed25519PublicKey) -> None:
    """Verify the request's one Ed25519 signature cryptographically, and nothing else."""
    verifier = _CryptographicVerifier(
        signature_algorithm=algorithms.ED25519, key_resolver=_SingleKeyResolver(key_id, public_key)
    )
    try:
        verifier.verify(_Message(request), max_age=None)
    except HTTPMessageSignaturesException as error:
        raise SignatureRejected("signature_invalid", "the signature does not verify with the registered key") from error
