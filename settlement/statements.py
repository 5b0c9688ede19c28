"""Statements: one partner's cycle in canonical JSON and CSV, signed with Ed25519.

A statement is a pure value; rendering it twice gives the same bytes, which is what
lets a re-run of a closed cycle prove it changed nothing. Amounts keep the netting
sign: positive means the partner owes the hub. Balances are running totals in the same
sign, and ``closing = opening + net``; the closing balance of one statement is the
opening balance of the partner's next one.

JSON: UTF-8, keys sorted, no insignificant whitespace. Integers (minor units, points,
counts) are JSON numbers; Decimals (prices, exact amounts, residues) are strings in
plain notation with no trailing zeros (``"0.0125"``, ``"-0.5"``, ``"0"``); instants are
UTC ISO 8601 with a ``Z`` (``"2026-03-28T23:00:00Z"``); dates are ``YYYY-MM-DD``;
absent values are ``null``.

CSV: UTF-8, ``\\r\\n`` line ends, a header row, then one row per record in this order:
``opening_balance``, each ``line`` in statement order, ``net``, ``closing_balance``, and
last ``audit_chain`` when the statement has one. Every row repeats the statement's
identity (partner, currency, cycle, due date) so it stands alone in a spreadsheet; cells
that do not apply to a record are empty. The columns are ``STATEMENT_CSV_COLUMNS``.

The audit chain: statements closed by this version carry the head of the hub's
back-office audit log at closing (``"audit_chain": {"entries": N, "head_hash": "…"}`` in
JSON; in CSV the ``audit_chain`` record, its ``count`` the entries and its ``reference``
the head hash). Partners keep the signed files, so the hub cannot later delete or
rewrite the log's entries up to that head without ``alliance audit`` noticing. The
field is additive: a statement without it renders exactly as before.

Signatures are detached: Ed25519 over the exact bytes of the rendered document, with
the id of the hub key that made them, so a partner can verify a file offline with the
hub's published public key.
"""

from __future__ import annotations

import base64
import binascii
import csv
import io
import json
import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from typing import Any, Mapping, Sequence

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from alliance.domain.audit_chain import ChainHead
from alliance.domain.errors import AllianceError, ValidationFailed
from settlement.cycles import Cycle, Frequency, zone_named
from settlement.netting import (
    EXACT,
    MAX_AMOUNT_MINOR,
    LineKind,
    StatementLine,
    exact_sum,
    line_sort_key,
    require_currency,
    require_partner_code,
    require_whole,
)

STATEMENT_FORMAT = "points-alliance-statement/1"
SIGNATURE_ALGORITHM = "ed25519"
ED25519_SIGNATURE_BYTES = 64
KEY_ID_PATTERN = re.compile(r"^[A-Za-z0-9._:-]{1,64}\Z")
# Payment terms beyond a year are a typo, not a contract.
MAX_PAYMENT_TERMS_DAYS = 366
STATEMENT_CSV_COLUMNS = (
    "partner_code",
    "currency",
    "cycle_starts_at",
    "cycle_ends_at",
    "due_date",
    "record",
    "line_kind",
    "price_per_point",
    "points",
    "count",
    "reference",
    "exact_amount_minor",
    "amount_minor",
    "rounding_residue_minor",
)


class StatementSignatureRejected(AllianceError):
    """A detached statement signature that does not verify; ``code`` says why."""

    http_status = 422
    title = "Statement signature rejected"

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code


class ContinuityBroken(AllianceError):
    """A partner's statements that do not follow on from each other."""

    code = "statement_chain_broken"
    http_status = 409
    title = "Statement chain broken"

    def __init__(self, detail: str, *, index: int) -> None:
        super().__init__(detail)
        self.index = index


