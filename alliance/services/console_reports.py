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
from typing import Any, Generic, Mapping, Sequence, TypeVar, TypeVarTuple

from sqlalchemy import Row as ResultRow
from sqlalchemy import Select, SQLColumnExpression, func, or_, select
from sqlalchemy.orm import QueryableAttribute, Session
from sqlalchemy.sql.elements import ColumnElement

from alliance.domain.errors import ValidationFailed
from alliance.models import Complaint, Partner, PartnerKey, Purchase, RedemptionHold, Terminal
from alliance.models.base import integer_sum
from alliance.services.partner_admin import KeyView
from alliance.storage.adapters import storage_for

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
    rows, total = paged(session, query, page, page_size, Partner.code)
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


def _month_of(session: Session, column: QueryableAttribute[datetime]) -> ColumnElement[str]:
    """``YYYY-MM`` of a UTC timestamp column."""
    # The adapter's SQL takes a column element: the attribute's own.
    return storage_for(session).month_of(column.expression)


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
        # ``count`` is also a tuple method, which the rows are: read that column by its label.
        result.append(MonthActivity(
            month=label, purchases=int(bought._mapping["count"]) if bought else 0,
            purchase_amount_minor=int(bought.amount) if bought else 0,
            points_issued=int(bought.points) if bought else 0,
            redemptions=int(redeemed._mapping["count"]) if redeemed else 0,
            points_redeemed=int(redeemed.points) if redeemed else 0, complaints=int(complaints.get(label, 0)),
        ))
    return result


def partner_codes(session: Session) -> list[str]:
    """Every partner code, for filter menus."""
    return list(session.scalars(select(Partner.code).order_by(Partner.code)))


def complaint_partner_codes(session: Session, complaint_ids: Sequence[int]) -> dict[int, str]:
    """The partner code of each listed complaint."""
    if not complaint_ids:
        return {}
    return dict(session.execute(select(Complaint.id, Partner.code).join(Partner, Partner.id == Complaint.partner_id)
                                .where(Complaint.id.in_(complaint_ids))).all())
