"""Posting to the points ledger: earn, activate, hold, capture, void, refund, claw back, expire.

Every function here works inside the caller's unit of work and never commits. Each one
first locks the member's accounts (``SELECT … FOR UPDATE`` in id order), so reads of
lots and holds that follow see the latest committed state, and two postings for one
member cannot interleave. The stored balances are changed only by database triggers
on inserted entries, and CHECK constraints refuse a negative balance inside that very
write, so the overdraft guard never depends on a value read earlier.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, Protocol, cast

from sqlalchemy import CursorResult, Row, bindparam, insert, literal, select, true, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from alliance.domain.errors import InsufficientPoints, InvalidState, NotFound, ValidationFailed
from alliance.domain.ledger import (
    ISSUING_KINDS,
    TAKE_BACK_KINDS,
    AccountKind,
    HoldStatus,
    LotSlice,
    LotState,
    TransactionKind,
    account_code,
    allocate_soonest_expiry_first,
    balanced_entries,
    require_positive_points,
    restore_latest_expiry_first,
)
from alliance.models import (
    JournalEntry,
    JournalTransaction,
    LedgerAccount,
    LotConsumption,
    Member,
    Partner,
    PartnerPrice,
    PointLot,
    RedemptionHold,
    RiskDecision,
    RiskHeldLot,
)
from alliance.models.base import integer_sum
from alliance.models.ledger import BALANCE_NOT_NEGATIVE, LOT_REMAINING_IN_RANGE
from alliance.observability import metrics
from alliance.services import webhooks
from alliance.services.accounts import account_ids
from alliance.services.price_schedule import price_in_force
from alliance.storage import EarnPosting, PurchaseRow, WrittenEarns
from alliance.storage.adapters import storage_for

MAX_HOLD_TTL_S = 7 * 24 * 3600

# Built once: every posting runs these.
INSERT_TRANSACTION = insert(JournalTransaction.__table__).returning(JournalTransaction.__table__.c.id)
INSERT_ENTRIES = insert(JournalEntry.__table__)
LOCK_MEMBER_ACCOUNTS = (
    select(LedgerAccount.id, LedgerAccount.kind, LedgerAccount.balance_points, Member.status)
    .join(Member, Member.id == LedgerAccount.member_id)
    .where(LedgerAccount.member_id == bindparam("member_id"))
    .order_by(LedgerAccount.id)
    .with_for_update(of=LedgerAccount)
)
EARNING_PARTNER = select(
    Partner.code.label("partner_code"), Partner.status.label("partner_status"),
    Partner.currency.label("partner_currency"),
    price_in_force(Partner.id, bindparam("at")).with_only_columns(PartnerPrice.issue_price_per_point)
    .scalar_subquery().label("issue_price_per_point"),
    select(LedgerAccount.id).where(LedgerAccount.code == bindparam("account_code"))
    .scalar_subquery().label("account_id"),
    literal(True).label("partner_found"),
).where(Partner.id == bindparam("partner_id"))
_EARNING_PARTNER_ROW = EARNING_PARTNER.subquery("earning_partner")
# The member's lock and the partner's terms together: the partner's row is only read.
LOCK_MEMBER_FOR_EARNING = (
    LOCK_MEMBER_ACCOUNTS.add_columns(*_EARNING_PARTNER_ROW.c)
    .outerjoin(_EARNING_PARTNER_ROW, true())
)


@dataclass(frozen=True, slots=True)
class MemberAccounts:
    """A member's three account ids and the balances read under the row lock."""

    member_id: int
    available_id: int
    pending_id: int
    held_id: int
    available_points: int


class EarnTarget(Protocol):
    """Where a member's earn goes: spendable at once, or pending first."""

    @property
    def member_id(self) -> int: ...

    @property
    def available_id(self) -> int: ...

    @property
    def pending_id(self) -> int: ...


@dataclass(frozen=True, slots=True)
class EarningTerms:
    """What a partner's earn posts with: its issued account, the issue price in force, its currency."""

    account_id: int
    price_per_point: Decimal
    currency: str


@dataclass(frozen=True, slots=True)
class EarnResult:
    """What an earn posted."""

    transaction_id: int
    lot_id: int
    points: int
    state: LotState


@dataclass(frozen=True, slots=True)
class HoldResult:
    """An authorization: the hold and the journal transaction that set the points aside."""

    hold_id: int
    transaction_id: int
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class ClawbackResult:
    """Points taken back for a refunded purchase, and those the member had already spent."""

    transaction_id: int | None
    points_recovered: int
    points_unrecovered: int


