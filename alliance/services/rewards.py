"""The rewards catalog and its orders: spending points on what partners supply.

**Catalog.** A reward is proposed for a supplier (a partner) and listed once a partner
manager other than the proposer approves it. Its prices have effective dates: members
pay ``points_price`` points per item, the hub reimburses the supplier ``unit_price_minor``
per item in the supplier's currency. Goods and experiences count their stock; a voucher's
stock is its pool of uploaded codes; bill credit is credit on the member's bill at the
operator partner, ``unit_price_minor`` of it per ``points_price`` points.

**Orders.** Placing an order holds the member's points at the supplier (a redemption
hold that lives for the reward's fulfilment days). The supplier then confirms fulfilment,
which captures the hold (``reward_capture``), or says it cannot fulfil, which releases it.
A voucher is fulfilled when it is ordered: codes are taken from the pool and shown once.
An order not fulfilled in time expires and its points come back. An order may be
cancelled before fulfilment (the hold is released) and returned within the reward's
return days after (``reward_return`` gives every point back to the lots it came from).
Every step is idempotent: an order is found by its channel and reference, and asking for
the state it is already in changes nothing.

**Settlement.** The supplier's statement carries its items on ``rewards_supplied`` (and
``rewards_returned``) lines, reimbursed per item from the order row (``settlement.closing``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from alliance.domain.earning import TIER_ORDER
from alliance.domain.errors import Conflict, InvalidState, NotFound, ValidationFailed
from alliance.domain.ledger import HoldStatus
from alliance.domain.pii import KeyRing, LookupKind
from alliance.models import Member, Partner, RedemptionHold
from alliance.models.rewards import Reward, RewardOrder, RewardPrice, RewardVoucherCode
from alliance.services import audit_log, ledger, staff_people, webhooks

KINDS = ("goods", "voucher", "experience", "bill_credit")
# Kinds whose stock the hub counts; a voucher's stock is its pool, bill credit has none.
STOCKED_KINDS = ("goods", "experience")
BACK_OFFICE_CHANNEL = "back-office"
CODE_PATTERN = re.compile(r"^[a-z0-9][a-z0-9-]{1,39}\Z")
REFERENCE_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,63}\Z")
VOUCHER_CODE_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{3,63}\Z")
MAX_ITEMS_PER_ORDER = 100
MAX_FULFILMENT_DAYS = 30
MAX_CODES_PER_UPLOAD = 10_000
MAX_POINTS_PRICE = 10**9
MAX_UNIT_PRICE_MINOR = 10**12
# Orders still counting against a member's limit and a reward's stock.
LIVE_STATUSES = ("placed", "fulfilled")


class OutOfStock(Conflict):
    """The reward has fewer items (or voucher codes) left than were ordered."""

    code = "out_of_stock"


class RewardUnavailable(Conflict):
    """The reward cannot be ordered now, or by this member."""

    code = "reward_unavailable"


class OrderLimitReached(Conflict):
    """The member already holds as many items of the reward as one member may."""

    code = "order_limit_reached"


class SameApprover(Conflict):
    """The person who proposed a reward cannot approve it."""

    code = "same_approver"


class ReturnWindowClosed(Conflict):
    """A fulfilled order past its reward's return days."""

    code = "return_window_closed"


@dataclass(frozen=True, slots=True)
class RewardView:
    """A reward with its supplier and the price in force."""

    code: str
    supplier: str
    kind: str
    title: str
    description: str | None
    status: str
    min_tier: str | None
    per_member_limit: int | None
    stock: int | None
    vouchers_left: int | None
    fulfilment_days: int
    return_days: int
    valid_from: datetime
    valid_until: datetime | None
    points_price: int | None
    unit_price_minor: int | None
    currency: str
    proposed_by: str
    approved_by: str | None
    approved_at: datetime | None


@dataclass(frozen=True, slots=True)
class OrderView:
    """An order as its member, its supplier and finance see it."""

    channel: str
    reference: str
    member_number: str
    reward: str
    reward_kind: str
    supplier: str
    items: int
    points: int
    unit_price_minor: int
    amount_minor: int
    currency: str
    status: str
    placed_by: str
    placed_at: datetime
    fulfil_by: datetime
    fulfilled_at: datetime | None
    returnable_until: datetime | None
    closed_at: datetime | None
    fulfilment_note: str | None
    end_reason: str | None


@dataclass(frozen=True, slots=True)
class PlacedOrder:
    """An order placed (or found again), with voucher codes the first time only."""

    order: OrderView
    voucher_codes: tuple[str, ...] | None
    replayed: bool


# --- the catalog -------------------------------------------------------------------


