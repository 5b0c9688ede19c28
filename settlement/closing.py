"""Closing settlement cycles in the database: aggregate, lock, sign and store, exactly once.

The pure core (``settlement.cycles``, ``netting``, ``statements``) decides what a
statement says; this module feeds it rows aggregated by SQL and keeps what it returns.
Approved adjustments come from ``settlement.finance``, which shares the partner's lock
(``settlement.locking``) without importing this module. Closing one (partner, cycle) happens
under an exclusive lock (``pg_advisory_xact_lock`` on PostgreSQL; on SQLite the write
lock that ``BEGIN IMMEDIATE`` takes is already exclusive), and the unique constraint
on ``settlement_runs`` is the backstop. A cycle already closed is answered with the
stored bytes, never rendered again, so a re-run is byte-identical by construction.
Many due cycles close a few per transaction, with what they need read, and what they
store written, once per transaction (``close_due_cycles``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, cast

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import BigInteger, Integer, Row, func, insert, select
from sqlalchemy.orm import Session, aliased, sessionmaker
from sqlalchemy.sql.selectable import NamedFromClause

from alliance.domain.audit_chain import ChainHead
from alliance.domain.errors import Conflict, InvalidState, NotFound, ValidationFailed
from alliance.domain.ledger import AccountKind, TransactionKind, account_code
from alliance.models import (
    JournalEntry,
    JournalTransaction,
    LedgerAccount,
    LotConsumption,
    Partner,
    PartnerCredit,
    PointLot,
    RedemptionHold,
    Reward,
    RewardOrder,
    SettlementRun,
    SettlementStatement,
    SettlementStatementLine,
)
from alliance.models.base import UTCDateTime, integer_sum
from alliance.services import audit_log, webhooks
from alliance.services.jobs import Job
from alliance.storage.adapters import storage_for
from settlement import credit, finance
from settlement.cycles import Cycle, due_cycles
from settlement.keys import StatementSigner
from settlement.locking import lock_partner_settlement, lock_partners_settlement
from settlement.netting import (
    EXACT,
    ITEM_LINE_KIND_BY_TRANSACTION_KIND,
    LINE_KIND_BY_TRANSACTION_KIND,
    POINT_LINE_SIGNS,
    SETTLING_TRANSACTION_KINDS,
    AdjustmentAmount,
    CycleSummary,
    ItemAggregate,
    LineKind,
    LotTrace,
    PostingAggregate,
    StatementLine,
    build_lines,
    exact_sum,
    netting_efficiency,
    summarize_cycle,
)
from settlement.statements import (
    Statement,
    build_statement,
    due_date_for,
    render_csv,
    render_json,
    render_signature,
    sign_statement,
)

# Partners whose cycles are closed: a suspended or terminated partner's activity still
# settles (a terminated one's only while something waits, see ``due_by_partner``); a
# pending partner never posted anything.
SETTLING_STATUSES = ("active", "suspended", "terminated")
# A posting commits a moment after its posted_at; closing waits this long after a cut-off
# so no transaction that posted before it can still be in flight.
DEFAULT_CLOSING_GRACE = timedelta(minutes=5)
# Most statements one page of a list may hold.
MAX_STATEMENT_PAGE_SIZE = 200
# Closing many cycles aggregates up to this many in one pass over the ledger (the
# default closing limit), when they span at least BATCH_MIN_PARTNERS partners.
AGGREGATE_BATCH_CYCLES = 1000
BATCH_MIN_PARTNERS = 20
# Most cycles one closing transaction holds (see ``close_due_cycles``).
CLOSING_BATCH_CYCLES = 64
# The webhook event a partner receives for each statement closed.
STATEMENT_CLOSED = "statement.closed"


@dataclass(frozen=True, slots=True)
class ClosedStatement:
    """A closed cycle's stored documents; ``newly_closed`` is False for a re-run."""

    run_id: int
    statement_id: int
    partner_id: int
    cycle_starts_at: datetime
    cycle_ends_at: datetime
    net_minor: int
    closing_balance_minor: int
    key_id: str
    document_json: bytes
    document_csv: bytes
    signature_json: bytes
    signature_csv: bytes
    newly_closed: bool


def close_cycle(
    session: Session,
    *,
    partner_id: int,
    cycle: Cycle,
    now: datetime,
    signing_key: Ed25519PrivateKey,
    key_id: str,
    payment_terms_days: int,
    postings: list[PostingAggregate] | None = None,
) -> ClosedStatement:
    """Close one partner's cycle once; a closed cycle returns its stored statement unchanged.

    ``postings`` may carry the cycle's aggregates computed beforehand (``aggregate_due_cycles``);
    a cycle that has ended is append-only history, so they cannot differ from what the
    lock would see. Without them the cycle is aggregated here.
    """
    lock_partner_settlement(session, partner_id)
    partner = session.get(Partner, partner_id)
    if partner is None:
        raise NotFound(f"no partner {partner_id}")
    previous = _previous_statement(session, partner_id)
    prepared = _prepare(session, partner, cycle, previous=None if previous is None else _Previous(*previous),
                        now=now, payment_terms_days=payment_terms_days, postings=postings, reward_items=None,
                        adjustments=None)
    if isinstance(prepared, ClosedStatement):
        return prepared
    [stored] = _store(session, [prepared], audit_chain=audit_log.head(session), now=now, signing_key=signing_key,
                      key_id=key_id)
    _announce(session, prepared, stored, now=now, credit_tracked=None, receivers=None)
    return stored


@dataclass(frozen=True, slots=True)
class _Previous:
    """Where a partner's latest closed cycle ended, and its closing balance."""

    cycle_ends_at: datetime
    closing_balance_minor: int


