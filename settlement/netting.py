"""Netting: statement lines, each partner's net position, and the cycle's summary.

Conventions fixed here, which statements and reports inherit:

- **Sign.** Every amount is seen from the partner's side: positive means the partner
  owes the hub, negative means the hub owes the partner. Points issued and
  redemptions refunded are charges (+); issuance reversed and points redeemed are
  credits (−); fees are charges; adjustments carry their own sign.
- **Money per line.** A line groups one partner's postings of one kind at one price.
  Its exact value is ``points × price_per_point × minor units per unit`` (the price is
  money per point in major units), computed without any rounding, then rounded
  half-even once, to whole minor units. The residue ``exact − rounded`` (at most half a
  minor unit) is kept on the line and summed per statement; it is what the hub's
  rounding account absorbs, so that rounded amounts plus residue equal the exact total.
- **Item lines.** A reward from the catalog is reimbursed to its supplier per item, at
  the reward's price in whole minor units: one line per (reward, price per item), items
  × price, with no rounding. Items supplied are credits (−), items returned charges (+).
- **Gross obligations** are the sum over every statement line of the absolute value
  of its rounded amount: each partner's charges plus its credits, before any
  offsetting. **Net payments** are the sum over partners of the absolute value of
  their net. **Netting efficiency** is ``1 − net payments / gross obligations``,
  computed exactly and rounded half-even to 4 places; with no obligations it is 0
  and ``netting_efficiency_defined`` is False.
- **Hub margin** is the sum of all partners' nets: what the hub keeps once every
  partner is settled (issue prices charged, minus redemption prices paid, plus fees
  and adjustments). It is computed from the lines and checked against the nets.

Rows come pre-aggregated by SQL (see ``LINE_KIND_BY_TRANSACTION_KIND``); nothing here
loops over journal entries.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass
from decimal import (
    ROUND_HALF_EVEN,
    Context,
    Decimal,
    DivisionByZero,
    Inexact,
    InvalidOperation,
    Overflow,
    Rounded,
)
from enum import StrEnum
from types import MappingProxyType
from typing import Iterable, Mapping, Sequence

from alliance.domain.errors import ValidationFailed
from alliance.domain.ledger import TransactionKind
from alliance.domain.money import minor_units_per_unit

# Arithmetic that refuses to round: a product or sum that would lose a digit raises
# instead, so an "exact" value is exact or nothing. 80 digits hold the largest line
# (10^18 points × a price of 12 + 8 digits × 10^4 minor units) with room for sums.
EXACT = Context(prec=80, traps=[InvalidOperation, Inexact, Rounded, Overflow, DivisionByZero])
HALF_MINOR_UNIT = Decimal("0.5")
# The same shape the hub enforces on partner codes; repeated here because settlement
# may not import the hub's services.
PARTNER_CODE_PATTERN = re.compile(r"^[a-z0-9][a-z0-9-]{1,39}\Z")
CURRENCY_PATTERN = re.compile(r"^[A-Z]{3}\Z")
# Starts with a letter or digit so that no spreadsheet reads a reference as a formula.
REFERENCE_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,63}\Z")
# Prices are stored as NUMERIC(20, 8): at most 8 decimal places and 12 integer digits.
MAX_PRICE_DECIMAL_PLACES = 8
MAX_PRICE_PER_POINT = Decimal(10) ** 12
# Within a signed 64-bit column, and far above a cycle's real volume.
MAX_POINTS_PER_LINE = 10**18
MAX_AMOUNT_MINOR = 10**18
# Sums over many lines and partners may pass the per-line bound; Python ints do not overflow.
MAX_SUM_MINOR = 10**30
# Prices change rarely and adjustments are few; thousands of lines mean a broken query.
MAX_LINES_PER_PARTNER = 10_000
EFFICIENCY_PLACES = 4


class LineKind(StrEnum):
    """What a statement line is for; the order here is the order lines are listed in."""

    POINTS_ISSUED = "points_issued"
    CAMPAIGN_POINTS_ISSUED = "campaign_points_issued"
    BEHAVIOUR_POINTS_ISSUED = "behaviour_points_issued"
    GOODWILL_POINTS_ISSUED = "goodwill_points_issued"
    COUPON_POINTS_ISSUED = "coupon_points_issued"
    ISSUANCE_REVERSED = "issuance_reversed"
    POINTS_CORRECTED = "points_corrected"
    POINTS_REDEEMED = "points_redeemed"
    REDEMPTIONS_REFUNDED = "redemptions_refunded"
    REWARDS_SUPPLIED = "rewards_supplied"
    REWARDS_RETURNED = "rewards_returned"
    FEE = "fee"
    ADJUSTMENT = "adjustment"


LINE_KIND_ORDER: Mapping[LineKind, int] = MappingProxyType({kind: index for index, kind in enumerate(LineKind)})
# +1: the partner owes the hub for these points; −1: the hub owes the partner.
POINT_LINE_SIGNS: Mapping[LineKind, int] = MappingProxyType(
    {
        LineKind.POINTS_ISSUED: 1,
        LineKind.CAMPAIGN_POINTS_ISSUED: 1,
        LineKind.BEHAVIOUR_POINTS_ISSUED: 1,
        LineKind.GOODWILL_POINTS_ISSUED: 1,
        LineKind.COUPON_POINTS_ISSUED: 1,
        LineKind.ISSUANCE_REVERSED: -1,
        LineKind.POINTS_CORRECTED: -1,
        LineKind.POINTS_REDEEMED: -1,
        LineKind.REDEMPTIONS_REFUNDED: 1,
    }
)
MONEY_LINE_KINDS = frozenset({LineKind.FEE, LineKind.ADJUSTMENT})
# Rewards from the catalog are reimbursed per item at the reward's price in money, not per
# point: −1, the hub owes the supplier for items it supplied; +1, items returned.
ITEM_LINE_SIGNS: Mapping[LineKind, int] = MappingProxyType(
    {LineKind.REWARDS_SUPPLIED: -1, LineKind.REWARDS_RETURNED: 1}
)
# Which journal transactions feed which line, for the SQL that aggregates postings.
# Only postings with a partner and a recorded price settle: a hub-funded earn is the
# hub's marketing cost, and activation, hold, release, expiry and transfer move points
# between a member's own accounts or to the hub's breakage account.
LINE_KIND_BY_TRANSACTION_KIND: Mapping[TransactionKind, LineKind] = MappingProxyType(
    {
        TransactionKind.EARN: LineKind.POINTS_ISSUED,
        TransactionKind.CAMPAIGN_SHARE: LineKind.CAMPAIGN_POINTS_ISSUED,
        TransactionKind.BEHAVIOUR_AWARD: LineKind.BEHAVIOUR_POINTS_ISSUED,
        TransactionKind.GOODWILL_CREDIT: LineKind.GOODWILL_POINTS_ISSUED,
        TransactionKind.COUPON_BONUS: LineKind.COUPON_POINTS_ISSUED,
        TransactionKind.CLAWBACK: LineKind.ISSUANCE_REVERSED,
        TransactionKind.CORRECTION: LineKind.POINTS_CORRECTED,
        TransactionKind.CAPTURE: LineKind.POINTS_REDEEMED,
        TransactionKind.REDEMPTION_REFUND: LineKind.REDEMPTIONS_REFUNDED,
    }
)
# Which journal transactions feed item lines; each names its reward order, which carries
# the reward's code, the items and the price per item the supplier is reimbursed.
ITEM_LINE_KIND_BY_TRANSACTION_KIND: Mapping[TransactionKind, LineKind] = MappingProxyType(
    {
        TransactionKind.REWARD_CAPTURE: LineKind.REWARDS_SUPPLIED,
        TransactionKind.REWARD_RETURN: LineKind.REWARDS_RETURNED,
    }
)
# Every journal transaction that lands on some statement line.
SETTLING_TRANSACTION_KINDS = frozenset(LINE_KIND_BY_TRANSACTION_KIND) | frozenset(ITEM_LINE_KIND_BY_TRANSACTION_KIND)


@dataclass(frozen=True, slots=True)
class PostingAggregate:
    """One row of the SQL aggregation: a partner's postings of one kind at one price."""

    partner_code: str
    line_kind: LineKind
    currency: str
    price_per_point: Decimal
    points: int
    count: int

    def __post_init__(self) -> None:
        require_partner_code(self.partner_code, "partner_code")
        if self.line_kind not in POINT_LINE_SIGNS:
            raise ValidationFailed(
                f"line_kind {self.line_kind!r} is not a points line", fields={"line_kind": ["not a points line"]}
            )
        require_currency(self.currency)
        require_price(self.price_per_point)
        require_whole(self.points, "points", minimum=1, maximum=MAX_POINTS_PER_LINE)
        require_whole(self.count, "count", minimum=1, maximum=self.points)


