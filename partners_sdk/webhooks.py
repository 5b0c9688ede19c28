"""Receiving the hub's webhooks: verify a delivery in one call, and process each event once.

Every delivery is a POST signed by the hub with RFC 9421 HTTP Message Signatures: one
signature labelled ``hub``, ``alg="ed25519"``, ``tag="alliance-webhook"``, a ``keyid``
naming one of the hub's published webhook keys (``AllianceClient.webhook_keys()``),
``created``, ``expires`` and a ``nonce``, covering ``"@method" "@target-uri"
"content-type" "content-digest" "alliance-event-id"``; the body is covered by an RFC 9530
``Content-Digest``. ``verify_webhook`` checks all of it against the public keys you hold
and returns the event, or raises ``WebhookVerificationError`` saying what failed.

Delivery is at least once: the same event may arrive again (a retry after a timeout, a
redelivery). ``WebhookDeduplicator`` remembers the event ids already processed, so each
event is acted on once. A replayed delivery is either older than the tolerance (refused
by ``verify_webhook``) or carries an event id already seen.

    keys = client.webhook_keys()                      # {key_id: public key}, fetched once and cached
    event = verify_webhook("POST", url, headers, body, keys)
    if not seen.seen_before(event.id):
        handle(event)
"""

from __future__ import annotations

import hashlib
import hmac
import json
import sqlite3
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

import http_sf
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from http_message_signatures import HTTPMessageSignaturesException, HTTPMessageVerifier, HTTPSignatureKeyResolver
from http_message_signatures import algorithms as signature_algorithms

from partners_sdk.errors import AllianceError

SIGNATURE_LABEL = "hub"
SIGNATURE_TAG = "alliance-webhook"
SIGNATURE_ALGORITHM = "ed25519"
COVERED_COMPONENTS = ("@method", "@target-uri", "content-type", "content-digest", "alliance-event-id")
EVENT_ID_HEADER = "alliance-event-id"
DEFAULT_TOLERANCE_S = 300
# A receiver's clock may be this far behind the hub's before a fresh delivery looks like it comes from the future.
MAX_CLOCK_AHEAD_S = 60
# Retries go on for 3 days; remembering ids a little longer catches every redelivery of the schedule.
DEFAULT_RETENTION = timedelta(days=8)

PublicKeys = Mapping[str, "Ed25519PublicKey | str | bytes"]


class WebhookVerificationError(AllianceError):
    """A delivery that is not an authentic, fresh event of the hub; ``code`` says which check failed.

    Codes: ``signature_missing``, ``signature_malformed``, ``signature_components``,
    ``signature_algorithm``, ``key_unknown``, ``signature_stale``, ``signature_from_future``,
    ``content_digest_mismatch``, ``event_id_mismatch``, ``body_malformed``, ``signature_invalid``.
    Answer such a request with 400 (or 401) and do not process it.
    """

    default_code = "webhook_rejected"

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail, code=code)


@dataclass(frozen=True, slots=True)
class WebhookEvent:
    """A verified event: its stable id, its type, when it happened, and its data."""

    id: str
    type: str
    created: datetime
    data: dict[str, Any]


def verify_webhook(method: str, url: str, headers: Mapping[str, str] | Iterable[tuple[str, str]], body: bytes,
                   public_keys: PublicKeys, *, now: datetime | None = None,
                   tolerance_s: int = DEFAULT_TOLERANCE_S) -> WebhookEvent:
    """Verify one delivery as received (``url`` as the hub sent it: scheme, host, path and query) and parse it."""
    lines = list(headers.items()) if isinstance(headers, Mapping) else list(headers)
    moment = now or datetime.now(timezone.utc)
    if moment.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    components, parameters = _the_hub_signature(lines)
    missing = [name for name in COVERED_COMPONENTS if name not in components]
    if missing:
        raise WebhookVerificationError("signature_components", f"the signature must cover {', '.join(missing)}")
    if parameters.get("alg") != SIGNATURE_ALGORITHM:
        raise WebhookVerificationError("signature_algorithm", f'the signature must carry alg="{SIGNATURE_ALGORITHM}"')
    key_id = parameters.get("keyid")
    if not isinstance(key_id, str) or not key_id:
        raise WebhookVerificationError("signature_malformed", "the signature carries no keyid")
    if key_id not in public_keys:
        raise WebhookVerificationError("key_unknown", f"no webhook key {key_id!r} is known here; fetch the hub's "
                                                      "published keys (AllianceClient.webhook_keys())")
    public_key = _public_key(public_keys[key_id])
    created = _timestamp(parameters, "created")
    expires = _timestamp(parameters, "expires")
    if moment - created > timedelta(seconds=tolerance_s) or expires <= moment:
        raise WebhookVerificationError("signature_stale", f"the delivery was signed at {created.isoformat()}, more "
                                                          f"than {tolerance_s} s ago or past its expiry: a replay?")
    if created - moment > timedelta(seconds=MAX_CLOCK_AHEAD_S):
        raise WebhookVerificationError("signature_from_future", f"the delivery was signed at {created.isoformat()}, "
                                                                "in the future; check this machine's clock")
    _require_matching_digest(lines, body)
    _require_valid_signature(method, url, lines, body, key_id, public_key)
    return _event(body, _header(lines, EVENT_ID_HEADER))


