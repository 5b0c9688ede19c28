"""Report reads go to a streaming replica while it keeps up, to the primary otherwise; writes never go there.

A primary of this module's own and a hot standby made from it with ``pg_basebackup -R``;
each test gets a fresh database on the primary, which the replica follows.
"""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import psycopg
import pytest
from flask import Flask
from sqlalchemy import create_engine, event, text
from sqlalchemy.exc import DBAPIError

from alliance import create_app, migrate
from alliance.api.errors import PROBLEM_CONTENT_TYPE
from alliance.config import Settings
from alliance.db import database_unavailable, make_engine
from alliance.extensions import HubState, hub_state
from settlement.closing import close_due_cycles
from tests.back_office_support import BackOffice
from tests.factories import make_member, make_signing_partner
from tests.http_server import purchase_payload, send_signed, serve, wall_clock_partner_time
from tests.postgres_server import PostgresServer, start_postgres, start_replica

TEMPLATE = "replica_template"
MAX_LAG_S = 2
CATCH_UP_TIMEOUT_S = 10


@pytest.fixture(scope="module")
def cluster() -> Iterator[tuple[PostgresServer, PostgresServer]]:
    """A primary with a migrated template database, and its streaming replica."""
    primary = start_postgres()
    try:
        admin = create_engine(primary.url("postgres"), isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            connection.execute(text(f"CREATE DATABASE {TEMPLATE}"))
        admin.dispose()
        template = make_engine(primary.url(TEMPLATE), Settings())
        migrate.upgrade(template)
        template.dispose()
        replica = start_replica(primary)
        try:
            yield primary, replica
        finally:
            replica.stop()
    finally:
        primary.stop()


def _psycopg(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


def wait_for_replay(primary: PostgresServer, replica: PostgresServer) -> None:
    """Return once the replica has replayed everything the primary has written so far.

    The test server commits asynchronously, so a commit may still sit in the WAL
    buffers: the insert position counts it, the write position may not yet.
    """
    with psycopg.connect(_psycopg(primary.url("postgres")), autocommit=True) as source:
        written = source.execute("SELECT pg_current_wal_insert_lsn()").fetchone()[0]  # type: ignore[index]
    deadline = time.monotonic() + CATCH_UP_TIMEOUT_S
    with psycopg.connect(_psycopg(replica.url("postgres")), autocommit=True) as standby:
        while not standby.execute("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", (written,)).fetchone()[0]:  # type: ignore[index]
            assert time.monotonic() < deadline, "the replica did not catch up"
            time.sleep(0.02)


def replay(replica: PostgresServer, action: str) -> None:
    """``pause`` or ``resume`` the replica's replay."""
    with psycopg.connect(_psycopg(replica.url("postgres")), autocommit=True) as standby:
        standby.execute(f"SELECT pg_wal_replay_{action}()")


@pytest.fixture
def database(cluster) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """A fresh migrated database on the primary, already on the replica."""
    primary, replica = cluster
    name = f"test_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(_psycopg(primary.url("postgres")), autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE} STRATEGY FILE_COPY")
    wait_for_replay(primary, replica)
    yield name
    replay(replica, "resume")
    with psycopg.connect(_psycopg(primary.url("postgres")), autocommit=True) as admin:
        admin.execute(f"DROP DATABASE {name} WITH (FORCE)")


def _hub(url: str, instance: Path, **settings: object) -> Flask:
    app = create_app(Settings(database_url=url, instance_path=str(instance), environment="test",
                              secret_key="test-secret-key", **settings))
    app.config["TESTING"] = True
    return app


@pytest.fixture
def replicated_app(cluster, database, tmp_path) -> Iterator[Flask]:  # type: ignore[no-untyped-def]
    """A hub on the primary whose report reads may use the replica (lag bound MAX_LAG_S)."""
    primary, replica = cluster
    app = _hub(primary.url(database), tmp_path / "instance", replica_database_url=replica.url(database),
               replica_max_lag_s=MAX_LAG_S)
    yield app
    hub_state(app).dispose()


def _report_server_port(hub: HubState) -> int:
    with hub.read_only_unit_of_work() as uow:
        return uow.session.execute(text("SELECT inet_server_port()")).scalar_one()


def test_report_reads_use_the_replica_within_the_lag_bound_and_the_primary_beyond_it(cluster, replicated_app):
    primary, replica = cluster
    hub = hub_state(replicated_app)
    make_signing_partner(hub, now=wall_clock_partner_time(), settlement_cycle="daily", time_zone="UTC")
    office = BackOffice(replicated_app)
    office.token("finance")
    wait_for_replay(primary, replica)
    assert _report_server_port(hub) == replica.port

    replay(replica, "pause")
    closed = close_due_cycles(hub.session_factory, now=datetime.now(timezone.utc) + timedelta(days=2),
                              signer=hub.statement_signer)
    assert closed
    # The replica has not replayed the closing, and its last replayed transaction is
    # younger than the bound: the listing is read there, without the new statements.
    listing = office.get("/settlement/statements", role="finance", query={"partner": "shop"})
    assert listing.status == 200 and listing.body["total"] == 0

    # Once the replica is further behind than the bound, the same listing reads the primary.
    deadline = time.monotonic() + MAX_LAG_S + 5
    while listing.body["total"] == 0:
        assert time.monotonic() < deadline, "report reads did not move to the primary"
        time.sleep(0.2)
        listing = office.get("/settlement/statements", role="finance", query={"partner": "shop"})
    assert listing.body["total"] == len(closed)
    assert hub.reads.replica_lag_s() > MAX_LAG_S
    assert _report_server_port(hub) == primary.port

    replay(replica, "resume")
    wait_for_replay(primary, replica)
    deadline = time.monotonic() + 3
    while _report_server_port(hub) != replica.port:
        assert time.monotonic() < deadline, "report reads did not return to the replica"
        time.sleep(0.2)


def test_writes_never_go_to_the_replica(cluster, replicated_app):
    primary, replica = cluster
    hub = hub_state(replicated_app)
    created = wall_clock_partner_time()
    partner = make_signing_partner(hub, now=created)
    member = make_member(hub, now=created)
    office = BackOffice(replicated_app)
    office.token("partner_manager")
    wait_for_replay(primary, replica)
    sent_to_replica: list[str] = []
    event.listen(hub.reads.replica_engine, "before_cursor_execute",
                 lambda _connection, _cursor, statement, *_: sent_to_replica.append(statement))

    with serve(replicated_app) as base_url:
        earned = send_signed(base_url, partner, "POST", "/partner/v1/purchases",
                             purchase_payload("r-1", member.card_number))
    assert earned.status == 201, earned.raw
    assert office.post("/grades/computations", {"period": "2026-10"}, role="partner_manager").status == 200
    wait_for_replay(primary, replica)
    assert office.get("/grades/2026-10", role="partner_manager").status == 200
    assert office.get("/grades/2026-10/export", role="partner_manager").status == 200

    assert sent_to_replica, "the report reads went to the replica"
    assert all(statement.lstrip().upper().startswith("SELECT") for statement in sent_to_replica), sent_to_replica
    # A write that strays into a report session is refused there, as a bug (a 500), not
    # as an unavailable database.
    with hub.read_only_unit_of_work() as uow, pytest.raises(DBAPIError) as raised:
        uow.session.execute(text("SELECT inet_server_port()"))
        uow.session.execute(text("DELETE FROM purchases"))
    assert raised.value.orig.sqlstate == "25006"
    assert not database_unavailable(raised.value)
    with hub.unit_of_work() as uow:
        assert uow.session.execute(text("SELECT count(*) FROM purchases")).scalar_one() == 1


def test_an_unreachable_replica_sends_report_reads_to_the_primary(cluster, database, tmp_path):
    primary, _ = cluster
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    app = _hub(primary.url(database), tmp_path / "instance",
               replica_database_url=f"postgresql+psycopg://{primary.user}@127.0.0.1:{closed_port}/{database}")
    try:
        started = time.monotonic()
        assert _report_server_port(hub_state(app)) == primary.port
        assert time.monotonic() - started < 2
    finally:
        hub_state(app).dispose()


def test_a_hub_whose_primary_is_now_a_standby_is_not_ready_and_answers_writes_with_503(cluster, database, tmp_path):
    primary, replica = cluster
    setup = _hub(primary.url(database), tmp_path / "setup")
    created = wall_clock_partner_time()
    partner = make_signing_partner(hub_state(setup), now=created)
    member = make_member(hub_state(setup), now=created)
    hub_state(setup).dispose()
    wait_for_replay(primary, replica)
    # The hub's database URL leads to the standby, as it would to a demoted primary.
    demoted = _hub(replica.url(database), tmp_path / "instance")
    try:
        ready = demoted.test_client().get("/readyz")
        assert ready.status_code == 503 and ready.content_type == PROBLEM_CONTENT_TYPE
        assert ready.get_json()["checks"]["writable"] == "the server is a standby (in recovery)"
        assert ready.get_json()["detail"] == "this host cannot serve: writable failed"
        with serve(demoted) as base_url:
            reply = send_signed(base_url, partner, "POST", "/partner/v1/purchases",
                                purchase_payload("r-1", member.card_number))
        assert reply.status == 503 and reply.body["code"] == "database_unavailable"
        assert reply.headers["retry-after"] == "1"
    finally:
        hub_state(demoted).dispose()
