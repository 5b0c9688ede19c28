"""Reconciliation: a partner's own transaction file against the hub's records.

The partner file is CSV, parsed strictly so that a bad file is refused whole, with
line numbers, rather than half-matched:

- UTF-8 (a leading byte-order mark, as spreadsheets write, is ignored), lines ending in
  ``\\r\\n`` or ``\\n``, standard CSV quoting, at most ``MAX_PARTNER_FILE_BYTES`` bytes
  and ``MAX_PARTNER_ROWS`` data rows.
- Line 1 is the header: exactly the columns ``receipt_id``, ``amount_minor``,
  ``currency`` and ``occurred_on``, each once, in any order. Unknown or missing
  columns are refused.
- ``receipt_id``: 1-64 letters, digits or ``. _ : -`` (the partner API's receipt
  ids), unique in the file. ``amount_minor``: a whole number of minor units, optional
  leading ``-``, ASCII digits only, no spaces, signs, separators or decimals.
  ``currency``: three capital letters. ``occurred_on``: ``YYYY-MM-DD``, the date in the
  partner's own time zone, taken as given. No blank lines.

Matching is on the receipt id; a receipt present on both sides matches when its
amount, currency and date are equal, and is mismatched otherwise, naming the fields
that differ. Every receipt lands in exactly one of matched, missing at the hub,
missing at the partner or mismatched. Reports render as canonical JSON and as CSV
(UTF-8, ``\\r\\n``, columns ``REPORT_CSV_COLUMNS``; mismatched rows first, then missing
at the hub, missing at the partner, matched; by receipt id within each).
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from datetime import date, datetime
from enum import StrEnum
from typing import Any, Iterable

from alliance.domain.errors import ValidationFailed
from settlement.netting import CURRENCY_PATTERN, MAX_AMOUNT_MINOR, require_currency, require_whole
from settlement.statements import canonical_json, csv_bytes

PARTNER_FILE_COLUMNS = ("receipt_id", "amount_minor", "currency", "occurred_on")
MAX_PARTNER_ROWS = 100_000
# 100,000 rows of about a hundred bytes each, with room to spare.
MAX_PARTNER_FILE_BYTES = 16 * 1024 * 1024
# Enough to fix a file in one go without drowning the reader.
MAX_REPORTED_PROBLEMS = 20
RECEIPT_ID_PATTERN = re.compile(r"^[A-Za-z0-9._:-]{1,64}\Z")
AMOUNT_PATTERN = re.compile(r"^-?[0-9]{1,18}\Z")
DATE_PATTERN = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}\Z")
COMPARED_FIELDS = ("amount_minor", "currency", "occurred_on")
REPORT_FORMAT = "points-alliance-reconciliation/1"
REPORT_CSV_COLUMNS = (
    "status",
    "receipt_id",
    "differing_fields",
    "partner_line_number",
    "partner_amount_minor",
    "hub_amount_minor",
    "partner_currency",
    "hub_currency",
    "partner_occurred_on",
    "hub_occurred_on",
)


class MatchStatus(StrEnum):
    """Where a receipt stands after matching; the order here is the report's order."""

    MISMATCHED = "mismatched"
    MISSING_AT_HUB = "missing_at_hub"
    MISSING_AT_PARTNER = "missing_at_partner"
    MATCHED = "matched"


@dataclass(frozen=True, slots=True)
class PartnerRecord:
    """One data row of the partner's file, with the line it came from."""

    receipt_id: str
    amount_minor: int
    currency: str
    occurred_on: date
    line_number: int

    def __post_init__(self) -> None:
        _check_receipt_fields(self)
        require_whole(self.line_number, "line_number", minimum=2, maximum=MAX_PARTNER_FILE_BYTES)


@dataclass(frozen=True, slots=True)
class HubRecord:
    """The hub's view of one receipt in the cycle."""

    receipt_id: str
    amount_minor: int
    currency: str
    occurred_on: date

    def __post_init__(self) -> None:
        _check_receipt_fields(self)


@dataclass(frozen=True, slots=True)
class ReconciliationLine:
    """One receipt's outcome: both sides as found, and the fields that differ."""

    status: MatchStatus
    receipt_id: str
    partner: PartnerRecord | None
    hub: HubRecord | None
    differing_fields: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ReconciliationReport:
    """Every receipt from either side, in exactly one list, each by receipt id."""

    matched: tuple[ReconciliationLine, ...]
    missing_at_hub: tuple[ReconciliationLine, ...]
    missing_at_partner: tuple[ReconciliationLine, ...]
    mismatched: tuple[ReconciliationLine, ...]

    @property
    def discrepancies(self) -> int:
        """How many receipts need someone to look at them."""
        return len(self.missing_at_hub) + len(self.missing_at_partner) + len(self.mismatched)


