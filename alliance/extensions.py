"""The hub's per-app database state, kept on ``app.extensions`` rather than in globals."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import cast

from flask import Flask, current_app
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from alliance.config import Settings
from alliance.db import ReadRouting
from alliance.domain.pii import KeyRing
from alliance.domain.pin_hashing import PinKeyRing
from alliance.storage.unit_of_work import UnitOfWork
from settlement.keys import StatementSigner

EXTENSION_KEY = "alliance"


@dataclass
class HubState:
    """What one hub app holds: its settings, engine and session factory, and where report reads go."""

    settings: Settings
    engine: Engine
    session_factory: sessionmaker[Session]
    # Per-app objects of other extensions (the OAuth 2 authorization server, say). The app factory
    # stores the key rings, the statement signer and the fingerprint key here; the properties below
    # read them back with the types it stored.
    extras: dict[str, object] = field(default_factory=dict)
    reads: ReadRouting = field(init=False)

    def __post_init__(self) -> None:
        self.reads = ReadRouting.for_settings(self.settings, self.engine)

    @property
    def key_ring(self) -> KeyRing:
        """The key ring personal data is encrypted under."""
        return cast(KeyRing, self.extras["key_ring"])

    @property
    def pin_key_ring(self) -> PinKeyRing:
        """The keys PINs are hashed under (sessions of this hub carry them too)."""
        return cast(PinKeyRing, self.extras["pin_key_ring"])

    @property
    def statement_signer(self) -> StatementSigner:
        """The hub's statement key, its id and the payment terms statements carry."""
        return cast(StatementSigner, self.extras["statement_signer"])

    @property
    def fingerprint_key(self) -> bytes:
        """The key idempotency fingerprints are made under (derived from the hub's secret key)."""
        return cast(bytes, self.extras["fingerprint_key"])

    def unit_of_work(self) -> UnitOfWork:
        """A new unit of work on this hub's database."""
        return UnitOfWork(self.session_factory)

    def read_only_unit_of_work(self) -> UnitOfWork:
        """A unit of work for report reads: on the replica while it keeps up, else the primary; never a write.

        Only for reads that may be a few seconds behind (``ALLIANCE_REPLICA_MAX_LAG_S``):
        reports, grades, exports, statement listings. See ``alliance.db.ReadRouting``.
        """
        return UnitOfWork(self.reads.session_factory())

    def dispose(self) -> None:
        """Close every pooled connection of this hub (the primary's and the replica's)."""
        self.engine.dispose()
        self.reads.dispose()


def hub_state(app: Flask | None = None) -> HubState:
    """The hub state of ``app``, or of the current app."""
    return (app or current_app).extensions[EXTENSION_KEY]
