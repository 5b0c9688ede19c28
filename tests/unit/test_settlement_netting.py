"""Netting: lines priced exactly and rounded once, partner nets, and the cycle summary."""

from __future__ import annotations

from decimal import Decimal

import pytest

from alliance.domain.errors import ValidationFailed
from alliance.domain.ledger import TransactionKind
from settlement.netting import (
    LINE_KIND_BY_TRANSACTION_KIND,
    AdjustmentAmount,
    IssuerRedeemerFlow,
    LineKind,
    LotTrace,
    PartnerNet,
    PostingAggregate,
    StatementLine,
    build_lines,
    exact_sum,
    issuer_redeemer_matrix,
    net_positions,
    netting_efficiency,
    summarize_cycle,
)

ISSUED = LineKind.POINTS_ISSUED
REVERSED = LineKind.ISSUANCE_REVERSED
REDEEMED = LineKind.POINTS_REDEEMED
REFUNDED = LineKind.REDEMPTIONS_REFUNDED


def aggregate(kind, price, points, count=1, partner="cafe", currency="EUR") -> PostingAggregate:
    return PostingAggregate(partner, kind, currency, Decimal(price), points, count)


@pytest.mark.parametrize(
    ("kind", "currency", "price", "points", "exact", "rounded", "residue"),
    [
        # 1000 × 0.0125 EUR = 12.50 EUR = 1250 cents, nothing to round.
        (ISSUED, "EUR", "0.0125", 1000, "1250", 1250, "0"),
        # 1 × 0.0125 EUR = 1.25 cents → 1; the hub's rounding account keeps 0.25.
        (ISSUED, "EUR", "0.0125", 1, "1.25", 1, "0.25"),
        # 2 × 1.25 = 2.5 cents: a tie, to the even 2.
        (ISSUED, "EUR", "0.0125", 2, "2.5", 2, "0.5"),
        # 6 × 1.25 = 7.5 cents: a tie, to the even 8.
        (ISSUED, "EUR", "0.0125", 6, "7.5", 8, "-0.5"),
        # 3 × 1.25 = 3.75 cents → 4.
        (ISSUED, "EUR", "0.0125", 3, "3.75", 4, "-0.25"),
        # Credits are negative: −2.5 → −2 and −7.5 → −8, ties to even either side of zero.
        (REDEEMED, "EUR", "0.0125", 2, "-2.5", -2, "-0.5"),
        (REDEEMED, "EUR", "0.0125", 6, "-7.5", -8, "0.5"),
        # 50 × 0.01 EUR reversed = −50 cents.
        (REVERSED, "EUR", "0.01", 50, "-50", -50, "0"),
        # 50 × 0.009 EUR refunded to the partner's books = +45 cents.
        (REFUNDED, "EUR", "0.009", 50, "45", 45, "0"),
        # Yen has no minor unit: 3 × 0.5 = 1.5 JPY → 2, 5 × 0.5 = 2.5 → 2.
        (ISSUED, "JPY", "0.5", 3, "1.5", 2, "-0.5"),
        (ISSUED, "JPY", "0.5", 5, "2.5", 2, "0.5"),
        # Dinar has 1000 fils: 1 × 0.0125 KWD = 12.5 fils → 12.
        (ISSUED, "KWD", "0.0125", 1, "12.5", 12, "0.5"),
        # A promotional price of zero is allowed and costs nothing.
        (ISSUED, "EUR", "0", 10, "0", 0, "0"),
    ],
)
def test_a_line_is_priced_exactly_and_rounded_half_even_once(kind, currency, price, points, exact, rounded, residue):
    [line] = build_lines([aggregate(kind, price, points, currency=currency)])
    assert line.exact_amount_minor == Decimal(exact)
    assert line.amount_minor == rounded
    assert line.rounding_residue_minor == Decimal(residue)
    assert Decimal(line.amount_minor) + line.rounding_residue_minor == line.exact_amount_minor


def cafe_rows() -> tuple[list[PostingAggregate], list[AdjustmentAmount]]:
    """A month at a café, in EUR; the arithmetic is in test_a_partner_net_is_worked_by_hand."""
    aggregates = [
        # The SQL may split a group; 4001 + 6000 points at 0.0125 become one line.
        aggregate(ISSUED, "0.0125", 4001, 15),
        aggregate(ISSUED, "0.01250", 6000, 25),
        aggregate(ISSUED, "0.0130", 500, 3),
        aggregate(REVERSED, "0.0125", 203, 2),
        aggregate(REDEEMED, "0.0100", 3003, 12),
        aggregate(REFUNDED, "0.0100", 50, 1),
    ]
    adjustments = [
        AdjustmentAmount("cafe", LineKind.ADJUSTMENT, -1200, "EUR", "ADJ-17"),
        AdjustmentAmount("cafe", LineKind.FEE, 500, "EUR", "FEE-2026-03"),
    ]
    return aggregates, adjustments


