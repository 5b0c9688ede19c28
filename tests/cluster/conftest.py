"""The cluster tests: the production topology of deploy/ started on this machine.

They need root, network namespaces (``ip netns``) and Debian's patroni, etcd, HAProxy,
PgBouncer and PostgreSQL 15 packages (``make cluster`` installs them); without those
they are skipped, saying why. Run them alone with ``pytest -m cluster`` or
``pytest tests/cluster``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from deploy import netns
from deploy.cluster import REQUIRED_PROGRAMS


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
        return f"Debian packages missing: {' '.join(missing)} (scripts/ensure-cluster-tools.sh or make cluster installs them)"
    return None
