"""Read models for the web console: lists a page at a time, a statement with its story, monthly activity.

Every figure is an exact integer counted or summed by SQL; the console only lays them
out. Changes never happen here: the console calls the same services as the back-office
API for those.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Generic, Sequence, TypeVar

from sqlalchemy import String, case, cast, func, or_, select
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from alliance.domain.errors import NotFound, ValidationFailed
from alliance.models import (
    Complaint,
    Partner,
    PartnerKey,
    Purchase,
    ReconciliationReport,
    RedemptionHold,
    SettlementRun,
    SettlementStatement,
    SettlementStatementLine,
    StatementEvent,
    StatementLineDispute,
    Terminal,
)
from alliance.models.base import integer_sum
from alliance.services.partner_admin import KeyView
from settlement.api import cycle_containing, due_by_partner

Row = TypeVar("Row")
MAX_PAGE_SIZE = 200
MAX_CHART_MONTHS = 36
PARTNER_STATUSES = ("pending", "active", "suspended", "terminated")
STATEMENT_STATES = ("uninvoiced", "invoiced", "paid")
# Which way a statement's net goes: the partner owes the hub, the hub owes the partner, or nothing.
NET_DIRECTIONS = {"owed_to_hub": "owed to the hub", "owed_to_partner": "owed to the partner", "zero": "nothing owed"}


@dataclass(frozen=True, slots=True)
class Page(Generic[Row]):
    """One page of a list and where it sits in the whole."""

    items: Sequence[Row]
    total: int
    page: int
    page_size: int

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.page_size))

    @property
    def first_index(self) -> int:
        return (self.page - 1) * self.page_size + 1 if self.total else 0

    @property
    def last_index(self) -> int:
        return min(self.page * self.page_size, self.total)


def page_bounds(page: int, page_size: int) -> tuple[int, int]:
    """A page number of at least 1 and a page size between 1 and MAX_PAGE_SIZE."""
    if page < 1 or not 1 <= page_size <= MAX_PAGE_SIZE:
        raise ValidationFailed(f"page starts at 1; page_size is 1-{MAX_PAGE_SIZE}", fields={"page": ["range"]})
    return page, page_size


def _paged(session: Session, query, page: int, page_size: int, *order) -> tuple[list, int]:  # type: ignore[no-untyped-def]
    page, page_size = page_bounds(page, page_size)
    total = session.scalar(select(func.count()).select_from(query.order_by(None).subquery())) or 0
    rows = session.execute(query.order_by(*order).offset((page - 1) * page_size).limit(page_size)).all()
    return list(rows), total


# Partners.

@dataclass(frozen=True, slots=True)
class PartnerRow:
    """A partner as the partner list shows it; grading adds its own columns beside these."""

    id: int
    code: str
    name: str
    status: str
    currency: str
    settlement_cycle: str
    created_at: datetime
    open_complaints: int


def partners_page(session: Session, *, status: str | None, search: str | None, page: int,
                  page_size: int) -> Page[PartnerRow]:
    """Partners by code, filtered by status and by a code or name fragment."""
    if status is not None and status not in PARTNER_STATUSES:
        raise ValidationFailed(f"status must be one of {', '.join(PARTNER_STATUSES)}", fields={"status": ["unknown"]})
    open_complaints = (
        select(Complaint.partner_id, func.count().label("open_count"))
        .where(Complaint.status.in_(("open", "investigating"))).group_by(Complaint.partner_id).subquery()
    )
    query = (
        select(Partner.id, Partner.code, Partner.name, Partner.status, Partner.currency, Partner.settlement_cycle,
               Partner.created_at, func.coalesce(open_complaints.c.open_count, 0))
        .outerjoin(open_complaints, open_complaints.c.partner_id == Partner.id)
    )
    if status:
        query = query.where(Partner.status == status)
    if search and search.strip():
        pattern = f"%{_escape_like(search.strip().lower())}%"
        query = query.where(or_(func.lower(Partner.code).like(pattern, escape="\\"),
                                func.lower(Partner.name).like(pattern, escape="\\")))
    rows, total = _paged(session, query, page, page_size, Partner.code)
    return Page([PartnerRow(*row) for row in rows], total, page, page_size)


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


@dataclass(frozen=True, slots=True)
class TerminalRow:
    code: str
    status: str
    created_at: datetime
    keys: int


def partner_keys(session: Session, *, partner_id: int) -> list[KeyView]:
    """The partner's signing keys, newest first."""
    rows = session.execute(
        select(PartnerKey.id, PartnerKey.key_id, PartnerKey.status, Terminal.code, PartnerKey.created_at, PartnerKey.expires_at,
               PartnerKey.revoked_at)
        .outerjoin(Terminal, Terminal.id == PartnerKey.terminal_id)
        .where(PartnerKey.partner_id == partner_id).order_by(PartnerKey.created_at.desc(), PartnerKey.key_id)
    ).all()
    return [KeyView(*row) for row in rows]


