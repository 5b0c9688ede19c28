"""How many points a purchase earns, and how many a refund takes back, as pure functions.

Earning follows these rules, in this order:

1. ``amount_minor`` is a positive whole number of minor units; ``minor_units_per_unit``
   says how many minor units make one currency unit (100 for EUR, 1 for JPY, 1000 for
   KWD). The caller knows the currency and decides.
2. Ladder: the whole amount gets the multiplier of the step with the highest
   ``from_minor`` at or below the amount. With no such step (an empty ladder, or a first
   step above the amount) the multiplier is 1.
3. Rule points are ``floor(amount_minor × base_points_per_unit × ladder multiplier ×
   tier multiplier / minor_units_per_unit)``, computed exactly. Members never get a
   fraction of a point, and rounding never gives more than the rule promises.
4. A campaign applies when ``amount_minor ≥ min_amount_minor``. It gives
   ``floor(rule points × (multiplier − 1)) + bonus_points``, always computed on the rule
   points so that two campaigns never compound, and is charged to whoever funds it.
   Campaign lines worth 0 points are left out; the lines are ordered by campaign id.
   A joint campaign's points are paid by its named partners in their stated shares
   (``split_by_shares``); they are neither capped nor the reporting partner's.
5. Caps limit the points the partner funds (rule points plus partner-funded campaign
   points): first the per-purchase cap, then the per-member-day cap, which leaves room
   for ``max(0, per_member_day_cap_points − partner_points_earned_today)``. Points from
   hub-funded campaigns are not capped: the hub pays them from its marketing budget.
6. A purchase may earn 0 points; that is a valid result, not an error.

A refund claws back points in proportion to the money returned; see
``clawback_target``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from fractions import Fraction
from types import MappingProxyType
from typing import Any, Mapping, Sequence, cast

from alliance.domain.errors import ValidationFailed

LADDER_STEP_KEYS = frozenset({"from_minor", "multiplier"})


class Tier(StrEnum):
    """A member's tier, from qualifying spend over a rolling twelve months."""

    STANDARD = "standard"
    SILVER = "silver"
    GOLD = "gold"
    DIAMOND = "diamond"


# The built-in multiplier of each tier (version 1 of the tier policy, which migration
# 0022 seeds; the policy in force is data, see ``TierSchedule``). compute_earn takes the
# multiplier from its caller rather than reading this table. Keyed by text: a Tier is a StrEnum, and a card's
# tier as the storage reads it (a plain string) finds its multiplier too.
TIER_MULTIPLIERS: Mapping[str, Decimal] = MappingProxyType(
    {
        Tier.STANDARD: Decimal("1"),
        Tier.SILVER: Decimal("1.25"),
        Tier.GOLD: Decimal("1.5"),
        Tier.DIAMOND: Decimal("2"),
    }
)


class Funder(StrEnum):
    """Who pays for a campaign's points: the partner, or the hub's marketing budget."""

    PARTNER = "partner"
    HUB = "hub"


class JointFunding(StrEnum):
    """A joint campaign's points are paid by its named partners in stated shares (kept apart from ``Funder``,
    whose two payers the partner's caps and the hub's marketing budget distinguish)."""

    JOINT = "joint"


SHARES_WHOLE_BP = 10_000


