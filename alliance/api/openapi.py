"""The OpenAPI document, built by flask-smorest from the marshmallow schemas, with the webhooks the hub sends.

The document is OpenAPI 3.0, which has no top-level ``webhooks`` object (3.1 has): the
events the hub POSTs to partners' endpoints are described under the ``x-webhooks``
extension instead, one Path Item per event type, each with its payload schema. They are
built from ``alliance.domain.webhooks`` (``EVENT_TYPES`` and ``DATA_FIELDS``), so a new
event type cannot be left out.
"""

from __future__ import annotations

from typing import Any

from flask_smorest import Api

from alliance.domain import webhooks

WEBHOOKS_EXTENSION = "x-webhooks"
SIGNATURE_HEADERS = ("Signature-Input", "Signature", "Content-Digest", "Alliance-Event-Id")


class HubApi(Api):
    """flask-smorest's Api without its own error format: every error here is problem+json."""

    DEFAULT_ERROR_RESPONSE_NAME = None

    def _init_spec(self, **options: Any) -> None:
        options.setdefault(WEBHOOKS_EXTENSION, webhooks_section())
        super()._init_spec(**options)


def event_schema(event_type: str) -> dict[str, Any]:
    """The JSON schema of one event type's delivered body: the envelope and its ``data``."""
    fields = webhooks.DATA_FIELDS[event_type]
    properties: dict[str, Any] = {}
    for field in fields:
        schema: dict[str, Any] = {"type": field.type, "description": field.description}
        if field.format is not None:
            schema["format"] = field.format
        properties[field.name] = schema
    return {
        "type": "object",
        "required": ["id", "type", "created", "data"],
        "properties": {
            "id": {"type": "string", "pattern": webhooks.EVENT_ID_PATTERN.pattern,
                   "description": "The event's id, the same on every delivery and redelivery (deduplicate on it); "
                                  "also in the Alliance-Event-Id header."},
            "type": {"type": "string", "enum": [event_type]},
            "created": {"type": "string", "format": "date-time", "description": "When the event happened (UTC)."},
            "data": {"type": "object", "required": [field.name for field in fields], "properties": properties},
        },
    }


def webhooks_section() -> dict[str, Any]:
    """Every event type as a Path Item: the POST the hub sends, its body and the answers it expects."""
    section: dict[str, Any] = {}
    for name, event in webhooks.EVENT_TYPES.items():
        receiver = "the partner" if event.audience is webhooks.Audience.PARTNER else "the operator"
        section[name] = {"post": {
            "operationId": "webhook_" + name.replace(".", "_"),
            "summary": event.description,
            "description": (f"Sent to {receiver}'s endpoints subscribed to {name} ({event.audience.value} "
                            f"audience): {event.description}. "
                            "Signed with RFC 9421 HTTP Message Signatures (Ed25519, the hub's webhook key, tag "
                            "alliance-webhook), the body covered by an RFC 9530 Content-Digest."),
            "tags": ["webhooks"],
            "parameters": [{"name": header, "in": "header", "required": True, "schema": {"type": "string"}}
                           for header in SIGNATURE_HEADERS],
            "requestBody": {"required": True, "content": {"application/json": {"schema": event_schema(name)}}},
            "responses": {
                "2XX": {"description": "Received: the delivery is done."},
                "410": {"description": "Gone: the hub disables the endpoint at once."},
                "default": {"description": "Any other answer, or none within the timeout: the hub tries again on "
                                          "its retry schedule (honouring Retry-After) for up to 3 days."},
            },
        }}
    return section
