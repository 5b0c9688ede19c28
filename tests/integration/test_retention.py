"""Idempotency keys are kept at least 72 hours; nonces until their signatures are dead."""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, select

from alliance.models import IdempotencyRecord, SeenNonce
from alliance.services import idempotency, partner_keys
from alliance.storage import NonceRow
from tests.factories import make_partner


def count(hub, model) -> int:  # type: ignore[no-untyped-def]
    with hub.unit_of_work() as uow:
        return uow.session.scalar(select(func.count()).select_from(model))


def test_idempotency_keys_survive_72_hours_then_are_pruned(hub, now):
    partner_id = make_partner(hub, now=now)
    other_id = make_partner(hub, now=now, code="other")
    with hub.unit_of_work() as uow:
        # The other partner's "old" is recent: a key is pruned by the partner's and key's record.
        for owner, hours_ago, key in ((partner_id, 73, "old"), (partner_id, 71, "recent"), (other_id, 71, "old")):
            idempotency.claim(uow.session, partner_id=owner, key=key, fingerprint="f" * 64,
                              now=now - timedelta(hours=hours_ago))
        uow.commit()
    with hub.unit_of_work() as uow:
        # Asking for a shorter retention cannot go below the 72-hour floor.
        assert idempotency.prune(uow.session, now=now, retention=timedelta(hours=1)) == 1
        uow.commit()
    with hub.unit_of_work() as uow:
        keys = uow.session.execute(select(IdempotencyRecord.partner_id, IdempotencyRecord.idempotency_key)
                                   .order_by(IdempotencyRecord.partner_id, IdempotencyRecord.idempotency_key)).all()
    assert [tuple(row) for row in keys] == [(partner_id, "recent"), (other_id, "old")]


def test_a_claim_is_decided_by_the_primary_key(hub, now):
    partner_id = make_partner(hub, now=now)
    with hub.unit_of_work() as uow:
        first = idempotency.claim(uow.session, partner_id=partner_id, key="k", fingerprint="a" * 64, now=now)
        assert (first.partner_id, first.key, first.status) == (partner_id, "k", "in_flight")
        with pytest.raises(idempotency.KeyReused):
            idempotency.claim(uow.session, partner_id=partner_id, key="k", fingerprint="b" * 64, now=now)
        # The same request again finds the record its first claim inserted, not a new one.
        again = idempotency.claim(uow.session, partner_id=partner_id, key="k", fingerprint="a" * 64, now=now)
        assert (again.partner_id, again.key, again.status) == (partner_id, "k", "in_flight")
        uow.commit()
    assert count(hub, IdempotencyRecord) == 1
    with hub.unit_of_work() as uow:
        record = uow.session.scalars(select(IdempotencyRecord)).one()
        assert record.request_fingerprint == "a" * 64


def test_nonces_are_unique_and_pruned_once_their_signatures_expire(hub, now):
    partner_id = make_partner(hub, now=now)
    with hub.unit_of_work() as uow:
        nonce = NonceRow(nonce="n" * 22, partner_id=partner_id, key_id="k", seen_at=now,
                         prune_after=now + timedelta(seconds=360))
        assert partner_keys.record_nonce(uow.session, nonce)
        assert not partner_keys.record_nonce(uow.session, nonce)
        uow.commit()
    with hub.unit_of_work() as uow:
        assert partner_keys.prune_nonces(uow.session, now=now + timedelta(seconds=359)) == 0
        assert partner_keys.prune_nonces(uow.session, now=now + timedelta(seconds=361)) == 1
        uow.commit()
    assert count(hub, SeenNonce) == 0


def test_request_fingerprints_separate_method_target_and_body():
    def fingerprint(method: str, target: str, body: bytes, key: bytes = b"k" * 32) -> str:
        return idempotency.request_fingerprint(method, target, body, key=key)

    base = fingerprint("POST", "/partner/v1/purchases", b"{}")
    assert base == fingerprint("post", "/partner/v1/purchases", b"{}")
    assert base != fingerprint("POST", "/partner/v1/purchases?x=1", b"{}")
    assert base != fingerprint("POST", "/partner/v1/purchases", b"{ }")
    # Length prefixes keep a moved boundary from producing the same digest.
    assert fingerprint("POST", "/a", b"b/c") != fingerprint("POST", "/ab", b"/c")


def test_a_fingerprint_is_keyed_so_a_pin_in_the_body_cannot_be_recovered_from_the_table():
    body = b'{"card_number":"6390000000000001","pin":"2468"}'
    stored = idempotency.request_fingerprint("POST", "/partner/v1/balance-inquiries", body, key=b"k" * 32)
    # Without the key, trying every PIN against the stored digest (a plain SHA-256 of the
    # same framing) finds nothing.
    candidates = {_unkeyed_fingerprint(
        "POST", "/partner/v1/balance-inquiries", b'{"card_number":"6390000000000001","pin":"%04d"}' % pin)
        for pin in range(10_000)}
    assert stored not in candidates
    assert stored != idempotency.request_fingerprint("POST", "/partner/v1/balance-inquiries", body, key=b"j" * 32)


def _unkeyed_fingerprint(method: str, target: str, body: bytes) -> str:
    digest = hashlib.sha256()
    for part in (method.encode(), target.encode(), body):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


def test_a_reply_stored_with_the_commit_reads_back_exactly(hub, now):
    # The hub's own path: the reply's UPDATE and the COMMIT in one round trip on
    # PostgreSQL (values bound as literals), plain on SQLite.
    partner_id = make_partner(hub, now=now)
    body = json.dumps({"note": "it's \\ a \"reply\"; é €", "points": 12}, separators=(",", ":"), ensure_ascii=False)
    in_kolkata = now.astimezone(ZoneInfo("Asia/Kolkata"))
    with hub.unit_of_work() as uow:
        claimed = idempotency.claim(uow.session, partner_id=partner_id, key="k", fingerprint="a" * 64, now=now)
        uow.commit_with(idempotency.reply_write(uow.session, partner_id=claimed.partner_id, key=claimed.key,
                                                status=201, body=body, now=in_kolkata))
    with hub.unit_of_work() as uow:
        record = uow.session.get(IdempotencyRecord, {"idempotency_key": "k", "partner_id": partner_id})
        again = idempotency.claim(uow.session, partner_id=partner_id, key="k", fingerprint="a" * 64, now=now)
    assert (record.status, record.response_status, record.response_body) == ("completed", 201, body)
    assert record.completed_at == now and record.completed_at.utcoffset().total_seconds() == 0
    assert (again.status, again.response_status, again.response_body) == ("completed", 201, body)


def test_a_reply_and_a_forgetting_touch_only_their_own_partners_key(hub, now):
    # Two partners under one key: the record is named by both, never by the key alone.
    partner_id, other_id = make_partner(hub, now=now), make_partner(hub, now=now, code="other")
    with hub.unit_of_work() as uow:
        mine = idempotency.claim(uow.session, partner_id=partner_id, key="k", fingerprint="a" * 64, now=now)
        theirs = idempotency.claim(uow.session, partner_id=other_id, key="k", fingerprint="b" * 64, now=now)
        uow.commit_with(idempotency.reply_write(uow.session, partner_id=mine.partner_id, key=mine.key, status=201,
                                                body="{}", now=now))
    with hub.unit_of_work() as uow:
        idempotency.forget(uow.session, partner_id=theirs.partner_id, key=theirs.key)
        uow.commit()
    with hub.unit_of_work() as uow:
        left = uow.session.execute(select(IdempotencyRecord.partner_id, IdempotencyRecord.status)).all()
    assert [tuple(row) for row in left] == [(partner_id, "completed")]
