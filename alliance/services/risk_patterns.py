"""Risk pattern rules on the request path: the figures each pattern reads, and the hooks that decide on them.

Each hook runs inside the operation's own transaction, after the velocity limits
(``alliance.services.risk``), and keeps what it decides the same way: a flag or a hold is
kept in ``risk_decisions`` (``risk.record`` + ``risk.keep``) with one evidence item naming
the pattern and the figures it saw, so the review queue shows it beside the velocity
decisions; a refusal raises ``RiskDeclined``, whose record is kept although the operation
is taken back (``AllianceError.kept``).

- ``on_redemption`` (redemption authorize): the quick burn, one read of the member's
  spendable lots (no rows unless one was earned at another partner within the pattern's
  minutes), plus a count and a row in ``risk_pattern_sightings`` only when the
  redemption draws such points.
- ``on_earns`` (purchase reports, single and batch, after the velocity decision): the
  split purchase and the amount outlier, from **one** statement for the whole report (the
  partner's amount profile by primary key, its rule's per-purchase cap, and the cards'
  purchases at their tills within the pattern's minutes when there is a cap).
- ``on_refund`` (purchase refund): a statement only when some points could not be clawed
  back.
- ``on_transfer`` (member transfer): one count of the receiver's recent new senders.

The rules' terms are ``PATTERNS`` unless an operator changed them (``set_rule``, audited),
read through a process copy reloaded every ``RELOAD_INTERVAL_S``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    Numeric,
    cast,
    delete,
    distinct,
    exists,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.orm import Session, aliased

from alliance.domain import risk_patterns as patterns
from alliance.domain.errors import AllianceError, InsufficientPoints, NotFound, ValidationFailed
from alliance.domain.ledger import LotSlice, LotState, allocate_soonest_expiry_first
from alliance.domain.risk import Action, Decision
from alliance.domain.risk_patterns import PATTERNS, Finding, Pattern, PatternRule
from alliance.models import (
    Member,
    MemberTransfer,
    Partner,
    PartnerAmountProfile,
    PartnerEarnRule,
    PointLot,
    Purchase,
    PurchaseRefund,
    RiskPatternRule,
    RiskPatternSighting,
)
from alliance.models.base import integer_sum
from alliance.services import audit_log, risk
from alliance.services.process_cache import ProcessCache
from alliance.storage.adapters import storage_for

RELOAD_INTERVAL_S = 30
JOB_NAME = "profile-partner-amounts"
PATTERN_RULES_LOCK_KEY = 7_150_025


# -- the rules -------------------------------------------------------------------------

def read_rules(session: Session) -> dict[Pattern, PatternRule]:
    """Every pattern's rule in force: an operator's stored change, else the built-in one."""
    rules = dict(PATTERNS)
    for row in session.scalars(select(RiskPatternRule)):
        try:
            pattern = Pattern(row.name)
        except ValueError:
            continue
        rules[pattern] = PatternRule(pattern, {**PATTERNS[pattern].terms, **row.terms}, Action.named(row.action),
                                     row.enabled)
    return rules


_rules = ProcessCache(read_rules, reload_interval_s=RELOAD_INTERVAL_S)


def rules_in_force(session: Session) -> list[PatternRule]:
    """Every pattern's rule as it applies now, read from the database (the request path uses the process's copy)."""
    return list(read_rules(session).values())


def _rule(session: Session, pattern: Pattern) -> PatternRule | None:
    rule = _rules.get(session)[pattern]
    return rule if rule.enabled else None


def set_rule(session: Session, *, name: str, terms: Mapping[str, Any] | None = None, action: str | None = None,
             enabled: bool | None = None, now: datetime, actor: str, reason: str | None = None) -> PatternRule:
    """Change a pattern's terms (those named; the others stay), action or switch; audited, with ``reason`` when
    given (1 to ``risk.MAX_REASON_CHARACTERS`` characters).

    Every process applies the change within ``RELOAD_INTERVAL_S``.
    """
    if reason is not None:
        reason = reason.strip()
        if not reason or len(reason) > risk.MAX_REASON_CHARACTERS:
            raise ValidationFailed(f"say why, in 1 to {risk.MAX_REASON_CHARACTERS} characters",
                                   fields={"reason": [f"1 to {risk.MAX_REASON_CHARACTERS} characters"]})
    # One change at a time: two operators changing different terms of a rule each keep the other's.
    storage_for(session).lock(session, PATTERN_RULES_LOCK_KEY)
    current = read_rules(session).get(Pattern(name)) if name in {p.value for p in Pattern} else None
    changed = patterns.rule_from_data(
        name, terms={**(current.terms if current else {}), **(terms or {})},
        action=action if action is not None else (current.action.word if current else None),
        enabled=enabled if enabled is not None else (current.enabled if current else True))
    assert current is not None
    values = {"terms": dict(changed.terms), "action": changed.action.word, "enabled": changed.enabled,
              "updated_at": now, "updated_by": actor}
    if session.get(RiskPatternRule, changed.name.value) is None:
        session.execute(insert(RiskPatternRule).values(name=changed.name.value, **values))
    else:
        session.execute(update(RiskPatternRule).where(RiskPatternRule.name == changed.name.value).values(**values))
    audit_log.append(session, actor=actor, action="risk.pattern.set", subject=f"risk-pattern:{changed.name.value}",
                     now=now, before=current.as_data(),
                     after={**changed.as_data(), **({"reason": reason} if reason is not None else {})})
    _rules.forget(session)
    return changed


@dataclass(frozen=True, slots=True)
class RuleView:
    """A pattern's rule in force as an operator reads it: what it may be changed to, and who changed it last."""

    rule: PatternRule
    term_minimums: Mapping[str, int]
    actions: tuple[str, ...]
    default: PatternRule
    updated_by: str | None
    updated_at: datetime | None

    def as_data(self) -> dict[str, Any]:
        """The view as the back office and ``alliance risk patterns show --json`` give it."""
        return {**self.rule.as_data(), "term_minimums": dict(self.term_minimums), "term_maximum": patterns.MAX_TERM,
                "actions": list(self.actions), "default_terms": dict(self.default.terms),
                "default_action": self.default.action.word, "updated_by": self.updated_by,
                "updated_at": self.updated_at}


