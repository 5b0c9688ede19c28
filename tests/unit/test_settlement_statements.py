"""Statements: canonical JSON and CSV, detached Ed25519 signatures, and the balance chain."""

from __future__ import annotations

import base64
from dataclasses import replace
from datetime import date, datetime, time, timezone
from decimal import Decimal

import pytest
from cryptography.hazmat.primitives.asymmetric.ed448 import Ed448PrivateKey
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from alliance.domain.audit_chain import ChainHead
from alliance.domain.errors import ValidationFailed
from settlement.cycles import Cycle, Frequency, cycle_containing
from settlement.netting import AdjustmentAmount, LineKind, PostingAggregate, build_lines
from settlement.statements import (
    ContinuityBroken,
    StatementSignatureRejected,
    build_statement,
    check_continuity,
    decimal_text,
    due_date_for,
    parse_signature,
    parse_statement_json,
    render_csv,
    render_json,
    render_signature,
    sign_statement,
    verify_statement,
)

# Paris, the spring-forward day: 28 Mar 23:00Z to 29 Mar 22:00Z, 23 hours.
CYCLE = Cycle("cafe", Frequency.DAILY, datetime(2026, 3, 28, 23, tzinfo=timezone.utc),
              datetime(2026, 3, 29, 22, tzinfo=timezone.utc))


def cafe_lines():
    return build_lines(
        [
            # 2 × 0.0125 EUR = 2.5 cents → 2 (a tie, to even), residue 0.5.
            PostingAggregate("cafe", LineKind.POINTS_ISSUED, "EUR", Decimal("0.0125"), 2, 1),
            # 100 × 0.01 EUR = 100 cents credited.
            PostingAggregate("cafe", LineKind.POINTS_REDEEMED, "EUR", Decimal("0.0100"), 100, 3),
        ],
        [AdjustmentAmount("cafe", LineKind.ADJUSTMENT, -50, "EUR", "ADJ-1")],
    )


def cafe_statement(opening_balance_minor: int = 1000, cycle: Cycle = CYCLE):
    return build_statement(
        cycle=cycle, currency="EUR", opening_balance_minor=opening_balance_minor, lines=cafe_lines(),
        due_date=date(2026, 4, 29),
    )


def test_closing_is_opening_plus_net():
    statement = cafe_statement()
    # net = 2 − 100 − 50 = −148 (the hub owes the café); closing = 1000 − 148 = 852.
    assert statement.net_minor == -148
    assert statement.closing_balance_minor == 852
    assert statement.rounding_residue_minor == Decimal("0.5")


def test_json_is_canonical():
    expected = (
        b'{"closing_balance_minor":852,"currency":"EUR",'
        b'"cycle":{"ends_at":"2026-03-29T22:00:00Z","frequency":"daily","starts_at":"2026-03-28T23:00:00Z"},'
        b'"due_date":"2026-04-29","format":"points-alliance-statement/1","lines":['
        b'{"amount_minor":2,"count":1,"exact_amount_minor":"2.5","line_kind":"points_issued","points":2,'
        b'"price_per_point":"0.0125","reference":null,"rounding_residue_minor":"0.5"},'
        b'{"amount_minor":-100,"count":3,"exact_amount_minor":"-100","line_kind":"points_redeemed","points":100,'
        b'"price_per_point":"0.01","reference":null,"rounding_residue_minor":"0"},'
        b'{"amount_minor":-50,"count":1,"exact_amount_minor":"-50","line_kind":"adjustment","points":null,'
        b'"price_per_point":null,"reference":"ADJ-1","rounding_residue_minor":"0"}],'
        b'"net_minor":-148,"opening_balance_minor":1000,"partner_code":"cafe","rounding_residue_minor":"0.5"}'
    )
    assert render_json(cafe_statement()) == expected


def test_csv_has_fixed_columns_and_crlf_line_ends():
    identity = "cafe,EUR,2026-03-28T23:00:00Z,2026-03-29T22:00:00Z,2026-04-29"
    expected = "\r\n".join(
        [
            "partner_code,currency,cycle_starts_at,cycle_ends_at,due_date,record,line_kind,price_per_point,"
            "points,count,reference,exact_amount_minor,amount_minor,rounding_residue_minor",
            f"{identity},opening_balance,,,,,,,1000,",
            f"{identity},line,points_issued,0.0125,2,1,,2.5,2,0.5",
            f"{identity},line,points_redeemed,0.01,100,3,,-100,-100,0",
            f"{identity},line,adjustment,,,1,ADJ-1,-50,-50,0",
            # exact net = −148 + 0.5 = −147.5
            f"{identity},net,,,,,,-147.5,-148,0.5",
            f"{identity},closing_balance,,,,,,,852,",
        ]
    ) + "\r\n"
    assert render_csv(cafe_statement()) == expected.encode("utf-8")