def test_a_partner_net_is_worked_by_hand():
    aggregates, adjustments = cafe_rows()
    lines = build_lines(aggregates, adjustments)
    # issued    10001 × 1.25 c =  12501.25 → 12501 (residue +0.25)
    # issued      500 × 1.30 c =    650    →   650
    # reversed    203 × 1.25 c =   −253.75 →  −254 (residue +0.25)
    # redeemed   3003 × 1.00 c =  −3003    → −3003
    # refunded     50 × 1.00 c =     50    →    50
    # fee                              500 →   500
    # adjustment                     −1200 → −1200
    assert [(line.line_kind, line.points, line.count, line.amount_minor) for line in lines] == [
        (ISSUED, 10001, 40, 12501),
        (ISSUED, 500, 3, 650),
        (REVERSED, 203, 2, -254),
        (REDEEMED, 3003, 12, -3003),
        (REFUNDED, 50, 1, 50),
        (LineKind.FEE, None, 1, 500),
        (LineKind.ADJUSTMENT, None, 1, -1200),
    ]
    assert lines[0].price_per_point == Decimal("0.0125")
    # charges 12501 + 650 + 50 + 500 = 13701; credits 254 + 3003 + 1200 = 4457;
    # net 13701 − 4457 = 9244; exact 9244.5, of which 0.25 + 0.25 = 0.5 is residue.
    assert net_positions(lines) == [
        PartnerNet("cafe", "EUR", 13701, 4457, 9244, Decimal("9244.5"), Decimal("0.5"))
    ]


def test_rounded_lines_plus_residue_equal_the_exact_total_exactly():
    aggregates = [aggregate(ISSUED, "0.0125", points) for points in (1, 2, 3, 5, 7)]
    aggregates += [aggregate(REDEEMED, "0.0333", 1), aggregate(REDEEMED, "0.0333", 2, partner="books")]
    lines = build_lines(aggregates)
    # 0.0125 EUR: 1+2+3+5+7 = 18 points merge into one line: 18 × 1.25 = 22.5 → 22 (+0.5).
    # 0.0333 EUR: cafe 1 × 3.33 = −3.33 → −3 (−0.33); books 2 × 3.33 = −6.66 → −7 (+0.34).
    assert [(line.partner_code, line.amount_minor, line.rounding_residue_minor) for line in lines] == [
        ("books", -7, Decimal("0.34")),
        ("cafe", 22, Decimal("0.5")),
        ("cafe", -3, Decimal("-0.33")),
    ]
    exact_total = exact_sum(line.exact_amount_minor for line in lines)
    residue_total = exact_sum(line.rounding_residue_minor for line in lines)
    assert exact_total == Decimal("12.51")
    assert sum(line.amount_minor for line in lines) + residue_total == exact_total


def test_lines_come_out_in_one_order_whatever_the_rows_order():
    aggregates, adjustments = cafe_rows()
    assert build_lines(aggregates, adjustments) == build_lines(aggregates[::-1], adjustments[::-1])


def summary_lines():
    aggregates, adjustments = cafe_rows()
    aggregates += [
        aggregate(ISSUED, "0.0100", 2000, 4, partner="books"),
        aggregate(REDEEMED, "0.0100", 5000, 9, partner="books"),
        aggregate(REDEEMED, "0.0095", 10000, 30, partner="fuel"),
    ]
    return build_lines(aggregates, adjustments)


def test_the_cycle_summary_is_worked_by_hand():
    traces = [
        LotTrace(None, "cafe", 100),
        LotTrace("books", "cafe", 50),
        LotTrace("books", "cafe", 25),
        LotTrace("cafe", "fuel", 10),
        LotTrace("cafe", "cafe", 5),
        LotTrace("fuel", "books", 0),
    ]
    summary = summarize_cycle(summary_lines(), currency="EUR", lot_traces=traces)
    # cafe: net 9244 (charges 13701, credits 4457), as above.
    # books: 2000 × 1 c = 2000 charged, 5000 × 1 c = 5000 credited, net −3000.
    # fuel: 10000 × 0.95 c = 9500 credited, net −9500.
    assert [(net.partner_code, net.net_minor) for net in summary.partner_nets] == [
        ("books", -3000), ("cafe", 9244), ("fuel", -9500)
    ]
    # gross = (2000 + 5000) + (13701 + 4457) + (0 + 9500) = 34658
    assert summary.gross_obligations_minor == 34658
    # net payments = 3000 + 9244 + 9500 = 21744
    assert summary.net_payments_minor == 21744
    # 1 − 21744/34658 = 12914/34658 = 0.372612… → 0.3726
    assert summary.netting_efficiency == Decimal("0.3726")
    assert summary.netting_efficiency_defined
    # margin = −3000 + 9244 − 9500 = −3256: this cycle the hub paid out more than it took in.
    assert summary.hub_margin_minor == -3256
    assert summary.hub_margin_exact_minor == Decimal("-3255.5")
    assert summary.rounding_residue_minor == Decimal("0.5")
    assert summary.issuer_redeemer_matrix == (
        IssuerRedeemerFlow(None, "cafe", 100),
        IssuerRedeemerFlow("books", "cafe", 75),
        IssuerRedeemerFlow("cafe", "cafe", 5),
        IssuerRedeemerFlow("cafe", "fuel", 10),
    )


