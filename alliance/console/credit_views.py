"""Partners' credit limits in the console: every limited partner's exposure and state, one partner's credit, alerts.

Limits are set and decided through the back-office API or the CLI (``alliance finance
credit``), where the second person for a raise is checked. Finance and partner managers
see the alerts raised when a partner's exposure enters the warning band or reaches its
limit, the partner's prepaid balance and its prepaid point blocks; finance records a
block the partner paid for here (settlement's ``credit.buy_block``, with the signed-in
user as the actor, so every refusal is the service's own).
"""

from __future__ import annotations

from datetime import date

from flask import render_template, url_for
from werkzeug.exceptions import BadRequest
from werkzeug.wrappers import Response as BaseResponse

from alliance.console import security
from alliance.console.blueprint import console, money, navigation_item
from alliance.console.helpers import change, form_text, form_whole_number
from alliance.extensions import hub_state
from settlement.api import credit

VIEWERS = ("finance", "partner_manager", "admin")

navigation_item("Finance", "Credit limits", "console.credit_limits", roles=VIEWERS, order=14,
                summary="partners' unsettled issuance against their credit limits, and the alerts it raised")


@console.route("/credit")
@security.requires(*VIEWERS)
def credit_limits() -> str:
    """Every partner with a credit limit (exposure, state, waiting changes) and the latest credit alerts."""
    with hub_state().read_only_unit_of_work() as uow:
        partners = credit.limited_partners(uow.session)
        alerts = credit.credit_alerts(uow.session)
    return render_template("console/credit/list.html", partners=partners, alerts=alerts)


@console.route("/partners/<code>/credit")
@security.requires(*VIEWERS)
def partner_credit(code: str) -> str:
    """One partner's credit limit, exposure and state, the changes waiting for a second person, its alerts and its
    prepaid blocks."""
    with hub_state().read_only_unit_of_work() as uow:
        view = credit.credit_of(uow.session, partner_code=code)
        alerts = credit.credit_alerts(uow.session, partner_code=code)
        prepaid = credit.prepaid_blocks(uow.session, partner_code=code)
    return render_template("console/credit/partner.html", view=view, alerts=alerts, prepaid=prepaid,
                           finance_roles=security.FINANCE_ROLES)


@console.route("/partners/<code>/credit/prepaid-blocks", methods=["POST"])
@security.requires(*security.FINANCE_ROLES)
def partner_buy_prepaid_block(code: str) -> BaseResponse:
    """Record a block of points the partner paid for ahead, priced at its issue price in force."""
    try:
        paid_on = date.fromisoformat(form_text("paid_on") or "")
    except ValueError:
        raise BadRequest("paid on must be a date such as 2026-11-30") from None
    return change(credit.buy_block, partner_code=code, points=form_whole_number("points"),
                  reference=form_text("reference", max_length=64) or "", paid_on=paid_on,
                  success=lambda bought: f"Block {bought.block.reference} recorded: {bought.block.points} points, "
                                         f"{money(bought.block.amount_minor, bought.block.currency)}; prepaid "
                                         f"balance {money(bought.balance_minor, bought.block.currency)}.",
                  back=url_for("console.partner_credit", code=code))
