"""Concurrent spends on PostgreSQL: exactly the affordable ones succeed, never an overdraft."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from alliance.config import Settings
from alliance.db import make_engine, make_session_factory
from alliance.domain.errors import InsufficientPoints
from alliance.extensions import HubState
from alliance.services import ledger
from alliance.services.accounts import member_balances
from alliance.services.audit import run_audit
from tests.factories import make_member, make_partner

THREADS = 50
BALANCE_POINTS = 1_000
SPEND_POINTS = 30  # 33 spends fit in 1,000 points, 17 must be refused


def test_fifty_simultaneous_spends_from_one_balance(pg_hub, now):
    issuer = make_partner(pg_hub, now=now, code="issuer")
    redeemer = make_partner(pg_hub, now=now, code="redeemer")
    member_id = make_member(pg_hub, now=now).member_id
    with pg_hub.unit_of_work() as uow:
        # Several lots, so concurrent spends also compete for lot remainders.
        for points in (400, 350, 250):
            ledger.earn(uow.session, member_id=member_id, partner_id=issuer, points=points, now=now,
                        expires_at=now + timedelta(days=points))
        uow.commit()
    # A connection per thread, so all fifty really are inside the database at once.
    wide_engine = make_engine(pg_hub.engine.url.render_as_string(hide_password=False),
                              Settings(database_pool_size=THREADS))
    wide_hub = HubState(settings=pg_hub.settings, engine=wide_engine, session_factory=make_session_factory(wide_engine))
    start = threading.Barrier(THREADS)

    def spend(_: int) -> str:
        start.wait()
        try:
            with wide_hub.unit_of_work() as uow:
                hold = ledger.authorize_hold(uow.session, member_id=member_id, partner_id=redeemer,
                                             points=SPEND_POINTS, now=now, ttl_s=600)
                ledger.capture_hold(uow.session, hold_id=hold.hold_id, points=SPEND_POINTS, now=now)
                uow.commit()
            return "spent"
        except InsufficientPoints:
            return "refused"

    with ThreadPoolExecutor(max_workers=THREADS) as pool:
        outcomes = list(pool.map(spend, range(THREADS)))
    wide_engine.dispose()

    affordable = BALANCE_POINTS // SPEND_POINTS
    assert outcomes.count("spent") == affordable
    assert outcomes.count("refused") == THREADS - affordable
    with pg_hub.unit_of_work() as uow:
        assert member_balances(uow.session, member_id) == {
            "available": BALANCE_POINTS - affordable * SPEND_POINTS, "pending": 0, "held": 0,
        }
        report = run_audit(uow.session)
    assert report.ok, report.first_failure
    assert report.totals["points_partner_redeemed"] == affordable * SPEND_POINTS


def test_concurrent_earns_and_spends_for_many_members_never_deadlock(pg_hub, now):
    issuer = make_partner(pg_hub, now=now, code="issuer")
    member_ids = [make_member(pg_hub, now=now).member_id for _ in range(5)]
    start = threading.Barrier(20)

    def work(worker: int) -> None:
        start.wait()
        for step in range(10):
            member_id = member_ids[(worker + step) % len(member_ids)]
            with pg_hub.unit_of_work() as uow:
                ledger.earn(uow.session, member_id=member_id, partner_id=issuer, points=5, now=now,
                            expires_at=now + timedelta(days=30))
                uow.commit()
            try:
                with pg_hub.unit_of_work() as uow:
                    hold = ledger.authorize_hold(uow.session, member_id=member_id, partner_id=issuer, points=3,
                                                 now=now, ttl_s=60)
                    ledger.void_hold(uow.session, hold_id=hold.hold_id, now=now)
                    uow.commit()
            except InsufficientPoints:
                pass

    with ThreadPoolExecutor(max_workers=20) as pool:
        list(pool.map(work, range(20)))
    with pg_hub.unit_of_work() as uow:
        total = sum(member_balances(uow.session, member_id)["available"] for member_id in member_ids)
        report = run_audit(uow.session)
    assert total == 20 * 10 * 5
    assert report.ok, report.first_failure