@dataclass(frozen=True, slots=True)
class ItemAggregate:
    """Reward items a supplier supplied (or took back) in the cycle at one price per item.

    ``reference`` is the reward's code; ``items`` the items reimbursed, ``points`` the
    points members spent on them (shown, not priced) and ``unit_price_minor`` what the hub
    pays the supplier per item, in whole minor units, so the line needs no rounding.
    """

    partner_code: str
    line_kind: LineKind
    currency: str
    reference: str
    unit_price_minor: int
    items: int
    points: int

    def __post_init__(self) -> None:
        require_partner_code(self.partner_code, "partner_code")
        if self.line_kind not in ITEM_LINE_SIGNS:
            raise ValidationFailed(
                f"line_kind {self.line_kind!r} is not an item line", fields={"line_kind": ["not an item line"]}
            )
        require_currency(self.currency)
        require_reference(self.reference)
        require_whole(self.unit_price_minor, "unit_price_minor", minimum=0, maximum=MAX_AMOUNT_MINOR)
        require_whole(self.items, "items", minimum=1, maximum=MAX_POINTS_PER_LINE)
        require_whole(self.points, "points", minimum=1, maximum=MAX_POINTS_PER_LINE)
        if self.unit_price_minor * self.items > MAX_AMOUNT_MINOR:
            raise ValidationFailed("the items' amount is beyond a line's limit", fields={"items": ["too many"]})