@dataclass(frozen=True, slots=True)
class Statement:
    """One partner's settlement for one cycle."""

    partner_code: str
    cycle: Cycle
    currency: str
    opening_balance_minor: int
    lines: tuple[StatementLine, ...]
    net_minor: int
    closing_balance_minor: int
    due_date: date
    rounding_residue_minor: Decimal
    # The audit log's head when the statement closed; None on statements closed before it was recorded.
    audit_chain: ChainHead | None = None

    def __post_init__(self) -> None:
        require_partner_code(self.partner_code, "partner_code")
        require_currency(self.currency)
        if not isinstance(self.cycle, Cycle):
            raise ValidationFailed("cycle must be a Cycle", fields={"cycle": ["not a Cycle"]})
        for field in ("opening_balance_minor", "net_minor", "closing_balance_minor"):
            require_whole(getattr(self, field), field, minimum=-MAX_AMOUNT_MINOR, maximum=MAX_AMOUNT_MINOR)
        if self.cycle.partner_code != self.partner_code:
            raise ValidationFailed("the cycle belongs to another partner", fields={"cycle": ["other partner"]})
        # The order is part of the rendered bytes, so it is fixed here, not left to the caller.
        if not isinstance(self.lines, tuple) or list(self.lines) != sorted(self.lines, key=line_sort_key):
            raise ValidationFailed("lines must be a tuple in statement order", fields={"lines": ["out of order"]})
        if any(line.partner_code != self.partner_code or line.currency != self.currency for line in self.lines):
            raise ValidationFailed(
                "every line must be this partner's, in this currency", fields={"lines": ["foreign line"]}
            )
        if self.net_minor != sum(line.amount_minor for line in self.lines):
            raise ValidationFailed("net must be the sum of the lines", fields={"net_minor": ["not the sum"]})
        if self.closing_balance_minor != self.opening_balance_minor + self.net_minor:
            raise ValidationFailed(
                "closing balance must be opening plus net", fields={"closing_balance_minor": ["not opening + net"]}
            )
        if self.rounding_residue_minor != exact_sum(line.rounding_residue_minor for line in self.lines):
            raise ValidationFailed(
                "residue must be the sum of the lines' residues", fields={"rounding_residue_minor": ["not the sum"]}
            )
        if not isinstance(self.due_date, date) or isinstance(self.due_date, datetime):
            raise ValidationFailed("due_date must be a date", fields={"due_date": ["not a date"]})
        if self.audit_chain is not None and not isinstance(self.audit_chain, ChainHead):
            raise ValidationFailed("audit_chain must be a ChainHead", fields={"audit_chain": ["not a ChainHead"]})


@dataclass(frozen=True, slots=True)
class DetachedSignature:
    """An Ed25519 signature over a rendered statement, and the hub key that made it."""

    key_id: str
    algorithm: str
    signature_b64: str


def build_statement(
    *, cycle: Cycle, currency: str, opening_balance_minor: int, lines: Sequence[StatementLine], due_date: date,
    audit_chain: ChainHead | None = None,
) -> Statement:
    """A statement for ``cycle``'s partner: lines in statement order, net and closing computed."""
    ordered = tuple(sorted(lines, key=line_sort_key))
    net_minor = sum(line.amount_minor for line in ordered)
    require_whole(opening_balance_minor, "opening_balance_minor", minimum=-MAX_AMOUNT_MINOR, maximum=MAX_AMOUNT_MINOR)
    return Statement(
        partner_code=cycle.partner_code,
        cycle=cycle,
        currency=currency,
        opening_balance_minor=opening_balance_minor,
        lines=ordered,
        net_minor=net_minor,
        closing_balance_minor=opening_balance_minor + net_minor,
        due_date=due_date,
        rounding_residue_minor=exact_sum(line.rounding_residue_minor for line in ordered),
        audit_chain=audit_chain,
    )


def due_date_for(cycle: Cycle, *, time_zone: str, payment_terms_days: int) -> date:
    """The local date the cycle closed on, in the partner's zone, plus the payment terms."""
    require_whole(payment_terms_days, "payment_terms_days", minimum=0, maximum=MAX_PAYMENT_TERMS_DAYS)
    return cycle.ends_at.astimezone(zone_named(time_zone)).date() + timedelta(days=payment_terms_days)


