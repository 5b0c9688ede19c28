"""Risk policy as data, and the decision it gives on one operation: pure functions over plain values.

A **policy** is a list of velocity **limits**. Each limit counts one *measure* (purchases
earned, redemptions authorized, failed card verifications, transfers sent) over a sliding
*window* ending now, in one *scope* (the card, the member, the terminal or the partner the
operation comes from), and names the *action* taken when the operation would pass it:
``flag`` (allow, and record it for review), ``hold`` (for purchases: the points are issued
pending and not spendable until a reviewer releases them) or ``refuse``. A limit may cap
the count of operations, the points they moved, or both; failed verifications count the
distinct cards a terminal tried. The figures the limit sees include the operation being
decided, so ``max_count: 20`` lets the twentieth through and stops the twenty-first.

Partners and tiers may override a limit's figures or action, or switch it off, by name:
a partner's override comes first, then the member's tier's (an operation whose member is
not known yet, such as a failed verification, sees the partner's). The strictest action
of the limits passed is the decision; the limits passed and the figures each saw are kept
with it, so every decision says why.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import IntEnum, StrEnum
from typing import Any, TypeGuard

from alliance.domain.errors import AllianceError, ValidationFailed

NAME = re.compile(r"^[a-z][a-z0-9-]{0,39}\Z")
PARTNER_CODE = re.compile(r"^[a-z0-9][a-z0-9-]{1,39}\Z")
TIERS = ("standard", "silver", "gold", "diamond")
# A window longer than a month is a report, not a velocity limit; a minute is the shortest a till meaningfully repeats.
MIN_WINDOW_MINUTES = 1
MAX_WINDOW_MINUTES = 31 * 24 * 60
MAX_FIGURE = 10**12
MAX_LIMITS = 64


class Scope(StrEnum):
    """What a limit counts per: the card, the member, the terminal or the partner the operation comes from."""

    CARD = "card"
    MEMBER = "member"
    TERMINAL = "terminal"
    PARTNER = "partner"


class Measure(StrEnum):
    """What a limit counts: purchases that earn, redemptions authorized, failed verifications, transfers sent."""

    EARN = "earn"
    REDEEM = "redeem"
    VERIFICATION_FAILURE = "verification_failure"
    TRANSFER_OUT = "transfer_out"


class Action(IntEnum):
    """What passing a limit does, by strictness; a decision takes the strictest."""

    ALLOW = 0
    FLAG = 1
    HOLD = 2
    REFUSE = 3

    @property
    def word(self) -> str:
        """The action's name in policies, replies and the review queue."""
        return self.name.lower()

    @classmethod
    def named(cls, word: str) -> Action:
        """The action called ``word`` (flag, hold, refuse)."""
        return cls[word.upper()]


# Which scopes each measure can be counted in: a verification failure has no member yet (the
# card was not proven), and a transfer is made by customer service for a member, at no till.
SCOPES_OF: Mapping[Measure, frozenset[Scope]] = {
    Measure.EARN: frozenset(Scope),
    Measure.REDEEM: frozenset(Scope),
    Measure.VERIFICATION_FAILURE: frozenset({Scope.TERMINAL, Scope.PARTNER}),
    Measure.TRANSFER_OUT: frozenset({Scope.MEMBER}),
}
# Only a purchase's points can wait for a reviewer; any other operation is allowed or refused.
HOLDABLE = frozenset({Measure.EARN})


class RiskDeclined(AllianceError):
    """An operation the alliance's risk controls refused; the reply does not say which limit or figure."""

    code = "declined"
    http_status = 403
    title = "Declined"

    def __init__(self, decision_reference: str) -> None:
        super().__init__(f"The alliance declined this operation (decision {decision_reference}). The member may "
                         "contact the alliance's customer service, quoting the decision.")
        self.decision_reference = decision_reference
        self.extensions = {"decision": decision_reference}


