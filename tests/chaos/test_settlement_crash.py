"""Settlement crash: the closer SIGKILLed in the middle of a run, then run again.

Activity for several daily partners is planted once and the database copied, so two
databases hold the very same books. On the first, ``alliance settlement close`` is
killed again and again: once while it waits on one partner's settlement lock (held by
the test, so some partners are closed and others not), then at random moments right
after a statement lands; finally it runs to the end. On the copy it runs once, cleanly.
Both must hold exactly one run per (partner, cycle) and byte-identical signed
statements, and the crashed database's audit must be green.
"""

from __future__ import annotations

import random
import signal
import subprocess
import time
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Iterator

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import create_engine, text

from alliance import create_app
from alliance.config import Settings
from alliance.extensions import HubState, hub_state
from alliance.services import ledger
from alliance.services.audit import run_audit
from settlement.keys import private_key_pem
from settlement.locking import PARTNER_ID_LIMIT, SETTLEMENT_LOCK_NAMESPACE
from tests.chaos.support import ChaosReport, Scale, ScenarioFigures, wait_for
from tests.factories import make_member, make_partner
from tests.sdk_support import ALLIANCE, subprocess_environment

pytestmark = pytest.mark.postgresql

UTC = timezone.utc
FIRST_DAY = datetime(2026, 9, 1, tzinfo=UTC)
# (partners, days of activity, random kills after the first one)
SHAPES = {"small": (4, 6, 2), "full": (12, 30, 10)}
STATEMENT_ROWS = text("""
    SELECT p.code, r.cycle_starts_at, r.cycle_ends_at, s.document_json, s.document_csv, s.signature_json,
           s.signature_csv
    FROM settlement_runs r JOIN statements s ON s.run_id = r.id JOIN partners p ON p.id = r.partner_id
    ORDER BY p.code, r.cycle_starts_at
""")
RUNS_PER_CYCLE = text("SELECT count(*) FROM settlement_runs GROUP BY partner_id, cycle_starts_at HAVING count(*) <> 1")


@pytest.fixture
def books(postgres_url: str, tmp_path: Path) -> Iterator[HubState]:
    """A hub on this test's fresh database (its engine is disposed before the database is copied)."""
    app = create_app(Settings(database_url=postgres_url, instance_path=str(tmp_path / "instance"),
                              environment="test", secret_key="chaos-secret-key"))
    yield hub_state(app)
    hub_state(app).engine.dispose()


def plant_activity(hub: HubState, partners: int, days: int) -> list[tuple[str, int]]:
    """Daily partners with their own prices; every day each member earns at one and redeems at the next."""
    rng = random.Random(partners * 1000 + days)
    onboarded = FIRST_DAY - timedelta(hours=20)
    codes = [f"partner-{number:02d}" for number in range(partners)]
    ids = [make_partner(hub, now=onboarded, code=code, settlement_cycle="daily", time_zone="UTC",
                        issue_price_per_point=Decimal(rng.randrange(50, 200)).scaleb(-4),
                        redemption_price_per_point=Decimal(rng.randrange(40, 150)).scaleb(-4))
           for code in codes]
    members = [make_member(hub, now=onboarded).member_id for _ in range(partners)]
    for day in range(days):
        with hub.unit_of_work() as uow:
            for number, (partner_id, member_id) in enumerate(zip(ids, members, strict=True)):
                at = FIRST_DAY + timedelta(days=day, hours=8, minutes=number)
                ledger.earn(uow.session, member_id=member_id, partner_id=partner_id, points=rng.randrange(100, 900),
                            now=at, expires_at=at + timedelta(days=700))
                hold = ledger.authorize_hold(uow.session, member_id=member_id, partner_id=ids[(number + 1) % partners],
                                             points=rng.randrange(20, 90), now=at + timedelta(hours=2), ttl_s=600)
                ledger.capture_hold(uow.session, hold_id=hold.hold_id, points=rng.randrange(1, 20),
                                    now=at + timedelta(hours=2, minutes=1))
            uow.commit()
    return list(zip(codes, ids, strict=True))


def copy_database(postgres_admin, source_url: str) -> str:  # type: ignore[no-untyped-def]
    """A byte-for-byte copy of the source database; returns its URL."""
    source = source_url.rsplit("/", 1)[1]
    with postgres_admin.connect() as connection:
        connection.execute(text(f"CREATE DATABASE {source}_clean TEMPLATE {source} STRATEGY FILE_COPY"))
    return f"{source_url}_clean"


