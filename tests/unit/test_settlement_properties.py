"""Properties of settlement over random cycles: exact balance, bounded residue, same bytes."""

from __future__ import annotations

import random
from datetime import date, datetime, time, timezone
from decimal import Decimal
from fractions import Fraction

from hypothesis import given, settings
from hypothesis import strategies as st

from alliance.domain.money import minor_units_per_unit
from settlement.cycles import cycles_between
from settlement.matching import (
    HubRecord,
    parse_partner_csv,
    reconcile,
    render_report_csv,
    render_report_json,
)
from settlement.netting import (
    POINT_LINE_SIGNS,
    AdjustmentAmount,
    LineKind,
    LotTrace,
    PostingAggregate,
    build_lines,
    summarize_cycle,
)
from settlement.statements import build_statement, check_continuity, render_csv, render_json

PARTNER_CODES = ("bakery", "books", "cafe", "cinema", "fuel", "grocer", "hotel", "pharmacy")
CURRENCIES = ("EUR", "JPY", "KWD")
# Prices with exactly 4 decimal places, up to 100 currency units per point.
prices = st.integers(min_value=0, max_value=1_000_000).map(lambda units: Decimal(units).scaleb(-4))


@st.composite
def cycle_rows(draw):
    """Aggregates and adjustments for 2-8 partners in one currency, plus lot traces."""
    currency = draw(st.sampled_from(CURRENCIES))
    partners = draw(st.lists(st.sampled_from(PARTNER_CODES), min_size=2, max_size=8, unique=True))
    aggregates, adjustments, traces = [], [], []
    for partner in partners:
        for _ in range(draw(st.integers(min_value=0, max_value=6))):
            points = draw(st.integers(min_value=1, max_value=10**9))
            aggregates.append(PostingAggregate(
                partner, draw(st.sampled_from(list(POINT_LINE_SIGNS))), currency, draw(prices), points,
                draw(st.integers(min_value=1, max_value=min(points, 1000))),
            ))
        for number in range(draw(st.integers(min_value=0, max_value=2))):
            kind = draw(st.sampled_from([LineKind.FEE, LineKind.ADJUSTMENT]))
            amount = draw(st.integers(min_value=1, max_value=10**7))
            if kind == LineKind.ADJUSTMENT and draw(st.booleans()):
                amount = -amount
            adjustments.append(AdjustmentAmount(partner, kind, amount, currency, f"REF-{number}"))
        for _ in range(draw(st.integers(min_value=0, max_value=3))):
            issuer = draw(st.sampled_from([None, *partners]))
            traces.append(LotTrace(issuer, partner, draw(st.integers(min_value=0, max_value=10**6))))
    return currency, partners, aggregates, adjustments, traces


@settings(max_examples=150, deadline=None)
@given(cycle_rows(), st.randoms(use_true_random=False))
def test_partner_nets_sum_to_the_hub_margin_and_statements_render_identically(rows, shuffler):
    currency, partners, aggregates, adjustments, traces = rows
    lines = build_lines(aggregates, adjustments)
    summary = summarize_cycle(lines, currency=currency, lot_traces=traces)

    assert sum(net.net_minor for net in summary.partner_nets) == summary.hub_margin_minor
    assert Decimal(summary.hub_margin_minor) + summary.rounding_residue_minor == summary.hub_margin_exact_minor
    assert 0 <= summary.net_payments_minor <= summary.gross_obligations_minor
    assert Decimal(0) <= summary.netting_efficiency <= Decimal(1)

    minor_units = minor_units_per_unit(currency)
    for line in lines:
        # Half-even leaves at most half a minor unit; exactly half only on a tie.
        assert abs(line.rounding_residue_minor) <= Decimal("0.5")
        if line.points is not None:
            # An independent oracle: Fraction arithmetic, and round() on a Fraction is half-even.
            exact = Fraction(line.points) * Fraction(line.price_per_point) * minor_units
            exact *= POINT_LINE_SIGNS[line.line_kind]
            assert Fraction(line.exact_amount_minor) == exact
            assert line.amount_minor == round(exact)

    cycle = cycles_between(datetime(2026, 3, 28, tzinfo=timezone.utc), datetime(2026, 3, 29, tzinfo=timezone.utc),
                           partner_code=partners[0], frequency="daily", time_zone="Europe/Paris",
                           cutoff_local=time(0))[0]
    own_lines = [line for line in lines if line.partner_code == partners[0]]
    statement = build_statement(cycle=cycle, currency=currency, opening_balance_minor=0, lines=own_lines,
                                due_date=date(2026, 4, 30))
    shuffled = list(own_lines)
    shuffler.shuffle(shuffled)
    again = build_statement(cycle=cycle, currency=currency, opening_balance_minor=0, lines=shuffled,
                            due_date=date(2026, 4, 30))
    assert render_json(statement) == render_json(again)
    assert render_csv(statement) == render_csv(again)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(min_value=-10**6, max_value=10**6), min_size=1, max_size=12))