@dataclass(frozen=True, slots=True)
class Limit:
    """One velocity limit: a measure counted per scope over a window, its caps and its action."""

    name: str
    scope: Scope
    measure: Measure
    window_minutes: int
    action: Action
    max_count: int | None = None
    max_points: int | None = None
    enabled: bool = True

    def passed_by(self, count: int, points: int) -> bool:
        """Whether figures that include the operation being decided pass this limit."""
        return ((self.max_count is not None and count > self.max_count)
                or (self.max_points is not None and points > self.max_points))

    def as_data(self) -> dict[str, Any]:
        """The limit as the policy document writes it."""
        data: dict[str, Any] = {"name": self.name, "scope": self.scope.value, "measure": self.measure.value,
                                "window_minutes": self.window_minutes, "action": self.action.word}
        if self.max_count is not None:
            data["max_count"] = self.max_count
        if self.max_points is not None:
            data["max_points"] = self.max_points
        if not self.enabled:
            data["enabled"] = False
        return data


@dataclass(frozen=True, slots=True)
class Policy:
    """Limits, with overrides by partner code and by tier (each a mapping of limit name to changed fields)."""

    limits: tuple[Limit, ...]
    partners: Mapping[str, Mapping[str, Mapping[str, Any]]] = field(default_factory=dict)
    tiers: Mapping[str, Mapping[str, Mapping[str, Any]]] = field(default_factory=dict)

    def limits_for(self, measure: Measure, *, partner_code: str | None, tier: str | None) -> tuple[Limit, ...]:
        """The enabled limits on ``measure`` as they apply to this partner and tier."""
        found = []
        for limit in self.limits:
            if limit.measure is not measure:
                continue
            if tier is not None and limit.name in self.tiers.get(tier, {}):
                limit = _overridden(limit, self.tiers[tier][limit.name])
            if partner_code is not None and limit.name in self.partners.get(partner_code, {}):
                limit = _overridden(limit, self.partners[partner_code][limit.name])
            if limit.enabled:
                found.append(limit)
        return tuple(found)

    def as_data(self) -> dict[str, Any]:
        """The policy as a document (the form ``policy_from_data`` reads)."""
        return {"limits": [limit.as_data() for limit in self.limits],
                "partners": {code: {name: dict(changes) for name, changes in by_name.items()}
                             for code, by_name in sorted(self.partners.items())},
                "tiers": {tier: {name: dict(changes) for name, changes in by_name.items()}
                          for tier, by_name in sorted(self.tiers.items())}}


def _overridden(limit: Limit, changes: Mapping[str, Any]) -> Limit:
    values: dict[str, Any] = {}
    for key, value in changes.items():
        values[key] = Action.named(value) if key == "action" else value
    return replace(limit, **values)


@dataclass(frozen=True, slots=True)
class Seen:
    """What one limit saw: its terms and the figures, this operation included."""

    limit: str
    scope: str
    measure: str
    window_minutes: int
    action: str
    count: int
    points: int
    max_count: int | None
    max_points: int | None

    def as_data(self) -> dict[str, Any]:
        """The evidence as stored with the decision."""
        return {"limit": self.limit, "scope": self.scope, "measure": self.measure,
                "window_minutes": self.window_minutes, "action": self.action, "count": self.count,
                "points": self.points, "max_count": self.max_count, "max_points": self.max_points}


@dataclass(frozen=True, slots=True)
class Decision:
    """The strictest action of the limits an operation passes, and every limit it passed with its figures."""

    action: Action
    passed: tuple[Seen, ...] = ()

    @property
    def allowed(self) -> bool:
        """Whether the operation goes ahead (allowed, flagged or held)."""
        return self.action is not Action.REFUSE


ALLOWED = Decision(Action.ALLOW)


@dataclass(frozen=True, slots=True)
class Figures:
    """Count and points of one limit's measure in its scope over its window, before the operation being decided."""

    count: int
    points: int


def decide(limits: Sequence[Limit], figures: Mapping[str, Figures], *, points: int) -> Decision:
    """The decision on an operation moving ``points`` (0 where it moves none), given each limit's figures by name.

    A limit with no figures (its scope has nothing to count, such as a purchase from no
    terminal) is not applied.
    """
    passed = []
    for limit in limits:
        before = figures.get(limit.name)
        if before is None:
            continue
        count, moved = before.count + 1, before.points + points
        if limit.passed_by(count, moved):
            passed.append(Seen(limit.name, limit.scope.value, limit.measure.value, limit.window_minutes,
                               limit.action.word, count, moved, limit.max_count, limit.max_points))
    if not passed:
        return ALLOWED
    return Decision(max(Action.named(seen.action) for seen in passed), tuple(passed))


# -- reading a policy document ---------------------------------------------------------

