"""The tier policy as data: versions in force from a stated time, the earn's cached schedule, the tiers job.

A version is never changed once written; a change is a new version whose
``effective_from`` lies at least ``MIN_LEAD`` in the future. The earn reads the
multiplier from a per-process copy of the whole schedule (every version with its
``effective_from``), reloaded when it is older than ``RELOAD_INTERVAL_S``; so an earn
adds no database round trip, and because a new version is written at least twice the
reload interval before it takes effect, every process holds it before it applies: the
copy is exact, not merely eventually right.

``recompute_tiers`` (the daily ``recompute-tiers`` job) applies the version in force:
its basis, window and downgrade rule, and writes one ``member_tier_history`` row per
change. Each tier's birthday bonus is credited by ``birthday_bonus`` (the
``award-birthday-bonuses`` job).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.orm import Session

from alliance.domain.clock import add_months
from alliance.domain.earning import (
    TIER_ORDER,
    Downgrade,
    TierBasis,
    TierLevel,
    TierPolicy,
    TierSchedule,
    tier_policy_problems,
)
from alliance.domain.errors import NotFound, ValidationFailed
from alliance.models import Member, MemberTierChange, Purchase, PurchaseRefund, TierPolicyVersion
from alliance.models.base import integer_sum
from alliance.services import audit_log, webhooks
from alliance.services.process_cache import ProcessCache

# How old the earn's copy of the schedule may grow before a process reloads it, and how
# far ahead a new version must start so that every process has reloaded before it applies.
RELOAD_INTERVAL_S = 30
MIN_LEAD = timedelta(seconds=2 * RELOAD_INTERVAL_S)

TIERS_JOB_ACTOR = "job:recompute-tiers"


@dataclass(frozen=True, slots=True)
class PolicyVersion:
    """A stored version with its row id, who wrote it and when, and where it stands at a moment."""

    id: int
    policy: TierPolicy
    created_by: str
    created_at: datetime
    status: str  # "in_force", "scheduled" or "superseded"


@dataclass(frozen=True, slots=True)
class TierChange:
    """One change of a member's tier, as the history keeps it."""

    from_tier: str
    to_tier: str
    changed_at: datetime
    policy_version: int
    reason: str


def _policy(row: TierPolicyVersion) -> TierPolicy:
    return TierPolicy.from_stored(version=row.version, effective_from=row.effective_from, basis=row.basis,
                                  window_months=row.window_months, downgrade=row.downgrade,
                                  period_months=row.period_months, tiers=row.tiers)


def read_schedule(session: Session) -> TierSchedule:
    """Every stored version, oldest first, read from the database now."""
    rows = session.scalars(select(TierPolicyVersion).order_by(TierPolicyVersion.effective_from)).all()
    return TierSchedule(tuple(_policy(row) for row in rows))


_schedules = ProcessCache(read_schedule, reload_interval_s=RELOAD_INTERVAL_S)


def cached_schedule(session: Session) -> TierSchedule:
    """The schedule for the earn: this process's copy, reloaded when older than ``RELOAD_INTERVAL_S``."""
    return _schedules.get(session)


def forget_cached_schedule(session: Session) -> None:
    """Drop this process's copy for the session's database, so the next earn reads the schedule."""
    _schedules.forget(session)


def versions(session: Session, *, now: datetime) -> list[PolicyVersion]:
    """Every version, newest first, each marked in force, scheduled or superseded at ``now``."""
    rows = session.scalars(select(TierPolicyVersion).order_by(TierPolicyVersion.effective_from)).all()
    current = max((row.effective_from for row in rows if row.effective_from <= now), default=None)
    listed = [
        PolicyVersion(row.id, _policy(row), row.created_by, row.created_at,
                      "scheduled" if row.effective_from > now else
                      "in_force" if row.effective_from == current else "superseded")
        for row in rows
    ]
    return list(reversed(listed))


def policy_in_force(session: Session, *, at: datetime) -> TierPolicy:
    """The version in force at ``at``."""
    return read_schedule(session).in_force(at)


