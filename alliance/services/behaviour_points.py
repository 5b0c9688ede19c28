"""Behaviour points: the rules per event type, events reported by partners, and referral awards.

A partner reports an event (``report_event``) once per (partner, event id): the event is
stored with what it gave, and the member's points are posted as an earn, issued by the
funder the rule names: the hub (from its marketing account), the reporting partner, or a
named partner, which pays its issue price in force on its next statement like any earn.
The same event id again answers the stored event; with a different content it is refused
(``EventAlreadyReported``). Caps and eligibility are normal answers: the event is stored
with 0 points (or fewer) and a reason. A referral is registered pending and awarded,
both sides, by ``award_referrals`` (a scheduled job) once the referred member's first
purchase has landed, so the purchase path does no extra work. Every posting carries the
memo ``behaviour:<event row id>``; rule changes are audited.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, cast

from sqlalchemy import CursorResult, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from alliance.domain import behaviour
from alliance.domain.behaviour import AMOUNT_EVENTS, EventType, Reason, Rule
from alliance.domain.cards import CardNotUsable
from alliance.domain.clock import add_months
from alliance.domain.credit import OVER_LIMIT, CreditLimitReached
from alliance.domain.errors import Conflict, NotFound, ValidationFailed
from alliance.domain.ledger import TransactionKind
from alliance.models import (
    BehaviourAward,
    BehaviourEvent,
    BehaviourRule,
    Card,
    Member,
    Partner,
    PartnerCredit,
    Purchase,
)
from alliance.services import audit_log, ledger

MEMO_PREFIX = "behaviour:"
MAX_CLOCK_AHEAD = timedelta(minutes=5)
MAX_EVENT_AGE = timedelta(days=90)
RULE_FIELDS = ("points", "per_amount_minor", "currency", "referred_points", "streak_days", "streak_bonus_points",
               "funded_by", "cap_per_day", "cap_per_month", "eligible_tiers", "min_tenure_months", "starts_at",
               "ends_at")


class EventAlreadyReported(Conflict):
    """The partner reported another event under the same event id."""

    code = "event_already_reported"


class AlreadyReferred(Conflict):
    """The member named as referred was already referred (by anyone)."""

    code = "already_referred"


@dataclass(frozen=True, slots=True)
class RuleView:
    """An event type's rule as staff and partners read it."""

    event_type: str
    points: int
    per_amount_minor: int | None
    currency: str | None
    referred_points: int
    streak_days: int | None
    streak_bonus_points: int
    funded_by: str
    cap_per_day: int | None
    cap_per_month: int | None
    eligible_tiers: list[str] | None
    min_tenure_months: int
    starts_at: datetime
    ends_at: datetime | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class EventReport:
    """One event as a partner reports it: the member by card or by member number."""

    event_id: str
    event_type: str
    occurred_at: datetime
    card_number: str | None = None
    member_number: str | None = None
    amount_minor: int | None = None
    currency: str | None = None
    referred_member_number: str | None = None


@dataclass(frozen=True, slots=True)
class AwardView:
    """One member's points for an event."""

    member_number: str
    side: str
    points: int
    streak_bonus_points: int
    funded_by: str
    awarded_at: datetime


@dataclass(frozen=True, slots=True)
class EventView:
    """A reported event and what it gave (``replayed``: it was stored by an earlier report)."""

    event_id: str
    event_type: str
    member_number: str
    occurred_at: datetime
    amount_minor: int | None
    currency: str | None
    referred_member_number: str | None
    status: str
    reason: str | None
    points_awarded: int
    streak_day: int | None
    reported_at: datetime
    awards: list[AwardView] = field(default_factory=list)
    replayed: bool = False


@dataclass(frozen=True, slots=True)
class Policy:
    """What awarding needs from the hub's settings: the alliance's time zone and how long points live."""

    time_zone: str
    expiry_months: int


# --- rules --------------------------------------------------------------------------------


