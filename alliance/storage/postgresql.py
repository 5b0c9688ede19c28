"""The storage adapter for PostgreSQL: the hub's production database.

The partner path's statements go straight through psycopg (``DriverStatement``), and
each request's writes are folded into as few round trips as the database allows: the
nonce, the key's confirmation, the idempotency claim and the operation's first read in
one statement; every posting and purchase of a report (or a batch of a thousand) in one;
the stored reply and ``COMMIT`` in one.
"""

from __future__ import annotations

import json
import threading
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any, TypeVar

import psycopg
from psycopg import ClientCursor
from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Executable,
    Select,
    String,
    any_,
    bindparam,
    cast,
    exists,
    extract,
    func,
    literal,
    select,
    text,
    true,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import BindParameter, ColumnClause
from sqlalchemy.sql.selectable import NamedFromClause, Subquery
from sqlalchemy.sql.visitors import ExternallyTraversible, iterate, replacement_traverse
from sqlalchemy.types import TypeEngine

from alliance.db import DriverStatement
from alliance.domain.signatures import KeyLookup, PartnerKeyRecord
from alliance.models import IdempotencyRecord, SeenNonce
from alliance.models.base import UTCDateTime
from alliance.storage import (
    ClaimAttempt,
    ClaimOutcome,
    EarnPosting,
    NonceRow,
    PendingWrite,
    PurchaseRow,
    WrittenEarns,
)
from alliance.storage.statements import (
    KEY_AND_NONCE,
    KEY_STILL_AS_VERIFIED,
    STORE_REPLY,
    key_confirmation,
    key_lookup,
    reply_parameters,
)

_Source = TypeVar("_Source")
_Built = TypeVar("_Built")

EXPECTED_GUARDS = frozenset({
    "trg_journal_entries_apply", "trg_lot_consumptions_apply", "trg_ledger_accounts_guard",
    "trg_ledger_accounts_no_delete", "trg_point_lots_guard", "trg_point_lots_no_delete",
    "trg_journal_entries_balanced", "trg_journal_transactions_balanced",
    "trg_journal_transactions_append_only", "trg_journal_entries_append_only", "trg_lot_consumptions_append_only",
    "trg_journal_transactions_no_truncate", "trg_journal_entries_no_truncate", "trg_lot_consumptions_no_truncate",
    "trg_audit_log_append_only", "trg_audit_log_no_truncate",
    "trg_settlement_runs_append_only", "trg_settlement_runs_no_truncate",
    "trg_statements_append_only", "trg_statements_no_truncate",
    "trg_statement_lines_append_only", "trg_statement_lines_no_truncate",
    "trg_ledger_accounts_open_at_zero", "trg_point_lots_open_full",
    "trg_adjustment_applications_append_only", "trg_adjustment_applications_no_truncate",
    "trg_statement_events_append_only", "trg_statement_events_no_truncate",
    "trg_reconciliation_reports_append_only",
    "trg_grade_overrides_append_only", "trg_grade_overrides_no_truncate",
    "trg_audit_checkpoints_append_only", "trg_audit_checkpoints_no_truncate",
})

# A claim without a nonce to spend (the request started over, its nonce already
# written): the insert happens only if the advisory lock was free; then the unique
# constraint decides.
CLAIM_UNDER_ADVISORY_LOCK = text("""
    INSERT INTO idempotency_keys (partner_id, idempotency_key, request_fingerprint, status, created_at)
    SELECT :claim_partner_id, :claim_key, :claim_fingerprint, 'in_flight', :claim_now
     WHERE pg_try_advisory_xact_lock(:claim_lock_key)
    ON CONFLICT (partner_id, idempotency_key) DO NOTHING
    RETURNING true AS claim_taken
""")

