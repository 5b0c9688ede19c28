"""The partner API over real HTTP on PostgreSQL, under concurrency.

A threaded Werkzeug server runs the hub; requests come from a thread pool through a
barrier, so they really overlap in the server and in the database. Each request is
signed on its own (fresh nonce), as separate tills or retries would sign them. Every
network call has a timeout, so a deadlock fails the test instead of hanging it.
"""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone

import pytest
from sqlalchemy import func, select

from alliance.extensions import hub_state
from alliance.models import JournalTransaction, LedgerAccount, Purchase, RedemptionHold
from alliance.services import ledger, member_verification
from tests.factories import make_member_with_pin, make_signing_partner, set_risk_policy
from tests.http_server import (
    HttpReply,
    audit_totals,
    balances,
    fund_member,
    purchase_payload,
    send_prepared,
    send_signed,
    serve,
    wall_clock_partner_time,
)
from tests.signing import sign_request

THREADS = 20
BARRIER_TIMEOUT_S = 15
PIN = "2468"


def _concurrently(task, count: int = THREADS) -> list:  # type: ignore[no-untyped-def, type-arg]
    """Run ``task(index)`` in ``count`` threads released together; results in index order."""
    start = threading.Barrier(count)

    def run(index: int):  # type: ignore[no-untyped-def]
        start.wait(timeout=BARRIER_TIMEOUT_S)
        return task(index)

    with ThreadPoolExecutor(max_workers=count) as pool:
        return list(pool.map(run, range(count)))


def _count(hub, statement) -> int:  # type: ignore[no-untyped-def]
    with hub.unit_of_work() as uow:
        return uow.session.scalar(statement)


@pytest.mark.parametrize("operation", ["purchase", "authorization"])
def test_twenty_simultaneous_retries_under_one_key_have_exactly_one_effect(pg_app, operation):
    hub = hub_state(pg_app)
    created = wall_clock_partner_time()
    partner = make_signing_partner(hub, now=created)
    member = make_member_with_pin(hub, now=created, pin=PIN)
    if operation == "purchase":
        path, payload = "/partner/v1/purchases", purchase_payload("r-1", member.card_number)
        expected_status = 201
    else:
        fund_member(hub, member_id=member.member_id, partner_id=partner.partner_id, points=300)
        path = "/partner/v1/redemptions"
        payload = {"reference": "red-1", "points": 100, "card_number": member.card_number, "pin": PIN}
        expected_status = 201

    with serve(pg_app) as base_url:
        replies: list[HttpReply] = _concurrently(
            lambda _: send_signed(base_url, partner, "POST", path, payload, idempotency_key="one-key"))
        # Once all have finished, a late retry gets the stored reply.
        late = send_signed(base_url, partner, "POST", path, payload, idempotency_key="one-key")

    done = [reply for reply in replies if reply.status == expected_status]
    in_flight = [reply for reply in replies if reply.status == 409]
    assert len(done) + len(in_flight) == THREADS, sorted({(reply.status, reply.raw[:200]) for reply in replies})
    assert done, "at least the request that ran the operation succeeds"
    # Exactly one request ran the operation; every other success is its stored reply.
    assert [reply.headers["idempotent-replayed"] for reply in done].count("false") == 1
    assert {reply.raw for reply in done} == {done[0].raw}
    for reply in in_flight:
        assert reply.body["code"] == "idempotency_key_in_flight"
        assert reply.headers["content-type"] == "application/problem+json"
        assert int(reply.headers["retry-after"]) >= 1
    assert (late.status, late.raw, late.headers["idempotent-replayed"]) == (expected_status, done[0].raw, "true")

    if operation == "purchase":
        assert _count(hub, select(func.count()).select_from(Purchase)) == 1
        assert balances(hub, member.member_id) == {"available": 123, "pending": 0, "held": 0}
    else:
        assert _count(hub, select(func.count()).select_from(RedemptionHold)) == 1
        assert balances(hub, member.member_id) == {"available": 200, "pending": 0, "held": 100}
    audit_totals(hub)


def test_one_signed_request_sent_twenty_times_at_once_takes_effect_once_and_the_copies_are_replays(pg_app):
    # Byte-identical copies, nonce included: the verifier may pass several of them while
    # none has committed yet; the nonce's unique index, spent with the idempotency claim,
    # lets exactly one through.
    hub = hub_state(pg_app)
    created = wall_clock_partner_time()
    partner = make_signing_partner(hub, now=created)
    member = make_member_with_pin(hub, now=created, pin=PIN)
    body = json.dumps(purchase_payload("r-copies", member.card_number)).encode()

    with serve(pg_app) as base_url:
        headers = sign_request(method="POST", url=base_url + "/partner/v1/purchases", body=body,
                               key_id=partner.key_id, private_key=partner.private_key, idempotency_key="copies")

        def send(_: int) -> tuple[int, str]:
            reply = send_prepared(base_url, "POST", "/partner/v1/purchases", body, headers)
            return reply.status, reply.body.get("code", "")

        replies = _concurrently(send)

    assert set(replies) == {(201, ""), (401, "signature_replayed")}, replies
    assert replies.count((201, "")) == 1, replies
    assert _count(hub, select(func.count()).select_from(Purchase)) == 1
    assert balances(hub, member.member_id) == {"available": 123, "pending": 0, "held": 0}
    audit_totals(hub)