def rule_views(session: Session) -> list[RuleView]:
    """Every pattern's rule in force, in ``Pattern`` order, with its accepted terms and actions and, when an
    operator changed it, who did and when (read from the database, not the process's copy)."""
    rules = read_rules(session)
    changed = {name: (updated_by, updated_at) for name, updated_by, updated_at in session.execute(
        select(RiskPatternRule.name, RiskPatternRule.updated_by, RiskPatternRule.updated_at))}
    return [RuleView(rules[pattern], patterns.TERMS[pattern],
                     tuple(sorted(action.word for action in patterns.ACTIONS[pattern])), PATTERNS[pattern],
                     *changed.get(pattern.value, (None, None))) for pattern in Pattern]


def rule_view(session: Session, name: str) -> RuleView:
    """One pattern's view (``rule_views``); ``NotFound`` for a name no pattern has."""
    found = next((view for view in rule_views(session) if view.rule.name.value == name), None)
    if found is None:
        raise NotFound(f"no pattern {name!r}; the patterns are " + ", ".join(p.value for p in Pattern))
    return found


def change_rule(session: Session, *, name: str, terms: Mapping[str, Any] | None = None, action: str | None = None,
                enabled: bool | None = None, reason: str, now: datetime, actor: str) -> RuleView:
    """An operator's change to a pattern (``set_rule``, its reason in the audit entry), answered as the stored view.

    ``NotFound`` for an unknown pattern; ``ValidationFailed`` naming each problem, nothing
    stored, for a term it does not have, a value out of range, an action that does not fit
    or an empty reason.
    """
    if name not in {pattern.value for pattern in Pattern}:
        raise NotFound(f"no pattern {name!r}; the patterns are " + ", ".join(p.value for p in Pattern))
    if not terms and action is None and enabled is None:
        raise ValidationFailed("name what changes: terms, action or enabled",
                               fields={"terms": ["at least one of terms, action or enabled"]})
    set_rule(session, name=name, terms=terms, action=action, enabled=enabled, now=now, actor=actor, reason=reason)
    return rule_view(session, name)


