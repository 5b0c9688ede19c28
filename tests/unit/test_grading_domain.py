"""The pure part of partner grading: periods, configuration, percentiles, rounding, scoring rules."""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal
from fractions import Fraction

import pytest

from alliance.config import Settings
from alliance.domain.errors import ConfigurationError, ValidationFailed
from alliance.domain.grading import (
    HIGHER,
    LOWER,
    GradingConfig,
    PartnerMetrics,
    Period,
    bands_dropped,
    derived_values,
    grade_period,
    percentile,
    to_decimal,
)


def test_periods_are_months_or_quarters_in_the_alliance_time_zone() -> None:
    october = Period.parse("2026-10")
    assert (october.label, october.first_day.isoformat(), october.end_day.isoformat()) == \
        ("2026-10", "2026-10-01", "2026-11-01")
    starts_at, ends_at = october.bounds("Europe/Paris")
    # October in Paris starts in summer time and ends in winter time: 31 days and one hour.
    assert starts_at.astimezone(timezone.utc) == datetime(2026, 9, 30, 22, tzinfo=timezone.utc)
    assert ends_at.astimezone(timezone.utc) == datetime(2026, 10, 31, 23, tzinfo=timezone.utc)
    assert Period.parse("2026-01").previous().label == "2025-12"
    quarter = Period.parse("2026-Q1")
    assert (quarter.label, quarter.end_day.isoformat(), quarter.previous().label) == ("2026-Q1", "2026-04-01",
                                                                                       "2025-Q4")
    assert Period.parse("2026-Q4").end_day.isoformat() == "2027-01-01"
    assert Period.month_before(datetime(2026, 1, 1, 0, 30, tzinfo=timezone.utc), "UTC").label == "2025-12"
    # 23:30 UTC on 31 December is already January in Paris.
    assert Period.month_before(datetime(2026, 12, 31, 23, 30, tzinfo=timezone.utc), "Europe/Paris").label == "2026-12"


@pytest.mark.parametrize("text", ["2026-13", "2026-00", "26-10", "2026-Q5", "2026-10-01", "", "2026/10", "0000-01",
                                  "9999-12", "1969-Q4"])
def test_bad_periods_are_refused(text: str) -> None:
    with pytest.raises(ValidationFailed):
        Period.parse(text)


def test_percentile_is_a_mid_rank_where_ties_share() -> None:
    assert percentile(10, [5, 10, 20], HIGHER) == Fraction(1, 2)
    assert percentile(10, [5, 10, 20], LOWER) == Fraction(1, 2)
    assert percentile(30, [5, 10, 20], HIGHER) == 1
    assert percentile(30, [5, 10, 20], LOWER) == 0
    assert percentile(7, [], HIGHER) == Fraction(1, 2)


def test_half_even_rounding_of_exact_fractions() -> None:
    assert to_decimal(Fraction(1, 3), Decimal("0.0001")) == Decimal("0.3333")
    assert to_decimal(Fraction(5, 2), Decimal("1")) == Decimal("2")
    assert to_decimal(Fraction(7, 2), Decimal("1")) == Decimal("4")
    assert to_decimal(Fraction(-7, 2), Decimal("1")) == Decimal("-4")
    assert to_decimal(Fraction(7500, 95), Decimal("0.0001")) == Decimal("78.9474")


def _partner(partner_id: int, currency: str, volume: int, transactions: int = 20) -> PartnerMetrics:
    values = derived_values(purchase_count=transactions, purchase_volume_minor=volume, points_issued=0,
                            active_members=5, redemption_count=0, redemption_points=0, complaint_count=0,
                            median_resolution_seconds=None, refund_count=0, days_late=0, disputes_opened=0)
    return PartnerMetrics(partner_id, f"p{partner_id}", currency, values)


def test_volume_is_compared_within_a_currency_only() -> None:
    config = GradingConfig(weights={"purchase_volume_minor": 1})
    results = grade_period([_partner(1, "EUR", 100), _partner(2, "EUR", 50), _partner(3, "GBP", 1)], config)
    assert [result.score for result in results] == [Decimal("100.0000"), Decimal("0.0000"), Decimal("50.0000")]
    assert [result.grade for result in results] == ["A", "D", "B"]


def test_too_little_activity_is_not_graded_and_not_compared() -> None:
    config = GradingConfig(weights={"purchase_volume_minor": 1}, min_transactions=10)
    results = grade_period([_partner(1, "EUR", 100), _partner(2, "EUR", 10_000, transactions=9)], config)
    assert (results[0].graded, results[0].score) == (True, Decimal("50.0000"))
    assert (results[1].graded, results[1].grade, results[1].not_graded_reason) == (
        False, None, "9 transactions in the period; grading needs at least 10")


def test_bands_read_from_the_rounded_score() -> None:
    config = GradingConfig()
    assert [config.band(Decimal(score)) for score in ("75", "74.9999", "50", "25", "24.9999", "0")] == \
        ["A", "B", "B", "C", "D", "D"]
    assert bands_dropped("A", "C") == 2 and bands_dropped("D", "A") == -3 and bands_dropped(None, "D") == 0


def test_settings_configure_grading_and_refuse_nonsense() -> None:
    config = Settings(grading_weights="purchase_volume_minor=3,days_late=1", grading_bands="A=90,B=60,C=30",
                      grading_min_transactions=50, grading_complaint_rate_alert="2.5").validated().grading_config()
    assert (dict(config.weights), dict(config.bands), config.min_transactions,
            config.complaint_rate_alert_per_1000) == ({"purchase_volume_minor": 3, "days_late": 1},
                                                      {"A": 90, "B": 60, "C": 30}, 50, Decimal("2.5"))
    for overrides in ({"grading_weights": "volume=1"}, {"grading_weights": "days_late=-1"},
                      {"grading_weights": "days_late=0"}, {"grading_bands": "A=50,B=60,C=30"},
                      {"grading_bands": "A=90,B=60"}, {"grading_complaint_rate_alert": "lots"},
                      {"grading_complaint_rate_alert": "NaN"}, {"grading_min_transactions": 0}):
        with pytest.raises(ConfigurationError):
            Settings(**overrides).validated()  # type: ignore[arg-type]