def post_transaction(
    session: Session,
    *,
    kind: TransactionKind,
    lines: list[tuple[int, int]],
    posted_at: datetime,
    member_id: int | None = None,
    partner_id: int | None = None,
    price_per_point: Decimal | None = None,
    currency: str | None = None,
    hold_id: int | None = None,
    reverses_transaction_id: int | None = None,
    transfer_id: int | None = None,
    memo: str | None = None,
) -> int:
    """Write one balanced journal transaction and return its id."""
    entries = balanced_entries(lines)
    # Core on the session's connection: the ORM's bulk-insert machinery costs more than
    # the two inserts themselves on the hottest path of the hub.
    connection = session.connection()
    transaction_id = connection.execute(INSERT_TRANSACTION, {
        "kind": kind.value, "member_id": member_id, "partner_id": partner_id, "posted_at": posted_at,
        "price_per_point": price_per_point, "currency": currency, "hold_id": hold_id,
        "reverses_transaction_id": reverses_transaction_id, "transfer_id": transfer_id, "memo": memo,
    }).scalar_one()
    rows = [
        {"transaction_id": transaction_id, "account_id": entry.account_id, "amount_points": entry.amount_points}
        for entry in entries
    ]
    try:
        connection.execute(INSERT_ENTRIES, rows)
    except IntegrityError as error:
        raise _translated(error) from error
    metrics.count_posting(session, kind.value, sum(entry.amount_points for entry in entries if entry.amount_points > 0))
    return transaction_id


def lock_member(session: Session, member_id: int, *, require_active: bool = True) -> MemberAccounts:
    """Lock a member's accounts in id order and return their ids and available balance."""
    rows = session.connection().execute(LOCK_MEMBER_ACCOUNTS, {"member_id": member_id}).all()
    return member_accounts_from_rows(rows, member_id, require_active=require_active)


def member_accounts_from_rows(rows: Sequence[Row[*tuple[Any, ...]]], member_id: int, *,
                              require_active: bool) -> MemberAccounts:
    """A member's locked account rows as ids and available balance; a missing or closed member is refused.

    ``rows`` are the member's three accounts in id order, locked, each with ``id``,
    ``kind``, ``balance_points`` and the member's ``status`` (``LOCK_MEMBER_ACCOUNTS``).
    """
    if not rows:
        raise NotFound("no such member")
    if require_active and rows[0].status != "active":
        raise InvalidState(f"the membership is {rows[0].status}")
    by_kind = {row.kind: row for row in rows}
    return MemberAccounts(
        member_id=member_id,
        available_id=by_kind[AccountKind.MEMBER_AVAILABLE].id,
        pending_id=by_kind[AccountKind.MEMBER_PENDING].id,
        held_id=by_kind[AccountKind.MEMBER_HELD].id,
        available_points=by_kind[AccountKind.MEMBER_AVAILABLE].balance_points,
    )


def earn(
    session: Session,
    *,
    member_id: int,
    partner_id: int | None,
    points: int,
    now: datetime,
    expires_at: datetime,
    pending_until: datetime | None = None,
    memo: str | None = None,
    locked: MemberAccounts | None = None,
    kind: TransactionKind = TransactionKind.EARN,
) -> EarnResult:
    """Credit a member with points funded by a partner (or, with no partner, the hub).

    ``locked`` is the member's ``lock_member`` result when the caller already holds the
    lock in this transaction (it is not taken twice). ``kind`` is why the points are
    issued (one of ``ISSUING_KINDS``), which names the statement line a paying partner
    sees them on. Written by ``write_earns``, as a purchase's earns are.
    """
    check_earn(points, now, expires_at)
    require_issuing(kind)
    if locked is not None and locked.member_id != member_id:
        raise ValueError("the locked accounts belong to another member")
    if partner_id is None:
        member = locked or lock_member(session, member_id)
        funding_account_id = account_ids(session, [account_code(AccountKind.HUB_MARKETING)])["hub:marketing"]
        price_per_point, currency = None, None
    else:
        member, terms = _lock_for_earning(session, member_id, partner_id, now, locked)
        funding_account_id, price_per_point, currency = terms.account_id, terms.price_per_point, terms.currency
    posting = earn_posting(member, item=0, bonus=partner_id is None, partner_id=partner_id,
                           price_per_point=price_per_point, currency=currency, memo=memo,
                           funding_account_id=funding_account_id, points=points, now=now, pending_until=pending_until,
                           kind=kind)
    written = write_earns(session, [posting], [], now=now, expires_at=expires_at)
    key = (posting.item, posting.bonus)
    return EarnResult(transaction_id=written.transaction_ids[key], lot_id=written.lot_ids[key], points=points,
                      state=LotState(posting.state))


def check_earn(points: int, now: datetime, expires_at: datetime) -> None:
    """What every earn must satisfy before it is written."""
    require_positive_points(points)
    if expires_at <= now:
        raise ValidationFailed("points must expire after they are earned", fields={"expires_at": ["in the past"]})


def require_issuing(kind: TransactionKind) -> None:
    """Refuse a kind that does not issue points into a lot (a bug in the caller, not bad input)."""
    if kind not in ISSUING_KINDS:
        raise ValueError(f"{kind} does not issue points")


