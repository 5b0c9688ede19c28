"""A partner manager keeps a partner's webhook endpoint in a real browser: adds it (a plain-http URL is refused in
words and nothing is registered), finds the one the hub disabled first on the Webhooks page with its reason, opens
an endpoint's delivery log, redelivers an event, disables it with a confirmed reason and enables it again. Every
step is scanned by axe-core and tried at 390 px wide.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from playwright.sync_api import expect
from sqlalchemy import func, select

from alliance.extensions import hub_state
from alliance.models import Partner, WebhookEndpoint
from alliance.services import webhooks
from tests.browser.test_console_flows import menu, sign_in

REASON = "The partner moves its receiver to a new data centre this weekend."


def _count(pg_app) -> int:  # type: ignore[no-untyped-def]
    with hub_state(pg_app).unit_of_work() as uow:
        return uow.session.scalar(select(func.count()).select_from(WebhookEndpoint)) or 0


def _gone_endpoint(pg_app) -> str:  # type: ignore[no-untyped-def]
    """An endpoint of the first partner that answered 410 to its first event; the partner's code."""
    now = datetime.now(timezone.utc)
    with hub_state(pg_app).unit_of_work() as uow:
        code, partner_id = uow.session.execute(select(Partner.code, Partner.id).order_by(Partner.id)).first()
        webhooks.register_endpoint(uow.session, partner=code, url=f"https://{code}.example/old-hooks",
                                   event_types=["statement.closed"], actor="console:paco", now=now)
        webhooks.emit(uow.session, event_type="statement.closed", partner_id=partner_id, now=now,
                      data={"statement_id": 1})
        for due in webhooks.lease_due(uow.session, now=now, holder="test", limit=10, lease=timedelta(minutes=1)):
            webhooks.record_attempt(uow.session, delivery_id=due.delivery_id, now=now, duration_ms=80,
                                    status_code=410)
        uow.commit()
    return code


def test_a_partner_manager_adds_reads_redelivers_disables_and_enables_a_webhook_endpoint(page, shots, console_hub,
                                                                                          pg_app):
    base_url, _ = console_hub
    code = _gone_endpoint(pg_app)
    sign_in(page, base_url, "paco")
    menu(page, "Webhooks").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Webhooks")
    first = page.locator("tbody tr").first
    expect(first.locator("td[data-label=Status]")).to_contain_text("the endpoint answered 410 Gone")
    shots.check("webhooks")

    form = page.locator("form", has=page.get_by_role("button", name="Add the endpoint"))
    form.locator("select[name=partner]").select_option(code)
    form.get_by_label("URL (https)").fill(f"http://{code}.example/hooks")
    form.locator("input[value='statement.closed']").check()
    form.get_by_role("button", name="Add the endpoint").click()
    expect(page.get_by_role("alert")).to_contain_text("https")
    assert _count(pg_app) == 1
    shots.check("plain-http-refused")

    form = page.locator("form", has=page.get_by_role("button", name="Add the endpoint"))
    form.locator("select[name=partner]").select_option(code)
    form.get_by_label("URL (https)").fill(f"https://{code}.example/hooks")
    form.locator("input[value='statement.closed']").check()
    form.get_by_role("button", name="Add the endpoint").click()
    expect(page.get_by_role("status")).to_contain_text("receives statement.closed from now on")
    assert _count(pg_app) == 2
    shots.check("added")

    # The disabled endpoint's log: its event, the 410, and enabling it with the box ticked.
    first = page.locator("tbody tr").first
    first.get_by_role("link").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("Webhook endpoint")
    log = page.locator("table tbody tr")
    expect(log).to_have_count(1)
    expect(log.first.locator("td[data-label='Last answer']")).to_have_text("410")
    page.get_by_label("Yes, enable the endpoint").check()
    page.get_by_role("button", name="Enable the endpoint").click()
    expect(page.get_by_role("status")).to_contain_text("is enabled")
    shots.check("enabled")

    page.locator("table tbody tr").first.get_by_role("button", name="Redeliver").click()
    expect(page.get_by_role("status")).to_contain_text("is due again")
    expect(page.locator("table tbody tr").first.locator("td[data-label=Status]")).to_contain_text("pending")
    shots.check("redelivered")

    disable = page.locator("details.confirm").first
    disable.locator("summary").click()
    disable.get_by_label("Reason", exact=False).fill(REASON)
    disable.get_by_label("Yes, disable the endpoint").check()
    disable.get_by_role("button", name="Disable the endpoint").click()
    expect(page.get_by_role("status")).to_contain_text("is disabled")
    expect(page.locator("dd").filter(has_text=REASON)).to_have_count(1)
    shots.check("disabled")
