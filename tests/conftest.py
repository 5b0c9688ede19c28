"""Fixtures: a real PostgreSQL server for the session, a fresh migrated database per test.

The schema is migrated once into a template database (and a template SQLite file);
every test then gets its own copy, so tests may commit, run threads and corrupt data
freely without touching each other.
"""

from __future__ import annotations

import shutil
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

import pytest
from flask import Flask
from sqlalchemy import create_engine, text

from alliance import create_app, migrate
from alliance.config import Settings
from alliance.db import make_engine
from alliance.extensions import HubState, hub_state
from tests.postgres_server import PostgresServer, start_postgres

TEMPLATE_DATABASE = "alliance_template"
BACKENDS = ("postgres", "sqlite")


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """The PostgreSQL server of this test session."""
    server = start_postgres()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def postgres_admin(postgres: PostgresServer):  # type: ignore[no-untyped-def]
    """An autocommit engine on the maintenance database, with the migrated template made."""
    admin = create_engine(postgres.url("postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f"CREATE DATABASE {TEMPLATE_DATABASE}"))
    template = make_engine(postgres.url(TEMPLATE_DATABASE), Settings())
    migrate.upgrade(template)
    template.dispose()
    yield admin
    admin.dispose()


@pytest.fixture
def postgres_url(postgres: PostgresServer, postgres_admin) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """A fresh, migrated PostgreSQL database for one test."""
    name = f"test_{uuid.uuid4().hex[:16]}"
    with postgres_admin.connect() as connection:
        connection.execute(text(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE_DATABASE} STRATEGY FILE_COPY"))
    yield postgres.url(name)
    with postgres_admin.connect() as connection:
        connection.execute(text(f"DROP DATABASE {name} WITH (FORCE)"))


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite file to copy for each test."""
    path = tmp_path_factory.mktemp("sqlite-template") / "template.sqlite3"
    engine = make_engine(f"sqlite:///{path}", Settings())
    migrate.upgrade(engine)
    # Closing the last connection checkpoints the WAL into the file, so a copy is whole.
    engine.dispose()
    return path


@pytest.fixture
def sqlite_url(sqlite_template: Path, tmp_path: Path) -> str:
    """A fresh, migrated SQLite database for one test."""
    path = tmp_path / "alliance.sqlite3"
    shutil.copyfile(sqlite_template, path)
    return f"sqlite:///{path}"


def _app_for(url: str, instance_path: Path) -> Iterator[Flask]:
    settings = Settings(database_url=url, instance_path=str(instance_path), environment="test",
                        secret_key="test-secret-key")
    app = create_app(settings)
    app.config["TESTING"] = True
    yield app
    hub_state(app).engine.dispose()


@pytest.fixture(params=BACKENDS)
def app(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Flask]:
    """A hub on a fresh database, once on PostgreSQL and once on SQLite."""
    url = request.getfixturevalue(f"{request.param}_url")
    yield from _app_for(url, tmp_path / "instance")


@pytest.fixture
def pg_app(postgres_url: str, tmp_path: Path) -> Iterator[Flask]:
    """A hub on a fresh PostgreSQL database."""
    yield from _app_for(postgres_url, tmp_path / "instance")


@pytest.fixture
def hub(app: Flask) -> HubState:
    """The database state of the parametrized hub."""
    return hub_state(app)


@pytest.fixture
def pg_hub(pg_app: Flask) -> HubState:
    """The database state of the PostgreSQL hub."""
    return hub_state(pg_app)


@pytest.fixture
def now() -> datetime:
    """A fixed moment, so tests never depend on the wall clock."""
    return datetime(2026, 11, 2, 9, 30, tzinfo=timezone.utc)
