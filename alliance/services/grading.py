"""Partner grading over the database: metrics by set-based SQL, stored grades, overrides, alerts, CSV.

The measurement is a handful of GROUP BY queries over the period (one row per partner
each, never a row per purchase into Python); the scoring is ``alliance.domain.grading``.
Computing a period again (late complaints, a payment recorded late) rewrites the
computed part of its grades and leaves the overrides, which live in their own
append-only table, as they were.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from fractions import Fraction
from typing import Any, Callable, Iterator, Sequence, cast
from zoneinfo import ZoneInfo

from sqlalchemy import (
    ColumnElement,
    CursorResult,
    Row,
    Select,
    SQLColumnExpression,
    and_,
    case,
    func,
    insert,
    select,
    union,
    update,
)
from sqlalchemy.orm import InstrumentedAttribute, Session, aliased
from sqlalchemy.sql import Subquery

from alliance.domain.errors import NotFound, ValidationFailed
from alliance.domain.grading import (
    DISPLAY_PLACES,
    GRADES,
    METRICS,
    METRICS_BY_NAME,
    GradeResult,
    GradingConfig,
    PartnerMetrics,
    Period,
    bands_dropped,
    derived_values,
    grade_period,
    json_value,
    to_decimal,
)
from alliance.models import (
    Complaint,
    GradeAlert,
    GradeOverride,
    GradePeriod,
    Partner,
    PartnerGrade,
    Purchase,
    PurchaseRefund,
    RedemptionHold,
    RedemptionRefund,
    RiskDecision,
    SettlementStatement,
    SettlementStatementLine,
    StatementEvent,
    StatementLineDispute,
)
from alliance.models.base import integer_sum
from alliance.services import audit_log, webhooks
from alliance.services.jobs import Job
from alliance.services.partner_admin import partner_by_code
from alliance.storage.adapters import storage_for

MAX_PAGE_SIZE = 200
MAX_REASON_CHARACTERS = 2000
CLOSED_COMPLAINT_STATUSES = ("resolved", "rejected")


# -- measuring -----------------------------------------------------------------------
#
# What a period counts, in one place: the grades and the console's activity charts read
# the same rows on the same dates through these three selections.

Window = Callable[[SQLColumnExpression[datetime]], ColumnElement[bool]]


def counted_purchases(within: Window) -> Select[*tuple[Any, ...]]:
    """The purchases a period counts: every purchase *reported* in it (not by its purchase date).

    Columns: ``partner_id``, ``member_id``, ``moment`` (the reporting time), ``amount_minor``
    (in the partner's currency) and ``points`` (the points the partner pays for).
    """
    return select(Purchase.partner_id, Purchase.member_id, Purchase.reported_at.label("moment"),
                  Purchase.amount_minor.label("amount_minor"), Purchase.points_partner.label("points")
                  ).where(within(Purchase.reported_at))


def counted_redemptions(within: Window) -> Select[*tuple[Any, ...]]:
    """The redemptions a period counts: holds *captured* in it (by their closing time), with the points captured.

    Columns: ``partner_id``, ``member_id``, ``moment`` and ``points``.
    """
    moment = cast(InstrumentedAttribute[datetime], RedemptionHold.closed_at)
    return select(RedemptionHold.partner_id, RedemptionHold.member_id, moment.label("moment"),
                  RedemptionHold.points_captured.label("points")
                  ).where(RedemptionHold.status == "captured", within(moment))


def counted_complaints(within: Window) -> Select[*tuple[Any, ...]]:
    """The complaints a period counts: those *opened* in it. Columns: ``partner_id`` and ``moment``."""
    return select(Complaint.partner_id, Complaint.opened_at.label("moment")).where(within(Complaint.opened_at))


def counted_confirmed_fraud(within: Window) -> Select[*tuple[Any, ...]]:
    """The fraud a period counts against a partner: risk decisions about its operations *decided* in the period
    that a reviewer confirmed as fraud or whose held points were reversed. Columns: ``partner_id`` and ``moment``."""
    return select(RiskDecision.partner_id, RiskDecision.decided_at.label("moment")).where(
        RiskDecision.partner_id.is_not(None), RiskDecision.review_status.in_(("confirmed", "reversed")),
        within(RiskDecision.decided_at))


def _window(starts_at: datetime, ends_at: datetime) -> Window:
    return lambda column: and_(column >= starts_at, column < ends_at)


def measure(session: Session, period: Period, *, time_zone: str, as_of: datetime | None = None) -> list[PartnerMetrics]:
    """Every partner that existed before the period ended, with its metrics for the period.

    ``as_of`` is the grading moment: payments made by then count, and a statement still
    unpaid then is late up to that day (the period's end when not given).
    """
    starts_at, ends_at = period.bounds(time_zone)
    in_period = _window(starts_at, ends_at)
    partners = session.execute(select(Partner.id, Partner.code, Partner.currency)
                               .where(Partner.created_at < ends_at).order_by(Partner.code)).all()

    bought = counted_purchases(in_period).subquery()
    purchases = _by_partner(session, select(
        bought.c.partner_id, func.count(), integer_sum(bought.c.amount_minor), integer_sum(bought.c.points),
    ).group_by(bought.c.partner_id))
    redeemed = counted_redemptions(in_period).subquery()
    redemptions = _by_partner(session, select(redeemed.c.partner_id, func.count(), integer_sum(redeemed.c.points))
                              .group_by(redeemed.c.partner_id))
    visits = union(
        select(bought.c.partner_id, bought.c.member_id), select(redeemed.c.partner_id, redeemed.c.member_id),
    ).subquery()
    members = _by_partner(session, select(visits.c.partner_id, func.count()).group_by(visits.c.partner_id))
    opened = counted_complaints(in_period).subquery()
    complaints = _by_partner(session, select(opened.c.partner_id, func.count()).group_by(opened.c.partner_id))
    refunds = _by_partner(session, select(PurchaseRefund.partner_id, func.count())
                          .where(in_period(PurchaseRefund.created_at)).group_by(PurchaseRefund.partner_id))
    reversals = _by_partner(session, select(RedemptionRefund.partner_id, func.count())
                            .where(in_period(RedemptionRefund.created_at)).group_by(RedemptionRefund.partner_id))
    disputes = _by_partner(session, select(SettlementStatement.partner_id, func.count())
                           .select_from(StatementLineDispute)
                           .join(SettlementStatementLine,
                                 SettlementStatementLine.id == StatementLineDispute.statement_line_id)
                           .join(SettlementStatement, SettlementStatement.id == SettlementStatementLine.statement_id)
                           .where(in_period(StatementLineDispute.opened_at))
                           .group_by(SettlementStatement.partner_id))
    confirmed = counted_confirmed_fraud(in_period).subquery()
    fraud = _by_partner(session, select(confirmed.c.partner_id, func.count()).group_by(confirmed.c.partner_id))
    medians = _median_resolution_seconds(session, starts_at, ends_at)
    lateness = _days_late(session, period, as_of=as_of or ends_at, time_zone=time_zone)

    measured = []
    for partner_id, code, currency in partners:
        purchase_count, volume, points = purchases.get(partner_id, (0, 0, 0))
        redemption_count, redemption_points = redemptions.get(partner_id, (0, 0))
        values = derived_values(
            purchase_count=purchase_count, purchase_volume_minor=volume, points_issued=points,
            active_members=members.get(partner_id, (0,))[0], redemption_count=redemption_count,
            redemption_points=redemption_points, complaint_count=complaints.get(partner_id, (0,))[0],
            median_resolution_seconds=medians.get(partner_id),
            refund_count=refunds.get(partner_id, (0,))[0] + reversals.get(partner_id, (0,))[0],
            days_late=lateness.get(partner_id, 0), disputes_opened=disputes.get(partner_id, (0,))[0],
            confirmed_fraud_count=fraud.get(partner_id, (0,))[0],
        )
        measured.append(PartnerMetrics(partner_id=partner_id, partner_code=code, currency=currency, values=values))
    return measured


def _by_partner(session: Session, statement: Select[*tuple[Any, ...]]) -> dict[int, tuple[int, ...]]:
    return {row[0]: tuple(int(value) for value in row[1:]) for row in session.execute(statement)}


def _median_resolution_seconds(session: Session, starts_at: datetime, ends_at: datetime) -> dict[int, Fraction]:
    """Median whole seconds from opening to closing of the complaints closed in the period, per partner.

    Window functions number each partner's durations; the median is the mean of the one
    or two middle rows, so it is exact (a half second at most) on both databases.
    """
    storage = storage_for(session)
    # The adapter's SQL takes column elements: the attributes' own (``.expression``).
    seconds = (storage.epoch_seconds(Complaint.closed_at.expression)
               - storage.epoch_seconds(Complaint.opened_at.expression))
    durations = (
        select(Complaint.partner_id, seconds.label("seconds"))
        .where(Complaint.status.in_(("resolved", "rejected")), Complaint.closed_at >= starts_at,
               Complaint.closed_at < ends_at)
        .cte("durations"))
    ranked = select(
        durations.c.partner_id, durations.c.seconds,
        func.row_number().over(partition_by=durations.c.partner_id, order_by=durations.c.seconds).label("position"),
        func.count().over(partition_by=durations.c.partner_id).label("total"),
    ).cte("ranked")
    statement = (
        select(ranked.c.partner_id, func.sum(ranked.c.seconds).label("middle_sum"), func.count().label("middle_count"))
        .where(ranked.c.position.in_([(ranked.c.total + 1) // 2, (ranked.c.total + 2) // 2]))
        .group_by(ranked.c.partner_id))
    rows = session.execute(statement)
    return {partner_id: Fraction(int(middle_sum), int(middle_count)) for partner_id, middle_sum, middle_count in rows}


def _days_late(session: Session, period: Period, *, as_of: datetime, time_zone: str) -> dict[int, int]:
    """Per partner, the most days late of the statements it had to pay that were due by the period's end.

    Counted: statements owed to the hub (net above zero) due in the period, and those due
    before it that were not yet fully paid when it began. A statement is paid on the day
    its payments first cover its net; one still unpaid at the grading moment (``as_of``)
    is late up to that day, so an overdue statement never reads as 0 days late.
    """
    as_of_day = as_of.astimezone(ZoneInfo(time_zone)).date()
    # A paid event always carries an amount (the ``kind`` check); only invoiced ones have none.
    paid_amount = cast(InstrumentedAttribute[int], StatementEvent.amount_minor)
    payments = (select(StatementEvent.statement_id, StatementEvent.paid_on, paid_amount.label("amount"))
                .where(StatementEvent.kind == "paid", StatementEvent.paid_on <= as_of_day).subquery())
    due = (select(SettlementStatement.id, SettlementStatement.partner_id, SettlementStatement.net_minor,
                  SettlementStatement.due_date)
           .where(SettlementStatement.net_minor > 0, SettlementStatement.due_date < period.end_day,
                  SettlementStatement.due_date <= as_of_day).subquery())
    rows = session.execute(
        select(due.c.id, due.c.partner_id, due.c.net_minor, due.c.due_date, payments.c.paid_on, payments.c.amount)
        .outerjoin(payments, payments.c.statement_id == due.c.id)
        .order_by(due.c.id, payments.c.paid_on)
    )
    statements: dict[int, tuple[int, int, date, date | None]] = {}
    paid_so_far: dict[int, int] = {}
    for statement_id, partner_id, net, due_date, paid_on, amount in rows:
        partner_id, net, due_date, settled_on = statements.get(statement_id, (partner_id, net, due_date, None))
        if paid_on is not None and settled_on is None:
            paid_so_far[statement_id] = paid_so_far.get(statement_id, 0) + int(amount)
            if paid_so_far[statement_id] >= net:
                settled_on = paid_on
        statements[statement_id] = (partner_id, net, due_date, settled_on)
    worst: dict[int, int] = {}
    for partner_id, _, due_date, settled_on in statements.values():
        if due_date < period.first_day and settled_on is not None and settled_on < period.first_day:
            continue  # settled before the period began: it was late in an earlier period, not this one
        late = max(0, ((settled_on or as_of_day) - due_date).days)
        worst[partner_id] = max(worst.get(partner_id, 0), late)
    return worst


@dataclass(frozen=True, slots=True)
class MonthActivity:
    """One month of a partner's activity, counted as grading counts it (``counted_*``); every number exact."""

    month: str
    purchases: int
    purchase_volume_minor: int
    points_issued: int
    redemptions: int
    points_redeemed: int
    complaints: int


def recent_months(now: datetime, time_zone: str, count: int) -> list[Period]:
    """The ``count`` calendar months up to and including the one ``now`` falls in (in ``time_zone``), oldest first."""
    local = now.astimezone(ZoneInfo(time_zone))
    month = Period(local.year, local.month, 1)
    months = [month]
    for _ in range(count - 1):
        month = month.previous()
        months.append(month)
    return months[::-1]


def monthly_activity(session: Session, *, partner_id: int, months: Sequence[Period],
                     time_zone: str) -> list[MonthActivity]:
    """A partner's purchases, redemptions and complaints per month: the same rows on the same dates as its grades."""
    bounds = [(month.label, *month.bounds(time_zone)) for month in months]
    within = _window(bounds[0][1], bounds[-1][2])

    def per_month(selection: Select[*tuple[Any, ...]], *sums: str) -> dict[str, tuple[int, ...]]:
        rows = selection.subquery()
        month = case(*((and_(rows.c.moment >= starts_at, rows.c.moment < ends_at), label)
                       for label, starts_at, ends_at in bounds))
        # Labelled in a subquery and grouped outside it: PostgreSQL would not match two copies of the CASE.
        labelled = select(month.label("month"), *rows.c).where(rows.c.partner_id == partner_id).subquery()
        totals = select(labelled.c.month, func.count(), *(integer_sum(labelled.c[name]) for name in sums)
                        ).group_by(labelled.c.month)
        return {row[0]: tuple(int(value) for value in row[1:]) for row in session.execute(totals)}

    purchases = per_month(counted_purchases(within), "amount_minor", "points")
    redemptions = per_month(counted_redemptions(within), "points")
    complaints = per_month(counted_complaints(within))
    result = []
    for label, _, _ in bounds:
        count, volume, points = purchases.get(label, (0, 0, 0))
        redeemed, redeemed_points = redemptions.get(label, (0, 0))
        result.append(MonthActivity(month=label, purchases=count, purchase_volume_minor=volume, points_issued=points,
                                    redemptions=redeemed, points_redeemed=redeemed_points,
                                    complaints=complaints.get(label, (0,))[0]))
    return result


# -- computing and storing -----------------------------------------------------------

@dataclass(frozen=True)
class ComputedPeriod:
    period: str
    graded: int
    not_graded: int
    alerts_raised: int


def compute(session: Session, *, period: Period, config: GradingConfig, time_zone: str, now: datetime,
            actor: str) -> ComputedPeriod:
    """Measure and grade every partner for ``period``, store it with its explanation, raise alerts."""
    starts_at, ends_at = period.bounds(time_zone)
    if ends_at > now:
        raise ValidationFailed(f"the period {period.label} has not ended yet; grade it after {ends_at.isoformat()}",
                               fields={"period": ["not ended"]})
    results = grade_period(measure(session, period, time_zone=time_zone, as_of=now), config)
    previous = _effective_by_partner(session, period.previous().label)
    period_row = session.scalar(select(GradePeriod).where(GradePeriod.period == period.label).with_for_update())
    counts = {"graded_count": sum(result.graded for result in results),
              "not_graded_count": sum(not result.graded for result in results)}
    if period_row is None:
        period_id = session.execute(insert(GradePeriod).values(
            period=period.label, starts_at=starts_at, ends_at=ends_at, config=config.as_json(), computed_at=now,
            computed_by=actor, **counts).returning(GradePeriod.id)).scalar_one()
    else:
        period_id = period_row.id
        session.execute(update(GradePeriod).where(GradePeriod.id == period_id).values(
            config=config.as_json(), computed_at=now, computed_by=actor, **counts))
    existing = {row.partner_id: row for row in session.scalars(
        select(PartnerGrade).where(PartnerGrade.period_id == period_id))}
    alerts = 0
    for result in results:
        values = _grade_values(result, previous.get(result.metrics.partner_id), now)
        row = existing.get(result.metrics.partner_id)
        if row is None:
            grade_id = session.execute(insert(PartnerGrade).values(
                partner_id=result.metrics.partner_id, period_id=period_id, **values).returning(PartnerGrade.id)
            ).scalar_one()
        else:
            grade_id = row.id
            session.execute(update(PartnerGrade).where(PartnerGrade.id == grade_id).values(**values))
        if result.grade is not None and (row is None or row.grade != result.grade):
            # A partner hears of its grade when it is first published and when a recomputation changes it.
            webhooks.emit(session, event_type="grade.published", partner_id=result.metrics.partner_id, now=now,
                          data={"period": period.label, "grade": result.grade})
        alerts += _raise_alerts(session, grade_id, result, previous.get(result.metrics.partner_id), config, now)
    audit_log.append(session, actor=actor, action="grades.compute", subject=f"grade_period:{period.label}", now=now,
                     after={**counts, "alerts_raised": alerts, "config": config.as_json(),
                            "recomputed": period_row is not None})
    return ComputedPeriod(period.label, counts["graded_count"], counts["not_graded_count"], alerts)


@dataclass(frozen=True)
class _Previous:
    grade: str | None
    computed_grade: str | None
    score: str | None
    # As stored: JSON documents.
    breakdown: list[dict[str, Any]]
    metrics: dict[str, Any]


def _effective_by_partner(session: Session, period_label: str) -> dict[int, _Previous]:
    rows = session.execute(
        select(PartnerGrade).join(GradePeriod, GradePeriod.id == PartnerGrade.period_id)
        .where(GradePeriod.period == period_label)).scalars().all()
    overrides = _latest_overrides(session, [row.id for row in rows])
    return {row.partner_id: _Previous(
        grade=overrides[row.id].grade if row.id in overrides else row.grade, computed_grade=row.grade,
        score=str(row.score) if row.score is not None else None, breakdown=row.breakdown, metrics=row.metrics,
    ) for row in rows}


def _latest_overrides(session: Session, grade_ids: Sequence[int]) -> dict[int, GradeOverride]:
    if not grade_ids:
        return {}
    latest: dict[int, GradeOverride] = {}
    for override in session.scalars(select(GradeOverride).where(GradeOverride.partner_grade_id.in_(grade_ids))
                                    .order_by(GradeOverride.id)):
        latest[override.partner_grade_id] = override
    return latest


def _grade_values(result: GradeResult, previous: _Previous | None, now: datetime) -> dict[str, object]:
    breakdown = [{
        "metric": line.metric, "label": METRICS_BY_NAME[line.metric].label,
        "direction": METRICS_BY_NAME[line.metric].direction, "value": json_value(line.value),
        "weight": line.weight,
        "effective_weight": str(to_decimal(line.share * 100, DISPLAY_PLACES)) if line.share is not None else None,
        "percentile": json_value(line.percentile), "contribution": json_value(line.contribution),
    } for line in result.breakdown]
    return {
        "status": "graded" if result.graded else "not_graded", "grade": result.grade, "score": result.score,
        "not_graded_reason": result.not_graded_reason,
        "metrics": {name: json_value(value) for name, value in result.metrics.values.items()},
        "breakdown": breakdown, "changes": _changes(result, breakdown, previous), "computed_at": now,
    }


def _changes(result: GradeResult, breakdown: list[dict[str, Any]], previous: _Previous | None) -> dict[str, object]:
    """What moved since the previous period: grade, score, and each metric's value and contribution."""
    if previous is None:
        return {"previous_period": False}
    before = {line["metric"]: line for line in previous.breakdown}
    moves = []
    for line in breakdown:
        old = before.get(line["metric"], {})
        value_delta = _delta(line["value"], old.get("value"))
        contribution_delta = _delta(line["contribution"], old.get("contribution"))
        moves.append({"metric": line["metric"], "previous_value": old.get("value"), "value": line["value"],
                      "value_change": value_delta, "previous_contribution": old.get("contribution"),
                      "contribution": line["contribution"], "contribution_change": contribution_delta})
    moves.sort(key=lambda move: (-abs(Fraction(move["contribution_change"] or 0)), move["metric"]))
    current_score = str(result.score) if result.score is not None else None
    return {
        "previous_period": True, "previous_grade": previous.grade, "previous_computed_grade": previous.computed_grade,
        "grade": result.grade, "bands_dropped": bands_dropped(previous.grade, result.grade),
        "previous_score": previous.score, "score": current_score, "score_change": _delta(current_score, previous.score),
        "metrics": moves,
    }


def _one_decimal(value: Fraction | int) -> str:
    """A rate as a person reads it in an alert: ``333.3``, ``500`` (half-even, separators)."""
    shown = to_decimal(value, Decimal("0.1"))
    return f"{shown:,.0f}" if shown == shown.to_integral_value() else f"{shown:,.1f}"


def _delta(current: int | str | None, previous: int | str | None) -> str | None:
    if current is None or previous is None:
        return None
    return str(to_decimal(Fraction(current) - Fraction(previous), DISPLAY_PLACES.scaleb(-2)))


def _raise_alerts(session: Session, grade_id: int, result: GradeResult, previous: _Previous | None,
                  config: GradingConfig, now: datetime) -> int:
    wanted = []
    previous_grade = previous.grade if previous else None
    dropped = bands_dropped(previous_grade, result.grade)
    if dropped >= 2:
        wanted.append(("downgrade", f"{result.metrics.partner_code} fell from {previous_grade} to {result.grade}"
                                    f" ({dropped} bands)"))
    rate = result.metrics.values["complaint_rate_per_1000"]
    if rate is not None and rate > Fraction(config.complaint_rate_alert_per_1000):
        wanted.append(("complaint_rate", f"{result.metrics.partner_code} had {_one_decimal(rate)} complaints per 1,000"
                                         " transactions, above the threshold of "
                                         f"{config.complaint_rate_alert_per_1000}"))
    raised = 0
    present = set(session.scalars(select(GradeAlert.kind).where(GradeAlert.partner_grade_id == grade_id)))
    for kind, detail in wanted:
        if kind not in present:
            session.execute(insert(GradeAlert).values(partner_grade_id=grade_id, kind=kind, detail=detail,
                                                      raised_at=now))
            raised += 1
    return raised


# -- reading -------------------------------------------------------------------------

def _grade_view(row: PartnerGrade, code: str, name: str, period: str, overrides: list[GradeOverride],
                alerts: list[GradeAlert]) -> dict[str, object]:
    latest = overrides[-1] if overrides else None
    return {
        "partner": code, "partner_name": name, "period": period, "status": row.status,
        "computed_grade": row.grade, "grade": latest.grade if latest else row.grade,
        "overridden": latest is not None, "score": str(row.score) if row.score is not None else None,
        "not_graded_reason": row.not_graded_reason, "metrics": row.metrics, "breakdown": row.breakdown,
        "changes": row.changes, "computed_at": row.computed_at,
        "overrides": [{"grade": o.grade, "reason": o.reason, "actor": o.actor, "at": o.at} for o in overrides],
        "alerts": [_alert_view(alert, code, period) for alert in alerts],
    }


def _alert_view(alert: GradeAlert, code: str, period: str) -> dict[str, object]:
    return {"id": alert.id, "partner": code, "period": period, "kind": alert.kind, "detail": alert.detail,
            "raised_at": alert.raised_at, "acknowledged_by": alert.acknowledged_by,
            "acknowledged_at": alert.acknowledged_at}


def _views(session: Session, rows: Sequence[tuple[PartnerGrade, str, str, str]]) -> list[dict[str, object]]:
    ids = [row.id for row, *_ in rows]
    overrides: dict[int, list[GradeOverride]] = {}
    alerts: dict[int, list[GradeAlert]] = {}
    if ids:
        for override in session.scalars(select(GradeOverride).where(GradeOverride.partner_grade_id.in_(ids))
                                        .order_by(GradeOverride.id)):
            overrides.setdefault(override.partner_grade_id, []).append(override)
        for alert in session.scalars(select(GradeAlert).where(GradeAlert.partner_grade_id.in_(ids))
                                     .order_by(GradeAlert.id)):
            alerts.setdefault(alert.partner_grade_id, []).append(alert)
    return [_grade_view(row, code, name, period, overrides.get(row.id, []), alerts.get(row.id, []))
            for row, code, name, period in rows]


def _graded_rows() -> Select[PartnerGrade, str, str, str]:
    return (select(PartnerGrade, Partner.code, Partner.name, GradePeriod.period)
            .join(Partner, Partner.id == PartnerGrade.partner_id)
            .join(GradePeriod, GradePeriod.id == PartnerGrade.period_id))


def _effective_rows() -> tuple[Select[PartnerGrade, str, str, str], ColumnElement[str]]:
    """Grades with their effective grade: the newest override's, else the computed one."""
    latest = (select(GradeOverride.partner_grade_id, func.max(GradeOverride.id).label("override_id"))
              .group_by(GradeOverride.partner_grade_id).subquery())
    newest = aliased(GradeOverride)
    effective = func.coalesce(newest.grade, PartnerGrade.grade)
    statement = (_graded_rows().outerjoin(latest, latest.c.partner_grade_id == PartnerGrade.id)
                 .outerjoin(newest, newest.id == latest.c.override_id))
    return statement, effective


GRADE_SORTS = ("partner", "grade", "score", "status")


def period_grades(session: Session, *, period: str, grade: str | None = None, status: str | None = None,
                  limit: int = 50, offset: int = 0, sort: str = "partner",
                  descending: bool = False) -> tuple[dict[str, object], list[dict[str, object]], int]:
    """A computed period, a page of its partners' grades (by partner code, or ``sort``) and how many match in all."""
    if sort not in GRADE_SORTS:
        raise ValidationFailed(f"grades sort by one of {', '.join(GRADE_SORTS)}", fields={"sort": ["unknown"]})
    label = Period.parse(period).label
    period_row = session.scalar(select(GradePeriod).where(GradePeriod.period == label))
    if period_row is None:
        raise NotFound(f"grades for {label} have not been computed; run 'alliance grades compute --period {label}'")
    statement, effective = _effective_rows()
    statement = statement.where(PartnerGrade.period_id == period_row.id)
    if status is not None:
        statement = statement.where(PartnerGrade.status == status)
    if grade is not None:
        statement = statement.where(effective == grade)
    total = session.scalar(select(func.count()).select_from(statement.subquery()))
    # Not graded sorts after the graded, either way, on both databases (they place NULLs differently).
    columns: dict[str, SQLColumnExpression[Any]] = {
        "partner": Partner.code, "grade": func.coalesce(effective, "E"), "score": PartnerGrade.score,
        "status": PartnerGrade.status}
    column = columns[sort]
    not_graded_last = case((PartnerGrade.score.is_(None), 1), else_=0)
    page = session.execute(statement.order_by(not_graded_last, column.desc() if descending else column.asc(),
                                              Partner.code)
                           .limit(min(limit, MAX_PAGE_SIZE)).offset(offset))
    summary = {"period": period_row.period, "starts_at": period_row.starts_at, "ends_at": period_row.ends_at,
               "graded": period_row.graded_count, "not_graded": period_row.not_graded_count,
               "computed_at": period_row.computed_at, "computed_by": period_row.computed_by,
               "config": period_row.config}
    return summary, _views(session, page.all()), int(total or 0)


def partner_history(session: Session, *, code: str, limit: int = 24) -> list[dict[str, object]]:
    """A partner's grades, newest period first."""
    partner = partner_by_code(session, code)
    rows = session.execute(_graded_rows().where(PartnerGrade.partner_id == partner.id)
                           .order_by(GradePeriod.starts_at.desc()).limit(min(limit, MAX_PAGE_SIZE))).all()
    return _views(session, rows)


def partner_grade(session: Session, *, code: str, period: str) -> dict[str, object]:
    """One partner's grade for one period, with its breakdown, changes, overrides and alerts."""
    return _views(session, [_grade_row(session, code=code, period=period)])[0]


def _grade_row(session: Session, *, code: str, period: str, lock: bool = False) -> Row[PartnerGrade, str, str, str]:
    Period.parse(period)
    partner = partner_by_code(session, code)
    statement = _graded_rows().where(PartnerGrade.partner_id == partner.id, GradePeriod.period == period)
    if lock:
        statement = statement.with_for_update(of=PartnerGrade)
    row = session.execute(statement).first()
    if row is None:
        raise NotFound(f"{code} has no grade for {period}; compute the period first")
    return row


def override(session: Session, *, code: str, period: str, grade: str, reason: str, now: datetime,
             actor: str) -> dict[str, object]:
    """Set a partner's grade for a period by hand; the reason is required and the computed grade stays."""
    if grade not in GRADES:
        raise ValidationFailed("a grade is A, B, C or D", fields={"grade": ["one of A, B, C, D"]})
    if not reason.strip() or len(reason) > MAX_REASON_CHARACTERS:
        raise ValidationFailed(f"give the reason for the override in 1-{MAX_REASON_CHARACTERS} characters",
                               fields={"reason": ["required"]})
    row, *_ = _grade_row(session, code=code, period=period, lock=True)
    before = _latest_overrides(session, [row.id]).get(row.id)
    session.execute(insert(GradeOverride).values(partner_grade_id=row.id, grade=grade, reason=reason.strip(),
                                                 actor=actor, at=now))
    webhooks.emit(session, event_type="grade.published", partner_id=row.partner_id, now=now,
                  data={"period": period, "grade": grade})
    audit_log.append(session, actor=actor, action="grade.override", subject=f"partner:{code}:grade:{period}",
                     now=now, before={"grade": before.grade if before else row.grade, "computed_grade": row.grade},
                     after={"grade": grade, "computed_grade": row.grade, "reason": reason.strip()})
    return partner_grade(session, code=code, period=period)


ALERT_SORTS = ("raised", "partner", "period", "kind", "acknowledged")
ALERT_KINDS = ("downgrade", "complaint_rate")


def list_alerts(session: Session, *, acknowledged: bool | None = False, period: str | None = None,
                partner: str | None = None, kind: str | None = None, sort: str = "raised", descending: bool = True,
                limit: int = 50, offset: int = 0) -> tuple[list[dict[str, object]], int]:
    """Alerts for the partner managers, newest first unless ``sort`` says otherwise; unacknowledged ones by default.

    ``sort`` is one of ``ALERT_SORTS``: when raised, partner code, period, kind or when acknowledged.
    """
    if sort not in ALERT_SORTS:
        raise ValidationFailed(f"alerts sort by one of {', '.join(ALERT_SORTS)}", fields={"sort": ["unknown"]})
    if kind is not None and kind not in ALERT_KINDS:
        raise ValidationFailed(f"an alert's kind is one of {', '.join(ALERT_KINDS)}", fields={"kind": ["unknown"]})
    statement = (select(GradeAlert, Partner.code, GradePeriod.period)
                 .join(PartnerGrade, PartnerGrade.id == GradeAlert.partner_grade_id)
                 .join(Partner, Partner.id == PartnerGrade.partner_id)
                 .join(GradePeriod, GradePeriod.id == PartnerGrade.period_id))
    if acknowledged is not None:
        statement = statement.where(GradeAlert.acknowledged_at.is_not(None) if acknowledged
                                    else GradeAlert.acknowledged_at.is_(None))
    if period is not None:
        statement = statement.where(GradePeriod.period == Period.parse(period).label)
    if partner is not None:
        statement = statement.where(Partner.code == partner)
    if kind is not None:
        statement = statement.where(GradeAlert.kind == kind)
    columns: dict[str, SQLColumnExpression[Any]] = {
        "raised": GradeAlert.raised_at, "partner": Partner.code, "period": GradePeriod.starts_at,
        "kind": GradeAlert.kind, "acknowledged": GradeAlert.acknowledged_at}
    column = columns[sort]
    total = session.scalar(select(func.count()).select_from(statement.subquery()))
    rows = session.execute(statement.order_by(column.desc() if descending else column.asc(), GradeAlert.id.desc())
                           .limit(min(limit, MAX_PAGE_SIZE)).offset(offset)).all()
    return [_alert_view(alert, code, label) for alert, code, label in rows], int(total or 0)


def acknowledge_alert(session: Session, *, alert_id: int, now: datetime, actor: str) -> dict[str, object]:
    """Mark an alert as seen and handled by a partner manager; once."""
    found = session.execute(
        select(GradeAlert, Partner.code, GradePeriod.period)
        .join(PartnerGrade, PartnerGrade.id == GradeAlert.partner_grade_id)
        .join(Partner, Partner.id == PartnerGrade.partner_id)
        .join(GradePeriod, GradePeriod.id == PartnerGrade.period_id)
        .where(GradeAlert.id == alert_id).with_for_update(of=GradeAlert)).first()
    if found is None:
        raise NotFound(f"no grade alert {alert_id}")
    alert, code, label = found
    # An UPDATE's result is a CursorResult; Session.execute types every result as Result.
    changed = cast(CursorResult[*tuple[Any, ...]], session.execute(
        update(GradeAlert).where(GradeAlert.id == alert_id, GradeAlert.acknowledged_at.is_(None))
        .values(acknowledged_by=actor, acknowledged_at=now))).rowcount
    if changed:
        audit_log.append(session, actor=actor, action="grade_alert.acknowledge", subject=f"grade_alert:{alert_id}",
                         now=now, after={"partner": code, "period": label, "kind": alert.kind})
        session.refresh(alert)
    return _alert_view(alert, code, label)


# -- export and scheduling -----------------------------------------------------------

CSV_COLUMNS = ("partner", "period", "status", "grade", "computed_grade", "overridden", "score", "not_graded_reason",
               *(metric.name for metric in METRICS))


def export_rows(session: Session, *, period: str) -> Iterator[list[object]]:
    """The period's grades as CSV rows in ``CSV_COLUMNS`` order, a page of the database at a time."""
    offset, total = 0, 1
    while offset < total:
        _, views, total = period_grades(session, period=period, limit=MAX_PAGE_SIZE, offset=offset)
        offset += MAX_PAGE_SIZE
        for view in views:
            # The stored metrics, a JSON object (``_grade_view``).
            metrics = cast(dict[str, object], view["metrics"])
            yield [view["partner"], view["period"], view["status"], view["grade"] or "",
                   view["computed_grade"] or "", "yes" if view["overridden"] else "no", view["score"] or "",
                   view["not_graded_reason"] or "",
                   *("" if metrics.get(metric.name) is None else metrics[metric.name] for metric in METRICS)]


def export_csv(session: Session, *, period: str) -> str:
    """The period's grades as CSV, one row per partner, metrics as exact decimals."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    writer.writerows(export_rows(session, period=period))
    return buffer.getvalue()


def grading_job(config: GradingConfig, time_zone: str) -> Job:
    """The scheduler job: once the month is over, grade it (once; later runs find it done)."""

    def run(session: Session, *, now: datetime, limit: int) -> int:
        period = Period.month_before(now, time_zone)
        if session.scalar(select(GradePeriod.id).where(GradePeriod.period == period.label)) is not None:
            return 0
        computed = compute(session, period=period, config=config, time_zone=time_zone, now=now, actor="scheduler")
        return computed.graded + computed.not_graded

    return Job("grade-partners", 3600, run, "partners graded")


def computed_periods(session: Session) -> list[str]:
    """The labels of every computed period, newest first."""
    return list(session.scalars(select(GradePeriod.period).order_by(GradePeriod.starts_at.desc())))


def latest_grades(session: Session, *, codes: Sequence[str] | None = None) -> dict[str, dict[str, object]]:
    """Per partner code (all, or ``codes``), the grade of the newest computed period and its trend.

    ``trend`` is ``up``, ``down``, ``same`` against the period before, or None when either
    period has no grade. Reads only the grade letters, never the stored explanations.
    """
    newest = session.scalar(select(GradePeriod.period).order_by(GradePeriod.starts_at.desc()).limit(1))
    if newest is None:
        return {}
    latest = Period.parse(newest)
    current = _effective_grades(session, latest.label, codes)
    previous = _effective_grades(session, latest.previous().label, codes)
    view: dict[str, dict[str, object]] = {}
    for code, (grade, computed) in current.items():
        before = previous.get(code, (None, None))[0]
        trend = None
        if before is not None and grade is not None:
            moved = bands_dropped(before, grade)
            trend = "down" if moved > 0 else "up" if moved < 0 else "same"
        view[code] = {"period": latest.label, "grade": grade, "computed_grade": computed, "previous_grade": before,
                      "trend": trend}
    return view


def _effective_grades(session: Session, period_label: str,
                      codes: Sequence[str] | None) -> dict[str, tuple[str | None, str | None]]:
    """Per partner code, (effective grade, computed grade) in one period."""
    graded, effective = _effective_rows()
    statement = (graded.with_only_columns(Partner.code, effective, PartnerGrade.grade)
                 .where(GradePeriod.period == period_label))
    if codes is not None:
        statement = statement.where(Partner.code.in_(list(codes)))
    return {code: (grade, computed) for code, grade, computed in session.execute(statement)}


def grade_trends(session: Session, *, codes: Sequence[str],
                 periods: int = 3) -> dict[str, list[tuple[str, str | None]]]:
    """Per partner code, its effective grade (None: not graded) in each of the newest ``periods`` computed periods.

    Oldest first, only periods in which the partner has a grade row; partners without one are left out.
    """
    labels = list(session.scalars(select(GradePeriod.period).order_by(GradePeriod.starts_at.desc()).limit(periods)))
    if not codes or not labels:
        return {}
    graded, effective = _effective_rows()
    rows = session.execute(graded.with_only_columns(Partner.code, GradePeriod.period, effective)
                           .where(GradePeriod.period.in_(labels), Partner.code.in_(list(codes)))
                           .order_by(Partner.code, GradePeriod.starts_at))
    trends: dict[str, list[tuple[str, str | None]]] = {}
    for code, label, grade in rows:
        trends.setdefault(code, []).append((label, grade))
    return trends


def newest_grades() -> Subquery:
    """Per partner, the effective grade (``grade``) of the newest computed period, as a subquery lists can join."""
    newest = select(GradePeriod.id).order_by(GradePeriod.starts_at.desc()).limit(1).scalar_subquery()
    graded, effective = _effective_rows()
    return (graded.with_only_columns(PartnerGrade.partner_id, effective.label("grade"))
            .where(PartnerGrade.period_id == newest).subquery("newest_grades"))


def open_alert_counts() -> Subquery:
    """Per partner, how many of its alerts are not acknowledged yet (``open_alerts``), as a subquery lists can join."""
    return (select(PartnerGrade.partner_id, func.count().label("open_alerts"))
            .join(GradeAlert, GradeAlert.partner_grade_id == PartnerGrade.id)
            .where(GradeAlert.acknowledged_at.is_(None)).group_by(PartnerGrade.partner_id).subquery("open_alerts"))


def period_bands(session: Session, *, period: str) -> dict[str, int] | None:
    """The bands (lowest score of A, B and C) in force when ``period`` was computed; None if it was not."""
    config = session.scalar(select(GradePeriod.config).where(GradePeriod.period == Period.parse(period).label))
    if config is None:
        return None
    return {grade: int(score) for grade, score in cast(dict[str, Any], config)["bands"].items()}