def propose_reward(
    session: Session, *, supplier: str, code: str, kind: str, title: str, points_price: int,
    unit_price_minor: int, actor: str, now: datetime, description: str | None = None,
    min_tier: str | None = None, per_member_limit: int | None = None, stock: int | None = None,
    fulfilment_days: int = 7, return_days: int = 14, valid_from: datetime | None = None,
    valid_until: datetime | None = None,
) -> RewardView:
    """Add a reward to the catalog as proposed, with its first price; it is listed once approved."""
    partner = _supplier(session, supplier)
    _require(CODE_PATTERN.match(code or "") is not None, "code",
             "code must be 2-40 lower-case letters, digits or hyphens, starting with a letter or digit")
    _require(kind in KINDS, "kind", f"kind must be one of {', '.join(KINDS)}")
    title = (title or "").strip()
    _require(0 < len(title) <= 120, "title", "title must be 1-120 characters")
    _require(description is None or len(description) <= 2000, "description", "description is at most 2,000 characters")
    _require(min_tier is None or min_tier in TIER_ORDER, "min_tier", f"min_tier must be one of {', '.join(TIER_ORDER)}")
    _require_whole(per_member_limit, "per_member_limit", 1, 10_000, optional=True)
    _require_whole(fulfilment_days, "fulfilment_days", 1, MAX_FULFILMENT_DAYS)
    _require_whole(return_days, "return_days", 0, 365)
    if kind in STOCKED_KINDS:
        _require_whole(stock, "stock", 0, 10**9)
    else:
        _require(stock is None, "stock", f"a {kind.replace('_', ' ')} has no stock to count"
                 + (": its stock is its pool of codes" if kind == "voucher" else ""))
    if kind == "bill_credit":
        _require(return_days == 0, "return_days",
                 "bill credit applied to a bill is not returned: return_days must be 0")
    _check_prices(points_price, unit_price_minor)
    starts = valid_from or now
    _require(valid_until is None or valid_until > starts, "valid_until", "valid_until must be after valid_from")
    if session.scalar(select(Reward.id).where(Reward.code == code)) is not None:
        raise Conflict(f"a reward with code {code!r} already exists")
    try:
        with session.begin_nested():
            reward_id = session.execute(insert(Reward).values(
                code=code, supplier_partner_id=partner.id, kind=kind, title=title, description=description,
                status="proposed", min_tier=min_tier, per_member_limit=per_member_limit, stock=stock,
                fulfilment_days=fulfilment_days, return_days=return_days, valid_from=starts, valid_until=valid_until,
                proposed_by=actor, proposed_at=now,
            ).returning(Reward.id)).scalar_one()
    except IntegrityError as error:
        raise Conflict(f"a reward with code {code!r} already exists") from error
    session.execute(insert(RewardPrice).values(
        reward_id=reward_id, points_price=points_price, unit_price_minor=unit_price_minor, currency=partner.currency,
        effective_from=min(starts, now), set_by=actor, set_at=now))
    audit_log.append(session, actor=actor, action="reward.propose", subject=f"reward:{code}", now=now, after={
        "supplier": partner.code, "kind": kind, "title": title, "points_price": points_price,
        "unit_price_minor": unit_price_minor, "currency": partner.currency, "stock": stock,
        "per_member_limit": per_member_limit, "min_tier": min_tier, "fulfilment_days": fulfilment_days,
        "return_days": return_days})
    return reward_view(session, code, now=now)


def approve_reward(session: Session, *, code: str, actor: str, now: datetime) -> RewardView:
    """List a proposed reward; the person who proposed it cannot approve it."""
    reward = _lock_reward(session, code)
    if reward.status != "proposed":
        raise InvalidState(f"reward {code} is {reward.status}; only a proposed reward can be approved")
    if reward.proposed_by == actor or staff_people.same_person(session, reward.proposed_by, actor):
        raise SameApprover("a reward is approved by a second person, not by whoever proposed it")
    session.execute(update(Reward).where(Reward.id == reward.id).values(
        status="listed", approved_by=actor, approved_at=now))
    audit_log.append(session, actor=actor, action="reward.approve", subject=f"reward:{code}", now=now,
                     before={"status": "proposed"}, after={"status": "listed"})
    return reward_view(session, code, now=now)