@dataclass(frozen=True, slots=True)
class _Pending:
    """A cycle's statement built and not yet stored, with the adjustments it applies."""

    partner_id: int
    statement: Statement
    adjustment_ids: list[int]


def _prepare(
    session: Session, partner: Partner, cycle: Cycle, *, previous: _Previous | None, now: datetime,
    payment_terms_days: int, postings: list[PostingAggregate] | None, reward_items: list[ItemAggregate] | None,
    adjustments: finance.UnappliedAdjustments | None,
) -> ClosedStatement | _Pending:
    """The statement of a cycle of a partner whose settlement lock this transaction holds, or the stored one.

    ``previous`` is the partner's latest closed cycle; ``postings`` and ``reward_items``
    may come aggregated beforehand for many cycles at once (None aggregates them here),
    and ``adjustments`` read beforehand for the transaction's partners (None reads them here).
    """
    partner_id = partner.id
    if cycle.partner_code != partner.code:
        raise ValidationFailed("the cycle belongs to another partner", fields={"cycle": ["other partner"]})
    # Cycles close in order, so this one can only be stored if the latest closed cycle
    # ends after it starts; in the usual case one query answers both questions.
    existing = None
    if previous is not None and previous.cycle_ends_at > cycle.starts_at:
        existing = _stored(session, partner_id, cycle.starts_at)
    if existing is not None:
        if existing.cycle_ends_at != cycle.ends_at:
            raise Conflict(
                f"the cycle of {partner.code} starting {cycle.starts_at.isoformat()} closed with another end"
            )
        return existing
    if cycle.ends_at > now:
        raise InvalidState(f"the cycle of {partner.code} ends at {cycle.ends_at.isoformat()}; it cannot close before")
    if previous is not None and previous.cycle_ends_at != cycle.starts_at:
        raise InvalidState(
            f"the last closed cycle of {partner.code} ended at {previous.cycle_ends_at.isoformat()}, "
            f"not where this one starts ({cycle.starts_at.isoformat()}); close cycles in order"
        )
    # Approved adjustments not yet applied land in this, the first cycle closed after their approval.
    if adjustments is None:
        adjustments = finance.unapplied_adjustments(session, partner_ids=[partner_id])
    adjustment_ids, applied = adjustments.take(partner_id=partner_id, partner_code=partner.code,
                                               cycle_ends_at=cycle.ends_at)
    if partner.cycle_fee_minor and charges_cycle_fee(partner.terminated_at, cycle):
        applied = [*applied, AdjustmentAmount(partner.code, LineKind.FEE, partner.cycle_fee_minor,
                                              partner.currency, "cycle-fee")]
    if postings is None:
        postings = aggregate_postings(session, partner_id=partner_id, partner_code=partner.code, cycle=cycle)
    if reward_items is None:
        reward_items = aggregate_reward_items(session, partner_id=partner_id, partner_code=partner.code, cycle=cycle)
    statement = build_statement(
        cycle=cycle, currency=partner.currency,
        opening_balance_minor=previous.closing_balance_minor if previous is not None else 0,
        lines=build_lines(postings, applied, reward_items),
        due_date=due_date_for(cycle, time_zone=partner.time_zone, payment_terms_days=payment_terms_days),
    )
    return _Pending(partner_id, statement, adjustment_ids)


def _announce(session: Session, pending: _Pending, stored: ClosedStatement, *, now: datetime,
              credit_tracked: bool | None, receivers: Sequence[int] | None) -> None:
    """What follows a stored statement in its transaction: applications, the partner's event, its credit.

    ``credit_tracked`` may say beforehand whether the partner has a credit snapshot, and
    ``receivers`` which endpoints hear of the statement (``webhooks.partner_receivers``);
    None asks here.
    """
    finance.record_applications(session, adjustment_ids=pending.adjustment_ids, run_id=stored.run_id)
    # The partner hears of its new statement in the transaction that stores it; a re-run returned above.
    webhooks.emit(session, event_type=STATEMENT_CLOSED, partner_id=pending.partner_id, now=now, data={
        "statement_id": stored.statement_id, "cycle_starts_at": stored.cycle_starts_at.isoformat(),
        "cycle_ends_at": stored.cycle_ends_at.isoformat(), "net_minor": stored.net_minor,
        "currency": pending.statement.currency}, receivers=receivers)
    # The open period's issuance became a closed statement's net: the credit snapshot follows.
    if credit_tracked is None:
        credit.refresh_if_tracked(session, partner_id=pending.partner_id, now=now)
    elif credit_tracked:
        credit.refresh(session, partner_id=pending.partner_id, now=now)


def charges_cycle_fee(terminated_at: datetime | None, cycle: Cycle) -> bool:
    """A partner owes its fixed cycle fee for every cycle that starts before its termination."""
    return terminated_at is None or cycle.starts_at < terminated_at


def aggregate_postings(session: Session, *, partner_id: int, partner_code: str, cycle: Cycle) -> list[PostingAggregate]:
    """The partner's settling postings in the cycle, summed by SQL per (kind, price, currency)."""
    partner_accounts = [
        account_code(AccountKind.PARTNER_ISSUED, partner_id=partner_id),
        account_code(AccountKind.PARTNER_REDEEMED, partner_id=partner_id),
    ]
    kinds = [kind.value for kind in LINE_KIND_BY_TRANSACTION_KIND]
    # Each settling transaction has exactly one entry on one of the partner's two
    # accounts, so the entry sum is the signed points and the row count the postings.
    rows = session.execute(
        select(
            JournalTransaction.kind, JournalTransaction.price_per_point, JournalTransaction.currency,
            integer_sum(JournalEntry.amount_points).label("signed_points"),
            func.count(JournalEntry.id).label("postings"),
        )
        .join(JournalEntry, JournalEntry.transaction_id == JournalTransaction.id)
        .join(LedgerAccount, LedgerAccount.id == JournalEntry.account_id)
        .where(
            JournalTransaction.partner_id == partner_id,
            JournalTransaction.kind.in_(kinds),
            JournalTransaction.posted_at >= cycle.starts_at,
            JournalTransaction.posted_at < cycle.ends_at,
            LedgerAccount.code.in_(partner_accounts),
        )
        .group_by(JournalTransaction.kind, JournalTransaction.price_per_point, JournalTransaction.currency)
    ).all()
    return [_aggregate(row, partner_code) for row in rows if row.signed_points != 0]