def rules(session: Session) -> list[RuleView]:
    """Every event type's rule, in event type order."""
    rows = session.execute(select(BehaviourRule, Partner.code).outerjoin(
        Partner, Partner.id == BehaviourRule.funding_partner_id)).all()
    order = {event_type: index for index, event_type in enumerate(behaviour.EVENT_TYPES)}
    return sorted((_rule_view(row[0], row[1]) for row in rows), key=lambda view: order[view.event_type])


def rule_for(session: Session, event_type: str) -> RuleView:
    """One event type's rule."""
    row = session.execute(select(BehaviourRule, Partner.code).outerjoin(
        Partner, Partner.id == BehaviourRule.funding_partner_id).where(BehaviourRule.event_type == event_type)).first()
    if row is None:
        raise NotFound(f"no behaviour rule for {event_type!r}")
    return _rule_view(row[0], row[1])


def set_rule(session: Session, *, event_type: str, now: datetime, actor: str, mode: str | None = None,
             **values: Any) -> RuleView:
    """Create an event type's rule, or change the fields given of the existing one; audited.

    ``mode`` ``create`` refuses an event type that has a rule (409), ``change`` one that has none (404).

    ``funded_by`` is ``hub``, ``reporter`` (the partner reporting the event) or a partner's
    code. Changes apply to events reported from then on; events already stored keep what they gave.
    """
    unknown = set(values) - set(RULE_FIELDS)
    if unknown:
        raise ValidationFailed(f"unknown rule fields: {', '.join(sorted(unknown))}",
                               fields={name: ["unknown"] for name in sorted(unknown)})
    if event_type not in behaviour.EVENT_TYPES:
        raise ValidationFailed(f"event_type must be one of {', '.join(behaviour.EVENT_TYPES)}",
                               fields={"event_type": ["unknown"]})
    existing = session.execute(select(BehaviourRule).where(BehaviourRule.event_type == event_type)
                               .with_for_update()).scalar_one_or_none()
    if mode == "create" and existing is not None:
        raise Conflict(f"{event_type} has a rule already; change it instead")
    if mode == "change" and existing is None:
        raise NotFound(f"no behaviour rule for {event_type!r}")
    before = None if existing is None else _stored_values(session, existing)
    merged: dict[str, Any] = dict(before or {"points": None, "per_amount_minor": None, "currency": None,
                                              "referred_points": 0, "streak_days": None, "streak_bonus_points": 0,
                                              "funded_by": "hub", "cap_per_day": None, "cap_per_month": None,
                                              "eligible_tiers": None, "min_tenure_months": 0, "starts_at": now,
                                              "ends_at": None})
    merged.update(values)
    if merged["points"] is None:
        raise ValidationFailed("a new rule needs its points", fields={"points": ["required"]})
    if merged["starts_at"] is None:
        merged["starts_at"] = now
    behaviour.validate_rule(Rule(
        event_type=event_type, points=merged["points"], per_amount_minor=merged["per_amount_minor"],
        currency=merged["currency"], referred_points=merged["referred_points"], streak_days=merged["streak_days"],
        streak_bonus_points=merged["streak_bonus_points"], cap_per_day=merged["cap_per_day"],
        cap_per_month=merged["cap_per_month"], eligible_tiers=behaviour.tiers_of(merged["eligible_tiers"]),
        min_tenure_months=merged["min_tenure_months"], starts_at=merged["starts_at"], ends_at=merged["ends_at"]))
    funded_by, funding_partner_id = _funder(session, merged["funded_by"])
    row = {key: merged[key] for key in RULE_FIELDS if key != "funded_by"}
    row.update(funded_by=funded_by, funding_partner_id=funding_partner_id, updated_at=now)
    if row["eligible_tiers"] is not None:
        row["eligible_tiers"] = sorted(set(row["eligible_tiers"]), key=behaviour.TIERS.index)
    if existing is None:
        session.execute(insert(BehaviourRule).values(event_type=event_type, created_at=now, **row))
    else:
        session.execute(update(BehaviourRule).where(BehaviourRule.id == existing.id).values(**row)
                        .execution_options(synchronize_session=False))
        session.expire(existing)
    after = rule_for(session, event_type)
    action = "behaviour_rule.create" if before is None else "behaviour_rule.change"
    audit_log.append(session, actor=actor, action=action,
                     subject=f"behaviour_rule:{event_type}", now=now, before=_audit_values(before),
                     after=_audit_values(_view_values(after)))
    return after