def partner_terminals(session: Session, *, partner_id: int) -> list[TerminalRow]:
    """The partner's terminals with how many keys are bound to each."""
    bound = (select(PartnerKey.terminal_id, func.count().label("keys")).where(PartnerKey.terminal_id.is_not(None))
             .group_by(PartnerKey.terminal_id).subquery())
    rows = session.execute(
        select(Terminal.code, Terminal.status, Terminal.created_at, func.coalesce(bound.c["keys"], 0))
        .outerjoin(bound, bound.c.terminal_id == Terminal.id)
        .where(Terminal.partner_id == partner_id).order_by(Terminal.code)
    ).all()
    return [TerminalRow(*row) for row in rows]


@dataclass(frozen=True, slots=True)
class MonthActivity:
    """One UTC calendar month of a partner's activity; every number exact."""

    month: str
    purchases: int
    purchase_amount_minor: int
    points_issued: int
    redemptions: int
    points_redeemed: int
    complaints: int


def month_labels(until: date, months: int) -> list[str]:
    """``months`` consecutive ``YYYY-MM`` labels ending with the month of ``until``."""
    if not 1 <= months <= MAX_CHART_MONTHS:
        raise ValidationFailed(f"months must be 1-{MAX_CHART_MONTHS}", fields={"months": ["range"]})
    labels = []
    year, month = until.year, until.month
    for _ in range(months):
        labels.append(f"{year:04d}-{month:02d}")
        year, month = (year, month - 1) if month > 1 else (year - 1, 12)
    return labels[::-1]


def _month_of(session: Session, column) -> ColumnElement[str]:  # type: ignore[no-untyped-def]
    """``YYYY-MM`` of a UTC timestamp column, on either database."""
    if session.get_bind().dialect.name == "postgresql":
        return func.to_char(func.timezone("UTC", column), "YYYY-MM")
    return cast(func.strftime("%Y-%m", column), String)


def partner_activity(session: Session, *, partner_id: int, now: datetime, months: int) -> list[MonthActivity]:
    """Purchases, captured redemptions and complaints per month over the last ``months`` months."""
    labels = month_labels(now.date(), months)
    first_year, first_month = (int(part) for part in labels[0].split("-"))
    since = datetime(first_year, first_month, 1, tzinfo=now.tzinfo)
    purchase_month = _month_of(session, Purchase.purchased_at)
    purchases = {row.month: row for row in session.execute(
        select(purchase_month.label("month"), func.count().label("count"),
               integer_sum(Purchase.amount_minor).label("amount"),
               integer_sum(Purchase.points_partner + Purchase.points_hub).label("points"))
        .where(Purchase.partner_id == partner_id, Purchase.purchased_at >= since)
        .group_by(purchase_month)
    )}
    hold_month = _month_of(session, RedemptionHold.created_at)
    redemptions = {row.month: row for row in session.execute(
        select(hold_month.label("month"), func.count().label("count"),
               integer_sum(RedemptionHold.points_captured - RedemptionHold.points_refunded).label("points"))
        .where(RedemptionHold.partner_id == partner_id, RedemptionHold.status == "captured",
               RedemptionHold.created_at >= since)
        .group_by(hold_month)
    )}
    complaint_month = _month_of(session, Complaint.opened_at)
    complaints = dict(session.execute(
        select(complaint_month, func.count())
        .where(Complaint.partner_id == partner_id, Complaint.opened_at >= since).group_by(complaint_month)
    ).all())
    result = []
    for label in labels:
        bought, redeemed = purchases.get(label), redemptions.get(label)
        result.append(MonthActivity(
            month=label, purchases=int(bought.count) if bought else 0,
            purchase_amount_minor=int(bought.amount) if bought else 0,
            points_issued=int(bought.points) if bought else 0, redemptions=int(redeemed.count) if redeemed else 0,
            points_redeemed=int(redeemed.points) if redeemed else 0, complaints=int(complaints.get(label, 0)),
        ))
    return result


# Settlement cycles and statements.

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

    @property
    def outstanding_minor(self) -> int:
        return abs(self.net_minor) - self.paid_minor

    @property
    def state(self) -> str:
        if self.net_minor != 0 and self.outstanding_minor == 0:
            return "paid"
        return "invoiced" if self.invoiced else "uninvoiced"


