"""Settlement's read models for the console's finance pages: closed and open cycles, a statement with its story.

Every figure is an exact integer counted or summed by SQL; the pages only lay them out.
Lists come a page at a time (``alliance.services.console_reports.Page``). Changes never
happen here: they go through ``settlement.finance`` and ``settlement.closing``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session
from sqlalchemy.sql.selectable import Subquery

from alliance.domain.errors import NotFound, ValidationFailed
from alliance.models import (
    Partner,
    ReconciliationReport,
    SettlementRun,
    SettlementStatement,
    SettlementStatementLine,
    StatementEvent,
    StatementLineDispute,
)
from alliance.services.console_reports import Page, Sort, paged
from settlement.closing import due_by_partner
from settlement.cycles import cycle_containing

STATEMENT_STATES = ("uninvoiced", "invoiced", "paid", "overdue")
# Which way a statement's net goes: the partner owes the hub, the hub owes the partner, or nothing.
NET_DIRECTIONS = {"owed_to_hub": "owed to the hub", "owed_to_partner": "owed to the partner", "zero": "nothing owed"}


@dataclass(frozen=True, slots=True)
class ClosedCycleRow:
    statement_id: int
    partner: str
    frequency: str
    cycle_starts_at: datetime
    cycle_ends_at: datetime
    closed_at: datetime
    currency: str
    net_minor: int
    due_date: date
    invoiced: bool
    paid_minor: int
    # Owed to the hub, past its due date and not fully paid (as ``finance.overdue`` counts it).
    overdue: bool = False

    @property
    def outstanding_minor(self) -> int:
        return abs(self.net_minor) - self.paid_minor

    @property
    def state(self) -> str:
        if self.net_minor != 0 and self.outstanding_minor == 0:
            return "paid"
        return "invoiced" if self.invoiced else "uninvoiced"


def _statement_money() -> tuple[Subquery, Subquery]:
    paid = (select(StatementEvent.statement_id, func.sum(StatementEvent.amount_minor).label("paid"))
            .where(StatementEvent.kind == "paid").group_by(StatementEvent.statement_id).subquery())
    invoiced = (select(StatementEvent.statement_id, func.count().label("invoiced"))
                .where(StatementEvent.kind == "invoiced").group_by(StatementEvent.statement_id).subquery())
    return paid, invoiced


CLOSED_CYCLE_SORTS = ("statement", "partner", "cycle", "net", "due", "outstanding")


def closed_cycles_page(session: Session, *, partner_code: str | None, state: str | None, page: int,
                       page_size: int, net: str | None = None, as_of: date | None = None,
                       sort: Sort | None = None) -> Page[ClosedCycleRow]:
    """Closed cycles with their statements, by partner, invoice/payment state and net direction.

    Newest cycle first unless ``sort`` names one of ``CLOSED_CYCLE_SORTS``.

    ``as_of`` (today's date where the viewer is; the UTC date if not given) decides which
    statements are overdue: owed to the hub, past their due date, not fully paid.
    """
    if state is not None and state not in STATEMENT_STATES:
        raise ValidationFailed(f"state must be one of {', '.join(STATEMENT_STATES)}", fields={"state": ["unknown"]})
    paid, invoiced = _statement_money()
    paid_minor = func.coalesce(paid.c.paid, 0)
    is_invoiced = func.coalesce(invoiced.c.invoiced, 0) > 0
    day = as_of if as_of is not None else datetime.now(UTC).date()
    is_overdue = ((SettlementStatement.net_minor > 0) & (SettlementStatement.due_date < day)
                  & (paid_minor < SettlementStatement.net_minor))
    query = (
        select(SettlementStatement.id, Partner.code, SettlementRun.cycle_frequency, SettlementRun.cycle_starts_at,
               SettlementRun.cycle_ends_at, SettlementRun.closed_at, SettlementStatement.currency,
               SettlementStatement.net_minor, SettlementStatement.due_date,
               case((is_invoiced, True), else_=False), paid_minor, case((is_overdue, True), else_=False))
        .join(SettlementStatement, SettlementStatement.run_id == SettlementRun.id)
        .join(Partner, Partner.id == SettlementRun.partner_id)
        .outerjoin(paid, paid.c.statement_id == SettlementStatement.id)
        .outerjoin(invoiced, invoiced.c.statement_id == SettlementStatement.id)
    )
    if partner_code:
        query = query.where(Partner.code == partner_code)
    fully_paid = (SettlementStatement.net_minor != 0) & (paid_minor == func.abs(SettlementStatement.net_minor))
    if state == "paid":
        query = query.where(fully_paid)
    elif state == "invoiced":
        query = query.where(is_invoiced, ~fully_paid)
    elif state == "uninvoiced":
        query = query.where(~is_invoiced)
    elif state == "overdue":
        query = query.where(is_overdue)
    if net == "owed_to_hub":
        query = query.where(SettlementStatement.net_minor > 0)
    elif net == "owed_to_partner":
        query = query.where(SettlementStatement.net_minor < 0)
    elif net == "zero":
        query = query.where(SettlementStatement.net_minor == 0)
    order = (sort or Sort("cycle", descending=True)).order(
        {"statement": SettlementStatement.id, "partner": Partner.code, "cycle": SettlementRun.cycle_ends_at,
         "net": SettlementStatement.net_minor, "due": SettlementStatement.due_date,
         "outstanding": SettlementStatement.net_minor - paid_minor}, Partner.code, SettlementStatement.id)
    rows, total = paged(session, query, page, page_size, *order)
    # Named one by one: mypy cannot place arguments after a star of a row whose length it
    # does not know (eleven columns are more than SQLAlchemy's select() types).
    return Page([ClosedCycleRow(statement_id, code, frequency, starts_at, ends_at, closed_at, currency, net_minor,
                                due_date, bool(invoiced_flag), int(paid_sum), bool(overdue_flag))
                 for (statement_id, code, frequency, starts_at, ends_at, closed_at, currency, net_minor, due_date,
                      invoiced_flag, paid_sum, overdue_flag) in rows], total, page, page_size)


@dataclass(frozen=True, slots=True)
class OpenCycleRow:
    """A settling partner's cycle that is not closed yet: the one running now, and any that are due."""

    partner: str
    frequency: str
    cycle_starts_at: datetime
    cycle_ends_at: datetime
    due_to_close: int
    last_closed_end: datetime | None


def open_cycles(session: Session, *, now: datetime, partner_code: str | None = None) -> list[OpenCycleRow]:
    """Per settling partner: the cycle running now and how many ended cycles wait to be closed.

    A terminated partner is listed only while it still has cycles to close.
    """
    rows = []
    for due in due_by_partner(session, now=now, partner_code=partner_code or None):
        partner = due.partner
        if partner.status == "terminated" and not due.cycles:
            continue
        running = cycle_containing(now, partner_code=partner.code, frequency=partner.settlement_cycle,
                                   time_zone=partner.time_zone, cutoff_local=partner.settlement_cutoff_local)
        rows.append(OpenCycleRow(partner.code, partner.settlement_cycle, running.starts_at, running.ends_at,
                                 len(due.cycles), due.last_closed_end))
    return rows


@dataclass(frozen=True, slots=True)
class StatementDetail:
    """A statement with its lines, its invoice and payments, its reconciliations and disputes."""

    statement: SettlementStatement
    run: SettlementRun
    partner_code: str
    partner_name: str
    lines: list[SettlementStatementLine]
    events: list[StatementEvent]
    reconciliations: list[ReconciliationReport]
    disputes: list[tuple[StatementLineDispute, int]] = field(default_factory=list)


def statement_detail(session: Session, *, statement_id: int) -> StatementDetail:
    """Everything the statement page shows, read in one go."""
    row = session.execute(
        select(SettlementStatement, SettlementRun, Partner.code, Partner.name)
        .join(SettlementRun, SettlementRun.id == SettlementStatement.run_id)
        .join(Partner, Partner.id == SettlementStatement.partner_id)
        .where(SettlementStatement.id == statement_id)
    ).first()
    if row is None:
        raise NotFound(f"no statement {statement_id}")
    statement, run, code, name = row
    lines = list(session.scalars(select(SettlementStatementLine).where(
        SettlementStatementLine.statement_id == statement_id).order_by(SettlementStatementLine.line_number)))
    events = list(session.scalars(select(StatementEvent).where(StatementEvent.statement_id == statement_id)
                                  .order_by(StatementEvent.at, StatementEvent.id)))
    reconciliations = list(session.scalars(select(ReconciliationReport).where(
        ReconciliationReport.statement_id == statement_id).order_by(ReconciliationReport.id.desc())))
    disputes = [(dispute, line_number) for dispute, line_number in session.execute(
        select(StatementLineDispute, SettlementStatementLine.line_number)
        .join(SettlementStatementLine, SettlementStatementLine.id == StatementLineDispute.statement_line_id)
        .where(SettlementStatementLine.statement_id == statement_id).order_by(StatementLineDispute.id)
    ).all()]
    return StatementDetail(statement, run, code, name, lines, events, reconciliations, disputes)


@dataclass(frozen=True, slots=True)
class ReconciliationRow:
    report_id: int
    statement_id: int
    partner: str
    source: str
    uploaded_by: str
    uploaded_at: datetime
    discrepancies: int


RECONCILIATION_SORTS = ("report", "partner", "uploaded", "discrepancies")


def reconciliations_page(session: Session, *, partner_code: str | None, with_discrepancies: bool, page: int,
                         page_size: int, sort: Sort | None = None) -> Page[ReconciliationRow]:
    """Stored reconciliation reports, newest first unless ``sort`` names one of ``RECONCILIATION_SORTS``."""
    query = (select(ReconciliationReport.id, ReconciliationReport.statement_id, Partner.code,
                    ReconciliationReport.source, ReconciliationReport.uploaded_by, ReconciliationReport.uploaded_at,
                    ReconciliationReport.discrepancies)
             .join(Partner, Partner.id == ReconciliationReport.partner_id))
    if partner_code:
        query = query.where(Partner.code == partner_code)
    if with_discrepancies:
        query = query.where(ReconciliationReport.discrepancies > 0)
    order = (sort or Sort("report", descending=True)).order(
        {"report": ReconciliationReport.id, "partner": Partner.code, "uploaded": ReconciliationReport.uploaded_at,
         "discrepancies": ReconciliationReport.discrepancies}, ReconciliationReport.id.desc())
    rows, total = paged(session, query, page, page_size, *order)
    return Page([ReconciliationRow(*row) for row in rows], total, page, page_size)


def reconciliation_report(session: Session, *, report_id: int) -> tuple[ReconciliationReport, str]:
    """One stored report and its partner's code."""
    row = session.execute(select(ReconciliationReport, Partner.code)
                          .join(Partner, Partner.id == ReconciliationReport.partner_id)
                          .where(ReconciliationReport.id == report_id)).first()
    if row is None:
        raise NotFound(f"no reconciliation report {report_id}")
    return row[0], row[1]


@dataclass(frozen=True, slots=True)
class PaymentPosition:
    """A partner's payments against its closed statements in one currency, and what is still to be paid.

    ``open_minor`` is signed as a net is: positive, the partner still owes the hub; negative,
    the hub still owes the partner.
    """

    paid_minor: int
    open_minor: int


def payment_positions(session: Session, *, currency: str) -> dict[str, PaymentPosition]:
    """Each partner's payments received or made on its closed statements in ``currency``, and what remains."""
    paid, _ = _statement_money()
    rows = session.execute(
        select(Partner.code, SettlementStatement.net_minor, func.coalesce(paid.c.paid, 0))
        .join(Partner, Partner.id == SettlementStatement.partner_id)
        .outerjoin(paid, paid.c.statement_id == SettlementStatement.id)
        .where(SettlementStatement.currency == currency)
    ).all()
    totals: dict[str, tuple[int, int]] = {}
    for code, net_minor, paid_sum in rows:
        paid_minor = int(paid_sum)
        remaining = abs(net_minor) - paid_minor
        paid_before, open_before = totals.get(code, (0, 0))
        totals[code] = (paid_before + paid_minor, open_before + (remaining if net_minor >= 0 else -remaining))
    return {code: PaymentPosition(paid_minor, open_minor) for code, (paid_minor, open_minor) in sorted(totals.items())}


@dataclass(frozen=True, slots=True)
class CycleEnd:
    """A moment at which some partners' cycles ended and were closed, and whose cycles they were."""

    ends_at: datetime
    # (partner code, cycle frequency) of each statement closed for a cycle ending then, by code.
    partners: tuple[tuple[str, str], ...]


def cycle_ends(session: Session, *, currency: str, limit: int = 200) -> list[CycleEnd]:
    """The distinct cycle ends with closed statements in a currency, newest first, with whose cycles ended then."""
    newest = (select(SettlementRun.cycle_ends_at)
              .join(SettlementStatement, SettlementStatement.run_id == SettlementRun.id)
              .where(SettlementStatement.currency == currency).group_by(SettlementRun.cycle_ends_at)
              .order_by(SettlementRun.cycle_ends_at.desc()).limit(limit).subquery())
    rows = session.execute(
        select(SettlementRun.cycle_ends_at, Partner.code, SettlementRun.cycle_frequency)
        .join(SettlementStatement, SettlementStatement.run_id == SettlementRun.id)
        .join(Partner, Partner.id == SettlementStatement.partner_id)
        .join(newest, newest.c.cycle_ends_at == SettlementRun.cycle_ends_at)
        .where(SettlementStatement.currency == currency)
        .order_by(SettlementRun.cycle_ends_at.desc(), Partner.code)).all()
    ends: dict[datetime, list[tuple[str, str]]] = {}
    for ends_at, code, frequency in rows:
        ends.setdefault(ends_at, []).append((code, frequency))
    return [CycleEnd(ends_at, tuple(partners)) for ends_at, partners in ends.items()]
