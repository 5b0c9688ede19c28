"""Rules of the double-entry points ledger, as pure functions over plain values.

Points are integers. A journal transaction is a list of entries whose amounts sum to
zero; a member's points live in lots, and spending takes from the lot that expires
soonest so that every redeemed point can be traced to the partner that issued it.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Iterable

from alliance.domain.errors import InsufficientPoints, UnbalancedPosting, ValidationFailed

# A journal transaction touches a handful of accounts; a limit keeps a bug from
# writing an unbounded posting.
MAX_ENTRIES_PER_TRANSACTION = 64
# Far above any real balance, far below the 64-bit column limit, so sums never overflow.
MAX_POINTS_PER_POSTING = 10**15


class AccountKind(StrEnum):
    """What an account holds; member accounts keep a stored, never-negative balance."""

    MEMBER_AVAILABLE = "member_available"
    MEMBER_PENDING = "member_pending"
    MEMBER_HELD = "member_held"
    PARTNER_ISSUED = "partner_issued"
    PARTNER_REDEEMED = "partner_redeemed"
    HUB_MARKETING = "hub_marketing"
    HUB_BREAKAGE = "hub_breakage"
    HUB_ROUNDING = "hub_rounding"


MEMBER_ACCOUNT_KINDS = frozenset(
    {AccountKind.MEMBER_AVAILABLE, AccountKind.MEMBER_PENDING, AccountKind.MEMBER_HELD}
)
PARTNER_ACCOUNT_KINDS = frozenset({AccountKind.PARTNER_ISSUED, AccountKind.PARTNER_REDEEMED})
HUB_ACCOUNT_KINDS = frozenset(
    {AccountKind.HUB_MARKETING, AccountKind.HUB_BREAKAGE, AccountKind.HUB_ROUNDING}
)


class TransactionKind(StrEnum):
    """Why points moved; settlement groups postings by these.

    Five kinds issue points into a lot, each on its own statement line when a partner
    pays for them: a purchase's earn (with the partner's own campaign points on it), a
    joint campaign's share, an award for an activity (behaviour points), a goodwill
    credit and a coupon's bonus. Two kinds take issued points back at the price they were
    issued at: a refund's claw-back and a correction by customer service. A reward ordered
    from the catalog is spent by ``reward_capture`` (the supplier is reimbursed the
    reward's price in money, not a price per point) and given back by ``reward_return``.
    """

    EARN = "earn"
    CAMPAIGN_SHARE = "campaign_share"
    BEHAVIOUR_AWARD = "behaviour_award"
    GOODWILL_CREDIT = "goodwill_credit"
    COUPON_BONUS = "coupon_bonus"
    ACTIVATION = "activation"
    CLAWBACK = "clawback"
    CORRECTION = "correction"
    HOLD = "hold"
    CAPTURE = "capture"
    RELEASE = "release"
    REDEMPTION_REFUND = "redemption_refund"
    REWARD_CAPTURE = "reward_capture"
    REWARD_RETURN = "reward_return"
    EXPIRY = "expiry"
    TRANSFER = "transfer"


# Every kind that issues points into a lot, priced at the issuer's issue price in force.
ISSUING_KINDS = frozenset({TransactionKind.EARN, TransactionKind.CAMPAIGN_SHARE, TransactionKind.BEHAVIOUR_AWARD,
                           TransactionKind.GOODWILL_CREDIT, TransactionKind.COUPON_BONUS})
# Every kind that takes issued points back to their issuer, at the price they were issued at.
TAKE_BACK_KINDS = frozenset({TransactionKind.CLAWBACK, TransactionKind.CORRECTION})


class LotState(StrEnum):
    """A pending lot is not spendable until its partner's return window has passed."""

    PENDING = "pending"
    ACTIVE = "active"


class HoldStatus(StrEnum):
    """Life of a redemption hold: open, then exactly one of the closed states."""

    OPEN = "open"
    CAPTURED = "captured"
    VOIDED = "voided"
    EXPIRED = "expired"


def account_code(kind: AccountKind, *, member_id: int | None = None, partner_id: int | None = None) -> str:
    """The unique, human-readable code of an account, for example ``member:7:available``."""
    if kind in MEMBER_ACCOUNT_KINDS:
        if member_id is None:
            raise ValueError(f"{kind} needs a member")
        return f"member:{member_id}:{kind.removeprefix('member_')}"
    if kind in PARTNER_ACCOUNT_KINDS:
        if partner_id is None:
            raise ValueError(f"{kind} needs a partner")
        return f"partner:{partner_id}:{kind.removeprefix('partner_')}"
    return f"hub:{kind.removeprefix('hub_')}"


@dataclass(frozen=True, slots=True)
class Entry:
    """One line of a journal transaction: an account and a signed number of points."""

    account_id: int
    amount_points: int


def balanced_entries(lines: Iterable[tuple[int, int]]) -> list[Entry]:
    """Merge lines per account, drop zeros, check the sum, and order by account id.

    The order is the lock order: every posting touches account rows in ascending id,
    so two postings can never wait on each other's locks in a cycle.
    """
    per_account: dict[int, int] = defaultdict(int)
    for account_id, amount_points in lines:
        if not isinstance(amount_points, int) or isinstance(amount_points, bool):
            raise UnbalancedPosting("entry amounts must be integer points")
        if abs(amount_points) > MAX_POINTS_PER_POSTING:
            raise UnbalancedPosting("entry amount is beyond the posting limit")
        per_account[account_id] += amount_points
    entries = [Entry(account_id, amount) for account_id, amount in sorted(per_account.items()) if amount]
    if sum(entry.amount_points for entry in entries) != 0:
        raise UnbalancedPosting("the entries of a journal transaction must sum to zero")
    if len(entries) < 2:
        raise UnbalancedPosting("a journal transaction needs at least two non-zero entries")
    if len(entries) > MAX_ENTRIES_PER_TRANSACTION:
        raise UnbalancedPosting("a journal transaction has too many entries")
    return entries


def require_positive_points(points: int, *, field: str = "points") -> int:
    """Return ``points`` if it is a positive integer within the posting limit."""
    if not isinstance(points, int) or isinstance(points, bool) or points <= 0:
        raise ValidationFailed(f"{field} must be a positive whole number", fields={field: ["must be > 0"]})
    if points > MAX_POINTS_PER_POSTING:
        raise ValidationFailed(f"{field} is beyond the posting limit", fields={field: ["too large"]})
    return points


@dataclass(frozen=True, slots=True)
class LotSlice:
    """How many points a lot can give (to spend) or take back (to restore)."""

    lot_id: int
    expires_at: datetime
    points: int


def allocate_soonest_expiry_first(lots: Iterable[LotSlice], points: int) -> list[tuple[int, int]]:
    """Take ``points`` from lots, soonest expiry first (ties by lot id); [(lot_id, points)]."""
    remaining = points
    allocation: list[tuple[int, int]] = []
    for lot in sorted(lots, key=lambda lot: (lot.expires_at, lot.lot_id)):
        if remaining == 0:
            break
        taken = min(lot.points, remaining)
        if taken > 0:
            allocation.append((lot.lot_id, taken))
            remaining -= taken
    if remaining:
        raise InsufficientPoints(f"the lots hold {points - remaining} points, {points} were asked for")
    return allocation


def restore_latest_expiry_first(consumed: Iterable[LotSlice], points: int) -> list[tuple[int, int]]:
    """Give ``points`` back to the lots they came from, latest expiry first.

    Restoring the latest-expiring lots first leaves the soonest-expiring ones spent,
    which is what a spend of the smaller amount would have taken in the first place.
    """
    remaining = points
    restoration: list[tuple[int, int]] = []
    for lot in sorted(consumed, key=lambda lot: (lot.expires_at, lot.lot_id), reverse=True):
        if remaining == 0:
            break
        given = min(lot.points, remaining)
        if given > 0:
            restoration.append((lot.lot_id, given))
            remaining -= given
    if remaining:
        raise InsufficientPoints(f"only {points - remaining} points can be given back to their lots")
    return restoration
