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
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, distinct, exists, func, insert, literal, select, true, union_all, update
from sqlalchemy.orm import Session

from alliance.domain.errors import Conflict, InvalidState, NotFound, ValidationFailed
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
    Member,
    MemberTransfer,
    Partner,
    PointLot,
    Purchase,
    RedemptionHold,
    RiskDecision,
    RiskHeldLot,
    RiskPolicyVersion,
    Terminal,
    VerificationFailure,
)
from alliance.models.base import UTCDateTime, integer_sum
from alliance.models.risk import REVIEW_STATUSES
from alliance.services import audit_log, ledger, staff_people, webhooks
from alliance.services.process_cache import ProcessCache
from alliance.storage import Storage
from alliance.storage.adapters import storage_for

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
    # A redemption decided after its hold is written: that hold is the operation, not one before it.
    exclude_hold_id: int | None = None


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

def scope_key(scope: Scope, subject: Subject) -> int | None:
    """The id a subject is counted under in ``scope`` (None: nothing to count, such as no terminal)."""
    return {Scope.CARD: subject.card_id, Scope.MEMBER: subject.member_id, Scope.TERMINAL: subject.terminal_id,
            Scope.PARTNER: subject.partner_id}[scope]


def _moved(measure: Measure) -> tuple[Any, Any, Any, Mapping[Scope, Any]]:
    """What purchases or redemption holds are counted by: the table, the moment, the points moved, each scope's
    column."""
    table: Any = Purchase if measure is Measure.EARN else RedemptionHold
    moment = Purchase.reported_at if measure is Measure.EARN else RedemptionHold.created_at
    moved = (integer_sum(Purchase.points_partner + Purchase.points_hub) if measure is Measure.EARN
             else integer_sum(RedemptionHold.points_held))
    return table, moment, moved, {Scope.CARD: table.card_id, Scope.MEMBER: table.member_id,
                                  Scope.TERMINAL: table.terminal_id, Scope.PARTNER: table.partner_id}


def _part(limit: Limit, index: int, *, batch: Storage | None, with_tried: bool, excluding: bool) -> Any:
    """Count and points of ``limit``'s measure since ``s<index>``, per scope key ``k<index>`` (one key, or a list
    of them for a batch, bound as its database plans a long list best): the statement's parameters are named, so
    one statement serves every request of a shape."""
    single = batch is None

    def keyed(column: Any, name: str) -> Any:
        return column == bindparam(name) if batch is None else batch.one_of_bound(column, name)

    name, since = literal(limit.name).label("limit"), bindparam(f"s{index}", type_=UTCDateTime())
    measure, scope = limit.measure, limit.scope
    if measure is Measure.EARN or measure is Measure.REDEEM:
        table, moment, moved, columns = _moved(measure)
        column = columns[scope]
        conditions = [keyed(column, f"k{index}"), moment > since]
        if excluding and measure is Measure.REDEEM:
            conditions.append(RedemptionHold.id != bindparam("x") if single
                              else RedemptionHold.id.not_in(bindparam("x", expanding=True)))
        if scope is Scope.CARD:
            # A card's rows are its member's: the member's index finds them, the card narrows them.
            conditions.append(keyed(table.member_id, f"m{index}"))
        return select(name, column.label("key"), func.count().label("n"), moved.label("p")).where(
            *conditions).group_by(column)
    if measure is Measure.VERIFICATION_FAILURE:
        column = (VerificationFailure.terminal_id if scope is Scope.TERMINAL else VerificationFailure.partner_id)
        # Distinct cards tried other than this one: this attempt counts as one more card.
        others = [VerificationFailure.tried != bindparam("t") if single
                  else VerificationFailure.tried.not_in(bindparam("t", expanding=True))] if with_tried else []
        return select(name, column.label("key"), func.count(distinct(VerificationFailure.tried)).label("n"),
                      literal(0).label("p")).where(keyed(column, f"k{index}"), VerificationFailure.failed_at > since,
                                                   *others).group_by(column)
    return select(name, MemberTransfer.from_member_id.label("key"), func.count().label("n"),
                  integer_sum(MemberTransfer.points).label("p")).where(
        keyed(MemberTransfer.from_member_id, f"k{index}"), MemberTransfer.created_at > since).group_by(
        MemberTransfer.from_member_id)


