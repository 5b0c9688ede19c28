"""Operator commands: partners and their keys and terminals, members, campaigns."""

from __future__ import annotations

import base64
import getpass
import json
from datetime import date, datetime, timezone
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from flask import Flask

from alliance.domain.identifiers import KEY_ID, PARTNER_CODE, TERMINAL_CODE, IdentifierRule, identifier_problem
from alliance.extensions import hub_state

if TYPE_CHECKING:
    from alliance.cli import WithApp
    from alliance.services.goodwill import GoodwillPolicy, GoodwillView
    from alliance.services.tier_policy import PolicyVersion
    from settlement.api import LiabilityLine, LiabilityReport


class DecimalType(click.ParamType[Decimal, object]):
    """An exact decimal from its text; floats never enter."""

    name = "decimal"

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None) -> Decimal:
        if isinstance(value, Decimal):
            return value
        try:
            number = Decimal(str(value))
        except InvalidOperation:
            self.fail(f"{value!r} is not a decimal number", param, ctx)
        if not number.is_finite() or number < 0:
            self.fail(f"{value!r} must be a non-negative number", param, ctx)
        return number


class IdentifierType(click.ParamType[str, str]):
    """A partner code, terminal code or key id, refused (exit 2) outside its documented character set."""

    def __init__(self, rule: IdentifierRule) -> None:
        self.rule = rule
        self.name = rule.noun.replace(" ", "_")

    def convert(self, value: str, param: click.Parameter | None, ctx: click.Context | None) -> str:
        problem = identifier_problem(self.rule, value)
        if problem:
            self.fail(f"{value!r} is not valid: {problem}", param, ctx)
        return value


class MomentType(click.ParamType[datetime, str | datetime]):
    """An ISO 8601 moment with a UTC offset."""

    name = "moment"

    def convert(self, value: str | datetime, param: click.Parameter | None, ctx: click.Context | None) -> datetime:
        if isinstance(value, datetime):
            return value
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            self.fail(f"{value!r} is not an ISO 8601 timestamp", param, ctx)
        if moment.tzinfo is None:
            self.fail("the timestamp needs a UTC offset, e.g. +00:00", param, ctx)
        return moment


def _now() -> datetime:
    return datetime.now(timezone.utc)


