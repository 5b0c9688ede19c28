"""The rendered cluster serves and scrapes the webhook delivery processes' metrics: each hub host's
``alliance-webhooks`` unit starts ``alliance webhooks deliver --metrics-address`` on its private address, and
Prometheus on the load balancer scrapes that port on every hub host."""

from __future__ import annotations

import dataclasses
import re
import shlex
from pathlib import Path

import yaml
from click.testing import CliRunner

from deploy.topology import PORTS, Topology
from tests.cluster.test_render import rendered


def test_each_hub_hosts_delivery_process_serves_metrics_that_prometheus_scrapes(tmp_path: Path) -> None:
    hosts = rendered(tmp_path)
    topology = Topology.local()
    for hub in topology.hubs:
        unit = hosts[hub.name]["alliance-webhooks.service"].content
        (start,) = re.findall(r"^ExecStart=(.*)$", unit, re.M)
        arguments = shlex.split(start)
        assert arguments[1:] == ["webhooks", "deliver", "--metrics-address", f"{hub.address}:{PORTS.webhook_metrics}"]
        assert "PROMETHEUS_MULTIPROC_DIR" not in unit
    jobs = {job["job_name"]: job for job in yaml.safe_load(hosts[topology.lb.name]["prometheus.yml"].content)
            ["scrape_configs"]}
    scraped = [(target, group["labels"]["host"]) for group in jobs["alliance-webhooks"]["static_configs"]
               for target in group["targets"]]
    assert scraped == [(f"{hub.address}:{PORTS.webhook_metrics}", hub.name) for hub in topology.hubs]
    assert "authorization" not in jobs["alliance-webhooks"]
    # A port of its own on the hub hosts.
    assert list(dataclasses.asdict(PORTS).values()).count(PORTS.webhook_metrics) == 1
    # The hub in this checkout takes that command line.
    from alliance.cli import main

    assert "--metrics-address" in CliRunner().invoke(main, ["webhooks", "deliver", "--help"]).output
