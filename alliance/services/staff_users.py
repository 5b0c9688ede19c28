"""Staff logins for the web console: accounts, passwords, throttled guessing and server-side sessions.

Passwords are kept only as scrypt hashes (werkzeug's ``generate_password_hash``: a
random salt per password, a memory-hard key derivation), compared in constant time.
Every refusal looks and costs the same: one message, one status, and one password-hash
verification, whether the username is unknown, the password wrong, the account disabled
or the attempt's source backing off, so neither the words nor the time tell which
usernames exist. Guessing is slowed down per (username, source address) and per source
address (``login_throttle``), never by locking the account, which an outsider could do
at will. A session is a row found by the SHA-256 of a random nonce carried in the signed
cookie: logout, disabling the user, the idle timeout and the absolute lifetime all end
it here, whatever the browser still holds.

Every change to an account (created, roles changed, disabled, enabled again, password
set, with the reason when one is given), the moment a known account starts backing off
from one address, and every login and logout go to the audit log in the same
transaction, without the password or the address. The last active admin cannot be
disabled or lose the admin role, and no admin removes their own admin role.
"""

from __future__ import annotations

import functools
import hashlib
import re
import secrets
import zoneinfo
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, NoReturn, cast

from sqlalchemy import CursorResult, insert, select, update
from sqlalchemy.orm import Session
from werkzeug.security import check_password_hash, generate_password_hash

from alliance.domain.errors import AllianceError, Conflict, InvalidState, NotFound, ValidationFailed
from alliance.models import StaffSession, StaffUser
from alliance.models.staff import StaffPerson
from alliance.services import audit_log, login_throttle
from alliance.services.oauth import validate_roles
from alliance.services.staff_people import CONSOLE_ACTOR_PREFIX, person_id_of

USERNAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]{1,63}\Z")
MIN_PASSWORD_CHARACTERS = 12
MAX_PASSWORD_CHARACTERS = 256
MAX_USERNAME_CHARACTERS = 64
ADMIN_ROLE = "admin"
IDLE_TIMEOUT = timedelta(minutes=30)
SESSION_LIFETIME = timedelta(hours=12)
# Writing last_seen_at on every page would make each view a write; a minute's slack in
# the idle timeout is worth one write per minute instead.
LAST_SEEN_RESOLUTION = timedelta(minutes=1)
PASSWORD_METHOD = "scrypt"
GENERATED_PASSWORD_BYTES = 18
# A hash of a password nobody has, checked for unknown usernames so they take as long.
_UNKNOWN_USER_HASH = generate_password_hash(secrets.token_urlsafe(32), method=PASSWORD_METHOD)
# The one answer to every refused login, so that it tells nothing about why.
REFUSAL = ("unknown username or wrong password, or too many attempts from here: "
           "check both and try again in a few minutes")


class LoginRefused(AllianceError):
    """Wrong username or password, a disabled account, or a source backing off: all alike."""

    code = "login_refused"
    http_status = 401
    title = "Login refused"


@dataclass(frozen=True, slots=True)
class StaffIdentity:
    """Who a live console session belongs to, as read afresh on every request."""

    user_id: int
    username: str
    display_name: str
    roles: frozenset[str]
    session_id: int
    # The handle of the staff person whose login this is (four-eyes rules compare people).
    person: str
    # The IANA zone this user chose for the console's dates; None means the alliance's zone.
    time_zone: str | None = None


@dataclass(frozen=True, slots=True)
class StartedSession:
    """A session just started: the nonce goes into the cookie and is stored only as a digest."""

    nonce: str
    identity: StaffIdentity


def generate_password() -> str:
    """A random password of about 144 bits, for ``--generate-password`` and the demo."""
    return secrets.token_urlsafe(GENERATED_PASSWORD_BYTES)


def _nonce_digest(nonce: str) -> str:
    return hashlib.sha256(nonce.encode()).hexdigest()


def _checked_password(password: str) -> str:
    if not isinstance(password, str) or not MIN_PASSWORD_CHARACTERS <= len(password) <= MAX_PASSWORD_CHARACTERS:
        raise ValidationFailed(f"a password has {MIN_PASSWORD_CHARACTERS}-{MAX_PASSWORD_CHARACTERS} characters",
                               fields={"password": ["length"]})
    return password


def _user(session: Session, username: str, *, lock: bool = False) -> StaffUser:
    query = select(StaffUser).where(StaffUser.username == username)
    user = session.scalar(query.with_for_update() if lock else query)
    if user is None:
        raise NotFound(f"no staff user {username!r}")
    return user


