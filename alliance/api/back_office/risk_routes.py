"""Risk controls for the risk role and administrators: the velocity policy and its versions, the pattern rules'
terms, action and switch, the decisions kept with their evidence, the review queue's cases, and reviewing a
decision (docs/risk.md).

Customer service may look a decision up by its reference or by member, so that a member
quoting a refusal's reference can be helped; the rest is for ``risk`` and ``admin``.
Reviewing is for the ``risk`` role alone; a release or reversal above
``ALLIANCE_RISK_APPROVAL_THRESHOLD_POINTS`` waits for a second person.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from flask import Flask
from flask.views import MethodView
from flask_smorest import Api, Blueprint

from alliance.api.back_office import risk_schemas as s
from alliance.api.back_office.auth import RoleRefused, actor, current_grant, require_role
from alliance.api.back_office.routes import PREFIX, documented
from alliance.extensions import hub_state
from alliance.services import risk, risk_actions, risk_patterns

RISK_ROLES = ("risk", "admin")
LOOKUP_ROLES = ("risk", "admin", "customer_service")

risk_blueprint = Blueprint("back_office_risk", __name__, url_prefix=PREFIX,
                           description="Risk controls: the velocity policy, the pattern rules, the decisions kept with "
                                       "their evidence, the review queue and reviews.")


def _now() -> datetime:
    return datetime.now(timezone.utc)


@risk_blueprint.route("/risk/policy")
class RiskPolicy(MethodView):
    @require_role(*RISK_ROLES)
    @risk_blueprint.response(200, s.PolicyOutput)
    @documented(risk_blueprint)
    def get(self) -> dict[str, Any]:
        """The policy in force (its version, or null for the built-in default) and every stored version."""
        now = _now()
        with hub_state().read_only_unit_of_work() as uow:
            version, policy = risk.policy_in_force(uow.session, at=now)
            stored = risk.versions(uow.session, now=now)
        return {"version": version, "policy": policy.as_data(), "versions": stored}


@risk_blueprint.route("/risk/policy/versions")
class RiskPolicyVersions(MethodView):
    @require_role(*RISK_ROLES)
    @risk_blueprint.arguments(s.PolicyVersionInput)
    @risk_blueprint.response(201, s.PolicyVersionOutput)
    @documented(risk_blueprint)
    def post(self, data: dict[str, Any]) -> dict[str, Any]:
        """Store a new version of the policy, in force from ``effective_from``; audited (``risk.policy.set``).

        422 names each problem of the document by where it is."""
        now = _now()
        with hub_state().unit_of_work() as uow:
            version = risk.set_policy(uow.session, document=data["policy"], effective_from=data["effective_from"],
                                      reason=data["reason"], now=now, actor=actor())
            (stored,) = [row for row in risk.versions(uow.session, now=now) if row["version"] == version]
            uow.commit()
        return stored


@risk_blueprint.route("/risk/patterns")
class RiskPatterns(MethodView):
    @require_role(*RISK_ROLES)
    @risk_blueprint.response(200, s.PatternRuleListOutput)
    @documented(risk_blueprint)
    def get(self) -> dict[str, Any]:
        """Every pattern's rule in force (terms, action, switch), the terms and actions it accepts, its built-in
        terms, and who changed it last and when (null while the built-in rule is in force)."""
        with hub_state().read_only_unit_of_work() as uow:
            views = risk_patterns.rule_views(uow.session)
        return {"patterns": [view.as_data() for view in views]}


@risk_blueprint.route("/risk/patterns/<name>")
class RiskPattern(MethodView):
    @require_role(*RISK_ROLES)
    @risk_blueprint.arguments(s.PatternRuleInput)
    @risk_blueprint.response(200, s.PatternRuleOutput)
    @documented(risk_blueprint, 404)
    def patch(self, data: dict[str, Any], name: str) -> dict[str, Any]:
        """Change a pattern's terms (those named; the others keep theirs), action or switch, with a reason; audited
        (``risk.pattern.set``, before and after). Every hub process applies it within 30 seconds.

        404 for an unknown pattern; 422 naming each problem (a term the pattern does not
        have, a value out of range, an action that does not fit where it runs, an empty
        reason, a change naming nothing)."""
        with hub_state().unit_of_work() as uow:
            view = risk_patterns.change_rule(uow.session, name=name, terms=data.get("terms"),
                                             action=data.get("action"), enabled=data.get("enabled"),
                                             reason=data["reason"], now=_now(), actor=actor())
            uow.commit()
        return view.as_data()


@risk_blueprint.route("/risk/decisions")
class RiskDecisions(MethodView):
    @require_role(*LOOKUP_ROLES)
    @risk_blueprint.arguments(s.DecisionQuery, location="query")
    @risk_blueprint.response(200, s.DecisionListOutput)
    @documented(risk_blueprint)
    def get(self, query: dict[str, Any]) -> dict[str, Any]:
        """Decisions newest first, with their evidence, filtered by review status, member, partner or reference.

        Customer service must name a ``token`` or a ``member``."""
        if not current_grant().roles & {"risk", "admin"} and not (query.get("token") or query.get("member")):
            raise RoleRefused("customer service looks decisions up by token or member; the whole list needs the "
                              "role risk or admin")
        with hub_state().read_only_unit_of_work() as uow:
            found = risk.decisions(uow.session, status=query.get("status"), member_number=query.get("member"),
                                   partner_code=query.get("partner"), token=query.get("token"),
                                   limit=query["limit"])
        return {"decisions": found}


@risk_blueprint.route("/risk/cases")
class RiskCases(MethodView):
    @require_role(*RISK_ROLES)
    @risk_blueprint.arguments(s.CaseQuery, location="query")
    @risk_blueprint.response(200, s.CaseListOutput)
    @documented(risk_blueprint)
    def get(self, query: dict[str, Any]) -> dict[str, Any]:
        """The review queue: open decisions grouped by member, terminal or partner, most decisions first."""
        with hub_state().read_only_unit_of_work() as uow:
            return {"by": query["by"], "cases": risk.cases(uow.session, by=query["by"])}


@risk_blueprint.route("/risk/decisions/<int:decision_id>/review")
class RiskDecisionReview(MethodView):
    @require_role("risk")
    @risk_blueprint.arguments(s.ReviewInput)
    @risk_blueprint.response(200, s.ReviewOutput)
    @documented(risk_blueprint, 404, 409)
    def post(self, data: dict[str, Any], decision_id: int) -> risk.Reviewed:
        """Review an open decision: release or reverse a hold, dismiss or confirm a flag or a refusal; audited.

        A release or reversal above the approval threshold is first only proposed (status
        ``proposed``) and done when another person reviews it the same way (409
        ``same_approver`` for the proposer); 409 ``already_reviewed`` once settled, 409
        ``invalid_state`` for an action that does not fit the decision."""
        state = hub_state()
        # Not committed_change: its first parameter is also called ``action``.
        with state.unit_of_work() as uow:
            outcome = risk.review(uow.session, decision_id=decision_id, action=data["action"], note=data["note"],
                                  now=_now(), actor=actor(),
                                  approval_threshold_points=state.settings.risk_approval_threshold_points)
            uow.commit()
        return outcome


@risk_blueprint.route("/risk/decisions/<int:decision_id>/actions")
class RiskDecisionActions(MethodView):
    @require_role("risk")
    @risk_blueprint.arguments(s.ActInput)
    @risk_blueprint.response(200, s.ActOutput)
    @documented(risk_blueprint, 404, 409)
    def post(self, data: dict[str, Any], decision_id: int) -> dict[str, Any]:
        """Act on what a decision found, whatever its review: block its card, revoke the keys bound to its till, or
        open a complaint with its partner; audited with the note. 409 ``invalid_state`` when the decision names no
        card, till or partner, the card is no longer active or no key is bound to the till."""
        with hub_state().unit_of_work() as uow:
            done = risk_actions.act(uow.session, decision_id=decision_id, action=data["action"], note=data["note"],
                            now=_now(), actor=actor())
            uow.commit()
        return {"decision_id": decision_id, "action": data["action"], **done}


def init_app(app: Flask, api: Api) -> None:
    """Register the risk controls' routes."""
    api.register_blueprint(risk_blueprint)