def aggregate_reward_items(session: Session, *, partner_id: int, partner_code: str,
                           cycle: Cycle) -> list[ItemAggregate]:
    """The reward items the partner supplied or took back in the cycle, per (reward, kind, price per item).

    The journal says when: each ``reward_capture`` and ``reward_return`` posted in the
    cycle. The order it names says what: the reward, the items and the price per item.
    """
    order = aliased(RewardOrder)
    captured = JournalTransaction.id == order.capture_transaction_id
    returned = JournalTransaction.id == order.return_transaction_id
    rows = session.execute(
        select(JournalTransaction.kind, Reward.code, order.unit_price_minor, order.currency,
               integer_sum(order.items).label("items"), integer_sum(order.points).label("points"))
        .join(order, captured | returned)
        .join(Reward, Reward.id == order.reward_id)
        .where(
            JournalTransaction.partner_id == partner_id,
            JournalTransaction.kind.in_([kind.value for kind in ITEM_LINE_KIND_BY_TRANSACTION_KIND]),
            JournalTransaction.posted_at >= cycle.starts_at,
            JournalTransaction.posted_at < cycle.ends_at,
        )
        .group_by(JournalTransaction.kind, Reward.code, order.unit_price_minor, order.currency)
    ).all()
    return [
        ItemAggregate(partner_code=partner_code,
                      line_kind=ITEM_LINE_KIND_BY_TRANSACTION_KIND[TransactionKind(row.kind)], currency=row.currency,
                      reference=row.code, unit_price_minor=row.unit_price_minor, items=row.items, points=row.points)
        for row in rows
    ]


_DUE_CYCLE_COLUMNS = (("position", Integer()), ("partner_id", BigInteger()), ("starts_at", UTCDateTime()),
                      ("ends_at", UTCDateTime()))


def _due_cycles_table(session: Session, due: list[tuple[int, Cycle]], *, first_position: int) -> NamedFromClause | None:
    """The cycles as a table to join (position, partner id, start, end); None where the database cannot."""
    return storage_for(session).rows_table("due_cycles", _DUE_CYCLE_COLUMNS, [
        (first_position + offset, partner_id, cycle.starts_at, cycle.ends_at)
        for offset, (partner_id, cycle) in enumerate(due)])


def aggregate_due_reward_items(session: Session, due: list[tuple[int, Cycle]]) -> list[list[ItemAggregate]] | None:
    """``aggregate_reward_items`` for many cycles in one query, by position in ``due``; None on SQLite.

    The cycles join as a table (``Storage.rows_table``, which SQLite cannot give); each
    finds its partner's reward postings through the same index as the one-cycle query.
    """
    cycles = _due_cycles_table(session, due, first_position=0)
    if cycles is None:
        return None
    order = aliased(RewardOrder)
    rows = session.execute(
        select(cycles.c.position, JournalTransaction.kind, Reward.code, order.unit_price_minor, order.currency,
               integer_sum(order.items).label("items"), integer_sum(order.points).label("points"))
        .select_from(cycles)
        .join(JournalTransaction, (JournalTransaction.partner_id == cycles.c.partner_id)
              & (JournalTransaction.posted_at >= cycles.c.starts_at)
              & (JournalTransaction.posted_at < cycles.c.ends_at))
        .join(order, (JournalTransaction.id == order.capture_transaction_id)
              | (JournalTransaction.id == order.return_transaction_id))
        .join(Reward, Reward.id == order.reward_id)
        .where(JournalTransaction.kind.in_([kind.value for kind in ITEM_LINE_KIND_BY_TRANSACTION_KIND]))
        .group_by(cycles.c.position, JournalTransaction.kind, Reward.code, order.unit_price_minor, order.currency)
    ).all()
    found: list[list[ItemAggregate]] = [[] for _ in due]
    for row in rows:
        found[row.position].append(ItemAggregate(
            partner_code=due[row.position][1].partner_code,
            line_kind=ITEM_LINE_KIND_BY_TRANSACTION_KIND[TransactionKind(row.kind)], currency=row.currency,
            reference=row.code, unit_price_minor=row.unit_price_minor, items=row.items, points=row.points))
    return found


def _aggregate(row: Row[*tuple[Any, ...]], partner_code: str) -> PostingAggregate:
    """One SQL row as a netting aggregate, with the points made positive."""
    line_kind = LINE_KIND_BY_TRANSACTION_KIND[TransactionKind(row.kind)]
    # Issues debit the issued account and redemption refunds debit the redeemed account, so
    # their entries are negative; take-backs and captures credit, so theirs are positive. A
    # line the partner is charged for is therefore one whose entries are negative.
    entry_sign = -POINT_LINE_SIGNS[line_kind]
    points = entry_sign * row.signed_points
    assert points > 0, f"{row.kind} postings must move points in their own direction"
    return PostingAggregate(
        partner_code=partner_code, line_kind=line_kind, currency=row.currency,
        price_per_point=row.price_per_point, points=points, count=row.postings,
    )


