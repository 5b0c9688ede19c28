"""Migrations: from empty to head, down to base and up again, and agreeing with the models."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import inspect, text

from alliance import migrate
from alliance.config import Settings
from alliance.db import make_engine
from alliance.models import Base


@pytest.fixture(params=["postgres", "sqlite"])
def empty_engine(request, tmp_path):
    """An engine on a database with no tables at all."""
    if request.param == "sqlite":
        engine = make_engine(f"sqlite:///{tmp_path / 'empty.sqlite3'}", Settings())
        yield engine
        engine.dispose()
        return
    postgres = request.getfixturevalue("postgres")
    admin = request.getfixturevalue("postgres_admin")
    name = f"empty_{uuid.uuid4().hex[:12]}"
    with admin.connect() as connection:
        connection.execute(text(f"CREATE DATABASE {name}"))
    engine = make_engine(postgres.url(name), Settings())
    yield engine
    engine.dispose()
    with admin.connect() as connection:
        connection.execute(text(f"DROP DATABASE {name} WITH (FORCE)"))


def table_names(engine) -> set[str]:
    return set(inspect(engine).get_table_names()) - {"alembic_version"} - migrate.GUARD_TABLES


def test_upgrade_from_empty_creates_every_model_table(empty_engine):
    assert table_names(empty_engine) == set()
    migrate.upgrade(empty_engine)
    assert migrate.current_revision(empty_engine) == migrate.head_revision(empty_engine)
    assert table_names(empty_engine) == set(Base.metadata.tables)


def test_models_and_migrations_agree(empty_engine):
    migrate.upgrade(empty_engine)
    assert migrate.pending_model_changes(empty_engine) == []


def test_downgrade_to_base_and_upgrade_again(empty_engine):
    migrate.upgrade(empty_engine)
    migrate.downgrade(empty_engine, "base")
    assert migrate.current_revision(empty_engine) is None
    assert table_names(empty_engine) == set()
    migrate.upgrade(empty_engine)
    assert table_names(empty_engine) == set(Base.metadata.tables)
    with empty_engine.connect() as connection:
        hub_accounts = connection.execute(text("SELECT code FROM ledger_accounts ORDER BY id")).scalars().all()
    assert hub_accounts == ["hub:marketing", "hub:breakage", "hub:rounding"]


def test_upgrade_twice_is_harmless(empty_engine):
    migrate.upgrade(empty_engine)
    migrate.upgrade(empty_engine)
    assert migrate.current_revision(empty_engine) == migrate.head_revision(empty_engine)


def test_each_revision_downgrades_one_step_and_upgrades_again(empty_engine):
    migrate.upgrade(empty_engine)
    head = migrate.current_revision(empty_engine)
    migrate.downgrade(empty_engine, "-1")
    assert migrate.current_revision(empty_engine) != head
    migrate.upgrade(empty_engine)
    assert migrate.current_revision(empty_engine) == head
    assert migrate.pending_model_changes(empty_engine) == []