def _funder(session: Session, funded_by: object) -> tuple[str, int | None]:
    if funded_by in ("hub", "reporter"):
        return str(funded_by), None
    if not isinstance(funded_by, str) or not funded_by:
        raise ValidationFailed("funded_by is hub, reporter or a partner's code", fields={"funded_by": ["unknown"]})
    partner = session.execute(select(Partner.id, Partner.status).where(Partner.code == funded_by)).first()
    if partner is None:
        raise NotFound(f"no partner {funded_by!r} to fund the rule")
    if partner.status != "active":
        raise ValidationFailed(f"partner {funded_by} is {partner.status}; only an active partner can fund points",
                               fields={"funded_by": ["not active"]})
    return "partner", partner.id


def _stored_values(session: Session, rule: BehaviourRule) -> dict[str, Any]:
    funder_code = None if rule.funding_partner_id is None else session.scalar(
        select(Partner.code).where(Partner.id == rule.funding_partner_id))
    return {"points": rule.points, "per_amount_minor": rule.per_amount_minor, "currency": rule.currency,
            "referred_points": rule.referred_points, "streak_days": rule.streak_days,
            "streak_bonus_points": rule.streak_bonus_points,
            "funded_by": funder_code if rule.funded_by == "partner" else rule.funded_by,
            "cap_per_day": rule.cap_per_day, "cap_per_month": rule.cap_per_month,
            "eligible_tiers": rule.eligible_tiers, "min_tenure_months": rule.min_tenure_months,
            "starts_at": rule.starts_at, "ends_at": rule.ends_at}


def _view_values(view: RuleView) -> dict[str, Any]:
    return {key: getattr(view, key) for key in RULE_FIELDS}


def _audit_values(values: dict[str, Any] | None) -> dict[str, Any] | None:
    if values is None:
        return None
    return {key: value.isoformat() if isinstance(value, datetime) else value for key, value in values.items()}


def _rule_view(rule: BehaviourRule, funder_code: str | None) -> RuleView:
    return RuleView(
        event_type=rule.event_type, points=rule.points, per_amount_minor=rule.per_amount_minor, currency=rule.currency,
        referred_points=rule.referred_points, streak_days=rule.streak_days,
        streak_bonus_points=rule.streak_bonus_points,
        funded_by=funder_code if rule.funded_by == "partner" and funder_code else rule.funded_by,
        cap_per_day=rule.cap_per_day, cap_per_month=rule.cap_per_month,
        eligible_tiers=None if rule.eligible_tiers is None else list(rule.eligible_tiers),
        min_tenure_months=rule.min_tenure_months, starts_at=rule.starts_at, ends_at=rule.ends_at,
        created_at=rule.created_at, updated_at=rule.updated_at)


def _domain_rule(rule: BehaviourRule) -> Rule:
    return Rule(event_type=rule.event_type, points=rule.points, per_amount_minor=rule.per_amount_minor,
                currency=rule.currency, referred_points=rule.referred_points, streak_days=rule.streak_days,
                streak_bonus_points=rule.streak_bonus_points, cap_per_day=rule.cap_per_day,
                cap_per_month=rule.cap_per_month, eligible_tiers=behaviour.tiers_of(rule.eligible_tiers),
                min_tenure_months=rule.min_tenure_months, starts_at=rule.starts_at, ends_at=rule.ends_at)