def earn_posting(member: MemberAccounts | EarnTarget, *, item: int, bonus: bool, partner_id: int | None,
                 price_per_point: Decimal | None, currency: str | None, memo: str | None, funding_account_id: int,
                 points: int, now: datetime, pending_until: datetime | None,
                 kind: TransactionKind = TransactionKind.EARN, held: bool = False) -> EarnPosting:
    """One earn's posting: pending (into the pending account) until ``pending_until`` if that is still ahead.

    ``held``: pending whatever ``pending_until`` says, because a risk review holds it (the lot
    is listed under its decision and activates once released, not before ``pending_until``).
    """
    pending = held or (pending_until is not None and pending_until > now)
    if held and (pending_until is None or pending_until < now):
        pending_until = now
    return EarnPosting(
        item=item, bonus=bonus, member_id=member.member_id, partner_id=partner_id, price_per_point=price_per_point,
        currency=currency, memo=memo, funding_account_id=funding_account_id,
        target_account_id=member.pending_id if pending else member.available_id, points=points,
        state=(LotState.PENDING if pending else LotState.ACTIVE).value,
        activates_at=pending_until if pending else None, kind=kind.value)


def write_earns(session: Session, postings: Sequence[EarnPosting], purchases: Sequence[PurchaseRow], *,
                now: datetime, expires_at: datetime) -> WrittenEarns:
    """Write earns, and the purchases they belong to, through the storage adapter's one earn writer.

    Each posting is a journal transaction of two entries and a lot (see ``EarnPosting``);
    the database's triggers and constraints check them as they check every posting. A
    purchase whose receipt is already stored is left out of ``purchase_ids``: the caller
    refuses and takes the write back.
    """
    if not postings and not purchases:
        return WrittenEarns()
    try:
        written = storage_for(session).write_earns(session, postings, purchases, now=now, expires_at=expires_at)
    except IntegrityError as error:
        raise _translated(error) from error
    by_kind: dict[str, list[int]] = {}
    for posting in postings:
        by_kind.setdefault(posting.kind, []).append(posting.points)
    for kind, points in by_kind.items():
        metrics.count_posting(session, kind, sum(points), postings=len(points))
    return written


def activate_due_lots(session: Session, *, now: datetime, limit: int = 1000) -> int:
    """Make pending lots whose return window has passed spendable; returns how many.

    A lot held for a risk review (``risk_held_lots`` of an open decision) stays pending
    whatever its time, until a reviewer releases it (``activate_lots``).
    """
    under_review = (select(RiskHeldLot.lot_id).join(RiskDecision, RiskDecision.id == RiskHeldLot.decision_id)
                    .where(RiskHeldLot.lot_id == PointLot.id, RiskDecision.review_status == "open"))
    due = session.execute(
        select(PointLot.id, PointLot.member_id)
        .where(PointLot.state == LotState.PENDING.value, PointLot.activates_at <= now, ~under_review.exists())
        # Member order is the lock order of every multi-member transaction.
        .order_by(PointLot.member_id, PointLot.id)
        .limit(limit)
    ).all()
    return _activate(session, [(lot_id, member_id) for lot_id, member_id in due], now)


def activate_lots(session: Session, *, lot_ids: Sequence[int], now: datetime) -> int:
    """Make these pending lots spendable if their return window has passed (a reviewer released them).

    A lot still inside its partner's return window stays pending until ``activate_due_lots``
    reaches it. Returns how many were activated.
    """
    lots = session.execute(select(PointLot.id, PointLot.member_id).where(
        PointLot.id.in_(list(lot_ids)), PointLot.state == LotState.PENDING.value, PointLot.activates_at <= now)
        .order_by(PointLot.member_id, PointLot.id)).all()
    return _activate(session, [(lot_id, member_id) for lot_id, member_id in lots], now)


def _activate(session: Session, due: Sequence[tuple[int, int]], now: datetime) -> int:
    activated = 0
    for lot_id, member_id in due:
        member = lock_member(session, member_id, require_active=False)
        switched = session.execute(
            update(PointLot)
            .where(PointLot.id == lot_id, PointLot.state == LotState.PENDING.value)
            .values(state=LotState.ACTIVE.value)
            .returning(PointLot.points_remaining, PointLot.partner_id)
        ).first()
        if switched is None:
            continue
        if switched.points_remaining:
            post_transaction(
                session, kind=TransactionKind.ACTIVATION,
                lines=[(member.pending_id, -switched.points_remaining),
                       (member.available_id, switched.points_remaining)],
                posted_at=now, member_id=member_id, partner_id=switched.partner_id,
            )
        activated += 1
    return activated