# Every earn of a write in one statement: the journal transactions (their ids drawn from
# the table's sequence, the sequence named once), their entries (in account id order within
# each transaction, the lock order), the lots, and last the purchases, whose ON CONFLICT
# skips a receipt another request stored meanwhile. Row triggers run at the end of the
# statement and the balance check at commit. The rows travel as two JSON documents:
# PostgreSQL parses them far faster than the driver can spell out two dozen arrays of a
# thousand quoted elements, and one row costs no more than an ordinary VALUES list. A
# purchase names its postings by position, looked up in the transaction ids' array rather
# than joined (a join over the materialized postings is a nested loop at a thousand rows),
# and the answer is one row of arrays.
WRITE_EARNS = text("""
WITH postings AS MATERIALIZED (
    SELECT posting.position, posting.member_id, posting.partner_id, posting.price_per_point, posting.currency,
           posting.memo, posting.funding_account_id, posting.target_account_id, posting.points, posting.state,
           posting.activates_at, posting.kind,
           nextval((SELECT CAST(pg_get_serial_sequence('journal_transactions', 'id') AS regclass)))
               AS transaction_id
      FROM json_to_recordset(CAST(:postings AS json))
           AS posting (position integer, member_id bigint, partner_id bigint, price_per_point numeric,
                       currency varchar, memo varchar, funding_account_id bigint, target_account_id bigint,
                       points bigint, state varchar, activates_at timestamptz, kind varchar)
), transaction_ids AS (
    SELECT array_agg(transaction_id ORDER BY position) AS ids FROM postings
), new_transactions AS (
    INSERT INTO journal_transactions (id, kind, member_id, partner_id, posted_at, price_per_point, currency, memo)
    SELECT transaction_id, kind, member_id, partner_id, :now, price_per_point, currency, memo
      FROM postings ORDER BY position
), new_entries AS (
    INSERT INTO journal_entries (transaction_id, account_id, amount_points)
    SELECT postings.transaction_id, line.account_id, line.amount_points
      FROM postings
           CROSS JOIN LATERAL (VALUES (postings.funding_account_id, -postings.points),
                                      (postings.target_account_id, postings.points)) AS line (account_id, amount_points)
     ORDER BY postings.position, line.account_id
), new_lots AS (
    INSERT INTO point_lots (member_id, partner_id, funding_account_id, earn_transaction_id, origin_lot_id, state,
                            points_earned, points_remaining, earned_at, activates_at, expires_at)
    SELECT member_id, partner_id, funding_account_id, transaction_id, NULL, state, points, points, :now,
           activates_at, :expires_at
      FROM postings ORDER BY position
    RETURNING earn_transaction_id, id
), new_purchases AS (
    INSERT INTO purchases (partner_id, receipt_id, member_id, card_id, terminal_id, amount_minor, currency,
                           purchased_at, reported_at, points_partner, points_hub, earn_transaction_id,
                           bonus_transaction_id, pending_until, breakdown, refunded_amount_minor)
    SELECT purchase.partner_id, purchase.receipt_id, purchase.member_id, purchase.card_id, purchase.terminal_id,
           purchase.amount_minor, purchase.currency, purchase.purchased_at, :now, purchase.points_partner,
           purchase.points_hub, transaction_ids.ids[purchase.earn_posting + 1],
           transaction_ids.ids[purchase.bonus_posting + 1], purchase.pending_until, purchase.breakdown, 0
      FROM json_to_recordset(CAST(:purchases AS json))
           AS purchase (item integer, partner_id bigint, receipt_id varchar, member_id bigint, card_id bigint,
                        terminal_id bigint, amount_minor bigint, currency varchar, purchased_at timestamptz,
                        points_partner bigint, points_hub bigint, earn_posting integer, bonus_posting integer,
                        pending_until timestamptz, breakdown json)
           CROSS JOIN transaction_ids
     ORDER BY purchase.item
        ON CONFLICT (partner_id, receipt_id) DO NOTHING
    RETURNING receipt_id, id
)
SELECT (SELECT ids FROM transaction_ids) AS transaction_ids,
       (SELECT array_agg(earn_transaction_id ORDER BY id) FROM new_lots) AS lot_transaction_ids,
       (SELECT array_agg(id ORDER BY id) FROM new_lots) AS lot_ids,
       (SELECT array_agg(receipt_id ORDER BY id) FROM new_purchases) AS receipt_ids,
       (SELECT array_agg(id ORDER BY id) FROM new_purchases) AS purchase_ids
""").columns(transaction_ids=postgresql.ARRAY(BigInteger), lot_transaction_ids=postgresql.ARRAY(BigInteger),
             lot_ids=postgresql.ARRAY(BigInteger), receipt_ids=postgresql.ARRAY(String),
             purchase_ids=postgresql.ARRAY(BigInteger))
# The columns' types matter only to SQLAlchemy's compiler; the driver returns psycopg's values.


