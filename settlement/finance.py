"""The finance workflow: adjustments approved by a second staff client, invoices, payments, overdue.

Adjustments: finance requests a signed amount for a partner (> 0 the partner owes the
hub, < 0 a credit); a different staff client approves or rejects it, once. Only approved
adjustments land, each in the first cycle of its partner closed after its approval
(``unapplied_adjustments`` feeds the closer; ``record_applications`` writes the
append-only link to the run). A closed statement is never edited.

Invoices and payments are append-only events on a statement. A statement is invoiced
once; payments come only after it is invoiced and may be partial: each is positive, in
the statement's currency, and together they may reach but never exceed the absolute net
(a payment settles the net in whichever direction it runs). A statement with a zero net
owes nothing and takes no payment. A statement is ``paid`` when its payments sum to the
absolute net. It is overdue on a date when its net is owed to the hub (> 0), its due date
has passed, and the payments recorded up to that date do not reach the net.

Disputes: finance opens a dispute on one line of a closed statement, with a reason (a
line may carry several disputes). It is resolved once: ``adjusted`` by linking an
approved adjustment of the same partner (the correction then lands in a later cycle;
one adjustment resolves at most one dispute), or ``rejected``.

Every change appends an audit log entry in the same transaction, naming ids, amounts
and references only (no personal data).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any, Sequence, TypeVarTuple, cast

from sqlalchemy import ColumnElement, CursorResult, Select, SQLColumnExpression, func, insert, select, update
from sqlalchemy.orm import Session

from alliance.domain.errors import Conflict, InvalidState, NotFound, ValidationFailed
from alliance.models import (
    Adjustment,
    AdjustmentApplication,
    Partner,
    SettlementRun,
    SettlementStatement,
    SettlementStatementLine,
    StatementEvent,
    StatementLineDispute,
)
from alliance.services import audit_log, staff_people, webhooks
from alliance.services.console_reports import Sort
from alliance.services.jobs import Job, last_success
from settlement import credit
from settlement.locking import lock_partner_settlement
from settlement.netting import MAX_AMOUNT_MINOR, REFERENCE_PATTERN, AdjustmentAmount, LineKind

MAX_REASON_LENGTH = 500
# Most rows one page of a list may hold.
MAX_PAGE_SIZE = 200
DECISIONS = {"approve": "approved", "reject": "rejected"}
_Columns = TypeVarTuple("_Columns")


class SameApprover(Conflict):
    """The client that requested an adjustment tried to decide it."""

    code = "same_approver"


class AlreadyDecided(Conflict):
    """An adjustment was already approved or rejected."""

    code = "already_decided"


class DuplicateReference(Conflict):
    """The partner already has an adjustment with this reference."""

    code = "duplicate_reference"


class AlreadyInvoiced(Conflict):
    """A statement is invoiced once."""

    code = "already_invoiced"


class NotInvoiced(InvalidState):
    """A payment before the statement was invoiced."""

    code = "not_invoiced"


class NothingOwed(InvalidState):
    """A payment on a statement whose net is zero."""

    code = "nothing_owed"


class DisputeClosed(Conflict):
    """A dispute was already resolved or rejected."""

    code = "dispute_closed"


class AdjustmentNotUsable(Conflict):
    """An adjustment that is not approved, belongs to another partner, or resolves another dispute."""

    code = "adjustment_not_usable"


class Overpayment(Conflict):
    """Payments would exceed the statement's absolute net."""

    code = "overpayment"


@dataclass(frozen=True, slots=True)
class AdjustmentView:
    id: int
    partner: str
    amount_minor: int
    currency: str
    reason: str
    reference: str
    status: str
    requested_by: str
    requested_at: datetime
    decided_by: str | None
    decided_at: datetime | None
    applied_run_id: int | None


@dataclass(frozen=True, slots=True)
class StatementStatus:
    statement_id: int
    partner: str
    currency: str
    net_minor: int
    due_date: date
    invoiced: bool
    paid_minor: int
    outstanding_minor: int
    paid: bool


