"""Partner API: the public keys webhook deliveries are signed with, so a receiver can verify them.

Signed like the partner API's other reads. The answer lists the active key (the one
signing deliveries now) and any other key the hub publishes during a rotation's overlap;
each key id is ``whk-`` and 16 hex digits of SHA-256 over the raw public key, so a
receiver can recompute it from the PEM text.
"""

from __future__ import annotations

from typing import Any, cast

from flask import Flask
from flask.views import MethodView
from flask_smorest import Api, Blueprint
from marshmallow import Schema, fields

from alliance.api.partner.auth import authenticate_partner, commit_unclaimed_nonce, finish_partner_request
from alliance.api.partner.routes import PREFIX, RETRY_AFTER, SIGNED
from alliance.api.partner.schemas import ProblemOutput
from alliance.domain.webhook_signing import WebhookSigner
from alliance.extensions import hub_state

ERRORS = {
    401: "Signature rejected (see the partner API's other operations for every signature code).",
    429: "rate_limited (with Retry-After): this partner is over its request rate or has too many requests in "
         "progress.",
}


class WebhookKeyOutput(Schema):
    """One public key deliveries may be signed with."""

    key_id = fields.String(metadata={"description": "whk- and 16 hex digits of SHA-256 over the raw public key; "
                                                    "the keyid of a delivery's signature."})
    public_key = fields.String(metadata={"description": "The Ed25519 public key, SubjectPublicKeyInfo PEM."})
    algorithm = fields.String(metadata={"description": "Always ed25519."})
    active = fields.Boolean(metadata={"description": "True for the key signing deliveries now; the others are "
                                                     "published for a rotation's overlap."})


class WebhookKeysOutput(Schema):
    keys = fields.List(fields.Nested(WebhookKeyOutput))


webhook_keys_blueprint = Blueprint("partner_webhook_keys", __name__, url_prefix=f"{PREFIX}/webhook-keys",
                                   description="The public keys that verify the hub's webhook deliveries.")
webhook_keys_blueprint.before_request(authenticate_partner)
webhook_keys_blueprint.after_request(commit_unclaimed_nonce)
webhook_keys_blueprint.teardown_request(finish_partner_request)


@webhook_keys_blueprint.route("")
class WebhookKeys(MethodView):
    @webhook_keys_blueprint.response(200, WebhookKeysOutput)
    @webhook_keys_blueprint.alt_response(401, schema=ProblemOutput, description=ERRORS[401],
                                         content_type="application/problem+json")
    @webhook_keys_blueprint.alt_response(429, schema=ProblemOutput, description=ERRORS[429],
                                         content_type="application/problem+json", headers=RETRY_AFTER)
    @webhook_keys_blueprint.doc(security=SIGNED)
    def get(self) -> dict[str, Any]:
        """The active webhook key and any other key published for a rotation, active first."""
        signer = cast(WebhookSigner, hub_state().extras["webhook_signer"])
        return {"keys": [{"key_id": key.key_id, "public_key": key.public_key_pem, "algorithm": "ed25519",
                          "active": key.active} for key in signer.published_keys()]}


def init_app(app: Flask, api: Api) -> None:
    """Register the webhook-keys blueprint."""
    api.register_blueprint(webhook_keys_blueprint)
