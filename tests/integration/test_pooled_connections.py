"""Pooled connections: one the server closed is replaced before use without a ping; a last write commits with it."""

from __future__ import annotations

import pytest
from sqlalchemy import event, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from alliance.config import Settings
from alliance.db import execute_and_commit, make_engine


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
        admin = make_engine(postgres_url, Settings(database_pool_size=1))
        with admin.connect() as killer:
            assert killer.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": stale_pid}).scalar_one()
            killer.execute(text("SELECT pg_sleep(0.2)"))
        admin.dispose()

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
            connection.execute(text("CREATE TABLE pipelined (id INTEGER PRIMARY KEY, v INTEGER NOT NULL CHECK (v > 0))"))
            connection.execute(text("INSERT INTO pipelined (id, v) VALUES (1, 1)"))
        raise_to = text("UPDATE pipelined SET v = :v WHERE id = 1")

        with Session(engine) as session:
            session.execute(text("INSERT INTO pipelined (id, v) VALUES (2, 2)"))
            execute_and_commit(session, raise_to, {"v": 5})
        with engine.connect() as connection:
            assert connection.execute(text("SELECT id, v FROM pipelined ORDER BY id")).all() == [(1, 5), (2, 2)]

        with Session(engine) as session:
            session.execute(text("INSERT INTO pipelined (id, v) VALUES (3, 3)"))
            with pytest.raises(IntegrityError):
                execute_and_commit(session, raise_to, {"v": -1})
        # Nothing of the failed transaction is kept, and the pool's connection is usable.
        with engine.connect() as connection:
            assert connection.execute(text("SELECT id, v FROM pipelined ORDER BY id")).all() == [(1, 5), (2, 2)]
    finally:
        engine.dispose()


def test_the_commit_sent_with_the_last_write_refuses_a_deferred_check_and_keeps_nothing(postgres_url):
    engine = make_engine(postgres_url, Settings(database_pool_size=1))
    try:
        with engine.begin() as connection:
            connection.execute(text(
                "CREATE TABLE parents (id INTEGER PRIMARY KEY);"
                "CREATE TABLE children (id INTEGER PRIMARY KEY, parent_id INTEGER NOT NULL"
                " REFERENCES parents (id) DEFERRABLE INITIALLY DEFERRED, note TEXT NOT NULL);"
                "INSERT INTO parents (id) VALUES (1);"
                "INSERT INTO children (id, parent_id, note) VALUES (1, 1, 'first')"))
        repoint = text("UPDATE children SET parent_id = :parent, note = :note WHERE id = 1")

        # The UPDATE itself passes; the deferred foreign key fails at the COMMIT sent with it.
        with Session(engine) as session:
            session.execute(text("INSERT INTO parents (id) VALUES (2)"))
            with pytest.raises(IntegrityError):
                execute_and_commit(session, repoint, {"parent": 99, "note": "orphan"})
        with engine.connect() as connection:
            assert connection.execute(text("SELECT id FROM parents ORDER BY id")).scalars().all() == [1]
            assert connection.execute(text("SELECT parent_id, note FROM children")).one() == (1, "first")

        # Values are bound as literals by psycopg: quotes, backslashes, semicolons and
        # non-ASCII text come back as they went in, and run nothing.
        hostile = "it's \\ a \"reply\"; DROP TABLE parents; -- \u00e9\u20ac\U0001f600 $$ %s %(note)s"
        with Session(engine) as session:
            execute_and_commit(session, repoint, {"parent": 1, "note": hostile})
        with engine.connect() as connection:
            assert connection.execute(text("SELECT note FROM children WHERE id = 1")).scalar_one() == hostile
            assert connection.execute(text("SELECT count(*) FROM parents")).scalar_one() == 1
    finally:
        engine.dispose()
