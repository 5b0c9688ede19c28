"""Risk pattern rules: the schemes velocity limits do not see, as terms and the decision they give on figures.

A velocity limit (``alliance.domain.risk``) counts one kind of operation in one scope. A
**pattern** looks at how operations relate: points earned at one partner and redeemed at
another minutes later (``quick-burn``), a refund whose points were already spent
(``refund-abuse``), one card splitting a purchase at one till to pass the per-purchase cap
(``split-purchase``), a member receiving transfers from several new members
(``transfer-chain``), or an amount far above what the partner usually sells
(``amount-outlier``). Each pattern has whole-number **terms** (its thresholds), an
**action** (flag, hold or refuse, among those that fit where it runs) and a switch;
``PATTERNS`` holds the built-in ones, which an operator may change (stored per pattern).

These functions are pure: they take the figures the service read and say what the
pattern decides, with the evidence a reviewer sees.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Any

from alliance.domain.errors import ValidationFailed
from alliance.domain.risk import Action

MAX_TERM = 10**9


class Pattern(StrEnum):
    """The schemes the pattern rules look for."""

    QUICK_BURN = "quick-burn"
    REFUND_ABUSE = "refund-abuse"
    SPLIT_PURCHASE = "split-purchase"
    TRANSFER_CHAIN = "transfer-chain"
    AMOUNT_OUTLIER = "amount-outlier"


@dataclass(frozen=True, slots=True)
class PatternRule:
    """One pattern's terms (whole numbers by name), its action and whether it runs."""

    name: Pattern
    terms: Mapping[str, int]
    action: Action
    enabled: bool = True

    def term(self, key: str) -> int:
        """The term called ``key``."""
        return self.terms[key]

    def as_data(self) -> dict[str, Any]:
        """The rule as the back office shows it and stores it."""
        return {"name": self.name.value, "terms": dict(self.terms), "action": self.action.word,
                "enabled": self.enabled}


# The terms each pattern has, with the smallest value each may take, and the actions that fit where it runs:
# only a purchase's points can be held. A refund is refused only as a repeat (see ``refund_abuse``).
TERMS: Mapping[Pattern, Mapping[str, int]] = {
    Pattern.QUICK_BURN: {"earned_within_minutes": 1, "cards": 1, "window_minutes": 1},
    Pattern.REFUND_ABUSE: {"repeats": 1, "window_days": 1},
    Pattern.SPLIT_PURCHASE: {"window_minutes": 1},
    Pattern.TRANSFER_CHAIN: {"senders": 1, "enrolled_within_days": 1, "window_days": 1},
    Pattern.AMOUNT_OUTLIER: {"factor": 1, "stddevs": 0, "min_purchases": 1, "profile_days": 1},
}
ACTIONS: Mapping[Pattern, frozenset[Action]] = {
    Pattern.QUICK_BURN: frozenset({Action.FLAG, Action.REFUSE}),
    Pattern.REFUND_ABUSE: frozenset({Action.FLAG, Action.REFUSE}),
    Pattern.SPLIT_PURCHASE: frozenset({Action.FLAG, Action.HOLD, Action.REFUSE}),
    Pattern.TRANSFER_CHAIN: frozenset({Action.FLAG, Action.REFUSE}),
    Pattern.AMOUNT_OUTLIER: frozenset({Action.FLAG, Action.HOLD, Action.REFUSE}),
}
PATTERNS: Mapping[Pattern, PatternRule] = {
    Pattern.QUICK_BURN: PatternRule(Pattern.QUICK_BURN, {"earned_within_minutes": 30, "cards": 3,
                                                          "window_minutes": 24 * 60}, Action.FLAG),
    Pattern.REFUND_ABUSE: PatternRule(Pattern.REFUND_ABUSE, {"repeats": 2, "window_days": 30}, Action.FLAG),
    Pattern.SPLIT_PURCHASE: PatternRule(Pattern.SPLIT_PURCHASE, {"window_minutes": 10}, Action.HOLD),
    Pattern.TRANSFER_CHAIN: PatternRule(Pattern.TRANSFER_CHAIN, {"senders": 3, "enrolled_within_days": 30,
                                                                  "window_days": 7}, Action.REFUSE),
    Pattern.AMOUNT_OUTLIER: PatternRule(Pattern.AMOUNT_OUTLIER, {"factor": 5, "stddevs": 3, "min_purchases": 200,
                                                                  "profile_days": 90}, Action.FLAG),
}


