"""Partners' credit limits in the console: every limited partner's exposure and state, one partner's credit, alerts.

Read only: limits are set and decided through the back-office API or the CLI (``alliance
finance credit``), where the second person for a raise is checked. Finance and partner
managers see the alerts raised when a partner's exposure enters the warning band or
reaches its limit.
"""

from __future__ import annotations

from flask import render_template

from alliance.console import security
from alliance.console.blueprint import console, navigation_item
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
    """One partner's credit limit, exposure and state, the changes waiting for a second person, and its alerts."""
    with hub_state().read_only_unit_of_work() as uow:
        view = credit.credit_of(uow.session, partner_code=code)
        alerts = credit.credit_alerts(uow.session, partner_code=code)
    return render_template("console/credit/partner.html", view=view, alerts=alerts)
