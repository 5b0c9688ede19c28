"""The alliance-wide figures ``/metrics`` reads at scrape time: holds open, cycles due, statements overdue,
job leases."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from alliance.models import JobLease, RedemptionHold
from alliance.observability.metrics import DatabaseFigures, JobLeaseFigures
from settlement.api import DEFAULT_CLOSING_GRACE, due_by_partner, overdue_total

# Enough to say "behind"; the count saturates here rather than computing every missed cycle.
CYCLES_DUE_LIMIT = 1000


def database_figures(session: Session, *, now: datetime, time_zone: str, job_intervals_s: dict[str, float],
                     replica_lag_s: float | None = None) -> DatabaseFigures:
    """The figures of one scrape: a handful of indexed queries on ``session`` (a report read)."""
    holds = session.scalar(select(func.count()).select_from(RedemptionHold)
                           .where(RedemptionHold.status == "open")) or 0
    due = sum(len(partner.cycles) for partner in
              due_by_partner(session, now=now - DEFAULT_CLOSING_GRACE, limit=CYCLES_DUE_LIMIT))
    overdue = overdue_total(session, as_of=now.astimezone(ZoneInfo(time_zone)).date())
    leases = [JobLeaseFigures(*row) for row in session.execute(
        select(JobLease.job_name, JobLease.last_succeeded_at, JobLease.last_started_at, JobLease.last_finished_at))]
    return DatabaseFigures(holds_open=holds, cycles_due=due, statements_overdue=overdue, leases=leases,
                           job_intervals_s=job_intervals_s, replica_lag_s=replica_lag_s)