def render_json(statement: Statement) -> bytes:
    """The statement as canonical JSON bytes."""
    document = {
        "format": STATEMENT_FORMAT,
        "partner_code": statement.partner_code,
        "currency": statement.currency,
        "cycle": {
            "frequency": str(statement.cycle.frequency),
            "starts_at": instant_text(statement.cycle.starts_at),
            "ends_at": instant_text(statement.cycle.ends_at),
        },
        "opening_balance_minor": statement.opening_balance_minor,
        "lines": [_line_document(line) for line in statement.lines],
        "net_minor": statement.net_minor,
        "closing_balance_minor": statement.closing_balance_minor,
        "due_date": statement.due_date.isoformat(),
        "rounding_residue_minor": decimal_text(statement.rounding_residue_minor),
    }
    if statement.audit_chain is not None:
        document["audit_chain"] = {
            "entries": statement.audit_chain.entries, "head_hash": statement.audit_chain.head_hash,
        }
    return canonical_json(document)


def render_csv(statement: Statement) -> bytes:
    """The statement as deterministic CSV bytes (columns ``STATEMENT_CSV_COLUMNS``)."""
    identity = {
        "partner_code": statement.partner_code,
        "currency": statement.currency,
        "cycle_starts_at": instant_text(statement.cycle.starts_at),
        "cycle_ends_at": instant_text(statement.cycle.ends_at),
        "due_date": statement.due_date.isoformat(),
    }
    records = [{"record": "opening_balance", "amount_minor": str(statement.opening_balance_minor)}]
    for line in statement.lines:
        records.append(
            {
                "record": "line",
                "line_kind": str(line.line_kind),
                "price_per_point": "" if line.price_per_point is None else decimal_text(line.price_per_point),
                "points": "" if line.points is None else str(line.points),
                "count": str(line.count),
                "reference": line.reference or "",
                "exact_amount_minor": decimal_text(line.exact_amount_minor),
                "amount_minor": str(line.amount_minor),
                "rounding_residue_minor": decimal_text(line.rounding_residue_minor),
            }
        )
    exact_net_minor = EXACT.add(Decimal(statement.net_minor), statement.rounding_residue_minor)
    records.append(
        {
            "record": "net",
            "exact_amount_minor": decimal_text(exact_net_minor),
            "amount_minor": str(statement.net_minor),
            "rounding_residue_minor": decimal_text(statement.rounding_residue_minor),
        }
    )
    records.append({"record": "closing_balance", "amount_minor": str(statement.closing_balance_minor)})
    if statement.audit_chain is not None:
        records.append({"record": "audit_chain", "count": str(statement.audit_chain.entries),
                        "reference": statement.audit_chain.head_hash})
    rows = [[{**identity, **record}.get(column, "") for column in STATEMENT_CSV_COLUMNS] for record in records]
    return csv_bytes(STATEMENT_CSV_COLUMNS, rows)


def parse_statement_json(document: bytes) -> Statement:
    """The statement a JSON rendering says, or ``ValidationFailed`` naming what is wrong with it.

    Rendering the result again gives the same bytes for any document ``render_json``
    wrote; a caller compares the two to tell a canonical document from an edited one.
    The statement's own checks (net is the sum of the lines, closing is opening plus
    net…) run as it is built, so an internally inconsistent document is refused here.
    """
    try:
        fields = json.loads(document.decode("utf-8"), parse_float=_refuse_float)
        if not isinstance(fields, dict) or fields.get("format") != STATEMENT_FORMAT:
            raise ValidationFailed(f"a statement document is a JSON object of format {STATEMENT_FORMAT}")
        partner_code, currency = fields["partner_code"], fields["currency"]
        cycle = Cycle(partner_code, Frequency(fields["cycle"]["frequency"]),
                      parse_instant(fields["cycle"]["starts_at"]), parse_instant(fields["cycle"]["ends_at"]))
        anchor = fields.get("audit_chain")
        return Statement(
            partner_code=partner_code, cycle=cycle, currency=currency,
            opening_balance_minor=fields["opening_balance_minor"],
            lines=tuple(_parsed_line(line, partner_code, currency) for line in fields["lines"]),
            net_minor=fields["net_minor"], closing_balance_minor=fields["closing_balance_minor"],
            due_date=date.fromisoformat(fields["due_date"]),
            rounding_residue_minor=Decimal(fields["rounding_residue_minor"]),
            audit_chain=None if anchor is None else ChainHead(anchor["entries"], anchor["head_hash"]),
        )
    except ValidationFailed:
        raise
    except (UnicodeDecodeError, ValueError, KeyError, TypeError, InvalidOperation) as error:
        # json.JSONDecodeError is a ValueError; a missing field a KeyError; a wrong type a TypeError.
        raise ValidationFailed(f"not a statement document: {type(error).__name__} {error}") from None


