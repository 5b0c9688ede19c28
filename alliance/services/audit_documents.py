"""The audit's checks of signed documents: statements, audit-log checkpoints, and the log heads they anchor.

The database keeps each statement twice: as the exact bytes the hub signed (JSON and
CSV) and as rows that the finance workflow, the console and the period reports read.
The signed bytes are what the partner holds, so they are the reference: the signature
must verify with the hub's statement key, and the rows must say what the document says.
Each statement and each checkpoint also anchors the audit log's head at its moment;
the log must still hold every anchored entry with the anchored hash.

This reads documents one by one in Python (parsing and signature checks are not SQL),
in batches by id, so memory stays flat however many statements there are.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Iterator, Mapping, Sequence, TypeAlias

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import Row, func, select
from sqlalchemy.orm import Session

from alliance.domain.audit_chain import ChainHead, anchor_problem
from alliance.domain.errors import ValidationFailed
from alliance.models import (
    AuditCheckpoint,
    AuditLogEntry,
    Partner,
    SettlementRun,
    SettlementStatement,
    SettlementStatementLine,
)
from alliance.services import audit_log
from alliance.services.audit_checkpoints import SignedCheckpoint, parse_checkpoint_document, stored_checkpoints
from settlement.statements import (
    Statement,
    StatementSignatureRejected,
    decimal_text,
    instant_text,
    parse_signature,
    parse_statement_json,
    render_csv,
    render_json,
    verify_statement,
)

BATCH_SIZE = 500


@dataclass
class Tally:
    """One check's problems as they are found: how many, and the first described."""

    name: str
    description: str
    problems: int = 0
    first_problem: str | None = None

    def add(self, problem: str | None) -> None:
        """Count ``problem`` (None is no problem), keeping the first one's text."""
        if problem is not None:
            self.problems += 1
            self.first_problem = self.first_problem or problem


@dataclass
class Anchors:
    """Every audit-log head a document anchors, in the order the documents were read."""

    # The first document naming each distinct head, and how many documents name it.
    first_source: dict[ChainHead, str] = field(default_factory=dict)
    sources: dict[ChainHead, int] = field(default_factory=dict)

    def add(self, source: str, anchor: ChainHead | None) -> None:
        """Remember that ``source`` anchors the log at ``anchor`` (statements closed before anchoring have none)."""
        if anchor is not None:
            self.first_source.setdefault(anchor, source)
            self.sources[anchor] = self.sources.get(anchor, 0) + 1


def check_statements(session: Session, public_keys: Mapping[str, Ed25519PublicKey] | None,
                     anchors: Anchors) -> list[Tally]:
    """Each statement's signatures (with keys) and its rows against its signed JSON; collects its anchor."""
    signed = Tally("statements_signed", "each statement's JSON and CSV verify with the hub's statement key")
    matching = Tally("statements_match_documents", "each statement's rows, lines and CSV say what its signed "
                     "JSON says")
    for statement, lines in _statements(session):
        label = (f"statement {statement.id} ({statement.partner_code}, cycle from "
                 f"{instant_text(statement.cycle_starts_at)})")
        if public_keys is not None:
            signed.add(_signature_problem(label, statement, public_keys))
        try:
            document = parse_statement_json(statement.document_json.encode("utf-8"))
        except ValidationFailed as error:
            matching.add(f"{label}: the signed JSON is not a statement ({error.detail})")
            continue
        matching.add(_statement_problem(label, document, statement, lines))
        anchors.add(label, document.audit_chain)
    return [matching] if public_keys is None else [signed, matching]


STATEMENT_COLUMNS = (
    SettlementStatement.id, SettlementStatement.currency, SettlementStatement.opening_balance_minor,
    SettlementStatement.net_minor, SettlementStatement.closing_balance_minor, SettlementStatement.due_date,
    SettlementStatement.rounding_residue_minor, SettlementStatement.document_json, SettlementStatement.document_csv,
    SettlementStatement.signature_json, SettlementStatement.signature_csv, SettlementStatement.key_id,
    SettlementRun.cycle_frequency, SettlementRun.cycle_starts_at, SettlementRun.cycle_ends_at,
    Partner.code.label("partner_code"),
)
LINE_COLUMNS = (
    SettlementStatementLine.statement_id, SettlementStatementLine.line_number, SettlementStatementLine.line_kind,
    SettlementStatementLine.price_per_point, SettlementStatementLine.points, SettlementStatementLine.count,
    SettlementStatementLine.reference, SettlementStatementLine.amount_minor,
    SettlementStatementLine.rounding_residue_minor,
)