# One statement per shape (the limits applied, one subject or a batch), built once per process.
_statements: dict[tuple[Any, ...], Any] = {}
_statements_lock = threading.Lock()
MAX_STATEMENT_SHAPES = 256


def _statement(limits: Sequence[Limit], *, batch: Storage | None, with_tried: bool, excluding: bool) -> Any:
    shape = (tuple((limit.name, limit.scope, limit.measure) for limit in limits),
             batch.name if batch is not None else None, with_tried, excluding)
    found: Any = _statements.get(shape)
    if found is None:
        parts: list[Any] = [_part(limit, index, batch=batch, with_tried=with_tried, excluding=excluding)
                            for index, limit in enumerate(limits)]
        found = parts[0] if len(parts) == 1 else union_all(*parts)
        with _statements_lock:
            if len(_statements) >= MAX_STATEMENT_SHAPES:
                _statements.clear()
            _statements[shape] = found
    return found


def figures(session: Session, limits: Sequence[Limit], subjects: Sequence[Subject], *,
            now: datetime) -> dict[tuple[str, int], Figures]:
    """Each limit's figures before these operations, by (limit name, scope key), read in one statement.

    A key with nothing in the window has no entry (its figures are zero). For one subject
    (a single request) the statement goes through the storage adapter's hot-statement path.
    """
    single = len(subjects) == 1
    counted: list[Limit] = []
    parameters: dict[str, object] = {}
    for limit in limits:
        keys = sorted({key for subject in subjects if (key := scope_key(limit.scope, subject)) is not None})
        if not keys:
            continue
        index = len(counted)
        counted.append(limit)
        parameters[f"s{index}"] = now - timedelta(minutes=limit.window_minutes)
        parameters[f"k{index}"] = keys[0] if single else keys
        if limit.scope is Scope.CARD:
            members = sorted({subject.member_id for subject in subjects if subject.member_id is not None})
            parameters[f"m{index}"] = members[0] if single else members
    if not counted:
        return {}
    tried = sorted({subject.tried for subject in subjects if subject.tried is not None})
    if tried:
        parameters["t"] = tried[0] if single else tried
    excluded = sorted({subject.exclude_hold_id for subject in subjects if subject.exclude_hold_id is not None})
    if excluded:
        parameters["x"] = excluded[0] if single else excluded
    statement = _statement(counted, batch=None if single else storage_for(session), with_tried=bool(tried),
                           excluding=bool(excluded))
    rows = (storage_for(session).read(session, statement, parameters) if single
            else session.execute(statement, parameters).all())
    return {(str(row[0]), int(row[1])): Figures(int(row[2]), int(row[3])) for row in rows}


# -- figures carried by a report's first read -----------------------------------------

@dataclass(frozen=True, slots=True)
class CarriedEarnFigures:
    """A single purchase report's figures under the earn limits, read by its first read rather than on their own.

    ``subquery``: one row, for the first read to join (its columns start ``risk_``): per
    limit its count and points, and per scope the key it counted under. ``parameters``:
    the windows' starts, to bind with the first read's own. ``limits``: the limits it
    counts, in column order. Built once per shape (the limits, the keys' expressions).
    """

    subquery: Any
    limits: tuple[Limit, ...]
    parameters: Mapping[str, object]

    def figures(self, row: Any) -> dict[tuple[str, int], Figures]:
        """The figures in a first read's row, by (limit name, scope key), as ``figures`` returns them."""
        found: dict[tuple[str, int], Figures] = {}
        for index, limit in enumerate(self.limits):
            key = getattr(row, f"risk_key_{limit.scope.value}")
            if key is not None:
                found[(limit.name, int(key))] = Figures(int(getattr(row, f"risk_n{index}") or 0),
                                                        int(getattr(row, f"risk_p{index}") or 0))
        return found


