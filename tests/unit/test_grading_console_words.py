"""How the console words a grade: scores with one decimal, metric values in their units, trends, the band."""

from __future__ import annotations

from alliance.console.grade_views import METRIC_WORDS, band_sentence, grade_score, metric_value
from alliance.console.partner_views import grade_trend
from alliance.domain.grading import METRICS


def test_scores_show_at_most_one_decimal_with_separators() -> None:
    assert [grade_score(value) for value in ("78.9474", "75.0000", "26.32", "0.0000", "1234.56", None)] == [
        "78.9", "75", "26.3", "0", "1,234.6", ""]


def test_every_metric_has_plain_words_and_values_read_in_their_unit() -> None:
    assert {metric.name for metric in METRICS} == set(METRIC_WORDS)
    assert all("_" not in words.name for words in METRIC_WORDS.values())
    assert metric_value("purchase_volume_minor", 40000) == {"money": 40000}
    assert metric_value("active_members", 1234) == {"text": "1,234"}
    assert metric_value("points_issued", 1) == {"text": "1 point"}
    assert metric_value("complaint_rate_per_1000", "333.3333") == {"text": "333.3 per 1,000 transactions"}
    assert metric_value("median_resolution_hours", "2.5000") == {"text": "2.5 hours"}
    assert metric_value("refund_rate", "0.3333") == {"text": "33.3%"}
    assert metric_value("days_late", 18) == {"text": "18 days"}
    assert metric_value("median_resolution_hours", None) == {"text": "no value"}


def test_a_trend_reads_oldest_to_newest_with_its_direction_in_words() -> None:
    assert grade_trend([("2026-08", "B"), ("2026-09", "B"), ("2026-10", "A")]) == {
        "path": "B → B → A", "direction": "up", "periods": ["2026-08", "2026-09", "2026-10"]}
    assert grade_trend([("2026-09", "A"), ("2026-10", "C")])["direction"] == "down"  # type: ignore[index]
    assert grade_trend([("2026-09", "C"), ("2026-10", "C")])["direction"] == "same"  # type: ignore[index]
    assert grade_trend([("2026-09", "A"), ("2026-10", None)]) == {
        "path": "A → –", "direction": None, "periods": ["2026-09", "2026-10"]}
    assert grade_trend([]) is None


def test_the_band_sentence_says_why_and_names_an_override() -> None:
    bands = {"A": 75, "B": 50, "C": 25}
    graded = {"status": "graded", "score": "52.6316", "computed_grade": "B", "grade": "B", "overridden": False,
              "overrides": []}
    assert band_sentence(graded, bands) == ("Computed B: a score of 52.6 out of 100, at least the 50 a B needs and "
                                            "below the 75 of an A.")
    lowest = {**graded, "score": "13.1579", "computed_grade": "D", "grade": "A", "overridden": True,
              "overrides": [{"actor": "console:paco", "reason": "launch month"}]}
    assert band_sentence(lowest, bands) == ("Computed D: a score of 13.2 out of 100, below the 25 a C needs. "
                                            "Overridden to A by console:paco: launch month")
    not_graded = {"status": "not_graded", "not_graded_reason": "1 transactions in the period; grading needs at least 3"}
    assert band_sentence(not_graded, bands).startswith("Not graded: 1 transactions in the period")
