"""Where a saturated gunicorn worker's Python CPU goes: py-spy over every worker, under load.

``python -m benchmarks.worker_profile [hub|production|probe] [TOP]`` starts its own
durable PostgreSQL, seeds the earn benchmark's partners and members, serves the hub (or,
``production``, the hub as ``http_earn`` judges it: multiprocess metrics and the JSON
request log on; or the probe (b)) with the benchmarks' gunicorn settings, and while wrk saturates it samples each
worker with ``py-spy record --gil``: only the thread holding the GIL is sampled, so the
samples are the workers' Python CPU, not their threads waiting on sockets. It prints the
TOP functions by inclusive and by own share of the samples, and leaves the raw stacks in
``test-artifacts/bench/worker-profile/``.

An in-process profile (``benchmarks.http_profile``) shows one request alone; this shows
the workers as the benchmark loads them, with gunicorn, threads and PostgreSQL's real
latencies. It found psycopg's pipeline mode taking 18% of the earn's hub CPU for one
UPDATE and its COMMIT. Needs ``py-spy`` in the virtualenv (``make bench`` installs it)
and permission to ptrace the workers (root, or ``kernel.yama.ptrace_scope=0``). Not part
of ``make bench``; a tool for the work of reaching the targets.
"""

from __future__ import annotations

import collections
import re
import subprocess
import sys
from pathlib import Path

from benchmarks import common
from benchmarks.http_earn import _purchases
from benchmarks.probe_app import probe_server

SAMPLES_PER_S = 200
WARM_UP_REQUESTS = 1_500
SAMPLED_S = 12
LOAD_S = 15
_FRAME_PREFIXES = re.compile(r" \((?:[^()]*/site-packages/|[^()]*/lib/python3\.\d+/|"
                             + re.escape(str(common.REPOSITORY)) + r"/)")
_LINE = re.compile(r":\d+\)$")


def summarise(stack_files: list[Path], top: int) -> str:
    """Inclusive and own shares of the samples in py-spy's raw (collapsed) stack files, by function."""
    inclusive: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    total = 0
    for stack_file in stack_files:
        for line in stack_file.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            if not stack:
                continue
            samples = int(count)
            total += samples
            frames = [_LINE.sub(")", _FRAME_PREFIXES.sub(" (", frame)) for frame in stack.split(";")]
            own[frames[-1]] += samples
            for frame in set(frames):
                inclusive[frame] += samples
    if not total:
        return "no samples (is py-spy allowed to ptrace the workers?)"
    lines = [f"{total} samples of the GIL holder; inclusive share, top {top}:"]
    lines += [f"{samples / total:7.1%}  {frame}" for frame, samples in inclusive.most_common(top)]
    lines += [f"own share, top {top}:"]
    lines += [f"{samples / total:7.1%}  {frame}" for frame, samples in own.most_common(top)]
    return "\n".join(lines)


def main(which: str, top: int) -> None:
    """Serve ``which`` (hub or probe) saturated, sample its workers, print the summary."""
    from tests.postgres_server import start_postgres

    py_spy = Path(sys.executable).with_name("py-spy")
    if not py_spy.exists():
        raise SystemExit(f"{py_spy} not found: run `make bench` once, or `{sys.executable} -m pip install py-spy`")
    artifacts = common.ARTIFACTS / "worker-profile"
    artifacts.mkdir(parents=True, exist_ok=True)
    for old in artifacts.glob(f"{which}-*.stacks"):
        old.unlink()
    server = start_postgres(durable=True)
    context = {"postgres": server, "venv_python": sys.executable, "scale": "full", "artifacts": artifacts}
    try:
        _, environment, hub, partners, members = common.earning_hub(server, "bench_earn", artifacts, partners=4,
                                                                    members=2000)
        if which == "probe":
            served = probe_server(context, partners, members)
        elif which == "production":
            observability = common.production_observability(artifacts, "hub")
            served = common.Gunicorn(context, "alliance.wsgi:app", {**environment, **observability.environment},
                                     ready_path="/healthz", name="hub", options=observability.options,
                                     log=observability.log)
        else:
            served = common.Gunicorn(context, "alliance.wsgi:app", environment, ready_path="/healthz", name="hub")
        with served as gunicorn:
            requests = _purchases(partners, members, 16_500, which)
            warm_up, measured = artifacts / f"{which}-warm-up.requests", artifacts / f"{which}.requests"
            # Long enough for every thread of every worker to have sent each hot statement:
            # a worker compiles the hub's statements on first use (about 0.7 s of CPU in
            # all), which a shorter warm-up left inside the sampled window.
            common.write_request_file(warm_up, requests[:WARM_UP_REQUESTS])
            common.write_request_file(measured, requests[WARM_UP_REQUESTS:])
            common.run_wrk(gunicorn.base_url, warm_up, artifacts, duration_s=10, connections=common.WRK_CONNECTIONS)
            stack_files = [artifacts / f"{which}-{pid}.stacks" for pid in gunicorn.worker_pids()]
            log = (artifacts / f"{which}-py-spy.log").open("w")
            # --nonblocking: read the workers' stacks without pausing them, so the load is
            # served as in the benchmark (a sample may now and then be torn).
            samplers = [subprocess.Popen([str(py_spy), "record", "--gil", "--nonblocking", "--rate",
                                          str(SAMPLES_PER_S), "--duration", str(SAMPLED_S), "--format", "raw",
                                          "--output", str(path), "--pid", path.stem.rsplit("-", 1)[1]],
                                         stdout=log, stderr=log)
                        for path in stack_files]
            load = common.run_wrk(gunicorn.base_url, measured, artifacts, duration_s=LOAD_S)
            failed = [path.stem for path, sampler in zip(stack_files, samplers, strict=True)
                      if sampler.wait(timeout=SAMPLED_S + 30) != 0]
            log.close()
        print(f"{which}: {load.ok_per_s:.1f} req/s, p99 {load.p99_ms:.2f} ms ({load.errors_note()})")
        if failed:
            print(f"py-spy failed on {', '.join(failed)} (see {log.name}); the summary covers the other workers")
        print(summarise([path for path in stack_files if path.exists()], top))
        hub.engine.dispose()
    finally:
        server.stop()


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "hub", int(sys.argv[2]) if len(sys.argv) > 2 else 40)