class PostgresStorage:
    """``alliance.storage.Storage`` for PostgreSQL."""

    name = "postgresql"
    expected_guards = EXPECTED_GUARDS

    def __init__(self) -> None:
        self._driver_statements: dict[int, tuple[Executable, DriverStatement]] = {}
        self._claims_in_front: dict[int, tuple[Select[*tuple[Any, ...]], dict[bool, DriverStatement]]] = {}
        self._deferring_flush: dict[int, tuple[Select[*tuple[Any, ...]], DriverStatement]] = {}
        self._building = threading.Lock()
        self._claims = {confirm_key: DriverStatement(select(_claim_row(confirm_key))) for confirm_key in (False, True)}
        self._claim_alone = DriverStatement(CLAIM_UNDER_ADVISORY_LOCK)

    # --- signed requests --------------------------------------------------------------

    def look_up_key(self, session: Session, key_id: str, nonce: str) -> KeyLookup:
        return key_lookup(self.read(session, KEY_AND_NONCE, {"key_id": key_id, "nonce": nonce}))

    def record_nonce(self, session: Session, nonce: NonceRow) -> bool:
        recorded = session.connection().execute(_INSERT_NONCE, {
            "nonce": nonce.nonce, "partner_id": nonce.partner_id, "key_id": nonce.key_id, "seen_at": nonce.seen_at,
            "prune_after": nonce.prune_after}).first()
        return recorded is not None

    def key_still_as_verified(self, session: Session, key: PartnerKeyRecord, checked_at: datetime) -> bool:
        return session.execute(KEY_STILL_AS_VERIFIED, key_confirmation(key, checked_at)).first() is not None

    def claim(self, session: Session, attempt: ClaimAttempt) -> ClaimOutcome:
        """The nonce, the key's confirmation, the claim and the first read: one round trip.

        The claim takes a transaction-scoped advisory lock named after the (partner, key)
        without waiting, so a second request under a key whose first is still running is
        told at once to retry instead of queueing behind it.
        """
        connection = session.connection()
        parameters: dict[str, object] = {
            "claim_partner_id": attempt.partner_id, "claim_key": attempt.key,
            "claim_fingerprint": attempt.fingerprint, "claim_now": attempt.now, "claim_lock_key": attempt.lock_key}
        if attempt.nonce is None:
            rows = self._claim_alone.rows(connection, parameters)
            return ClaimOutcome(key_held=True, nonce_spent=True, claimed=bool(rows))
        confirm_key = attempt.key_to_confirm is not None
        nonce = attempt.nonce
        parameters.update({"claim_nonce": nonce.nonce, "claim_nonce_partner_id": nonce.partner_id,
                           "claim_nonce_key_id": nonce.key_id, "claim_seen_at": nonce.seen_at,
                           "claim_prune_after": nonce.prune_after})
        if attempt.key_to_confirm is not None:
            parameters.update(key_confirmation(attempt.key_to_confirm, nonce.seen_at))
        if attempt.first is None:
            rows = self._claims[confirm_key].rows(connection, parameters)
        else:
            carriers = self._claim_in_front_of(attempt.first.statement)
            rows = carriers[confirm_key].rows(connection, {
                **{FIRST_PREFIX + name: value for name, value in attempt.first.parameters.items()}, **parameters})
        outcome = rows[0]
        claimed = bool(outcome.claim_taken)
        first_rows = None
        if attempt.first is not None and claimed:
            first_rows = [row for row in rows if row.claim_first_row]
        return ClaimOutcome(key_held=bool(outcome.claim_key_held), nonce_spent=bool(outcome.claim_nonce_spent),
                            claimed=claimed, first_rows=first_rows)

    def _claim_in_front_of(self, first: Select[*tuple[Any, ...]]) -> dict[bool, DriverStatement]:
        return _built_once(self._claims_in_front, first, claim_in_front_of, self._building)

    def reply_write(self, *, partner_id: int, key: str, status: int, body: str, now: datetime) -> PendingWrite:
        return PendingWrite(STORE_REPLY, reply_parameters(partner_id=partner_id, key=key, status=status, body=body,
                                                          now=now))

    def execute_and_commit(self, session: Session, write: PendingWrite) -> None:
        """The write and a ``COMMIT`` as one simple-protocol query: one round trip.

        The values are bound by psycopg's client-side cursor (quoted by psycopg as SQL
        literals); the session's own commit then finds the transaction already committed
        and sends nothing. Any error (the write's, or a deferred ledger check's at
        ``COMMIT``) is raised as SQLAlchemy's usual exception, after the connection is
        discarded. Cheaper than psycopg's pipeline mode, which did the same in one round
        trip for about 0.1 ms more CPU per call. Not inside a savepoint: the ``COMMIT``
        would end the outer transaction under it.
        """
        if session.in_nested_transaction():
            raise RuntimeError("a commit with a last write ends the whole transaction; not inside a savepoint")
        # Whatever the ORM holds is written first: after this COMMIT nothing more may join.
        session.flush()
        connection = session.connection()
        sql, values = self._driver(write.statement).bound(connection, write.parameters)
        sql += ";\nCOMMIT"
        # Optional in SQLAlchemy's types (a pool entry may have none); a connection in use has
        # psycopg's, and a cast would be one more call per request.
        driver: psycopg.Connection[Any] = connection.connection.driver_connection  # type: ignore[assignment]
        try:
            with ClientCursor(driver) as cursor:
                cursor.execute(sql, values)
        except BaseException as error:
            connection.invalidate()
            if isinstance(error, driver.Error):
                raise DBAPIError.instance(sql, values, error, driver.Error, connection_invalidated=True) from error
            raise
        session.commit()

    def defer_commit_flush(self, session: Session) -> None:
        session.execute(text("SET LOCAL synchronous_commit TO OFF"))

    # --- purchases and earns ----------------------------------------------------------

    def read(self, session: Session, statement: Select[*tuple[Any, ...]],
             parameters: Mapping[str, object]) -> list[Any]:
        return self._driver(statement).rows(session.connection(), parameters)

    def read_deferring_flush(self, session: Session, statement: Select[*tuple[Any, ...]],
                             parameters: Mapping[str, object]) -> list[Any]:
        """The read with ``set_config('synchronous_commit', 'off', true)`` in its columns: ``SET LOCAL`` without
        a round trip of its own."""
        return _built_once(self._deferring_flush, statement, _deferring_flush, self._building).rows(
            session.connection(), parameters)

    def write_earns(self, session: Session, postings: Sequence[EarnPosting], purchases: Sequence[PurchaseRow],
                    *, now: datetime, expires_at: datetime) -> WrittenEarns:
        position_of = {(posting.item, posting.bonus): position for position, posting in enumerate(postings)}
        rows = self._driver(WRITE_EARNS).rows(session.connection(), {
            "now": now, "expires_at": expires_at,
            "postings": json.dumps([_posting_json(position, posting) for position, posting in enumerate(postings)]),
            "purchases": json.dumps([_purchase_json(purchase, position_of) for purchase in purchases]),
        })
        transaction_ids, lot_transaction_ids, lot_ids, receipt_ids, purchase_ids = rows[0]
        written = WrittenEarns()
        lots = dict(zip(lot_transaction_ids or (), lot_ids or (), strict=True))
        for posting, transaction_id in zip(postings, transaction_ids or (), strict=True):
            written.transaction_ids[(posting.item, posting.bonus)] = transaction_id
            written.lot_ids[(posting.item, posting.bonus)] = lots[transaction_id]
        written.purchase_ids.update(zip(receipt_ids or (), purchase_ids or (), strict=True))
        return written

    def one_of(self, column: ColumnElement[Any], values: Iterable[Any]) -> ColumnElement[bool]:
        """``column = ANY(array)``: one array parameter rather than a placeholder per value.

        A thousand placeholders make a new statement text every time, which the driver and
        the server then parse anew; ``= ANY(array)`` is one short statement, planned the same way.
        """
        return column == any_(bindparam(None, list(values), type_=postgresql.ARRAY(column.type)))

    def one_of_bound(self, column: ColumnElement[Any], name: str) -> ColumnElement[bool]:
        """``column = ANY(:name)``, the array typed as the column's: one parameter, and a hashed lookup.

        An expanding ``IN`` sends a placeholder per value (a statement text psycopg parses
        anew each time); an array of the driver's own choosing (``smallint[]`` for small
        ids) compares across types, which PostgreSQL cannot hash, so every row would scan it.
        """
        return column == any_(bindparam(name, type_=postgresql.ARRAY(column.type)))

    # --- locks and reports ------------------------------------------------------------

    def lock(self, session: Session, key: int) -> None:
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})

    def lock_many(self, session: Session, keys: Sequence[int]) -> None:
        """One statement: the array's keys in their order (the function scan yields them so, and the
        ORDER BY says it), each lock taken before the next is asked for, as separate statements would."""
        session.execute(_LOCK_MANY, {"keys": list(keys)})

    def month_of(self, column: ColumnElement[Any]) -> ColumnElement[str]:
        return func.to_char(func.timezone("UTC", column), "YYYY-MM")

    def epoch_seconds(self, column: ColumnElement[Any]) -> ColumnElement[int]:
        return cast(func.floor(extract("epoch", column)), BigInteger)

    def rows_table(self, name: str, columns: Sequence[tuple[str, TypeEngine[Any]]],
                   rows: Sequence[Sequence[Any]]) -> NamedFromClause | None:
        """``unnest`` of one array per column: the statement's text does not depend on the number of rows.

        A VALUES list of a thousand rows was a new text of 4,000 placeholders every time, compiled
        by SQLAlchemy and split by psycopg anew (0.1-0.15 s of CPU per closing of 1,000 cycles).
        """
        arrays = [bindparam(f"{name}_{column_name}", [row[index] for row in rows], type_=postgresql.ARRAY(type_))
                  for index, (column_name, type_) in enumerate(columns)]
        return func.unnest(*arrays).table_valued(
            *[ColumnClause(column_name, type_) for column_name, type_ in columns]).render_derived(name=name)

    def installed_guards(self, session: Session) -> set[str]:
        rows = session.execute(text("SELECT tgname FROM pg_trigger WHERE NOT tgisinternal AND tgenabled <> 'D'"))
        return {name for (name,) in rows}

    def guard_problem(self, session: Session) -> str | None:
        return None

    def _driver(self, statement: Executable) -> DriverStatement:
        return _built_once(self._driver_statements, statement, DriverStatement, self._building)


