"""The back-office audit trail: append a hash-chained entry for every change, verify the chain.

Appends are serialised (an advisory lock on PostgreSQL, the write lock on SQLite) so
that each entry links to the one before it; an entry is written in the same transaction
as the change it records, so a change without its entry cannot exist.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Iterable, Iterator, Mapping

from sqlalchemy import ColumnElement, func, insert, select
from sqlalchemy.orm import Session

from alliance.domain.audit_chain import (
    GENESIS_HASH,
    AuditEntry,
    ChainHead,
    ChainReport,
    json_snapshot,
    next_entry,
    verify_chain,
)
from alliance.models import AuditLogEntry
from alliance.storage.adapters import storage_for

AUDIT_LOG_LOCK_KEY = 7_150_002
VERIFY_BATCH_SIZE = 1000
VERIFY_ACTION = "audit.verify"
MAX_ACTORS_LISTED = 500


def append(
    session: Session, *, actor: str, action: str, subject: str, now: datetime,
    before: Mapping[str, object] | None = None, after: Mapping[str, object] | None = None,
) -> AuditEntry:
    """Record one change, linked to the previous entry."""
    storage_for(session).lock(session, AUDIT_LOG_LOCK_KEY)
    last = session.scalars(select(AuditLogEntry).order_by(AuditLogEntry.sequence.desc()).limit(1)).first()
    entry = next_entry(_as_entry(last) if last else None, occurred_at=now, actor=actor, action=action,
                       subject=subject, before=before, after=after)
    session.execute(insert(AuditLogEntry).values(
        sequence=entry.sequence, occurred_at=entry.occurred_at, actor=entry.actor, action=entry.action,
        subject=entry.subject, before=json_snapshot(entry.before), after=json_snapshot(entry.after),
        previous_hash=entry.previous_hash, entry_hash=entry.entry_hash,
    ))
    return entry


def head(session: Session) -> ChainHead:
    """The log's newest entry as a ``ChainHead``: what a statement or checkpoint anchors.

    Entries are appended under a lock held until their transaction ends, so the entries
    this transaction sees are always a whole prefix of the chain.
    """
    newest = session.execute(
        select(AuditLogEntry.sequence, AuditLogEntry.entry_hash).order_by(AuditLogEntry.sequence.desc()).limit(1)
    ).first()
    return ChainHead(newest.sequence, newest.entry_hash) if newest else ChainHead(0, GENESIS_HASH)


def entry_hashes(session: Session, sequences: Iterable[int]) -> dict[int, str]:
    """The stored hash of each entry among ``sequences`` that exists, by sequence."""
    wanted = sorted(set(sequences))
    found: dict[int, str] = {}
    for start in range(0, len(wanted), VERIFY_BATCH_SIZE):
        found.update((row.sequence, row.entry_hash) for row in session.execute(
            select(AuditLogEntry.sequence, AuditLogEntry.entry_hash)
            .where(AuditLogEntry.sequence.in_(wanted[start:start + VERIFY_BATCH_SIZE]))
        ))
    return found


def entries_after(session: Session, *, after_sequence: int, limit: int) -> list[AuditEntry]:
    """Up to ``limit`` entries after ``after_sequence``, in sequence order."""
    rows = session.scalars(select(AuditLogEntry).where(AuditLogEntry.sequence > after_sequence)
                           .order_by(AuditLogEntry.sequence).limit(limit)).all()
    return [_as_entry(row) for row in rows]


def verify(session: Session) -> ChainReport:
    """Walk the whole log in sequence order and report the first broken link, if any."""
    return verify_chain(_stream(session))


@dataclass(frozen=True, slots=True)
class AuditFilter:
    """Which entries a reader wants: actor, action and subject by how they start, and a span of time.

    ``since`` is inclusive and ``until`` exclusive, so consecutive days do not overlap.
    """

    actor: str | None = None
    action: str | None = None
    subject: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    def conditions(self) -> list[ColumnElement[bool]]:
        """The filter as conditions on the log's rows."""
        conditions: list[ColumnElement[bool]] = []
        for column, prefix in ((AuditLogEntry.actor, self.actor), (AuditLogEntry.action, self.action),
                               (AuditLogEntry.subject, self.subject)):
            if prefix:
                conditions.append(column.startswith(prefix, autoescape=True))
        if self.since is not None:
            conditions.append(AuditLogEntry.occurred_at >= self.since)
        if self.until is not None:
            conditions.append(AuditLogEntry.occurred_at < self.until)
        return conditions