def _header(lines: list[tuple[str, str]], name: str) -> str | None:
    values = [value for field, value in lines if field.lower() == name]
    return ", ".join(values) if values else None


def _dictionary(lines: list[tuple[str, str]], name: str) -> dict[str, Any]:
    value = _header(lines, name)
    if value is None:
        raise WebhookVerificationError("signature_missing", f"the delivery has no {name} header: not from the hub")
    try:
        parsed = http_sf.parse(value.encode("latin-1"), tltype="dictionary")
    except Exception:
        raise WebhookVerificationError("signature_malformed", f"{name} is not a structured-field dictionary") from None
    if not isinstance(parsed, dict):
        raise WebhookVerificationError("signature_malformed", f"{name} is not a structured-field dictionary")
    return parsed


def _the_hub_signature(lines: list[tuple[str, str]]) -> tuple[list[str], Mapping[str, Any]]:
    inputs = _dictionary(lines, "signature-input")
    signatures = _dictionary(lines, "signature")
    if SIGNATURE_LABEL not in inputs or SIGNATURE_LABEL not in signatures:
        raise WebhookVerificationError("signature_missing", f"no signature labelled {SIGNATURE_LABEL!r}")
    member = inputs[SIGNATURE_LABEL]
    members, parameters = member if isinstance(member, tuple) else (None, {})
    if not isinstance(members, list) or parameters.get("tag") != SIGNATURE_TAG:
        raise WebhookVerificationError("signature_malformed", f"the {SIGNATURE_LABEL!r} signature is not a hub "
                                                              f"webhook signature (tag {SIGNATURE_TAG!r})")
    components = [item[0] for item in members if isinstance(item, tuple) and isinstance(item[0], str)]
    if len(components) != len(members):
        raise WebhookVerificationError("signature_malformed", "covered components must be strings")
    return components, parameters


def _timestamp(parameters: Mapping[str, Any], name: str) -> datetime:
    value = parameters.get(name)
    if type(value) is not int:
        raise WebhookVerificationError("signature_malformed", f"the signature must carry {name} as an integer")
    try:
        return datetime.fromtimestamp(value, timezone.utc)
    except (OverflowError, OSError, ValueError):
        raise WebhookVerificationError("signature_malformed", f"{name} is not a valid time") from None


def _require_matching_digest(lines: list[tuple[str, str]], body: bytes) -> None:
    digests = _dictionary(lines, "content-digest")
    member = digests.get("sha-256")
    value = member[0] if isinstance(member, tuple) else None
    if not isinstance(value, bytes):
        raise WebhookVerificationError("content_digest_mismatch", "Content-Digest has no sha-256 digest")
    if not hmac.compare_digest(value, hashlib.sha256(body).digest()):
        raise WebhookVerificationError("content_digest_mismatch", "the body is not the one the hub signed")


def _public_key(key: Ed25519PublicKey | str | bytes) -> Ed25519PublicKey:
    if isinstance(key, Ed25519PublicKey):
        return key
    text = key.encode("ascii") if isinstance(key, str) else key
    try:
        loaded = serialization.load_pem_public_key(text)
    except (ValueError, TypeError):
        raise ValueError("a webhook public key must be an Ed25519PublicKey or its PEM text") from None
    if not isinstance(loaded, Ed25519PublicKey):
        raise ValueError("a webhook public key must be an Ed25519 key")
    return loaded


class _Message:
    def __init__(self, method: str, url: str, lines: list[tuple[str, str]]) -> None:
        self.method = method.upper()
        self.url = url
        self.headers = _HeaderLines(lines)


class _HeaderLines:
    """Header field lines in order, repeated names kept, read-only (as the library reads them)."""

    def __init__(self, lines: list[tuple[str, str]]) -> None:
        self._lines = lines

    def items(self) -> list[tuple[str, str]]:
        return list(self._lines)

    def __iter__(self) -> Iterator[str]:
        return iter(dict.fromkeys(name for name, _ in self._lines))

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and any(field.lower() == name.lower() for field, _ in self._lines)


class _Verifier(HTTPMessageVerifier):
    """The library's verifier; created and expires were checked against the caller's clock already."""

    def validate_created_and_expires(self, sig_input: object, max_age: object = None) -> None:
        return None


