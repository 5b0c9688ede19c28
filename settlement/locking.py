"""The settlement lock: one partner's closing, approvals and statement events, one at a time.

Closing a cycle (``settlement.closing``), approving an adjustment and recording an
invoice or a payment (``settlement.finance``) each take the partner's lock for the rest
of the transaction, so they cannot interleave. It is its own module so that both take
it without importing each other.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.orm import Session

from alliance.domain.errors import ValidationFailed
from alliance.storage.adapters import storage_for

# Advisory locks share one 64-bit key space across the database; settlement takes the
# keys namespace * 2**32 + partner id, far from the migration lock's 7_150_001.
SETTLEMENT_LOCK_NAMESPACE = 7_150_002
PARTNER_ID_LIMIT = 2**32


def lock_partner_settlement(session: Session, partner_id: int) -> None:
    """Take the exclusive settlement lock of one partner until the transaction ends."""
    storage_for(session).lock(session, _key(partner_id))


def lock_partners_settlement(session: Session, partner_ids: Sequence[int]) -> None:
    """Take several partners' settlement locks in the order given, in one statement.

    Whoever takes more than one must give them in one order every such caller keeps (the
    closer: partner code), or two of them could each wait for the other.
    """
    storage_for(session).lock_many(session, [_key(partner_id) for partner_id in partner_ids])


def _key(partner_id: int) -> int:
    if not 0 < partner_id < PARTNER_ID_LIMIT:
        raise ValidationFailed("partner id out of range for the settlement lock", fields={"partner_id": ["range"]})
    return SETTLEMENT_LOCK_NAMESPACE * PARTNER_ID_LIMIT + partner_id