@dataclass(frozen=True, slots=True)
class Carried:
    """What a first read carried (``CarriedEarnFigures``) and its figures, for ``decide_all``."""

    limits: tuple[Limit, ...]
    figures: Mapping[tuple[str, int], Figures]

    def covers(self, limit: Limit, key: int | None) -> bool:
        """Whether ``limit``'s figures (as it applies to the subject: its window) were counted under ``key``."""
        return (key is not None and (limit.name, key) in self.figures
                and any(_counts_alike(limit, carried) for carried in self.limits))


def _counts_alike(one: Limit, other: Limit) -> bool:
    """Whether two limits count the same figures (their caps and actions may differ)."""
    return (one.name, one.scope, one.measure, one.window_minutes) == (
        other.name, other.scope, other.measure, other.window_minutes)


_carried: dict[tuple[Any, ...], Any] = {}


def carried_earn_figures(session: Session, *, partner_id: int, keys: Mapping[Scope, Any],
                         now: datetime) -> CarriedEarnFigures | None:
    """The earn limits in force for this partner (before its member's tier is known) whose scope ``keys`` names,
    counted in one subquery a first read joins; None when none applies.

    ``keys``: each scope's key as the first read can compute it (a bind parameter, or a
    scalar subquery on one, such as the card whose number the report gives); the row
    names the key each scope was counted under, so ``decide_all`` uses a figure only for
    the subject's own key. ``keys`` must be the same objects from call to call: the
    subquery is built once per shape and kept by them.
    """
    schedule = _schedules.get(session)
    _, rules = in_force(schedule.versions, now)
    limits = tuple(limit for limit in _limits(rules, schedule, Measure.EARN, Subject(partner_id=partner_id))
                   if limit.scope in keys)
    if not limits:
        return None
    scopes = sorted({limit.scope for limit in limits})
    shape = (tuple((limit.name, limit.scope, limit.measure) for limit in limits),
             tuple(id(keys[scope]) for scope in scopes))
    subquery = _carried.get(shape)
    if subquery is None:
        columns: list[Any] = [keys[scope].label(f"risk_key_{scope.value}") for scope in scopes]
        _, moment, moved, by_scope = _moved(Measure.EARN)
        joined: Any = None
        for index, limit in enumerate(limits):
            conditions = [by_scope[limit.scope] == keys[limit.scope],
                          moment > bindparam(f"risk_s{index}", type_=UTCDateTime())]
            if limit.scope is Scope.CARD and Scope.MEMBER in keys:
                # A card's rows are its member's: the member's index finds them, the card narrows them.
                conditions.append(by_scope[Scope.MEMBER] == keys[Scope.MEMBER])
            counted = select(func.count().label("n"), moved.label("p")).where(*conditions).subquery(f"risk_{index}")
            columns += [counted.c.n.label(f"risk_n{index}"), counted.c.p.label(f"risk_p{index}")]
            # Each an aggregate's one row: joined to the others on nothing.
            joined = counted if joined is None else joined.join(counted, true())
        subquery = select(*columns).select_from(joined).subquery("risk_figures")
        with _statements_lock:
            if len(_carried) >= MAX_STATEMENT_SHAPES:
                _carried.clear()
            _carried[shape] = subquery
    return CarriedEarnFigures(subquery, limits, {
        f"risk_s{index}": now - timedelta(minutes=limit.window_minutes) for index, limit in enumerate(limits)})


# -- deciding --------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Operation:
    """One operation to decide: who it comes from, the points it moves, and the partner's reference for it."""

    subject: Subject
    points: int
    reference: str | None