def authorize_hold(
    session: Session, *, member_id: int, partner_id: int, points: int, now: datetime, ttl_s: int,
    max_ttl_s: int = MAX_HOLD_TTL_S,
) -> HoldResult:
    """Set points aside for a redemption at a partner until capture, void or expiry.

    ``max_ttl_s`` is longer for a reward order, whose supplier has days to fulfil it.
    """
    require_positive_points(points)
    if not 0 < ttl_s <= max_ttl_s:
        raise ValidationFailed(f"a hold lives between 1 and {max_ttl_s} seconds",
                               fields={"ttl_s": ["out of range"]})
    member = lock_member(session, member_id)
    _active_partner(session, partner_id)
    # Points past their expiry are breakage, not spendable, even before the hourly job
    # has swept them; sweep this member's now, under the lock.
    available_points = member.available_points - _expire_member_lots(session, member, now)
    if available_points < points:
        raise InsufficientPoints(f"the card's available points do not cover {points}")
    expires_at = now + timedelta(seconds=ttl_s)
    hold_id = session.execute(
        insert(RedemptionHold)
        .values(
            member_id=member_id, partner_id=partner_id, status=HoldStatus.OPEN.value, points_held=points,
            points_captured=0, points_refunded=0, created_at=now, expires_at=expires_at,
        )
        .returning(RedemptionHold.id)
    ).scalar_one()
    transaction_id = post_transaction(
        session, kind=TransactionKind.HOLD, lines=[(member.available_id, -points), (member.held_id, points)],
        posted_at=now, member_id=member_id, partner_id=partner_id, hold_id=hold_id,
    )
    lots = session.execute(
        select(PointLot.id, PointLot.expires_at, PointLot.points_remaining).where(
            PointLot.member_id == member_id, PointLot.state == LotState.ACTIVE.value, PointLot.points_remaining > 0
        )
    ).all()
    allocation = allocate_soonest_expiry_first([LotSlice(*lot) for lot in lots], points)
    _consume(session, allocation, transaction_id=transaction_id, member_id=member_id, hold_id=hold_id)
    return HoldResult(hold_id=hold_id, transaction_id=transaction_id, expires_at=expires_at)


def capture_hold(session: Session, *, hold_id: int, points: int, now: datetime) -> int:
    """Spend ``points`` of an open hold at its partner, once; the rest goes back."""
    require_positive_points(points)
    member, hold = _lock_hold(session, hold_id)
    _require_open(hold, now)
    if points > hold.points_held:
        raise ValidationFailed(
            f"capture of {points} points exceeds the hold of {hold.points_held}",
            fields={"points": ["exceeds the hold"]},
        )
    # A suspended or terminated partner can still void or refund, but not redeem.
    partner = _active_partner(session, hold.partner_id)
    price = _price_in_force(session, hold.partner_id, now).redemption_price_per_point
    released = hold.points_held - points
    redeemed_account_id = _partner_account_id(session, AccountKind.PARTNER_REDEEMED, hold.partner_id)
    transaction_id = post_transaction(
        session, kind=TransactionKind.CAPTURE,
        lines=[(member.held_id, -hold.points_held), (redeemed_account_id, points), (member.available_id, released)],
        posted_at=now, member_id=member.member_id, partner_id=hold.partner_id, price_per_point=price,
        currency=partner.currency, hold_id=hold_id,
    )
    if released:
        _restore_to_lots(session, hold, released, transaction_id)
    _close_hold(session, hold_id, HoldStatus.CAPTURED, now, points_captured=points)
    return transaction_id


def capture_reward_hold(session: Session, *, hold_id: int, now: datetime) -> int:
    """Spend a reward order's whole hold at its supplier; the supplier is reimbursed per item, not per point.

    The posting carries the supplier's currency and no price per point: settlement prices
    it from the order (``reward_capture`` feeds an item line).
    """
    member, hold = _lock_hold(session, hold_id)
    _require_open(hold, now)
    supplier = _active_partner(session, hold.partner_id)
    redeemed_account_id = _partner_account_id(session, AccountKind.PARTNER_REDEEMED, hold.partner_id)
    transaction_id = post_transaction(
        session, kind=TransactionKind.REWARD_CAPTURE,
        lines=[(member.held_id, -hold.points_held), (redeemed_account_id, hold.points_held)],
        posted_at=now, member_id=member.member_id, partner_id=hold.partner_id, currency=supplier.currency,
        hold_id=hold_id,
    )
    _close_hold(session, hold_id, HoldStatus.CAPTURED, now, points_captured=hold.points_held)
    return transaction_id


def return_reward(session: Session, *, hold_id: int, now: datetime) -> int:
    """Give back every point of a captured reward order to the lots it came from."""
    member, hold = _lock_hold(session, hold_id)
    if hold.status != HoldStatus.CAPTURED.value or hold.points_refunded:
        raise InvalidState("only a fulfilled reward order that was not returned can be returned")
    capture = session.execute(
        select(JournalTransaction.id, JournalTransaction.currency).where(
            JournalTransaction.hold_id == hold_id, JournalTransaction.kind == TransactionKind.REWARD_CAPTURE.value
        )
    ).one()
    redeemed_account_id = _partner_account_id(session, AccountKind.PARTNER_REDEEMED, hold.partner_id)
    transaction_id = post_transaction(
        session, kind=TransactionKind.REWARD_RETURN,
        lines=[(redeemed_account_id, -hold.points_captured), (member.available_id, hold.points_captured)],
        posted_at=now, member_id=member.member_id, partner_id=hold.partner_id, currency=capture.currency,
        hold_id=hold_id, reverses_transaction_id=capture.id,
    )
    _restore_to_lots(session, hold, hold.points_captured, transaction_id)
    session.execute(
        update(RedemptionHold).where(RedemptionHold.id == hold_id).values(points_refunded=hold.points_captured)
    )
    return transaction_id


