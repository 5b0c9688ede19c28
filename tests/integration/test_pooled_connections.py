"""A pooled PostgreSQL connection the server has closed is replaced before use, without a ping per checkout."""

from __future__ import annotations

from sqlalchemy import event, text

from alliance.config import Settings
from alliance.db import make_engine


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