@dataclass(frozen=True, slots=True)
class Decided:
    """An operation's decision and, unless allowed, the record to keep."""

    decision: Decision
    record: Mapping[str, Any] | None

    @property
    def held(self) -> bool:
        """Whether the operation's points wait for a reviewer."""
        return self.decision.action is Action.HOLD

    def refusal(self) -> RiskDeclined | None:
        """The refusal to answer with, if the decision is to refuse."""
        if self.decision.action is not Action.REFUSE:
            return None
        assert self.record is not None
        return RiskDeclined(self.record["token"])


def decide_all(session: Session, *, measure: Measure, operations: Sequence[Operation],
               now: datetime, carried: Carried | None = None) -> list[Decided]:
    """Decide operations in order under the policy in force (a batch of purchases, or one operation).

    The figures are read once for all of them; each operation that goes ahead (allowed,
    flagged or held) counts for the later ones of its scopes, as it would had it been
    reported alone before them. Nothing is written: ``keep`` writes the records once the
    operations are. ``carried``: a single operation's figures its first read already
    read; only the limits it does not cover (such as one a tier override changed) are read.
    """
    if carried is not None and len(operations) != 1:
        raise ValueError("carried figures are a single operation's")
    schedule = _schedules.get(session)
    version, rules = in_force(schedule.versions, now)
    decided: list[Decided] = []
    read: dict[tuple[str, int], Figures] | None = None
    running: dict[tuple[str, int], Figures] = {}
    applying = [_limits(rules, schedule, measure, operation.subject) for operation in operations]
    for operation, limits in zip(operations, applying, strict=True):
        subject = operation.subject
        if not limits:
            decided.append(Decided(ALLOWED, None))
            continue
        if read is None:
            every = {limit.name: limit for some in applying for limit in some}
            if carried is None:
                read = figures(session, list(every.values()), [op.subject for op in operations], now=now)
            else:
                keyed = [(limit, scope_key(limit.scope, subject)) for limit in every.values()]
                uncovered = [limit for limit, key in keyed if key is not None and not carried.covers(limit, key)]
                read = figures(session, uncovered, [subject], now=now) if uncovered else {}
                read.update({(limit.name, key): carried.figures[(limit.name, key)] for limit, key in keyed
                             if key is not None and carried.covers(limit, key)})
        seen: dict[str, Figures] = {}
        for limit in limits:
            key = scope_key(limit.scope, subject)
            if key is None:
                continue
            before = read.get((limit.name, key), NO_FIGURES)
            extra = running.get((limit.name, key), NO_FIGURES)
            seen[limit.name] = Figures(before.count + extra.count, before.points + extra.points)
        decision = decide(limits, seen, points=operation.points)
        if decision.allowed:
            for limit in limits:
                key = scope_key(limit.scope, subject)
                if key is not None:
                    extra = running.get((limit.name, key), NO_FIGURES)
                    running[(limit.name, key)] = Figures(extra.count + 1, extra.points + operation.points)
        kept = record(session, operation=OPERATION_OF[measure], action=decision.action, subject=subject,
                      points=operation.points, reference=operation.reference,
                      evidence=[item.as_data() for item in decision.passed], now=now, policy_version=version)
        decided.append(Decided(decision, kept.record))
    return decided


NO_FIGURES = Figures(0, 0)


def _limits(rules: Policy, schedule: Schedule, measure: Measure, subject: Subject) -> tuple[Limit, ...]:
    """The limits on ``measure`` as they apply to the subject's partner and tier."""
    partner_code = subject.partner_code or (schedule.partner_codes.get(subject.partner_id)
                                            if subject.partner_id is not None else None)
    return rules.limits_for(measure, partner_code=partner_code, tier=subject.tier)


