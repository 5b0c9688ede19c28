"""The rewards catalog and fulfilment for partner managers; reward orders on the member's page for customer service.

Partner managers propose rewards, approve those another person proposed, withdraw them,
schedule prices, add stock and upload a voucher's codes (the page counts them, never
shows them); they follow orders by status, supplier and reward, oldest first, and record
on a supplier's behalf that it fulfilled an order or could not. Customer service orders
a reward for a member (voucher codes shown once, on the page answering the order) and
cancels or returns the member's orders. Changes go through ``alliance.services.rewards``,
the service the back-office API and the CLI use, with the signed-in user as the actor.
"""

from __future__ import annotations

import secrets
from datetime import datetime
from typing import Any

from flask import flash, redirect, render_template, request, url_for
from werkzeug.exceptions import BadRequest
from werkzeug.wrappers import Response as BaseResponse

from alliance.console import display, security
from alliance.console.blueprint import console, navigation_item
from alliance.console.helpers import (
    Refused,
    attempt,
    change,
    form_choice,
    form_confirmed,
    form_text,
    form_whole_number,
    now,
    pager_args,
    query_page,
    query_sort,
    query_text,
    sorted_rows,
)
from alliance.domain.earning import TIER_ORDER
from alliance.domain.errors import NotFound, ValidationFailed
from alliance.domain.money import parse_major_units
from alliance.extensions import hub_state
from alliance.services import console_reports, member_admin, partners, reward_console, rewards

CATALOG_ROLES = security.PARTNER_MANAGER_ROLES
SERVICE_ROLES = ("customer_service", "admin")
ORDER_READER_ROLES = ("partner_manager", "customer_service", "admin")
REWARD_STATUSES = ("proposed", "listed", "withdrawn")
CATALOG_SORTS = {
    "code": lambda view: view.code,
    "supplier": lambda view: (view.supplier, view.code),
    "kind": lambda view: (view.kind, view.code),
    "status": lambda view: (view.status, view.code),
    "price": lambda view: (view.points_price or 0, view.code),
}
KIND_WORDS = {"goods": "goods", "voucher": "digital voucher", "experience": "experience or perk",
              "bill_credit": "bill credit"}

navigation_item("Partners", "Rewards", "console.rewards_list", roles=CATALOG_ROLES, order=25,
                summary="the rewards catalog: propose, approve, withdraw, prices, stock and voucher codes")
navigation_item("Partners", "Fulfilment", "console.reward_orders_list", roles=CATALOG_ROLES, order=26,
                summary="members' reward orders by status, supplier and reward: record fulfilment or failure")


def _back(code: str, section: str | None = None) -> str:
    return url_for("console.reward_page", reward_code=code, _anchor=section)


# --- the catalog -------------------------------------------------------------------


@console.route("/rewards")
@security.requires(*CATALOG_ROLES)
def rewards_list() -> str:
    """Every reward (or those of one status or supplier) with its price in force and what is left, sortable."""
    with hub_state().unit_of_work() as uow:
        codes = console_reports.partner_codes(uow.session)
        status = query_text("status", allowed=REWARD_STATUSES)
        supplier = query_text("supplier", allowed=codes)
        sort = query_sort(list(CATALOG_SORTS), "code")
        found = rewards.catalog(uow.session, now=now(), status=status, supplier=supplier)
    return render_template("console/rewards/list.html", rewards=sorted_rows(found, sort, CATALOG_SORTS), sort=sort,
                           status=status, supplier=supplier, statuses=REWARD_STATUSES, codes=codes,
                           kinds=rewards.KINDS, kind_words=KIND_WORDS, tiers=TIER_ORDER,
                           zone=display.viewer_zone_name())


@console.route("/rewards/<reward_code>")
@security.requires(*CATALOG_ROLES)
def reward_page(reward_code: str) -> str:
    """One reward: its terms, prices with their effective dates, stock or codes left, orders by status, who
    proposed and approved it, and the changes."""
    with hub_state().unit_of_work() as uow:
        view = rewards.reward_view(uow.session, reward_code, now=now())
        story = reward_console.reward_story(uow.session, reward_code, now=now())
    return render_template("console/rewards/reward.html", reward=view, story=story, kind_words=KIND_WORDS,
                           stocked=view.kind in rewards.STOCKED_KINDS, zone=display.viewer_zone_name())


