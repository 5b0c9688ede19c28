"""Which adapter serves a database: the one place that asks what kind of database it is."""

from __future__ import annotations

from sqlalchemy import Connection, Engine
from sqlalchemy.orm import Session

from alliance.storage import Storage
from alliance.storage.postgresql import PostgresStorage
from alliance.storage.sqlite import SqliteStorage

# One adapter per kind of database, shared: they hold compiled statements, no state of a request.
_ADAPTERS: dict[str, Storage] = {"postgresql": PostgresStorage(), "sqlite": SqliteStorage()}


_SESSION_INFO_KEY = "alliance.storage"


def storage_for(bind: Session | Connection | Engine) -> Storage:
    """The adapter of the database behind a session, connection or engine.

    A session keeps its adapter in ``session.info`` once asked: the partner path asks
    several times per request, and finding a session's bind is not free.
    """
    if isinstance(bind, Session):
        kept = bind.info.get(_SESSION_INFO_KEY)
        if kept is not None:
            return kept
        adapter = _adapter(bind.get_bind())
        bind.info[_SESSION_INFO_KEY] = adapter
        return adapter
    return _adapter(bind)


def _adapter(engine_or_connection: Connection | Engine) -> Storage:
    adapter = _ADAPTERS.get(engine_or_connection.dialect.name)
    if adapter is None:
        raise LookupError(f"the hub runs on PostgreSQL or SQLite, not {engine_or_connection.dialect.name}")
    return adapter
