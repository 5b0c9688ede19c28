"""The unit of work: one database transaction that rolls back unless committed."""

from __future__ import annotations

from collections.abc import Mapping
from types import TracebackType

from sqlalchemy.orm import Session, sessionmaker

from alliance.db import DriverStatement, execute_and_commit
from alliance.models.base import defer_commit_flush

# The session type, named for the layers above services, which pass sessions to
# services but never query through them themselves.
__all__ = ["Session", "UnitOfWork"]


class UnitOfWork:
    """Open with ``with``; call ``commit()`` to keep the work, anything else rolls back."""

    session: Session

    def __init__(self, session_factory: sessionmaker[Session]) -> None:
        self._session_factory = session_factory

    def __enter__(self) -> "UnitOfWork":
        self.session = self._session_factory()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        # close() rolls back whatever was not committed and detaches loaded objects
        # without expiring them, so values read inside the unit stay readable after it.
        self.session.close()

    def commit(self) -> None:
        """Make the work of this unit durable."""
        self.session.commit()

    def defer_commit_flush(self) -> None:
        """Let this unit's commit return before the database flushes it to disk (``models.base.defer_commit_flush``).

        Only for work whose loss in a crash is harmless, as a read's spent nonce is.
        """
        defer_commit_flush(self.session)

    def commit_with(self, statement: DriverStatement, parameters: Mapping[str, object]) -> None:
        """Run one last statement and commit, in a single round trip where the database allows it.

        On PostgreSQL the statement and ``COMMIT`` travel together (``alliance.db.execute_and_commit``);
        elsewhere the statement runs, then the commit. Not inside a savepoint.
        """
        execute_and_commit(self.session, statement, parameters)