# -- keeping a finding -----------------------------------------------------------------

def _decided(session: Session, finding: Finding, *, operation: str, subject: risk.Subject, points: int,
             reference: str | None, now: datetime) -> risk.Decided:
    return risk.record(session, operation=operation, action=finding.action, subject=subject, points=points,
                       reference=reference, evidence=[finding.evidence], now=now)


def _keep_or_refuse(session: Session, decided: risk.Decided,
                    also: Callable[[Session], None] | None = None) -> None:
    """Keep a flag now; for a refusal raise it, its record (and ``also``) kept after the rollback."""
    refusal = decided.refusal()
    if refusal is None:
        risk.keep(session, decided)
        return

    def kept(kept_in: Session) -> None:
        if also is not None:
            also(kept_in)
        risk.keep(kept_in, decided)

    refusal.kept = kept
    raise refusal


# -- quick burn (redemption authorize) -------------------------------------------------

def on_redemption(session: Session, *, partner_id: int, terminal_id: int | None, member_id: int, card_id: int,
                  tier: str | None, points: int, reference: str, now: datetime) -> None:
    """The quick-burn pattern on a redemption about to be authorized; raises ``RiskDeclined`` if it refuses.

    The redemption draws from the member's spendable lots soonest expiry first; points
    among them earned at another partner within ``earned_within_minutes`` are a quick
    burn, remembered per pair of tills (the earning one and this one). When that pair has
    seen it on ``cards`` different cards within ``window_minutes`` (this one included),
    the redemption is flagged (or refused).
    """
    rule = _rule(session, Pattern.QUICK_BURN)
    if rule is None:
        return
    spendable = (PointLot.member_id == member_id, PointLot.state == LotState.ACTIVE.value,
                 PointLot.points_remaining > 0)
    recent = aliased(PointLot)
    # Every spendable lot (the order the redemption draws them in needs them all), but only when one of them was
    # earned at another partner within the minutes: most redemptions read no rows.
    rows = session.execute(
        select(PointLot.id, PointLot.expires_at, PointLot.points_remaining, PointLot.earned_at, PointLot.partner_id,
               Partner.code, Purchase.terminal_id)
        .outerjoin(Purchase, Purchase.earn_transaction_id == PointLot.earn_transaction_id)
        .outerjoin(Partner, Partner.id == PointLot.partner_id)
        .where(*spendable, exists().where(
            recent.member_id == member_id, recent.state == LotState.ACTIVE.value, recent.points_remaining > 0,
            recent.partner_id != partner_id,
            recent.earned_at >= now - timedelta(minutes=rule.term("earned_within_minutes"))))).all()
    if not rows:
        return
    try:
        allocation = allocate_soonest_expiry_first([LotSlice(row[0], row[1], row[2]) for row in rows], points)
    except InsufficientPoints:
        return  # the ledger refuses it
    by_id = {row[0]: row for row in rows}
    drawn = [patterns.DrawnLot(lot_id, taken, by_id[lot_id][3], by_id[lot_id][4], by_id[lot_id][5],
                               by_id[lot_id][6]) for lot_id, taken in allocation]
    burn = patterns.quick_burn(drawn, rule, partner_id=partner_id, now=now)
    if burn is None:
        return
    subject = burn.subject(partner_id=partner_id, terminal_id=terminal_id)
    others = session.scalar(select(func.count(distinct(RiskPatternSighting.card_id))).where(
        RiskPatternSighting.pattern == rule.name.value, RiskPatternSighting.subject == subject,
        RiskPatternSighting.seen_at > now - timedelta(minutes=rule.term("window_minutes")),
        RiskPatternSighting.card_id != card_id)) or 0

    def sighted(into: Session) -> None:
        into.execute(insert(RiskPatternSighting).values(pattern=rule.name.value, subject=subject, card_id=card_id,
                                                        seen_at=now))

    finding = patterns.quick_burn_finding(burn, rule, cards=others + 1, subject=subject)
    if finding is None:
        sighted(session)
        return
    decided = _decided(session, finding, operation="redeem", points=points, reference=reference, now=now,
                       subject=risk.Subject(partner_id=partner_id, terminal_id=terminal_id, member_id=member_id,
                                            card_id=card_id, tier=tier))
    if decided.refusal() is None:
        sighted(session)
    _keep_or_refuse(session, decided, also=sighted)


