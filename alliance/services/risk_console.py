"""What the console's risk pages read: the review queue a page at a time, one decision in full, a refusal's
reference, the policy and the pattern rules in words.

Read only: decisions are reviewed through ``alliance.services.risk.review``, the policy
is set through ``risk.set_policy`` and a pattern rule through ``risk_patterns.set_rule``
(the back-office API and the CLI). The evidence a decision keeps (the limits it passed
and the figures each saw) is put in words here, so that no page shows its stored JSON.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Label, SQLColumnExpression, func, select
from sqlalchemy.orm import Session

from alliance.domain.errors import NotFound, ValidationFailed
from alliance.domain.risk import Limit, Policy
from alliance.domain.risk_patterns import PATTERNS, Pattern
from alliance.models import (
    AuditLogEntry,
    Card,
    Member,
    Partner,
    PointLot,
    RiskDecision,
    RiskHeldLot,
    RiskPatternRule,
    Terminal,
)
from alliance.models.base import integer_sum
from alliance.services import risk, risk_actions, risk_patterns
from alliance.services.console_reports import Page, Sort, paged

TOKEN = re.compile(r"^R[0-9A-F]{12}\Z")

# How each measure's operations are named (one, many), and how each scope is said after them.
MEASURE_WORDS: Mapping[str, tuple[str, str]] = {
    "earn": ("purchase", "purchases"),
    "redeem": ("redemption", "redemptions"),
    "verification_failure": ("card or code tried and failed", "different cards or codes tried and failed"),
    "transfer_out": ("transfer sent", "transfers sent"),
}
# Where a limit counted, as a preposition and what follows it ("with this card").
SCOPE_WORDS: Mapping[str, tuple[str, str]] = {"card": ("with", "this card"), "member": ("by", "this member"),
                                             "terminal": ("at", "this till"), "partner": ("at", "this partner")}
SCOPE_NAMES: Mapping[str, str] = {"card": "each card", "member": "each member", "terminal": "each till",
                                  "partner": "each partner"}
ACTION_WORDS: Mapping[str, str] = {"flag": "flag it for review", "hold": "hold its points for review",
                                   "refuse": "refuse it"}
OPERATION_WORDS: Mapping[str, str] = {"earn": "purchase earning points", "redeem": "redemption",
                                      "verification": "card or code verification at a till",
                                      "transfer": "transfer between members", "refund": "refund"}


def window_words(minutes: int) -> str:
    """A limit's window as a person says it: ``60 minutes``, ``1 day``, ``31 days``."""
    if minutes >= 1440 and minutes % 1440 == 0:
        days = minutes // 1440
        return f"{days} day" if days == 1 else f"{days} days"
    return "1 minute" if minutes == 1 else f"{minutes:,} minutes"


def _count_words(count: int, measure: str) -> str:
    one, many = MEASURE_WORDS.get(measure, (measure.replace("_", " "), measure.replace("_", " ")))
    return f"{count:,} {one if count == 1 else many}"


def evidence_words(item: Mapping[str, Any]) -> str:
    """One piece of a decision's evidence in words.

    A limit passed reads ``card-earns-hour: 21 purchases with this card in 60 minutes,
    limit 20``; evidence of another shape (a pattern rule's) is written out field by
    field, never as JSON.
    """
    if "limit" in item and "measure" in item and "count" in item:
        measure = str(item["measure"])
        scope = " ".join(SCOPE_WORDS.get(str(item.get("scope")), ("per", str(item.get("scope")))))
        window = window_words(int(item.get("window_minutes") or 0))
        count, points = int(item["count"]), int(item.get("points") or 0)
        max_count, max_points = item.get("max_count"), item.get("max_points")
        caps = []
        if max_count is not None:
            caps.append(f"{int(max_count):,}")
        if max_points is not None:
            caps.append(f"{int(max_points):,} points")
        if max_points is not None and max_count is None:
            seen = f"{points:,} points from {_count_words(count, measure)}"
        elif max_points is not None:
            seen = f"{_count_words(count, measure)} ({points:,} points)"
        else:
            seen = _count_words(count, measure)
        said = f"{item['limit']}: {seen} {scope} in {window}"
        return said + (f", limit {' or '.join(caps)}" if caps else "")
    pattern = item.get("pattern")
    # An older or newer shape of a pattern's figures is written out field by field below.
    if isinstance(pattern, str) and pattern in PATTERN_WORDS:
        with contextlib.suppress(KeyError, TypeError, ValueError):
            return f"{pattern}: {PATTERN_WORDS[pattern](item)}"
    name = item.get("pattern") or item.get("rule") or item.get("limit") or "evidence"
    rest = [f"{str(key).replace('_', ' ')} {_value_words(value)}" for key, value in sorted(item.items())
            if key not in ("pattern", "rule", "limit")]
    return f"{name}: {', '.join(rest)}" if rest else str(name)


