"""The settings of a hub in a cluster: pooling mode, connect timeout, migration and replica URLs, replica lag."""

import pytest

from alliance.config import Settings
from alliance.domain.errors import ConfigurationError


def test_a_hub_behind_pgbouncer_reads_its_cluster_settings():
    settings = Settings.from_env({
        "ALLIANCE_DATABASE_URL": "postgresql://hub@127.0.0.1:6432/alliance",
        "ALLIANCE_DATABASE_POOLING": "transaction",
        "ALLIANCE_DATABASE_CONNECT_TIMEOUT_S": "3",
        "ALLIANCE_MIGRATION_DATABASE_URL": "postgresql://hub@db-primary:5000/alliance",
        "ALLIANCE_REPLICA_DATABASE_URL": "postgresql://hub@127.0.0.1:6433/alliance",
        "ALLIANCE_REPLICA_MAX_LAG_S": "2",
    })
    assert (settings.database_pooling, settings.database_connect_timeout_s, settings.replica_max_lag_s) == (
        "transaction", 3, 2)
    assert settings.migration_database_url == "postgresql://hub@db-primary:5000/alliance"
    assert settings.replica_database_url == "postgresql://hub@127.0.0.1:6433/alliance"


def test_by_default_the_hub_has_its_own_sessions_and_no_replica():
    settings = Settings.from_env({})
    assert (settings.database_pooling, settings.database_connect_timeout_s) == ("session", 5)
    assert (settings.migration_database_url, settings.replica_database_url, settings.replica_max_lag_s) == (
        None, None, 5)


@pytest.mark.parametrize(("variables", "message"), [
    ({"ALLIANCE_DATABASE_POOLING": "statement"}, "session or transaction"),
    ({"ALLIANCE_DATABASE_CONNECT_TIMEOUT_S": "0"}, "positive"),
    ({"ALLIANCE_DATABASE_URL": "postgresql://x/y", "ALLIANCE_REPLICA_MAX_LAG_S": "-1"}, "must not be negative"),
    ({"ALLIANCE_REPLICA_DATABASE_URL": "postgresql://replica/y"}, "need ALLIANCE_DATABASE_URL"),
    ({"ALLIANCE_MIGRATION_DATABASE_URL": "postgresql://primary/y"}, "need ALLIANCE_DATABASE_URL"),
])
def test_a_topology_that_cannot_work_is_refused_at_start(variables, message):
    with pytest.raises(ConfigurationError, match=message):
        Settings.from_env(variables)
