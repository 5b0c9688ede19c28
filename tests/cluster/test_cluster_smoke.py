"""The whole topology up, one signed purchase through the load balancer, the audit green, Prometheus scraping it.

The cluster is the session's (``tests/cluster/conftest.py``: namespaces ``alliance-smoke-*``,
state in ``test-artifacts/cluster-alliance-smoke``), shared with the chaos scenario of
``test_cluster_chaos.py``, which also kills the primary's postmaster. Run them alone with
``pytest tests/cluster -m cluster``.
"""

from __future__ import annotations

import json
import time
import urllib.parse
import urllib.request
import uuid

import pytest

from deploy.cluster import Cluster
from partners_sdk import AllianceClient, load_private_key

pytestmark = pytest.mark.cluster

PARTNER_KEY = "cafe-aurora-key-1"
DEMO_CARD = "6390000000000013"


def test_signed_purchase_through_the_load_balancer_and_the_audit(cluster: Cluster) -> None:
    members = {member["name"]: member["role"] for member in cluster.members()}
    assert sorted(members.values()) == ["leader", "replica", "sync_standby"]
    servers = cluster.haproxy_servers()
    assert all(servers[f"hubs/{hub.name}"]["status"] == "UP" for hub in cluster.topology.hubs)
    assert [name for name, row in servers.items() if name.startswith("postgres_primary/") and row["status"] == "UP"] \
        == [f"postgres_primary/{cluster.primary()}"]

    private_key = load_private_key(cluster.demo_keys / f"{PARTNER_KEY}.pem")
    receipt = f"smoke-{uuid.uuid4().hex[:12]}"

    def purchase():  # type: ignore[no-untyped-def]
        # Inside the client host's namespace: a till on the cluster's network, going through HAProxy.
        client = AllianceClient(cluster.lb_url, PARTNER_KEY, private_key)
        reported = client.report_purchase(receipt_id=receipt, card_number=DEMO_CARD, amount_minor=4200,
                                          currency="EUR")
        return reported, client.get_purchase(receipt)

    reported, fetched = cluster.in_client(purchase, timeout=60)
    assert reported.receipt_id == fetched.receipt_id == receipt
    assert reported.amount_minor == 4200 and reported.points.total > 0
    assert fetched.points.total == reported.points.total

    # A person on this machine reaches the same load balancer through the 127.0.0.1 forwarder.
    with urllib.request.urlopen(f"{cluster.forward_url}/readyz", timeout=10) as response:
        assert response.status == 200

    audit = cluster.alliance(["audit"])
    assert "audit passed" in audit.stdout, audit.stdout[-3000:]



def test_prometheus_scrapes_every_hub_scheduler_and_patroni(cluster: Cluster) -> None:
    hubs = {hub.name for hub in cluster.topology.hubs}
    # The chaos scenario shares this cluster and, when it runs first, stops the schedulers
    # for its settlement closing: start them again, as `systemctl start` would.
    for hub in hubs:
        cluster.start(hub, "scheduler")
    targets = cluster.wait_prometheus_targets_up(timeout_s=60)
    scraped: dict[str, set[str]] = {}
    for target in targets:
        scraped.setdefault(target["job"], set()).add(target["host"])
    assert scraped == {"alliance-hub": hubs, "alliance-scheduler": hubs, "alliance-webhooks": hubs,
                       "patroni": {db.name for db in cluster.topology.dbs}}

    def query(expression: str) -> list[dict]:  # type: ignore[type-arg]
        status, body = cluster.http(f"{cluster.prometheus_url}/api/v1/query?"
                                    + urllib.parse.urlencode({"query": expression}), timeout_s=5)
        assert status == 200, body
        return json.loads(body)["data"]["result"]

    # The hub's "job" label (the scheduled job) survives the scrape, on every hub host.
    intervals = query('alliance_job_interval_seconds{job="expire-holds"}')
    assert {row["metric"]["host"] for row in intervals} == hubs
    assert {row["value"][1] for row in intervals} == {"60"}
    # The ledger's postings, counted by gunicorn's workers, added up and scraped (the purchase above,
    # or the chaos scenario's load: at least one posting since the hubs started).
    deadline = time.monotonic() + 40
    while not query('sum(alliance_ledger_postings_total{job="alliance-hub"}) > 0'):
        assert time.monotonic() < deadline, "no ledger posting reached Prometheus"
        time.sleep(2)
    # The rules are loaded and every one evaluates without error.
    status, body = cluster.http(f"{cluster.prometheus_url}/api/v1/rules", timeout_s=5)
    (group,) = json.loads(body)["data"]["groups"]
    assert group["name"] == "alliance" and len(group["rules"]) > 10
    assert all(rule["health"] == "ok" for rule in group["rules"])


def test_metrics_are_served_to_prometheus_only(cluster: Cluster) -> None:
    hub = cluster.topology.hubs[0]
    direct = f"http://{hub.address}:{cluster.topology.ports.hub}/metrics"
    token = cluster.hub_environment(hub.name)["ALLIANCE_METRICS_TOKEN"]
    status, body = cluster.http(direct, headers={"Authorization": f"Bearer {token}"}, from_host="lb")
    assert status == 200 and b"alliance_http_request_duration_seconds_bucket" in body
    assert cluster.http(direct, from_host="lb")[0] == 401
    # Through the load balancer, with the token or without, /metrics does not exist.
    for path in ("/metrics", "/%6Detrics"):
        status, body = cluster.http(f"{cluster.lb_url}{path}", headers={"Authorization": f"Bearer {token}"})
        assert status == 404 and json.loads(body)["code"] == "not_found", path