def cli_actor() -> str:
    """Who runs an operator command, for the audit log."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli:unknown"


def load_public_key(path: Path) -> bytes:
    """Raw Ed25519 public key bytes from a PEM file or a file holding base64 of the 32 bytes."""
    data = path.read_bytes()
    if b"-----BEGIN" in data:
        try:
            key = serialization.load_pem_public_key(data)
        except ValueError:
            raise click.BadParameter(f"{path} is not a PEM public key") from None
        if not isinstance(key, Ed25519PublicKey):
            raise click.BadParameter(f"{path} holds a {type(key).__name__}; only Ed25519 keys are accepted")
        return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    try:
        raw = base64.b64decode(data.strip(), validate=True)
    except ValueError:
        raise click.BadParameter(f"{path} is neither PEM nor base64") from None
    if len(raw) != 32:
        raise click.BadParameter(f"{path} does not hold a 32-byte Ed25519 public key")
    return raw


def register(main: click.Group, with_app: WithApp) -> None:
    """Add the ``partners``, ``members`` and ``campaigns`` groups to the CLI."""
    _register_partner_commands(main, with_app)
    _register_member_commands(main, with_app)
    _register_campaign_commands(main, with_app)
    _register_tier_commands(main, with_app)
    _register_behaviour_commands(main, with_app)


def _register_partner_commands(main: click.Group, with_app: WithApp) -> None:

    @main.group()
    def partners() -> None:
        """Onboard partners; register, rotate and revoke their signing keys."""

    _add_partner_create(partners, with_app)
    _add_partner_keys_and_terminals(partners, with_app)


def _add_partner_create(partners: click.Group, with_app: WithApp) -> None:
    @partners.command("create")
    @click.option("--code", required=True, type=IdentifierType(PARTNER_CODE),
                  help="Short lowercase code, e.g. cafe-aurora.")
    @click.option("--name", required=True)
    @click.option("--currency", default="EUR", show_default=True)
    @click.option("--time-zone", default="UTC", show_default=True, help="IANA zone of the settlement cut-off.")
    @click.option("--cycle", type=click.Choice(["daily", "weekly", "monthly"]), default="monthly", show_default=True)
    @click.option("--issue-price", type=DecimalType(), required=True, help="Money per point the partner pays to issue.")
    @click.option("--redemption-price", type=DecimalType(), required=True,
                  help="Money per point the hub pays on redemption.")
    @click.option("--points-per-unit", type=DecimalType(), default=Decimal("1"), show_default=True)
    @click.option("--ladder", default="[]", help='JSON, e.g. [{"from_minor": 10000, "multiplier": "1.5"}].')
    @click.option("--per-purchase-cap", type=click.IntRange(1), default=None)
    @click.option("--per-member-day-cap", type=click.IntRange(1), default=None)
    @click.option("--return-window-days", type=click.IntRange(0, 365), default=0, show_default=True)
    @click.option("--cycle-fee-minor", type=click.IntRange(0, 10**12), default=0, show_default=True,
                  help="Fixed fee per settlement cycle, in minor units.")
    @click.option("--status", type=click.Choice(["pending", "active", "suspended"]), default="active",
                  show_default=True)
    @with_app
    def partners_create(app: Flask, code: str, name: str, currency: str, time_zone: str, cycle: str,
                        issue_price: Decimal, redemption_price: Decimal, points_per_unit: Decimal, ladder: str,
                        per_purchase_cap: int | None, per_member_day_cap: int | None, return_window_days: int,
                        cycle_fee_minor: int, status: str) -> None:
        """Create a partner with its accounts, first prices and earn rule."""
        from alliance.services import partner_admin
        from alliance.services.partners import PartnerTerms

        try:
            amount_ladder = json.loads(ladder)
        except json.JSONDecodeError:
            raise click.BadParameter("--ladder must be JSON") from None
        terms = PartnerTerms(
            currency=currency, time_zone=time_zone, settlement_cycle=cycle, issue_price_per_point=issue_price,
            redemption_price_per_point=redemption_price, base_points_per_unit=points_per_unit,
            amount_ladder=amount_ladder if isinstance(amount_ladder, list) else [amount_ladder],
            per_purchase_cap_points=per_purchase_cap, per_member_day_cap_points=per_member_day_cap,
            return_window_days=return_window_days, cycle_fee_minor=cycle_fee_minor,
        )
        with hub_state(app).unit_of_work() as uow:
            partner = partner_admin.onboard(uow.session, code=code, name=name, terms=terms, now=_now(),
                                            actor=cli_actor())
            partner_id = partner.id
            if status != "pending":
                partner_admin.change_status(uow.session, code=code, status=status, now=_now(), actor=cli_actor())
            uow.commit()
        click.echo(f"partner {code} created (id {partner_id}, {status})")



def _add_partner_keys_and_terminals(partners: click.Group, with_app: WithApp) -> None:
    @partners.command("add-terminal")
    @click.option("--partner", "partner_code", required=True, type=IdentifierType(PARTNER_CODE))
    @click.option("--code", required=True, type=IdentifierType(TERMINAL_CODE), help="Terminal code, e.g. till-2.")
    @with_app
    def partners_add_terminal(app: Flask, partner_code: str, code: str) -> None:
        """Register a point-of-sale terminal."""
        from alliance.services import partner_admin

        with hub_state(app).unit_of_work() as uow:
            partner_admin.new_terminal(uow.session, code=partner_code, terminal_code=code, now=_now(),
                                       actor=cli_actor())
            uow.commit()
        click.echo(f"terminal {code} added to {partner_code}")

    @partners.command("add-key")
    @click.option("--partner", "partner_code", required=True, type=IdentifierType(PARTNER_CODE))
    @click.option("--key-id", required=True, type=IdentifierType(KEY_ID), help="The keyid the till will sign with.")
    @click.option("--public-key", "public_key_file", required=True,
                  type=click.Path(exists=True, dir_okay=False, path_type=Path),
                  help="Ed25519 public key: PEM, or base64 of the 32 raw bytes.")
    @click.option("--terminal", "terminal_code", default=None, type=IdentifierType(TERMINAL_CODE),
                  help="Bind the key to this terminal only.")
    @click.option("--expires-at", type=MomentType(), default=None)
    @with_app
    def partners_add_key(app: Flask, partner_code: str, key_id: str, public_key_file: Path,
                         terminal_code: str | None, expires_at: datetime | None) -> None:
        """Register a signing key; several may be active at once, for rotation."""
        from alliance.services import partner_admin

        public_key = load_public_key(public_key_file)
        with hub_state(app).unit_of_work() as uow:
            partner_admin.new_key(uow.session, code=partner_code, key_id=key_id, public_key=public_key,
                                  terminal_code=terminal_code, expires_at=expires_at, now=_now(), actor=cli_actor())
            uow.commit()
        click.echo(f"key {key_id} registered for {partner_code}"
                   + (f" (terminal {terminal_code})" if terminal_code else ""))

    @partners.command("revoke-key")
    @click.argument("key_id")
    @with_app
    def partners_revoke_key(app: Flask, key_id: str) -> None:
        """Revoke a key; requests signed with it fail from now on."""
        from alliance.services import partner_admin

        with hub_state(app).unit_of_work() as uow:
            owner = partner_admin.key_owner(uow.session, key_id)
            partner_admin.revoke(uow.session, code=owner, key_id=key_id, now=_now(), actor=cli_actor())
            uow.commit()
        click.echo(f"key {key_id} revoked")

    @partners.command("list")
    @with_app
    def partners_list(app: Flask) -> None:
        """Partners with their status and keys."""
        from alliance.services import partner_admin

        with hub_state(app).unit_of_work() as uow:
            for partner in partner_admin.partners_with_keys(uow.session):
                key_text = ", ".join(f"{key_id} ({status})" for key_id, status in partner.keys) or "no keys"
                click.echo(f"{partner.code}\t{partner.status}\t{partner.currency}\t{partner.settlement_cycle}\t{key_text}")



def _register_member_commands(main: click.Group, with_app: WithApp) -> None:
    @main.group()
    def members() -> None:
        """Enrol members, set PINs, issue one-time redemption codes."""

    @members.command("enrol")
    @click.option("--name", default=None)
    @click.option("--phone", default=None)
    @click.option("--email", default=None)
    @click.option("--birth-date", "birth_date", default=None, metavar="YYYY-MM-DD",
                  help="The member's birth date (from 1900, not in the future).")
    @with_app
    def members_enrol(app: Flask, name: str | None, phone: str | None, email: str | None,
                      birth_date: str | None) -> None:
        """Enrol a member with a first card (personal data optional, encrypted at rest)."""
        from alliance.services import member_admin

        profile = {key: value for key, value in (("name", name), ("phone", phone), ("email", email),
                                                 ("birth_date", birth_date)) if value}
        state = hub_state(app)
        with state.unit_of_work() as uow:
            enrolment = member_admin.enrol_with_profile(uow.session, key_ring=state.key_ring, profile=profile,
                                                        now=_now(), actor=cli_actor())
            uow.commit()
        click.echo(f"member {enrolment.member_number}, card {enrolment.card_number}")

    @members.command("set-birth-date")
    @click.option("--member", "member_number", required=True)
    @click.option("--birth-date", "birth_date", default=None, metavar="YYYY-MM-DD",
                  help="From 1900, not in the future.")
    @click.option("--clear", is_flag=True, help="Remove the birth date instead.")
    @with_app
    def members_set_birth_date(app: Flask, member_number: str, birth_date: str | None, clear: bool) -> None:
        """Set (or, with --clear, remove) a member's birth date, which the birthday bonus job reads."""
        from alliance.services import member_admin

        if clear == (birth_date is not None):
            raise click.UsageError("give either --birth-date YYYY-MM-DD or --clear")
        state = hub_state(app)
        with state.unit_of_work() as uow:
            member_admin.update_profile(uow.session, key_ring=state.key_ring, member_number=member_number,
                                        changes={"birth_date": None if clear else birth_date}, now=_now(),
                                        actor=cli_actor())
            uow.commit()
        click.echo(f"birth date of member {member_number} " + ("removed" if clear else f"set to {birth_date}"))

    @members.command("set-pin")
    @click.option("--card", "card_number", required=True)
    @click.option("--pin", prompt=True, hide_input=True, confirmation_prompt=True,
                  help="4-12 digits; prompted if absent.")
    @with_app
    def members_set_pin(app: Flask, card_number: str, pin: str) -> None:
        """Set a card's PIN (this also unlocks a card locked by wrong PINs)."""
        from alliance.services import member_admin

        with hub_state(app).unit_of_work() as uow:
            member_admin.reset_pin(uow.session, card_number=card_number, pin=pin, now=_now(), actor=cli_actor())
            uow.commit()
        click.echo(f"PIN set for card ending {card_number[-4:]}")

    @members.command("issue-code")
    @click.option("--card", "card_number", required=True)
    @with_app
    def members_issue_code(app: Flask, card_number: str) -> None:
        """Issue a one-time redemption code for the card's member."""
        from alliance.services import member_admin
        from alliance.services.member_verification import active_card_holder

        with hub_state(app).unit_of_work() as uow:
            holder = active_card_holder(uow.session, card_number)
            member_number = member_admin.member_number_of(uow.session, holder.member_id)
            code, expires_at = member_admin.new_redemption_code(uow.session, member_number=member_number, now=_now(),
                                                               actor=cli_actor())
            uow.commit()
        click.echo(f"redemption code {code} (valid until {expires_at.isoformat(timespec='seconds')})")

    _add_goodwill_commands(members, with_app)


