"""The cluster tests: the production topology of deploy/ started on this machine.

They need root, network namespaces (``ip netns``) and Debian's patroni, etcd, HAProxy,
PgBouncer, PostgreSQL 15 and Prometheus packages (``make cluster`` installs them); without those
they are skipped, saying why. Run them alone with ``pytest -m cluster`` or
``pytest tests/cluster``.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Iterator

import pytest

from deploy import netns
from deploy.cluster import REQUIRED_PROGRAMS, Cluster

# A cluster of the tests' own, so they never meet one `make cluster` started.
PREFIX = "alliance-smoke"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "cluster: starts the multi-host topology of deploy/ in network namespaces "
                                       "(root; about a minute)")


def cluster_unavailable() -> str | None:
    """Why the cluster cannot start here, or None."""
    reason = netns.available()
    if reason:
        return reason
    missing = sorted({package for program, package in REQUIRED_PROGRAMS.items() if shutil.which(program) is None})
    if not Path("/usr/lib/postgresql/15/bin/postgres").exists():
        missing.append("postgresql-15")
    if missing:
        return (f"Debian packages missing: {' '.join(missing)} (scripts/ensure-cluster-tools.sh and "
                "scripts/ensure-prometheus.sh, or make cluster, install them)")
    return None


ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "cluster-logs"


def keep_logs(cluster: Cluster) -> None:
    """Copy every host's process logs to ``test-artifacts/cluster-logs/`` before the cluster is removed.

    The hubs' tracebacks, Patroni's decisions and HAProxy's request lines are what
    explains a failed chaos run after the fact.
    """
    if not cluster.log_dir.exists():
        return
    if ARTIFACTS.exists():
        shutil.rmtree(ARTIFACTS)
    shutil.copytree(cluster.log_dir, ARTIFACTS)


@pytest.fixture(scope="package")
def cluster() -> Iterator[Cluster]:
    """One cluster for the cluster tests (namespaces ``alliance-smoke-*``), removed after the last of them.

    Starting it takes about 20 s on two cores, so the smoke test and the chaos scenario
    share it rather than each starting their own; it is removed when this package's tests
    are done, not at the end of the session, so the rest of the suite runs without it.
    """
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
        keep_logs(cluster)
        cluster.down(echo=lambda line: None)
        assert not netns.names(PREFIX), "the cluster's namespaces outlived it"
        assert not cluster.state_dir.exists()
