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


def _row(figures: list[dict], name: str) -> dict:  # type: ignore[type-arg]
    return next(row for row in figures if row["figure"] == name)


def test_the_target_is_the_best_rung_within_the_bound_against_the_probes_best_at_any_latency():
    # The hub's fastest rung (12) is over the bound; its best within it is at 8.
    earn = {2: _result(400, 9), 4: _result(410, 20), 8: _result(430, 45), 12: _result(440, 68)}

    figures = _figures(BARE, PROBE, earn, True, "audit green")

    target = _row(figures, "earn throughput with p99 <= 50 ms")
    assert (target["value"], target["floor_value"], target["ratio"], target["met"]) == (
        "430.00", "700.00", "61.4%", True)
    assert target["note"].startswith("at 8 connections: p50 15.00 ms, p99 45.00 ms;")
    assert "at 4 connections" in _row(figures, "(b) probe: Ed25519 verify + 1 Core transaction, peak")["note"]
    peak = _row(figures, "earn peak throughput, any latency")
    assert (peak["value"], peak["ratio"], peak["met"]) == ("440.00", "62.9%", None)
    # Every rung is printed beside the probe's, the one over the bound included.
    over = _row(figures, "earn p99 at 12 connections")
    assert (over["value"], over["floor_value"], over["ratio"]) == ("68.00", "55.00", "1.24x")


def test_below_the_share_of_the_probe_is_not_met():
    earn = {2: _result(410, 9), 4: _result(415, 20), 8: _result(418, 45), 12: _result(500, 68)}

    target = _row(_figures(BARE, PROBE, earn, True, "audit green"), "earn throughput with p99 <= 50 ms")

    assert (target["ratio"], target["met"]) == ("59.7%", False)


def test_no_rung_within_the_bound_is_a_zero_not_met():
    earn = {2: _result(400, 51), 4: _result(410, 60), 8: _result(430, 70), 12: _result(440, 90)}

    target = _row(_figures(BARE, PROBE, earn, True, "audit green"), "earn throughput with p99 <= 50 ms")

    assert (target["value"], target["met"]) == ("0.00", False)
    assert target["note"].startswith("no rung within the bound;")


def test_refusals_a_red_audit_or_a_run_out_of_requests_forfeit_the_target():
    good = {2: _result(450, 9), 4: _result(440, 20), 8: _result(430, 45), 12: _result(420, 68)}
    refused = {**good, 2: _result(450, 9, refused=3)}
    exhausted_probe = {**PROBE, 8: _result(690, 32, exhausted=True)}

    def met(probe, earn, audit_green):  # type: ignore[no-untyped-def]
        return _row(_figures(BARE, probe, earn, audit_green, "audit"), "earn throughput with p99 <= 50 ms")["met"]

    assert met(PROBE, good, True) is True
    # A rung with refusals cannot be the best: the next one within the bound is, and the
    # target still fails because not every request was answered.
    assert _row(_figures(BARE, PROBE, refused, True, "audit"), "earn throughput with p99 <= 50 ms")["value"] == "440.00"
    assert met(PROBE, refused, True) is False
    assert met(exhausted_probe, good, True) is False
    assert met(PROBE, good, False) is False