def withdraw_reward(session: Session, *, code: str, reason: str, actor: str, now: datetime) -> RewardView:
    """Take a reward off the catalog; orders already placed go on to their end."""
    reason = (reason or "").strip()
    _require(0 < len(reason) <= 500, "reason", "a reason of 1-500 characters is required")
    reward = _lock_reward(session, code)
    if reward.status == "withdrawn":
        raise InvalidState(f"reward {code} is already withdrawn")
    session.execute(update(Reward).where(Reward.id == reward.id).values(
        status="withdrawn", withdrawn_by=actor, withdrawn_at=now, withdrawn_reason=reason))
    audit_log.append(session, actor=actor, action="reward.withdraw", subject=f"reward:{code}", now=now,
                     before={"status": reward.status}, after={"status": "withdrawn", "reason": reason})
    return reward_view(session, code, now=now)


def schedule_price(
    session: Session, *, code: str, points_price: int, unit_price_minor: int, effective_from: datetime,
    actor: str, now: datetime,
) -> RewardView:
    """A new price from ``effective_from`` on (not in the past); orders placed before keep theirs."""
    reward = _lock_reward(session, code)
    _check_prices(points_price, unit_price_minor)
    _require(effective_from > now, "effective_from", "a new price takes effect in the future")
    if session.scalar(select(RewardPrice.id).where(RewardPrice.reward_id == reward.id,
                                                   RewardPrice.effective_from == effective_from)) is not None:
        raise Conflict(f"reward {code} already has a price from {effective_from.isoformat()}")
    currency = session.scalar(select(Partner.currency).where(Partner.id == reward.supplier_partner_id))
    session.execute(insert(RewardPrice).values(
        reward_id=reward.id, points_price=points_price, unit_price_minor=unit_price_minor, currency=currency,
        effective_from=effective_from, set_by=actor, set_at=now))
    audit_log.append(session, actor=actor, action="reward.price", subject=f"reward:{code}", now=now, after={
        "points_price": points_price, "unit_price_minor": unit_price_minor, "currency": currency,
        "effective_from": effective_from.isoformat()})
    return reward_view(session, code, now=now)


def add_stock(session: Session, *, code: str, items: int, actor: str, now: datetime) -> RewardView:
    """Add items to a stocked reward (goods, experiences)."""
    reward = _lock_reward(session, code)
    _require(reward.kind in STOCKED_KINDS, "items", f"a {reward.kind.replace('_', ' ')} has no stock to add to")
    _require_whole(items, "items", 1, 10**9)
    session.execute(update(Reward).where(Reward.id == reward.id).values(stock=Reward.stock + items))
    audit_log.append(session, actor=actor, action="reward.stock", subject=f"reward:{code}", now=now,
                     before={"stock": reward.stock}, after={"stock": (reward.stock or 0) + items})
    return reward_view(session, code, now=now)


def upload_voucher_codes(
    session: Session, *, code: str, codes: list[str], key_ring: KeyRing, actor: str, now: datetime
) -> int:
    """Add a supplier's voucher codes to the reward's pool, encrypted; a code already there is refused."""
    reward = _lock_reward(session, code)
    _require(reward.kind == "voucher", "codes", f"reward {code} is not a voucher")
    _require(isinstance(codes, list) and 0 < len(codes) <= MAX_CODES_PER_UPLOAD, "codes",
             f"upload 1-{MAX_CODES_PER_UPLOAD:,} codes at a time")
    bad = [index + 1 for index, value in enumerate(codes)
           if not isinstance(value, str) or not VOUCHER_CODE_PATTERN.match(value)]
    _require(not bad, "codes", f"codes must be 4-64 letters, digits or hyphens; line(s) {_lines(bad)} are not")
    digests = [key_ring.lookup_hash(f"{reward.id}:{value}", kind=LookupKind.VOUCHER) for value in codes]
    repeated = [index + 1 for index, digest in enumerate(digests) if digest in digests[:index]]
    _require(not repeated, "codes", f"the upload repeats codes at line(s) {_lines(repeated)}")
    known = set(session.scalars(select(RewardVoucherCode.code_digest).where(
        RewardVoucherCode.reward_id == reward.id, RewardVoucherCode.code_digest.in_(digests))))
    already = [index + 1 for index, digest in enumerate(digests) if digest in known]
    if already:
        raise Conflict(f"line(s) {_lines(already)} hold codes already in the pool of {code}; nothing was added")
    session.execute(insert(RewardVoucherCode), [
        {"reward_id": reward.id, "code_digest": digest,
         "code_encrypted": key_ring.encrypt(value, context=f"voucher:{reward.id}"), "uploaded_by": actor,
         "uploaded_at": now}
        for value, digest in zip(codes, digests, strict=True)])
    audit_log.append(session, actor=actor, action="reward.vouchers", subject=f"reward:{code}", now=now,
                     after={"codes_added": len(codes)})
    return len(codes)