def _reference(value: str) -> str:
    if not isinstance(value, str) or not REFERENCE_PATTERN.match(value):
        raise ValidationFailed("reference must be 1-64 letters, digits or . _ : / -, starting with a letter or digit",
                               fields={"reference": ["malformed"]})
    return value


# Adjustments.

def request_adjustment(
    session: Session, *, partner_code: str, amount_minor: int, reason: str, reference: str, actor: str, now: datetime,
) -> AdjustmentView:
    """A pending adjustment in the partner's currency; it lands only once another client approves it."""
    partner = session.scalar(select(Partner).where(Partner.code == partner_code))
    if partner is None:
        raise NotFound(f"no partner {partner_code!r}")
    if isinstance(amount_minor, bool) or not isinstance(amount_minor, int) or amount_minor == 0 \
            or abs(amount_minor) > MAX_AMOUNT_MINOR:
        raise ValidationFailed("amount_minor must be a non-zero whole number of minor units",
                               fields={"amount_minor": ["invalid"]})
    reason = (reason or "").strip()
    if not reason or len(reason) > MAX_REASON_LENGTH:
        raise ValidationFailed(f"reason must be 1-{MAX_REASON_LENGTH} characters", fields={"reason": ["length"]})
    _reference(reference)
    taken = session.scalar(select(Adjustment.id).where(Adjustment.partner_id == partner.id,
                                                       Adjustment.reference == reference))
    if taken is not None:
        raise DuplicateReference(f"partner {partner.code} already has adjustment {reference!r}")
    adjustment_id = session.execute(insert(Adjustment).values(
        partner_id=partner.id, amount_minor=amount_minor, currency=partner.currency, reason=reason,
        reference=reference, status="pending", requested_by=actor, requested_at=now,
    ).returning(Adjustment.id)).scalar_one()
    audit_log.append(session, actor=actor, action="adjustment.request", subject=f"adjustment:{adjustment_id}",
                     now=now, after={"partner": partner.code, "amount_minor": amount_minor,
                                     "currency": partner.currency, "reference": reference, "status": "pending"})
    return adjustment_by_id(session, adjustment_id)


def decide_adjustment(session: Session, *, adjustment_id: int, decision: str, actor: str,
                      now: datetime) -> AdjustmentView:
    """Approve or reject a pending adjustment; the requester may not decide its own."""
    if decision not in DECISIONS:
        raise ValidationFailed("decision must be approve or reject", fields={"decision": ["unknown"]})
    adjustment = session.execute(
        select(Adjustment).where(Adjustment.id == adjustment_id).with_for_update()
    ).scalar_one_or_none()
    if adjustment is None:
        raise NotFound(f"no adjustment {adjustment_id}")
    # Four eyes means two people: a back-office client and a console login of the same
    # person are one pair of eyes, so the people behind the two actors are compared.
    if staff_people.same_person(session, adjustment.requested_by, actor):
        raise SameApprover("an adjustment must be decided by another person than the one who requested it "
                           "(whether through a back-office client or a console login)")
    if adjustment.status != "pending":
        raise AlreadyDecided(f"adjustment {adjustment_id} is already {adjustment.status}")
    if decision == "approve":
        _require_cycle_open(session, adjustment.partner_id, now)
    status = DECISIONS[decision]
    # Session.execute types its result as a Result; an UPDATE's is a CursorResult, which counts the rows.
    changed = cast("CursorResult[*tuple[Any, ...]]", session.execute(
        update(Adjustment).where(Adjustment.id == adjustment_id, Adjustment.status == "pending")
        .values(status=status, decided_by=actor, decided_at=now)
        .execution_options(synchronize_session=False)
    )).rowcount
    if changed != 1:
        raise AlreadyDecided(f"adjustment {adjustment_id} was decided meanwhile")
    session.expire(adjustment)
    audit_log.append(session, actor=actor, action=f"adjustment.{decision}", subject=f"adjustment:{adjustment_id}",
                     now=now, before={"status": "pending"}, after={"status": status})
    return adjustment_by_id(session, adjustment_id)