@dataclass(frozen=True, slots=True)
class AdjustmentAmount:
    """A fee or adjustment in money, signed like every amount (+ the partner owes)."""

    partner_code: str
    kind: LineKind
    amount_minor: int
    currency: str
    reference: str

    def __post_init__(self) -> None:
        require_partner_code(self.partner_code, "partner_code")
        if self.kind not in MONEY_LINE_KINDS:
            raise ValidationFailed(f"kind {self.kind!r} is not a fee or adjustment", fields={"kind": ["unknown"]})
        # A fee is always a charge (waiving one is an adjustment credit), and a line of
        # zero says nothing, so neither kind may be zero.
        minimum = 1 if self.kind == LineKind.FEE else -MAX_AMOUNT_MINOR
        require_whole(self.amount_minor, "amount_minor", minimum=minimum, maximum=MAX_AMOUNT_MINOR)
        if self.amount_minor == 0:
            raise ValidationFailed("an adjustment must not be zero", fields={"amount_minor": ["zero"]})
        require_currency(self.currency)
        require_reference(self.reference)


@dataclass(frozen=True, slots=True)
class StatementLine:
    """One line of a partner's statement, with its exact and its rounded amount."""

    partner_code: str
    line_kind: LineKind
    currency: str
    price_per_point: Decimal | None
    points: int | None
    count: int
    reference: str | None
    exact_amount_minor: Decimal
    amount_minor: int
    rounding_residue_minor: Decimal

    def __post_init__(self) -> None:
        require_partner_code(self.partner_code, "partner_code")
        require_currency(self.currency)
        require_whole(self.amount_minor, "amount_minor", minimum=-MAX_AMOUNT_MINOR, maximum=MAX_AMOUNT_MINOR)
        require_whole(self.count, "count", minimum=1, maximum=MAX_POINTS_PER_LINE)
        # A points line has a price and points and no reference; a money line the reverse.
        if self.line_kind in POINT_LINE_SIGNS:
            require_price(self.price_per_point)
            require_whole(self.points, "points", minimum=self.count, maximum=MAX_POINTS_PER_LINE)
            if self.reference is not None:
                raise ValidationFailed("a points line has no reference", fields={"reference": ["not allowed"]})
        elif self.line_kind in ITEM_LINE_SIGNS:
            if self.price_per_point is not None:
                raise ValidationFailed("an item line is priced per item, not per point",
                                       fields={"price_per_point": ["not allowed"]})
            require_whole(self.points, "points", minimum=1, maximum=MAX_POINTS_PER_LINE)
            require_reference(self.reference)
            if self.amount_minor * ITEM_LINE_SIGNS[self.line_kind] < 0:
                raise ValidationFailed("an item line's amount has the wrong sign for its kind",
                                       fields={"amount_minor": ["wrong sign"]})
            if self.amount_minor % self.count:
                raise ValidationFailed("an item line's amount is not a whole price per item",
                                       fields={"amount_minor": ["not a multiple of count"]})
        elif self.line_kind in MONEY_LINE_KINDS:
            if self.price_per_point is not None or self.points is not None or self.count != 1:
                raise ValidationFailed("a fee or adjustment line is money alone, one per reference")
            if not isinstance(self.reference, str) or not REFERENCE_PATTERN.match(self.reference):
                raise ValidationFailed("a fee or adjustment line needs its reference",
                                       fields={"reference": ["missing"]})
        else:
            raise ValidationFailed(f"line_kind {self.line_kind!r} is unknown", fields={"line_kind": ["unknown"]})
        if not all(isinstance(value, Decimal) for value in (self.exact_amount_minor, self.rounding_residue_minor)):
            raise ValidationFailed("exact amounts and residues must be Decimals")
        if EXACT.add(Decimal(self.amount_minor), self.rounding_residue_minor) != self.exact_amount_minor:
            raise ValidationFailed("a line's rounded amount plus its residue must equal its exact amount")
        if abs(self.rounding_residue_minor) > HALF_MINOR_UNIT:
            raise ValidationFailed("a line's rounding residue cannot exceed half a minor unit")


