"""The console's webhook pages for partner managers: every endpoint with the disabled ones first and their reason,
filtered by partner and status; an endpoint's delivery log paged with a redeliver button per event; add, disable
(confirmed, with a reason) and enable; every refusal shown and nothing changed, every change audited."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select

from alliance.extensions import HubState, hub_state
from alliance.models import AuditLogEntry, Partner, WebhookDelivery, WebhookEndpoint
from alliance.services import webhooks
from tests.console_support import ConsoleClient, signed_in, text_of
from tests.factories import make_partner


def _counts(hub: HubState) -> tuple[int, int]:
    with hub.unit_of_work() as uow:
        return tuple(uow.session.scalar(select(func.count()).select_from(model)) or 0  # type: ignore[return-value]
                     for model in (WebhookEndpoint, AuditLogEntry))


def _flashed(browser: ConsoleClient, response) -> str:  # type: ignore[no-untyped-def]
    assert response.status_code == 303, response.get_data(as_text=True)
    return text_of(browser.client.get(response.headers["Location"]))


def _world(hub: HubState) -> tuple[int, int, list[str]]:
    """shop with an endpoint that failed thirty events, and bakery with one the hub disabled on a 410."""
    now = datetime.now(UTC)
    for code in ("shop", "bakery"):
        make_partner(hub, now=now - timedelta(days=1), code=code)
    with hub.unit_of_work() as uow:
        shop = webhooks.register_endpoint(uow.session, partner="shop", url="https://shop.example/hooks",
                                          event_types=["statement.closed"], actor="console:petra", now=now)
        bakery = webhooks.register_endpoint(uow.session, partner="bakery", url="https://bakery.example/hooks",
                                            event_types=["statement.paid"], actor="console:petra", now=now)
        ids = dict(uow.session.execute(select(Partner.code, Partner.id)).all())
        events = [webhooks.emit(uow.session, event_type="statement.closed", partner_id=ids["shop"], now=now,
                                data={"statement_id": number}) for number in range(30)]
        webhooks.emit(uow.session, event_type="statement.paid", partner_id=ids["bakery"], now=now,
                      data={"statement_id": 1})
        for due in webhooks.lease_due(uow.session, now=now, holder="test", limit=100, lease=timedelta(minutes=1)):
            webhooks.record_attempt(uow.session, delivery_id=due.delivery_id, now=now, duration_ms=120,
                                    status_code=410 if due.endpoint_id == bakery.id else 503, error="down")
        uow.commit()
    return shop.id, bakery.id, [event for event in events if event is not None]


def test_the_webhooks_page_lists_the_disabled_first_with_their_reason_and_filters(app):
    hub = hub_state(app)
    shop_id, bakery_id, _ = _world(hub)
    manager = signed_in(app, "petra", "partner_manager")
    page = text_of(manager.get("/console/webhooks"))
    assert page.index(f"#{bakery_id}") < page.index(f"#{shop_id}")
    assert "the endpoint answered 410 Gone" in page
    only_shop = text_of(manager.get("/console/webhooks", partner="shop"))
    assert f"#{shop_id}" in only_shop and f"#{bakery_id}" not in only_shop
    active = text_of(manager.get("/console/webhooks", status="active"))
    assert f"#{shop_id}" in active and f"#{bakery_id}" not in active
    assert manager.get("/console/webhooks", status="sleeping").status_code == 400
    assert manager.get("/console/webhooks", partner="nobody").status_code == 400
    assert signed_in(app, "carl", "customer_service").get("/console/webhooks").status_code == 403
    assert signed_in(app, "fiona", "finance").get(f"/console/webhooks/{shop_id}").status_code == 403


def test_an_endpoint_page_pages_its_log_redelivers_disables_and_enables(app):
    hub = hub_state(app)
    shop_id, _, events = _world(hub)
    manager = signed_in(app, "petra", "partner_manager")
    first = text_of(manager.get(f"/console/webhooks/{shop_id}"))
    assert events[-1] in first and events[0] not in first and "503: down" in first and "120 ms" in first
    second = text_of(manager.get(f"/console/webhooks/{shop_id}", page=2))
    assert events[0] in second and events[-1] not in second

    redelivered = manager.post(f"/console/webhooks/{shop_id}/redeliver", {"event_id": events[0]})
    assert f"Event {events[0]} is due again" in _flashed(manager, redelivered)
    before = _counts(hub)
    unconfirmed = manager.post(f"/console/webhooks/{shop_id}/disable", {"reason": "moving"})
    assert unconfirmed.status_code == 400 and _counts(hub) == before
    disabled = manager.post(f"/console/webhooks/{shop_id}/disable", {"reason": "moving", "confirm": "yes"})
    assert "disabled" in _flashed(manager, disabled)
    with hub.unit_of_work() as uow:
        assert uow.session.scalar(select(func.count()).select_from(WebhookDelivery)
                                  .where(WebhookDelivery.status == "pending")) == 0
    again = manager.post(f"/console/webhooks/{shop_id}/disable", {"reason": "twice", "confirm": "yes"})
    assert "already disabled" in _flashed(manager, again)
    page = text_of(manager.get(f"/console/webhooks/{shop_id}"))
    assert "disabled" in page and "moving" in page and "enable first" in page
    enabled = manager.post(f"/console/webhooks/{shop_id}/enable", {"confirm": "yes"})
    assert "is enabled" in _flashed(manager, enabled)
    assert _counts(hub)[1] == before[1] + 2


def test_the_add_form_registers_an_endpoint_and_refuses_precisely(app):
    hub = hub_state(app)
    make_partner(hub, now=datetime.now(UTC) - timedelta(days=1), code="shop")
    manager = signed_in(app, "petra", "partner_manager")
    before = _counts(hub)
    plain = manager.post("/console/webhooks", {"partner": "shop", "url": "http://shop.example/hooks",
                                               "audience": "partner", "event_type": ["statement.closed"]})
    assert "https" in _flashed(manager, plain) and _counts(hub) == before
    mixed = manager.post("/console/webhooks", {"partner": "shop", "url": "https://shop.example/hooks",
                                               "audience": "partner", "event_type": ["member.tier_changed"]})
    assert "unknown event type" in _flashed(manager, mixed) and _counts(hub) == before
    none_ticked = manager.post("/console/webhooks", {"partner": "shop", "url": "https://shop.example/hooks",
                                                     "audience": "partner"})
    assert none_ticked.status_code == 400 and _counts(hub) == before
    added = manager.post("/console/webhooks", {"partner": "shop", "url": "https://shop.example/hooks",
                                               "audience": "partner",
                                               "event_type": ["statement.closed", "statement.paid"]})
    assert "receives statement.closed, statement.paid from now on" in _flashed(manager, added)
    assert _counts(hub) == (before[0] + 1, before[1] + 1)