def test_a_cycle_without_obligations_flags_its_efficiency_as_undefined():
    summary = summarize_cycle([], currency="EUR")
    assert summary.gross_obligations_minor == summary.net_payments_minor == summary.hub_margin_minor == 0
    assert summary.netting_efficiency == Decimal("0")
    assert not summary.netting_efficiency_defined
    assert summary.partner_nets == () and summary.issuer_redeemer_matrix == ()


@pytest.mark.parametrize(
    ("gross", "net", "efficiency"),
    [
        (0, 0, "0.0000"),
        (100, 0, "1.0000"),
        (100, 100, "0.0000"),
        (3, 1, "0.6667"),  # 2/3 = 0.66666…
        (3, 2, "0.3333"),  # 1/3 = 0.33333…
        (20000, 19999, "0.0000"),  # 1/20000 = 0.00005: a tie, to the even 0.0000
        (20000, 19997, "0.0002"),  # 3/20000 = 0.00015: a tie, to the even 0.0002
        (20000, 19995, "0.0002"),  # 5/20000 = 0.00025: a tie, to the even 0.0002
        (20000, 19993, "0.0004"),  # 7/20000 = 0.00035: a tie, to the even 0.0004
        (30000, 10001, "0.6666"),  # 19999/30000 = 0.666633…
    ],
)
def test_netting_efficiency_rounds_the_exact_fraction_half_even_to_four_places(gross, net, efficiency):
    result = netting_efficiency(gross, net)
    assert result == Decimal(efficiency)
    assert str(result) == efficiency


def test_netting_efficiency_refuses_a_net_above_the_gross():
    with pytest.raises(ValidationFailed):
        netting_efficiency(10, 11)


@pytest.mark.parametrize(
    "arguments",
    [
        ("cafe", ISSUED, "EUR", 0.0125, 10, 1),  # a float price
        ("cafe", ISSUED, "EUR", 1, 10, 1),  # an int price: prices are Decimals
        ("cafe", ISSUED, "EUR", "0.0125", 10, 1),  # a string price
        ("cafe", ISSUED, "EUR", Decimal("NaN"), 10, 1),
        ("cafe", ISSUED, "EUR", Decimal("Infinity"), 10, 1),
        ("cafe", ISSUED, "EUR", Decimal("-0.01"), 10, 1),
        ("cafe", ISSUED, "EUR", Decimal("0.000000001"), 10, 1),  # 9 decimal places
        ("cafe", ISSUED, "EUR", Decimal("1E12"), 10, 1),
        ("cafe", ISSUED, "EUR", Decimal("0.01"), -1, 1),  # negative points
        ("cafe", ISSUED, "EUR", Decimal("0.01"), 0, 0),
        ("cafe", ISSUED, "EUR", Decimal("0.01"), 10.0, 1),  # float points
        ("cafe", ISSUED, "EUR", Decimal("0.01"), True, 1),
        ("cafe", ISSUED, "EUR", Decimal("0.01"), 10, 0),  # no postings
        ("cafe", ISSUED, "EUR", Decimal("0.01"), 10, 11),  # more postings than points
        ("cafe", ISSUED, "eur", Decimal("0.01"), 10, 1),
        ("cafe", ISSUED, "EURO", Decimal("0.01"), 10, 1),
        ("Cafe!", ISSUED, "EUR", Decimal("0.01"), 10, 1),
        ("cafe", LineKind.FEE, "EUR", Decimal("0.01"), 10, 1),  # fees come as money
        ("cafe", "bogus", "EUR", Decimal("0.01"), 10, 1),
    ],
)
def test_posting_aggregates_are_checked(arguments):
    with pytest.raises(ValidationFailed):
        PostingAggregate(*arguments)


