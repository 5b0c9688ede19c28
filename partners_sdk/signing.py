"""RFC 9421 HTTP Message Signatures for partner requests, exactly as the hub verifies them.

One signature labelled ``pos``, ``alg="ed25519"``, covering ``"@method" "@path"
"@query"`` and, for a request with a body, ``"content-type" "content-digest"
"idempotency-key"``; parameters ``created``, ``expires`` (300 s later), a fresh
``nonce`` of 192 random bits and ``keyid``. The body is covered by an RFC 9530
``Content-Digest: sha-256=:…:``. The signature base is built by the
``http-message-signatures`` library (``prepare``) and signed with the library's Ed25519
algorithm; the two headers are then written as RFC 8941 dictionaries of the one label.
The same path reproduces the RFC's own test vector byte for byte, which the SDK's tests
check. (The library's ``apply`` would build and compare the whole base a second time to
guard against a message changed while an external signer works; here nothing can change
it between the two calls, and skipping it halves the cost of signing.)
"""

from __future__ import annotations

import base64
import copy
import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Callable, ClassVar, Mapping, Protocol, Sequence

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from http_message_signatures import HTTPMessageSigner, algorithms
from http_message_signatures.exceptions import HTTPMessageSignaturesException

if TYPE_CHECKING:
    from http_sf.compat import Item


class _URLParts(Protocol):
    """What the fast path reads of a parsed URL."""

    @property
    def path(self) -> str: ...

    @property
    def query(self) -> str | None: ...


parse_url: Callable[[str], _URLParts] | None
try:  # The library's strict URL reading, so both paths agree on what a URL's path and query are.
    from http_message_signatures._url import parse_url
except ImportError:  # pragma: no cover - another library version: every request takes the general path
    parse_url = None

SIGNATURE_LABEL = "pos"
BASE_COMPONENTS = ("@method", "@path", "@query")
BODY_COMPONENTS = ("content-type", "content-digest", "idempotency-key")
# The hub accepts at most 300 s between created and expires. Using all of it lets a till
# whose clock is up to a few minutes slow still be heard; replays are stopped by the nonce.
SIGNATURE_LIFETIME_S = 300
# The hub wants at least 128 random bits; 24 bytes give 192, in 32 URL-safe characters.
NONCE_BYTES = 24
JSON_CONTENT_TYPE = "application/json"

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    """The wall clock, timezone-aware, as the default signing clock."""
    return datetime.now(timezone.utc)


def new_nonce() -> str:
    """A fresh random nonce for one signature."""
    return secrets.token_urlsafe(NONCE_BYTES)


@dataclass(frozen=True)
class SignedMessage:
    """The headers to send (the given ones plus Content-Digest and the signature) and what was signed."""

    headers: dict[str, str]
    signature_base: bytes
    signature_input: str


class _Signer(HTTPMessageSigner):
    """The library's signer, parsing each list of covered component ids once per process.

    Parsing the same few component lists again for every request was a quarter of the
    cost of signing. The library mutates the nodes it is given (it may add parameters
    or a content-digest node), so every call gets fresh copies of the parsed ones.
    """

    _parsed: ClassVar[dict[tuple[str, ...], list[Item]]] = {}
    _MAX_CACHED_LISTS = 32

    def _parse_covered_component_ids(self, covered_component_ids: Sequence[str]) -> list[Item]:
        key = tuple(covered_component_ids)
        parsed = self._parsed.get(key)
        if parsed is None:
            # The base class named rather than super(): mypy's untyped_calls_exclude (setup.cfg)
            # does not see through super() to the library's unannotated method.
            parsed = HTTPMessageSigner._parse_covered_component_ids(self, covered_component_ids)
            if len(self._parsed) < self._MAX_CACHED_LISTS:
                self._parsed[key] = parsed
        return [_copied(node) for node in parsed]


def _copied(node: Item) -> Item:
    duplicate = copy.copy(node)
    duplicate.params = type(node.params)(node.params)
    return duplicate


class _Message:
    """The request shape ``http-message-signatures`` reads and writes headers through."""

    def __init__(self, method: str, url: str, headers: dict[str, str]) -> None:
        self.method = method
        self.url = url
        self.headers = headers


def sign_message(
    *,
    method: str,
    url: str,
    headers: Mapping[str, str],
    key_id: str,
    private_key: Ed25519PrivateKey,
    label: str,
    covered_components: Sequence[str],
    created: datetime,
    expires: datetime | None,
    nonce: str | None,
    include_alg: bool,
    digest_body: bytes | None,
) -> SignedMessage:
    """Sign one request with Ed25519; ``digest_body`` adds and covers a Content-Digest of it."""
    message = _Message(method.upper(), url, dict(headers))
    signer = _Signer(signature_algorithm=algorithms.ED25519)
    prepared = signer.prepare(
        message, key_id=key_id, created=created, expires=expires, nonce=nonce, label=label,
        include_alg=include_alg, covered_component_ids=list(covered_components), body=digest_body,
    )
    signature = algorithms.ED25519(private_key=private_key).sign(prepared.signature_base)
    # A label is an RFC 8941 key and the prepared parameters an inner list, so each header
    # is a one-member dictionary: `label=(...);params` and `label=:base64:`.
    message.headers["Signature-Input"] = f"{prepared.label}={prepared.signature_params}"
    message.headers["Signature"] = f"{prepared.label}=:{base64.b64encode(signature).decode('ascii')}:"
    return SignedMessage(headers=dict(message.headers), signature_base=prepared.signature_base,
                         signature_input=prepared.signature_params)


