"""A database that cannot serve is a quick, retry-safe 503; readiness says whether this host can
serve; liveness does not ask.

The partner SDK retries a 503 under the same Idempotency-Key, so each failure here must
leave nothing behind, and the retry must find a working pool again.
"""

from __future__ import annotations

import socket
import time
import uuid
from pathlib import Path

import psycopg
import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from alliance import create_app, migrate
from alliance.api.errors import PROBLEM_CONTENT_TYPE
from alliance.config import Settings
from alliance.db import database_unavailable, make_engine
from alliance.extensions import hub_state
from tests.back_office_support import BackOffice, run_cli
from tests.console_support import ConsoleClient
from tests.factories import make_member, make_signing_partner
from tests.http_server import books, purchase_payload, send_signed, serve, wall_clock_partner_time
from tests.postgres_server import terminate_backend

QUICK_S = 2.0


def _closed_port_url() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"postgresql+psycopg://postgres@127.0.0.1:{port}/alliance"


def _hub(url: str, instance: Path, **settings: object):  # type: ignore[no-untyped-def]
    app = create_app(Settings(database_url=url, instance_path=str(instance), environment="test",
                              secret_key="test-secret-key", **settings))
    app.config["TESTING"] = True
    return app


def _assert_unavailable(reply, elapsed_s: float) -> None:  # type: ignore[no-untyped-def]
    assert reply.status == 503, reply.raw
    assert reply.headers["content-type"] == PROBLEM_CONTENT_TYPE
    assert reply.body["code"] == "database_unavailable" and reply.body["request_id"]
    assert reply.headers["retry-after"] == "1"
    assert elapsed_s < QUICK_S


def _earn(base_url: str, partner, card_number: str, receipt_id: str, key: str):  # type: ignore[no-untyped-def]
    started = time.monotonic()
    reply = send_signed(base_url, partner, "POST", "/partner/v1/purchases", purchase_payload(receipt_id, card_number),
                        idempotency_key=key)
    return reply, time.monotonic() - started


def test_a_request_on_a_connection_the_server_ended_is_a_quick_503_and_its_retry_succeeds(pg_app, postgres_url):
    hub = hub_state(pg_app)
    created = wall_clock_partner_time()
    partner = make_signing_partner(hub, now=created)
    member = make_member(hub, now=created)
    ended: list[int] = []

    def end_the_session_just_checked_out(dbapi_connection, _record, _proxy) -> None:  # type: ignore[no-untyped-def]
        # After the pool's own socket check: the server ends the session between checkout
        # and the request's first statement, as a failover or a restart would.
        if not ended:
            ended.append(dbapi_connection.info.backend_pid)
            assert terminate_backend(postgres_url, ended[0])

    with serve(pg_app) as base_url:
        # The first earn puts the partner's key in the process's cache, so the next one
        # goes straight to the hot path's own statements.
        assert _earn(base_url, partner, member.card_number, "r-1", str(uuid.uuid4()))[0].status == 201
        before = books(hub)
        event.listen(hub.engine, "checkout", end_the_session_just_checked_out)
        key = str(uuid.uuid4())
        reply, elapsed_s = _earn(base_url, partner, member.card_number, "r-2", key)
        event.remove(hub.engine, "checkout", end_the_session_just_checked_out)
        _assert_unavailable(reply, elapsed_s)
        assert books(hub) == before
        retried, _ = _earn(base_url, partner, member.card_number, "r-2", key)
    assert retried.status == 201, retried.raw
    assert retried.headers["idempotent-replayed"] == "false"
    with hub.engine.connect() as connection:
        assert connection.connection.driver_connection.info.backend_pid != ended[0]


def test_a_write_a_read_only_server_refuses_is_a_503_that_discards_the_connection(pg_app, postgres_url,
                                                                                  postgres_admin):
    hub = hub_state(pg_app)
    created = wall_clock_partner_time()
    partner = make_signing_partner(hub, now=created)
    member = make_member(hub, now=created)
    database = make_url(postgres_url).database
    client = pg_app.test_client()
    with serve(pg_app) as base_url:
        assert _earn(base_url, partner, member.card_number, "r-1", str(uuid.uuid4()))[0].status == 201
        before = books(hub)
        # A demoted primary: every transaction of a new session is read-only.
        with postgres_admin.connect() as admin:
            admin.execute(text(f"ALTER DATABASE {database} SET default_transaction_read_only = on"))
        hub.engine.dispose()
        ready = client.get("/readyz")
        assert ready.status_code == 503 and ready.content_type == PROBLEM_CONTENT_TYPE
        assert ready.get_json()["checks"]["writable"] == \
            "the server's transactions are read-only (default_transaction_read_only)"
        key = str(uuid.uuid4())
        reply, elapsed_s = _earn(base_url, partner, member.card_number, "r-2", key)
        _assert_unavailable(reply, elapsed_s)
        with postgres_admin.connect() as admin:
            admin.execute(text(f"ALTER DATABASE {database} RESET default_transaction_read_only"))
        assert books(hub) == before
        # The refused connection was the pool's only one and is gone: the retry connects afresh.
        assert client.get("/readyz").status_code == 200
        retried, _ = _earn(base_url, partner, member.card_number, "r-2", key)
    assert retried.status == 201, retried.raw