def reward_view(session: Session, code: str, *, now: datetime) -> RewardView:
    """One reward, with the price in force at ``now`` (or its first price before that)."""
    views = _reward_views(session, select_where=Reward.code == code, now=now)
    if not views:
        raise NotFound(f"no reward {code!r}")
    return views[0]


def catalog(session: Session, *, now: datetime, status: str | None = "listed", supplier: str | None = None,
            orderable_only: bool = False) -> list[RewardView]:
    """Rewards by code; ``orderable_only`` keeps those listed, valid now and not sold out."""
    conditions = []
    if status is not None:
        conditions.append(Reward.status == status)
    if supplier is not None:
        conditions.append(Reward.supplier_partner_id == _supplier(session, supplier, require_active=False).id)
    views = _reward_views(session, select_where=conditions, now=now)
    if orderable_only:
        views = [view for view in views if _orderable(view, now)]
    return views


# --- orders ------------------------------------------------------------------------


def place_order(
    session: Session, *, reward_code: str, member_id: int, items: int, channel: str, reference: str,
    actor: str, key_ring: KeyRing, now: datetime,
) -> PlacedOrder:
    """Hold the member's points for ``items`` of a reward; a voucher is fulfilled at once.

    The same channel and reference find the order placed before (a retry), which is
    returned without its voucher codes: they are shown once.
    """
    _require(REFERENCE_PATTERN.match(reference or "") is not None, "reference",
             "reference must be 1-64 letters, digits or . _ : / -, starting with a letter or digit")
    _require_whole(items, "items", 1, MAX_ITEMS_PER_ORDER)
    earlier = _order_row(session, channel, reference)
    if earlier is not None:
        return _replay(session, earlier, reward_code=reward_code, member_id=member_id, items=items)
    reward = session.scalar(select(Reward).where(Reward.code == reward_code))
    if reward is None:
        raise NotFound(f"no reward {reward_code!r}")
    member = ledger.lock_member(session, member_id)
    tier = session.scalar(select(Member.tier).where(Member.id == member_id)) or TIER_ORDER[0]
    _check_orderable(session, reward, tier=tier, now=now)
    if reward.per_member_limit is not None:
        held = session.scalar(select(func.coalesce(func.sum(RewardOrder.items), 0)).where(
            RewardOrder.member_id == member_id, RewardOrder.reward_id == reward.id,
            RewardOrder.status.in_(LIVE_STATUSES))) or 0
        if held + items > reward.per_member_limit:
            raise OrderLimitReached(f"a member may hold {reward.per_member_limit} of {reward.code}; "
                                    f"this member holds {held} and ordered {items}")
    if reward.kind in STOCKED_KINDS:
        taken = session.execute(update(Reward).where(Reward.id == reward.id, Reward.stock >= items)
                                .values(stock=Reward.stock - items).returning(Reward.id)).first()
        if taken is None:
            raise OutOfStock(f"{reward.code} has fewer than {items} item(s) left")
    price = _price_in_force(session, reward.id, now)
    points = items * price.points_price
    hold = ledger.authorize_hold(session, member_id=member.member_id, partner_id=reward.supplier_partner_id,
                                 points=points, now=now, ttl_s=reward.fulfilment_days * 86400,
                                 max_ttl_s=MAX_FULFILMENT_DAYS * 86400)
    # The hold carries no redemption reference: the supplier's redemption calls find holds by reference, and a
    # reward's hold is spent or released only through its order.
    try:
        with session.begin_nested():
            order_id = session.execute(insert(RewardOrder).values(
                channel=channel, reference=reference, member_id=member_id, reward_id=reward.id, price_id=price.id,
                supplier_partner_id=reward.supplier_partner_id, items=items, points=points,
                unit_price_minor=price.unit_price_minor, amount_minor=items * price.unit_price_minor,
                currency=price.currency, hold_id=hold.hold_id, status="placed", placed_by=actor, placed_at=now,
            ).returning(RewardOrder.id)).scalar_one()
    except IntegrityError as error:
        raise Conflict(f"order {reference!r} of {channel} was placed at the same moment; ask for it again") from error
    codes: tuple[str, ...] | None = None
    if reward.kind == "voucher":
        codes = _assign_vouchers(session, reward, order_id=order_id, items=items, key_ring=key_ring, now=now)
        _capture(session, order_id, note=None, now=now)
    if channel == BACK_OFFICE_CHANNEL:
        audit_log.append(session, actor=actor, action="reward.order", subject=f"reward-order:{reference}", now=now,
                         after={"reward": reward.code, "member": _member_number(session, member_id),
                                "items": items, "points": points})
    view = _order_view(session, order_id, now=now)
    if view.status == "placed":
        webhooks.emit(session, event_type="reward_order.placed", partner_id=reward.supplier_partner_id, now=now,
                      data={"channel": view.channel, "reference": view.reference, "reward": view.reward,
                            "items": view.items, "fulfil_by": view.fulfil_by.isoformat()})
    else:
        # A voucher is fulfilled at once: its codes are handed over with the order.
        _announce_shipped(session, view, now)
    return PlacedOrder(order=view, voucher_codes=codes, replayed=False)


