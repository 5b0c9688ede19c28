"""Reconciliation: a strict partner CSV, matching on receipt, amount and date, and reports."""

from __future__ import annotations

from datetime import date, datetime

import pytest

from alliance.domain.errors import ValidationFailed
from settlement.matching import (
    MAX_PARTNER_FILE_BYTES,
    MAX_PARTNER_ROWS,
    HubRecord,
    MatchStatus,
    PartnerRecord,
    parse_partner_csv,
    reconcile,
    render_report_csv,
    render_report_json,
)

HEADER = "receipt_id,amount_minor,currency,occurred_on"


def csv_file(*lines: str, line_end: str = "\r\n") -> bytes:
    return (line_end.join(lines) + line_end).encode("utf-8")


def test_a_well_formed_file_parses_with_line_numbers():
    document = csv_file(HEADER, "R-1,1250,EUR,2026-03-01", "R-2,-300,EUR,2026-03-02", '"R:3",0,JPY,2026-03-31')
    assert parse_partner_csv(document) == [
        PartnerRecord("R-1", 1250, "EUR", date(2026, 3, 1), 2),
        PartnerRecord("R-2", -300, "EUR", date(2026, 3, 2), 3),
        PartnerRecord("R:3", 0, "JPY", date(2026, 3, 31), 4),
    ]


def test_columns_may_come_in_any_order_with_a_bom_and_unix_line_ends():
    document = b"\xef\xbb\xbf" + csv_file("occurred_on,currency,amount_minor,receipt_id", "2026-03-01,EUR,5,R-1",
                                          line_end="\n")
    assert parse_partner_csv(document) == [PartnerRecord("R-1", 5, "EUR", date(2026, 3, 1), 2)]


def test_a_header_only_file_has_no_records():
    assert parse_partner_csv(csv_file(HEADER)) == []


@pytest.mark.parametrize(
    ("document", "message", "field"),
    [
        (b"", "line 1: the file is empty", "header"),
        (csv_file("receipt_id,amount_minor,currency,occurred_on,note"), "line 1: unknown columns 'note'", "header"),
        (csv_file("receipt_id,amount_minor,occurred_on"), "line 1: missing columns currency", "header"),
        (csv_file("receipt_id,amount_minor,currency,occurred_on,currency"), "line 1: repeated columns currency",
         "header"),
        (csv_file("Receipt_ID,amount_minor,currency,occurred_on"), "line 1: unknown columns 'Receipt_ID'", "header"),
        (csv_file(HEADER, "R-1,12.50,EUR,2026-03-01"), "line 2: amount_minor '12.50' is not a whole", "amount_minor"),
        (csv_file(HEADER, "R-1,1e3,EUR,2026-03-01"), "line 2: amount_minor", "amount_minor"),
        (csv_file(HEADER, "R-1, 12,EUR,2026-03-01"), "line 2: amount_minor", "amount_minor"),
        (csv_file(HEADER, "R-1,+12,EUR,2026-03-01"), "line 2: amount_minor", "amount_minor"),
        (csv_file(HEADER, "R-1,1_000,EUR,2026-03-01"), "line 2: amount_minor", "amount_minor"),
        (csv_file(HEADER, "R-1,,EUR,2026-03-01"), "line 2: amount_minor", "amount_minor"),
        (csv_file(HEADER, "R-1,\u0661\u0662,EUR,2026-03-01"), "line 2: amount_minor", "amount_minor"),
        (csv_file(HEADER, "R-1,1234567890123456789,EUR,2026-03-01"), "line 2: amount_minor", "amount_minor"),
        (csv_file(HEADER, "R-1,12,eur,2026-03-01"), "line 2: currency 'eur'", "currency"),
        (csv_file(HEADER, "R-1,12,EUR,2026-3-1"), "line 2: occurred_on '2026-3-1'", "occurred_on"),
        (csv_file(HEADER, "R-1,12,EUR,20260301"), "line 2: occurred_on", "occurred_on"),
        (csv_file(HEADER, "R-1,12,EUR,2026-02-30"), "line 2: occurred_on", "occurred_on"),
        (csv_file(HEADER, "R-1,12,EUR,2026-03-01T10:00"), "line 2: occurred_on", "occurred_on"),
        (csv_file(HEADER, ",12,EUR,2026-03-01"), "line 2: receipt_id", "receipt_id"),
        (csv_file(HEADER, "R 1,12,EUR,2026-03-01"), "line 2: receipt_id", "receipt_id"),
        (csv_file(HEADER, "R-1,12,EUR,2026-03-01", "R-2,12,EUR,2026-03-01", "R-1,13,EUR,2026-03-02"),
         "line 4: receipt_id receipt R-1 already appears on line 2", "receipt_id"),
        (csv_file(HEADER, "R-1,12,EUR"), "line 2: file has 3 fields, the header has 4", "file"),
        (csv_file(HEADER, "R-1,12,EUR,2026-03-01,extra"), "line 2: file has 5 fields", "file"),
        (csv_file(HEADER, "R-1,12,EUR,2026-03-01", "", "R-2,12,EUR,2026-03-01"), "line 3: file is blank", "file"),
        (csv_file(HEADER, 'R-1,"12"x,EUR,2026-03-01'), "line 2: not valid CSV", "file"),
        (csv_file(HEADER, "R-1,12,EUR,2026-03-01") + b"R-2,12,\xff\xfe,2026-03-01\r\n", "line 3: not UTF-8", "file"),
    ],
)
def test_a_malformed_file_is_refused_with_the_line_at_fault(document, message, field):
    with pytest.raises(ValidationFailed) as caught:
        parse_partner_csv(document)
    assert caught.value.detail.startswith(message)
    assert field in caught.value.fields