def parse_partner_csv(document: bytes) -> list[PartnerRecord]:
    """The partner's file as records, or ``ValidationFailed`` naming each bad line."""
    reader = csv.reader(io.StringIO(_decode(document), newline=""), strict=True)
    problems: list[tuple[int, str, str]] = []
    try:
        header = next(reader, None)
        if header is None:
            raise ValidationFailed("line 1: the file is empty; it needs a header", fields={"header": ["missing"]})
        positions = _column_positions(header)
        records: list[PartnerRecord] = []
        first_line_of: dict[str, int] = {}
        for row_count, row in enumerate(reader, start=1):
            line_number = reader.line_num
            if row_count > MAX_PARTNER_ROWS:
                raise ValidationFailed(
                    f"line {line_number}: the file has more than {MAX_PARTNER_ROWS} rows",
                    fields={"file": ["too many rows"]},
                )
            record = _record(row, positions, line_number, problems)
            if record is None:
                continue
            if record.receipt_id in first_line_of:
                problems.append((line_number, "receipt_id", (
                    f"receipt {record.receipt_id} already appears on line {first_line_of[record.receipt_id]}"
                )))
                continue
            first_line_of[record.receipt_id] = line_number
            records.append(record)
    except csv.Error as error:
        detail = f"line {reader.line_num}: not valid CSV ({error})"
        raise ValidationFailed(detail, fields={"file": ["bad CSV"]}) from None
    if problems:
        raise _problems_error(problems)
    return records


def reconcile(partner_records: Iterable[PartnerRecord], hub_records: Iterable[HubRecord]) -> ReconciliationReport:
    """Match both sides on receipt id and sort every receipt into one outcome."""
    partner_by_id = _unique_by_receipt(partner_records, "partner")
    hub_by_id = _unique_by_receipt(hub_records, "hub")
    outcomes: dict[MatchStatus, list[ReconciliationLine]] = {status: [] for status in MatchStatus}
    for receipt_id in sorted(partner_by_id.keys() | hub_by_id.keys()):
        partner, hub = partner_by_id.get(receipt_id), hub_by_id.get(receipt_id)
        differing: tuple[str, ...] = ()
        if hub is None:
            status = MatchStatus.MISSING_AT_HUB
        elif partner is None:
            status = MatchStatus.MISSING_AT_PARTNER
        else:
            differing = tuple(field for field in COMPARED_FIELDS if getattr(partner, field) != getattr(hub, field))
            status = MatchStatus.MISMATCHED if differing else MatchStatus.MATCHED
        outcomes[status].append(ReconciliationLine(status, receipt_id, partner, hub, differing))
    return ReconciliationReport(
        matched=tuple(outcomes[MatchStatus.MATCHED]),
        missing_at_hub=tuple(outcomes[MatchStatus.MISSING_AT_HUB]),
        missing_at_partner=tuple(outcomes[MatchStatus.MISSING_AT_PARTNER]),
        mismatched=tuple(outcomes[MatchStatus.MISMATCHED]),
    )


def render_report_json(report: ReconciliationReport) -> bytes:
    """The report as canonical JSON bytes (sorted keys, no whitespace, UTF-8)."""
    groups = {status: _lines_of(report, status) for status in MatchStatus}
    document = {
        "format": REPORT_FORMAT,
        "counts": {str(status): len(lines) for status, lines in groups.items()},
        **{str(status): [_line_document(line) for line in lines] for status, lines in groups.items()},
    }
    return canonical_json(document)


def render_report_csv(report: ReconciliationReport) -> bytes:
    """The report as CSV bytes, one row per receipt, in the module's fixed order."""
    rows = []
    for status in MatchStatus:
        for line in _lines_of(report, status):
            partner, hub = line.partner, line.hub
            rows.append([
                str(line.status),
                line.receipt_id,
                ";".join(line.differing_fields),
                "" if partner is None else str(partner.line_number),
                "" if partner is None else str(partner.amount_minor),
                "" if hub is None else str(hub.amount_minor),
                "" if partner is None else partner.currency,
                "" if hub is None else hub.currency,
                "" if partner is None else partner.occurred_on.isoformat(),
                "" if hub is None else hub.occurred_on.isoformat(),
            ])
    return csv_bytes(REPORT_CSV_COLUMNS, rows)


def _decode(document: bytes) -> str:
    """The file as text, refusing oversize or non-UTF-8 input with the line at fault."""
    if not isinstance(document, bytes):
        raise ValidationFailed("the partner file must be bytes", fields={"file": ["not bytes"]})
    if len(document) > MAX_PARTNER_FILE_BYTES:
        raise ValidationFailed(
            f"the file is larger than {MAX_PARTNER_FILE_BYTES} bytes", fields={"file": ["too large"]}
        )
    try:
        return document.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as error:
        line_number = document[: error.start].count(b"\n") + 1
        raise ValidationFailed(f"line {line_number}: not UTF-8", fields={"file": ["not UTF-8"]}) from None