# -- refund abuse (purchase refund) ----------------------------------------------------

def on_refund(session: Session, *, purchase: Purchase, refund_id: str, points_recovered: int,
              points_unrecovered: int, now: datetime) -> None:
    """Decide a purchase refund some of whose points could not be clawed back (spent already): flagged, or, as
    the member's repeat within ``window_days`` (``patterns.refund_abuse``), the rule's action (flag by default; under
    refuse, ``RiskDeclined`` is raised and the refund taken back). The finding says how many such refunds the member had
    within the window, this one included."""
    if points_unrecovered <= 0:
        return
    rule = _rule(session, Pattern.REFUND_ABUSE)
    if rule is None:
        return
    earlier = session.scalar(select(func.count()).select_from(PurchaseRefund).join(
        Purchase, Purchase.id == PurchaseRefund.purchase_id).where(
        Purchase.member_id == purchase.member_id, PurchaseRefund.points_unrecovered > 0,
        PurchaseRefund.created_at > now - timedelta(days=rule.term("window_days")))) or 0
    finding = patterns.refund_abuse(rule, points_unrecovered=points_unrecovered, points_recovered=points_recovered,
                                    receipt_id=purchase.receipt_id, earlier_refunds=earlier)
    assert finding is not None
    _keep_or_refuse(session, _decided(
        session, finding, operation="refund", points=points_unrecovered, reference=refund_id, now=now,
        subject=risk.Subject(partner_id=purchase.partner_id, terminal_id=purchase.terminal_id,
                             member_id=purchase.member_id, card_id=purchase.card_id)))


# -- transfer chains (member transfer) -------------------------------------------------

def on_transfer(session: Session, *, sender: Member, receiver: Member, points: int, now: datetime) -> None:
    """The transfer-chain pattern on a transfer about to be made; raises ``RiskDeclined`` if it refuses.

    Counts the distinct members enrolled less than ``enrolled_within_days`` ago who sent the
    receiver points within ``window_days``; when this transfer's sender is one more and that
    makes ``senders``, the transfer is refused (or flagged). The decision is the receiver's.
    """
    rule = _rule(session, Pattern.TRANSFER_CHAIN)
    if rule is None:
        return
    enrolled_since = now - timedelta(days=rule.term("enrolled_within_days"))
    if sender.enrolled_at <= enrolled_since:
        return
    senders = aliased(Member)
    earlier = session.scalar(select(func.count(distinct(MemberTransfer.from_member_id))).join(
        senders, senders.id == MemberTransfer.from_member_id).where(
        MemberTransfer.to_member_id == receiver.id, MemberTransfer.from_member_id != sender.id,
        MemberTransfer.created_at > now - timedelta(days=rule.term("window_days")),
        senders.enrolled_at > enrolled_since)) or 0
    finding = patterns.transfer_chain(rule, new_senders=earlier, sender_is_new=True)
    if finding is None:
        return
    finding = Finding(finding.action, {**finding.evidence, "from_member": sender.member_number,
                                       "to_member": receiver.member_number})
    _keep_or_refuse(session, _decided(session, finding, operation="transfer", points=points, reference=None,
                                      now=now, subject=risk.Subject(partner_id=None, member_id=receiver.id,
                                                                    tier=receiver.tier)))


# -- split purchases and amount outliers (purchase reports) ----------------------------

@dataclass(frozen=True, slots=True)
class PartnerFacts:
    """What the earn patterns read of every partner: its amount profile and its earn rules' per-purchase caps."""

    profiles: Mapping[int, patterns.Profile]
    # Per partner, (effective from, cap or None) of each earn rule, newest first.
    caps: Mapping[int, tuple[tuple[datetime, int | None], ...]]

    def cap_at(self, partner_id: int, moment: datetime) -> int | None:
        """The per-purchase cap of the partner's rule in force at ``moment`` (None: uncapped)."""
        return next((cap for since, cap in self.caps.get(partner_id, ()) if since <= moment), None)