def _require_cycle_open(session: Session, partner_id: int, approved_at: datetime) -> None:
    """Refuse an approval dated inside a cycle already closed: it could no longer land there.

    An adjustment lands in the cycle whose period holds its approval time. Under the
    partner's settlement lock, closing and approving cannot interleave, so this only
    refuses an approval whose clock lags a closing (another host's clock, or a time
    given by hand).
    """
    lock_partner_settlement(session, partner_id)
    closed_until = session.scalar(select(func.max(SettlementRun.cycle_ends_at))
                                  .where(SettlementRun.partner_id == partner_id))
    if closed_until is not None and approved_at < closed_until:
        raise InvalidState(f"the partner's cycles are closed until {closed_until.isoformat()}, after this approval's "
                           f"time {approved_at.isoformat()}; approve it again with the current time")


def adjustment_by_id(session: Session, adjustment_id: int) -> AdjustmentView:
    found = _adjustment_views(session, select_where=[Adjustment.id == adjustment_id])
    if not found:
        raise NotFound(f"no adjustment {adjustment_id}")
    return found[0]


def decidable_by(session: Session, adjustments: list[AdjustmentView], actor: str) -> set[int]:
    """The ids of the pending adjustments ``actor`` may approve or reject: those another person requested."""
    return {adjustment.id for adjustment in adjustments if adjustment.status == "pending"
            and not staff_people.same_person(session, adjustment.requested_by, actor)}


def list_adjustments(session: Session, *, partner_code: str | None = None,
                     status: str | None = None) -> list[AdjustmentView]:
    """Every matching adjustment, oldest first (operator tools; the API pages with ``adjustments_page``)."""
    return _adjustment_views(session, select_where=_adjustment_conditions(partner_code, status))


ADJUSTMENT_SORTS = ("adjustment", "partner", "amount", "requested", "status")


def adjustments_page(session: Session, *, partner_code: str | None, status: str | None, page: int,
                     page_size: int, sort: Sort | None = None) -> tuple[list[AdjustmentView], int]:
    """One page of matching adjustments (oldest first unless ``sort`` says), and how many match in all."""
    conditions = _adjustment_conditions(partner_code, status)
    total = session.scalar(select(func.count()).select_from(Adjustment)
                           .join(Partner, Partner.id == Adjustment.partner_id).where(*conditions)) or 0
    order = (sort or Sort("adjustment")).order(
        {"adjustment": Adjustment.id, "partner": Partner.code, "amount": Adjustment.amount_minor,
         "requested": Adjustment.requested_at, "status": Adjustment.status}, Adjustment.id)
    return _adjustment_views(session, select_where=conditions, page=page, page_size=page_size, order=order), total


def _adjustment_conditions(partner_code: str | None, status: str | None) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = []
    if partner_code is not None:
        conditions.append(Partner.code == partner_code)
    if status is not None:
        conditions.append(Adjustment.status == status)
    return conditions


def _adjustment_views(session: Session, *, select_where: list[ColumnElement[bool]], page: int | None = None,
                      page_size: int = MAX_PAGE_SIZE,
                      order: Sequence[SQLColumnExpression[Any]] = (Adjustment.id,)) -> list[AdjustmentView]:
    statement = (
        select(Adjustment, Partner.code, AdjustmentApplication.run_id)
        .join(Partner, Partner.id == Adjustment.partner_id)
        .outerjoin(AdjustmentApplication, AdjustmentApplication.adjustment_id == Adjustment.id)
        .where(*select_where).order_by(*order)
    )
    rows = session.execute(_paged(statement, page, page_size)).all()
    return [
        AdjustmentView(a.id, code, a.amount_minor, a.currency, a.reason, a.reference, a.status, a.requested_by,
                       a.requested_at, a.decided_by, a.decided_at, run_id)
        for a, code, run_id in rows
    ]


@dataclass(frozen=True, slots=True)
class _Unapplied:
    id: int
    amount_minor: int
    currency: str
    reference: str
    decided_at: datetime


