"""What the cluster chaos scenario needs besides the cluster: recording tills, per-fault figures and the checks.

The tills are ``tests.chaos.load_client``'s, run in the client host's namespace against the
load balancer; here they also write down *when* each operation was acknowledged and every
HTTP attempt they made, so that each fault can be given its own figures: operations
acknowledged while it lasted, resends, acknowledged operations lost or doubled in the
ledger, and the recovery time (from the fault to the first write sent after it that was
acknowledged).

Everything that opens a database connection to the cluster runs in a thread inside the
client's namespace (``Cluster.in_client``): the cluster's addresses exist only there.
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable, Sequence

from flask import Flask
from sqlalchemy import create_engine, select, text

from alliance import create_app
from alliance.config import Settings
from alliance.extensions import HubState, hub_state
from alliance.models import (
    JobLease,
    JournalTransaction,
    LotConsumption,
    MemberNotification,
    Partner,
    Purchase,
    PurchaseRefund,
    RedemptionHold,
    SettlementRun,
)
from alliance.models.settlement import SettlementStatement
from deploy import netns
from deploy.cluster import Cluster
from partners_sdk.retry import problem_code
from settlement.closing import close_due_cycles
from tests.chaos.load_client import CountingTransport, TillThread
from tests.chaos.support import ROOT
from tests.postgres_server import PostgresServer, _binary

REPORT_PATH = ROOT / "test-artifacts" / "cluster-chaos-report.txt"
SCALE_VARIABLE = "CLUSTER_CHAOS"
KINDS = ("purchase", "refund", "authorize", "capture")


def current_scale() -> str:
    """``small`` (the regular suite) or ``full`` (``make cluster-chaos``), from ``CLUSTER_CHAOS``."""
    name = os.environ.get(SCALE_VARIABLE, "small")
    if name not in ("small", "full"):
        raise ValueError(f"{SCALE_VARIABLE} must be small or full, got {name!r}")
    return name


@dataclass(frozen=True)
class Attempt:
    """One HTTP request a till sent: when, whether it resent a key already sent, and what came back."""

    started_s: float
    ended_s: float
    method: str
    resend: bool
    status: int | None  # None: no whole reply
    problem: str | None = None  # a failed reply's problem code: who answered it and why

    @property
    def acknowledged_write(self) -> bool:
        return self.method == "POST" and self.status is not None and 200 <= self.status < 300

    @property
    def failed(self) -> bool:
        return self.status is None or self.status >= 500


class RecordingTransport(CountingTransport):
    """The tills' shared transport: counts as ``CountingTransport`` does and keeps every attempt."""

    def __init__(self) -> None:
        super().__init__()
        self.attempts_made: list[Attempt] = []
        self._keys_sent: set[str] = set()

    def send(self, method, url, headers, body, timeout_s):  # type: ignore[no-untyped-def]
        key = next((value for name, value in headers.items() if name.lower() == "idempotency-key"), None)
        with self._lock:
            resend = key is not None and key in self._keys_sent
            if key is not None:
                self._keys_sent.add(key)
        started_s, status, problem = time.monotonic(), None, None
        try:
            reply = super().send(method, url, headers, body, timeout_s)
            status = reply[0]
            problem = problem_code(reply[2]) if status >= 500 else None
            return reply
        finally:
            with self._lock:
                self.attempts_made.append(Attempt(started_s, time.monotonic(), method, resend, status, problem))


class RecordingTill(TillThread):
    """A ``load_client`` till that also notes when each operation was acknowledged and how long it took.

    Both are keyed ``kind id`` (``purchase t0-…``, ``capture rd-…``); times are monotonic seconds.
    """

    def __init__(self, *arguments, **keywords) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*arguments, **keywords)
        self.acknowledged_at: dict[str, float] = {}
        self.took_s: dict[str, float] = {}

    def resolve(self, what, call):  # type: ignore[no-untyped-def]
        started_s = time.monotonic()
        result = super().resolve(what, call)
        self.acknowledged_at[what] = time.monotonic()
        self.took_s[what] = self.acknowledged_at[what] - started_s
        return result


@dataclass
class Fault:
    """One injected failure: when it was injected and what the harness saw while it lasted."""

    name: str
    injected_s: float
    notes: list[str] = field(default_factory=list)


@dataclass
class FaultFigures:
    """One row of the chaos table."""

    fault: str
    acknowledged: int
    retried: int
    failed_attempts: int
    lost: int
    doubled: int
    rto_s: float | None
    slowest_s: float  # the longest an operation acknowledged in the window took, resends included
    failure_kinds: Counter = field(default_factory=Counter)  # "503 database_unavailable", "no reply", ... -> attempts