def split_by_shares(points: int, shares_bp: Sequence[int]) -> tuple[int, ...]:
    """Split ``points`` between funders by their shares in basis points (summing to 10,000), exactly.

    Each funder first gets ``floor(points × share / 10,000)``; the points left over (fewer
    than the number of funders) go one each to the funders with the largest fractional
    remainders, ties to the funder named first (largest remainder, Hamilton's method).
    The parts always add up to ``points``.
    """
    _require_whole(points, "points", minimum=0)
    if not shares_bp or any(not isinstance(share, int) or isinstance(share, bool) or share <= 0
                            for share in shares_bp) or sum(shares_bp) != SHARES_WHOLE_BP:
        whole = all(isinstance(share, int) and not isinstance(share, bool) for share in shares_bp)
        total = f"; these add up to {sum(shares_bp):,} ({Decimal(sum(shares_bp)) / 100}%)" if whole else ""
        raise ValidationFailed("the funders' shares must each be above 0 and add up to 10,000 basis points (100%)"
                               + total, fields={"funders": ["shares must sum to 10000 basis points"]})
    parts = [points * share // SHARES_WHOLE_BP for share in shares_bp]
    remainders = [points * share % SHARES_WHOLE_BP for share in shares_bp]
    left = points - sum(parts)
    # Largest remainder first; among equal remainders the funder named first.
    for position in sorted(range(len(parts)), key=lambda position: (-remainders[position], position))[:left]:
        parts[position] += 1
    return tuple(parts)


class Cap(StrEnum):
    """A limit on the points a partner funds, named in the breakdown when it bites."""

    PER_PURCHASE = "per_purchase_cap"
    PER_MEMBER_DAY = "per_member_day_cap"


def _require_whole(value: object, field: str, *, minimum: int) -> int:
    # bool is a subclass of int, and True points or minor units are always a bug.
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValidationFailed(
            f"{field} must be a whole number of at least {minimum}", fields={field: [f"must be >= {minimum}"]}
        )
    return value


def _require_decimal(value: object, field: str, *, minimum: Decimal, inclusive: bool = True) -> Decimal:
    # Only Decimal is accepted: a float would carry binary rounding error into points.
    if not (isinstance(value, Decimal) and value.is_finite() and (value >= minimum if inclusive else value > minimum)):
        bound = f">= {minimum}" if inclusive else f"> {minimum}"
        raise ValidationFailed(f"{field} must be a finite Decimal {bound}", fields={field: [f"must be {bound}"]})
    return value


def _require_optional_cap(value: object, field: str) -> int | None:
    # A missing cap means no limit; a present one must allow at least one point, as the
    # database's check constraint on the earn rule also demands.
    return None if value is None else _require_whole(value, field, minimum=1)


@dataclass(frozen=True, slots=True)
class LadderStep:
    """From ``from_minor`` upwards, the whole purchase amount gets ``multiplier``."""

    from_minor: int
    multiplier: Decimal

    def __post_init__(self) -> None:
        _require_whole(self.from_minor, "from_minor", minimum=0)
        _require_decimal(self.multiplier, "multiplier", minimum=Decimal(0), inclusive=False)


@dataclass(frozen=True, slots=True)
class EarnRule:
    """A partner's earn rule: base rate per currency unit, amount ladder and caps."""

    base_points_per_unit: Decimal
    ladder: tuple[LadderStep, ...]
    per_purchase_cap_points: int | None
    per_member_day_cap_points: int | None

    def __post_init__(self) -> None:
        _require_decimal(self.base_points_per_unit, "base_points_per_unit", minimum=Decimal(0))
        # A tuple keeps the rule immutable and hashable even when a list was passed in.
        object.__setattr__(self, "ladder", tuple(self.ladder))
        for step in self.ladder:
            if not isinstance(step, LadderStep):
                raise ValidationFailed(
                    "ladder steps must be LadderStep values", fields={"amount_ladder": ["bad step"]}
                )
        # Strictly ascending steps make "the highest step at or below the amount" unique.
        starts = [step.from_minor for step in self.ladder]
        if any(later <= earlier for earlier, later in zip(starts, starts[1:], strict=False)):
            raise ValidationFailed(
                "ladder steps must have strictly ascending from_minor",
                fields={"amount_ladder": ["from_minor must be strictly ascending"]},
            )
        _require_optional_cap(self.per_purchase_cap_points, "per_purchase_cap_points")
        _require_optional_cap(self.per_member_day_cap_points, "per_member_day_cap_points")

    @classmethod
    def from_stored(
        cls,
        base_points_per_unit: Decimal,
        amount_ladder: list[dict[str, Any]],
        per_purchase_cap_points: int | None,
        per_member_day_cap_points: int | None,
    ) -> EarnRule:
        """Build a rule from its stored form, where ladder multipliers are decimal strings."""
        if not isinstance(amount_ladder, list):
            raise ValidationFailed("amount_ladder must be a list", fields={"amount_ladder": ["must be a list"]})
        ladder = tuple(_ladder_step_from_stored(step) for step in amount_ladder)
        return cls(base_points_per_unit, ladder, per_purchase_cap_points, per_member_day_cap_points)


def _ladder_step_from_stored(step: object) -> LadderStep:
    if not isinstance(step, dict) or set(step) != LADDER_STEP_KEYS:
        raise ValidationFailed(
            "each ladder step has exactly from_minor and multiplier",
            fields={"amount_ladder": ["each step has exactly from_minor and multiplier"]},
        )
    multiplier_text = step["multiplier"]
    # The stored multiplier is a string on purpose: a JSON number would reach us as a
    # float, already rounded in binary.
    if not isinstance(multiplier_text, str):
        raise ValidationFailed(
            "a ladder multiplier must be a decimal string such as \"1.5\"",
            fields={"amount_ladder": ["multiplier must be a decimal string"]},
        )
    try:
        multiplier = Decimal(multiplier_text)
    except InvalidOperation as error:
        raise ValidationFailed(
            f"ladder multiplier {multiplier_text!r} is not a decimal number",
            fields={"amount_ladder": ["multiplier must be a decimal string"]},
        ) from error
    return LadderStep(step["from_minor"], multiplier)


@dataclass(frozen=True, slots=True)
class Campaign:
    """An active campaign: a multiplier on the rule points and a flat bonus, with its funder."""

    campaign_id: int
    name: str
    funded_by: Funder | JointFunding
    multiplier: Decimal
    bonus_points: int
    min_amount_minor: int
    # A joint campaign's payers, in the order named: (partner id, share in basis points).
    funders: tuple[tuple[int, int], ...] = ()

    def __post_init__(self) -> None:
        _require_whole(self.campaign_id, "campaign_id", minimum=1)
        if not isinstance(self.name, str) or not self.name:
            raise ValidationFailed("a campaign needs a name", fields={"name": ["must not be empty"]})
        try:
            # Normalise a plain "partner" or "hub" to the enum so comparisons are exact.
            funder = (JointFunding(self.funded_by) if self.funded_by == JointFunding.JOINT
                      else Funder(self.funded_by))
            object.__setattr__(self, "funded_by", funder)
        except ValueError as error:
            raise ValidationFailed(
                "a campaign is funded by the partner or the hub", fields={"funded_by": ["partner or hub"]}
            ) from error
        _require_decimal(self.multiplier, "multiplier", minimum=Decimal(1))
        _require_whole(self.bonus_points, "bonus_points", minimum=0)
        _require_whole(self.min_amount_minor, "min_amount_minor", minimum=0)
        object.__setattr__(self, "funders", tuple(self.funders))
        if (self.funded_by is JointFunding.JOINT) != bool(self.funders):
            raise ValidationFailed("a joint campaign, and only a joint campaign, names its funders",
                                   fields={"funders": ["required for a joint campaign, only for one"]})
        if self.funders:
            partner_ids = [partner_id for partner_id, _ in self.funders]
            if len(set(partner_ids)) != len(partner_ids):
                raise ValidationFailed("a funder is named once", fields={"funders": ["duplicate partner"]})
            split_by_shares(0, [share for _, share in self.funders])


@dataclass(frozen=True, slots=True)
class CampaignPoints:
    """What one campaign added to a purchase, and who pays for it."""

    campaign_id: int
    name: str
    funded_by: Funder | JointFunding
    points: int
    # A joint campaign's line: each funder's part, (partner id, points), in the order named.
    paid_by: tuple[tuple[int, int], ...] = ()

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready dict of this campaign line."""
        line: dict[str, object] = {"campaign_id": self.campaign_id, "name": self.name,
                                   "funded_by": str(self.funded_by), "points": self.points}
        if self.paid_by:
            line["paid_by"] = [{"partner_id": partner_id, "points": points} for partner_id, points in self.paid_by]
        return line


@dataclass(frozen=True, slots=True)
class EarnBreakdown:
    """How a purchase's points came about, step by step, as shown to the merchant.

    ``points_before_caps`` is every point the rule and campaigns gave, before any cap;
    ``partner_points`` is what the partner funds after its caps; ``hub_points`` is what
    hub-funded campaigns give; the member earns ``points_total``, their sum.
    """

    amount_minor: int
    minor_units_per_unit: int
    base_points_per_unit: Decimal
    ladder_multiplier: Decimal
    tier: str
    tier_multiplier: Decimal
    rule_points: int
    campaigns: tuple[CampaignPoints, ...]
    points_before_caps: int
    capped_by: tuple[Cap, ...]
    partner_points: int
    hub_points: int
    points_total: int
    # Points of joint campaigns, paid by their named partners (see ``CampaignPoints.paid_by``).
    joint_points: int = 0

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready dict, Decimals as plain decimal strings so no precision is lost."""
        return {
            "amount_minor": self.amount_minor,
            "minor_units_per_unit": self.minor_units_per_unit,
            "base_points_per_unit": _decimal_text(self.base_points_per_unit),
            "ladder_multiplier": _decimal_text(self.ladder_multiplier),
            "tier": str(self.tier),
            "tier_multiplier": _decimal_text(self.tier_multiplier),
            "rule_points": self.rule_points,
            "campaigns": [line.to_dict() for line in self.campaigns],
            "points_before_caps": self.points_before_caps,
            "capped_by": [str(cap) for cap in self.capped_by],
            "partner_points": self.partner_points,
            "hub_points": self.hub_points,
            "points_total": self.points_total,
        } | ({"joint_points": self.joint_points} if self.joint_points else {})


def _decimal_text(value: Decimal) -> str:
    # Fixed-point notation, because str() may give "1E+1", which some clients misread.
    return format(value, "f")


def ladder_multiplier_for(ladder: Sequence[LadderStep], amount_minor: int) -> Decimal:
    """The multiplier of the highest ladder step at or below ``amount_minor``, else 1."""
    reached = [step for step in ladder if step.from_minor <= amount_minor]
    if not reached:
        return Decimal(1)
    return max(reached, key=lambda step: step.from_minor).multiplier


def floor_of_product(*factors: int | Decimal, divisor: int = 1) -> int:
    """``floor(factor × factor × … ÷ divisor)``, exactly (finite factors, a positive divisor).

    Each Decimal is taken as its exact integer ratio and the one division is an integer
    floor division, so no step rounds (a Decimal division by 3, say, would round first).
    The same value as ``math.floor`` of the ``Fraction`` product, at a fifteenth of the
    cost: a batch of 1,000 purchases computes it a thousand times.
    """
    numerator, denominator = 1, divisor
    for factor in factors:
        factor_numerator, factor_denominator = factor.as_integer_ratio()
        numerator *= factor_numerator
        denominator *= factor_denominator
    return numerator // denominator


def compute_earn(
    *,
    amount_minor: int,
    minor_units_per_unit: int,
    rule: EarnRule,
    tier: str,
    tier_multiplier: Decimal,
    campaigns: Sequence[Campaign],
    partner_points_earned_today: int,
) -> EarnBreakdown:
    """The points a purchase earns under ``rule``, with the breakdown the merchant sees."""
    _require_whole(amount_minor, "amount_minor", minimum=1)
    _require_whole(minor_units_per_unit, "minor_units_per_unit", minimum=1)
    _require_whole(partner_points_earned_today, "partner_points_earned_today", minimum=0)
    _require_decimal(tier_multiplier, "tier_multiplier", minimum=Decimal(0), inclusive=False)
    if not isinstance(rule, EarnRule):
        raise ValidationFailed("rule must be an EarnRule", fields={"rule": ["must be an EarnRule"]})
    try:
        tier = Tier(tier)
    except ValueError as error:
        raise ValidationFailed(f"unknown tier {tier!r}", fields={"tier": [f"one of {', '.join(Tier)}"]}) from error

    ladder_multiplier = ladder_multiplier_for(rule.ladder, amount_minor)
    rule_points = floor_of_product(amount_minor, rule.base_points_per_unit, ladder_multiplier, tier_multiplier,
                                   divisor=minor_units_per_unit)
    campaign_lines = _campaign_lines(campaigns, amount_minor=amount_minor, rule_points=rule_points)

    partner_points_before_caps = rule_points + sum(
        line.points for line in campaign_lines if line.funded_by is Funder.PARTNER
    )
    hub_points = sum(line.points for line in campaign_lines if line.funded_by is Funder.HUB)
    joint_points = sum(line.points for line in campaign_lines if line.funded_by is JointFunding.JOINT)
    partner_points, capped_by = _apply_caps(
        partner_points_before_caps, rule=rule, partner_points_earned_today=partner_points_earned_today
    )
    return EarnBreakdown(
        amount_minor=amount_minor,
        minor_units_per_unit=minor_units_per_unit,
        base_points_per_unit=rule.base_points_per_unit,
        ladder_multiplier=ladder_multiplier,
        tier=tier,
        tier_multiplier=tier_multiplier,
        rule_points=rule_points,
        campaigns=campaign_lines,
        points_before_caps=partner_points_before_caps + hub_points + joint_points,
        capped_by=capped_by,
        partner_points=partner_points,
        hub_points=hub_points,
        points_total=partner_points + hub_points + joint_points,
        joint_points=joint_points,
    )


def _campaign_lines(
    campaigns: Sequence[Campaign], *, amount_minor: int, rule_points: int
) -> tuple[CampaignPoints, ...]:
    for campaign in campaigns:
        if not isinstance(campaign, Campaign):
            raise ValidationFailed("campaigns must be Campaign values", fields={"campaigns": ["bad campaign"]})
    campaign_ids = [campaign.campaign_id for campaign in campaigns]
    # The same campaign twice would pay its bonus twice; that is a caller's bug.
    if len(set(campaign_ids)) != len(campaign_ids):
        raise ValidationFailed("a campaign may apply only once", fields={"campaigns": ["duplicate campaign_id"]})
    lines = []
    for campaign in sorted(campaigns, key=lambda campaign: campaign.campaign_id):
        if amount_minor < campaign.min_amount_minor:
            continue
        extra_points = math.floor(rule_points * (Fraction(campaign.multiplier) - 1))
        points = extra_points + campaign.bonus_points
        if points:
            paid_by: tuple[tuple[int, int], ...] = ()
            if campaign.funders:
                parts = split_by_shares(points, [share for _, share in campaign.funders])
                paid_by = tuple((partner_id, part) for (partner_id, _), part in zip(campaign.funders, parts,
                                                                                    strict=True) if part)
            lines.append(CampaignPoints(campaign.campaign_id, campaign.name, campaign.funded_by, points, paid_by))
    return tuple(lines)


def _apply_caps(
    partner_points: int, *, rule: EarnRule, partner_points_earned_today: int
) -> tuple[int, tuple[Cap, ...]]:
    capped_by: list[Cap] = []
    purchase_cap = rule.per_purchase_cap_points
    if purchase_cap is not None and partner_points > purchase_cap:
        partner_points = purchase_cap
        capped_by.append(Cap.PER_PURCHASE)
    day_cap = rule.per_member_day_cap_points
    if day_cap is not None:
        # Earlier purchases may already have used the whole day's allowance, or more if
        # the cap was lowered during the day; the room left never goes below zero.
        room_today = max(0, day_cap - partner_points_earned_today)
        if partner_points > room_today:
            partner_points = room_today
            capped_by.append(Cap.PER_MEMBER_DAY)
    return partner_points, tuple(capped_by)


def clawback_target(*, points_earned: int, amount_minor: int, refunded_amount_minor_total: int) -> int:
    """The total points to have clawed back once ``refunded_amount_minor_total`` is refunded.

    This is ``floor(points_earned × refunded total / amount_minor)``: cumulative, not
    this refund's share. The caller subtracts what earlier refunds already clawed back;
    because the target only grows with the refunded total and reaches ``points_earned``
    exactly at a full refund, the shares are never negative and never add up to more
    than was earned. To split a clawback by funder, call it once per funder's points.
    """
    _require_whole(points_earned, "points_earned", minimum=0)
    _require_whole(amount_minor, "amount_minor", minimum=1)
    _require_whole(refunded_amount_minor_total, "refunded_amount_minor_total", minimum=0)
    if refunded_amount_minor_total > amount_minor:
        raise ValidationFailed(
            "more money refunded than the purchase amount",
            fields={"refunded_amount_minor_total": [f"must be <= {amount_minor}"]},
        )
    return points_earned * refunded_amount_minor_total // amount_minor


# --- Tier policy ---------------------------------------------------------------------
#
# A tier policy version says how a member qualifies (``TierBasis``), over which rolling
# window, how they fall (``Downgrade``) and what each tier gives. The earn reads only
# the multiplier, through ``TierSchedule.multiplier``; the tiers job reads the rest.


class TierBasis(StrEnum):
    """What a member's tier is earned by."""

    SPEND = "spend"  # purchases less refunds in the alliance currency over the window (whole currency units)
    POINTS = "points"  # points earned on purchases, less those refunds took back, over the window
    TENURE = "tenure"  # whole months since enrolment


class Downgrade(StrEnum):
    """How a member whose qualifying figure fell below their tier comes down."""

    ONE_STEP = "one_step"  # one tier down per period held, never below the level earned
    TO_EARNED = "to_earned"  # straight to the level earned, at the next recompute


TIER_ORDER: tuple[str, ...] = tuple(tier.value for tier in Tier)


@dataclass(frozen=True, slots=True)
class TierLevel:
    """One tier of a policy: the figure that reaches it, its earn multiplier and its birthday bonus."""

    tier: str
    threshold: int
    multiplier: Decimal
    birthday_bonus_points: int = 0

    def as_stored(self) -> dict[str, Any]:
        """The level as the policy's JSON keeps it (the multiplier as exact text)."""
        return {"tier": self.tier, "threshold": self.threshold, "multiplier": _decimal_text(self.multiplier),
                "birthday_bonus_points": self.birthday_bonus_points}


@dataclass(frozen=True, slots=True)
class TierPolicy:
    """One version of the tier policy, in force from ``effective_from`` until the next version's."""

    version: int
    effective_from: datetime
    basis: TierBasis
    window_months: int | None
    downgrade: Downgrade
    period_months: int | None
    levels: tuple[TierLevel, ...]

    def level(self, tier: str) -> TierLevel:
        """The policy's level for ``tier``; a tier the policy leaves out gets the highest listed below it."""
        rank = TIER_ORDER.index(tier) if tier in TIER_ORDER else 0
        below = [level for level in self.levels if TIER_ORDER.index(level.tier) <= rank]
        return below[-1] if below else self.levels[0]

    def multiplier(self, tier: str) -> Decimal:
        """The earn multiplier of a member of ``tier`` under this version."""
        return self.level(tier).multiplier

    def earned(self, figure: int) -> str:
        """The highest tier whose threshold ``figure`` (in the basis's unit) reaches."""
        return [level.tier for level in self.levels if figure >= level.threshold][-1]

    def next_tier(self, *, current: str, figure: int, held_months: int) -> str:
        """The tier a member of ``current`` with ``figure`` moves to; upgrades are immediate.

        Under ``one_step`` a member falls one listed tier, and only once they have held
        their tier for a whole period; under ``to_earned`` straight to the level earned.
        """
        earned = self.earned(figure)
        current_level = self.level(current).tier
        if TIER_ORDER.index(earned) >= TIER_ORDER.index(current_level) or self.downgrade is Downgrade.TO_EARNED:
            return earned
        if self.period_months is not None and held_months < self.period_months:
            return current
        listed = [level.tier for level in self.levels]
        return listed[listed.index(current_level) - 1]

    @classmethod
    def from_stored(cls, *, version: int, effective_from: datetime, basis: str, window_months: int | None,
                    downgrade: str, period_months: int | None, tiers: Sequence[Mapping[str, Any]]) -> TierPolicy:
        """A version as the database keeps it (tiers as JSON, multipliers as text)."""
        levels = tuple(TierLevel(str(item["tier"]), int(item["threshold"]), Decimal(str(item["multiplier"])),
                                 int(item.get("birthday_bonus_points", 0))) for item in tiers)
        return cls(version, effective_from, TierBasis(basis), window_months, Downgrade(downgrade), period_months,
                   levels)


@dataclass(frozen=True, slots=True)
class TierSchedule:
    """Every policy version with its ``effective_from``, oldest first: which one is in force when."""

    versions: tuple[TierPolicy, ...]

    def in_force(self, at: datetime) -> TierPolicy:
        """The version in force at ``at`` (the built-in policy before the first version)."""
        current = BUILT_IN_TIER_POLICY
        for policy in self.versions:
            if policy.effective_from > at:
                break
            current = policy
        return current

    def multiplier(self, tier: str, at: datetime) -> Decimal:
        """The earn multiplier of a member of ``tier`` for an earn at ``at``."""
        return self.in_force(at).multiplier(tier)


def tier_policy_problems(*, basis: object, window_months: object, downgrade: object, period_months: object,
                         levels: object) -> dict[str, list[str]]:
    """What is wrong with a proposed policy, by field; empty when it may be scheduled.

    Tiers are named from ``Tier`` in its order (standard first, at threshold 0) with
    strictly increasing thresholds; multipliers are exact decimals of at least 1 that fit
    NUMERIC(8, 4); birthday bonuses whole points of at least 0.
    """
    from alliance.domain.money import MULTIPLIER_PRECISION, MULTIPLIER_SCALE, exact_decimal_problem

    problems: dict[str, list[str]] = {}
    if basis not in {item.value for item in TierBasis}:
        problems["basis"] = ["must be one of spend, points, tenure"]
    if basis == TierBasis.TENURE:
        if window_months is not None:
            problems["window_months"] = ["must be empty for the tenure basis"]
    elif not _whole_at_least(window_months, 1) or cast(int, window_months) > 120:
        problems["window_months"] = ["must be a whole number of months from 1 to 120"]
    if downgrade not in {item.value for item in Downgrade}:
        problems["downgrade"] = ["must be one_step or to_earned"]
    if downgrade == Downgrade.ONE_STEP:
        if not _whole_at_least(period_months, 1) or cast(int, period_months) > 120:
            problems["period_months"] = ["must be a whole number of months from 1 to 120 for one_step"]
    elif period_months is not None:
        problems["period_months"] = ["must be empty for to_earned"]
    if not isinstance(levels, (list, tuple)) or not levels:
        problems["tiers"] = ["must list at least one tier"]
        return problems
    tier_problems: list[str] = []
    previous_rank, previous_threshold = -1, -1
    for index, level in enumerate(levels):
        if not isinstance(level, TierLevel):
            tier_problems.append(f"tier {index + 1} is not a tier")
            continue
        if level.tier not in TIER_ORDER:
            tier_problems.append(f"tier {index + 1}: {level.tier!r} is not one of {', '.join(TIER_ORDER)}")
            continue
        rank = TIER_ORDER.index(level.tier)
        if rank <= previous_rank:
            tier_problems.append(f"{level.tier}: tiers must be listed once each, in the order {', '.join(TIER_ORDER)}")
        if index == 0 and (level.tier != Tier.STANDARD or level.threshold != 0):
            tier_problems.append("the first tier must be standard with threshold 0")
        if not _whole_at_least(level.threshold, 0):
            tier_problems.append(f"{level.tier}: the threshold must be a whole number of at least 0")
        elif index > 0 and level.threshold <= previous_threshold:
            tier_problems.append(f"{level.tier}: thresholds must increase strictly ({level.threshold} after "
                                 f"{previous_threshold})")
        problem = exact_decimal_problem(level.multiplier, scale=MULTIPLIER_SCALE, precision=MULTIPLIER_PRECISION)
        if problem is None and level.multiplier < 1:
            problem = "must be at least 1"
        if problem is not None:
            tier_problems.append(f"{level.tier}: the multiplier {problem}")
        if not _whole_at_least(level.birthday_bonus_points, 0):
            tier_problems.append(f"{level.tier}: the birthday bonus must be a whole number of points, at least 0")
        previous_rank = rank
        previous_threshold = level.threshold if isinstance(level.threshold, int) else previous_threshold
    if tier_problems:
        problems["tiers"] = tier_problems
    return problems


def _whole_at_least(value: object, minimum: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


# The policy that was fixed in code before tiers became data; migration 0022 seeds it as
# version 1, effective from the epoch.
BUILT_IN_TIER_POLICY = TierPolicy(
    version=1, effective_from=datetime(1970, 1, 1, tzinfo=timezone.utc), basis=TierBasis.SPEND, window_months=12,
    downgrade=Downgrade.TO_EARNED, period_months=None,
    levels=(TierLevel(Tier.STANDARD.value, 0, Decimal("1")), TierLevel(Tier.SILVER.value, 500, Decimal("1.25")),
            TierLevel(Tier.GOLD.value, 1_500, Decimal("1.5")), TierLevel(Tier.DIAMOND.value, 3_000, Decimal("2"))),
)
BUILT_IN_TIER_SCHEDULE = TierSchedule((BUILT_IN_TIER_POLICY,))
