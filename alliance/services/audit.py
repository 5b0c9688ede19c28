"""``alliance audit``: recompute the books from their entries and check every invariant.

Each check of the ledger is one set-based query that returns the offending rows; the
report counts them and names the first, so an operator knows where to look. Signed
documents (statements, audit-log checkpoints) and the audit-log heads they anchor are
checked one document at a time in ``audit_documents``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence, TypeAlias, TypeVar

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import FunctionElement, Over, Row, Select, case, func, literal, null, select
from sqlalchemy.orm import Session, aliased

from alliance.domain.ledger import (
    ISSUING_KINDS,
    MEMBER_ACCOUNT_KINDS,
    TAKE_BACK_KINDS,
    AccountKind,
    HoldStatus,
    LotState,
    TransactionKind,
)
from alliance.models import (
    JournalEntry,
    JournalTransaction,
    LedgerAccount,
    LotConsumption,
    Partner,
    PartnerPrice,
    PointLot,
    RedemptionHold,
    SettlementRun,
    SettlementStatement,
)
from alliance.models.base import UTCDateTime, integer_sum
from alliance.services import audit_documents
from alliance.services.audit_checkpoints import SignedCheckpoint
from alliance.services.price_schedule import price_in_force
from alliance.storage.adapters import storage_for
from settlement.netting import LINE_KIND_BY_TRANSACTION_KIND
from settlement.statements import decimal_text, instant_text

# Settling postings that undo an earlier one, and so carry its price rather than today's.
REVERSAL_KINDS = (*sorted(kind.value for kind in TAKE_BACK_KINDS), TransactionKind.REDEMPTION_REFUND.value)
ISSUING = sorted(kind.value for kind in ISSUING_KINDS)

# A check's query, whatever its columns, and the row it lists an offence in.
Offences: TypeAlias = Select[*tuple[Any, ...]]
Offence: TypeAlias = Row[*tuple[Any, ...]]
_T = TypeVar("_T")


@dataclass(frozen=True)
class CheckResult:
    """One invariant: how many rows break it, and the first of them described."""

    name: str
    description: str
    problems: int
    first_problem: str | None


@dataclass
class AuditReport:
    """Every check and the ledger's totals."""

    checks: list[CheckResult] = field(default_factory=list)
    totals: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when no check found a problem."""
        return all(check.problems == 0 for check in self.checks)

    @property
    def first_failure(self) -> CheckResult | None:
        """The first check that found a problem, if any."""
        return next((check for check in self.checks if check.problems), None)


def run_audit(
    session: Session, *, statement_keys: Mapping[str, Ed25519PublicKey] | None = None,
    checkpoint_copies: Sequence[SignedCheckpoint] = (),
) -> AuditReport:
    """Run every check and gather the totals.

    ``statement_keys`` (the hub's statement public keys by key id) add the checks that
    statements and audit-log checkpoints verify with them; ``alliance audit`` always
    passes the hub's key. ``checkpoint_copies`` are checkpoints exported off the
    database: their heads anchor the audit log like the stored ones.
    """
    report = AuditReport()
    report.checks.extend(_sql_check(session, *check) for check in _checks())
    report.checks.append(_guards_check(session))
    report.checks.append(_audit_log_check(session))
    anchors = audit_documents.Anchors()
    tallies = [*audit_documents.check_statements(session, statement_keys, anchors),
               *audit_documents.check_checkpoints(session, statement_keys, checkpoint_copies, anchors),
               audit_documents.check_anchors(session, anchors)]
    report.checks.extend(CheckResult(tally.name, tally.description, tally.problems, tally.first_problem)
                         for tally in tallies)
    # After the documents: once each row says what its signed document says, the chain
    # between the documents is what is left to check.
    report.checks.append(_sql_check(
        session, "statements_continuous", "each partner's statements follow one another: a cycle starts where the "
        "one before ended and opens at its closing balance (the first opens at zero)", _statement_breaks(),
        _describe_statement_break))
    report.totals = _totals(session)
    return report


def _sql_check(session: Session, name: str, description: str, query: Offences,
               describe: Callable[[Offence], str]) -> CheckResult:
    """A check whose query lists the offending rows: how many, and the first named."""
    count = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    first = session.execute(query.limit(1)).first() if count else None
    return CheckResult(name, description, count, describe(first) if first else None)


def _checks() -> list[tuple[str, str, Offences, Callable[[Offence], str]]]:
    entry_sum = func.coalesce(func.sum(JournalEntry.amount_points), 0)
    transactions = (
        select(JournalTransaction.id, entry_sum.label("total"), func.count(JournalEntry.id).label("entries"))
        .outerjoin(JournalEntry, JournalEntry.transaction_id == JournalTransaction.id)
        .group_by(JournalTransaction.id)
        .having((entry_sum != 0) | (func.count(JournalEntry.id) < 2))
        .order_by(JournalTransaction.id)
    )
    zero_entries = (select(JournalEntry.id, JournalEntry.transaction_id).where(JournalEntry.amount_points == 0)
                    .order_by(JournalEntry.id))
    member_sums = (
        select(JournalEntry.account_id, func.sum(JournalEntry.amount_points).label("total"))
        .group_by(JournalEntry.account_id).subquery()
    )
    balances = (
        select(LedgerAccount.code, LedgerAccount.balance_points, func.coalesce(member_sums.c.total, 0).label("total"))
        .outerjoin(member_sums, member_sums.c.account_id == LedgerAccount.id)
        .where(LedgerAccount.kind.in_([kind.value for kind in MEMBER_ACCOUNT_KINDS]))
        .where((LedgerAccount.balance_points != func.coalesce(member_sums.c.total, 0))
               | (LedgerAccount.balance_points < 0))
        .order_by(LedgerAccount.id)
    )
    consumed_sum = func.coalesce(func.sum(LotConsumption.points), 0)
    lots = (
        select(PointLot.id, PointLot.points_earned, PointLot.points_remaining, consumed_sum.label("consumed"))
        .outerjoin(LotConsumption, LotConsumption.lot_id == PointLot.id)
        .group_by(PointLot.id, PointLot.points_earned, PointLot.points_remaining)
        .having((PointLot.points_remaining != PointLot.points_earned - consumed_sum)
                | (PointLot.points_remaining < 0) | (PointLot.points_remaining > PointLot.points_earned))
        .order_by(PointLot.id)
    )
    return [
        ("transactions_balanced", "every journal transaction has two or more entries summing to zero",
         transactions, lambda row: f"transaction {row.id} has {row.entries} entries summing to {row.total}"),
        ("no_zero_entries", "no entry moves zero points",
         zero_entries, lambda row: f"entry {row.id} of transaction {row.transaction_id} is zero"),
        ("balances_match_entries", "each member balance equals the sum of its entries and is not negative",
         balances, lambda row: f"account {row.code} stores {row.balance_points}, its entries sum to {row.total}"),
        ("lots_match_consumptions", "each lot's remainder equals what it earned less what was consumed",
         lots, lambda row: (f"lot {row.id} earned {row.points_earned}, consumed {row.consumed}, "
                            f"stores {row.points_remaining}")),
        ("available_matches_lots", "a member's available points equal the remainders of their active lots",
         _lots_against(AccountKind.MEMBER_AVAILABLE, LotState.ACTIVE), _describe_lot_mismatch),
        ("pending_matches_lots", "a member's pending points equal the remainders of their pending lots",
         _lots_against(AccountKind.MEMBER_PENDING, LotState.PENDING), _describe_lot_mismatch),
        ("held_matches_holds", "a member's held points equal their open holds",
         _held_against_holds(),
         lambda row: f"account {row.code} holds {row.balance_points}, open holds total {row.expected}"),
        ("holds_trace_to_lots", "each hold's lot consumptions equal what it still holds or spent",
         _hold_consumptions(),
         lambda row: f"hold {row.id} ({row.status}) consumed {row.consumed} from lots, expected {row.expected}"),
        ("lots_match_earns", "each lot was credited by its own earn transaction from its funding account",
         _lots_against_earns(),
         lambda row: f"lot {row.id} earned {row.points_earned}, its funding entry is {row.funded}"),
        ("posting_prices", "each settling posting records the price its partner's price schedule had in force "
         "then (a reversal: the price of the posting it reverses)", _posting_prices(), _describe_price_mismatch),
    ]


def _statement_breaks() -> Offences:
    """Statements that do not follow the partner's previous one, by cycle order."""
    chained = (
        select(SettlementStatement.id, Partner.code.label("partner_code"), SettlementRun.cycle_starts_at,
               SettlementStatement.opening_balance_minor,
               _in_cycle_order(func.lag(SettlementRun.cycle_ends_at, type_=UTCDateTime())).label("previous_ends_at"),
               _in_cycle_order(func.lag(SettlementStatement.closing_balance_minor)).label("previous_closing_minor"),
               _in_cycle_order(func.row_number()).label("position"))
        .join(SettlementRun, SettlementRun.id == SettlementStatement.run_id)
        .join(Partner, Partner.id == SettlementRun.partner_id)
        .subquery()
    )
    return (
        select(chained)
        .where(((chained.c.position == 1) & (chained.c.opening_balance_minor != 0))
               | ((chained.c.position > 1) & ((chained.c.previous_ends_at != chained.c.cycle_starts_at)
                                              | (chained.c.previous_closing_minor
                                                 != chained.c.opening_balance_minor))))
        .order_by(chained.c.id)
    )


def _in_cycle_order(function: FunctionElement[_T]) -> Over[_T]:
    """``function`` over each partner's statements, by cycle."""
    return function.over(partition_by=SettlementRun.partner_id, order_by=SettlementRun.cycle_starts_at)


def _describe_statement_break(row: Offence) -> str:
    where = f"statement {row.id} ({row.partner_code}, cycle from {instant_text(row.cycle_starts_at)})"
    if row.position == 1:
        return f"{where} is the partner's first but opens at {row.opening_balance_minor}, not 0"
    if row.previous_ends_at != row.cycle_starts_at:
        return f"{where} does not start where the previous cycle ended ({instant_text(row.previous_ends_at)})"
    return (f"{where} opens at {row.opening_balance_minor}, "
            f"the previous statement closed at {row.previous_closing_minor}")


def _posting_prices() -> Offences:
    """Settling postings whose recorded price is not the one their rule gives, in one pass over the journal.

    An earn is priced at the issue price in force at its posting time and a capture at
    the redemption price, looked up with ``price_in_force``, as the ledger posts them; a reversal
    carries the price of the posting it reverses. Hub-funded earns have no partner and
    no price. The lookups are correlated subqueries inside CASE branches, so each
    posting runs only the one its kind needs.
    """
    posting, original = JournalTransaction, aliased(JournalTransaction)
    scheduled = price_in_force(posting.partner_id, posting.posted_at).with_only_columns(case(
        (posting.kind.in_(ISSUING), PartnerPrice.issue_price_per_point),
        else_=PartnerPrice.redemption_price_per_point,
    )).scalar_subquery()
    reversed_price = (select(original.price_per_point).where(original.id == posting.reverses_transaction_id)
                      .scalar_subquery())
    expected = case(
        (posting.kind.in_(REVERSAL_KINDS), reversed_price),
        (posting.partner_id.is_(None), null()),
        else_=scheduled,
    )
    return (
        select(posting.id, posting.kind, posting.posted_at, posting.price_per_point.label("found"),
               posting.reverses_transaction_id, expected.label("expected"),
               select(Partner.code).where(Partner.id == posting.partner_id).scalar_subquery().label("partner_code"))
        .where(posting.kind.in_([kind.value for kind in LINE_KIND_BY_TRANSACTION_KIND]),
               posting.price_per_point.is_distinct_from(expected))
        .order_by(posting.id)
    )


def _describe_price_mismatch(row: Offence) -> str:
    found = "no price" if row.found is None else decimal_text(row.found)
    posting = (f"transaction {row.id} ({row.kind} of partner {row.partner_code or 'none (hub-funded)'}, "
               f"posted {instant_text(row.posted_at)}) records {found}")
    if row.kind in REVERSAL_KINDS:
        if row.reverses_transaction_id is None:
            return f"{posting}, but names no transaction it reverses"
        return f"{posting}, the price of the transaction it reverses ({row.reverses_transaction_id}) is " + (
            "no price" if row.expected is None else decimal_text(row.expected))
    if row.partner_code is None:
        return f"{posting}, but a hub-funded earn has no price"
    schedule = "issue" if row.kind in ISSUING else "redemption"
    if row.expected is None:
        return f"{posting}, but no {schedule} price was in force then"
    return f"{posting}, the {schedule} price in force then is {decimal_text(row.expected)}"


def _lots_against(kind: AccountKind, state: LotState) -> Offences:
    lot_sums = (
        select(PointLot.member_id, func.sum(PointLot.points_remaining).label("total"))
        .where(PointLot.state == state.value).group_by(PointLot.member_id).subquery()
    )
    expected = func.coalesce(lot_sums.c.total, 0)
    return (
        select(LedgerAccount.code, LedgerAccount.balance_points, expected.label("expected"))
        .outerjoin(lot_sums, lot_sums.c.member_id == LedgerAccount.member_id)
        .where(LedgerAccount.kind == kind.value, LedgerAccount.balance_points != expected)
        .order_by(LedgerAccount.id)
    )


def _describe_lot_mismatch(row: Offence) -> str:
    return f"account {row.code} stores {row.balance_points}, its lots hold {row.expected}"


def _held_against_holds() -> Offences:
    open_holds = (
        select(RedemptionHold.member_id, func.sum(RedemptionHold.points_held).label("total"))
        .where(RedemptionHold.status == HoldStatus.OPEN.value).group_by(RedemptionHold.member_id).subquery()
    )
    expected = func.coalesce(open_holds.c.total, 0)
    return (
        select(LedgerAccount.code, LedgerAccount.balance_points, expected.label("expected"))
        .outerjoin(open_holds, open_holds.c.member_id == LedgerAccount.member_id)
        .where(LedgerAccount.kind == AccountKind.MEMBER_HELD.value, LedgerAccount.balance_points != expected)
        .order_by(LedgerAccount.id)
    )


def _hold_consumptions() -> Offences:
    consumed = func.coalesce(func.sum(LotConsumption.points), 0)
    expected = case(
        (RedemptionHold.status == HoldStatus.OPEN.value, RedemptionHold.points_held),
        (RedemptionHold.status == HoldStatus.CAPTURED.value,
         RedemptionHold.points_captured - RedemptionHold.points_refunded),
        else_=literal(0),
    )
    return (
        select(RedemptionHold.id, RedemptionHold.status, consumed.label("consumed"), expected.label("expected"))
        .outerjoin(LotConsumption, LotConsumption.hold_id == RedemptionHold.id)
        .group_by(RedemptionHold.id, RedemptionHold.status, RedemptionHold.points_held,
                  RedemptionHold.points_captured, RedemptionHold.points_refunded)
        .having(consumed != expected)
        .order_by(RedemptionHold.id)
    )


def _lots_against_earns() -> Offences:
    funded = func.coalesce(func.sum(-JournalEntry.amount_points), 0)
    return (
        select(PointLot.id, PointLot.points_earned, funded.label("funded"))
        .outerjoin(JournalEntry, (JournalEntry.transaction_id == PointLot.earn_transaction_id)
                   & (JournalEntry.account_id == PointLot.funding_account_id))
        .group_by(PointLot.id, PointLot.points_earned)
        .having(funded != PointLot.points_earned)
        .order_by(PointLot.id)
    )


def _guards_check(session: Session) -> CheckResult:
    storage = storage_for(session)
    problem = storage.guard_problem(session)
    if problem is not None:
        return CheckResult("database_guards", "the triggers that keep the ledger append-only and balances "
                           "derived are installed and enabled", 1, problem)
    missing = sorted(storage.expected_guards - storage.installed_guards(session))
    return CheckResult(
        "database_guards",
        "the triggers that keep the ledger append-only and balances derived are installed and enabled",
        len(missing), f"trigger {missing[0]} is missing or disabled" if missing else None,
    )


def _audit_log_check(session: Session) -> CheckResult:
    from alliance.services.audit_log import verify

    chain = verify(session)
    broken = chain.first_break
    return CheckResult(
        "audit_log_chain", "the back-office audit log is an unbroken hash chain",
        1 if broken else 0,
        f"entry {broken.sequence}: {broken.reason} ({broken.detail})" if broken else None,
    )


def _totals(session: Session) -> dict[str, int]:
    totals = dict(session.execute(
        select(LedgerAccount.kind, integer_sum(JournalEntry.amount_points))
        .outerjoin(JournalEntry, JournalEntry.account_id == LedgerAccount.id)
        .group_by(LedgerAccount.kind)
    ).all())
    return {
        "transactions": session.scalar(select(func.count()).select_from(JournalTransaction)) or 0,
        "entries": session.scalar(select(func.count()).select_from(JournalEntry)) or 0,
        "sum_of_all_entries": int(sum(totals.values())),
        **{f"points_{kind}": int(totals.get(kind.value, 0)) for kind in AccountKind},
    }
