"""Webhook endpoints in the back office (docs/webhooks.md): partner managers and administrators.

Register an endpoint for a partner (``partner`` audience: the partner's own events; or
``member`` audience: the operator's member-messaging endpoint), list a partner's
endpoints, read, change, disable (with a reason) and enable one, read its delivery log
with every attempt, and ask for an event to be delivered again. Every change goes
through ``alliance.services.webhooks`` and is audited under the token's actor.
"""

from __future__ import annotations

from typing import Any

from flask import Flask
from flask.views import MethodView
from flask_smorest import Api, Blueprint
from marshmallow import Schema, fields, validate

from alliance.api.back_office.auth import require_role
from alliance.api.back_office.routes import PREFIX, committed_change, documented
from alliance.api.partner.schemas import StrictSchema
from alliance.domain import webhooks as rules
from alliance.extensions import hub_state
from alliance.services import webhooks

ROLES = ("partner_manager", "admin")
MAX_PAGE = 200
EVENT_TYPE = validate.OneOf(tuple(rules.EVENT_TYPES))

webhooks_blueprint = Blueprint("back_office_webhooks", __name__, url_prefix=PREFIX,
                               description="Partner managers: partners' webhook endpoints, their delivery logs and "
                                           "redelivery.")


class EndpointInput(StrictSchema):
    url = fields.String(required=True, validate=validate.Length(1, rules.MAX_URL_LENGTH),
                        metadata={"description": "https (plain http only to the hub's loopback); no credentials."})
    event_types = fields.List(fields.String(validate=EVENT_TYPE), required=True, validate=validate.Length(1, 50),
                              metadata={"description": "The event types it receives, all of its audience."})
    audience = fields.String(load_default=rules.Audience.PARTNER.value,
                             validate=validate.OneOf([audience.value for audience in rules.Audience]),
                             metadata={"description": "partner (the partner's own events, the default) or member "
                                                      "(the operator's member-messaging endpoint)."})
    description = fields.String(validate=validate.Length(1, 200))


class EndpointChangeInput(StrictSchema):
    url = fields.String(validate=validate.Length(1, rules.MAX_URL_LENGTH))
    event_types = fields.List(fields.String(validate=EVENT_TYPE), validate=validate.Length(1, 50))
    description = fields.String(validate=validate.Length(1, 200))


class DisablingInput(StrictSchema):
    reason = fields.String(required=True, validate=validate.Length(1, 500))


class RedeliveryInput(StrictSchema):
    endpoint_id = fields.Integer(strict=True, validate=validate.Range(1, 2**63 - 1),
                                 metadata={"description": "Only this endpoint (default: every active endpoint the "
                                                          "event went to)."})


class PageQuery(StrictSchema):
    limit = fields.Integer(load_default=50, validate=validate.Range(1, MAX_PAGE))
    offset = fields.Integer(load_default=0, validate=validate.Range(0, 10**9))


class EndpointOutput(Schema):
    id = fields.Integer()
    partner = fields.String()
    audience = fields.String(metadata={"description": "partner or member"})
    url = fields.String()
    event_types = fields.List(fields.String())
    description = fields.String(allow_none=True)
    status = fields.String(metadata={"description": "active or disabled"})
    created_by = fields.String()
    created_at = fields.AwareDateTime()
    disabled_at = fields.AwareDateTime(allow_none=True)
    disabled_reason = fields.String(allow_none=True, metadata={
        "description": "Why: the person's reason, a 410 Gone, or days of failed deliveries."})
    failing_since = fields.AwareDateTime(allow_none=True, metadata={
        "description": "The first failure since the last delivered event; null while deliveries succeed."})


class EndpointsOutput(Schema):
    endpoints = fields.List(fields.Nested(EndpointOutput))


class AttemptOutput(Schema):
    attempted_at = fields.AwareDateTime()
    duration_ms = fields.Integer()
    status_code = fields.Integer(allow_none=True, metadata={"description": "Null: no answer (timeout, refused)."})
    outcome = fields.String(metadata={"description": "delivered, failed or gone"})
    error = fields.String(allow_none=True)


class DeliveryOutput(Schema):
    id = fields.Integer()
    event_id = fields.String()
    event_type = fields.String()
    event_created_at = fields.AwareDateTime()
    status = fields.String(metadata={"description": "pending, delivered, failed (given up) or cancelled"})
    attempts = fields.Integer()
    next_attempt_at = fields.AwareDateTime(allow_none=True)
    delivered_at = fields.AwareDateTime(allow_none=True)
    last_status_code = fields.Integer(allow_none=True)
    last_error = fields.String(allow_none=True)
    tries = fields.List(fields.Nested(AttemptOutput), metadata={"description": "Every attempt, newest first."})


class DeliveryLogOutput(Schema):
    deliveries = fields.List(fields.Nested(DeliveryOutput))
    limit = fields.Integer()
    offset = fields.Integer()


class RedeliveryOutput(Schema):
    event_id = fields.String()
    deliveries = fields.Integer(metadata={"description": "How many deliveries are due again now."})


