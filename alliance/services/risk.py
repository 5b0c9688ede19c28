"""Risk controls on the request path: the policy in force, the figures its limits see, the decision kept.

``assess`` decides one operation (a purchase's earn, a redemption, a card verification,
a transfer) inside the request's own transaction. It reads the figures of every limit
that applies in **one** statement, counted from rows the hub writes anyway (purchases,
redemption holds, transfers, failed verifications) over each limit's window; nothing is
updated per limit, so two tills never wait on the same counter. An allowed operation
costs that one read and writes nothing; a flag or a hold is kept in ``risk_decisions``
with the limits passed and the figures each saw, in the same transaction as the
operation; a refusal raises ``RiskDeclined``, whose record is kept although the operation
is taken back (``AllianceError.kept``), and tells the till only the decision's reference.

The policy is versioned data (``alliance.domain.risk``), each version in force from its
time, at least ``MIN_LEAD`` ahead so every process's copy (reloaded every
``RELOAD_INTERVAL_S``) holds it before it applies. Until an operator sets one, the
built-in ``DEFAULT_POLICY`` is in force.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Select, distinct, func, insert, literal, select, true
from sqlalchemy.orm import Session

from alliance.domain.errors import ValidationFailed
from alliance.domain.risk import (
    ALLOWED,
    DEFAULT_POLICY,
    Action,
    Decision,
    Figures,
    Limit,
    Measure,
    Policy,
    RiskDeclined,
    Scope,
    decide,
    policy_from_data,
)
from alliance.models import (
    MemberTransfer,
    Partner,
    Purchase,
    RedemptionHold,
    RiskDecision,
    RiskHeldLot,
    RiskPolicyVersion,
    VerificationFailure,
)
from alliance.models.base import integer_sum
from alliance.services import audit_log
from alliance.services.process_cache import ProcessCache

RELOAD_INTERVAL_S = 30
MIN_LEAD = timedelta(seconds=2 * RELOAD_INTERVAL_S)
MAX_REASON_CHARACTERS = 500
OPERATION_OF: Mapping[Measure, str] = {Measure.EARN: "earn", Measure.REDEEM: "redeem",
                                       Measure.VERIFICATION_FAILURE: "verification", Measure.TRANSFER_OUT: "transfer"}


@dataclass(frozen=True, slots=True)
class Subject:
    """Who an operation comes from: the partner (and its code), the till, the member, the card, and the tier.

    ``partner_code`` may be left out: the partners a policy's overrides name are known by id.
    ``tried`` names what a card verification tried (``card:`` and a hash of the card number,
    or ``code:`` and a hash of a redemption code), so that the card-testing limit counts
    distinct cards, not attempts.
    """

    partner_id: int | None
    partner_code: str | None = None
    terminal_id: int | None = None
    member_id: int | None = None
    card_id: int | None = None
    tier: str | None = None
    tried: str | None = None


@dataclass(frozen=True, slots=True)
class ScheduledPolicy:
    """A stored version of the policy and when it takes effect."""

    version: int
    effective_from: datetime
    policy: Policy


@dataclass(frozen=True, slots=True)
class Assessment:
    """The decision on an operation, and the id of its kept record (None when allowed)."""

    decision: Decision
    decision_id: int | None
    token: str | None

    @property
    def held(self) -> bool:
        """Whether the operation's points wait for a reviewer."""
        return self.decision.action is Action.HOLD


ALLOWED_ASSESSMENT = Assessment(ALLOWED, None, None)


# -- the policy ------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Schedule:
    """Every stored version, oldest first, and the codes of the partners their overrides name, by partner id."""

    versions: tuple[ScheduledPolicy, ...]
    partner_codes: Mapping[int, str]


def read_schedule(session: Session) -> Schedule:
    """Every stored version, oldest first, read now."""
    rows = session.execute(select(RiskPolicyVersion.version, RiskPolicyVersion.effective_from,
                                  RiskPolicyVersion.document).order_by(RiskPolicyVersion.effective_from)).all()
    scheduled = tuple(ScheduledPolicy(version, effective_from, policy_from_data(document))
                      for version, effective_from, document in rows)
    named = sorted({code for version in scheduled for code in version.policy.partners})
    codes = {partner_id: code for partner_id, code in session.execute(
        select(Partner.id, Partner.code).where(Partner.code.in_(named)))} if named else {}
    return Schedule(scheduled, codes)


_schedules = ProcessCache(read_schedule, reload_interval_s=RELOAD_INTERVAL_S)


