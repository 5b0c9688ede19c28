"""``alliance coupons …``: create a coupon series, list and show series, issue coupons to a target, list their
codes (paged, or CSV for the operator's messaging) and stop a series (docs/coupons.md)."""

from __future__ import annotations

import io
import json
from datetime import datetime, timezone
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

import click
from flask import Flask

from alliance.cli_admin import MomentType, cli_actor
from alliance.extensions import hub_state

if TYPE_CHECKING:
    from alliance.cli import WithApp

KINDS = ("bonus", "multiplier", "amount_off")


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _decimal(value: str | None) -> Decimal | None:
    if value is None:
        return None
    try:
        return Decimal(value)
    except InvalidOperation:
        raise click.BadParameter(f"{value!r} is not a decimal number", param_hint="--multiplier") from None


def _series_line(view: dict[str, Any]) -> str:
    """One series as a line a person reads."""
    terms = {"bonus": lambda: f"+{view['bonus_points']} points",
             "multiplier": lambda: f"x{format(view['multiplier'], 'f')} base points",
             "amount_off": lambda: f"{view['amount_off_minor']} {view['currency']} off for {view['points_cost']} "
                                   "points"}[view["kind"]]()
    return (f"{view['code']}\t{view['status']}\t{view['kind']}\t{terms}\tfunded by {view['funder']}\t"
            f"{view['coupons_issued']} issued, {view['uses']} used")


def _show(view: dict[str, Any]) -> str:
    lines = [_series_line(view), f"  title: {view['title']}",
             f"  valid {view['valid_from'].isoformat()} to {view['valid_until'].isoformat()}, "
             f"{view['uses_per_coupon']} use(s) per coupon, at {', '.join(view['valid_at'])}",
             f"  points so far: {view['points']}"]
    lines += [f"  charged: {line['points']} points at {format(line['price_per_point'], 'f')} {line['currency']}"
              for line in view["charged"]]
    if view["status"] == "stopped":
        lines.append(f"  stopped {view['stopped_at'].isoformat()} by {view['stopped_by']}: {view['stopped_reason']}")
    return "\n".join(lines)


