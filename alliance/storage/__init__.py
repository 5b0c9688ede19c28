"""The storage adapter: every statement that depends on which database the hub runs on.

Services decide; the adapter reads and writes. It has one implementation per database
(``postgresql.PostgresStorage``, ``sqlite.SqliteStorage``) behind the small interface
``Storage``, in the manner of a repository: the services say what they need (the facts
of a purchase, its postings written, an idempotency claim taken, a nonce spent, a lock
held) and the adapter says it in that database's SQL. Raw SQL, statements sent straight
through the driver (``alliance.db.DriverStatement``) and every branch on the database's
kind live here and nowhere in the services; ``adapters.storage_for`` is the one
place that chooses. Dialect-neutral Core queries built from the models stay with the service that
owns the rule they serve.

The values that cross the interface are plain dataclasses defined here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, Protocol

from sqlalchemy import ColumnElement, Executable, Select
from sqlalchemy.orm import Session
from sqlalchemy.sql.selectable import NamedFromClause
from sqlalchemy.types import TypeEngine

from alliance.domain.signatures import KeyLookup, PartnerKeyRecord


@dataclass(frozen=True, slots=True)
class NonceRow:
    """A signature nonce to spend: the row ``seen_nonces`` keeps until ``prune_after``."""

    nonce: str
    partner_id: int
    key_id: str
    seen_at: datetime
    prune_after: datetime


@dataclass(frozen=True, slots=True)
class FirstRead:
    """An operation's first read (a Core select) and its parameters, which a claim may carry in its round trip."""

    statement: Select[*tuple[Any, ...]]
    parameters: Mapping[str, object]


@dataclass(frozen=True, slots=True)
class ClaimAttempt:
    """Everything one idempotency claim asks of the database, in the order it is decided.

    ``key_to_confirm``: the request was verified against a cached key, which must still
    stand exactly so at ``nonce.seen_at`` (with ``nonce`` only). ``nonce``: spent first;
    nothing is claimed unless it was new. ``first``: read after the claim, only if the
    key was claimed, in the same round trip where the database allows it.
    """

    partner_id: int
    key: str
    fingerprint: str
    now: datetime
    lock_key: int
    nonce: NonceRow | None = None
    key_to_confirm: PartnerKeyRecord | None = None
    first: FirstRead | None = None


@dataclass(frozen=True, slots=True)
class ClaimOutcome:
    """What a claim found: whether the key stood, the nonce was new and the claim inserted the key's record.

    ``first_rows`` are the rows of the attempt's first read when it ran with the claim;
    None when it did not (the database reads it separately, or nothing was claimed).
    """

    key_held: bool
    nonce_spent: bool
    claimed: bool
    first_rows: list[Any] | None = None


@dataclass(frozen=True, slots=True)
class EarnPosting:
    """One earn: a journal transaction of two entries (funding account to the member) and its lot.

    ``item`` and ``bonus`` name it within one write: the purchase it belongs to (its
    position among the write's purchases) and whether it is the hub-funded bonus.
    """

    item: int
    bonus: bool
    member_id: int
    partner_id: int | None
    price_per_point: Decimal | None
    currency: str | None
    memo: str | None
    funding_account_id: int
    target_account_id: int
    points: int
    state: str
    activates_at: datetime | None
    # The journal transaction's kind: one of the domain's ISSUING_KINDS.
    kind: str = "earn"


@dataclass(frozen=True, slots=True)
class PurchaseRow:
    """A purchase to store; its earn and bonus transactions are the postings of the same ``item``."""

    item: int
    partner_id: int
    receipt_id: str
    member_id: int
    card_id: int
    terminal_id: int | None
    amount_minor: int
    currency: str
    purchased_at: datetime
    points_partner: int
    points_hub: int
    pending_until: datetime | None
    breakdown: dict[str, Any]


@dataclass(frozen=True, slots=True)
class WrittenEarns:
    """What one earn write stored: each posting's transaction and lot, each purchase's id by receipt."""

    transaction_ids: dict[tuple[int, bool], int] = field(default_factory=dict)
    lot_ids: dict[tuple[int, bool], int] = field(default_factory=dict)
    purchase_ids: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PendingWrite:
    """A last write (a Core statement, built once) that a unit of work runs with its commit.

    See ``Storage.execute_and_commit``.
    """

    statement: Executable
    parameters: Mapping[str, object]


