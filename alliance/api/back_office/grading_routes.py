"""Partner grades for the partner_manager role: compute a period, read grades with their explanation,
a partner's history, override with a reason, export CSV, and the alerts raised for managers.

A grade's ``grade`` is the effective one (the newest override, else the computed grade);
``computed_grade`` is always the computed one, so an override never hides what the data said.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from flask import Flask, Response
from flask.views import MethodView
from flask_smorest import Api, Blueprint
from marshmallow import Schema, fields, validate

from alliance.api.back_office.auth import actor, require_role
from alliance.api.back_office.routes import PREFIX, committed_change, documented
from alliance.api.partner.schemas import StrictSchema
from alliance.api.patterns import WholeValue
from alliance.domain.grading import GRADES, Period
from alliance.extensions import hub_state
from alliance.services import grading

grades_blueprint = Blueprint("back_office_grades", __name__, url_prefix=PREFIX,
                             description="Partner managers: partner grades by volume, complaints and settlement "
                                         "behaviour, with explanations, overrides and alerts.")
PERIOD = WholeValue(r"^\d{4}-(0[1-9]|1[0-2]|Q[1-4])$", error="a month such as 2026-10 or a quarter such as 2026-Q4")


class GradeComputeInput(StrictSchema):
    period = fields.String(validate=PERIOD, metadata={"description": "Default: the last whole month."})


class GradeComputeOutput(Schema):
    period = fields.String()
    graded = fields.Integer()
    not_graded = fields.Integer()
    alerts_raised = fields.Integer()


class GradePageQuery(StrictSchema):
    limit = fields.Integer(strict=False, load_default=50, validate=validate.Range(min=1, max=grading.MAX_PAGE_SIZE))
    offset = fields.Integer(strict=False, load_default=0, validate=validate.Range(min=0, max=10**9))


class GradesQuery(GradePageQuery):
    grade = fields.String(validate=validate.OneOf(GRADES))
    status = fields.String(validate=validate.OneOf(("graded", "not_graded")))


class GradeBreakdownOutput(Schema):
    metric = fields.String()
    label = fields.String()
    direction = fields.String(metadata={"description": "higher or lower is better"})
    value = fields.Raw(allow_none=True, metadata={"description": "an integer, or an exact decimal as a string"})
    weight = fields.Integer()
    effective_weight = fields.String(allow_none=True, metadata={"description": "percent of this partner's score"})
    percentile = fields.String(allow_none=True)
    contribution = fields.String(allow_none=True, metadata={"description": "points out of 100"})


class GradeOverrideOutput(Schema):
    grade = fields.String()
    reason = fields.String()
    actor = fields.String()
    at = fields.AwareDateTime()


class GradeAlertOutput(Schema):
    id = fields.Integer()
    partner = fields.String()
    period = fields.String()
    kind = fields.String()
    detail = fields.String()
    raised_at = fields.AwareDateTime()
    acknowledged_by = fields.String(allow_none=True)
    acknowledged_at = fields.AwareDateTime(allow_none=True)


class GradeOutput(Schema):
    partner = fields.String()
    partner_name = fields.String()
    period = fields.String()
    status = fields.String(metadata={"description": "graded, or not_graded (too little activity)"})
    grade = fields.String(allow_none=True, metadata={"description": "effective: the newest override, else computed"})
    computed_grade = fields.String(allow_none=True)
    overridden = fields.Boolean()
    score = fields.String(allow_none=True)
    not_graded_reason = fields.String(allow_none=True)
    metrics = fields.Dict(keys=fields.String(), values=fields.Raw(allow_none=True))
    breakdown = fields.List(fields.Nested(GradeBreakdownOutput))
    changes = fields.Dict(metadata={"description": "what moved since the previous period"})
    computed_at = fields.AwareDateTime()
    overrides = fields.List(fields.Nested(GradeOverrideOutput))
    alerts = fields.List(fields.Nested(GradeAlertOutput))


class GradePeriodSummaryOutput(Schema):
    period = fields.String()
    starts_at = fields.AwareDateTime()
    ends_at = fields.AwareDateTime()
    graded = fields.Integer()
    not_graded = fields.Integer()
    computed_at = fields.AwareDateTime()
    computed_by = fields.String()
    config = fields.Dict()


class GradeListOutput(Schema):
    summary = fields.Nested(GradePeriodSummaryOutput)
    grades = fields.List(fields.Nested(GradeOutput))
    total = fields.Integer()
    limit = fields.Integer()
    offset = fields.Integer()


class GradeHistoryOutput(Schema):
    grades = fields.List(fields.Nested(GradeOutput))


class GradeOverrideInput(StrictSchema):
    grade = fields.String(required=True, validate=validate.OneOf(GRADES))
    reason = fields.String(required=True, validate=validate.Length(min=1, max=grading.MAX_REASON_CHARACTERS))


class GradeAlertsQuery(GradePageQuery):
    acknowledged = fields.String(load_default="no", validate=validate.OneOf(("no", "yes", "all")))
    period = fields.String(validate=PERIOD)


class GradeAlertListOutput(Schema):
    alerts = fields.List(fields.Nested(GradeAlertOutput))
    total = fields.Integer()


@grades_blueprint.route("/grades/computations")
class Computations(MethodView):
    @require_role("partner_manager")
    @grades_blueprint.arguments(GradeComputeInput)
    @grades_blueprint.response(200, GradeComputeOutput)
    @documented(grades_blueprint)
    def post(self, data: dict[str, Any]) -> dict[str, object]:
        """Grade every partner for a period (default: the last whole month); again if it was graded before.

        Recomputing rewrites the computed grades (late data counts) and keeps every override.
        """
        settings = hub_state().settings
        now = datetime.now(timezone.utc)
        period = (Period.parse(data["period"]) if data.get("period")
                  else Period.month_before(now, settings.alliance_time_zone))
        with hub_state().unit_of_work() as uow:
            computed = grading.compute(uow.session, period=period, config=settings.grading_config(),
                                       time_zone=settings.alliance_time_zone, now=now, actor=actor())
            uow.commit()
        return {"period": computed.period, "graded": computed.graded, "not_graded": computed.not_graded,
                "alerts_raised": computed.alerts_raised}


@grades_blueprint.route("/grades/<period>")
class PeriodGrades(MethodView):
    @require_role("partner_manager")
    @grades_blueprint.arguments(GradesQuery, location="query")
    @grades_blueprint.response(200, GradeListOutput)
    @documented(grades_blueprint, 404)
    def get(self, query: dict[str, Any], period: str) -> dict[str, object]:
        """A period's grades by partner code, with breakdowns; filter by effective grade or status."""
        with hub_state().read_only_unit_of_work() as uow:
            summary, views, total = grading.period_grades(uow.session, period=period, grade=query.get("grade"),
                                                          status=query.get("status"), limit=query["limit"],
                                                          offset=query["offset"])
        return {"summary": summary, "grades": views, "total": total, "limit": query["limit"],
                "offset": query["offset"]}


