"""Back-office clients and their bearer tokens (OAuth 2 client credentials).

Every client belongs to one staff person (``staff_people``), named when it is created
and never changed, so that four-eyes rules can compare the people behind two actors.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from alliance.domain.errors import NotFound, ValidationFailed
from alliance.models import OAuthClient, OAuthToken
from alliance.models.staff import StaffPerson
from alliance.services import audit_log
from alliance.services.staff_people import person_id_of

ROLES = ("admin", "finance", "partner_manager", "customer_service", "risk")
TOKEN_LIFETIME = timedelta(hours=1)
CLIENT_SECRET_BYTES = 32


@dataclass(frozen=True, slots=True)
class NewClient:
    """A client as created: the secret appears here once and is never stored."""

    client_id: str
    client_secret: str
    roles: tuple[str, ...]
    person: str


@dataclass(frozen=True, slots=True)
class TokenGrant:
    """What a valid bearer token lets its holder do, and who holds it."""

    client_id: str
    roles: frozenset[str]
    person: str


def secret_digest(secret: str) -> str:
    """SHA-256 of a high-entropy secret; a slow hash buys nothing for 256 random bits."""
    return hashlib.sha256(secret.encode()).hexdigest()


def validate_roles(roles: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """The roles, deduplicated in a fixed order, if they are all known."""
    unknown = sorted(set(roles) - set(ROLES))
    if unknown or not roles:
        raise ValidationFailed(f"roles must be among {', '.join(ROLES)}", fields={"roles": unknown or ["empty"]})
    return tuple(role for role in ROLES if role in roles)


def create_client(session: Session, *, name: str, roles: list[str] | tuple[str, ...], person: str,
                  now: datetime) -> NewClient:
    """Register a back-office client of one staff person for some roles; returns its id and one-time secret."""
    roles = validate_roles(roles)
    person_id = person_id_of(session, person)
    client_id = "bo_" + secrets.token_hex(8)
    client_secret = secrets.token_urlsafe(CLIENT_SECRET_BYTES)
    session.execute(insert(OAuthClient).values(
        client_id=client_id, client_secret_hash=secret_digest(client_secret), name=name, roles=" ".join(roles),
        status="active", created_at=now, person_id=person_id,
    ))
    return NewClient(client_id=client_id, client_secret=client_secret, roles=roles, person=person)


def revoke_client(session: Session, *, client_id: str, now: datetime) -> None:
    """Revoke a client and every token it holds."""
    client_row_id = session.scalar(select(OAuthClient.id).where(OAuthClient.client_id == client_id))
    if client_row_id is None:
        raise NotFound(f"no client {client_id!r}")
    session.execute(update(OAuthClient).where(OAuthClient.id == client_row_id).values(status="revoked"))
    session.execute(update(OAuthToken).where(OAuthToken.client_id == client_row_id, OAuthToken.revoked_at.is_(None))
                    .values(revoked_at=now))


def create_client_by(session: Session, *, name: str, roles: list[str] | tuple[str, ...], person: str, actor: str,
                     now: datetime) -> NewClient:
    """``create_client`` as a staff actor asks it (the back office, the CLI), with its ``client.create`` audit entry."""
    created = create_client(session, name=name, roles=roles, person=person, now=now)
    audit_log.append(session, actor=actor, action="client.create", subject=f"client:{created.client_id}", now=now,
                     after={"name": name, "roles": list(created.roles), "person": created.person})
    return created


def revoke_client_by(session: Session, *, client_id: str, actor: str, now: datetime) -> None:
    """``revoke_client`` as a staff actor asks it, with its ``client.revoke`` audit entry."""
    revoke_client(session, client_id=client_id, now=now)
    audit_log.append(session, actor=actor, action="client.revoke", subject=f"client:{client_id}", now=now)


def find_active_client(session: Session, client_id: str) -> OAuthClient | None:
    """The active client with this id, if any."""
    return session.scalar(select(OAuthClient).where(OAuthClient.client_id == client_id, OAuthClient.status == "active"))


def client_secret_matches(client: OAuthClient, secret: str) -> bool:
    """Compare a presented secret with the stored digest in constant time."""
    return hmac.compare_digest(client.client_secret_hash, secret_digest(secret))


def store_token(session: Session, *, client: OAuthClient, access_token: str, scope: str, now: datetime,
                expires_in_s: int) -> None:
    """Keep a digest of an issued token with its scope and expiry."""
    session.execute(insert(OAuthToken).values(
        client_id=client.id, access_token_hash=secret_digest(access_token), scope=scope, issued_at=now,
        expires_at=now + timedelta(seconds=expires_in_s),
    ))


def grant_for_token(session: Session, *, access_token: str, now: datetime) -> TokenGrant | None:
    """The roles a presented token grants, or None when it is unknown, expired or revoked."""
    row = session.execute(
        select(OAuthToken.scope, OAuthClient.client_id, StaffPerson.handle)
        .join(OAuthClient, OAuthClient.id == OAuthToken.client_id)
        .join(StaffPerson, StaffPerson.id == OAuthClient.person_id)
        .where(OAuthToken.access_token_hash == secret_digest(access_token), OAuthToken.revoked_at.is_(None),
               OAuthToken.expires_at > now, OAuthClient.status == "active")
    ).first()
    if row is None:
        return None
    return TokenGrant(client_id=row.client_id, roles=frozenset(row.scope.split()), person=row.handle)
