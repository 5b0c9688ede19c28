"""Partner API routes of webhooks: the calling partner keeps its own endpoints (docs/webhooks.md).

Same flow as ``routes``: signature verified (``before_request``) → schema ``load`` →
``webhooks`` service under the request's unit of work (idempotent for writes) → schema
``dump``. A partner registers only ``partner``-audience endpoints and sees only its own:
another partner's endpoint or event, and the operator's member-messaging endpoints, are
404 (those are kept through the back office).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import Flask, Response
from flask.views import MethodView
from flask_smorest import Api, Blueprint
from marshmallow import fields, validate

from alliance.api.back_office.webhook_routes import (
    DeliveryLogOutput,
    DisablingInput,
    EndpointChangeInput,
    EndpointOutput,
    EndpointsOutput,
    PageQuery,
    RedeliveryInput,
    RedeliveryOutput,
)
from alliance.api.partner.auth import (
    current_caller,
    utc_now,
)
from alliance.api.partner.idempotent import run_idempotent
from alliance.api.partner.routes import PREFIX, SIGNED, SIGNED_WRITE_DOC, document_errors, signed
from alliance.api.partner.schemas import StrictSchema
from alliance.domain import webhooks as rules
from alliance.domain.errors import NotFound
from alliance.extensions import hub_state
from alliance.services import partners, webhooks
from alliance.storage.unit_of_work import Session, UnitOfWork

ERRORS = {
    401: "Signature rejected (see the partner API's other operations for every signature code).",
    404: "not_found: an endpoint or event that is unknown, another partner's, or a member-messaging endpoint.",
    409: "idempotency_key_in_flight (with Retry-After), conflict (an endpoint at that URL already, or the maximum "
         "of endpoints), invalid_state (already disabled or active; no active endpoint to redeliver to).",
    413: "request_entity_too_large: the body is over the limit.",
    422: "validation_failed (with per-field errors: a URL that is not https, an event type that is unknown or not "
         "a partner event), idempotency_key_reused.",
    429: "rate_limited (with Retry-After): nothing of the request was stored.",
}


class PartnerEndpointInput(StrictSchema):
    url = fields.String(required=True, validate=validate.Length(1, rules.MAX_URL_LENGTH),
                        metadata={"description": "https; no credentials or fragment."})
    event_types = fields.List(fields.String(validate=validate.OneOf(rules.PARTNER_EVENT_TYPES)), required=True,
                              validate=validate.Length(1, 50))
    description = fields.String(validate=validate.Length(1, 200))


OUTPUT = EndpointOutput()
REDELIVERY_OUTPUT = RedeliveryOutput()

webhooks_blueprint = Blueprint("partner_webhooks", __name__, url_prefix=PREFIX,
                               description="This partner's webhook endpoints, their delivery logs and redelivery.")
signed(webhooks_blueprint)


def _actor() -> str:
    return f"partner-key:{current_caller().key_id}"


def _own(session: Session, endpoint_id: int) -> webhooks.EndpointView:
    """One of the caller's partner-audience endpoints (a 404 for anything else)."""
    view = webhooks.endpoint_view(session, endpoint_id, partner_id=current_caller().partner_id)
    if view.audience != rules.Audience.PARTNER.value:
        raise NotFound(f"no webhook endpoint {endpoint_id}")
    return view


def _code(session: Session) -> str:
    code = partners.partner_code(session, current_caller().partner_id)
    assert code is not None, "a verified caller is a partner"
    return code


def _endpoint_change(action: Callable[..., webhooks.EndpointView], endpoint_id: int, status: int = 200,
                     **arguments: Any) -> Response:
    def operation(uow: UnitOfWork) -> tuple[int, dict[str, Any]]:
        _own(uow.session, endpoint_id)
        view = action(uow.session, endpoint_id=endpoint_id, partner_id=current_caller().partner_id,
                      actor=_actor(), now=utc_now(), **arguments)
        return status, OUTPUT.dump(view)
    return run_idempotent(operation)


@webhooks_blueprint.route("/webhook-endpoints")
class WebhookEndpoints(MethodView):
    @webhooks_blueprint.arguments(PartnerEndpointInput())
    @webhooks_blueprint.response(201, EndpointOutput)
    @webhooks_blueprint.doc(**SIGNED_WRITE_DOC)
    @document_errors(webhooks_blueprint, 401, 409, 413, 422)
    def post(self, data: dict[str, Any]) -> Response:
        """Register an endpoint of this partner; it receives events of the chosen types from now on."""
        def operation(uow: UnitOfWork) -> tuple[int, dict[str, Any]]:
            view = webhooks.register_endpoint(uow.session, partner=_code(uow.session), url=data["url"],
                                              event_types=data["event_types"], description=data.get("description"),
                                              audience=rules.Audience.PARTNER.value, actor=_actor(), now=utc_now())
            return 201, OUTPUT.dump(view)
        return run_idempotent(operation)

    @webhooks_blueprint.response(200, EndpointsOutput)
    @webhooks_blueprint.doc(security=SIGNED)
    @document_errors(webhooks_blueprint, 401)
    def get(self) -> dict[str, Any]:
        """This partner's endpoints, by id, with their status and since when they fail."""
        with hub_state().unit_of_work() as uow:
            views = webhooks.endpoints(uow.session, partner=_code(uow.session))
            return {"endpoints": [view for view in views if view.audience == rules.Audience.PARTNER.value]}