def add_user(session: Session, *, username: str, display_name: str, roles: list[str] | tuple[str, ...],
             person: str, password: str, actor: str, now: datetime) -> StaffUser:
    """Create an active console login of one staff person, with some back-office roles."""
    if not USERNAME_PATTERN.match(username or ""):
        raise ValidationFailed("a username is 2-64 lowercase letters, digits, '.', '_' or '-'",
                               fields={"username": ["malformed"]})
    display_name = (display_name or "").strip()
    if not display_name or len(display_name) > 200:
        raise ValidationFailed("a display name has 1-200 characters", fields={"display_name": ["length"]})
    checked_roles = validate_roles(list(roles))
    password_hash = generate_password_hash(_checked_password(password), method=PASSWORD_METHOD)
    person_id = person_id_of(session, person)
    if session.scalar(select(StaffUser.id).where(StaffUser.username == username)) is not None:
        raise Conflict(f"staff user {username!r} already exists")
    user_id = session.execute(insert(StaffUser).values(
        username=username, display_name=display_name, roles=" ".join(checked_roles), password_hash=password_hash,
        status="active", password_changed_at=now, created_at=now, person_id=person_id,
    ).returning(StaffUser.id)).scalar_one()
    audit_log.append(session, actor=actor, action="staff.add", subject=f"staff:{username}", now=now,
                     after={"display_name": display_name, "roles": list(checked_roles), "status": "active",
                            "person": person})
    return session.get_one(StaffUser, user_id)


def list_users(session: Session) -> list[StaffUser]:
    """Every staff user, by username."""
    return list(session.scalars(select(StaffUser).order_by(StaffUser.username)))


def disable_user(session: Session, *, username: str, actor: str, now: datetime, reason: str | None = None) -> None:
    """Disable a user and end every session of theirs at once (never the last active admin, nor oneself)."""
    user = _user(session, username, lock=True)
    if user.status == "disabled":
        raise InvalidState(f"staff user {username!r} is already disabled")
    if actor == f"{CONSOLE_ACTOR_PREFIX}{username}":
        raise InvalidState("you cannot disable your own login; another admin can")
    if ADMIN_ROLE in user.roles.split():
        _keep_an_admin(session, user, "disabling")
    session.execute(update(StaffUser).where(StaffUser.id == user.id).values(status="disabled"))
    ended = _end_sessions(session, user_id=user.id, now=now)
    audit_log.append(session, actor=actor, action="staff.disable", subject=f"staff:{username}", now=now,
                     before={"status": "active"},
                     after={"status": "disabled", "sessions_ended": ended, **_reason(reason)})


def enable_user(session: Session, *, username: str, actor: str, now: datetime, reason: str | None = None) -> None:
    """Let a disabled user sign in again (with their password as it was)."""
    user = _user(session, username, lock=True)
    if user.status == "active":
        raise InvalidState(f"staff user {username!r} is already active")
    session.execute(update(StaffUser).where(StaffUser.id == user.id).values(status="active"))
    audit_log.append(session, actor=actor, action="staff.enable", subject=f"staff:{username}", now=now,
                     before={"status": "disabled"}, after={"status": "active", **_reason(reason)})


def set_roles(session: Session, *, username: str, roles: list[str] | tuple[str, ...], actor: str, now: datetime,
              reason: str | None = None) -> tuple[str, ...]:
    """Give a user exactly ``roles``; the last active admin keeps admin, and no admin removes their own.

    The user's live sessions see the new roles on their next page (roles are read on
    every request). Answers the roles as stored, in their fixed order.
    """
    checked = validate_roles(list(roles))
    user = _user(session, username, lock=True)
    current = tuple(user.roles.split())
    if set(checked) == set(current):
        raise InvalidState(f"staff user {username!r} already has exactly the roles {', '.join(current)}")
    if ADMIN_ROLE in current and ADMIN_ROLE not in checked:
        if actor == f"{CONSOLE_ACTOR_PREFIX}{username}":
            raise InvalidState("you cannot remove your own admin role; another admin can")
        _keep_an_admin(session, user, "removing the admin role of")
    session.execute(update(StaffUser).where(StaffUser.id == user.id).values(roles=" ".join(checked)))
    audit_log.append(session, actor=actor, action="staff.set_roles", subject=f"staff:{username}", now=now,
                     before={"roles": list(current)}, after={"roles": list(checked), **_reason(reason)})
    return checked


