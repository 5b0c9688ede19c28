"""The application factory."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from flask import Flask

from alliance.config import Settings
from alliance.db import database_url, make_engine, make_session_factory
from alliance.extensions import EXTENSION_KEY, HubState

SECRET_KEY_FILE = "secret_key"


def create_app(settings: Settings | None = None) -> Flask:
    """Build a hub from ``settings`` (default: ``Settings.from_env()``)."""
    settings = settings or Settings.from_env()
    app = Flask("alliance", instance_path=settings.instance_path, instance_relative_config=True)
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
    app.extensions[EXTENSION_KEY] = HubState(
        settings=settings, engine=engine, session_factory=make_session_factory(engine)
    )

    from alliance import cli
    from alliance.api import docs, errors, health
    from alliance.api.openapi import HubApi
    from alliance.api.partner import routes as partner_routes

    api = HubApi(app)
    app.extensions["alliance.api"] = api
    partner_routes.init_app(app, api)
    health.init_app(app)
    docs.init_app(app)
    # Last, so the hub's problem+json handlers replace the ones flask-smorest installs.
    errors.init_app(app)
    cli.init_app(app)
    return app


def _development_secret_key(instance_path: Path) -> str:
    """A random key kept in the instance folder, so development sessions survive restarts.

    Production refuses to start without ``ALLIANCE_SECRET_KEY`` (see ``Settings``).
    """
    key_file = instance_path / SECRET_KEY_FILE
    if key_file.exists():
        return key_file.read_text().strip()
    key = secrets.token_urlsafe(48)
    try:
        descriptor = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        # Another worker starting at the same moment wrote it first; use theirs.
        return key_file.read_text().strip()
    with os.fdopen(descriptor, "w") as handle:
        handle.write(key)
    return key