@dataclass(slots=True)
class UnappliedAdjustments:
    """The approved adjustments no closed statement has applied yet, of a few partners, read once.

    Read under the partners' settlement locks (approvals take them too), it serves every
    cycle the transaction closes for them: ``take`` hands a cycle its adjustments and
    keeps them from the partner's later cycles, as reading again after each cycle
    closed would.
    """

    by_partner: dict[int, list[_Unapplied]]

    def take(self, *, partner_id: int, partner_code: str,
             cycle_ends_at: datetime) -> tuple[list[int], list[AdjustmentAmount]]:
        """The partner's adjustments approved before the cycle's end, by id, for ``build_lines``; now applied."""
        waiting = self.by_partner.get(partner_id, [])
        taken = [row for row in waiting if row.decided_at < cycle_ends_at]
        if taken:
            self.by_partner[partner_id] = [row for row in waiting if not row.decided_at < cycle_ends_at]
        amounts = [AdjustmentAmount(partner_code=partner_code, kind=LineKind.ADJUSTMENT, amount_minor=row.amount_minor,
                                    currency=row.currency, reference=row.reference) for row in taken]
        return [row.id for row in taken], amounts


def unapplied_adjustments(session: Session, *, partner_ids: Sequence[int]) -> UnappliedAdjustments:
    """The partners' approved, not yet applied adjustments, in one query (see ``UnappliedAdjustments``)."""
    rows = session.execute(
        select(Adjustment.id, Adjustment.partner_id, Adjustment.amount_minor, Adjustment.currency,
               Adjustment.reference, Adjustment.decided_at)
        .outerjoin(AdjustmentApplication, AdjustmentApplication.adjustment_id == Adjustment.id)
        .where(Adjustment.partner_id.in_(list(partner_ids)), Adjustment.status == "approved",
               AdjustmentApplication.id.is_(None))
        .order_by(Adjustment.id)
    ).all()
    found: dict[int, list[_Unapplied]] = {}
    for row in rows:
        # An approved adjustment was decided, so it has its time.
        found.setdefault(row.partner_id, []).append(
            _Unapplied(row.id, row.amount_minor, row.currency, row.reference, cast(datetime, row.decided_at)))
    return UnappliedAdjustments(found)


def unapplied_approval_times(session: Session, *, partner_ids: list[int]) -> dict[int, datetime]:
    """Per partner, the latest approval of an adjustment that no closed statement has applied yet."""
    rows = session.execute(
        select(Adjustment.partner_id, func.max(Adjustment.decided_at))
        .outerjoin(AdjustmentApplication, AdjustmentApplication.adjustment_id == Adjustment.id)
        .where(Adjustment.partner_id.in_(partner_ids), Adjustment.status == "approved",
               AdjustmentApplication.id.is_(None))
        .group_by(Adjustment.partner_id)
    ).all()
    # An approved adjustment was decided: each partner's latest decision has its time.
    return {partner_id: cast(datetime, decided_at) for partner_id, decided_at in rows}


def record_applications(session: Session, *, adjustment_ids: list[int], run_id: int) -> None:
    """Link adjustments to the run that applied them, inside the closing transaction."""
    if adjustment_ids:
        session.execute(insert(AdjustmentApplication),
                        [{"adjustment_id": adjustment_id, "run_id": run_id} for adjustment_id in adjustment_ids])


# Invoices and payments.

def _statement_for_change(session: Session, statement_id: int) -> tuple[SettlementStatement, str]:
    row = session.execute(
        select(SettlementStatement.partner_id).where(SettlementStatement.id == statement_id)
    ).first()
    if row is None:
        raise NotFound(f"no statement {statement_id}")
    # One partner's statement events are serialised by its settlement lock.
    lock_partner_settlement(session, row.partner_id)
    statement, code = session.execute(
        select(SettlementStatement, Partner.code).join(Partner, Partner.id == SettlementStatement.partner_id)
        .where(SettlementStatement.id == statement_id)
    ).one()
    return statement, code