class _OneKey(HTTPSignatureKeyResolver):
    def __init__(self, key_id: str, public_key: Ed25519PublicKey) -> None:
        self._key_id = key_id
        self._public_key = public_key

    def resolve_public_key(self, key_id: str) -> Ed25519PublicKey | None:
        return self._public_key if key_id == self._key_id else None


def _require_valid_signature(method: str, url: str, lines: list[tuple[str, str]], body: bytes, key_id: str,
                             public_key: Ed25519PublicKey) -> None:
    verifier = _Verifier(signature_algorithm=signature_algorithms.ED25519, key_resolver=_OneKey(key_id, public_key))
    try:
        verifier.verify(_Message(method, url, lines), max_age=None, expect_tag=SIGNATURE_TAG,
                        expect_label=SIGNATURE_LABEL, require_components=COVERED_COMPONENTS, body=body)
    except HTTPMessageSignaturesException:
        raise WebhookVerificationError("signature_invalid", f"the signature does not verify with key {key_id!r}: "
                                                            "forged, or the method, URL or headers changed") from None


def _event(body: bytes, header_event_id: str | None) -> WebhookEvent:
    try:
        document = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise WebhookVerificationError("body_malformed", "the body is not JSON") from None
    if not isinstance(document, dict) or not isinstance(document.get("data"), dict) or not all(
            isinstance(document.get(name), str) for name in ("id", "type", "created")):
        raise WebhookVerificationError("body_malformed", "the body is not an event (id, type, created, data)")
    if header_event_id != document["id"]:
        raise WebhookVerificationError("event_id_mismatch", f"Alliance-Event-Id {header_event_id!r} is not the "
                                                            f"body's event id {document['id']!r}")
    try:
        created = datetime.fromisoformat(document["created"].replace("Z", "+00:00"))
    except ValueError:
        raise WebhookVerificationError("body_malformed", "the event's created is not an ISO 8601 time") from None
    return WebhookEvent(id=document["id"], type=document["type"], created=created, data=document["data"])


def load_webhook_keys(document: Mapping[str, Any]) -> dict[str, Ed25519PublicKey]:
    """The keys of a ``GET /partner/v1/webhook-keys`` answer, by key id."""
    keys: dict[str, Ed25519PublicKey] = {}
    for item in document.get("keys", []):
        if not isinstance(item, dict) or not isinstance(item.get("key_id"), str) or not isinstance(
                item.get("public_key"), str):
            raise ValueError("a webhook key has a key_id and a public_key (PEM)")
        keys[item["key_id"]] = _public_key(item["public_key"])
    return keys


class WebhookDeduplicator:
    """Event ids already processed, kept for ``retention``; in a SQLite file (shared by a receiver's processes) or
    in memory (``path=None``).

    ``seen_before(event_id)`` records the id and says whether it was recorded before, in one
    step, so two deliveries of one event racing each other are told apart. If handling an
    event fails after that, call ``forget(event_id)`` so the hub's next retry is processed.
    """

    def __init__(self, path: str | Path | None = None, *, retention: timedelta = DEFAULT_RETENTION) -> None:
        self.retention = retention
        self._lock = threading.Lock()
        self._connection = sqlite3.connect(":memory:" if path is None else str(path), timeout=30,
                                           isolation_level=None, check_same_thread=False)
        self._connection.execute("PRAGMA journal_mode=WAL" if path is not None else "PRAGMA journal_mode=MEMORY")
        self._connection.execute("CREATE TABLE IF NOT EXISTS seen_events (event_id TEXT PRIMARY KEY, "
                                 "seen_at REAL NOT NULL)")
        self._last_pruned = 0.0

    def seen_before(self, event_id: str, *, now: float | None = None) -> bool:
        """True if ``event_id`` was seen within the retention (skip it); else record it and return False."""
        if not isinstance(event_id, str) or not event_id:
            raise ValueError("event_id must be a non-empty string")
        moment = time.time() if now is None else now
        with self._lock:
            self._prune(moment)
            inserted = self._connection.execute(
                "INSERT INTO seen_events (event_id, seen_at) VALUES (?, ?) ON CONFLICT (event_id) DO NOTHING",
                (event_id, moment)).rowcount
        return inserted == 0

    def forget(self, event_id: str) -> None:
        """Forget an event id (its handling failed), so its next delivery is processed."""
        with self._lock:
            self._connection.execute("DELETE FROM seen_events WHERE event_id = ?", (event_id,))

    def close(self) -> None:
        with self._lock:
            self._connection.close()

    def __enter__(self) -> "WebhookDeduplicator":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _prune(self, moment: float) -> None:
        # At most once a minute: forgetting old ids is housekeeping, not part of each check.
        if moment - self._last_pruned < 60:
            return
        self._connection.execute("DELETE FROM seen_events WHERE seen_at < ?",
                                 (moment - self.retention.total_seconds(),))
        self._last_pruned = moment

