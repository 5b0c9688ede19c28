"""The unit of work: one database transaction that rolls back unless committed.

The only place anything commits. Services work inside a unit of work and never commit;
the layer that opened it (a request, a command, a job) decides when its work is kept.
"""

from __future__ import annotations

import logging
from types import TracebackType

from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from alliance.db import database_unavailable
from alliance.storage import PendingWrite, Storage
from alliance.storage.adapters import storage_for

# The session type, named for the layers above services, which pass sessions to
# services but never query through them themselves.
__all__ = ["Session", "UnitOfWork", "keep_record"]

logger = logging.getLogger(__name__)


def keep_record(session: Session, error: BaseException | None) -> bool:
    """Write what a refusal keeps (``AllianceError.kept``) in the session's transaction; whether there was any.

    Called after the refused work was rolled back; the caller commits.
    """
    kept = getattr(error, "kept", None)
    if kept is None:
        return False
    kept(session)
    return True


class UnitOfWork:
    """Open with ``with``; call ``commit()`` to keep the work, anything else rolls back."""

    session: Session
    storage: Storage

    def __init__(self, session_factory: sessionmaker[Session]) -> None:
        self._session_factory = session_factory

    def __enter__(self) -> UnitOfWork:
        self.session = self._session_factory()
        self.storage = storage_for(self.session)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        try:
            # A refusal that keeps a record: the refused work is taken back, the record committed.
            if exc is not None and getattr(exc, "kept", None) is not None:
                self.session.rollback()
                if keep_record(self.session, exc):
                    self.session.commit()
        finally:
            self._close()

    def _close(self) -> None:
        """End the session: roll back whatever was not committed, give the connection back.

        ``close()`` detaches loaded objects without expiring them, so values read inside
        the unit stay readable after it. When the server ended the session first (a
        failover, a restart) the rollback cannot be sent; nothing uncommitted outlives
        the server's session, so there is nothing left to take back, and the connection
        is discarded instead of raising: the answer the unit's work already made (a
        request's reply, or its own error) stands.
        """
        try:
            self.session.close()
        except DBAPIError as error:
            if not database_unavailable(error):
                raise
            logger.warning("the database ended the session before its transaction closed; connection discarded: "
                           "%s", " ".join(str(error.orig).split())[:200])
            self.session.invalidate()

    def commit(self) -> None:
        """Make the work of this unit durable."""
        self.session.commit()

    def commit_with(self, write: PendingWrite) -> None:
        """Run one last write (from the storage adapter) and commit, in one round trip where the database allows it.

        On PostgreSQL the write and ``COMMIT`` travel together; elsewhere the write runs,
        then the commit. Not inside a savepoint.
        """
        self.storage.execute_and_commit(self.session, write)

    def defer_commit_flush(self) -> None:
        """Let this unit's commit return before the database flushes it to disk.

        Only for work whose loss in a crash is harmless because everything that depends
        on it commits later, synchronously (the database's log is written in order), as
        a read's spent nonce is.
        """
        self.storage.defer_commit_flush(self.session)
