"""The points liability: the points the alliance owes members at a moment, by issuer and expiry month, valued.

Everything is recomputed from the journal as it stood at ``as_of`` (transactions posted
at or before it), never from today's lot balances, so a report for a past month-end is
reproducible. A lot's outstanding points at that moment are what it earned less what was
taken from it by then, where points taken for a redemption still held (no capture or
release posted by then) count as outstanding (held). Added up, they equal the balances of
the members' available, pending and held accounts in the journal at that moment; the
report carries that ledger figure and says whether it ties out.

How the points are valued and the expected breakage are described in
``docs/settlement.md`` ("Points liability"): the redemption mix of the look-back (the
twelve months up to ``as_of``, in the alliance's time zone) gives the money a point will
cost when redeemed, per currency; the share of points in lots that reached their expiry
in the same look-back which expired rather than being redeemed gives the expected
breakage. Both are exact fractions; each cell (issuer × expiry month) is rounded once,
half-even, and every subtotal and total is the exact sum of the rounded cells.
"""

from __future__ import annotations

import calendar
import csv
import io
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from fractions import Fraction
from typing import TypeVar
from zoneinfo import ZoneInfo

from sqlalchemy import and_, case, func, or_, select
from sqlalchemy.orm import Session, aliased

from alliance.domain.errors import ValidationFailed
from alliance.domain.ledger import AccountKind, TransactionKind
from alliance.domain.money import DEFAULT_EXPONENT, NON_CENT_EXPONENTS, minor_units_per_unit
from alliance.models import Partner
from alliance.models.base import integer_sum
from alliance.models.ledger import JournalEntry, JournalTransaction, LedgerAccount, LotConsumption, PointLot

# The issuer key of points the hub's marketing account funded.
HUB_ISSUER = "hub"
HUB_ISSUER_NAME = "The hub (hub-funded points)"
LOOK_BACK_MONTHS = 12
MEMBER_ACCOUNT_KINDS = (AccountKind.MEMBER_AVAILABLE.value, AccountKind.MEMBER_PENDING.value,
                        AccountKind.MEMBER_HELD.value)
_CLOSING_KINDS = (TransactionKind.CAPTURE.value, TransactionKind.REWARD_CAPTURE.value, TransactionKind.RELEASE.value)
_REDEMPTION_KINDS = (TransactionKind.CAPTURE.value, TransactionKind.REDEMPTION_REFUND.value)
K = TypeVar("K")


@dataclass(frozen=True, slots=True)
class LiabilityLine:
    """Outstanding points of one group (an issuer, an expiry month, a cell or the total), valued.

    ``value_minor`` maps a currency to whole minor units: what redeeming these points is
    expected to cost, split by the currencies points were redeemed in over the look-back.
    """

    issuer: str | None
    issuer_name: str | None
    expiry_month: str | None
    pending_points: int
    available_points: int
    held_points: int
    expected_to_expire_points: int
    value_minor: Mapping[str, int]

    @property
    def outstanding_points(self) -> int:
        return self.pending_points + self.available_points + self.held_points

    @property
    def expected_to_redeem_points(self) -> int:
        return self.outstanding_points - self.expected_to_expire_points


@dataclass(frozen=True, slots=True)
class RedemptionPrice:
    """The look-back's redemptions in one currency: net points redeemed and the exact money paid for them."""

    currency: str
    points: int
    amount: Decimal