def test_every_bad_line_is_listed_not_just_the_first():
    document = csv_file(HEADER, "R-1,x,EUR,2026-03-01", "R-2,12,EUR,2026-03-01", "R-3,12,usd,2026-13-01")
    with pytest.raises(ValidationFailed) as caught:
        parse_partner_csv(document)
    assert caught.value.detail == "line 2: amount_minor 'x' is not a whole number of minor units (and 2 more problems)"
    assert caught.value.fields == {
        "amount_minor": ["line 2: 'x' is not a whole number of minor units"],
        "currency": ["line 4: 'usd' is not an ISO 4217 code"],
        "occurred_on": ["line 4: '2026-13-01' is not a YYYY-MM-DD date"],
    }


def test_a_file_over_the_row_limit_is_refused_at_the_first_row_too_many():
    rows = [f"R-{number},1,EUR,2026-03-01" for number in range(MAX_PARTNER_ROWS + 1)]
    document = csv_file(HEADER, *rows)
    with pytest.raises(ValidationFailed, match=f"line {MAX_PARTNER_ROWS + 2}: the file has more than"):
        parse_partner_csv(document)
    assert len(parse_partner_csv(csv_file(HEADER, *rows[:-1]))) == MAX_PARTNER_ROWS


def test_a_file_over_the_size_limit_is_refused_before_parsing():
    with pytest.raises(ValidationFailed, match="larger than"):
        parse_partner_csv(b"x" * (MAX_PARTNER_FILE_BYTES + 1))
    with pytest.raises(ValidationFailed, match="bytes"):
        parse_partner_csv("receipt_id")


def hub(receipt_id: str, amount_minor: int = 1000, currency: str = "EUR", day: int = 1) -> HubRecord:
    return HubRecord(receipt_id, amount_minor, currency, date(2026, 3, day))


def test_planted_discrepancies_are_all_found_and_nothing_else_is_flagged():
    hub_records = [hub(f"R-{number:03d}", 1000 + number, day=1 + number % 28) for number in range(200)]
    partner_rows = [f"{r.receipt_id},{r.amount_minor},{r.currency},{r.occurred_on.isoformat()}" for r in hub_records]
    # Plant: the partner lacks; has extra; and disagrees on
    # R-030's amount, R-040's date, R-050's currency and R-060's amount and date.
    partner_rows = [row for row in partner_rows if not row.startswith(("R-010,", "R-020,"))]
    partner_rows += ["X-1,500,EUR,2026-03-05", "X-2,700,EUR,2026-03-06"]
    plants = {"R-030": "R-030,1031,EUR,2026-03-03", "R-040": "R-040,1040,EUR,2026-03-14",
              "R-050": "R-050,1050,USD,2026-03-23", "R-060": "R-060,9999,EUR,2026-03-01"}
    partner_rows = [plants.get(row.split(",")[0], row) for row in partner_rows]
    report = reconcile(parse_partner_csv(csv_file(HEADER, *partner_rows)), hub_records)
    assert [line.receipt_id for line in report.missing_at_partner] == ["R-010", "R-020"]
    assert [line.receipt_id for line in report.missing_at_hub] == ["X-1", "X-2"]
    assert [(line.receipt_id, line.differing_fields) for line in report.mismatched] == [
        ("R-030", ("amount_minor",)),
        ("R-040", ("occurred_on",)),
        ("R-050", ("currency",)),
        ("R-060", ("amount_minor", "occurred_on")),
    ]
    assert len(report.matched) == 200 - 2 - 4
    assert report.discrepancies == 8
    assert all(line.status is MatchStatus.MATCHED and line.differing_fields == () for line in report.matched)