def _column_positions(header: list[str]) -> dict[str, int]:
    """Where each expected column sits; unknown, missing or repeated columns are refused."""
    unknown = sorted(set(header) - set(PARTNER_FILE_COLUMNS))
    missing = [column for column in PARTNER_FILE_COLUMNS if column not in header]
    repeated = sorted({column for column in header if header.count(column) > 1})
    complaints = []
    if unknown:
        complaints.append(f"unknown columns {', '.join(repr(column) for column in unknown)}")
    if missing:
        complaints.append(f"missing columns {', '.join(missing)}")
    if repeated:
        complaints.append(f"repeated columns {', '.join(repeated)}")
    if complaints:
        raise ValidationFailed(
            f"line 1: {'; '.join(complaints)}; the header must be {','.join(PARTNER_FILE_COLUMNS)}",
            fields={"header": complaints},
        )
    return {column: header.index(column) for column in PARTNER_FILE_COLUMNS}


def _record(
    row: list[str], positions: dict[str, int], line_number: int, problems: list[tuple[int, str, str]]
) -> PartnerRecord | None:
    """One data row as a record, or None after noting what is wrong with it."""
    if not row:
        problems.append((line_number, "file", "is blank"))
        return None
    if len(row) != len(positions):
        problems.append((line_number, "file", f"has {len(row)} fields, the header has {len(positions)}"))
        return None
    values = {column: row[position] for column, position in positions.items()}
    found_before = len(problems)
    if not RECEIPT_ID_PATTERN.match(values["receipt_id"]):
        problems.append((line_number, "receipt_id", "must be 1-64 letters, digits or . _ : -"))
    if not AMOUNT_PATTERN.match(values["amount_minor"]):
        problems.append(
            (line_number, "amount_minor", f"{values['amount_minor']!r} is not a whole number of minor units")
        )
    if not CURRENCY_PATTERN.match(values["currency"]):
        problems.append((line_number, "currency", f"{values['currency']!r} is not an ISO 4217 code"))
    occurred_on = _date(values["occurred_on"])
    if occurred_on is None:
        problems.append((line_number, "occurred_on", f"{values['occurred_on']!r} is not a YYYY-MM-DD date"))
    if len(problems) > found_before or occurred_on is None:
        return None
    amount_minor = int(values["amount_minor"])
    return PartnerRecord(values["receipt_id"], amount_minor, values["currency"], occurred_on, line_number)


def _date(text: str) -> date | None:
    """A strict ``YYYY-MM-DD`` date, or None."""
    if not DATE_PATTERN.match(text):
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        return None


def _problems_error(problems: list[tuple[int, str, str]]) -> ValidationFailed:
    """One error listing the first problems by line and field."""
    shown = problems[:MAX_REPORTED_PROBLEMS]
    fields: dict[str, list[str]] = {}
    for line_number, field, message in shown:
        fields.setdefault(field, []).append(f"line {line_number}: {message}")
    line_number, field, message = problems[0]
    more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
    return ValidationFailed(f"line {line_number}: {field} {message}{more}", fields=fields)


def _check_receipt_fields(record: PartnerRecord | HubRecord) -> None:
    """The checks both sides' records pass, so that matching compares like with like."""
    if not isinstance(record.receipt_id, str) or not RECEIPT_ID_PATTERN.match(record.receipt_id):
        raise ValidationFailed("receipt_id is malformed", fields={"receipt_id": ["malformed"]})
    require_whole(record.amount_minor, "amount_minor", minimum=-MAX_AMOUNT_MINOR, maximum=MAX_AMOUNT_MINOR)
    require_currency(record.currency)
    if not isinstance(record.occurred_on, date) or isinstance(record.occurred_on, datetime):
        raise ValidationFailed("occurred_on must be a date", fields={"occurred_on": ["not a date"]})


def _unique_by_receipt(records: Iterable[Any], side: str) -> dict[str, Any]:
    """Records keyed by receipt id; a receipt twice on one side cannot be matched."""
    by_id: dict[str, Any] = {}
    for record in records:
        if record.receipt_id in by_id:
            raise ValidationFailed(
                f"receipt {record.receipt_id} appears twice on the {side} side", fields={"receipt_id": ["duplicate"]}
            )
        by_id[record.receipt_id] = record
    return by_id


def _lines_of(report: ReconciliationReport, status: MatchStatus) -> tuple[ReconciliationLine, ...]:
    """The report's lines with one status."""
    lines_by_status = {
        MatchStatus.MISMATCHED: report.mismatched,
        MatchStatus.MISSING_AT_HUB: report.missing_at_hub,
        MatchStatus.MISSING_AT_PARTNER: report.missing_at_partner,
        MatchStatus.MATCHED: report.matched,
    }
    return lines_by_status[status]


def _line_document(line: ReconciliationLine) -> dict[str, Any]:
    """One receipt's outcome as a JSON object."""
    partner, hub = line.partner, line.hub
    return {
        "receipt_id": line.receipt_id,
        "status": str(line.status),
        "differing_fields": list(line.differing_fields),
        "partner": None if partner is None else {
            "amount_minor": partner.amount_minor,
            "currency": partner.currency,
            "occurred_on": partner.occurred_on.isoformat(),
            "line_number": partner.line_number,
        },
        "hub": None if hub is None else {
            "amount_minor": hub.amount_minor,
            "currency": hub.currency,
            "occurred_on": hub.occurred_on.isoformat(),
        },
    }
