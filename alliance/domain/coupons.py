"""Coupons: the terms of a series, a coupon's code, and the one order a till's coupon is judged in.

A coupon is presented at a till in the same signed call as the purchase or redemption
it applies to. ``judge`` decides whether it may be used there, checking in this order
(the first failure is the refusal the till sees): the code is known, it is this member's,
the series is valid at this moment, the coupon has a use left, the series is not
stopped, it is valid at this partner, it is of the kind this call takes, and (amount off)
the redemption holds exactly the points the coupon costs.
"""

from __future__ import annotations

import math
import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from fractions import Fraction

from alliance.domain.errors import AllianceError, ValidationFailed
from alliance.domain.money import MULTIPLIER_PRECISION, MULTIPLIER_SCALE, exact_decimal_problem

# Crockford's base32: no I, L, O or U, so a code read aloud or typed is not mistaken.
CODE_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
CODE_LENGTH = 10
SERIES_CODE = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}\Z")
HUB = "hub"


class CouponKind(StrEnum):
    """What a coupon gives."""

    # Points added to the purchase it is presented with.
    BONUS = "bonus"
    # The purchase's base points multiplied: the extra is floor(base x (m - 1)).
    MULTIPLIER = "multiplier"
    # Money off a redemption, paid for with a stated number of points (the hold).
    AMOUNT_OFF = "amount_off"


class Call(StrEnum):
    """The till call a coupon is presented with."""

    PURCHASE = "purchase"
    REDEMPTION = "redemption"


KINDS_OF_CALL = {Call.PURCHASE: (CouponKind.BONUS, CouponKind.MULTIPLIER), Call.REDEMPTION: (CouponKind.AMOUNT_OFF,)}


class CouponInvalid(AllianceError):
    """The coupon presented cannot be used with this call; nothing of the call is written."""

    code = "coupon_invalid"
    http_status = 422
    title = "Coupon not usable"


def new_code() -> str:
    """A random coupon code: ten characters of Crockford base32 (50 bits) from the system's CSPRNG."""
    return "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))


def normalized_code(code: str) -> str:
    """A code as typed at a till, in the form it is stored: upper case, without spaces or hyphens."""
    return code.strip().replace("-", "").replace(" ", "").upper()


@dataclass(frozen=True, slots=True)
class SeriesTerms:
    """What a series gives, checked whole before it is stored."""

    kind: CouponKind
    bonus_points: int | None = None
    multiplier: Decimal | None = None
    amount_off_minor: int | None = None
    points_cost: int | None = None

    def check(self) -> None:
        """Refuse terms that do not fit the kind (each kind takes exactly its own terms)."""
        given = {"bonus_points": self.bonus_points, "multiplier": self.multiplier,
                 "amount_off_minor": self.amount_off_minor, "points_cost": self.points_cost}
        wanted = {CouponKind.BONUS: {"bonus_points"}, CouponKind.MULTIPLIER: {"multiplier"},
                  CouponKind.AMOUNT_OFF: {"amount_off_minor", "points_cost"}}[self.kind]
        extra = sorted(name for name, value in given.items() if value is not None and name not in wanted)
        missing = sorted(name for name in wanted if given[name] is None)
        if extra or missing:
            fields = {name: [f"not a term of a {self.kind} coupon"] for name in extra}
            fields |= {name: [f"required for a {self.kind} coupon"] for name in missing}
            raise ValidationFailed(f"a {self.kind} coupon takes exactly {', '.join(sorted(wanted))}", fields=fields)
        for name in ("bonus_points", "amount_off_minor", "points_cost"):
            value = given[name]
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value <= 0):
                raise ValidationFailed(f"{name} is a whole number above 0", fields={name: ["must be > 0"]})
        if self.multiplier is not None:
            problem = exact_decimal_problem(self.multiplier, scale=MULTIPLIER_SCALE, precision=MULTIPLIER_PRECISION)
            if problem is not None:
                raise ValidationFailed(f"multiplier {problem}", fields={"multiplier": [problem]})
            if not self.multiplier > 1:
                raise ValidationFailed("a multiplier coupon multiplies by more than 1",
                                       fields={"multiplier": ["must be > 1"]})


def extra_points(kind: CouponKind, *, base_points: int, bonus_points: int | None,
                 multiplier: Decimal | None) -> int:
    """The points a bonus or multiplier coupon adds to a purchase whose rule gave ``base_points``."""
    if kind is CouponKind.BONUS:
        assert bonus_points is not None
        return bonus_points
    if kind is CouponKind.MULTIPLIER:
        assert multiplier is not None
        return math.floor(base_points * (Fraction(multiplier) - 1))
    raise ValueError("an amount_off coupon adds no points")


@dataclass(frozen=True, slots=True)
class Presented:
    """A coupon as read for a till's call: the coupon, its series and where it may be used."""

    code: str
    member_id: int
    uses: int
    uses_allowed: int
    kind: CouponKind
    status: str
    valid_from: datetime
    valid_until: datetime
    # Whether the series names this partner, and whether it names any partner at all.
    valid_here: bool
    limited_to_partners: bool
    points_cost: int | None = None
    currency: str | None = None


def judge(coupon: Presented | None, *, code: str, member_id: int, moment: datetime, call: Call,
          partner_currency: str, hold_points: int | None = None) -> Presented:
    """The coupon if it may be used with this call, else the first reason it may not (``CouponInvalid``)."""
    if coupon is None:
        raise CouponInvalid(f"no coupon with code {code!r}")
    if coupon.member_id != member_id:
        raise CouponInvalid(f"coupon {code!r} belongs to another member")
    if moment < coupon.valid_from:
        raise CouponInvalid(f"coupon {code!r} is not valid before {coupon.valid_from.isoformat()}")
    if moment >= coupon.valid_until:
        raise CouponInvalid(f"coupon {code!r} expired at {coupon.valid_until.isoformat()}")
    if coupon.uses >= coupon.uses_allowed:
        raise CouponInvalid(f"coupon {code!r} has been used up ({coupon.uses} of {coupon.uses_allowed} uses)")
    if coupon.status != "active":
        raise CouponInvalid(f"coupon {code!r} was stopped")
    if (coupon.limited_to_partners and not coupon.valid_here) or (
            coupon.currency is not None and coupon.currency != partner_currency):
        raise CouponInvalid(f"coupon {code!r} is not valid at this partner")
    if coupon.kind not in KINDS_OF_CALL[call]:
        takes = " or ".join(KINDS_OF_CALL[call])
        raise CouponInvalid(f"coupon {code!r} is of kind {coupon.kind}; a {call} takes {takes} coupons")
    if coupon.kind is CouponKind.AMOUNT_OFF and hold_points != coupon.points_cost:
        raise CouponInvalid(f"coupon {code!r} is paid for with {coupon.points_cost} points, "
                            f"not the {hold_points} held")
    return coupon
