"""Webhooks in the console for partner managers: every endpoint with its status (the disabled ones first, with
their reason: this is how the partner's managers learn the hub stopped sending), one endpoint's delivery log
paged with a redeliver button per event, disable and enable with a confirmed reason, and the add form.

Changes go through ``alliance.services.webhooks``, the service the back-office API and the
CLI use, with the signed-in user as the actor.
"""

from __future__ import annotations

from flask import render_template, request, url_for
from werkzeug.exceptions import BadRequest
from werkzeug.wrappers import Response as BaseResponse

from alliance.console import security
from alliance.console.blueprint import console, navigation_item
from alliance.console.helpers import change, form_choice, form_confirmed, form_text, query_text
from alliance.domain import webhooks as rules
from alliance.extensions import hub_state
from alliance.services import console_reports, webhooks

WEBHOOK_ROLES = security.PARTNER_MANAGER_ROLES
STATUSES = ("active", "disabled")
AUDIENCES = tuple(audience.value for audience in rules.Audience)
LOG_PAGE = 25

navigation_item("Partners", "Webhooks", "console.webhooks_list", roles=WEBHOOK_ROLES, order=26,
                summary="partners' webhook endpoints, the disabled ones first with why; delivery logs, redelivery")


@console.route("/webhooks")
@security.requires(*WEBHOOK_ROLES)
def webhooks_list() -> str:
    """Every endpoint (or one partner's, or of one status): disabled first with the reason, then by partner."""
    partner = query_text("partner")
    status = query_text("status", allowed=STATUSES)
    with hub_state().read_only_unit_of_work() as uow:
        codes = console_reports.partner_codes(uow.session)
        if partner is not None and partner not in codes:
            raise BadRequest(f"No partner {partner!r}: choose one from the list offered.")
        found = webhooks.endpoints(uow.session, partner=partner, status=status)
    ordered = sorted(found, key=lambda view: (view.status != "disabled", view.partner, view.id))
    return render_template("console/webhooks/list.html", endpoints=ordered, codes=codes, partner=partner,
                           status=status, statuses=STATUSES, audiences=AUDIENCES, event_types=rules.EVENT_TYPES)


@console.route("/webhooks/<int:endpoint_id>")
@security.requires(*WEBHOOK_ROLES)
def webhook_endpoint_page(endpoint_id: int) -> str:
    """One endpoint and its delivery log, newest first, a page at a time."""
    try:
        page = int(request.args.get("page", "1"))
    except ValueError:
        raise BadRequest("page is a whole number") from None
    if not 1 <= page <= 1_000_000:
        raise BadRequest("page starts at 1")
    with hub_state().read_only_unit_of_work() as uow:
        view = webhooks.endpoint_view(uow.session, endpoint_id)
        log = webhooks.delivery_log(uow.session, endpoint_id=endpoint_id, limit=LOG_PAGE + 1,
                                    offset=(page - 1) * LOG_PAGE)
    return render_template("console/webhooks/endpoint.html", endpoint=view, deliveries=log[:LOG_PAGE], page=page,
                           more=len(log) > LOG_PAGE, event_types=rules.EVENT_TYPES)


@console.route("/webhooks", methods=["POST"])
@security.requires(*WEBHOOK_ROLES)
def webhooks_add() -> BaseResponse:
    """Register an endpoint for a partner from the form."""
    audience = form_choice("audience", AUDIENCES, "Choose the audience from the list offered: partner or member.")
    chosen = request.form.getlist("event_type")
    if not chosen or any(name not in rules.EVENT_TYPES for name in chosen):
        raise BadRequest("Tick at least one event type from the boxes offered: nothing was registered.")
    return change(webhooks.register_endpoint, partner=form_text("partner", max_length=40) or "",
                  url=form_text("url", max_length=rules.MAX_URL_LENGTH) or "", event_types=chosen,
                  audience=audience, description=form_text("description", required=False, max_length=200),
                  success=lambda view: f"Endpoint #{view.id} of {view.partner} is registered: it receives "
                                       f"{', '.join(view.event_types)} from now on.",
                  back=url_for("console.webhooks_list"))


@console.route("/webhooks/<int:endpoint_id>/disable", methods=["POST"])
@security.requires(*WEBHOOK_ROLES)
def webhook_endpoint_disable(endpoint_id: int) -> BaseResponse:
    """Stop delivering to an endpoint, with the reason kept on it and in the audit trail."""
    reason = form_confirmed(max_length=500)
    return change(webhooks.disable_endpoint, endpoint_id=endpoint_id, reason=reason,
                  success=f"Endpoint #{endpoint_id} is disabled: its pending deliveries are cancelled.",
                  back=url_for("console.webhook_endpoint_page", endpoint_id=endpoint_id))


@console.route("/webhooks/<int:endpoint_id>/enable", methods=["POST"])
@security.requires(*WEBHOOK_ROLES)
def webhook_endpoint_enable(endpoint_id: int) -> BaseResponse:
    """Deliver to a disabled endpoint again, once the box is ticked (the service keeps no reason for it)."""
    if request.form.get("confirm") != "yes":
        raise BadRequest("Tick the box to confirm: nothing was changed.")
    return change(webhooks.enable_endpoint, endpoint_id=endpoint_id,
                  success=f"Endpoint #{endpoint_id} is enabled: it receives new events; redeliver earlier ones "
                          "from its log.",
                  back=url_for("console.webhook_endpoint_page", endpoint_id=endpoint_id))


@console.route("/webhooks/<int:endpoint_id>/redeliver", methods=["POST"])
@security.requires(*WEBHOOK_ROLES)
def webhook_event_redeliver(endpoint_id: int) -> BaseResponse:
    """Send one event of the log again to this endpoint."""
    event_id = form_text("event_id", max_length=40) or ""
    return change(webhooks.redeliver, event_id=event_id, endpoint_id=endpoint_id,
                  success=f"Event {event_id} is due again: the delivery process sends it at once.",
                  back=url_for("console.webhook_endpoint_page", endpoint_id=endpoint_id))