def test_rendering_is_byte_identical_whatever_the_order_of_the_rows():
    shuffled = build_statement(
        cycle=CYCLE, currency="EUR", opening_balance_minor=1000, lines=cafe_lines()[::-1], due_date=date(2026, 4, 29)
    )
    assert render_json(shuffled) == render_json(cafe_statement())
    assert render_csv(shuffled) == render_csv(cafe_statement())


@pytest.mark.parametrize(
    ("value", "text"),
    [("0.0125", "0.0125"), ("0.01250000", "0.0125"), ("1E+2", "100"), ("-0.50", "-0.5"), ("-0", "0"),
     ("0E-8", "0"), ("12501.25", "12501.25")],
)
def test_decimals_render_in_plain_notation_without_trailing_zeros(value, text):
    assert decimal_text(Decimal(value)) == text


@pytest.mark.parametrize(
    "changes",
    [
        {"closing_balance_minor": 853},
        {"net_minor": -147, "closing_balance_minor": 853},
        {"partner_code": "books"},
        {"currency": "USD"},
        {"rounding_residue_minor": Decimal("0")},
        {"due_date": datetime(2026, 4, 29)},
        {"opening_balance_minor": 1000.0, "closing_balance_minor": 852.0},
        {"lines": tuple(cafe_lines()[::-1])},  # the order is part of the bytes
        {"lines": list(cafe_lines())},
    ],
)
def test_an_inconsistent_statement_cannot_be_built(changes):
    with pytest.raises(ValidationFailed):
        replace(cafe_statement(), **changes)


def test_due_date_counts_from_the_local_closing_date():
    # A midnight cut-off closes February at 1 Mar 00:00 Paris time; 30 days later is 31 Mar.
    february = cycle_containing(
        datetime(2028, 2, 10, tzinfo=timezone.utc), partner_code="cafe", frequency="monthly",
        time_zone="Europe/Paris", cutoff_local=time(0),
    )
    assert due_date_for(february, time_zone="Europe/Paris", payment_terms_days=30) == date(2028, 3, 31)
    with pytest.raises(ValidationFailed):
        due_date_for(february, time_zone="Europe/Paris", payment_terms_days=-1)


KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
OTHER_KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33)))
PUBLISHED = {"statements-2026": KEY.public_key()}


@pytest.mark.parametrize("render", [render_json, render_csv])
def test_a_signed_statement_verifies_offline(render):
    document = render(cafe_statement())
    signature = sign_statement(document, KEY, "statements-2026")
    assert signature.algorithm == "ed25519" and signature.key_id == "statements-2026"
    assert len(base64.b64decode(signature.signature_b64)) == 64
    assert verify_statement(document, signature, PUBLISHED) is True
    # Ed25519 is deterministic: signing the same bytes again gives the same signature.
    assert sign_statement(document, KEY, "statements-2026") == signature


def test_every_tampered_byte_is_detected():
    document = render_json(cafe_statement())
    signature = sign_statement(document, KEY, "statements-2026")
    for position in range(len(document)):
        tampered = bytearray(document)
        tampered[position] ^= 0x01
        with pytest.raises(StatementSignatureRejected) as caught:
            verify_statement(bytes(tampered), signature, PUBLISHED)
        assert caught.value.code == "signature_mismatch"
    with pytest.raises(StatementSignatureRejected):
        verify_statement(document + b"\n", signature, PUBLISHED)


@pytest.mark.parametrize(
    ("signature_changes", "public_keys", "code"),
    [
        ({"key_id": "statements-2025"}, PUBLISHED, "unknown_key"),
        ({"algorithm": "ed448"}, PUBLISHED, "unsupported_algorithm"),
        ({"algorithm": "ED25519"}, PUBLISHED, "unsupported_algorithm"),
        ({}, {"statements-2026": Ed448PrivateKey.generate().public_key()}, "unsupported_algorithm"),
        ({"signature_b64": "not base64!"}, PUBLISHED, "malformed_signature"),
        ({"signature_b64": base64.b64encode(b"short").decode()}, PUBLISHED, "malformed_signature"),
        ({}, {"statements-2026": OTHER_KEY.public_key()}, "signature_mismatch"),
    ],
    ids=["unknown-key", "other-algorithm", "algorithm-case", "ed448-key", "not-base64", "wrong-length", "wrong-key"],
)
def test_verification_fails_closed_with_a_reason(signature_changes, public_keys, code):
    document = render_json(cafe_statement())
    signature = replace(sign_statement(document, KEY, "statements-2026"), **signature_changes)
    with pytest.raises(StatementSignatureRejected) as caught:
        verify_statement(document, signature, public_keys)
    assert caught.value.code == code


def test_a_rotated_key_set_verifies_each_signature_with_its_own_key():
    document = render_csv(cafe_statement())
    keys = {"statements-2025": OTHER_KEY.public_key(), **PUBLISHED}
    assert verify_statement(document, sign_statement(document, OTHER_KEY, "statements-2025"), keys)
    assert verify_statement(document, sign_statement(document, KEY, "statements-2026"), keys)