def rule_from_data(name: object, *, terms: object, action: object, enabled: object) -> PatternRule:
    """A pattern's rule from an operator's change; the terms left out keep their built-in values.

    Raises ``ValidationFailed`` naming every problem.
    """
    try:
        pattern = Pattern(str(name))
    except ValueError:
        raise ValidationFailed(f"no pattern {name!r}; the patterns are " + ", ".join(p.value for p in Pattern),
                               fields={"name": [p.value for p in Pattern]}) from None
    problems: dict[str, list[str]] = {}
    minimums = TERMS[pattern]
    merged = dict(PATTERNS[pattern].terms)
    if not isinstance(terms, Mapping):
        problems["terms"] = ["an object of terms by name"]
    else:
        for key, value in terms.items():
            if key not in minimums:
                problems.setdefault("terms", []).append(f"{pattern.value} has only " + ", ".join(sorted(minimums)))
            elif (not isinstance(value, int) or isinstance(value, bool)
                  or not minimums[key] <= value <= MAX_TERM):
                problems[f"terms.{key}"] = [f"a whole number from {minimums[key]} to {MAX_TERM:,}"]
            else:
                merged[key] = value
    chosen = None
    if action in ("flag", "hold", "refuse") and Action.named(str(action)) in ACTIONS[pattern]:
        chosen = Action.named(str(action))
    else:
        problems["action"] = [" or ".join(sorted(a.word for a in ACTIONS[pattern]))]
    if not isinstance(enabled, bool):
        problems["enabled"] = ["true or false"]
    if problems:
        raise ValidationFailed(f"the {pattern.value} rule has problems: " + "; ".join(
            f"{where}: {', '.join(what)}" for where, what in sorted(problems.items())), fields=problems)
    assert chosen is not None and isinstance(enabled, bool)
    return PatternRule(pattern, merged, chosen, enabled)


@dataclass(frozen=True, slots=True)
class Finding:
    """What a pattern decided and the evidence it keeps (one dict naming the pattern and the figures it saw)."""

    action: Action
    evidence: Mapping[str, Any]


# -- quick burn ------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class DrawnLot:
    """A slice of a lot a redemption will draw from, and where and when its points were earned."""

    lot_id: int
    points: int
    earned_at: datetime
    partner_id: int | None
    partner_code: str | None
    terminal_id: int | None


@dataclass(frozen=True, slots=True)
class Burn:
    """Points earned at another partner's till shortly before being redeemed: the first such lot drawn, and all."""

    earned_partner_id: int
    earned_at_partner: str | None
    earned_terminal_id: int | None
    minutes_between: int
    points: int

    def subject(self, *, partner_id: int, terminal_id: int | None) -> str:
        """The pair of tills (or partners, for a sale from no till) the loop runs between, as counted."""
        earned = (f"t{self.earned_terminal_id}" if self.earned_terminal_id is not None
                  else f"p{self.earned_partner_id}")
        burned = f"t{terminal_id}" if terminal_id is not None else f"p{partner_id}"
        return f"{earned}>{burned}"