def _n(item: Mapping[str, Any], key: str) -> str:
    return f"{int(item[key]):,}"


def _quick_burn(item: Mapping[str, Any]) -> str:
    return (f"{_n(item, 'points')} points earned at {item['earned_at_partner'] or 'another partner'} "
            f"{_n(item, 'minutes_between')} minutes before being redeemed here; {_n(item, 'cards')} cards did so "
            f"between these tills in {window_words(int(item['window_minutes']))}, limit {_n(item, 'max_cards')}")


def _refund_abuse(item: Mapping[str, Any]) -> str:
    repeated = ", a repeat" if item.get("repeated") else ""
    return (f"the refund of receipt {item['receipt_id']} could not take back {_n(item, 'points_unrecovered')} points "
            f"already spent ({_n(item, 'points_recovered')} taken back); {_n(item, 'member_refunds_unrecovered')} "
            f"such refunds of this member in {window_words(int(item['window_days']) * 1440)}{repeated}")


def _split_purchase(item: Mapping[str, Any]) -> str:
    return (f"{_n(item, 'purchases')} purchases with this card at this till in "
            f"{window_words(int(item['window_minutes']))} earn {_n(item, 'points')} points together (amount "
            f"{_n(item, 'amount_minor')} in minor units), more than the per-purchase cap of "
            f"{_n(item, 'per_purchase_cap_points')} points")


def _transfer_chain(item: Mapping[str, Any]) -> str:
    return (f"{_n(item, 'new_senders')} members enrolled within {_n(item, 'enrolled_within_days')} days sent points "
            f"to this member in {window_words(int(item['window_days']) * 1440)}, limit {_n(item, 'max_new_senders')}")


def _amount_outlier(item: Mapping[str, Any]) -> str:
    return (f"an amount of {_n(item, 'amount_minor')} in minor units, above this partner's threshold of "
            f"{_n(item, 'threshold_minor')} (mean {_n(item, 'mean_minor')}, standard deviation "
            f"{_n(item, 'stddev_minor')} over {_n(item, 'profile_purchases')} purchases; {_n(item, 'stddevs')} "
            f"standard deviations, times {_n(item, 'factor')})")


# The pattern rules' evidence (``alliance.domain.risk_patterns``), one sentence per pattern.
PATTERN_WORDS: Mapping[str, Callable[[Mapping[str, Any]], str]] = {
    "quick-burn": _quick_burn, "refund-abuse": _refund_abuse, "split-purchase": _split_purchase,
    "transfer-chain": _transfer_chain, "amount-outlier": _amount_outlier,
}


def _value_words(value: object) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, (list, tuple)):
        return ", ".join(_value_words(part) for part in value)
    if isinstance(value, Mapping):
        return "; ".join(f"{str(key).replace('_', ' ')} {_value_words(part)}" for key, part in sorted(value.items()))
    return str(value)


@dataclass(frozen=True, slots=True)
class DecisionDetail:
    """Everything about one kept decision, for its page."""

    decision_id: int
    token: str
    decided_at: datetime
    operation: str
    action: str
    policy_version: int | None
    partner_code: str | None
    terminal_code: str | None
    member_number: str | None
    card_last4: str | None
    reference: str | None
    points: int
    evidence: list[str]
    review_status: str
    reviewed_by: str | None
    reviewed_at: datetime | None
    review_note: str | None
    proposed_action: str | None
    proposed_by: str | None
    proposed_at: datetime | None
    proposed_note: str | None
    held_lots: int
    held_points: int

    @property
    def operation_words(self) -> str:
        """The operation decided, in words."""
        return OPERATION_WORDS.get(self.operation, self.operation)


