"""Where a saturated signed earn's CPU goes: hub workers, PostgreSQL backends, wrk.

``python -m benchmarks.cpu_split [probe] [minimal] [hub] [production] [CONNECTIONS ...]``
starts its own durable PostgreSQL, seeds the earn benchmark's partners and members, and
for the probe (b), the floor (c) (``minimal``), the hub, and the hub as ``http_earn``
judges it (``production``: multiprocess metrics and the JSON request log on) runs wrk
at each of CONNECTIONS (default 12) for 15 s (after a warm-up), reading the CPU time
every process used from ``/proc``: per request, the gunicorn workers', the PostgreSQL
server's processes' (split by kind: backends, walwriter, checkpointer...) and wrk's. On 2 cores a saturated run is
CPU-bound, so throughput is about 2 cores ÷ the sum; the probe's sum is the floor's.
Not part of ``make bench``; a tool for the work of reaching the earn target.
"""

from __future__ import annotations

import os
import resource
import sys
from pathlib import Path

from benchmarks import common
from benchmarks.http_earn import _purchases
from benchmarks.probe_app import probe_server

TICKS_PER_S = os.sysconf("SC_CLK_TCK")
WARM_UP_REQUESTS = 60


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of one process so far (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICKS_PER_S


def _postgres_processes(postmaster: int) -> dict[int, str]:
    """The PostgreSQL server's processes (the postmaster and its children), by pid, with their kind."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if (entry / "comm").read_text().strip() != "postgres":
                continue
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            if postmaster not in (int(entry.name), parent):
                continue
            command = (entry / "cmdline").read_text().replace("\0", " ").strip()
        except OSError:
            continue
        if "127.0.0.1(" in command or "[local]" in command:
            found[int(entry.name)] = "backend"
        else:
            found[int(entry.name)] = command.removeprefix("postgres: ").split()[0] if command.startswith("postgres: ") \
                else "postmaster"
    return found


def _measure(server: common.Gunicorn, name: str, requests: list[common.PreparedRequest], artifacts: Path,
             postmaster: int, connections: int = common.WRK_CONNECTIONS) -> str:
    warm_up = artifacts / f"{name}-warm-up.requests"
    measured = artifacts / f"{name}.requests"
    common.write_request_file(warm_up, requests[:WARM_UP_REQUESTS])
    common.write_request_file(measured, requests[WARM_UP_REQUESTS:])
    common.run_wrk(server.base_url, warm_up, artifacts, duration_s=5, connections=4)
    workers = server.worker_pids()
    postgres_before = {pid: _cpu_s(pid) for pid in _postgres_processes(postmaster)}
    workers_before = sum(_cpu_s(pid) for pid in workers)
    children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    load = common.run_wrk(server.base_url, measured, artifacts, duration_s=15, connections=connections,
                          threads=min(common.WRK_THREADS, connections))
    children_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    per_request_ms = 1000 / max(load.ok, 1)
    hub_ms = (sum(_cpu_s(pid) for pid in workers) - workers_before) * per_request_ms
    wrk_ms = ((children_after.ru_utime + children_after.ru_stime)
              - (children_before.ru_utime + children_before.ru_stime)) * per_request_ms
    by_kind: dict[str, float] = {}
    for pid, kind in _postgres_processes(postmaster).items():
        by_kind[kind] = by_kind.get(kind, 0.0) + (_cpu_s(pid) - postgres_before.get(pid, 0.0)) * per_request_ms
    postgres_ms = sum(by_kind.values())
    kinds = ", ".join(f"{kind} {value:.3f}" for kind, value in sorted(by_kind.items()) if value >= 0.0005)
    return (f"{name} at {connections} connections: {load.ok_per_s:.1f} req/s, p50 {load.p50_ms:.2f} ms, "
            f"p99 {load.p99_ms:.2f} ms ({load.errors_note()})\n"
            f"  CPU ms per request: gunicorn workers {hub_ms:.2f}, PostgreSQL {postgres_ms:.2f} ({kinds}), "
            f"wrk {wrk_ms:.2f}; sum {hub_ms + postgres_ms + wrk_ms:.2f}")


def main(which: list[str], connection_counts: list[int]) -> None:
    """Measure each of ``which`` at each connection count, print the CPU split of each run."""
    from tests.postgres_server import start_postgres

    artifacts = common.ARTIFACTS / "cpu-split"
    artifacts.mkdir(parents=True, exist_ok=True)
    server = start_postgres(durable=True)
    context = {"postgres": server, "venv_python": sys.executable, "scale": "full", "artifacts": artifacts}
    try:
        postmaster = int((server.directory / "data" / "postmaster.pid").read_text().split()[0])
        _, environment, hub, partners, members = common.earning_hub(server, "bench_earn", artifacts, partners=4,
                                                                    members=2000)
        for name in which:
            if name in ("probe", "minimal"):
                served = probe_server(context, partners, members, verify="minimal" if name == "minimal" else "library")
                label, count = ("probe (b)" if name == "probe" else "floor (c)"), 15_000
            elif name == "production":
                observability = common.production_observability(artifacts, "hub")
                served = common.Gunicorn(context, "alliance.wsgi:app", {**environment, **observability.environment},
                                         ready_path="/healthz", name="hub", options=observability.options,
                                         log=observability.log)
                label, count = "hub earn (metrics, JSON log)", 10_000
            elif name == "hub":
                served = common.Gunicorn(context, "alliance.wsgi:app", environment, ready_path="/healthz", name="hub")
                label, count = "hub earn", 10_000
            else:
                raise SystemExit(f"unknown server {name!r}: probe, minimal, hub or production")
            with served as gunicorn:
                for connections in connection_counts:
                    print(_measure(gunicorn, label, _purchases(partners, members, count, f"{name}-{connections}"),
                                   artifacts, postmaster, connections), flush=True)
        hub.engine.dispose()
    finally:
        server.stop()


if __name__ == "__main__":
    arguments = sys.argv[1:]
    main([name for name in arguments if not name.isdigit()] or ["probe", "minimal", "hub", "production"],
         [int(count) for count in arguments if count.isdigit()] or [common.WRK_CONNECTIONS])
