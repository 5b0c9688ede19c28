"""The storage adapter for SQLite: the embedded default.

Every writing transaction begins ``BEGIN IMMEDIATE`` (``alliance.db``), so it holds the
database's one write lock from its start: claims, nonces and postings cannot race, and
a named lock is simply the transaction having begun. Statements go through SQLAlchemy
as usual; several rows are written as one multi-row insert.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Integer, Select, String, bindparam, cast, func, insert, text
from sqlalchemy.dialects import sqlite
from sqlalchemy.orm import Session
from sqlalchemy.sql.selectable import NamedFromClause
from sqlalchemy.types import TypeEngine

from alliance.domain.signatures import KeyLookup, PartnerKeyRecord
from alliance.models import IdempotencyRecord, JournalEntry, JournalTransaction, PointLot, Purchase, SeenNonce
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

EXPECTED_GUARDS = frozenset({
    "trg_journal_transactions_open_balance", "trg_journal_entries_balance", "trg_journal_balances_open_unbalanced",
    "trg_journal_balances_guard", "trg_journal_balances_no_delete",
    "trg_journal_entries_apply", "trg_lot_consumptions_apply", "trg_ledger_accounts_no_delete",
    "trg_ledger_accounts_guard", "trg_point_lots_guard",
    "trg_point_lots_no_delete",
    "trg_journal_transactions_no_update", "trg_journal_transactions_no_delete",
    "trg_journal_entries_no_update", "trg_journal_entries_no_delete",
    "trg_lot_consumptions_no_update", "trg_lot_consumptions_no_delete",
    "trg_audit_log_no_update", "trg_audit_log_no_delete",
    "trg_settlement_runs_no_update", "trg_settlement_runs_no_delete",
    "trg_statements_no_update", "trg_statements_no_delete",
    "trg_statement_lines_no_update", "trg_statement_lines_no_delete",
    "trg_ledger_accounts_open_at_zero", "trg_point_lots_open_full",
    "trg_adjustment_applications_no_update", "trg_adjustment_applications_no_delete",
    "trg_statement_events_no_update", "trg_statement_events_no_delete",
    "trg_reconciliation_reports_no_update", "trg_reconciliation_reports_no_delete",
    "trg_grade_overrides_no_update", "trg_grade_overrides_no_delete",
})

_INSERT_NONCE = (sqlite.insert(SeenNonce.__table__).on_conflict_do_nothing(index_elements=["nonce"])
                 .returning(SeenNonce.__table__.c.nonce))
_INSERT_CLAIM = (sqlite.insert(IdempotencyRecord.__table__)
                 .on_conflict_do_nothing(index_elements=["partner_id", "idempotency_key"])
                 .returning(IdempotencyRecord.__table__.c.idempotency_key))
_INSERT_TRANSACTIONS = insert(JournalTransaction.__table__).returning(JournalTransaction.__table__.c.id,
                                                                      sort_by_parameter_order=True)
_INSERT_ENTRIES = insert(JournalEntry.__table__)
_INSERT_LOTS = insert(PointLot.__table__).returning(PointLot.__table__.c.id, sort_by_parameter_order=True)
_INSERT_PURCHASES = (sqlite.insert(Purchase.__table__)
                     .on_conflict_do_nothing(index_elements=["partner_id", "receipt_id"])
                     .returning(Purchase.__table__.c.receipt_id, Purchase.__table__.c.id))


class SqliteStorage:
    """``alliance.storage.Storage`` for SQLite."""

    name = "sqlite"
    expected_guards = EXPECTED_GUARDS

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
        """The key's confirmation, the nonce and the claim, one statement each; the first read is left to the caller."""
        nonce = attempt.nonce
        if attempt.key_to_confirm is not None:
            if nonce is None:
                raise ValueError("a key is confirmed together with the request's nonce")
            if not self.key_still_as_verified(session, attempt.key_to_confirm, nonce.seen_at):
                return ClaimOutcome(key_held=False, nonce_spent=False, claimed=False)
        if nonce is not None and not self.record_nonce(session, nonce):
            return ClaimOutcome(key_held=True, nonce_spent=False, claimed=False)
        inserted = session.connection().execute(_INSERT_CLAIM, {
            "partner_id": attempt.partner_id, "idempotency_key": attempt.key,
            "request_fingerprint": attempt.fingerprint, "status": "in_flight", "created_at": attempt.now,
        }).first()
        return ClaimOutcome(key_held=True, nonce_spent=True, claimed=inserted is not None)

    def reply_write(self, *, partner_id: int, key: str, status: int, body: str, now: datetime) -> PendingWrite:
        return PendingWrite(STORE_REPLY, reply_parameters(partner_id=partner_id, key=key, status=status, body=body,
                                                          now=now))

    def execute_and_commit(self, session: Session, write: PendingWrite) -> None:
        if session.in_nested_transaction():
            raise RuntimeError("a commit with a last write ends the whole transaction; not inside a savepoint")
        session.connection().execute(write.statement, write.parameters)
        session.commit()

    def defer_commit_flush(self, session: Session) -> None:
        """Nothing to do: the embedded database's commits already run with ``synchronous=NORMAL``."""

    # --- purchases and earns ----------------------------------------------------------

    def read(self, session: Session, statement: Select[*tuple[Any, ...]],
             parameters: Mapping[str, object]) -> list[Any]:
        result = session.connection().execute(statement, parameters)
        return list(result.all()) if result.returns_rows else []

    def write_earns(self, session: Session, postings: Sequence[EarnPosting], purchases: Sequence[PurchaseRow],
                    *, now: datetime, expires_at: datetime) -> WrittenEarns:
        connection = session.connection()
        written = WrittenEarns()
        if postings:
            transaction_ids = list(connection.execute(_INSERT_TRANSACTIONS, [
                {"kind": posting.kind, "member_id": posting.member_id, "partner_id": posting.partner_id,
                 "posted_at": now, "price_per_point": posting.price_per_point, "currency": posting.currency,
                 "hold_id": None, "reverses_transaction_id": None, "transfer_id": None, "memo": posting.memo}
                for posting in postings]).scalars())
            entries = []
            for posting, transaction_id in zip(postings, transaction_ids, strict=True):
                # In account id order within each transaction: the lock order of every posting.
                lines = sorted([(posting.funding_account_id, -posting.points),
                                (posting.target_account_id, posting.points)])
                entries += [{"transaction_id": transaction_id, "account_id": account_id, "amount_points": points}
                            for account_id, points in lines]
            connection.execute(_INSERT_ENTRIES, entries)
            lot_ids = list(connection.execute(_INSERT_LOTS, [
                {"member_id": posting.member_id, "partner_id": posting.partner_id,
                 "funding_account_id": posting.funding_account_id, "earn_transaction_id": transaction_id,
                 "origin_lot_id": None, "state": posting.state, "points_earned": posting.points,
                 "points_remaining": posting.points, "earned_at": now, "activates_at": posting.activates_at,
                 "expires_at": expires_at}
                for posting, transaction_id in zip(postings, transaction_ids, strict=True)]).scalars())
            for posting, transaction_id, lot_id in zip(postings, transaction_ids, lot_ids, strict=True):
                written.transaction_ids[(posting.item, posting.bonus)] = transaction_id
                written.lot_ids[(posting.item, posting.bonus)] = lot_id
        if purchases:
            stored = connection.execute(_INSERT_PURCHASES, [
                {"partner_id": purchase.partner_id, "receipt_id": purchase.receipt_id, "member_id": purchase.member_id,
                 "card_id": purchase.card_id, "terminal_id": purchase.terminal_id,
                 "amount_minor": purchase.amount_minor, "currency": purchase.currency,
                 "purchased_at": purchase.purchased_at, "reported_at": now,
                 "points_partner": purchase.points_partner, "points_hub": purchase.points_hub,
                 "earn_transaction_id": written.transaction_ids.get((purchase.item, False)),
                 "bonus_transaction_id": written.transaction_ids.get((purchase.item, True)),
                 "pending_until": purchase.pending_until, "breakdown": purchase.breakdown,
                 "refunded_amount_minor": 0}
                for purchase in purchases])
            written.purchase_ids.update((receipt_id, purchase_id) for receipt_id, purchase_id in stored)
        return written

    def read_deferring_flush(self, session: Session, statement: Select[*tuple[Any, ...]],
                             parameters: Mapping[str, object]) -> list[Any]:
        """The read alone: commits here never wait for more than ``synchronous=NORMAL`` (``defer_commit_flush``)."""
        return self.read(session, statement, parameters)

    def one_of(self, column: ColumnElement[Any], values: Iterable[Any]) -> ColumnElement[bool]:
        return column.in_(list(values))

    def one_of_bound(self, column: ColumnElement[Any], name: str) -> ColumnElement[bool]:
        return column.in_(bindparam(name, expanding=True))

    # --- locks and reports ------------------------------------------------------------

    def lock(self, session: Session, key: int) -> None:
        """``BEGIN IMMEDIATE`` already holds the database's one write lock; any statement makes sure it has begun."""
        session.execute(text("SELECT 1"))

    def lock_many(self, session: Session, keys: Sequence[int]) -> None:
        """The one write lock covers every key."""
        session.execute(text("SELECT 1"))

    def month_of(self, column: ColumnElement[Any]) -> ColumnElement[str]:
        return cast(func.strftime("%Y-%m", column), String)

    def epoch_seconds(self, column: ColumnElement[Any]) -> ColumnElement[int]:
        return cast(func.strftime("%s", column), Integer)

    def rows_table(self, name: str, columns: Sequence[tuple[str, TypeEngine[Any]]],
                   rows: Sequence[Sequence[Any]]) -> NamedFromClause | None:
        """SQLite has neither arrays nor a VALUES list in FROM."""
        return None

    def installed_guards(self, session: Session) -> set[str]:
        return {name for (name,) in session.execute(text("SELECT name FROM sqlite_master WHERE type = 'trigger'"))}

    def guard_problem(self, session: Session) -> str | None:
        # Every journal transaction is checked balanced through a deferred foreign key
        # (migration 0014), which only a connection with foreign keys on enforces.
        if not session.execute(text("PRAGMA foreign_keys")).scalar():
            return "foreign keys are off on this SQLite connection, so an unbalanced transaction would commit"
        return None
