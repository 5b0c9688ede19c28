"""The scheduler process: APScheduler 3 running the hub's jobs on their intervals.

It runs in its own process (``alliance scheduler``), never inside web workers. Each
run goes through ``run_exclusively``, so a second scheduler process, or an operator
running the same job from the CLI, cannot double an effect.
"""

from __future__ import annotations

import signal
import threading
import time
from datetime import datetime, timezone
from typing import Callable

from apscheduler.schedulers.background import BackgroundScheduler
from prometheus_client import start_http_server

from alliance.domain.errors import ConfigurationError
from alliance.extensions import HubState
from alliance.observability import metrics
from alliance.observability.logs import JOB_LOGGER
from alliance.services import risk_patterns
from alliance.services.audit_checkpoints import checkpoint_job
from alliance.services.grading import grading_job
from alliance.services.jobs import Job, birthday_job, referral_job, run_exclusively, standard_jobs
from settlement.api import closing_job, credit, overdue_job

# Coalesce missed runs into one and never overlap a job with itself; a run missed by up
# to an hour (a pause, a deploy) still happens rather than being dropped.
JOB_DEFAULTS = {"coalesce": True, "max_instances": 1, "misfire_grace_time": 3600}


def hub_jobs(state: HubState) -> list[Job]:
    """Every job of the hub: housekeeping, settlement closing, partners' credit exposure, monthly grading,
    the daily audit-log checkpoint, referral and birthday awards, and the partners' amount profiles."""
    settings = state.settings
    return standard_jobs(settings.alliance_currency,
                         key_expiry_notice_days=settings.webhook_key_expiry_notice_days) + [
        closing_job(state.session_factory, state.statement_signer),
        overdue_job(),
        credit.credit_job(settings.credit_warning_percent),
        grading_job(settings.grading_config(), settings.alliance_time_zone),
        checkpoint_job(state.statement_signer),
        referral_job(settings.alliance_time_zone, settings.points_expiry_months),
        birthday_job(settings.alliance_time_zone, settings.points_expiry_months),
        Job(risk_patterns.JOB_NAME, 24 * 3600, risk_patterns.profile_partner_amounts, "partners profiled"),
    ]


def run_scheduler(state: HubState, *, holder: str, once: bool, run_for_s: int | None,
                  echo: Callable[[str], None], metrics_address: tuple[str, int] | None = None) -> None:
    """Run every job once (``once``) or on its interval until stopped or ``run_for_s`` passes.

    With ``metrics_address``, the process's job figures (``alliance_job_runs_total``,
    ``alliance_job_duration_seconds``) are served there in Prometheus's format by the
    client library's own HTTP server: the scheduler is not a web process, and its
    figures name only jobs.
    """
    jobs = hub_jobs(state)
    if metrics_address is not None:
        serve_metrics(metrics_address)
        echo(f"scheduler metrics on http://{metrics_address[0]}:{metrics_address[1]}/metrics")
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


def serve_metrics(address: tuple[str, int]) -> None:
    """Serve this process's metrics on ``address`` (a thread of prometheus_client's own HTTP server).

    Refused while ``PROMETHEUS_MULTIPROC_DIR`` is set: that directory belongs to the
    web workers, whose scrape would then report the scheduler's runs a second time.
    """
    if metrics.multiprocess_directory():
        raise ConfigurationError(f"{metrics.MULTIPROCESS_DIRECTORY_VARIABLE} is for the hub's web workers; start "
                                 "the scheduler without it (its metrics are its own, on --metrics-address)")
    start_http_server(address[1], addr=address[0])


def _run(state: HubState, job: Job, holder: str, echo: Callable[[str], None]) -> None:
    now = datetime.now(timezone.utc)
    started = time.perf_counter()
    try:
        done = run_exclusively(state.session_factory, job, holder=holder, now=now)
    except Exception as error:  # noqa: BLE001 - one failing job must not stop the others
        _report(job, holder, "failed", None, started, error)
        echo(f"{job.name}: failed ({type(error).__name__}); it will run again at its next interval")
        return
    _report(job, holder, "ran" if done is not None else "skipped", done, started, None)
    echo(f"{job.name}: " + (f"{done} {job.unit}" if done is not None else "held by another process, skipped"))


def _report(job: Job, holder: str, outcome: str, done: int | None, started: float,
            error: Exception | None) -> None:
    """The run's log line and figures: ran (with what it did), skipped (another process held the lease), failed."""
    duration_s = time.perf_counter() - started
    metrics.observe_job(job.name, outcome, duration_s if outcome != "skipped" else None)
    extra = {"job": job.name, "holder": holder, "outcome": outcome, "done": done, "unit": job.unit,
             "duration_ms": round(duration_s * 1000, 3)}
    if error is None:
        JOB_LOGGER.info("job %s %s", job.name, outcome, extra=extra)
    else:
        JOB_LOGGER.error("job %s failed: %s", job.name, type(error).__name__, extra=extra, exc_info=error)
