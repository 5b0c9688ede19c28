"""Failover chaos on the production topology: signed POS tills through the load balancer while it breaks.

Tills (``tests.chaos.load_client``, in the client host's namespace, against HAProxy) send
signed purchases, refunds and redemptions (authorize, then capture), each resending with
the same Idempotency-Key until it has a definite answer, and keep their own tally of what
was acknowledged. Meanwhile the harness injects faults one after another:

- small (the regular suite): the primary's postmaster SIGKILLed; one hub host's every
  process killed and brought back.
- full (``make cluster-chaos``, ``CLUSTER_CHAOS=full``): those, and one hub host cut off
  the network for 20 s, one etcd member stopped, a planned switchover, a rolling restart
  of the hub hosts (no request may fail), and the primary cut off from etcd and the other
  database hosts while HAProxy and the hub hosts still reach it.

Afterwards: every acknowledged operation is in the ledger exactly once and nothing
unacknowledged is; balances equal the tills' tally; each former primary streams again as
a replica; no scheduler job's effect is doubled; a settlement closing on the cluster is
byte-identical to one on a copy of its books; ``alliance audit`` is green on the primary.
The per-fault table goes to the terminal and to ``test-artifacts/cluster-chaos-report.txt``.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest

from alliance.extensions import HubState, hub_state
from deploy.cluster import Cluster
from tests.chaos.support import wait_for
from tests.chaos.test_crash_safety import LoadShape, ledger_discrepancies, merged, plant_tills_and_customers
from tests.cluster.chaos_support import (
    REPORT_PATH,
    LoadRun,
    RecordingTill,
    RecordingTransport,
    cluster_hub,
    compare_closings,
    current_scale,
    fault_figures,
    job_effect_problems,
    operation_counts,
    scheduler_runs,
    table,
    unacknowledged_in_ledger,
    wait_until_acknowledged,
)
from tests.postgres_server import PostgresServer

pytestmark = pytest.mark.cluster

# plant_tills_and_customers reads only the tills and members per till; the faults here set the pace.
SHAPES = {"small": LoadShape(load_s=0, tills=3, members_per_till=2, workers=0, kill_interval_s=0),
          "full": LoadShape(load_s=0, tills=6, members_per_till=3, workers=0, kill_interval_s=0)}
# Writes acknowledged before the first fault: the load flows through every tier before anything breaks.
WARM_UP_WRITES = 5
LINK_CUT_S = 20.0
ETCD_DOWN_S = 10.0
RTO_OBJECTIVE_S = 30.0


@dataclass
class Scenario:
    """What the faults need: the cluster, the running load, and what happened to the primaries."""

    cluster: Cluster
    run: LoadRun
    primaries: list[str]
    isolation: tuple[float, float] | None = None  # (partitioned, new primary promoted), monotonic s


def primary_kill(scenario: Scenario) -> None:
    """SIGKILL the primary's postmaster: the synchronous standby is promoted, the old primary rewinds and rejoins."""
    cluster, run = scenario.cluster, scenario.run
    old, standby = cluster.primary(), cluster.sync_standby()
    fault = run.inject("primary's postmaster SIGKILLed", lambda: cluster.kill_postmaster(old))
    new = cluster.wait_for_primary(other_than=old, timeout_s=RTO_OBJECTIVE_S)
    assert new == standby, f"{new} was promoted, not the synchronous standby {standby}"
    scenario.primaries.append(new)
    wait_until_acknowledged(run, fault.injected_s)
    cluster.wait_replication(timeout_s=90)
    fault.notes.append(f"{old} -> {new}; {old} streams again as a replica")


def hub_host_kill(scenario: Scenario, host: str = "hub2") -> None:
    """SIGKILL every process of a hub host (a power cut), then start it again."""
    cluster, run = scenario.cluster, scenario.run
    fault = run.inject(f"{host}: every process killed, restarted", lambda: cluster.kill_host(host))
    # Long enough for HAProxy to mark it down (two failed checks 2 s apart).
    time.sleep(5)
    cluster.start_host(host)
    cluster.wait_hub_ready(host, timeout_s=90)
    fault.notes.append(f"{host} back in HAProxy {time.monotonic() - fault.injected_s:.1f} s after the kill")


def hub_link_cut(scenario: Scenario, host: str = "hub3") -> None:
    """Unplug a hub host for 20 s: requests in flight there hang, HAProxy routes around it."""
    cluster, run = scenario.cluster, scenario.run
    fault = run.inject(f"{host}: network cut for {LINK_CUT_S:.0f} s", lambda: cluster.cut_link(host))
    time.sleep(LINK_CUT_S)
    cluster.restore_link(host)
    cluster.wait_hub_ready(host, timeout_s=60)
    fault.notes.append(f"{host} back in HAProxy {time.monotonic() - fault.injected_s:.1f} s after the cut")