def decision_detail(session: Session, *, decision_id: int) -> DecisionDetail:
    """One decision with its evidence in words, its review or proposal, and the points its hold keeps pending."""
    found = session.execute(
        select(RiskDecision, Partner.code, Terminal.code, Member.member_number, Card.card_number)
        .outerjoin(Partner, Partner.id == RiskDecision.partner_id)
        .outerjoin(Terminal, Terminal.id == RiskDecision.terminal_id)
        .outerjoin(Member, Member.id == RiskDecision.member_id)
        .outerjoin(Card, Card.id == RiskDecision.card_id)
        .where(RiskDecision.id == decision_id)).first()
    if found is None:
        raise NotFound(f"There is no risk decision {decision_id}.")
    row, partner, terminal, member, card_number = found
    lots, points = session.execute(
        select(func.count(), integer_sum(PointLot.points_earned)).select_from(RiskHeldLot)
        .join(PointLot, PointLot.id == RiskHeldLot.lot_id).where(RiskHeldLot.decision_id == decision_id)).one()
    return DecisionDetail(
        row.id, row.token, row.decided_at, row.operation, row.action, row.policy_version, partner, terminal, member,
        card_number[-4:] if card_number else None, row.reference, row.points,
        [evidence_words(item) for item in row.evidence or []], row.review_status,
        row.reviewed_by, row.reviewed_at, row.review_note, row.proposed_action, row.proposed_by, row.proposed_at,
        row.proposed_note, int(lots or 0), int(points or 0))


HISTORY_WORDS: Mapping[str, str] = {
    "risk.review.release": "released the points", "risk.review.reverse": "reversed the points",
    "risk.review.dismiss": "dismissed it as a false alarm", "risk.review.confirm": "confirmed it as fraud",
    "risk.review.propose_release": "proposed to release the points",
    "risk.review.propose_reverse": "proposed to reverse the points",
    "risk.act.block_card": "blocked the card", "risk.act.revoke_terminal_keys": "revoked the till's keys",
    "risk.act.open_complaint": "opened a complaint with the partner",
}


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """One thing a person did about a decision, from the audit trail."""

    occurred_at: datetime
    actor: str
    what: str
    note: str | None


def decision_history(session: Session, *, decision_id: int) -> list[HistoryEntry]:
    """Every review, proposal and action on a decision, oldest first, in words, as the audit trail holds them."""
    rows = session.execute(select(AuditLogEntry.occurred_at, AuditLogEntry.actor, AuditLogEntry.action,
                                  AuditLogEntry.after)
                           .where(AuditLogEntry.subject == f"risk-decision:{decision_id}")
                           .order_by(AuditLogEntry.sequence)).all()
    entries = []
    for occurred_at, actor, action, after in rows:
        done = dict(after or {})
        what = HISTORY_WORDS.get(action, action)
        if done.get("complaint_id") is not None:
            what += f" (complaint #{done['complaint_id']})"
        if done.get("keys_revoked"):
            what += f" ({', '.join(str(key) for key in done['keys_revoked'])})"
        if done.get("points_unrecovered"):
            what += f" ({int(done['points_unrecovered']):,} points already spent could not be taken back)"
        entries.append(HistoryEntry(occurred_at, actor, what, done.get("note")))
    return entries


def review_decision(session: Session, *, review_action: str, **arguments: Any) -> risk.Reviewed:
    """``risk.review`` with its action named ``review_action``, for callers whose own first argument is ``action``
    (the console's ``change``)."""
    return risk.review(session, action=review_action, **arguments)


def act_on_decision(session: Session, *, act_action: str, **arguments: Any) -> dict[str, Any]:
    """``risk_actions.act`` with its action named ``act_action``, as ``review_decision``."""
    return risk_actions.act(session, action=act_action, **arguments)


def decision_id_for(session: Session, *, token: str) -> int:
    """The decision a refusal's reference (``R`` and twelve hex digits, any case) names; ``NotFound`` otherwise."""
    wanted = token.strip().upper()
    if not TOKEN.match(wanted):
        raise NotFound(f"{token.strip()!r} is not a decision reference (R and twelve digits or letters A to F).")
    found = session.scalar(select(RiskDecision.id).where(RiskDecision.token == wanted))
    if found is None:
        raise NotFound(f"No decision has the reference {wanted}.")
    return int(found)


def open_count(session: Session) -> int:
    """How many decisions wait for a review."""
    return int(session.scalar(select(func.count()).select_from(RiskDecision)
                              .where(RiskDecision.review_status == "open")) or 0)


# -- the review queue --------------------------------------------------------------------

# What a case is keyed by when the open decisions are grouped by member, till or partner (as ``risk.cases``).
CASE_GROUPINGS = risk.GROUPINGS
QUEUE_ACTIONS = ("flag", "hold", "refuse")
# The queue's sorts, each a column and its tie breakers, all in the sort's direction.
QUEUE_SORTS: Mapping[str, tuple[SQLColumnExpression[Any], ...]] = {
    "time": (RiskDecision.decided_at, RiskDecision.id),
    "points": (RiskDecision.points, RiskDecision.id),
    "action": (RiskDecision.action, RiskDecision.decided_at, RiskDecision.id),
}


