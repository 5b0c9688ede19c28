"""A copy of rarely changing data per process and database, reloaded after a stated age.

Policies that every request reads (the tier policy, the risk policy) change a few times
a year and take effect at a stated time at least ``2 × reload interval`` ahead, so each
process may keep its own copy and reload it when older than the interval: every process
holds the new version before it applies, and no request pays a read for it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar
from weakref import WeakKeyDictionary

from sqlalchemy import Connection, Engine
from sqlalchemy.orm import Session

T = TypeVar("T")


def engine_of(session: Session) -> Engine:
    """The engine a session's work goes to, the key a copy is kept under."""
    bind = session.get_bind()
    return bind.engine if isinstance(bind, Connection) else bind


class ProcessCache(Generic[T]):
    """What ``read`` returns for a database, kept per engine and read again when older than ``reload_interval_s``."""

    def __init__(self, read: Callable[[Session], T], *, reload_interval_s: float) -> None:
        self._read = read
        self.reload_interval_s = reload_interval_s
        self._lock = threading.Lock()
        self._copies: WeakKeyDictionary[Engine, tuple[float, T]] = WeakKeyDictionary()

    def get(self, session: Session) -> T:
        """This process's copy for the session's database, read now if it is missing or too old."""
        engine = engine_of(session)
        started = time.monotonic()
        with self._lock:
            entry = self._copies.get(engine)
        if entry is not None and started - entry[0] < self.reload_interval_s:
            return entry[1]
        value = self._read(session)
        with self._lock:
            # Stamped with the time before the read: the copy is at least as new as that.
            self._copies[engine] = (started, value)
        return value

    def forget(self, session: Session) -> None:
        """Drop the copy for the session's database, so the next ``get`` reads it."""
        with self._lock:
            self._copies.pop(engine_of(session), None)
