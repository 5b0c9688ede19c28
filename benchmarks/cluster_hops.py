"""What each hop of the cluster topology costs the signed earn: HAProxy (with its TLS) and PgBouncer.

The production path of ``deploy/`` (``make cluster``): a till's request goes over TLS to
HAProxy on the load balancer, which hands it to one of the hub hosts' gunicorn; the hub
reaches PostgreSQL through its host's PgBouncer (transaction pooling), which reaches the
primary through HAProxy's TCP port for the primary. This module starts that topology on
this machine (``deploy.cluster.Cluster``, its own namespaces ``alliance-bench-*`` on
10.78.0.0/24, without the demo data), seeds partners and members as ``http_earn`` does
and sends the same load (purchase reports signed with the SDK just before each load,
fresh nonces, replayed by wrk from the cluster's client host; a load that uses up its
file is repeated with twice as many) along paths that differ by one hop at a time:

    lb            https://lb       HAProxy (TLS) -> the 3 hub hosts -> PgBouncer -> HAProxy -> primary
    lb-hub1       https://lb       the same, with hub2 and hub3 in maintenance in HAProxy (one hub host)
    lb-hub1-http  http://lb        the same without TLS
    hub1          http://hub1:8000 hub1's gunicorn straight (no HAProxy in front)
    hub1-nobouncer  http://hub1:8001 a second gunicorn on hub1, same settings, DATABASE_URL to
                  HAProxy's primary port (no PgBouncer)
    hub1-primary  http://hub1:8002 the same, DATABASE_URL to the primary's own address (no PgBouncer,
                  no HAProxy between hub and database)
    hub1-primary-prepared  http://hub1:8003 the same with ALLIANCE_DATABASE_POOLING=session: what the
                  hub does without PgBouncer (psycopg prepares its statements), which PgBouncer
                  1.18's transaction pooling rules out

so each hop's cost is the difference between two of them under the same load. The extra
gunicorns run the hub unit's own command line, user and settings, with their own port,
metrics folder and home; only the database URL (and for the last, the pooling) differs.
The production hubs keep every production setting (the partner rate limits included:
at these rates they never refuse, which the non-2xx count shows).

Two kinds of figure. The wall clock: latency at 1 connection (each request alone: p50
and mean) and throughput at 2, 4 and 8 connections, every variant in each round, the
rounds alternating their order. And the CPU each part of the cluster spends per earn
(HAProxy, the hubs' gunicorn, PgBouncer, PostgreSQL on the primary and on the standbys,
wrk, the rest), read from /proc around each load for every process of the cluster's
namespaces, less what each part spends idle: a hop's own processes' CPU per earn is its
cost, and it hardly moves with the load the rest of the machine is under, where the
sub-millisecond latency of a hop drowns in the scheduling noise of two shared cores.

Every host shares this machine's CPUs: HAProxy, three hubs with their schedulers and
webhook processes, three PgBouncers, three PostgreSQL servers with synchronous
replication, etcd, Patroni, Prometheus and wrk all compete for the same cores, so a
throughput figure here is the whole cluster's on this machine, not what another host
would add: three hub hosts are three sets of processes on the same two cores.
"""

from __future__ import annotations

import os
import resource
import shutil
import statistics
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from benchmarks import common
from benchmarks.http_earn import _purchases
from deploy import netns
from deploy.cluster import Cluster, ClusterError

BENCHMARK = "cluster hops (signed earn)"
PREFIX = "alliance-bench"
SUBNET = "10.78.0.0/24"
# Latency: every variant alone at 1 connection, in ``latency_rounds`` rounds; throughput:
# every variant at each rung of ``ladder``, in ``throughput_rounds`` rounds. Full scale
# keeps the module within about 5 minutes, the cluster's start (about 45 s) included.
# The members take the purchases in turn, so none comes near the default risk policy's
# 20 earns per card an hour (a hold would write a decision and measure something else).
SIZES = {"full": {"partners": 4, "members": 2000, "min_requests": 100, "latency_rounds": 2, "latency_s": 3,
                  "throughput_rounds": 2, "throughput_s": 2, "ladder": (2, 4, 8)},
         "quick": {"partners": 2, "members": 500, "min_requests": 50, "latency_rounds": 1, "latency_s": 2,
                   "throughput_rounds": 1, "throughput_s": 2, "ladder": (4,)}}