def read_partner_facts(session: Session) -> PartnerFacts:
    """Every partner's amount profile and earn-rule caps, read now."""
    profiles = {partner_id: patterns.Profile(int(count), int(mean), int(stddev))
                for partner_id, count, mean, stddev in session.execute(select(
                    PartnerAmountProfile.partner_id, PartnerAmountProfile.purchases, PartnerAmountProfile.mean_minor,
                    PartnerAmountProfile.stddev_minor))}
    caps: dict[int, list[tuple[datetime, int | None]]] = {}
    for partner_id, since, cap in session.execute(select(
            PartnerEarnRule.partner_id, PartnerEarnRule.effective_from, PartnerEarnRule.per_purchase_cap_points)
            .order_by(PartnerEarnRule.partner_id, PartnerEarnRule.effective_from.desc())):
        caps.setdefault(partner_id, []).append((since, cap))
    return PartnerFacts(profiles, {partner_id: tuple(rows) for partner_id, rows in caps.items()})


# Profiles change once a day and earn rules rarely: each process keeps a copy, read again every 30 seconds, so an
# earn reads nothing for the patterns unless its partner caps a purchase (then the recent purchases at its tills).
_partner_facts = ProcessCache(read_partner_facts, reload_interval_s=RELOAD_INTERVAL_S)


def _earn_facts(session: Session, *, partner_id: int, planned: Sequence[Any], split: PatternRule | None,
                outlier: PatternRule | None, now: datetime) -> tuple[patterns.Profile | None, int | None,
                                                                    list[tuple[int, int, datetime, int, int]]]:
    """The partner's amount profile and per-purchase cap (this process's copy), and, under a split rule when the
    partner's rule in force caps a purchase, each earlier purchase of the report's cards at its tills within the
    pattern's minutes before the report's earliest purchase (one statement)."""
    facts = _partner_facts.get(session)
    if partner_id not in facts.caps:
        # A partner newer than this process's copy: read the copy again (once per new partner).
        _partner_facts.forget(session)
        facts = _partner_facts.get(session)
    profile = facts.profiles.get(partner_id) if outlier is not None else None
    cap_points = facts.cap_at(partner_id, now)
    pairs = [(decision.holder.card_id, decision.terminal_id) for decision in planned
             if decision.terminal_id is not None]
    recent: list[tuple[int, int, datetime, int, int]] = []
    if split is not None and pairs and cap_points is not None:
        since = min(decision.item.purchased_at for decision in planned) - timedelta(
            minutes=split.term("window_minutes"))
        for card_id, terminal_id, purchased_at, amount, points in session.execute(
                select(Purchase.card_id, Purchase.terminal_id, Purchase.purchased_at, Purchase.amount_minor,
                       Purchase.points_partner).where(
                    Purchase.member_id.in_(sorted({decision.holder.member_id for decision in planned})),
                    Purchase.card_id.in_(sorted({card for card, _ in pairs})),
                    Purchase.terminal_id.in_(sorted({terminal for _, terminal in pairs})),
                    Purchase.partner_id == partner_id, Purchase.purchased_at > since)):
            recent.append((int(card_id), int(terminal_id or 0), purchased_at, int(amount), int(points)))
    return profile, cap_points, recent


