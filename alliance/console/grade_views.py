"""Partner-manager pages for grades: a period's grades, one grade's explanation, overrides, alerts.

Everything goes through ``alliance.services.grading``, as the back-office API and the
CLI do, with the signed-in user as the actor.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_HALF_EVEN, Decimal
from typing import TYPE_CHECKING, Any, Mapping, cast

from flask import Response, render_template, request, url_for
from werkzeug.exceptions import BadRequest
from werkzeug.wrappers import Response as BaseResponse

from alliance.console import security
from alliance.console.blueprint import console, navigation_item
from alliance.console.helpers import (
    change,
    csv_reply,
    form_choice,
    form_text,
    now,
    pager_args,
    pager_url,
    query_page,
    query_sort,
    query_text,
)
from alliance.domain.errors import ValidationFailed
from alliance.domain.grading import GRADES, Period
from alliance.extensions import hub_state
from alliance.services import console_reports, grading, partner_admin, webhooks

if TYPE_CHECKING:
    from alliance.storage.unit_of_work import Session

MANAGERS = security.PARTNER_MANAGER_ROLES
STATUSES = ("graded", "not_graded")

ALERT_STATES = ("open", "acknowledged", "all")

navigation_item("Partners", "Grades", "console.grades", roles=MANAGERS, order=21,
                summary="each partner's grade, its trend and what it is made of")
navigation_item("Partners", "Alerts", "console.grade_alerts", roles=MANAGERS, order=22,
                summary="downgrades and complaint rates to look at; who acknowledged which, and when; webhook "
                        "endpoints the hub stopped sending to")


def grade_score(value: object) -> str:
    """A score or share out of 100 with at most one decimal (``78.9``, ``75``), as a person reads it."""
    if value is None or value == "":
        return ""
    shown = Decimal(str(value)).quantize(Decimal("0.1"), rounding=ROUND_HALF_EVEN)
    return f"{shown:,.0f}" if shown == shown.to_integral_value() else f"{shown:,.1f}"


console.add_app_template_filter(grade_score, "grade_score")


@dataclass(frozen=True, slots=True)
class MetricWords:
    """How the console names and explains one grading metric, and the unit its value is shown in."""

    name: str
    explanation: str
    unit: str  # money, count, points, per_1000, hours, share, days


METRIC_WORDS: Mapping[str, MetricWords] = {
    "purchase_volume_minor": MetricWords("Sales through the alliance", "The amount of the purchases the partner "
                                         "reported in the period, in its currency.", "money"),
    "purchase_count": MetricWords("Purchases", "Purchases the partner reported in the period.", "count"),
    "active_members": MetricWords("Members who came", "Different members with a purchase or a redemption there.",
                                  "count"),
    "points_issued": MetricWords("Points given", "Points members earned on those purchases, which the partner pays "
                                 "for.", "points"),
    "redemption_count": MetricWords("Redemptions", "Redemptions of points the partner accepted (captured).", "count"),
    "redemption_points": MetricWords("Points redeemed", "Points members spent there.", "points"),
    "complaint_count": MetricWords("Complaints", "Complaints opened against the partner in the period.", "count"),
    "complaint_rate_per_1000": MetricWords("Complaint rate", "Complaints for every 1,000 purchases and redemptions.",
                                           "per_1000"),
    "median_resolution_hours": MetricWords("Time to settle a complaint", "The middle time from opening to closing "
                                           "of the complaints closed in the period.", "hours"),
    "refund_rate": MetricWords("Refunds", "Refunds and reversed redemptions as a share of all transactions.",
                               "share"),
    "days_late": MetricWords("Paying on time", "Days late paying the latest statement due by the period's end; a "
                             "statement still unpaid counts up to the day the grade was computed.", "days"),
    "disputes_opened": MetricWords("Statement disputes", "Disputes the partner opened on statement lines.", "count"),
    "confirmed_fraud_count": MetricWords("Confirmed fraud", "Operations at the partner the risk controls stopped or "
                                         "held that a reviewer confirmed as fraud (or whose points were reversed).",
                                         "count"),
    "confirmed_fraud_per_1000": MetricWords("Fraud rate", "Confirmed fraud for every 1,000 purchases and "
                                            "redemptions at the partner.", "per_1000"),
}


def metric_value(metric: str, value: object) -> dict[str, object]:
    """A stored metric value ready to show: ``money`` (minor units, shown with the money filter) or ``text``."""
    if value is None:
        return {"text": "no value"}
    unit = METRIC_WORDS[metric].unit if metric in METRIC_WORDS else "count"
    exact = Decimal(str(value))
    if unit == "money":
        return {"money": int(exact)}
    one_place = grade_score(exact)
    if unit == "count":
        return {"text": f"{int(exact):,}"}
    if unit == "points":
        return {"text": f"{int(exact):,} point{'' if abs(exact) == 1 else 's'}"}
    if unit == "per_1000":
        return {"text": f"{one_place} per 1,000 transactions"}
    if unit == "hours":
        return {"text": f"{one_place} hour{'' if exact == 1 else 's'}"}
    if unit == "share":
        return {"text": f"{grade_score(exact * 100)}%"}
    return {"text": f"{int(exact):,} day{'' if exact == 1 else 's'}"}


def breakdown_lines(breakdown: list[dict[str, Any]]) -> list[dict[str, object]]:
    """A grade's breakdown as a person reads it: plain name and explanation, value in its unit, score, weight."""
    lines = []
    for line in breakdown:
        words = METRIC_WORDS.get(line["metric"], MetricWords(line["label"], "", "count"))
        better = "more is better" if line["direction"] == "higher" else "less is better"
        lines.append({
            "name": words.name, "explanation": f"{words.explanation} ({better})",
            "value": metric_value(line["metric"], line["value"]), "weight": line["weight"],
            "share": grade_score(line["effective_weight"]) if line["effective_weight"] else None,
            "rank": grade_score(Decimal(line["percentile"]) * 100) if line["percentile"] is not None else None,
            "points": grade_score(line["contribution"]) if line["contribution"] is not None else None,
        })
    return lines