def levels_from_data(items: object) -> list[TierLevel]:
    """Tiers as the API and the CLI send them (``tier``, ``threshold``, ``multiplier`` as text,
    ``birthday_bonus_points``), checked for form; ``propose_version`` checks the policy's rules."""
    if not isinstance(items, list) or not items:
        raise ValidationFailed("tiers must be a non-empty list", fields={"tiers": ["must list at least one tier"]})
    levels = []
    for index, item in enumerate(items, start=1):
        if not isinstance(item, Mapping) or set(item) - {"tier", "threshold", "multiplier", "birthday_bonus_points"}:
            raise ValidationFailed(f"tier {index} must have tier, threshold, multiplier and birthday_bonus_points",
                                   fields={"tiers": [f"tier {index} has the wrong fields"]})
        threshold, bonus = item.get("threshold"), item.get("birthday_bonus_points", 0)
        if not isinstance(threshold, int) or isinstance(threshold, bool) \
                or not isinstance(bonus, int) or isinstance(bonus, bool):
            raise ValidationFailed(f"tier {index}: threshold and birthday_bonus_points must be whole numbers",
                                   fields={"tiers": [f"tier {index}: whole numbers expected"]})
        multiplier = item.get("multiplier")
        if isinstance(multiplier, bool) or not isinstance(multiplier, (str, int)):
            raise ValidationFailed(f"tier {index}: the multiplier must be a decimal number written as text",
                                   fields={"tiers": [f"tier {index}: multiplier as text, e.g. \"1.25\""]})
        try:
            value = Decimal(str(multiplier))
        except InvalidOperation:
            raise ValidationFailed(f"tier {index}: {multiplier!r} is not a decimal number",
                                   fields={"tiers": [f"tier {index}: not a decimal number"]}) from None
        levels.append(TierLevel(str(item.get("tier")), threshold, value, bonus))
    return levels


def propose_version(
    session: Session, *, basis: str, window_months: int | None, downgrade: str, period_months: int | None,
    levels: Sequence[TierLevel], effective_from: datetime, now: datetime, actor: str,
) -> PolicyVersion:
    """Schedule a new version of the tier policy from ``effective_from``, at least ``MIN_LEAD`` ahead.

    Refused (nothing written) when the policy breaks a rule of ``tier_policy_problems``,
    when it would start sooner than ``MIN_LEAD`` from now, or at the moment of another version.
    """
    problems = tier_policy_problems(basis=basis, window_months=window_months, downgrade=downgrade,
                                    period_months=period_months, levels=list(levels))
    if effective_from.tzinfo is None:
        problems["effective_from"] = ["must name its time zone"]
    elif effective_from < now + MIN_LEAD:
        problems["effective_from"] = [f"must be at least {int(MIN_LEAD.total_seconds())} seconds from now, so "
                                      "every process knows the version before it applies"]
    elif session.scalar(select(TierPolicyVersion.id).where(TierPolicyVersion.effective_from == effective_from)):
        problems["effective_from"] = ["another version starts at this moment"]
    if problems:
        raise ValidationFailed("the tier policy cannot be scheduled: " + "; ".join(
            f"{field}: {', '.join(messages)}" for field, messages in problems.items()), fields=problems)
    number = (session.scalar(select(func.max(TierPolicyVersion.version))) or 0) + 1
    stored = [level.as_stored() for level in levels]
    version_id = session.execute(insert(TierPolicyVersion).values(
        version=number, effective_from=effective_from, basis=basis, window_months=window_months,
        downgrade=downgrade, period_months=period_months, tiers=stored, created_by=actor, created_at=now,
    ).returning(TierPolicyVersion.id)).scalar_one()
    audit_log.append(session, actor=actor, action="tier_policy.schedule", subject=f"tier_policy:{number}", now=now,
                     after={"version": number, "effective_from": effective_from.isoformat(), "basis": basis,
                            "window_months": window_months, "downgrade": downgrade, "period_months": period_months,
                            "tiers": stored})
    forget_cached_schedule(session)
    row = session.get(TierPolicyVersion, version_id)
    assert row is not None
    return PolicyVersion(row.id, _policy(row), actor, now, "scheduled")