def etcd_member_stop(scenario: Scenario) -> None:
    """Stop the etcd member of a database host that is not the primary, for 10 s: the other two keep the quorum."""
    cluster, run = scenario.cluster, scenario.run
    primary = cluster.primary()
    member = next(db.name for db in cluster.topology.dbs if db.name != primary)
    run.inject(f"etcd on {member} stopped for {ETCD_DOWN_S:.0f} s", lambda: cluster.stop(member, "etcd"))
    time.sleep(ETCD_DOWN_S)
    cluster.start(member, "etcd")
    cluster.wait_etcd()


def switchover(scenario: Scenario) -> None:
    """A planned switchover to the synchronous standby, under load."""
    cluster, run = scenario.cluster, scenario.run
    old = cluster.primary()
    fault = run.inject("planned switchover", lambda: scenario.primaries.append(cluster.switchover()))
    wait_until_acknowledged(run, fault.injected_s)
    cluster.wait_replication(timeout_s=90)
    fault.notes.append(f"{old} -> {scenario.primaries[-1]}")


def rolling_restart(scenario: Scenario) -> None:
    """A rolling deploy: each hub host drained in HAProxy, restarted, and put back once ready."""
    cluster, run = scenario.cluster, scenario.run
    run.inject("rolling restart of the hub hosts", lambda: None)
    for hub in cluster.topology.hubs:
        cluster.haproxy_command(f"disable server hubs/{hub.name}")
        wait_for(lambda: cluster.haproxy_servers()[f"hubs/{hub.name}"].get("scur") == "0", f"{hub.name} drained",
                 interval_s=0.2)
        cluster.stop_host(hub.name)
        cluster.start_host(hub.name)
        wait_for(lambda: _ready(cluster, hub.address), f"{hub.name} ready", timeout_s=60, interval_s=0.2)
        cluster.haproxy_command(f"enable server hubs/{hub.name}")
        cluster.wait_hub_ready(hub.name, timeout_s=60)


def primary_partition(scenario: Scenario) -> None:
    """Cut the primary off from etcd and the other database hosts; HAProxy and the hub hosts still reach it."""
    cluster, run = scenario.cluster, scenario.run
    old = cluster.primary()
    others = [db.name for db in cluster.topology.dbs if db.name != old]
    fault = run.inject(f"primary {old} cut off from etcd and the other database hosts",
                       lambda: cluster.partition(old, others))
    new = cluster.wait_for_primary(other_than=old, timeout_s=60)
    scenario.isolation = (fault.injected_s, time.monotonic())
    scenario.primaries.append(new)
    wait_until_acknowledged(run, fault.injected_s)
    cluster.heal(old)
    cluster.wait_replication(timeout_s=120)
    fault.notes.append(f"{old} -> {new} after {scenario.isolation[1] - fault.injected_s:.1f} s; healed, {old} "
                       f"rewound and streams again")


FAULTS: dict[str, list[Callable[[Scenario], None]]] = {
    "small": [primary_kill, hub_host_kill],
    "full": [primary_kill, hub_host_kill, hub_link_cut, etcd_member_stop, switchover, rolling_restart,
             primary_partition],
}


def _ready(cluster: Cluster, address: str) -> bool:
    try:
        status, _ = cluster.http(f"http://{address}:{cluster.topology.ports.hub}/readyz", timeout_s=3)
    except OSError:
        return False
    return status == 200


def start_load(cluster: Cluster, hub: HubState, scale: str) -> tuple[LoadRun, list, list]:  # type: ignore[type-arg]
    """Two partners and each till's own members on the cluster, then the tills running through the load balancer."""
    tills, customers = cluster.in_client(plant_tills_and_customers, hub, SHAPES[scale], timeout=120)
    transport, stop = RecordingTransport(), threading.Event()
    run = LoadRun(cluster, [RecordingTill(number, cluster.lb_url, tills, customers[number], transport, stop)
                            for number in range(len(customers))], transport, stop)
    # The first row: the load before any fault, for comparison.
    run.inject("none (before the first fault)", lambda: None)
    run.start()
    wait_until_acknowledged(run, 0.0, count=WARM_UP_WRITES)
    return run, tills, customers


def test_acknowledged_operations_survive_failovers_and_hub_host_failures_exactly_once(
        cluster: Cluster, postgres: PostgresServer, tmp_path: Path) -> None:
    scale = current_scale()
    started_s = time.monotonic()
    hub = hub_state(cluster.in_client(cluster_hub, cluster, tmp_path / "instance"))
    run, tills, customers = start_load(cluster, hub, scale)
    scenario = Scenario(cluster, run, primaries=[str(cluster.primary())])
    try:
        for fault in FAULTS[scale]:
            fault(scenario)
    finally:
        run.finish()
    load_s = time.monotonic() - started_s
    check_books(scenario, hub, tills, customers, tmp_path, postgres, scale, load_s)


