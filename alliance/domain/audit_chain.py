"""An append-only, hash-chained audit log of back-office changes.

Each entry's hash is the SHA-256 of a canonical JSON form of its content and of the
previous entry's hash, so editing, deleting, reordering or inserting an entry breaks
every later link. What the chain cannot see on its own is the removal of its newest
entries, or a tail rewritten and hashed again: a ``ChainHead`` kept outside the table
(each signed settlement statement, each signed daily checkpoint) anchors the chain, and
``anchor_problem`` says whether the log still holds it.

The canonical form writes Decimals and the datetimes inside ``before``/``after`` as
strings, so a snapshot stored as JSON and read back (with those strings) hashes to the
same bytes it hashed to when written.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from dataclasses import dataclass
from datetime import date, datetime, timezone
from decimal import Decimal
from enum import StrEnum
from typing import Any, Iterable, Mapping, TypeAlias, TypeVar

from alliance.domain.errors import ValidationFailed

GENESIS_HASH = "0" * 64
HASH_PATTERN = re.compile(r"^[0-9a-f]{64}\Z")
# Snapshots are a row or two of back-office data; the limits keep a bug from writing an
# unbounded entry, or recursing without end over a self-referencing structure.
MAX_PAYLOAD_BYTES = 64 * 1024
MAX_SNAPSHOT_DEPTH = 32
# A snapshot as the plain JSON values it is hashed and stored as.
JsonValue: TypeAlias = "None | bool | int | str | list[JsonValue] | dict[str, JsonValue]"
_Key = TypeVar("_Key")
MAX_LABEL_CHARACTERS = 200


class BreakReason(StrEnum):
    """Why a chain is broken at an entry."""

    SEQUENCE_GAP = "sequence_gap"
    # The sequence repeats an earlier one or goes backwards.
    SEQUENCE_REPEAT = "sequence_repeat"
    NOT_LINKED_TO_GENESIS = "not_linked_to_genesis"
    PREVIOUS_HASH_MISMATCH = "previous_hash_mismatch"
    ENTRY_HASH_MISMATCH = "entry_hash_mismatch"
    # A field has a type the canonical form refuses (a float, a naive datetime...).
    MALFORMED_ENTRY = "malformed_entry"


@dataclass(frozen=True)
class AuditEntry:
    """One back-office change: who did what to which object, before and after."""

    sequence: int
    occurred_at: datetime
    actor: str
    action: str
    subject: str
    before: Mapping[str, Any] | None
    after: Mapping[str, Any] | None
    previous_hash: str
    entry_hash: str


@dataclass(frozen=True, slots=True)
class ChainBreak:
    """The first broken link: the entry's 1-based position in the stream and its sequence."""

    position: int
    sequence: int
    reason: BreakReason
    detail: str


@dataclass(frozen=True, slots=True)
class ChainReport:
    """The outcome of verifying a chain; ``entries_checked`` includes a broken entry."""

    entries_checked: int
    first_break: ChainBreak | None
    last_sequence: int
    last_entry_hash: str

    @property
    def ok(self) -> bool:
        """Whether every entry read links and hashes correctly."""
        return self.first_break is None


@dataclass(frozen=True, slots=True)
class ChainHead:
    """A chain as it stood at some moment: how many entries it had, and the newest one's hash.

    Sequences run 1, 2, 3… with no gap, so ``entries`` is also the sequence of the head
    entry; an empty chain's head is the genesis hash.
    """

    entries: int
    head_hash: str

    def __post_init__(self) -> None:
        if not isinstance(self.entries, int) or isinstance(self.entries, bool) or self.entries < 0:
            raise ValidationFailed("entries must be a whole number, 0 or more", fields={"entries": ["not >= 0"]})
        if not isinstance(self.head_hash, str) or not HASH_PATTERN.match(self.head_hash):
            raise ValidationFailed("head_hash must be 64 lowercase hex digits", fields={"head_hash": ["malformed"]})
        if (self.entries == 0) != (self.head_hash == GENESIS_HASH):
            raise ValidationFailed("only an empty chain has the genesis hash as its head",
                                   fields={"head_hash": ["genesis hash with entries, or entries without it"]})


