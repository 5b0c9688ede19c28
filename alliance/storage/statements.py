"""Core statements both adapters run, each built once: signed requests' keys, nonces and stored replies."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, select, update

from alliance.domain.signatures import KeyLookup, PartnerKeyRecord
from alliance.models import IdempotencyRecord, Partner, PartnerKey, SeenNonce

# Every signed request's first statement: its key and whether its nonce was seen.
KEY_AND_NONCE = (
    select(PartnerKey.key_id, PartnerKey.partner_id, PartnerKey.public_key, PartnerKey.status, PartnerKey.expires_at,
           PartnerKey.terminal_id, Partner.status.label("partner_status"),
           select(SeenNonce.nonce).where(SeenNonce.nonce == bindparam("nonce")).exists().label("nonce_seen"))
    .select_from(PartnerKey).join(Partner, Partner.id == PartnerKey.partner_id)
    .where(PartnerKey.key_id == bindparam("key_id"))
)

# Whether a key still stands exactly as a request was verified with it (see
# ``alliance.services.partner_keys.KeyCache``): the same public key, partner and
# terminal, active, unexpired at the request's time, its partner in the same status.
# Its binds are all named ``key_*``.
KEY_STILL_AS_VERIFIED = (
    select(PartnerKey.id).select_from(PartnerKey).join(Partner, Partner.id == PartnerKey.partner_id)
    .where(PartnerKey.key_id == bindparam("key_id"), PartnerKey.partner_id == bindparam("key_partner_id"),
           PartnerKey.public_key == bindparam("key_public_key"),
           PartnerKey.terminal_id.is_not_distinct_from(bindparam("key_terminal_id")),
           PartnerKey.status == "active",
           (PartnerKey.expires_at.is_(None)) | (PartnerKey.expires_at > bindparam("key_checked_at")),
           Partner.status == bindparam("key_partner_status"))
)

# A request's reply, stored under its idempotency record with the request's commit.
STORE_REPLY = (
    update(IdempotencyRecord).where(IdempotencyRecord.idempotency_key == bindparam("reply_key"),
                                    IdempotencyRecord.partner_id == bindparam("reply_partner_id"))
    .values(status="completed", response_status=bindparam("reply_status"), response_body=bindparam("reply_body"),
            completed_at=bindparam("completed_at_"))
)


def key_confirmation(key: PartnerKeyRecord, checked_at: datetime) -> dict[str, object]:
    """The bind values of ``KEY_STILL_AS_VERIFIED`` for ``key`` at ``checked_at``."""
    return {"key_id": key.key_id, "key_partner_id": key.partner_id, "key_public_key": key.public_key,
            "key_terminal_id": key.terminal_id, "key_checked_at": checked_at, "key_partner_status": key.partner_status}


def reply_parameters(*, partner_id: int, key: str, status: int, body: str, now: datetime) -> dict[str, object]:
    """The bind values of ``STORE_REPLY``."""
    return {"reply_key": key, "reply_partner_id": partner_id, "reply_status": status, "reply_body": body,
            "completed_at_": now}


def key_lookup(rows: Sequence[Any]) -> KeyLookup:
    """``KEY_AND_NONCE``'s rows as the verifier's answer."""
    if not rows:
        return KeyLookup(key=None, nonce_seen=False)
    row = rows[0]
    return KeyLookup(key=PartnerKeyRecord(*row[:7]), nonce_seen=bool(row.nonce_seen))
