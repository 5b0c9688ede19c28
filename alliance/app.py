"""The application factory."""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path
from typing import Callable

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

from alliance.api.converters import DatabaseIdConverter
from alliance.config import Settings
from alliance.db import database_url, make_engine, make_session_factory
from alliance.domain.pii import KeyRing, generate_key_ring_config
from alliance.domain.pin_hashing import PinKeyRing, generate_pin_key_ring_config
from alliance.domain.webhook_signing import WebhookSigner
from alliance.extensions import EXTENSION_KEY, HubState
from alliance.observability import metrics
from alliance.observability.logs import configure_logging
from alliance.services.member_verification import carry_pin_key_ring
from settlement.api import StatementSigner, load_statement_private_key, private_key_pem, statement_key_id

SECRET_KEY_FILE = "secret_key"
PII_KEYS_FILE = "pii_keys"
PIN_KEYS_FILE = "pin_keys"
STATEMENT_KEY_FILE = "statement_key.pem"
WEBHOOK_KEY_FILE = "webhook_key.pem"


def create_app(settings: Settings | None = None) -> Flask:
    """Build a hub from ``settings`` (default: ``Settings.from_env()``)."""
    settings = settings or Settings.from_env()
    configure_logging(settings.log_format)
    metrics.switch(settings.metrics == "on")
    app = Flask("alliance", instance_path=settings.instance_path, instance_relative_config=True)
    app.url_map.converters["int"] = DatabaseIdConverter
    Path(app.instance_path).mkdir(parents=True, exist_ok=True)
    app.config.update(
        SECRET_KEY=settings.secret_key or _development_secret_key(Path(app.instance_path)),
        MAX_CONTENT_LENGTH=settings.max_body_bytes,
        API_TITLE="Points-alliance clearing house",
        API_VERSION="1",
        OPENAPI_VERSION="3.0.3",
        OPENAPI_URL_PREFIX="/",
        OPENAPI_JSON_PATH="openapi.json",
    )
    engine = make_engine(database_url(settings, app.instance_path), settings)
    session_factory = make_session_factory(engine)
    metrics.count_postings_on_commit(session_factory)
    pin_key_ring = PinKeyRing.from_config(settings.pin_keys or _development_pin_keys(Path(app.instance_path)))
    # The PIN services find the keys on their session, whichever entry point opened it.
    carry_pin_key_ring(session_factory, pin_key_ring)
    app.extensions[EXTENSION_KEY] = HubState(settings=settings, engine=engine, session_factory=session_factory)
    app.extensions[EXTENSION_KEY].extras["pin_key_ring"] = pin_key_ring
    # Idempotency fingerprints may cover a PIN, so they are keyed (see idempotency.request_fingerprint).
    app.extensions[EXTENSION_KEY].extras["fingerprint_key"] = hmac.new(
        app.config["SECRET_KEY"].encode(), b"alliance idempotency request fingerprint", hashlib.sha256).digest()
    app.extensions[EXTENSION_KEY].extras["key_ring"] = KeyRing.from_config(
        settings.pii_keys or _development_pii_keys(Path(app.instance_path))
    )
    statement_key = load_statement_private_key(
        settings.statement_key or _development_statement_key(Path(app.instance_path))
    )
    app.extensions[EXTENSION_KEY].extras["statement_signer"] = StatementSigner(
        signing_key=statement_key, key_id=statement_key_id(statement_key.public_key()),
        payment_terms_days=settings.statement_payment_terms_days,
    )
    app.extensions[EXTENSION_KEY].extras["webhook_signer"] = WebhookSigner.from_pem(
        settings.webhook_key or _development_webhook_key(Path(app.instance_path)), settings.webhook_published_keys)

    from alliance.api import docs, errors, hardening, health, telemetry
    from alliance.api.back_office import auth as back_office_auth
    from alliance.api.back_office import (
        behaviour_routes,
        coupon_routes,
        credit_routes,
        finance_routes,
        grading_routes,
        reward_routes,
        risk_routes,
        settlement_routes,
        webhook_routes,
    )
    from alliance.api.back_office import routes as back_office_routes
    from alliance.api.openapi import HubApi
    from alliance.api.partner import reward_routes as partner_reward_routes
    from alliance.api.partner import routes as partner_routes
    from alliance.api.partner import webhook_key_routes as partner_webhook_key_routes
    from alliance.api.partner import webhook_routes as partner_webhook_routes

    api = HubApi(app)
    app.extensions["alliance.api"] = api
    partner_routes.init_app(app, api)
    partner_reward_routes.init_app(app, api)
    partner_webhook_routes.init_app(app, api)
    partner_webhook_key_routes.init_app(app, api)
    back_office_auth.init_app(app)
    back_office_routes.init_app(app, api)
    settlement_routes.init_app(app, api)
    finance_routes.init_app(app, api)
    credit_routes.init_app(app, api)
    webhook_routes.init_app(app, api)
    coupon_routes.init_app(app, api)
    grading_routes.init_app(app, api)
    behaviour_routes.init_app(app, api)
    risk_routes.init_app(app, api)
    reward_routes.init_app(app, api)
    health.init_app(app)
    telemetry.init_app(app)
    docs.init_app(app)
    from alliance import console

    console.init_app(app)
    # Last, so the hub's problem+json handlers replace the ones flask-smorest installs.
    errors.init_app(app)
    # After the request id is assigned, so that its refusal names the request like any other.
    hardening.init_app(app)
    if settings.proxy_hops:
        # Behind a proxy every request comes from the proxy's address; the login throttle
        # and the logs need the client's, which only the trusted hops' headers carry.
        # Flask's documented way to add WSGI middleware; mypy refuses any assignment to a method.
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=settings.proxy_hops,  # type: ignore[method-assign]
                                x_proto=settings.proxy_hops)
    return app