def anchor_problem(anchor: ChainHead, hash_at_anchor: str | None, newest_sequence: int) -> str | None:
    """What is wrong with the log against ``anchor``, or None when the log still holds it.

    ``hash_at_anchor`` is the stored hash of the entry whose sequence is
    ``anchor.entries`` (None when there is no such entry) and ``newest_sequence`` the
    log's newest sequence. With the chain itself verified, a matching hash at that
    position proves every entry up to it is the one that was anchored.
    """
    if anchor.entries == 0:
        return None
    if hash_at_anchor is None:
        return f"the log has no entry {anchor.entries} (its newest is {newest_sequence}): truncated"
    if hash_at_anchor != anchor.head_hash:
        return f"its entry {anchor.entries} hashes to {hash_at_anchor} instead: rewritten"
    return None


def canonical_payload(
    sequence: int,
    occurred_at: datetime,
    actor: str,
    action: str,
    subject: str,
    before: Mapping[str, Any] | None,
    after: Mapping[str, Any] | None,
    previous_hash: str,
) -> bytes:
    """Deterministic UTF-8 JSON of an entry's content: sorted keys, no whitespace, no floats."""
    if not isinstance(sequence, int) or isinstance(sequence, bool) or sequence < 1:
        raise ValidationFailed("sequence must be a positive integer", fields={"sequence": ["must be >= 1"]})
    labels = (("actor", actor), ("action", action), ("subject", subject), ("previous_hash", previous_hash))
    for name, value in labels:
        if not isinstance(value, str):
            raise ValidationFailed(f"{name} must be text", fields={name: ["must be text"]})
    document = {
        "sequence": sequence,
        "occurred_at": _timestamp(occurred_at, "occurred_at"),
        "actor": actor,
        "action": action,
        "subject": subject,
        "before": _snapshot(before, "before"),
        "after": _snapshot(after, "after"),
        "previous_hash": previous_hash,
    }
    try:
        return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise ValidationFailed("audit entries must be valid Unicode text") from None


def chain_hash(payload: bytes) -> str:
    """The SHA-256 of a canonical payload, in lowercase hex."""
    return hashlib.sha256(payload).hexdigest()


def entry_payload(entry: AuditEntry) -> bytes:
    """The canonical payload of an existing entry, which its ``entry_hash`` should hash."""
    return canonical_payload(
        entry.sequence, entry.occurred_at, entry.actor, entry.action, entry.subject,
        entry.before, entry.after, entry.previous_hash,
    )


def next_entry(
    previous: AuditEntry | None,
    *,
    occurred_at: datetime,
    actor: str,
    action: str,
    subject: str,
    before: Mapping[str, Any] | None,
    after: Mapping[str, Any] | None,
) -> AuditEntry:
    """The entry that follows ``previous`` (or starts the chain), hashed and linked."""
    for name, value in (("actor", actor), ("action", action), ("subject", subject)):
        if not isinstance(value, str) or not value.strip() or len(value) > MAX_LABEL_CHARACTERS:
            raise ValidationFailed(
                f"{name} must be non-empty text of at most {MAX_LABEL_CHARACTERS} characters",
                fields={name: ["must be non-empty text"]},
            )
    sequence = 1 if previous is None else previous.sequence + 1
    previous_hash = GENESIS_HASH if previous is None else previous.entry_hash
    occurred_at_utc = _require_aware(occurred_at, "occurred_at").astimezone(timezone.utc)
    # Copies, so a caller who later changes its own dictionaries cannot change history.
    before_copy = copy.deepcopy(dict(before)) if before is not None else None
    after_copy = copy.deepcopy(dict(after)) if after is not None else None
    payload = canonical_payload(
        sequence, occurred_at_utc, actor, action, subject, before_copy, after_copy, previous_hash
    )
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise ValidationFailed(f"an audit entry is limited to {MAX_PAYLOAD_BYTES} bytes of canonical JSON")
    return AuditEntry(
        sequence, occurred_at_utc, actor, action, subject,
        before_copy, after_copy, previous_hash, chain_hash(payload),
    )


def verify_chain(entries: Iterable[AuditEntry]) -> ChainReport:
    """Check every link in order, holding only the previous entry; stop at the first break."""
    previous: AuditEntry | None = None
    entries_checked = 0
    for entry in entries:
        entries_checked += 1
        problem = _link_problem(entry, previous)
        if problem is not None:
            reason, detail = problem
            broken = ChainBreak(entries_checked, entry.sequence, reason, detail)
            return _report(entries_checked, broken, previous)
        previous = entry
    return _report(entries_checked, None, previous)


def _report(entries_checked: int, broken: ChainBreak | None, last_good: AuditEntry | None) -> ChainReport:
    if last_good is None:
        return ChainReport(entries_checked, broken, 0, GENESIS_HASH)
    return ChainReport(entries_checked, broken, last_good.sequence, last_good.entry_hash)


