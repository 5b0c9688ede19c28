"""Birthday bonuses: each tier's ``birthday_bonus_points``, credited on the member's birthday.

The ``award-birthday-bonuses`` job finds the active members whose birthday is today in
the alliance's time zone through the profile's clear month-day (``birthday``, MMDD), so
no personal data is decrypted; members born on 29 February have theirs on 28 February
in other years. Each gets the bonus of their tier under the tier policy version in
force, funded by the hub (its marketing account), posted as an earn with the memo
``birthday:<year>`` and expiring like any earned point. ``birthday_awards`` holds one
row per member and year, checked under the member's lock and unique in the database,
so a second run, or a run on another host at the same moment, pays nobody twice. A
tier whose bonus is 0 gets nothing, and nothing is recorded for it.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import date, datetime

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from alliance.domain.behaviour import local_day
from alliance.domain.clock import add_months
from alliance.domain.earning import TIER_ORDER
from alliance.models import BirthdayAward, Member, MemberProfile
from alliance.services import audit_log, ledger, tier_policy

JOB_NAME = "award-birthday-bonuses"
JOB_ACTOR = f"job:{JOB_NAME}"
MEMO_PREFIX = "birthday:"
LEAP_DAY = 229


@dataclass(frozen=True, slots=True)
class Policy:
    """Where the alliance's day is counted, and how long the bonus points live."""

    time_zone: str
    expiry_months: int


@dataclass(frozen=True, slots=True)
class Award:
    """One member's bonus, as the audit entry records it once every member of the batch is locked."""

    member_number: str
    points: int
    tier: str
    transaction_id: int


def birthdays_on(day: date) -> tuple[int, ...]:
    """The month-days (MMDD) celebrated on ``day``: its own, and 29 February on 28 February of a common year."""
    today = day.month * 100 + day.day
    if today == 228 and not calendar.isleap(day.year):
        return (today, LEAP_DAY)
    return (today,)


def award_birthday_bonuses(session: Session, *, now: datetime, limit: int, policy: Policy) -> int:
    """Credit today's birthday bonuses, up to ``limit`` members; returns how many were paid.

    Today is ``now``'s day in the alliance's time zone. The tiers' bonuses are those of
    the tier policy version in force at ``now``; before any version is stored (the
    built-in policy, which gives none) nothing is paid.
    """
    in_force = next((version for version in tier_policy.versions(session, now=now) if version.status == "in_force"),
                    None)
    if in_force is None:
        return 0
    bonus = {tier: in_force.policy.level(tier).birthday_bonus_points for tier in TIER_ORDER}
    paying = sorted(tier for tier, points in bonus.items() if points > 0)
    if not paying:
        return 0
    today = local_day(now, policy.time_zone)
    year = today.year
    already = select(BirthdayAward.id).where(BirthdayAward.member_id == Member.id, BirthdayAward.year == year)
    due = session.execute(
        select(Member.id, Member.member_number)
        .join(MemberProfile, MemberProfile.member_id == Member.id)
        .where(MemberProfile.birthday.in_(birthdays_on(today)), MemberProfile.erased_at.is_(None),
               Member.status == "active", Member.tier.in_(paying), ~already.exists())
        .order_by(Member.id).limit(limit)).all()
    awards: list[Award] = []
    # Members are locked in id order (the lock order of every multi-member transaction) and
    # the audit log's lock is taken last, after the batch, so two runs at once cannot deadlock.
    for member_id, member_number in due:
        locked = ledger.lock_member(session, member_id, require_active=False)
        status, tier = session.execute(select(Member.status, Member.tier).where(Member.id == member_id)).one()
        points = bonus.get(tier, 0)
        if status != "active" or points <= 0:
            continue
        if session.scalar(select(BirthdayAward.id).where(BirthdayAward.member_id == member_id,
                                                         BirthdayAward.year == year)) is not None:
            continue  # another run paid it while this one waited for the lock
        earned = ledger.earn(session, member_id=member_id, partner_id=None, points=points, now=now,
                             expires_at=add_months(now, policy.expiry_months), memo=f"{MEMO_PREFIX}{year}",
                             locked=locked)
        session.execute(insert(BirthdayAward).values(
            member_id=member_id, year=year, tier=tier, points=points, policy_version_id=in_force.id,
            transaction_id=earned.transaction_id, awarded_at=now))
        awards.append(Award(member_number, points, tier, earned.transaction_id))
    for award in awards:
        audit_log.append(session, actor=JOB_ACTOR, action="member.birthday_bonus",
                         subject=f"member:{award.member_number}", now=now,
                         after={"year": year, "points": award.points, "tier": award.tier,
                                "policy_version": in_force.policy.version, "transaction_id": award.transaction_id})
    return len(awards)

