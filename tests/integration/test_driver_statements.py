"""Hot statements sent straight through psycopg (``alliance.db.DriverStatement``) behave as through SQLAlchemy."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import Column, MetaData, String, Table, bindparam, insert, literal, select, text
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session

from alliance.config import Settings
from alliance.db import DriverStatement, make_engine
from alliance.models.base import IdType, UTCDateTime
from tests.postgres_server import terminate_backend

metadata = MetaData()
things = Table("driver_things", metadata, Column("id", IdType, primary_key=True),
               Column("name", String(20), unique=True, nullable=False), Column("seen_at", UTCDateTime, nullable=False))

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=timezone.utc)
INSERT_THING = insert(things).values(name=bindparam("name"), seen_at=bindparam("seen_at")).returning(things.c.id)
# Typed binds (a UTC timestamp), literal binds (True, a LIMIT), a subquery, labels.
THINGS_SEEN_SINCE = (
    select(things.c.id, things.c.name, things.c.seen_at, literal(True).label("found"),
           select(things.c.name).order_by(things.c.id).limit(1).scalar_subquery().label("first_name"))
    .where(things.c.seen_at >= bindparam("since", type_=UTCDateTime))
    .order_by(things.c.id)
)


@pytest.fixture(params=["postgresql", "sqlite"])
def engine(request, postgres_url, sqlite_url):  # type: ignore[no-untyped-def]
    engine = make_engine(postgres_url if request.param == "postgresql" else sqlite_url, Settings(database_pool_size=1))
    metadata.create_all(engine)
    yield engine
    engine.dispose()


def test_rows_match_what_sqlalchemy_returns(engine):
    with Session(engine) as session:
        for name, hours in (("a", 3), ("b", 1), ("c", 0)):
            DriverStatement(INSERT_THING).rows(session.connection(),
                                               {"name": name, "seen_at": NOW - timedelta(hours=hours)})
        session.commit()
        if engine.dialect.name == "postgresql":
            # psycopg hands timestamps back in the session's zone; UTCDateTime makes them UTC.
            session.execute(text("SET TIME ZONE 'Asia/Kolkata'"))
        through_driver = DriverStatement(THINGS_SEEN_SINCE).rows(session.connection(),
                                                                 {"since": NOW - timedelta(hours=2)})
        through_sqlalchemy = session.execute(THINGS_SEEN_SINCE, {"since": NOW - timedelta(hours=2)}).all()
    assert [tuple(row) for row in through_driver] == [tuple(row) for row in through_sqlalchemy]
    assert [(row.name, row.found, row.first_name) for row in through_driver] == [("b", True, "a"), ("c", True, "a")]
    assert [row.seen_at.isoformat() for row in through_driver] == ["2026-11-30T11:00:00+00:00",
                                                                   "2026-11-30T12:00:00+00:00"]


def test_bind_values_go_through_the_column_types(engine):
    # UTCDateTime refuses a naive timestamp before anything is sent.
    with Session(engine) as session, pytest.raises(Exception, match="timezone-aware"):
        DriverStatement(INSERT_THING).rows(session.connection(), {"name": "naive", "seen_at": datetime(2026, 11, 30)})


def test_it_runs_in_the_sessions_transaction(engine):
    with Session(engine) as session:
        DriverStatement(INSERT_THING).rows(session.connection(), {"name": "kept?", "seen_at": NOW})
        session.rollback()
    with Session(engine) as session:
        assert session.execute(text("SELECT count(*) FROM driver_things")).scalar_one() == 0


def test_a_database_error_is_sqlalchemys_and_the_session_rolls_back(engine):
    with Session(engine) as session:
        DriverStatement(INSERT_THING).rows(session.connection(), {"name": "twice", "seen_at": NOW})
        with pytest.raises(IntegrityError):
            DriverStatement(INSERT_THING).rows(session.connection(), {"name": "twice", "seen_at": NOW})
        session.rollback()
        DriverStatement(INSERT_THING).rows(session.connection(), {"name": "after", "seen_at": NOW})
        session.commit()
    with Session(engine) as session:
        assert session.execute(select(things.c.name)).scalars().all() == ["after"]


def test_a_connection_the_error_broke_is_invalidated_like_sqlalchemy_does(postgres_url):
    engine = make_engine(postgres_url, Settings(database_pool_size=1))
    metadata.create_all(engine)
    try:
        with Session(engine) as session:
            pid = session.execute(text("SELECT pg_backend_pid()")).scalar_one()
            terminate_backend(postgres_url, pid)
            with pytest.raises(OperationalError) as raised:
                DriverStatement(THINGS_SEEN_SINCE).rows(session.connection(), {"since": NOW})
            assert raised.value.connection_invalidated
            session.rollback()
        with Session(engine) as session:
            assert session.execute(text("SELECT pg_backend_pid()")).scalar_one() != pid
    finally:
        engine.dispose()


def test_one_statement_reused_keeps_its_rows_shape_from_an_empty_result_on(engine):
    seen_since, insert_thing = DriverStatement(THINGS_SEEN_SINCE), DriverStatement(INSERT_THING)
    rename = DriverStatement(text("UPDATE driver_things SET name = :new WHERE name = :old"))
    with Session(engine) as session:
        assert seen_since.rows(session.connection(), {"since": NOW}) == []
        for name in ("a", "b"):
            insert_thing.rows(session.connection(), {"name": name, "seen_at": NOW})
        # A statement that returns no rows gives none, every time.
        assert rename.rows(session.connection(), {"new": "c", "old": "b"}) == []
        assert rename.rows(session.connection(), {"new": "d", "old": "c"}) == []
        rows = seen_since.rows(session.connection(), {"since": NOW})
        again = seen_since.rows(session.connection(), {"since": NOW})
    assert [(row.name, row.found, row.first_name) for row in rows] == [("a", True, "a"), ("d", True, "a")]
    assert again == rows and type(again[0]) is type(rows[0])


def test_a_name_bound_in_several_places_is_one_value_processed_once_with_none_and_bytes_as_sent(engine):
    # JSON's bind processor serialises: run twice it would store a JSON string of JSON.
    from sqlalchemy import JSON, LargeBinary, cast

    # Two bind objects of one name, as a statement built from parts has.
    statement = select(
        cast(bindparam("payload", type_=JSON), String).label("once"),
        cast(bindparam("payload", type_=JSON), String).label("again"),
        bindparam("missing", type_=String).label("missing"), bindparam("raw", type_=LargeBinary).label("raw"),
        (bindparam("n", type_=IdType) + bindparam("n", type_=IdType)).label("twice_n"),
    )
    with Session(engine) as session:
        row, = DriverStatement(statement).rows(session.connection(), {"payload": {"a": [1, "é"]}, "missing": None,
                                                                      "raw": b"\x00\xff", "n": 21})
    assert row.once == row.again == '{"a": [1, "\\u00e9"]}'
    assert (row.missing, bytes(row.raw), row.twice_n) == (None, b"\x00\xff", 42)


def test_every_hot_statement_sends_the_same_sql_with_postgresqls_own_placeholders():
    # DriverStatement compiles each statement again with $n placeholders for psycopg's
    # RawCursor; it must be the SQL SQLAlchemy's psycopg dialect renders, placeholders aside.
    import re

    from sqlalchemy.dialects.postgresql import psycopg as psycopg_dialect

    from alliance.services import member_verification, purchases
    from alliance.storage import postgresql
    from alliance.storage import statements as shared

    adapter = postgresql.PostgresStorage()
    statements = [*adapter._claims.values(), adapter._claim_alone,
                  *postgresql.claim_in_front_of(purchases.CARD_HOLDER_IN_CONTEXT).values()]
    statements += [adapter._driver(statement) for statement in (
        shared.KEY_AND_NONCE, shared.STORE_REPLY, postgresql.WRITE_EARNS, purchases.CARD_HOLDER_IN_CONTEXT,
        member_verification.CARD_FOR_PIN_CHECK)]
    assert len({id(statement) for statement in statements}) >= 8
    named_dialect = psycopg_dialect.dialect()
    for statement in statements:
        named = statement.statement.compile(dialect=named_dialect)
        numbered = statement._compile_numbered(named_dialect)
        sql, _, _, _, order = numbered
        expected = re.sub(r"%\((\w+)\)s", lambda match: f"${order.index(match.group(1)) + 1}", str(named))
        assert sql == expected.replace("%%", "%"), str(named)[:200]
        assert sorted(order) == sorted(set(named.bind_names.values()))