def _goodwill_policy(app: Flask) -> GoodwillPolicy:
    from alliance.services.goodwill import GoodwillPolicy

    settings = hub_state(app).settings
    return GoodwillPolicy(approval_threshold_points=settings.goodwill_approval_threshold_points,
                          expiry_months=settings.points_expiry_months)


def _goodwill_line(view: GoodwillView) -> str:
    funder = "" if view.funded_by is None else f", funded by {view.funded_by}"
    why = f"complaint #{view.complaint_id}" if view.complaint_id is not None else f"reference {view.reference}"
    return (f"goodwill request {view.request_id}: {view.direction} of {view.points} points for member "
            f"{view.member_number} ({why}{funder}), {view.status}")


def _add_goodwill_commands(members: click.Group, with_app: WithApp) -> None:
    @members.command("goodwill")
    @click.option("--member", "member_number", required=True, help="The member's number.")
    @click.option("--points", required=True, type=click.IntRange(1, 10**9))
    @click.option("--reason", required=True, help="Why, in a sentence the member's file will show.")
    @click.option("--complaint", "complaint_id", type=click.IntRange(1), default=None,
                  help="The member's complaint this answers (required for a credit).")
    @click.option("--reference", default=None, help="A written reference (a correction without a complaint).")
    @click.option("--funded-by", default="hub", show_default=True, help="hub, or the code of the partner charged.")
    @click.option("--debit", is_flag=True, help="A correction: take the points away instead of crediting them.")
    @with_app
    def members_goodwill(app: Flask, member_number: str, points: int, reason: str, complaint_id: int | None,
                         reference: str | None, funded_by: str, debit: bool) -> None:
        """Credit a member goodwill points (or, with --debit, correct a mistake); above the threshold it waits."""
        from alliance.services import goodwill

        with hub_state(app).unit_of_work() as uow:
            made = goodwill.request_goodwill(
                uow.session, member_number=member_number, direction="debit" if debit else "credit", points=points,
                reason=reason, complaint_id=complaint_id, reference=reference,
                funded_by=None if debit and funded_by == "hub" else funded_by, policy=_goodwill_policy(app),
                now=_now(), actor=cli_actor())
            uow.commit()
        click.echo(_goodwill_line(made))
        if made.status == "pending":
            click.echo("another person must approve it: alliance members goodwill-decide "
                       f"{made.request_id} --approve")

    @members.command("goodwill-decide")
    @click.argument("request_id", type=click.IntRange(1))
    @click.option("--approve/--reject", "approve", required=True, default=None,
                  help="Approve (and so post) or reject the pending request.")
    @with_app
    def members_goodwill_decide(app: Flask, request_id: int, approve: bool | None) -> None:
        """Approve or reject a pending goodwill request; its requester may not decide it."""
        from alliance.services import goodwill

        if approve is None:
            raise click.UsageError("say --approve or --reject")
        with hub_state(app).unit_of_work() as uow:
            decided = goodwill.decide_goodwill(uow.session, request_id=request_id,
                                               decision="approve" if approve else "reject",
                                               policy=_goodwill_policy(app), now=_now(), actor=cli_actor())
            uow.commit()
        click.echo(_goodwill_line(decided))

    @members.command("goodwill-list")
    @click.option("--status", type=click.Choice(["pending", "posted", "rejected"]), default=None)
    @with_app
    def members_goodwill_list(app: Flask, status: str | None) -> None:
        """Goodwill requests, newest first (``--status pending``: those waiting for a second person)."""
        from alliance.services import goodwill

        with hub_state(app).unit_of_work() as uow:
            for view in goodwill.goodwill_requests(uow.session, status=status):
                click.echo(_goodwill_line(view))



def _register_campaign_commands(main: click.Group, with_app: WithApp) -> None:
    @main.group()
    def campaigns() -> None:
        """Campaigns that give extra points, funded by a partner, by the hub or jointly by named partners."""

    _add_campaign_operations(campaigns, with_app)

    @campaigns.command("create")
    @click.option("--name", required=True)
    @click.option("--funded-by", type=click.Choice(["partner", "hub", "joint"]), required=True)
    @click.option("--partner", "partner_code", default=None,
                  help="Only at this partner (required when a partner funds it).")
    @click.option("--multiplier", type=DecimalType(), default=Decimal("1"), show_default=True)
    @click.option("--bonus-points", type=click.IntRange(0), default=0, show_default=True)
    @click.option("--min-amount-minor", type=click.IntRange(0), default=0, show_default=True)
    @click.option("--starts-at", type=MomentType(), required=True)
    @click.option("--ends-at", type=MomentType(), required=True)
    @click.option("--funder", "funders", multiple=True, metavar="PARTNER:BASIS_POINTS",
                  help="A joint campaign's payer and share, e.g. --funder bakery:6000 --funder cafe:4000 "
                       "(shares sum to 10000; the remainder of a split goes to the largest remainder, "
                       "ties to the first named).")
    @click.option("--budget-points", type=click.IntRange(1), default=None,
                  help="Points it may award in all; an award that would pass it is skipped.")
    @click.option("--budget-money", default=None, metavar="AMOUNT",
                  help="Or a budget in money, e.g. 500.00: what the funders may be charged for its awards at "
                       "their issue prices (a partner-funded or joint campaign; give --budget-currency).")
    @click.option("--budget-currency", default=None, metavar="CODE",
                  help="The money budget's currency, every funder's currency (e.g. EUR).")
    @click.option("--tier", "tiers", multiple=True, type=click.Choice(["standard", "silver", "gold", "diamond"]),
                  help="Only members of this tier (repeat for several).")
    @click.option("--min-tenure-months", type=click.IntRange(0), default=None,
                  help="Only members enrolled at least this many whole months before the purchase.")
    @click.option("--segment-name", default=None, help="Name of the segment listed in --segment-file.")
    @click.option("--segment-file", type=click.File("r"), default=None,
                  help="Member numbers, one a line: only they earn the campaign.")
    @with_app
    def campaigns_create(app: Flask, name: str, funded_by: str, partner_code: str | None, multiplier: Decimal,
                         bonus_points: int, min_amount_minor: int, starts_at: datetime, ends_at: datetime,
                         funders: tuple[str, ...], budget_points: int | None, budget_money: str | None,
                         budget_currency: str | None, tiers: tuple[str, ...], min_tenure_months: int | None,
                         segment_name: str | None, segment_file: Any) -> None:
        """Create a campaign; it applies to purchases made between its start and end."""
        from alliance.services import campaigns as campaign_service

        budget_minor = _budget_minor(budget_money, budget_currency)

        members = [line.strip() for line in segment_file if line.strip()] if segment_file is not None else []
        with hub_state(app).unit_of_work() as uow:
            campaign_id = campaign_service.add_campaign(
                uow.session, code=partner_code, name=name, funded_by=funded_by, multiplier=multiplier,
                bonus_points=bonus_points, min_amount_minor=min_amount_minor, starts_at=starts_at, ends_at=ends_at,
                now=_now(), actor=cli_actor(), funders=[_funder_share(text) for text in funders],
                budget_points=budget_points, target_tiers=list(tiers) or None, min_tenure_months=min_tenure_months,
                segment_name=segment_name, segment_members=members, budget_minor=budget_minor,
                budget_currency=budget_currency)
            uow.commit()
        payer = "jointly by " + ", ".join(funders) if funded_by == "joint" else f"by the {funded_by}"
        click.echo(f"campaign {campaign_id} {name!r} created, funded {payer}")


