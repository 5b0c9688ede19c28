"""Campaigns for partner managers: the list with status, payers and budget; a campaign's page with its awards;
create, change before the start, and stop early with a reason.

Changes go through ``alliance.services.campaigns``, the service the back-office API and
the CLI use, with the signed-in user as the actor.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from flask import render_template, request, url_for
from werkzeug.exceptions import BadRequest
from werkzeug.wrappers import Response as BaseResponse

from alliance.console import display, security
from alliance.console.blueprint import console, navigation_item
from alliance.console.helpers import (
    change,
    form_choice,
    form_confirmed,
    form_moment,
    form_money,
    form_text,
    form_whole_number,
    query_sort,
    sorted_rows,
)
from alliance.extensions import hub_state
from alliance.services import campaigns, console_reports

CAMPAIGN_ROLES = security.PARTNER_MANAGER_ROLES
TIERS = ("standard", "silver", "gold", "diamond")
SORTS = {
    "campaign": lambda view: view["id"],
    "name": lambda view: view["name"].lower(),
    "status": lambda view: view["status"],
    "starts": lambda view: (view["starts_at"], view["id"]),
    "ends": lambda view: (view["ends_at"], view["id"]),
    "awarded": lambda view: (view["awarded"]["points"], view["id"]),
}

navigation_item("Partners", "Campaigns", "console.campaigns_list", roles=CAMPAIGN_ROLES, order=24,
                summary="campaigns with their payers and budgets: create, change before the start, stop early")


@console.route("/campaigns")
@security.requires(*CAMPAIGN_ROLES)
def campaigns_list() -> str:
    """Every campaign (or those of one status), with its payers and shares, budget used and points awarded."""
    status = request.args.get("status") or None
    if status is not None and status not in campaigns.STATUSES:
        raise BadRequest("Choose the status from the list offered: scheduled, running, ended or stopped.")
    sort = query_sort(list(SORTS), "campaign", descending=True)
    with hub_state().unit_of_work() as uow:
        found = campaigns.list_campaigns(uow.session, now=security.utc_now(), status=status)
        codes = console_reports.partner_codes(uow.session)
    return render_template("console/campaigns/list.html", campaigns=sorted_rows(found, sort, SORTS), sort=sort,
                           status=status, statuses=campaigns.STATUSES, codes=codes, tiers=TIERS,
                           zone=display.viewer_zone_name(), local_input=_local_input)


@console.route("/campaigns/<int:campaign_id>")
@security.requires(*CAMPAIGN_ROLES)
def campaign_page(campaign_id: int) -> str:
    """One campaign: its terms and targeting, what it awarded by payer, its latest awards, and change or stop."""
    with hub_state().unit_of_work() as uow:
        view = campaigns.campaign_view(uow.session, campaign_id=campaign_id, now=security.utc_now())
        awards = campaigns.campaign_awards(uow.session, campaign_id=campaign_id)
    return render_template("console/campaigns/campaign.html", campaign=view, awards=awards, tiers=TIERS,
                           zone=display.viewer_zone_name(), local_input=_local_input)


def _local_input(value: datetime) -> str:
    """A moment as a ``datetime-local`` field shows it: in the viewer's zone, to the minute."""
    return display.local(value).strftime("%Y-%m-%dT%H:%M")


@console.route("/campaigns", methods=["POST"])
@security.requires(*CAMPAIGN_ROLES)
def campaigns_create() -> BaseResponse:
    """Create a campaign from the form."""
    funded_by = form_choice("funded_by", campaigns.FUNDINGS,
                            "Choose who pays from the list offered: the partner, the hub, or jointly.")
    funders = _form_funders() if funded_by == "joint" else []
    segment_name, members = _form_segment()
    budget_minor, budget_currency = _form_money_budget()
    return change(campaigns.add_campaign, code=form_text("partner", required=False, max_length=40),
                  name=form_text("name", max_length=200), funded_by=funded_by,
                  multiplier=_form_multiplier(), bonus_points=_optional_whole("bonus_points") or 0,
                  min_amount_minor=_optional_whole("min_amount_minor") or 0,
                  starts_at=form_moment("starts_at"), ends_at=form_moment("ends_at"), funders=funders,
                  budget_points=_optional_whole("budget_points"), target_tiers=_form_tiers(),
                  min_tenure_months=_optional_whole("min_tenure_months"), segment_name=segment_name,
                  segment_members=members, budget_minor=budget_minor, budget_currency=budget_currency,
                  success=lambda made: f"Campaign #{made} is created.", back=url_for("console.campaigns_list"))