def on_earns(session: Session, *, partner_id: int, partner_code: str, planned: Sequence[Any],
             assessed: list[Any], now: datetime) -> list[Any]:
    """A report's purchases (``planned``, as the velocity limits decided them: ``assessed``) under the split-purchase
    and amount-outlier patterns, in order; each as planned, with its decision made stricter, or refused.

    A purchase the velocity limits refused is left as it is. A pattern's finding is added
    to the purchase's velocity decision (the stricter action; both evidences), so a
    purchase has one decision. A purchase that goes ahead counts for the later ones of its
    card and till, as it would had it been reported alone before them.
    """
    split = _rule(session, Pattern.SPLIT_PURCHASE)
    outlier = _rule(session, Pattern.AMOUNT_OUTLIER)
    if not planned or (split is None and outlier is None):
        return assessed
    profile, cap, recent = _earn_facts(session, partner_id=partner_id, planned=planned, split=split,
                                       outlier=outlier, now=now)
    result: list[Any] = []
    for decision, outcome in zip(planned, assessed, strict=True):
        if isinstance(outcome, AllianceError):
            result.append(outcome)
            continue
        item, holder, breakdown = decision.item, decision.holder, decision.breakdown
        findings = []
        if split is not None and cap is not None and decision.terminal_id is not None:
            window = timedelta(minutes=split.term("window_minutes"))
            earlier = [row for row in recent if (row[0], row[1]) == (holder.card_id, decision.terminal_id)
                       and item.purchased_at - window < row[2] <= item.purchased_at]
            finding = patterns.split_purchase(
                split, recent=patterns.Recent(len(earlier), sum(row[3] for row in earlier),
                                              sum(row[4] for row in earlier)),
                amount_minor=item.amount_minor, points=breakdown.rule_points, cap_points=cap)
            if finding is not None:
                findings.append(finding)
        if outlier is not None:
            finding = patterns.amount_outlier(outlier, profile, amount_minor=item.amount_minor)
            if finding is not None:
                findings.append(finding)
        if findings:
            outcome = _with_findings(session, outcome, findings, partner_id=partner_id, partner_code=partner_code,
                                     now=now)
        if not isinstance(outcome, AllianceError) and decision.terminal_id is not None:
            recent.append((holder.card_id, decision.terminal_id, item.purchased_at, item.amount_minor,
                           breakdown.partner_points))
        result.append(outcome)
    return result


def _with_findings(session: Session, planned: Any, findings: Sequence[Finding], *, partner_id: int,
                   partner_code: str, now: datetime) -> Any:
    """A planned purchase whose decision takes the findings in: as planned with it, or its refusal (kept later)."""
    velocity: risk.Decided | None = planned.risk
    action = max([finding.action for finding in findings]
                 + ([velocity.decision.action] if velocity is not None else []))
    evidence = [finding.evidence for finding in findings]
    if velocity is not None and velocity.record is not None:
        decided = risk.Decided(Decision(action, velocity.decision.passed), {
            **velocity.record, "action": action.word, "evidence": [*velocity.record["evidence"], *evidence]})
    else:
        breakdown = planned.breakdown
        decided = risk.record(session, operation="earn", action=action, now=now, evidence=evidence,
                              subject=risk.Subject(partner_id=partner_id, partner_code=partner_code,
                                                   terminal_id=planned.terminal_id,
                                                   member_id=planned.holder.member_id,
                                                   card_id=planned.holder.card_id, tier=planned.holder.tier),
                              points=breakdown.partner_points + breakdown.hub_points + breakdown.joint_points,
                              reference=planned.item.receipt_id)
    refusal = decided.refusal()
    if refusal is not None:
        def kept(kept_in: Session) -> None:
            risk.keep(kept_in, decided)

        refusal.kept = kept
        return refusal
    return replace(planned, risk=decided)


# -- the partners' amount profiles (a daily job) ---------------------------------------

def profile_partner_amounts(session: Session, *, now: datetime, limit: int) -> int:
    """Recompute every partner's purchase amounts over the amount-outlier pattern's ``profile_days``: count, mean,
    standard deviation. Returns how many partners have a profile; a partner with no purchases there has none."""
    rule = read_rules(session)[Pattern.AMOUNT_OUTLIER]
    since = now - timedelta(days=rule.term("profile_days"))
    rows = session.execute(select(Purchase.partner_id, func.count(), integer_sum(Purchase.amount_minor),
                                  func.sum(cast(Purchase.amount_minor, Numeric) * Purchase.amount_minor))
                           .where(Purchase.purchased_at > since).group_by(Purchase.partner_id)).all()
    session.execute(delete(PartnerAmountProfile))
    profiles = []
    for partner_id, count, total, squares in rows:
        profile = patterns.profile_of(count=int(count), total=int(total), total_of_squares=int(squares or 0))
        profiles.append({"partner_id": partner_id, "purchases": profile.purchases, "mean_minor": profile.mean_minor,
                         "stddev_minor": profile.stddev_minor, "since": since, "computed_at": now})
    if profiles:
        session.execute(insert(PartnerAmountProfile), profiles)
    _partner_facts.forget(session)
    return len(profiles)