def _budget_minor(amount: str | None, currency: str | None) -> int | None:
    """``--budget-money 500.00 --budget-currency EUR`` as exact minor units; more decimals than the currency has
    are refused, not rounded."""
    from alliance.domain.money import parse_major_units

    if amount is None:
        if currency is not None:
            raise click.BadParameter("give --budget-money with --budget-currency", param_hint="--budget-currency")
        return None
    if currency is None:
        raise click.BadParameter("give --budget-currency with --budget-money", param_hint="--budget-money")
    try:
        return parse_major_units(amount, currency)
    except ValueError as problem:
        raise click.BadParameter(f"{amount!r} {problem}", param_hint="--budget-money") from None


def _funder_share(text: str) -> tuple[str, int]:
    """``bakery:6000`` as (partner code, basis points)."""
    code, _, share = text.partition(":")
    if not code or not share.isdigit():
        raise click.BadParameter(f"{text!r}: give PARTNER:BASIS_POINTS, e.g. bakery:6000", param_hint="--funder")
    return code, int(share)


def _campaign_line(view: dict[str, Any]) -> str:
    """One campaign as a line of ``campaigns list``."""
    from alliance.domain.money import major_units_text

    funders = ", ".join(f"{funder['partner']} {funder['share_bp'] / 100:g}%" for funder in view["funders"])
    payer = f"joint ({funders})" if funders else view["funded_by"]
    budget = (f", budget {view['budget_used_points']:,}/{view['budget_points']:,} points"
              if view["budget_points"] is not None else "")
    if view["budget_minor"] is not None:
        currency = view["budget_currency"]
        budget = (f", budget {major_units_text(view['budget_used_minor'], currency)}"
                  f"/{major_units_text(view['budget_minor'], currency)} {currency} "
                  f"({major_units_text(view['budget_left_minor'], currency)} left)")
    return (f"{view['id']:>6}  {view['status']:<9}  {view['name']}  [{payer}] "
            f"{view['starts_at']:%Y-%m-%d %H:%M} to {view['ends_at']:%Y-%m-%d %H:%M} UTC, "
            f"awarded {view['awarded']['points']:,} points on {view['awarded']['awards']:,} purchases{budget}")


def _add_campaign_operations(campaigns: click.Group, with_app: WithApp) -> None:
    @campaigns.command("list")
    @click.option("--status", type=click.Choice(["scheduled", "running", "ended", "stopped"]), default=None)
    @click.option("--partner", "partner_code", default=None, help="At this partner, or funded jointly by it.")
    @with_app
    def campaigns_list(app: Flask, status: str | None, partner_code: str | None) -> None:
        """Campaigns newest first, with their status, payers, budget and what they awarded."""
        from alliance.services import campaigns as campaign_service

        with hub_state(app).unit_of_work() as uow:
            views = campaign_service.list_campaigns(uow.session, now=_now(), status=status,
                                                    partner_code=partner_code)
        for view in views:
            click.echo(_campaign_line(view))
        if not views:
            click.echo("no campaigns")

    @campaigns.command("show")
    @click.argument("campaign_id", type=click.IntRange(1))
    @with_app
    def campaigns_show(app: Flask, campaign_id: int) -> None:
        """One campaign with its terms, targeting and what it awarded, by payer (JSON)."""
        from alliance.services import campaigns as campaign_service

        with hub_state(app).unit_of_work() as uow:
            view = campaign_service.campaign_view(uow.session, campaign_id=campaign_id, now=_now())
        click.echo(json.dumps(view, default=str, indent=2))

    @campaigns.command("stop")
    @click.argument("campaign_id", type=click.IntRange(1))
    @click.option("--reason", required=True, help="Why it stops; kept in the audit log.")
    @with_app
    def campaigns_stop(app: Flask, campaign_id: int, reason: str) -> None:
        """Stop a campaign early: from now on it awards nothing."""
        from alliance.services import campaigns as campaign_service

        with hub_state(app).unit_of_work() as uow:
            campaign_service.stop_campaign(uow.session, campaign_id=campaign_id, reason=reason, now=_now(),
                                           actor=cli_actor())
            uow.commit()
        click.echo(f"campaign {campaign_id} stopped")


def register_back_office(main: click.Group, with_app: WithApp) -> None:
    """Add ``staff`` (back-office clients), ``pii`` (key ring) and ``pins`` (PIN key ring) groups."""
    _register_staff_commands(main, with_app)
    _register_pii_commands(main, with_app)
    _register_pin_commands(main, with_app)


def _register_staff_commands(main: click.Group, with_app: WithApp) -> None:

    @main.group()
    def staff() -> None:
        """Back-office clients: OAuth 2 client credentials with roles."""

    @staff.command("create-client")
    @click.option("--name", required=True)
    @click.option("--role", "roles", multiple=True, required=True,
                  type=click.Choice(["admin", "finance", "partner_manager", "customer_service"]))
    @click.option("--person", required=True,
                  help="Handle of the staff person who holds it (alliance staff add-person).")
    @with_app
    def staff_create_client(app: Flask, name: str, roles: tuple[str, ...], person: str) -> None:
        """Create a client of one staff person; its secret is printed once and only a digest is kept."""
        from alliance.services import oauth

        with hub_state(app).unit_of_work() as uow:
            created = oauth.create_client_by(uow.session, name=name, roles=list(roles), person=person,
                                             actor=cli_actor(), now=_now())
            uow.commit()
        click.echo(f"client_id={created.client_id}\nclient_secret={created.client_secret}"
                   f"\nroles={' '.join(created.roles)}"
                   f"\nperson={created.person}")

    @staff.command("revoke-client")
    @click.argument("client_id")
    @with_app
    def staff_revoke_client(app: Flask, client_id: str) -> None:
        """Revoke a client and every token it holds."""
        from alliance.services import oauth

        with hub_state(app).unit_of_work() as uow:
            oauth.revoke_client_by(uow.session, client_id=client_id, actor=cli_actor(), now=_now())
            uow.commit()
        click.echo(f"client {client_id} revoked")