_LOCK_MANY = text(
    "SELECT pg_advisory_xact_lock(held.key) FROM unnest(CAST(:keys AS bigint[])) WITH ORDINALITY AS held(key, position)"
    " ORDER BY held.position")


def _built_once(cache: dict[int, tuple[_Source, _Built]], source: _Source, build: Callable[[_Source], _Built],
                lock: threading.Lock) -> _Built:
    """What ``build`` makes of ``source``, made once per process and kept by the source's identity.

    The source is kept beside what was built from it, so its id cannot be reused.
    """
    found = cache.get(id(source))
    if found is None:
        with lock:
            found = cache.get(id(source))
            if found is None:
                found = cache[id(source)] = (source, build(source))
    return found[1]


def _deferring_flush(statement: Select[*tuple[Any, ...]]) -> DriverStatement:
    """``statement`` setting ``synchronous_commit`` off for the rest of its transaction (once per row it reads)."""
    return DriverStatement(statement.add_columns(
        func.set_config("synchronous_commit", "off", true()).label("deferred_flush")))


_INSERT_NONCE = (postgresql.insert(SeenNonce.__table__).on_conflict_do_nothing(index_elements=["nonce"])
                 .returning(SeenNonce.__table__.c.nonce))


def _posting_json(position: int, posting: EarnPosting) -> dict[str, object]:
    return {"position": position, "member_id": posting.member_id,
            "partner_id": posting.partner_id, "price_per_point": _exact_text(posting.price_per_point),
            "currency": posting.currency, "memo": posting.memo, "funding_account_id": posting.funding_account_id,
            "target_account_id": posting.target_account_id, "points": posting.points, "state": posting.state,
            "activates_at": _exact_text(posting.activates_at), "kind": posting.kind}


