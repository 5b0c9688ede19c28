"""Crash safety: signed POS load through gunicorn while workers are SIGKILLed and PostgreSQL crashes.

The hub runs under real gunicorn (several sync workers) on its own PostgreSQL cluster,
started with fsync and synchronous commit on, so a commit PostgreSQL acknowledged
survives the immediate-mode stop. Till threads (``load_client``) keep an independent
tally of everything the hub acknowledged. Afterwards every acknowledged operation must
be in the ledger exactly once, nothing half-applied, the audit green, and every member's
balance equal to the tally.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, fields
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable, Iterator, Sequence, TypeVar

import pytest
from sqlalchemy import create_engine, select, text

from alliance import create_app, migrate
from alliance.config import Settings
from alliance.db import make_engine
from alliance.extensions import HubState, hub_state
from alliance.models import JournalTransaction, PointLot, Purchase, PurchaseRefund, RedemptionHold
from alliance.services.accounts import member_balances
from alliance.services.audit import run_audit
from tests.chaos.load_client import CountingTransport, Customer, Tally, Till, TillThread
from tests.chaos.support import ChaosReport, Scale, ScenarioFigures, child_pids, stop_process, wait_for
from tests.factories import make_member_with_pin, make_signing_partner, set_risk_policy
from tests.postgres_server import PostgresServer, start_postgres
from tests.sdk_support import free_port, subprocess_environment, wait_for_health

pytestmark = pytest.mark.postgresql

GUNICORN = str(Path(sys.executable).parent / "gunicorn")
PIN = "7319"
PARTNER_CODES = ("north", "south")


@dataclass(frozen=True)
class LoadShape:
    """How long the load runs, with how many tills and workers, and how often a worker is killed."""

    load_s: float
    tills: int
    members_per_till: int
    workers: int
    kill_interval_s: float


SHAPES = {"small": LoadShape(load_s=10, tills=3, members_per_till=2, workers=3, kill_interval_s=1.5),
          "full": LoadShape(load_s=150, tills=6, members_per_till=3, workers=4, kill_interval_s=1.0)}


@pytest.fixture
def durable_cluster() -> Iterator[PostgresServer]:
    """A PostgreSQL cluster of this test alone, fsync and synchronous commit on."""
    server = start_postgres(durable=True)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def durable_hub(durable_cluster: PostgresServer, tmp_path: Path) -> Iterator[tuple[HubState, str]]:
    """A migrated database on the durable cluster and a hub on it; yields the state and the URL."""
    admin = create_engine(durable_cluster.url("postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text("CREATE DATABASE chaos"))
    admin.dispose()
    url = durable_cluster.url("chaos")
    engine = make_engine(url, Settings())
    migrate.upgrade(engine)
    engine.dispose()
    app = create_app(Settings(database_url=url, instance_path=str(tmp_path / "instance"), environment="test",
                              secret_key="chaos-secret-key"))
    yield hub_state(app), url
    hub_state(app).engine.dispose()


def plant_tills_and_customers(hub: HubState, shape: LoadShape) -> tuple[list[Till], list[list[Customer]]]:
    """Two partners with keys, and each till thread's own members (so each member's tally is one thread's).

    The load spends and earns on a few cards far faster than the built-in risk policy lets
    through unheld (it would hold and refuse as it should); these scenarios are about
    crashes, so the hub runs them under a risk policy without limits.
    """
    set_risk_policy(hub)
    created = datetime.now(timezone.utc) - timedelta(days=1)
    tills = []
    for code in PARTNER_CODES:
        partner = make_signing_partner(hub, now=created, code=code)
        tills.append(Till(code, partner.key_id, partner.private_key))
    customers = []
    for _ in range(shape.tills):
        members = [make_member_with_pin(hub, now=created, pin=PIN) for _ in range(shape.members_per_till)]
        customers.append([Customer(member.member_id, member.card_number, PIN) for member in members])
    return tills, customers


def start_gunicorn(url: str, instance_path: Path, port: int, workers: int, log_path: Path) -> subprocess.Popen:  # type: ignore[type-arg]
    """The hub under gunicorn on 127.0.0.1:``port``; returns once it answers health checks."""
    settings = {"ALLIANCE_DATABASE_URL": url, "ALLIANCE_INSTANCE_PATH": str(instance_path),
                "ALLIANCE_SECRET_KEY": "chaos-secret-key", "ALLIANCE_ENVIRONMENT": "test"}
    # The partner rate limits, where the hub has them, must not throttle this load.
    known = {setting.name for setting in fields(Settings)}
    for name in ("partner_rate_per_s", "partner_burst", "partner_max_in_flight"):
        if name in known:
            settings[f"ALLIANCE_{name.upper()}"] = "0"
    log = log_path.open("ab")
    # --preload imports the app once in the master, so a worker that replaces a killed one is
    # a fork of it: the scenario tests crashes, not re-imports of a work tree being edited.
    # The control socket (gunicorn 24+) would otherwise be shared with any other gunicorn.
    control = ["--control-socket", str(log_path.with_suffix(".ctl"))] if _has_control_socket() else []
    process = subprocess.Popen(
        [GUNICORN, "--workers", str(workers), "--bind", f"127.0.0.1:{port}", "--timeout", "30",
         "--graceful-timeout", "5", "--preload", *control, "alliance.wsgi:app"],
        env=subprocess_environment(**settings), stdout=log, stderr=subprocess.STDOUT,
    )
    log.close()
    try:
        wait_for_health(f"http://127.0.0.1:{port}", timeout_s=60)
        wait_for(lambda: len(child_pids(process.pid)) == workers, "gunicorn's workers to start")
    except BaseException:
        stop_process(process)
        raise
    return process


def _has_control_socket() -> bool:
    help_text = subprocess.run([GUNICORN, "--help"], capture_output=True, text=True, check=True).stdout
    return "--control-socket" in help_text


class Faults(threading.Thread):
    """SIGKILLs a random gunicorn worker every interval, and restarts PostgreSQL once, half-way."""

    def __init__(self, master_pid: int, cluster: PostgresServer, shape: LoadShape, stop: threading.Event) -> None:
        super().__init__(name="faults", daemon=True)
        self.master_pid, self.cluster, self.shape, self.stop = master_pid, cluster, shape, stop
        self.workers_killed = 0
        self.database_restarts = 0
        self.errors: list[BaseException] = []
        self.random = random.Random(2026)

    def run(self) -> None:
        try:
            restart_at = time.monotonic() + self.shape.load_s / 2
            while not self.stop.wait(self.shape.kill_interval_s * (0.5 + self.random.random())):
                if not self.database_restarts and time.monotonic() >= restart_at:
                    self.restart_database()
                self.kill_a_worker()
        except BaseException as error:  # noqa: BLE001 - reported by the test
            self.errors.append(error)

    def kill_a_worker(self) -> None:
        workers = child_pids(self.master_pid)
        if workers:
            try:
                os.kill(self.random.choice(workers), signal.SIGKILL)
                self.workers_killed += 1
            except ProcessLookupError:
                pass

    def restart_database(self) -> None:
        self.cluster.stop_immediately()
        self.database_restarts += 1
        time.sleep(1.0)
        self.cluster.start()


ThreadT = TypeVar("ThreadT", bound=TillThread)


def run_load(base_url: str, tills: list[Till], customers: list[list[Customer]], master_pid: int,
             cluster: PostgresServer, shape: LoadShape) -> tuple[list[TillThread], Faults, CountingTransport]:
    """Run the tills and the faults together for ``shape.load_s`` seconds, then let every till finish."""
    return drive(lambda number, transport, stop: TillThread(number, base_url, tills, customers[number], transport,
                                                            stop), master_pid, cluster, shape)


def drive(thread: Callable[[int, CountingTransport, threading.Event], ThreadT], master_pid: int,
          cluster: PostgresServer, shape: LoadShape) -> tuple[list[ThreadT], Faults, CountingTransport]:
    """``shape.tills`` load threads (``thread(number, transport, stop)``) and the faults together for
    ``shape.load_s`` seconds; then each thread finishes the operation in hand, resending until its outcome is
    known."""
    stop_load, stop_faults = threading.Event(), threading.Event()
    transport = CountingTransport()
    threads = [thread(number, transport, stop_load) for number in range(shape.tills)]
    faults = Faults(master_pid, cluster, shape, stop_faults)
    for started in threads:
        started.start()
    faults.start()
    time.sleep(shape.load_s)
    stop_faults.set()
    faults.join(timeout=60)
    stop_load.set()
    for finished in threads:
        finished.join(timeout=240)
    assert not any(finished.is_alive() for finished in threads), "a load thread never finished"
    assert not faults.errors, faults.errors
    return threads, faults, transport


def merged(threads: Sequence[TillThread]) -> Tally:
    """One tally of every till thread (their members are disjoint)."""
    total = Tally()
    for thread in threads:
        total.absorb(thread.tally)
    return total


def purchase_discrepancies(session, codes: dict[int, str], tally: Tally) -> list[str]:  # type: ignore[no-untyped-def]
    """Every acknowledged purchase exactly once, with its points, its earn transaction and its lot."""
    problems = []
    rows = session.execute(select(Purchase.partner_id, Purchase.receipt_id, Purchase.member_id,
                                  Purchase.points_partner + Purchase.points_hub, Purchase.earn_transaction_id)).all()
    seen = Counter((codes[row[0]], row[1]) for row in rows)
    problems += [f"purchase {key} is in the ledger {count} times" for key, count in seen.items() if count != 1]
    problems += [f"purchase {key} is in the ledger but was never acknowledged" for key in seen
                 if key not in tally.purchases]
    problems += [f"acknowledged purchase {key} is missing" for key in tally.purchases if key not in seen]
    earn_transactions = set(session.scalars(select(JournalTransaction.id).where(JournalTransaction.kind == "earn")))
    lot_transactions = set(session.scalars(select(PointLot.earn_transaction_id)))
    for partner_id, receipt_id, member_id, points, earn_transaction_id in rows:
        key = (codes[partner_id], receipt_id)
        if key in tally.purchases and tally.purchases[key] != (member_id, points):
            problems.append(f"purchase {key}: ledger has {(member_id, points)}, acknowledged {tally.purchases[key]}")
        if points and (earn_transaction_id not in earn_transactions or earn_transaction_id not in lot_transactions):
            problems.append(f"purchase {key} is half-applied: no earn transaction or no lot")
    return problems


def refund_discrepancies(session, codes: dict[int, str], tally: Tally) -> list[str]:  # type: ignore[no-untyped-def]
    """Every acknowledged purchase refund exactly once, with the points it recovered."""
    rows = session.execute(select(PurchaseRefund.partner_id, PurchaseRefund.refund_id,
                                  PurchaseRefund.points_recovered)).all()
    found = Counter((codes[partner_id], refund_id) for partner_id, refund_id, _ in rows)
    recovered = {(codes[partner_id], refund_id): points for partner_id, refund_id, points in rows}
    problems = [f"refund {key} recorded {count} times" for key, count in found.items() if count != 1]
    problems += [f"refund {key} is in the ledger but was never acknowledged"
                 for key in found if key not in tally.refunds]
    problems += [f"acknowledged refund {key}: ledger has {recovered.get(key)} points, acknowledged {points}"
                 for key, points in tally.refunds.items() if recovered.get(key) != points]
    return problems


def redemption_discrepancies(session, codes: dict[int, str], tally: Tally) -> list[str]:  # type: ignore[no-untyped-def]
    """Every acknowledged capture exactly once: a captured hold with one hold and one capture transaction."""
    holds = session.execute(select(RedemptionHold.id, RedemptionHold.partner_id, RedemptionHold.reference,
                                   RedemptionHold.member_id, RedemptionHold.status,
                                   RedemptionHold.points_captured)).all()
    postings = Counter(session.execute(select(JournalTransaction.hold_id, JournalTransaction.kind)
                                       .where(JournalTransaction.hold_id.is_not(None))).all())
    found = Counter((codes[hold.partner_id], hold.reference) for hold in holds)
    problems = [f"redemption {key} held {count} times" for key, count in found.items() if count != 1]
    problems += [f"acknowledged redemption {key} is missing" for key in tally.redemptions if key not in found]
    for hold in holds:
        key = (codes[hold.partner_id], hold.reference)
        if key not in tally.redemptions:
            problems.append(f"redemption {key} ({hold.status}) was never acknowledged as captured")
            continue
        if (hold.member_id, hold.points_captured) != tally.redemptions[key] or hold.status != "captured":
            problems.append(f"redemption {key}: ledger {hold.status} {hold.points_captured}, "
                            f"acknowledged {tally.redemptions[key]}")
        if postings[(hold.id, "hold")] != 1 or postings[(hold.id, "capture")] != 1:
            problems.append(f"redemption {key} is half-applied: {postings[(hold.id, 'hold')]} hold and "
                            f"{postings[(hold.id, 'capture')]} capture transactions")
    return problems


def ledger_discrepancies(hub: HubState, tally: Tally, tills: list[Till], customers: list[list[Customer]]) -> list[str]:
    """Everything the books hold, compared with the tally; the audit must be green."""
    with hub.unit_of_work() as uow:
        session = uow.session
        codes = dict(session.execute(text("SELECT id, code FROM partners")).all())
        problems = purchase_discrepancies(session, codes, tally)
        problems += refund_discrepancies(session, codes, tally)
        problems += redemption_discrepancies(session, codes, tally)
        for customer in (customer for group in customers for customer in group):
            expected = {"available": tally.balance[customer.member_id], "pending": 0, "held": 0}
            actual = member_balances(session, customer.member_id)
            if actual != expected:
                problems.append(f"member {customer.member_id}: ledger {actual}, tally {expected}")
        report = run_audit(session)
        if not report.ok:
            problems.append(f"audit failed at {report.first_failure.name}: {report.first_failure.first_problem}")
    return problems


def test_acknowledged_operations_survive_killed_workers_and_a_database_crash_exactly_once(
        durable_cluster: PostgresServer, durable_hub, tmp_path: Path, scale: Scale, chaos_report: ChaosReport):
    hub, url = durable_hub
    shape = SHAPES[scale.name]
    started_s = time.monotonic()
    tills, customers = plant_tills_and_customers(hub, shape)
    port = free_port()
    log_path = tmp_path / "gunicorn.log"
    server = start_gunicorn(url, tmp_path / "instance", port, shape.workers, log_path)
    try:
        threads, faults, transport = run_load(f"http://127.0.0.1:{port}", tills, customers, server.pid,
                                              durable_cluster, shape)
    finally:
        stop_process(server)
    tally = merged(threads)
    problems = tally.unresolved + tally.unexpected + ledger_discrepancies(hub, tally, tills, customers)
    figures = ScenarioFigures(
        "crash safety (gunicorn + PostgreSQL)", operations_sent=tally.sent, acknowledged=tally.acknowledged,
        retried=transport.attempts - tally.sent,
        faults_injected=faults.workers_killed + faults.database_restarts, discrepancies=len(problems),
        duration_s=time.monotonic() - started_s,
        notes=[f"{len(tally.purchases)} purchases, {len(tally.refunds)} refunds, {len(tally.redemptions)} "
               f"redemptions acknowledged; {transport.attempts} HTTP attempts, {transport.no_reply} without a reply, "
               f"{transport.server_errors} 5xx; {tally.client_retries} resends of unknown outcomes by the till; "
               f"{faults.workers_killed} workers SIGKILLed, {faults.database_restarts} immediate PostgreSQL restart"],
    )
    chaos_report.add(figures)
    assert faults.database_restarts == 1 and faults.workers_killed >= 3, figures.notes
    assert tally.acknowledged > 0 and transport.no_reply + transport.server_errors > 0, figures.notes
    assert problems == [], problems[:20]