def fulfil_order(session: Session, *, channel: str, reference: str, supplier_id: int | None, note: str | None,
                 actor: str, now: datetime) -> OrderView:
    """The supplier fulfilled the order: its points are spent. Fulfilling it again changes nothing."""
    order = _lock_order(session, channel, reference, supplier_id)
    _require(note is None or len(note) <= 200, "note", "note is at most 200 characters")
    if order.status == "fulfilled":
        return _order_view(session, order.id, now=now)
    _require_placed(session, order, now, "fulfilled")
    _capture(session, order.id, note=note, now=now)
    _audit_order(session, actor, "reward.fulfil", order, now, {"status": "fulfilled", "note": note})
    view = _order_view(session, order.id, now=now)
    _announce_shipped(session, view, now)
    return view


def fail_order(session: Session, *, channel: str, reference: str, supplier_id: int | None, reason: str,
               actor: str, now: datetime) -> OrderView:
    """The supplier cannot fulfil the order: its points come back and its stock is freed."""
    return _end_placed(session, channel=channel, reference=reference, supplier_id=supplier_id, reason=reason,
                       actor=actor, now=now, status="failed")


def cancel_order(session: Session, *, channel: str, reference: str, reason: str, actor: str,
                 now: datetime) -> OrderView:
    """The member cancels: before fulfilment the hold is released, after it the order is returned."""
    order = _lock_order(session, channel, reference, None)
    before, supplier_id = order.status, order.supplier_partner_id
    if before == "fulfilled":
        view = return_order(session, channel=channel, reference=reference, supplier_id=None, reason=reason,
                            actor=actor, now=now)
    else:
        view = _end_placed(session, channel=channel, reference=reference, supplier_id=None, reason=reason,
                           actor=actor, now=now, status="cancelled")
    if view.status != before:
        # The supplier hears of it: stop preparing a placed order, or expect a fulfilled one back.
        webhooks.emit(session, event_type="reward_order.cancelled", partner_id=supplier_id, now=now,
                      data={"channel": view.channel, "reference": view.reference, "reward": view.reward,
                            "status": view.status})
    return view


def return_order(session: Session, *, channel: str, reference: str, supplier_id: int | None, reason: str,
                 actor: str, now: datetime) -> OrderView:
    """A fulfilled order comes back within its reward's return days: every point goes back to the member."""
    reason = _reason(reason)
    order = _lock_order(session, channel, reference, supplier_id)
    if order.status == "returned":
        return _order_view(session, order.id, now=now)
    if order.status != "fulfilled":
        raise InvalidState(f"order {reference} is {order.status}; only a fulfilled order can be returned")
    reward = session.get_one(Reward, order.reward_id)
    assert order.fulfilled_at is not None
    until = order.fulfilled_at + timedelta(days=reward.return_days)
    if now >= until:
        raise ReturnWindowClosed(f"order {reference} could be returned until {until.isoformat()}")
    transaction_id = ledger.return_reward(session, hold_id=order.hold_id, now=now)
    session.execute(update(RewardOrder).where(RewardOrder.id == order.id).values(
        status="returned", return_transaction_id=transaction_id, closed_at=now, end_reason=reason))
    if reward.kind in STOCKED_KINDS:
        session.execute(update(Reward).where(Reward.id == reward.id).values(stock=Reward.stock + order.items))
    _audit_order(session, actor, "reward.return", order, now, {"status": "returned", "reason": reason})
    return _order_view(session, order.id, now=now)


def expire_orders(session: Session, *, now: datetime, limit: int = 1000) -> int:
    """End placed orders whose supplier did not fulfil them in time; their points come back."""
    due = session.execute(
        select(RewardOrder.channel, RewardOrder.reference)
        .join(RedemptionHold, RedemptionHold.id == RewardOrder.hold_id)
        .where(RewardOrder.status == "placed", RedemptionHold.expires_at <= now)
        .order_by(RewardOrder.member_id, RewardOrder.id).limit(limit)
    ).all()
    for channel, reference in due:
        order = _lock_order(session, channel, reference, None)
        if order.status == "placed":
            _close_placed(session, order, status="expired", reason="not fulfilled in time", now=now)
    return len(due)


