"""The complaints queue: customer service and partner managers investigate, resolve and reject complaints.

Each complaint shows who opened it as a person (``staff_directory``), the member (linked
to the member page for customer service) and the purchase or redemption it concerns.
Changes go through ``complaints``, the service the back-office API uses, with the
signed-in user as the actor.
"""

from __future__ import annotations

from flask import render_template
from werkzeug.wrappers import Response as BaseResponse

from alliance.console import security
from alliance.console.blueprint import console, navigation_item
from alliance.console.helpers import (
    change,
    form_choice,
    form_text,
    pager_args,
    pager_url,
    query_page,
    query_sort,
    query_text,
)
from alliance.console.member_views import SERVICE_ROLES
from alliance.extensions import hub_state
from alliance.services import complaints, console_reports, staff_directory

COMPLAINT_STATUSES = ("open", "investigating", "resolved", "rejected")

navigation_item("Complaints", "Complaints", "console.complaints_queue", roles=security.COMPLAINT_ROLES, order=40,
                summary="investigate, resolve, reject")


@console.route("/complaints")
@security.requires(*security.COMPLAINT_ROLES)
def complaints_queue() -> str:
    """Complaints, newest first (or by status or partner), filtered by status, partner and member."""
    page, page_size = query_page()
    status = query_text("status", allowed=COMPLAINT_STATUSES)
    member = query_text("member")
    sort = query_sort(complaints.QUEUE_SORTS, "opened", descending=True)
    with hub_state().unit_of_work() as uow:
        codes = console_reports.partner_codes(uow.session)
        partner_code = query_text("partner", allowed=codes)
        queue = complaints.queue_page(uow.session, status=status, partner_code=partner_code, member_number=member,
                                      sort=sort, page=page, page_size=page_size)
        openers = staff_directory.display_names(uow.session, {row.opened_by for row in queue.items})
    return render_template("console/complaints.html", queue=queue, openers=openers, codes=codes,
                           partner=partner_code, status=status, member=member, statuses=COMPLAINT_STATUSES,
                           sort=sort, pager=pager_args(), service_roles=SERVICE_ROLES)


@console.route("/complaints/<int:complaint_id>/transitions", methods=["POST"])
@security.requires(*security.COMPLAINT_ROLES)
def complaint_transition(complaint_id: int) -> BaseResponse:
    """Investigate, resolve (with a note) or reject (with a note) a complaint."""
    status = form_choice("status", ("investigating", "resolved", "rejected"),
                         "a complaint moves to investigating, resolved or rejected")
    return change(complaints.transition, complaint_id=complaint_id, status=status,
                  note=form_text("note", required=False, max_length=complaints.MAX_DESCRIPTION_CHARACTERS),
                  success=f"Complaint {complaint_id} is now {status}.",
                  back=pager_url("console.complaints_queue"))