def _propose(session: Any, *, unit_price: str, actor: str, now: datetime, **terms: object) -> rewards.RewardView:
    """Propose with the reimbursement typed in the supplier's currency's major units (``9.50``)."""
    supplier = str(terms["supplier"])
    currency = partners.currency_of(session, supplier)
    try:
        unit_price_minor = parse_major_units(unit_price, currency)
    except ValueError as problem:
        raise ValidationFailed(f"The reimbursement per item in {currency} {problem}.",
                               fields={"unit_price": [str(problem)]}) from None
    return rewards.propose_reward(session, unit_price_minor=unit_price_minor, actor=actor, now=now,
                                  **terms)  # type: ignore[arg-type]


@console.route("/rewards", methods=["POST"])
@security.requires(*CATALOG_ROLES)
def rewards_propose() -> BaseResponse:
    """Propose a reward with its first price; another person approves it before it is listed."""
    kind = form_choice("kind", rewards.KINDS, "Choose the kind of reward from the list offered.")
    min_tier = form_text("min_tier", required=False, max_length=20)
    if min_tier is not None and min_tier not in TIER_ORDER:
        raise BadRequest("Choose the lowest tier from the list offered.")
    proposed = attempt(_propose, supplier=form_text("supplier", max_length=40), code=form_text("code", max_length=40),
                       kind=kind, title=form_text("title", max_length=120),
                       description=form_text("description", required=False, max_length=2000),
                       points_price=form_whole_number("points_price"),
                       unit_price=form_text("unit_price", max_length=20),
                       min_tier=min_tier, per_member_limit=_optional_whole("per_member_limit"),
                       stock=_optional_whole("stock"), fulfilment_days=_whole_or("fulfilment_days", 7),
                       return_days=_whole_or("return_days", 0 if kind == "bill_credit" else 14),
                       valid_from=_optional_moment("valid_from"), valid_until=_optional_moment("valid_until"))
    if isinstance(proposed, Refused):
        return redirect(url_for("console.rewards_list", _anchor="propose"), code=303)
    flash(f"Reward {proposed.code} is proposed: another person approves it before members may order it.", "success")
    return redirect(_back(proposed.code), code=303)


@console.route("/rewards/<reward_code>/approval", methods=["POST"])
@security.requires(*CATALOG_ROLES)
def reward_approve(reward_code: str) -> BaseResponse:
    """List a proposed reward (not by the person who proposed it)."""
    return change(rewards.approve_reward, code=reward_code,
                  success=f"Reward {reward_code} is approved and listed: members may order it.",
                  back=_back(reward_code))


@console.route("/rewards/<reward_code>/withdrawal", methods=["POST"])
@security.requires(*CATALOG_ROLES)
def reward_withdraw(reward_code: str) -> BaseResponse:
    """Take a reward off the catalog, with the reason kept in the audit trail."""
    reason = form_confirmed(max_length=500)
    return change(rewards.withdraw_reward, code=reward_code, reason=reason,
                  success=f"Reward {reward_code} is withdrawn: no new orders; orders placed go on to their end.",
                  back=_back(reward_code))


def _schedule(session: Any, *, code: str, unit_price: str, actor: str, now: datetime,
              **terms: object) -> rewards.RewardView:
    currency = rewards.reward_view(session, code, now=now).currency
    try:
        unit_price_minor = parse_major_units(unit_price, currency)
    except ValueError as problem:
        raise ValidationFailed(f"The reimbursement per item in {currency} {problem}.",
                               fields={"unit_price": [str(problem)]}) from None
    return rewards.schedule_price(session, code=code, unit_price_minor=unit_price_minor, actor=actor, now=now,
                                  **terms)  # type: ignore[arg-type]


@console.route("/rewards/<reward_code>/prices", methods=["POST"])
@security.requires(*CATALOG_ROLES)
def reward_price(reward_code: str) -> BaseResponse:
    """Schedule a new price from a future moment; orders placed before keep theirs."""
    effective_from = _optional_moment("effective_from")
    if effective_from is None:
        raise BadRequest("The form needs the moment the new price takes effect.")
    return change(_schedule, code=reward_code, points_price=form_whole_number("points_price"),
                  unit_price=form_text("unit_price", max_length=20), effective_from=effective_from,
                  success=lambda view: f"A new price of {reward_code} is scheduled from "
                                       f"{display.local_text(effective_from)}.",
                  back=_back(reward_code, "prices"))


@console.route("/rewards/<reward_code>/stock", methods=["POST"])
@security.requires(*CATALOG_ROLES)
def reward_stock(reward_code: str) -> BaseResponse:
    """Add items to a reward whose stock the hub counts."""
    return change(rewards.add_stock, code=reward_code, items=form_whole_number("items"),
                  success=lambda view: f"Stock of {reward_code} is now {view.stock:,} items.",
                  back=_back(reward_code, "stock"))