def entries_page(session: Session, *, filters: AuditFilter, page: int, page_size: int,
                 newest_first: bool = True) -> tuple[list[AuditEntry], int]:
    """One page of the entries ``filters`` lets through, newest first unless asked otherwise, and how many in all."""
    conditions = filters.conditions()
    total = session.scalar(select(func.count()).select_from(AuditLogEntry).where(*conditions)) or 0
    order = AuditLogEntry.sequence.desc() if newest_first else AuditLogEntry.sequence.asc()
    rows = session.scalars(select(AuditLogEntry).where(*conditions).order_by(order)
                           .offset((page - 1) * page_size).limit(page_size)).all()
    return [_as_entry(row) for row in rows], total


def matching_entries(session: Session, *, filters: AuditFilter, newest_first: bool = True) -> Iterator[AuditEntry]:
    """Every entry ``filters`` lets through, read in batches by sequence (memory stays flat)."""
    conditions = filters.conditions()
    last: int | None = None
    while True:
        query = select(AuditLogEntry).where(*conditions)
        if last is not None:
            query = query.where(AuditLogEntry.sequence < last if newest_first else AuditLogEntry.sequence > last)
        order = AuditLogEntry.sequence.desc() if newest_first else AuditLogEntry.sequence.asc()
        rows = session.scalars(query.order_by(order).limit(VERIFY_BATCH_SIZE)).all()
        if not rows:
            return
        for row in rows:
            yield _as_entry(row)
        last = rows[-1].sequence


def actors(session: Session) -> list[str]:
    """The actors the log names, alphabetically (at most ``MAX_ACTORS_LISTED``), to offer in a filter."""
    return list(session.scalars(select(AuditLogEntry.actor).distinct().order_by(AuditLogEntry.actor)
                                .limit(MAX_ACTORS_LISTED)))


def latest_entry(session: Session, *, action: str) -> AuditEntry | None:
    """The newest entry with exactly this action, or None."""
    row = session.scalars(select(AuditLogEntry).where(AuditLogEntry.action == action)
                          .order_by(AuditLogEntry.sequence.desc()).limit(1)).first()
    return _as_entry(row) if row is not None else None


def record_verification(session: Session, *, actor: str, now: datetime) -> ChainReport:
    """Verify the whole chain now and keep the outcome as an ``audit.verify`` entry (who checked, when, what).

    The entry is appended after the walk, so it is not among the entries it reports on.
    """
    report = verify(session)
    broken = report.first_break
    after: dict[str, Any] = {"entries_checked": report.entries_checked, "verified": broken is None,
                             "last_sequence": report.last_sequence}
    if broken is not None:
        after.update(broken_at_sequence=broken.sequence, reason=str(broken.reason), detail=broken.detail)
    append(session, actor=actor, action=VERIFY_ACTION, subject="audit_log", now=now, after=after)
    return report


def _stream(session: Session) -> Iterator[AuditEntry]:
    after_sequence = 0
    while True:
        rows = session.scalars(
            select(AuditLogEntry).where(AuditLogEntry.sequence > after_sequence)
            .order_by(AuditLogEntry.sequence).limit(VERIFY_BATCH_SIZE)
        ).all()
        if not rows:
            return
        for row in rows:
            yield _as_entry(row)
        after_sequence = rows[-1].sequence


def _as_entry(row: AuditLogEntry) -> AuditEntry:
    return AuditEntry(
        sequence=row.sequence, occurred_at=row.occurred_at, actor=row.actor, action=row.action, subject=row.subject,
        before=row.before, after=row.after, previous_hash=row.previous_hash, entry_hash=row.entry_hash,
    )