# --- reporting events ---------------------------------------------------------------------


def report_event(session: Session, *, partner_id: int, report: EventReport, policy: Policy,
                 now: datetime) -> EventView:
    """Store a partner's event once and award its points by the event type's rule.

    Errors (nothing stored): a malformed event (422), an unknown card or member (404), a
    blocked card or a closed membership (409), the same event id with a different event
    (409 ``event_already_reported``), a member referred already (409 ``already_referred``).
    Normal answers (stored, 0 points or fewer with a ``reason``): no rule in force, not
    eligible (tier, tenure), a cap reached, a second sign-in the same day, a referral
    waiting for the referred member's first purchase.
    """
    _check_shape(report, now)
    member_id = _member_of(session, report)
    referred_id = None
    if report.event_type == EventType.REFERRAL:
        assert report.referred_member_number is not None
        referred_id = session.scalar(select(Member.id).where(Member.member_number == report.referred_member_number))
        if referred_id is None:
            raise NotFound(f"no member {report.referred_member_number!r} to refer")
        if referred_id == member_id:
            raise ValidationFailed("a member cannot refer themselves", fields={"referred_member": ["the member"]})
    fingerprint = _fingerprint(report, member_id, referred_id)
    stored = _stored_event(session, partner_id, report.event_id)
    if stored is not None:
        if stored.fingerprint != fingerprint:
            raise EventAlreadyReported(f"event {report.event_id!r} was reported before with different content; "
                                       "report a new event under a new event_id")
        return _event_view(session, stored, replayed=True)
    # The member's lock serializes their events: caps and streaks read under it.
    locked = ledger.lock_member(session, member_id)
    if referred_id is not None and session.scalar(
            select(BehaviourEvent.id).where(BehaviourEvent.referred_member_id == referred_id)) is not None:
        raise AlreadyReferred(f"member {report.referred_member_number} was already referred")
    member = session.execute(select(Member.tier, Member.enrolled_at).where(Member.id == member_id)).one()
    day = behaviour.local_day(report.occurred_at, policy.time_zone)
    rule_row = session.execute(select(BehaviourRule).where(BehaviourRule.event_type == report.event_type)).scalar()
    rule = None if rule_row is None else _domain_rule(rule_row)
    streak = None
    if report.event_type == EventType.SIGN_IN:
        streak = _sign_in_streak(session, member_id, day)
    status, reason, points, bonus = "not_awarded", None, 0, 0
    if rule is None or not rule.in_force(report.occurred_at):
        reason = Reason.NO_RULE
    elif streak == 0:
        reason = Reason.ALREADY_SIGNED_IN
    else:
        if report.event_type in AMOUNT_EVENTS and report.currency != rule.currency:
            raise ValidationFailed(f"{report.event_type} amounts are in {rule.currency}",
                                   fields={"currency": [f"not {rule.currency}"]})
        reason = behaviour.ineligibility(rule, tier=member.tier, enrolled_at=member.enrolled_at,
                                         at=report.occurred_at)
        if reason is None and referred_id is not None:
            if session.scalar(select(Purchase.id).where(Purchase.member_id == referred_id).limit(1)) is not None:
                reason = Reason.NOT_NEW
            else:
                status, reason = "pending", Reason.AWAITING_PURCHASE
        elif reason is None:
            base = behaviour.base_points(rule, amount_minor=report.amount_minor)
            bonus = behaviour.streak_bonus(rule, streak or 0)
            if base + bonus == 0:
                reason = Reason.BELOW_UNIT
            else:
                assert rule_row is not None
                capped = _capped(session, rule, rule_row.id, member_id, day, base + bonus)
                points, reason = capped.points, capped.cut_by
                bonus = max(0, min(bonus, points - base)) if points < base + bonus else bonus
                status = "awarded" if points else "not_awarded"
    if points and rule_row is not None:
        _refuse_past_credit_limit(session, {"hub": None, "reporter": partner_id}.get(
            rule_row.funded_by, rule_row.funding_partner_id))
    try:
        event_row_id = session.execute(insert(BehaviourEvent).values(
            partner_id=partner_id, event_id=report.event_id, event_type=report.event_type, member_id=member_id,
            occurred_at=report.occurred_at, local_day=day, amount_minor=report.amount_minor,
            currency=report.currency, referred_member_id=referred_id,
            rule_id=None if rule_row is None else rule_row.id, status=status,
            reason=None if reason is None else reason.value, points_awarded=points, streak_day=streak,
            fingerprint=fingerprint, reported_at=now, awarded_at=now if points else None,
        ).returning(BehaviourEvent.id)).scalar_one()
    except IntegrityError as error:
        # Another request stored this event id (or referred this member) meanwhile.
        raise EventAlreadyReported(f"event {report.event_id!r} (or its referred member) was reported "
                                   "meanwhile") from error
    if points:
        assert rule_row is not None
        _award(session, rule_row, event_row_id=event_row_id, member=locked, side="member", points=points,
               bonus=bonus, reporter_id=partner_id, day=day, policy=policy, now=now)
    return _event_view(session, _event_row(session, event_row_id), replayed=False)