def mark_invoiced(session: Session, *, statement_id: int, reference: str, actor: str, now: datetime) -> StatementStatus:
    """Record that a statement was invoiced; once only.

    A statement the partner owes (net > 0) is then paid, in this transaction, from what is
    left of the partner's prepaid blocks, up to what it owes (``credit.apply_on_invoicing``).
    """
    _reference(reference)
    statement, _ = _statement_for_change(session, statement_id)
    if _has_event(session, statement_id, "invoiced"):
        raise AlreadyInvoiced(f"statement {statement_id} is already invoiced")
    session.execute(insert(StatementEvent).values(statement_id=statement_id, kind="invoiced", reference=reference,
                                                  actor=actor, at=now))
    audit_log.append(session, actor=actor, action="statement.invoiced", subject=f"statement:{statement_id}",
                     now=now, after={"reference": reference, "net_minor": statement.net_minor})
    if credit.apply_on_invoicing(session, statement_id=statement_id, actor=actor, now=now):
        announce_if_settled(session, statement_id=statement_id, paid_on=now.date(), now=now)
    return statement_status(session, statement_id)


def record_payment(
    session: Session, *, statement_id: int, amount_minor: int, paid_on: date, reference: str, actor: str,
    now: datetime,
) -> StatementStatus:
    """Record a (partial) payment of an invoiced statement; payments never exceed the absolute net."""
    _reference(reference)
    if isinstance(amount_minor, bool) or not isinstance(amount_minor, int) or not 0 < amount_minor <= MAX_AMOUNT_MINOR:
        raise ValidationFailed("amount_minor must be a positive whole number of minor units",
                               fields={"amount_minor": ["invalid"]})
    statement, _ = _statement_for_change(session, statement_id)
    if not _has_event(session, statement_id, "invoiced"):
        raise NotInvoiced(f"statement {statement_id} is not invoiced yet")
    owed = abs(statement.net_minor)
    if owed == 0:
        raise NothingOwed(f"statement {statement_id} nets to zero; there is nothing to pay")
    paid = _paid(session, statement_id)
    if paid + amount_minor > owed:
        raise Overpayment(f"statement {statement_id} has {owed - paid} minor units outstanding, "
                          f"less than {amount_minor}")
    session.execute(insert(StatementEvent).values(statement_id=statement_id, kind="paid", amount_minor=amount_minor,
                                                  paid_on=paid_on, reference=reference, actor=actor, at=now))
    audit_log.append(session, actor=actor, action="statement.paid", subject=f"statement:{statement_id}", now=now,
                     before={"paid_minor": paid},
                     after={"paid_minor": paid + amount_minor, "amount_minor": amount_minor,
                            "paid_on": paid_on.isoformat(), "reference": reference})
    # What the partner owes changed: its credit snapshot follows in this transaction.
    credit.refresh_if_tracked(session, partner_id=statement.partner_id, now=now)
    if paid + amount_minor == owed:
        announce_if_settled(session, statement_id=statement_id, paid_on=paid_on, now=now)
    return statement_status(session, statement_id)


def apply_prepaid(session: Session, *, statement_id: int, actor: str, now: datetime) -> credit.PrepaidPayment:
    """Pay an invoiced statement from its partner's prepaid blocks by hand (``credit.apply_to_statement``),
    announcing it paid (``statement.paid``) when that settles it in full."""
    payment = credit.apply_to_statement(session, statement_id=statement_id, actor=actor, now=now)
    announce_if_settled(session, statement_id=statement_id, paid_on=now.date(), now=now)
    return payment


def announce_if_settled(session: Session, *, statement_id: int, paid_on: date, now: datetime) -> None:
    """Tell the partner its statement is paid in full (``statement.paid``), once: by the payment that settled it."""
    status = statement_status(session, statement_id)
    if not status.paid:
        return
    partner_id = session.scalar(select(SettlementStatement.partner_id).where(SettlementStatement.id == statement_id))
    webhooks.emit(session, event_type="statement.paid", partner_id=partner_id, now=now, data={
        "statement_id": statement_id, "paid_on": paid_on.isoformat(), "amount_minor": status.paid_minor,
        "currency": status.currency})