def start_closer(url: str, statement_key: str, instance_path: Path, close_at: datetime) -> subprocess.Popen[bytes]:
    """``alliance settlement close --now close_at`` on ``url``, as a process of its own."""
    environment = subprocess_environment(ALLIANCE_DATABASE_URL=url, ALLIANCE_STATEMENT_KEY=statement_key,
                                         ALLIANCE_INSTANCE_PATH=str(instance_path))
    return subprocess.Popen([ALLIANCE, "settlement", "close", "--now", close_at.isoformat()], env=environment,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def statement_count(engine) -> int:  # type: ignore[no-untyped-def]
    with engine.connect() as connection:
        return connection.scalar(text("SELECT count(*) FROM statements"))


def closer_waits_on_a_lock(engine) -> bool:  # type: ignore[no-untyped-def]
    with engine.connect() as connection:
        return connection.scalar(text("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                                      "AND wait_event_type = 'Lock' AND wait_event = 'advisory'")) > 0


def kill(process: subprocess.Popen[bytes]) -> bool:
    """SIGKILL the closer (by its pid); True when it was still running."""
    alive = process.poll() is None
    if alive:
        process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    return alive and process.returncode == -signal.SIGKILL


def kill_while_blocked(engine, start, partner_id: int) -> tuple[bool, int]:  # type: ignore[no-untyped-def]
    """Hold one partner's settlement lock, start the closer, kill it while it waits there."""
    with engine.connect() as locker:
        transaction = locker.begin()
        locker.execute(text("SELECT pg_advisory_xact_lock(:key)"),
                       {"key": SETTLEMENT_LOCK_NAMESPACE * PARTNER_ID_LIMIT + partner_id})
        closer = start()
        try:
            wait_for(lambda: closer_waits_on_a_lock(engine), "the closer to reach the locked partner", timeout_s=60)
        finally:
            killed = kill(closer)
            transaction.rollback()
    return killed, statement_count(engine)


def kill_at_random_moments(engine, start, kills: int, rng: random.Random) -> int:  # type: ignore[no-untyped-def]
    """Start the closer and SIGKILL it right after a random number of further statements; returns kills made."""
    made = 0
    for _ in range(kills):
        before = statement_count(engine)
        closer = start()
        target = before + rng.randrange(1, 4)
        while closer.poll() is None and statement_count(engine) < target:
            time.sleep(0.005)
        if kill(closer):
            made += 1
    return made


def test_a_closer_killed_mid_run_then_rerun_closes_each_cycle_once_with_identical_statements(
        books: HubState, postgres_url: str, postgres_admin, tmp_path: Path, scale: Scale,
        chaos_report: ChaosReport):
    partners, days, random_kills = SHAPES[scale.name]
    started_s = time.monotonic()
    planted = plant_activity(books, partners, days)
    books.engine.dispose()
    clean_url = copy_database(postgres_admin, postgres_url)
    statement_key = private_key_pem(Ed25519PrivateKey.generate())
    close_at = FIRST_DAY + timedelta(days=days, hours=1)
    # The day of onboarding (the eve of the first day of activity) is a cycle too.
    expected_cycles = partners * (days + 1)
    engine = create_engine(postgres_url)
    try:
        def start() -> subprocess.Popen[bytes]:
            return start_closer(postgres_url, statement_key, tmp_path / "crashed", close_at)

        blocked_kill, closed_at_first_kill = kill_while_blocked(engine, start, planted[partners // 2][1])
        kills = int(blocked_kill) + kill_at_random_moments(engine, start, random_kills, random.Random(days))
        before_rerun = statement_count(engine)
        rerun = start()
        rerun_output = rerun.communicate(timeout=300)[0].decode()
        clean = start_closer(clean_url, statement_key, tmp_path / "clean", close_at)
        clean_output = clean.communicate(timeout=300)[0].decode()
        with engine.connect() as connection:
            crashed_rows = connection.execute(STATEMENT_ROWS).all()
            doubled = connection.execute(RUNS_PER_CYCLE).all()
        clean_engine = create_engine(clean_url)
        with clean_engine.connect() as connection:
            clean_rows = connection.execute(STATEMENT_ROWS).all()
        clean_engine.dispose()
        with books.unit_of_work() as uow:
            audit = run_audit(uow.session)
    finally:
        engine.dispose()
        with postgres_admin.connect() as connection:
            connection.execute(text(f"DROP DATABASE IF EXISTS {clean_url.rsplit('/', 1)[1]} WITH (FORCE)"))
    # The two runs may close different numbers of cycles: the counts are compared with the expected one below.
    differing = [row[:3] for row, other in zip(crashed_rows, clean_rows, strict=False) if tuple(row) != tuple(other)]
    discrepancies = (len(differing) + len(doubled) + abs(len(crashed_rows) - expected_cycles)
                     + abs(len(clean_rows) - expected_cycles) + (0 if audit.ok else 1))
    chaos_report.add(ScenarioFigures(
        "settlement crash (closer SIGKILLed)", operations_sent=expected_cycles, acknowledged=len(crashed_rows),
        retried=kills, faults_injected=kills, discrepancies=discrepancies, duration_s=time.monotonic() - started_s,
        notes=[f"{partners} daily partners x {days + 1} days = {expected_cycles} cycles; first kill with "
               f"{closed_at_first_kill} statements closed, {before_rerun} before the final re-run; "
               f"statements compared byte for byte (JSON, CSV, both signatures) with a clean closing of a copy"],
    ))
    assert rerun.returncode == 0 and clean.returncode == 0, (rerun_output, clean_output)
    assert blocked_kill and 0 < closed_at_first_kill < expected_cycles
    assert before_rerun < expected_cycles, "the closer was never killed before it had finished"
    assert doubled == [] and len(crashed_rows) == len(clean_rows) == expected_cycles
    assert differing == []
    assert audit.ok, audit.first_failure
