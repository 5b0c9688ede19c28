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

from alliance.api.partner.routes import PREFIX, SIGNED, document_errors, signed
from alliance.domain.webhook_signing import WebhookSigner
from alliance.extensions import hub_state


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
signed(webhook_keys_blueprint)


@webhook_keys_blueprint.route("")
class WebhookKeys(MethodView):
    @webhook_keys_blueprint.response(200, WebhookKeysOutput)
    @document_errors(webhook_keys_blueprint, 401)
    @webhook_keys_blueprint.doc(security=SIGNED)
    def get(self) -> dict[str, Any]:
        """The active webhook key and any other key published for a rotation, active first."""
        signer = cast(WebhookSigner, hub_state().extras["webhook_signer"])
        return {"keys": [{"key_id": key.key_id, "public_key": key.public_key_pem, "algorithm": "ed25519",
                          "active": key.active} for key in signer.published_keys()]}


def init_app(app: Flask, api: Api) -> None:
    """Register the webhook-keys blueprint."""
    api.register_blueprint(webhook_keys_blueprint)
