"""Goodwill approvals: goodwill credits and corrections above the threshold, waiting for a second person.

The form that requests them is on the member page (``member_views.member_goodwill``).
Approve and reject are offered only to someone other than the requester (the same
person through another login or a back-office client is the same pair of eyes); the
service refuses it anyway. Changes go through ``alliance.services.goodwill``, the
service the back-office API and the CLI use, with the signed-in user as the actor.
"""

from __future__ import annotations

from flask import render_template, request, url_for
from werkzeug.exceptions import BadRequest
from werkzeug.wrappers import Response as BaseResponse

from alliance.console import security
from alliance.console.blueprint import console, navigation_item
from alliance.console.helpers import change, form_choice, query_sort, sorted_rows
from alliance.extensions import hub_state
from alliance.services import goodwill, staff_directory

GOODWILL_ROLES = ("customer_service", "admin")
SORTS = {
    "request": lambda view: view.request_id,
    "member": lambda view: view.member_number,
    "points": lambda view: view.points,
    "requested": lambda view: (view.requested_at, view.request_id),
}

navigation_item("Customer service", "Goodwill approvals", "console.goodwill_approvals", roles=GOODWILL_ROLES,
                order=31, summary="goodwill credits and corrections above the threshold, for a second person")


@console.route("/goodwill")
@security.requires(*GOODWILL_ROLES)
def goodwill_approvals() -> str:
    """Goodwill requests of one status (pending by default), with approve and reject for another person."""
    status = request.args.get("status") or "pending"
    if status not in goodwill.STATUSES:
        raise BadRequest("Choose the status from the list offered: pending, posted or rejected.")
    sort = query_sort(list(SORTS), "requested", descending=status != "pending")
    me = security.actor()
    with hub_state().unit_of_work() as uow:
        found = goodwill.goodwill_requests(uow.session, status=status)
        decidable = goodwill.decidable_by(uow.session, found, me)
        names = staff_directory.display_names(uow.session, [
            *(view.requested_by for view in found), *(view.decided_by for view in found if view.decided_by), me])
    return render_template("console/members/goodwill.html", requests=sorted_rows(found, sort, SORTS), sort=sort,
                           status=status, statuses=goodwill.STATUSES, decidable=decidable, names=names, me=me,
                           threshold=hub_state().settings.goodwill_approval_threshold_points)


@console.route("/goodwill/<int:request_id>/decision", methods=["POST"])
@security.requires(*GOODWILL_ROLES)
def goodwill_decide(request_id: int) -> BaseResponse:
    """Approve (and so post) or reject a pending goodwill request."""
    decision = form_choice("decision", goodwill.DECISIONS, "Approve or reject, with the buttons offered.")
    return change(goodwill.decide_goodwill, request_id=request_id, decision=decision,
                  policy=goodwill.GoodwillPolicy.from_settings(hub_state().settings),
                  success=lambda decided: (f"Goodwill request #{decided.request_id} is approved and its "
                                           f"{decided.points:,} points are posted." if decided.status == "posted"
                                           else f"Goodwill request #{decided.request_id} is rejected; nothing was "
                                           "posted."),
                  back=url_for("console.goodwill_approvals"))
