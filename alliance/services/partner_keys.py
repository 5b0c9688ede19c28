"""Looking up partner keys, recording signature nonces, rotating and revoking keys."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import bindparam, delete, select, update
from sqlalchemy.orm import Session

from alliance.db import DriverStatement
from alliance.domain.signatures import KeyLookup, PartnerKeyRecord
from alliance.domain.errors import InvalidState, NotFound
from alliance.models import Partner, PartnerKey, SeenNonce
from alliance.models.base import prebuilt_inserts_unless_conflicting

# Built once: every signed request runs both.
KEY_AND_NONCE = (
    select(PartnerKey.key_id, PartnerKey.partner_id, PartnerKey.public_key, PartnerKey.status, PartnerKey.expires_at,
           PartnerKey.terminal_id, Partner.status.label("partner_status"),
           select(SeenNonce.id).where(SeenNonce.nonce == bindparam("nonce")).exists().label("nonce_seen"))
    .select_from(PartnerKey).join(Partner, Partner.id == PartnerKey.partner_id)
    .where(PartnerKey.key_id == bindparam("key_id"))
)
INSERT_NONCE = prebuilt_inserts_unless_conflicting(SeenNonce, ["nonce"], SeenNonce.__table__.c.id)
# Every partner request's first statement: straight through psycopg on PostgreSQL.
_KEY_AND_NONCE_ON_DRIVER = DriverStatement(KEY_AND_NONCE)


class DatabaseKeyStore:
    """The verifier's view of registered keys and seen nonces, through one session."""

    def __init__(self, session: Session) -> None:
        self._session = session

    def look_up(self, key_id: str, nonce: str) -> KeyLookup:
        """The key registered under ``key_id`` and whether ``nonce`` was seen, in one round trip."""
        rows = _KEY_AND_NONCE_ON_DRIVER.rows(self._session.connection(), {"key_id": key_id, "nonce": nonce})
        if not rows:
            return KeyLookup(key=None, nonce_seen=False)
        row = rows[0]
        return KeyLookup(key=PartnerKeyRecord(*row[:7]), nonce_seen=bool(row.nonce_seen))


def record_nonce(
    session: Session, *, nonce: str, partner_id: int, key_id: str, seen_at: datetime, prune_after: datetime
) -> bool:
    """Remember a nonce; False when another request recorded it first (a replay).

    The unique index decides: a second request with the same nonce waits for the first
    one's transaction and then finds the nonce taken. The caller commits it with the
    request's work (see ``alliance.api.partner.auth.RequestUnitOfWork``).
    """
    connection = session.connection()
    recorded = connection.execute(INSERT_NONCE[connection.dialect.name], {
        "nonce": nonce, "partner_id": partner_id, "key_id": key_id, "seen_at": seen_at, "prune_after": prune_after,
    }).first()
    return recorded is not None


def prune_nonces(session: Session, *, now: datetime, limit: int = 10_000) -> int:
    """Forget nonces whose signatures can no longer be valid; returns how many."""
    expired = select(SeenNonce.id).where(SeenNonce.prune_after < now).limit(limit).scalar_subquery()
    return session.execute(delete(SeenNonce).where(SeenNonce.id.in_(expired))).rowcount


def revoke_key(session: Session, *, key_id: str, now: datetime) -> None:
    """Revoke a key at once; requests signed with it fail from the next one on."""
    status = session.scalar(select(PartnerKey.status).where(PartnerKey.key_id == key_id))
    if status is None:
        raise NotFound(f"no key {key_id!r}")
    if status == "revoked":
        raise InvalidState(f"key {key_id!r} is already revoked")
    session.execute(update(PartnerKey).where(PartnerKey.key_id == key_id).values(status="revoked", revoked_at=now))