@dataclass
class LoadRun:
    """The tills of one scenario, running in the client's namespace, and the faults injected meanwhile."""

    cluster: Cluster
    tills: list[RecordingTill]
    transport: RecordingTransport
    stop: threading.Event
    faults: list[Fault] = field(default_factory=list)
    threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> None:
        namespace = self.cluster.namespace("client")
        self.threads = [netns.thread_in(namespace, till.run, name=till.name) for till in self.tills]

    def inject(self, name: str, action: Callable[[], object]) -> Fault:
        """Note the moment, then do ``action`` (the fault itself)."""
        fault = Fault(name, time.monotonic())
        self.faults.append(fault)
        action()
        return fault

    def finish(self, *, timeout_s: float = 200.0) -> None:
        """Stop the tills; each finishes the operation in hand, resending until its outcome is known."""
        self.stop.set()
        deadline = time.monotonic() + timeout_s
        for thread in self.threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        assert not any(thread.is_alive() for thread in self.threads), "a till never learnt an operation's outcome"

    def acknowledged(self) -> dict[str, float]:
        """Every acknowledged operation (``kind id``) and when."""
        return {what: moment for till in self.tills for what, moment in till.acknowledged_at.items()}


def wait_until_acknowledged(run: LoadRun, after_s: float, *, count: int = 3, timeout_s: float = 60.0) -> None:
    """Return once ``count`` writes sent after ``after_s`` were acknowledged (the tills are flowing again)."""
    deadline = time.monotonic() + timeout_s
    while sum(1 for a in list(run.transport.attempts_made) if a.started_s >= after_s and a.acknowledged_write) < count:
        if time.monotonic() > deadline:
            raise AssertionError(f"no {count} writes acknowledged within {timeout_s:.0f} s")
        time.sleep(0.2)


# The books of the cluster, read in the client's namespace


def cluster_hub(cluster: Cluster, instance_path: Path) -> Flask:
    """A hub app with the cluster's settings, straight to the primary through HAProxy (use it in the
    client's namespace).

    The hub hosts reach the database through their own PgBouncer on 127.0.0.1, which the
    client host has not; the migration URL (lb:5000) is the same primary without it.
    """
    environment = cluster.hub_environment("hub1")
    environment.update(ALLIANCE_DATABASE_URL=environment["ALLIANCE_MIGRATION_DATABASE_URL"],
                       ALLIANCE_DATABASE_POOLING="session", ALLIANCE_INSTANCE_PATH=str(instance_path))
    environment.pop("ALLIANCE_REPLICA_DATABASE_URL", None)
    return create_app(Settings.from_env(environment))


def operation_counts(hub: HubState) -> dict[str, Counter]:
    """How often each till operation (by its receipt, refund id or redemption reference) is in the ledger."""
    with hub.unit_of_work() as uow:
        session = uow.session
        captures = session.execute(select(RedemptionHold.reference).join(
            JournalTransaction, JournalTransaction.hold_id == RedemptionHold.id)
            .where(JournalTransaction.kind == "capture")).scalars()
        return {
            "purchase": Counter(session.scalars(select(Purchase.receipt_id))),
            "refund": Counter(session.scalars(select(PurchaseRefund.refund_id))),
            "authorize": Counter(session.scalars(select(RedemptionHold.reference))),
            "capture": Counter(captures),
        }


def fault_figures(run: LoadRun, counts: dict[str, Counter]) -> list[FaultFigures]:
    """Each fault's row: its window runs from its injection to the next fault's.

    The last window has no end: the operations the tills were finishing when the load
    stopped belong to it.
    """
    acknowledged = run.acknowledged()
    ends = [fault.injected_s for fault in run.faults[1:]] + [math.inf]
    rows = []
    for fault, end_s in zip(run.faults, ends, strict=True):
        in_window = [what for what, moment in acknowledged.items() if fault.injected_s <= moment < end_s]
        found = [counts[what.split(" ", 1)[0]][what.split(" ", 1)[1]] for what in in_window]
        attempts = [a for a in run.transport.attempts_made if fault.injected_s <= a.started_s < end_s]
        # A failure belongs to the fault in force when it was seen: an attempt sent just
        # before a fault and failed by it is that fault's, not the previous one's.
        failures = [a for a in run.transport.attempts_made if a.failed and fault.injected_s <= a.ended_s < end_s]
        first = min((a.ended_s for a in attempts if a.acknowledged_write), default=None)
        took = {what: took_s for till in run.tills for what, took_s in till.took_s.items()}
        rows.append(FaultFigures(
            fault.name, acknowledged=len(in_window), retried=sum(1 for a in attempts if a.resend),
            failed_attempts=len(failures), lost=sum(1 for n in found if n == 0),
            doubled=sum(1 for n in found if n > 1), rto_s=None if first is None else first - fault.injected_s,
            slowest_s=max((took[what] for what in in_window), default=0.0),
            failure_kinds=Counter(f"{a.status or 'no reply'} {a.problem or ''}{' (resend)' if a.resend else ''}"
                                  for a in failures)))
    return rows