def record(session: Session, *, operation: str, action: Action, subject: Subject, points: int,
           reference: str | None, evidence: Sequence[Mapping[str, Any]], now: datetime,
           policy_version: int | None = None) -> Decided:
    """A decision reached by other means than the velocity limits (a pattern rule), as ``keep`` writes it."""
    if action is Action.ALLOW:
        return Decided(ALLOWED, None)
    return Decided(Decision(action), {
        "token": "R" + secrets.token_hex(6).upper(), "decided_at": now, "operation": operation,
        "action": action.word, "policy_version": policy_version, "partner_id": subject.partner_id,
        "terminal_id": subject.terminal_id, "member_id": subject.member_id, "card_id": subject.card_id,
        "reference": reference, "points": points, "evidence": [dict(item) for item in evidence],
        "review_status": "open"})


def keep(session: Session, decided: Decided) -> int | None:
    """Write a decision's record (flags, holds, and a batch item's refusal); its id, or None if allowed."""
    if decided.record is None:
        return None
    decision_id: int = session.execute(insert(RiskDecision).values(**decided.record)
                                       .returning(RiskDecision.id)).scalar_one()
    partner_id = decided.record["partner_id"]
    if partner_id is not None:
        # The partner hears that its activity waits for a reviewer: the case's token and what was done, no member.
        webhooks.emit(session, event_type="review_case.opened", partner_id=partner_id, now=decided.record["decided_at"],
                      data={"decision_id": decision_id, "case": decided.record["token"],
                            "action": decided.record["action"]})
    return decision_id


def assess(session: Session, *, measure: Measure, subject: Subject, points: int, reference: str | None,
           now: datetime) -> Assessment:
    """Decide one operation and keep its decision unless it is to allow, in the caller's transaction.

    Raises ``RiskDeclined`` for a refusal, whose record is kept by whoever rolls the work back.
    """
    (decided,) = decide_all(session, measure=measure, operations=[Operation(subject, points, reference)], now=now)
    refusal = decided.refusal()
    if refusal is not None:
        def kept(kept_in: Session) -> None:
            keep(kept_in, decided)

        refusal.kept = kept
        raise refusal
    return Assessment(decided.decision, keep(session, decided),
                      decided.record["token"] if decided.record is not None else None)


def hold_lots(session: Session, *, decision_id: int, lot_ids: Sequence[int]) -> None:
    """List a held purchase's lots under its decision, so they stay pending while it is open."""
    if lot_ids:
        session.execute(insert(RiskHeldLot), [{"lot_id": lot_id, "decision_id": decision_id} for lot_id in lot_ids])


def under_review(session: Session, *, earn_transaction_ids: Sequence[int | None]) -> bool:
    """Whether a purchase's lots (named by its earn transactions) are held by an open risk decision."""
    ids = [transaction_id for transaction_id in earn_transaction_ids if transaction_id is not None]
    if not ids:
        return False
    return bool(session.scalar(select(exists().where(
        RiskHeldLot.lot_id == PointLot.id, PointLot.earn_transaction_id.in_(ids),
        RiskDecision.id == RiskHeldLot.decision_id, RiskDecision.review_status == "open"))))


def record_verification_failure(session: Session, *, partner_id: int, terminal_id: int | None, tried: str,
                                method: str, now: datetime) -> None:
    """Count a failed PIN or redemption code at a till, for the card-testing limit."""
    session.execute(insert(VerificationFailure).values(failed_at=now, partner_id=partner_id,
                                                       terminal_id=terminal_id, tried=tried, method=method))


# -- review ----------------------------------------------------------------------------

REVIEW_ACTIONS = {
    # A hold's points: released to the member, or the purchase's points taken back to their issuers.
    "release": ("hold", "released"), "reverse": ("hold", "reversed"),
    # A flag or a refusal: a false alarm, or fraud confirmed.
    "dismiss": ("flag", "dismissed"), "confirm": ("flag", "confirmed"),
}


class SameReviewer(Conflict):
    """The person who proposed a release or reversal tried to approve it."""

    code = "same_approver"


class AlreadyReviewed(Conflict):
    """A decision whose review is settled already."""

    code = "already_reviewed"