def _check_shape(report: EventReport, now: datetime) -> None:
    if report.event_type not in behaviour.EVENT_TYPES:
        raise ValidationFailed(f"event_type must be one of {', '.join(behaviour.EVENT_TYPES)}",
                               fields={"event_type": ["unknown"]})
    if (report.card_number is None) == (report.member_number is None):
        raise ValidationFailed("name the member by card_number or member_number (one of them)",
                               fields={"card_number": ["card_number or member_number"]})
    if report.event_type in AMOUNT_EVENTS:
        if report.amount_minor is None or report.currency is None:
            raise ValidationFailed(f"a {report.event_type} carries amount_minor and currency",
                                   fields={"amount_minor": ["required"]})
    elif report.amount_minor is not None or report.currency is not None:
        raise ValidationFailed(f"a {report.event_type} carries no amount",
                               fields={"amount_minor": ["only for recharge and bill_payment"]})
    if (report.event_type == EventType.REFERRAL) != (report.referred_member_number is not None):
        raise ValidationFailed("a referral names the referred member (and only a referral does)",
                               fields={"referred_member": ["required for a referral, else not allowed"]})
    if report.occurred_at > now + MAX_CLOCK_AHEAD:
        raise ValidationFailed("occurred_at is in the future", fields={"occurred_at": ["in the future"]})
    if report.occurred_at < now - MAX_EVENT_AGE:
        raise ValidationFailed(f"events are reported within {MAX_EVENT_AGE.days} days",
                               fields={"occurred_at": ["too old"]})


def _member_of(session: Session, report: EventReport) -> int:
    if report.card_number is not None:
        card = session.execute(select(Card.member_id, Card.status).where(
            Card.card_number == report.card_number)).first()
        if card is None:
            raise NotFound("no such card")
        if card.status != "active":
            raise CardNotUsable(f"the card is {card.status}")
        return int(card.member_id)
    member_id = session.scalar(select(Member.id).where(Member.member_number == report.member_number))
    if member_id is None:
        raise NotFound(f"no member {report.member_number!r}")
    return int(member_id)


def _fingerprint(report: EventReport, member_id: int, referred_id: int | None) -> str:
    occurred_at = report.occurred_at.astimezone(timezone.utc).isoformat()
    content = {"type": report.event_type, "member": member_id, "occurred_at": occurred_at,
               "amount_minor": report.amount_minor, "currency": report.currency, "referred": referred_id}
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()


def _stored_event(session: Session, partner_id: int, event_id: str) -> BehaviourEvent | None:
    return session.execute(select(BehaviourEvent).where(
        BehaviourEvent.partner_id == partner_id, BehaviourEvent.event_id == event_id)).scalar_one_or_none()


