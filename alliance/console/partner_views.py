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
from alliance.console.helpers import (
    change,
    csv_reply,
    form_confirmed,
    form_text,
    now,
    pager_args,
    query_page,
    query_sort,
    query_text,
)
from alliance.domain.money import major_units_text
from alliance.extensions import hub_state
from alliance.services import complaints, console_reports, grading, partner_admin

MANAGERS = security.PARTNER_MANAGER_ROLES
CHART_MONTHS = (6, 12, 24)

navigation_item("Partners", "Partners", "console.partners", roles=MANAGERS, order=20,
                summary="your portfolio: grades and trends, open alerts, money owed; activity, keys and terminals")
DEFAULT_CHART_MONTHS = 12


PARTNER_SORT_KEYS = console_reports.PARTNER_SORTS
TREND_PERIODS = 3


def grade_trend(grades: list[tuple[str, str | None]]) -> dict[str, object] | None:
    """A partner's grades over the newest periods as a person reads them: ``B → A``, and up, down or same.

    The direction compares the newest grade with the one before it; a period without a
    grade (not graded) shows as a dash and gives no direction.
    """
    if not grades:
        return None
    letters = [grade or "–" for _, grade in grades]
    newest, before = grades[-1][1], grades[-2][1] if len(grades) > 1 else None
    direction = None
    if newest is not None and before is not None:
        direction = "up" if newest < before else "down" if newest > before else "same"
    return {"path": " → ".join(letters), "direction": direction, "periods": [label for label, _ in grades]}


@console.route("/partners")
@security.requires(*MANAGERS)
def partners() -> str:
    """The portfolio: partners with their grade, its trend, open alerts and money owed, filtered, sorted, paged."""
    status = query_text("status", allowed=console_reports.PARTNER_STATUSES)
    search = query_text("q")
    page, page_size = query_page()
    sort = query_sort(PARTNER_SORT_KEYS, "code")
    with hub_state().read_only_unit_of_work() as uow:
        found = console_reports.partners_page(uow.session, status=status, search=search, page=page,
                                              page_size=page_size, sort=sort)
        codes = [row.code for row in found.items]
        latest = grading.latest_grades(uow.session, codes=codes)
        trends = {code: grade_trend(grades) for code, grades in
                  grading.grade_trends(uow.session, codes=codes, periods=TREND_PERIODS).items()}
    return render_template("console/partners/list.html", partners=found, status=status, search=search,
                           statuses=console_reports.PARTNER_STATUSES, pager=pager_args(), latest_grades=latest,
                           trends=trends, sort=sort)


@console.route("/partners.csv")
@security.requires(*MANAGERS)
def partners_csv() -> Response:
    """Partners matching the filters, as CSV (outstanding in major units of each partner's currency)."""
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
                                      "open_complaints", "grade", "open_alerts", "outstanding"],
                     [[row.code, row.name, row.status, row.currency, row.settlement_cycle, row.created_at.isoformat(),
                       row.open_complaints, row.grade or "", row.open_alerts,
                       major_units_text(row.outstanding_minor, row.currency)] for row in rows])


def activity_charts(activity: list[grading.MonthActivity], time_zone: str) -> dict[str, object]:
    """The partner page's charts, each saying what it counts: the rows and dates its grades count."""
    labels = [month.month for month in activity]
    span = f"{labels[0]} to {labels[-1]}, months in {time_zone}, the last one so far"
    return {
        "volume": bar_chart(Series(
            "Purchases per month", f"Purchases counted by the day the partner reported them, as grades count them, "
                                   f"{span}.", labels, [month.purchases for month in activity], "purchases"),
            chart_id="chart-volume"),
        "points": line_chart(Series(
            "Points issued per month", f"Points the partner pays for on the purchases reported each month, {span}.",
            labels, [month.points_issued for month in activity], "points"), chart_id="chart-points"),
        "redemptions": bar_chart(Series(
            "Points redeemed per month", f"Points captured in redemptions, by the day they were captured, {span}.",
            labels, [month.points_redeemed for month in activity], "points"), chart_id="chart-redemptions"),
        "complaints": bar_chart(Series(
            "Complaints per month", f"Complaints opened against the partner, by the day they were opened, {span}.",
            labels, [month.complaints for month in activity], "complaints"), chart_id="chart-complaints"),
    }


@console.route("/partners/<code>")
@security.requires(*MANAGERS)
def partner(code: str) -> str:
    """One partner: activity charts over time, grade history, keys and terminals."""
    months_text = query_text("months", allowed=[str(months) for months in CHART_MONTHS])
    months = int(months_text) if months_text else DEFAULT_CHART_MONTHS
    time_zone = hub_state().settings.alliance_time_zone
    with hub_state().unit_of_work() as uow:
        found = partner_admin.partner_by_code(uow.session, code)
        activity = console_reports.partner_activity(uow.session, partner_id=found.id, now=now(), months=months,
                                                    time_zone=time_zone)
        keys = console_reports.partner_keys(uow.session, partner_id=found.id)
        terminals = console_reports.partner_terminals(uow.session, partner_id=found.id)
        open_complaints, _ = complaints.list_complaints(uow.session, status="open", partner_code=code, page=1,
                                                        page_size=5)
        grade_history = grading.partner_history(uow.session, code=code, limit=12)
        alerts, open_alerts = grading.list_alerts(uow.session, acknowledged=False, partner=code, limit=5)
    return render_template("console/partners/detail.html", partner=found, activity=activity,
                           charts=activity_charts(activity, time_zone), keys=keys, terminals=terminals,
                           months=months, month_choices=CHART_MONTHS, open_complaints=open_complaints,
                           grade_history=grade_history, time_zone=time_zone, alerts=alerts, open_alerts=open_alerts,
                           trend=grade_trend([(item["period"], item["grade"])  # type: ignore[misc]
                                              for item in reversed(grade_history[:TREND_PERIODS])]))


def _back_to_partner(code: str) -> str:
    return url_for("console.partner", code=code)


@console.route("/partners/<code>/keys/<key_id>/revocation", methods=["POST"])
@security.requires(*MANAGERS)
def partner_revoke_key(code: str, key_id: str) -> BaseResponse:
    """Revoke one of the partner's keys at once, after a ticked confirmation and with the reason in the audit log."""
    reason = form_confirmed()
    return change(partner_admin.revoke, code=code, key_id=key_id, reason=reason, success=f"Key {key_id} revoked.",
                  back=_back_to_partner(code))


@console.route("/partners/<code>/terminals", methods=["POST"])
@security.requires(*MANAGERS)
def partner_add_terminal(code: str) -> BaseResponse:
    """Register a terminal."""
    terminal_code = form_text("terminal_code", max_length=40)
    return change(partner_admin.new_terminal, code=code, terminal_code=terminal_code,
                  success=f"Terminal {terminal_code} added.", back=_back_to_partner(code))


@console.route("/partners/<code>/terminals/<terminal_code>/retirement", methods=["POST"])
@security.requires(*MANAGERS)
def partner_retire_terminal(code: str, terminal_code: str) -> BaseResponse:
    """Retire a terminal (confirmed, with a reason): requests naming it are refused and its bound keys revoked."""
    reason = form_confirmed()
    return change(partner_admin.retire_terminal, code=code, terminal_code=terminal_code, reason=reason,
                  success=lambda revoked: f"Terminal {terminal_code} retired"
                  + (f"; keys {', '.join(revoked)} revoked." if revoked else "."),
                  back=_back_to_partner(code))


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