def _purchase_json(purchase: PurchaseRow, position_of: dict[tuple[int, bool], int]) -> dict[str, object]:
    return {"item": purchase.item, "partner_id": purchase.partner_id, "receipt_id": purchase.receipt_id,
            "earn_posting": position_of.get((purchase.item, False)),
            "bonus_posting": position_of.get((purchase.item, True)),
            "member_id": purchase.member_id, "card_id": purchase.card_id, "terminal_id": purchase.terminal_id,
            "amount_minor": purchase.amount_minor, "currency": purchase.currency,
            "purchased_at": _exact_text(purchase.purchased_at), "points_partner": purchase.points_partner,
            "points_hub": purchase.points_hub, "pending_until": _exact_text(purchase.pending_until),
            "breakdown": purchase.breakdown}


def _exact_text(value: Decimal | datetime | None) -> str | None:
    """A price or moment as JSON carries it exactly: decimal text, or ISO 8601 in UTC."""
    if value is None:
        return None
    return value.astimezone(timezone.utc).isoformat() if isinstance(value, datetime) else str(value)


# ---------------------------------------------------------------- the claim's statement

# The claim-in-front statement's binds come in three namespaces: the claim's own
# (``claim_*``), the signing key's confirmation (``key_*``, ``KEY_STILL_AS_VERIFIED``)
# and the first read's, renamed ``first_*`` when the statement is built. Building it
# refuses any overlap, so a colliding name cannot reach the database.
FIRST_PREFIX = "first_"


