"""The points liability page for finance: outstanding points by issuer and expiry month, valued, as of a date.

Reads go through ``settlement.api`` (``points_liability``); the page changes nothing. The
as-of date is a day in the viewer's time zone (the report is as of the end of it, or now
for today); expiry months are in the alliance's time zone, as in the API and the CLI.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal

from flask import Response, render_template, request
from werkzeug.exceptions import BadRequest

from alliance.console import display, security
from alliance.console.blueprint import console, navigation_item
from alliance.console.helpers import now, query_sort, sorted_rows
from alliance.domain.errors import ValidationFailed
from alliance.extensions import hub_state
from settlement import api as settlement

navigation_item("Finance", "Points liability", "console.finance_liability", roles=security.FINANCE_ROLES,
                summary="points owed to members by issuer and expiry month, valued, with expected breakage", order=14)
ISSUER_SORTS = ("issuer", "pending", "available", "held", "outstanding", "expire")


def _report() -> settlement.LiabilityReport:
    """The report for ``?as_of=YYYY-MM-DD`` (the end of that day where the viewer is), or now."""
    text = (request.args.get("as_of") or "").strip()
    try:
        day = date.fromisoformat(text) if text else None
    except ValueError:
        raise BadRequest("The as-of date is not a date: choose one with the date picker (YYYY-MM-DD).") from None
    state = hub_state()
    moment = now()
    try:
        as_of = settlement.as_of_moment(day, time_zone=display.viewer_zone_name(), now=moment)
    except ValidationFailed:
        raise BadRequest("The as-of date is in the future: a liability can only be reported up to today.") from None
    with state.read_only_unit_of_work() as uow:
        return settlement.points_liability(uow.session, as_of=as_of, time_zone=state.settings.alliance_time_zone,
                                           now=moment)


@console.route("/finance/liability")
@security.requires(*security.FINANCE_ROLES)
def finance_liability() -> str:
    """Outstanding points by issuer and by expiry month, valued, with the expected breakage."""
    report = _report()
    issuer_sort = query_sort(ISSUER_SORTS, "issuer")
    issuers = sorted_rows(report.by_issuer, issuer_sort, {
        "issuer": lambda line: (line.issuer != settlement.HUB_ISSUER, line.issuer or ""),
        "pending": lambda line: line.pending_points, "available": lambda line: line.available_points,
        "held": lambda line: line.held_points, "outstanding": lambda line: line.outstanding_points,
        "expire": lambda line: line.expected_to_expire_points,
    })
    rate = report.breakage_rate
    return render_template(
        "console/finance/liability.html", report=report, issuers=issuers, sort=issuer_sort,
        as_of_day=display.local(report.as_of).date(), today=display.local(now()).date(),
        breakage_percent=str(Decimal(round(rate * 10000)).scaleb(-2)), hub_issuer=settlement.HUB_ISSUER,
        look_back_months=settlement.LOOK_BACK_MONTHS, month_label=month_label,
    )


def month_label(month: str) -> str:
    """``2027-03`` as a person reads it: March 2027."""
    return date.fromisoformat(f"{month}-01").strftime("%B %Y")


@console.route("/finance/liability.csv")
@security.requires(*security.FINANCE_ROLES)
def finance_liability_csv() -> Response:
    """The same report as CSV (money in major units), as the API and ``alliance finance liability --csv`` give it."""
    report = _report()
    day = display.local(report.as_of).date().isoformat()
    return Response(settlement.render_liability_csv(report), content_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": f'attachment; filename="points-liability-{day}.csv"'})
