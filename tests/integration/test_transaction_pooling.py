"""The hub through a real PgBouncer 1.18 in transaction pooling: earn, redeem, close, audit, with concurrent tills.

Each test's database is reached through one PgBouncer in front of the session's
PostgreSQL server, with two server connections per database handed out round robin,
so consecutive transactions of one hub connection run on different server sessions.
With ``ALLIANCE_DATABASE_POOLING=transaction`` everything works; with psycopg's
preparing left on (the default, ``session``) the same load fails with the errors
transaction pooling gives named prepared statements.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from flask import Flask
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from alliance import create_app
from alliance.config import Settings
from alliance.extensions import hub_state
from alliance.models import Purchase, RedemptionHold, SettlementStatement
from settlement.closing import close_due_cycles
from tests.back_office_support import run_cli
from tests.factories import make_member_with_pin, make_signing_partner, set_risk_policy
from tests.http_server import balances, purchase_payload, send_signed, serve, wall_clock_partner_time
from tests.postgres_server import PgBouncer, PostgresServer, start_pgbouncer

TILLS = 6
EARNS_PER_TILL = 6
PIN = "2468"
BARRIER_TIMEOUT_S = 20


@pytest.fixture(scope="module")
def bouncer(postgres: PostgresServer) -> Iterator[PgBouncer]:
    """PgBouncer in transaction pooling in front of the session's server."""
    running = start_pgbouncer(postgres, pool_mode="transaction", pool_size=2)
    try:
        yield running
    finally:
        running.stop()


def _hub_through(bouncer: PgBouncer, postgres_url: str, instance: Path, pooling: str) -> Flask:
    database = make_url(postgres_url).database
    app = create_app(Settings(database_url=bouncer.url(database), instance_path=str(instance), environment="test",
                              secret_key="test-secret-key", database_pooling=pooling, database_pool_size=2))
    app.config["TESTING"] = True
    return app


@pytest.fixture
def pooled_app(bouncer, postgres_url, tmp_path) -> Iterator[Flask]:  # type: ignore[no-untyped-def]
    """A hub whose database is reached through PgBouncer, configured for transaction pooling."""
    app = _hub_through(bouncer, postgres_url, tmp_path / "instance", "transaction")
    yield app
    hub_state(app).dispose()


def _concurrently(task, count: int = TILLS) -> list:  # type: ignore[no-untyped-def, type-arg]
    """Run ``task(index)`` in ``count`` threads released together; results in index order."""
    start = threading.Barrier(count)

    def run(index: int):  # type: ignore[no-untyped-def]
        start.wait(timeout=BARRIER_TIMEOUT_S)
        return task(index)

    with ThreadPoolExecutor(max_workers=count) as pool:
        return list(pool.map(run, range(count)))


def _earn_from_every_till(app: Flask) -> tuple[list[int], object, list]:  # type: ignore[type-arg]
    """Each till reports EARNS_PER_TILL purchases at once with the others; returns statuses, member, tills."""
    hub = hub_state(app)
    created = wall_clock_partner_time()
    tills = [make_signing_partner(hub, now=created, code=f"till{index}", settlement_cycle="daily", time_zone="UTC")
             for index in range(TILLS)]
    member = make_member_with_pin(hub, now=created, pin=PIN)

    def earn(index: int) -> list[int]:
        return [send_signed(base_url, tills[index], "POST", "/partner/v1/purchases",
                            purchase_payload(f"r-{index}-{number}", member.card_number, amount_minor=10_000)).status
                for number in range(EARNS_PER_TILL)]

    with serve(app) as base_url:
        statuses = [status for till_statuses in _concurrently(earn) for status in till_statuses]
    return statuses, member, tills


def test_the_hub_earns_redeems_closes_and_audits_through_transaction_pooling(pooled_app):
    hub = hub_state(pooled_app)
    with hub.engine.connect() as connection:
        assert connection.connection.driver_connection.prepare_threshold is None

    # More purchases on one card in an hour than the built-in risk policy lets through unheld.
    set_risk_policy(hub)
    statuses, member, tills = _earn_from_every_till(pooled_app)
    assert statuses == [201] * TILLS * EARNS_PER_TILL
    # 100 EUR earns 100 points at one point per EUR.
    assert balances(hub, member.member_id)["available"] == 100 * TILLS * EARNS_PER_TILL

    def redeem(index: int) -> tuple[int, int]:
        reference = f"spend-{index}"
        held = send_signed(base_url, tills[index], "POST", "/partner/v1/redemptions",
                           {"reference": reference, "points": 50, "card_number": member.card_number, "pin": PIN})
        captured = send_signed(base_url, tills[index], "POST", f"/partner/v1/redemptions/{reference}/capture",
                               {"points": 40})
        return held.status, captured.status

    with serve(pooled_app) as base_url:
        assert _concurrently(redeem) == [(201, 200)] * TILLS
    assert balances(hub, member.member_id) == {"available": 100 * TILLS * EARNS_PER_TILL - 40 * TILLS,
                                                "pending": 0, "held": 0}

    # Two closers at once close every cycle up to tomorrow's exactly once between them:
    # each closing takes its partner's advisory lock for its own transaction only.
    later = datetime.now(timezone.utc) + timedelta(days=2)
    runs = _concurrently(lambda _: close_due_cycles(hub.session_factory, now=later, signer=hub.statement_signer),
                         count=2)
    newly = [(item.partner_id, item.cycle_starts_at) for run in runs for item in run if item.newly_closed]
    assert len(newly) == len(set(newly))
    assert {partner_id for partner_id, _ in newly} == {till.partner_id for till in tills}
    with hub.unit_of_work() as uow:
        assert uow.session.scalar(select(func.count()).select_from(Purchase)) == TILLS * EARNS_PER_TILL
        assert set(uow.session.scalars(select(RedemptionHold.status))) == {"captured"}
        statements = uow.session.scalar(select(func.count()).select_from(SettlementStatement))
    assert statements == len(newly)

    audited = run_cli(pooled_app, "audit")
    assert audited.exit_code == 0, audited.output
    assert "audit passed" in audited.output


def test_with_preparing_on_the_same_load_fails_through_transaction_pooling(bouncer, postgres_url, tmp_path, caplog):
    app = _hub_through(bouncer, postgres_url, tmp_path / "instance", "session")
    caplog.set_level(logging.ERROR, logger="alliance.api.errors")
    try:
        statuses, _, _ = _earn_from_every_till(app)
    finally:
        hub_state(app).dispose()
    failures = [str(record.exc_info[1]) for record in caplog.records if record.exc_info]
    assert 500 in statuses
    assert any('prepared statement "_pg3_' in failure for failure in failures), failures[:3]