def in_force(schedule: Sequence[ScheduledPolicy], at: datetime) -> tuple[int | None, Policy]:
    """The version (None for the built-in default) and policy in force at ``at``."""
    current = None
    for scheduled in schedule:
        if scheduled.effective_from <= at:
            current = scheduled
    return (None, DEFAULT_POLICY) if current is None else (current.version, current.policy)


def policy_in_force(session: Session, *, at: datetime) -> tuple[int | None, Policy]:
    """The policy in force at ``at``, read from the database now (the request path uses the process's copy)."""
    return in_force(read_schedule(session).versions, at)


def set_policy(session: Session, *, document: object, effective_from: datetime, reason: str, now: datetime,
               actor: str) -> int:
    """Store a new version of the policy, in force from ``effective_from``; returns its version number.

    Refused unless it is at least ``MIN_LEAD`` ahead and after the latest version's start.
    """
    policy = policy_from_data(document)
    reason = reason.strip()
    problems: dict[str, list[str]] = {}
    if not reason or len(reason) > MAX_REASON_CHARACTERS:
        problems["reason"] = [f"say why, in 1 to {MAX_REASON_CHARACTERS} characters"]
    if effective_from < now + MIN_LEAD:
        problems["effective_from"] = [f"must be at least {int(MIN_LEAD.total_seconds())} seconds from now, so every "
                                      "process has the new version before it applies"]
    unknown = sorted(set(policy.partners) - set(session.scalars(select(Partner.code).where(
        Partner.code.in_(sorted(policy.partners))))))
    if unknown:
        problems["partners"] = ["no partner " + ", ".join(unknown)]
    latest = session.execute(select(RiskPolicyVersion.version, RiskPolicyVersion.effective_from)
                             .order_by(RiskPolicyVersion.version.desc()).limit(1)).first()
    if latest is not None and effective_from <= latest.effective_from:
        problems.setdefault("effective_from", []).append(
            f"must be after version {latest.version}'s start, {latest.effective_from.isoformat()}")
    if problems:
        raise ValidationFailed("the risk policy version cannot be stored: " + "; ".join(
            f"{field}: {', '.join(what)}" for field, what in sorted(problems.items())), fields=problems)
    version = 1 if latest is None else latest.version + 1
    session.execute(insert(RiskPolicyVersion).values(
        version=version, document=policy.as_data(), effective_from=effective_from, reason=reason,
        created_by=actor, created_at=now))
    audit_log.append(session, actor=actor, action="risk.policy.set", subject=f"risk-policy:{version}", now=now,
                     before=None, after={"version": version, "effective_from": effective_from.isoformat(),
                                         "reason": reason, "limits": len(policy.limits)})
    _schedules.forget(session)
    return version


def versions(session: Session, *, now: datetime) -> list[dict[str, Any]]:
    """Every stored version, newest first, with its document, who set it, why, and where it stands at ``now``."""
    rows = session.scalars(select(RiskPolicyVersion).order_by(RiskPolicyVersion.effective_from)).all()
    current = max((row.effective_from for row in rows if row.effective_from <= now), default=None)
    return [{"version": row.version, "effective_from": row.effective_from, "reason": row.reason,
             "created_by": row.created_by, "created_at": row.created_at, "policy": row.document,
             "status": ("scheduled" if row.effective_from > now
                        else "in_force" if row.effective_from == current else "superseded")}
            for row in reversed(rows)]


# -- the figures -----------------------------------------------------------------------

def _figure(limit: Limit, subject: Subject, since: datetime) -> Select[int, int] | None:
    """The one-row count and points of ``limit``'s measure in its scope since ``since``; None if nothing to count."""
    measure, scope = limit.measure, limit.scope
    if measure is Measure.EARN:
        conditions = _scoped(scope, subject, member=Purchase.member_id, card=Purchase.card_id,
                             terminal=Purchase.terminal_id, partner=Purchase.partner_id)
        if conditions is None:
            return None
        earned = integer_sum(Purchase.points_partner + Purchase.points_hub)
        return select(func.count().label("n"), earned.label("p")).where(*conditions, Purchase.reported_at > since)
    if measure is Measure.REDEEM:
        conditions = _scoped(scope, subject, member=RedemptionHold.member_id, card=RedemptionHold.card_id,
                             terminal=RedemptionHold.terminal_id, partner=RedemptionHold.partner_id)
        if conditions is None:
            return None
        return select(func.count().label("n"), integer_sum(RedemptionHold.points_held).label("p")).where(
            *conditions, RedemptionHold.created_at > since)
    if measure is Measure.VERIFICATION_FAILURE:
        column = {Scope.TERMINAL: VerificationFailure.terminal_id, Scope.PARTNER: VerificationFailure.partner_id}
        value = {Scope.TERMINAL: subject.terminal_id, Scope.PARTNER: subject.partner_id}[scope]
        if value is None:
            return None
        # Distinct cards tried other than this one: this attempt counts as one more card.
        others = [VerificationFailure.tried != subject.tried] if subject.tried is not None else []
        return select(func.count(distinct(VerificationFailure.tried)).label("n"), literal(0).label("p")).where(
            column[scope] == value, VerificationFailure.failed_at > since, *others)
    if subject.member_id is None:
        return None
    return select(func.count().label("n"), integer_sum(MemberTransfer.points).label("p")).where(
        MemberTransfer.from_member_id == subject.member_id, MemberTransfer.created_at > since)


