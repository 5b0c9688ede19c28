"""Read models for the web console: lists a page at a time, partners and their monthly activity.

Settlement's pages read ``settlement.reports`` (closed and open cycles, a statement with
its story, reconciliation reports), which pages its lists with ``Page`` and ``paged``.

Every figure is an exact integer counted or summed by SQL; the console only lays them
out. Changes never happen here: the console calls the same services as the back-office
API for those.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Generic, Mapping, Sequence, TypeVar, TypeVarTuple, cast

from sqlalchemy import Row as ResultRow
from sqlalchemy import Select, SQLColumnExpression, case, func, or_, select
from sqlalchemy.orm import InstrumentedAttribute, Session
from sqlalchemy.sql import Subquery

from alliance.domain.errors import ValidationFailed
from alliance.models import Complaint, Partner, PartnerKey, SettlementStatement, StatementEvent, Terminal
from alliance.models.base import integer_sum
from alliance.services import grading
from alliance.services.partner_admin import KeyView

Row = TypeVar("Row")
Columns = TypeVarTuple("Columns")
MAX_PAGE_SIZE = 200
MAX_CHART_MONTHS = 36
PARTNER_STATUSES = ("pending", "active", "suspended", "terminated")


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


@dataclass(frozen=True, slots=True)
class Sort:
    """How a list is ordered: one of the list's named keys, ascending or descending."""

    key: str
    descending: bool = False

    def order(self, columns: Mapping[str, SQLColumnExpression[Any]], *tie_breakers: SQLColumnExpression[Any],
              ) -> list[SQLColumnExpression[Any]]:
        """``ORDER BY`` for this sort over a list's sortable ``columns``, ties broken in a stable order."""
        column = columns[self.key]
        return [column.desc() if self.descending else column.asc(), *tie_breakers]


def page_bounds(page: int, page_size: int) -> tuple[int, int]:
    """A page number of at least 1 and a page size between 1 and MAX_PAGE_SIZE."""
    if page < 1 or not 1 <= page_size <= MAX_PAGE_SIZE:
        raise ValidationFailed(f"page starts at 1; page_size is 1-{MAX_PAGE_SIZE}", fields={"page": ["range"]})
    return page, page_size


def paged(session: Session, query: Select[*Columns], page: int, page_size: int,
          *order: SQLColumnExpression[Any]) -> tuple[list[ResultRow[*Columns]], int]:
    """One page of ``query``'s rows in ``order``, and how many rows it has in all."""
    page, page_size = page_bounds(page, page_size)
    total = session.scalar(select(func.count()).select_from(query.order_by(None).subquery())) or 0
    rows = session.execute(query.order_by(*order).offset((page - 1) * page_size).limit(page_size)).all()
    return list(rows), total


# Partners.

@dataclass(frozen=True, slots=True)
class PartnerRow:
    """A partner as the portfolio shows it: its grade of the newest computed period, open alerts, money owed."""

    id: int
    code: str
    name: str
    status: str
    currency: str
    settlement_cycle: str
    created_at: datetime
    open_complaints: int
    grade: str | None = None
    open_alerts: int = 0
    # What the partner still owes the hub on its closed statements, in its currency (minor units).
    outstanding_minor: int = 0


PARTNER_SORTS = ("code", "name", "status", "grade", "alerts", "outstanding", "complaints")


