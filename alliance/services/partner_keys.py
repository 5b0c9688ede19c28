"""Looking up partner keys, recording signature nonces, rotating and revoking keys."""

from __future__ import annotations

import threading
from datetime import datetime
from typing import Any, cast

from sqlalchemy import CursorResult, delete, select, update
from sqlalchemy.orm import Session

from alliance.domain.errors import InvalidState, NotFound
from alliance.domain.signatures import KeyLookup, PartnerKeyRecord
from alliance.models import PartnerKey, SeenNonce
from alliance.storage import NonceRow
from alliance.storage.adapters import storage_for

KEY_CACHE_SIZE = 4096


class KeyNotCached(Exception):
    """``CachedKeyStore.look_up``: the key is not in the cache; ask the database."""


def key_still_as_verified(session: Session, key: PartnerKeyRecord, checked_at: datetime) -> bool:
    """Whether ``key`` still stands in the database exactly as the request was verified with it."""
    return storage_for(session).key_still_as_verified(session, key, checked_at)


class KeyCache:
    """Partner keys as the database last showed them, so a write can be verified before its first query.

    A signed write is verified against the cached key and its nonce is not looked up
    first; the write's idempotency claim then confirms, in the claim's own statement and
    transaction, that the key still stands exactly so (``KEY_STILL_AS_VERIFIED``) and
    spends the nonce only if it does. Nothing is taken on trust: a key revoked, expired,
    rebound or whose partner changed status since is caught there, dropped from the
    cache, and the request verified again from the database, where it gets the refusal
    it would have got without the cache. Only keys the database has just shown to verify
    a request are kept; the cache is bounded and per process.
    """

    def __init__(self, size: int = KEY_CACHE_SIZE) -> None:
        self._size = size
        self._keys: dict[str, PartnerKeyRecord] = {}
        self._lock = threading.Lock()

    def get(self, key_id: str) -> PartnerKeyRecord | None:
        return self._keys.get(key_id)

    def remember(self, key: PartnerKeyRecord) -> None:
        with self._lock:
            if key.key_id not in self._keys and len(self._keys) >= self._size:
                # The oldest entry goes (dicts keep insertion order).
                del self._keys[next(iter(self._keys))]
            self._keys[key.key_id] = key

    def forget(self, key_id: str) -> None:
        with self._lock:
            self._keys.pop(key_id, None)


class CachedKeyStore:
    """The verifier's view of a ``KeyCache``: the cached key, and no nonce seen (the claim decides that)."""

    def __init__(self, cache: KeyCache) -> None:
        self._cache = cache
        self.consulted = False

    def look_up(self, key_id: str, nonce: str) -> KeyLookup:
        """The cached key; ``KeyNotCached`` if there is none."""
        self.consulted = True
        key = self._cache.get(key_id)
        if key is None:
            raise KeyNotCached(key_id)
        return KeyLookup(key=key, nonce_seen=False)


class DatabaseKeyStore:
    """The verifier's view of registered keys and seen nonces, through one session."""

    def __init__(self, session: Session) -> None:
        self._session = session

    def look_up(self, key_id: str, nonce: str) -> KeyLookup:
        """The key registered under ``key_id`` and whether ``nonce`` was seen, in one round trip."""
        return storage_for(self._session).look_up_key(self._session, key_id, nonce)


def record_nonce(session: Session, nonce: NonceRow) -> bool:
    """Remember a nonce; False when another request recorded it first (a replay).

    The unique index decides: a second request with the same nonce waits for the first
    one's transaction and then finds the nonce taken. The caller commits it with the
    request's work (see ``alliance.services.partner_request``).
    """
    return storage_for(session).record_nonce(session, nonce)


def prune_nonces(session: Session, *, now: datetime, limit: int = 10_000) -> int:
    """Forget nonces whose signatures can no longer be valid; returns how many."""
    expired = select(SeenNonce.nonce).where(SeenNonce.prune_after < now).limit(limit).scalar_subquery()
    # A DELETE's result is a CursorResult; Session.execute types every result as Result.
    return cast(CursorResult[*tuple[Any, ...]],
                session.execute(delete(SeenNonce).where(SeenNonce.nonce.in_(expired)))).rowcount


def revoke_key(session: Session, *, key_id: str, now: datetime) -> None:
    """Revoke a key at once; requests signed with it fail from the next one on."""
    status = session.scalar(select(PartnerKey.status).where(PartnerKey.key_id == key_id))
    if status is None:
        raise NotFound(f"no key {key_id!r}")
    if status == "revoked":
        raise InvalidState(f"key {key_id!r} is already revoked")
    session.execute(update(PartnerKey).where(PartnerKey.key_id == key_id).values(status="revoked", revoked_at=now))
