"""Partner-manager pages for grades: a period's grades, one grade's explanation, overrides, alerts.

Everything goes through ``alliance.services.grading``, as the back-office API and the
CLI do, with the signed-in user as the actor.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from flask import Response, render_template, url_for
from werkzeug.exceptions import BadRequest
from werkzeug.wrappers import Response as BaseResponse

from alliance.console import security
from alliance.console.blueprint import console, navigation_item
from alliance.console.helpers import change, csv_reply, form_text, now, pager_args, pager_url, query_page, query_text
from alliance.domain.errors import ValidationFailed
from alliance.domain.grading import GRADES, Period
from alliance.extensions import hub_state
from alliance.services import console_reports, grading

if TYPE_CHECKING:
    from alliance.storage.unit_of_work import Session

MANAGERS = security.PARTNER_MANAGER_ROLES
STATUSES = ("graded", "not_graded")

navigation_item("Partners", "Grades", "console.grades", roles=MANAGERS, order=21,
                summary="each partner's grade, its trend and what it is made of")


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
    with hub_state().read_only_unit_of_work() as uow:
        periods = grading.computed_periods(uow.session)
        period = _period_argument(query_text("period")) or (periods[0] if periods else None)
        summary: dict[str, object] | None = None
        rows: list[dict[str, object]] = []
        total = 0
        if period is not None and period in periods:
            summary, rows, total = grading.period_grades(uow.session, period=period, grade=grade, status=status,
                                                         limit=page_size, offset=(page - 1) * page_size)
        alerts, alert_total = grading.list_alerts(uow.session, acknowledged=False, limit=20)
    settings = hub_state().settings
    return render_template(
        "console/grades/list.html", period=period, periods=periods, summary=summary,
        listing=console_reports.Page(rows, total, page, page_size), grade=grade, status=status, grades=GRADES,
        statuses=STATUSES, alerts=alerts, alert_total=alert_total, pager=pager_args(period=period),
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
    return render_template("console/grades/detail.html", grade=view, grades=GRADES,
                           currency_metrics={"purchase_volume_minor"})


@console.route("/partners/<code>/grades/<period>/override", methods=["POST"])
@security.requires(*MANAGERS)
def partner_grade_override(code: str, period: str) -> BaseResponse:
    """Override a grade; the reason is required and the computed grade stays visible."""
    label = _period_label(period)
    grade = form_text("grade", max_length=1)
    if grade not in GRADES:
        raise BadRequest("A grade is A, B, C or D.")
    back = form_text("back", required=False, max_length=300)
    if back is None or not back.startswith("/console/"):
        back = url_for("console.partner_grade", code=code, period=label)
    return change(grading.override, code=code, period=label, grade=grade,
                  reason=form_text("reason", max_length=grading.MAX_REASON_CHARACTERS),
                  success=f"{code}'s grade for {label} is now {grade} (override recorded in the audit log).",
                  back=back)


@console.route("/grade-alerts/<int:alert_id>/acknowledgement", methods=["POST"])
@security.requires(*MANAGERS)
def grade_alert_acknowledge(alert_id: int) -> BaseResponse:
    """Mark an alert as handled."""
    return change(grading.acknowledge_alert, alert_id=alert_id, success=f"Alert {alert_id} acknowledged.",
                  back=pager_url("console.grades"))
