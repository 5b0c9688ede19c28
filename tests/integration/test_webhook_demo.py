"""Issue 27 end to end: ``alliance seed-demo --webhook-url`` registers the demo partners' endpoints, the history's
activity goes out through ``alliance webhooks deliver --once`` to a real HTTP receiver on 127.0.0.1, every request
verifies with the SDK against the keys a demo partner fetches from the hub, the deduplicator passes each event
once, and the back office's delivery log shows each delivery delivered with its status and latency.
"""

from __future__ import annotations

import re
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from sqlalchemy import select

from alliance.extensions import hub_state
from alliance.models import WebhookEvent
from alliance.services import webhooks
from alliance.services.demo import DEMO_KEYS_FOLDER
from partners_sdk import AllianceClient, WebhookDeduplicator
from tests.back_office_support import BackOffice, run_cli
from tests.integration.test_webhook_delivery import Receiver
from tests.sdk_support import serve_in_thread

PARTNER = "cafe-aurora"


def demo_key(app, key_id: str) -> Ed25519PrivateKey:  # type: ignore[no-untyped-def]
    """A demo partner's private key, from the folder seeding wrote it to."""
    key = load_pem_private_key((Path(app.instance_path) / DEMO_KEYS_FOLDER / f"{key_id}.pem").read_bytes(), None)
    assert isinstance(key, Ed25519PrivateKey)
    return key


@pytest.mark.parametrize("app", ["sqlite"], indirect=True)  # the demo's history is the slow part
def test_the_demos_activity_reaches_a_partners_endpoint_signed_and_shows_in_the_delivery_log(app):
    # Verified as each request arrives, against the keys the partner fetches before delivery starts.
    receiver = Receiver(lambda _path, _count: (204, 0, {}), {}, lambda: datetime.now(UTC)).start()
    try:
        seeded = run_cli(app, "seed-demo", "--webhook-url", receiver.url("/hooks"))
        assert seeded.exit_code == 0, seeded.output
        assert f"member messages (nova-mobile) to {receiver.url('/hooks/members')}" in seeded.output

        with serve_in_thread(app) as base_url:
            keys = AllianceClient(base_url, f"{PARTNER}-key-1", demo_key(app, f"{PARTNER}-key-1")).webhook_keys()
        assert keys
        receiver.keys.update(keys)

        for _ in range(5):  # everything is due at once (the history's events are dated in the past)
            delivered = run_cli(app, "webhooks", "deliver", "--once", "--batch", "200", "--timeout", "5")
            assert delivered.exit_code == 0, delivered.output
            if re.search(r"; 0 deliveries pending", delivered.output):
                break
        else:
            raise AssertionError(f"deliveries still pending: {delivered.output}")
    finally:
        receiver.stop()

    with hub_state(app).unit_of_work() as uow:
        events = {event_id: kind for event_id, kind
                  in uow.session.execute(select(WebhookEvent.event_id, WebhookEvent.type))}
        endpoints = {view.partner: view for view in webhooks.endpoints(uow.session)
                     if view.audience == "partner"}
    received = [item.event_id for item in receiver.received]
    assert all(item.verified for item in receiver.received), [
        item for item in receiver.received if not item.verified][:3]
    assert sorted(received) == sorted(events)  # every event, each once (one endpoint receives each)
    with WebhookDeduplicator() as seen:
        processed = [event_id for event_id in received if not seen.seen_before(str(event_id))]
    assert sorted(processed) == sorted(events)
    types = Counter(events.values())
    assert types["statement.closed"] and types["reward_order.placed"], types
    assert types["member.points_expiring"] or types["member.tier_changed"], types
    assert {item.path for item in receiver.received} == {"/hooks", "/hooks/members"}

    # The delivery log of Café Aurora's endpoint, as the back office reads it.
    endpoint = endpoints[PARTNER]
    log = BackOffice(app).get(f"/webhook-endpoints/{endpoint.id}/deliveries", role="admin",
                              query={"limit": "200"})
    assert log.status == 200, log.body
    deliveries = log.body["deliveries"]
    with hub_state(app).unit_of_work() as uow:
        expected = len(webhooks.delivery_log(uow.session, endpoint_id=endpoint.id, limit=200))
    assert 0 < len(deliveries) == expected
    assert {delivery["event_type"] for delivery in deliveries} >= {"statement.closed"}
    for delivery in deliveries:
        assert delivery["status"] == "delivered" and delivery["attempts"] == 1, delivery
        [attempt] = delivery["tries"]
        assert 200 <= attempt["status_code"] < 300 and attempt["outcome"] == "delivered", delivery
        assert isinstance(attempt["duration_ms"], int) and attempt["duration_ms"] >= 0, delivery
