"""The web console at ``/console``: server-rendered pages for finance, partner managers and customer service.

Flask and Jinja only, one CSS file, no JavaScript. Pages read through
``alliance.services.console_reports``; every change goes through the same services as
the back-office API, committed with its audit log entry under the actor
``console:<username>``. Errors under ``/console`` are HTML pages; the rest of the hub
keeps answering problem+json.
"""

from __future__ import annotations

from flask import Flask

# The pages register their routes on the blueprint when imported.
from alliance.console import (  # noqa: F401
    admin_views,
    behaviour_views,
    campaign_views,
    complaint_views,
    coupon_views,
    credit_views,
    finance_views,
    goodwill_views,
    grade_views,
    liability_views,
    member_views,
    partner_views,
    reward_views,
    risk_views,
    security,
    tier_views,
    views,
    webhook_views,
)
from alliance.console.blueprint import console


def init_app(app: Flask) -> None:
    """Mount the console at /console with its hardened session cookie."""
    security.configure_session_cookie(app)
    app.register_blueprint(console)
