"""Engines and sessions for PostgreSQL and the embedded SQLite default.

Everything that depends on how the hub reaches its databases is decided here: the
connection options for direct sessions or PgBouncer's transaction pooling, which
failures mean the database is unavailable (a retry-safe 503), where report reads go
(a replica that keeps up, else the primary), and which engine migrations run on.
"""

from __future__ import annotations

import functools
import logging
import select
import threading
import time
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, TypeAlias, cast

import psycopg
from psycopg import RawCursor
from psycopg.pq import ExecStatus
from psycopg.rows import RowMaker, namedtuple_row
from sqlalchemy import (
    Connection,
    Engine,
    Executable,
    TypeDecorator,
    create_engine,
    event,
    text,
)
from sqlalchemy.engine import ExceptionContext, make_url
from sqlalchemy.exc import DBAPIError, DisconnectionError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from alliance.config import Settings
from alliance.observability import metrics

if TYPE_CHECKING:
    import sqlite3

    from sqlalchemy.engine import Dialect
    from sqlalchemy.engine.default import DefaultDialect
    from sqlalchemy.pool import ConnectionPoolEntry, PoolProxiedConnection
    from sqlalchemy.sql.compiler import SQLCompiler
    from sqlalchemy.sql.elements import ClauseElement

    # A bind or result processor of a statement's type: a value in, the value converted.
    _Process: TypeAlias = Callable[[Any], Any]
    # A statement compiled with $n placeholders: SQL, compiled form, bind processors, SQL as sent, bind order.
    _Numbered: TypeAlias = tuple[str, SQLCompiler, list[tuple[str, _Process]], bytes | str, list[str]]
    # A statement compiled for one dialect: the dialect, SQL, compiled form, bind processors by name, result
    # processors by column index, the row factory, and the statement with $n placeholders.
    _Compiled: TypeAlias = tuple["Dialect", str, SQLCompiler, list[tuple[str, _Process]], list[tuple[int, _Process]],
                                 "_NamedTupleRowsKept", _Numbered]

SQLITE_FILE_NAME = "alliance.sqlite3"
TUPLES_OK = ExecStatus.TUPLES_OK
# SQLSTATE of a write in a read-only transaction: on a standby (a demoted primary), or
# where the server's default_transaction_read_only is on.
READ_ONLY_SQL_TRANSACTION = "25006"
# The server is shutting down, crashed or is still starting: admin_shutdown,
# crash_shutdown, cannot_connect_now.
SERVER_GOING_SQLSTATES = frozenset({"57P01", "57P02", "57P03"})
# The server ended this session for being idle: idle_in_transaction_session_timeout
# (a client whose network was cut mid-transaction) and idle_session_timeout. The
# transaction was rolled back with the session.
SESSION_TIMED_OUT_SQLSTATES = frozenset({"25P03", "57P05"})
# Class 08, connection exceptions: also how PgBouncer reports a server it cannot reach.
CONNECTION_EXCEPTION_CLASS = "08"
# Report reads look at the replica's replay lag at most this often per process.
REPLICA_LAG_CHECK_INTERVAL_S = 1.0
# 0 when the replica has replayed all the WAL it received; else how old the last
# transaction it replayed is (NULL when it has replayed none since it started).
REPLICA_LAG_SQL = text(
    "SELECT CASE WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0"
    " ELSE EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp()) END"
)
WRITABLE_SQL = text("SELECT pg_is_in_recovery(), current_setting('transaction_read_only') = 'on'")
logger = logging.getLogger(__name__)


def database_url(settings: Settings, instance_path: str | Path) -> str:
    """The configured URL, or a SQLite file in the instance folder."""
    if settings.database_url:
        return normalise_url(settings.database_url)
    return f"sqlite:///{Path(instance_path) / SQLITE_FILE_NAME}"