@dataclass(frozen=True, slots=True)
class PartnerNet:
    """A partner's position for the cycle: charges, credits and the net between them."""

    partner_code: str
    currency: str
    charges_minor: int
    credits_minor: int
    net_minor: int
    exact_net_minor: Decimal
    rounding_residue_minor: Decimal


@dataclass(frozen=True, slots=True)
class LotTrace:
    """Points redeemed at one partner that came from lots another issued (None: the hub)."""

    issuer_partner_code: str | None
    redeemer_partner_code: str
    points: int

    def __post_init__(self) -> None:
        if self.issuer_partner_code is not None:
            require_partner_code(self.issuer_partner_code, "issuer_partner_code")
        require_partner_code(self.redeemer_partner_code, "redeemer_partner_code")
        require_whole(self.points, "points", minimum=0, maximum=MAX_POINTS_PER_LINE)


@dataclass(frozen=True, slots=True)
class IssuerRedeemerFlow:
    """One cell of the issuer → redeemer matrix: points issued by one, spent at the other."""

    issuer_partner_code: str | None
    redeemer_partner_code: str
    points: int


@dataclass(frozen=True, slots=True)
class CycleSummary:
    """The whole cycle across partners, in one currency."""

    currency: str
    partner_nets: tuple[PartnerNet, ...]
    gross_obligations_minor: int
    net_payments_minor: int
    netting_efficiency: Decimal
    netting_efficiency_defined: bool
    hub_margin_minor: int
    hub_margin_exact_minor: Decimal
    rounding_residue_minor: Decimal
    issuer_redeemer_matrix: tuple[IssuerRedeemerFlow, ...]


