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
from datetime import datetime
from fractions import Fraction
from typing import Any, Iterator, Sequence, cast

from sqlalchemy import ColumnElement, CursorResult, Row, Select, and_, func, insert, select, union, update
from sqlalchemy.orm import InstrumentedAttribute, Session, aliased

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
    SettlementStatement,
    SettlementStatementLine,
    StatementEvent,
    StatementLineDispute,
)
from alliance.models.base import integer_sum
from alliance.services import audit_log
from alliance.services.jobs import Job
from alliance.services.partner_admin import partner_by_code
from alliance.storage.adapters import storage_for

MAX_PAGE_SIZE = 200
MAX_REASON_CHARACTERS = 2000
CLOSED_COMPLAINT_STATUSES = ("resolved", "rejected")


# -- measuring -----------------------------------------------------------------------

def measure(session: Session, period: Period, *, time_zone: str) -> list[PartnerMetrics]:
    """Every partner that existed before the period ended, with its metrics for the period."""
    starts_at, ends_at = period.bounds(time_zone)
    in_period = lambda column: and_(column >= starts_at, column < ends_at)  # noqa: E731
    partners = session.execute(select(Partner.id, Partner.code, Partner.currency)
                               .where(Partner.created_at < ends_at).order_by(Partner.code)).all()

    purchases = _by_partner(session, select(
        Purchase.partner_id, func.count(), integer_sum(Purchase.amount_minor), integer_sum(Purchase.points_partner),
    ).where(in_period(Purchase.reported_at)).group_by(Purchase.partner_id))
    redemptions = _by_partner(session, select(
        RedemptionHold.partner_id, func.count(), integer_sum(RedemptionHold.points_captured),
    ).where(RedemptionHold.status == "captured", in_period(RedemptionHold.closed_at))
        .group_by(RedemptionHold.partner_id))
    visits = union(
        select(Purchase.partner_id, Purchase.member_id).where(in_period(Purchase.reported_at)),
        select(RedemptionHold.partner_id, RedemptionHold.member_id)
        .where(RedemptionHold.status == "captured", in_period(RedemptionHold.closed_at)),
    ).subquery()
    members = _by_partner(session, select(visits.c.partner_id, func.count()).group_by(visits.c.partner_id))
    complaints = _by_partner(session, select(Complaint.partner_id, func.count())
                             .where(in_period(Complaint.opened_at)).group_by(Complaint.partner_id))
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
    medians = _median_resolution_seconds(session, starts_at, ends_at)
    lateness = _days_late(session, period)

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


def _days_late(session: Session, period: Period) -> dict[int, int]:
    """Per partner, the most days late of its statements due in the period that it had to pay.

    A statement is paid on the day its payments (those dated before the period's end)
    first cover its net; unpaid by the period's last day, it counts as late up to that day.
    """
    last_day = period.end_day.toordinal() - 1
    # A paid event always carries an amount (the ``kind`` check); only invoiced ones have none.
    paid_amount = cast(InstrumentedAttribute[int], StatementEvent.amount_minor)
    paid = (select(StatementEvent.statement_id, integer_sum(paid_amount).label("paid"),
                   func.max(StatementEvent.paid_on).label("last_paid_on"))
            .where(StatementEvent.kind == "paid", StatementEvent.paid_on < period.end_day)
            .group_by(StatementEvent.statement_id).subquery())
    rows = session.execute(
        select(SettlementStatement.partner_id, SettlementStatement.net_minor, SettlementStatement.due_date,
               paid.c.paid, paid.c.last_paid_on)
        .outerjoin(paid, paid.c.statement_id == SettlementStatement.id)
        .where(SettlementStatement.net_minor > 0, SettlementStatement.due_date >= period.first_day,
               SettlementStatement.due_date < period.end_day)
    )
    worst: dict[int, int] = {}
    for partner_id, net, due_date, paid_amount, last_paid_on in rows:
        settled_on = last_paid_on.toordinal() if paid_amount is not None and paid_amount >= net else last_day
        worst[partner_id] = max(worst.get(partner_id, 0), max(0, settled_on - due_date.toordinal()))
    return worst


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
    results = grade_period(measure(session, period, time_zone=time_zone), config)
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
        wanted.append(("complaint_rate", f"{result.metrics.partner_code} had {json_value(rate)} complaints per 1,000"
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


def period_grades(session: Session, *, period: str, grade: str | None = None, status: str | None = None,
                  limit: int = 50, offset: int = 0) -> tuple[dict[str, object], list[dict[str, object]], int]:
    """A computed period, a page of its partners' grades (by partner code) and how many match in all."""
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
    page = session.execute(statement.order_by(Partner.code).limit(min(limit, MAX_PAGE_SIZE)).offset(offset))
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
    audit_log.append(session, actor=actor, action="grade.override", subject=f"partner:{code}:grade:{period}",
                     now=now, before={"grade": before.grade if before else row.grade, "computed_grade": row.grade},
                     after={"grade": grade, "computed_grade": row.grade, "reason": reason.strip()})
    return partner_grade(session, code=code, period=period)


def list_alerts(session: Session, *, acknowledged: bool | None = False, period: str | None = None,
                limit: int = 50, offset: int = 0) -> tuple[list[dict[str, object]], int]:
    """Alerts for the partner managers, newest first; unacknowledged ones by default."""
    statement = (select(GradeAlert, Partner.code, GradePeriod.period)
                 .join(PartnerGrade, PartnerGrade.id == GradeAlert.partner_grade_id)
                 .join(Partner, Partner.id == PartnerGrade.partner_id)
                 .join(GradePeriod, GradePeriod.id == PartnerGrade.period_id))
    if acknowledged is not None:
        statement = statement.where(GradeAlert.acknowledged_at.is_not(None) if acknowledged
                                    else GradeAlert.acknowledged_at.is_(None))
    if period is not None:
        statement = statement.where(GradePeriod.period == Period.parse(period).label)
    total = session.scalar(select(func.count()).select_from(statement.subquery()))
    rows = session.execute(statement.order_by(GradeAlert.id.desc()).limit(min(limit, MAX_PAGE_SIZE))
                           .offset(offset)).all()
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
