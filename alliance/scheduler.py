"""The scheduler process: APScheduler 3 running the hub's jobs on their intervals.

It runs in its own process (``alliance scheduler``), never inside web workers. Each
run goes through ``run_exclusively``, so a second scheduler process, or an operator
running the same job from the CLI, cannot double an effect.
"""

from __future__ import annotations

import signal
import threading
from datetime import datetime, timezone
from typing import Callable

from apscheduler.schedulers.background import BackgroundScheduler

from alliance.extensions import HubState
from alliance.services.audit_checkpoints import checkpoint_job
from alliance.services.grading import grading_job
from alliance.services.jobs import Job, run_exclusively, standard_jobs
from alliance.services.settlement_closing import closing_job

# Coalesce missed runs into one and never overlap a job with itself; a run missed by up
# to an hour (a pause, a deploy) still happens rather than being dropped.
JOB_DEFAULTS = {"coalesce": True, "max_instances": 1, "misfire_grace_time": 3600}


def hub_jobs(state: HubState) -> list[Job]:
    """Every job of the hub: housekeeping, settlement closing, monthly grading, the daily audit-log checkpoint."""
    settings = state.settings
    return standard_jobs(settings.alliance_currency) + [
        closing_job(state.session_factory, state.statement_signer),
        grading_job(settings.grading_config(), settings.alliance_time_zone),
        checkpoint_job(state.statement_signer),
    ]


def run_scheduler(state: HubState, *, holder: str, once: bool, run_for_s: int | None,
                  echo: Callable[[str], None]) -> None:
    """Run every job once (``once``) or on its interval until stopped or ``run_for_s`` passes."""
    jobs = hub_jobs(state)
    if once:
        for job in jobs:
            _run(state, job, holder, echo)
        return
    scheduler = BackgroundScheduler(job_defaults=JOB_DEFAULTS, timezone=timezone.utc)
    for job in jobs:
        scheduler.add_job(_run, "interval", seconds=job.interval_s, args=(state, job, holder, echo), id=job.name,
                          next_run_time=datetime.now(timezone.utc))
    stop = threading.Event()
    for signal_number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signal_number, lambda *_: stop.set())
    scheduler.start()
    echo(f"scheduler {holder} running {len(jobs)} jobs; SIGTERM or Ctrl+C stops it")
    try:
        stop.wait(timeout=run_for_s)
    finally:
        scheduler.shutdown(wait=True)
        echo("scheduler stopped")


def _run(state: HubState, job: Job, holder: str, echo: Callable[[str], None]) -> None:
    now = datetime.now(timezone.utc)
    try:
        done = run_exclusively(state.session_factory, job, holder=holder, now=now)
    except Exception as error:  # noqa: BLE001 - one failing job must not stop the others
        echo(f"{job.name}: failed ({type(error).__name__}); it will run again at its next interval")
        return
    echo(f"{job.name}: " + (f"{done} {job.unit}" if done is not None else "held by another process, skipped"))
