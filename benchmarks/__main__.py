"""``python -m benchmarks [--scale full|quick] [--only MODULE ...]``: every benchmark in one run.

Starts one durable PostgreSQL (fsync and synchronous_commit on), runs each module's
``run(context)`` in order, prints one table of figures with their floors and ratios,
writes it to test-artifacts/bench/results.md and results.json with the date, the
machine and the exact command, and stops PostgreSQL and every server it started.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import shlex
import shutil
import sys
import time
import traceback
from datetime import datetime, timezone

from benchmarks import common

MODULES = ("http_earn", "observability_overhead", "risk_overhead", "batch_ingest", "redemption_contention",
           "campaign_contention", "risk_scenarios", "balance_inquiry", "sdk_signing", "settlement_scale",
           "ledger_vs_hordak", "cluster_hops")


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("--scale", choices=("full", "quick"), default="full",
                        help="full: the issue's sizes (about 20 minutes); quick: tiny sizes, a smoke test")
    parser.add_argument("--only", nargs="*", choices=MODULES, help="run only these modules")
    return parser.parse_args()


def _run_module(name: str, context: dict) -> tuple[list[dict], float]:  # type: ignore[type-arg]
    started = time.perf_counter()
    if importlib.util.find_spec(f"benchmarks.{name}") is None:
        return [common.figure(name, "not run", 0, "", note=f"benchmarks/{name}.py is not there yet", places=0)], 0.0
    try:
        figures = importlib.import_module(f"benchmarks.{name}").run(context)
    except Exception as error:  # one broken benchmark must not hide the others' figures
        traceback.print_exc()
        figures = [common.figure(name, "FAILED", 0, "", met=False, note=f"{type(error).__name__}: {error}"[:300],
                                 places=0)]
    return figures, time.perf_counter() - started


def _report(figures: list[dict], header: dict[str, str], timings: dict[str, float]) -> str:  # type: ignore[type-arg]
    lines = [f"# Benchmark results ({header['scale']})", ""]
    lines += [f"- {name}: {value}" for name, value in header.items()]
    lines += ["- seconds per module: " + ", ".join(f"{name} {common.decimal_text(seconds, 0)}"
                                                   for name, seconds in timings.items()), "", common.table(figures), ""]
    return "\n".join(lines)


def main() -> int:
    """Run the benchmarks; exit 0 when every module ran (targets met or not), 1 if one failed."""
    arguments = _arguments()
    from tests.postgres_server import start_postgres

    if shutil.which("wrk") is None:
        print("wrk is not installed: run scripts/ensure-bench-tools.sh (make bench does)", file=sys.stderr)
        return 1
    started_at = datetime.now(timezone.utc)
    run_started = time.perf_counter()
    artifacts = common.ARTIFACTS / started_at.strftime("run-%Y%m%dT%H%M%SZ")
    artifacts.mkdir(parents=True, exist_ok=True)
    server = start_postgres(durable=True)
    figures: list[dict] = []  # type: ignore[type-arg]
    timings: dict[str, float] = {}
    try:
        header = {"date": started_at.isoformat(timespec="seconds"), "command": shlex.join([sys.executable, "-m",
                  "benchmarks", *sys.argv[1:]]), "scale": arguments.scale, **common.machine(),
                  "postgresql": common.server_version(server), "durability": common.durability(server)}
        context = {"postgres": server, "venv_python": sys.executable, "scale": arguments.scale, "artifacts": artifacts}
        for name in arguments.only or MODULES:
            print(f"== {name}", flush=True)
            module_figures, timings[name] = _run_module(name, context)
            figures += module_figures
            print(common.table(module_figures), flush=True)
    finally:
        server.stop()
        # The pre-signed request files are spent (their nonces are used) and only take room.
        for spent in artifacts.glob("*.requests"):
            spent.unlink()
    header["total_seconds"] = common.decimal_text(time.perf_counter() - run_started, 0)
    report = _report(figures, header, timings)
    print(report)
    for folder in (common.ARTIFACTS, artifacts):
        (folder / "results.md").write_text(report)
        (folder / "results.json").write_text(json.dumps({**header, "seconds_per_module": {
            name: common.decimal_text(seconds, 1) for name, seconds in timings.items()}, "figures": figures}, indent=2))
    return 1 if any(row["figure"] == "FAILED" for row in figures) else 0


if __name__ == "__main__":
    sys.exit(main())