def _has_event(session: Session, statement_id: int, kind: str) -> bool:
    return session.scalar(select(StatementEvent.id).where(StatementEvent.statement_id == statement_id,
                                                          StatementEvent.kind == kind).limit(1)) is not None


def _paid(session: Session, statement_id: int, *, up_to: date | None = None) -> int:
    query = select(func.coalesce(func.sum(StatementEvent.amount_minor), 0)).where(
        StatementEvent.statement_id == statement_id, StatementEvent.kind == "paid")
    if up_to is not None:
        query = query.where(StatementEvent.paid_on <= up_to)
    return int(session.scalar(query) or 0)


def statement_status(session: Session, statement_id: int) -> StatementStatus:
    row = session.execute(
        select(SettlementStatement, Partner.code).join(Partner, Partner.id == SettlementStatement.partner_id)
        .where(SettlementStatement.id == statement_id)
    ).first()
    if row is None:
        raise NotFound(f"no statement {statement_id}")
    statement, code = row
    paid = _paid(session, statement_id)
    owed = abs(statement.net_minor)
    return StatementStatus(statement_id, code, statement.currency, statement.net_minor, statement.due_date,
                           _has_event(session, statement_id, "invoiced"), paid, owed - paid,
                           owed > 0 and paid == owed)


def overdue(session: Session, *, as_of: date, page: int | None = None,
            page_size: int = MAX_PAGE_SIZE) -> list[StatementStatus]:
    """Statements owed to the hub (net > 0), past their due date and not fully paid by ``as_of``, oldest first.

    All of them, or one page when ``page`` is given (``overdue_total`` counts them).
    """
    return [
        StatementStatus(s.id, code, s.currency, s.net_minor, s.due_date, bool(is_invoiced), int(paid_sum),
                        s.net_minor - int(paid_sum), False)
        for s, code, paid_sum, is_invoiced in session.execute(_paged(_overdue_statement(as_of), page, page_size))
    ]


def overdue_total(session: Session, *, as_of: date) -> int:
    """How many statements ``overdue`` lists in all."""
    return session.scalar(select(func.count()).select_from(_overdue_statement(as_of).order_by(None).subquery())) or 0


def _overdue_statement(as_of: date) -> Select[SettlementStatement, str, Decimal | int, bool]:
    """Overdue statements with their partner's code, the sum paid by ``as_of`` and whether they are invoiced.

    The sum is an integer on SQLite and a Decimal on PostgreSQL, which widens SUM(bigint) to numeric.
    """
    paid = (
        select(StatementEvent.statement_id, func.sum(StatementEvent.amount_minor).label("paid"))
        .where(StatementEvent.kind == "paid", StatementEvent.paid_on <= as_of)
        .group_by(StatementEvent.statement_id).subquery()
    )
    invoiced = select(StatementEvent.statement_id).where(StatementEvent.kind == "invoiced").scalar_subquery()
    paid_minor = func.coalesce(paid.c.paid, 0)
    return (
        select(SettlementStatement, Partner.code, paid_minor.label("paid"),
               SettlementStatement.id.in_(invoiced).label("invoiced"))
        .join(Partner, Partner.id == SettlementStatement.partner_id)
        .join(SettlementRun, SettlementRun.id == SettlementStatement.run_id)
        .outerjoin(paid, paid.c.statement_id == SettlementStatement.id)
        .where(SettlementStatement.net_minor > 0, SettlementStatement.due_date < as_of,
               paid_minor < SettlementStatement.net_minor)
        .order_by(SettlementStatement.due_date, SettlementStatement.id)
    )


OVERDUE_JOB = "announce-overdue-statements"


