"""Partner-manager pages: partners, a partner's activity charts, keys and terminals.

Changes go through ``partner_admin``, the service the back-office
API uses, with the signed-in user as the actor.
"""

from __future__ import annotations

import base64
import binascii

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from flask import Response, render_template, url_for
from werkzeug.exceptions import BadRequest
from werkzeug.wrappers import Response as BaseResponse

from alliance.console import security
from alliance.console.blueprint import console, navigation_item
from alliance.console.charts import Series, bar_chart, line_chart
from alliance.console.helpers import change, csv_reply, form_text, now, pager_args, query_page, query_text
from alliance.extensions import hub_state
from alliance.services import complaints, console_reports, grading, partner_admin

MANAGERS = security.PARTNER_MANAGER_ROLES
CHART_MONTHS = (6, 12, 24)

navigation_item("Partners", "Partners", "console.partners", roles=MANAGERS, order=20,
                summary="activity over time, keys and terminals")
DEFAULT_CHART_MONTHS = 12


@console.route("/partners")
@security.requires(*MANAGERS)
def partners() -> str:
    """Partners by code, filtered by status and searched by code or name, a page at a time."""
    status = query_text("status", allowed=console_reports.PARTNER_STATUSES)
    search = query_text("q")
    page, page_size = query_page()
    with hub_state().read_only_unit_of_work() as uow:
        found = console_reports.partners_page(uow.session, status=status, search=search, page=page,
                                              page_size=page_size)
        latest = grading.latest_grades(uow.session, codes=[row.code for row in found.items])
    return render_template("console/partners/list.html", partners=found, status=status, search=search,
                           statuses=console_reports.PARTNER_STATUSES, pager=pager_args(), latest_grades=latest)


@console.route("/partners.csv")
@security.requires(*MANAGERS)
def partners_csv() -> Response:
    """Partners matching the filters, as CSV."""
    status = query_text("status", allowed=console_reports.PARTNER_STATUSES)
    search = query_text("q")
    rows: list[console_reports.PartnerRow] = []
    with hub_state().read_only_unit_of_work() as uow:
        page = 1
        while True:
            batch = console_reports.partners_page(uow.session, status=status, search=search, page=page,
                                                  page_size=console_reports.MAX_PAGE_SIZE)
            rows.extend(batch.items)
            if page >= batch.pages:
                break
            page += 1
    return csv_reply("partners.csv", ["code", "name", "status", "currency", "settlement_cycle", "created_at",
                                      "open_complaints"],
                     [[row.code, row.name, row.status, row.currency, row.settlement_cycle, row.created_at.isoformat(),
                       row.open_complaints] for row in rows])


def activity_charts(activity: list[console_reports.MonthActivity]) -> dict[str, object]:
    """The partner page's three charts: volume, redemptions and complaints per month."""
    labels = [month.month for month in activity]
    span = f"{labels[0]} to {labels[-1]}"
    return {
        "volume": bar_chart(Series(
            "Purchases per month", f"Number of purchases reported each month, {span} (UTC months).", labels,
            [month.purchases for month in activity], "purchases"), chart_id="chart-volume"),
        "points": line_chart(Series(
            "Points issued per month", f"Points earned on purchases each month, {span}.", labels,
            [month.points_issued for month in activity], "points"), chart_id="chart-points"),
        "redemptions": bar_chart(Series(
            "Points redeemed per month", f"Points captured in redemptions each month, net of refunds, {span}.",
            labels, [month.points_redeemed for month in activity], "points"), chart_id="chart-redemptions"),
        "complaints": bar_chart(Series(
            "Complaints per month", f"Complaints filed against the partner each month, {span}.", labels,
            [month.complaints for month in activity], "complaints"), chart_id="chart-complaints"),
    }


@console.route("/partners/<code>")
@security.requires(*MANAGERS)
def partner(code: str) -> str:
    """One partner: activity charts over time, keys and terminals."""
    months_text = query_text("months", allowed=[str(months) for months in CHART_MONTHS])
    months = int(months_text) if months_text else DEFAULT_CHART_MONTHS
    with hub_state().unit_of_work() as uow:
        found = partner_admin.partner_by_code(uow.session, code)
        activity = console_reports.partner_activity(uow.session, partner_id=found.id, now=now(), months=months)
        keys = console_reports.partner_keys(uow.session, partner_id=found.id)
        terminals = console_reports.partner_terminals(uow.session, partner_id=found.id)
        open_complaints, _ = complaints.list_complaints(uow.session, status="open", partner_code=code, page=1,
                                                        page_size=5)
        grade_history = grading.partner_history(uow.session, code=code, limit=12)
    return render_template("console/partners/detail.html", partner=found, activity=activity,
                           charts=activity_charts(activity), keys=keys, terminals=terminals, months=months,
                           month_choices=CHART_MONTHS, open_complaints=open_complaints, grade_history=grade_history)


def _back_to_partner(code: str) -> str:
    return url_for("console.partner", code=code)


@console.route("/partners/<code>/keys/<key_id>/revocation", methods=["POST"])
@security.requires(*MANAGERS)
def partner_revoke_key(code: str, key_id: str) -> BaseResponse:
    """Revoke one of the partner's keys at once."""
    return change(partner_admin.revoke, code=code, key_id=key_id, success=f"Key {key_id} revoked.",
                  back=_back_to_partner(code))


@console.route("/partners/<code>/terminals", methods=["POST"])
@security.requires(*MANAGERS)
def partner_add_terminal(code: str) -> BaseResponse:
    """Register a terminal."""
    terminal_code = form_text("terminal_code", max_length=40)
    return change(partner_admin.new_terminal, code=code, terminal_code=terminal_code,
                  success=f"Terminal {terminal_code} added.", back=_back_to_partner(code))


def _public_key_bytes(text: str) -> bytes:
    """Raw Ed25519 public key bytes from PEM or base64 of the 32 bytes (a 400 otherwise)."""
    if "-----BEGIN" in text:
        try:
            key = serialization.load_pem_public_key(text.encode())
        except ValueError:
            raise BadRequest("the public key is not a PEM public key") from None
        if not isinstance(key, Ed25519PublicKey):
            raise BadRequest("only Ed25519 public keys are accepted")
        return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest("the public key is neither PEM nor base64") from None
    if len(raw) != 32:
        raise BadRequest("an Ed25519 public key is 32 bytes")
    return raw


@console.route("/partners/<code>/keys", methods=["POST"])
@security.requires(*MANAGERS)
def partner_add_key(code: str) -> BaseResponse:
    """Register an Ed25519 public key, optionally bound to one terminal."""
    key_id = form_text("key_id", max_length=100)
    public_key = _public_key_bytes(form_text("public_key", max_length=2000) or "")
    return change(partner_admin.new_key, code=code, key_id=key_id, public_key=public_key,
                  terminal_code=form_text("terminal", required=False, max_length=40), expires_at=None,
                  success=f"Key {key_id} registered.", back=_back_to_partner(code))