_LIMIT_KEYS = {"name", "scope", "measure", "window_minutes", "action", "max_count", "max_points", "enabled"}
_OVERRIDE_KEYS = {"window_minutes", "action", "max_count", "max_points", "enabled"}


def policy_from_data(data: object) -> Policy:
    """A policy from its document, every problem named by where it is; raises ``ValidationFailed``."""
    problems: dict[str, list[str]] = {}
    if not isinstance(data, Mapping) or set(data) - {"limits", "partners", "tiers"} or "limits" not in data:
        raise ValidationFailed("a risk policy is an object with limits, and optionally partners and tiers",
                               fields={"policy": ["needs limits; only limits, partners and tiers are allowed"]})
    items = data["limits"]
    if not isinstance(items, list) or len(items) > MAX_LIMITS:
        raise ValidationFailed(f"limits must be a list of at most {MAX_LIMITS}",
                               fields={"limits": [f"a list of at most {MAX_LIMITS}"]})
    limits = []
    for index, item in enumerate(items):
        limit = _limit(item, f"limits[{index}]", problems)
        if limit is not None:
            limits.append(limit)
    names = [limit.name for limit in limits]
    if len(set(names)) != len(names):
        problems.setdefault("limits", []).append("each limit needs a name of its own")
    by_name = {limit.name: limit for limit in limits}
    partners = _overrides(data.get("partners", {}), "partners", PARTNER_CODE, by_name, problems)
    tiers = _overrides(data.get("tiers", {}), "tiers", None, by_name, problems)
    if problems:
        raise ValidationFailed("the risk policy has problems: " + "; ".join(
            f"{where}: {', '.join(what)}" for where, what in sorted(problems.items())), fields=problems)
    return Policy(tuple(limits), partners, tiers)


def _limit(item: object, where: str, problems: dict[str, list[str]]) -> Limit | None:
    if not isinstance(item, Mapping) or set(item) - _LIMIT_KEYS:
        problems.setdefault(where, []).append("a limit has only " + ", ".join(sorted(_LIMIT_KEYS)))
        return None
    found = len(problems)
    name = item.get("name")
    if not isinstance(name, str) or not NAME.match(name):
        problems.setdefault(f"{where}.name", []).append("lower-case letters, digits and dashes, up to 40")
    scope = _choice(item.get("scope"), Scope, f"{where}.scope", problems)
    measure = _choice(item.get("measure"), Measure, f"{where}.measure", problems)
    changes = _checked_changes(item, where, problems, required=True)
    if measure is not None and scope is not None and scope not in SCOPES_OF[measure]:
        problems.setdefault(f"{where}.scope", []).append(
            f"{measure.value} is counted per " + " or ".join(sorted(s.value for s in SCOPES_OF[measure])))
    action = changes.get("action")
    if measure is not None and action is Action.HOLD and measure not in HOLDABLE:
        problems.setdefault(f"{where}.action", []).append("only a purchase's points can be held; flag or refuse")
    if len(problems) > found:
        return None
    assert isinstance(name, str) and scope is not None and measure is not None and isinstance(action, Action)
    return Limit(name=name, scope=scope, measure=measure, window_minutes=changes["window_minutes"], action=action,
                 max_count=changes.get("max_count"), max_points=changes.get("max_points"),
                 enabled=changes.get("enabled", True))


def _checked_changes(item: Mapping[str, Any], where: str, problems: dict[str, list[str]], *,
                     required: bool) -> dict[str, Any]:
    """The window, action, caps and switch of a limit or an override, checked."""
    changes: dict[str, Any] = {}
    if "window_minutes" in item or required:
        window = item.get("window_minutes")
        if _whole(window) and MIN_WINDOW_MINUTES <= window <= MAX_WINDOW_MINUTES:
            changes["window_minutes"] = window
        else:
            problems.setdefault(f"{where}.window_minutes", []).append(
                f"a whole number of minutes from {MIN_WINDOW_MINUTES} to {MAX_WINDOW_MINUTES}")
    if "action" in item or required:
        word = item.get("action")
        if word in ("flag", "hold", "refuse"):
            changes["action"] = Action.named(word)
        else:
            problems.setdefault(f"{where}.action", []).append("flag, hold or refuse")
    for key in ("max_count", "max_points"):
        if key in item and item[key] is not None:
            if _whole(item[key]) and 0 <= item[key] <= MAX_FIGURE:
                changes[key] = item[key]
            else:
                problems.setdefault(f"{where}.{key}", []).append(f"a whole number from 0 to {MAX_FIGURE:,}")
    if required and "max_count" not in changes and "max_points" not in changes:
        problems.setdefault(where, []).append("a limit caps max_count, max_points or both")
    if "enabled" in item:
        if isinstance(item["enabled"], bool):
            changes["enabled"] = item["enabled"]
        else:
            problems.setdefault(f"{where}.enabled", []).append("true or false")
    return changes


