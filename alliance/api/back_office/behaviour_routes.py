"""Behaviour points for partner managers and administrators: one rule per event type, and a member's events.

A rule gives an event type's points (fixed, or per amount for recharges and bill
payments), who funds them (the hub, the reporting partner, or a named partner), caps per
member per day and month, eligibility (tiers, tenure) and an active period. Every
change is audited; events reported from then on follow it.
"""

from __future__ import annotations

from typing import Any

from flask import Flask
from flask.views import MethodView
from flask_smorest import Api, Blueprint
from marshmallow import Schema, fields, validate

from alliance.api.back_office.auth import require_role
from alliance.api.back_office.routes import PREFIX, committed_change, documented
from alliance.api.partner.schemas import CURRENCY, StrictSchema
from alliance.api.patterns import UtcDateTime, WholeValue
from alliance.domain.behaviour import EVENT_TYPES, MAX_POINTS, TIERS
from alliance.extensions import hub_state
from alliance.services import behaviour_points

RULE_ROLES = ("partner_manager", "admin")
EVENT_READER_ROLES = ("customer_service", "partner_manager", "admin")
MEMBER_NUMBER = WholeValue(r"^[0-9a-f]{16}$", error="a member number")

behaviour_blueprint = Blueprint("back_office_behaviour", __name__, url_prefix=PREFIX,
                                description="Partner managers and administrators: behaviour points rules per event "
                                            "type; a member's reported events.")


def _points(**extra: Any) -> fields.Integer:
    return fields.Integer(strict=True, validate=validate.Range(0, MAX_POINTS), **extra)


class RuleFields(StrictSchema):
    points = _points(metadata={"description": "Fixed points; for recharge and bill_payment, per per_amount_minor."})
    per_amount_minor = fields.Integer(strict=True, allow_none=True, validate=validate.Range(1, 10**12), metadata={
        "description": "Recharge and bill_payment: points for every whole amount of this (minor units), rounded down."})
    currency = fields.String(allow_none=True, validate=CURRENCY)
    referred_points = _points(metadata={"description": "Referral: the referred member's points."})
    streak_days = fields.Integer(strict=True, allow_none=True, validate=validate.Range(2, 366),
                                 metadata={"description": "Sign-in: the bonus comes on every streak_days-th day."})
    streak_bonus_points = _points()
    funded_by = fields.String(validate=validate.Length(1, 40),
                              metadata={"description": "hub, reporter (the partner reporting the event) or a "
                                                       "partner's code; the funder issues and pays for the points."})
    cap_per_day = _points(allow_none=True, metadata={"description": "Per member, alliance day; none: no cap."})
    cap_per_month = _points(allow_none=True, metadata={"description": "Per member, calendar month."})
    eligible_tiers = fields.List(fields.String(validate=validate.OneOf(TIERS)), allow_none=True,
                                 validate=validate.Length(1, len(TIERS)),
                                 metadata={"description": "None: every tier."})
    min_tenure_months = fields.Integer(strict=True, validate=validate.Range(0, 1200))
    starts_at = UtcDateTime(allow_none=True, metadata={"description": "Default: now."})
    ends_at = UtcDateTime(allow_none=True)


class RuleCreateInput(RuleFields):
    event_type = fields.String(required=True, validate=validate.OneOf(EVENT_TYPES))
    points = _points(required=True)


class RuleOutput(Schema):
    event_type = fields.String()
    points = fields.Integer()
    per_amount_minor = fields.Integer(allow_none=True)
    currency = fields.String(allow_none=True)
    referred_points = fields.Integer()
    streak_days = fields.Integer(allow_none=True)
    streak_bonus_points = fields.Integer()
    funded_by = fields.String()
    cap_per_day = fields.Integer(allow_none=True)
    cap_per_month = fields.Integer(allow_none=True)
    eligible_tiers = fields.List(fields.String(), allow_none=True)
    min_tenure_months = fields.Integer()
    starts_at = fields.AwareDateTime()
    ends_at = fields.AwareDateTime(allow_none=True)
    created_at = fields.AwareDateTime()
    updated_at = fields.AwareDateTime()