def build_lines(
    aggregates: Iterable[PostingAggregate], adjustments: Iterable[AdjustmentAmount] = (),
    items: Iterable[ItemAggregate] = (),
) -> list[StatementLine]:
    """Statement lines for every partner: one per (kind, price), per (reward, price per item), per fee or adjustment."""
    groups: dict[tuple[str, LineKind, str, Decimal], list[int]] = defaultdict(lambda: [0, 0])
    for aggregate in aggregates:
        if not isinstance(aggregate, PostingAggregate):
            raise ValidationFailed("aggregates must be PostingAggregate rows")
        price = aggregate.price_per_point.normalize(EXACT)
        group = groups[(aggregate.partner_code, LineKind(aggregate.line_kind), aggregate.currency, price)]
        group[0] += aggregate.points
        group[1] += aggregate.count
    lines = [_points_line(*key, points, count) for key, (points, count) in groups.items()]
    references: set[tuple[str, LineKind, str]] = set()
    for adjustment in adjustments:
        if not isinstance(adjustment, AdjustmentAmount):
            raise ValidationFailed("adjustments must be AdjustmentAmount rows")
        key = (adjustment.partner_code, LineKind(adjustment.kind), adjustment.reference)
        if key in references:
            raise ValidationFailed(
                f"{adjustment.kind} {adjustment.reference!r} appears twice for partner {adjustment.partner_code}",
                fields={"reference": ["duplicate"]},
            )
        references.add(key)
        lines.append(_money_line(adjustment))
    item_groups: dict[tuple[str, LineKind, str, str, int], list[int]] = defaultdict(lambda: [0, 0])
    for item in items:
        if not isinstance(item, ItemAggregate):
            raise ValidationFailed("items must be ItemAggregate rows")
        item_group = item_groups[(item.partner_code, LineKind(item.line_kind), item.currency, item.reference,
                                  item.unit_price_minor)]
        item_group[0] += item.items
        item_group[1] += item.points
    lines.extend(_item_line(*key, items_count, points) for key, (items_count, points) in item_groups.items())
    lines.sort(key=line_sort_key)
    _check_lines_per_partner(lines)
    return lines


def line_sort_key(line: StatementLine) -> tuple[str, int, Decimal, str, int]:
    """The order lines are listed in: by partner, kind, price, reference, then amount (items of one reward)."""
    return (
        line.partner_code,
        LINE_KIND_ORDER[LineKind(line.line_kind)],
        line.price_per_point if line.price_per_point is not None else Decimal(0),
        line.reference or "",
        abs(line.amount_minor),
    )


def net_positions(lines: Iterable[StatementLine]) -> list[PartnerNet]:
    """Each partner's charges, credits and net, ordered by partner code."""
    per_partner: dict[str, list[StatementLine]] = defaultdict(list)
    for line in lines:
        per_partner[line.partner_code].append(line)
    return [_partner_net(code, per_partner[code]) for code in sorted(per_partner)]


def summarize_cycle(
    lines: Sequence[StatementLine], *, currency: str, lot_traces: Iterable[LotTrace] = ()
) -> CycleSummary:
    """Nets, gross obligations, net payments, efficiency, hub margin and the matrix."""
    require_currency(currency)
    for line in lines:
        if line.currency != currency:
            raise ValidationFailed(
                f"partner {line.partner_code} settles in {line.currency}, the summary is in {currency}; "
                "summarise each currency separately",
                fields={"currency": ["mixed currencies"]},
            )
    nets = net_positions(lines)
    hub_margin_minor = sum(line.amount_minor for line in lines)
    # Margin from the lines and margin from the nets are two routes to one number;
    # disagreement would mean a line was dropped or counted twice.
    assert hub_margin_minor == sum(net.net_minor for net in nets), "partner nets must sum to the hub margin"
    hub_margin_exact_minor = exact_sum(line.exact_amount_minor for line in lines)
    rounding_residue_minor = exact_sum(line.rounding_residue_minor for line in lines)
    assert EXACT.add(Decimal(hub_margin_minor), rounding_residue_minor) == hub_margin_exact_minor
    gross_obligations_minor = sum(net.charges_minor + net.credits_minor for net in nets)
    net_payments_minor = sum(abs(net.net_minor) for net in nets)
    return CycleSummary(
        currency=currency,
        partner_nets=tuple(nets),
        gross_obligations_minor=gross_obligations_minor,
        net_payments_minor=net_payments_minor,
        netting_efficiency=netting_efficiency(gross_obligations_minor, net_payments_minor),
        netting_efficiency_defined=gross_obligations_minor > 0,
        hub_margin_minor=hub_margin_minor,
        hub_margin_exact_minor=hub_margin_exact_minor,
        rounding_residue_minor=rounding_residue_minor,
        issuer_redeemer_matrix=tuple(issuer_redeemer_matrix(lot_traces)),
    )