def _case_key(by: str) -> SQLColumnExpression[Any]:
    """The case a decision belongs to when grouped ``by``: a member number, ``partner/till`` or a partner code."""
    if by == "member":
        return Member.member_number
    if by == "terminal":
        return Partner.code + "/" + Terminal.code
    if by == "partner":
        return Partner.code
    raise ValidationFailed("group by member, terminal or partner", fields={"by": list(CASE_GROUPINGS)})


def _open_decisions() -> Any:
    return (select(RiskDecision, Partner.code, Terminal.code, Member.member_number)
            .outerjoin(Partner, Partner.id == RiskDecision.partner_id)
            .outerjoin(Terminal, Terminal.id == RiskDecision.terminal_id)
            .outerjoin(Member, Member.id == RiskDecision.member_id)
            .where(RiskDecision.review_status == "open"))


def queue_page(session: Session, *, by: str, case: str | None, action: str | None, sort: Sort, page: int,
               page_size: int) -> Page[risk.DecisionView]:
    """One page of the open decisions, of one case (grouped ``by``) and one action when given, in ``sort``'s order,
    and how many match in all."""
    if action is not None and action not in QUEUE_ACTIONS:
        raise ValidationFailed("the action is flag, hold or refuse", fields={"action": list(QUEUE_ACTIONS)})
    statement = _open_decisions()
    if case is not None:
        statement = statement.where(_case_key(by) == case)
    if action is not None:
        statement = statement.where(RiskDecision.action == action)
    columns = QUEUE_SORTS[sort.key]
    order = [column.desc() if sort.descending else column.asc() for column in columns]
    rows, total = paged(session, statement, page, page_size, *order)
    views = [risk.DecisionView(row.id, row.token, row.decided_at, row.operation, row.action, row.policy_version,
                               partner, terminal, member, row.reference, row.points, list(row.evidence or []),
                               row.review_status, row.reviewed_by, row.reviewed_at, row.review_note,
                               row.proposed_action, row.proposed_by, row.proposed_at, row.proposed_note)
             for row, partner, terminal, member in rows]
    return Page(views, total, page, page_size)


@dataclass(frozen=True, slots=True)
class Case:
    """The open decisions of one member, till or partner: how many, their points, how many of each action, the
    latest."""

    subject: str
    decisions: int
    points: int
    actions: dict[str, int]
    latest: datetime


def open_cases(session: Session, *, by: str) -> list[Case]:
    """Every open decision grouped by member, till (``partner/till``) or partner, counted in the database over all
    of them, most decisions first (then most points, then by name)."""
    key: Label[Any] = _case_key(by).label("subject")
    rows = session.execute(
        select(key, RiskDecision.action, func.count(), integer_sum(RiskDecision.points),
               func.max(RiskDecision.decided_at))
        .select_from(RiskDecision)
        .outerjoin(Partner, Partner.id == RiskDecision.partner_id)
        .outerjoin(Terminal, Terminal.id == RiskDecision.terminal_id)
        .outerjoin(Member, Member.id == RiskDecision.member_id)
        .where(RiskDecision.review_status == "open", key.isnot(None))
        .group_by(key, RiskDecision.action)).all()
    grouped: dict[str, dict[str, Any]] = {}
    for subject, action, count, points, latest in rows:
        case = grouped.setdefault(subject, {"decisions": 0, "points": 0, "actions": {}, "latest": latest})
        case["decisions"] += int(count)
        case["points"] += int(points or 0)
        case["actions"][action] = int(count)
        case["latest"] = max(case["latest"], latest)
    cases = [Case(subject, found["decisions"], found["points"], found["actions"], found["latest"])
             for subject, found in grouped.items()]
    return sorted(cases, key=lambda case: (-case.decisions, -case.points, case.subject))


# -- the pattern rules in words ------------------------------------------------------------

# What each pattern looks for, in a sentence (``alliance.domain.risk_patterns``).
PATTERN_SUMMARIES: Mapping[Pattern, str] = {
    Pattern.QUICK_BURN: "points earned at one partner and redeemed at another minutes later, by several cards "
                        "between the same tills",
    Pattern.REFUND_ABUSE: "a member's refunds whose points were already spent, repeated",
    Pattern.SPLIT_PURCHASE: "one card splitting a purchase at one till to pass the per-purchase points cap",
    Pattern.TRANSFER_CHAIN: "a member receiving points from several newly enrolled members",
    Pattern.AMOUNT_OUTLIER: "a purchase amount far above what the partner usually sells",
}


def _term_parts(key: str, value: int) -> tuple[str, str]:
    if key.endswith("_minutes"):
        return key.removesuffix("_minutes").replace("_", " "), window_words(value)
    if key.endswith("_days"):
        return key.removesuffix("_days").replace("_", " "), window_words(value * 1440)
    return key.replace("_", " "), f"{value:,}"