def whole_months_between(start: datetime, end: datetime) -> int:
    """Whole calendar months from ``start`` to ``end`` (0 when ``end`` is earlier)."""
    months = (end.year - start.year) * 12 + end.month - start.month
    if months > 0 and add_months(start, months) > end:
        months -= 1
    return max(months, 0)


def _qualifying(session: Session, policy: TierPolicy, *, now: datetime, currency: str,
                member_id: int | None = None) -> dict[int, int]:
    """Each member's qualifying spend (minor units) or points under ``policy`` at ``now`` (none for tenure);
    only ``member_id``'s when given."""
    if policy.basis is TierBasis.TENURE:
        return {}
    assert policy.window_months is not None
    since = add_months(now, -policy.window_months)
    window = (Purchase.purchased_at > since, *((Purchase.member_id == member_id,) if member_id is not None else ()))
    if policy.basis is TierBasis.SPEND:
        rows = session.execute(
            select(Purchase.member_id, integer_sum(Purchase.amount_minor - Purchase.refunded_amount_minor))
            .where(Purchase.currency == currency, *window).group_by(Purchase.member_id)).all()
        return {member_id: int(spend) for member_id, spend in rows}
    earned = session.execute(
        select(Purchase.member_id, integer_sum(Purchase.points_partner + Purchase.points_hub))
        .where(*window).group_by(Purchase.member_id)).all()
    recovered = session.execute(
        select(Purchase.member_id, integer_sum(PurchaseRefund.points_recovered))
        .join(Purchase, Purchase.id == PurchaseRefund.purchase_id).where(*window).group_by(Purchase.member_id)).all()
    figures = {member_id: int(points) for member_id, points in earned}
    for member_id, points in recovered:
        figures[member_id] = figures.get(member_id, 0) - int(points)
    return figures


