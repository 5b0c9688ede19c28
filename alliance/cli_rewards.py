"""``alliance rewards …``: the rewards catalog, members' orders, and the operator's bill-credit file
(docs/rewards.md)."""

from __future__ import annotations

import csv
import io
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, TypeVar

import click
from flask import Flask

from alliance.cli_admin import MomentType, cli_actor
from alliance.domain.errors import AllianceError
from alliance.extensions import hub_state

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from alliance.cli import WithApp
    from alliance.extensions import HubState
    from alliance.services.rewards import OrderView, RewardView

OPERATOR_NAME = re.compile(r"^[A-Za-z0-9._@-]{1,64}\Z")
REWARD_STATUSES = ("proposed", "listed", "withdrawn")
ORDER_STATUSES = ("placed", "fulfilled", "failed", "cancelled", "expired", "returned")
KINDS = ("goods", "voucher", "experience", "bill_credit")
TO_FULFIL_COLUMNS = ("channel", "reference", "member_number", "reward", "items", "amount_minor", "currency",
                     "fulfil_by")
CONFIRM_COLUMNS = ("channel", "reference", "outcome", "note_or_reason")
OUTCOMES = {"fulfilled": "fulfilled", "failed": "failed"}
PAGE = 500
Command = TypeVar("Command", bound=Callable[..., Any])


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _actor(as_user: str | None) -> str:
    """``cli:<user>``: the operator named by ``--as``, else the account running the command."""
    if as_user is None:
        return cli_actor()
    if not OPERATOR_NAME.match(as_user):
        raise click.BadParameter("1 to 64 letters, digits, dots, dashes, underscores or @", param_hint="--as")
    return f"cli:{as_user}"


def _as_option(what: str) -> Callable[[Command], Command]:
    return click.option("--as", "as_user", default=None,
                        help=f"The operator {what}, recorded as cli:<name> (default: the account running the "
                             "command).")


def _reward_line(view: RewardView) -> str:
    """One reward as a tab-separated line: code, supplier, kind, status, price, what is left, title."""
    price = (f"{view.points_price} points = {view.unit_price_minor} {view.currency} minor"
             if view.points_price is not None else "no price")
    if view.kind == "voucher":
        left = f"{view.vouchers_left} codes left"
    elif view.stock is not None:
        left = f"{view.stock} left"
    else:
        left = "no stock counted"
    approved = f"approved by {view.approved_by}" if view.approved_by else f"proposed by {view.proposed_by}"
    return f"{view.code}\t{view.supplier}\t{view.kind}\t{view.status}\t{price}\t{left}\t{approved}\t{view.title}"


def _order_line(view: OrderView) -> str:
    """One order as a tab-separated line: channel, reference, member, reward and items, points, amount, status."""
    status = view.status
    if view.status == "placed":
        status += f" (fulfil by {view.fulfil_by.isoformat()})"
    elif view.end_reason:
        status += f" ({view.end_reason})"
    elif view.fulfilment_note:
        status += f" ({view.fulfilment_note})"
    return (f"{view.channel}\t{view.reference}\tmember {view.member_number}\t{view.items} x {view.reward}\t"
            f"{view.points} points\t{view.amount_minor} {view.currency} minor\t{status}")


def _codes_of(path: Path) -> list[str]:
    """One voucher code a line (surrounding spaces ignored, trailing empty lines dropped)."""
    try:
        lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    except UnicodeDecodeError as error:
        raise click.BadParameter(f"{path} is not UTF-8 text: {error}", param_hint="--file") from None
    while lines and not lines[-1]:
        lines.pop()
    if not lines:
        raise click.BadParameter(f"{path} holds no codes", param_hint="--file")
    return lines