def _previous_statement(session: Session, partner_id: int) -> Row[datetime, int] | None:
    """The partner's latest closed cycle's end and closing balance, or None."""
    return session.execute(
        select(SettlementRun.cycle_ends_at, SettlementStatement.closing_balance_minor)
        .join(SettlementStatement, SettlementStatement.run_id == SettlementRun.id)
        .where(SettlementRun.partner_id == partner_id)
        .order_by(SettlementRun.cycle_ends_at.desc())
        .limit(1)
    ).first()


def _store(
    session: Session, pending: list[_Pending], *, audit_chain: ChainHead, now: datetime,
    signing_key: Ed25519PrivateKey, key_id: str,
) -> list[ClosedStatement]:
    """Sign and insert the runs, the statements with their documents, and their lines; returns what was stored.

    Three INSERTs for any number of statements, each returning its ids in the order
    given. The signed documents carry ``audit_chain``, the audit log's head as this
    transaction saw it: the partner keeps them, which anchors the log outside the hub's
    database.
    """
    documents = []
    for item in pending:
        statement = replace(item.statement, audit_chain=audit_chain)
        document_json, document_csv = render_json(statement), render_csv(statement)
        documents.append((statement, document_json, document_csv,
                          render_signature(sign_statement(document_json, signing_key, key_id)),
                          render_signature(sign_statement(document_csv, signing_key, key_id))))
    run_ids = session.scalars(
        insert(SettlementRun).returning(SettlementRun.id, sort_by_parameter_order=True),
        [{"partner_id": item.partner_id, "cycle_frequency": str(item.statement.cycle.frequency),
          "cycle_starts_at": item.statement.cycle.starts_at, "cycle_ends_at": item.statement.cycle.ends_at,
          "closed_at": now} for item in pending],
    ).all()
    statement_ids = session.scalars(
        insert(SettlementStatement).returning(SettlementStatement.id, sort_by_parameter_order=True),
        [{"run_id": run_id, "partner_id": item.partner_id, "currency": statement.currency,
          "opening_balance_minor": statement.opening_balance_minor, "net_minor": statement.net_minor,
          "closing_balance_minor": statement.closing_balance_minor, "due_date": statement.due_date,
          "rounding_residue_minor": statement.rounding_residue_minor,
          "document_json": document_json.decode("utf-8"), "document_csv": document_csv.decode("utf-8"),
          "signature_json": signature_json.decode("utf-8"), "signature_csv": signature_csv.decode("utf-8"),
          "key_id": key_id}
         for item, run_id, (statement, document_json, document_csv, signature_json, signature_csv)
         in zip(pending, run_ids, documents, strict=True)],
    ).all()
    lines = [
        (statement_id, number, str(line.line_kind), line.price_per_point, line.points, line.count, line.reference,
         line.amount_minor, line.rounding_residue_minor)
        for statement_id, (statement, *_) in zip(statement_ids, documents, strict=True)
        for number, line in enumerate(statement.lines, start=1)
    ]
    if lines:
        _insert_lines(session, lines)
    return [
        ClosedStatement(
            run_id=run_id, statement_id=statement_id, partner_id=item.partner_id,
            cycle_starts_at=statement.cycle.starts_at, cycle_ends_at=statement.cycle.ends_at,
            net_minor=statement.net_minor, closing_balance_minor=statement.closing_balance_minor, key_id=key_id,
            document_json=document_json, document_csv=document_csv, signature_json=signature_json,
            signature_csv=signature_csv, newly_closed=True,
        )
        for item, run_id, statement_id, (statement, document_json, document_csv, signature_json, signature_csv)
        in zip(pending, run_ids, statement_ids, documents, strict=True)
    ]


_LINE_COLUMNS = tuple((column.name, column.type) for column in SettlementStatementLine.__table__.columns
                      if column.name != "id")


def _insert_lines(session: Session, lines: list[tuple[Any, ...]]) -> None:
    """Insert statement lines (rows in ``_LINE_COLUMNS`` order) in one statement where the database can.

    On PostgreSQL the rows travel as one array per column (``Storage.rows_table``): one
    execution for all the transaction's lines instead of one per line, and one statement
    text for any number of them. The ids follow (statement, line number) as before.
    """
    names = [name for name, _ in _LINE_COLUMNS]
    rows = storage_for(session).rows_table("new_lines", _LINE_COLUMNS, lines)
    if rows is None:
        session.execute(insert(SettlementStatementLine), [dict(zip(names, line, strict=True)) for line in lines])
        return
    session.execute(insert(SettlementStatementLine).from_select(
        names, select(*[rows.c[name] for name in names]).order_by(rows.c.statement_id, rows.c.line_number)))


def _stored(session: Session, partner_id: int, cycle_starts_at: datetime) -> ClosedStatement | None:
    """The stored run and statement of (partner, cycle start), or None."""
    found = _closed_statements(session, partner_id, cycle_starts_at=cycle_starts_at)
    return found[0] if found else None


def partner_statements(session: Session, *, partner_id: int) -> list[ClosedStatement]:
    """Every stored statement of a partner, oldest cycle first, as the bytes that were signed."""
    return _closed_statements(session, partner_id)


@dataclass(frozen=True, slots=True)
class StatementSummary:
    """What a list of statements shows: the figures, not the signed documents."""

    statement_id: int
    cycle_starts_at: datetime
    cycle_ends_at: datetime
    net_minor: int
    closing_balance_minor: int
    key_id: str