def void_hold(session: Session, *, hold_id: int, now: datetime) -> int:
    """Release an open hold in full; returns the releasing transaction."""
    member, hold = _lock_hold(session, hold_id)
    _require_open(hold, now)
    return _release(session, member, hold, now, HoldStatus.VOIDED)


def expire_hold(session: Session, *, hold_id: int, now: datetime) -> int:
    """Release one open hold whose time to live has passed; returns the releasing transaction."""
    member, hold = _lock_hold(session, hold_id)
    if hold.status != HoldStatus.OPEN.value or hold.expires_at > now:
        raise InvalidState("only an open hold past its time to live expires")
    return _release(session, member, hold, now, HoldStatus.EXPIRED)


def expire_holds(session: Session, *, now: datetime, limit: int = 1000) -> int:
    """Release open holds whose time to live has passed; returns how many.

    The partner that authorized each redemption hears of it (``redemption.hold_expired``);
    a reward order's hold carries no reference and its order tells its own story.
    """
    due = session.scalars(
        select(RedemptionHold.id)
        .where(RedemptionHold.status == HoldStatus.OPEN.value, RedemptionHold.expires_at <= now)
        # Member order is the lock order of every multi-member transaction.
        .order_by(RedemptionHold.member_id, RedemptionHold.id)
        .limit(limit)
    ).all()
    expired = 0
    for hold_id in due:
        member, hold = _lock_hold(session, hold_id)
        if hold.status == HoldStatus.OPEN.value:
            _release(session, member, hold, now, HoldStatus.EXPIRED)
            if hold.reference is not None:
                webhooks.emit(session, event_type="redemption.hold_expired", partner_id=hold.partner_id, now=now,
                              data={"reference": hold.reference, "points": int(hold.points_held),
                                    "expired_at": now.isoformat()})
            expired += 1
    return expired


def refund_redemption(session: Session, *, hold_id: int, points: int, now: datetime) -> int:
    """Give back points of a captured redemption, at the price it was captured at."""
    require_positive_points(points)
    member, hold = _lock_hold(session, hold_id)
    if hold.status != HoldStatus.CAPTURED.value:
        # An open hold is what the partner API calls an authorized redemption.
        status = "authorized" if hold.status == HoldStatus.OPEN.value else hold.status
        raise InvalidState(f"the redemption is {status}; only a captured redemption can be refunded")
    refundable = hold.points_captured - hold.points_refunded
    if points > refundable:
        raise ValidationFailed(
            f"refund of {points} points exceeds the {refundable} still refundable", fields={"points": ["too many"]}
        )
    capture = session.execute(
        select(JournalTransaction.id, JournalTransaction.price_per_point, JournalTransaction.currency).where(
            JournalTransaction.hold_id == hold_id, JournalTransaction.kind == TransactionKind.CAPTURE.value
        )
    ).one()
    redeemed_account_id = _partner_account_id(session, AccountKind.PARTNER_REDEEMED, hold.partner_id)
    transaction_id = post_transaction(
        session, kind=TransactionKind.REDEMPTION_REFUND,
        lines=[(redeemed_account_id, -points), (member.available_id, points)],
        posted_at=now, member_id=member.member_id, partner_id=hold.partner_id,
        price_per_point=capture.price_per_point, currency=capture.currency, hold_id=hold_id,
        reverses_transaction_id=capture.id,
    )
    _restore_to_lots(session, hold, points, transaction_id)
    session.execute(
        update(RedemptionHold)
        .where(RedemptionHold.id == hold_id)
        .values(points_refunded=RedemptionHold.points_refunded + points)
    )
    return transaction_id