def _figures(session: Session, policy: TierPolicy, *, now: datetime, currency: str,
             minor_units_per_unit: int) -> dict[int, int]:
    """Each member's qualifying figure under ``policy`` at ``now``, in the thresholds' unit (members without one: 0)."""
    figures = _qualifying(session, policy, now=now, currency=currency)
    if policy.basis is TierBasis.SPEND:
        # Whole currency units, floored: spend >= threshold units exactly when this is.
        return {member_id: spend // minor_units_per_unit for member_id, spend in figures.items()}
    return figures


@dataclass(frozen=True, slots=True)
class TierStanding:
    """Where a member stands under the policy in force: the figure that sets the tier and what the next needs.

    ``figure`` and the thresholds are in the basis's unit as a person reads it: minor units of
    ``currency`` for spend, points for points, whole months for tenure.
    """

    tier: str
    basis: str
    window_months: int | None
    figure: int
    currency: str
    thresholds: list[tuple[str, int]]
    next_tier: str | None
    next_threshold: int | None


def standing(session: Session, *, member_id: int, tier: str, now: datetime, currency: str,
             minor_units_per_unit: int) -> TierStanding:
    """The member's qualifying figure under the policy in force and the thresholds the tiers job applies to it."""
    policy = policy_in_force(session, at=now)
    scale = minor_units_per_unit if policy.basis is TierBasis.SPEND else 1
    if policy.basis is TierBasis.TENURE:
        enrolled_at = session.scalar(select(Member.enrolled_at).where(Member.id == member_id))
        figure = whole_months_between(enrolled_at, now) if enrolled_at is not None else 0
    else:
        figure = _qualifying(session, policy, now=now, currency=currency, member_id=member_id).get(member_id, 0)
    thresholds = [(level.tier, level.threshold * scale) for level in policy.levels if level.threshold > 0]
    above = [(name, minimum) for name, minimum in thresholds if minimum > figure]
    next_tier, next_threshold = above[0] if above else (None, None)
    return TierStanding(tier, policy.basis.value, policy.window_months, figure, currency, thresholds, next_tier,
                        next_threshold)


def recompute_tiers(session: Session, *, now: datetime, currency: str, minor_units_per_unit: int) -> int:
    """Set every active member's tier under the policy in force at ``now``; returns how many changed.

    Upgrades are immediate; downgrades follow the version's rule. Each change is written
    to ``member_tier_history`` with the version and the reason, and sent to the member
    (``member.tier_changed``, naming the member by number only).
    """
    row = session.scalars(select(TierPolicyVersion).where(TierPolicyVersion.effective_from <= now)
                          .order_by(TierPolicyVersion.effective_from.desc()).limit(1)).first()
    if row is None:
        return 0
    policy = _policy(row)
    figures = _figures(session, policy, now=now, currency=currency, minor_units_per_unit=minor_units_per_unit)
    last_change = (select(MemberTierChange.member_id, func.max(MemberTierChange.changed_at).label("changed_at"))
                   .group_by(MemberTierChange.member_id).subquery())
    members = session.execute(
        select(Member.id, Member.tier, Member.enrolled_at, last_change.c.changed_at, Member.member_number)
        .outerjoin(last_change, last_change.c.member_id == Member.id)
        .where(Member.status == "active").order_by(Member.id)).all()
    changed = 0
    for member_id, tier, enrolled_at, changed_at, member_number in members:
        figure = (whole_months_between(enrolled_at, now) if policy.basis is TierBasis.TENURE
                  else figures.get(member_id, 0))
        held = whole_months_between(changed_at or enrolled_at, now)
        new_tier = policy.next_tier(current=tier, figure=figure, held_months=held)
        if new_tier == tier:
            continue
        session.execute(update(Member).where(Member.id == member_id).values(tier=new_tier))
        session.execute(insert(MemberTierChange).values(
            member_id=member_id, from_tier=tier, to_tier=new_tier, changed_at=now, policy_version_id=row.id,
            reason=_reason(policy, tier, new_tier, figure)))
        webhooks.emit(session, event_type="member.tier_changed", now=now,
                      data={"member_number": member_number, "from_tier": tier, "to_tier": new_tier})
        changed += 1
    return changed


def _reason(policy: TierPolicy, old: str, new: str, figure: int) -> str:
    unit = {TierBasis.SPEND: "currency units spent", TierBasis.POINTS: "points earned",
            TierBasis.TENURE: "months of membership"}[policy.basis]
    window = f" over {policy.window_months} months" if policy.window_months else ""
    if TIER_ORDER.index(new) > TIER_ORDER.index(old):
        return f"qualified: {figure} {unit}{window}"
    if policy.downgrade is Downgrade.ONE_STEP:
        return f"one step down after {policy.period_months} months: {figure} {unit}{window}"
    return f"down to the level earned: {figure} {unit}{window}"


def tier_history(session: Session, *, member_number: str) -> list[TierChange]:
    """The member's tier changes, newest first."""
    member_id = session.scalar(select(Member.id).where(Member.member_number == member_number))
    if member_id is None:
        raise NotFound(f"no member {member_number!r}")
    rows = session.execute(
        select(MemberTierChange.from_tier, MemberTierChange.to_tier, MemberTierChange.changed_at,
               TierPolicyVersion.version, MemberTierChange.reason)
        .join(TierPolicyVersion, TierPolicyVersion.id == MemberTierChange.policy_version_id)
        .where(MemberTierChange.member_id == member_id)
        .order_by(MemberTierChange.changed_at.desc(), MemberTierChange.id.desc())).all()
    return [TierChange(*row) for row in rows]


def describe(policy: TierPolicy) -> dict[str, Any]:
    """A version as the API and the CLI show it (multipliers as exact text)."""
    return {
        "version": policy.version, "effective_from": policy.effective_from.isoformat(), "basis": policy.basis.value,
        "window_months": policy.window_months, "downgrade": policy.downgrade.value,
        "period_months": policy.period_months, "tiers": [level.as_stored() for level in policy.levels],
    }