def test_an_unreachable_database_leaves_the_process_live_but_not_ready_and_calls_quick_503s(tmp_path):
    app = _hub(_closed_port_url(), tmp_path / "instance")
    try:
        client = app.test_client()
        live = client.get("/healthz")
        assert live.status_code == 200 and live.get_json() == {"status": "ok", "database": "postgresql"}
        ready = client.get("/readyz")
        assert ready.status_code == 503
        body = ready.get_json()
        assert body["code"] == "not_ready"
        assert body["checks"] == {"database": "cannot be reached (OperationalError)",
                                  "writable": "not checked: the database cannot be reached",
                                  "migrations": "not checked: the database cannot be reached",
                                  "statement_key": "ok"}
        assert body["detail"] == "this host cannot serve: database, writable, migrations failed"
        started = time.monotonic()
        response = client.get("/back-office/v1/partners", headers={"Authorization": "Bearer not-a-token"})
        assert response.status_code == 503 and response.get_json()["code"] == "database_unavailable"
        assert time.monotonic() - started < QUICK_S
    finally:
        hub_state(app).dispose()


def test_readiness_is_200_with_every_check_on_a_writable_migrated_database(pg_app):
    response = pg_app.test_client().get("/readyz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ready", "checks": {
        "database": "ok", "writable": "ok", "migrations": "ok", "statement_key": "ok"}}


def test_readiness_is_503_naming_the_migrations_while_one_is_pending(postgres_url, tmp_path):
    engine = make_engine(postgres_url, Settings())
    head = migrate.head_revision(engine)
    previous = ScriptDirectory(str(migrate.MIGRATIONS_DIRECTORY)).get_revision(head).down_revision
    migrate.downgrade(engine, previous)
    engine.dispose()
    app = _hub(postgres_url, tmp_path / "instance")
    try:
        response = app.test_client().get("/readyz")
        assert response.status_code == 503
        body = response.get_json()
        assert body["checks"]["migrations"] == f"the database is at revision {previous}, this hub's code at {head}"
        assert {name: verdict for name, verdict in body["checks"].items() if verdict == "ok"} == {
            "database": "ok", "writable": "ok", "statement_key": "ok"}
        assert body["detail"] == "this host cannot serve: migrations failed"
    finally:
        hub_state(app).dispose()


def test_a_database_a_newer_release_migrated_leaves_this_host_ready(pg_app):
    # A revision this code does not know: a newer release migrated the database before
    # its hosts are restarted one at a time, and this one keeps serving meanwhile.
    with hub_state(pg_app).engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = '0099_from_a_newer_release'"))
    response = pg_app.test_client().get("/readyz")
    assert response.status_code == 200 and response.get_json()["checks"]["migrations"] == "ok"


def test_a_write_in_a_report_session_is_refused_as_a_bug_not_as_an_unavailable_database(pg_hub):
    with pg_hub.read_only_unit_of_work() as uow, pytest.raises(DBAPIError) as raised:
        uow.session.execute(text("CREATE TABLE stray (id INTEGER)"))
    assert raised.value.orig.sqlstate == "25006"
    assert not database_unavailable(raised.value)
    # The report session's connection went back to the pool writable again.
    with pg_hub.unit_of_work() as uow:
        assert uow.session.execute(text("SHOW transaction_read_only")).scalar_one() == "off"


def test_alliance_db_runs_on_the_migration_url_straight_to_the_primary(postgres_url, tmp_path):
    app = _hub(_closed_port_url(), tmp_path / "instance", migration_database_url=postgres_url)
    try:
        head = migrate.head_revision(hub_state(app).engine)
        current = run_cli(app, "db", "current")
        assert current.exit_code == 0, current.output
        assert current.output.strip() == f"current: {head}; newest: {head}"
        upgraded = run_cli(app, "db", "upgrade")
        assert upgraded.exit_code == 0, upgraded.output
        assert f":{make_url(postgres_url).port}/" in upgraded.output
    finally:
        hub_state(app).dispose()