def _statement_money():  # type: ignore[no-untyped-def]
    paid = (select(StatementEvent.statement_id, func.sum(StatementEvent.amount_minor).label("paid"))
            .where(StatementEvent.kind == "paid").group_by(StatementEvent.statement_id).subquery())
    invoiced = (select(StatementEvent.statement_id, func.count().label("invoiced"))
                .where(StatementEvent.kind == "invoiced").group_by(StatementEvent.statement_id).subquery())
    return paid, invoiced


def closed_cycles_page(session: Session, *, partner_code: str | None, state: str | None, page: int,
                       page_size: int, net: str | None = None) -> Page[ClosedCycleRow]:
    """Closed cycles with their statements, newest first, by partner, invoice/payment state and net direction."""
    if state is not None and state not in STATEMENT_STATES:
        raise ValidationFailed(f"state must be one of {', '.join(STATEMENT_STATES)}", fields={"state": ["unknown"]})
    paid, invoiced = _statement_money()
    paid_minor = func.coalesce(paid.c.paid, 0)
    is_invoiced = func.coalesce(invoiced.c.invoiced, 0) > 0
    query = (
        select(SettlementStatement.id, Partner.code, SettlementRun.cycle_frequency, SettlementRun.cycle_starts_at,
               SettlementRun.cycle_ends_at, SettlementRun.closed_at, SettlementStatement.currency,
               SettlementStatement.net_minor, SettlementStatement.due_date,
               case((is_invoiced, True), else_=False), paid_minor)
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
    if net == "owed_to_hub":
        query = query.where(SettlementStatement.net_minor > 0)
    elif net == "owed_to_partner":
        query = query.where(SettlementStatement.net_minor < 0)
    elif net == "zero":
        query = query.where(SettlementStatement.net_minor == 0)
    rows, total = _paged(session, query, page, page_size, SettlementRun.cycle_ends_at.desc(), Partner.code)
    return Page([ClosedCycleRow(*row[:9], bool(row[9]), int(row[10])) for row in rows], total, page, page_size)


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


def reconciliations_page(session: Session, *, partner_code: str | None, with_discrepancies: bool, page: int,
                         page_size: int) -> Page[ReconciliationRow]:
    """Stored reconciliation reports, newest first."""
    query = (select(ReconciliationReport.id, ReconciliationReport.statement_id, Partner.code,
                    ReconciliationReport.source, ReconciliationReport.uploaded_by, ReconciliationReport.uploaded_at,
                    ReconciliationReport.discrepancies)
             .join(Partner, Partner.id == ReconciliationReport.partner_id))
    if partner_code:
        query = query.where(Partner.code == partner_code)
    if with_discrepancies:
        query = query.where(ReconciliationReport.discrepancies > 0)
    rows, total = _paged(session, query, page, page_size, ReconciliationReport.id.desc())
    return Page([ReconciliationRow(*row) for row in rows], total, page, page_size)


def reconciliation_report(session: Session, *, report_id: int) -> tuple[ReconciliationReport, str]:
    """One stored report and its partner's code."""
    row = session.execute(select(ReconciliationReport, Partner.code)
                          .join(Partner, Partner.id == ReconciliationReport.partner_id)
                          .where(ReconciliationReport.id == report_id)).first()
    if row is None:
        raise NotFound(f"no reconciliation report {report_id}")
    return row[0], row[1]


def cycle_ends(session: Session, *, currency: str, limit: int = 200) -> list[datetime]:
    """The distinct cycle ends with closed statements in a currency, newest first."""
    return list(session.scalars(
        select(SettlementRun.cycle_ends_at).join(SettlementStatement, SettlementStatement.run_id == SettlementRun.id)
        .where(SettlementStatement.currency == currency).group_by(SettlementRun.cycle_ends_at)
        .order_by(SettlementRun.cycle_ends_at.desc()).limit(limit)))


def partner_codes(session: Session) -> list[str]:
    """Every partner code, for filter menus."""
    return list(session.scalars(select(Partner.code).order_by(Partner.code)))


def complaint_partner_codes(session: Session, complaint_ids: Sequence[int]) -> dict[int, str]:
    """The partner code of each listed complaint."""
    if not complaint_ids:
        return {}
    return dict(session.execute(select(Complaint.id, Partner.code).join(Partner, Partner.id == Complaint.partner_id)
                                .where(Complaint.id.in_(complaint_ids))).all())