def _named_binds(statement: ExternallyTraversible) -> set[str]:
    """The names of a statement's named binds (anonymous ones get unique names when compiled)."""
    return {element.key for element in iterate(statement)
            if isinstance(element, BindParameter) and not element.unique}


def _claim_row(confirm_key: bool) -> Subquery:
    """The request's nonce and its claim (and the signing key's confirmation) as a one-row subquery."""
    key_held = KEY_STILL_AS_VERIFIED.cte("key_held") if confirm_key else None
    nonce_row = select(bindparam("claim_nonce", type_=String), bindparam("claim_nonce_partner_id", type_=BigInteger),
                       bindparam("claim_nonce_key_id", type_=String), bindparam("claim_seen_at", type_=UTCDateTime),
                       bindparam("claim_prune_after", type_=UTCDateTime))
    if key_held is not None:
        nonce_row = nonce_row.where(exists(key_held.select()))
    spent = (postgresql.insert(SeenNonce)
             .from_select(["nonce", "partner_id", "key_id", "seen_at", "prune_after"], nonce_row)
             .on_conflict_do_nothing(index_elements=["nonce"]).returning(SeenNonce.nonce).cte("spent"))
    claim_row = select(bindparam("claim_partner_id", type_=BigInteger), bindparam("claim_key", type_=String),
                       bindparam("claim_fingerprint", type_=String), literal("in_flight"),
                       bindparam("claim_now", type_=UTCDateTime)).where(
        exists(spent.select()), func.pg_try_advisory_xact_lock(bindparam("claim_lock_key", type_=BigInteger)))
    claimed = (postgresql.insert(IdempotencyRecord)
               .from_select(["partner_id", "idempotency_key", "request_fingerprint", "status", "created_at"], claim_row)
               .on_conflict_do_nothing(index_elements=["partner_id", "idempotency_key"])
               .returning(IdempotencyRecord.idempotency_key).cte("claimed"))
    return select(
        (exists(key_held.select()) if key_held is not None else literal(True)).label("claim_key_held"),
        exists(spent.select()).label("claim_nonce_spent"),
        exists(claimed.select()).label("claim_taken"),
    ).subquery("claim")


def _in_first_namespace(statement: Select[*tuple[Any, ...]]) -> Select[*tuple[Any, ...]]:
    """``statement`` with each named bind renamed ``first_<name>`` (anonymous binds keep their generated names)."""
    def rename(element: ExternallyTraversible, **_kw: Any) -> BindParameter[Any] | None:
        if isinstance(element, BindParameter) and not element.unique:
            return bindparam(FIRST_PREFIX + element.key, value=element.value, type_=element.type,
                             required=element.required)
        return None

    # SQLAlchemy types the copy of anything but a column expression as any traversible;
    # it is a copy of the same kind, a Select here.
    return typing.cast("Select[*tuple[Any, ...]]", replacement_traverse(statement, {}, rename))


def claim_in_front_of(first: Select[*tuple[Any, ...]]) -> dict[bool, DriverStatement]:
    """``first`` with the claim in front, in one statement, by whether a cached key is confirmed too.

    The nonce is spent and the key claimed first (the subquery's CTEs run before the
    statement's rows are read), and ``first`` runs only if the claim was taken: a request
    refused or answered from a stored reply reads and locks nothing of it.
    """
    renamed = _in_first_namespace(first)
    statements: dict[bool, DriverStatement] = {}
    for confirm_key in (False, True):
        claim_row = _claim_row(confirm_key)
        if collisions := _named_binds(claim_row) & _named_binds(renamed):
            raise ValueError(f"the first read's binds {sorted(collisions)} collide with the claim's")
        carried = (renamed.add_columns(literal(True).label("claim_first_row"))
                   .where(claim_row.c.claim_taken).lateral("first_statement"))
        statements[confirm_key] = DriverStatement(select(claim_row, carried)
                                                  .select_from(claim_row.outerjoin(carried, true())))
    return statements

