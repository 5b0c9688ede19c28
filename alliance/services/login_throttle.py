"""Throttling console password guesses per (username, source address) and per source address.

An account lockout lets anyone who knows a username lock its owner out at will, so wrong
passwords are never counted on the account. They are counted twice instead:

* per (username, source address): after ``PAIR_FREE_FAILURES`` failures that pair waits
  ``FIRST_BACKOFF``, doubling with every further failure up to ``MAX_BACKOFF``. Guessing
  one account from one place is slowed down; its owner, elsewhere, is not.
* per source address, over every username: after ``SOURCE_FREE_FAILURES`` failures the
  address backs off the same way, so spraying one password over many usernames from one
  place is slowed down too.

While either backs off, every attempt from there is refused, even with the right
password, and counts as one more failure. IPv6 sources are counted per /64, the block a
single subscriber usually holds. The counts live in ``staff_login_throttles`` (named by
digests, not by the username or address), so every worker process shares them; both
rows of an attempt are locked for its duration, so parallel guesses are counted one
after the other; and rows without an attempt for ``THROTTLE_MEMORY`` are pruned on every
attempt, so the table holds no more than the last hour's guessing.
"""

from __future__ import annotations

import hashlib
import ipaddress
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, delete, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from alliance.models.staff import StaffLoginThrottle

PAIR_FREE_FAILURES = 5
SOURCE_FREE_FAILURES = 10
FIRST_BACKOFF = timedelta(minutes=1)
MAX_BACKOFF = timedelta(minutes=15)
THROTTLE_MEMORY = timedelta(hours=1)
# Rows pruned per attempt at most, so one login never pays for a long backlog at once.
PRUNE_BATCH = 500
IPV6_SUBSCRIBER_PREFIX = 64


@dataclass(frozen=True, slots=True)
class Attempt:
    """One login attempt's two throttle rows, locked, with their counts as they stood."""

    pair_key: str
    source_key: str
    username_digest: str
    pair_failures: int
    source_failures: int
    backing_off: bool


def _digest(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


def source_of(remote_address: str | None) -> str:
    """The source an attempt is counted against: the IPv4 address, or the IPv6 /64 around it."""
    try:
        address = ipaddress.ip_address(remote_address or "")
    except ValueError:
        return remote_address or "unknown"
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.ip_network(f"{address}/{IPV6_SUBSCRIBER_PREFIX}", strict=False))
    return str(address)


def begin(session: Session, *, username: str, remote_address: str | None, now: datetime) -> Attempt:
    """Lock (creating if need be) the attempt's pair and source rows and say whether either backs off."""
    source = source_of(remote_address)
    username_digest = _digest("username", username)
    pair_key, source_key = _digest("pair", username, source), _digest("source", source)
    # Always the pair first, then the source: two attempts never wait for each other in a circle.
    pair_failures, pair_until = _locked_row(session, key=pair_key, scope="pair", username_digest=username_digest,
                                            now=now)
    source_failures, source_until = _locked_row(session, key=source_key, scope="source", username_digest=None,
                                                now=now)
    backing_off = any(until is not None and until > now for until in (pair_until, source_until))
    return Attempt(pair_key, source_key, username_digest, pair_failures, source_failures, backing_off)


def _locked_row(session: Session, *, key: str, scope: str, username_digest: str | None,
                now: datetime) -> tuple[int, datetime | None]:
    query = select(StaffLoginThrottle.failures, StaffLoginThrottle.blocked_until,
                   StaffLoginThrottle.last_attempt_at).where(StaffLoginThrottle.key_digest == key).with_for_update()
    row = session.execute(query).first()
    if row is None:
        try:
            with session.begin_nested():
                session.execute(insert(StaffLoginThrottle).values(
                    key_digest=key, scope=scope, username_digest=username_digest, failures=0,
                    last_attempt_at=now, blocked_until=None))
        except IntegrityError:
            pass  # Another worker created it a moment ago; its row is locked below all the same.
        row = session.execute(query).one()
    if row.last_attempt_at < now - THROTTLE_MEMORY and (row.blocked_until is None or row.blocked_until <= now):
        # Forgotten, as if pruned: an hour without attempts starts the count afresh.
        return 0, None
    return row.failures, row.blocked_until


def backoff_until(failures: int, free_failures: int, now: datetime) -> datetime | None:
    """Until when a count of failures backs off: not below the free ones, then doubling up to the cap."""
    if failures < free_failures:
        return None
    doublings = min(failures - free_failures, 10)
    return now + min(FIRST_BACKOFF * (2 ** doublings), MAX_BACKOFF)


def record_failure(session: Session, attempt: Attempt, *, now: datetime) -> int:
    """Count a refused attempt against its pair and its source; returns the pair's failures now."""
    pair_failures = attempt.pair_failures + 1
    for key, failures, free in ((attempt.pair_key, pair_failures, PAIR_FREE_FAILURES),
                                (attempt.source_key, attempt.source_failures + 1, SOURCE_FREE_FAILURES)):
        session.execute(update(StaffLoginThrottle).where(StaffLoginThrottle.key_digest == key).values(
            failures=failures, last_attempt_at=now, blocked_until=backoff_until(failures, free, now)))
    return pair_failures


def record_success(session: Session, attempt: Attempt) -> None:
    """A successful login clears its pair; its source keeps any failures (a valid login must not wash a spray)."""
    session.execute(delete(StaffLoginThrottle).where(StaffLoginThrottle.key_digest == attempt.pair_key))
    if attempt.source_failures == 0:
        session.execute(delete(StaffLoginThrottle).where(StaffLoginThrottle.key_digest == attempt.source_key))


def forget_username(session: Session, username: str) -> int:
    """Lift every (username, source) backoff of one username, as setting their password does."""
    # A DELETE's result is a CursorResult; Session.execute types every result as Result.
    return cast(CursorResult[*tuple[Any, ...]], session.execute(delete(StaffLoginThrottle).where(
        StaffLoginThrottle.username_digest == _digest("username", username)))).rowcount


def prune(session: Session, attempt: Attempt, *, now: datetime) -> None:
    """Delete rows without an attempt for ``THROTTLE_MEMORY`` that no longer back off, but the attempt's own.

    Rows another attempt holds are skipped rather than waited for: they are in use, and
    waiting could make two attempts wait for each other.
    """
    stale = select(StaffLoginThrottle.key_digest).where(
        StaffLoginThrottle.key_digest.not_in([attempt.pair_key, attempt.source_key]),
        StaffLoginThrottle.last_attempt_at < now - THROTTLE_MEMORY,
        or_(StaffLoginThrottle.blocked_until.is_(None), StaffLoginThrottle.blocked_until <= now),
    ).limit(PRUNE_BATCH).with_for_update(skip_locked=True)
    session.execute(delete(StaffLoginThrottle).where(StaffLoginThrottle.key_digest.in_(stale)))