def clawback_earn(session: Session, *, earn_transaction_id: int, points: int, now: datetime) -> ClawbackResult:
    """Take back points of a refunded purchase from its own lot (pending or spendable).

    Never more than the earn gave in total. Points the member has already spent or that
    expired stay where they went and are reported as unrecovered; no balance goes negative.
    """
    require_positive_points(points)
    lot = session.execute(
        select(PointLot).where(PointLot.earn_transaction_id == earn_transaction_id)
    ).scalar_one_or_none()
    if lot is None:
        raise NotFound("no such earn transaction")
    member = lock_member(session, lot.member_id, require_active=False)
    earned_transaction = session.get_one(JournalTransaction, earn_transaction_id)
    already_recovered = session.execute(
        select(integer_sum(JournalEntry.amount_points))
        .join(JournalTransaction, JournalTransaction.id == JournalEntry.transaction_id)
        .where(
            JournalTransaction.reverses_transaction_id == earn_transaction_id,
            JournalTransaction.kind.in_([kind.value for kind in TAKE_BACK_KINDS]),
            JournalEntry.account_id == lot.funding_account_id,
        )
    ).scalar_one()
    if points > lot.points_earned - already_recovered:
        raise ValidationFailed(
            f"claw back of {points} points exceeds the {lot.points_earned - already_recovered} not yet taken back",
            fields={"points": ["more than was earned"]},
        )
    _expire_member_lots(session, member, now)
    allocation, member_account_id = _clawback_allocation(session, lot, points, member)
    recovered = sum(taken for _, taken in allocation)
    if recovered == 0:
        return ClawbackResult(transaction_id=None, points_recovered=0, points_unrecovered=points)
    transaction_id = post_transaction(
        session, kind=TransactionKind.CLAWBACK,
        lines=[(member_account_id, -recovered), (lot.funding_account_id, recovered)],
        posted_at=now, member_id=lot.member_id, partner_id=lot.partner_id,
        price_per_point=earned_transaction.price_per_point, currency=earned_transaction.currency,
        reverses_transaction_id=earn_transaction_id,
    )
    _consume(session, allocation, transaction_id=transaction_id, member_id=lot.member_id, hold_id=None)
    return ClawbackResult(transaction_id=transaction_id, points_recovered=recovered,
                          points_unrecovered=points - recovered)


def expire_due_lots(session: Session, *, now: datetime, limit: int = 1000) -> int:
    """Expire spendable points past their expiry into the hub's breakage; returns points."""
    members = session.scalars(
        select(PointLot.member_id)
        .where(PointLot.state == LotState.ACTIVE.value, PointLot.expires_at <= now, PointLot.points_remaining > 0)
        .group_by(PointLot.member_id)
        .order_by(PointLot.member_id)
        .limit(limit)
    ).all()
    expired_points = 0
    for member_id in members:
        expired_points += _expire_member_lots(session, lock_member(session, member_id, require_active=False), now)
    return expired_points


def _expire_member_lots(session: Session, member: MemberAccounts, now: datetime) -> int:
    """Move a locked member's points past their expiry to breakage; returns how many."""
    lots = session.execute(
        select(PointLot.id, PointLot.points_remaining).where(
            PointLot.member_id == member.member_id, PointLot.state == LotState.ACTIVE.value,
            PointLot.expires_at <= now, PointLot.points_remaining > 0,
        ).order_by(PointLot.expires_at, PointLot.id)
    ).all()
    total = sum(lot.points_remaining for lot in lots)
    if not total:
        return 0
    breakage_account_id = account_ids(session, [account_code(AccountKind.HUB_BREAKAGE)])["hub:breakage"]
    transaction_id = post_transaction(
        session, kind=TransactionKind.EXPIRY, lines=[(member.available_id, -total), (breakage_account_id, total)],
        posted_at=now, member_id=member.member_id,
    )
    _consume(session, [(lot.id, lot.points_remaining) for lot in lots],
             transaction_id=transaction_id, member_id=member.member_id, hold_id=None)
    return total


def _clawback_allocation(
    session: Session, lot: PointLot, points: int, member: MemberAccounts
) -> tuple[list[tuple[int, int]], int]:
    """What a claw back takes: only the purchase's own lot, and the member account it debits.

    Taking from the member's other lots would destroy points another partner issued and
    is billed for; points already spent stay spent and are reported as unrecovered.
    """
    current = session.execute(
        select(PointLot.state, PointLot.points_remaining).where(PointLot.id == lot.id)
    ).one()
    taken = min(points, current.points_remaining)
    account_id = member.pending_id if current.state == LotState.PENDING.value else member.available_id
    return ([(lot.id, taken)] if taken else []), account_id


def _lock_hold(session: Session, hold_id: int) -> tuple[MemberAccounts, RedemptionHold]:
    """Lock the hold's member first, then the hold row: the fixed order for every hold change."""
    member_id = session.scalar(select(RedemptionHold.member_id).where(RedemptionHold.id == hold_id))
    if member_id is None:
        raise NotFound("no such redemption hold")
    member = lock_member(session, member_id, require_active=False)
    hold = session.execute(
        select(RedemptionHold).where(RedemptionHold.id == hold_id).with_for_update()
        .execution_options(populate_existing=True)
    ).scalar_one()
    return member, hold


def _require_open(hold: RedemptionHold, now: datetime) -> None:
    if hold.status != HoldStatus.OPEN.value:
        raise InvalidState(f"the redemption is already {hold.status}")
    if hold.expires_at <= now:
        raise InvalidState(f"the redemption's hold expired at {hold.expires_at.isoformat()}")


def _release(session: Session, member: MemberAccounts, hold: RedemptionHold, now: datetime, status: HoldStatus) -> int:
    transaction_id = post_transaction(
        session, kind=TransactionKind.RELEASE,
        lines=[(member.held_id, -hold.points_held), (member.available_id, hold.points_held)],
        posted_at=now, member_id=member.member_id, partner_id=hold.partner_id, hold_id=hold.id,
    )
    _restore_to_lots(session, hold, hold.points_held, transaction_id)
    _close_hold(session, hold.id, status, now, points_captured=0)
    return transaction_id