@dataclass(frozen=True, slots=True)
class Reviewed:
    """What a review did: the new status, and the points released or taken back."""

    decision_id: int
    status: str
    points_released: int = 0
    points_reversed: int = 0
    points_unrecovered: int = 0


def review(session: Session, *, decision_id: int, action: str, note: str, now: datetime, actor: str,
           approval_threshold_points: int) -> Reviewed:
    """Settle an open decision: release or reverse a hold, dismiss or confirm a flag or a refusal; audited.

    Releasing makes the held lots spendable (or leaves them pending until their return
    window passes); reversing claws each held lot's points back to its issuer at the price
    it recorded, as a refund would (points already spent cannot be, as with a refund).
    A release or reversal of more than ``approval_threshold_points`` is first only proposed
    (``status`` "proposed"), and done when a second person (not the proposer, whichever
    credential either used) reviews it the same way; a different action replaces the
    proposal.
    """
    if action not in REVIEW_ACTIONS:
        raise ValidationFailed("the action is release, reverse, dismiss or confirm",
                               fields={"action": ["release, reverse, dismiss or confirm"]})
    note = note.strip()
    if not note or len(note) > MAX_REASON_CHARACTERS:
        raise ValidationFailed(f"say what the review found, in 1 to {MAX_REASON_CHARACTERS} characters",
                               fields={"note": [f"1 to {MAX_REASON_CHARACTERS} characters"]})
    row = session.execute(select(RiskDecision).where(RiskDecision.id == decision_id)
                          .with_for_update()).scalar_one_or_none()
    if row is None:
        raise NotFound(f"no risk decision {decision_id}")
    if row.review_status != "open":
        raise AlreadyReviewed(f"decision {decision_id} was already {row.review_status} by {row.reviewed_by}")
    kind, status = REVIEW_ACTIONS[action]
    if (kind == "hold") != (row.action == "hold"):
        fitting = "released or reversed" if row.action == "hold" else "dismissed or confirmed"
        raise InvalidState(f"a {row.action} decision is {fitting}, not {status}",
                           fields={"action": ["not for this decision"]})
    lots = list(session.execute(select(PointLot.id, PointLot.earn_transaction_id, PointLot.points_earned)
                                .join(RiskHeldLot, RiskHeldLot.lot_id == PointLot.id)
                                .where(RiskHeldLot.decision_id == decision_id).order_by(PointLot.id)))
    if kind == "hold" and row.points > approval_threshold_points:
        proposer = row.proposed_by
        if proposer is None or row.proposed_action != action:
            session.execute(update(RiskDecision).where(RiskDecision.id == decision_id).values(
                proposed_action=action, proposed_by=actor, proposed_at=now, proposed_note=note))
            audit_log.append(session, actor=actor, action=f"risk.review.propose_{action}",
                             subject=f"risk-decision:{decision_id}", now=now,
                             before={"proposed_action": row.proposed_action, "proposed_by": proposer},
                             after={"proposed_action": action, "note": note})
            return Reviewed(decision_id, "proposed")
        if staff_people.same_person(session, proposer, actor):
            raise SameReviewer(f"{actor} proposed this {action}; another person must approve it")
    outcome = Reviewed(decision_id, status)
    # Settled before the lots move, so the activation below no longer sees them as under review.
    session.execute(update(RiskDecision).where(RiskDecision.id == decision_id).values(
        review_status=status, reviewed_by=actor, reviewed_at=now, review_note=note))
    if action == "release":
        ledger.activate_lots(session, lot_ids=[lot.id for lot in lots], now=now)
        outcome = Reviewed(decision_id, status, points_released=sum(lot.points_earned for lot in lots))
    elif action == "reverse":
        recovered = unrecovered = 0
        for lot in lots:
            taken = ledger.clawback_earn(session, earn_transaction_id=lot.earn_transaction_id,
                                         points=lot.points_earned, now=now)
            recovered += taken.points_recovered
            unrecovered += taken.points_unrecovered
        outcome = Reviewed(decision_id, status, points_reversed=recovered, points_unrecovered=unrecovered)
    audit_log.append(session, actor=actor, action=f"risk.review.{action}", subject=f"risk-decision:{decision_id}",
                     now=now, before={"review_status": "open"},
                     after={"review_status": status, "note": note, "points_released": outcome.points_released,
                            "points_reversed": outcome.points_reversed,
                            "points_unrecovered": outcome.points_unrecovered})
    return outcome