def order_exists(session: Session, *, channel: str, reference: str) -> bool:
    """Whether the channel already placed an order under this reference."""
    return _order_row(session, channel, reference) is not None


def order_view(session: Session, *, channel: str, reference: str, supplier_id: int | None = None,
               now: datetime) -> OrderView:
    """One order; a supplier sees only its own."""
    order = _order_row(session, channel, reference)
    if order is None or (supplier_id is not None and order.supplier_partner_id != supplier_id):
        raise NotFound(f"no reward order {reference!r}")
    return _order_view(session, order.id, now=now)


def orders(session: Session, *, now: datetime, supplier_id: int | None = None, member_id: int | None = None,
           status: str | None = None, limit: int = 100, offset: int = 0) -> list[OrderView]:
    """Orders newest first, filtered by supplier, member and status."""
    query = select(RewardOrder.id).order_by(RewardOrder.placed_at.desc(), RewardOrder.id.desc())
    if supplier_id is not None:
        query = query.where(RewardOrder.supplier_partner_id == supplier_id)
    if member_id is not None:
        query = query.where(RewardOrder.member_id == member_id)
    if status is not None:
        query = query.where(RewardOrder.status == status)
    ids = session.scalars(query.limit(limit).offset(offset)).all()
    return [_order_view(session, order_id, now=now) for order_id in ids]


# --- inside ------------------------------------------------------------------------


def _capture(session: Session, order_id: int, *, note: str | None, now: datetime) -> None:
    hold_id = session.scalar(select(RewardOrder.hold_id).where(RewardOrder.id == order_id))
    assert hold_id is not None
    transaction_id = ledger.capture_reward_hold(session, hold_id=hold_id, now=now)
    session.execute(update(RewardOrder).where(RewardOrder.id == order_id).values(
        status="fulfilled", capture_transaction_id=transaction_id, fulfilled_at=now, fulfilment_note=note))


def _end_placed(session: Session, *, channel: str, reference: str, supplier_id: int | None, reason: str,
                actor: str, now: datetime, status: str) -> OrderView:
    reason = _reason(reason)
    order = _lock_order(session, channel, reference, supplier_id)
    if order.status == status:
        return _order_view(session, order.id, now=now)
    _require_placed(session, order, now, status)
    _close_placed(session, order, status=status, reason=reason, now=now)
    _audit_order(session, actor, f"reward.{'fail' if status == 'failed' else 'cancel'}", order, now,
                 {"status": status, "reason": reason})
    return _order_view(session, order.id, now=now)


def _close_placed(session: Session, order: RewardOrder, *, status: str, reason: str, now: datetime) -> None:
    """Release the order's hold (unless the hold already expired by itself) and free its stock."""
    hold_status = session.scalar(select(RedemptionHold.status).where(RedemptionHold.id == order.hold_id))
    if hold_status == HoldStatus.OPEN.value:
        if status == "expired":
            ledger.expire_hold(session, hold_id=order.hold_id, now=now)
        else:
            ledger.void_hold(session, hold_id=order.hold_id, now=now)
    session.execute(update(RewardOrder).where(RewardOrder.id == order.id).values(
        status=status, closed_at=now, end_reason=reason))
    kind = session.scalar(select(Reward.kind).where(Reward.id == order.reward_id))
    if kind in STOCKED_KINDS:
        session.execute(update(Reward).where(Reward.id == order.reward_id).values(stock=Reward.stock + order.items))


def _require_placed(session: Session, order: RewardOrder, now: datetime, wanted: str) -> None:
    if order.status != "placed":
        raise InvalidState(f"order {order.reference} is {order.status}; it cannot be {wanted}")
    expires_at = session.scalar(select(RedemptionHold.expires_at).where(RedemptionHold.id == order.hold_id))
    assert expires_at is not None
    if expires_at <= now:
        raise InvalidState(f"order {order.reference} was not fulfilled by {expires_at.isoformat()}: it expired, "
                           "and its points go back to the member")


def _assign_vouchers(session: Session, reward: Reward, *, order_id: int, items: int, key_ring: KeyRing,
                     now: datetime) -> tuple[str, ...]:
    rows = session.execute(
        select(RewardVoucherCode.id, RewardVoucherCode.code_encrypted)
        .where(RewardVoucherCode.reward_id == reward.id, RewardVoucherCode.order_id.is_(None))
        .order_by(RewardVoucherCode.id).limit(items).with_for_update(skip_locked=True)
    ).all()
    if len(rows) < items:
        raise OutOfStock(f"{reward.code} has fewer than {items} voucher code(s) left")
    for code_id, _ in rows:
        session.execute(update(RewardVoucherCode).where(RewardVoucherCode.id == code_id,
                                                        RewardVoucherCode.order_id.is_(None))
                        .values(order_id=order_id, assigned_at=now))
    return tuple(key_ring.decrypt(token, context=f"voucher:{reward.id}") for _, token in rows)


