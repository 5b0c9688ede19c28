"""Helpers for back-office tests: OAuth clients and bearer tokens, JSON calls, raw table
reads, the ``alliance`` CLI and tampering with the audit log.

Tokens are obtained the way a back-office system obtains them, at ``POST /oauth/token``
with client credentials; only the clients themselves are created through the service,
since a first client has to come from somewhere (``alliance staff create-client``).
"""

from __future__ import annotations

import base64
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

from click.testing import CliRunner, Result
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from flask import Flask
from sqlalchemy import func, insert, select, text

from alliance import create_app
from alliance.cli import main
from alliance.config import Settings
from alliance.extensions import HubState, hub_state
from alliance.models import AuditLogEntry, Member
from alliance.models.staff import StaffPerson
from alliance.services import oauth
from alliance.services.oauth import NewClient

BASE = "/back-office/v1"
TOKEN_PATH = "/oauth/token"
ROLES = oauth.ROLES


@dataclass
class Reply:
    """Status, headers and parsed JSON body (None when empty) of a reply."""

    status: int
    headers: dict[str, str]
    body: Any

    @property
    def code(self) -> str | None:
        """The problem+json ``code`` of an error reply, else None."""
        return self.body.get("code") if isinstance(self.body, dict) else None


class BackOffice:
    """A back-office caller over Flask's test client, with one OAuth client per role set."""

    def __init__(self, app: Flask) -> None:
        self.app = app
        self.hub = hub_state(app)
        self.client = app.test_client()
        self._clients: dict[tuple[str, ...], NewClient] = {}
        self._tokens: dict[tuple[str, ...], str] = {}

    def register_client(self, *roles: str, name: str = "test staff", person: str | None = None) -> NewClient:
        """A new OAuth client for ``roles``, created as ``alliance staff create-client`` would.

        It belongs to ``person`` (who must exist), or else to a new person of its own, so
        that two clients count as two people unless a test says otherwise. That person is
        written straight into the table, without the audit entry ``alliance staff
        add-person`` makes: clients are made lazily, in the middle of tests that count
        the audit entries their calls add.
        """
        with self.hub.unit_of_work() as uow:
            now = datetime.now(timezone.utc)
            if person is None:
                person = f"person-{uuid.uuid4().hex[:12]}"
                uow.session.execute(insert(StaffPerson).values(handle=person, name=name, created_at=now))
            created = oauth.create_client(uow.session, name=name, roles=list(roles), person=person, now=now)
            uow.commit()
        return created

    def request_token(self, client_id: str, client_secret: str, *, scope: str | None = None,
                      grant_type: str = "client_credentials", auth: str = "basic") -> Reply:
        """POST /oauth/token with HTTP Basic client authentication (or client_secret_post)."""
        form = {"grant_type": grant_type}
        if scope is not None:
            form["scope"] = scope
        if auth == "basic":
            response = self.client.post(TOKEN_PATH, data=form, auth=(client_id, client_secret))
        else:
            response = self.client.post(TOKEN_PATH, data={**form, "client_id": client_id,
                                                          "client_secret": client_secret})
        return Reply(response.status_code, dict(response.headers), response.get_json(silent=True))

    def client_for(self, *roles: str) -> NewClient:
        """The (cached) client holding exactly ``roles``."""
        key = tuple(sorted(roles))
        if key not in self._clients:
            self._clients[key] = self.register_client(*key, name=f"staff {' '.join(key)}")
        return self._clients[key]

    def token(self, *roles: str) -> str:
        """A bearer token of a client holding ``roles`` (cached per role set)."""
        key = tuple(sorted(roles))
        if key not in self._tokens:
            created = self.client_for(*key)
            reply = self.request_token(created.client_id, created.client_secret)
            assert reply.status == 200, reply.body
            self._tokens[key] = reply.body["access_token"]
        return self._tokens[key]

    def actor(self, *roles: str) -> str:
        """How the audit log names the client holding ``roles``."""
        return f"client:{self.client_for(*roles).client_id}"

    def call(self, method: str, path: str, *, role: str | None = None, token: str | None = None,
             json: Any = None, query: dict[str, Any] | None = None, headers: dict[str, str] | None = None) -> Reply:
        """One request to ``BASE + path`` (or ``path`` if absolute), with a bearer token of ``role``."""
        all_headers = dict(headers or {})
        if role is not None:
            token = self.token(role)
        if token is not None:
            all_headers["Authorization"] = f"Bearer {token}"
        url = path if path.startswith(("/oauth/", BASE + "/", "/partner/v1/")) else BASE + path
        response = self.client.open(url, method=method, json=json, query_string=query, headers=all_headers)
        return Reply(response.status_code, dict(response.headers), response.get_json(silent=True))

    def get(self, path: str, *, role: str, query: dict[str, Any] | None = None) -> Reply:
        return self.call("GET", path, role=role, query=query)

    def post(self, path: str, json: Any = None, *, role: str) -> Reply:
        return self.call("POST", path, role=role, json={} if json is None else json)

    def patch(self, path: str, json: Any, *, role: str) -> Reply:
        return self.call("PATCH", path, role=role, json=json)

    # Customer service shortcuts.

    def enrol(self, **profile: str) -> tuple[str, str]:
        """Enrol a member with ``profile``; returns (member number, card number)."""
        reply = self.post("/members", profile, role="customer_service")
        assert reply.status == 201, reply.body
        return reply.body["member_number"], reply.body["card_number"]

    def set_pin(self, card_number: str, pin: str) -> None:
        reply = self.post("/cards/pin", {"card_number": card_number, "pin": pin}, role="customer_service")
        assert reply.status == 204, reply.body