def register(main: click.Group, with_app: WithApp) -> None:
    """Add the ``coupons`` group to the CLI."""

    @main.group("coupons")
    def coupons_group() -> None:
        """Partner coupons: series, issuing them to members, their codes."""

    @coupons_group.command("create")
    @click.argument("code")
    @click.option("--title", required=True)
    @click.option("--funder", required=True, help="A partner code, or hub (the hub's marketing budget).")
    @click.option("--kind", type=click.Choice(KINDS), required=True)
    @click.option("--bonus-points", type=int, help="bonus: the points added to the purchase.")
    @click.option("--multiplier", help="multiplier: an exact decimal above 1 (at most 4 places).")
    @click.option("--amount-off-minor", type=int, help="amount_off: the money off, in minor units.")
    @click.option("--currency", help="amount_off: the currency of the amount off.")
    @click.option("--points-cost", type=int, help="amount_off: the points the member pays for it.")
    @click.option("--valid-from", type=MomentType(), required=True)
    @click.option("--valid-until", type=MomentType(), required=True)
    @click.option("--uses", "uses_per_coupon", type=int, default=1, show_default=True, help="Uses per coupon.")
    @click.option("--valid-at", multiple=True, help="A partner where it may be used (repeat); default: the "
                                                     "funder's own tills, or every partner for a hub series.")
    @with_app
    def create(app: Flask, code: str, title: str, funder: str, kind: str, bonus_points: int | None,
               multiplier: str | None, amount_off_minor: int | None, currency: str | None, points_cost: int | None,
               valid_from: datetime, valid_until: datetime, uses_per_coupon: int, valid_at: tuple[str, ...]) -> None:
        """Create a coupon series CODE (a lower-case slug)."""
        from alliance.services import coupons

        with hub_state(app).unit_of_work() as uow:
            coupons.create_series(
                uow.session, code=code, title=title, funder=funder, kind=kind, bonus_points=bonus_points,
                multiplier=_decimal(multiplier), amount_off_minor=amount_off_minor, currency=currency,
                points_cost=points_cost, valid_from=valid_from, valid_until=valid_until,
                uses_per_coupon=uses_per_coupon, valid_at=list(valid_at) or None, now=_now(), actor=cli_actor())
            view = coupons.series_view(uow.session, code=code)
            uow.commit()
        click.echo(f"created coupon series {_series_line(view)}")

    @coupons_group.command("list")
    @click.option("--status", type=click.Choice(("active", "stopped")))
    @click.option("--funder", help="A partner code, or hub.")
    @with_app
    def list_(app: Flask, status: str | None, funder: str | None) -> None:
        """Coupon series, newest first."""
        from alliance.services import coupons

        with hub_state(app).unit_of_work() as uow:
            views = coupons.list_series(uow.session, status=status, funder=funder)
        for view in views:
            click.echo(_series_line(view))
        if not views:
            click.echo("no coupon series")

    @coupons_group.command("show")
    @click.argument("code")
    @with_app
    def show(app: Flask, code: str) -> None:
        """A series: its terms, where it is valid, its uses and the points so far."""
        from alliance.services import coupons

        with hub_state(app).unit_of_work() as uow:
            click.echo(_show(coupons.series_view(uow.session, code=code)))

    @coupons_group.command("issue")
    @click.argument("code")
    @click.option("--tier", "tiers", multiple=True, help="A tier of the target (repeat).")
    @click.option("--min-tenure-months", type=int, help="Members for at least this many whole months.")
    @click.option("--members-file", type=click.File("r"),
                  help="A file of member numbers, one a line (a segment or an explicit list).")
    @with_app
    def issue(app: Flask, code: str, tiers: tuple[str, ...], min_tenure_months: int | None,
              members_file: io.TextIOBase | None) -> None:
        """Give a coupon of series CODE to every active member of the target who has none of it yet."""
        from alliance.services import coupons

        numbers = [line.strip() for line in members_file.read().splitlines() if line.strip()] if members_file else []
        with hub_state(app).unit_of_work() as uow:
            issued = coupons.issue(uow.session, code=code, tiers=list(tiers), min_tenure_months=min_tenure_months,
                                   member_numbers=numbers, now=_now(), actor=cli_actor())
            uow.commit()
        click.echo(f"issued {issued.issued} coupon(s) of {code}; {issued.already_held} member(s) of the target "
                   "held one already")

    @coupons_group.command("codes")
    @click.argument("code")
    @click.option("--page", type=int, default=1, show_default=True)
    @click.option("--per-page", type=int, default=100, show_default=True)
    @click.option("--format", "output", type=click.Choice(("text", "csv", "json")), default="text",
                  show_default=True)
    @with_app
    def codes(app: Flask, code: str, page: int, per_page: int, output: str) -> None:
        """A page of the series' coupons: member number, code, uses."""
        from alliance.services import coupons

        with hub_state(app).unit_of_work() as uow:
            listed = coupons.coupon_codes(uow.session, code=code, page=page, per_page=per_page)
        if output == "json":
            click.echo(json.dumps(listed, default=str, indent=2))
        elif output == "csv":
            click.echo(coupons.codes_csv(listed["coupons"]), nl=False)
        else:
            for row in listed["coupons"]:
                click.echo(f"{row['member_number']}\t{row['code']}\t{row['uses']}/{row['uses_allowed']}")
            click.echo(f"page {listed['page']}: {len(listed['coupons'])} of {listed['total']} coupon(s)")

    @coupons_group.command("stop")
    @click.argument("code")
    @click.option("--reason", required=True)
    @with_app
    def stop(app: Flask, code: str, reason: str) -> None:
        """Stop series CODE with a reason: from now on none of its coupons is accepted."""
        from alliance.services import coupons

        with hub_state(app).unit_of_work() as uow:
            coupons.stop_series(uow.session, code=code, reason=reason, now=_now(), actor=cli_actor())
            uow.commit()
        click.echo(f"stopped coupon series {code}")

