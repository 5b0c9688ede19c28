"""The SDK's webhook verification against deliveries signed as the hub signs them: authentic events pass; forged,
altered, stale, future, replayed and unknown-key deliveries are refused with the check that failed; both keys of a
rotation's overlap verify; the deduplicator lets each event through once. And the hub's side of the key:
its id, the keys it publishes, and the production setting."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from alliance.config import Settings
from alliance.domain.ed25519_keys import private_key_pem, public_key_pem
from alliance.domain.errors import ConfigurationError
from alliance.domain.webhook_signing import WebhookSigner, webhook_key_id
from partners_sdk import WebhookDeduplicator, WebhookVerificationError, verify_webhook
from partners_sdk.webhooks import load_webhook_keys

NOW = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
URL = "https://shop.example/hooks/alliance?source=hub"
EVENT_ID = "evt_" + "a" * 26


def body(event_id: str = EVENT_ID, **data: object) -> bytes:
    return json.dumps({"id": event_id, "type": "statement.closed", "created": "2026-11-02T08:59:58Z",
                       "data": data or {"statement_id": 7}}, separators=(",", ":")).encode()


def new_signer(*extra: WebhookSigner) -> WebhookSigner:
    pem = private_key_pem(Ed25519PrivateKey.generate())
    published = "".join(public_key_pem(other.private_key.public_key()) for other in extra)
    return WebhookSigner.from_pem(pem, published)


@pytest.fixture()
def signer() -> WebhookSigner:
    return new_signer()


def keys_of(*signers: WebhookSigner) -> dict[str, object]:
    return {each.key_id: each.private_key.public_key() for each in signers}


def rejected(code: str, headers: dict[str, str], payload: bytes, keys: dict[str, object], *, url: str = URL,
             method: str = "POST", now: datetime = NOW) -> None:
    with pytest.raises(WebhookVerificationError) as caught:
        verify_webhook(method, url, headers, payload, keys, now=now)  # type: ignore[arg-type]
    assert caught.value.code == code, caught.value


def test_an_authentic_delivery_verifies_and_gives_the_event(signer):
    payload = body()
    headers = signer.sign(url=URL, body=payload, event_id=EVENT_ID, now=NOW)
    assert headers["Content-Digest"].startswith("sha-256=:") and headers["Alliance-Event-Id"] == EVENT_ID
    assert headers["Signature-Input"].startswith('hub=("@method" "@target-uri" "content-type" "content-digest" '
                                                 '"alliance-event-id");')
    assert f'keyid="{signer.key_id}"' in headers["Signature-Input"]
    assert 'tag="alliance-webhook"' in headers["Signature-Input"]
    # Header names arrive in any case; the key may be given as PEM text.
    received = {name.lower(): value for name, value in headers.items()}
    event = verify_webhook("POST", URL, received, payload, {signer.key_id: public_key_pem(
        signer.private_key.public_key())}, now=NOW + timedelta(seconds=2))
    assert (event.id, event.type, event.created, event.data) == (
        EVENT_ID, "statement.closed", datetime(2026, 11, 2, 8, 59, 58, tzinfo=UTC), {"statement_id": 7})


def test_forgeries_and_alterations_are_refused_with_the_check_that_failed(signer):
    payload = body()
    headers = signer.sign(url=URL, body=payload, event_id=EVENT_ID, now=NOW)
    keys = keys_of(signer)
    rejected("signature_missing", {"Content-Type": "application/json"}, payload, keys)
    rejected("signature_missing", {name: value for name, value in headers.items() if name != "Signature"},
             payload, keys)
    # Another body under the signed digest; or another body with its own digest, which the signature does not cover.
    altered = body(statement_id=8)
    rejected("content_digest_mismatch", headers, altered, keys)
    rejected("signature_invalid", {**headers, "Content-Digest": redigest(altered)}, altered, keys)
    # Sent elsewhere, or with another method: the signature covers both.
    rejected("signature_invalid", headers, payload, keys, url="https://evil.example/hooks/alliance?source=hub")
    rejected("signature_invalid", headers, payload, keys, method="PUT")
    # A key that is not the hub's signing under the hub's key id.
    forger = new_signer()
    forged = forger.sign(url=URL, body=payload, event_id=EVENT_ID, now=NOW)
    rejected("signature_invalid", {**forged, "Signature-Input": forged["Signature-Input"].replace(
        forger.key_id, signer.key_id)}, payload, keys)
    rejected("key_unknown", forged, payload, keys)
    # The event id header is signed, and must be the body's.
    rejected("signature_invalid", {**headers, "Alliance-Event-Id": "evt_" + "b" * 26}, payload, keys)
    mismatched = signer.sign(url=URL, body=payload, event_id="evt_" + "b" * 26, now=NOW)
    rejected("event_id_mismatch", mismatched, payload, keys)
    rejected("signature_malformed", {**headers, "Signature-Input": "hub=nonsense"}, payload, keys)
    rejected("signature_malformed", {**headers, "Signature-Input": headers["Signature-Input"].replace(
        'tag="alliance-webhook"', 'tag="other"')}, payload, keys)


def redigest(payload: bytes) -> str:
    import base64

    return f"sha-256=:{base64.b64encode(hashlib.sha256(payload).digest()).decode()}:"


def test_stale_and_future_deliveries_are_refused_so_an_old_capture_cannot_be_replayed(signer):
    payload = body()
    headers = signer.sign(url=URL, body=payload, event_id=EVENT_ID, now=NOW)
    keys = keys_of(signer)
    verify_webhook("POST", URL, headers, payload, keys, now=NOW + timedelta(seconds=299))  # type: ignore[arg-type]
    rejected("signature_stale", headers, payload, keys, now=NOW + timedelta(seconds=301))
    rejected("signature_from_future", headers, payload, keys, now=NOW - timedelta(minutes=5))
    with pytest.raises(WebhookVerificationError, match="ago"):
        verify_webhook("POST", URL, headers, payload, keys, now=NOW + timedelta(seconds=100),  # type: ignore[arg-type]
                       tolerance_s=60)


def test_a_replay_within_the_tolerance_is_verified_but_the_deduplicator_lets_it_through_once(signer, tmp_path):
    payload = body()
    headers = signer.sign(url=URL, body=payload, event_id=EVENT_ID, now=NOW)
    seen = WebhookDeduplicator(tmp_path / "seen.sqlite3")
    processed = []
    for _ in range(3):
        event = verify_webhook("POST", URL, headers, payload, keys_of(signer), now=NOW)  # type: ignore[arg-type]
        if not seen.seen_before(event.id):
            processed.append(event.id)
    assert processed == [EVENT_ID]
    # Another process of the same receiver shares the file.
    with WebhookDeduplicator(tmp_path / "seen.sqlite3") as other:
        assert other.seen_before(EVENT_ID) is True
        assert other.seen_before("evt_" + "c" * 26) is False
    # Handling failed: forgetting the id lets the hub's next delivery be processed.
    seen.forget(EVENT_ID)
    assert seen.seen_before(EVENT_ID) is False
    seen.close()


def test_the_deduplicator_forgets_ids_after_its_retention():
    seen = WebhookDeduplicator(retention=timedelta(days=8))
    assert seen.seen_before(EVENT_ID, now=1_000_000.0) is False
    assert seen.seen_before(EVENT_ID, now=1_000_000.0 + 7 * 86_400) is True
    assert seen.seen_before(EVENT_ID, now=1_000_000.0 + 9 * 86_400) is False
    with pytest.raises(ValueError):
        seen.seen_before("")


def test_rotation_overlap_both_published_keys_verify_and_the_retired_one_stops_once_unpublished():
    old = new_signer()
    new = WebhookSigner.from_pem(private_key_pem(Ed25519PrivateKey.generate()),
                                 public_key_pem(old.private_key.public_key()))
    published = new.published_keys()
    assert [(key.key_id, key.active) for key in published] == [(new.key_id, True), (old.key_id, False)]
    keys = load_webhook_keys({"keys": [{"key_id": key.key_id, "public_key": key.public_key_pem}
                                       for key in published]})
    payload = body()
    for each in (old, new):  # a delivery signed before the switch, and one after
        headers = each.sign(url=URL, body=payload, event_id=EVENT_ID, now=NOW)
        assert verify_webhook("POST", URL, headers, payload, keys, now=NOW).id == EVENT_ID
    retired = old.sign(url=URL, body=payload, event_id=EVENT_ID, now=NOW)
    rejected("key_unknown", retired, payload, {new.key_id: keys[new.key_id]})


def test_the_key_id_is_derived_from_the_raw_public_key(signer):
    raw = signer.private_key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert signer.key_id == webhook_key_id(signer.private_key.public_key()) == "whk-" + hashlib.sha256(
        raw).hexdigest()[:16]


def test_production_requires_a_webhook_key_and_published_keys_must_be_public_keys():
    from tests.unit.test_config import production_variables

    with pytest.raises(ConfigurationError, match="ALLIANCE_WEBHOOK_KEY is required in production"):
        Settings.from_env(production_variables(ALLIANCE_WEBHOOK_KEY=""))
    with pytest.raises(ConfigurationError, match="ALLIANCE_WEBHOOK_KEY is not an unencrypted PEM"):
        Settings.from_env({"ALLIANCE_WEBHOOK_KEY": "not a key"})
    with pytest.raises(ConfigurationError, match="ALLIANCE_WEBHOOK_PUBLISHED_KEYS must hold only PEM public keys"):
        Settings.from_env({"ALLIANCE_WEBHOOK_PUBLISHED_KEYS": private_key_pem(Ed25519PrivateKey.generate())})
    two = "".join(public_key_pem(Ed25519PrivateKey.generate().public_key()) for _ in range(2))
    assert Settings.from_env({"ALLIANCE_WEBHOOK_PUBLISHED_KEYS": two}).webhook_published_keys == two