def member_id_of(hub: HubState, member_number: str) -> int:
    """The internal id behind a public member number."""
    with hub.unit_of_work() as uow:
        return uow.session.scalar(select(Member.id).where(Member.member_number == member_number))


def raw_table_text(hub: HubState, table: str) -> list[str]:
    """Every value of every row of ``table`` as text, read with plain SQL (no ORM, no decryption)."""
    with hub.engine.connect() as connection:
        rows = connection.execute(text(f"SELECT * FROM {table}")).all()
    return [str(value) for row in rows for value in row if value is not None]


def audit_entries(hub: HubState) -> list[AuditLogEntry]:
    """The audit log in sequence order."""
    with hub.unit_of_work() as uow:
        return list(uow.session.scalars(select(AuditLogEntry).order_by(AuditLogEntry.sequence)))


def audit_count(hub: HubState) -> int:
    with hub.unit_of_work() as uow:
        return uow.session.scalar(select(func.count()).select_from(AuditLogEntry)) or 0


def run_cli(app: Flask, *arguments: str) -> Result:
    """Run ``alliance <arguments>`` against ``app``, as ``flask --app`` would (inside its context)."""
    with app.app_context():
        return CliRunner().invoke(main, list(arguments), catch_exceptions=False)


def hub_app(database_url: str, instance_path: Path, **overrides: Any) -> Flask:
    """Another hub on the same database, with its own settings (a new key ring, other limits)."""
    settings = Settings(database_url=database_url, instance_path=str(instance_path), environment="test",
                        secret_key="test-secret-key", **overrides)
    app = create_app(settings)
    app.config["TESTING"] = True
    return app


@contextmanager
def other_hub(hub: HubState, instance_path: Path, **overrides: Any) -> Iterator[Flask]:
    """A second hub on ``hub``'s database; its engine is disposed afterwards."""
    app = hub_app(hub.engine.url.render_as_string(hide_password=False), instance_path, **overrides)
    try:
        yield app
    finally:
        hub_state(app).engine.dispose()


def new_public_key() -> tuple[Ed25519PrivateKey, str]:
    """An Ed25519 key pair: the private key and base64 of the raw 32-byte public key."""
    private_key = Ed25519PrivateKey.generate()
    raw = private_key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return private_key, base64.b64encode(raw).decode()


def tamper_audit_log(hub: HubState, statement: str) -> None:
    """Change the audit log behind the hub's back, as a database superuser could.

    PostgreSQL: replica mode skips the append-only trigger for this one transaction.
    SQLite: the trigger is dropped, the row changed, and the trigger put back exactly as
    it was, so the audit's guard check stays green and the broken chain is what it finds.
    """
    with hub.engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SET LOCAL session_replication_role = replica"))
            connection.execute(text(statement))
        else:
            trigger_sql = connection.execute(text(
                "SELECT sql FROM sqlite_master WHERE type = 'trigger' AND name = 'trg_audit_log_no_update'"
            )).scalar_one()
            connection.execute(text("DROP TRIGGER trg_audit_log_no_update"))
            connection.execute(text(statement))
            connection.execute(text(trigger_sql))
