"""Re-encrypting personal data under the active key, a batch at a time, while the hub runs."""

from __future__ import annotations

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from alliance.domain.pii import KeyRing
from alliance.models import MemberProfile

ENCRYPTED_COLUMNS = ("name", "phone", "email", "birth_date")


def reencrypt_stale_profiles(session: Session, *, key_ring: KeyRing, limit: int) -> int:
    """Re-encrypt up to ``limit`` profiles holding a field under a non-active key; returns how many."""
    stale_prefix = f"v1.{key_ring.active_key_id}."
    conditions = [
        getattr(MemberProfile, f"{name}_encrypted").isnot(None)
        & ~getattr(MemberProfile, f"{name}_encrypted").startswith(stale_prefix)
        for name in ENCRYPTED_COLUMNS
    ]
    profiles = session.scalars(select(MemberProfile).where(or_(*conditions)).order_by(MemberProfile.member_id)
                               .limit(limit).with_for_update()).all()
    for profile in profiles:
        values = {}
        for name in ENCRYPTED_COLUMNS:
            token = getattr(profile, f"{name}_encrypted")
            if token and key_ring.needs_reencryption(token):
                values[f"{name}_encrypted"] = key_ring.reencrypt(token, context=f"member:{profile.member_id}:{name}")
        session.execute(update(MemberProfile).where(MemberProfile.member_id == profile.member_id).values(**values))
    return len(profiles)