def _keep_an_admin(session: Session, user: StaffUser, change: str) -> None:
    """Refuse a change that would leave no active admin (the other admins' rows are locked while counting)."""
    if user.status != "active":
        return
    others = session.scalars(select(StaffUser.id).where(
        StaffUser.id != user.id, StaffUser.status == "active",
        (StaffUser.roles == ADMIN_ROLE) | StaffUser.roles.startswith(f"{ADMIN_ROLE} "),
    ).with_for_update()).all()
    if not others:
        raise InvalidState(f"{change} {user.username!r} would leave no active admin; give another login the "
                           "admin role first")


def _reason(reason: str | None) -> dict[str, str]:
    """A change's reason for its audit entry (nothing when none was given)."""
    reason = (reason or "").strip()
    return {"reason": reason} if reason else {}


@dataclass(frozen=True, slots=True)
class StaffLogin:
    """A console login as the admin's list shows it, with the person it belongs to."""

    username: str
    display_name: str
    person: str
    person_name: str
    roles: tuple[str, ...]
    status: str
    last_login_at: datetime | None
    password_changed_at: datetime
    created_at: datetime


def list_logins(session: Session) -> list[StaffLogin]:
    """Every console login with its person, by username."""
    rows = session.execute(select(StaffUser, StaffPerson.handle, StaffPerson.name)
                           .join(StaffPerson, StaffPerson.id == StaffUser.person_id)
                           .order_by(StaffUser.username)).all()
    return [_login(user, handle, name) for user, handle, name in rows]


def login_of(session: Session, *, username: str) -> StaffLogin:
    """One console login with its person (NotFound otherwise)."""
    row = session.execute(select(StaffUser, StaffPerson.handle, StaffPerson.name)
                          .join(StaffPerson, StaffPerson.id == StaffUser.person_id)
                          .where(StaffUser.username == username)).first()
    if row is None:
        raise NotFound(f"no staff user {username!r}")
    return _login(*row)


def _login(user: StaffUser, handle: str, name: str) -> StaffLogin:
    return StaffLogin(user.username, user.display_name, handle, name, tuple(user.roles.split()), user.status,
                      user.last_login_at, user.password_changed_at, user.created_at)


def set_password(session: Session, *, username: str, password: str, actor: str, now: datetime,
                 reason: str | None = None) -> None:
    """Set a new password, lift the user's login backoffs, and end their sessions (they sign in again)."""
    # The throttle rows before the user's row: a login locks them in that order too.
    lifted = login_throttle.forget_username(session, username)
    user = _user(session, username, lock=True)
    session.execute(update(StaffUser).where(StaffUser.id == user.id).values(
        password_hash=generate_password_hash(_checked_password(password), method=PASSWORD_METHOD),
        password_changed_at=now))
    ended = _end_sessions(session, user_id=user.id, now=now)
    audit_log.append(session, actor=actor, action="staff.set_password", subject=f"staff:{username}", now=now,
                     after={"sessions_ended": ended, "backoffs_lifted": lifted, **_reason(reason)})


def set_time_zone(session: Session, *, username: str, time_zone: str | None, actor: str, now: datetime) -> None:
    """Choose the IANA zone the console shows this user's dates in (None: the alliance's own zone)."""
    if time_zone is not None and time_zone not in available_time_zones():
        raise ValidationFailed(f"{time_zone!r} is not an IANA time zone such as Europe/Berlin",
                               fields={"time_zone": ["unknown"]})
    user = _user(session, username, lock=True)
    if user.time_zone == time_zone:
        return
    session.execute(update(StaffUser).where(StaffUser.id == user.id).values(time_zone=time_zone))
    audit_log.append(session, actor=actor, action="staff.set_time_zone", subject=f"staff:{username}", now=now,
                     before={"time_zone": user.time_zone}, after={"time_zone": time_zone})


@functools.cache
def available_time_zones() -> frozenset[str]:
    """Every IANA zone this machine knows (the system's tz database, or the ``tzdata`` package)."""
    return frozenset(zoneinfo.available_timezones())


def _end_sessions(session: Session, *, user_id: int, now: datetime) -> int:
    # An UPDATE's result is a CursorResult; Session.execute types every result as Result.
    return cast(CursorResult[*tuple[Any, ...]], session.execute(
        update(StaffSession).where(StaffSession.user_id == user_id, StaffSession.ended_at.is_(None))
        .values(ended_at=now))).rowcount