def normalise_url(url: str) -> str:
    """Send plain ``postgresql://`` URLs to the psycopg 3 driver we install."""
    parsed = make_url(url)
    if parsed.drivername in {"postgresql", "postgres"}:
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def make_engine(url: str, settings: Settings, *, pool: str = "primary") -> Engine:
    """Create an engine with the per-database settings the ledger relies on.

    ``pool`` names the engine in the metrics (primary, replica). SQL parameters are left
    out of error messages: they may be personal data, and error messages reach the logs.
    """
    url = normalise_url(url)
    if make_url(url).get_backend_name() == "sqlite":
        engine = create_engine(url, connect_args={"timeout": settings.sqlite_busy_timeout_ms / 1000},
                               hide_parameters=True)
        _configure_sqlite(engine, settings)
        metrics.instrument_pool(engine, pool)
        return engine
    engine = create_engine(url, pool_size=settings.database_pool_size, max_overflow=settings.database_pool_size,
                           connect_args=_postgres_connect_args(settings), hide_parameters=True,
                           poolclass=metrics.pool_class(pool))
    metrics.instrument_pool(engine, pool)
    event.listen(engine, "checkout", _refuse_connection_closed_by_server)
    event.listen(engine, "checkin", _leave_read_write_to_the_server)
    event.listen(engine, "handle_error", _discard_unusable_connections)
    return engine


def _leave_read_write_to_the_server(dbapi_connection: psycopg.Connection[Any] | None,
                                    _record: ConnectionPoolEntry) -> None:
    """Pool ``checkin``: after a read-only session, let the server's default decide again.

    SQLAlchemy undoes ``postgresql_readonly`` by setting psycopg's ``read_only`` to False,
    after which every transaction on the connection begins ``READ WRITE``; a standby (a
    demoted primary, or the replica's own lag check) refuses that outright with
    "cannot set transaction read-write mode during recovery" instead of refusing the
    write (25006). None sends a plain ``BEGIN``, as a connection never lent out does.
    """
    if dbapi_connection is not None and not dbapi_connection.closed and dbapi_connection.read_only is not None:
        dbapi_connection.read_only = None


def _postgres_connect_args(settings: Settings) -> dict[str, object]:
    """psycopg's connection options for how the hub reaches PostgreSQL.

    Behind PgBouncer's transaction pooling each transaction may run on another server
    session, so nothing may outlive a transaction. The hub keeps to that everywhere:
    advisory locks are ``pg_advisory_xact_lock``, settings are ``SET LOCAL``, READ ONLY
    and isolation levels go with each ``BEGIN``; ``tests/unit/test_transaction_scope``
    checks the source for the rest. What psycopg adds on its own is preparing: a query
    run five times on a connection (``prepare_threshold``) becomes a named statement
    on the server session it ran on, and the next transaction, on another session,
    fails with 'prepared statement "_pg3_0" does not exist' (or 'already exists').
    PgBouncer 1.18 predates protocol-level prepared statements, so preparing is off
    there; each statement is then parsed and planned by the server every time, which
    costs a signed earn about 1.4 ms more database CPU (1.9 -> 3.3 ms) and 0.4 ms more
    of the hub's (measured in process, direct to PostgreSQL, batches of 300 earns
    alternating between the two modes).

    A connection attempt gives up after ``ALLIANCE_DATABASE_CONNECT_TIMEOUT_S``, so a
    request during a failover ends as a 503 instead of waiting on a host that is gone.
    """
    connect_args: dict[str, object] = {"connect_timeout": settings.database_connect_timeout_s}
    if settings.database_pooling == "transaction":
        connect_args["prepare_threshold"] = None
    return connect_args


def _server_refuses_writes(error: BaseException, driver_connection: psycopg.Connection[Any]) -> bool:
    """A read-write transaction refused as read-only: the server is a standby now, or was made read-only.

    A session that asked for a read-only transaction (report reads) and wrote anyway has
    a bug, not a server to leave.
    """
    return getattr(error, "sqlstate", None) == READ_ONLY_SQL_TRANSACTION and not driver_connection.read_only