def _overrides(data: object, where: str, key_pattern: re.Pattern[str] | None, limits: Mapping[str, Limit],
               problems: dict[str, list[str]]) -> dict[str, dict[str, dict[str, Any]]]:
    if not isinstance(data, Mapping):
        problems.setdefault(where, []).append("an object of overrides by name")
        return {}
    found: dict[str, dict[str, dict[str, Any]]] = {}
    for key, by_name in data.items():
        place = f"{where}.{key}"
        if (key_pattern is not None and not (isinstance(key, str) and key_pattern.match(key))) or (
                key_pattern is None and key not in TIERS):
            problems.setdefault(place, []).append("a partner code" if key_pattern is not None
                                                  else "one of " + ", ".join(TIERS))
            continue
        if not isinstance(by_name, Mapping):
            problems.setdefault(place, []).append("an object of limit names to changes")
            continue
        for name, changes in by_name.items():
            if name not in limits:
                problems.setdefault(f"{place}.{name}", []).append("no limit of this name")
                continue
            if not isinstance(changes, Mapping) or not changes or set(changes) - _OVERRIDE_KEYS:
                problems.setdefault(f"{place}.{name}", []).append(
                    "changes only " + ", ".join(sorted(_OVERRIDE_KEYS)))
                continue
            checked = _checked_changes(changes, f"{place}.{name}", problems, required=False)
            if checked.get("action") is Action.HOLD and limits[name].measure not in HOLDABLE:
                problems.setdefault(f"{place}.{name}.action", []).append("only a purchase's points can be held")
            stored = {k: (v.word if isinstance(v, Action) else v) for k, v in checked.items()}
            found.setdefault(str(key), {})[str(name)] = stored
    return found


def _choice(value: object, kind: type[StrEnum], where: str, problems: dict[str, list[str]]) -> Any:
    try:
        return kind(value) if isinstance(value, str) else kind("")
    except ValueError:
        problems.setdefault(where, []).append("one of " + ", ".join(member.value for member in kind))
        return None


def _whole(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


# The policy in force until an operator sets one: what a mid-sized coalition's fraud team starts with.
DEFAULT_POLICY_DATA: Mapping[str, Any] = {
    "limits": [
        # A card earning on more than 20 purchases an hour is a script or a shared card: hold the points.
        {"name": "card-earns-hour", "scope": "card", "measure": "earn", "window_minutes": 60, "max_count": 20,
         "action": "hold"},
        # More than 50,000 points earned in a day by one member is far outside a household's spending.
        {"name": "member-earn-points-day", "scope": "member", "measure": "earn", "window_minutes": 1440,
         "max_points": 50_000, "action": "hold"},
        # A till reporting more than 120 purchases with cards in 10 minutes is flagged for a look.
        {"name": "terminal-earns-10min", "scope": "terminal", "measure": "earn", "window_minutes": 10,
         "max_count": 120, "action": "flag"},
        # More than 10 redemptions an hour, or 100,000 points a day, from one member: refuse.
        {"name": "member-redemptions-hour", "scope": "member", "measure": "redeem", "window_minutes": 60,
         "max_count": 10, "action": "refuse"},
        {"name": "member-redeemed-points-day", "scope": "member", "measure": "redeem", "window_minutes": 1440,
         "max_points": 100_000, "action": "refuse"},
        # Card testing: one till failing to verify 5 different cards in 15 minutes is refused further tries.
        {"name": "terminal-failed-cards-15min", "scope": "terminal", "measure": "verification_failure",
         "window_minutes": 15, "max_count": 5, "action": "refuse"},
        # A member sending more than 5 transfers a day.
        {"name": "member-transfers-day", "scope": "member", "measure": "transfer_out", "window_minutes": 1440,
         "max_count": 5, "action": "refuse"},
    ],
}
DEFAULT_POLICY = policy_from_data(DEFAULT_POLICY_DATA)
