"""The back-office audit trail: append a hash-chained entry for every change, verify the chain.

Appends are serialised (an advisory lock on PostgreSQL, the write lock on SQLite) so
that each entry links to the one before it; an entry is written in the same transaction
as the change it records, so a change without its entry cannot exist.
"""

from __future__ import annotations

from datetime import datetime
from typing import Iterable, Iterator, Mapping

from sqlalchemy import insert, select
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
