"""Webhook endpoints through the back office, the signed partner API and the SDK: register, read, change,
disable and enable, the delivery log with its attempts, redelivery; another partner's endpoint or event is
404; refusals are problem+json and change nothing."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import func, select

from alliance.api.openapi import WEBHOOKS_EXTENSION
from alliance.domain.webhooks import DATA_FIELDS, EVENT_TYPES
from alliance.extensions import hub_state
from alliance.models import WebhookEndpoint
from alliance.services import webhooks
from partners_sdk import AllianceClient, InvalidRequestError, NotFoundError
from tests.back_office_support import BackOffice, audit_count, run_cli
from tests.factories import make_signing_partner
from tests.http_server import wall_clock_partner_time
from tests.partner_client import SignedTestClient
from tests.sdk_support import serve_in_thread

PARTNER_API = "/partner/v1"
PROBLEM = "application/problem+json"


def _emit(hub: Any, partner_id: int, *, failed: bool = False) -> str:
    """A statement.closed event for the partner, tried once (and failed with a 503 when ``failed``)."""
    now = datetime.now(timezone.utc)
    with hub.unit_of_work() as uow:
        event_id = webhooks.emit(uow.session, event_type="statement.closed", partner_id=partner_id, now=now,
                                 data={"statement_id": 7, "net_minor": 1200, "currency": "EUR"})
        for due in webhooks.lease_due(uow.session, now=now, holder="test", limit=10, lease=timedelta(minutes=1)):
            webhooks.record_attempt(uow.session, delivery_id=due.delivery_id, now=now, duration_ms=42,
                                    status_code=503 if failed else 204, error="busy" if failed else None)
        uow.commit()
    assert event_id is not None
    return event_id


def _endpoint_count(hub: Any) -> int:
    with hub.unit_of_work() as uow:
        return uow.session.scalar(select(func.count()).select_from(WebhookEndpoint)) or 0


def test_the_back_office_registers_disables_enables_reads_the_log_and_redelivers(app):
    bo = BackOffice(app)
    shop = make_signing_partner(bo.hub, now=wall_clock_partner_time(), code="shop")
    made = bo.post("/partners/shop/webhook-endpoints", {"url": "https://shop.example/hooks",
                                                        "event_types": ["statement.closed", "statement.paid"],
                                                        "description": "finance system"}, role="partner_manager")
    assert made.status == 201, made.body
    endpoint_id = made.body["id"]
    assert (made.body["partner"], made.body["audience"], made.body["status"]) == ("shop", "partner", "active")
    assert made.body["event_types"] == ["statement.closed", "statement.paid"]
    event_id = _emit(bo.hub, shop.partner_id, failed=True)

    log = bo.get(f"/webhook-endpoints/{endpoint_id}/deliveries", role="admin", query={"limit": "5"})
    assert log.status == 200, log.body
    [delivery] = log.body["deliveries"]
    assert (delivery["event_id"], delivery["status"], delivery["attempts"], delivery["last_status_code"]) == (
        event_id, "pending", 1, 503)
    assert [(attempt["status_code"], attempt["duration_ms"]) for attempt in delivery["tries"]] == [(503, 42)]
    shown = bo.get(f"/webhook-endpoints/{endpoint_id}", role="partner_manager")
    assert shown.body["failing_since"] is not None

    changed = bo.patch(f"/webhook-endpoints/{endpoint_id}", {"event_types": ["statement.closed"]},
                       role="partner_manager")
    assert (changed.status, changed.body["event_types"]) == (200, ["statement.closed"])
    disabled = bo.post(f"/webhook-endpoints/{endpoint_id}/disabling", {"reason": "receiver moved"},
                       role="partner_manager")
    assert (disabled.body["status"], disabled.body["disabled_reason"]) == ("disabled", "receiver moved")
    entries = audit_count(bo.hub)
    again = bo.post(f"/webhook-endpoints/{endpoint_id}/disabling", {"reason": "twice"}, role="partner_manager")
    assert (again.status, again.code) == (409, "invalid_state")
    not_sent = bo.post(f"/webhook-events/{event_id}/redelivery", {}, role="partner_manager")
    assert (not_sent.status, not_sent.code) == (409, "invalid_state")
    assert audit_count(bo.hub) == entries
    enabled = bo.post(f"/webhook-endpoints/{endpoint_id}/enabling", None, role="admin")
    assert (enabled.status, enabled.body["status"], enabled.body["failing_since"]) == (200, "active", None)
    redelivered = bo.post(f"/webhook-events/{event_id}/redelivery", {"endpoint_id": endpoint_id},
                          role="partner_manager")
    assert redelivered.status == 200 and redelivered.body == {"event_id": event_id, "deliveries": 1}
    listed = bo.get("/partners/shop/webhook-endpoints", role="partner_manager")
    assert [endpoint["id"] for endpoint in listed.body["endpoints"]] == [endpoint_id]


def test_the_back_office_refuses_bad_endpoints_precisely_and_keeps_nothing(app):
    bo = BackOffice(app)
    make_signing_partner(bo.hub, now=wall_clock_partner_time(), code="shop")
    entries = audit_count(bo.hub)
    plain = bo.post("/partners/shop/webhook-endpoints", {"url": "http://shop.example/hooks",
                                                         "event_types": ["statement.closed"]}, role="partner_manager")
    assert (plain.status, plain.code) == (422, "validation_failed")
    assert plain.headers["Content-Type"].startswith(PROBLEM)
    wrong_audience = bo.post("/partners/shop/webhook-endpoints", {
        "url": "https://shop.example/hooks", "event_types": ["member.tier_changed"]}, role="partner_manager")
    assert (wrong_audience.status, wrong_audience.code) == (422, "validation_failed")
    unknown_type = bo.post("/partners/shop/webhook-endpoints", {
        "url": "https://shop.example/hooks", "event_types": ["statement.lost"]}, role="partner_manager")
    assert unknown_type.status == 422 and "event_types" in unknown_type.body["errors"]
    nobody = bo.post("/partners/nobody/webhook-endpoints", {
        "url": "https://shop.example/hooks", "event_types": ["statement.closed"]}, role="partner_manager")
    assert (nobody.status, nobody.code) == (404, "not_found")
    assert bo.get("/webhook-endpoints/999", role="admin").code == "not_found"
    assert bo.post("/webhook-events/evt_unknown/redelivery", {}, role="admin").code == "not_found"
    member_hooks = bo.post("/partners/shop/webhook-endpoints", {
        "url": "https://messages.example/hooks", "event_types": ["member.tier_changed"], "audience": "member"},
        role="admin")
    assert (member_hooks.status, member_hooks.body["audience"]) == (201, "member")
    assert _endpoint_count(bo.hub) == 1 and audit_count(bo.hub) == entries + 1


def test_a_partner_keeps_its_own_endpoints_and_never_sees_another_partners(app):
    hub = hub_state(app)
    created = wall_clock_partner_time()
    shop, other = (make_signing_partner(hub, now=created, code=code) for code in ("shop", "other"))
    shop_api, other_api = SignedTestClient(app, shop), SignedTestClient(app, other)
    made = shop_api.post(f"{PARTNER_API}/webhook-endpoints", {"url": "https://shop.example/hooks",
                                                              "event_types": ["statement.closed"]})
    assert made.status == 201, made.body
    endpoint_id = made.body["id"]
    with hub.unit_of_work() as uow:
        member_hooks = webhooks.register_endpoint(uow.session, partner="shop", url="https://shop.example/members",
                                                  event_types=["member.tier_changed"], audience="member",
                                                  actor="client:someone", now=created)
        uow.commit()
    event_id = _emit(hub, shop.partner_id)
    listed = shop_api.get(f"{PARTNER_API}/webhook-endpoints")
    assert [endpoint["id"] for endpoint in listed.body["endpoints"]] == [endpoint_id]
    log = shop_api.get(f"{PARTNER_API}/webhook-endpoints/{endpoint_id}/deliveries")
    assert [(delivery["event_id"], delivery["status"]) for delivery in log.body["deliveries"]] == [
        (event_id, "delivered")]
    member_types = shop_api.post(f"{PARTNER_API}/webhook-endpoints", {"url": "https://shop.example/x",
                                                                      "event_types": ["member.points_earned"]})
    assert (member_types.status, member_types.body["code"]) == (422, "validation_failed")

    for path in (f"/webhook-endpoints/{endpoint_id}", f"/webhook-endpoints/{endpoint_id}/deliveries",
                 f"/webhook-endpoints/{member_hooks.id}"):
        foreign = (other_api if member_hooks.id not in (int(part) for part in path.split("/") if part.isdigit())
                   else shop_api).get(PARTNER_API + path)
        assert (foreign.status, foreign.body["code"]) == (404, "not_found"), path
    disabling = other_api.post(f"{PARTNER_API}/webhook-endpoints/{endpoint_id}/disabling", {"reason": "mine"})
    redelivery = other_api.post(f"{PARTNER_API}/webhook-events/{event_id}/redelivery", {})
    assert (disabling.status, redelivery.status) == (404, 404)
    disabled = shop_api.post(f"{PARTNER_API}/webhook-endpoints/{endpoint_id}/disabling", {"reason": "maintenance"})
    assert (disabled.status, disabled.body["status"]) == (200, "disabled")
    enabled = shop_api.post(f"{PARTNER_API}/webhook-endpoints/{endpoint_id}/enabling", b"")
    assert (enabled.status, enabled.body["status"]) == (200, "active")
    redelivered = shop_api.post(f"{PARTNER_API}/webhook-events/{event_id}/redelivery", {})
    assert (redelivered.status, redelivered.body["deliveries"]) == (200, 1)


def test_the_sdk_keeps_endpoints_through_the_signed_api(pg_app):
    hub = hub_state(pg_app)
    shop = make_signing_partner(hub, now=wall_clock_partner_time(), code="shop")
    with serve_in_thread(pg_app) as base_url:
        client = AllianceClient(base_url, shop.key_id, shop.private_key, timeout_s=10)
        endpoint = client.register_webhook_endpoint("https://shop.example/hooks", ["statement.closed"],
                                                     description="finance")
        assert (endpoint.status, endpoint.event_types, endpoint.description) == (
            "active", ("statement.closed",), "finance")
        assert [found.id for found in client.webhook_endpoints()] == [endpoint.id]
        changed = client.change_webhook_endpoint(endpoint.id, event_types=["statement.closed", "key.expiring"])
        assert changed.event_types == ("key.expiring", "statement.closed")
        event_id = _emit(hub, shop.partner_id, failed=True)
        [delivery] = client.webhook_deliveries(endpoint.id)
        assert (delivery.event_id, delivery.attempts, delivery.tries[0].status_code) == (event_id, 1, 503)
        assert client.disable_webhook_endpoint(endpoint.id, "maintenance").status == "disabled"
        assert client.enable_webhook_endpoint(endpoint.id).status == "active"
        assert client.redeliver_webhook_event(event_id, endpoint.id) == 1
        try:
            client.register_webhook_endpoint("https://shop.example/x", ["member.tier_changed"])
        except InvalidRequestError as refused:
            assert "event_types" in str(refused)
        else:
            raise AssertionError("a member event type is refused before anything is sent")
        try:
            client.webhook_deliveries(endpoint.id + 1000)
        except NotFoundError:
            pass
        else:
            raise AssertionError("an unknown endpoint is not found")
    assert _endpoint_count(hub) == 1


def test_the_openapi_document_describes_every_event_type_under_x_webhooks(app):
    spec = app.test_client().get("/openapi.json").get_json()
    section = spec[WEBHOOKS_EXTENSION]
    assert set(section) == set(EVENT_TYPES)
    for name, item in section.items():
        schema = item["post"]["requestBody"]["content"]["application/json"]["schema"]
        assert schema["properties"]["type"]["enum"] == [name]
        assert set(schema["properties"]["data"]["properties"]) == {field.name for field in DATA_FIELDS[name]}


def test_the_cli_adds_lists_disables_enables_shows_the_log_and_redelivers(app):
    hub = hub_state(app)
    shop = make_signing_partner(hub, now=wall_clock_partner_time(), code="shop")
    added = run_cli(app, "webhooks", "endpoints", "add", "--partner", "shop", "--url", "https://shop.example/hooks",
                    "--event", "statement.closed", "--event", "statement.paid")
    assert added.exit_code == 0, added.output
    endpoint_id = added.output.split("\t")[0]
    refused = run_cli(app, "webhooks", "endpoints", "add", "--partner", "shop", "--url", "http://shop.example/x",
                      "--event", "statement.closed")
    assert refused.exit_code == 1 and "https" in refused.output
    event_id = _emit(hub, shop.partner_id, failed=True)
    log = run_cli(app, "webhooks", "log", "--endpoint", endpoint_id)
    assert log.exit_code == 0 and f"{event_id}\tstatement.closed\tpending\t1 attempts\tlast 503 in 42 ms" in log.output
    disabled = run_cli(app, "webhooks", "endpoints", "disable", endpoint_id, "--reason", "receiver moved")
    assert "disabled (receiver moved)" in disabled.output
    listed = run_cli(app, "webhooks", "endpoints", "list", "--status", "disabled")
    assert listed.output.startswith(f"{endpoint_id}\tshop\tpartner\tdisabled (receiver moved)")
    not_sent = run_cli(app, "webhooks", "redeliver", event_id)
    assert not_sent.exit_code == 1 and "no delivery to an active endpoint" in not_sent.output
    assert run_cli(app, "webhooks", "endpoints", "enable", endpoint_id).exit_code == 0
    shown = run_cli(app, "webhooks", "endpoints", "show", endpoint_id)
    assert "status: active" in shown.output and "failing since: -" in shown.output
    redelivered = run_cli(app, "webhooks", "redeliver", event_id)
    assert redelivered.output == f"{event_id}: 1 delivery due again\n"