@dataclass(frozen=True, slots=True)
class LiabilityReport:
    """The points liability at ``as_of``: cells, subtotals by issuer and by expiry month, and the total."""

    as_of: datetime
    time_zone: str
    look_back_from: datetime
    cells: tuple[LiabilityLine, ...]
    by_issuer: tuple[LiabilityLine, ...]
    by_expiry_month: tuple[LiabilityLine, ...]
    total: LiabilityLine
    # Breakage history: points of lots that reached expiry in the look-back, expired vs redeemed.
    expired_points: int
    redeemed_points: int
    # The look-back's redemptions by currency, which value a point.
    redemptions: tuple[RedemptionPrice, ...]
    # The members' available, pending and held accounts in the journal at ``as_of``.
    ledger_points: int

    @property
    def breakage_rate(self) -> Fraction:
        """The exact share of points expected to expire (0 when the look-back has no history)."""
        return _breakage_rate(self.expired_points, self.redeemed_points)

    @property
    def redeemed_in_look_back(self) -> int:
        return sum(price.points for price in self.redemptions)

    @property
    def ties_out(self) -> bool:
        return self.total.outstanding_points == self.ledger_points

    @property
    def currencies(self) -> tuple[str, ...]:
        return tuple(sorted(self.total.value_minor))


def points_liability(session: Session, *, as_of: datetime, time_zone: str, now: datetime) -> LiabilityReport:
    """The points liability as the journal stood at ``as_of`` (which must not be after ``now``).

    ``time_zone`` (the alliance's, an IANA name) sets the expiry months and the look-back.
    """
    if as_of.tzinfo is None:
        raise ValidationFailed("as_of needs a time zone", fields={"as_of": ["needs a time zone"]})
    as_of = as_of.astimezone(UTC)
    if as_of > now:
        raise ValidationFailed("as_of is in the future: a liability can only be reported up to now",
                               fields={"as_of": ["is in the future"]})
    zone = ZoneInfo(time_zone)
    look_back_from = months_before(as_of, LOOK_BACK_MONTHS, zone)
    issuers = _issuers(session)
    redemptions = _redemptions(session, as_of=as_of, since=look_back_from)
    expired, redeemed = _breakage_history(session, as_of=as_of, since=look_back_from)
    rate = _breakage_rate(expired, redeemed)
    per_point = _money_per_point(redemptions)
    raw: dict[tuple[int | None, str], list[int]] = defaultdict(lambda: [0, 0, 0])
    for issuer_id, expires_at, pending, available, held in _lot_positions(session, as_of=as_of):
        figures = raw[(issuer_id, expires_at.astimezone(zone).strftime("%Y-%m"))]
        figures[0] += pending
        figures[1] += available
        figures[2] += held

    def issuer_of(issuer_id: int | None) -> tuple[str, str]:
        return issuers[issuer_id] if issuer_id is not None else (HUB_ISSUER, HUB_ISSUER_NAME)

    ordered = sorted(raw.items(), key=lambda item: (item[0][0] is not None, issuer_of(item[0][0])[0], item[0][1]))
    cells = tuple(_cell(*issuer_of(issuer_id), month, figures, rate, per_point)
                  for (issuer_id, month), figures in ordered if any(figures))
    by_issuer = tuple(_sum(group, issuer=group[0].issuer, issuer_name=group[0].issuer_name, expiry_month=None)
                      for group in _grouped(cells, lambda cell: (cell.issuer, cell.issuer_name)).values())
    by_month = tuple(_sum(group, issuer=None, issuer_name=None, expiry_month=month)
                     for month, group in sorted(_grouped(cells, lambda cell: cell.expiry_month).items()))
    return LiabilityReport(
        as_of=as_of, time_zone=time_zone, look_back_from=look_back_from, cells=cells, by_issuer=by_issuer,
        by_expiry_month=by_month, total=_sum(cells, issuer=None, issuer_name=None, expiry_month=None),
        expired_points=expired, redeemed_points=redeemed, redemptions=redemptions,
        ledger_points=member_liability_points(session, as_of=as_of),
    )


def member_liability_points(session: Session, *, as_of: datetime) -> int:
    """The members' available, pending and held accounts summed from journal entries posted by ``as_of``."""
    return int(session.scalar(
        select(integer_sum(JournalEntry.amount_points))
        .join(JournalTransaction, JournalTransaction.id == JournalEntry.transaction_id)
        .join(LedgerAccount, LedgerAccount.id == JournalEntry.account_id)
        .where(LedgerAccount.kind.in_(MEMBER_ACCOUNT_KINDS), JournalTransaction.posted_at <= as_of)
    ) or 0)