WARM_UP_REQUESTS = 40
# Each load's file holds twice the requests this rate needs for its duration (more than
# any variant reaches on this machine, about 100 earns/s at best); one that runs out all
# the same is repeated with twice as many (``common.MAX_LOAD_ATTEMPTS``), as in sized_load.
SIZING_RATE_PER_S = 150
# How long the cluster's idle CPU is read, once, before the loads.
IDLE_S = 3
HAPROXY_SLOWSTART_S = 5
# The variants served by gunicorns this module starts on hub1 (beside the hub unit's own).
EXTRA_HUBS = ("hub1-nobouncer", "hub1-primary", "hub1-primary-prepared")


# Where the CPU goes, by process: HAProxy on the load balancer, the hubs' gunicorn (workers
# and masters, every hub host), the hubs' PgBouncers, PostgreSQL on the primary and on the
# standbys, wrk on the client, and the rest (etcd, Patroni, Prometheus, schedulers, webhook
# deliveries).
PARTS = ("HAProxy", "hub", "PgBouncer", "PostgreSQL primary", "PostgreSQL standbys", "wrk", "rest")


@dataclass(frozen=True)
class Variant:
    """One path from the client host to the hub: its URL and what HAProxy's hub backend must hold."""

    name: str
    path: str
    url: str
    one_hub: bool = False


@dataclass(frozen=True)
class Hop:
    """One hop: the cost is ``with_hop`` against ``without``."""

    name: str
    with_hop: str
    without: str
    # Whose CPU is the hop's own (the processes it adds or that do more work).
    parts: tuple[str, ...]


HOPS = (
    Hop("TLS at HAProxy (HTTPS against HTTP to the load balancer)", "lb-hub1", "lb-hub1-http", ("HAProxy",)),
    Hop("HAProxy in front of the hub (HTTP, one hub host behind it)", "lb-hub1-http", "hub1", ("HAProxy",)),
    Hop("PgBouncer between hub and database (same settings: no prepared statements either way)", "hub1",
        "hub1-nobouncer", ("PgBouncer",)),
    Hop("HAProxy between hub and primary (TCP)", "hub1-nobouncer", "hub1-primary", ("HAProxy",)),
    Hop("prepared statements off, as transaction pooling requires (hub straight to the primary)", "hub1-primary",
        "hub1-primary-prepared", ("hub", "PostgreSQL primary")),
    Hop("the whole production path (one hub host) against a hub straight to the primary", "lb-hub1",
        "hub1-primary-prepared", PARTS),
    Hop("three hub hosts behind HAProxy against one", "lb", "lb-hub1", PARTS),
)


def _variants(cluster: Cluster) -> list[Variant]:
    topology = cluster.topology
    hub1 = topology.host("hub1").address
    port = topology.ports.hub
    return [
        Variant("lb", "HAProxy TLS -> 3 hubs -> PgBouncer -> HAProxy -> primary", f"https://{topology.lb.address}"),
        Variant("lb-hub1", "HAProxy TLS -> hub1 -> PgBouncer -> HAProxy -> primary", f"https://{topology.lb.address}",
                one_hub=True),
        Variant("lb-hub1-http", "HAProxy -> hub1 -> PgBouncer -> HAProxy -> primary", f"http://{topology.lb.address}",
                one_hub=True),
        Variant("hub1", "hub1 -> PgBouncer -> HAProxy -> primary", f"http://{hub1}:{port}"),
        Variant("hub1-nobouncer", "hub1 -> HAProxy -> primary", f"http://{hub1}:{port + 1}"),
        Variant("hub1-primary", "hub1 -> primary", f"http://{hub1}:{port + 2}"),
        Variant("hub1-primary-prepared", "hub1 -> primary, statements prepared", f"http://{hub1}:{port + 3}"),
    ]


def _unavailable(cluster: Cluster) -> str | None:
    try:
        cluster.check_tools()
    except ClusterError as error:
        return str(error)
    return None