def netting_efficiency(gross_obligations_minor: int, net_payments_minor: int) -> Decimal:
    """``1 − net/gross`` rounded half-even to 4 places, from the exact fraction; 0 if no gross."""
    require_whole(gross_obligations_minor, "gross_obligations_minor", minimum=0, maximum=MAX_SUM_MINOR)
    require_whole(net_payments_minor, "net_payments_minor", minimum=0, maximum=MAX_SUM_MINOR)
    if not 0 <= net_payments_minor <= gross_obligations_minor:
        raise ValidationFailed("net payments must lie between 0 and gross obligations")
    if gross_obligations_minor == 0:
        return Decimal(0).scaleb(-EFFICIENCY_PLACES)
    # Integer division with an explicit half-even step, so the only rounding is this one.
    scaled = (gross_obligations_minor - net_payments_minor) * 10**EFFICIENCY_PLACES
    quotient, remainder = divmod(scaled, gross_obligations_minor)
    if 2 * remainder > gross_obligations_minor or (2 * remainder == gross_obligations_minor and quotient % 2):
        quotient += 1
    return Decimal(quotient).scaleb(-EFFICIENCY_PLACES)


def issuer_redeemer_matrix(lot_traces: Iterable[LotTrace]) -> list[IssuerRedeemerFlow]:
    """Lot traces summed per (issuer, redeemer); hub-funded points first, empty cells left out."""
    cells: dict[tuple[str | None, str], int] = defaultdict(int)
    for trace in lot_traces:
        if not isinstance(trace, LotTrace):
            raise ValidationFailed("lot traces must be LotTrace rows")
        cells[(trace.issuer_partner_code, trace.redeemer_partner_code)] += trace.points
    ordered = sorted(cells.items(), key=lambda item: (item[0][0] is not None, item[0][0] or "", item[0][1]))
    return [IssuerRedeemerFlow(issuer, redeemer, points) for (issuer, redeemer), points in ordered if points]


def require_partner_code(value: object, field: str) -> str:
    """``value`` if it is a partner code."""
    if not isinstance(value, str) or not PARTNER_CODE_PATTERN.match(value):
        raise ValidationFailed(f"{field} must be a partner code", fields={field: ["malformed partner code"]})
    return value


def require_reference(value: object) -> str:
    """``value`` if it is a line reference: 1-64 safe characters, starting with a letter or digit."""
    if not isinstance(value, str) or not REFERENCE_PATTERN.match(value):
        raise ValidationFailed(
            "reference must be 1-64 letters, digits or . _ : / -, starting with a letter or digit",
            fields={"reference": ["malformed"]},
        )
    return value


def require_currency(value: object) -> str:
    """``value`` if it looks like an ISO 4217 code."""
    if not isinstance(value, str) or not CURRENCY_PATTERN.match(value):
        raise ValidationFailed("currency must be an ISO 4217 code", fields={"currency": ["malformed currency"]})
    return value