def member_liability_points_by_kind(session: Session, *, as_of: datetime) -> dict[str, int]:
    """Each member account kind (available, pending, held) summed from journal entries posted by ``as_of``."""
    rows = session.execute(
        select(LedgerAccount.kind, integer_sum(JournalEntry.amount_points))
        .join(JournalTransaction, JournalTransaction.id == JournalEntry.transaction_id)
        .join(LedgerAccount, LedgerAccount.id == JournalEntry.account_id)
        .where(LedgerAccount.kind.in_(MEMBER_ACCOUNT_KINDS), JournalTransaction.posted_at <= as_of)
        .group_by(LedgerAccount.kind)
    ).all()
    return {kind: 0 for kind in MEMBER_ACCOUNT_KINDS} | {kind: int(points) for kind, points in rows}


def months_before(moment: datetime, months: int, zone: ZoneInfo) -> datetime:
    """The same local wall time ``months`` calendar months earlier (the month's last day if it is shorter), in UTC.

    Before year 1 there is no calendar: the earliest moment there is stands in.
    """
    local = moment.astimezone(zone)
    year, month_index = divmod(local.year * 12 + local.month - 1 - months, 12)
    if year < 2:  # the first year's local times may not exist in UTC
        return datetime.min.replace(tzinfo=UTC)
    day = min(local.day, calendar.monthrange(year, month_index + 1)[1])
    earlier = local.replace(tzinfo=None).replace(year=year, month=month_index + 1, day=day)
    return earlier.replace(tzinfo=zone).astimezone(UTC)


def render_csv(report: LiabilityReport) -> str:
    """The report as CSV: one row per issuer, per expiry month, per cell and the total; money in major units."""
    currencies = report.currencies
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["as_of", "section", "issuer", "expiry_month", "pending_points", "available_points",
                     "held_points", "outstanding_points", "expected_to_expire_points", "expected_to_redeem_points",
                     *(f"value_{currency}" for currency in currencies)])
    as_of = report.as_of.isoformat().replace("+00:00", "Z")
    sections: list[tuple[str, Iterable[LiabilityLine]]] = [
        ("issuer", report.by_issuer), ("expiry_month", report.by_expiry_month), ("cell", report.cells),
        ("total", (report.total,)),
    ]
    for section, lines in sections:
        for line in lines:
            writer.writerow([
                as_of, section, line.issuer or "", line.expiry_month or "", line.pending_points,
                line.available_points, line.held_points, line.outstanding_points, line.expected_to_expire_points,
                line.expected_to_redeem_points,
                *(major_units(line.value_minor.get(currency, 0), currency) for currency in currencies),
            ])
    return out.getvalue()


def major_units(amount_minor: int, currency: str) -> str:
    """Whole minor units as an exact decimal string of major units (1234 EUR → "12.34")."""
    exponent = NON_CENT_EXPONENTS.get(currency, DEFAULT_EXPONENT)
    return str(Decimal(amount_minor).scaleb(-exponent)) if exponent else str(amount_minor)


def round_half_even(value: Fraction) -> int:
    """The whole number nearest ``value``, ties to the even one (Python's ``round`` on a Fraction)."""
    return round(value)