def partner_statement_page(session: Session, *, partner_id: int, page: int,
                           page_size: int) -> list[StatementSummary]:
    """One page of a partner's statements, oldest cycle first, without reading their documents."""
    page_size = min(max(page_size, 1), MAX_STATEMENT_PAGE_SIZE)
    rows = session.execute(
        select(SettlementStatement.id, SettlementRun.cycle_starts_at, SettlementRun.cycle_ends_at,
               SettlementStatement.net_minor, SettlementStatement.closing_balance_minor, SettlementStatement.key_id)
        .join(SettlementStatement, SettlementStatement.run_id == SettlementRun.id)
        .where(SettlementRun.partner_id == partner_id)
        .order_by(SettlementRun.cycle_starts_at, SettlementRun.id)
        .offset((max(page, 1) - 1) * page_size).limit(page_size)
    )
    return [StatementSummary(*row) for row in rows]


def partner_statement_count(session: Session, *, partner_id: int) -> int:
    """How many statements ``partner_statements`` lists in all."""
    return session.scalar(select(func.count()).select_from(SettlementRun).join(
        SettlementStatement, SettlementStatement.run_id == SettlementRun.id)
        .where(SettlementRun.partner_id == partner_id)) or 0


def _closed_statements(
    session: Session, partner_id: int, *, cycle_starts_at: datetime | None = None, statement_id: int | None = None,
) -> list[ClosedStatement]:
    """Stored runs and statements of a partner, optionally of one cycle or one statement, oldest first."""
    query = (
        select(SettlementRun, SettlementStatement)
        .join(SettlementStatement, SettlementStatement.run_id == SettlementRun.id)
        .where(SettlementRun.partner_id == partner_id)
        .order_by(SettlementRun.cycle_starts_at)
    )
    if cycle_starts_at is not None:
        query = query.where(SettlementRun.cycle_starts_at == cycle_starts_at)
    if statement_id is not None:
        query = query.where(SettlementStatement.id == statement_id)
    return [
        ClosedStatement(
            run_id=run.id, statement_id=statement.id, partner_id=partner_id, cycle_starts_at=run.cycle_starts_at,
            cycle_ends_at=run.cycle_ends_at, net_minor=statement.net_minor,
            closing_balance_minor=statement.closing_balance_minor, key_id=statement.key_id,
            document_json=statement.document_json.encode("utf-8"),
            document_csv=statement.document_csv.encode("utf-8"),
            signature_json=statement.signature_json.encode("utf-8"),
            signature_csv=statement.signature_csv.encode("utf-8"), newly_closed=False,
        )
        for run, statement in session.execute(query).all()
    ]


def close_due_cycles(
    session_factory: sessionmaker[Session],
    *,
    now: datetime,
    signer: StatementSigner,
    partner_code: str | None = None,
    grace: timedelta = DEFAULT_CLOSING_GRACE,
    limit: int = 1000,
) -> list[ClosedStatement]:
    """Close every overdue cycle of every settling partner, oldest first, in transactions of a few cycles.

    A run's first transaction closes one cycle and each next one twice as many as the
    last, up to ``CLOSING_BATCH_CYCLES``: a crash loses only the transaction in flight,
    which the next run closes again identically, and a long run pays one commit per
    batch instead of one per cycle. A transaction that fails is rolled back and its
    cycles closed again one per transaction, so the cycles before the failing one stay
    closed, as if every cycle had committed on its own. Returns the statements this call
    closed; cycles another process closed meanwhile are skipped, because they are
    answered from storage.
    """
    closed: list[ClosedStatement] = []
    due = _due(session_factory, now=now - grace, partner_code=partner_code, limit=limit)
    postings: dict[int, list[PostingAggregate]] = {}
    position, size = 0, 1
    while position < len(due) and len(closed) < limit:
        if position not in postings:
            postings = aggregate_due_cycles(session_factory, due[position:position + AGGREGATE_BATCH_CYCLES],
                                            first_position=position)
        end = min(len(due), position + size, position + limit - len(closed))
        if postings:
            end = min(end, max(postings) + 1)
        try:
            results = _close_batch(session_factory, due[position:end], first_position=position,
                                   postings=postings, now=now, signer=signer)
        except Exception:
            if end - position == 1:
                raise
            results = [_close_batch(session_factory, [item], first_position=at, postings=postings, now=now,
                                    signer=signer)[0]
                       for at, item in enumerate(due[position:end], start=position)]
        closed.extend(result for result in results if result.newly_closed)
        position, size = end, min(2 * size, CLOSING_BATCH_CYCLES)
    return closed


