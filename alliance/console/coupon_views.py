"""Coupons for partner managers: the series with their terms and uses; a series' page with its coupons a page at
a time and the codes as CSV; create a series, issue it to a target, stop it with a reason.

Changes go through ``alliance.services.coupons``, the service the back-office API and the
CLI use, with the signed-in user as the actor; its refusals (a code in use, terms that do
not fit the kind, an unknown member, a stopped series) are shown on the page and nothing
is written (docs/coupons.md).
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from flask import Response, render_template, request, url_for
from werkzeug.exceptions import BadRequest
from werkzeug.wrappers import Response as BaseResponse

from alliance.console import display, security
from alliance.console.blueprint import console, money, navigation_item
from alliance.console.helpers import (
    change,
    csv_reply,
    form_choice,
    form_confirmed,
    form_moment,
    form_money,
    form_text,
    form_whole_number,
    pager_args,
    query_page,
    query_sort,
    query_text,
    sorted_rows,
)
from alliance.domain.coupons import HUB, CouponKind
from alliance.domain.earning import TIER_ORDER
from alliance.extensions import hub_state
from alliance.services import console_reports, coupons

COUPON_ROLES = security.PARTNER_MANAGER_ROLES
STATUSES = ("active", "stopped")
KINDS = tuple(kind.value for kind in CouponKind)
CSV_COLUMNS = ("member_number", "code", "uses", "uses_allowed", "issued_at")
SORTS = {
    "created": lambda view: view["created_at"],
    "code": lambda view: view["code"],
    "funder": lambda view: (view["funder"], view["code"]),
    "kind": lambda view: (view["kind"], view["code"]),
    "status": lambda view: (view["status"], view["code"]),
    "valid_until": lambda view: (view["valid_until"], view["code"]),
}

navigation_item("Partners", "Coupons", "console.coupons_list", roles=COUPON_ROLES, order=26,
                summary="coupon series with their terms and uses: create one, issue it to members, stop it")


def terms_in_words(view: dict[str, Any]) -> str:
    """What a series gives, as a person says it: ``50 bonus points``, ``×1.5 on the next purchase``,
    ``5.00 EUR off for 400 points``."""
    if view["kind"] == CouponKind.BONUS:
        return f"{display.number(view['bonus_points'])} bonus point{'' if view['bonus_points'] == 1 else 's'}"
    if view["kind"] == CouponKind.MULTIPLIER:
        return f"×{format(view['multiplier'], 'f')} on the next purchase"
    return f"{money(view['amount_off_minor'], view['currency'])} off for {display.points(view['points_cost'])}"


def charged_in_words(line: dict[str, Any]) -> str:
    """One price a partner funder was charged at: ``50 points at 0.01 EUR a point``."""
    price = line["price_per_point"]
    shown = price.quantize(Decimal(1)) if price == price.to_integral_value() else price.normalize()
    return f"{display.points(line['points'])} at {format(shown, 'f')} {line['currency']} a point"


def where_valid(view: dict[str, Any]) -> str:
    """Where a series' coupons may be used, in words."""
    return "at every partner" if view["valid_at"] == ["*"] else "at " + ", ".join(view["valid_at"])


@console.route("/coupons")
@security.requires(*COUPON_ROLES)
def coupons_list() -> str:
    """Every coupon series (or those of one status or funder), with terms, validity and uses so far."""
    status = query_text("status", allowed=STATUSES)
    sort = query_sort(list(SORTS), "created", descending=True)
    with hub_state().read_only_unit_of_work() as uow:
        codes = console_reports.partner_codes(uow.session)
        funder = query_text("funder", allowed=[HUB, *codes])
        found = coupons.list_series(uow.session, status=status, funder=funder)
    return render_template("console/coupons/list.html", series=sorted_rows(found, sort, SORTS), sort=sort,
                           status=status, statuses=STATUSES, funder=funder, codes=codes, kinds=KINDS,
                           terms=terms_in_words, where=where_valid, zone=display.viewer_zone_name())


@console.route("/coupons/<series_code>")
@security.requires(*COUPON_ROLES)
def coupon_series_page(series_code: str) -> str:
    """One series: its terms in words, where it is valid, what it did so far, its coupons a page at a time,
    and the forms to issue it and to stop it."""
    page, page_size = query_page()
    with hub_state().read_only_unit_of_work() as uow:
        view = coupons.series_view(uow.session, code=series_code)
        listed = coupons.coupon_codes(uow.session, code=series_code, page=page, per_page=page_size)
    return render_template(
        "console/coupons/series.html", series=view, terms=terms_in_words(view), where=where_valid(view),
        charged=[charged_in_words(line) for line in view["charged"]],
        listing=console_reports.Page(listed["coupons"], listed["total"], page, page_size),
        pager=pager_args(series_code=series_code), tiers=TIER_ORDER, now=security.utc_now())