def _parsed_line(line: Mapping[str, Any], partner_code: str, currency: str) -> StatementLine:
    price = line["price_per_point"]
    return StatementLine(
        partner_code=partner_code, line_kind=LineKind(line["line_kind"]), currency=currency,
        price_per_point=None if price is None else Decimal(price), points=line["points"], count=line["count"],
        reference=line["reference"], exact_amount_minor=Decimal(line["exact_amount_minor"]),
        amount_minor=line["amount_minor"], rounding_residue_minor=Decimal(line["rounding_residue_minor"]),
    )


def parse_instant(text: str) -> datetime:
    """An instant written by ``instant_text`` back as an aware UTC datetime."""
    moment = datetime.fromisoformat(text.removesuffix("Z")) if isinstance(text, str) and text.endswith("Z") else None
    if moment is None or moment.tzinfo is not None:
        raise ValidationFailed(f"{text!r} is not a UTC instant ending in Z")
    return moment.replace(tzinfo=timezone.utc)


def _refuse_float(text: str) -> Decimal:
    # Statement documents write fractions as strings; a JSON fraction means someone else wrote it.
    raise ValidationFailed(f"the number {text} is not a whole number; fractions are written as strings")


def sign_statement(document: bytes, private_key: Ed25519PrivateKey, key_id: str) -> DetachedSignature:
    """A detached Ed25519 signature over the exact bytes of ``document``."""
    if not isinstance(document, bytes):
        raise ValidationFailed("only rendered bytes can be signed", fields={"document": ["not bytes"]})
    if not isinstance(private_key, Ed25519PrivateKey):
        raise ValidationFailed("statements are signed with an Ed25519 key", fields={"private_key": ["not Ed25519"]})
    if not isinstance(key_id, str) or not KEY_ID_PATTERN.match(key_id):
        raise ValidationFailed("key_id must be 1-64 letters, digits or . _ : -", fields={"key_id": ["malformed"]})
    signature = private_key.sign(document)
    return DetachedSignature(key_id, SIGNATURE_ALGORITHM, base64.b64encode(signature).decode("ascii"))


def verify_statement(
    document: bytes, signature: DetachedSignature, public_keys: Mapping[str, Ed25519PublicKey]
) -> bool:
    """True if ``signature`` is a hub key's Ed25519 signature over ``document``; else raises."""
    if signature.algorithm != SIGNATURE_ALGORITHM:
        raise StatementSignatureRejected(
            "unsupported_algorithm", f"statements are signed with {SIGNATURE_ALGORITHM}, not {signature.algorithm!r}"
        )
    public_key = public_keys.get(signature.key_id)
    if public_key is None:
        raise StatementSignatureRejected("unknown_key", f"no published statement key has id {signature.key_id!r}")
    if not isinstance(public_key, Ed25519PublicKey):
        raise StatementSignatureRejected("unsupported_algorithm", f"key {signature.key_id!r} is not an Ed25519 key")
    try:
        raw_signature = base64.b64decode(signature.signature_b64, validate=True)
    except (binascii.Error, ValueError):
        raise StatementSignatureRejected("malformed_signature", "the signature is not valid base64") from None
    if len(raw_signature) != ED25519_SIGNATURE_BYTES:
        raise StatementSignatureRejected(
            "malformed_signature", f"an Ed25519 signature is {ED25519_SIGNATURE_BYTES} bytes"
        )
    try:
        public_key.verify(raw_signature, document)
    except InvalidSignature:
        raise StatementSignatureRejected(
            "signature_mismatch", f"the document is not what key {signature.key_id!r} signed"
        ) from None
    return True