def _close_batch(
    session_factory: sessionmaker[Session], batch: list[tuple[int, Cycle]], *, first_position: int,
    postings: dict[int, list[PostingAggregate]], now: datetime, signer: StatementSigner,
) -> list[ClosedStatement]:
    """Close a few due cycles in one transaction, reading what each needs once for all of them.

    The partners' settlement locks are taken first, in one statement in the order of
    ``batch`` (by partner code, as every closer takes them), then each partner's latest
    closed cycle, its unapplied adjustments, the audit log's head, the reward items,
    whose credit is tracked and which endpoints hear of a statement are read once; the
    cycles close in order, each one's closing balance the next one's opening.
    """
    partner_ids = list(dict.fromkeys(partner_id for partner_id, _ in batch))
    with session_factory() as session:
        lock_partners_settlement(session, partner_ids)
        partners = {partner.id: partner
                    for partner in session.scalars(select(Partner).where(Partner.id.in_(partner_ids)))}
        previous = _previous_statements(session, partner_ids)
        adjustments = finance.unapplied_adjustments(session, partner_ids=partner_ids)
        reward_items = aggregate_due_reward_items(session, batch)
        # The partners ``credit.refresh_if_tracked`` would refresh: those with a credit snapshot.
        tracked = set(session.scalars(
            select(PartnerCredit.partner_id).where(PartnerCredit.partner_id.in_(partner_ids))))
        prepared: list[ClosedStatement | _Pending] = []
        for offset, (partner_id, cycle) in enumerate(batch):
            partner = partners.get(partner_id)
            if partner is None:
                raise NotFound(f"no partner {partner_id}")
            item = _prepare(
                session, partner, cycle, previous=previous.get(partner_id), now=now,
                payment_terms_days=signer.payment_terms_days, postings=postings.get(first_position + offset),
                reward_items=None if reward_items is None else reward_items[offset], adjustments=adjustments,
            )
            previous[partner_id] = (
                _Previous(item.cycle_ends_at, item.closing_balance_minor) if isinstance(item, ClosedStatement)
                else _Previous(item.statement.cycle.ends_at, item.statement.closing_balance_minor))
            prepared.append(item)
        pending = [item for item in prepared if isinstance(item, _Pending)]
        stored = iter(_store(session, pending, audit_chain=audit_log.head(session), now=now,
                             signing_key=signer.signing_key, key_id=signer.key_id) if pending else [])
        receivers = webhooks.partner_receivers(
            session, event_type=STATEMENT_CLOSED, partner_ids=list(dict.fromkeys(item.partner_id for item in pending)))
        results: list[ClosedStatement] = []
        for item in prepared:
            if isinstance(item, _Pending):
                closed = next(stored)
                _announce(session, item, closed, now=now, credit_tracked=item.partner_id in tracked,
                          receivers=receivers.get(item.partner_id, []))
                item = closed
            results.append(item)
        session.commit()
    return results


def _previous_statements(session: Session, partner_ids: list[int]) -> dict[int, _Previous]:
    """Each partner's latest closed cycle's end and closing balance (partners with none are absent)."""
    latest = (
        select(SettlementRun.partner_id, func.max(SettlementRun.cycle_ends_at).label("ends_at"))
        .where(SettlementRun.partner_id.in_(partner_ids)).group_by(SettlementRun.partner_id).subquery()
    )
    rows = session.execute(
        select(SettlementRun.partner_id, SettlementRun.cycle_ends_at, SettlementStatement.closing_balance_minor)
        .join(latest, (latest.c.partner_id == SettlementRun.partner_id)
              & (latest.c.ends_at == SettlementRun.cycle_ends_at))
        .join(SettlementStatement, SettlementStatement.run_id == SettlementRun.id)
    ).all()
    return {row.partner_id: _Previous(row.cycle_ends_at, row.closing_balance_minor) for row in rows}


def close_due_cycles_by(
    session_factory: sessionmaker[Session], *, actor: str, now: datetime, signer: StatementSigner,
    partner_code: str | None = None,
) -> list[ClosedStatement]:
    """``close_due_cycles`` asked for by a person (the console, the back office), then its audit log entry.

    The cycles commit as they close, a few per transaction; the ``settlement.close`` entry,
    naming the partner asked for and how many cycles closed, commits after them.
    """
    closed = close_due_cycles(session_factory, now=now, signer=signer, partner_code=partner_code)
    with session_factory() as session:
        audit_log.append(session, actor=actor, action="settlement.close", subject="settlement", now=now,
                         after={"partner": partner_code, "cycles_closed": len(closed)})
        session.commit()
    return closed


def aggregate_due_cycles(
    session_factory: sessionmaker[Session], due: list[tuple[int, Cycle]], *, first_position: int = 0,
    min_partners: int = BATCH_MIN_PARTNERS,
) -> dict[int, list[PostingAggregate]]:
    """The settling postings of many ended cycles in one SQL aggregate, keyed by position in ``due``.

    One pass over the ledger shaped like a plain GROUP BY (every entry on a partner
    account, each probing its transaction), then a hash join to the cycles, instead of
    one index-driven query per cycle, which at a thousand partners cost several times
    the pass. The pass reads every entry of the period, so it only pays when many
    partners close together; with few, and on SQLite (no table of rows to join), the
    answer is empty and ``close_cycle`` aggregates each cycle itself.
    """
    if not due or len({partner_id for partner_id, _ in due}) < min_partners:
        return {}
    with session_factory() as session:
        cycles = _due_cycles_table(session, due, first_position=first_position)
        if cycles is None:
            return {}
        settling = (
            select(JournalTransaction.partner_id, LedgerAccount.partner_id.label("account_partner_id"),
                   JournalTransaction.posted_at, JournalTransaction.kind, JournalTransaction.price_per_point,
                   JournalTransaction.currency, JournalEntry.id.label("entry_id"), JournalEntry.amount_points)
            .select_from(JournalEntry)
            .join(LedgerAccount, LedgerAccount.id == JournalEntry.account_id)
            .join(JournalTransaction, JournalTransaction.id == JournalEntry.transaction_id)
            .where(LedgerAccount.kind.in_([AccountKind.PARTNER_ISSUED.value, AccountKind.PARTNER_REDEEMED.value]),
                   JournalTransaction.kind.in_([kind.value for kind in LINE_KIND_BY_TRANSACTION_KIND]),
                   JournalTransaction.posted_at >= min(cycle.starts_at for _, cycle in due),
                   JournalTransaction.posted_at < max(cycle.ends_at for _, cycle in due))
            # OFFSET keeps PostgreSQL from merging this into the outer query, so the pass is
            # planned like the plain GROUP BY and the cycles are matched afterwards.
            .offset(0)
            .subquery("settling")
        )
        rows = session.execute(
            select(cycles.c.position, settling.c.kind, settling.c.price_per_point, settling.c.currency,
                   integer_sum(settling.c.amount_points).label("signed_points"),
                   func.count(settling.c.entry_id).label("postings"))
            .select_from(settling)
            # The same rows as aggregate_postings: each settling transaction's one entry on
            # one of the partner's own two accounts, posted inside the cycle.
            .join(cycles, (cycles.c.partner_id == settling.c.partner_id)
                  & (cycles.c.partner_id == settling.c.account_partner_id)
                  & (settling.c.posted_at >= cycles.c.starts_at) & (settling.c.posted_at < cycles.c.ends_at))
            .group_by(cycles.c.position, settling.c.kind, settling.c.price_per_point, settling.c.currency)
        ).all()
    found: dict[int, list[PostingAggregate]] = {first_position + offset: [] for offset in range(len(due))}
    for row in rows:
        if row.signed_points != 0:
            found[row.position].append(_aggregate(row, due[row.position - first_position][1].partner_code))
    return found