def _lot_positions(session: Session, *, as_of: datetime) -> list[tuple[int | None, datetime, int, int, int]]:
    """Per lot earned by ``as_of`` with points left then: issuer, expiry, pending, available and held points."""
    closed_holds = (
        select(JournalTransaction.hold_id)
        .where(JournalTransaction.kind.in_(_CLOSING_KINDS), JournalTransaction.posted_at <= as_of,
               JournalTransaction.hold_id.is_not(None))
    )
    still_held = and_(LotConsumption.hold_id.is_not(None), LotConsumption.hold_id.not_in(closed_holds))
    consumed = (
        select(
            LotConsumption.lot_id.label("lot_id"),
            integer_sum(case((still_held, 0), else_=LotConsumption.points)).label("taken"),
            integer_sum(case((still_held, LotConsumption.points), else_=0)).label("held"),
        )
        .join(JournalTransaction, JournalTransaction.id == LotConsumption.transaction_id)
        .where(JournalTransaction.posted_at <= as_of)
        .group_by(LotConsumption.lot_id)
        .subquery()
    )
    earn = aliased(JournalTransaction)
    activation = aliased(JournalTransaction)
    # A lot earned within a return window became spendable when the member's first
    # activation of that issuer's points at or after its activation time was posted.
    activated_at = (
        select(func.min(activation.posted_at))
        .where(activation.kind == TransactionKind.ACTIVATION.value, activation.member_id == PointLot.member_id,
               or_(activation.partner_id == PointLot.partner_id,
                   and_(activation.partner_id.is_(None), PointLot.partner_id.is_(None))),
               activation.posted_at >= PointLot.activates_at, activation.posted_at <= as_of)
        .correlate(PointLot)
        .scalar_subquery()
    )
    rows = session.execute(
        select(
            PointLot.partner_id, PointLot.expires_at, PointLot.points_earned,
            func.coalesce(consumed.c.taken, 0), func.coalesce(consumed.c.held, 0),
            case((PointLot.activates_at.is_(None), False), else_=activated_at.is_(None)),
        )
        .join(earn, earn.id == PointLot.earn_transaction_id)
        .outerjoin(consumed, consumed.c.lot_id == PointLot.id)
        .where(earn.posted_at <= as_of)
    ).all()
    positions = []
    for partner_id, expires_at, earned, taken, held, pending in rows:
        left = int(earned) - int(taken)
        if left == 0:
            continue
        spendable = left - int(held)
        positions.append((partner_id, _utc(expires_at), spendable if pending else 0,
                          0 if pending else spendable, int(held)))
    return positions


def _redemptions(session: Session, *, as_of: datetime, since: datetime) -> tuple[RedemptionPrice, ...]:
    """Net points redeemed in (``since``, ``as_of``] and the exact money paid for them, per currency."""
    rows = session.execute(
        select(JournalTransaction.currency, JournalTransaction.price_per_point,
               integer_sum(JournalEntry.amount_points))
        .join(JournalEntry, JournalEntry.transaction_id == JournalTransaction.id)
        .join(LedgerAccount, LedgerAccount.id == JournalEntry.account_id)
        .where(JournalTransaction.kind.in_(_REDEMPTION_KINDS),
               LedgerAccount.kind == AccountKind.PARTNER_REDEEMED.value,
               JournalTransaction.posted_at > since, JournalTransaction.posted_at <= as_of)
        .group_by(JournalTransaction.currency, JournalTransaction.price_per_point)
    ).all()
    points: dict[str, int] = defaultdict(int)
    amount: dict[str, Decimal] = defaultdict(Decimal)
    for currency, price, redeemed in rows:
        if currency is None or price is None:
            continue  # a capture always records its currency and price; the audit names one that does not
        points[currency] += int(redeemed)
        amount[currency] += Decimal(redeemed) * Decimal(price)
    return tuple(RedemptionPrice(currency, points[currency], amount[currency]) for currency in sorted(points)
                 if points[currency] or amount[currency])


def _breakage_history(session: Session, *, as_of: datetime, since: datetime) -> tuple[int, int]:
    """Points of lots whose expiry fell in (``since``, ``as_of``]: how many expired and how many were redeemed."""
    closed_holds = (
        select(JournalTransaction.hold_id)
        .where(JournalTransaction.kind.in_(_CLOSING_KINDS), JournalTransaction.posted_at <= as_of,
               JournalTransaction.hold_id.is_not(None))
    )
    is_expiry = JournalTransaction.kind == TransactionKind.EXPIRY.value
    is_redemption = and_(LotConsumption.hold_id.is_not(None), LotConsumption.hold_id.in_(closed_holds))
    row = session.execute(
        select(integer_sum(case((is_expiry, LotConsumption.points), else_=0)),
               integer_sum(case((is_redemption, LotConsumption.points), else_=0)))
        .join(JournalTransaction, JournalTransaction.id == LotConsumption.transaction_id)
        .join(PointLot, PointLot.id == LotConsumption.lot_id)
        .where(PointLot.expires_at > since, PointLot.expires_at <= as_of, JournalTransaction.posted_at <= as_of)
    ).one()
    return int(row[0]), int(row[1])