class RequestSigner:
    """Signs partner requests with one terminal key; every call gets a new nonce and created time."""

    def __init__(self, key_id: str, private_key: Ed25519PrivateKey, *, clock: Clock = utc_now,
                 nonce_factory: Callable[[], str] = new_nonce) -> None:
        if not isinstance(private_key, Ed25519PrivateKey):
            raise TypeError("private_key must be an Ed25519PrivateKey; see partners_sdk.load_private_key")
        if not key_id:
            raise ValueError("key_id must not be empty")
        self.key_id = key_id
        self._private_key = private_key
        self._clock = clock
        self._nonce_factory = nonce_factory

    def sign(self, method: str, url: str, *, body: bytes | None = None,
             idempotency_key: str | None = None, content_type: str = JSON_CONTENT_TYPE) -> SignedMessage:
        """Sign a GET (no body) or a write (body, content type and idempotency key) for the hub."""
        created = self._clock()
        if created.tzinfo is None:
            raise ValueError("the signing clock must return timezone-aware datetimes")
        created = created.replace(microsecond=0)
        headers: dict[str, str] = {}
        components = list(BASE_COMPONENTS)
        if body is not None:
            if not idempotency_key:
                raise ValueError("a request with a body needs an idempotency key")
            headers = {"Content-Type": content_type, "Idempotency-Key": idempotency_key}
            components += BODY_COMPONENTS
        nonce = self._nonce_factory()
        fast = _sign_fixed_components(
            method=method, url=url, headers=headers, key_id=self.key_id, private_key=self._private_key,
            created=created, nonce=nonce, body=body)
        if fast is not None:
            return fast
        return sign_message(
            method=method, url=url, headers=headers, key_id=self.key_id, private_key=self._private_key,
            label=SIGNATURE_LABEL, covered_components=components, created=created,
            expires=created + timedelta(seconds=SIGNATURE_LIFETIME_S), nonce=nonce,
            include_alg=True, digest_body=body,
        )


# Printable ASCII without a backslash or quote needs no escaping in an RFC 8941 string or
# in a field value; anything else goes the library's general way.
_PLAIN_TEXT = re.compile(r"^[\x20-\x21\x23-\x5b\x5d-\x7e]*\Z")


def _sign_fixed_components(*, method: str, url: str, headers: Mapping[str, str], key_id: str,
                           private_key: Ed25519PrivateKey, created: datetime, nonce: str,
                           body: bytes | None) -> SignedMessage | None:
    """The SDK's own component set signed directly, or None when the general path must do it.

    RFC 9421 section 2.5 builds the signature base line by line from the covered
    components; for the fixed set the SDK signs ("@method" "@path" "@query" and, with a
    body, "content-type" "content-digest" "idempotency-key") that is a few string joins,
    where the general library serialises every piece through RFC 8941 objects, most of
    the cost of a signature. ``tests/unit/test_sdk_signing.py`` checks that both paths
    give the same bytes for the same request, headers and base alike.
    """
    if parse_url is None:
        return None
    try:
        parts = parse_url(url)
    except HTTPMessageSignaturesException:
        return None  # the general path refuses it with the library's own message
    path, query = parts.path or "/", parts.query or ""
    texts = [method, path, query, key_id, nonce, *headers.values()]
    if not all(_PLAIN_TEXT.match(text) for text in texts) or not method.isalpha():
        return None
    lines = [f'"@method": {method.upper()}', f'"@path": {path}', f'"@query": ?{query}']
    components = '"@method" "@path" "@query"'
    signed_headers = dict(headers)
    if body is not None:
        digest = f"sha-256=:{base64.b64encode(hashlib.sha256(body).digest()).decode('ascii')}:"
        signed_headers["Content-Digest"] = digest
        lines += [f'"content-type": {headers["Content-Type"].strip()}', f'"content-digest": {digest}',
                  f'"idempotency-key": {headers["Idempotency-Key"].strip()}']
        components += ' "content-type" "content-digest" "idempotency-key"'
    created_s = int(created.timestamp())
    # The parameters in the order the general path writes them, so both give the same bytes.
    params = (f'({components});created={created_s};keyid="{key_id}";alg="ed25519";'
              f'expires={created_s + SIGNATURE_LIFETIME_S};nonce="{nonce}"')
    lines.append(f'"@signature-params": {params}')
    base = "\n".join(lines).encode("ascii")
    signature = private_key.sign(base)
    signed_headers["Signature-Input"] = f"{SIGNATURE_LABEL}={params}"
    signed_headers["Signature"] = f"{SIGNATURE_LABEL}=:{base64.b64encode(signature).decode('ascii')}:"
    return SignedMessage(headers=signed_headers, signature_base=base, signature_input=params)