def run(context: dict) -> list[dict]:  # type: ignore[type-arg]
    """Start the cluster, measure every variant on the ladder in alternating rounds, remove the cluster."""
    sizes = SIZES[context["scale"]]
    artifacts: Path = Path(context["artifacts"]) / "cluster-hops"
    artifacts.mkdir(parents=True, exist_ok=True)
    cluster = Cluster(prefix=PREFIX, subnet=SUBNET, forward_port=0)
    reason = _unavailable(cluster)
    if reason:
        return [common.figure(BENCHMARK, "not run", 0, "", note=f"not run: {reason}", places=0)]
    if cluster.exists():
        cluster.down(echo=lambda line: None)  # what an interrupted run of this module left
    started = time.monotonic()
    extra_hubs: list = []  # type: ignore[type-arg]
    try:
        cluster.up(seed=False, echo=lambda line: print(f"  cluster: {line}", flush=True))
        up_s = time.monotonic() - started
        variants = _variants(cluster)
        _start_extra_hubs(cluster, variants, artifacts, extra_hubs)  # they start while the seeding runs
        partners, members = cluster.in_namespace("hub1", _seed, cluster, sizes["partners"], sizes["members"],
                                                 timeout=300)
        for variant in variants:
            if variant.name in EXTRA_HUBS:
                _wait_ready(cluster, variant, extra_hubs)
        print(f"  seeded and extra gunicorns up at {time.monotonic() - started:.0f} s", flush=True)
        results, idle_per_s, load_avg = _measure(cluster, variants, partners, members, sizes, artifacts)
        print(f"  loads done at {time.monotonic() - started:.0f} s", flush=True)
        audit = cluster.alliance(["audit"], check=False)
        purchases, decisions = cluster.in_namespace("hub1", _books, cluster, timeout=60)
        audit_green = "audit passed" in audit.stdout and decisions == 0
        audit_note = (f"{purchases} purchases committed, {decisions} risk decisions kept (the default policy in "
                      f"force{', never firing' if decisions == 0 else ': it fired, and those earns did more work'}); "
                      + ("audit passed" if "audit passed" in audit.stdout
                         else f"audit FAILED: {(audit.stdout + audit.stderr)[-300:]}"))
        figures = _figures(variants, results, idle_per_s, sizes, audit_green, audit_note, load_avg,
                           setup_s=up_s, total_s=time.monotonic() - started)
    finally:
        for process in extra_hubs:
            _stop(process)
        _keep_logs(cluster, artifacts)
        cluster.down(echo=lambda line: None)
    return figures


# ---------------------------------------------------------------- the cluster's side


def _seed(cluster: Cluster, partner_count: int, member_count: int):  # type: ignore[no-untyped-def]
    """Partners with keys and members, written through the hub's services (run inside hub1's namespace)."""
    from alliance import create_app
    from alliance.config import Settings

    environment = cluster.hub_environment("hub1")
    # Straight to the primary through HAProxy, as `alliance db upgrade` goes.
    environment.update(ALLIANCE_DATABASE_URL=environment["ALLIANCE_MIGRATION_DATABASE_URL"],
                       ALLIANCE_DATABASE_POOLING="session")
    app = create_app(Settings.from_env(environment))
    hub = app.extensions["alliance"]
    seeded_at = common.utc_now() - timedelta(hours=1)
    try:
        return common.seed_partners(hub, partner_count, seeded_at), common.seed_members(hub, member_count, seeded_at)
    finally:
        hub.engine.dispose()


def _books(cluster: Cluster) -> tuple[int, int]:
    """The purchases committed and the risk decisions kept (run inside a hub host's namespace)."""
    import psycopg

    url = cluster.hub_environment("hub1")["ALLIANCE_MIGRATION_DATABASE_URL"]
    with psycopg.connect(url, connect_timeout=10) as connection:
        purchases = connection.execute("SELECT count(*) FROM purchases").fetchone()
        decisions = connection.execute("SELECT count(*) FROM risk_decisions").fetchone()
    return int(purchases[0]) if purchases else 0, int(decisions[0]) if decisions else 0