def _close_hold(session: Session, hold_id: int, status: HoldStatus, now: datetime, *, points_captured: int) -> None:
    # An UPDATE's result is a CursorResult; Session.execute types every result as Result.
    closed = cast(CursorResult[*tuple[Any, ...]], session.execute(
        update(RedemptionHold)
        .where(RedemptionHold.id == hold_id, RedemptionHold.status == HoldStatus.OPEN.value)
        .values(status=status.value, points_captured=points_captured, closed_at=now)
    ))
    assert closed.rowcount == 1, "a hold is closed exactly once, under its row lock"


def _restore_to_lots(session: Session, hold: RedemptionHold, points: int, transaction_id: int) -> None:
    consumed = session.execute(
        select(LotConsumption.lot_id, PointLot.expires_at, integer_sum(LotConsumption.points))
        .join(PointLot, PointLot.id == LotConsumption.lot_id)
        .where(LotConsumption.hold_id == hold.id)
        .group_by(LotConsumption.lot_id, PointLot.expires_at)
    ).all()
    restoration = restore_latest_expiry_first([LotSlice(*row) for row in consumed], points)
    _consume(
        session, [(lot_id, -given) for lot_id, given in restoration],
        transaction_id=transaction_id, member_id=hold.member_id, hold_id=hold.id,
    )


def _consume(
    session: Session, allocation: list[tuple[int, int]], *, transaction_id: int, member_id: int, hold_id: int | None
) -> None:
    """Record lot consumptions (negative gives back); a trigger keeps lot remainders."""
    if not allocation:
        return
    rows = [
        {"lot_id": lot_id, "transaction_id": transaction_id, "member_id": member_id, "hold_id": hold_id,
         "points": points}
        for lot_id, points in sorted(allocation)
    ]
    try:
        session.execute(insert(LotConsumption), rows)
    except IntegrityError as error:
        raise _translated(error) from error


def _lock_for_earning(
    session: Session, member_id: int, partner_id: int, now: datetime, locked: MemberAccounts | None
) -> tuple[MemberAccounts, EarningTerms]:
    """Lock the member (unless ``locked``) and read the partner's earning terms, in one round trip.

    The member's checks come first, as with ``lock_member`` followed by the partner's.
    """
    parameters = {"member_id": member_id, "partner_id": partner_id, "at": now,
                  "account_code": account_code(AccountKind.PARTNER_ISSUED, partner_id=partner_id)}
    connection = session.connection()
    if locked is not None:
        return locked, earning_terms(connection.execute(EARNING_PARTNER, parameters).first(), partner_id, now)
    rows = connection.execute(LOCK_MEMBER_FOR_EARNING, parameters).all()
    member = member_accounts_from_rows(rows, member_id, require_active=True)
    return member, earning_terms(rows[0] if rows[0].partner_found else None, partner_id, now)


def earning_terms(row: Row[*tuple[Any, ...]] | None, partner_id: int, now: datetime) -> EarningTerms:
    """An active partner's issued account, issue price in force and currency; anything missing is refused.

    ``row`` has the columns of ``EARNING_PARTNER`` (None when there is no such partner).
    """
    if row is None:
        raise NotFound("no such partner")
    if row.partner_status != "active":
        raise InvalidState(f"partner {row.partner_code} is {row.partner_status}")
    if row.issue_price_per_point is None:
        raise InvalidState(f"the partner has no price in force at {now.isoformat()}")
    if row.account_id is None:
        raise NotFound("the partner has no issued-points account")
    return EarningTerms(account_id=row.account_id, price_per_point=row.issue_price_per_point,
                        currency=row.partner_currency)


def _active_partner(session: Session, partner_id: int) -> Partner:
    partner = session.get(Partner, partner_id)
    if partner is None:
        raise NotFound("no such partner")
    if partner.status != "active":
        raise InvalidState(f"partner {partner.code} is {partner.status}")
    return partner


def _partner_account_id(session: Session, kind: AccountKind, partner_id: int) -> int:
    code = account_code(kind, partner_id=partner_id)
    return account_ids(session, [code])[code]


def _price_in_force(session: Session, partner_id: int, at: datetime) -> PartnerPrice:
    price = session.scalars(price_in_force(partner_id, at)).first()
    if price is None:
        raise InvalidState(f"the partner has no price in force at {at.isoformat()}")
    return price


def _translated(error: IntegrityError) -> Exception:
    message = str(error.orig)
    if BALANCE_NOT_NEGATIVE in message:
        return InsufficientPoints("the posting would take a member balance below zero")
    if LOT_REMAINING_IN_RANGE in message:
        return InsufficientPoints("the posting would take a lot below zero or above what it earned")
    return error