def test_a_balance_inquiry_waiting_on_a_redemption_at_the_same_card_answers_after_it(pg_app):
    # The redemption holds the card's row lock (its PIN check) while it sets points
    # aside; an inquiry for the card waits for that lock, and must then answer the
    # balances as the redemption left them, not as they were when the inquiry began.
    hub = hub_state(pg_app)
    created = wall_clock_partner_time()
    partner = make_signing_partner(hub, now=created)
    member = make_member_with_pin(hub, now=created, pin=PIN)
    fund_member(hub, member_id=member.member_id, partner_id=partner.partner_id, points=300)
    with serve(pg_app) as base_url, hub.unit_of_work() as redemption:
        holder = member_verification.require_verified(
            member_verification.check_pin(redemption.session, card_number=member.card_number, pin=PIN))
        ledger.authorize_hold(redemption.session, member_id=holder.member_id, partner_id=partner.partner_id,
                              points=100, now=datetime.now(timezone.utc), ttl_s=600)
        with ThreadPoolExecutor(max_workers=1) as pool:
            inquiry = pool.submit(send_signed, base_url, partner, "POST", "/partner/v1/balance-inquiries",
                                  {"card_number": member.card_number, "pin": PIN})
            time.sleep(0.5)
            assert not inquiry.done(), "the inquiry waits for the card's lock"
            redemption.commit()
            reply = inquiry.result(timeout=BARRIER_TIMEOUT_S)
    assert reply.status == 200, reply.raw
    assert (reply.body["points_available"], reply.body["points_held"]) == (200, 100)


def test_two_partners_tills_spending_one_balance_at_once_never_overdraw_it(pg_app):
    hub = hub_state(pg_app)
    created = wall_clock_partner_time()
    tills = [make_signing_partner(hub, now=created, code=code, bind_key_to_terminal=True)
             for code in ("cinema", "bakery")]
    member = make_member_with_pin(hub, now=created, pin=PIN)
    fund_member(hub, member_id=member.member_id, partner_id=tills[0].partner_id, points=300)
    set_risk_policy(hub)  # more redemptions than the default policy lets one member make in an hour
    spend, affordable = 30, 300 // 30
    watching = threading.Event()
    seen: list[tuple[int, int]] = []

    def watch_balances() -> None:
        # Sample the stored balances while the spends race; one statement reads both.
        while not watching.is_set():
            with hub.unit_of_work() as uow:
                rows = dict(uow.session.execute(select(LedgerAccount.kind, LedgerAccount.balance_points)
                                                .where(LedgerAccount.member_id == member.member_id)).all())
            seen.append((rows["member_available"], rows["member_held"]))
            watching.wait(0.005)

    def authorize_then_capture(index: int) -> tuple[int, str | None, int | None]:
        till = tills[index % 2]
        reference = f"spend-{index}"
        held = send_signed(base_url, till, "POST", "/partner/v1/redemptions",
                           {"reference": reference, "points": spend, "card_number": member.card_number, "pin": PIN})
        if held.status != 201:
            return held.status, held.body.get("code"), None
        captured = send_signed(base_url, till, "POST", f"/partner/v1/redemptions/{reference}/capture",
                               {"points": spend})
        return held.status, None, captured.status

    watcher = threading.Thread(target=watch_balances, daemon=True)
    with serve(pg_app) as base_url:
        watcher.start()
        try:
            outcomes = _concurrently(authorize_then_capture)
        finally:
            watching.set()
            watcher.join(timeout=10)

    assert sorted(outcomes, key=str) == sorted([(201, None, 200)] * affordable
                                               + [(422, "insufficient_points", None)] * (THREADS - affordable), key=str)
    assert seen, "the watcher sampled the balances during the race"
    assert all(available >= 0 and held >= 0 and available + held <= 300 for available, held in seen), seen
    assert balances(hub, member.member_id) == {"available": 0, "pending": 0, "held": 0}
    with hub.unit_of_work() as uow:
        holds = uow.session.execute(select(RedemptionHold.partner_id, RedemptionHold.status)).all()
    assert len(holds) == affordable and {status for _, status in holds} == {"captured"}
    assert {partner_id for partner_id, _ in holds} <= {till.partner_id for till in tills}
    totals = audit_totals(hub)
    assert totals["points_partner_redeemed"] == 300
    # One earn, then a hold and a capture per affordable spend; refused spends posted nothing.
    assert _count(hub, select(func.count()).select_from(JournalTransaction)) == 1 + 2 * affordable