@webhooks_blueprint.route("/webhook-endpoints/<int:endpoint_id>")
class WebhookEndpoint(MethodView):
    @webhooks_blueprint.response(200, EndpointOutput)
    @webhooks_blueprint.doc(security=SIGNED)
    @document_errors(webhooks_blueprint, 401, 404)
    def get(self, endpoint_id: int) -> webhooks.EndpointView:
        """One of this partner's endpoints."""
        with hub_state().unit_of_work() as uow:
            return _own(uow.session, endpoint_id)

    @webhooks_blueprint.arguments(EndpointChangeInput())
    @webhooks_blueprint.response(200, EndpointOutput)
    @webhooks_blueprint.doc(**SIGNED_WRITE_DOC)
    @document_errors(webhooks_blueprint, 401, 404, 409, 413, 422)
    def patch(self, data: dict[str, Any], endpoint_id: int) -> Response:
        """Change the URL, event types or description of one of this partner's endpoints."""
        return _endpoint_change(webhooks.change_endpoint, endpoint_id, **data)


@webhooks_blueprint.route("/webhook-endpoints/<int:endpoint_id>/disabling")
class WebhookEndpointDisabling(MethodView):
    @webhooks_blueprint.arguments(DisablingInput())
    @webhooks_blueprint.response(200, EndpointOutput)
    @webhooks_blueprint.doc(**SIGNED_WRITE_DOC)
    @document_errors(webhooks_blueprint, 401, 404, 409, 413, 422)
    def post(self, data: dict[str, Any], endpoint_id: int) -> Response:
        """Stop delivering to one of this partner's endpoints; its pending deliveries are cancelled."""
        return _endpoint_change(webhooks.disable_endpoint, endpoint_id, reason=data["reason"])


@webhooks_blueprint.route("/webhook-endpoints/<int:endpoint_id>/enabling")
class WebhookEndpointEnabling(MethodView):
    @webhooks_blueprint.response(200, EndpointOutput)
    @webhooks_blueprint.doc(**SIGNED_WRITE_DOC)
    @document_errors(webhooks_blueprint, 401, 404, 409, 413, 422)
    def post(self, endpoint_id: int) -> Response:
        """Deliver to a disabled endpoint of this partner again, from new events on."""
        return _endpoint_change(webhooks.enable_endpoint, endpoint_id)


@webhooks_blueprint.route("/webhook-endpoints/<int:endpoint_id>/deliveries")
class WebhookEndpointDeliveries(MethodView):
    @webhooks_blueprint.arguments(PageQuery(), location="query")
    @webhooks_blueprint.response(200, DeliveryLogOutput)
    @webhooks_blueprint.doc(security=SIGNED)
    @document_errors(webhooks_blueprint, 401, 404, 422)
    def get(self, query: dict[str, Any], endpoint_id: int) -> dict[str, Any]:
        """The delivery log of one of this partner's endpoints, newest first, each delivery with its attempts."""
        with hub_state().unit_of_work() as uow:
            _own(uow.session, endpoint_id)
            log = webhooks.delivery_log(uow.session, endpoint_id=endpoint_id, partner_id=current_caller().partner_id,
                                        limit=query["limit"], offset=query["offset"])
            return {"deliveries": log, "limit": query["limit"], "offset": query["offset"]}


@webhooks_blueprint.route("/webhook-events/<event_id>/redelivery")
class WebhookEventRedelivery(MethodView):
    @webhooks_blueprint.arguments(RedeliveryInput())
    @webhooks_blueprint.response(200, RedeliveryOutput)
    @webhooks_blueprint.doc(**SIGNED_WRITE_DOC)
    @document_errors(webhooks_blueprint, 401, 404, 409, 413, 422)
    def post(self, data: dict[str, Any], event_id: str) -> Response:
        """Send one of this partner's events again to its active endpoints (or the one named)."""
        def operation(uow: UnitOfWork) -> tuple[int, dict[str, Any]]:
            endpoint_id = data.get("endpoint_id")
            if endpoint_id is not None:
                _own(uow.session, endpoint_id)
            count = webhooks.redeliver(uow.session, event_id=event_id, endpoint_id=endpoint_id,
                                       partner_id=current_caller().partner_id, actor=_actor(), now=utc_now())
            return 200, REDELIVERY_OUTPUT.dump({"event_id": event_id, "deliveries": count})
        return run_idempotent(operation)


def init_app(app: Flask, api: Api) -> None:
    """Register the webhook blueprint (after ``routes.init_app``, which declares the signature scheme)."""
    api.register_blueprint(webhooks_blueprint)