def test_signing_refuses_anything_but_bytes_an_ed25519_key_and_a_key_id():
    with pytest.raises(ValidationFailed):
        sign_statement("text", KEY, "statements-2026")
    with pytest.raises(ValidationFailed):
        sign_statement(b"document", Ed448PrivateKey.generate(), "statements-2026")
    with pytest.raises(ValidationFailed):
        sign_statement(b"document", KEY, "key id with spaces")


def test_a_signature_file_round_trips_and_is_strict():
    signature = sign_statement(b"document", KEY, "statements-2026")
    rendered = render_signature(signature)
    assert rendered.startswith(b'{"algorithm":"ed25519","key_id":"statements-2026","signature_b64":"')
    assert parse_signature(rendered) == signature
    for broken in [b"not json", b"[]", b'{"algorithm":"ed25519","key_id":"k"}',
                   rendered[:-1] + b',"extra":"x"}', b'{"algorithm":1,"key_id":"k","signature_b64":"x"}']:
        with pytest.raises(StatementSignatureRejected):
            parse_signature(broken)


def chain(*openings_and_cycles):
    return [cafe_statement(opening, cycle) for opening, cycle in openings_and_cycles]


def following(cycle: Cycle) -> Cycle:
    """The next cycle, as long as this one (DST does not matter to the chain check)."""
    return Cycle(cycle.partner_code, cycle.frequency, cycle.ends_at, cycle.ends_at + (cycle.ends_at - cycle.starts_at))


def test_a_chain_of_statements_follows_on():
    second = following(CYCLE)
    third = following(second)
    # Each cycle's net is −148: 1000 → 852 → 704 → 556.
    check_continuity(chain((1000, CYCLE), (852, second), (704, third)))
    check_continuity([])
    check_continuity(chain((1000, CYCLE)))


def test_the_first_break_in_a_chain_is_named():
    second = following(CYCLE)
    third = following(second)
    with pytest.raises(ContinuityBroken, match="opens at 700 but the previous statement closed at 704") as caught:
        check_continuity(chain((1000, CYCLE), (852, second), (700, third), (0, following(third))))
    assert caught.value.index == 2
    with pytest.raises(ContinuityBroken, match="does not start where the previous cycle ended") as caught:
        check_continuity(chain((1000, CYCLE), (852, following(second))))
    assert caught.value.index == 1
    books = replace(cafe_statement(852, second), partner_code="books", cycle=replace(second, partner_code="books"),
                    lines=(), net_minor=0, closing_balance_minor=852, rounding_residue_minor=Decimal(0))
    with pytest.raises(ContinuityBroken, match="another partner"):
        check_continuity([cafe_statement(), books])


HEAD = ChainHead(42, "ab" * 32)


def test_the_audit_chain_head_is_an_additive_field_of_both_documents():
    anchored = replace(cafe_statement(), audit_chain=HEAD)
    assert render_json(anchored) == render_json(cafe_statement()).replace(
        b'{"closing_balance_minor"', b'{"audit_chain":{"entries":42,"head_hash":"' + b"ab" * 32 + b'"},'
        b'"closing_balance_minor"', 1)
    identity = "cafe,EUR,2026-03-28T23:00:00Z,2026-03-29T22:00:00Z,2026-04-29"
    # The CSV keeps its columns; the head is one more record after the closing balance.
    assert render_csv(anchored) == (render_csv(cafe_statement())
                                    + f"{identity},audit_chain,,,,42,{'ab' * 32},,,\r\n".encode())


@pytest.mark.parametrize("statement", [cafe_statement(), replace(cafe_statement(), audit_chain=HEAD)],
                         ids=["without-head", "with-head"])
def test_a_rendered_statement_parses_back_to_itself(statement):
    parsed = parse_statement_json(render_json(statement))
    assert parsed == statement
    assert render_json(parsed) == render_json(statement) and render_csv(parsed) == render_csv(statement)


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (b'"net_minor":-148', b'"net_minor":-147'),  # no longer the sum of the lines
        (b'"net_minor":-148', b'"net_minor":-148.0'),  # a float where an integer belongs
        (b'"format":"points-alliance-statement/1"', b'"format":"other/1"'),
        (b'"due_date":"2026-04-29"', b'"due_date":"29/04/2026"'),
        (b'"starts_at":"2026-03-28T23:00:00Z"', b'"starts_at":"2026-03-28T23:00:00+01:00"'),
        (b'"line_kind":"adjustment"', b'"line_kind":"bonus"'),
        (b'"price_per_point":"0.0125"', b'"price_per_point":"cheap"'),
        (b'"opening_balance_minor":1000,', b""),
        (b'"entries":42', b'"entries":-1'),
    ],
    ids=["inconsistent-net", "float", "format", "date", "instant-offset", "line-kind", "price", "missing-field",
         "head-entries"],
)
def test_a_document_that_is_not_a_statement_is_refused_with_a_reason(old, new):
    document = render_json(replace(cafe_statement(), audit_chain=HEAD))
    assert old in document
    with pytest.raises(ValidationFailed):
        parse_statement_json(document.replace(old, new))
