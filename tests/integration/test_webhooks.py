"""Webhooks at the service: endpoints, the outbox written with the change, leases shared by delivery processes,
each attempt's outcome (delivered, retried on the schedule honouring Retry-After, given up, 410 Gone), endpoints
disabled after sustained failure, redelivery and the delivery log."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta

import pytest

from alliance.domain import webhooks as rules
from alliance.domain.errors import Conflict, NotFound, ValidationFailed
from alliance.extensions import HubState
from alliance.services import webhooks
from tests.factories import make_partner

NOW = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
LEASE = timedelta(seconds=60)


def run(hub: HubState, operation, **arguments):  # type: ignore[no-untyped-def]
    with hub.unit_of_work() as uow:
        result = operation(uow.session, **arguments)
        uow.commit()
    return result


@pytest.fixture()
def shop(hub: HubState) -> dict[str, int]:
    shop_id = make_partner(hub, now=NOW - timedelta(days=1), code="shop")
    other_id = make_partner(hub, now=NOW - timedelta(days=1), code="other")
    endpoint = run(hub, webhooks.register_endpoint, partner="shop", url="https://shop.example/hooks",
                   event_types=["statement.closed", "reward_order.placed"], actor="console:pam", now=NOW)
    return {"shop": shop_id, "other": other_id, "endpoint": endpoint.id}


def emit(hub: HubState, partner_id: int, event_type: str = "statement.closed", now: datetime = NOW) -> str | None:
    return run(hub, webhooks.emit, event_type=event_type, partner_id=partner_id, data={"statement_id": 7}, now=now)


def test_an_event_goes_to_each_subscribed_endpoint_of_its_partner_and_nobody_else(hub, shop):
    run(hub, webhooks.register_endpoint, partner="shop", url="https://shop.example/other",
        event_types=["grade.published"], actor="console:pam", now=NOW)
    event_id = emit(hub, shop["shop"])
    assert event_id is not None and rules.EVENT_ID_PATTERN.match(event_id)
    assert emit(hub, shop["other"]) is None  # other has no endpoint: no event kept
    [due] = run(hub, webhooks.lease_due, now=NOW, holder="a", limit=10, lease=LEASE)
    assert (due.url, due.event_id, due.event_type, due.attempts) == ("https://shop.example/hooks", event_id,
                                                                     "statement.closed", 0)
    assert json.loads(due.body) == {"id": event_id, "type": "statement.closed", "created": "2026-11-02T09:00:00Z",
                                    "data": {"statement_id": 7}}
    # Leased: a second process finds nothing until the lease runs out, then takes it again.
    assert run(hub, webhooks.lease_due, now=NOW, holder="b", limit=10, lease=LEASE) == []
    [again] = run(hub, webhooks.lease_due, now=NOW + LEASE, holder="b", limit=10, lease=LEASE)
    assert again.delivery_id == due.delivery_id


def test_delivered_failed_retried_with_retry_after_and_given_up(hub, shop):
    emit(hub, shop["shop"])
    [due] = run(hub, webhooks.lease_due, now=NOW, holder="a", limit=10, lease=LEASE)
    outcome = run(hub, webhooks.record_attempt, delivery_id=due.delivery_id, now=NOW, duration_ms=12,
                  status_code=503, error="unavailable", retry_after=timedelta(minutes=10), rng=random.Random(1))
    assert outcome == "failed"
    [log] = run(hub, webhooks.delivery_log, endpoint_id=shop["endpoint"])
    assert (log.status, log.attempts, log.last_status_code) == ("pending", 1, 503)
    assert log.next_attempt_at == NOW + timedelta(minutes=10)  # Retry-After beats the 15-30 s of the schedule
    assert run(hub, webhooks.lease_due, now=NOW + timedelta(minutes=9), holder="a", limit=10, lease=LEASE) == []
    [due] = run(hub, webhooks.lease_due, now=NOW + timedelta(minutes=10), holder="a", limit=10, lease=LEASE)
    assert run(hub, webhooks.record_attempt, delivery_id=due.delivery_id, now=NOW + timedelta(minutes=10),
               duration_ms=30, status_code=204) == "delivered"
    [log] = run(hub, webhooks.delivery_log, endpoint_id=shop["endpoint"])
    assert (log.status, log.attempts, [attempt.status_code for attempt in log.tries]) == ("delivered", 2, [204, 503])
    # An event failing past the retry period is given up.
    emit(hub, shop["shop"], now=NOW + timedelta(hours=1))
    late = NOW + timedelta(hours=1) + rules.RETRY_PERIOD - timedelta(seconds=1)
    [due] = run(hub, webhooks.lease_due, now=late, holder="a", limit=10, lease=LEASE)
    run(hub, webhooks.record_attempt, delivery_id=due.delivery_id, now=late, duration_ms=5, status_code=None,
        error="connection refused")
    assert run(hub, webhooks.delivery_log, endpoint_id=shop["endpoint"])[0].status == "failed"


def test_410_disables_the_endpoint_and_cancels_what_waits_for_it(hub, shop):
    emit(hub, shop["shop"])
    emit(hub, shop["shop"], "reward_order.placed")
    first, second = run(hub, webhooks.lease_due, now=NOW, holder="a", limit=1, lease=LEASE) + [None]
    assert second is None
    assert run(hub, webhooks.record_attempt, delivery_id=first.delivery_id, now=NOW, duration_ms=3,
               status_code=410) == "gone"
    endpoint = run(hub, webhooks.endpoint_view, endpoint_id=shop["endpoint"])
    assert (endpoint.status, endpoint.disabled_reason) == ("disabled", "the endpoint answered 410 Gone")
    assert {log.status for log in run(hub, webhooks.delivery_log, endpoint_id=shop["endpoint"])} == {"cancelled"}
    assert emit(hub, shop["shop"]) is None  # a disabled endpoint receives nothing new
    run(hub, webhooks.enable_endpoint, endpoint_id=shop["endpoint"], actor="console:pam", now=NOW)
    assert run(hub, webhooks.redeliver, event_id=first.event_id, actor="console:pam", now=NOW) == 1
    [due] = run(hub, webhooks.lease_due, now=NOW, holder="a", limit=10, lease=LEASE)
    assert due.event_id == first.event_id


def test_an_endpoint_failing_for_three_days_is_disabled(hub, shop):
    at = NOW
    while run(hub, webhooks.endpoint_view, endpoint_id=shop["endpoint"]).status == "active":
        emit(hub, shop["shop"], now=at)
        for due in run(hub, webhooks.lease_due, now=at, holder="a", limit=50, lease=LEASE):
            run(hub, webhooks.record_attempt, delivery_id=due.delivery_id, now=at, duration_ms=1, status_code=500)
        at += timedelta(hours=12)
    assert at - NOW == rules.DISABLE_AFTER + timedelta(hours=12)
    assert "every delivery failed since" in run(hub, webhooks.endpoint_view,
                                                endpoint_id=shop["endpoint"]).disabled_reason


def test_endpoints_are_checked_and_a_partner_sees_only_its_own(hub, shop):
    for url in ("http://shop.example/hooks", "ftp://x", "https://user:pw@shop.example/", "", "https://"):
        with pytest.raises(ValidationFailed):
            run(hub, webhooks.register_endpoint, partner="shop", url=url, event_types=["statement.closed"],
                actor="console:pam", now=NOW)
    for types in ([], ["nothing.happened"], ["member.tier_changed"]):
        with pytest.raises(ValidationFailed):
            run(hub, webhooks.register_endpoint, partner="shop", url="https://shop.example/new", event_types=types,
                actor="console:pam", now=NOW)
    with pytest.raises(Conflict):
        run(hub, webhooks.register_endpoint, partner="shop", url="https://shop.example/hooks",
            event_types=["statement.closed"], actor="console:pam", now=NOW)
    local = run(hub, webhooks.register_endpoint, partner="shop", url="http://127.0.0.1:8080/hooks",
                event_types=["statement.closed"], actor="console:pam", now=NOW)
    assert local.url == "http://127.0.0.1:8080/hooks"
    with pytest.raises(NotFound):
        run(hub, webhooks.endpoint_view, endpoint_id=shop["endpoint"], partner_id=shop["other"])


def test_the_retry_schedule_doubles_with_jitter_and_ends_with_the_period():
    rng = random.Random(3)
    delays = [rules.retry_delay(attempt, rng=rng) for attempt in range(1, 14)]
    for attempt, delay in enumerate(delays, start=1):
        ceiling = min(rules.MAX_RETRY_DELAY, rules.FIRST_RETRY * 2 ** (attempt - 1))
        assert ceiling / 2 <= delay <= ceiling
    assert rules.parse_retry_after("120", now=NOW) == timedelta(seconds=120)
    assert rules.parse_retry_after("Mon, 02 Nov 2026 09:05:00 GMT", now=NOW) == timedelta(minutes=5)
    assert rules.parse_retry_after("soon", now=NOW) is None
    assert rules.next_attempt_at(failed_attempts=1, now=NOW + rules.RETRY_PERIOD, event_created_at=NOW) is None