def _discard_unusable_connections(context: ExceptionContext) -> None:
    """``handle_error``: a connection whose server refuses writes is discarded like a lost one.

    During a failover a new connection may still reach the demoted primary for a moment;
    SQLAlchemy then discards this connection (only this one: the others may well reach
    the new primary already), and the next checkout connects afresh. A connection whose
    conversation with the server lost its order goes the same way. ``DriverStatement``
    does the same for the statements it sends.
    """
    connection = context.connection
    if connection is None or connection.invalidated or context.is_disconnect:
        return
    # The handler is registered on PostgreSQL engines only, whose driver connections are psycopg's.
    driver_connection = cast("psycopg.Connection[Any]", connection.connection.driver_connection)
    if _connection_unusable(context.original_exception, driver_connection):
        context.is_disconnect = True
        context.invalidate_pool_on_disconnect = False


def database_unavailable(error: BaseException) -> bool:
    """Whether a failure means the database cannot serve right now, so the same request may simply be retried.

    True for a connection refused, lost or timed out (psycopg's error carries no
    SQLSTATE then: the server never answered), a conversation with the server that
    lost its order (see ``_protocol_lost``), a server shutting down, crashed or
    starting (57P01-57P03), a session the server ended for idling (25P03, 57P05), a
    connection exception (class 08, PgBouncer's own refusals included), and a write
    refused by a server that became read-only (25006, when the session had not asked
    for a read-only transaction: the pool discarded it). The transaction did not
    commit in each case, or, when the connection broke during ``COMMIT``, the
    partner's retry under the same Idempotency-Key finds what it did.
    """
    if not isinstance(error, DBAPIError) or not isinstance(error.orig, psycopg.Error):
        return False
    sqlstate = error.orig.sqlstate
    if sqlstate is None:
        return isinstance(error.orig, psycopg.OperationalError) or _protocol_lost(error.orig)
    if sqlstate == READ_ONLY_SQL_TRANSACTION:
        return error.connection_invalidated
    return (sqlstate.startswith(CONNECTION_EXCEPTION_CLASS) or sqlstate in SERVER_GOING_SQLSTATES
            or sqlstate in SESSION_TIMED_OUT_SQLSTATES)


def _protocol_lost(error: BaseException) -> bool:
    """psycopg's own InternalError (no SQLSTATE): the server's replies no longer match what was sent.

    Seen behind PgBouncer during a switchover, when the server session under a client
    connection died and PgBouncer's error arrived ahead of the reply to the next
    ``BEGIN`` ("received 2 results from command 'BEGIN'"). Nothing on that connection
    can be trusted again, so it is discarded, and the request is retried like one on
    a lost connection.
    """
    return isinstance(error, psycopg.InternalError) and error.sqlstate is None


def _connection_unusable(error: BaseException, driver_connection: psycopg.Connection[Any]) -> bool:
    """Whether the connection an error came from must not go back to the pool."""
    return (driver_connection.broken or driver_connection.closed or _protocol_lost(error)
            or _server_refuses_writes(error, driver_connection))


def accepts_writes(engine: Engine) -> tuple[bool, str]:
    """Whether the database takes writes now, and why not: a standby, or read-only by default.

    Raises SQLAlchemy's error when the database cannot be reached.
    """
    with engine.connect() as connection:
        if connection.dialect.name != "postgresql":
            connection.execute(text("SELECT 1"))
            return True, "writable"
        in_recovery, read_only = connection.execute(WRITABLE_SQL).one()
    if in_recovery:
        return False, "the server is a standby (in recovery)"
    if read_only:
        return False, "the server's transactions are read-only (default_transaction_read_only)"
    return True, "writable"


@contextmanager
def migration_engine(settings: Settings, engine: Engine) -> Iterator[Engine]:
    """The engine migrations run on: ``ALLIANCE_MIGRATION_DATABASE_URL`` if set, else the hub's own.

    Behind PgBouncer, migrations go straight to the primary: a connection of their own
    for the one transaction that holds the migration lock, with PostgreSQL's own
    sessions (so psycopg may prepare as usual).
    """
    if not settings.migration_database_url:
        yield engine
        return
    direct = make_engine(settings.migration_database_url, replace(settings, database_pooling="session"),
                         pool="migration")
    try:
        yield direct
    finally:
        direct.dispose()