def transfer(
    session: Session, *, from_member_id: int, to_member_id: int, points: int, transfer_id: int, now: datetime
) -> list[int]:
    """Move spendable points between members, lot by lot, keeping each lot's issuer and expiry.

    Both members are locked in member-id order, the one global order for two-member
    postings. Each source lot used becomes one journal transaction and one new lot for
    the receiver, which names the sender's lot as its origin; returns the transactions.
    """
    require_positive_points(points)
    if from_member_id == to_member_id:
        raise ValidationFailed("a member cannot transfer points to themselves", fields={"to": ["same member"]})
    first, second = sorted((from_member_id, to_member_id))
    locked = {first: lock_member(session, first), second: lock_member(session, second)}
    sender, receiver = locked[from_member_id], locked[to_member_id]
    available_points = sender.available_points - _expire_member_lots(session, sender, now)
    if available_points < points:
        raise InsufficientPoints(f"the sending member's available points do not cover {points}")
    lots = session.execute(
        select(PointLot.id, PointLot.expires_at, PointLot.points_remaining, PointLot.partner_id).where(
            PointLot.member_id == from_member_id, PointLot.state == LotState.ACTIVE.value,
            PointLot.points_remaining > 0, PointLot.expires_at > now,
        )
    ).all()
    by_id = {lot.id: lot for lot in lots}
    allocation = allocate_soonest_expiry_first([LotSlice(lot.id, lot.expires_at, lot.points_remaining) for lot in lots],
                                               points)
    transaction_ids = []
    for lot_id, taken in allocation:
        source = by_id[lot_id]
        transaction_id = post_transaction(
            session, kind=TransactionKind.TRANSFER,
            lines=[(sender.available_id, -taken), (receiver.available_id, taken)],
            posted_at=now, member_id=from_member_id, partner_id=source.partner_id, transfer_id=transfer_id,
        )
        _consume(session, [(lot_id, taken)], transaction_id=transaction_id, member_id=from_member_id, hold_id=None)
        session.execute(insert(PointLot).values(
            member_id=to_member_id, partner_id=source.partner_id, funding_account_id=sender.available_id,
            earn_transaction_id=transaction_id, state=LotState.ACTIVE.value, points_earned=taken,
            points_remaining=taken, earned_at=now, activates_at=None, expires_at=source.expires_at,
            origin_lot_id=lot_id,
        ))
        transaction_ids.append(transaction_id)
    return transaction_ids


@dataclass(frozen=True, slots=True)
class CorrectionPosting:
    """One claw-back a correction posted: the points taken from one lot, back to whoever issued them."""

    transaction_id: int
    lot_id: int
    partner_id: int | None
    points: int


def debit_correction(session: Session, *, member_id: int, points: int, now: datetime,
                     memo: str | None = None) -> list[CorrectionPosting]:
    """Take spendable points away from a member (points credited by mistake), soonest expiry first.

    Refused with ``InsufficientPoints`` if the member's available points do not cover it.
    Each lot used is one ``correction`` posting that takes back points of the earn that
    first issued them (for points a member received in a transfer, the sender's original
    earn): the points go back to that earn's funding account (the issuing partner, or the
    hub's marketing account) at the price it recorded, so the issuer is credited back what
    it paid, on its statement's ``points_corrected`` line.
    """
    require_positive_points(points)
    member = lock_member(session, member_id, require_active=False)
    available_points = member.available_points - _expire_member_lots(session, member, now)
    if available_points < points:
        raise InsufficientPoints(f"the member has {available_points} available points; a correction of {points} "
                                 "cannot take more than that")
    lots = session.execute(
        select(PointLot.id, PointLot.expires_at, PointLot.points_remaining).where(
            PointLot.member_id == member_id, PointLot.state == LotState.ACTIVE.value,
            PointLot.points_remaining > 0, PointLot.expires_at > now,
        )
    ).all()
    allocation = allocate_soonest_expiry_first([LotSlice(*lot) for lot in lots], points)
    postings = []
    for lot_id, taken in allocation:
        origin = _issuing_lot(session, lot_id)
        issued = session.execute(
            select(JournalTransaction.price_per_point, JournalTransaction.currency)
            .where(JournalTransaction.id == origin.earn_transaction_id)
        ).one()
        transaction_id = post_transaction(
            session, kind=TransactionKind.CORRECTION,
            lines=[(member.available_id, -taken), (origin.funding_account_id, taken)],
            posted_at=now, member_id=member_id, partner_id=origin.partner_id,
            price_per_point=issued.price_per_point, currency=issued.currency,
            reverses_transaction_id=origin.earn_transaction_id, memo=memo,
        )
        _consume(session, [(lot_id, taken)], transaction_id=transaction_id, member_id=member_id, hold_id=None)
        postings.append(CorrectionPosting(transaction_id=transaction_id, lot_id=lot_id, partner_id=origin.partner_id,
                                          points=taken))
    return postings


def _issuing_lot(session: Session, lot_id: int) -> PointLot:
    """The lot whose earn first issued a lot's points: itself, or for transferred points the first sender's."""
    lot = session.get_one(PointLot, lot_id)
    while lot.origin_lot_id is not None:
        lot = session.get_one(PointLot, lot.origin_lot_id)
    return lot