def announce_overdue(session: Session, *, now: datetime, since: date | None = None, limit: int = 1000) -> int:
    """Tell each partner of its statements that became overdue since ``since`` (``statement.overdue``).

    A statement becomes overdue on the day after its due date. Those whose due date falls
    in ``[since, today)`` and that are still not paid in full today are announced; without
    ``since``, those due yesterday. A run on the day after the last one announces the
    next day's, so each statement is announced once without a marker to look up;
    returns how many.
    """
    today = now.date()
    first_due = since if since is not None else today - timedelta(days=1)
    rows = session.execute(_overdue_statement(today).where(SettlementStatement.due_date >= first_due)
                           .limit(limit)).all()
    for statement, _code, paid_minor, _invoiced in rows:
        webhooks.emit(session, event_type="statement.overdue", partner_id=statement.partner_id, now=now, data={
            "statement_id": statement.id, "due_date": statement.due_date.isoformat(),
            "outstanding_minor": statement.net_minor - int(paid_minor), "currency": statement.currency})
    return len(rows)


def overdue_job() -> Job:
    """Announce statements newly overdue (hourly; a day's statements once, on the first run of the next day).

    The window starts at the day of the job's last successful run (its lease row), so a
    scheduler stopped for days announces what became overdue meanwhile when it resumes.
    """
    def run(session: Session, *, now: datetime, limit: int) -> int:
        last = last_success(session, OVERDUE_JOB, now=now)
        since = last.date() if last is not None else None
        return announce_overdue(session, now=now, since=since, limit=limit)

    return Job(OVERDUE_JOB, 3600, run, "statements announced overdue")


# Disputes.

RESOLUTIONS = ("adjusted", "rejected")


@dataclass(frozen=True, slots=True)
class DisputeView:
    id: int
    statement_id: int
    line_number: int
    partner: str
    reason: str
    status: str
    opened_by: str
    opened_at: datetime
    resolved_by: str | None
    resolved_at: datetime | None
    adjustment_id: int | None


def open_dispute(
    session: Session, *, statement_id: int, line_number: int, reason: str, actor: str, now: datetime,
) -> DisputeView:
    """Dispute one line of a closed statement."""
    reason = (reason or "").strip()
    if not reason or len(reason) > MAX_REASON_LENGTH:
        raise ValidationFailed(f"reason must be 1-{MAX_REASON_LENGTH} characters", fields={"reason": ["length"]})
    line_id = session.scalar(select(SettlementStatementLine.id).where(
        SettlementStatementLine.statement_id == statement_id, SettlementStatementLine.line_number == line_number))
    if line_id is None:
        raise NotFound(f"no line {line_number} on statement {statement_id}")
    dispute_id = session.execute(insert(StatementLineDispute).values(
        statement_line_id=line_id, reason=reason, status="open", opened_by=actor, opened_at=now,
    ).returning(StatementLineDispute.id)).scalar_one()
    audit_log.append(session, actor=actor, action="dispute.open", subject=f"dispute:{dispute_id}", now=now,
                     after={"statement_id": statement_id, "line_number": line_number, "status": "open"})
    return dispute_by_id(session, dispute_id)


def resolve_dispute(
    session: Session, *, dispute_id: int, outcome: str, adjustment_id: int | None, actor: str, now: datetime,
) -> DisputeView:
    """Close an open dispute: ``adjusted`` with an approved adjustment of the same partner, or ``rejected``."""
    if outcome not in RESOLUTIONS:
        raise ValidationFailed("outcome must be adjusted or rejected", fields={"outcome": ["unknown"]})
    if (outcome == "adjusted") != (adjustment_id is not None):
        raise ValidationFailed("an adjusted dispute names its adjustment, a rejected one none",
                               fields={"adjustment_id": ["required" if outcome == "adjusted" else "unexpected"]})
    dispute = session.execute(
        select(StatementLineDispute).where(StatementLineDispute.id == dispute_id).with_for_update()
    ).scalar_one_or_none()
    if dispute is None:
        raise NotFound(f"no dispute {dispute_id}")
    if dispute.status != "open":
        raise DisputeClosed(f"dispute {dispute_id} is already {dispute.status}")
    if adjustment_id is not None:
        partner_id = session.scalar(
            select(SettlementStatement.partner_id)
            .join(SettlementStatementLine, SettlementStatementLine.statement_id == SettlementStatement.id)
            .where(SettlementStatementLine.id == dispute.statement_line_id))
        adjustment = session.get(Adjustment, adjustment_id)
        if adjustment is None:
            raise NotFound(f"no adjustment {adjustment_id}")
        used = session.scalar(select(StatementLineDispute.id).where(
            StatementLineDispute.adjustment_id == adjustment_id))
        if adjustment.status != "approved" or adjustment.partner_id != partner_id or used is not None:
            raise AdjustmentNotUsable(
                f"adjustment {adjustment_id} must be approved, of the disputed statement's partner, "
                "and resolve no other dispute")
    # Session.execute types its result as a Result; an UPDATE's is a CursorResult, which counts the rows.
    changed = cast("CursorResult[*tuple[Any, ...]]", session.execute(
        update(StatementLineDispute)
        .where(StatementLineDispute.id == dispute_id, StatementLineDispute.status == "open")
        .values(status=outcome, resolved_by=actor, resolved_at=now, adjustment_id=adjustment_id)
        .execution_options(synchronize_session=False)
    )).rowcount
    if changed != 1:
        raise DisputeClosed(f"dispute {dispute_id} was closed meanwhile")
    session.expire(dispute)
    audit_log.append(session, actor=actor, action=f"dispute.{outcome}", subject=f"dispute:{dispute_id}", now=now,
                     before={"status": "open"}, after={"status": outcome, "adjustment_id": adjustment_id})
    return dispute_by_id(session, dispute_id)