def test_a_back_office_report_on_a_hub_with_no_replica_reads_the_primary_read_only(pg_app):
    office = BackOffice(pg_app)
    reply = office.get("/settlement/overdue", role="finance")
    assert reply.status == 200 and reply.body["statements"] == []
    with hub_state(pg_app).read_only_unit_of_work() as uow:
        assert uow.session.execute(text("SHOW transaction_read_only")).scalar_one() == "on"


def test_a_console_page_during_an_outage_is_a_503_saying_to_try_again(tmp_path):
    app = _hub(_closed_port_url(), tmp_path / "instance")
    try:
        # Logging in is the first page that needs the database.
        page = ConsoleClient(app).login("fiona")
        text = page.get_data(as_text=True)
        assert page.status_code == 503 and page.headers["Retry-After"] == "1"
        assert "nothing was changed" in text and "Internal Server Error" not in text
    finally:
        hub_state(app).dispose()


def test_a_statement_on_a_connection_psycopg_knows_is_closed_is_an_unavailable_database(pg_hub):
    # What a failover can leave behind: the server went away between two statements and
    # psycopg refuses the next one itself, with no SQLSTATE.
    with pg_hub.unit_of_work() as uow, pytest.raises(DBAPIError) as raised:
        uow.session.execute(text("SELECT 1"))
        uow.session.connection().connection.driver_connection.close()
        uow.session.execute(text("SELECT 1"))
    assert raised.value.orig.sqlstate is None
    assert database_unavailable(raised.value)
    with pg_hub.unit_of_work() as uow:
        assert uow.session.execute(text("SELECT 1")).scalar_one() == 1


def test_a_session_the_server_ended_for_idling_in_a_transaction_is_an_unavailable_database(pg_hub):
    # A hub host whose network is cut mid-transaction: the server ends the session once
    # idle_in_transaction_session_timeout passes, and the host hears of it when the cut heals.
    with pg_hub.unit_of_work() as uow, pytest.raises(DBAPIError) as raised:
        uow.session.execute(text("SET LOCAL idle_in_transaction_session_timeout = '100ms'"))
        time.sleep(0.6)
        uow.session.execute(text("SELECT 1"))
    assert raised.value.orig.sqlstate == "25P03"
    assert database_unavailable(raised.value) and raised.value.connection_invalidated
    with pg_hub.unit_of_work() as uow:
        assert uow.session.execute(text("SELECT 1")).scalar_one() == 1


def test_a_partner_request_on_a_session_ended_for_idling_is_a_503_and_its_retry_succeeds(pg_app):
    hub = hub_state(pg_app)
    created = wall_clock_partner_time()
    partner = make_signing_partner(hub, now=created)
    member = make_member(hub, now=created)
    ended: list[bool] = []

    def idle_past_the_timeout(connection) -> None:  # type: ignore[no-untyped-def]
        # The request's transaction has begun; the server hears nothing from the hub for
        # longer than the session may idle in a transaction, as during a network cut.
        if not ended:
            ended.append(True)
            connection.exec_driver_sql("SET LOCAL idle_in_transaction_session_timeout = '50ms'")
            time.sleep(0.4)

    with serve(pg_app) as base_url:
        assert _earn(base_url, partner, member.card_number, "r-1", str(uuid.uuid4()))[0].status == 201
        before = books(hub)
        event.listen(hub.engine, "begin", idle_past_the_timeout)
        key = str(uuid.uuid4())
        try:
            reply, elapsed_s = _earn(base_url, partner, member.card_number, "r-2", key)
        finally:
            event.remove(hub.engine, "begin", idle_past_the_timeout)
        _assert_unavailable(reply, elapsed_s)
        assert books(hub) == before
        retried, _ = _earn(base_url, partner, member.card_number, "r-2", key)
    assert retried.status == 201, retried.raw
    assert retried.headers["idempotent-replayed"] == "false"


def test_a_conversation_with_the_server_that_lost_its_order_is_an_unavailable_database(pg_hub):
    # psycopg's own InternalError, with no SQLSTATE: what a switchover behind PgBouncer
    # produced ("received 2 results from command 'BEGIN'"). Nothing was kept, and the
    # connection it came from is not given back to the pool.
    from alliance.db import _connection_unusable

    lost = psycopg.InternalError("received 2 results from command 'BEGIN'")
    assert lost.sqlstate is None
    assert database_unavailable(DBAPIError.instance("BEGIN", {}, lost, psycopg.Error))
    server_side = psycopg.errors.lookup("XX000")("an internal error the server reported")
    assert not database_unavailable(DBAPIError.instance("SELECT 1", {}, server_side, psycopg.Error))
    with pg_hub.unit_of_work() as uow:
        driver = uow.session.connection().connection.driver_connection
        assert _connection_unusable(lost, driver)
        assert not _connection_unusable(psycopg.errors.UniqueViolation("duplicate"), driver)