def test_a_receipt_twice_on_one_side_cannot_be_matched():
    with pytest.raises(ValidationFailed, match="twice on the hub side"):
        reconcile([], [hub("R-1"), hub("R-1", 5)])


@pytest.mark.parametrize(
    "arguments",
    [
        ("R 1", 1, "EUR", date(2026, 3, 1)),
        ("R-1", 1.0, "EUR", date(2026, 3, 1)),
        ("R-1", 1, "eur", date(2026, 3, 1)),
        ("R-1", 1, "EUR", datetime(2026, 3, 1)),
        ("R-1", 1, "EUR", "2026-03-01"),
    ],
)
def test_hub_records_are_checked(arguments):
    with pytest.raises(ValidationFailed):
        HubRecord(*arguments)


def small_report():
    partner = parse_partner_csv(
        csv_file(HEADER, "A-1,100,EUR,2026-03-01", "B-2,250,EUR,2026-03-02", "C-3,70,EUR,2026-03-03")
    )
    return reconcile(partner, [hub("A-1", 100), hub("B-2", 205, day=2), hub("D-4", 40, day=4)])


def test_the_report_renders_as_canonical_json():
    expected = (
        b'{"counts":{"matched":1,"mismatched":1,"missing_at_hub":1,"missing_at_partner":1},'
        b'"format":"points-alliance-reconciliation/1",'
        b'"matched":[{"differing_fields":[],"hub":{"amount_minor":100,"currency":"EUR","occurred_on":"2026-03-01"},'
        b'"partner":{"amount_minor":100,"currency":"EUR","line_number":2,"occurred_on":"2026-03-01"},'
        b'"receipt_id":"A-1","status":"matched"}],'
        b'"mismatched":[{"differing_fields":["amount_minor"],'
        b'"hub":{"amount_minor":205,"currency":"EUR","occurred_on":"2026-03-02"},'
        b'"partner":{"amount_minor":250,"currency":"EUR","line_number":3,"occurred_on":"2026-03-02"},'
        b'"receipt_id":"B-2","status":"mismatched"}],'
        b'"missing_at_hub":[{"differing_fields":[],"hub":null,'
        b'"partner":{"amount_minor":70,"currency":"EUR","line_number":4,"occurred_on":"2026-03-03"},'
        b'"receipt_id":"C-3","status":"missing_at_hub"}],'
        b'"missing_at_partner":[{"differing_fields":[],'
        b'"hub":{"amount_minor":40,"currency":"EUR","occurred_on":"2026-03-04"},"partner":null,'
        b'"receipt_id":"D-4","status":"missing_at_partner"}]}'
    )
    assert render_report_json(small_report()) == expected


def test_the_report_renders_as_csv_with_discrepancies_first():
    expected = "\r\n".join(
        [
            "status,receipt_id,differing_fields,partner_line_number,partner_amount_minor,hub_amount_minor,"
            "partner_currency,hub_currency,partner_occurred_on,hub_occurred_on",
            "mismatched,B-2,amount_minor,3,250,205,EUR,EUR,2026-03-02,2026-03-02",
            "missing_at_hub,C-3,,4,70,,EUR,,2026-03-03,",
            "missing_at_partner,D-4,,,,40,,EUR,,2026-03-04",
            "matched,A-1,,2,100,100,EUR,EUR,2026-03-01,2026-03-01",
        ]
    ) + "\r\n"
    assert render_report_csv(small_report()) == expected.encode("utf-8")


def test_the_report_does_not_depend_on_the_order_of_either_side():
    partner = parse_partner_csv(csv_file(HEADER, "C-3,70,EUR,2026-03-03", "A-1,100,EUR,2026-03-01"))
    hub_records = [hub("D-4", 40, day=4), hub("A-1", 100)]
    forward = reconcile(partner, hub_records)
    backward = reconcile(partner[::-1], hub_records[::-1])
    assert render_report_json(forward) == render_report_json(backward)
    assert render_report_csv(forward) == render_report_csv(backward)