def _event_row(session: Session, event_row_id: int) -> BehaviourEvent:
    return session.execute(select(BehaviourEvent).where(BehaviourEvent.id == event_row_id)
                           .execution_options(populate_existing=True)).scalar_one()


def _sign_in_streak(session: Session, member_id: int, day: Any) -> int:
    """The consecutive day of a sign-in on ``day``: 0 when one was counted that day already."""
    counted = dict(session.execute(select(BehaviourEvent.local_day, BehaviourEvent.streak_day).where(
        BehaviourEvent.member_id == member_id, BehaviourEvent.event_type == EventType.SIGN_IN.value,
        BehaviourEvent.local_day.in_([day, day - timedelta(days=1)]), BehaviourEvent.streak_day > 0)).all())
    if day in counted:
        return 0
    return behaviour.streak_day(counted.get(day - timedelta(days=1)))


def _capped(session: Session, rule: Rule, rule_id: int, member_id: int, day: Any, points: int) -> behaviour.Capped:
    if rule.cap_per_day is None and rule.cap_per_month is None:
        return behaviour.Capped(points=points, cut_by=None)
    first, last = behaviour.month_of(day)
    earned = select(func.coalesce(func.sum(BehaviourAward.points), 0)).where(
        BehaviourAward.member_id == member_id, BehaviourAward.rule_id == rule_id)
    today = int(session.scalar(earned.where(BehaviourAward.local_day == day)) or 0)
    month = int(session.scalar(earned.where(BehaviourAward.local_day >= first, BehaviourAward.local_day <= last))
                or 0)
    return behaviour.apply_caps(rule, points, earned_today=today, earned_this_month=month)


def _refuse_past_credit_limit(session: Session, funder_id: int | None) -> None:
    """Refuse an event whose points a partner past its credit limit would fund (nothing is stored)."""
    if funder_id is not None and session.scalar(
            select(PartnerCredit.state).where(PartnerCredit.partner_id == funder_id)) == OVER_LIMIT:
        raise CreditLimitReached()


def _award(session: Session, rule: BehaviourRule, *, event_row_id: int, member: ledger.MemberAccounts, side: str,
           points: int, bonus: int, reporter_id: int, day: Any, policy: Policy, now: datetime) -> None:
    """Post ``points`` to the member, issued by the rule's funder, and record the award."""
    funder_id = {"hub": None, "reporter": reporter_id}.get(rule.funded_by, rule.funding_partner_id)
    earned = ledger.earn(session, member_id=member.member_id, partner_id=funder_id, points=points, now=now,
                         expires_at=add_months(now, policy.expiry_months), memo=f"{MEMO_PREFIX}{event_row_id}",
                         locked=member, kind=TransactionKind.BEHAVIOUR_AWARD)
    session.execute(insert(BehaviourAward).values(
        event_id=event_row_id, member_id=member.member_id, rule_id=rule.id, side=side, points=points,
        streak_bonus_points=bonus, funder_partner_id=funder_id, transaction_id=earned.transaction_id,
        local_day=day, awarded_at=now))


def _event_view(session: Session, event: BehaviourEvent, *, replayed: bool) -> EventView:
    numbers = dict(session.execute(select(Member.id, Member.member_number).where(
        Member.id.in_([event.member_id] + ([event.referred_member_id] if event.referred_member_id else [])))).all())
    awards = session.execute(
        select(BehaviourAward, Member.member_number, Partner.code)
        .join(Member, Member.id == BehaviourAward.member_id)
        .outerjoin(Partner, Partner.id == BehaviourAward.funder_partner_id)
        .where(BehaviourAward.event_id == event.id).order_by(BehaviourAward.id)).all()
    return EventView(
        event_id=event.event_id, event_type=event.event_type, member_number=numbers[event.member_id],
        occurred_at=event.occurred_at, amount_minor=event.amount_minor, currency=event.currency,
        referred_member_number=None if event.referred_member_id is None else numbers[event.referred_member_id],
        status=event.status, reason=event.reason, points_awarded=event.points_awarded, streak_day=event.streak_day,
        reported_at=event.reported_at, replayed=replayed,
        awards=[AwardView(member_number=number, side=award.side, points=award.points,
                          streak_bonus_points=award.streak_bonus_points, funded_by=code or "hub",
                          awarded_at=award.awarded_at) for award, number, code in awards])