def _start_extra_hubs(cluster: Cluster, variants: list[Variant], artifacts: Path,  # type: ignore[type-arg]
                      processes: list) -> None:
    """The second, third and fourth gunicorn on hub1: the hub unit's command and settings, another database URL.

    Each started is appended to ``processes`` at once, so the caller stops it even if a later
    one fails; the caller waits for them to be ready (``_wait_ready``).
    """
    unit = cluster.service("hub1", "hub")
    environment = cluster.hub_environment("hub1")
    primary = cluster.wait_for_primary(timeout_s=30)
    direct = environment["ALLIANCE_MIGRATION_DATABASE_URL"]
    at_primary = direct.replace(f"@{cluster.topology.lb.address}:{cluster.topology.ports.pg_primary}/",
                                f"@{cluster.topology.host(primary).address}:{cluster.topology.ports.postgres}/")
    settings = {"hub1-nobouncer": {"ALLIANCE_DATABASE_URL": direct},
                "hub1-primary": {"ALLIANCE_DATABASE_URL": at_primary},
                "hub1-primary-prepared": {"ALLIANCE_DATABASE_URL": at_primary, "ALLIANCE_DATABASE_POOLING": "session"}}
    for variant in variants:
        if variant.name not in settings:
            continue
        port = variant.url.rsplit(":", 1)[1]
        home = cluster.root("hub1") / "var" / "lib" / f"alliance-{variant.name}"
        metrics = cluster.root("hub1") / "run" / f"alliance-{variant.name}-metrics"
        for folder in (home, metrics):
            folder.mkdir(parents=True, exist_ok=True)
        argv = list(unit.argv)
        argv[argv.index("--bind") + 1] = f"{cluster.topology.host('hub1').address}:{port}"
        with (artifacts / f"{variant.name}.log").open("ab") as log:
            processes.append(cluster.popen(
                "hub1", argv, user=unit.user, cwd=unit.cwd, stdout=log, stderr=log, stdin=None,
                start_new_session=True, environment={**unit.environment, **settings[variant.name], "HOME": str(home),
                                                     "PROMETHEUS_MULTIPROC_DIR": str(metrics)}))


def _wait_ready(cluster: Cluster, variant: Variant, processes: list) -> None:  # type: ignore[type-arg]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if any(process.poll() is not None for process in processes):
            raise RuntimeError(f"an extra gunicorn on hub1 exited at start; see its log ({variant.name})")
        try:
            status, _ = cluster.http(f"{variant.url}/readyz", timeout_s=3)
            if status == 200:
                return
        except OSError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"{variant.name} did not answer /readyz within 60 s")


