"""Fairness under load: per-partner rate limits and an in-flight cap on the partner API.

A flooding partner gets 429 ``rate_limited`` problems with Retry-After while a quiet
partner's requests all succeed; the limit is checked after the signature (so a forged
flood cannot spend a partner's budget) and before any write (so a refused request leaves
no nonce, no idempotency record and nothing in the books).
"""

from __future__ import annotations

import json
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from flask import Flask
from sqlalchemy import select

from alliance.api.partner.auth import LIMITER_KEY
from alliance.domain.rate_limits import PartnerLimiter, PartnerLimits
from alliance.extensions import hub_state
from alliance.models import IdempotencyRecord, Purchase, SeenNonce
from alliance.services.partner_keys import revoke_key
from tests.back_office_support import hub_app
from tests.factories import SigningPartner, make_member, make_signing_partner
from tests.http_server import (
    api_traces,
    assert_audit_green,
    assert_books_unchanged,
    balances,
    books,
    purchase_payload,
    send_signed,
    serve,
    wall_clock_partner_time,
)
from tests.partner_client import SignedTestClient
from tests.signing import sign_request

PURCHASES = "/partner/v1/purchases"
FLOOD_THREADS = 6
FLOOD_REQUESTS_PER_THREAD = 15
QUIET_REQUESTS = 8


class FakeClock:
    """The limiter's monotonic clock, moved by the test."""

    def __init__(self) -> None:
        self.now_s = 0.0

    def __call__(self) -> float:
        return self.now_s


@pytest.fixture
def limited_app(postgres_url: str, tmp_path: Path) -> Iterator[Flask]:
    """A PostgreSQL hub with tight limits: 5 requests a second, a burst of 10, 2 in flight."""
    app = hub_app(postgres_url, tmp_path / "instance", partner_rate_per_s=5, partner_burst=10,
                  partner_max_in_flight=2)
    yield app
    hub_state(app).engine.dispose()


def _install_clock(app: Flask, limits: PartnerLimits) -> FakeClock:
    clock = FakeClock()
    hub_state(app).extras[LIMITER_KEY] = PartnerLimiter(limits, clock=clock)
    return clock


def _shop_under(app: Flask, limits: PartnerLimits):  # type: ignore[no-untyped-def]
    """A signing partner and a member under ``limits``, with the limiter's clock: (hub, clock, shop, member)."""
    hub = hub_state(app)
    clock = _install_clock(app, limits)
    created = wall_clock_partner_time()
    return hub, clock, make_signing_partner(hub, now=created), make_member(hub, now=created)


def _stored_receipts(app: Flask, partner: SigningPartner) -> set[str]:
    with hub_state(app).unit_of_work() as uow:
        return set(uow.session.scalars(select(Purchase.receipt_id).where(Purchase.partner_id == partner.partner_id)))


def _traces_of(app: Flask, partner: SigningPartner) -> tuple[int, int]:
    """Nonces and idempotency records the API layer stored for ``partner``."""
    with hub_state(app).unit_of_work() as uow:
        nonces = len(uow.session.scalars(select(SeenNonce.nonce)
                                         .where(SeenNonce.partner_id == partner.partner_id)).all())
        keys = len(uow.session.scalars(select(IdempotencyRecord.idempotency_key)
                                       .where(IdempotencyRecord.partner_id == partner.partner_id)).all())
    return nonces, keys