def term_words(key: str, value: int, built_in: int | None = None) -> str:
    """One term of a pattern rule: ``window 1 day``, ``earned within 30 minutes``, ``cards 3``; with the built-in
    value beside it when that differs (``cards 5 (built in: 3)``)."""
    name, said = _term_parts(key, value)
    if built_in is not None and built_in != value:
        said += f" (built in: {_term_parts(key, built_in)[1]})"
    return f"{name} {said}"


@dataclass(frozen=True, slots=True)
class PatternRuleRow:
    """One pattern rule in force as its page shows it, and who changed it last (None: the built-in rule)."""

    name: str
    summary: str
    terms: list[str]
    action: str
    enabled: bool
    changed_by: str | None
    changed_at: datetime | None


def pattern_rules(session: Session) -> list[PatternRuleRow]:
    """Every pattern rule in force, its terms in words (a changed term with its built-in value beside it), and the
    last change stored for it."""
    changes = {name: (updated_by, updated_at) for name, updated_by, updated_at in session.execute(
        select(RiskPatternRule.name, RiskPatternRule.updated_by, RiskPatternRule.updated_at))}
    shown = []
    for rule in risk_patterns.rules_in_force(session):
        built_in = PATTERNS[rule.name].terms
        terms = [term_words(key, value, built_in.get(key)) for key, value in rule.terms.items()]
        changed_by, changed_at = changes.get(rule.name.value, (None, None))
        shown.append(PatternRuleRow(rule.name.value, PATTERN_SUMMARIES.get(rule.name, ""), terms,
                                    ACTION_WORDS[rule.action.word], rule.enabled, changed_by, changed_at))
    return shown


# -- the policy in words ---------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class LimitRow:
    """One limit of a policy as the policy page shows it."""

    name: str
    scope: str
    measure: str
    window: str
    caps: str
    action: str
    enabled: bool


def caps_words(max_count: int | None, max_points: int | None, measure: str) -> str:
    """A limit's caps: ``20 purchases``, ``50,000 points``, or both."""
    caps = []
    if max_count is not None:
        caps.append(_count_words(max_count, measure))
    if max_points is not None:
        caps.append(f"{max_points:,} points")
    return " or ".join(caps) if caps else "none"


def limit_row(limit: Limit) -> LimitRow:
    """A limit in words."""
    measure = limit.measure.value
    return LimitRow(limit.name, SCOPE_NAMES.get(limit.scope.value, limit.scope.value),
                    MEASURE_WORDS.get(measure, (measure, measure))[1], window_words(limit.window_minutes),
                    caps_words(limit.max_count, limit.max_points, measure), ACTION_WORDS[limit.action.word],
                    limit.enabled)


def override_words(changes: Mapping[str, Any]) -> str:
    """An override's changed fields in words: ``window 30 minutes, at most 10, action refuse it``."""
    said = []
    for key, value in sorted(changes.items()):
        if key == "window_minutes":
            said.append(f"window {window_words(int(value))}")
        elif key == "max_count":
            said.append(f"at most {int(value):,} operations")
        elif key == "max_points":
            said.append(f"at most {int(value):,} points")
        elif key == "action":
            said.append(ACTION_WORDS.get(str(value), str(value)))
        elif key == "enabled":
            said.append("switched on" if value else "switched off")
        else:
            said.append(f"{key.replace('_', ' ')} {_value_words(value)}")
    return ", ".join(said)


@dataclass(frozen=True, slots=True)
class PolicyPage:
    """The policy in force (its version, None for the built-in default), its overrides, and every stored version."""

    version: int | None
    limits: list[LimitRow]
    partner_overrides: list[tuple[str, str, str]]
    tier_overrides: list[tuple[str, str, str]]
    versions: list[dict[str, Any]]


def _overrides(by_owner: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> list[tuple[str, str, str]]:
    return [(owner, name, override_words(changes)) for owner, by_name in sorted(by_owner.items())
            for name, changes in sorted(by_name.items())]


def policy_page(session: Session, *, now: datetime) -> PolicyPage:
    """The policy in force at ``now`` in words, with the stored versions newest first."""
    version, policy = risk.policy_in_force(session, at=now)
    return _policy_page(version, policy, risk.versions(session, now=now))


def _policy_page(version: int | None, policy: Policy, stored: list[dict[str, Any]]) -> PolicyPage:
    return PolicyPage(version, [limit_row(limit) for limit in policy.limits], _overrides(policy.partners),
                      _overrides(policy.tiers), stored)
