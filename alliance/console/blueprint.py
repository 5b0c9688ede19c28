"""The console's blueprint: its security headers, error pages, template globals and the money filter.

The pages (``views``, ``finance_views``, ``partner_views``, ``grade_views``) register
their routes on ``console``; ``alliance.console.init_app`` mounts it once they have.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from decimal import Decimal
from typing import NoReturn

from flask import Blueprint, Response, g, render_template, request
from werkzeug.exceptions import HTTPException, NotFound

from alliance.console import display, security
from alliance.console.helpers import sort_url
from alliance.db import database_unavailable
from alliance.domain.errors import AllianceError
from alliance.domain.money import major_units_text, minor_units_per_unit

console = Blueprint("console", __name__, url_prefix="/console", template_folder="templates",
                    static_folder="static", static_url_path="/static")
logger = logging.getLogger(__name__)
CONTENT_SECURITY_POLICY = ("default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
                           "frame-ancestors 'none'; base-uri 'none'")


@dataclass(frozen=True, slots=True)
class NavItem:
    """One page in the main navigation and on the start page, shown to the roles that may open it."""

    group: str
    label: str
    endpoint: str
    roles: tuple[str, ...]
    summary: str
    order: int


NAVIGATION: list[NavItem] = []


def navigation_item(group: str, label: str, endpoint: str, *, roles: tuple[str, ...], summary: str,
                    order: int) -> None:
    """List a page in the navigation (each page module does this for its own pages when imported)."""
    NAVIGATION.append(NavItem(group, label, endpoint, roles, summary, order))
    NAVIGATION.sort(key=lambda item: (item.order, item.label))


def visible_navigation() -> list[NavItem]:
    """The pages the signed-in user may open, in navigation order."""
    return [item for item in NAVIGATION if security.may(*item.roles)]


def navigation_groups() -> list[tuple[str, list[NavItem]]]:
    """The visible pages by group, each group where its first page falls in the navigation order."""
    groups: dict[str, list[NavItem]] = {}
    for item in visible_navigation():
        groups.setdefault(item.group, []).append(item)
    return list(groups.items())


def money(amount_minor: int | None, currency: str) -> str:
    """An exact amount of minor units as ``1,234.56 EUR`` (no float on the way)."""
    if amount_minor is None:
        return ""
    unit = minor_units_per_unit(currency)
    places = len(str(unit)) - 1
    value = Decimal(amount_minor) / unit
    return f"{value:,.{places}f} {currency}"


def _before_request() -> None:
    security.load_identity()
    security.check_csrf()


def _after_request(response: Response) -> Response:
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "same-origin"
    if not request.path.startswith("/console/static/"):
        response.headers["Cache-Control"] = "no-store"
    return response


def _error_page(status: int, title: str, detail: str) -> tuple[str, int]:
    return render_template("console/error.html", status=status, title=title, detail=detail), status


def _http_error(error: HTTPException) -> tuple[str, int]:
    status = error.code or 500
    return _error_page(status, error.name, error.description or error.name)


def _alliance_error(error: AllianceError) -> tuple[str, int]:
    return _error_page(error.http_status, error.title, error.detail)


def _unexpected_error(error: Exception) -> tuple[str, int] | tuple[str, int, dict[str, str]]:
    if database_unavailable(error):
        # A failover or a restart, not a bug: the page says so, and that trying again is safe.
        page, status = _error_page(503, "Database unavailable", "The database cannot serve right now, so nothing "
                                   "was changed. Try again in a moment.")
        return page, status, {"Retry-After": "1"}
    # The URL rule, not the path: a path may carry what the logs must not (a member number, a code).
    rule = request.url_rule.rule if request.url_rule is not None else "unmatched"
    logger.exception("unexpected error in console %s %s (request %s)", request.method, rule, g.get("request_id"))
    return _error_page(500, "Internal Server Error", "The console could not complete this. Quote request "
                                                       f"{g.get('request_id') or 'unknown'} to the operator.")


@console.route("/<path:unknown>", methods=["GET", "POST"])
def unknown_page(unknown: str) -> NoReturn:
    """Any other address under /console: an HTML 404, not the API's problem+json."""
    raise NotFound(f"There is no console page at /console/{unknown}.")


def _template_globals() -> dict[str, object]:
    return {"csrf_token": security.csrf_token, "may": security.may, "staff": g.get("staff"),
            "FINANCE_ROLES": security.FINANCE_ROLES, "PARTNER_MANAGER_ROLES": security.PARTNER_MANAGER_ROLES,
            "COMPLAINT_ROLES": security.COMPLAINT_ROLES, "navigation": visible_navigation,
            "navigation_groups": navigation_groups,
            "sort_url": sort_url, "viewer_zone_name": display.viewer_zone_name, "local_text": display.local_text}


console.before_request(_before_request)
console.after_request(_after_request)
console.context_processor(_template_globals)
console.add_app_template_filter(money, "money")
console.add_app_template_filter(major_units_text, "major_units")
console.add_app_template_filter(display.number, "number")
console.add_app_template_filter(display.points, "points")
console.add_app_template_filter(display.day, "day")
console.register_error_handler(HTTPException, _http_error)
console.register_error_handler(AllianceError, _alliance_error)
console.register_error_handler(Exception, _unexpected_error)
