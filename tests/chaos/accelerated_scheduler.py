"""The hub's scheduler process on an accelerated clock: a simulated week in seconds.

Run as ``python -m tests.chaos.accelerated_scheduler --start T --epoch S --speed X
--days D --run-for-s N``, with the hub's ``ALLIANCE_*`` settings in the environment.
It runs the real ``alliance.scheduler.run_scheduler`` — APScheduler, the job leases on
the real clock, the real job functions — and changes only two things about each job:
its interval is divided by ``speed`` (never below ``MIN_INTERVAL_S``), and the moment it
acts for (the ``now`` every job takes, as ``alliance jobs … --now`` does) is read from a
simulated clock that starts at ``start`` at wall-clock second ``epoch``, runs ``speed``
times faster, and stops at ``start + days``. Every process given the same arguments
shares that clock.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import threading
import time
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from alliance import create_app
from alliance import scheduler as scheduler_module
from alliance.extensions import hub_state
from alliance.services.jobs import Job, standard_jobs
from settlement.closing import closing_job
from settlement.finance import overdue_job

# Two processes hammering the database at millisecond intervals would measure the
# machine, not the scheduler; a tenth of a second is fine-grained enough for a week.
MIN_INTERVAL_S = 0.1


@dataclass(frozen=True)
class SimulatedClock:
    """Simulated time: ``start`` at wall-clock ``epoch_s``, ``speed`` times faster, held at ``end``."""

    start: datetime
    epoch_s: float
    speed: float
    end: datetime

    def now(self) -> datetime:
        elapsed_s = max(0.0, time.time() - self.epoch_s) * self.speed
        return min(self.start + timedelta(seconds=elapsed_s), self.end)


def accelerated(job: Job, clock: SimulatedClock) -> Job:
    """The same job, acting for the simulated moment, on an interval shortened by the clock's speed."""
    def run(session, *, now: datetime, limit: int) -> int:  # type: ignore[no-untyped-def]
        return job.run(session, now=clock.now(), limit=limit)

    return replace(job, interval_s=max(job.interval_s / clock.speed, MIN_INTERVAL_S), run=run)  # type: ignore[arg-type]


def main() -> None:
    """Parse the clock, install the accelerated jobs, and run the scheduler."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--start", type=datetime.fromisoformat, required=True)
    parser.add_argument("--epoch", type=float, required=True)
    parser.add_argument("--speed", type=float, required=True)
    parser.add_argument("--days", type=float, required=True)
    parser.add_argument("--run-for-s", type=int, required=True)
    arguments = parser.parse_args()
    clock = SimulatedClock(arguments.start, arguments.epoch, arguments.speed,
                           arguments.start + timedelta(days=arguments.days))
    scheduler_module.standard_jobs = lambda currency, **options: [
        accelerated(job, clock) for job in standard_jobs(currency, **options)]
    scheduler_module.closing_job = lambda factory, signer: accelerated(closing_job(factory, signer), clock)
    scheduler_module.overdue_job = lambda: accelerated(overdue_job(), clock)
    state = hub_state(create_app())
    scheduler_module.run_scheduler(state, holder=f"{socket.gethostname()}:{os.getpid()}", once=False,
                                   run_for_s=arguments.run_for_s, echo=LineWriter())


class LineWriter:
    """Writes each report line whole: jobs run on several threads, and the test parses the lines."""

    def __init__(self) -> None:
        self._lock = threading.Lock()

    def __call__(self, line: str) -> None:
        with self._lock:
            sys.stdout.write(line + "\n")
            sys.stdout.flush()


if __name__ == "__main__":
    main()
