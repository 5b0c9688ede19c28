"""The whole topology up, one signed purchase through the load balancer, the audit green.

The cluster is the session's (``tests/cluster/conftest.py``: namespaces ``alliance-smoke-*``,
state in ``test-artifacts/cluster-alliance-smoke``), shared with the chaos scenario of
``test_cluster_chaos.py``, which also kills the primary's postmaster. Run them alone with
``pytest tests/cluster -m cluster``.
"""

from __future__ import annotations

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

