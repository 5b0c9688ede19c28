"""Signed checkpoints of the back-office audit log: its head, once a day, under the statement key.

A hash chain proves every entry it still holds but cannot see its newest entries
deleted; a checkpoint signed with a key the database does not hold, and exported off
the database, lets ``alliance audit`` tell a truncated or rewritten log from the real one.
"""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import BigInteger, CheckConstraint, Date, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from alliance.models.base import Base, IdType, UTCDateTime


class AuditCheckpoint(Base):
    """The audit log's head at ``taken_at``, and the exact bytes signed over it. Append-only."""

    __tablename__ = "audit_checkpoints"
    __table_args__ = (CheckConstraint("entries >= 0", name="entries_not_negative"),)

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    # One checkpoint per UTC day: the unique constraint makes a second one that day fail.
    taken_on: Mapped[date] = mapped_column(Date, unique=True)
    taken_at: Mapped[datetime] = mapped_column(UTCDateTime)
    entries: Mapped[int] = mapped_column(BigInteger)
    head_hash: Mapped[str] = mapped_column(String(64))
    key_id: Mapped[str] = mapped_column(String(64))
    # The canonical JSON that was signed, and the detached signature as ``render_signature`` writes it.
    document: Mapped[str] = mapped_column(Text)
    signature: Mapped[str] = mapped_column(Text)
