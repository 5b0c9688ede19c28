"""The tier policy page: the version in force, those scheduled, the earlier ones, and a form to schedule one.

The policy is shown in words (thresholds as money in the alliance currency, points or
months; multipliers; the downgrade rule). Scheduling goes through
``alliance.services.tier_policy.propose_version``, the service the back-office API and
the CLI use, with the signed-in user as the actor; its refusals (thresholds not
increasing, a multiplier below 1, a start too soon) are shown on the page and nothing
is written. A member's tier history is in the back-office API.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

from flask import render_template, request, url_for
from werkzeug.exceptions import BadRequest
from werkzeug.wrappers import Response as BaseResponse

from alliance.console import display, security
from alliance.console.blueprint import console, navigation_item
from alliance.console.helpers import (
    change,
    form_moment,
    form_money,
    form_text,
    form_whole_number,
    now,
    query_sort,
    sorted_rows,
)
from alliance.domain.earning import TIER_ORDER, TierLevel
from alliance.domain.money import minor_units_per_unit
from alliance.extensions import hub_state
from alliance.services import staff_directory, tier_policy

TIER_POLICY_ROLES = security.PARTNER_MANAGER_ROLES
BASES = ("spend", "points", "tenure")
DOWNGRADES = ("to_earned", "one_step")
SORTS = {
    "version": lambda version: version.policy.version,
    "effective": lambda version: version.policy.effective_from,
}

navigation_item("Partners", "Tier policy", "console.tier_policy", roles=TIER_POLICY_ROLES, order=25,
                summary="member tiers: thresholds, qualifying basis, downgrade rule, multipliers; schedule a change")


@console.route("/tier-policy", endpoint="tier_policy")
@security.requires(*TIER_POLICY_ROLES)
def tier_policy_page() -> str:
    """The tier policy in force, the versions scheduled and the earlier ones, with the form for a new version."""
    sort = query_sort(list(SORTS), "effective", descending=True)
    with hub_state().unit_of_work() as uow:
        found = tier_policy.versions(uow.session, now=now())
        names = staff_directory.display_names(uow.session, [version.created_by for version in found])
    in_force = next((version for version in found if version.status == "in_force"), None)
    currency = hub_state().settings.alliance_currency
    return render_template(
        "console/tiers/policy.html", in_force=in_force,
        scheduled=[version for version in found if version.status == "scheduled"],
        versions=sorted_rows(found, sort, SORTS), sort=sort, names=names, currency=currency,
        unit=minor_units_per_unit(currency), tiers=TIER_ORDER, bases=BASES, downgrades=DOWNGRADES,
        lead_seconds=int(tier_policy.MIN_LEAD.total_seconds()), zone=display.viewer_zone_name())


def _form_optional_months(name: str) -> int | None:
    return form_whole_number(name) if (request.form.get(name) or "").strip() else None


def _form_threshold(field: str, basis: str, currency: str) -> int:
    """A tier's threshold: whole currency units for spend (typed as money), whole points or months otherwise."""
    if basis != "spend":
        return form_whole_number(field)
    minor = form_money(field, currency)
    whole, rest = divmod(minor, minor_units_per_unit(currency))
    if rest:
        raise BadRequest(f"A spend threshold is a whole amount of {currency}, without cents.")
    return whole


def _form_levels(basis: str, currency: str) -> list[TierLevel]:
    """The tiers filled in on the form, lowest first; a tier whose threshold is left empty is left out."""
    levels = []
    for tier in TIER_ORDER:
        if tier != "standard" and not (request.form.get(f"{tier}_threshold") or "").strip():
            continue
        threshold = 0 if tier == "standard" else _form_threshold(f"{tier}_threshold", basis, currency)
        text = form_text(f"{tier}_multiplier", max_length=20) or ""
        try:
            multiplier = Decimal(text)
        except InvalidOperation:
            raise BadRequest(f"The {tier} multiplier must be a decimal number such as 1.25, got {text!r}.") from None
        bonus_text = (request.form.get(f"{tier}_birthday_bonus") or "").strip()
        bonus = form_whole_number(f"{tier}_birthday_bonus") if bonus_text else 0
        levels.append(TierLevel(tier, threshold, multiplier, bonus))
    return levels


@console.route("/tier-policy/versions", methods=["POST"])
@security.requires(*TIER_POLICY_ROLES)
def tier_policy_schedule() -> BaseResponse:
    """Schedule a new version of the tier policy from the form."""
    currency = hub_state().settings.alliance_currency
    basis = form_text("basis", max_length=10) or ""
    downgrade = form_text("downgrade", max_length=10) or ""
    if basis not in BASES or downgrade not in DOWNGRADES:
        raise BadRequest("Choose the qualifying basis and the downgrade rule from the lists offered.")
    effective_from = form_moment("effective_from")
    window_months = _form_optional_months("window_months") if basis != "tenure" else None
    period_months = _form_optional_months("period_months") if downgrade == "one_step" else None
    levels = _form_levels(basis, currency)
    return change(tier_policy.propose_version, basis=basis, window_months=window_months, downgrade=downgrade,
                  period_months=period_months, levels=levels, effective_from=effective_from,
                  success=lambda made: (f"Tier policy version {made.policy.version} is scheduled; it takes effect "
                                        f"{display.local_text(made.policy.effective_from)}."),
                  back=url_for("console.tier_policy"))