def _link_problem(entry: AuditEntry, previous: AuditEntry | None) -> tuple[BreakReason, str] | None:
    """What is wrong with ``entry`` following ``previous``, checked in a fixed order."""
    if not isinstance(entry.sequence, int) or isinstance(entry.sequence, bool) or entry.sequence < 1:
        return BreakReason.MALFORMED_ENTRY, "the sequence is not a positive integer"
    expected_sequence = 1 if previous is None else previous.sequence + 1
    if entry.sequence > expected_sequence:
        return BreakReason.SEQUENCE_GAP, f"expected sequence {expected_sequence}, found {entry.sequence}"
    if entry.sequence < expected_sequence:
        return BreakReason.SEQUENCE_REPEAT, f"expected sequence {expected_sequence}, found {entry.sequence} again"
    if previous is None and entry.previous_hash != GENESIS_HASH:
        return BreakReason.NOT_LINKED_TO_GENESIS, "the first entry does not link to the genesis hash"
    if previous is not None and entry.previous_hash != previous.entry_hash:
        return BreakReason.PREVIOUS_HASH_MISMATCH, f"the previous hash is not the hash of entry {previous.sequence}"
    try:
        recomputed_hash = chain_hash(entry_payload(entry))
    except ValidationFailed as error:
        return BreakReason.MALFORMED_ENTRY, error.detail
    if recomputed_hash != entry.entry_hash:
        return BreakReason.ENTRY_HASH_MISMATCH, "the content does not hash to the recorded entry hash"
    return None


def _require_aware(moment: datetime, name: str) -> datetime:
    if not isinstance(moment, datetime) or moment.utcoffset() is None:
        raise ValidationFailed(
            f"{name} must be a timezone-aware datetime", fields={name: ["must be timezone-aware"]}
        )
    return moment


def _timestamp(moment: datetime, name: str) -> str:
    # Always UTC with microseconds, so one instant has exactly one spelling.
    return _require_aware(moment, name).astimezone(timezone.utc).isoformat(timespec="microseconds")


def json_snapshot(value: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """A snapshot as the plain JSON values it is hashed as; store this form."""
    return _snapshot(value, "snapshot")


def _snapshot(value: Mapping[str, Any] | None, field_name: str) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise ValidationFailed(
            f"{field_name} must be a mapping or nothing", fields={field_name: ["must be a mapping"]}
        )
    return _canonical_mapping(value, field_name, field_name, 0)


def _canonical_value(value: object, path: str, field_name: str, depth: int) -> JsonValue:
    """``value`` as plain JSON types, or ValidationFailed naming the path at fault."""
    if depth > MAX_SNAPSHOT_DEPTH:
        raise ValidationFailed(f"{path} is nested too deeply", fields={field_name: [f"{path}: nested too deeply"]})
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        # str.__str__ gives the plain text of str subclasses such as StrEnum members.
        return str.__str__(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        raise ValidationFailed(
            f"{path} is a float; amounts must be Decimal or integer minor units",
            fields={field_name: [f"{path}: floats are not allowed"]},
        )
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise ValidationFailed(f"{path} is not a finite number", fields={field_name: [f"{path}: not finite"]})
        return str(value)
    if isinstance(value, datetime):
        if value.utcoffset() is None:
            raise ValidationFailed(
                f"{path} is a naive datetime", fields={field_name: [f"{path}: must be timezone-aware"]}
            )
        return _timestamp(value, path)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Mapping):
        return _canonical_mapping(value, path, field_name, depth)
    if isinstance(value, (list, tuple)):
        return [_canonical_value(item, f"{path}[{index}]", field_name, depth + 1) for index, item in enumerate(value)]
    raise ValidationFailed(
        f"{path} is a {type(value).__name__}, which the audit log cannot record",
        fields={field_name: [f"{path}: unsupported type {type(value).__name__}"]},
    )


def _canonical_mapping(value: Mapping[_Key, object], path: str, field_name: str, depth: int) -> dict[str, JsonValue]:
    """A mapping with text keys as a JSON object (``_canonical_value``'s case for mappings)."""
    members = [(key, item) for key, item in value.items() if isinstance(key, str)]
    if len(members) != len(value):
        raise ValidationFailed(
            f"{path} has a key that is not text", fields={field_name: [f"{path}: keys must be text"]}
        )
    return {
        str.__str__(key): _canonical_value(item, f"{path}.{key}", field_name, depth + 1)
        for key, item in members
    }