def _refuse_connection_closed_by_server(dbapi_connection: psycopg.Connection[Any], _record: ConnectionPoolEntry,
                                        _proxy: PoolProxiedConnection) -> None:
    """Pool ``checkout``: replace a pooled connection the server has closed, without a round trip.

    A database restart must cost no request a 500 (partner calls, the console and the
    CLI alike), so a stale pooled connection is replaced before use. SQLAlchemy's
    ``pool_pre_ping`` does that with a query per checkout, about 5% of a signed earn.
    A server that ends a connection (restart, ``pg_terminate_backend``, idle timeout)
    sends its FATAL message and closes the socket, so an idle connection with anything
    to read, or already marked broken, is stale: raising ``DisconnectionError`` makes
    the pool discard it and check out (or open) another. What a poll cannot see, a
    server host gone without a word, a pre-ping could not answer quickly either.
    """
    if dbapi_connection.closed or dbapi_connection.broken:
        raise DisconnectionError("the pooled connection is closed")
    poller = select.poll()
    poller.register(dbapi_connection.fileno(), select.POLLIN | select.POLLPRI)
    if poller.poll(0):
        raise DisconnectionError("the server closed the pooled connection")


def _configure_sqlite(engine: Engine, settings: Settings) -> None:
    """WAL, foreign keys, and ``BEGIN IMMEDIATE`` so writers queue instead of failing.

    pysqlite's own transaction handling would start transactions lazily and upgrade a
    read lock to a write lock mid-way, which fails under concurrency; taking the write
    lock at BEGIN makes every unit of work serialisable on SQLite.
    """

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: sqlite3.Connection, _record: ConnectionPoolEntry) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={int(settings.sqlite_busy_timeout_ms)}")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions that keep loaded objects usable after commit."""
    return sessionmaker(engine, expire_on_commit=False, autoflush=False)


class ReadRouting:
    """Where report reads go: a streaming replica while its replay lag is within bound, else the primary.

    Reports, grading, exports and statement listings may be a few seconds behind; a
    balance, a PIN check and every write may not, and never come here. Sessions from
    here run read-only transactions (``BEGIN READ ONLY`` on PostgreSQL) on either
    server, so a write that strays into one fails instead of reaching the primary
    unnoticed. The lag is measured on the replica, at most once a second per process
    (``REPLICA_LAG_CHECK_INTERVAL_S``), by one thread while the others keep the last
    verdict; a replica that cannot be reached or cannot tell its lag counts as behind.
    """

    def __init__(self, primary: Engine, replica: Engine | None, *, max_lag_s: float) -> None:
        self._primary = make_session_factory(primary.execution_options(postgresql_readonly=True))
        self.replica_engine = replica
        self._replica = (make_session_factory(replica.execution_options(postgresql_readonly=True))
                         if replica is not None else None)
        self._max_lag_s = max_lag_s
        self._checking = threading.Lock()
        self._checked_at_s = float("-inf")
        self._replica_keeps_up = False

    @classmethod
    def for_settings(cls, settings: Settings, primary: Engine) -> "ReadRouting":
        """The routing ``settings`` describe: with ``ALLIANCE_REPLICA_DATABASE_URL``'s replica, if set."""
        replica = (make_engine(settings.replica_database_url, settings, pool="replica")
                   if settings.replica_database_url else None)
        return cls(primary, replica, max_lag_s=settings.replica_max_lag_s)

    def session_factory(self) -> sessionmaker[Session]:
        """Read-only sessions on the replica if it keeps up, else on the primary."""
        if self._replica is not None and self._replica_within_bound():
            return self._replica
        return self._primary

    def _replica_within_bound(self) -> bool:
        if time.monotonic() - self._checked_at_s >= REPLICA_LAG_CHECK_INTERVAL_S and \
                self._checking.acquire(blocking=False):
            try:
                lag_s = self.replica_lag_s()
                keeps_up = lag_s is not None and lag_s <= self._max_lag_s
                if keeps_up != self._replica_keeps_up:
                    logger.warning("report reads now go to the %s (replica lag %s s, bound %s s)",
                                   "replica" if keeps_up else "primary", "unknown" if lag_s is None else f"{lag_s:.1f}",
                                   self._max_lag_s)
                self._replica_keeps_up = keeps_up
                self._checked_at_s = time.monotonic()
            finally:
                self._checking.release()
        return self._replica_keeps_up

    def replica_lag_s(self) -> float | None:
        """The replica's replay lag now, in seconds; None when there is no replica or it cannot say."""
        if self.replica_engine is None:
            return None
        try:
            with self.replica_engine.connect() as connection:
                lag_s = connection.execute(REPLICA_LAG_SQL).scalar_one()
        except SQLAlchemyError:
            return None
        return None if lag_s is None else float(lag_s)

    def dispose(self) -> None:
        """Close the replica's pooled connections (the primary's engine is its owner's)."""
        if self.replica_engine is not None:
            self.replica_engine.dispose()