def _replay(session: Session, order: RewardOrder, *, reward_code: str, member_id: int, items: int) -> PlacedOrder:
    reward_of_order = session.scalar(select(Reward.code).where(Reward.id == order.reward_id))
    if (reward_of_order, order.member_id, order.items) != (reward_code, member_id, items):
        raise Conflict(f"order {order.reference!r} of {order.channel} was placed for another reward, member or "
                       "number of items")
    return PlacedOrder(order=_order_view(session, order.id, now=order.placed_at), voucher_codes=None, replayed=True)


def _check_orderable(session: Session, reward: Reward, *, tier: str, now: datetime) -> None:
    if reward.status != "listed":
        raise RewardUnavailable(f"{reward.code} is {reward.status}, not listed")
    if now < reward.valid_from or (reward.valid_until is not None and now >= reward.valid_until):
        raise RewardUnavailable(f"{reward.code} cannot be ordered at this time")
    if reward.min_tier is not None and TIER_ORDER.index(tier) < TIER_ORDER.index(reward.min_tier):
        raise RewardUnavailable(f"{reward.code} is for {reward.min_tier} members and above; the member is {tier}")
    status = session.scalar(select(Partner.status).where(Partner.id == reward.supplier_partner_id))
    if status != "active":
        raise RewardUnavailable(f"the supplier of {reward.code} is {status}")


def _orderable(view: RewardView, now: datetime) -> bool:
    in_time = view.valid_from <= now and (view.valid_until is None or now < view.valid_until)
    left = view.stock if view.kind in STOCKED_KINDS else view.vouchers_left
    return view.status == "listed" and in_time and (left is None or left > 0)


def _price_in_force(session: Session, reward_id: int, now: datetime) -> RewardPrice:
    price = session.scalar(select(RewardPrice).where(RewardPrice.reward_id == reward_id,
                                                     RewardPrice.effective_from <= now)
                           .order_by(RewardPrice.effective_from.desc()).limit(1))
    if price is None:
        raise RewardUnavailable("the reward has no price in force yet")
    return price


def _reward_views(session: Session, *, select_where: object, now: datetime) -> list[RewardView]:
    conditions = select_where if isinstance(select_where, list) else [select_where]
    rows = session.execute(
        select(Reward, Partner.code, Partner.currency).join(Partner, Partner.id == Reward.supplier_partner_id)
        .where(*conditions).order_by(Reward.code)).all()
    if not rows:
        return []
    reward_ids = [reward.id for reward, _, _ in rows]
    prices: dict[int, RewardPrice] = {}
    for price in session.scalars(select(RewardPrice).where(RewardPrice.reward_id.in_(reward_ids))
                                 .order_by(RewardPrice.effective_from)):
        if price.reward_id not in prices or price.effective_from <= now:
            prices[price.reward_id] = price
    vouchers = dict(session.execute(
        select(RewardVoucherCode.reward_id, func.count(RewardVoucherCode.id))
        .where(RewardVoucherCode.reward_id.in_(reward_ids), RewardVoucherCode.order_id.is_(None))
        .group_by(RewardVoucherCode.reward_id)).all())
    views = []
    for reward, supplier, currency in rows:
        in_force = prices.get(reward.id)
        views.append(RewardView(
            code=reward.code, supplier=supplier, kind=reward.kind, title=reward.title,
            description=reward.description, status=reward.status, min_tier=reward.min_tier,
            per_member_limit=reward.per_member_limit, stock=reward.stock,
            vouchers_left=vouchers.get(reward.id, 0) if reward.kind == "voucher" else None,
            fulfilment_days=reward.fulfilment_days, return_days=reward.return_days, valid_from=reward.valid_from,
            valid_until=reward.valid_until, points_price=in_force.points_price if in_force else None,
            unit_price_minor=in_force.unit_price_minor if in_force else None,
            currency=in_force.currency if in_force else currency, proposed_by=reward.proposed_by,
            approved_by=reward.approved_by, approved_at=reward.approved_at))
    return views


