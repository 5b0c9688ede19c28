"""Signed daily checkpoints of the audit log's head, and their export for keeping off the database.

The hash chain proves every entry the log still holds; a checkpoint records what the
log held at a moment (its entries and the newest entry's hash) and signs it with the
hub's statement key, which is configuration and never in the database. Someone who can
write the database can delete checkpoint rows along with the log's tail, so the operator
exports them (``alliance audit-checkpoints export``) and keeps the file elsewhere;
``alliance audit --checkpoints FILE`` checks the log against those copies too.

A checkpoint document is canonical JSON (``settlement.statements.canonical_json``)::

    {"entries": 42, "format": "points-alliance-audit-checkpoint/1",
     "head_hash": "…", "taken_at": "2026-12-06T00:00:00Z"}

signed like a statement: a detached Ed25519 signature over those exact bytes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone

from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from alliance.domain.audit_chain import ChainHead
from alliance.domain.errors import ValidationFailed
from alliance.models import AuditCheckpoint
from alliance.services import audit_log
from alliance.services.jobs import Job
from settlement.keys import StatementSigner
from settlement.statements import canonical_json, instant_text, parse_instant, render_signature, sign_statement

CHECKPOINT_FORMAT = "points-alliance-audit-checkpoint/1"
EXPORT_FORMAT = "points-alliance-audit-checkpoints/1"
CHECKPOINT_JOB_NAME = "checkpoint-audit-log"
# Hourly, so a day is never missed for long after a pause; only the first run of a UTC day signs.
CHECKPOINT_INTERVAL_S = 3600


@dataclass(frozen=True, slots=True)
class SignedCheckpoint:
    """A checkpoint as it was signed: the exact document bytes and its detached signature file."""

    checkpoint_id: int
    document: bytes
    signature: bytes


def checkpoint_document(taken_at: datetime, head: ChainHead) -> bytes:
    """The canonical bytes a checkpoint signs."""
    return canonical_json({"format": CHECKPOINT_FORMAT, "taken_at": instant_text(taken_at),
                           "entries": head.entries, "head_hash": head.head_hash})


def parse_checkpoint_document(document: bytes) -> tuple[datetime, ChainHead]:
    """When a checkpoint was taken and the head it records, or ``ValidationFailed``.

    Only a document that renders back to the same bytes is accepted, so what is read
    is exactly what was signed.
    """
    try:
        fields = json.loads(document.decode("utf-8"))
        if not isinstance(fields, dict) or set(fields) != {"format", "taken_at", "entries", "head_hash"} \
                or fields["format"] != CHECKPOINT_FORMAT:
            raise ValidationFailed(f"a checkpoint document holds exactly the four fields of {CHECKPOINT_FORMAT}")
        taken_at, head = parse_instant(fields["taken_at"]), ChainHead(fields["entries"], fields["head_hash"])
    except ValidationFailed:
        raise
    except (UnicodeDecodeError, ValueError, TypeError) as error:
        # json.JSONDecodeError is a ValueError, and so is a malformed date.
        raise ValidationFailed(f"not a checkpoint document: {type(error).__name__} {error}") from None
    if checkpoint_document(taken_at, head) != document:
        raise ValidationFailed("the checkpoint document is not in its canonical form")
    return taken_at, head


def take_checkpoint(session: Session, *, now: datetime, signer: StatementSigner) -> int:
    """Sign and store the log's head for ``now``'s UTC day; 0 when that day already has its checkpoint."""
    taken_on = now.astimezone(timezone.utc).date()
    if session.scalar(select(AuditCheckpoint.id).where(AuditCheckpoint.taken_on == taken_on)) is not None:
        return 0
    head = audit_log.head(session)
    document = checkpoint_document(now, head)
    signature = render_signature(sign_statement(document, signer.signing_key, signer.key_id))
    try:
        # A savepoint, so that losing a race to another process leaves this transaction usable.
        with session.begin_nested():
            session.execute(insert(AuditCheckpoint).values(
                taken_on=taken_on, taken_at=now, entries=head.entries,
                head_hash=head.head_hash, key_id=signer.key_id, document=document.decode("utf-8"),
                signature=signature.decode("utf-8"),
            ))
    except IntegrityError:
        # The unique day: another process signed this day's checkpoint first.
        return 0
    return 1


def checkpoint_job(signer: StatementSigner) -> Job:
    """The scheduler job that signs one checkpoint of the audit log per UTC day."""

    def run(session: Session, *, now: datetime, limit: int) -> int:
        return take_checkpoint(session, now=now, signer=signer)

    return Job(CHECKPOINT_JOB_NAME, CHECKPOINT_INTERVAL_S, run, "checkpoints signed")


def stored_checkpoints(session: Session) -> list[SignedCheckpoint]:
    """Every stored checkpoint, oldest first, as the bytes that were signed."""
    rows = session.execute(select(AuditCheckpoint.id, AuditCheckpoint.document, AuditCheckpoint.signature)
                           .order_by(AuditCheckpoint.id)).all()
    return [SignedCheckpoint(row.id, row.document.encode("utf-8"), row.signature.encode("utf-8")) for row in rows]


def export_document(checkpoints: list[SignedCheckpoint]) -> bytes:
    """Checkpoints as one canonical JSON file to keep off the database; each keeps its exact signed bytes."""
    return canonical_json({"format": EXPORT_FORMAT, "checkpoints": [
        {"id": item.checkpoint_id, "document": item.document.decode("utf-8"),
         "signature": item.signature.decode("utf-8")}
        for item in checkpoints
    ]})


def parse_export(document: bytes) -> list[SignedCheckpoint]:
    """The checkpoints of a file ``export_document`` wrote, or ``ValidationFailed``."""
    try:
        fields = json.loads(document.decode("utf-8"))
        if not isinstance(fields, dict) or fields.get("format") != EXPORT_FORMAT:
            raise ValidationFailed(f"an exported checkpoints file is a JSON object of format {EXPORT_FORMAT}")
        return [SignedCheckpoint(_whole(item["id"]), item["document"].encode("utf-8"),
                                 item["signature"].encode("utf-8")) for item in fields["checkpoints"]]
    except ValidationFailed:
        raise
    except (UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError) as error:
        # A field missing or of the wrong type (a document that is not text) is a malformed file.
        raise ValidationFailed(f"not an exported checkpoints file: {type(error).__name__} {error}") from None


def _whole(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValidationFailed("a checkpoint id is a whole number")
    return value