class DriverStatement:
    """A hot statement that skips SQLAlchemy's execution layer on PostgreSQL.

    Compiled once per dialect to psycopg's own SQL and parameter style, bind values run
    through the statement's types, then sent by psycopg directly on the session's
    connection, in its transaction: about 0.06 ms of Python less per statement (measured
    in process over 2,000 signed earns: 3.03 -> 2.62 ms of CPU each, with the partner
    path's six hottest statements sent this way). Rows come back as named tuples of psycopg's values (``numeric`` as
    ``Decimal``, ``json`` parsed), with the statement's TypeDecorator result types
    applied (``UTCDateTime``); any other database runs the statement through
    SQLAlchemy as usual. SQLAlchemy's execution events do not see it, and it takes no
    expanding parameters (``in_()`` lists), Python-side column defaults or ``onupdate``:
    it is for fixed, hot statements.
    """

    def __init__(self, statement: Executable) -> None:
        self.statement = statement
        self._compiled: dict[int, _Compiled] = {}

    def rows(self, connection: Connection, parameters: Mapping[str, object]) -> list[Any]:
        """Execute and return every row (attribute access by column name); none for a statement returning none."""
        if connection.dialect.name != "postgresql":
            result = connection.execute(self.statement, parameters)
            return list(result.all()) if result.returns_rows else []
        _, _, _, _, results, row_factory, (sql, compiled, processors, encoded, order) = self._compile(connection)
        named = self._values(compiled, processors, parameters)
        values = [named[name] for name in order]
        # SQLAlchemy types the driver's connection as optional (a pool entry may have none);
        # a connection in use has psycopg's, and a cast would be one more call per statement.
        driver: psycopg.Connection[Any] = connection.connection.driver_connection  # type: ignore[assignment]
        # PostgreSQL's own $n placeholders, the statement compiled so once: psycopg need
        # not parse the SQL for placeholders on every call (it caches that only for
        # statements under 4 KB and 50 parameters; the claim in front of a read is longer).
        cursor = RawCursor(driver, row_factory=row_factory)
        try:
            cursor.execute(encoded, values)
            # The result's status, not ``cursor.description``: that builds a column object
            # per column on every call.
            pgresult = cursor.pgresult
            rows = cursor.fetchall() if pgresult is not None and pgresult.status == TUPLES_OK else []
            if results and rows:
                rows = [row._replace(**{row._fields[index]: process(row[index]) for index, process in results})
                        for row in rows]
            return rows
        except driver.Error as error:
            # As SQLAlchemy would: a connection the error broke, or one to a server that
            # now refuses writes, is not given back to the pool.
            unusable = _connection_unusable(error, driver)
            if unusable:
                connection.invalidate()
            raise DBAPIError.instance(sql, values, error, driver.Error, connection_invalidated=unusable) from error
        finally:
            cursor.close()

    def bound(self, connection: Connection, parameters: Mapping[str, object]) -> tuple[str, MutableMapping[str, Any]]:
        """PostgreSQL: the statement in psycopg's SQL and its values, run through the statement's types."""
        _, sql, compiled, processors, *_ = self._compile(connection)
        return sql, self._values(compiled, processors, parameters)

    @staticmethod
    def _values(compiled: SQLCompiler, processors: list[tuple[str, _Process]],
                parameters: Mapping[str, object]) -> MutableMapping[str, Any]:
        values = compiled.construct_params(parameters)
        for name, process in processors:
            values[name] = process(values[name])
        return values

    def _compile(self, connection: Connection) -> _Compiled:
        dialect = connection.dialect
        found = self._compiled.get(id(dialect))
        if found is None or found[0] is not dialect:
            compiled = _compiled_for(self.statement, dialect)
            processors: dict[str, _Process] = {}
            for bind, name in compiled.bind_names.items():
                process = bind.type.dialect_impl(dialect).bind_processor(dialect)
                if process is not None:
                    processors[name] = process
            # psycopg's own values stand for SQLAlchemy's built-in types; our TypeDecorators
            # (UTCDateTime) still process theirs.
            results: list[tuple[int, _Process]] = [
                (index, functools.partial(column.type.process_result_value, dialect=dialect))
                for index, column in enumerate(getattr(self.statement, "selected_columns", ()))
                if isinstance(column.type, TypeDecorator)]
            sql = str(compiled)
            found = self._compiled[id(dialect)] = (dialect, sql, compiled, list(processors.items()), results,
                                                   _NamedTupleRowsKept(), self._compile_numbered(dialect))
        return found


    def _compile_numbered(self, dialect: Dialect) -> _Numbered:
        """The statement with $n placeholders: SQL, compiled form, bind processors, SQL as sent, bind order."""
        # Every dialect SQLAlchemy makes is a DefaultDialect, whose constructor takes the paramstyle.
        numbered = cast("type[DefaultDialect]", type(dialect))(paramstyle="numeric_dollar")
        # What the connection's dialect learnt from the server (tests check that the two
        # compile to the same SQL but for the placeholders).
        numbered.server_version_info = dialect.server_version_info
        compiled = _compiled_for(self.statement, numbered)
        processors: dict[str, _Process] = {}  # by name: a name bound in several places is one value, processed once
        for bind, name in compiled.bind_names.items():
            process = bind.type.dialect_impl(dialect).bind_processor(dialect)
            if process is not None:
                processors[name] = process
        sql = str(compiled)
        # Given as bytes, psycopg need not encode it on every call (our SQL is ASCII;
        # anything else is left for psycopg to encode in the connection's encoding).
        encoded = sql.encode("ascii") if sql.isascii() else sql
        # A positional paramstyle such as numeric_dollar always orders the binds.
        order = cast("list[str]", compiled.positiontup)
        return sql, compiled, list(processors.items()), encoded, list(order)


def _compiled_for(statement: Executable, dialect: Dialect) -> SQLCompiler:
    """``statement`` compiled for ``dialect`` (once per statement and dialect, not per call).

    Every statement a ``DriverStatement`` sends is a Core statement, a ClauseElement too,
    which a dialect's statement compiler compiles.
    """
    return cast("SQLCompiler", cast("ClauseElement", statement).compile(dialect=dialect))


class _NamedTupleRowsKept:
    """psycopg row factory: rows as named tuples of the class made for one statement's first result.

    psycopg's ``namedtuple_row`` reads every column's name from the result, on every
    call, to look the class up again; a ``DriverStatement``'s SQL is fixed, so is its
    result's shape.
    """

    __slots__ = ("_make",)

    def __init__(self) -> None:
        self._make: RowMaker[NamedTuple] | None = None

    def __call__(self, cursor: psycopg.Cursor[Any]) -> RowMaker[NamedTuple]:
        make = self._make
        if make is None:
            make = namedtuple_row(cursor)
            result = cursor.pgresult
            if result is not None and result.status == TUPLES_OK:
                self._make = make
        return make