def _scoped(scope: Scope, subject: Subject, *, member: Any, card: Any, terminal: Any,
            partner: Any) -> list[ColumnElement[bool]] | None:
    """The conditions that put a row in the subject's scope; None when the subject has nothing in that scope."""
    if scope is Scope.CARD:
        # A card's rows are its member's: the member's index finds them, the card narrows them.
        if subject.card_id is None or subject.member_id is None:
            return None
        return [member == subject.member_id, card == subject.card_id]
    found = {Scope.MEMBER: (member, subject.member_id), Scope.TERMINAL: (terminal, subject.terminal_id),
             Scope.PARTNER: (partner, subject.partner_id)}[scope]
    return None if found[1] is None else [found[0] == found[1]]


def figures(session: Session, limits: Sequence[Limit], subject: Subject, *, now: datetime) -> dict[str, Figures]:
    """Each limit's figures before this operation, by name, read in one statement; a limit with none is left out."""
    joined: Any = None
    columns: list[Any] = []
    named: list[str] = []
    for limit in limits:
        statement = _figure(limit, subject, now - timedelta(minutes=limit.window_minutes))
        if statement is None:
            continue
        # Each aggregate is one row; joined side by side they are one row of every figure.
        figure = statement.subquery(f"f{len(named)}")
        joined = figure if joined is None else joined.join(figure, true())
        columns += list(figure.c)
        named.append(limit.name)
    if not named:
        return {}
    row = session.execute(select(*columns).select_from(joined)).one()
    return {name: Figures(int(row[2 * index]), int(row[2 * index + 1])) for index, name in enumerate(named)}


# -- deciding --------------------------------------------------------------------------

def assess(session: Session, *, measure: Measure, subject: Subject, points: int, reference: str | None,
           now: datetime, policy: tuple[int | None, Policy] | None = None) -> Assessment:
    """Decide one operation under the policy in force; keep the decision unless it is to allow.

    Raises ``RiskDeclined`` for a refusal (its record is kept by whoever rolls the work back).
    """
    schedule = _schedules.get(session)
    version, rules = policy if policy is not None else in_force(schedule.versions, now)
    partner_code = subject.partner_code or (schedule.partner_codes.get(subject.partner_id)
                                            if subject.partner_id is not None else None)
    limits = rules.limits_for(measure, partner_code=partner_code, tier=subject.tier)
    if not limits:
        return ALLOWED_ASSESSMENT
    decision = decide(limits, figures(session, limits, subject, now=now), points=points)
    if decision.action is Action.ALLOW:
        return ALLOWED_ASSESSMENT
    token = "R" + secrets.token_hex(6).upper()
    values = {"token": token, "decided_at": now, "operation": OPERATION_OF[measure], "action": decision.action.word,
              "policy_version": version, "partner_id": subject.partner_id, "terminal_id": subject.terminal_id,
              "member_id": subject.member_id, "card_id": subject.card_id, "reference": reference, "points": points,
              "evidence": [seen.as_data() for seen in decision.passed], "review_status": "open"}
    if decision.action is Action.REFUSE:
        refusal = RiskDeclined(token)
        refusal.kept = lambda kept_in: kept_in.execute(insert(RiskDecision).values(**values))
        raise refusal
    decision_id = session.execute(insert(RiskDecision).values(**values).returning(RiskDecision.id)).scalar_one()
    return Assessment(decision, decision_id, token)


def hold_lots(session: Session, *, decision_id: int, lot_ids: Sequence[int]) -> None:
    """List a held purchase's lots under its decision, so they stay pending while it is open."""
    if lot_ids:
        session.execute(insert(RiskHeldLot), [{"lot_id": lot_id, "decision_id": decision_id} for lot_id in lot_ids])


def record_verification_failure(session: Session, *, partner_id: int, terminal_id: int | None, tried: str,
                                method: str, now: datetime) -> None:
    """Count a failed PIN or redemption code at a till, for the card-testing limit."""
    session.execute(insert(VerificationFailure).values(failed_at=now, partner_id=partner_id,
                                                       terminal_id=terminal_id, tried=tried, method=method))