def _register_pii_commands(main: click.Group, with_app: WithApp) -> None:
    @main.group()
    def pii() -> None:
        """The key ring personal data is encrypted under."""

    @pii.command("new-key-ring")
    def pii_new_key_ring() -> None:
        """Print a fresh key ring for ALLIANCE_PII_KEYS."""
        from alliance.domain.pii import generate_key_ring_config

        click.echo(generate_key_ring_config())

    @pii.command("add-key")
    @click.option("--key-id", required=True, help="Id of the new active key, e.g. k2.")
    @with_app
    def pii_add_key(app: Flask, key_id: str) -> None:
        """Print the current key ring with a new active key; old keys stay for reading."""
        from alliance.domain.pii import with_new_active_key

        click.echo(with_new_active_key(hub_state(app).key_ring.to_config(), key_id))

    @pii.command("reencrypt")
    @click.option("--batch-size", default=500, show_default=True, type=click.IntRange(1, 10_000))
    @with_app
    def pii_reencrypt(app: Flask, batch_size: int) -> None:
        """Re-encrypt personal data still under an older key, in small committed batches."""
        from alliance.services.pii_rotation import reencrypt_stale_profiles

        state = hub_state(app)
        total = 0
        while True:
            with state.unit_of_work() as uow:
                done = reencrypt_stale_profiles(uow.session, key_ring=state.key_ring, limit=batch_size)
                uow.commit()
            total += done
            if done < batch_size:
                break
        click.echo(f"re-encrypted {total} member profiles under key {state.key_ring.active_key_id}")


def _register_pin_commands(main: click.Group, with_app: WithApp) -> None:
    @main.group()
    def pins() -> None:
        """The key ring PINs are hashed under (HMAC-SHA256, keys outside the database)."""

    key_id_help = ("Id of the new key (default: pin- and 12 hex digits derived from the key, so that keys made "
                   "independently never share an id).")

    @pins.command("new-key-ring")
    @click.option("--key-id", default=None, help=key_id_help)
    def pins_new_key_ring(key_id: str | None) -> None:
        """Print a fresh PIN key ring (one random 256-bit key) for ALLIANCE_PIN_KEYS."""
        from alliance.domain.errors import AllianceError
        from alliance.domain.pin_hashing import generate_pin_key_ring_config

        try:
            click.echo(generate_pin_key_ring_config(key_id))
        except AllianceError as error:
            raise click.ClickException(error.detail) from None

    @pins.command("add-key")
    @click.option("--key-id", default=None, help=key_id_help)
    @with_app
    def pins_add_key(app: Flask, key_id: str | None) -> None:
        """Print the current PIN key ring with a new active key; old keys stay so their PINs still verify."""
        from alliance.domain.pin_hashing import with_new_active_pin_key

        click.echo(with_new_active_pin_key(hub_state(app).pin_key_ring.to_config(), key_id))

    @pins.command("key-usage")
    @with_app
    def pins_key_usage(app: Flask) -> None:
        """Count active cards' PINs per key, so an old key is dropped only once nothing is under it."""
        from alliance.services.member_verification import pin_hash_census

        state = hub_state(app)
        with state.unit_of_work() as uow:
            census = pin_hash_census(uow.session, state.pin_key_ring)
        for key_id, cards in census.by_key_id.items():
            active = " (active)" if key_id == state.pin_key_ring.active_key_id else ""
            click.echo(f"key {key_id}{active}: {cards} cards")
        click.echo(f"scrypt, from before keyed hashing (rehashed when next used): {census.legacy_scrypt} cards")
        click.echo(f"under a key not in the ring, or damaged (need a PIN reset): {census.unverifiable} cards")


def register_settlement(main: click.Group, with_app: WithApp) -> None:
    """Add the ``settlement`` and ``statements`` groups to the CLI."""

    @main.group()
    def settlement() -> None:
        """Close settlement cycles into signed statements."""

    @settlement.command("close")
    @click.option("--partner", "partner_code", default=None, help="Only this partner's cycles (its code).")
    @click.option("--now", "now", type=MomentType(), default=None,
                  help="Pretend it is this moment (ISO 8601 with offset); default: now.")
    @with_app
    def settlement_close(app: Flask, partner_code: str | None, now: datetime | None) -> None:
        """Close every overdue cycle, oldest first; cycles already closed are left as they are."""
        from settlement.api import close_due_cycles

        state = hub_state(app)
        closed = close_due_cycles(state.session_factory, now=now or datetime.now(timezone.utc),
                                  signer=state.statement_signer, partner_code=partner_code)
        for item in closed:
            click.echo(f"partner {item.partner_id} {item.cycle_starts_at.isoformat()} to "
                       f"{item.cycle_ends_at.isoformat()}: net {item.net_minor}, closing {item.closing_balance_minor}")
        click.echo(f"{len(closed)} cycles closed")

    @main.group()
    def statements() -> None:
        """Signed settlement statements: export, verify, and the hub's public statement key."""

    @statements.command("export")
    @click.option("--partner", "partner_code", required=True)
    @click.option("--out", "out_directory", required=True,
                  type=click.Path(file_okay=False, path_type=Path))
    @with_app
    def statements_export(app: Flask, partner_code: str, out_directory: Path) -> None:
        """Write a partner's statements as JSON and CSV, each with its .sig.json beside it."""
        from alliance.services.partners import partner_id_by_code
        from settlement.api import partner_statements

        with hub_state(app).unit_of_work() as uow:
            closed = partner_statements(uow.session, partner_id=partner_id_by_code(uow.session, partner_code))
        out_directory.mkdir(parents=True, exist_ok=True)
        for item in closed:
            stem = f"{partner_code}-{item.cycle_starts_at:%Y%m%dT%H%M%SZ}"
            for suffix, document, signature in (("json", item.document_json, item.signature_json),
                                                ("csv", item.document_csv, item.signature_csv)):
                (out_directory / f"{stem}.{suffix}").write_bytes(document)
                (out_directory / f"{stem}.{suffix}.sig.json").write_bytes(signature)
        click.echo(f"{len(closed)} statements written to {out_directory}")

    @statements.command("verify")
    @click.argument("document", type=click.Path(exists=True, dir_okay=False, path_type=Path))
    @click.option("--signature", "signature_path", default=None,
                  type=click.Path(exists=True, dir_okay=False, path_type=Path),
                  help="The detached signature; default: DOCUMENT.sig.json.")
    @click.option("--public-key", "public_key_path", default=None,
                  type=click.Path(exists=True, dir_okay=False, path_type=Path),
                  help="A published statement key (PEM); default: this hub's own key.")
    @with_app
    def statements_verify(app: Flask, document: Path, signature_path: Path | None,
                          public_key_path: Path | None) -> None:
        """Check a statement file against its detached Ed25519 signature, offline."""
        from settlement.api import load_public_key, parse_signature, statement_key_id, verify_statement

        if public_key_path is not None:
            public_key = load_public_key(public_key_path.read_text())
        else:
            public_key = hub_state(app).statement_signer.signing_key.public_key()
        signature = parse_signature((signature_path or Path(f"{document}.sig.json")).read_bytes())
        verify_statement(document.read_bytes(), signature, {statement_key_id(public_key): public_key})
        click.echo(f"{document}: verified, signed by {signature.key_id}")

    @statements.command("public-key")
    @with_app
    def statements_public_key(app: Flask) -> None:
        """Print the hub's statement key id and public key (PEM), to publish to partners."""
        from settlement.api import public_key_pem

        signer = hub_state(app).statement_signer
        click.echo(f"key id: {signer.key_id}")
        click.echo(public_key_pem(signer.signing_key.public_key()), nl=False)

    @statements.command("new-key")
    def statements_new_key() -> None:
        """Print a fresh Ed25519 statement key (PEM) for ALLIANCE_STATEMENT_KEY, and its key id."""
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        from settlement.api import private_key_pem, statement_key_id

        key = Ed25519PrivateKey.generate()
        click.echo(f"key id: {statement_key_id(key.public_key())}", err=True)
        click.echo(private_key_pem(key), nl=False)