def movements(changes: dict[str, Any]) -> list[dict[str, object]]:
    """What moved since the previous period, in plain names and units, biggest movers first; unchanged left out."""
    moved = []
    for move in changes.get("metrics", []):
        if move["value_change"] in (None, "0.0000") and move["contribution_change"] in (None, "0.0000"):
            continue
        metric = move["metric"]
        moved.append({"name": METRIC_WORDS[metric].name if metric in METRIC_WORDS else metric,
                      "before": metric_value(metric, move["previous_value"]),
                      "now": metric_value(metric, move["value"]),
                      "points_change": _signed(move["contribution_change"])})
    return moved


def _signed(value: str | None) -> str:
    if value is None:
        return "—"
    text = grade_score(value)
    return text if text.startswith("-") or text == "0" else f"+{text}"


def _article(grade: str) -> str:
    return "an" if grade == "A" else "a"


def band_sentence(view: Mapping[str, Any], bands: Mapping[str, int] | None) -> str:
    """One sentence saying why the grade is what it is: the score against the band's threshold, or why none."""
    if view["status"] != "graded":
        return (f"Not graded: {view['not_graded_reason']}. A partner with too little activity gets no grade rather "
                "than a D; its figures are still shown below.")
    score, computed = grade_score(view["score"]), view["computed_grade"]
    bands = bands or {}
    order = ("A", "B", "C")
    if computed in order:
        floor = bands.get(computed)
        above = order[order.index(computed) - 1] if computed != "A" else None
        sentence = f"Computed {computed}: a score of {score} out of 100"
        if floor is not None:
            sentence += f", at least the {floor} {_article(computed)} {computed} needs"
        if above is not None and above in bands:
            sentence += f" and below the {bands[above]} of {_article(above)} {above}"
        sentence += "."
    else:
        sentence = f"Computed D: a score of {score} out of 100"
        sentence += f", below the {bands['C']} a C needs." if "C" in bands else "."
    if view["overridden"]:
        latest = view["overrides"][-1]
        sentence += f" Overridden to {view['grade']} by {latest['actor']}: {latest['reason']}"
    return sentence


def _period_argument(text: str | None) -> str | None:
    if text is None:
        return None
    return _period_label(text)


def _period_label(text: str) -> str:
    try:
        return Period.parse(text).label
    except ValidationFailed:
        raise BadRequest("A period is a month such as 2026-10 or a quarter such as 2026-Q4.") from None


@console.route("/grades")
@security.requires(*MANAGERS)
def grades() -> str:
    """A period's grades (the newest computed period by default), filtered and paged, and the open alerts."""
    page, page_size = query_page()
    grade = query_text("grade", allowed=GRADES)
    status = query_text("status", allowed=STATUSES)
    sort = query_sort(grading.GRADE_SORTS, "partner")
    with hub_state().read_only_unit_of_work() as uow:
        periods = grading.computed_periods(uow.session)
        period = _period_argument(query_text("period")) or (periods[0] if periods else None)
        summary: dict[str, object] | None = None
        rows: list[dict[str, object]] = []
        total = 0
        if period is not None and period in periods:
            summary, rows, total = grading.period_grades(uow.session, period=period, grade=grade, status=status,
                                                         limit=page_size, offset=(page - 1) * page_size,
                                                         sort=sort.key, descending=sort.descending)
        alerts, alert_total = grading.list_alerts(uow.session, acknowledged=False, limit=20)
    settings = hub_state().settings
    return render_template(
        "console/grades/list.html", period=period, periods=periods, summary=summary,
        listing=console_reports.Page(rows, total, page, page_size), grade=grade, status=status, grades=GRADES,
        statuses=STATUSES, alerts=alerts, alert_total=alert_total, pager=pager_args(period=period), sort=sort,
        suggested_period=Period.month_before(now(), settings.alliance_time_zone).label,
    )


@console.route("/grades/<period>.csv")
@security.requires(*MANAGERS)
def grades_csv(period: str) -> Response:
    """The period's grades and metrics as CSV (the same columns as the API's export)."""
    label = _period_label(period)
    with hub_state().read_only_unit_of_work() as uow:
        rows = list(grading.export_rows(uow.session, period=label))
    return csv_reply(f"grades-{label}.csv", grading.CSV_COLUMNS, rows)