@grades_blueprint.route("/grades/<period>/export")
class PeriodExport(MethodView):
    @require_role("partner_manager")
    @grades_blueprint.response(200, description="CSV: one row per partner, metrics as exact decimals.")
    @documented(grades_blueprint, 404)
    def get(self, period: str) -> Response:
        """A period's grades and metrics as CSV."""
        with hub_state().read_only_unit_of_work() as uow:
            document = grading.export_csv(uow.session, period=period)
        label = Period.parse(period).label
        return Response(document, status=200, content_type="text/csv; charset=utf-8",
                        headers={"Content-Disposition": f'attachment; filename="grades-{label}.csv"'})


@grades_blueprint.route("/partners/<code>/grades")
class PartnerGrades(MethodView):
    @require_role("partner_manager")
    @grades_blueprint.response(200, GradeHistoryOutput)
    @documented(grades_blueprint, 404)
    def get(self, code: str) -> dict[str, object]:
        """A partner's grades over time, newest period first (at most 24)."""
        with hub_state().read_only_unit_of_work() as uow:
            return {"grades": grading.partner_history(uow.session, code=code)}


@grades_blueprint.route("/partners/<code>/grades/<period>")
class PartnerGradeRoute(MethodView):
    @require_role("partner_manager")
    @grades_blueprint.response(200, GradeOutput)
    @documented(grades_blueprint, 404)
    def get(self, code: str, period: str) -> dict[str, object]:
        """One grade with its explanation: each metric, its weight, its contribution, what moved."""
        with hub_state().read_only_unit_of_work() as uow:
            return grading.partner_grade(uow.session, code=code, period=period)


@grades_blueprint.route("/partners/<code>/grades/<period>/override")
class GradeOverrideRoute(MethodView):
    @require_role("partner_manager")
    @grades_blueprint.arguments(GradeOverrideInput)
    @grades_blueprint.response(201, GradeOutput)
    @documented(grades_blueprint, 404)
    def post(self, data: dict[str, Any], code: str, period: str) -> dict[str, object]:
        """Override a grade with a required reason (audited); the computed grade stays visible."""
        return committed_change(grading.override, code=code, period=period, grade=data["grade"],
                                reason=data["reason"])


@grades_blueprint.route("/grade-alerts")
class GradeAlerts(MethodView):
    @require_role("partner_manager")
    @grades_blueprint.arguments(GradeAlertsQuery, location="query")
    @grades_blueprint.response(200, GradeAlertListOutput)
    @documented(grades_blueprint)
    def get(self, query: dict[str, Any]) -> dict[str, object]:
        """Two-band downgrades and high complaint rates, newest first; unacknowledged ones by default."""
        acknowledged = {"no": False, "yes": True, "all": None}[query["acknowledged"]]
        with hub_state().unit_of_work() as uow:
            alerts, total = grading.list_alerts(uow.session, acknowledged=acknowledged, period=query.get("period"),
                                                limit=query["limit"], offset=query["offset"])
        return {"alerts": alerts, "total": total}


@grades_blueprint.route("/grade-alerts/<int:alert_id>/acknowledgement")
class AlertAcknowledgement(MethodView):
    @require_role("partner_manager")
    @grades_blueprint.response(200, GradeAlertOutput)
    @documented(grades_blueprint, 404)
    def post(self, alert_id: int) -> dict[str, object]:
        """Mark an alert as handled (once; a second acknowledgement returns the first)."""
        return committed_change(grading.acknowledge_alert, alert_id=alert_id)


def init_app(app: Flask, api: Api) -> None:
    """Register the partner-grading routes."""
    api.register_blueprint(grades_blueprint)