class RuleListOutput(Schema):
    rules = fields.List(fields.Nested(RuleOutput))


class MemberEventAwardOutput(Schema):
    member_number = fields.String()
    side = fields.String()
    points = fields.Integer()
    streak_bonus_points = fields.Integer()
    funded_by = fields.String()
    awarded_at = fields.AwareDateTime()


class MemberEventOutput(Schema):
    event_id = fields.String()
    event_type = fields.String()
    occurred_at = fields.AwareDateTime()
    amount_minor = fields.Integer(allow_none=True)
    currency = fields.String(allow_none=True)
    referred_member_number = fields.String(allow_none=True)
    status = fields.String()
    reason = fields.String(allow_none=True)
    points_awarded = fields.Integer()
    streak_day = fields.Integer(allow_none=True)
    reported_at = fields.AwareDateTime()
    awards = fields.List(fields.Nested(MemberEventAwardOutput))


class MemberEventListOutput(Schema):
    events = fields.List(fields.Nested(MemberEventOutput))


class MemberEventQuery(StrictSchema):
    limit = fields.Integer(strict=False, load_default=100, validate=validate.Range(1, 500))


@behaviour_blueprint.route("/behaviour-rules")
class BehaviourRules(MethodView):
    @require_role(*RULE_ROLES)
    @behaviour_blueprint.response(200, RuleListOutput)
    @documented(behaviour_blueprint)
    def get(self) -> dict[str, object]:
        """Every event type's rule."""
        with hub_state().read_only_unit_of_work() as uow:
            return {"rules": behaviour_points.rules(uow.session)}

    @require_role(*RULE_ROLES)
    @behaviour_blueprint.arguments(RuleCreateInput)
    @behaviour_blueprint.response(201, RuleOutput)
    @documented(behaviour_blueprint, 404, 409)
    def post(self, data: dict[str, Any]) -> behaviour_points.RuleView:
        """Create an event type's rule (one per event type); audited."""
        event_type = data.pop("event_type")
        return committed_change(behaviour_points.set_rule, event_type=event_type, mode="create", **data)


@behaviour_blueprint.route("/behaviour-rules/<event_type>")
class BehaviourRuleByType(MethodView):
    @require_role(*RULE_ROLES)
    @behaviour_blueprint.response(200, RuleOutput)
    @documented(behaviour_blueprint, 404)
    def get(self, event_type: str) -> behaviour_points.RuleView:
        """One event type's rule."""
        with hub_state().read_only_unit_of_work() as uow:
            return behaviour_points.rule_for(uow.session, event_type)

    @require_role(*RULE_ROLES)
    @behaviour_blueprint.arguments(RuleFields)
    @behaviour_blueprint.response(200, RuleOutput)
    @documented(behaviour_blueprint, 404)
    def patch(self, data: dict[str, Any], event_type: str) -> behaviour_points.RuleView:
        """Change the fields given of an event type's rule (end it with ends_at); audited."""
        return committed_change(behaviour_points.set_rule, event_type=event_type, mode="change", **data)


@behaviour_blueprint.route("/members/<member_number>/behaviour-events")
class MemberBehaviourEvents(MethodView):
    @require_role(*EVENT_READER_ROLES)
    @behaviour_blueprint.arguments(MemberEventQuery, location="query")
    @behaviour_blueprint.response(200, MemberEventListOutput)
    @documented(behaviour_blueprint, 404)
    def get(self, query: dict[str, Any], member_number: str) -> dict[str, object]:
        """A member's reported behaviour events and what each gave, newest first."""
        with hub_state().read_only_unit_of_work() as uow:
            return {"events": behaviour_points.events_of_member(uow.session, member_number=member_number,
                                                                limit=query["limit"])}


def init_app(app: Flask, api: Api) -> None:
    """Register the behaviour points routes."""
    api.register_blueprint(behaviour_blueprint)
