"""A signed write is verified against the key as last seen, and its claim confirms that key.

``partner_keys.KeyCache`` keeps the keys the database last showed to verify a request, so
a write is verified without a query of its own; the write's idempotency claim confirms
the key in its own statement. These tests change a key (or its partner) in the database
after it was cached and check that the next write gets exactly what it would get had
nothing been cached: the refusal with its code and nothing kept, or the key as it now is.
On PostgreSQL and SQLite.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import update

from alliance.extensions import hub_state
from alliance.models import Partner, PartnerKey
from alliance.services import partner_keys
from alliance.services.partner_keys import KeyCache, revoke_key
from tests.factories import SigningPartner, make_member, make_signing_partner
from tests.http_server import (
    api_traces,
    assert_books_unchanged,
    books,
    purchase_payload,
    wall_clock_partner_time,
)
from tests.partner_client import SignedTestClient
from tests.signing import sign_request

PURCHASES = "/partner/v1/purchases"


@pytest.fixture
def shop(app):  # type: ignore[no-untyped-def]
    """A partner whose key is in the cache after one accepted purchase, and a member to earn."""
    hub = hub_state(app)
    partner = make_signing_partner(hub, now=wall_clock_partner_time())
    member = make_member(hub, now=wall_clock_partner_time())
    client = SignedTestClient(app, partner)
    assert client.post(PURCHASES, purchase_payload("r-warm", member.card_number)).status == 201
    assert _cache(app).get(partner.key_id) is not None
    return hub, partner, member, client


def _cache(app) -> KeyCache:  # type: ignore[no-untyped-def]
    return hub_state(app).extras["partner_key_cache"]  # type: ignore[return-value]


def _change_key(hub, key_id: str, **values) -> None:  # type: ignore[no-untyped-def]
    with hub.unit_of_work() as uow:
        uow.session.execute(update(PartnerKey).where(PartnerKey.key_id == key_id).values(**values))
        uow.commit()


def _set_partner_status(hub, partner_id: int, status: str) -> None:  # type: ignore[no-untyped-def]
    with hub.unit_of_work() as uow:
        uow.session.execute(update(Partner).where(Partner.id == partner_id).values(status=status))
        uow.commit()


def _refused_without_trace(app, hub, client, payload, code: str) -> None:  # type: ignore[no-untyped-def]
    before, traces_before = books(hub), api_traces(hub)
    reply = client.post(PURCHASES, payload)
    assert (reply.status, reply.body["code"]) == (401, code), reply.body
    assert_books_unchanged(hub, before)
    assert api_traces(hub) == traces_before


def test_a_key_revoked_after_it_was_cached_is_refused_at_once_and_leaves_the_cache(app, shop):
    hub, partner, member, client = shop
    with hub.unit_of_work() as uow:
        revoke_key(uow.session, key_id=partner.key_id, now=datetime.now(timezone.utc))
        uow.commit()
    _refused_without_trace(app, hub, client, purchase_payload("r-1", member.card_number), "key_revoked")
    assert _cache(app).get(partner.key_id) is None
    # And the next one is refused from the database, before anything is cached again.
    _refused_without_trace(app, hub, client, purchase_payload("r-2", member.card_number), "key_revoked")
    assert _cache(app).get(partner.key_id) is None


def test_a_key_expired_since_it_was_cached_is_refused(app, shop):
    hub, partner, member, client = shop
    _change_key(hub, partner.key_id, expires_at=datetime.now(timezone.utc) - timedelta(seconds=1))
    _refused_without_trace(app, hub, client, purchase_payload("r-1", member.card_number), "key_expired")


def test_a_terminated_partner_is_shut_out_although_its_key_was_cached(app, shop):
    hub, partner, member, client = shop
    _set_partner_status(hub, partner.partner_id, "terminated")
    _refused_without_trace(app, hub, client, purchase_payload("r-1", member.card_number), "partner_inactive")


def test_a_suspended_partner_is_verified_again_and_refused_by_the_service_with_its_nonce_spent(app, shop):
    hub, partner, member, client = shop
    _set_partner_status(hub, partner.partner_id, "suspended")
    before, traces_before = books(hub), api_traces(hub)
    reply = client.post(PURCHASES, purchase_payload("r-1", member.card_number))
    # Authenticated (the key stands, its partner is suspended, not shut out): the service
    # refuses, and the request's nonce and its key's refusal are kept like any other's.
    assert (reply.status, reply.body["code"]) == (409, "invalid_state"), reply.body
    assert_books_unchanged(hub, before)
    assert api_traces(hub) == {"nonces": traces_before["nonces"] + 1,
                               "idempotency_keys": traces_before["idempotency_keys"] + 1}
    # The cache now holds the key as it stands, with the suspended partner.
    assert _cache(app).get(partner.key_id).partner_status == "suspended"


def test_a_key_bound_to_a_till_since_it_was_cached_acts_for_that_till_only(app, shop):
    hub, partner, member, client = shop
    _change_key(hub, partner.key_id, terminal_id=partner.terminal_id)
    named_other = client.post(PURCHASES, {**purchase_payload("r-1", member.card_number), "terminal": "till-9"})
    # The bound till is the key's: naming another (even an unknown one) is not allowed.
    assert named_other.status in (403, 404), named_other.body
    accepted = client.post(PURCHASES, purchase_payload("r-2", member.card_number))
    assert accepted.status == 201, accepted.body
    assert accepted.body["terminal"] == "till-1"
    assert _cache(app).get(partner.key_id).terminal_id == partner.terminal_id


def test_a_write_refused_before_its_claim_confirms_its_cached_key_before_keeping_its_nonce(app, shop):
    hub, partner, member, client = shop
    invalid = {**purchase_payload("r-1", member.card_number), "amount_minor": -5}
    traces_before = api_traces(hub)
    refused = client.post(PURCHASES, invalid)
    assert (refused.status, refused.body["code"]) == (422, "validation_failed"), refused.body
    assert api_traces(hub)["nonces"] == traces_before["nonces"] + 1
    with hub.unit_of_work() as uow:
        revoke_key(uow.session, key_id=partner.key_id, now=datetime.now(timezone.utc))
        uow.commit()
    # The same invalid write, now with a revoked key: the key's refusal, and no nonce kept.
    before, traces_before = books(hub), api_traces(hub)
    reply = client.post(PURCHASES, invalid)
    assert (reply.status, reply.body["code"]) == (401, "key_revoked"), reply.body
    assert reply.headers["Content-Type"] == "application/problem+json"
    assert_books_unchanged(hub, before)
    assert api_traces(hub) == traces_before


def test_a_replayed_write_refused_before_its_claim_is_a_replay(app, shop):
    hub, partner, member, client = shop
    body = json.dumps({**purchase_payload("r-1", member.card_number), "amount_minor": -5}).encode()
    headers = sign_request(method="POST", url="http://localhost" + PURCHASES, body=body, key_id=partner.key_id,
                           private_key=partner.private_key, idempotency_key="k-1")
    http = app.test_client()
    assert http.post(PURCHASES, data=body, headers=headers).status_code == 422
    traces_before = api_traces(hub)
    replay = http.post(PURCHASES, data=body, headers=headers)
    assert (replay.status_code, replay.get_json()["code"]) == (401, "signature_replayed")
    assert api_traces(hub) == traces_before


def test_a_cached_key_spares_the_write_its_lookup_but_not_the_read(app, shop, monkeypatch):
    hub, partner, member, client = shop
    lookups: list[str] = []
    real_look_up = partner_keys.DatabaseKeyStore.look_up

    def counted(self, key_id: str, nonce: str):  # type: ignore[no-untyped-def]
        lookups.append(key_id)
        return real_look_up(self, key_id, nonce)

    monkeypatch.setattr(partner_keys.DatabaseKeyStore, "look_up", counted)
    assert client.post(PURCHASES, purchase_payload("r-1", member.card_number)).status == 201
    assert lookups == []
    # A read spends its nonce at once, before any claim, so it is verified from the database.
    assert client.get(PURCHASES + "/r-1").status == 200
    assert lookups == [partner.key_id]


def test_the_cache_keeps_a_bounded_number_of_keys_dropping_the_oldest():
    from alliance.domain.signatures import PartnerKeyRecord

    cache = KeyCache(size=2)
    records = [PartnerKeyRecord(key_id=f"k{index}", partner_id=1, public_key=b"\0" * 32, status="active",
                                expires_at=None, terminal_id=None) for index in range(3)]
    for record in records:
        cache.remember(record)
    assert [cache.get(f"k{index}") for index in range(3)] == [None, records[1], records[2]]
    cache.remember(records[1])  # already there: nothing dropped
    assert cache.get("k2") is records[2]
    cache.forget("k1")
    assert cache.get("k1") is None


def test_other_writes_with_a_key_revoked_after_it_was_cached_are_refused_without_trace(app, shop):
    # Writes other than a purchase confirm the key in the claim's own statement.
    hub, partner, member, client = shop
    with hub.unit_of_work() as uow:
        revoke_key(uow.session, key_id=partner.key_id, now=datetime.now(timezone.utc))
        uow.commit()
    writes = [
        ("/partner/v1/purchases/r-warm/refunds", {"refund_id": "rf-1", "amount_minor": 100}),
        ("/partner/v1/balance-inquiries", {"card_number": member.card_number, "pin": "2468"}),
        ("/partner/v1/redemptions/no-such-hold/void", {}),
        ("/partner/v1/events", {"event_id": "ev-1", "event_type": "survey", "card_number": member.card_number,
                                "occurred_at": datetime.now(timezone.utc).isoformat()}),
    ]
    for path, payload in writes:
        before, traces_before = books(hub), api_traces(hub)
        reply = client.post(path, payload)
        assert (reply.status, reply.body["code"]) == (401, "key_revoked"), (path, reply.body)
        assert_books_unchanged(hub, before)
        assert api_traces(hub) == traces_before


def test_a_retry_of_a_completed_write_with_a_key_revoked_since_is_refused(app, shop):
    hub, partner, member, client = shop
    report = json.dumps(purchase_payload("r-1", member.card_number)).encode()
    assert client.post(PURCHASES, report, idempotency_key="k-1").status == 201
    with hub.unit_of_work() as uow:
        revoke_key(uow.session, key_id=partner.key_id, now=datetime.now(timezone.utc))
        uow.commit()
    traces_before = api_traces(hub)
    retry = client.post(PURCHASES, report, idempotency_key="k-1")
    assert (retry.status, retry.body["code"]) == (401, "key_revoked")
    assert api_traces(hub) == traces_before


def test_a_public_key_replaced_under_the_same_key_id_is_the_one_that_verifies(app, shop):
    hub, partner, member, client = shop
    new_private = Ed25519PrivateKey.generate()
    _change_key(hub, partner.key_id, public_key=new_private.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw))
    # Signed with the old private key: the cached key verifies it, the database's does not.
    _refused_without_trace(app, hub, client, purchase_payload("r-1", member.card_number), "signature_invalid")
    renewed = SignedTestClient(app, SigningPartner(partner.partner_id, partner.code, partner.key_id, new_private,
                                                   partner.terminal_id))
    assert renewed.post(PURCHASES, purchase_payload("r-2", member.card_number)).status == 201
    assert _cache(app).get(partner.key_id).public_key == new_private.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw)
