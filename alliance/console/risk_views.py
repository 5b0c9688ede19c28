"""The risk pages: the review queue, one decision and its review, a refusal's reference, the policy in force
and the pattern rules in force.

Reviewers (role ``risk``) release or reverse a held purchase's points and dismiss or
confirm a flag or a refusal through ``alliance.services.risk.review``, the service the
back-office API and the CLI use, with the signed-in user as the actor; a release or
reversal above the hub's approval threshold is first only proposed, and done when
another person reviews it the same way. Customer service opens a decision from the
reference a till's refusal quotes, to help the member, and cannot review it. The
policy and pattern rules pages are read only: both are changed through the back-office
API or the CLI.

The queue pages through every open decision (``page``, ``page_size``), of one case and
one action when chosen; its cases are counted over all open decisions.
"""

from __future__ import annotations

from typing import Any

from flask import flash, redirect, render_template, request, url_for
from werkzeug.exceptions import BadRequest, NotFound
from werkzeug.wrappers import Response as BaseResponse

from alliance.console import security
from alliance.console.blueprint import console, navigation_item
from alliance.console.helpers import (
    change,
    form_choice,
    form_confirmed,
    form_text,
    now,
    pager_args,
    query_page,
    query_sort,
    query_text,
)
from alliance.console.member_views import SERVICE_ROLES
from alliance.domain.errors import AllianceError
from alliance.extensions import hub_state
from alliance.services import risk, risk_actions, risk_console, risk_patterns, staff_directory, staff_people

REVIEWER_ROLES = ("risk",)
QUEUE_ROLES = ("risk", "admin")
DECISION_ROLES = ("risk", "admin", "customer_service")
LOOKUP_ROLES = ("risk", "admin", "customer_service")
GROUPINGS = {"member": "member", "till": "terminal", "partner": "partner"}
# The cases table shows those with the most open decisions; the rest are counted, and a case's link still works.
CASES_SHOWN = 50
HOLD_ACTIONS = ("release", "reverse")
ALERT_ACTIONS = ("dismiss", "confirm")
DONE_WORDS = {"released": "released", "reversed": "reversed", "dismissed": "dismissed as a false alarm",
              "confirmed": "confirmed as fraud"}

navigation_item("Risk", "Review queue", "console.risk_queue", roles=QUEUE_ROLES, order=45,
                summary="open risk decisions grouped as cases by member, till or partner, with their evidence")
navigation_item("Risk", "Decision reference", "console.risk_lookup", roles=LOOKUP_ROLES, order=46,
                summary="open the decision a till's refusal quotes (R and twelve characters)")
navigation_item("Risk", "Risk policy", "console.risk_policy", roles=QUEUE_ROLES, order=47,
                summary="the velocity limits in force, their overrides per partner and tier, and every version")
navigation_item("Risk", "Pattern rules", "console.risk_pattern_rules", roles=QUEUE_ROLES, order=48,
                summary="the pattern rules in force: what each looks for, its terms, its action, who changed it")


@console.route("/risk")
@security.requires(*QUEUE_ROLES)
def risk_queue() -> str:
    """Open decisions as cases (by member, till or partner) and, below, a page of the open decisions (of one case
    and one action when chosen) with their evidence."""
    page, page_size = query_page()
    grouping = query_text("by", allowed=list(GROUPINGS)) or "member"
    by = GROUPINGS[grouping]
    case = query_text("case")
    action = query_text("action", allowed=risk_console.QUEUE_ACTIONS)
    sort = query_sort(list(risk_console.QUEUE_SORTS), "time", descending=True)
    with hub_state().read_only_unit_of_work() as uow:
        cases = risk_console.open_cases(uow.session, by=by)
        listed = risk_console.queue_page(uow.session, by=by, case=case, action=action, sort=sort, page=page,
                                         page_size=page_size)
        total = risk_console.open_count(uow.session)
    evidence = {view.decision_id: [risk_console.evidence_words(item) for item in view.evidence]
                for view in listed.items}
    return render_template("console/risk/queue.html", cases=cases[:CASES_SHOWN], case_count=len(cases),
                           decisions=listed, evidence=evidence, sort=sort, grouping=grouping,
                           groupings=list(GROUPINGS), case=case, action=action, actions=risk_console.QUEUE_ACTIONS,
                           total=total, pager=pager_args(), member_roles=SERVICE_ROLES)


@console.route("/risk/decisions/<int:decision_id>")
@security.requires(*DECISION_ROLES)
def risk_decision(decision_id: int) -> str:
    """One decision: what was decided and why, its review or the proposal waiting, and the review forms."""
    me = security.actor()
    with hub_state().read_only_unit_of_work() as uow:
        detail = risk_console.decision_detail(uow.session, decision_id=decision_id)
        actors = [actor for actor in (detail.reviewed_by, detail.proposed_by) if actor]
        history = risk_console.decision_history(uow.session, decision_id=decision_id)
        names = staff_directory.display_names(uow.session, [*actors, *(entry.actor for entry in history)])
        proposed_by_me = bool(detail.proposed_by) and staff_people.same_person(uow.session, detail.proposed_by or "",
                                                                               me)
    return render_template("console/risk/decision.html", decision=detail, names=names, proposed_by_me=proposed_by_me,
                           history=history,
                           may_review=security.may(*REVIEWER_ROLES), member_roles=SERVICE_ROLES,
                           threshold=hub_state().settings.risk_approval_threshold_points)