@dataclass(frozen=True, slots=True)
class PartnerDue:
    """One partner's ended, unclosed cycles, oldest first, and where its last closed cycle ended."""

    partner: Partner
    last_closed_end: datetime | None
    cycles: list[Cycle]


def due_by_partner(session: Session, *, now: datetime, partner_code: str | None = None,
                   limit: int = 1000) -> list[PartnerDue]:
    """Per partner whose cycles close, the cycles that have ended by ``now`` and are not closed.

    Active and suspended partners close every cycle. A terminated partner closes its
    cycles only up to the one holding the last thing still to settle (a posting after
    its last closed cycle, or an approved adjustment not yet applied), so every posted
    entry lands in a closed statement, and no empty statement follows once it has.
    """
    last_closed_end = (
        select(SettlementRun.partner_id, func.max(SettlementRun.cycle_ends_at).label("ends_at"))
        .group_by(SettlementRun.partner_id).subquery()
    )
    query = (
        select(Partner, last_closed_end.c.ends_at)
        .outerjoin(last_closed_end, last_closed_end.c.partner_id == Partner.id)
        .where(Partner.status.in_(SETTLING_STATUSES))
        .order_by(Partner.code)
    )
    if partner_code is not None:
        query = query.where(Partner.code == partner_code)
    partners = session.execute(query).all()
    last_to_settle = _last_to_settle(session, [partner.id for partner, _ in partners if partner.status == "terminated"])
    found: list[PartnerDue] = []
    for partner, ends_at in partners:
        cycles = due_cycles(
            ends_at, now, partner.created_at, partner_code=partner.code, frequency=partner.settlement_cycle,
            time_zone=partner.time_zone, cutoff_local=partner.settlement_cutoff_local, limit=limit,
        )
        if partner.status == "terminated":
            cycles = cycles_to_settle(cycles, last_to_settle.get(partner.id))
        found.append(PartnerDue(partner, ends_at, cycles))
    return found


def _last_to_settle(session: Session, partner_ids: list[int]) -> dict[int, datetime]:
    """Per partner, the latest moment something waits for a statement: a posting or an adjustment."""
    if not partner_ids:
        return {}
    last_closed_end = (
        select(SettlementRun.partner_id, func.max(SettlementRun.cycle_ends_at).label("ends_at"))
        .where(SettlementRun.partner_id.in_(partner_ids)).group_by(SettlementRun.partner_id).subquery()
    )
    postings = session.execute(
        select(JournalTransaction.partner_id, func.max(JournalTransaction.posted_at))
        .outerjoin(last_closed_end, last_closed_end.c.partner_id == JournalTransaction.partner_id)
        .where(JournalTransaction.partner_id.in_(partner_ids),
               JournalTransaction.kind.in_([kind.value for kind in SETTLING_TRANSACTION_KINDS]),
               (last_closed_end.c.ends_at.is_(None)) | (JournalTransaction.posted_at >= last_closed_end.c.ends_at))
        .group_by(JournalTransaction.partner_id)
    ).all()
    # The query keeps the postings of ``partner_ids`` alone, so every row names its partner.
    found = {cast(int, partner_id): posted_at for partner_id, posted_at in postings}
    for partner_id, approved_at in finance.unapplied_approval_times(session, partner_ids=partner_ids).items():
        found[partner_id] = max(found.get(partner_id, approved_at), approved_at)
    return found


def cycles_to_settle(cycles: list[Cycle], last_to_settle: datetime | None) -> list[Cycle]:
    """The due cycles up to the one holding ``last_to_settle`` (an earlier moment means the first)."""
    if last_to_settle is None:
        return []
    kept = [cycle for cycle in cycles if cycle.starts_at <= last_to_settle]
    # An adjustment approved before the first due cycle starts lands in that cycle.
    return kept or cycles[:1]


def _due(
    session_factory: sessionmaker[Session], *, now: datetime, partner_code: str | None, limit: int
) -> list[tuple[int, Cycle]]:
    """Every (partner id, cycle) that has ended by ``now`` and is not closed, per partner oldest first."""
    with session_factory() as session:
        partners = due_by_partner(session, now=now, partner_code=partner_code, limit=limit)
    if partner_code is not None and not partners:
        raise NotFound(f"no settling partner {partner_code!r}")
    return [(due.partner.id, cycle) for due in partners for cycle in due.cycles]


def closing_job(session_factory: sessionmaker[Session], signer: StatementSigner) -> Job:
    """The scheduler job that closes due cycles, a few per transaction (see ``close_due_cycles``)."""

    def run(session: Session, *, now: datetime, limit: int) -> int:
        # The lease session stays unused: the closings commit in transactions of their own, so
        # that one partner's failure does not undo the others' closings.
        return len(close_due_cycles(session_factory, now=now, signer=signer, limit=limit))

    return Job("close-due-cycles", 300, run, "cycles closed")