@dataclass(frozen=True, slots=True)
class DecisionView:
    """A decision as the review queue shows it."""

    decision_id: int
    token: str
    decided_at: datetime
    operation: str
    action: str
    policy_version: int | None
    partner_code: str | None
    terminal_code: str | None
    member_number: str | None
    reference: str | None
    points: int
    evidence: list[dict[str, Any]]
    review_status: str
    reviewed_by: str | None
    reviewed_at: datetime | None
    review_note: str | None
    proposed_action: str | None = None
    proposed_by: str | None = None
    proposed_at: datetime | None = None
    proposed_note: str | None = None


GROUPINGS = ("member", "terminal", "partner")


def decisions(session: Session, *, status: str | None = "open", member_number: str | None = None,
              partner_code: str | None = None, token: str | None = None, limit: int = 200) -> list[DecisionView]:
    """Decisions newest first, filtered by review status, member, partner or reference token."""
    if status is not None and status not in REVIEW_STATUSES:
        raise ValidationFailed("status is one of " + ", ".join(REVIEW_STATUSES),
                               fields={"status": list(REVIEW_STATUSES)})
    statement = (
        select(RiskDecision, Partner.code, Terminal.code, Member.member_number)
        .outerjoin(Partner, Partner.id == RiskDecision.partner_id)
        .outerjoin(Terminal, Terminal.id == RiskDecision.terminal_id)
        .outerjoin(Member, Member.id == RiskDecision.member_id)
        .order_by(RiskDecision.decided_at.desc(), RiskDecision.id.desc()).limit(limit)
    )
    if status is not None:
        statement = statement.where(RiskDecision.review_status == status)
    if member_number is not None:
        statement = statement.where(Member.member_number == member_number)
    if partner_code is not None:
        statement = statement.where(Partner.code == partner_code)
    if token is not None:
        statement = statement.where(RiskDecision.token == token.strip().upper())
    return [DecisionView(row.id, row.token, row.decided_at, row.operation, row.action, row.policy_version,
                         partner, terminal, member, row.reference, row.points, list(row.evidence), row.review_status,
                         row.reviewed_by, row.reviewed_at, row.review_note, row.proposed_action, row.proposed_by,
                         row.proposed_at, row.proposed_note)
            for row, partner, terminal, member in session.execute(statement)]


def cases(session: Session, *, by: str, status: str = "open") -> list[dict[str, Any]]:
    """Open decisions grouped by member, terminal or partner, most decisions first: the review queue's cases."""
    if by not in GROUPINGS:
        raise ValidationFailed("group by member, terminal or partner", fields={"by": list(GROUPINGS)})
    grouped: dict[str, dict[str, Any]] = {}
    for view in decisions(session, status=status, limit=5_000):
        key = {"member": view.member_number, "terminal": (f"{view.partner_code}/{view.terminal_code}"
                                                          if view.terminal_code else None),
               "partner": view.partner_code}[by]
        if key is None:
            continue
        case = grouped.setdefault(key, {"subject": key, "decisions": 0, "points": 0, "actions": {},
                                        "latest": view.decided_at, "decision_ids": []})
        case["decisions"] += 1
        case["points"] += view.points
        case["actions"][view.action] = case["actions"].get(view.action, 0) + 1
        case["latest"] = max(case["latest"], view.decided_at)
        case["decision_ids"].append(view.decision_id)
    return sorted(grouped.values(), key=lambda case: (-case["decisions"], -case["points"], case["subject"]))
