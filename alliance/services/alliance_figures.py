"""The alliance-wide figures ``/metrics`` reads at scrape time: holds open, cycles due, statements overdue,
job leases, the webhook outbox."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from alliance.models import JobLease, Partner, RedemptionHold, WebhookDelivery, WebhookEndpoint
from alliance.observability.metrics import DatabaseFigures, JobLeaseFigures, WebhookFigures
from alliance.services import webhooks
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
                           job_intervals_s=job_intervals_s, replica_lag_s=replica_lag_s,
                           webhooks=webhook_figures(session, now=now))


def webhook_figures(session: Session, *, now: datetime) -> WebhookFigures:
    """Deliveries pending, how long the longest-waiting due one has waited, disabled endpoints by partner.

    The wait is measured from a delivery's attempt time, not its event's: a delivery retried
    for days against a failing receiver is not late until its next try is, so the figure
    grows only when no delivery process keeps up.
    """
    oldest_due = session.scalar(select(func.min(WebhookDelivery.next_attempt_at))
                                .where(WebhookDelivery.status == "pending", WebhookDelivery.next_attempt_at <= now))
    disabled = session.execute(select(Partner.code, func.count()).select_from(WebhookEndpoint)
                               .join(Partner, Partner.id == WebhookEndpoint.partner_id)
                               .where(WebhookEndpoint.status == "disabled").group_by(Partner.code))
    return WebhookFigures(pending=webhooks.pending_count(session),
                          backlog_age_s=max(0.0, (now - oldest_due).total_seconds()) if oldest_due else 0.0,
                          disabled_by_partner={code: count for code, count in disabled})
