"""The console's Alerts page tells partner managers which webhook endpoints the hub stopped sending to: partner,
URL, since when and why, each linked to its page under Webhooks; filtered by partner, gone once enabled again."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from flask import Flask
from sqlalchemy import select

from alliance.extensions import HubState, hub_state
from alliance.models import Partner
from alliance.services import webhooks
from tests.console_support import signed_in, text_of
from tests.factories import make_partner


def _endpoints(hub: HubState) -> dict[str, int]:
    """shop's endpoint works; bakery's answered 410 an hour ago; deli's was disabled by a manager since."""
    now = datetime.now(UTC)
    for code in ("shop", "bakery", "deli"):
        make_partner(hub, now=now - timedelta(days=1), code=code)
    with hub.unit_of_work() as uow:
        ids = dict(uow.session.execute(select(Partner.code, Partner.id)).all())
        endpoints = {code: webhooks.register_endpoint(uow.session, partner=code, url=f"https://{code}.example/hooks",
                                                      event_types=["statement.paid"], actor="console:petra",
                                                      now=now - timedelta(hours=2)).id
                     for code in ("shop", "bakery", "deli")}
        webhooks.emit(uow.session, event_type="statement.paid", partner_id=ids["bakery"],
                      now=now - timedelta(hours=1), data={"statement_id": 1})
        for due in webhooks.lease_due(uow.session, now=now - timedelta(hours=1), holder="test", limit=10,
                                      lease=timedelta(minutes=1)):
            webhooks.record_attempt(uow.session, delivery_id=due.delivery_id, now=now - timedelta(hours=1),
                                    duration_ms=30, status_code=410)
        webhooks.disable_endpoint(uow.session, endpoint_id=endpoints["deli"], reason="deli is moving its receiver",
                                  actor="console:petra", now=now - timedelta(minutes=10))
        uow.commit()
    return endpoints


def test_the_alerts_page_lists_disabled_webhook_endpoints_newest_first_with_a_link_to_each(app: Flask) -> None:
    hub = hub_state(app)
    endpoints = _endpoints(hub)
    browser = signed_in(app, "paco", "partner_manager")
    html = browser.get("/console/grade-alerts").get_data(as_text=True)
    section = html.split('id="webhooks-heading"')[1].split("</section>")[0]
    assert "Webhook endpoints disabled <small>(2)</small>" in html
    assert re.findall(r'<th scope="row"><a href="/console/partners/([a-z]+)"', section) == ["deli", "bakery"]
    for code in ("deli", "bakery"):
        assert f'href="/console/webhooks/{endpoints[code]}"' in section
        assert f"https://{code}.example/hooks" in section
    assert "shop" not in section and f"/console/webhooks/{endpoints['shop']}" not in section
    words = text_of(browser.get("/console/grade-alerts"))
    assert "the endpoint answered 410 Gone" in words and "deli is moving its receiver" in words
    assert section.count("<time datetime=") == 2
    # The link leads to the endpoint's page, where it can be enabled.
    assert "deli is moving its receiver" in text_of(browser.get(f"/console/webhooks/{endpoints['deli']}"))


def test_the_disabled_endpoints_follow_the_partner_filter_and_leave_once_enabled(app: Flask) -> None:
    hub = hub_state(app)
    endpoints = _endpoints(hub)
    browser = signed_in(app, "paco", "partner_manager")
    bakery_only = browser.get("/console/grade-alerts", partner="bakery").get_data(as_text=True)
    section = bakery_only.split('id="webhooks-heading"')[1].split("</section>")[0]
    assert "https://bakery.example/hooks" in section and "deli.example" not in section
    # Acknowledged grade alerts only: the disabled endpoints (open matters) are not shown.
    assert 'id="webhooks-heading"' not in browser.get("/console/grade-alerts", state="acknowledged").get_data(
        as_text=True)
    enabled = browser.post(f"/console/webhooks/{endpoints['bakery']}/enable", {"confirm": "yes"})
    assert enabled.status_code == 303
    after = browser.get("/console/grade-alerts").get_data(as_text=True)
    assert "Webhook endpoints disabled <small>(1)</small>" in after and "bakery.example" not in after
    shop_only = text_of(browser.get("/console/grade-alerts", partner="shop"))
    assert "No disabled webhook endpoint of this partner." in shop_only


def test_other_roles_do_not_see_the_alerts_page(app: Flask) -> None:
    _endpoints(hub_state(app))
    assert signed_in(app, "cass", "customer_service").get("/console/grade-alerts").status_code == 403