def log_in(session: Session, *, username: str, password: str, remote_address: str | None,
           now: datetime) -> StartedSession:
    """Check a username and password from an address and start a session; the caller commits either way.

    A refusal still changes the throttle's counts, so the caller commits before showing
    the ``LoginRefused``.
    """
    username, password = (username or "")[:MAX_USERNAME_CHARACTERS + 1], password or ""
    attempt = login_throttle.begin(session, username=username, remote_address=remote_address, now=now)
    login_throttle.prune(session, attempt, now=now)
    user = session.scalar(select(StaffUser).where(StaffUser.username == username))
    # Exactly one hash verification on every path, before anything decides the outcome,
    # so that a refusal takes as long whatever its reason. A password longer than any
    # allowed one is cut to one character over the limit: it still cannot match, and
    # the verification costs no more than for a valid one.
    matches = check_password_hash(user.password_hash if user is not None else _UNKNOWN_USER_HASH,
                                  password[:MAX_PASSWORD_CHARACTERS + 1])
    if attempt.backing_off or user is None or user.status != "active" or not matches:
        _refuse(session, attempt, user, now)
    login_throttle.record_success(session, attempt)
    session.execute(update(StaffUser).where(StaffUser.id == user.id).values(last_login_at=now))
    nonce = secrets.token_urlsafe(32)
    session_id = session.execute(insert(StaffSession).values(
        user_id=user.id, nonce_hash=_nonce_digest(nonce), created_at=now, last_seen_at=now,
    ).returning(StaffSession.id)).scalar_one()
    audit_log.append(session, actor=f"console:{user.username}", action="staff.login",
                     subject=f"staff:{user.username}", now=now)
    person = session.execute(select(StaffPerson.handle).where(StaffPerson.id == user.person_id)).scalar_one()
    return StartedSession(nonce, StaffIdentity(user.id, user.username, user.display_name,
                                               frozenset(user.roles.split()), session_id, person))


def _refuse(session: Session, attempt: login_throttle.Attempt, user: StaffUser | None, now: datetime) -> NoReturn:
    """Count the failure, note in the audit log when a known account starts backing off somewhere, refuse."""
    pair_failures = login_throttle.record_failure(session, attempt, now=now)
    if user is not None and pair_failures == login_throttle.PAIR_FREE_FAILURES:
        # Only the account and the count: the address is personal data, and the audit log keeps nothing of the kind.
        until = login_throttle.backoff_until(pair_failures, login_throttle.PAIR_FREE_FAILURES, now)
        audit_log.append(session, actor="console:login", action="staff.lockout", subject=f"staff:{user.username}",
                         now=now, after={"scope": "one source address", "failed_logins": pair_failures,
                                         "backing_off_until": until.isoformat() if until else None})
    raise LoginRefused(REFUSAL)


def identity_for(session: Session, *, nonce: str, now: datetime) -> StaffIdentity | None:
    """The live session's user with their current roles, or None (ending a session that has timed out)."""
    row = session.execute(
        select(StaffSession, StaffUser, StaffPerson.handle).join(StaffUser, StaffUser.id == StaffSession.user_id)
        .join(StaffPerson, StaffPerson.id == StaffUser.person_id)
        .where(StaffSession.nonce_hash == _nonce_digest(nonce), StaffSession.ended_at.is_(None))
    ).first()
    if row is None:
        return None
    staff_session, user, person = row
    if user.status != "active" or now - staff_session.last_seen_at > IDLE_TIMEOUT \
            or now - staff_session.created_at > SESSION_LIFETIME:
        session.execute(update(StaffSession).where(StaffSession.id == staff_session.id).values(ended_at=now))
        return None
    if now - staff_session.last_seen_at >= LAST_SEEN_RESOLUTION:
        session.execute(update(StaffSession).where(StaffSession.id == staff_session.id).values(last_seen_at=now))
    return StaffIdentity(user.id, user.username, user.display_name, frozenset(user.roles.split()), staff_session.id,
                         person, user.time_zone)


def log_out(session: Session, *, nonce: str, now: datetime) -> None:
    """End the session this nonce names, if it is live."""
    row = session.execute(
        select(StaffSession.id, StaffUser.username).join(StaffUser, StaffUser.id == StaffSession.user_id)
        .where(StaffSession.nonce_hash == _nonce_digest(nonce), StaffSession.ended_at.is_(None))
    ).first()
    if row is None:
        return
    session.execute(update(StaffSession).where(StaffSession.id == row.id).values(ended_at=now))
    audit_log.append(session, actor=f"console:{row.username}", action="staff.logout", subject=f"staff:{row.username}",
                     now=now)
