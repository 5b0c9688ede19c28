"""What the console's rewards pages read beyond ``alliance.services.rewards``: a reward's price history, its
orders by status and who withdrew it, and the fulfilment queue a page at a time in a chosen order.

Read only: every change goes through ``alliance.services.rewards``, as the back-office
API's does. Counts and sums are exact integers from SQL.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from alliance.domain.errors import NotFound
from alliance.models import Member, Partner, RedemptionHold
from alliance.models.base import integer_sum
from alliance.models.rewards import Reward, RewardOrder, RewardPrice
from alliance.services.console_reports import Page, Sort, paged

ORDER_STATUSES = ("placed", "fulfilled", "failed", "cancelled", "expired", "returned")
ORDER_SORTS = ("placed", "fulfil_by", "reward", "supplier", "member", "items", "points", "amount")


@dataclass(frozen=True, slots=True)
class PriceRow:
    """One of a reward's prices: from when, points per item, the supplier's reimbursement per item."""

    effective_from: datetime
    points_price: int
    unit_price_minor: int
    currency: str
    set_by: str
    set_at: datetime
    in_force: bool
    upcoming: bool


@dataclass(frozen=True, slots=True)
class StatusCount:
    """A reward's orders of one status: how many, their items and points."""

    status: str
    orders: int
    items: int
    points: int


@dataclass(frozen=True, slots=True)
class RewardStory:
    """What the reward's page shows beside ``rewards.reward_view``."""

    proposed_at: datetime
    withdrawn_by: str | None
    withdrawn_at: datetime | None
    withdrawn_reason: str | None
    prices: list[PriceRow]
    orders_by_status: list[StatusCount]


@dataclass(frozen=True, slots=True)
class QueuedOrder:
    """An order as the fulfilment list shows it; ``status`` reads a placed order past its time as expired."""

    channel: str
    reference: str
    member_number: str
    reward: str
    reward_title: str
    supplier: str
    items: int
    points: int
    amount_minor: int
    currency: str
    status: str
    placed_at: datetime
    fulfil_by: datetime


def reward_story(session: Session, code: str, *, now: datetime) -> RewardStory:
    """A reward's prices (oldest first, the one in force marked), its orders counted by status, its withdrawal."""
    reward = session.scalar(select(Reward).where(Reward.code == code))
    if reward is None:
        raise NotFound(f"no reward {code!r}")
    prices = list(session.scalars(select(RewardPrice).where(RewardPrice.reward_id == reward.id)
                                  .order_by(RewardPrice.effective_from)))
    started = [price for price in prices if price.effective_from <= now]
    in_force = started[-1] if started else (prices[0] if prices else None)
    counted = {status: (orders, items, points) for status, orders, items, points in session.execute(
        select(RewardOrder.status, func.count(RewardOrder.id), integer_sum(RewardOrder.items),
               integer_sum(RewardOrder.points))
        .where(RewardOrder.reward_id == reward.id).group_by(RewardOrder.status)).all()}
    # Placed orders past their fulfilment time count as expired, as each order reads until the sweep ends it.
    overdue_orders, overdue_items, overdue_points = session.execute(
        select(func.count(RewardOrder.id), integer_sum(RewardOrder.items), integer_sum(RewardOrder.points))
        .join(RedemptionHold, RedemptionHold.id == RewardOrder.hold_id)
        .where(RewardOrder.reward_id == reward.id, RewardOrder.status == "placed",
               RedemptionHold.expires_at <= now)).one()
    adjusted = dict(counted)
    if overdue_orders:
        orders, items, points = adjusted["placed"]
        adjusted["placed"] = (orders - overdue_orders, items - int(overdue_items), points - int(overdue_points))
        orders, items, points = adjusted.get("expired", (0, 0, 0))
        adjusted["expired"] = (orders + overdue_orders, items + int(overdue_items), points + int(overdue_points))
    by_status = [StatusCount(status, *(int(value) for value in adjusted[status]))
                 for status in ORDER_STATUSES if adjusted.get(status, (0, 0, 0))[0]]
    return RewardStory(
        proposed_at=reward.proposed_at, withdrawn_by=reward.withdrawn_by, withdrawn_at=reward.withdrawn_at,
        withdrawn_reason=reward.withdrawn_reason,
        prices=[PriceRow(price.effective_from, price.points_price, price.unit_price_minor, price.currency,
                         price.set_by, price.set_at, price is in_force, price.effective_from > now)
                for price in prices],
        orders_by_status=by_status)


def order_queue(session: Session, *, now: datetime, status: str | None, supplier: str | None, reward: str | None,
                sort: Sort, page: int, page_size: int) -> Page[QueuedOrder]:
    """Orders of one status (``expired`` includes placed orders past their time; ``placed`` leaves them out),
    of one supplier and one reward when given, a page at a time in ``sort``'s order."""
    query = (select(RewardOrder.channel, RewardOrder.reference, Member.member_number, Reward.code, Reward.title,
                    Partner.code, RewardOrder.items, RewardOrder.points, RewardOrder.amount_minor,
                    RewardOrder.currency, RewardOrder.status, RewardOrder.placed_at, RedemptionHold.expires_at)
             .join(Reward, Reward.id == RewardOrder.reward_id)
             .join(Partner, Partner.id == RewardOrder.supplier_partner_id)
             .join(Member, Member.id == RewardOrder.member_id)
             .join(RedemptionHold, RedemptionHold.id == RewardOrder.hold_id))
    if status == "placed":
        query = query.where(RewardOrder.status == "placed", RedemptionHold.expires_at > now)
    elif status == "expired":
        query = query.where((RewardOrder.status == "expired")
                            | ((RewardOrder.status == "placed") & (RedemptionHold.expires_at <= now)))
    elif status is not None:
        query = query.where(RewardOrder.status == status)
    if supplier is not None:
        query = query.where(Partner.code == supplier)
    if reward is not None:
        query = query.where(Reward.code == reward)
    columns = {"placed": RewardOrder.placed_at, "fulfil_by": RedemptionHold.expires_at, "reward": Reward.code,
               "supplier": Partner.code, "member": Member.member_number, "items": RewardOrder.items,
               "points": RewardOrder.points, "amount": RewardOrder.amount_minor}
    rows, total = paged(session, query, page, page_size, *sort.order(columns, RewardOrder.placed_at,
                                                                     RewardOrder.id))
    items = [QueuedOrder(
        channel=channel, reference=reference, member_number=member_number, reward=code, reward_title=title,
        supplier=supplier_code, items=count, points=points, amount_minor=amount, currency=currency,
        status="expired" if order_status == "placed" and fulfil_by <= now else order_status,
        placed_at=placed_at, fulfil_by=fulfil_by)
        for (channel, reference, member_number, code, title, supplier_code, count, points, amount, currency,
             order_status, placed_at, fulfil_by) in rows]
    return Page(items, total, page, page_size)


def reward_codes(session: Session) -> list[str]:
    """Every reward's code, for filter menus."""
    return list(session.scalars(select(Reward.code).order_by(Reward.code)))