def _compute(session: Session, *, now: datetime, actor: str, period: str) -> grading.ComputedPeriod:
    settings = hub_state().settings
    return grading.compute(session, period=Period.parse(period), config=settings.grading_config(),
                           time_zone=settings.alliance_time_zone, now=now, actor=actor)


@console.route("/grades/computations", methods=["POST"])
@security.requires(*MANAGERS)
def grades_compute() -> BaseResponse:
    """Grade every partner for a period (again, if it was graded before; overrides stay)."""
    period = _period_argument(form_text("period", max_length=7))
    return change(_compute, period=period,
                  success=lambda result: (f"{result.period}: {result.graded} graded, {result.not_graded} not "
                                          f"graded, {result.alerts_raised} alerts raised."),
                  back=url_for("console.grades", period=period))


@console.route("/partners/<code>/grades/<period>")
@security.requires(*MANAGERS)
def partner_grade(code: str, period: str) -> str:
    """One grade with its explanation: each metric, its weight and contribution, what moved, overrides."""
    label = _period_label(period)
    with hub_state().read_only_unit_of_work() as uow:
        view = grading.partner_grade(uow.session, code=code, period=label)
        currency = partner_admin.partner_by_code(uow.session, code).currency
        bands = grading.period_bands(uow.session, period=label)
    breakdown = cast(list[dict[str, Any]], view["breakdown"])
    return render_template("console/grades/detail.html", grade=view, grades=GRADES, currency=currency,
                           lines=breakdown_lines(breakdown), band=band_sentence(view, bands),
                           moved=movements(cast(dict[str, Any], view["changes"])))


@console.route("/partners/<code>/grades/<period>/override", methods=["POST"])
@security.requires(*MANAGERS)
def partner_grade_override(code: str, period: str) -> BaseResponse:
    """Override a grade; the reason is required and the computed grade stays visible."""
    label = _period_label(period)
    grade = form_choice("grade", GRADES, "A grade is A, B, C or D.")
    back = form_text("back", required=False, max_length=300)
    if back is None or not back.startswith("/console/"):
        back = url_for("console.partner_grade", code=code, period=label)
    return change(grading.override, code=code, period=label, grade=grade,
                  reason=form_text("reason", max_length=grading.MAX_REASON_CHARACTERS),
                  success=f"{code}'s grade for {label} is now {grade} (override recorded in the audit log).",
                  back=back)


@console.route("/grade-alerts")
@security.requires(*MANAGERS)
def grade_alerts() -> str:
    """Open alerts to acknowledge and the history of acknowledged ones, by partner, period and kind, sorted, paged;
    with the open ones, the partners' disabled webhook endpoints (newest first), each linked to its Webhooks page."""
    partner = query_text("partner")
    period = _period_argument(query_text("period"))
    kind = query_text("kind", allowed=grading.ALERT_KINDS)
    state = query_text("state", allowed=ALERT_STATES) or "open"
    sort = query_sort(grading.ALERT_SORTS, "raised", descending=True)
    page, page_size = query_page()
    filters: dict[str, Any] = {"partner": partner, "period": period, "kind": kind, "sort": sort.key,
                               "descending": sort.descending}
    with hub_state().read_only_unit_of_work() as uow:
        codes = console_reports.partner_codes(uow.session)
        if partner is not None and partner not in codes:
            raise BadRequest(f"There is no partner {partner!r} to filter by.")
        periods = grading.computed_periods(uow.session)
        open_alerts, open_total = ([], 0) if state == "acknowledged" else grading.list_alerts(
            uow.session, acknowledged=False, limit=grading.MAX_PAGE_SIZE, **filters)
        history, history_total = ([], 0) if state == "open" else grading.list_alerts(
            uow.session, acknowledged=True, limit=page_size, offset=(page - 1) * page_size, **filters)
        disabled = [] if state == "acknowledged" else webhooks.endpoints(uow.session, partner=partner,
                                                                         status="disabled")
    disabled.sort(key=lambda view: (view.disabled_at or view.created_at, view.id), reverse=True)
    return render_template("console/grades/alerts.html", partner=partner, period=period, kind=kind, state=state,
                           codes=codes, periods=periods, kinds=grading.ALERT_KINDS, states=ALERT_STATES, sort=sort,
                           open_alerts=open_alerts, open_total=open_total, disabled_endpoints=disabled,
                           history=console_reports.Page(history, history_total, page, page_size),
                           pager=pager_args())


@console.route("/grade-alerts/<int:alert_id>/acknowledgement", methods=["POST"])
@security.requires(*MANAGERS)
def grade_alert_acknowledge(alert_id: int) -> BaseResponse:
    """Mark an alert as handled (who and when are kept), then go back to the page it was acknowledged on."""
    back = "console.grade_alerts" if request.form.get("back") == "alerts" else "console.grades"
    return change(grading.acknowledge_alert, alert_id=alert_id, success=f"Alert {alert_id} acknowledged.",
                  back=pager_url(back))
