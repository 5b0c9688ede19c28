"""Pooled connections: one the server closed is replaced before use without a ping; a last write commits with it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from psycopg.pq import Trace
from sqlalchemy import event, text
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session

from alliance.config import Settings
from alliance.db import make_engine
from alliance.storage import PendingWrite
from alliance.storage.adapters import storage_for
from tests.postgres_server import terminate_backend


def _engine(postgres_url: str):  # type: ignore[no-untyped-def]
    return make_engine(postgres_url, Settings(database_pool_size=2))


def test_a_connection_the_server_terminated_is_replaced_at_checkout(postgres_url):
    engine = _engine(postgres_url)
    try:
        with engine.connect() as connection:
            stale_pid = connection.execute(text("SELECT pg_backend_pid()")).scalar_one()
        # Back in the pool; the server now ends that session (as a restart would).
        with engine.connect() as other:
            other_pid = other.execute(text("SELECT pg_backend_pid()")).scalar_one()
        assert other_pid == stale_pid, "the pool hands back its one idle connection"
        assert terminate_backend(postgres_url, stale_pid)

        with engine.connect() as connection:
            fresh_pid = connection.execute(text("SELECT pg_backend_pid()")).scalar_one()
        assert fresh_pid != stale_pid
    finally:
        engine.dispose()


def test_a_live_pooled_connection_is_kept(postgres_url):
    engine = _engine(postgres_url)
    statements: list[str] = []
    event.listen(engine, "before_cursor_execute",
                 lambda _c, _cur, statement, *_: statements.append(statement))
    try:
        with engine.connect() as connection:
            first_pid = connection.execute(text("SELECT pg_backend_pid()")).scalar_one()
        statements.clear()
        with engine.connect() as connection:
            assert connection.execute(text("SELECT pg_backend_pid()")).scalar_one() == first_pid
        # The same session, and the checkout sent nothing through the engine.
        assert statements == ["SELECT pg_backend_pid()"]
        assert not engine.pool._pre_ping
    finally:
        engine.dispose()


@pytest.mark.parametrize("backend", ["postgresql", "sqlite"])
def test_a_last_write_and_its_commit_in_one_round_trip_keep_the_write_or_nothing(backend, postgres_url, sqlite_url):
    engine = make_engine(postgres_url if backend == "postgresql" else sqlite_url, Settings(database_pool_size=1))
    try:
        with engine.begin() as connection:
            connection.execute(text("CREATE TABLE last_writes"
                                    " (id INTEGER PRIMARY KEY, v INTEGER NOT NULL CHECK (v > 0))"))
            connection.execute(text("INSERT INTO last_writes (id, v) VALUES (1, 1)"))
        raise_to = text("UPDATE last_writes SET v = :v WHERE id = 1")

        with Session(engine) as session:
            session.execute(text("INSERT INTO last_writes (id, v) VALUES (2, 2)"))
            storage_for(session).execute_and_commit(session, PendingWrite(raise_to, {"v": 5}))
        with engine.connect() as connection:
            assert connection.execute(text("SELECT id, v FROM last_writes ORDER BY id")).all() == [(1, 5), (2, 2)]

        with Session(engine) as session:
            session.execute(text("INSERT INTO last_writes (id, v) VALUES (3, 3)"))
            with pytest.raises(IntegrityError):
                storage_for(session).execute_and_commit(session, PendingWrite(raise_to, {"v": -1}))
        # Nothing of the failed transaction is kept, and the pool's connection is usable.
        with engine.connect() as connection:
            assert connection.execute(text("SELECT id, v FROM last_writes ORDER BY id")).all() == [(1, 5), (2, 2)]
    finally:
        engine.dispose()


def _frontend_messages(trace: Path) -> list[str]:
    """The messages libpq sent (``F`` records of its protocol trace; a query's newlines continue a record)."""
    records = re.split(r"^(?=[FB]\t)", trace.read_text(), flags=re.MULTILINE)
    return [" ".join(record.split("\t")[2:]).strip() for record in records if record.startswith("F\t")]


@pytest.fixture
def parents_and_children(postgres_url):  # type: ignore[no-untyped-def]
    engine = make_engine(postgres_url, Settings(database_pool_size=1))
    with engine.begin() as connection:
        connection.execute(text(
            "CREATE TABLE parents (id INTEGER PRIMARY KEY);"
            "CREATE TABLE children (id INTEGER PRIMARY KEY, parent_id INTEGER NOT NULL"
            " REFERENCES parents (id) DEFERRABLE INITIALLY DEFERRED, note TEXT NOT NULL);"
            "INSERT INTO parents (id) VALUES (1);"
            "INSERT INTO children (id, parent_id, note) VALUES (1, 1, 'first')"))
    yield engine
    engine.dispose()


REPOINT = text("UPDATE children SET parent_id = :parent, note = :note WHERE id = 1")


def test_the_commit_goes_with_the_last_write_and_refuses_a_deferred_check_keeping_nothing(parents_and_children):
    engine = parents_and_children
    with Session(engine) as session:
        session.execute(text("INSERT INTO parents (id) VALUES (2)"))
        # The UPDATE itself passes; the deferred foreign key fails at the COMMIT sent with it
        # (sent alone, the UPDATE would pass and the session's commit raise instead).
        with pytest.raises(IntegrityError) as raised:
            storage_for(session).execute_and_commit(session, PendingWrite(REPOINT, {"parent": 99, "note": "orphan"}))
    assert raised.value.orig.sqlstate == "23503"
    assert raised.value.statement.startswith("UPDATE children") and raised.value.statement.endswith("COMMIT")
    assert raised.value.connection_invalidated
    with engine.connect() as connection:
        assert connection.execute(text("SELECT id FROM parents ORDER BY id")).scalars().all() == [1]
        assert connection.execute(text("SELECT parent_id, note FROM children")).one() == (1, "first")


def test_a_committed_last_write_sends_nothing_more_and_binds_hostile_text_as_a_literal(parents_and_children, tmp_path):
    engine = parents_and_children
    # Quotes, backslashes, semicolons, placeholders and non-ASCII text come back as they
    # went in, and run nothing.
    hostile = "it's \\ a \"reply\"; DROP TABLE parents; -- \u00e9\u20ac\U0001f600 $$ %s %(note)s"
    trace = tmp_path / "libpq.trace"
    with Session(engine) as session:
        driver = session.connection().connection.driver_connection
        with trace.open("w") as traced:
            driver.pgconn.trace(traced.fileno())
            driver.pgconn.set_trace_flags(Trace.SUPPRESS_TIMESTAMPS)
            storage_for(session).execute_and_commit(session, PendingWrite(REPOINT, {"parent": 1, "note": hostile}))
            driver.pgconn.untrace()
    sent = _frontend_messages(trace)
    # psycopg's BEGIN, then the write with its COMMIT; the session's commit sent nothing.
    assert [message.split(" ", 1)[0] for message in sent] == ["Query", "Query"], sent
    assert sent[0].rstrip().endswith('"BEGIN"') and sent[1].rstrip().endswith('COMMIT"')
    with engine.connect() as connection:
        assert connection.execute(text("SELECT note FROM children WHERE id = 1")).scalar_one() == hostile
        assert connection.execute(text("SELECT count(*) FROM parents")).scalar_one() == 1


def test_a_connection_lost_before_the_last_write_is_replaced_and_nothing_is_kept(parents_and_children, postgres_url):
    engine = parents_and_children
    with Session(engine) as session:
        session.execute(text("INSERT INTO parents (id) VALUES (3)"))
        pid = session.execute(text("SELECT pg_backend_pid()")).scalar_one()
        terminate_backend(postgres_url, pid)
        with pytest.raises(OperationalError) as raised:
            storage_for(session).execute_and_commit(session, PendingWrite(REPOINT, {"parent": 3, "note": "lost"}))
        assert raised.value.connection_invalidated
        session.rollback()
    with engine.connect() as connection:
        assert connection.execute(text("SELECT pg_backend_pid()")).scalar_one() != pid
        assert connection.execute(text("SELECT id FROM parents ORDER BY id")).scalars().all() == [1]
        assert connection.execute(text("SELECT parent_id, note FROM children")).one() == (1, "first")


def test_it_refuses_to_commit_from_inside_a_savepoint(parents_and_children):
    with Session(parents_and_children) as session:
        session.execute(text("INSERT INTO parents (id) VALUES (4)"))
        with session.begin_nested(), pytest.raises(RuntimeError, match="savepoint"):
            storage_for(session).execute_and_commit(session, PendingWrite(REPOINT, {"parent": 4, "note": "nested"}))
        session.rollback()
    with parents_and_children.connect() as connection:
        assert connection.execute(text("SELECT note FROM children")).scalar_one() == "first"