class Storage(Protocol):
    """What the services ask of the database that each database says in its own way."""

    name: str
    # The triggers that keep the ledger append-only and its balances derived.
    expected_guards: frozenset[str]

    # --- signed requests --------------------------------------------------------------
    def look_up_key(self, session: Session, key_id: str, nonce: str) -> KeyLookup:
        """The key registered under ``key_id`` and whether ``nonce`` was seen, in one round trip."""

    def record_nonce(self, session: Session, nonce: NonceRow) -> bool:
        """Spend a nonce; False when another request spent it first."""

    def key_still_as_verified(self, session: Session, key: PartnerKeyRecord, checked_at: datetime) -> bool:
        """Whether ``key`` still stands in the database exactly as a request was verified with it."""

    def claim(self, session: Session, attempt: ClaimAttempt) -> ClaimOutcome:
        """Confirm the key, spend the nonce and insert the idempotency record, as far as each succeeds."""

    def reply_write(self, *, partner_id: int, key: str, status: int, body: str, now: datetime) -> PendingWrite:
        """The write storing a request's reply under its idempotency record, the partner's ``key``."""

    def execute_and_commit(self, session: Session, write: PendingWrite) -> None:
        """Run ``write`` and commit the session's transaction (the unit of work's; nothing else commits)."""

    def defer_commit_flush(self, session: Session) -> None:
        """Let this transaction's commit return before the database flushes it to disk."""

    # --- purchases and earns ----------------------------------------------------------
    def read(self, session: Session, statement: Select[*tuple[Any, ...]],
             parameters: Mapping[str, object]) -> list[Any]:
        """Run a fixed, hot Core select and return its rows (attribute access by column name).

        For statements on the partner path: PostgreSQL sends them straight through the
        driver (``alliance.db.DriverStatement``). No ``in_()`` lists or Python-side defaults.
        """

    def read_deferring_flush(self, session: Session, statement: Select[*tuple[Any, ...]],
                             parameters: Mapping[str, object]) -> list[Any]:
        """``read``, then this transaction's commit returns before the database flushes it (``defer_commit_flush``).

        In the read's own round trip where the database allows it. The same caution as
        ``UnitOfWork.defer_commit_flush``: only for a transaction whose loss in a crash is harmless.
        """

    def write_earns(self, session: Session, postings: Sequence[EarnPosting], purchases: Sequence[PurchaseRow],
                    *, now: datetime, expires_at: datetime) -> WrittenEarns:
        """Write the postings (transactions, entries in account order, lots) and then the purchases.

        A purchase whose receipt is already stored is skipped, and missing from
        ``purchase_ids``; the caller refuses and takes the write back.
        """

    def one_of(self, column: ColumnElement[Any], values: Iterable[Any]) -> ColumnElement[bool]:
        """``column IN (values)``, in the form this database plans best for long lists."""

    def one_of_bound(self, column: ColumnElement[Any], name: str) -> ColumnElement[bool]:
        """``column IN (...)`` with the list bound at execution as parameter ``name``, for a statement built once.

        In the form this database plans best for long lists (a batch's thousand keys).
        """

    # --- locks ------------------------------------------------------------------------
    def lock(self, session: Session, key: int) -> None:
        """Hold the named lock until the transaction ends (others taking it wait)."""

    def lock_many(self, session: Session, keys: Sequence[int]) -> None:
        """``lock`` for each of ``keys`` one after another, in the order given, in one round trip."""

    # --- reports ----------------------------------------------------------------------
    def month_of(self, column: ColumnElement[Any]) -> ColumnElement[str]:
        """``YYYY-MM`` of a UTC timestamp column."""

    def epoch_seconds(self, column: ColumnElement[Any]) -> ColumnElement[int]:
        """The whole seconds since 1970 of a UTC timestamp column."""

    def rows_table(self, name: str, columns: Sequence[tuple[str, TypeEngine[Any]]],
                   rows: Sequence[Sequence[Any]]) -> NamedFromClause | None:
        """``rows`` as a table ``name`` with these columns, to join in FROM; None where this database cannot.

        The set-based closing passes join their cycles this way.
        """

    # --- the ledger's guards ----------------------------------------------------------
    def installed_guards(self, session: Session) -> set[str]:
        """The names of the enabled triggers."""

    def guard_problem(self, session: Session) -> str | None:
        """Why this connection would let an unbalanced transaction commit, if it would."""


__all__ = ["ClaimAttempt", "ClaimOutcome", "EarnPosting", "FirstRead", "NonceRow", "PendingWrite", "PurchaseRow",
           "Storage", "WrittenEarns"]
