"""How the earn benchmark judges its ladder (benchmarks/http_earn.py): throughput within the p99 bound."""

from __future__ import annotations

from benchmarks.common import LoadResult
from benchmarks.http_earn import _figures


def _result(rate: float, p99_ms: float, *, refused: int = 0, exhausted: bool = False) -> LoadResult:
    # 10 s runs: ``ok`` is ten times the rate.
    return LoadResult(requests=int(rate * 10) + refused, ok=int(rate * 10), refused=refused, socket_errors=0,
                      duration_s=10.0, p50_ms=p99_ms / 3, p90_ms=p99_ms / 2, p99_ms=p99_ms,
                      first_refusal="401 signature_invalid" if refused else "", exhausted=exhausted)


BARE = _result(5000, 12)
PROBE = {2: _result(600, 8), 4: _result(700, 15), 8: _result(690, 32), 12: _result(650, 55)}
# Floor (c), the hand-built signature base: faster than (b), its peak at 4.
MINIMAL = {2: _result(660, 7), 4: _result(760, 14), 8: _result(740, 30), 12: _result(700, 50)}


def _row(figures: list[dict], name: str) -> dict:  # type: ignore[type-arg]
    return next(row for row in figures if row["figure"] == name)


def test_the_target_is_the_best_rung_within_the_bound_against_floor_c_best_at_any_latency():
    # The hub's fastest rung (12) is over the bound; its best within it is at 8.
    earn = {2: _result(400, 9), 4: _result(410, 20), 8: _result(470, 45), 12: _result(480, 68)}

    figures = _figures(BARE, PROBE, MINIMAL, earn, True, "audit green")

    target = _row(figures, "earn throughput with p99 <= 50 ms")
    assert (target["value"], target["floor_value"], target["ratio"], target["met"]) == (
        "470.00", "760.00", "61.8%", True)
    assert target["note"].startswith("at 8 connections: p50 15.00 ms, p99 45.00 ms; 67.1% of (b)'s peak;")
    assert "at 4 connections" in _row(figures, "(b) probe: library verify + 1 Core transaction, peak")["note"]
    floor_c = _row(figures, "(c) probe: hand-built base verify + 1 Core transaction, peak")
    assert (floor_c["value"], floor_c["floor_value"], floor_c["ratio"]) == ("760.00", "700.00", "108.6%")
    peak = _row(figures, "earn peak throughput, any latency")
    assert (peak["value"], peak["ratio"], peak["met"]) == ("480.00", "63.2%", None)
    # The tail: the p99 at 12 connections against (b)'s at 12, at most 1.25x.
    tail = _row(figures, "earn p99 at 12 connections")
    assert (tail["value"], tail["floor_value"], tail["ratio"], tail["met"]) == ("68.00", "55.00", "1.24x", True)
    # Every rung is printed beside the probes', the one over the bound included.
    over = _row(figures, "earn at 12 connections, p99")
    assert (over["value"], over["floor_value"], over["ratio"]) == ("68.00", "55.00", "1.24x")
    assert "(c) 700.00 req/s" in over["note"]


def test_a_tail_beyond_a_quarter_over_the_probes_is_not_met():
    earn = {2: _result(470, 9), 4: _result(470, 20), 8: _result(470, 45), 12: _result(470, 70)}

    tail = _row(_figures(BARE, PROBE, MINIMAL, earn, True, "audit green"), "earn p99 at 12 connections")

    assert (tail["ratio"], tail["met"]) == ("1.27x", False)


def test_below_the_share_of_the_probe_is_not_met():
    earn = {2: _result(410, 9), 4: _result(415, 20), 8: _result(455, 45), 12: _result(500, 68)}

    target = _row(_figures(BARE, PROBE, MINIMAL, earn, True, "audit green"), "earn throughput with p99 <= 50 ms")

    assert (target["ratio"], target["met"]) == ("59.9%", False)


def test_no_rung_within_the_bound_is_a_zero_not_met():
    earn = {2: _result(400, 51), 4: _result(410, 60), 8: _result(430, 70), 12: _result(440, 90)}

    target = _row(_figures(BARE, PROBE, MINIMAL, earn, True, "audit green"), "earn throughput with p99 <= 50 ms")

    assert (target["value"], target["met"]) == ("0.00", False)
    assert target["note"].startswith("no rung within the bound;")


def test_refusals_a_red_audit_or_a_run_out_of_requests_forfeit_the_target():
    good = {2: _result(470, 9), 4: _result(460, 20), 8: _result(465, 45), 12: _result(420, 68)}
    refused = {**good, 2: _result(450, 9, refused=3)}
    exhausted_probe = {**PROBE, 8: _result(690, 32, exhausted=True)}

    def met(probe, earn, audit_green):  # type: ignore[no-untyped-def]
        figures = _figures(BARE, probe, MINIMAL, earn, audit_green, "audit")
        return _row(figures, "earn throughput with p99 <= 50 ms")["met"]

    assert met(PROBE, good, True) is True
    # A rung with refusals cannot be the best: the next one within the bound is, and the
    # target still fails because not every request was answered.
    best = _row(_figures(BARE, PROBE, MINIMAL, refused, True, "audit"), "earn throughput with p99 <= 50 ms")
    assert best["value"] == "465.00"
    assert met(PROBE, refused, True) is False
    assert met(exhausted_probe, good, True) is False
    assert met(PROBE, good, False) is False
