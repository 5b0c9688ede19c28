"""The rendered configuration, checked by reading it back and by HAProxy (no root, no cluster needed).

(``patroni --validate-config`` is left out: it probes the listen addresses, which exist
only inside the cluster's namespaces; the cluster smoke test shows Patroni takes the file.)
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from deploy.cluster import write_self_signed_certificate
from deploy.render import Layout, RenderedFile, environment_value, hub_settings, read_environment_file, render_host
from deploy.secrets import Secrets, scram_sha_256_verifier
from deploy.topology import Topology

SECRETS = Secrets(
    superuser_password="su-pass", replication_password="repl-pass", rewind_password="rewind-pass",
    restapi_password="api-pass", app_password="app-pass", secret_key="secret-key",
    pii_keys="active=k1;k1=AAAA;lookup=BBBB", pin_keys="active=p1;p1=CCCC",
    statement_key="-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIDiJ3ROGhf4OSuqyDpI7wtQEQAmbkJ1a8dWfCf4AbB6Y\n"
                  "-----END PRIVATE KEY-----\n",
)


def rendered(tmp_path: Path) -> dict[str, dict[str, RenderedFile]]:
    """Every host's files for real hosts (paths under /), by host and file name."""
    topology = Topology.local()
    layout = Layout(tls_pem=str(tmp_path / "alliance.pem"))
    return {host.name: {Path(item.path).name: item for item in render_host(topology, host, layout, SECRETS)}
            for host in topology.hosts}


def test_patroni_timings_keep_the_rule_and_the_recovery_objective(tmp_path: Path) -> None:
    text = rendered(tmp_path)["db1"]["config.yml"].content

    def value(name: str) -> int:
        return int(re.search(rf"^    {name}: (\d+)$", text, re.M).group(1))  # type: ignore[union-attr]

    ttl, loop_wait, retry_timeout = value("ttl"), value("loop_wait"), value("retry_timeout")
    assert loop_wait + 2 * retry_timeout <= ttl
    # A dead primary's key expires after ttl; etcd may first need an election (up to 4 s) and
    # promotion plus HAProxy take a few seconds more: all within the 30 s objective.
    assert ttl + 4 + 5 < 30
    assert value("master_start_timeout") == 0
    assert "synchronous_mode: true" in text and "archive_mode: 'on'" in text


def test_haproxy_accepts_its_configuration(tmp_path: Path) -> None:
    if shutil.which("haproxy") is None:
        pytest.skip("haproxy is not installed (make cluster installs it)")
    write_self_signed_certificate(tmp_path / "alliance.pem", ["10.77.0.10"], "test")
    config = tmp_path / "haproxy.cfg"
    config.write_text(rendered(tmp_path)["lb"]["haproxy.cfg"].content)
    result = subprocess.run(["haproxy", "-c", "-f", str(config)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    text = config.read_text()
    assert "option httpchk GET /readyz" in text
    assert text.count("check port 8008") == 6


def test_every_hub_host_gets_the_same_settings_and_a_pgbouncer_in_front(tmp_path: Path) -> None:
    hosts = rendered(tmp_path)
    environments = [read_environment_file(hosts[name]["hub.env"].content) for name in ("hub1", "hub2", "hub3")]
    assert environments[0]["ALLIANCE_INSTANCE_PATH"] == "/var/lib/alliance"
    assert environments[0] == environments[1] == environments[2]
    settings = environments[0]
    assert settings["ALLIANCE_ENVIRONMENT"] == "production"
    assert settings["ALLIANCE_STATEMENT_KEY"] == SECRETS.statement_key
    assert settings["ALLIANCE_DATABASE_URL"] == "postgresql://alliance:app-pass@127.0.0.1:6432/alliance"
    assert settings["ALLIANCE_PROXY_HOPS"] == "1"
    ini = hosts["hub2"]["pgbouncer.ini"].content
    assert "alliance = host=10.77.0.10 port=5000 dbname=alliance" in ini
    assert re.search(r"^pool_mode = transaction$", ini, re.M)
    unit = hosts["hub2"]["alliance-hub.service"].content
    assert "--bind 10.77.0.22:8000" in unit and "alliance.wsgi:app" in unit


def test_environment_values_survive_quoting() -> None:
    for value in ("plain", 'with "quotes" and $dollars `ticks` \\ backslashes', "multi\nline\n"):
        assert read_environment_file(f"# comment\nNAME={environment_value(value)}\nOTHER=x\n") == {
            "NAME": value, "OTHER": "x"}


def test_scram_verifier_is_postgres_format() -> None:
    verifier = scram_sha_256_verifier("pencil", salt=b"0123456789abcdef", iterations=4096)
    assert re.fullmatch(r"SCRAM-SHA-256\$4096:[A-Za-z0-9+/=]+\$[A-Za-z0-9+/=]+:[A-Za-z0-9+/=]+", verifier)


def test_a_setting_the_hub_does_not_know_stops_the_rendering() -> None:
    topology = Topology.local()
    known = hub_settings() - {"ALLIANCE_DATABASE_POOLING"}
    with pytest.raises(ValueError, match="ALLIANCE_DATABASE_POOLING"):
        render_host(topology, topology.hubs[0], Layout(), SECRETS, known_settings=known)
