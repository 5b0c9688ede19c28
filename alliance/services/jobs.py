"""Scheduled jobs: what each does, and a database lease that makes each one exclusive.

Every job is idempotent (running it twice does nothing the second time) and exclusive
(a lease row, taken with a conditional update, lets one process run it at a time), so
two scheduler processes, or a scheduler and an operator at the CLI, never double an
effect. The same functions back ``alliance jobs …``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, cast

from sqlalchemy import CursorResult, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from alliance.domain.money import minor_units_per_unit
from alliance.models import JobLease
from alliance.services import (
    behaviour_points,
    birthday_bonus,
    idempotency,
    key_notices,
    ledger,
    member_admin,
    partner_keys,
    reminders,
    rewards,
)

# A lease outlives any healthy run by far; a crashed holder's lease lapses after it.
LEASE_DURATION = timedelta(minutes=15)
BATCH_LIMIT = 1000


@dataclass(frozen=True, slots=True)
class Job:
    """A named, idempotent unit of scheduled work and how often it runs."""

    name: str
    interval_s: int
    run: Callable[..., int]
    unit: str


def _recompute_tiers(session: Session, *, now: datetime, limit: int, currency: str) -> int:
    return member_admin.recompute_tiers(session, now=now, currency=currency,
                                        minor_units_per_unit=minor_units_per_unit(currency))


def standard_jobs(alliance_currency: str, *, key_expiry_notice_days: int = key_notices.DEFAULT_NOTICE_DAYS
                  ) -> list[Job]:
    """The hub's housekeeping jobs with their intervals."""
    def tiers(session: Session, *, now: datetime, limit: int) -> int:
        return _recompute_tiers(session, now=now, limit=limit, currency=alliance_currency)

    def expiring_keys(session: Session, *, now: datetime, limit: int) -> int:
        return key_notices.announce_expiring_keys(session, now=now, notice_days=key_expiry_notice_days,
                                                  since=last_success(session, key_notices.JOB_NAME, now=now),
                                                  limit=limit)

    return [
        Job("expire-holds", 60, ledger.expire_holds, "holds released"),
        Job("activate-pending", 300, ledger.activate_due_lots, "lots activated"),
        Job("expire-points", 3600, ledger.expire_due_lots, "points expired"),
        Job("remind-expiring-points", 3600, reminders.remind_expiring_points, "expiry reminders written"),
        Job("prune-idempotency-keys", 3600, idempotency.prune, "keys pruned"),
        Job("prune-nonces", 600, partner_keys.prune_nonces, "nonces pruned"),
        Job("recompute-tiers", 86_400, tiers, "members changed tier"),
        Job("expire-reward-orders", 900, rewards.expire_orders, "reward orders expired"),
        Job(key_notices.JOB_NAME, 86_400, expiring_keys, "keys announced expiring"),
    ]


def referral_job(time_zone: str, expiry_months: int) -> Job:
    """Award pending referrals, both sides, once the referred member's first purchase has landed (every minute).

    Kept off the purchase path: a purchase does no referral work; this job finds referred
    members with a purchase and no award yet (``behaviour_points.award_referrals``).
    """
    policy = behaviour_points.Policy(time_zone=time_zone, expiry_months=expiry_months)

    def award(session: Session, *, now: datetime, limit: int) -> int:
        return behaviour_points.award_referrals(session, now=now, limit=limit, policy=policy)

    return Job("award-referrals", 60, award, "referrals awarded")


def birthday_job(time_zone: str, expiry_months: int) -> Job:
    """Credit each tier's birthday bonus to the members whose birthday is today in ``time_zone``.

    A daily award, run every hour: a scheduler stopped or restarted for part of a day still
    pays that day's birthdays, and the later runs of the day find them paid
    (``birthday_bonus.award_birthday_bonuses``: once per member and year).
    """
    policy = birthday_bonus.Policy(time_zone=time_zone, expiry_months=expiry_months)

    def award(session: Session, *, now: datetime, limit: int) -> int:
        return birthday_bonus.award_birthday_bonuses(session, now=now, limit=limit, policy=policy)

    return Job(birthday_bonus.JOB_NAME, 3600, award, "birthday bonuses awarded")


def last_success(session: Session, job_name: str, *, now: datetime) -> datetime | None:
    """When the job last ran to success (None if never, or if that lies after ``now``, a pretended moment).

    Jobs that announce what happened since their last run (newly overdue statements,
    keys entering their notice period) start their window there.
    """
    last = session.scalar(select(JobLease.last_succeeded_at).where(JobLease.job_name == job_name))
    return last if last is not None and last <= now else None


def acquire_lease(session: Session, *, job_name: str, holder: str, now: datetime) -> bool:
    """Take the job's lease if it is free or lapsed (or already ours); True when taken."""
    try:
        with session.begin_nested():
            session.execute(insert(JobLease).values(job_name=job_name))
    except IntegrityError:
        pass
    # An UPDATE's result is a CursorResult; Session.execute types every result as Result.
    taken = cast(CursorResult[*tuple[Any, ...]], session.execute(
        update(JobLease)
        .where(JobLease.job_name == job_name,
               or_(JobLease.lease_until.is_(None), JobLease.lease_until < now, JobLease.holder == holder))
        .values(holder=holder, lease_until=now + LEASE_DURATION, last_started_at=now)
    ))
    return taken.rowcount == 1


def release_lease(session: Session, *, job_name: str, holder: str, now: datetime, outcome: str,
                  succeeded: bool = False) -> None:
    """Give the lease back and record how the run ended (and, for a success, when)."""
    values: dict[str, object] = {"holder": None, "lease_until": None, "last_finished_at": now,
                                 "last_outcome": outcome[:200]}
    if succeeded:
        values["last_succeeded_at"] = now
    session.execute(update(JobLease).where(JobLease.job_name == job_name, JobLease.holder == holder).values(values))


def run_exclusively(session_factory: sessionmaker[Session], job: Job, *, holder: str, now: datetime) -> int | None:
    """Run one job under its lease; None when another process holds it.

    ``now`` is the moment the job acts for (an operator may pretend); the lease always
    runs on the real clock, so a pretended future cannot take over a live lease.
    """
    lease_now = datetime.now(timezone.utc)
    with session_factory() as session:
        if not acquire_lease(session, job_name=job.name, holder=holder, now=lease_now):
            return None
        session.commit()
    outcome, succeeded = "failed", False
    try:
        with session_factory() as session:
            done = job.run(session, now=now, limit=BATCH_LIMIT)
            session.commit()
        outcome, succeeded = f"{done} {job.unit}", True
        return done
    finally:
        with session_factory() as session:
            release_lease(session, job_name=job.name, holder=holder, now=datetime.now(timezone.utc), outcome=outcome,
                          succeeded=succeeded)
            session.commit()