def _order_view(session: Session, order_id: int, *, now: datetime) -> OrderView:
    row = session.execute(
        select(RewardOrder, Reward.code, Reward.kind, Reward.return_days, Partner.code, Member.member_number,
               RedemptionHold.expires_at)
        .join(Reward, Reward.id == RewardOrder.reward_id)
        .join(Partner, Partner.id == RewardOrder.supplier_partner_id)
        .join(Member, Member.id == RewardOrder.member_id)
        .join(RedemptionHold, RedemptionHold.id == RewardOrder.hold_id)
        .where(RewardOrder.id == order_id)
        .execution_options(populate_existing=True)).one()
    order, reward_code, kind, return_days, supplier, member_number, hold_expires_at = row
    returnable_until = None
    if order.status == "fulfilled" and order.fulfilled_at is not None and return_days:
        returnable_until = order.fulfilled_at + timedelta(days=return_days)
    # A placed order whose hold has run out reads as expired until the sweep records it.
    status = "expired" if order.status == "placed" and hold_expires_at <= now else order.status
    return OrderView(
        channel=order.channel, reference=order.reference, member_number=member_number, reward=reward_code,
        reward_kind=kind, supplier=supplier, items=order.items, points=order.points,
        unit_price_minor=order.unit_price_minor, amount_minor=order.amount_minor, currency=order.currency,
        status=status, placed_by=order.placed_by, placed_at=order.placed_at, fulfil_by=hold_expires_at,
        fulfilled_at=order.fulfilled_at, returnable_until=returnable_until, closed_at=order.closed_at,
        fulfilment_note=order.fulfilment_note, end_reason=order.end_reason)


def _order_row(session: Session, channel: str, reference: str) -> RewardOrder | None:
    return session.scalar(select(RewardOrder).where(RewardOrder.channel == channel,
                                                    RewardOrder.reference == reference))


def _lock_order(session: Session, channel: str, reference: str, supplier_id: int | None) -> RewardOrder:
    """The order under its member's lock, then its own row lock: the ledger's lock order."""
    found = _order_row(session, channel, reference)
    if found is None or (supplier_id is not None and found.supplier_partner_id != supplier_id):
        raise NotFound(f"no reward order {reference!r}")
    ledger.lock_member(session, found.member_id, require_active=False)
    return session.execute(select(RewardOrder).where(RewardOrder.id == found.id).with_for_update()
                           .execution_options(populate_existing=True)).scalar_one()


def _lock_reward(session: Session, code: str) -> Reward:
    reward = session.execute(select(Reward).where(Reward.code == code).with_for_update()
                             .execution_options(populate_existing=True)).scalar_one_or_none()
    if reward is None:
        raise NotFound(f"no reward {code!r}")
    return reward


def _supplier(session: Session, code: str, *, require_active: bool = True) -> Partner:
    partner = session.scalar(select(Partner).where(Partner.code == code))
    if partner is None:
        raise NotFound(f"no partner {code!r}")
    if require_active and partner.status != "active":
        raise ValidationFailed(f"partner {code} is {partner.status}; only an active partner supplies rewards",
                               fields={"supplier": ["not active"]})
    return partner


def _audit_order(session: Session, actor: str, action: str, order: RewardOrder, now: datetime,
                 after: dict[str, object]) -> None:
    audit_log.append(session, actor=actor, action=action, subject=f"reward-order:{order.channel}:{order.reference}",
                     now=now, before={"status": order.status}, after=after)


def _announce_shipped(session: Session, view: OrderView, now: datetime) -> None:
    """Tell the member a reward was fulfilled (``member.reward_shipped``), by member number only."""
    webhooks.emit(session, event_type="member.reward_shipped", now=now, data={
        "member_number": view.member_number, "reward": view.reward, "reference": view.reference})


def _member_number(session: Session, member_id: int) -> str:
    return session.scalar(select(Member.member_number).where(Member.id == member_id)) or ""


def _check_prices(points_price: int, unit_price_minor: int) -> None:
    _require_whole(points_price, "points_price", 1, MAX_POINTS_PRICE)
    _require_whole(unit_price_minor, "unit_price_minor", 0, MAX_UNIT_PRICE_MINOR)


def _reason(reason: str) -> str:
    reason = (reason or "").strip()
    _require(0 < len(reason) <= 500, "reason", "a reason of 1-500 characters is required")
    return reason


def _require(condition: bool, field: str, message: str) -> None:
    if not condition:
        raise ValidationFailed(message, fields={field: [message]})


def _require_whole(value: object, field: str, minimum: int, maximum: int, *, optional: bool = False) -> None:
    if value is None and optional:
        return
    if not isinstance(value, int) or isinstance(value, bool) or not minimum <= value <= maximum:
        raise ValidationFailed(f"{field} must be a whole number from {minimum:,} to {maximum:,}",
                               fields={field: ["out of range"]})


def _lines(numbers: list[int]) -> str:
    shown = ", ".join(str(number) for number in numbers[:10])
    return shown + (f" and {len(numbers) - 10} more" if len(numbers) > 10 else "")