def cycle_summary(session: Session, *, cycle_ends_at: datetime, currency: str) -> CycleSummary:
    """Nets, gross, efficiency, hub margin and the issuer → redeemer matrix of cycles ending then."""
    rows = session.execute(
        select(SettlementStatementLine, Partner.code)
        .join(SettlementStatement, SettlementStatement.id == SettlementStatementLine.statement_id)
        .join(SettlementRun, SettlementRun.id == SettlementStatement.run_id)
        .join(Partner, Partner.id == SettlementStatement.partner_id)
        .where(SettlementRun.cycle_ends_at == cycle_ends_at, SettlementStatement.currency == currency)
        .order_by(SettlementStatementLine.statement_id, SettlementStatementLine.line_number)
    ).all()
    lines = [_statement_line(line, code, currency) for line, code in rows]
    return summarize_cycle(lines, currency=currency, lot_traces=lot_traces(session, cycle_ends_at=cycle_ends_at,
                                                                            currency=currency))


def _statement_line(line: SettlementStatementLine, partner_code: str, currency: str) -> StatementLine:
    """A stored line back as the netting value it was made from."""
    return StatementLine(
        partner_code=partner_code, line_kind=LineKind(line.line_kind), currency=currency,
        price_per_point=line.price_per_point, points=line.points, count=line.count, reference=line.reference,
        exact_amount_minor=EXACT.add(Decimal(line.amount_minor), line.rounding_residue_minor),
        amount_minor=line.amount_minor, rounding_residue_minor=line.rounding_residue_minor,
    )


# A redemption's capture and a reward order's capture both spend a hold's points at its partner.
_SPENDING_KINDS = (TransactionKind.CAPTURE.value, TransactionKind.REWARD_CAPTURE.value)


def lot_traces(session: Session, *, cycle_ends_at: datetime, currency: str) -> list[LotTrace]:
    """Points captured in closed cycles ending then, traced by SQL to the partners that issued them."""
    capture = aliased(JournalTransaction)
    consuming = aliased(JournalTransaction)
    issuer = aliased(Partner)
    redeemer = aliased(Partner)
    # A hold's authorisation takes points from lots and its capture gives the unspent
    # rest back; what is left of the two is what the capture spent, lot by lot.
    rows = session.execute(
        select(issuer.code.label("issuer_code"), redeemer.code.label("redeemer_code"),
               integer_sum(LotConsumption.points).label("points"))
        .select_from(SettlementRun)
        .join(SettlementStatement, SettlementStatement.run_id == SettlementRun.id)
        .join(redeemer, redeemer.id == SettlementRun.partner_id)
        .join(RedemptionHold, RedemptionHold.partner_id == SettlementRun.partner_id)
        .join(capture, (capture.hold_id == RedemptionHold.id) & capture.kind.in_(_SPENDING_KINDS)
              & (capture.posted_at >= SettlementRun.cycle_starts_at)
              & (capture.posted_at < SettlementRun.cycle_ends_at))
        .join(LotConsumption, LotConsumption.hold_id == RedemptionHold.id)
        .join(consuming, (consuming.id == LotConsumption.transaction_id)
              & consuming.kind.in_([TransactionKind.HOLD.value, *_SPENDING_KINDS]))
        .join(PointLot, PointLot.id == LotConsumption.lot_id)
        .outerjoin(issuer, issuer.id == PointLot.partner_id)
        .where(SettlementRun.cycle_ends_at == cycle_ends_at, SettlementStatement.currency == currency)
        .group_by(issuer.code, redeemer.code)
    ).all()
    return [LotTrace(row.issuer_code, row.redeemer_code, row.points) for row in rows if row.points]


def rounding_account_minor(session: Session, *, currency: str) -> Decimal:
    """The hub's money rounding account in one currency: every statement's residue, summed exactly."""
    # Summed here, not by SQL: SQLite keeps exact decimals as text, and its SUM would be a float.
    residues = session.scalars(
        select(SettlementStatement.rounding_residue_minor).where(SettlementStatement.currency == currency)
    ).all()
    return exact_sum(residues)



def statement_by_id(session: Session, *, statement_id: int, partner_id: int | None = None) -> ClosedStatement:
    """One stored statement; with ``partner_id``, only that partner's (another's is not found)."""
    owner = session.scalar(select(SettlementStatement.partner_id).where(SettlementStatement.id == statement_id))
    if owner is None or (partner_id is not None and owner != partner_id):
        raise NotFound(f"no statement {statement_id}")
    return _closed_statements(session, owner, statement_id=statement_id)[0]


@dataclass(frozen=True, slots=True)
class PeriodPosition:
    """Settlement over every statement closed so far, in one currency: who owes what, overall."""

    currency: str
    partner_nets_minor: dict[str, int]
    gross_obligations_minor: int
    net_payments_minor: int
    netting_efficiency: Decimal


def period_position(session: Session, *, currency: str) -> PeriodPosition:
    """Each partner's net over all its closed statements, gross vs net, and netting efficiency."""
    nets = dict(session.execute(
        select(Partner.code, integer_sum(SettlementStatement.net_minor))
        .join(Partner, Partner.id == SettlementStatement.partner_id)
        .where(SettlementStatement.currency == currency).group_by(Partner.code).order_by(Partner.code)
    ).all())
    gross = session.scalar(
        select(integer_sum(func.abs(SettlementStatementLine.amount_minor)))
        .join(SettlementStatement, SettlementStatement.id == SettlementStatementLine.statement_id)
        .where(SettlementStatement.currency == currency)
    ) or 0
    net_payments = sum(abs(net) for net in nets.values())
    return PeriodPosition(currency=currency, partner_nets_minor=nets, gross_obligations_minor=gross,
                          net_payments_minor=net_payments,
                          netting_efficiency=netting_efficiency(gross, min(net_payments, gross)))
