"""Benchmarks size their pre-signed request files from a measured rate, so no load runs out.

A load replays a file of single-use signed requests; one that runs out before its
duration measures a lower bound, not a rate. A fixed 14,000 requests over 15 s capped
a server at 933 req/s, and a fast moment of the machine once reported the earn's
target as not met because the probe ran out. These tests play a server of a known
rate against ``benchmarks.common.sized_load`` in place of wrk.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks import common


class FakeServer:
    """Stands in for wrk against a server that answers ``rate_per_s`` requests per second."""

    def __init__(self, rate_per_s: float) -> None:
        self.rate_per_s = rate_per_s
        self.files_sent: list[int] = []

    def run_wrk(self, base_url: str, request_file: Path, artifacts: Path, *, duration_s: int,
                connections: int = common.WRK_CONNECTIONS, threads: int = common.WRK_THREADS) -> common.LoadResult:
        available = sum(1 for _ in request_file.open())
        self.files_sent.append(available)
        sent = min(available, int(self.rate_per_s * duration_s))
        return common.LoadResult(requests=sent, ok=sent, refused=0, socket_errors=0, duration_s=float(duration_s),
                                 p50_ms=2.0, p90_ms=3.0, p99_ms=5.0, first_refusal="",
                                 exhausted=sent >= available - connections)


def make_requests(count: int, tag: str) -> list[common.PreparedRequest]:
    return [common.PreparedRequest("POST", "/partner/v1/purchases", {"Idempotency-Key": f"{tag}-{number}"}, b"{}")
            for number in range(count)]


@pytest.fixture
def fast_server(monkeypatch) -> FakeServer:
    # Faster than the 933 req/s that 14,000 requests over 15 s allowed.
    server = FakeServer(rate_per_s=1_400)
    monkeypatch.setattr(common, "run_wrk", server.run_wrk)
    return server


def test_a_file_holds_twice_what_the_measured_rate_needs_and_never_less_than_the_minimum():
    assert common.requests_for(933.4, 15, minimum=4_000) == 28_002
    assert common.requests_for(0, 15, minimum=4_000) == 4_000
    with pytest.raises(ValueError):
        common.requests_for(100, 0, minimum=1)


def test_a_load_sized_from_the_calibrated_rate_does_not_run_out(fast_server, tmp_path):
    rate = common.calibrated_rate("http://hub", make_requests, tmp_path, "probe", first_count=4_000)
    # 4,000 requests ran out within the 3 s of calibration; 8,000 lasted.
    assert rate == 1_400 and fast_server.files_sent == [4_000, 8_000]
    result = common.sized_load("http://hub", make_requests, tmp_path, "probe-12", duration_s=15, rate_per_s=rate,
                               minimum=4_000, connections=12)
    assert not result.exhausted
    assert result.ok_per_s == 1_400
    assert fast_server.files_sent[-1] == 42_000


def test_a_load_that_runs_out_anyway_is_repeated_with_twice_the_requests(fast_server, tmp_path):
    # The calibration saw a slow moment (500 req/s); the server is faster in the load itself.
    result = common.sized_load("http://hub", make_requests, tmp_path, "earn-2", duration_s=15, rate_per_s=500,
                               minimum=1_000, connections=2)
    assert fast_server.files_sent == [15_000, 30_000]
    assert not result.exhausted and result.ok == 21_000


def test_a_load_that_keeps_running_out_is_reported_as_exhausted(monkeypatch, tmp_path):
    server = FakeServer(rate_per_s=100_000)
    monkeypatch.setattr(common, "run_wrk", server.run_wrk)
    result = common.sized_load("http://hub", make_requests, tmp_path, "bare", duration_s=1, rate_per_s=10,
                               minimum=100, connections=2)
    assert len(server.files_sent) == common.MAX_LOAD_ATTEMPTS and result.exhausted