def _upload(session: Any, *, code: str, codes: list[str], actor: str, now: datetime) -> tuple[int, int]:
    added = rewards.upload_voucher_codes(session, code=code, codes=codes, key_ring=hub_state().key_ring,
                                         actor=actor, now=now)
    return added, rewards.reward_view(session, code, now=now).vouchers_left or 0


@console.route("/rewards/<reward_code>/voucher-codes", methods=["POST"])
@security.requires(*CATALOG_ROLES)
def reward_voucher_codes(reward_code: str) -> BaseResponse:
    """Add the supplier's voucher codes, one a line; the page says how many were added, never which."""
    codes = [line.strip() for line in (request.form.get("codes") or "").splitlines() if line.strip()]
    if not codes:
        raise BadRequest("Paste the supplier's voucher codes, one a line: nothing was added.")
    return change(_upload, code=reward_code, codes=codes,
                  success=lambda counted: f"{counted[0]:,} voucher codes added to {reward_code}; "
                                          f"{counted[1]:,} left in its pool.",
                  back=_back(reward_code, "vouchers"))


# --- fulfilment --------------------------------------------------------------------


@console.route("/reward-orders")
@security.requires(*CATALOG_ROLES)
def reward_orders_list() -> str:
    """Orders of one status (placed unless chosen; ``all`` for every one), supplier and reward, oldest first, a
    page at a time."""
    chosen = request.args.get("status") or "placed"
    status = None if chosen == "all" else chosen
    if status is not None and status not in reward_console.ORDER_STATUSES:
        raise BadRequest("Choose the status from the list offered.")
    sort = query_sort(reward_console.ORDER_SORTS, "placed")
    page, page_size = query_page()
    with hub_state().unit_of_work() as uow:
        codes = console_reports.partner_codes(uow.session)
        reward_codes = reward_console.reward_codes(uow.session)
        supplier = query_text("supplier", allowed=codes)
        reward = query_text("reward", allowed=reward_codes)
        found = reward_console.order_queue(uow.session, now=now(), status=status, supplier=supplier, reward=reward,
                                           sort=sort, page=page, page_size=page_size)
    return render_template("console/rewards/orders.html", orders=found, sort=sort, status=status, supplier=supplier,
                           reward=reward, statuses=reward_console.ORDER_STATUSES, codes=codes,
                           reward_codes=reward_codes, page_size=page_size,
                           pager={**pager_args(), "status": chosen})


@console.route("/reward-orders/<channel>/<path:reference>")
@security.requires(*ORDER_READER_ROLES)
def reward_order_page(channel: str, reference: str) -> str:
    """One order: its reward, member, items, points, reimbursement, times and how it ended; the supplier's
    outcome for partner managers."""
    with hub_state().unit_of_work() as uow:
        order = rewards.order_view(uow.session, channel=channel, reference=reference, now=now())
    return render_template("console/rewards/order.html", order=order, kind_words=KIND_WORDS)


def _order_back(channel: str, reference: str) -> str:
    return url_for("console.reward_order_page", channel=channel, reference=reference)


@console.route("/reward-orders/fulfilment/<channel>/<path:reference>", methods=["POST"])
@security.requires(*CATALOG_ROLES)
def reward_order_fulfil(channel: str, reference: str) -> BaseResponse:
    """Record, on the supplier's behalf, that it fulfilled the order: its points are spent."""
    return change(rewards.fulfil_order, channel=channel, reference=reference, supplier_id=None,
                  note=form_text("note", required=False, max_length=200),
                  success=f"Order {reference} is fulfilled: the member's points are spent and the supplier is "
                          "reimbursed on its next statement.",
                  back=_order_back(channel, reference))


@console.route("/reward-orders/failure/<channel>/<path:reference>", methods=["POST"])
@security.requires(*CATALOG_ROLES)
def reward_order_fail(channel: str, reference: str) -> BaseResponse:
    """Record, on the supplier's behalf, that it cannot fulfil the order: the points come back."""
    reason = form_confirmed(max_length=500)
    return change(rewards.fail_order, channel=channel, reference=reference, supplier_id=None, reason=reason,
                  success=f"Order {reference} is failed: the member's points are back and the stock is freed.",
                  back=_order_back(channel, reference))


# --- a member's orders (customer service) ------------------------------------------


def member_rewards(session: Any, member_id: int) -> tuple[list[rewards.OrderView], list[rewards.RewardView]]:
    """The member's orders, newest first, and the rewards they could order now (for the member's page)."""
    return (rewards.orders(session, now=now(), member_id=member_id, limit=100),
            rewards.catalog(session, now=now(), orderable_only=True))