def render_signature(signature: DetachedSignature) -> bytes:
    """The detached signature as canonical JSON, to ship beside the statement."""
    return canonical_json(
        {"algorithm": signature.algorithm, "key_id": signature.key_id, "signature_b64": signature.signature_b64}
    )


def parse_signature(document: bytes) -> DetachedSignature:
    """Read a signature file written by ``render_signature``; exactly its three fields."""
    try:
        fields = json.loads(document.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise StatementSignatureRejected("malformed_signature", "the signature file is not JSON") from None
    expected = {"algorithm", "key_id", "signature_b64"}
    if not isinstance(fields, dict) or set(fields) != expected or not all(isinstance(v, str) for v in fields.values()):
        raise StatementSignatureRejected("malformed_signature", f"a signature file holds exactly {sorted(expected)}")
    return DetachedSignature(fields["key_id"], fields["algorithm"], fields["signature_b64"])


def check_continuity(statements: Sequence[Statement]) -> None:
    """Raise ``ContinuityBroken`` at the first statement that does not follow the one before."""
    for index in range(1, len(statements)):
        previous, current = statements[index - 1], statements[index]
        where = f"statement {index} ({current.partner_code}, cycle starting {instant_text(current.cycle.starts_at)})"
        if current.partner_code != previous.partner_code or current.currency != previous.currency:
            raise ContinuityBroken(f"{where} is for another partner or currency than the one before", index=index)
        if current.cycle.starts_at != previous.cycle.ends_at:
            raise ContinuityBroken(
                f"{where} does not start where the previous cycle ended ({instant_text(previous.cycle.ends_at)})",
                index=index,
            )
        if current.opening_balance_minor != previous.closing_balance_minor:
            raise ContinuityBroken(
                f"{where} opens at {current.opening_balance_minor} but the previous statement closed at "
                f"{previous.closing_balance_minor}",
                index=index,
            )


def canonical_json(document: Any) -> bytes:
    """Sorted keys, no whitespace, UTF-8: the same value always gives the same bytes."""
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode(
        "utf-8"
    )


def csv_bytes(columns: Sequence[str], rows: Sequence[Sequence[str]]) -> bytes:
    """A header and rows as UTF-8 CSV with ``\\r\\n`` line ends, quoted only where needed."""
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, lineterminator="\r\n", quoting=csv.QUOTE_MINIMAL)
    writer.writerow(columns)
    writer.writerows(rows)
    return buffer.getvalue().encode("utf-8")


def decimal_text(value: Decimal) -> str:
    """A Decimal in plain notation without trailing zeros: ``0.0125``, ``-0.5``, ``100``, ``0``."""
    if value == 0:
        return "0"
    return format(value.normalize(EXACT), "f")


def instant_text(moment: datetime) -> str:
    """An aware datetime as UTC ISO 8601 ending in ``Z``."""
    return moment.astimezone(timezone.utc).replace(tzinfo=None).isoformat() + "Z"


def _line_document(line: StatementLine) -> dict[str, Any]:
    """One statement line as a JSON object."""
    return {
        "line_kind": str(line.line_kind),
        "price_per_point": None if line.price_per_point is None else decimal_text(line.price_per_point),
        "points": line.points,
        "count": line.count,
        "reference": line.reference,
        "exact_amount_minor": decimal_text(line.exact_amount_minor),
        "amount_minor": line.amount_minor,
        "rounding_residue_minor": decimal_text(line.rounding_residue_minor),
    }
