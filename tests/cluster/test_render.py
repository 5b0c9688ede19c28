"""The rendered configuration, checked by reading it back, by HAProxy and by promtool (no cluster needed).

(``patroni --validate-config`` is left out: it probes the listen addresses, which exist
only inside the cluster's namespaces; the cluster smoke test shows Patroni takes the file.)
"""

from __future__ import annotations

import dataclasses
import http.client
import importlib.util
import ipaddress
import json
import os
import re
import shlex
import shutil
import socket
import stat
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from deploy.cluster import Cluster, write_self_signed_certificate
from deploy.render import (
    ALERT_RULES,
    Layout,
    RenderedFile,
    environment_value,
    host_directories,
    hub_settings,
    read_environment_file,
    render_host,
    write_files,
)
from deploy.secrets import Secrets, scram_sha_256_verifier
from deploy.topology import DB, HUB, LB, Host, Ports, Topology

SECRETS = Secrets(
    superuser_password="su-pass", replication_password="repl-pass", rewind_password="rewind-pass",
    restapi_password="api-pass", app_password="app-pass", secret_key="secret-key",
    pii_keys="active=k1;k1=AAAA;lookup=BBBB", pin_keys="active=p1;p1=CCCC",
    statement_key="-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIDiJ3ROGhf4OSuqyDpI7wtQEQAmbkJ1a8dWfCf4AbB6Y\n"
                  "-----END PRIVATE KEY-----\n",
    webhook_key="-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIEnEvYy5ONe6/RJvQDJvSyLxnQ0K5+5ezNnvbEe2ROa4\n"
                "-----END PRIVATE KEY-----\n",
    metrics_token="metrics-token-0123456789",
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
    assert settings["ALLIANCE_WEBHOOK_KEY"] == SECRETS.webhook_key
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


def test_prometheus_accepts_its_configuration_and_scrapes_every_host(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (scripts/ensure-prometheus.sh installs Debian's prometheus)")
    topology = Topology.local()
    # promtool also reads the rule files and the token file the configuration names: all rendered here.
    write_files(render_host(topology, topology.lb, Layout(hosts_root=str(tmp_path), alertmanager="10.77.0.40:9093"),
                            SECRETS), chown=False)
    root = tmp_path / "lb"
    config = root / "etc" / "prometheus" / "prometheus.yml"
    result = subprocess.run([promtool, "check", "config", str(config)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout and "rules found" in result.stdout

    data = yaml.safe_load(config.read_text())
    jobs = {job["job_name"]: job for job in data["scrape_configs"]}

    def targets(job: str) -> list[tuple[str, str]]:
        return [(target, group["labels"]["host"])
                for group in jobs[job]["static_configs"] for target in group["targets"]]

    assert targets("alliance-hub") == [(f"10.77.0.2{n}:8000", f"hub{n}") for n in (1, 2, 3)]
    assert targets("alliance-scheduler") == [(f"10.77.0.2{n}:9108", f"hub{n}") for n in (1, 2, 3)]
    assert targets("patroni") == [(f"10.77.0.3{n}:8008", f"db{n}") for n in (1, 2, 3)]
    hub = jobs["alliance-hub"]
    assert hub["metrics_path"] == "/metrics"
    assert hub["honor_labels"] is True and jobs["alliance-scheduler"]["honor_labels"] is True
    token = Path(hub["authorization"]["credentials_file"])
    assert hub["authorization"]["type"] == "Bearer" and token == root / "etc" / "prometheus" / "alliance-hub.token"
    assert token.read_text() == SECRETS.metrics_token and stat.S_IMODE(token.stat().st_mode) == 0o600
    assert data["rule_files"] == [str(root / "etc" / "prometheus" / "alliance-alerts.yml")]
    assert Path(data["rule_files"][0]).read_text() == ALERT_RULES.read_text()
    assert data["alerting"]["alertmanagers"] == [{"static_configs": [{"targets": ["10.77.0.40:9093"]}]}]
    # Debian's prometheus.service runs /usr/bin/prometheus $ARGS: the private address only.
    arguments = shlex.split(read_environment_file((root / "etc" / "default" / "prometheus").read_text())["ARGS"])
    assert f"--config.file={config}" in arguments and "--web.listen-address=10.77.0.10:9090" in arguments
    assert f"--storage.tsdb.path={root}/var/lib/prometheus/metrics2/" in arguments


def test_on_real_hosts_prometheus_files_are_where_debian_looks(tmp_path: Path) -> None:
    files = {item.path: item for item in render_host(Topology.local(), Topology.local().lb, Layout(), SECRETS)}
    assert {"/etc/prometheus/prometheus.yml", "/etc/default/prometheus", "/etc/prometheus/alliance-alerts.yml",
            "/etc/prometheus/alliance-hub.token"} <= set(files)
    token = files["/etc/prometheus/alliance-hub.token"]
    assert (token.mode, token.owner, token.group) == (0o600, "prometheus", "prometheus")
    config = yaml.safe_load(files["/etc/prometheus/prometheus.yml"].content)
    assert config["rule_files"] == ["/etc/prometheus/alliance-alerts.yml"] and "alerting" not in config
    assert config["scrape_configs"][0]["authorization"]["credentials_file"] == "/etc/prometheus/alliance-hub.token"


def test_only_the_hubs_web_processes_share_a_metrics_folder(tmp_path: Path) -> None:
    hosts = rendered(tmp_path)
    unit = hosts["hub2"]["alliance-hub.service"].content
    assert re.search(r"^RuntimeDirectory=alliance/metrics$", unit, re.M)
    assert re.search(r"^Environment=.* PROMETHEUS_MULTIPROC_DIR=/run/alliance/metrics$", unit, re.M)
    assert "gunicorn -c python:alliance.gunicorn_conf " in unit
    assert importlib.util.find_spec("alliance.gunicorn_conf") is not None
    scheduler_unit = hosts["hub2"]["alliance-scheduler.service"].content
    assert "PROMETHEUS_MULTIPROC_DIR" not in scheduler_unit
    settings = read_environment_file(hosts["hub2"]["hub.env"].content)
    assert "PROMETHEUS_MULTIPROC_DIR" not in settings and settings["ALLIANCE_METRICS_TOKEN"] == SECRETS.metrics_token

    # What `make cluster` runs from those units: the same command lines and environments.
    cluster = Cluster(prefix="render-test", state_dir=tmp_path / "cluster")
    hub2 = cluster.topology.host("hub2")
    write_files(render_host(cluster.topology, hub2, cluster.layout, SECRETS), chown=False)
    web, scheduler = cluster.service("hub2", "hub"), cluster.service("hub2", "scheduler")
    folder = f"{cluster.layout.root(hub2)}/run/alliance/metrics"
    assert web.environment["PROMETHEUS_MULTIPROC_DIR"] == folder
    assert folder in [directory.path for directory in host_directories(hub2, cluster.layout)]
    assert web.argv[1:3] == ("-c", "python:alliance.gunicorn_conf")
    assert "PROMETHEUS_MULTIPROC_DIR" not in scheduler.environment
    assert web.environment["ALLIANCE_METRICS_TOKEN"] == scheduler.environment["ALLIANCE_METRICS_TOKEN"]
    arguments = list(scheduler.argv[scheduler.argv.index("scheduler"):])
    assert arguments == ["scheduler", "--metrics-address", "10.77.0.22:9108"]
    # The hub in this checkout takes that command line.
    from alliance.cli import main

    help_text = CliRunner().invoke(main, ["scheduler", "--help"]).output
    assert "--metrics-address" in help_text


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for probe in sockets:
            probe.bind(("127.0.0.1", 0))
        return [probe.getsockname()[1] for probe in sockets]
    finally:
        for probe in sockets:
            probe.close()


def test_haproxy_never_routes_the_hubs_metrics(tmp_path: Path) -> None:
    """The rendered HAProxy, run on 127.0.0.1 in front of a stand-in hub that records what reaches it."""
    if shutil.which("haproxy") is None:
        pytest.skip("haproxy is not installed (make cluster installs it)")
    if os.geteuid() != 0:
        pytest.skip("the configuration switches HAProxy to the haproxy user, which needs root")
    names = ("http", "pg_primary", "pg_replicas", "haproxy_stats", "hub", "postgres", "patroni")
    ports = dataclasses.replace(Ports(), **dict(zip(names, _free_ports(len(names)), strict=True)))
    local = "127.0.0.1"
    topology = Topology(name="alliance", subnet=ipaddress.ip_network("127.0.0.1/32"), lb=Host("lb", LB, local),
                        hubs=(Host("hub1", HUB, local),), dbs=tuple(Host(f"db{n}", DB, local) for n in (1, 2, 3)),
                        ports=ports)
    layout = Layout(hosts_root=str(tmp_path), haproxy_log="stdout format raw local0 info")
    (config,) = [item for item in render_host(topology, topology.lb, layout, SECRETS) if item.path.endswith(".cfg")]
    write_files([config], chown=False)
    (tmp_path / "lb" / "run" / "haproxy").mkdir(parents=True)

    reached: list[str] = []

    class StandInHub(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            reached.append(self.path)
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *arguments: object) -> None:
            pass

    hub = ThreadingHTTPServer((local, ports.hub), StandInHub)
    threading.Thread(target=hub.serve_forever, daemon=True).start()
    with (tmp_path / "haproxy.log").open("wb") as log:
        haproxy = subprocess.Popen(["haproxy", "-db", "-f", config.path], stdout=log, stderr=subprocess.STDOUT)
    try:
        def get(path: str) -> tuple[int, str, bytes]:
            connection = http.client.HTTPConnection(local, ports.http, timeout=5)
            try:
                connection.request("GET", path)
                response = connection.getresponse()
                return response.status, response.getheader("Content-Type", ""), response.read()
            finally:
                connection.close()

        deadline = time.monotonic() + 15
        while True:
            try:
                if get("/readyz")[0] == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline and haproxy.poll() is None, (tmp_path / "haproxy.log").read_text()
            time.sleep(0.1)

        for path in ("/metrics", "/metrics/", "/metrics?name[]=up", "/%6Detrics", "/metrics%2F", "//metrics",
                     "/METRICS"):
            status, content_type, body = get(path)
            assert (status, content_type) == (404, "application/problem+json"), path
            assert json.loads(body)["code"] == "not_found", path
        passed = ("/partner/v1/balance", "/metricsx", "/console/metrics")
        for path in passed:
            assert get(path)[0] == 200, path
        assert set(reached) - {"/readyz"} == set(passed)
    finally:
        haproxy.terminate()
        haproxy.wait(timeout=10)
        hub.shutdown()
        hub.server_close()
