"""Liveness and readiness: is the process up, can it reach its database."""

from __future__ import annotations

from flask import Blueprint, Flask, jsonify
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from alliance.domain.errors import AllianceError
from alliance.extensions import hub_state

blueprint = Blueprint("health", __name__)


class DatabaseUnavailable(AllianceError):
    """The hub cannot reach its database."""

    code = "database_unavailable"
    http_status = 503
    title = "Database unavailable"


@blueprint.get("/healthz")
def healthz():  # type: ignore[no-untyped-def]
    """200 with the database backend when a trivial query succeeds, else 503."""
    engine = hub_state().engine
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except SQLAlchemyError:
        raise DatabaseUnavailable("the database did not answer") from None
    return jsonify(status="ok", database=engine.dialect.name)


def init_app(app: Flask) -> None:
    """Register the health routes."""
    app.register_blueprint(blueprint)
