"""How the cluster-hops benchmark (benchmarks/cluster_hops.py) attributes CPU and prices each hop."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks import cluster_hops
from benchmarks.cluster_hops import HOPS, PARTS, Load, Variant, _cpu_spent, _figures, _part
from benchmarks.common import LoadResult
from deploy.cluster import Cluster, ClusterError

SIZES = {"latency_rounds": 2, "throughput_rounds": 2, "ladder": (4,)}
VARIANTS = [Variant(name, name, f"http://{name}") for name in
            ("lb", "lb-hub1", "lb-hub1-http", "hub1", "hub1-nobouncer", "hub1-primary", "hub1-primary-prepared")]


def _load(rate: float, p50_ms: float, **cpu_ms: float) -> Load:
    # 4 s runs: ``ok`` is four times the rate.
    result = LoadResult(requests=int(rate * 4), ok=int(rate * 4), refused=0, socket_errors=0, duration_s=4.0,
                        p50_ms=p50_ms, p90_ms=p50_ms * 2, p99_ms=p50_ms * 3, first_refusal="")
    return Load(result, {part: cpu_ms.get(part.replace(" ", "_"), 0.0) for part in PARTS})


def _row(figures: list[dict], name: str) -> dict:  # type: ignore[type-arg]
    return next(row for row in figures if row["figure"] == name)


def test_processes_are_parts_by_host_and_command():
    assert _part("lb", "haproxy", "db2") == "HAProxy"
    assert _part("lb", "prometheus", "db2") == "rest"
    assert [_part(host, "gunicorn", "db2") for host in ("hub1", "hub3")] == ["hub", "hub"]
    assert _part("hub2", "alliance", "db2") == "rest"  # the scheduler and the webhook deliveries
    assert _part("hub1", "pgbouncer", "db2") == "PgBouncer"
    assert [_part(host, "postgres", "db2") for host in ("db1", "db2", "db3")] == [
        "PostgreSQL standbys", "PostgreSQL primary", "PostgreSQL standbys"]
    assert _part("db1", "patroni", "db2") == "rest"


def test_cpu_spent_counts_a_new_process_from_zero_and_drops_one_that_ended():
    before = {("lb", 10): ("HAProxy", 5.0), ("db1", 20): ("PostgreSQL primary", 2.0), ("db1", 21): ("rest", 1.0)}
    after = {("lb", 10): ("HAProxy", 5.25), ("db1", 20): ("PostgreSQL primary", 2.5),
             ("db1", 22): ("PostgreSQL primary", 0.125)}

    spent = _cpu_spent(before, after)

    assert spent == {"HAProxy": 0.25, "hub": 0.0, "PgBouncer": 0.0, "PostgreSQL primary": 0.625,
                     "PostgreSQL standbys": 0.0, "wrk": 0.0, "rest": 0.0}


def _results() -> dict[str, dict[int, list[Load]]]:
    base = {"hub": 4.0, "PostgreSQL_primary": 2.5}
    cpu = {
        "lb": {**base, "HAProxy": 0.7, "PgBouncer": 0.4, "hub": 5.0},
        "lb-hub1": {**base, "HAProxy": 0.7, "PgBouncer": 0.4},
        "lb-hub1-http": {**base, "HAProxy": 0.5, "PgBouncer": 0.4},
        "hub1": {**base, "HAProxy": 0.3, "PgBouncer": 0.4},
        "hub1-nobouncer": {**base, "HAProxy": 0.3},
        "hub1-primary": {**base},
        "hub1-primary-prepared": {"hub": 3.5, "PostgreSQL_primary": 1.0},
    }
    latency = {"lb": 12.0, "lb-hub1": 11.0, "lb-hub1-http": 10.5, "hub1": 10.0, "hub1-nobouncer": 9.5,
               "hub1-primary": 9.0, "hub1-primary-prepared": 6.0}
    results = {}
    for name, parts in cpu.items():
        # Round 2 is slower and costs 0.1 ms more in every part: the paired differences stay.
        results[name] = {
            1: [_load(1000 / latency[name], latency[name], **parts),
                _load(1000 / (latency[name] + 2), latency[name] + 2, **{k: v + 0.1 for k, v in parts.items()})],
            4: [_load(4000 / (latency[name] * 2), latency[name] * 2, **parts),
                _load(4000 / (latency[name] * 2 + 2), latency[name] * 2 + 2, **parts)],
        }
    return results


def test_each_hop_is_priced_by_its_own_processes_cpu_per_earn_in_paired_loads():
    figures = _figures(VARIANTS, _results(), dict.fromkeys(PARTS, 0.0), SIZES, True, "audit passed",
                       ("1.00 1.00 1.00", "1.50 1.00 1.00"), setup_s=45, total_s=250)

    tls = _row(figures, f"CPU per earn added: {HOPS[0].name}")
    assert (tls["value"], tls["floor"], tls["floor_value"]) == ("0.20", "lb-hub1-http, whole cluster", "7.40")
    assert _row(figures, f"CPU per earn added: {HOPS[1].name}")["value"] == "0.20"
    bouncer = _row(figures, f"CPU per earn added: {HOPS[2].name}")
    assert (bouncer["value"], bouncer["ratio"]) == ("0.40", "1.06x")
    assert _row(figures, f"CPU per earn added: {HOPS[3].name}")["value"] == "0.30"
    prepared = _row(figures, f"CPU per earn added: {HOPS[4].name}")
    assert (prepared["value"], prepared["floor_value"]) == ("2.00", "4.50")
    assert _row(figures, f"CPU per earn added: {HOPS[6].name}")["value"] == "1.00"
    # Latency at 1 connection: the median of the rounds' p50 differences.
    added = _row(figures, f"latency added at 1 connection: {HOPS[2].name}")
    assert (added["value"], added["floor_value"]) == ("0.50", "10.50")
    lb = _row(figures, "lb: CPU per earn, every process of the cluster (lb)")
    assert lb["value"] == "8.60"
    assert "HAProxy 0.70, hub 5.00" in lb["note"] and "1: 77.2 req/s, p99 39.00 ms" in lb["note"]
    checks = _row(figures, "checks: every request 2xx, no load ran out, audit")
    assert (checks["value"], checks["met"]) == ("28", True)


def test_a_load_that_ran_out_fails_the_checks():
    results = _results()
    spent = results["hub1"][4][0]
    results["hub1"][4][0] = Load(LoadResult(**{**spent.result.__dict__, "exhausted": True}), spent.cpu_ms)

    figures = _figures(VARIANTS, results, dict.fromkeys(PARTS, 0.0), SIZES, True, "audit passed",
                       ("1", "1"), setup_s=45, total_s=250)

    assert _row(figures, "checks: every request 2xx, no load ran out, audit")["met"] is False


def test_without_the_cluster_it_is_not_run_and_says_why(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    def missing(self: Cluster) -> None:
        raise ClusterError("network namespaces need root")

    monkeypatch.setattr(Cluster, "check_tools", missing)

    figures = cluster_hops.run({"scale": "quick", "artifacts": tmp_path})

    assert [(row["figure"], row["note"]) for row in figures] == [("not run", "not run: network namespaces need root")]