def check_books(scenario: Scenario, hub: HubState, tills: list, customers: list, work_dir: Path,  # type: ignore[type-arg]
                server: PostgresServer, scale: str, load_s: float) -> None:
    """Every invariant of the scenario, with the table written before the assertions so a failure shows it too."""
    cluster, run = scenario.cluster, scenario.run
    # Its connections went to primaries that have since been demoted.
    cluster.in_client(hub.engine.dispose)
    counts = cluster.in_client(operation_counts, hub, timeout=120)
    rows = fault_figures(run, counts)
    tally = merged(run.tills)  # type: ignore[arg-type]
    problems = tally.unresolved + tally.unexpected + tills_problems(cluster.in_client(
        ledger_discrepancies, hub, tally, tills, customers, timeout=300), tills)
    phantoms = unacknowledged_in_ledger(run, counts)
    members = {str(m["name"]): m for m in cluster.wait_replication(timeout_s=120)}
    for hub_host in cluster.topology.hubs:
        cluster.stop(hub_host.name, "scheduler")
    job_problems = cluster.in_client(job_effect_problems, hub, timeout=120)
    closing = compare_closings(cluster, hub, work_dir, server)
    audit = cluster.alliance(["audit"], check=False)
    isolated_acks = isolated_acknowledgements(scenario)
    notes = [f"{fault.name}: {note}" for fault in run.faults for note in fault.notes] + [
        f"{row.fault}: failed attempts {dict(row.failure_kinds)}" for row in rows if row.failure_kinds] + [
        f"load {load_s:.0f} s, {tally.acknowledged} operations acknowledged ({len(tally.purchases)} purchases, "
        f"{len(tally.refunds)} refunds, {len(tally.redemptions)} redemptions), {len(run.transport.attempts_made)} "
        f"HTTP attempts, {tally.client_retries} resends by the tills after the SDK gave up",
        f"primaries in turn: {' -> '.join(scenario.primaries)}",
        f"scheduler runs per hub host: {scheduler_runs(cluster)}",
        f"settlement closing: {closing.statements} statements in {closing.cluster_closing_s:.1f} s, byte-identical "
        f"on a copy of the books: {closing.identical}",
    ] + ([f"writes acknowledged while the old primary was isolated: {len(isolated_acks)}, "
          f"all in the new primary's ledger"] if scenario.isolation else [])
    write_report(table(rows, f"cluster chaos ({scale})"), notes, scale)
    assert problems == [], problems[:20]
    assert phantoms == [], phantoms[:20]
    assert all(row.lost == 0 and row.doubled == 0 for row in rows), rows
    # A request a fault broke is a retry-safe 503 (or no reply / HAProxy's 502), never the
    # hub's own 500: test-artifacts/cluster-logs/ has the traceback of any.
    assert not [kind for row in rows for kind in row.failure_kinds if kind.startswith("500")], notes
    assert all(row.rto_s is not None and row.rto_s < RTO_OBJECTIVE_S for row in rows), rows
    assert all(row.failed_attempts == 0 and row.retried == 0 for row in rows if row.fault.startswith("rolling")), rows
    assert all(members[name]["role"] in ("leader", "sync_standby", "replica") for name in scenario.primaries)
    assert len(set(m.get("timeline") for m in members.values())) == 1, members
    assert all(counts[what.split(" ", 1)[0]][what.split(" ", 1)[1]] == 1 for what in isolated_acks), isolated_acks
    assert job_problems == [], job_problems
    assert closing.identical, closing
    assert "audit passed" in audit.stdout, audit.stdout[-3000:] + audit.stderr[-3000:]


def tills_problems(problems: list[str], tills: list) -> list[str]:  # type: ignore[type-arg]
    """The ledger's problems less those about other partners' operations.

    ``ledger_discrepancies`` reads the whole ledger: on the cluster that includes the demo's
    own redemption holds (``alliance seed-demo``) and the smoke test's purchase, which no
    till acknowledged. A problem naming an operation as ``('<partner code>', ...)`` is
    about that partner; those of partners no till signs for are left out.
    """
    codes = {till.code for till in tills}
    return [problem for problem in problems
            if all(code in codes for code in re.findall(r"\('([a-z0-9-]+)', ", problem))]


def isolated_acknowledgements(scenario: Scenario) -> list[str]:
    """Operations acknowledged between the primary's isolation and the new primary's promotion."""
    if scenario.isolation is None:
        return []
    start_s, end_s = scenario.isolation
    return [what for what, moment in scenario.run.acknowledged().items() if start_s <= moment < end_s]


def write_report(table_text: str, notes: list[str], scale: str) -> None:
    """Print the table and notes; write them to the report file (the small run's own, so it never
    hides the full one's)."""
    text = table_text + "\n\n" + "\n".join(f"- {note}" for note in notes) + "\n"
    print("\n" + text)
    path = REPORT_PATH if scale == "full" else REPORT_PATH.with_name("cluster-chaos-report-small.txt")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
