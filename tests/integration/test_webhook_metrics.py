"""What operators see of webhook delivery: the outbox figures the hub's /metrics reads from the database
(deliveries pending, how long the longest-waiting due one has waited, disabled endpoints by partner), and the
delivery process's attempts by outcome, served by ``alliance webhooks deliver --metrics-address``.

Counters are process-wide, so each test compares a figure before and after what it does.
"""

from __future__ import annotations

import socket
import urllib.request
from datetime import UTC, datetime, timedelta
from typing import Mapping

from flask import Flask
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select

from alliance.domain.webhook_signing import WebhookSigner
from alliance.extensions import HubState
from alliance.models import Partner
from alliance.observability import metrics
from alliance.services import alliance_figures, webhooks
from alliance.services.webhook_delivery import Deliverer, Reply
from tests.back_office_support import run_cli
from tests.factories import make_partner

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)


def _outbox(hub: HubState) -> dict[str, int]:
    """shop and deli with an endpoint each and one event waiting; bakery's endpoint disabled by a 410."""
    for code in ("shop", "bakery", "deli"):
        make_partner(hub, now=T0 - timedelta(days=1), code=code)
    with hub.unit_of_work() as uow:
        ids = dict(uow.session.execute(select(Partner.code, Partner.id)).all())
        endpoints = {code: webhooks.register_endpoint(uow.session, partner=code, url=f"https://{code}.example/hooks",
                                                      event_types=["statement.closed"], actor="console:petra",
                                                      now=T0).id
                     for code in ("shop", "bakery", "deli")}
        for code in ("shop", "bakery", "deli"):
            webhooks.emit(uow.session, event_type="statement.closed", partner_id=ids[code], now=T0,
                          data={"statement_id": ids[code]})
        uow.commit()
    with hub.unit_of_work() as uow:
        (bakery,) = [due for due in webhooks.lease_due(uow.session, now=T0, holder="test", limit=10,
                                                       lease=timedelta(minutes=1))
                     if due.endpoint_id == endpoints["bakery"]]
        webhooks.record_attempt(uow.session, delivery_id=bakery.delivery_id, now=T0, duration_ms=40, status_code=410)
        uow.commit()
    return endpoints


def _figures(hub: HubState, now: datetime) -> metrics.WebhookFigures:
    with hub.unit_of_work() as uow:
        figures = alliance_figures.database_figures(uow.session, now=now, time_zone="Europe/Paris",
                                                    job_intervals_s={})
    assert figures.webhooks is not None
    return figures.webhooks


def test_the_outbox_figures_count_pending_deliveries_their_wait_past_due_and_disabled_endpoints(hub):
    _outbox(hub)
    # shop's and deli's deliveries are due at T0 (their leases ran out at T0 + 1 min): 20 minutes late.
    late = _figures(hub, T0 + timedelta(minutes=20))
    assert late.pending == 2 and late.backlog_age_s == 1200 and late.disabled_by_partner == {"bakery": 1}
    # Nothing due yet before T0: waiting, but not late.
    assert _figures(hub, T0 - timedelta(seconds=1)).backlog_age_s == 0
    # shop's receiver fails: its delivery waits for its retry, which is not a backlog; deli's still is.
    now = T0 + timedelta(minutes=20)
    with hub.unit_of_work() as uow:
        for due in webhooks.lease_due(uow.session, now=now, holder="test", limit=10, lease=timedelta(minutes=1)):
            webhooks.record_attempt(uow.session, delivery_id=due.delivery_id, now=now, duration_ms=40,
                                    status_code=503 if due.url.startswith("https://shop.") else 204)
        uow.commit()
    after = _figures(hub, now + timedelta(seconds=5))
    assert after.pending == 1 and after.backlog_age_s == 0 and after.disabled_by_partner == {"bakery": 1}


def test_the_collector_exposes_the_outbox_with_the_partner_of_each_disabled_endpoint(hub):
    endpoints = _outbox(hub)
    with hub.unit_of_work() as uow:
        webhooks.disable_endpoint(uow.session, endpoint_id=endpoints["deli"], reason="moving to a new receiver",
                                  actor="console:petra", now=T0 + timedelta(minutes=1))
        uow.commit()
    body, _ = metrics.exposition(lambda: _read(hub, T0 + timedelta(minutes=10)))
    samples = {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
               for family in text_string_to_metric_families(body.decode()) for sample in family.samples}
    # deli's pending delivery was cancelled with its endpoint: shop's alone waits, 10 minutes past due.
    assert samples[("alliance_webhook_deliveries_pending", ())] == 1
    assert samples[("alliance_webhook_backlog_age_seconds", ())] == 600
    disabled = {labels: count for (name, labels), count in samples.items()
                if name == "alliance_webhook_endpoints_disabled"}
    assert disabled == {(("partner", "bakery"),): 1, (("partner", "deli"),): 1}


def _read(hub: HubState, now: datetime) -> metrics.DatabaseFigures:
    with hub.unit_of_work() as uow:
        return alliance_figures.database_figures(uow.session, now=now, time_zone="Europe/Paris", job_intervals_s={})


def _counted(outcome: str) -> float:
    return REGISTRY.get_sample_value("alliance_webhook_deliveries_total", {"outcome": outcome}) or 0.0


def test_the_delivery_process_counts_its_attempts_by_outcome(hub):
    _outbox(hub)
    answers = {"shop": 503, "deli": 204}
    before = {outcome: _counted(outcome) for outcome in ("delivered", "failed", "gone")}

    def receiver(url: str, body: bytes, headers: Mapping[str, str], timeout_s: float, *,
                 allow_private: bool = False) -> Reply:
        status = answers[url.split("//")[1].split(".")[0]]
        return Reply(status_code=status, duration_ms=12, error=None if status < 300 else f"HTTP {status}")

    signer: WebhookSigner = hub.extras["webhook_signer"]  # type: ignore[assignment]
    deliverer = Deliverer(hub.session_factory, signer, holder="test:1", sender=receiver,
                          clock=lambda: T0 + timedelta(minutes=2))
    assert deliverer.run(once=True).attempts == 2
    assert _counted("delivered") == before["delivered"] + 1
    assert _counted("failed") == before["failed"] + 1
    assert _counted("gone") == before["gone"]
    assert deliverer.totals.outcomes == {"delivered": 1, "failed": 1}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_deliver_serves_its_metrics_on_the_address_given_and_refuses_a_bad_one(app: Flask, monkeypatch, tmp_path):
    port = _free_port()
    served = run_cli(app, "webhooks", "deliver", "--once", "--metrics-address", f"127.0.0.1:{port}")
    assert served.exit_code == 0, served.output
    assert "0 attempts" in served.output
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        exposition = reply.read().decode()
    assert "# TYPE alliance_webhook_deliveries_total counter" in exposition
    wrong = run_cli(app, "webhooks", "deliver", "--once", "--metrics-address", "localhost")
    assert wrong.exit_code == 2 and "'localhost' is not HOST:PORT" in wrong.output
    # Taken: the port just served is refused with the reason, not a traceback.
    taken = run_cli(app, "webhooks", "deliver", "--once", "--metrics-address", f"127.0.0.1:{port}")
    assert taken.exit_code == 1 and f"cannot serve metrics on 127.0.0.1:{port}" in taken.output
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    shared = run_cli(app, "webhooks", "deliver", "--once", "--metrics-address", f"127.0.0.1:{_free_port()}")
    assert shared.exit_code == 2 and "PROMETHEUS_MULTIPROC_DIR is for the hub's web workers" in shared.output