@pytest.mark.parametrize(
    "arguments",
    [
        ("cafe", LineKind.FEE, 0, "EUR", "FEE-1"),
        ("cafe", LineKind.FEE, -5, "EUR", "FEE-1"),  # a waived fee is an adjustment credit
        ("cafe", LineKind.ADJUSTMENT, 0, "EUR", "ADJ-1"),
        ("cafe", LineKind.ADJUSTMENT, 5.0, "EUR", "ADJ-1"),  # a float amount
        ("cafe", LineKind.ADJUSTMENT, Decimal(5), "EUR", "ADJ-1"),
        ("cafe", LineKind.ADJUSTMENT, 5, "EUR", "=SUM(A1:A9)"),  # would run in a spreadsheet
        ("cafe", LineKind.ADJUSTMENT, 5, "EUR", ""),
        ("cafe", LineKind.ADJUSTMENT, 5, "EUR", "A" * 65),
        ("cafe", LineKind.POINTS_ISSUED, 5, "EUR", "ADJ-1"),
        ("cafe", LineKind.ADJUSTMENT, 5, "usd", "ADJ-1"),
    ],
)
def test_adjustments_are_checked(arguments):
    with pytest.raises(ValidationFailed):
        AdjustmentAmount(*arguments)


def test_one_partner_cannot_mix_currencies():
    with pytest.raises(ValidationFailed, match="one currency"):
        build_lines([aggregate(ISSUED, "0.01", 10), aggregate(REDEEMED, "0.01", 10, currency="USD")])
    with pytest.raises(ValidationFailed, match="one currency"):
        build_lines([aggregate(ISSUED, "0.01", 10)], [AdjustmentAmount("cafe", LineKind.FEE, 5, "USD", "FEE-1")])


def test_a_summary_is_in_one_currency():
    lines = build_lines([aggregate(ISSUED, "0.01", 10), aggregate(ISSUED, "0.01", 10, partner="books", currency="USD")])
    with pytest.raises(ValidationFailed, match="each currency separately"):
        summarize_cycle(lines, currency="EUR")


def test_the_same_adjustment_cannot_be_booked_twice():
    twice = [AdjustmentAmount("cafe", LineKind.ADJUSTMENT, 5, "EUR", "ADJ-1")] * 2
    with pytest.raises(ValidationFailed, match="twice"):
        build_lines([], twice)


def test_rows_of_the_wrong_type_are_refused():
    with pytest.raises(ValidationFailed):
        build_lines([("cafe", ISSUED, "EUR", Decimal("0.01"), 10, 1)])
    with pytest.raises(ValidationFailed):
        issuer_redeemer_matrix([(None, "cafe", 10)])


@pytest.mark.parametrize(
    "arguments", [(None, "cafe", -1), (None, "cafe", 1.0), ("Cafe", "cafe", 1), (None, None, 1)]
)
def test_lot_traces_are_checked(arguments):
    with pytest.raises(ValidationFailed):
        LotTrace(*arguments)


def test_only_partner_postings_with_a_price_feed_lines():
    assert dict(LINE_KIND_BY_TRANSACTION_KIND) == {
        TransactionKind.EARN: ISSUED,
        TransactionKind.CAMPAIGN_SHARE: LineKind.CAMPAIGN_POINTS_ISSUED,
        TransactionKind.BEHAVIOUR_AWARD: LineKind.BEHAVIOUR_POINTS_ISSUED,
        TransactionKind.GOODWILL_CREDIT: LineKind.GOODWILL_POINTS_ISSUED,
        TransactionKind.COUPON_BONUS: LineKind.COUPON_POINTS_ISSUED,
        TransactionKind.CLAWBACK: REVERSED,
        TransactionKind.CORRECTION: LineKind.POINTS_CORRECTED,
        TransactionKind.CAPTURE: REDEEMED,
        TransactionKind.REDEMPTION_REFUND: REFUNDED,
    }


def stored_line(**changes) -> StatementLine:
    """A line as it might be read back from the database to render again."""
    values = {
        "partner_code": "cafe", "line_kind": ISSUED, "currency": "EUR", "price_per_point": Decimal("0.0125"),
        "points": 2, "count": 1, "reference": None, "exact_amount_minor": Decimal("2.5"), "amount_minor": 2,
        "rounding_residue_minor": Decimal("0.5"),
    }
    return StatementLine(**{**values, **changes})


def test_a_stored_line_that_is_consistent_is_accepted():
    assert stored_line() == build_lines([aggregate(ISSUED, "0.0125", 2)])[0]


@pytest.mark.parametrize(
    "changes",
    [
        {"amount_minor": 3},  # 3 + 0.5 is not 2.5
        {"exact_amount_minor": Decimal("3.5"), "amount_minor": 2, "rounding_residue_minor": Decimal("1.5")},
        {"rounding_residue_minor": 0.5},  # a float residue
        {"amount_minor": 2.0},
        {"price_per_point": None},
        {"points": None},
        {"reference": "ADJ-1"},
        {"line_kind": LineKind.ADJUSTMENT},  # money lines have no price or points
        {"line_kind": "bogus"},
        {"partner_code": "Cafe"},
    ],
)
def test_a_stored_line_that_does_not_add_up_is_refused(changes):
    with pytest.raises(ValidationFailed):
        stored_line(**changes)