def test_a_flooding_partner_is_refused_while_a_quiet_partner_is_served_and_the_books_hold_exactly_the_acknowledged(
        limited_app):
    hub = hub_state(limited_app)
    created = wall_clock_partner_time()
    flooder = make_signing_partner(hub, now=created, code="flooder")
    quiet = make_signing_partner(hub, now=created, code="quiet")
    member = make_member(hub, now=created)
    start = threading.Barrier(FLOOD_THREADS + 1)
    replies: dict[str, dict[str, object]] = {}
    guard = threading.Lock()

    with serve(limited_app) as base_url:
        def flood(thread_index: int) -> None:
            start.wait(timeout=30)
            for request_index in range(FLOOD_REQUESTS_PER_THREAD):
                receipt_id = f"flood-{thread_index}-{request_index}"
                reply = send_signed(base_url, flooder, "POST", PURCHASES,
                                    purchase_payload(receipt_id, member.card_number, amount_minor=1_000))
                with guard:
                    replies[receipt_id] = {"status": reply.status, "body": reply.body, "headers": reply.headers}

        def quiet_till() -> list[int]:
            start.wait(timeout=30)
            statuses = []
            for index in range(QUIET_REQUESTS):
                reply = send_signed(base_url, quiet, "POST", PURCHASES,
                                    purchase_payload(f"quiet-{index}", member.card_number, amount_minor=2_000))
                statuses.append(reply.status)
                with guard:
                    replies[f"quiet-{index}"] = {"status": reply.status, "body": reply.body, "headers": reply.headers}
            return statuses

        with ThreadPoolExecutor(max_workers=FLOOD_THREADS + 1) as pool:
            quiet_future = pool.submit(quiet_till)
            for flood_future in [pool.submit(flood, index) for index in range(FLOOD_THREADS)]:
                flood_future.result()
            quiet_statuses = quiet_future.result()

    assert quiet_statuses == [201] * QUIET_REQUESTS
    flood_replies = {receipt: reply for receipt, reply in replies.items() if receipt.startswith("flood-")}
    acknowledged = {receipt for receipt, reply in flood_replies.items() if reply["status"] == 201}
    refused = {receipt for receipt, reply in flood_replies.items() if reply["status"] == 429}
    assert (acknowledged | refused == set(flood_replies)
            and len(flood_replies) == FLOOD_THREADS * FLOOD_REQUESTS_PER_THREAD)
    assert refused and acknowledged
    for receipt in refused:
        reply = flood_replies[receipt]
        assert reply["headers"]["content-type"] == "application/problem+json"
        assert reply["body"]["code"] == "rate_limited" and reply["body"]["status"] == 429
        assert int(reply["headers"]["retry-after"]) >= 1

    # The books hold exactly the acknowledged purchases; nothing of a refused one was stored.
    assert _stored_receipts(limited_app, flooder) == acknowledged
    assert _stored_receipts(limited_app, quiet) == {f"quiet-{index}" for index in range(QUIET_REQUESTS)}
    assert _traces_of(limited_app, flooder) == (len(acknowledged), len(acknowledged))
    points = sum(reply["body"]["points"]["total"] for reply in replies.values() if reply["status"] == 201)
    member_points = balances(hub, member.member_id)
    assert member_points["available"] + member_points["pending"] == points
    assert_audit_green(hub)


def test_a_refused_request_leaves_no_trace_and_its_idempotency_key_works_once_the_bucket_refills(limited_app):
    hub, clock, shop, member = _shop_under(limited_app, PartnerLimits(rate_per_s=1, burst=2))
    till = SignedTestClient(limited_app, shop)
    for index in range(2):
        assert till.post(PURCHASES, purchase_payload(f"r-{index}", member.card_number)).status == 201
    before_books, before_traces = books(hub), api_traces(hub)

    key = str(uuid.uuid4())
    refused = till.post(PURCHASES, purchase_payload("r-late", member.card_number), idempotency_key=key)

    assert (refused.status, refused.body["code"], refused.headers["Retry-After"]) == (429, "rate_limited", "1")
    assert refused.headers["Content-Type"] == "application/problem+json"
    assert api_traces(hub) == before_traces
    assert_books_unchanged(hub, before_books)
    clock.now_s += 1.0
    accepted = till.post(PURCHASES, purchase_payload("r-late", member.card_number), idempotency_key=key)
    assert accepted.status == 201 and accepted.headers["Idempotent-Replayed"] == "false"
    assert "r-late" in _stored_receipts(limited_app, shop)


def test_reads_count_against_the_limit_too_and_say_how_long_to_wait(limited_app):
    hub = hub_state(limited_app)
    clock = _install_clock(limited_app, PartnerLimits(rate_per_s=1, burst=3))
    shop = make_signing_partner(hub, now=wall_clock_partner_time())
    till = SignedTestClient(limited_app, shop)
    assert [till.get("/partner/v1/statements").status for _ in range(3)] == [200, 200, 200]
    clock.now_s += 0.25
    refused = till.get("/partner/v1/statements")
    # 0.75 s until the next token, given as the next whole second.
    assert (refused.status, refused.headers["Retry-After"], refused.body["code"]) == (429, "1", "rate_limited")
    clock.now_s += 0.75
    assert till.get("/partner/v1/statements").status == 200