def unacknowledged_in_ledger(run: LoadRun, counts: dict[str, Counter]) -> list[str]:
    """Till operations the ledger holds although no till was told they happened."""
    acknowledged = run.acknowledged()
    # The tills' own names for their operations; the demo's holds, say, have no reference at all.
    prefixes = {"purchase": tuple(f"t{till.number}-" for till in run.tills), "refund": ("rf-",),
                "authorize": ("rd-",), "capture": ("rd-",)}
    return [f"{kind} {key}" for kind in KINDS for key in counts[kind]
            if str(key).startswith(prefixes[kind]) and f"{kind} {key}" not in acknowledged]


def table(rows: Sequence[FaultFigures], title: str) -> str:
    """The plain-text chaos table, one row per fault and the totals."""
    header = ("fault", "acknowledged", "retried", "failed attempts", "lost", "doubled", "RTO", "slowest operation")
    cells = [header] + [(row.fault, str(row.acknowledged), str(row.retried), str(row.failed_attempts), str(row.lost),
                         str(row.doubled), "-" if row.rto_s is None else f"{row.rto_s:.1f} s", f"{row.slowest_s:.1f} s")
                        for row in rows]
    cells.append(("total", *(str(sum(getattr(row, name) for row in rows))
                             for name in ("acknowledged", "retried", "failed_attempts", "lost", "doubled")), "", ""))
    widths = [max(len(line[column]) for line in cells) for column in range(len(header))]

    def line(values: Sequence[str]) -> str:
        return "  ".join(value.ljust(width) if column == 0 else value.rjust(width)
                         for column, (value, width) in enumerate(zip(values, widths, strict=True)))

    rule = "  ".join("-" * width for width in widths)
    return "\n".join([title, "", line(cells[0]), rule, *(line(row) for row in cells[1:-1]), rule, line(cells[-1])])


# Scheduler jobs


def job_effect_problems(hub: HubState) -> list[str]:
    """Every job effect at most once, whichever host ran it: releases, expiries, reminders, closings."""
    problems = []
    with hub.unit_of_work() as uow:
        session = uow.session
        releases = Counter(session.scalars(select(JournalTransaction.hold_id)
                                           .where(JournalTransaction.kind == "release")))
        problems += [f"hold {hold} released {count} times" for hold, count in releases.items() if count > 1]
        expiries = Counter(session.scalars(select(LotConsumption.lot_id).join(
            JournalTransaction, JournalTransaction.id == LotConsumption.transaction_id)
            .where(JournalTransaction.kind == "expiry")))
        problems += [f"lot {lot} expired {count} times" for lot, count in expiries.items() if count > 1]
        reminders = Counter(session.scalars(select(MemberNotification.lot_id)))
        problems += [f"lot {lot} reminded {count} times" for lot, count in reminders.items() if count > 1]
        runs = session.execute(select(SettlementRun.partner_id, SettlementRun.cycle_starts_at,
                                      SettlementRun.cycle_ends_at)
                               .order_by(SettlementRun.partner_id, SettlementRun.cycle_starts_at)).all()
        # Consecutive runs: runs[1:] is one shorter.
        for previous, current in zip(runs, runs[1:], strict=False):
            if previous.partner_id == current.partner_id and previous.cycle_ends_at != current.cycle_starts_at:
                problems.append(f"partner {current.partner_id}: cycles {previous.cycle_starts_at} and "
                                f"{current.cycle_starts_at} overlap or leave a gap")
        never = session.scalars(select(JobLease.job_name).where(JobLease.last_finished_at.is_(None))).all()
        problems += [f"job {name} never finished a run" for name in never]
    return problems


def scheduler_runs(cluster: Cluster) -> dict[str, Counter]:
    """Per hub host, how many runs of each job its scheduler reported, and how many it skipped (held elsewhere)."""
    runs: dict[str, Counter] = {}
    for hub in cluster.topology.hubs:
        counts: Counter = Counter()
        for line in cluster.log_path(hub.name, "scheduler").read_text(errors="replace").splitlines():
            if line.startswith("{"):
                continue  # the JSON log lines; the scheduler's own report of each run is the plain line
            job, separator, outcome = line.partition(": ")
            if separator and " " not in job:
                counts["skipped" if "held by another process" in outcome else
                       "failed" if outcome.startswith("failed") else "ran"] += 1
        runs[hub.name] = counts
    return runs


# A settlement closing on the cluster and on a copy of its books


