"""The hub's per-app database state, kept on ``app.extensions`` rather than in globals."""

from __future__ import annotations

from dataclasses import dataclass

from flask import Flask, current_app
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from alliance.config import Settings
from alliance.services.unit_of_work import UnitOfWork

EXTENSION_KEY = "alliance"


@dataclass
class HubState:
    """What one hub app holds: its settings, engine and session factory."""

    settings: Settings
    engine: Engine
    session_factory: sessionmaker[Session]

    def unit_of_work(self) -> UnitOfWork:
        """A new unit of work on this hub's database."""
        return UnitOfWork(self.session_factory)


def hub_state(app: Flask | None = None) -> HubState:
    """The hub state of ``app``, or of the current app."""
    return (app or current_app).extensions[EXTENSION_KEY]