def _stop(process) -> None:  # type: ignore[no-untyped-def]
    """SIGTERM one gunicorn this module started (its master, by pid), SIGKILL after 30 s."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=30)
    except Exception:
        process.kill()
        process.wait(timeout=10)


def _set_one_hub(cluster: Cluster, one_hub: bool, *, spread: bool = True) -> None:
    """HAProxy's hub backend: hub1 alone (the others in maintenance) or every hub host.

    Back from maintenance, a server takes its full share of requests only after its slow
    start: waited for if the next load must be ``spread`` (not needed for one connection).
    """
    others = [hub.name for hub in cluster.topology.hubs if hub.name != "hub1"]
    for name in others:
        cluster.haproxy_command(f"set server hubs/{name} state {'maint' if one_hub else 'ready'}")
    if not one_hub:
        for name in others:
            cluster.wait_hub_ready(name, timeout_s=30)
        if spread:
            time.sleep(HAPROXY_SLOWSTART_S)


def _keep_logs(cluster: Cluster, artifacts: Path) -> None:
    if cluster.log_dir.exists():
        target = artifacts / "cluster-logs"
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(cluster.log_dir, target)


# ---------------------------------------------------------------- the loads

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Load:
    """One wrk load and the CPU each part of the cluster spent during it, in ms per 2xx answer."""

    result: common.LoadResult
    cpu_ms: dict[str, float]

    @property
    def total_cpu_ms(self) -> float:
        return sum(self.cpu_ms.values())

    def part_ms(self, parts: tuple[str, ...]) -> float:
        return sum(self.cpu_ms[part] for part in parts)


def _part(host_name: str, command: str, primary: str) -> str:
    """Which part of the cluster a process is, by its host and its command name."""
    if host_name == "lb" and command == "haproxy":
        return "HAProxy"
    if host_name.startswith("hub") and command == "gunicorn":
        return "hub"
    if command == "pgbouncer":
        return "PgBouncer"
    if command == "postgres":
        return "PostgreSQL primary" if host_name == primary else "PostgreSQL standbys"
    return "rest"


def _cpu_seconds(cluster: Cluster, primary: str) -> dict[tuple[str, int], tuple[str, float]]:
    """(host, pid) -> (part, user + system CPU seconds so far) of every process in the cluster's hosts.

    A process is in a host if its network namespace is the host's (what ``ip netns pids``
    compares), read in one pass over /proc.
    """
    hosts = {}
    for host in cluster.topology.hosts:
        try:
            hosts[os.stat(netns.NETNS_DIR / cluster.namespace(host.name)).st_ino] = host.name
        except OSError:
            continue
    processes = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            host_name = hosts.get(os.stat(f"/proc/{entry}/ns/net").st_ino)
            if host_name is None:
                continue
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        command = stat[stat.index("(") + 1:stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2:].split()
        # utime and stime: fields 14 and 15 of proc(5), the 12th and 13th after the command.
        seconds = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
        processes[(host_name, int(entry))] = (_part(host_name, command, primary), seconds)
    return processes


def _cpu_spent(before: dict[tuple[str, int], tuple[str, float]],
               after: dict[tuple[str, int], tuple[str, float]]) -> dict[str, float]:
    """CPU seconds each part spent between two snapshots (a process started since counts from 0)."""
    spent = dict.fromkeys(PARTS, 0.0)
    for key, (part, seconds) in after.items():
        spent[part] += seconds - before.get(key, (part, 0.0))[1]
    return spent


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _load(cluster: Cluster, primary: str, idle_per_s: dict[str, float], variant: Variant, make_requests,  # type: ignore[no-untyped-def]
          artifacts: Path, *, connections: int, duration_s: int, rate_per_s: float, minimum: int) -> Load:
    """``common.sized_load``'s load from the client host, with every part's CPU read around the wrk run.

    What each part spends idle (``idle_per_s``: health checks, etcd, Patroni, Prometheus's
    scrapes, the schedulers) is taken off for the run's wall time, so the figures are
    the earns' own CPU. wrk is this process's child: its CPU is the children's usage
    across the run (nothing else of this process's ends in between).
    """
    name = f"{variant.name}-{connections}"
    count = common.requests_for(rate_per_s, duration_s, minimum=minimum)
    for attempt in range(1, common.MAX_LOAD_ATTEMPTS + 1):
        request_file = artifacts / f"{name}.requests"
        common.write_request_file(request_file, make_requests(count, f"{name}-{attempt}"))
        before = _cpu_seconds(cluster, primary)
        children_before = _children_cpu_s()
        wall_started = time.monotonic()
        result = cluster.in_client(common.run_wrk, variant.url, request_file, artifacts, duration_s=duration_s,
                                   connections=connections, threads=min(common.WRK_THREADS, connections),
                                   timeout=duration_s + 180)
        wrk_s = _children_cpu_s() - children_before
        spent = _cpu_spent(before, _cpu_seconds(cluster, primary))
        wall_s = time.monotonic() - wall_started
        spent = {part: seconds - idle_per_s[part] * wall_s for part, seconds in spent.items()}
        if not result.exhausted:
            break
        count *= 2
    spent["wrk"] += wrk_s
    return Load(result, {part: seconds * 1000 / max(result.ok, 1) for part, seconds in spent.items()})


def _load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def _measure(cluster: Cluster, variants: list[Variant], partners, members, sizes: dict,  # type: ignore[no-untyped-def, type-arg]
             artifacts: Path) -> tuple[dict[str, dict[int, list[Load]]], dict[str, float], tuple[str, str]]:
    position = [0]

    def make_requests(count: int, tag: str) -> list[common.PreparedRequest]:
        # The members in turn across loads, so no member sees many earns in a row.
        requests = _purchases(partners, members, count, tag, start=position[0])
        position[0] += count
        return requests

    before = _load_average()
    primary = cluster.wait_for_primary(timeout_s=30)
    one_hub = False
    # Warm every path's workers and connections, backwards: the first round starts where this ends.
    for variant in reversed(variants):
        if variant.one_hub != one_hub:
            _set_one_hub(cluster, variant.one_hub, spread=False)
            one_hub = variant.one_hub
        warm_up = artifacts / f"{variant.name}-warm-up.requests"
        common.write_request_file(warm_up, make_requests(WARM_UP_REQUESTS, f"{variant.name}-warm-up"))
        cluster.in_client(common.run_wrk, variant.url, warm_up, artifacts, duration_s=1, connections=2, threads=2,
                          timeout=180)
    idle_before = _cpu_seconds(cluster, primary)
    time.sleep(IDLE_S)
    idle_per_s = {part: seconds / IDLE_S for part, seconds in _cpu_spent(idle_before,
                                                                          _cpu_seconds(cluster, primary)).items()}
    print("  idle CPU, ms per s: " + ", ".join(f"{part} {ms * 1000:.1f}" for part, ms in idle_per_s.items()),
          flush=True)
    phases = [((1,), sizes["latency_rounds"], sizes["latency_s"]),
              (sizes["ladder"], sizes["throughput_rounds"], sizes["throughput_s"])]
    results: dict[str, dict[int, list[Load]]] = {v.name: {c: [] for c in (1, *sizes["ladder"])} for v in variants}
    round_number = 0
    for ladder, rounds, duration_s in phases:
        for _ in range(rounds):
            # Forward then backward: a drift of the machine lands on every variant, and HAProxy's
            # hub backend changes (one hub host or all) once every two rounds.
            order = variants if round_number % 2 == 0 else list(reversed(variants))
            round_number += 1
            for variant in order:
                if variant.one_hub != one_hub:
                    _set_one_hub(cluster, variant.one_hub, spread=max(ladder) > 1)
                    one_hub = variant.one_hub
                for connections in ladder:
                    load = _load(cluster, primary, idle_per_s, variant, make_requests, artifacts,
                                 connections=connections, duration_s=duration_s, rate_per_s=SIZING_RATE_PER_S,
                                 minimum=sizes["min_requests"])
                    results[variant.name][connections].append(load)
                    result = load.result
                    print(f"  {variant.name} at {connections}: {result.ok_per_s:.1f} req/s, p50 "
                          f"{result.p50_ms:.2f} ms, p99 {result.p99_ms:.2f} ms, CPU {load.total_cpu_ms:.2f} ms/earn ("
                          + ", ".join(f"{part} {ms:.2f}" for part, ms in load.cpu_ms.items())
                          + f"); {result.errors_note()}", flush=True)
    return results, idle_per_s, (before, _load_average())


# ---------------------------------------------------------------- figures


def _median(values: list[float]) -> float:
    return statistics.median(values)


def _mean_latency_ms(result: common.LoadResult, connections: int) -> float:
    """The mean time per request in a closed loop: connections / rate."""
    return connections * 1000 / result.ok_per_s if result.ok else 0.0


def _ms(value: float) -> str:
    return common.decimal_text(value, 2)


def _figures(variants: list[Variant], results: dict[str, dict[int, list[Load]]], idle_per_s: dict[str, float],
             sizes: dict,  # type: ignore[type-arg]
             audit_green: bool, audit_note: str, load_avg: tuple[str, str], *, setup_s: float,
             total_s: float) -> list[dict]:  # type: ignore[type-arg]
    ladder = (1, *sizes["ladder"])
    every = [load.result for per_rung in results.values() for loads in per_rung.values() for load in loads]
    valid = all(r.refused == 0 and r.socket_errors == 0 and not r.exhausted for r in every)

    def loads(name: str) -> list[Load]:
        return [load for connections in ladder for load in results[name][connections]]

    def pairs(hop: Hop, connections: tuple[int, ...] = ladder) -> list[tuple[Load, Load]]:
        # The same rung of the same round: the two loads ran minutes apart at most.
        return [pair for c in connections for pair in zip(results[hop.with_hop][c], results[hop.without][c],
                                                          strict=True)]

    def p50(name: str) -> float:
        return _median([load.result.p50_ms for load in results[name][1]])

    def rate(name: str, connections: int) -> float:
        return _median([load.result.ok_per_s for load in results[name][connections]])

    def cpu(name: str, parts: tuple[str, ...] = PARTS) -> float:
        return _median([load.part_ms(parts) for load in loads(name)])

    figures = []
    for variant in variants:
        rungs = "; ".join(f"{c}: {common.decimal_text(rate(variant.name, c), 1)} req/s, p99 "
                          f"{_ms(_median([load.result.p99_ms for load in results[variant.name][c]]))} ms"
                          for c in ladder)
        figures.append(common.figure(
            BENCHMARK, f"{variant.name}: CPU per earn, every process of the cluster ({variant.path})",
            cpu(variant.name), "ms",
            note="by part " + ", ".join(f"{part} {_ms(cpu(variant.name, (part,)))}" for part in PARTS)
                 + f" (medians over its {len(loads(variant.name))} loads); p50 at 1 connection {_ms(p50(variant.name))}"
                 f" ms, mean {_ms(_median([_mean_latency_ms(load.result, 1) for load in results[variant.name][1]]))}"
                 f" ms; connections: req/s, p99 (median of {sizes['latency_rounds']} rounds at 1, "
                 f"{sizes['throughput_rounds']} at the others) {rungs}"))
    for hop in HOPS:
        own = _median([a.part_ms(hop.parts) - b.part_ms(hop.parts) for a, b in pairs(hop)])
        total = _median([a.total_cpu_ms - b.total_cpu_ms for a, b in pairs(hop)])
        added_p50 = _median([a.result.p50_ms - b.result.p50_ms for a, b in pairs(hop, (1,))])
        added_mean = _median([_mean_latency_ms(a.result, 1) - _mean_latency_ms(b.result, 1)
                              for a, b in pairs(hop, (1,))])
        lost = {c: _median([1 - a.result.ok_per_s / b.result.ok_per_s for a, b in pairs(hop, (c,))
                            if b.result.ok_per_s]) for c in ladder}
        figures.append(common.figure(
            BENCHMARK, f"CPU per earn added: {hop.name}", own, "ms",
            floor=f"{hop.without}, whole cluster", floor_value=cpu(hop.without),
            ratio=cpu(hop.with_hop) / cpu(hop.without), ratio_unit="x",
            note=f"{hop.with_hop} against {hop.without}: {' + '.join(hop.parts)} CPU, median of the "
                 f"{len(pairs(hop))} paired loads' differences; whole cluster {_ms(total)} ms more per earn; ratio: "
                 f"whole cluster's CPU per earn, {hop.with_hop} / {hop.without}"))
        figures.append(common.figure(
            BENCHMARK, f"latency added at 1 connection: {hop.name}", added_p50, "ms",
            floor=f"{hop.without} p50 at 1", floor_value=p50(hop.without), ratio=p50(hop.with_hop) / p50(hop.without),
            ratio_unit="x",
            note=f"p50 difference, median of the {sizes['latency_rounds']} rounds' differences; mean "
                 f"{_ms(added_mean)} ms; throughput lost (median of the rounds' 1 - with / without) "
                 + ", ".join(f"at {c}: {common.decimal_text(lost[c] * 100, 1)}%" for c in ladder)))
    figures.append(common.figure(
        BENCHMARK, "checks: every request 2xx, no load ran out, audit", len(every), "loads",
        target="every request 2xx, 0 risk decisions, audit passed", met=valid and audit_green, places=0,
        note=f"{'all 2xx, none ran out' if valid else 'SOME LOADS HAD ERRORS OR RAN OUT'}; {audit_note}; "
             f"cluster up in {common.decimal_text(setup_s, 0)} s, module {common.decimal_text(total_s, 0)} s; "
             f"load average before {load_avg[0]}, after {load_avg[1]}; idle CPU taken off each load, ms per s: "
             + ", ".join(f"{part} {common.decimal_text(seconds * 1000, 1)}" for part, seconds in idle_per_s.items())
             + f"; every host shares this machine's "
             f"{os.cpu_count()} cores"))
    return figures


if __name__ == "__main__":
    common.standalone(run)
