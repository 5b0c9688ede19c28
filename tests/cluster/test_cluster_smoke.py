"""The whole topology up, one signed purchase through the load balancer, the audit green, all down again.

A cluster of its own (namespaces ``alliance-smoke-*``, state in
``test-artifacts/cluster-alliance-smoke``), so it never meets one `make cluster` started.
About a minute and a half on two cores. Run it alone with ``pytest tests/cluster -m cluster``.
"""

from __future__ import annotations

import time
import urllib.request
import uuid
from typing import Iterator

import pytest

from deploy import netns
from deploy.cluster import Cluster
from partners_sdk import AllianceClient, load_private_key
from tests.cluster.conftest import cluster_unavailable

pytestmark = pytest.mark.cluster

PREFIX = "alliance-smoke"
PARTNER_KEY = "cafe-aurora-key-1"
DEMO_CARD = "6390000000000013"


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    reason = cluster_unavailable()
    if reason:
        pytest.skip(f"cannot start the cluster here: {reason}")
    cluster = Cluster(prefix=PREFIX, forward_port=0)
    if cluster.exists():
        cluster.down(echo=lambda line: None)  # what an interrupted run left
    try:
        cluster.up(echo=lambda line: print(line, flush=True))
        yield cluster
    finally:
        cluster.down(echo=lambda line: None)
        assert not netns.names(PREFIX), "the cluster's namespaces outlived it"
        assert not cluster.state_dir.exists()


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


def test_the_hub_tier_serves_through_a_failover(cluster: Cluster) -> None:
    """The primary's postmaster killed: Patroni promotes the synchronous standby well within 30 s."""
    old = cluster.primary()
    standby = cluster.sync_standby()
    killed_at = time.monotonic()
    cluster.kill_postmaster()
    new = cluster.wait_for_primary(other_than=old, timeout_s=30)
    assert new == standby
    cluster.wait_lb_routes_primary(timeout_s=30)
    recovery_s = time.monotonic() - killed_at
    assert recovery_s < 30

    private_key = load_private_key(cluster.demo_keys / f"{PARTNER_KEY}.pem")

    def purchase():  # type: ignore[no-untyped-def]
        client = AllianceClient(cluster.lb_url, PARTNER_KEY, private_key, deadline_s=20, max_retries=8)
        return client.report_purchase(receipt_id=f"smoke-{uuid.uuid4().hex[:12]}", card_number=DEMO_CARD,
                                      amount_minor=1000, currency="EUR")

    assert cluster.in_client(purchase, timeout=60).points.total > 0
    print(f"failover: {old} -> {new}, HAProxy routing to it {recovery_s:.1f} s after the kill")
