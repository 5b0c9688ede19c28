"""Liveness and readiness: is the process up (``/healthz``), can this host serve (``/readyz``).

Liveness never touches the database, so that an orchestrator does not restart every
hub while the database fails over. Readiness is what a load balancer (HAProxy) checks
before sending this host requests: the primary reachable and writable, the schema at
the newest migration this code knows, the statement key usable. It costs one query
per call, plus the migration check at most every ``MIGRATION_CHECK_INTERVAL_S``.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import cast

from flask import Blueprint, Flask, Response, jsonify
from sqlalchemy.exc import SQLAlchemyError

from alliance import migrate
from alliance.api.errors import problem_document, problem_document_response
from alliance.db import accepts_writes
from alliance.extensions import HubState, hub_state
from settlement.api import StatementSigner, statement_key_id

blueprint = Blueprint("health", __name__)
READINESS_KEY = "readiness"
# A deploy's migration shows on every host within this many seconds.
MIGRATION_CHECK_INTERVAL_S = 10.0
NOT_CHECKED = "not checked: the database cannot be reached"


@dataclass
class MigrationCheck:
    """The database's migration revision, read at most every ``MIGRATION_CHECK_INTERVAL_S``; the code's, once.

    A database behind this code's newest revision lacks what the code needs: not ready.
    One at a revision this code does not know was migrated by a newer release, which
    the release procedure does before restarting the hosts one at a time (see
    docs/configuration.md): the hosts still on this code keep serving meanwhile.
    """

    head: str | None = None
    known: frozenset[str] = frozenset()
    revision: str | None = None
    read_at_s: float = float("-inf")
    lock: threading.Lock = field(default_factory=threading.Lock)

    def verdict(self, state: HubState) -> str:
        """The verdict: "ok", or which migrations are missing; raises SQLAlchemy's error if it cannot read."""
        with self.lock:
            if self.head is None:
                self.head, self.known = migrate.head_revision(state.engine), migrate.known_revisions(state.engine)
            if time.monotonic() - self.read_at_s >= MIGRATION_CHECK_INTERVAL_S:
                self.revision = migrate.current_revision(state.engine)
                self.read_at_s = time.monotonic()
            head, revision = self.head, self.revision
        if revision == head or (revision is not None and revision not in self.known):
            return "ok"
        return f"the database is at revision {revision or 'base'}, this hub's code at {head}"


def _statement_key_verdict(state: HubState) -> str:
    """The statement key is loaded and its published id is its own, so closings can sign what partners verify."""
    # The extras hold values of several kinds; the statement signer, if one was loaded, is this.
    signer = cast("StatementSigner | None", state.extras.get("statement_signer"))
    if signer is None:
        return "no statement key loaded"
    if statement_key_id(signer.signing_key.public_key()) != signer.key_id:
        return "the statement key's id does not match the key"
    return "ok"


def readiness_checks(state: HubState) -> dict[str, str]:
    """Each readiness check by name, with "ok" or what is wrong."""
    checks = {"database": "ok", "writable": NOT_CHECKED, "migrations": NOT_CHECKED}
    try:
        writable, why = accepts_writes(state.engine)
        checks["writable"] = "ok" if writable else why
        readiness = cast(MigrationCheck, state.extras.setdefault(READINESS_KEY, MigrationCheck()))
        checks["migrations"] = readiness.verdict(state)
    except SQLAlchemyError as error:
        checks["database"] = f"cannot be reached ({error.__class__.__name__})"
    checks["statement_key"] = _statement_key_verdict(state)
    return checks


@blueprint.get("/healthz")
def healthz() -> Response:
    """200 while the process serves requests, with its database backend; the database is not asked."""
    return jsonify(status="ok", database=hub_state().engine.dialect.name)


@blueprint.get("/readyz")
def readyz() -> Response:
    """200 with every check when this host can serve; else 503 problem+json naming the failed checks."""
    checks = readiness_checks(hub_state())
    failed = [name for name, verdict in checks.items() if verdict != "ok"]
    if not failed:
        return jsonify(status="ready", checks=checks)
    body = problem_document(status=503, code="not_ready", title="Not ready",
                            detail="this host cannot serve: " + ", ".join(failed) + " failed")
    body["checks"] = checks
    return problem_document_response(body)


def init_app(app: Flask) -> None:
    """Register the health routes."""
    app.register_blueprint(blueprint)