def fresh_reference() -> str:
    """A new back-office order reference (``CS-`` and twelve hex digits); the same one again is a retry."""
    return f"CS-{secrets.token_hex(6).upper()}"


def _member_orders_url(member_number: str) -> str:
    return url_for("console.member_page", member_number=member_number, _anchor="reward-orders")


def _place(session: Any, *, member_number: str, actor: str, now: datetime, **order: object) -> rewards.PlacedOrder:
    member = member_admin.member_by_number(session, member_number)
    return rewards.place_order(session, member_id=member.id, channel=rewards.BACK_OFFICE_CHANNEL, actor=actor,
                               key_ring=hub_state().key_ring, now=now, **order)  # type: ignore[arg-type]


@console.route("/members/<member_number>/reward-orders", methods=["POST"])
@security.requires(*SERVICE_ROLES)
def member_reward_order(member_number: str) -> str | BaseResponse:
    """Order a reward for the member; a voucher's codes are shown once, on the page answering this."""
    placed = attempt(_place, member_number=member_number, reward_code=form_text("reward", max_length=40),
                     items=form_whole_number("items"), reference=form_text("reference", max_length=64))
    if isinstance(placed, Refused):
        return redirect(_member_orders_url(member_number), code=303)
    if placed.replayed:
        flash(f"Order {placed.order.reference} was already placed ({placed.order.status}); nothing new was ordered. "
              "Its voucher codes, if any, were shown when it was placed.", "success")
        return redirect(_member_orders_url(member_number), code=303)
    return render_template("console/rewards/placed.html", member_number=member_number, order=placed.order,
                           voucher_codes=placed.voucher_codes, kind_words=KIND_WORDS)


def _member_order(session: Any, member_number: str, channel: str, reference: str) -> None:
    """Refuse an order that is not this member's, as unknown."""
    order = rewards.order_view(session, channel=channel, reference=reference, now=now())
    if order.member_number != member_number:
        raise NotFound(f"member {member_number} has no reward order {reference!r}")


def _cancel(session: Any, *, member_number: str, channel: str, reference: str, reason: str, actor: str,
            now: datetime) -> rewards.OrderView:
    _member_order(session, member_number, channel, reference)
    return rewards.cancel_order(session, channel=channel, reference=reference, reason=reason, actor=actor, now=now)


def _return(session: Any, *, member_number: str, channel: str, reference: str, reason: str, actor: str,
            now: datetime) -> rewards.OrderView:
    _member_order(session, member_number, channel, reference)
    return rewards.return_order(session, channel=channel, reference=reference, supplier_id=None, reason=reason,
                                actor=actor, now=now)


@console.route("/members/<member_number>/reward-orders/cancellation/<channel>/<path:reference>", methods=["POST"])
@security.requires(*SERVICE_ROLES)
def member_reward_cancel(member_number: str, channel: str, reference: str) -> BaseResponse:
    """Cancel an order before fulfilment: the member's held points are released."""
    reason = form_confirmed(max_length=500)
    return change(_cancel, member_number=member_number, channel=channel, reference=reference, reason=reason,
                  success=lambda view: f"Order {reference} is {view.status}: the member's points are back.",
                  back=_member_orders_url(member_number))


@console.route("/members/<member_number>/reward-orders/return/<channel>/<path:reference>", methods=["POST"])
@security.requires(*SERVICE_ROLES)
def member_reward_return(member_number: str, channel: str, reference: str) -> BaseResponse:
    """Take a fulfilled order back within its reward's return days: every point goes back to the member."""
    reason = form_confirmed(max_length=500)
    return change(_return, member_number=member_number, channel=channel, reference=reference, reason=reason,
                  success=f"Order {reference} is returned: every point is back with the member.",
                  back=_member_orders_url(member_number))


# --- form fields -------------------------------------------------------------------


def _optional_whole(name: str) -> int | None:
    return form_whole_number(name) if (request.form.get(name) or "").strip() else None


def _whole_or(name: str, default: int) -> int:
    value = _optional_whole(name)
    return default if value is None else value


def _optional_moment(name: str) -> datetime | None:
    """A moment typed as ``2027-01-01T00:00`` in the viewer's time zone; empty means none."""
    text = form_text(name, required=False, max_length=40)
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise BadRequest(f"The {name.replace('_', ' ')} must be a date and time such as 2027-01-01T00:00.") from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=display.viewer_zone())