# A statement's or a line's row, its columns read by name.
_Stored: TypeAlias = Row[*tuple[Any, ...]]


def _statements(session: Session) -> Iterator[tuple[_Stored, list[_Stored]]]:
    """Each statement with its run's cycle and its partner's code, and its lines, by id, a batch at a time.

    Plain rows, not ORM objects, so nothing accumulates in the session's identity map.
    """
    after_id = 0
    while True:
        rows = session.execute(
            select(*STATEMENT_COLUMNS)
            .join(SettlementRun, SettlementRun.id == SettlementStatement.run_id)
            .join(Partner, Partner.id == SettlementStatement.partner_id)
            .where(SettlementStatement.id > after_id).order_by(SettlementStatement.id).limit(BATCH_SIZE)
        ).all()
        if not rows:
            return
        lines: dict[int, list[_Stored]] = {row.id: [] for row in rows}
        for line in session.execute(select(*LINE_COLUMNS).where(SettlementStatementLine.statement_id.in_(lines))
                                    .order_by(SettlementStatementLine.statement_id,
                                              SettlementStatementLine.line_number)):
            lines[line.statement_id].append(line)
        for row in rows:
            yield row, lines[row.id]
        after_id = rows[-1].id


def _signature_problem(label: str, statement: _Stored,
                       public_keys: Mapping[str, Ed25519PublicKey]) -> str | None:
    for name, document, signature_file in (("JSON", statement.document_json, statement.signature_json),
                                           ("CSV", statement.document_csv, statement.signature_csv)):
        problem = verification_problem(document.encode("utf-8"), signature_file.encode("utf-8"), public_keys)
        if problem is not None:
            return f"{label}: the {name} signature does not verify ({problem})"
        if parse_signature(signature_file.encode("utf-8")).key_id != statement.key_id:
            return f"{label}: the {name} signature names another key than the row's {statement.key_id}"
    return None


def verification_problem(document: bytes, signature_file: bytes,
                         public_keys: Mapping[str, Ed25519PublicKey]) -> str | None:
    """Why a detached signature does not verify over ``document`` (its code and detail), or None."""
    try:
        verify_statement(document, parse_signature(signature_file), public_keys)
    except StatementSignatureRejected as error:
        return f"{error.code}: {error.detail}"
    return None


def _statement_problem(label: str, document: Statement, statement: _Stored, lines: Sequence[_Stored]) -> str | None:
    """The first field where the rows differ from the signed document, or None."""
    if render_json(document) != statement.document_json.encode("utf-8"):
        return f"{label}: the signed JSON is not in its canonical form"
    if render_csv(document) != statement.document_csv.encode("utf-8"):
        return f"{label}: the CSV does not say what the signed JSON says"
    fields = (
        ("partner_code", document.partner_code, statement.partner_code),
        ("currency", document.currency, statement.currency),
        ("cycle_frequency", str(document.cycle.frequency), statement.cycle_frequency),
        ("cycle_starts_at", document.cycle.starts_at, statement.cycle_starts_at),
        ("cycle_ends_at", document.cycle.ends_at, statement.cycle_ends_at),
        ("opening_balance_minor", document.opening_balance_minor, statement.opening_balance_minor),
        ("net_minor", document.net_minor, statement.net_minor),
        ("closing_balance_minor", document.closing_balance_minor, statement.closing_balance_minor),
        ("due_date", document.due_date, statement.due_date),
        ("rounding_residue_minor", document.rounding_residue_minor, statement.rounding_residue_minor),
        ("the number of lines", len(document.lines), len(lines)),
    )
    problem = _first_difference(fields)
    if problem is not None:
        return f"{label}: {problem}"
    # As many lines as the document's: the number of lines was compared above.
    for number, (signed, stored) in enumerate(zip(document.lines, lines, strict=True), start=1):
        problem = _first_difference((
            ("line_number", number, stored.line_number),
            ("line_kind", str(signed.line_kind), stored.line_kind),
            ("price_per_point", signed.price_per_point, stored.price_per_point),
            ("points", signed.points, stored.points),
            ("count", signed.count, stored.count),
            ("reference", signed.reference, stored.reference),
            ("amount_minor", signed.amount_minor, stored.amount_minor),
            ("rounding_residue_minor", signed.rounding_residue_minor, stored.rounding_residue_minor),
        ))
        if problem is not None:
            return f"{label}: line {number}: {problem}"
    return None


