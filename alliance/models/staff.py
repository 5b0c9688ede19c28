"""Staff people, their console logins and sessions, and the throttle on guessing passwords.

A staff person is a human being; back-office clients and console logins each belong to
one, so that four-eyes rules can tell two people from one person with two credentials.
A staff user (a login) has a username, a display name, some of the back-office roles, and a
password kept only as a slow, salted scrypt hash. A console session is a row keyed by a
digest of a random nonce that the signed session cookie carries, so that logging out,
disabling a user or an expired session ends it on the server, not only in the browser.

Wrong passwords are counted per (username, source address) and per source address in
``staff_login_throttles``, never on the account itself: an outsider who guesses can only
slow down their own address, not lock the account for its owner elsewhere. The rows
live in the database so that every worker process sees the same counts.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import CheckConstraint, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from alliance.models.base import Base, IdType, UTCDateTime


class StaffPerson(Base):
    """A human being on the staff, behind any number of console logins and back-office clients.

    Four-eyes rules ask for two people, not two credentials: every console login and
    every back-office client belongs to exactly one person, for good, and the rules
    compare the people behind the actors.
    """

    __tablename__ = "staff_people"

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    handle: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class StaffUser(Base):
    """A console login of one person, with some back-office roles."""

    __tablename__ = "staff_users"
    __table_args__ = (
        CheckConstraint("status IN ('active', 'disabled')", name="status"),
    )

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    display_name: Mapped[str] = mapped_column(String(200))
    # Space-separated, in the fixed order of ``oauth.ROLES``, as back-office clients keep them.
    roles: Mapped[str] = mapped_column(String(200))
    password_hash: Mapped[str] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(10))
    last_login_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    password_changed_at: Mapped[datetime] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # Whose login this is; never changed (see StaffPerson).
    person_id: Mapped[int] = mapped_column(ForeignKey("staff_people.id"))
    # The IANA zone the console shows this user's dates in; None means the alliance's own zone.
    time_zone: Mapped[str | None] = mapped_column(String(64))


class StaffSession(Base):
    """One signed-in console session; ended by logout, by disabling its user, or by its timeouts."""

    __tablename__ = "staff_sessions"
    __table_args__ = (Index("ix_staff_sessions_user_id", "user_id"),)

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("staff_users.id"))
    # SHA-256 of the nonce the cookie carries; a leaked table yields no usable session.
    nonce_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class StaffLoginThrottle(Base):
    """Recent failed logins of one (username, source address) pair, or of one source address.

    Rows are named by a SHA-256 digest, so the table holds neither the usernames people
    typed nor their addresses; a row without an attempt for
    ``login_throttle.THROTTLE_MEMORY`` is pruned, so the table stays as small as the
    recent guessing.
    """

    __tablename__ = "staff_login_throttles"
    __table_args__ = (
        CheckConstraint("scope IN ('pair', 'source')", name="scope"),
        CheckConstraint("failures >= 0", name="failures"),
        Index("ix_staff_login_throttles_last_attempt_at", "last_attempt_at"),
        Index("ix_staff_login_throttles_username_digest", "username_digest"),
    )

    key_digest: Mapped[str] = mapped_column(String(64), primary_key=True)
    scope: Mapped[str] = mapped_column(String(6))
    # Set on pair rows, so that setting a user's password can lift their backoff everywhere.
    username_digest: Mapped[str | None] = mapped_column(String(64))
    failures: Mapped[int] = mapped_column(Integer)
    last_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime)
    blocked_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