def _breakage_rate(expired: int, redeemed: int) -> Fraction:
    return Fraction(expired, expired + redeemed) if expired + redeemed > 0 else Fraction(0)


def _money_per_point(redemptions: Iterable[RedemptionPrice]) -> dict[str, Fraction]:
    """Minor units per outstanding point, per currency: each currency's money over all points redeemed."""
    prices = list(redemptions)
    total_points = sum(price.points for price in prices)
    if total_points <= 0:
        return {}
    return {price.currency: Fraction(price.amount) * minor_units_per_unit(price.currency) / total_points
            for price in prices}


def _cell(issuer: str, issuer_name: str, month: str, figures: list[int], rate: Fraction,
          per_point: Mapping[str, Fraction]) -> LiabilityLine:
    pending, available, held = figures
    outstanding = pending + available + held
    return LiabilityLine(
        issuer=issuer, issuer_name=issuer_name, expiry_month=month, pending_points=pending,
        available_points=available, held_points=held,
        expected_to_expire_points=round_half_even(outstanding * rate),
        value_minor={currency: round_half_even(outstanding * price) for currency, price in per_point.items()},
    )


def _sum(lines: Iterable[LiabilityLine], *, issuer: str | None, issuer_name: str | None,
         expiry_month: str | None) -> LiabilityLine:
    lines = list(lines)
    value: dict[str, int] = defaultdict(int)
    for line in lines:
        for currency, amount in line.value_minor.items():
            value[currency] += amount
    return LiabilityLine(
        issuer=issuer, issuer_name=issuer_name, expiry_month=expiry_month,
        pending_points=sum(line.pending_points for line in lines),
        available_points=sum(line.available_points for line in lines),
        held_points=sum(line.held_points for line in lines),
        expected_to_expire_points=sum(line.expected_to_expire_points for line in lines),
        value_minor=dict(sorted(value.items())),
    )


def _grouped(cells: Iterable[LiabilityLine], key: Callable[[LiabilityLine], K]) -> dict[K, list[LiabilityLine]]:
    groups: dict[K, list[LiabilityLine]] = {}
    for cell in cells:
        groups.setdefault(key(cell), []).append(cell)
    return groups


def _issuers(session: Session) -> dict[int, tuple[str, str]]:
    return {row.id: (row.code, row.name) for row in session.execute(select(Partner.id, Partner.code, Partner.name))}


def _utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def as_of_moment(value: date | datetime | None, *, time_zone: str, now: datetime) -> datetime:
    """The moment a report's ``as_of`` names: a date is the end of that day in ``time_zone``, today's is now.

    A date-time must carry its offset; none means now. A moment after ``now`` is refused
    (a liability can only be reported up to now).
    """
    if value is None:
        return now
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValidationFailed("as_of needs a time zone offset", fields={"as_of": ["needs a time zone offset"]})
        moment = value.astimezone(UTC)
    else:
        zone = ZoneInfo(time_zone)
        if value > now.astimezone(zone).date():
            raise ValidationFailed(f"as_of {value.isoformat()} is in the future",
                                   fields={"as_of": ["is in the future"]})
        next_midnight = datetime.combine(value + timedelta(days=1), time(0), tzinfo=zone).astimezone(UTC)
        moment = min(next_midnight - timedelta(microseconds=1), now)
    if moment > now:
        raise ValidationFailed("as_of is in the future: a liability can only be reported up to now",
                               fields={"as_of": ["is in the future"]})
    return moment