def dump_primary(cluster: Cluster) -> Path:
    """``pg_dump`` of the hub's database, inside the primary's namespace, as PostgreSQL's own user.

    Into the cluster's state folder (which ``down`` removes): pytest's own folders are
    closed to every user but root.
    """
    primary = cluster.wait_for_primary(timeout_s=30)
    folder = cluster.state_dir / "chaos-dump"
    folder.mkdir(parents=True, exist_ok=True)
    shutil.chown(folder, user="postgres", group="postgres")
    path = folder / "books.dump"
    cluster.run(primary, [f"{cluster.layout.pg_bin_dir}/pg_dump",
                          "-h", str(cluster.root(primary) / "run" / "postgresql"),
                          "-d", "alliance", "-Fc", "-f", str(path)], user="postgres", timeout=120)
    return path


def statements_closed_at(hub: HubState, now: datetime) -> list[tuple]:  # type: ignore[type-arg]
    """The statements a closing at ``now`` made, with their bytes, in a stable order."""
    with hub.unit_of_work() as uow:
        return [tuple(row) for row in uow.session.execute(
            select(Partner.code, SettlementRun.cycle_starts_at, SettlementStatement.document_json,
                   SettlementStatement.document_csv, SettlementStatement.signature_json,
                   SettlementStatement.signature_csv)
            .join(SettlementRun, SettlementRun.id == SettlementStatement.run_id)
            .join(Partner, Partner.id == SettlementRun.partner_id)
            .where(SettlementRun.closed_at == now).order_by(Partner.code, SettlementRun.cycle_starts_at)).all()]


def close_and_read(hub: HubState, now: datetime) -> list[tuple]:  # type: ignore[type-arg]
    close_due_cycles(hub.session_factory, now=now, signer=hub.statement_signer)
    return statements_closed_at(hub, now)


def closing_on_a_copy(cluster: Cluster, dump: Path, now: datetime, instance_path: Path,
                      server: PostgresServer) -> list[tuple]:  # type: ignore[type-arg]
    """Restore ``dump`` into a new database on a local ``server`` and close there with ``now`` and the cluster's key."""
    database = f"books_copy_{uuid.uuid4().hex[:8]}"
    admin = create_engine(server.url("postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f"CREATE DATABASE {database}"))
    admin.dispose()
    subprocess.run([_binary("pg_restore"), "--no-owner", "--no-privileges", "--exit-on-error", "-d",
                    server.url(database).replace("+psycopg", ""), str(dump)], check=True, capture_output=True,
                   timeout=120)
    environment = cluster.hub_environment("hub1")
    environment.update(ALLIANCE_DATABASE_URL=server.url(database), ALLIANCE_DATABASE_POOLING="session",
                       ALLIANCE_INSTANCE_PATH=str(instance_path))
    for variable in ("ALLIANCE_REPLICA_DATABASE_URL", "ALLIANCE_MIGRATION_DATABASE_URL"):
        environment.pop(variable, None)
    state = hub_state(create_app(Settings.from_env(environment)))
    try:
        return close_and_read(state, now)
    finally:
        state.engine.dispose()


def closing_moment(start: datetime) -> datetime:
    """Noon UTC on the 2nd of the month after ``start``: every monthly, weekly and daily cycle of it has ended."""
    first_of_next = (start.replace(day=1) + timedelta(days=32)).replace(day=1, hour=12, minute=0, second=0,
                                                                         microsecond=0)
    return first_of_next + timedelta(days=1)


@dataclass
class ClosingComparison:
    statements: int
    identical: bool
    first_difference: str | None
    # The cluster's closing, all transactions: an upper bound on any one's idle time
    # between statements (see idle_in_transaction_session_timeout in post-bootstrap.sh.j2).
    cluster_closing_s: float


def compare_closings(cluster: Cluster, hub: HubState, work_dir: Path, server: PostgresServer) -> ClosingComparison:
    """Close the same cycles on the cluster and on a copy of its books (same ``now``, same key); compare the bytes.

    The schedulers must be stopped first, so that no closing on the real clock happens
    between the dump and the cluster's closing.
    """
    now = closing_moment(datetime.now(timezone.utc))
    dump = dump_primary(cluster)
    started_s = time.monotonic()
    on_cluster = cluster.in_client(close_and_read, hub, now, timeout=300)
    closing_s = time.monotonic() - started_s
    on_copy = closing_on_a_copy(cluster, dump, now, work_dir / "copy-instance", server)
    # The two sides may hold different numbers of statements: that difference is reported just below.
    difference = next((f"{left[:2]} differs" for left, right in zip(on_cluster, on_copy, strict=False)
                       if left != right), None)
    if len(on_cluster) != len(on_copy):
        difference = f"{len(on_cluster)} statements on the cluster, {len(on_copy)} on the copy"
    return ClosingComparison(len(on_cluster), difference is None and bool(on_cluster), difference, closing_s)