def quick_burn(drawn: Sequence[DrawnLot], rule: PatternRule, *, partner_id: int, now: datetime) -> Burn | None:
    """Whether a redemption at ``partner_id`` draws points earned at another partner within the rule's minutes.

    ``drawn`` is what the redemption takes from each lot, soonest expiry first. The loop is
    counted for the first other partner's till seen; ``points`` is everything the
    redemption draws that was earned there within the minutes.
    """
    within = timedelta(minutes=rule.term("earned_within_minutes"))
    quick = [lot for lot in drawn if lot.partner_id is not None and lot.partner_id != partner_id
             and now - lot.earned_at <= within]
    if not quick:
        return None
    first = quick[0]
    same = [lot for lot in quick if (lot.partner_id, lot.terminal_id) == (first.partner_id, first.terminal_id)]
    assert first.partner_id is not None
    return Burn(first.partner_id, first.partner_code, first.terminal_id,
                int((now - min(lot.earned_at for lot in same)).total_seconds() // 60), sum(lot.points for lot in same))


def quick_burn_finding(burn: Burn, rule: PatternRule, *, cards: int, subject: str) -> Finding | None:
    """The decision on a quick burn seen on ``cards`` different cards (this one included) between one pair of tills."""
    if cards < rule.term("cards"):
        return None
    return Finding(rule.action, {"pattern": rule.name.value, "earned_at_partner": burn.earned_at_partner,
                                 "earned_terminal_id": burn.earned_terminal_id, "tills": subject,
                                 "minutes_between": burn.minutes_between, "points": burn.points, "cards": cards,
                                 "max_cards": rule.term("cards") - 1, "window_minutes": rule.term("window_minutes"),
                                 "earned_within_minutes": rule.term("earned_within_minutes")})


# -- refund abuse ----------------------------------------------------------------------

def refund_abuse(rule: PatternRule, *, points_unrecovered: int, points_recovered: int, receipt_id: str,
                 earlier_refunds: int) -> Finding | None:
    """A finding on a refund whose points were partly spent already; ``earlier_refunds`` such refunds of the
    member's within the rule's window came before it.

    The first ones are flagged: returning a purchase after spending its points elsewhere
    can be honest. The one that reaches ``repeats`` gets the rule's action: flagged by
    default; under ``refuse`` it is declined at the till, the way a retailer's return-fraud
    check declines a return, so the merchant does not give the money back for a purchase
    whose points are already gone.
    """
    if points_unrecovered <= 0:
        return None
    refunds = earlier_refunds + 1
    action = rule.action if refunds >= rule.term("repeats") else Action.FLAG
    return Finding(action, {"pattern": rule.name.value, "receipt_id": receipt_id,
                            "points_unrecovered": points_unrecovered, "points_recovered": points_recovered,
                            "member_refunds_unrecovered": refunds, "window_days": rule.term("window_days"),
                            "repeated": refunds >= rule.term("repeats")})


# -- split purchases -------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Recent:
    """A card's purchases at one till within the pattern's minutes, before the one being decided."""

    count: int
    amount_minor: int
    points: int


def split_purchase(rule: PatternRule, *, recent: Recent, amount_minor: int, points: int,
                   cap_points: int) -> Finding | None:
    """Whether a purchase, with the same card's earlier ones at the same till within minutes, earns together more
    than the partner's per-purchase cap allows one purchase (``points``: this one's rule points before caps)."""
    if recent.count == 0 or recent.points + points <= cap_points:
        return None
    return Finding(rule.action, {"pattern": rule.name.value, "purchases": recent.count + 1,
                                 "amount_minor": recent.amount_minor + amount_minor,
                                 "points": recent.points + points, "per_purchase_cap_points": cap_points,
                                 "window_minutes": rule.term("window_minutes")})


# -- transfer chains -------------------------------------------------------------------

def transfer_chain(rule: PatternRule, *, new_senders: int, sender_is_new: bool) -> Finding | None:
    """Whether a transfer makes its receiver's distinct recently enrolled senders in the window reach the rule's
    count (``new_senders``: those before this transfer, the sender not among them)."""
    senders = new_senders + (1 if sender_is_new else 0)
    if not sender_is_new or senders < rule.term("senders"):
        return None
    return Finding(rule.action, {"pattern": rule.name.value, "new_senders": senders,
                                 "max_new_senders": rule.term("senders") - 1,
                                 "enrolled_within_days": rule.term("enrolled_within_days"),
                                 "window_days": rule.term("window_days")})


# -- amount outliers -------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Profile:
    """A partner's purchase amounts over the profile's window: how many, their mean and standard deviation."""

    purchases: int
    mean_minor: int
    stddev_minor: int


def profile_of(*, count: int, total: int, total_of_squares: int) -> Profile:
    """The mean and (population) standard deviation of ``count`` amounts from their sum and sum of squares."""
    if count == 0:
        return Profile(0, 0, 0)
    mean = Decimal(total) / count
    variance = max(Decimal(total_of_squares) / count - mean * mean, Decimal(0))
    return Profile(count, int(mean.to_integral_value()), int(variance.sqrt().to_integral_value()))


def outlier_threshold(rule: PatternRule, profile: Profile) -> int | None:
    """The amount above which a purchase is an outlier: (mean + stddevs × standard deviation) × factor; None until
    the profile has ``min_purchases``."""
    if profile.purchases < rule.term("min_purchases"):
        return None
    return (profile.mean_minor + rule.term("stddevs") * profile.stddev_minor) * rule.term("factor")


def amount_outlier(rule: PatternRule, profile: Profile | None, *, amount_minor: int) -> Finding | None:
    """Whether a purchase's amount is above its partner's outlier threshold."""
    threshold = outlier_threshold(rule, profile) if profile is not None else None
    if threshold is None or amount_minor <= threshold:
        return None
    assert profile is not None
    return Finding(rule.action, {"pattern": rule.name.value, "amount_minor": amount_minor,
                                 "threshold_minor": threshold, "mean_minor": profile.mean_minor,
                                 "stddev_minor": profile.stddev_minor, "profile_purchases": profile.purchases,
                                 "stddevs": rule.term("stddevs"), "factor": rule.term("factor")})
