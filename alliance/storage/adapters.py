"""Which adapter serves a database: the one place that asks what kind of database it is."""

from __future__ import annotations

from sqlalchemy import Connection, Engine
from sqlalchemy.orm import Session

from alliance.storage import Storage
from alliance.storage.postgresql import PostgresStorage
from alliance.storage.sqlite import SqliteStorage

# One adapter per kind of database, shared: they hold compiled statements, no state of a request.
_ADAPTERS: dict[str, Storage] = {"postgresql": PostgresStorage(), "sqlite": SqliteStorage()}


def storage_for(bind: Session | Connection | Engine) -> Storage:
    """The adapter of the database behind a session, connection or engine."""
    engine_or_connection = bind.get_bind() if isinstance(bind, Session) else bind
    adapter = _ADAPTERS.get(engine_or_connection.dialect.name)
    if adapter is None:
        raise LookupError(f"the hub runs on PostgreSQL or SQLite, not {engine_or_connection.dialect.name}")
    return adapter