def test_a_transaction_whose_server_session_ended_after_its_last_statement_closes_quietly(pg_hub, postgres_url):
    # A read answered, then the primary goes away before the request ends: closing the unit
    # of work cannot roll back on that connection. Nothing was kept, so there is nothing to
    # say; the connection is discarded and the reply already made stands (raising here, in
    # a request's teardown, would turn that reply into the web server's bare 500).
    with pg_hub.unit_of_work() as uow:
        assert uow.session.execute(text("SELECT 1")).scalar_one() == 1
        driver = uow.session.connection().connection.driver_connection
        assert terminate_backend(postgres_url, driver.info.backend_pid)
    assert driver.closed or driver.broken
    with pg_hub.unit_of_work() as uow:
        assert uow.session.execute(text("SELECT 1")).scalar_one() == 1


def test_a_refusal_whose_server_session_ends_as_its_nonce_commits_is_a_503_and_its_retry_is_refused_again(
        pg_app, postgres_url):
    # A write refused before its work began (a 422) keeps only its nonce, committed after its
    # reply is made. When the primary goes away just then, the reply becomes the retry-safe
    # 503 (nothing was kept), not a 500.
    hub = hub_state(pg_app)
    created = wall_clock_partner_time()
    partner = make_signing_partner(hub, now=created)
    member = make_member(hub, now=created)
    ended: list[int] = []

    def end_the_session_at_commit(connection) -> None:  # type: ignore[no-untyped-def]
        if not ended:
            ended.append(connection.connection.driver_connection.info.backend_pid)
            assert terminate_backend(postgres_url, ended[0])

    def arm_at_the_nonces_commit(response):  # type: ignore[no-untyped-def]
        event.listen(hub.engine, "commit", end_the_session_at_commit)
        return response

    malformed = {**purchase_payload("r-2", member.card_number), "amount_minor": "not a number"}
    with serve(pg_app) as base_url:
        assert _earn(base_url, partner, member.card_number, "r-1", str(uuid.uuid4()))[0].status == 201
        before = books(hub)
        # Runs ahead of the blueprint's own after_request hooks (they run last-registered first).
        pg_app.after_request_funcs["purchases"].append(arm_at_the_nonces_commit)
        started = time.monotonic()
        try:
            refused = send_signed(base_url, partner, "POST", "/partner/v1/purchases", malformed)
        finally:
            pg_app.after_request_funcs["purchases"].remove(arm_at_the_nonces_commit)
            event.remove(hub.engine, "commit", end_the_session_at_commit)
        elapsed_s = time.monotonic() - started
        assert ended
        _assert_unavailable(refused, elapsed_s)
        assert books(hub) == before
        again = send_signed(base_url, partner, "POST", "/partner/v1/purchases", malformed)
    assert again.status == 422, again.raw


def test_a_read_whose_server_session_ends_before_its_transaction_closes_keeps_its_answer(pg_app, postgres_url):
    # The partner's read has its answer, then the primary goes away before the read's
    # transaction is closed: the rollback cannot be sent, nothing needed keeping, and the
    # answer stands (in a request's teardown, raising here made the web server's bare 500).
    hub = hub_state(pg_app)
    created = wall_clock_partner_time()
    partner = make_signing_partner(hub, now=created)
    member = make_member(hub, now=created)
    ended: list[int] = []

    def end_the_session_after_the_read(connection) -> None:  # type: ignore[no-untyped-def]
        if not ended:
            ended.append(connection.connection.driver_connection.info.backend_pid)
            assert terminate_backend(postgres_url, ended[0])

    with serve(pg_app) as base_url:
        assert _earn(base_url, partner, member.card_number, "r-1", str(uuid.uuid4()))[0].status == 201
        event.listen(hub.engine, "rollback", end_the_session_after_the_read)
        try:
            read = send_signed(base_url, partner, "GET", "/partner/v1/purchases/r-1")
        finally:
            event.remove(hub.engine, "rollback", end_the_session_after_the_read)
        assert ended
        assert read.status == 200, read.raw
        assert read.body["receipt_id"] == "r-1"
        again = send_signed(base_url, partner, "GET", "/partner/v1/purchases/r-1")
    assert again.status == 200, again.raw
