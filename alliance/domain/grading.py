"""Partner grading, pure: periods, the scoring configuration, normalisation, score, grade, explanation.

How a grade is made (docs/grading.md says the same for managers):

1. Each partner's metrics for the period come from the database (services/grading.py).
2. A partner with too little activity (fewer transactions or active members than the
   minimums) is *not graded*: its metrics are kept and shown, but it gets no score and
   no band, and it is left out of the comparison group of the others.
3. Each scored metric is normalised to a percentile rank among the graded partners of
   the same period: p = (partners strictly worse + half the partners equal) / (n - 1),
   where n counts the graded partners that have a value for the metric (volume is only
   compared within a currency). So 1 is the best of the period, 0 the worst, ties share
   a rank, and a grade means the same thing whether the alliance has 5 partners or 500.
   A partner compared with nobody gets 1/2.
4. score = 100 x sum(weight x p) / sum(weight) over the metrics that apply to the
   partner (a metric without a value, such as the resolution time of a partner with no
   closed complaint, is left out and the other weights share its part). The score is
   kept to 4 decimal places (half-even) and the band is read from it: A >= 75, B >= 50,
   C >= 25, else D, by default.

Every number here is an int or a ``Fraction``; nothing is a float.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, datetime, time
from decimal import ROUND_HALF_EVEN, Decimal
from fractions import Fraction
from typing import Mapping, Sequence
from zoneinfo import ZoneInfo

from alliance.domain.errors import ConfigurationError, ValidationFailed

GRADES = ("A", "B", "C", "D")
SCORE_PLACES = Decimal("0.0001")
DISPLAY_PLACES = Decimal("0.01")
HIGHER, LOWER = "higher", "lower"


@dataclass(frozen=True, slots=True)
class Metric:
    """A measured quantity; ``direction`` says whether more of it is better."""

    name: str
    label: str
    direction: str
    unit: str


# Every metric a grade shows, in display order. Any of them can carry a weight.
METRICS: tuple[Metric, ...] = (
    Metric("purchase_volume_minor", "Purchase volume", HIGHER, "minor units"),
    Metric("purchase_count", "Purchases", HIGHER, "purchases"),
    Metric("active_members", "Distinct active members", HIGHER, "members"),
    Metric("points_issued", "Points issued", HIGHER, "points"),
    Metric("redemption_count", "Redemptions accepted", HIGHER, "redemptions"),
    Metric("redemption_points", "Points redeemed", HIGHER, "points"),
    Metric("complaint_count", "Complaints", LOWER, "complaints"),
    Metric("complaint_rate_per_1000", "Complaints per 1,000 transactions", LOWER, "per 1,000"),
    Metric("median_resolution_hours", "Median complaint resolution time", LOWER, "hours"),
    Metric("refund_rate", "Refunds and reversals per transaction", LOWER, "ratio"),
    Metric("days_late", "Days late paying the worst statement", LOWER, "days"),
    Metric("disputes_opened", "Statement disputes opened", LOWER, "disputes"),
    Metric("confirmed_fraud_count", "Confirmed fraud", LOWER, "cases"),
    Metric("confirmed_fraud_per_1000", "Confirmed fraud per 1,000 transactions", LOWER, "per 1,000"),
)
METRICS_BY_NAME = {metric.name: metric for metric in METRICS}
# Compared only among partners of the same currency: money is not comparable across currencies.
PER_CURRENCY_METRICS = frozenset({"purchase_volume_minor"})

DEFAULT_WEIGHTS = {
    "purchase_volume_minor": 25, "active_members": 15, "redemption_count": 10, "complaint_rate_per_1000": 20,
    "median_resolution_hours": 5, "refund_rate": 10, "days_late": 15,
}
DEFAULT_BANDS = {"A": 75, "B": 50, "C": 25}


@dataclass(frozen=True)
class GradingConfig:
    """Weights, bands, minimum activity and the alert threshold; stored with every computed period."""

    weights: Mapping[str, int] = field(default_factory=lambda: dict(DEFAULT_WEIGHTS))
    bands: Mapping[str, int] = field(default_factory=lambda: dict(DEFAULT_BANDS))
    min_transactions: int = 10
    min_active_members: int = 3
    complaint_rate_alert_per_1000: Decimal = Decimal("5")

    def __post_init__(self) -> None:
        unknown = sorted(set(self.weights) - set(METRICS_BY_NAME))
        if unknown:
            raise ConfigurationError(f"unknown grading metric {unknown[0]!r}; metrics are {', '.join(METRICS_BY_NAME)}")
        if any(not isinstance(weight, int) or weight < 0 for weight in self.weights.values()):
            raise ConfigurationError("grading weights must be whole numbers of at least 0")
        if sum(self.weights.values()) <= 0:
            raise ConfigurationError("at least one grading weight must be above 0")
        if sorted(self.bands) != ["A", "B", "C"]:
            raise ConfigurationError("grading bands must give the lowest score of A, B and C, e.g. A=75,B=50,C=25")
        if not 100 >= self.bands["A"] > self.bands["B"] > self.bands["C"] > 0:
            raise ConfigurationError("grading bands must fall from A to C, within 1..100")
        if self.min_transactions < 1 or self.min_active_members < 1:
            raise ConfigurationError("grading minimums must be at least 1")
        if self.complaint_rate_alert_per_1000 <= 0:
            raise ConfigurationError("the complaint-rate alert threshold must be above 0")

    @classmethod
    def from_settings(cls, *, weights: str, bands: str, min_transactions: int, min_active_members: int,
                      complaint_rate_alert_per_1000: str) -> "GradingConfig":
        """Parse the ``ALLIANCE_GRADING_*`` settings (``name=value`` pairs separated by commas)."""
        try:
            threshold = Decimal(complaint_rate_alert_per_1000)
        except ArithmeticError:
            raise ConfigurationError("ALLIANCE_GRADING_COMPLAINT_RATE_ALERT must be a decimal number") from None
        if not threshold.is_finite():
            raise ConfigurationError("ALLIANCE_GRADING_COMPLAINT_RATE_ALERT must be a decimal number")
        return cls(weights=_pairs("ALLIANCE_GRADING_WEIGHTS", weights), bands=_pairs("ALLIANCE_GRADING_BANDS", bands),
                   min_transactions=min_transactions, min_active_members=min_active_members,
                   complaint_rate_alert_per_1000=threshold)

    def as_json(self) -> dict[str, object]:
        return {"weights": dict(self.weights), "bands": dict(self.bands), "min_transactions": self.min_transactions,
                "min_active_members": self.min_active_members,
                "complaint_rate_alert_per_1000": str(self.complaint_rate_alert_per_1000)}

    def band(self, score: Decimal) -> str:
        for grade in ("A", "B", "C"):
            if score >= self.bands[grade]:
                return grade
        return "D"


def _pairs(variable: str, text: str) -> dict[str, int]:
    pairs: dict[str, int] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, _, value = item.partition("=")
        if not value.strip().isdigit():
            raise ConfigurationError(f"{variable}: {item!r} is not name=whole-number")
        pairs[name.strip()] = int(value)
    return pairs


# -- periods -------------------------------------------------------------------------

_MONTH = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])\Z")
_QUARTER = re.compile(r"^(\d{4})-Q([1-4])\Z")
# Years a period may fall in: the calendar arithmetic needs a year before and after.
MIN_YEAR, MAX_YEAR = 1970, 9998


@dataclass(frozen=True, order=True, slots=True)
class Period:
    """A calendar month (``2026-10``) or quarter (``2026-Q4``) in the alliance's time zone."""

    year: int
    first_month: int
    months: int

    @classmethod
    def parse(cls, text: str) -> "Period":
        if (match := _MONTH.match(text)) and MIN_YEAR <= int(match[1]) <= MAX_YEAR:
            return cls(int(match[1]), int(match[2]), 1)
        if (match := _QUARTER.match(text)) and MIN_YEAR <= int(match[1]) <= MAX_YEAR:
            return cls(int(match[1]), 3 * int(match[2]) - 2, 3)
        raise ValidationFailed("a period is a month such as 2026-10 or a quarter such as 2026-Q4, from 1970 on",
                               fields={"period": ["expected YYYY-MM or YYYY-Qn"]})

    @classmethod
    def month_before(cls, moment: datetime, time_zone: str) -> "Period":
        """The last whole month before ``moment`` in ``time_zone``."""
        local = moment.astimezone(ZoneInfo(time_zone))
        year, month = (local.year, local.month - 1) if local.month > 1 else (local.year - 1, 12)
        return cls(year, month, 1)

    @property
    def label(self) -> str:
        if self.months == 3:
            return f"{self.year}-Q{(self.first_month + 2) // 3}"
        return f"{self.year}-{self.first_month:02d}"

    @property
    def first_day(self) -> date:
        return date(self.year, self.first_month, 1)

    @property
    def end_day(self) -> date:
        """The first day after the period."""
        month = self.first_month - 1 + self.months
        return date(self.year + month // 12, month % 12 + 1, 1)

    def previous(self) -> "Period":
        month = self.first_month - 1 - self.months
        return Period(self.year + month // 12, month % 12 + 1, self.months)

    def bounds(self, time_zone: str) -> tuple[datetime, datetime]:
        """The period as [start, end) instants: local midnights, so DST never loses or doubles an hour."""
        zone = ZoneInfo(time_zone)
        return (datetime.combine(self.first_day, time(0), tzinfo=zone),
                datetime.combine(self.end_day, time(0), tzinfo=zone))

    def days(self) -> int:
        return (self.end_day - self.first_day).days


# -- metrics and scoring -------------------------------------------------------------

Value = int | Fraction | None


@dataclass(frozen=True)
class PartnerMetrics:
    """A partner's measured period; ``values`` has every metric of METRICS (None where it has no value)."""

    partner_id: int
    partner_code: str
    currency: str
    values: Mapping[str, Value]

    @property
    def transactions(self) -> int:
        return int(self.values["purchase_count"] or 0) + int(self.values["redemption_count"] or 0)


def derived_values(*, purchase_count: int, purchase_volume_minor: int, points_issued: int, active_members: int,
                   redemption_count: int, redemption_points: int, complaint_count: int,
                   median_resolution_seconds: Fraction | None, refund_count: int, days_late: int,
                   disputes_opened: int, confirmed_fraud_count: int = 0) -> dict[str, Value]:
    """The metric values from the raw counts, with the rates worked out exactly."""
    transactions = purchase_count + redemption_count
    return {
        "purchase_volume_minor": purchase_volume_minor, "purchase_count": purchase_count,
        "active_members": active_members, "points_issued": points_issued, "redemption_count": redemption_count,
        "redemption_points": redemption_points, "complaint_count": complaint_count,
        "complaint_rate_per_1000": Fraction(complaint_count * 1000, transactions) if transactions else None,
        "median_resolution_hours": (median_resolution_seconds / 3600 if median_resolution_seconds is not None
                                    else None),
        "refund_rate": Fraction(refund_count, transactions) if transactions else None,
        "days_late": days_late, "disputes_opened": disputes_opened,
        "confirmed_fraud_count": confirmed_fraud_count,
        "confirmed_fraud_per_1000": (Fraction(confirmed_fraud_count * 1000, transactions) if transactions
                                     else None),
    }


@dataclass(frozen=True)
class MetricScore:
    """One line of a grade's breakdown."""

    metric: str
    value: Value
    weight: int
    share: Fraction | None      # the weight's share of the partner's applicable weights
    percentile: Fraction | None
    contribution: Fraction | None  # points out of 100


@dataclass(frozen=True)
class GradeResult:
    """The outcome for one partner: graded with a score and band, or not graded with the reason."""

    metrics: PartnerMetrics
    graded: bool
    score: Decimal | None
    grade: str | None
    not_graded_reason: str | None
    breakdown: tuple[MetricScore, ...]


def not_graded_reason(metrics: PartnerMetrics, config: GradingConfig) -> str | None:
    """Why a partner has too little activity to be graded, or None when it has enough."""
    members = int(metrics.values["active_members"] or 0)
    if metrics.transactions < config.min_transactions:
        return (f"{metrics.transactions} transactions in the period; grading needs at least "
                f"{config.min_transactions}")
    if members < config.min_active_members:
        return f"{members} active members in the period; grading needs at least {config.min_active_members}"
    return None


def percentile(value: int | Fraction, others: Sequence[int | Fraction], direction: str) -> Fraction:
    """Mid-rank percentile of ``value`` among ``others`` (the rest of the comparison group)."""
    if not others:
        return Fraction(1, 2)
    worse = sum(1 for other in others if (other < value if direction == HIGHER else other > value))
    equal = sum(1 for other in others if other == value)
    return (worse + Fraction(equal, 2)) / len(others)


def grade_period(partners: Sequence[PartnerMetrics], config: GradingConfig) -> list[GradeResult]:
    """Grade every partner of one period against the others of that period."""
    reasons = {metrics.partner_id: not_graded_reason(metrics, config) for metrics in partners}
    graded = [metrics for metrics in partners if reasons[metrics.partner_id] is None]
    results = []
    for metrics in partners:
        reason = reasons[metrics.partner_id]
        if reason is not None:
            breakdown = tuple(MetricScore(metric.name, metrics.values[metric.name], config.weights.get(metric.name, 0),
                                          None, None, None) for metric in METRICS)
            results.append(GradeResult(metrics, False, None, None, reason, breakdown))
            continue
        results.append(_score(metrics, graded, config))
    return results


def _score(metrics: PartnerMetrics, graded: Sequence[PartnerMetrics], config: GradingConfig) -> GradeResult:
    applicable = {name: weight for name, weight in config.weights.items()
                  if weight > 0 and metrics.values[name] is not None}
    total_weight = sum(applicable.values())
    lines = []
    score = Fraction(0)
    for metric in METRICS:
        value = metrics.values[metric.name]
        weight = config.weights.get(metric.name, 0)
        if metric.name not in applicable or value is None:
            lines.append(MetricScore(metric.name, value, weight, None, None, None))
            continue
        others = [other_value for other in graded
                  if other.partner_id != metrics.partner_id and (other_value := other.values[metric.name]) is not None
                  and (metric.name not in PER_CURRENCY_METRICS or other.currency == metrics.currency)]
        rank = percentile(value, others, metric.direction)
        share = Fraction(weight, total_weight)
        contribution = 100 * share * rank
        score += contribution
        lines.append(MetricScore(metric.name, value, weight, share, rank, contribution))
    if not applicable:
        # Only possible when every weighted metric lacks a value: nothing to grade on.
        return GradeResult(metrics, False, None, None, "no weighted metric has a value in the period",
                           tuple(lines))
    rounded = to_decimal(score, SCORE_PLACES)
    return GradeResult(metrics, True, rounded, config.band(rounded), None, tuple(lines))


def to_decimal(value: Fraction | int, places: Decimal) -> Decimal:
    """An exact fraction as a Decimal rounded half-even to ``places``."""
    fraction = Fraction(value)
    places_exponent = places.as_tuple().exponent
    if not isinstance(places_exponent, int):
        raise TypeError(f"places must be a finite Decimal, not {places}")
    exponent = -places_exponent
    scaled = fraction * 10 ** exponent
    whole, remainder = divmod(scaled.numerator, scaled.denominator)
    twice = 2 * remainder
    if twice > scaled.denominator or (twice == scaled.denominator and whole % 2 == 1):
        whole += 1
    return (Decimal(whole) / Decimal(10) ** exponent).quantize(places, rounding=ROUND_HALF_EVEN)


def json_value(value: Value) -> int | str | None:
    """A metric value for JSON: ints as they are, fractions as decimals with 4 places."""
    if value is None or isinstance(value, int):
        return value
    return str(to_decimal(value, SCORE_PLACES))


def bands_dropped(previous: str | None, current: str | None) -> int:
    """How many bands a grade fell (negative when it rose); 0 when either side has no grade."""
    if previous is None or current is None:
        return 0
    return GRADES.index(current) - GRADES.index(previous)

