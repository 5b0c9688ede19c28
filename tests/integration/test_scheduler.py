"""The scheduler: each job exclusive through a database lease, two processes never double an effect."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

from click.testing import CliRunner
from sqlalchemy import func, select

from alliance.cli import main
from alliance.models import JournalTransaction, RedemptionHold, SettlementRun
from alliance.services import ledger
from alliance.services.audit import run_audit
from alliance.services.jobs import LEASE_DURATION, acquire_lease, release_lease, run_exclusively, standard_jobs
from tests.factories import make_member, make_partner

ALLIANCE = str(Path(sys.executable).parent / "alliance")


def plant_lapsed_holds(hub, now, count: int) -> None:  # type: ignore[no-untyped-def]
    # A daily partner onboarded three days ago: its past cycles are due for closing too.
    partner_id = make_partner(hub, now=now - timedelta(days=3), settlement_cycle="daily")
    member_id = make_member(hub, now=now - timedelta(days=1)).member_id
    with hub.unit_of_work() as uow:
        ledger.earn(uow.session, member_id=member_id, partner_id=partner_id, points=10 * count,
                    now=now - timedelta(hours=2), expires_at=now + timedelta(days=300))
        for _ in range(count):
            ledger.authorize_hold(uow.session, member_id=member_id, partner_id=partner_id, points=10,
                                  now=now - timedelta(hours=1), ttl_s=60)
        uow.commit()


def releases(hub) -> int:  # type: ignore[no-untyped-def]
    with hub.unit_of_work() as uow:
        return uow.session.scalar(select(func.count()).select_from(JournalTransaction)
                                  .where(JournalTransaction.kind == "release"))


def test_a_lease_admits_one_holder_until_released_or_lapsed(hub, now):
    with hub.unit_of_work() as uow:
        assert acquire_lease(uow.session, job_name="expire-holds", holder="a", now=now)
        assert not acquire_lease(uow.session, job_name="expire-holds", holder="b", now=now)
        assert acquire_lease(uow.session, job_name="expire-holds", holder="a", now=now)
        assert acquire_lease(uow.session, job_name="expire-holds", holder="b", now=now + LEASE_DURATION
                             + timedelta(seconds=1))
        release_lease(uow.session, job_name="expire-holds", holder="b", now=now, outcome="done")
        assert acquire_lease(uow.session, job_name="expire-holds", holder="a", now=now)
        uow.commit()


def test_a_job_held_elsewhere_is_skipped_and_runs_once_free(hub):
    now = datetime.now(timezone.utc)
    plant_lapsed_holds(hub, now, 3)
    job = {job.name: job for job in standard_jobs("EUR")}["expire-holds"]
    with hub.unit_of_work() as uow:
        acquire_lease(uow.session, job_name=job.name, holder="other-process", now=now)
        uow.commit()
    assert run_exclusively(hub.session_factory, job, holder="me", now=now) is None
    assert releases(hub) == 0
    with hub.unit_of_work() as uow:
        release_lease(uow.session, job_name=job.name, holder="other-process", now=now, outcome="done")
        uow.commit()
    assert run_exclusively(hub.session_factory, job, holder="me", now=now) == 3
    assert run_exclusively(hub.session_factory, job, holder="me", now=now) == 0
    assert releases(hub) == 3


def test_the_cli_refuses_a_job_another_process_is_running(app, hub):
    now = datetime.now(timezone.utc)
    with hub.unit_of_work() as uow:
        acquire_lease(uow.session, job_name="expire-points", holder="scheduler-elsewhere", now=now)
        uow.commit()
    with app.app_context():
        result = CliRunner().invoke(main, ["jobs", "expire-points"])
    assert result.exit_code == 1 and "another process" in result.output


def test_two_scheduler_processes_release_every_lapsed_hold_exactly_once(pg_hub, tmp_path):
    now = datetime.now(timezone.utc)
    plant_lapsed_holds(pg_hub, now, 40)
    environment = {name: value for name, value in os.environ.items() if not name.startswith("ALLIANCE_")}
    environment.update(ALLIANCE_DATABASE_URL=pg_hub.engine.url.render_as_string(hide_password=False),
                       ALLIANCE_INSTANCE_PATH=str(tmp_path / "instance"))
    schedulers = [subprocess.Popen([ALLIANCE, "scheduler", "--run-for-s", "4"], env=environment,
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                  for _ in range(2)]
    outputs = [process.communicate(timeout=60)[0] for process in schedulers]
    assert all(process.returncode == 0 for process in schedulers), outputs
    assert releases(pg_hub) == 40
    with pg_hub.unit_of_work() as uow:
        statuses = set(uow.session.scalars(select(RedemptionHold.status)))
        report = run_audit(uow.session)
    assert statuses == {"expired"}
    assert report.ok, report.first_failure
    assert sum("expire-holds: 40 holds released" in output for output in outputs) == 1
    # Each due settlement cycle was closed exactly once, by one of the two processes.
    with pg_hub.unit_of_work() as uow:
        runs = uow.session.execute(select(SettlementRun.cycle_starts_at)).scalars().all()
    assert len(runs) >= 2 and len(runs) == len(set(runs))
    assert sum(output.count("close-due-cycles: ") for output in outputs) >= 1