def _confirm_rows(path: Path) -> list[tuple[int, list[str]]]:
    """The confirmation file's rows with their line numbers; a header row naming the columns is skipped."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as error:
        raise click.BadParameter(f"{path} is not UTF-8 text: {error}", param_hint="--file") from None
    reader = csv.reader(io.StringIO(text))
    rows = []
    for row in reader:
        if not any(cell.strip() for cell in row):
            continue
        if reader.line_num == 1 and [cell.strip().lower() for cell in row][:3] == list(CONFIRM_COLUMNS[:3]):
            continue
        rows.append((reader.line_num, [cell.strip() for cell in row]))
    if not rows:
        raise click.BadParameter(f"{path} holds no lines to apply", param_hint="--file")
    return rows


def register(main: click.Group, with_app: WithApp) -> None:
    """Add the ``rewards`` group to the CLI."""

    @main.group("rewards")
    def rewards_group() -> None:
        """The rewards catalog, members' reward orders, and the supplier's fulfilment files."""

    @rewards_group.command("propose")
    @click.option("--supplier", required=True, help="The supplying partner's code (the operator for bill credit).")
    @click.option("--code", required=True, help="The reward's code: 2-40 lower-case letters, digits or hyphens.")
    @click.option("--kind", required=True, type=click.Choice(KINDS))
    @click.option("--title", required=True)
    @click.option("--points-price", required=True, type=click.IntRange(1), help="Points a member pays per item.")
    @click.option("--unit-price-minor", required=True, type=click.IntRange(0),
                  help="What the supplier is reimbursed per item (bill credit: the credit per item), minor units.")
    @click.option("--description", default=None)
    @click.option("--min-tier", default=None, help="The lowest tier that may order it.")
    @click.option("--per-member-limit", default=None, type=click.IntRange(1), help="Items one member may hold.")
    @click.option("--stock", default=None, type=click.IntRange(0), help="Goods and experiences: items in stock.")
    @click.option("--fulfilment-days", default=7, show_default=True, type=click.IntRange(1))
    @click.option("--return-days", default=None, type=click.IntRange(0),
                  help="Days after fulfilment it may be returned (default 14; bill credit 0).")
    @click.option("--valid-from", default=None, type=MomentType())
    @click.option("--valid-until", default=None, type=MomentType())
    @_as_option("proposing it")
    @with_app
    def propose(app: Flask, supplier: str, code: str, kind: str, title: str, points_price: int,
                unit_price_minor: int, description: str | None, min_tier: str | None, per_member_limit: int | None,
                stock: int | None, fulfilment_days: int, return_days: int | None, valid_from: datetime | None,
                valid_until: datetime | None, as_user: str | None) -> None:
        """Propose a reward with its first price; another person approves it before it is listed."""
        from alliance.services import rewards

        actor = _actor(as_user)
        if return_days is None:
            return_days = 0 if kind == "bill_credit" else 14
        with hub_state(app).unit_of_work() as uow:
            view = rewards.propose_reward(
                uow.session, supplier=supplier, code=code, kind=kind, title=title, points_price=points_price,
                unit_price_minor=unit_price_minor, description=description, min_tier=min_tier,
                per_member_limit=per_member_limit, stock=stock, fulfilment_days=fulfilment_days,
                return_days=return_days, valid_from=valid_from, valid_until=valid_until, actor=actor, now=_now())
            uow.commit()
        click.echo(f"reward {code} proposed by {actor}; another person approves it: alliance rewards approve {code}")
        click.echo(_reward_line(view))

    @rewards_group.command("list")
    @click.option("--status", type=click.Choice(REWARD_STATUSES), default=None, help="Default: every status.")
    @click.option("--supplier", default=None, help="Only this supplier's rewards.")
    @with_app
    def list_rewards(app: Flask, status: str | None, supplier: str | None) -> None:
        """The catalog by code, with each reward's price in force and what is left."""
        from alliance.services import rewards

        with hub_state(app).unit_of_work() as uow:
            views = rewards.catalog(uow.session, now=_now(), status=status, supplier=supplier)
        for view in views:
            click.echo(_reward_line(view))
        if not views:
            click.echo("no rewards", err=True)

    @rewards_group.command("show")
    @click.argument("code")
    @with_app
    def show(app: Flask, code: str) -> None:
        """One reward in full."""
        from alliance.services import rewards

        with hub_state(app).unit_of_work() as uow:
            view = rewards.reward_view(uow.session, code, now=_now())
        click.echo(_reward_line(view))
        click.echo(f"  fulfilment {view.fulfilment_days} days, returns {view.return_days} days; valid from "
                   f"{view.valid_from.isoformat()}"
                   + (f" until {view.valid_until.isoformat()}" if view.valid_until else "")
                   + (f"; {view.min_tier} and above" if view.min_tier else "")
                   + (f"; at most {view.per_member_limit} per member" if view.per_member_limit else ""))
        if view.description:
            click.echo(f"  {view.description}")

    @rewards_group.command("approve")
    @click.argument("code")
    @_as_option("approving it (not the person who proposed it)")
    @with_app
    def approve(app: Flask, code: str, as_user: str | None) -> None:
        """List a proposed reward; the person who proposed it cannot."""
        from alliance.services import rewards

        actor = _actor(as_user)
        with hub_state(app).unit_of_work() as uow:
            view = rewards.approve_reward(uow.session, code=code, actor=actor, now=_now())
            uow.commit()
        click.echo(f"reward {code} listed, approved by {actor}")
        click.echo(_reward_line(view))

    @rewards_group.command("withdraw")
    @click.argument("code")
    @click.option("--reason", required=True)
    @_as_option("withdrawing it")
    @with_app
    def withdraw(app: Flask, code: str, reason: str, as_user: str | None) -> None:
        """Take a reward off the catalog; orders already placed go on to their end."""
        from alliance.services import rewards

        with hub_state(app).unit_of_work() as uow:
            view = rewards.withdraw_reward(uow.session, code=code, reason=reason, actor=_actor(as_user), now=_now())
            uow.commit()
        click.echo(_reward_line(view))

    @rewards_group.command("price")
    @click.argument("code")
    @click.option("--points-price", required=True, type=click.IntRange(1))
    @click.option("--unit-price-minor", required=True, type=click.IntRange(0))
    @click.option("--effective-from", required=True, type=MomentType(), help="A future moment, with its offset.")
    @_as_option("setting it")
    @with_app
    def price(app: Flask, code: str, points_price: int, unit_price_minor: int, effective_from: datetime,
              as_user: str | None) -> None:
        """Schedule a new price; orders placed before it keep theirs."""
        from alliance.services import rewards

        with hub_state(app).unit_of_work() as uow:
            rewards.schedule_price(uow.session, code=code, points_price=points_price,
                                   unit_price_minor=unit_price_minor, effective_from=effective_from,
                                   actor=_actor(as_user), now=_now())
            uow.commit()
        click.echo(f"reward {code}: {points_price} points = {unit_price_minor} minor per item from "
                   f"{effective_from.isoformat()}")

    @rewards_group.command("stock")
    @click.argument("code")
    @click.option("--items", required=True, type=click.IntRange(1))
    @_as_option("adding it")
    @with_app
    def stock(app: Flask, code: str, items: int, as_user: str | None) -> None:
        """Add items to a reward whose stock the hub counts (goods, experiences)."""
        from alliance.services import rewards

        with hub_state(app).unit_of_work() as uow:
            view = rewards.add_stock(uow.session, code=code, items=items, actor=_actor(as_user), now=_now())
            uow.commit()
        click.echo(f"reward {code}: {view.stock} in stock")

    @rewards_group.command("upload-codes")
    @click.argument("code")
    @click.option("--file", "path", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
                  help="The supplier's voucher codes, one a line.")
    @_as_option("uploading them")
    @with_app
    def upload_codes(app: Flask, code: str, path: Path, as_user: str | None) -> None:
        """Add voucher codes to a voucher's pool, encrypted; a code already there refuses the whole file."""
        from alliance.services import rewards

        state = hub_state(app)
        codes = _codes_of(path)
        with state.unit_of_work() as uow:
            added = rewards.upload_voucher_codes(uow.session, code=code, codes=codes, key_ring=state.key_ring,
                                                 actor=_actor(as_user), now=_now())
            left = rewards.reward_view(uow.session, code, now=_now()).vouchers_left
            uow.commit()
        click.echo(f"reward {code}: {added} codes added, {left} in the pool")

    @rewards_group.command("order")
    @click.option("--member", "member_number", required=True, help="The member's number.")
    @click.option("--reward", "reward_code", required=True)
    @click.option("--reference", required=True, help="Your reference; the same one again finds the order.")
    @click.option("--items", default=1, show_default=True, type=click.IntRange(1))
    @_as_option("placing it")
    @with_app
    def order(app: Flask, member_number: str, reward_code: str, reference: str, items: int,
              as_user: str | None) -> None:
        """Order a reward for a member (channel back-office); a voucher's codes are printed this once."""
        from alliance.services import member_admin, rewards

        state = hub_state(app)
        with state.unit_of_work() as uow:
            member = member_admin.member_by_number(uow.session, member_number)
            placed = rewards.place_order(uow.session, reward_code=reward_code, member_id=member.id, items=items,
                                         channel=rewards.BACK_OFFICE_CHANNEL, reference=reference,
                                         actor=_actor(as_user), key_ring=state.key_ring, now=_now())
            uow.commit()
        if placed.replayed:
            click.echo(f"order {reference} was placed before; its voucher codes, if any, were shown then")
        click.echo(_order_line(placed.order))
        for voucher in placed.voucher_codes or ():
            click.echo(f"voucher code (shown once): {voucher}")

    @rewards_group.command("orders")
    @click.option("--status", type=click.Choice(ORDER_STATUSES), default=None)
    @click.option("--supplier", default=None, help="Only this supplier's orders.")
    @click.option("--member", "member_number", default=None, help="Only this member's orders.")
    @click.option("--limit", type=click.IntRange(1, 5_000), default=200, show_default=True)
    @with_app
    def list_orders(app: Flask, status: str | None, supplier: str | None, member_number: str | None,
                    limit: int) -> None:
        """Orders newest first, one line each."""
        from alliance.services import member_admin, partners, rewards

        with hub_state(app).unit_of_work() as uow:
            supplier_id = partners.partner_id_by_code(uow.session, supplier) if supplier else None
            member_id = member_admin.member_by_number(uow.session, member_number).id if member_number else None
            views = rewards.orders(uow.session, now=_now(), supplier_id=supplier_id, member_id=member_id,
                                   status=status, limit=limit)
        for view in views:
            click.echo(_order_line(view))
        if not views:
            click.echo("no orders", err=True)

    def _order_step(name: str, help_text: str, *, with_reason: bool) -> None:
        @rewards_group.command(name, help=help_text)
        @click.argument("reference")
        @click.option("--channel", default="back-office", show_default=True,
                      help="Who placed it: back-office, or the partner code of the desk that did.")
        @click.option("--reason" if with_reason else "--note", "text", required=with_reason,
                      default=None, help="Why (kept with the order and in the audit log)." if with_reason
                      else "What the supplier said: a parcel number, which bill.")
        @_as_option("recording it")
        @with_app
        def step(app: Flask, reference: str, channel: str, text: str | None, as_user: str | None) -> None:
            with hub_state(app).unit_of_work() as uow:
                view = _apply(uow.session, name, channel=channel, reference=reference, text=text,
                              supplier_id=None, actor=_actor(as_user))
                uow.commit()
            click.echo(_order_line(view))

    _order_step("fulfil", "Record that the supplier fulfilled an order: its points are spent.", with_reason=False)
    _order_step("fail", "Record that the supplier cannot fulfil an order: the points and stock come back.",
                with_reason=True)
    _order_step("cancel", "Cancel a member's order: before fulfilment the hold is released, after it the order "
                          "is returned.", with_reason=True)
    _order_step("return", "Return a fulfilled order within its reward's return days: every point comes back.",
                with_reason=True)

    @rewards_group.command("to-fulfil")
    @click.option("--supplier", required=True, help="The supplier's code (the operator for bill credit).")
    @click.option("--csv", "csv_path", required=True, type=click.Path(dir_okay=False, path_type=Path),
                  help="Where to write the supplier's placed orders.")
    @with_app
    def to_fulfil(app: Flask, supplier: str, csv_path: Path) -> None:
        """Write the supplier's orders waiting for fulfilment (oldest first) as CSV, for it to apply and confirm."""
        from alliance.services import partners, rewards

        now = _now()
        waiting: list[OrderView] = []
        with hub_state(app).unit_of_work() as uow:
            supplier_id = partners.partner_id_by_code(uow.session, supplier)
            offset = 0
            while True:
                page = rewards.orders(uow.session, now=now, supplier_id=supplier_id, status="placed", limit=PAGE,
                                      offset=offset)
                # A placed order past its time reads as expired: the supplier may no longer fulfil it.
                waiting.extend(view for view in page if view.status == "placed")
                if len(page) < PAGE:
                    break
                offset += PAGE
        waiting.sort(key=lambda view: (view.placed_at, view.channel, view.reference))
        with csv_path.open("w", encoding="utf-8", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(TO_FULFIL_COLUMNS)
            for view in waiting:
                writer.writerow([view.channel, view.reference, view.member_number, view.reward, view.items,
                                 view.amount_minor, view.currency, view.fulfil_by.isoformat()])
        click.echo(f"{len(waiting)} orders of {supplier} to fulfil written to {csv_path}")

    @rewards_group.command("confirm")
    @click.option("--supplier", required=True, help="The supplier whose file this is; other suppliers' orders are "
                                                    "not found.")
    @click.option("--file", "path", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
                  help="CSV lines channel,reference,outcome,note_or_reason (outcome fulfilled or failed).")
    @_as_option("applying it")
    @with_app
    def confirm(app: Flask, supplier: str, path: Path, as_user: str | None) -> None:
        """Apply the supplier's confirmations line by line, each on its own; a line already applied is reported as
        such. Exits 1 if any line was refused (the others are applied)."""
        from alliance.services import partners

        rows = _confirm_rows(path)
        actor = _actor(as_user)
        state = hub_state(app)
        with state.unit_of_work() as uow:
            supplier_id = partners.partner_id_by_code(uow.session, supplier)
        refused = 0
        counts = {"applied": 0, "already": 0}
        for line, row in rows:
            outcome = _confirm_line(state, row, supplier_id=supplier_id, actor=actor)
            if outcome.startswith("refused"):
                refused += 1
            else:
                counts["already" if outcome.startswith("already") else "applied"] += 1
            click.echo(f"line {line}: {outcome}")
        click.echo(f"{counts['applied']} applied, {counts['already']} already applied, {refused} refused")
        if refused:
            raise click.ClickException(f"{refused} line(s) refused; correct them and apply the file again (lines "
                                       "already applied are reported, not applied twice)")


def _apply(session: Session, step: str, *, channel: str, reference: str, text: str | None,
           supplier_id: int | None, actor: str) -> OrderView:
    """One step of an order through the service; ``text`` is the note (fulfil) or the reason."""
    from alliance.services import rewards

    now = _now()
    if step == "fulfil":
        return rewards.fulfil_order(session, channel=channel, reference=reference, supplier_id=supplier_id,
                                    note=text, actor=actor, now=now)
    if step == "fail":
        return rewards.fail_order(session, channel=channel, reference=reference, supplier_id=supplier_id,
                                  reason=text or "", actor=actor, now=now)
    if step == "cancel":
        return rewards.cancel_order(session, channel=channel, reference=reference, reason=text or "", actor=actor,
                                    now=now)
    return rewards.return_order(session, channel=channel, reference=reference, supplier_id=supplier_id,
                                reason=text or "", actor=actor, now=now)


def _confirm_line(state: HubState, row: list[str], *, supplier_id: int, actor: str) -> str:
    """Apply one line of a confirmation file in its own transaction; what happened, in words."""
    from alliance.services import rewards

    if len(row) < 3 or len(row) > 4:
        return f"refused: {len(row)} columns; write {','.join(CONFIRM_COLUMNS)}"
    channel, reference, outcome = row[0], row[1], row[2].lower()
    text = row[3] if len(row) == 4 and row[3] else None
    if outcome not in OUTCOMES:
        return f"refused: {reference}: outcome {row[2]!r} is neither fulfilled nor failed"
    try:
        with state.unit_of_work() as uow:
            before = rewards.order_view(uow.session, channel=channel, reference=reference, supplier_id=supplier_id,
                                        now=_now())
            view = _apply(uow.session, "fulfil" if outcome == "fulfilled" else "fail", channel=channel,
                          reference=reference, text=text, supplier_id=supplier_id, actor=actor)
            uow.commit()
    except AllianceError as error:
        return f"refused: {reference}: {error.detail}"
    if before.status == view.status:
        return f"already {view.status}: {reference}"
    return f"{view.status}: {reference}" + (f" ({text})" if text else "")