def partners_page(session: Session, *, status: str | None, search: str | None, page: int,
                  page_size: int, sort: Sort | None = None) -> Page[PartnerRow]:
    """Partners filtered by status and a code or name fragment, by code unless ``sort`` names a PARTNER_SORTS key."""
    if status is not None and status not in PARTNER_STATUSES:
        raise ValidationFailed(f"status must be one of {', '.join(PARTNER_STATUSES)}", fields={"status": ["unknown"]})
    sort = sort or Sort("code")
    if sort.key not in PARTNER_SORTS:
        raise ValidationFailed(f"partners sort by one of {', '.join(PARTNER_SORTS)}", fields={"sort": ["unknown"]})
    open_complaints = (
        select(Complaint.partner_id, func.count().label("open_count"))
        .where(Complaint.status.in_(("open", "investigating"))).group_by(Complaint.partner_id).subquery()
    )
    grades = grading.newest_grades()
    alerts = grading.open_alert_counts()
    outstanding = _outstanding_by_partner()
    complaint_count = func.coalesce(open_complaints.c.open_count, 0)
    alert_count = func.coalesce(alerts.c.open_alerts, 0)
    owed = func.coalesce(outstanding.c.outstanding, 0)
    query = (
        select(Partner.id, Partner.code, Partner.name, Partner.status, Partner.currency, Partner.settlement_cycle,
               Partner.created_at, complaint_count, grades.c.grade, alert_count, owed)
        .outerjoin(open_complaints, open_complaints.c.partner_id == Partner.id)
        .outerjoin(grades, grades.c.partner_id == Partner.id)
        .outerjoin(alerts, alerts.c.partner_id == Partner.id)
        .outerjoin(outstanding, outstanding.c.partner_id == Partner.id)
    )
    if status:
        query = query.where(Partner.status == status)
    if search and search.strip():
        pattern = f"%{_escape_like(search.strip().lower())}%"
        query = query.where(or_(func.lower(Partner.code).like(pattern, escape="\\"),
                                func.lower(Partner.name).like(pattern, escape="\\")))
    # Not graded sorts after D, on both databases (they place NULLs differently).
    columns: dict[str, SQLColumnExpression[Any]] = {
        "code": Partner.code, "name": Partner.name, "status": Partner.status,
        "grade": func.coalesce(grades.c.grade, "E"), "alerts": alert_count, "outstanding": owed,
        "complaints": complaint_count}
    rows, total = paged(session, query, page, page_size, *sort.order(columns, Partner.code))
    return Page([PartnerRow(*row) for row in rows], total, page, page_size)


def _outstanding_by_partner() -> Subquery:
    """Per partner, what it still owes the hub on closed statements: each net owed less what was paid on it."""
    paid = (select(StatementEvent.statement_id, integer_sum(cast(InstrumentedAttribute[int],
                                                                 StatementEvent.amount_minor)).label("paid"))
            .where(StatementEvent.kind == "paid").group_by(StatementEvent.statement_id).subquery())
    remaining = SettlementStatement.net_minor - func.coalesce(paid.c.paid, 0)
    return (select(SettlementStatement.partner_id,
                   integer_sum(case((remaining > 0, remaining), else_=0)).label("outstanding"))
            .outerjoin(paid, paid.c.statement_id == SettlementStatement.id)
            .where(SettlementStatement.net_minor > 0).group_by(SettlementStatement.partner_id).subquery())


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
        select(PartnerKey.id, PartnerKey.key_id, PartnerKey.status, Terminal.code, PartnerKey.created_at,
               PartnerKey.expires_at, PartnerKey.revoked_at)
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


def partner_activity(session: Session, *, partner_id: int, now: datetime, months: int,
                     time_zone: str) -> list[grading.MonthActivity]:
    """The partner's activity per month over the last ``months`` months of ``time_zone``, as its grades count it.

    Purchases by the day they were reported, redemptions captured, complaints opened,
    points the partner pays for: ``grading.monthly_activity``, so a month's bars and the
    month's grade always count the same rows.
    """
    if not 1 <= months <= MAX_CHART_MONTHS:
        raise ValidationFailed(f"months must be 1-{MAX_CHART_MONTHS}", fields={"months": ["range"]})
    return grading.monthly_activity(session, partner_id=partner_id, time_zone=time_zone,
                                    months=grading.recent_months(now, time_zone, months))


def partner_codes(session: Session) -> list[str]:
    """Every partner code, for filter menus."""
    return list(session.scalars(select(Partner.code).order_by(Partner.code)))


def complaint_partner_codes(session: Session, complaint_ids: Sequence[int]) -> dict[int, str]:
    """The partner code of each listed complaint."""
    if not complaint_ids:
        return {}
    return dict(session.execute(select(Complaint.id, Partner.code).join(Partner, Partner.id == Complaint.partner_id)
                                .where(Complaint.id.in_(complaint_ids))).all())