def _review(decision_id: int, action: str, note: str) -> BaseResponse:
    """Review a decision through the service in one unit of work; a refusal is flashed and nothing changes."""
    with hub_state().read_only_unit_of_work() as uow:
        token = risk_console.decision_detail(uow.session, decision_id=decision_id).token

    def said(outcome: risk.Reviewed) -> str:
        if outcome.status == "proposed":
            return (f"The {action} of decision {token} is proposed; another person must approve it "
                    "(nothing has moved yet).")
        done = f"Decision {token} is {DONE_WORDS.get(outcome.status, outcome.status)}"
        if outcome.points_released:
            return f"{done}: {outcome.points_released:,} points are released to the member."
        if action == "reverse":
            unrecovered = (f"; {outcome.points_unrecovered:,} points the member had already spent could not be"
                           if outcome.points_unrecovered else "")
            return f"{done}: {outcome.points_reversed:,} points were taken back to their issuers{unrecovered}."
        return f"{done}."

    return change(risk_console.review_decision, decision_id=decision_id, review_action=action, note=note,
                  approval_threshold_points=hub_state().settings.risk_approval_threshold_points,
                  success=said, back=url_for("console.risk_decision", decision_id=decision_id))


@console.route("/risk/decisions/<int:decision_id>/<action>", methods=["POST"])
@security.requires(*REVIEWER_ROLES)
def risk_review_hold(decision_id: int, action: str) -> BaseResponse:
    """Release or reverse a held purchase's points: the box ticked and a note given (kept in the audit trail)."""
    if action not in HOLD_ACTIONS:
        raise NotFound("A hold is released or reversed.")
    note = form_confirmed(max_length=risk.MAX_REASON_CHARACTERS)
    return _review(decision_id, action, note)


@console.route("/risk/decisions/<int:decision_id>/review", methods=["POST"])
@security.requires(*REVIEWER_ROLES)
def risk_review_alert(decision_id: int) -> BaseResponse:
    """Dismiss a flag or a refusal as a false alarm, or confirm it as fraud, with a note."""
    action = form_choice("action", ALERT_ACTIONS, "Dismiss or confirm, with the buttons offered.")
    note = form_text("note", required=False, max_length=risk.MAX_REASON_CHARACTERS)
    if note is None:
        raise BadRequest("Say what the review found (the note is kept in the audit trail): nothing was changed.")
    return _review(decision_id, action, note)


@console.route("/risk/decisions/<int:decision_id>/act/<action>", methods=["POST"])
@security.requires(*REVIEWER_ROLES)
def risk_act(decision_id: int, action: str) -> BaseResponse:
    """Act on what a decision found: block its card, revoke its till's keys or open a complaint with its partner."""
    if action not in risk_actions.CASE_ACTIONS:
        raise NotFound("A decision's card is blocked, its till's keys revoked, or a complaint opened.")
    note = form_confirmed(max_length=risk.MAX_REASON_CHARACTERS)

    def said(done: dict[str, Any]) -> str:
        if "complaint_id" in done:
            return f"Complaint #{done['complaint_id']} is opened with the partner."
        if "keys_revoked" in done:
            return "The till's keys are revoked: " + ", ".join(str(key) for key in done["keys_revoked"]) + "."
        return "The card is blocked; the member's points stay theirs."

    return change(risk_console.act_on_decision, decision_id=decision_id, act_action=action, note=note, success=said,
                  back=url_for("console.risk_decision", decision_id=decision_id))


@console.route("/risk/lookup", methods=["GET", "POST"])
@security.requires(*LOOKUP_ROLES)
def risk_lookup() -> str | tuple[str, int] | BaseResponse:
    """A refusal's decision reference, typed as the member quotes it, opens that decision."""
    if request.method == "GET":
        return render_template("console/risk/lookup.html", reference="")
    reference = form_text("reference", max_length=40) or ""
    try:
        with hub_state().read_only_unit_of_work() as uow:
            found = risk_console.decision_id_for(uow.session, token=reference)
    except AllianceError as error:
        flash(error.detail, "error")
        return render_template("console/risk/lookup.html", reference=reference), 404
    return redirect(url_for("console.risk_decision", decision_id=found), code=303)


@console.route("/risk/policy")
@security.requires(*QUEUE_ROLES)
def risk_policy() -> str:
    """The risk policy in force in words, its overrides, and every stored version (read only)."""
    moment = now()
    with hub_state().read_only_unit_of_work() as uow:
        shown = risk_console.policy_page(uow.session, now=moment)
        names = staff_directory.display_names(uow.session, [row["created_by"] for row in shown.versions])
    return render_template("console/risk/policy.html", policy=shown, names=names)


@console.route("/risk/patterns")
@security.requires(*QUEUE_ROLES)
def risk_pattern_rules() -> str:
    """The pattern rules in force in words, and who changed each last (read only)."""
    with hub_state().read_only_unit_of_work() as uow:
        rules = risk_console.pattern_rules(uow.session)
        names = staff_directory.display_names(uow.session, [rule.changed_by for rule in rules if rule.changed_by])
    return render_template("console/risk/patterns.html", rules=rules, names=names,
                           reload_seconds=risk_patterns.RELOAD_INTERVAL_S)