def _development_pii_keys(instance_path: Path) -> str:
    """A PII key ring kept in the instance folder for development; production sets ALLIANCE_PII_KEYS."""
    return _instance_secret(instance_path / PII_KEYS_FILE, generate_key_ring_config)


def _development_pin_keys(instance_path: Path) -> str:
    """A PIN key ring kept in the instance folder for development; production sets ALLIANCE_PIN_KEYS."""
    return _instance_secret(instance_path / PIN_KEYS_FILE, generate_pin_key_ring_config)


def _development_statement_key(instance_path: Path) -> str:
    """An Ed25519 statement key kept in the instance folder for development; production sets ALLIANCE_STATEMENT_KEY."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    return _instance_secret(instance_path / STATEMENT_KEY_FILE, lambda: private_key_pem(Ed25519PrivateKey.generate()))


def _development_webhook_key(instance_path: Path) -> str:
    """An Ed25519 webhook key kept in the instance folder for development; production sets ALLIANCE_WEBHOOK_KEY."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    return _instance_secret(instance_path / WEBHOOK_KEY_FILE, lambda: private_key_pem(Ed25519PrivateKey.generate()))


def _development_secret_key(instance_path: Path) -> str:
    """A random key kept in the instance folder, so development sessions survive restarts.

    Production refuses to start without ``ALLIANCE_SECRET_KEY`` (see ``Settings``).
    """
    return _instance_secret(instance_path / SECRET_KEY_FILE, lambda: secrets.token_urlsafe(48))


def _instance_secret(key_file: Path, generate: Callable[[], str]) -> str:
    """Read a secret from the instance folder, creating it (mode 0600) the first time."""
    if key_file.exists():
        return key_file.read_text().strip()
    key = generate()
    try:
        descriptor = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        # Another worker starting at the same moment wrote it first; use theirs.
        return key_file.read_text().strip()
    with os.fdopen(descriptor, "w") as handle:
        handle.write(key)
    return key