def require_whole(value: object, field: str, *, minimum: int, maximum: int) -> int:
    """``value`` if it is an int (not a bool, never a float) within the bounds."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValidationFailed(f"{field} must be a whole number", fields={field: ["not an integer"]})
    if not minimum <= value <= maximum:
        raise ValidationFailed(f"{field} must be between {minimum} and {maximum}", fields={field: ["out of range"]})
    return value


def require_price(value: object) -> Decimal:
    """``value`` if it is a finite, non-negative ``Decimal`` a price column can hold."""
    if not isinstance(value, Decimal):
        raise ValidationFailed("price_per_point must be a Decimal", fields={"price_per_point": ["not a Decimal"]})
    if not value.is_finite() or value < 0 or value >= MAX_PRICE_PER_POINT:
        raise ValidationFailed("price_per_point is out of range", fields={"price_per_point": ["out of range"]})
    # A finite Decimal's exponent is an int (only NaN and infinity have a letter there).
    exponent = value.normalize(EXACT).as_tuple().exponent if value != 0 else 0
    if isinstance(exponent, int) and exponent < -MAX_PRICE_DECIMAL_PLACES:
        raise ValidationFailed(
            f"price_per_point has more than {MAX_PRICE_DECIMAL_PLACES} decimal places",
            fields={"price_per_point": ["too precise"]},
        )
    return value


def round_half_even(exact_minor: Decimal) -> int:
    """The whole number of minor units nearest ``exact_minor``, ties to the even one."""
    return int(exact_minor.to_integral_value(rounding=ROUND_HALF_EVEN))


def _points_line(
    partner_code: str, line_kind: LineKind, currency: str, price: Decimal, points: int, count: int
) -> StatementLine:
    """A points line priced exactly, then rounded once."""
    require_whole(points, "points", minimum=1, maximum=MAX_POINTS_PER_LINE)
    magnitude = EXACT.multiply(EXACT.multiply(Decimal(points), price), Decimal(minor_units_per_unit(currency)))
    exact_amount_minor = magnitude if POINT_LINE_SIGNS[line_kind] > 0 else EXACT.minus(magnitude)
    amount_minor = round_half_even(exact_amount_minor)
    return StatementLine(
        partner_code=partner_code,
        line_kind=line_kind,
        currency=currency,
        price_per_point=price,
        points=points,
        count=count,
        reference=None,
        exact_amount_minor=exact_amount_minor,
        amount_minor=amount_minor,
        rounding_residue_minor=EXACT.subtract(exact_amount_minor, Decimal(amount_minor)),
    )


def _item_line(
    partner_code: str, line_kind: LineKind, currency: str, reference: str, unit_price_minor: int, items: int,
    points: int,
) -> StatementLine:
    """Items of one reward at one price per item: whole minor units, so nothing to round."""
    amount_minor = ITEM_LINE_SIGNS[line_kind] * items * unit_price_minor
    return StatementLine(
        partner_code=partner_code,
        line_kind=line_kind,
        currency=currency,
        price_per_point=None,
        points=points,
        count=items,
        reference=reference,
        exact_amount_minor=Decimal(amount_minor),
        amount_minor=amount_minor,
        rounding_residue_minor=Decimal(0),
    )


def _money_line(adjustment: AdjustmentAmount) -> StatementLine:
    """A fee or adjustment line: already whole minor units, so nothing to round."""
    return StatementLine(
        partner_code=adjustment.partner_code,
        line_kind=LineKind(adjustment.kind),
        currency=adjustment.currency,
        price_per_point=None,
        points=None,
        count=1,
        reference=adjustment.reference,
        exact_amount_minor=Decimal(adjustment.amount_minor),
        amount_minor=adjustment.amount_minor,
        rounding_residue_minor=Decimal(0),
    )


def _check_lines_per_partner(lines: Sequence[StatementLine]) -> None:
    """One currency per partner, and not more lines than a statement can hold."""
    currencies: dict[str, str] = {}
    counts: dict[str, int] = defaultdict(int)
    for line in lines:
        known = currencies.setdefault(line.partner_code, line.currency)
        if known != line.currency:
            raise ValidationFailed(
                f"partner {line.partner_code} has lines in {known} and {line.currency}; a statement has one currency",
                fields={"currency": ["mixed currencies"]},
            )
        counts[line.partner_code] += 1
        if counts[line.partner_code] > MAX_LINES_PER_PARTNER:
            raise ValidationFailed(f"partner {line.partner_code} has more than {MAX_LINES_PER_PARTNER} lines")


def _partner_net(partner_code: str, lines: Sequence[StatementLine]) -> PartnerNet:
    """Sum one partner's lines; all in one currency."""
    currencies = {line.currency for line in lines}
    if len(currencies) != 1:
        raise ValidationFailed(
            f"partner {partner_code} has lines in {', '.join(sorted(currencies))}; a statement has one currency",
            fields={"currency": ["mixed currencies"]},
        )
    charges_minor = sum(line.amount_minor for line in lines if line.amount_minor > 0)
    credits_minor = -sum(line.amount_minor for line in lines if line.amount_minor < 0)
    return PartnerNet(
        partner_code=partner_code,
        currency=currencies.pop(),
        charges_minor=charges_minor,
        credits_minor=credits_minor,
        net_minor=charges_minor - credits_minor,
        exact_net_minor=exact_sum(line.exact_amount_minor for line in lines),
        rounding_residue_minor=exact_sum(line.rounding_residue_minor for line in lines),
    )


def exact_sum(values: Iterable[Decimal]) -> Decimal:
    """The sum of ``values`` with no rounding anywhere."""
    total = Decimal(0)
    for value in values:
        total = EXACT.add(total, value)
    return total