def events_of_member(session: Session, *, member_number: str, limit: int = 100) -> list[EventView]:
    """A member's reported events, newest first."""
    member_id = session.scalar(select(Member.id).where(Member.member_number == member_number))
    if member_id is None:
        raise NotFound(f"no member {member_number!r}")
    rows = session.scalars(select(BehaviourEvent).where(BehaviourEvent.member_id == member_id)
                           .order_by(BehaviourEvent.occurred_at.desc(), BehaviourEvent.id.desc())
                           .limit(min(max(limit, 1), 500))).all()
    return [_event_view(session, row, replayed=False) for row in rows]


# --- referrals ----------------------------------------------------------------------------


def award_referrals(session: Session, *, now: datetime, limit: int, policy: Policy) -> int:
    """Award pending referrals whose referred member has made a first purchase, both sides; returns how many.

    Idempotent and safe on several hosts: a referral leaves ``pending`` in a conditional
    update under both members' locks, and each side's award is unique per event and member.
    The rule as it stands now gives the points, counted against the caps of today.
    """
    due = session.execute(
        select(BehaviourEvent.id, BehaviourEvent.member_id, BehaviourEvent.referred_member_id)
        .where(BehaviourEvent.status == "pending", BehaviourEvent.event_type == EventType.REFERRAL.value,
               select(Purchase.id).where(Purchase.member_id == BehaviourEvent.referred_member_id).exists())
        .order_by(BehaviourEvent.id).limit(limit)).all()
    awarded = 0
    for event_row_id, referrer_id, referred_or_none in due:
        referred_id = cast(int, referred_or_none)
        # Member order is the lock order of every multi-member transaction.
        locks = {member_id: ledger.lock_member(session, member_id, require_active=False)
                 for member_id in sorted((referrer_id, referred_id))}
        event = _event_row(session, event_row_id)
        rule = session.execute(select(BehaviourRule).where(BehaviourRule.id == event.rule_id)).scalar_one()
        domain_rule = _domain_rule(rule)
        day = behaviour.local_day(now, policy.time_zone)
        sides = []
        reason = None
        for side, member_id, points in (("referrer", referrer_id, rule.points),
                                        ("referred", referred_id, rule.referred_points)):
            active = session.scalar(select(Member.status).where(Member.id == member_id)) == "active"
            capped = _capped(session, domain_rule, rule.id, member_id, day, points) if points and active else None
            if capped is not None and capped.points:
                sides.append((side, member_id, capped.points))
            if capped is not None and capped.cut_by is not None and side == "referrer":
                reason = capped.cut_by
        referrer_points = sum(points for side, _, points in sides if side == "referrer")
        changed = cast("CursorResult[Any]", session.execute(
            update(BehaviourEvent).where(BehaviourEvent.id == event_row_id, BehaviourEvent.status == "pending")
            .values(status="awarded" if sides else "not_awarded", reason=None if reason is None else reason.value,
                    points_awarded=referrer_points, awarded_at=now)
            .execution_options(synchronize_session=False))).rowcount
        if changed != 1:
            continue
        for side, member_id, points in sides:
            _award(session, rule, event_row_id=event_row_id, member=locks[member_id], side=side, points=points,
                   bonus=0, reporter_id=event.partner_id, day=day, policy=policy, now=now)
        awarded += 1
    return awarded