@webhooks_blueprint.route("/partners/<code>/webhook-endpoints")
class PartnerWebhookEndpoints(MethodView):
    @require_role(*ROLES)
    @webhooks_blueprint.response(200, EndpointsOutput)
    @documented(webhooks_blueprint, 404)
    def get(self, code: str) -> dict[str, Any]:
        """A partner's webhook endpoints, by id, with their status and since when they fail."""
        with hub_state().unit_of_work() as uow:
            return {"endpoints": webhooks.endpoints(uow.session, partner=code)}

    @require_role(*ROLES)
    @webhooks_blueprint.arguments(EndpointInput)
    @webhooks_blueprint.response(201, EndpointOutput)
    @documented(webhooks_blueprint, 404, 409)
    def post(self, data: dict[str, Any], code: str) -> webhooks.EndpointView:
        """Register an endpoint for a partner; it receives events of its types from now on (409 ``conflict``: the
        partner has an endpoint at that URL, or its maximum of endpoints)."""
        return committed_change(webhooks.register_endpoint, partner=code, url=data["url"],
                                event_types=data["event_types"], audience=data["audience"],
                                description=data.get("description"))


@webhooks_blueprint.route("/webhook-endpoints/<int:endpoint_id>")
class WebhookEndpoint(MethodView):
    @require_role(*ROLES)
    @webhooks_blueprint.response(200, EndpointOutput)
    @documented(webhooks_blueprint, 404)
    def get(self, endpoint_id: int) -> webhooks.EndpointView:
        """One endpoint."""
        with hub_state().unit_of_work() as uow:
            return webhooks.endpoint_view(uow.session, endpoint_id)

    @require_role(*ROLES)
    @webhooks_blueprint.arguments(EndpointChangeInput)
    @webhooks_blueprint.response(200, EndpointOutput)
    @documented(webhooks_blueprint, 404, 409)
    def patch(self, data: dict[str, Any], endpoint_id: int) -> webhooks.EndpointView:
        """Change an endpoint's URL, event types or description; deliveries already made keep theirs."""
        return committed_change(webhooks.change_endpoint, endpoint_id=endpoint_id, **data)


@webhooks_blueprint.route("/webhook-endpoints/<int:endpoint_id>/disabling")
class WebhookEndpointDisabling(MethodView):
    @require_role(*ROLES)
    @webhooks_blueprint.arguments(DisablingInput)
    @webhooks_blueprint.response(200, EndpointOutput)
    @documented(webhooks_blueprint, 404, 409)
    def post(self, data: dict[str, Any], endpoint_id: int) -> webhooks.EndpointView:
        """Stop delivering to an endpoint; its pending deliveries are cancelled (409 ``invalid_state`` if already
        disabled)."""
        return committed_change(webhooks.disable_endpoint, endpoint_id=endpoint_id, reason=data["reason"])


@webhooks_blueprint.route("/webhook-endpoints/<int:endpoint_id>/enabling")
class WebhookEndpointEnabling(MethodView):
    @require_role(*ROLES)
    @webhooks_blueprint.response(200, EndpointOutput)
    @documented(webhooks_blueprint, 404, 409)
    def post(self, endpoint_id: int) -> webhooks.EndpointView:
        """Deliver to a disabled endpoint again, from new events on (earlier ones by redelivery); 409
        ``invalid_state`` if it is active."""
        return committed_change(webhooks.enable_endpoint, endpoint_id=endpoint_id)


@webhooks_blueprint.route("/webhook-endpoints/<int:endpoint_id>/deliveries")
class WebhookEndpointDeliveries(MethodView):
    @require_role(*ROLES)
    @webhooks_blueprint.arguments(PageQuery, location="query")
    @webhooks_blueprint.response(200, DeliveryLogOutput)
    @documented(webhooks_blueprint, 404)
    def get(self, query: dict[str, Any], endpoint_id: int) -> dict[str, Any]:
        """An endpoint's delivery log, newest first, each delivery with its attempts."""
        with hub_state().unit_of_work() as uow:
            log = webhooks.delivery_log(uow.session, endpoint_id=endpoint_id, limit=query["limit"],
                                        offset=query["offset"])
        return {"deliveries": log, "limit": query["limit"], "offset": query["offset"]}


@webhooks_blueprint.route("/webhook-events/<event_id>/redelivery")
class WebhookEventRedelivery(MethodView):
    @require_role(*ROLES)
    @webhooks_blueprint.arguments(RedeliveryInput)
    @webhooks_blueprint.response(200, RedeliveryOutput)
    @documented(webhooks_blueprint, 404, 409)
    def post(self, data: dict[str, Any], event_id: str) -> dict[str, Any]:
        """Send an event again, whatever became of it, to its active endpoints (or the one named); 409
        ``invalid_state`` when none of them is active."""
        count = committed_change(webhooks.redeliver, event_id=event_id, endpoint_id=data.get("endpoint_id"))
        return {"event_id": event_id, "deliveries": count}


def init_app(app: Flask, api: Api) -> None:
    """Register the webhook endpoint routes."""
    api.register_blueprint(webhooks_blueprint)