def _first_difference(fields: Sequence[tuple[str, Any, Any]]) -> str | None:
    for name, signed, stored in fields:
        # Decimals compare by value: the database may keep trailing zeros the document drops.
        if signed != stored:
            return f"{name} is {_shown(signed)} in the signed document, the row stores {_shown(stored)}"
    return None


def _shown(value: object) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, Decimal):
        return decimal_text(value)
    if isinstance(value, datetime):
        return instant_text(value)
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


def check_checkpoints(session: Session, public_keys: Mapping[str, Ed25519PublicKey] | None,
                      copies: Sequence[SignedCheckpoint], anchors: Anchors) -> list[Tally]:
    """Stored checkpoints and exported copies: signatures (with keys), rows against documents; collects anchors."""
    signed = Tally("audit_checkpoints_signed", "each audit-log checkpoint, stored or exported, verifies with the "
                   "hub's statement key")
    matching = Tally("audit_checkpoints_match_documents", "each checkpoint, stored or exported, is a checkpoint "
                     "document, and each stored row says what it signed")
    # One checkpoint a day: all of them fit in memory for as long as the hub will run.
    rows = {row.id: row for row in session.execute(select(
        AuditCheckpoint.id, AuditCheckpoint.taken_at, AuditCheckpoint.entries, AuditCheckpoint.head_hash))}
    for source, item in [("checkpoint", item) for item in stored_checkpoints(session)] + \
            [("exported checkpoint", item) for item in copies]:
        label = f"{source} {item.checkpoint_id}"
        try:
            taken_at, head = parse_checkpoint_document(item.document)
        except ValidationFailed as error:
            matching.add(f"{label}: the signed document is not a checkpoint ({error.detail})")
            taken_at, head = None, None
        if taken_at is not None:
            label = f"{label} (taken {instant_text(taken_at)})"
        if public_keys is not None:
            problem = verification_problem(item.document, item.signature, public_keys)
            signed.add(None if problem is None else f"{label}: the signature does not verify ({problem})")
        if head is None:
            continue
        if source == "checkpoint":
            row = rows[item.checkpoint_id]
            problem = _first_difference((("taken_at", taken_at, row.taken_at), ("entries", head.entries, row.entries),
                                         ("head_hash", head.head_hash, row.head_hash)))
            matching.add(None if problem is None else f"{label}: {problem}")
        anchors.add(label, head)
    return [matching] if public_keys is None else [signed, matching]


def check_anchors(session: Session, anchors: Anchors) -> Tally:
    """Every anchored head against the log: the entry at that position exists and has that hash."""
    tally = Tally("audit_log_anchors", "the audit log still holds every head a signed statement or checkpoint "
                  "anchored: not truncated, not rewritten")
    hashes = audit_log.entry_hashes(session, (anchor.entries for anchor in anchors.first_source))
    newest = session.execute(select(func.coalesce(func.max(AuditLogEntry.sequence), 0))).scalar_one()
    for anchor, source in anchors.first_source.items():
        problem = anchor_problem(anchor, hashes.get(anchor.entries), newest)
        if problem is not None:
            tally.problems += anchors.sources[anchor] - 1
            tally.add(f"{source} anchors the audit log at {anchor.entries} entries with head {anchor.head_hash}; "
                      f"{problem}")
    return tally