def test_forged_requests_naming_a_partners_key_do_not_spend_its_budget(limited_app):
    hub, _, shop, member = _shop_under(limited_app, PartnerLimits(rate_per_s=1, burst=3))
    forger = SignedTestClient(limited_app, SigningPartner(shop.partner_id, shop.code, shop.key_id,
                                                          Ed25519PrivateKey.generate(), shop.terminal_id))
    forged = [forger.post(PURCHASES, purchase_payload(f"forged-{index}", member.card_number)) for index in range(25)]
    assert {(reply.status, reply.body["code"]) for reply in forged} == {(401, "signature_invalid")}

    till = SignedTestClient(limited_app, shop)
    statuses = [till.post(PURCHASES, purchase_payload(f"r-{index}", member.card_number)).status for index in range(4)]
    assert statuses == [201, 201, 201, 429]
    assert _traces_of(limited_app, shop) == (3, 3)


def test_the_in_flight_slot_is_given_back_however_the_request_ends(limited_app):
    hub, _, shop, member = _shop_under(limited_app, PartnerLimits(max_in_flight=1))
    till = SignedTestClient(limited_app, shop)
    outcomes = [
        till.post(PURCHASES, purchase_payload("r-1", member.card_number)).status,
        till.post(PURCHASES, {"receipt_id": "r-2"}).status,
        till.get(f"{PURCHASES}/missing").status,
        till.post(PURCHASES, purchase_payload("r-1", member.card_number, amount_minor=7)).status,
        till.get(f"{PURCHASES}/r-1").status,
    ]
    assert outcomes == [201, 422, 404, 409, 200]
    assert hub.extras[LIMITER_KEY].in_flight(shop.partner_id) == 0  # type: ignore[attr-defined]


def test_limits_set_to_zero_are_off(postgres_url, tmp_path):
    app = hub_app(postgres_url, tmp_path / "instance", partner_rate_per_s=0, partner_burst=0, partner_max_in_flight=0)
    try:
        hub = hub_state(app)
        shop = make_signing_partner(hub, now=wall_clock_partner_time())
        till = SignedTestClient(app, shop)
        assert {till.get("/partner/v1/statements").status for _ in range(60)} == {200}
    finally:
        hub.engine.dispose()


def test_replays_of_an_accepted_request_spend_none_of_the_budget_although_its_key_is_cached(limited_app):
    # The key is cached after the first request, so a replay passes the check against
    # the cache and is admitted before its claim finds the nonce spent: its token and
    # slot go back then. Once the bucket is empty the database's refusal comes first.
    hub, _, shop, member = _shop_under(limited_app, PartnerLimits(rate_per_s=1, burst=3))
    body = purchase_payload("r-0", member.card_number)
    headers = sign_request(method="POST", url="http://localhost" + PURCHASES, body=json.dumps(body).encode(),
                           key_id=shop.key_id, private_key=shop.private_key, idempotency_key="k-0")
    http = limited_app.test_client()
    assert http.post(PURCHASES, data=json.dumps(body).encode(), headers=headers).status_code == 201
    traces = _traces_of(limited_app, shop)
    for _ in range(6):
        replay = http.post(PURCHASES, data=json.dumps(body).encode(), headers=headers)
        assert (replay.status_code, replay.get_json()["code"]) == (401, "signature_replayed")
    assert _traces_of(limited_app, shop) == traces
    till = SignedTestClient(limited_app, shop)
    statuses = [till.post(PURCHASES, purchase_payload(f"r-{index}", member.card_number)).status for index in (1, 2, 3)]
    assert statuses == [201, 201, 429]
    # The bucket is empty now: a replay gets the database's refusal, not a 429.
    replay = http.post(PURCHASES, data=json.dumps(body).encode(), headers=headers)
    assert (replay.status_code, replay.get_json()["code"]) == (401, "signature_replayed")
    assert hub.extras[LIMITER_KEY].in_flight(shop.partner_id) == 0  # type: ignore[attr-defined]


def test_a_key_revoked_after_it_was_cached_gets_its_refusal_not_the_partners_429(limited_app):
    hub, _, shop, member = _shop_under(limited_app, PartnerLimits(rate_per_s=1, burst=2))
    till = SignedTestClient(limited_app, shop)
    assert [till.post(PURCHASES, purchase_payload(f"r-{index}", member.card_number)).status
            for index in range(3)] == [201, 201, 429]
    with hub.unit_of_work() as uow:
        revoke_key(uow.session, key_id=shop.key_id, now=datetime.now(timezone.utc))
        uow.commit()
    before_books, before_traces = books(hub), api_traces(hub)
    refused = till.post(PURCHASES, purchase_payload("r-late", member.card_number))
    assert (refused.status, refused.body["code"]) == (401, "key_revoked")
    assert api_traces(hub) == before_traces
    assert_books_unchanged(hub, before_books)
    assert hub.extras["partner_key_cache"].get(shop.key_id) is None  # type: ignore[attr-defined]
