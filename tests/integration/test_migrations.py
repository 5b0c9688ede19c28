"""Migrations: from empty to head, down to base and up again, and agreeing with the models."""

from __future__ import annotations

import uuid
from datetime import datetime, time, timezone

import pytest
from sqlalchemy import Time, bindparam, inspect, text
from sqlalchemy.exc import IntegrityError

from alliance import migrate
from alliance.config import Settings
from alliance.db import make_engine
from alliance.models import Base
from alliance.models.base import UTCDateTime


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


IDEMPOTENCY_COLUMNS = ("partner_id, idempotency_key, request_fingerprint, status, response_status, response_body, "
                       "created_at, completed_at")


def idempotency_records(engine) -> list[tuple[object, ...]]:  # type: ignore[no-untyped-def]
    with engine.connect() as connection:
        return [tuple(row) for row in connection.execute(text(
            f"SELECT {IDEMPOTENCY_COLUMNS} FROM idempotency_keys ORDER BY partner_id, idempotency_key"))]


def test_idempotency_records_are_kept_when_their_key_becomes_the_natural_key_and_back(empty_engine):
    migrate.upgrade(empty_engine, "0035")
    at = datetime(2026, 12, 7, 4, 0, tzinfo=timezone.utc)
    with empty_engine.begin() as connection:
        partner_id = connection.execute(text(
            "INSERT INTO partners (code, name, status, currency, time_zone, settlement_cycle, settlement_cutoff_local,"
            " return_window_days, created_at) VALUES ('shop', 'Shop', 'active', 'EUR', 'Europe/Berlin', 'monthly',"
            " :cutoff, 0, :at) RETURNING id").bindparams(bindparam("cutoff", type_=Time()),
                                                         bindparam("at", type_=UTCDateTime())),
            {"cutoff": time(0, 0), "at": at}).scalar_one()
        connection.execute(text(f"INSERT INTO idempotency_keys ({IDEMPOTENCY_COLUMNS}) VALUES (:partner_id, :key,"
                                " :fingerprint, :status, :reply_status, :body, :at, :completed_at)").bindparams(
            bindparam("at", type_=UTCDateTime()), bindparam("completed_at", type_=UTCDateTime())), [
            {"partner_id": partner_id, "key": "k-done", "fingerprint": "a" * 64, "status": "completed",
             "reply_status": 201, "body": '{"points": 12}', "at": at, "completed_at": at},
            {"partner_id": partner_id, "key": "k-running", "fingerprint": "b" * 64, "status": "in_flight",
             "reply_status": None, "body": None, "at": at, "completed_at": None},
        ])
    kept = idempotency_records(empty_engine)
    assert len(kept) == 2

    migrate.upgrade(empty_engine, "0036")
    assert idempotency_records(empty_engine) == kept
    key = inspect(empty_engine).get_pk_constraint("idempotency_keys")
    assert (key["name"], key["constrained_columns"]) == ("pk_idempotency_keys", ["idempotency_key", "partner_id"])
    assert "id" not in {column["name"] for column in inspect(empty_engine).get_columns("idempotency_keys")}
    assert {index["name"] for index in inspect(empty_engine).get_indexes("idempotency_keys")} >= {
        "ix_idempotency_keys_created_at"}
    assert [check["name"] for check in inspect(empty_engine).get_check_constraints("idempotency_keys")] == [
        "ck_idempotency_keys_status"]
    with pytest.raises(IntegrityError), empty_engine.begin() as connection:
        connection.execute(text(f"INSERT INTO idempotency_keys ({IDEMPOTENCY_COLUMNS}) SELECT {IDEMPOTENCY_COLUMNS}"
                                " FROM idempotency_keys WHERE idempotency_key = 'k-done'"))

    migrate.downgrade(empty_engine, "0035")
    assert idempotency_records(empty_engine) == kept
    with empty_engine.connect() as connection:
        ids = connection.execute(text("SELECT id FROM idempotency_keys")).scalars().all()
    assert len(set(ids)) == 2 and None not in ids
    assert inspect(empty_engine).get_pk_constraint("idempotency_keys")["constrained_columns"] == ["id"]
    with pytest.raises(IntegrityError), empty_engine.begin() as connection:
        connection.execute(text(f"INSERT INTO idempotency_keys ({IDEMPOTENCY_COLUMNS}) SELECT {IDEMPOTENCY_COLUMNS}"
                                " FROM idempotency_keys WHERE idempotency_key = 'k-done'"))


def test_idempotency_keys_keep_room_on_each_page_for_the_reply_as_the_models_say(empty_engine):
    from sqlalchemy.dialects import postgresql
    from sqlalchemy.schema import CreateTable

    from alliance.models import IdempotencyRecord

    migrate.upgrade(empty_engine)
    modelled = str(CreateTable(IdempotencyRecord.__table__).compile(dialect=postgresql.dialect()))
    assert "WITH (fillfactor = 90)" in modelled
    if empty_engine.dialect.name != "postgresql":
        return  # SQLite has no fill factor
    with empty_engine.connect() as connection:
        options = connection.scalar(text("SELECT reloptions FROM pg_class WHERE relname = 'idempotency_keys'"))
    assert options == ["fillfactor=90"]
    migrate.downgrade(empty_engine, "0036")
    with empty_engine.connect() as connection:
        assert connection.scalar(text("SELECT reloptions FROM pg_class WHERE relname = 'idempotency_keys'")) is None