def test_every_closing_balance_is_the_next_opening(nets):
    cycles = cycles_between(datetime(2026, 1, 1, tzinfo=timezone.utc), datetime(2026, 12, 1, tzinfo=timezone.utc),
                            partner_code="cafe", frequency="monthly", time_zone="Australia/Sydney",
                            cutoff_local=time(0))
    statements, balance = [], 0
    for cycle, net in zip(cycles, nets, strict=False):  # the year's first len(nets) cycles (it has 12, nets 1 to 12)
        lines = build_lines([], [AdjustmentAmount("cafe", LineKind.ADJUSTMENT, net, "EUR", "ADJ-1")] if net else [])
        statement = build_statement(cycle=cycle, currency="EUR", opening_balance_minor=balance, lines=lines,
                                    due_date=date(2027, 1, 1))
        statements.append(statement)
        balance = statement.closing_balance_minor
    check_continuity(statements)
    assert balance == sum(nets)


@settings(max_examples=60, deadline=None)
@given(
    st.integers(min_value=0, max_value=60),
    st.sets(st.integers(min_value=0, max_value=59)),
    st.sets(st.integers(min_value=0, max_value=59)),
    st.integers(min_value=0, max_value=5),
    st.randoms(use_true_random=False),
)
def test_reconciliation_finds_every_planted_discrepancy_and_nothing_else(
    receipts, dropped, altered, extra, shuffler: random.Random
):
    hub_records = [HubRecord(f"R-{n}", 100 + n, "EUR", date(2026, 3, 1 + n % 28)) for n in range(receipts)]
    dropped = {n for n in dropped if n < receipts}
    altered = {n for n in altered if n < receipts} - dropped
    rows = []
    for n, record in enumerate(hub_records):
        if n in dropped:
            continue
        amount = record.amount_minor + 1 if n in altered else record.amount_minor
        rows.append(f"{record.receipt_id},{amount},EUR,{record.occurred_on.isoformat()}")
    rows += [f"X-{n},1,EUR,2026-03-01" for n in range(extra)]
    shuffler.shuffle(rows)
    partner_file = ("receipt_id,amount_minor,currency,occurred_on\r\n" + "".join(f"{row}\r\n" for row in rows)).encode()
    report = reconcile(parse_partner_csv(partner_file), hub_records)
    assert {line.receipt_id for line in report.missing_at_partner} == {f"R-{n}" for n in dropped}
    assert {line.receipt_id for line in report.missing_at_hub} == {f"X-{n}" for n in range(extra)}
    assert {line.receipt_id for line in report.mismatched} == {f"R-{n}" for n in altered}
    assert all(line.differing_fields == ("amount_minor",) for line in report.mismatched)
    assert len(report.matched) == receipts - len(dropped) - len(altered)
    assert render_report_json(report) == render_report_json(reconcile(parse_partner_csv(partner_file), hub_records))
    assert render_report_csv(report) == render_report_csv(reconcile(parse_partner_csv(partner_file), hub_records))