def register_finance(main: click.Group, with_app: WithApp) -> None:
    """Add the ``finance`` group: reconcile, invoice and record payments of statements."""

    @main.group()
    def finance() -> None:
        """Finance on closed statements: reconciliation, invoicing, payments, overdue."""

    @finance.command("reconcile")
    @click.argument("statement_id", type=click.IntRange(1))
    @click.argument("partner_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
    @click.option("--csv", "as_csv", is_flag=True, help="Print the report as CSV instead of JSON.")
    @with_app
    def finance_reconcile(app: Flask, statement_id: int, partner_file: Path, as_csv: bool) -> None:
        """Match a partner's CSV of a statement's cycle against the hub's records; print the report."""
        from settlement.api import reconcile_statement

        with hub_state(app).unit_of_work() as uow:
            report = reconcile_statement(uow.session, statement_id=statement_id, document=partner_file.read_bytes(),
                                         source="back_office", actor=cli_actor(), now=_now())
            uow.commit()
        click.echo(report.report_csv if as_csv else report.report_json)
        click.echo(f"{report.discrepancies} discrepancies", err=True)

    @finance.command("invoiced")
    @click.argument("statement_id", type=click.IntRange(1))
    @click.option("--reference", required=True, help="The invoice's reference.")
    @with_app
    def finance_invoiced(app: Flask, statement_id: int, reference: str) -> None:
        """Mark a statement invoiced (once)."""
        from settlement.api import mark_invoiced

        with hub_state(app).unit_of_work() as uow:
            status = mark_invoiced(uow.session, statement_id=statement_id, reference=reference, actor=cli_actor(),
                                   now=_now())
            uow.commit()
        click.echo(f"statement {statement_id} invoiced; outstanding {status.outstanding_minor} minor units")

    @finance.command("paid")
    @click.argument("statement_id", type=click.IntRange(1))
    @click.option("--amount-minor", type=click.IntRange(1), required=True)
    @click.option("--paid-on", type=click.DateTime(formats=["%Y-%m-%d"]), required=True)
    @click.option("--reference", required=True, help="The payment's reference.")
    @with_app
    def finance_paid(app: Flask, statement_id: int, amount_minor: int, paid_on: datetime, reference: str) -> None:
        """Record a payment of an invoiced statement (payments may be partial, never above the net)."""
        from settlement.api import record_payment

        with hub_state(app).unit_of_work() as uow:
            status = record_payment(uow.session, statement_id=statement_id, amount_minor=amount_minor,
                                    paid_on=paid_on.date(), reference=reference, actor=cli_actor(), now=_now())
            uow.commit()
        click.echo(f"statement {statement_id}: paid {status.paid_minor}, outstanding {status.outstanding_minor}"
                   + (" — fully paid" if status.paid else ""))

    @finance.command("overdue")
    @with_app
    def finance_overdue(app: Flask) -> None:
        """Statements owed to the hub, past their due date, not fully paid."""
        from settlement.api import overdue

        with hub_state(app).unit_of_work() as uow:
            late = overdue(uow.session, as_of=_now().date())
        for status in late:
            click.echo(f"statement {status.statement_id}\t{status.partner}\tdue {status.due_date}\t"
                       f"outstanding {status.outstanding_minor} {status.currency}")
        click.echo(f"{len(late)} overdue")

    @finance.command("liability")
    @click.option("--as-of", "as_of", default=None, metavar="DATE",
                  help="YYYY-MM-DD (the end of that day in the alliance's time zone) or a date and time with its "
                       "offset; default now.")
    @click.option("--csv", "csv_path", default=None, type=click.Path(dir_okay=False, path_type=Path),
                  help="Also write the report as CSV to this file.")
    @with_app
    def finance_liability(app: Flask, as_of: str | None, csv_path: Path | None) -> None:
        """The points liability: outstanding points by issuer and expiry month, valued, with expected breakage."""
        from settlement.api import as_of_moment, points_liability, render_liability_csv

        state = hub_state(app)
        zone = state.settings.alliance_time_zone
        now = _now()
        moment = as_of_moment(_as_of_value(as_of), time_zone=zone, now=now)
        with state.unit_of_work() as uow:
            report = points_liability(uow.session, as_of=moment, time_zone=zone, now=now)
        for line in _liability_lines(report):
            click.echo(line)
        if csv_path is not None:
            csv_path.write_text(render_liability_csv(report), encoding="utf-8")
            click.echo(f"CSV written to {csv_path}", err=True)

    _add_credit_commands(finance, with_app)


def _credit_line(view: Any) -> str:
    """One limit change as a line a person reads."""
    limit = "no limit" if view.limit_minor is None else f"limit {view.limit_minor}"
    decided = f", decided by {view.decided_by}" if view.decided_by else ""
    return f"change {view.id}\t{view.partner}\t{limit}\t{view.status} (asked by {view.requested_by}{decided})"


def _operator(as_user: str | None) -> str:
    """``cli:<user>``: the operator named by ``--as``, else the account running the command."""
    if as_user is None:
        return cli_actor()
    if not (1 <= len(as_user) <= 64 and all(character.isascii() and (character.isalnum() or character in "._@-")
                                            for character in as_user)):
        raise click.BadParameter("1 to 64 letters, digits, dots, dashes, underscores or @", param_hint="--as")
    return f"cli:{as_user}"


def _block_line(block: Any) -> str:
    """One prepaid block as a line a person reads."""
    return (f"block {block.id}\t{block.partner}\t{block.points} points at {block.price_per_point}\t"
            f"paid {block.amount_minor} {block.currency} on {block.paid_on.isoformat()} ({block.reference})\t"
            f"left {block.left_minor}")


def _add_credit_commands(finance: click.Group, with_app: WithApp) -> None:
    """Add ``finance credit show|set-limit|decide|buy-block|blocks``: partners' credit limits, with a second person
    for a raise, and the point blocks they paid for ahead."""

    @finance.group("credit")
    def credit_group() -> None:
        """Partners' credit limits on unsettled issuance: show, set, decide a raise or removal."""

    @credit_group.command("show")
    @click.argument("partner_code")
    @with_app
    def credit_show(app: Flask, partner_code: str) -> None:
        """A partner's credit limit, exposure and state, and the changes waiting for a second person."""
        from settlement.api import credit

        with hub_state(app).unit_of_work() as uow:
            view = credit.credit_of(uow.session, partner_code=partner_code)
        limit = "none" if view.limit_minor is None else f"{view.limit_minor} {view.currency}"
        computed = view.computed_at.isoformat() if view.computed_at else "now"
        click.echo(f"{view.partner}\tlimit {limit}\texposure {view.exposure_minor} {view.currency}\t"
                   f"state {view.state}\tcomputed {computed}\tprepaid {view.prepaid_minor} {view.currency}")
        for change in view.pending_changes:
            click.echo(_credit_line(change))

    @credit_group.command("set-limit")
    @click.argument("partner_code")
    @click.option("--limit-minor", type=click.IntRange(0, 10**18), default=None,
                  help="The limit in minor units of the partner's currency.")
    @click.option("--remove", is_flag=True, help="Remove the limit (waits for a second person).")
    @click.option("--reason", required=True, help="Why (kept in the audit log).")
    @with_app
    def credit_set_limit(app: Flask, partner_code: str, limit_minor: int | None, remove: bool, reason: str) -> None:
        """Set a partner's credit limit: a first or lower one applies at once, a raise or removal waits."""
        from settlement.api import credit

        if remove == (limit_minor is not None):
            raise click.UsageError("give --limit-minor or --remove (one of them)")
        state = hub_state(app)
        with state.unit_of_work() as uow:
            view = credit.request_limit_change(uow.session, partner_code=partner_code, limit_minor=limit_minor,
                                               reason=reason, actor=cli_actor(), now=_now(),
                                               warning_percent=state.settings.credit_warning_percent)
            uow.commit()
        click.echo(_credit_line(view))

    @credit_group.command("decide")
    @click.argument("change_id", type=click.IntRange(1))
    @click.argument("decision", type=click.Choice(["approve", "reject"]))
    @with_app
    def credit_decide(app: Flask, change_id: int, decision: str) -> None:
        """Approve or reject a waiting raise or removal (not by the person who asked for it)."""
        from settlement.api import credit

        state = hub_state(app)
        with state.unit_of_work() as uow:
            view = credit.decide_limit_change(uow.session, change_id=change_id, decision=decision,
                                              actor=cli_actor(), now=_now(),
                                              warning_percent=state.settings.credit_warning_percent)
            uow.commit()
        click.echo(_credit_line(view))

    @credit_group.command("buy-block")
    @click.argument("partner_code")
    @click.option("--points", type=click.IntRange(1), required=True, help="The points the partner paid for.")
    @click.option("--reference", required=True, help="Finance's receipt reference (unique per partner).")
    @click.option("--paid-on", type=click.DateTime(formats=["%Y-%m-%d"]), required=True,
                  help="The day the partner's money arrived (YYYY-MM-DD).")
    @click.option("--as", "as_user", default=None,
                  help="The operator recording it, kept as cli:<name> (default: the account running the command).")
    @with_app
    def credit_buy_block(app: Flask, partner_code: str, points: int, reference: str, paid_on: datetime,
                         as_user: str | None) -> None:
        """Record a block of points a partner paid for ahead, at its issue price in force; it covers its issuance."""
        from settlement.api import credit

        actor = _operator(as_user)
        with hub_state(app).unit_of_work() as uow:
            bought = credit.buy_block(uow.session, partner_code=partner_code, points=points, reference=reference,
                                      paid_on=paid_on.date(), actor=actor, now=_now())
            uow.commit()
        click.echo(_block_line(bought.block))
        click.echo(f"{bought.credit.partner}\tprepaid balance {bought.balance_minor} {bought.credit.currency}\t"
                   f"exposure {bought.credit.exposure_minor}\tstate {bought.credit.state}")

    @credit_group.command("blocks")
    @click.argument("partner_code")
    @with_app
    def credit_blocks(app: Flask, partner_code: str) -> None:
        """A partner's prepaid blocks, oldest first, what is left of each, and its prepaid balance."""
        from settlement.api import credit

        with hub_state(app).unit_of_work() as uow:
            view = credit.prepaid_blocks(uow.session, partner_code=partner_code)
        for block in view.blocks:
            click.echo(_block_line(block))
        click.echo(f"{view.partner}\tprepaid balance {view.balance_minor} {view.currency}\t"
                   f"{len(view.blocks)} blocks")


def _as_of_value(text: str | None) -> date | datetime | None:
    """``--as-of`` as a date or an aware date-time (None: now); anything else is a usage error."""
    if text is None:
        return None
    try:
        return date.fromisoformat(text) if len(text) == len("YYYY-MM-DD") else datetime.fromisoformat(text)
    except ValueError:
        raise click.BadParameter("not a date (YYYY-MM-DD) or a date and time with its offset",
                                 param_hint="--as-of") from None


def _liability_lines(report: LiabilityReport) -> list[str]:
    """The report as tab-separated lines a person reads: by issuer, by expiry month, the total and the rules."""
    from settlement.api import liability_major_units as major_units

    def money(line: LiabilityLine) -> str:
        return ", ".join(f"{major_units(amount, currency)} {currency}"
                         for currency, amount in line.value_minor.items()) or "not valued"

    def row(label: str, line: LiabilityLine) -> str:
        return (f"{label}\tpending {line.pending_points}\tavailable {line.available_points}\theld {line.held_points}"
                f"\toutstanding {line.outstanding_points}\texpected to expire {line.expected_to_expire_points}"
                f"\tvalue {money(line)}")

    rate = report.breakage_rate
    lines = [f"points liability as of {report.as_of.isoformat()} (expiry months in {report.time_zone})"]
    lines += [row(f"issuer {line.issuer}", line) for line in report.by_issuer]
    lines += [row(f"expires {line.expiry_month}", line) for line in report.by_expiry_month]
    lines.append(row("total", report.total))
    lines.append(f"breakage: {report.expired_points} of {report.expired_points + report.redeemed_points} points "
                 f"of lots that reached expiry since {report.look_back_from.isoformat()} expired "
                 f"(rate {rate.numerator}/{rate.denominator})")
    lines.append(f"ledger: members' accounts hold {report.ledger_points} points"
                 + ("; ties out" if report.ties_out else "; DOES NOT TIE OUT"))
    return lines


TIER_POLICY_FILE_KEYS = frozenset({"basis", "window_months", "downgrade", "period_months", "tiers"})


def _tier_version_lines(version: PolicyVersion, currency: str) -> list[str]:
    """A tier policy version in words, one line for the rule and one per tier."""
    from alliance.domain.money import major_units_text, minor_units_per_unit

    policy = version.policy
    basis = {"spend": f"spend in {currency}", "points": "points earned", "tenure": "months since enrolment"}
    window = f" over {policy.window_months} months" if policy.window_months else ""
    downgrade = (f"one step down per {policy.period_months} months held" if policy.downgrade.value == "one_step"
                 else "straight down to the level earned")
    lines = [f"version {policy.version} ({version.status.replace('_', ' ')}) from {policy.effective_from.isoformat()}:"
             f" {basis[policy.basis.value]}{window}; {downgrade}; by {version.created_by}"]
    for level in policy.levels:
        if policy.basis.value == "spend":
            reach = f"{major_units_text(level.threshold * minor_units_per_unit(currency), currency)} {currency}"
        else:
            reach = f"{level.threshold} {'points' if policy.basis.value == 'points' else 'months'}"
        lines.append(f"  {level.tier}: from {reach}, multiplier {level.multiplier}, "
                     f"birthday bonus {level.birthday_bonus_points} points")
    return lines


def _register_tier_commands(main: click.Group, with_app: WithApp) -> None:
    @main.group()
    def tiers() -> None:
        """The tier policy: thresholds, qualifying basis, window, downgrade rule and benefits, by version."""

    @tiers.command("show")
    @click.option("--all", "show_all", is_flag=True, help="Also the superseded versions.")
    @with_app
    def tiers_show(app: Flask, show_all: bool) -> None:
        """The version in force now and those scheduled to follow (newest first)."""
        from alliance.services import tier_policy

        state = hub_state(app)
        with state.unit_of_work() as uow:
            found = tier_policy.versions(uow.session, now=_now())
        for version in found:
            if show_all or version.status != "superseded":
                click.echo("\n".join(_tier_version_lines(version, state.settings.alliance_currency)))

    @tiers.command("set")
    @click.option("--from", "policy_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
                  required=True, help="A JSON file: basis, window_months, downgrade, period_months, tiers.")
    @click.option("--effective", "effective_from", type=MomentType(), required=True,
                  help="When the version takes effect (at least 60 seconds from now).")
    @with_app
    def tiers_set(app: Flask, policy_file: Path, effective_from: datetime) -> None:
        """Schedule a new version of the tier policy from a JSON file."""
        from alliance.services import tier_policy

        try:
            data = json.loads(policy_file.read_text())
        except (ValueError, UnicodeDecodeError) as error:
            raise click.BadParameter(f"{policy_file} is not JSON: {error}") from None
        if not isinstance(data, dict) or not set(data) <= TIER_POLICY_FILE_KEYS or "tiers" not in data:
            raise click.BadParameter(f"{policy_file} must hold an object with tiers and some of "
                                     f"{', '.join(sorted(TIER_POLICY_FILE_KEYS - {'tiers'}))}")
        state = hub_state(app)
        with state.unit_of_work() as uow:
            made = tier_policy.propose_version(
                uow.session, basis=data.get("basis", "spend"), window_months=data.get("window_months"),
                downgrade=data.get("downgrade", "to_earned"), period_months=data.get("period_months"),
                levels=tier_policy.levels_from_data(data["tiers"]), effective_from=effective_from, now=_now(),
                actor=cli_actor())
            uow.commit()
        click.echo(f"tier policy version {made.policy.version} scheduled from {effective_from.isoformat()}")
        click.echo("\n".join(_tier_version_lines(made, state.settings.alliance_currency)))


def _behaviour_rule_line(view: object) -> str:
    """One behaviour rule as an operator reads it."""
    from alliance.services.behaviour_points import RuleView

    assert isinstance(view, RuleView)
    worth = f"{view.points} points"
    if view.per_amount_minor is not None:
        worth += f" per {view.per_amount_minor} minor units of {view.currency}"
    if view.referred_points:
        worth += f", {view.referred_points} to the referred member"
    if view.streak_days is not None:
        worth += f", +{view.streak_bonus_points} every {view.streak_days}th day in a row"
    caps = ", ".join(f"{cap} per {period}" for cap, period in ((view.cap_per_day, "day"),
                                                               (view.cap_per_month, "month")) if cap is not None)
    tiers = ", ".join(view.eligible_tiers) if view.eligible_tiers else "every tier"
    period = f"from {view.starts_at.isoformat()}" + (f" until {view.ends_at.isoformat()}" if view.ends_at else "")
    return (f"{view.event_type}: {worth}; funded by {view.funded_by}; caps: {caps or 'none'}; {tiers}, "
            f"tenure {view.min_tenure_months} months or more; {period}")


def _register_behaviour_commands(main: click.Group, with_app: WithApp) -> None:
    @main.group()
    def behaviour() -> None:
        """Behaviour points: the rule of each event type (sign-in, referral, survey, self-service, recharge...)."""

    @behaviour.group("rules")
    def behaviour_rules() -> None:
        """List and set behaviour points rules."""

    @behaviour_rules.command("list")
    @with_app
    def behaviour_rules_list(app: Flask) -> None:
        """Every event type's rule."""
        from alliance.services import behaviour_points

        with hub_state(app).unit_of_work() as uow:
            for view in behaviour_points.rules(uow.session):
                click.echo(_behaviour_rule_line(view))

    @behaviour_rules.command("set")
    @click.argument("event_type", type=click.Choice(
        ["sign_in", "referral", "survey", "self_service", "recharge", "bill_payment"]))
    @click.option("--points", type=click.IntRange(0, 10**9), default=None,
                  help="Points (per --per-amount-minor for recharge and bill_payment); required for a new rule.")
    @click.option("--per-amount-minor", type=click.IntRange(1), default=None)
    @click.option("--currency", default=None)
    @click.option("--referred-points", type=click.IntRange(0, 10**9), default=None)
    @click.option("--streak-days", type=click.IntRange(2, 366), default=None)
    @click.option("--streak-bonus-points", type=click.IntRange(0, 10**9), default=None)
    @click.option("--funded-by", default=None, help="hub, reporter, or a partner's code.")
    @click.option("--cap-per-day", type=click.IntRange(0, 10**9), default=None)
    @click.option("--cap-per-month", type=click.IntRange(0, 10**9), default=None)
    @click.option("--tier", "tiers", multiple=True, type=click.Choice(["standard", "silver", "gold", "diamond"]),
                  help="An eligible tier (repeat); none given: unchanged (every tier for a new rule).")
    @click.option("--min-tenure-months", type=click.IntRange(0, 1200), default=None)
    @click.option("--starts-at", type=MomentType(), default=None)
    @click.option("--ends-at", type=MomentType(), default=None)
    @with_app
    def behaviour_rules_set(app: Flask, event_type: str, tiers: tuple[str, ...], **options: object) -> None:
        """Create an event type's rule, or change the options given of it; audited."""
        from alliance.services import behaviour_points

        values: dict[str, Any] = {name: value for name, value in options.items() if value is not None}
        if tiers:
            values["eligible_tiers"] = list(tiers)
        with hub_state(app).unit_of_work() as uow:
            view = behaviour_points.set_rule(uow.session, event_type=event_type, now=_now(), actor=cli_actor(),
                                             **values)
            uow.commit()
        click.echo(_behaviour_rule_line(view))