def dispute_by_id(session: Session, dispute_id: int) -> DisputeView:
    found = _dispute_views(session, [StatementLineDispute.id == dispute_id])
    if not found:
        raise NotFound(f"no dispute {dispute_id}")
    return found[0]


def list_disputes(session: Session, *, partner_code: str | None = None,
                  status: str | None = None) -> list[DisputeView]:
    """Every matching dispute, oldest first (operator tools; the API pages with ``disputes_page``)."""
    return _dispute_views(session, _dispute_conditions(partner_code, status))


def disputes_page(session: Session, *, partner_code: str | None, status: str | None, page: int,
                  page_size: int) -> tuple[list[DisputeView], int]:
    """One page of matching disputes, oldest first, and how many match in all."""
    conditions = _dispute_conditions(partner_code, status)
    total = session.scalar(select(func.count()).select_from(_dispute_statement(conditions).order_by(None).subquery()))
    return _dispute_views(session, conditions, page=page, page_size=page_size), total or 0


def _dispute_conditions(partner_code: str | None, status: str | None) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = []
    if partner_code is not None:
        conditions.append(Partner.code == partner_code)
    if status is not None:
        conditions.append(StatementLineDispute.status == status)
    return conditions


def _dispute_statement(conditions: list[ColumnElement[bool]]) -> Select[StatementLineDispute, int, int, str]:
    return (
        select(StatementLineDispute, SettlementStatementLine.statement_id, SettlementStatementLine.line_number,
               Partner.code)
        .join(SettlementStatementLine, SettlementStatementLine.id == StatementLineDispute.statement_line_id)
        .join(SettlementStatement, SettlementStatement.id == SettlementStatementLine.statement_id)
        .join(Partner, Partner.id == SettlementStatement.partner_id)
        .where(*conditions).order_by(StatementLineDispute.id)
    )


def _dispute_views(session: Session, conditions: list[ColumnElement[bool]], *, page: int | None = None,
                   page_size: int = MAX_PAGE_SIZE) -> list[DisputeView]:
    rows = session.execute(_paged(_dispute_statement(conditions), page, page_size)).all()
    return [
        DisputeView(d.id, statement_id, line_number, code, d.reason, d.status, d.opened_by, d.opened_at,
                    d.resolved_by, d.resolved_at, d.adjustment_id)
        for d, statement_id, line_number, code in rows
    ]


def _paged(statement: Select[*_Columns], page: int | None, page_size: int) -> Select[*_Columns]:
    """``statement`` limited to one page (pages count from 1), or whole when ``page`` is None."""
    if page is None:
        return statement
    page_size = min(max(page_size, 1), MAX_PAGE_SIZE)
    return statement.offset((max(page, 1) - 1) * page_size).limit(page_size)