@console.route("/coupons/<series_code>/codes.csv")
@security.requires(*COUPON_ROLES)
def coupon_codes_csv(series_code: str) -> Response:
    """Every coupon of the series in issue order (member number, code, uses), for the operator's messaging."""
    rows: list[tuple[object, ...]] = []
    with hub_state().read_only_unit_of_work() as uow:
        page = 1
        while True:
            listed = coupons.coupon_codes(uow.session, code=series_code, page=page, per_page=coupons.MAX_PAGE)
            rows += [(row["member_number"], row["code"], row["uses"], row["uses_allowed"],
                      row["issued_at"].isoformat()) for row in listed["coupons"]]
            if page * coupons.MAX_PAGE >= listed["total"]:
                break
            page += 1
    return csv_reply(f"coupons-{series_code}.csv", CSV_COLUMNS, rows)


@console.route("/coupons", methods=["POST"])
@security.requires(*COUPON_ROLES)
def coupons_create() -> BaseResponse:
    """Create a series from the form: its kind and terms, funder, validity, uses per coupon and where it is valid."""
    code = form_text("code", max_length=64) or ""
    kind = form_choice("kind", KINDS, "Choose the kind from the list offered: bonus, multiplier or amount off.")
    currency = (form_text("currency", required=False, max_length=3) or "").upper() or None
    amount_off_minor = None
    if (request.form.get("amount_off") or "").strip():
        if currency is None:
            raise BadRequest("Give the currency (such as EUR) of the amount off: nothing was created.")
        amount_off_minor = form_money("amount_off", currency)
    valid_at = (request.form.get("valid_at") or "").replace(",", " ").split()
    return change(coupons.create_series, code=code, title=form_text("title", max_length=200),
                  funder=form_text("funder", max_length=40), kind=kind,
                  bonus_points=_optional_whole("bonus_points"), multiplier=_form_multiplier(),
                  amount_off_minor=amount_off_minor, currency=currency,
                  points_cost=_optional_whole("points_cost"),
                  valid_from=form_moment("valid_from"), valid_until=form_moment("valid_until"),
                  uses_per_coupon=form_whole_number("uses_per_coupon"), valid_at=valid_at or None,
                  success=f"Coupon series {code} is created; issue it to members on its page.",
                  back=url_for("console.coupons_list"))


@console.route("/coupons/<series_code>/issues", methods=["POST"])
@security.requires(*COUPON_ROLES)
def coupon_series_issue(series_code: str) -> BaseResponse:
    """Issue the series to a target: tiers, a tenure in whole months, member numbers one a line."""
    tiers = request.form.getlist("tier")
    if any(tier not in TIER_ORDER for tier in tiers):
        raise BadRequest("Choose tiers from the boxes offered: nothing was issued.")
    members = (request.form.get("member_numbers") or "").replace(",", " ").split()
    return change(coupons.issue, code=series_code, tiers=tiers or None,
                  min_tenure_months=_optional_whole("min_tenure_months"), member_numbers=members or None,
                  success=lambda issued: (f"Issued {issued.issued:,} coupon{'' if issued.issued == 1 else 's'} of "
                                          f"{series_code}; {issued.already_held:,} member"
                                          f"{' of the target' if issued.already_held == 1 else 's of the target'} "
                                          f"already had one."),
                  back=url_for("console.coupon_series_page", series_code=series_code))


@console.route("/coupons/<series_code>/stop", methods=["POST"])
@security.requires(*COUPON_ROLES)
def coupon_series_stop(series_code: str) -> BaseResponse:
    """Stop a series, with the reason kept in the audit trail: from now on none of its coupons is accepted."""
    reason = form_confirmed(max_length=500)
    return change(coupons.stop_series, code=series_code, reason=reason,
                  success=f"Coupon series {series_code} is stopped: no till accepts its coupons from now on.",
                  back=url_for("console.coupon_series_page", series_code=series_code))


def _optional_whole(name: str) -> int | None:
    return form_whole_number(name) if (request.form.get(name) or "").strip() else None


def _form_multiplier() -> Decimal | None:
    text = (request.form.get("multiplier") or "").strip()
    if not text:
        return None
    try:
        multiplier = Decimal(text)
    except InvalidOperation:
        raise BadRequest(f"The multiplier must be a number such as 1.5, got {text!r}: nothing was created.") from None
    if not multiplier.is_finite():
        raise BadRequest("The multiplier must be a number such as 1.5: nothing was created.")
    return multiplier