@console.route("/campaigns/<int:campaign_id>/change", methods=["POST"])
@security.requires(*CAMPAIGN_ROLES)
def campaign_change(campaign_id: int) -> BaseResponse:
    """Change the terms of a campaign that has not started yet."""
    budget_minor, budget_currency = _form_money_budget()
    changes: dict[str, Any] = {
        "name": form_text("name", max_length=200), "multiplier": _form_multiplier(),
        "bonus_points": _optional_whole("bonus_points") or 0,
        "min_amount_minor": _optional_whole("min_amount_minor") or 0,
        "starts_at": form_moment("starts_at"), "ends_at": form_moment("ends_at"),
        "budget_points": _optional_whole("budget_points"), "target_tiers": _form_tiers(),
        "min_tenure_months": _optional_whole("min_tenure_months"),
        "budget_minor": budget_minor, "budget_currency": budget_currency,
    }
    return change(campaigns.change_campaign, campaign_id=campaign_id, changes=changes,
                  success=f"Campaign #{campaign_id} is changed.",
                  back=url_for("console.campaign_page", campaign_id=campaign_id))


@console.route("/campaigns/<int:campaign_id>/stop", methods=["POST"])
@security.requires(*CAMPAIGN_ROLES)
def campaign_stop(campaign_id: int) -> BaseResponse:
    """Stop a campaign early, with the reason kept in the audit trail."""
    reason = form_confirmed()
    return change(campaigns.stop_campaign, campaign_id=campaign_id, reason=reason,
                  success=f"Campaign #{campaign_id} is stopped: it awards nothing from now on.",
                  back=url_for("console.campaign_page", campaign_id=campaign_id))


def _optional_whole(name: str) -> int | None:
    return form_whole_number(name) if (request.form.get(name) or "").strip() else None


def _form_money_budget() -> tuple[int | None, str | None]:
    """A budget in money: the amount typed in the currency's major units (``500.00``) and the currency code,
    both or neither."""
    currency = (form_text("budget_currency", required=False, max_length=3) or "").strip().upper() or None
    if not (request.form.get("budget_money") or "").strip():
        if currency is not None:
            raise BadRequest("Give the budget in money with its currency, or leave both empty.")
        return None, None
    if currency is None:
        raise BadRequest("Give the budget's currency (such as EUR) with the budget in money.")
    return form_money("budget_money", currency), currency


def _form_multiplier() -> Decimal:
    text = (request.form.get("multiplier") or "").strip() or "1"
    try:
        multiplier = Decimal(text)
    except InvalidOperation:
        raise BadRequest(f"The multiplier must be a number such as 1.5, got {text!r}.") from None
    if not multiplier.is_finite():
        raise BadRequest("The multiplier must be a number such as 1.5.")
    return multiplier


def _form_tiers() -> list[str] | None:
    chosen = request.form.getlist("tier")
    if any(tier not in TIERS for tier in chosen):
        raise BadRequest("Choose tiers from the boxes offered.")
    return chosen or None


def _form_funders() -> list[tuple[str, int]]:
    """Joint funders typed one a line as ``partner-code 60%`` (percent, up to two decimals)."""
    lines = [line.strip() for line in (request.form.get("funders") or "").splitlines() if line.strip()]
    funders = []
    for line in lines:
        code, _, share = line.rpartition(" ")
        try:
            basis_points = Decimal(share.rstrip("%")) * 100
        except InvalidOperation:
            basis_points = Decimal("NaN")
        if not code or not basis_points.is_finite() or basis_points != basis_points.to_integral_value():
            raise BadRequest(f"Write each funder as a partner code and its share, such as \"bakery 60%\": "
                             f"{line!r} is not.")
        funders.append((code.strip(), int(basis_points)))
    return funders


def _form_segment() -> tuple[str | None, list[str]]:
    """A segment: its name and member numbers, one a line (or separated by commas or spaces)."""
    name = form_text("segment_name", required=False, max_length=100)
    members = (request.form.get("segment_members") or "").replace(",", " ").split()
    return name, members
