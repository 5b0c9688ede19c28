"""The alert rules and the Grafana dashboard of deploy/: valid, tested, and in step with the hub's metrics.

``promtool`` (Debian's prometheus package; ``make test`` installs it with
scripts/ensure-prometheus.sh) checks the rules and runs their unit tests
(deploy/prometheus/alliance-alerts.test.yml). Every expression of the rules and of the
dashboard may only name metrics the hub and its scheduler expose
(``alliance.observability.metrics.METRIC_NAMES``), Prometheus's ``up`` and the rules' own
recordings: a metric renamed in the hub fails here, not silently on the operator's screen.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from alliance.observability.metrics import METRIC_NAMES
from tests.unit.test_docs import anchors_in

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "alliance-alerts.yml"
RULE_TESTS = ROOT / "deploy" / "prometheus" / "alliance-alerts.test.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "alliance-overview.json"
GUIDE = ROOT / "docs" / "monitoring.md"
SEVERITIES = {"critical", "warning", "info"}
# What a histogram and Prometheus's scrape add to the names the hub declares.
HISTOGRAM_SERIES = ("_bucket", "_sum", "_count")
HISTOGRAMS = {"alliance_http_request_duration_seconds", "alliance_db_pool_checkout_wait_seconds",
              "alliance_job_duration_seconds"}
SCRAPE_SERIES = {"up"}

PROMQL_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless",
                   "offset", "inf", "nan", "atan2"}
GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
IDENTIFIER = re.compile(r"(?<![\w:.$])([a-zA-Z_:][a-zA-Z0-9_:]*)\b(?!\s*\()")


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.skip("promtool is not installed (Debian's prometheus package: scripts/ensure-prometheus.sh)")
    return path


def rules() -> dict:
    return yaml.safe_load(RULES.read_text())


def alerting_rules() -> list[dict]:
    return [rule for group in rules()["groups"] for rule in group["rules"] if "alert" in rule]


def recorded_names() -> set[str]:
    return {rule["record"] for group in rules()["groups"] for rule in group["rules"] if "record" in rule}


def exposed_names() -> set[str]:
    """Every series name Prometheus stores from the hub's and the scheduler's scrapes."""
    names = set(METRIC_NAMES)
    for histogram in HISTOGRAMS:
        assert histogram in METRIC_NAMES, f"{histogram} is no longer a hub metric"
        names |= {histogram + suffix for suffix in HISTOGRAM_SERIES}
    return names


def metric_names_in(expression: str) -> set[str]:
    """The metric names a PromQL expression selects (functions, keywords, labels and durations left out)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', '""', expression)  # string literals
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # range selectors and subqueries
    text = GROUPING.sub("", text)
    return {name for name in IDENTIFIER.findall(text) if name.lower() not in PROMQL_KEYWORDS}


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def dashboard_panels() -> list[dict]:
    panels = []
    for panel in dashboard()["panels"]:
        panels.append(panel)
        panels.extend(panel.get("panels", []))  # a collapsed row keeps its panels inside
    return panels


def dashboard_expressions() -> list[str]:
    return [target["expr"] for panel in dashboard_panels() for target in panel.get("targets", [])]


def as_prometheus_sees_it(expression: str) -> str:
    """A dashboard expression with Grafana's variables replaced by values Prometheus accepts."""
    return expression.replace("$__rate_interval", "5m").replace("$__interval", "1m").replace("$host", ".*")


# --- the rules -----------------------------------------------------------------------------


def test_promtool_accepts_the_rules() -> None:
    result = subprocess.run([promtool(), "check", "rules", str(RULES)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_the_rules_unit_tests_pass() -> None:
    result = subprocess.run([promtool(), "test", "rules", str(RULE_TESTS)], capture_output=True, text=True,
                            cwd=RULE_TESTS.parent)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_is_tested_firing_and_not_firing() -> None:
    firing: set[str] = set()
    silent: set[str] = set()
    for case in yaml.safe_load(RULE_TESTS.read_text())["tests"]:
        for check in case.get("alert_rule_test", []):
            (firing if check.get("exp_alerts") else silent).add(check["alertname"])
    alerts = {rule["alert"] for rule in alerting_rules()}
    assert alerts - firing == set(), "alerts never tested firing"
    assert alerts - silent == set(), "alerts never tested staying silent"
    assert (firing | silent) - alerts == set(), "tests of alerts that do not exist"


def test_every_alert_says_what_it_means_and_where_the_guide_explains_it() -> None:
    anchors = anchors_in(GUIDE)
    for rule in alerting_rules():
        assert rule["labels"]["severity"] in SEVERITIES, rule["alert"]
        annotations = rule["annotations"]
        assert annotations["summary"] and len(annotations["description"]) > 100, rule["alert"]
        guide, _, anchor = annotations["runbook"].partition("#")
        assert guide == "docs/monitoring.md" and anchor == rule["alert"].lower(), rule["alert"]
        assert anchor in anchors, f"docs/monitoring.md has no heading for {rule['alert']}"


def test_the_rules_name_only_metrics_the_hub_exposes() -> None:
    allowed = exposed_names() | SCRAPE_SERIES | recorded_names()
    used: set[str] = set()
    for group in rules()["groups"]:
        for rule in group["rules"]:
            names = metric_names_in(rule["expr"])
            assert names, f"no metric found in {rule['expr']!r}"
            assert names <= allowed, f"{rule.get('alert') or rule.get('record')}: unknown {names - allowed}"
            used |= names
    assert used & recorded_names() == recorded_names(), "a recording no alert uses"


def test_the_replica_lag_alert_uses_the_bound_deploy_renders() -> None:
    from deploy.render import Tuning

    (rule,) = [rule for rule in alerting_rules() if rule["alert"] == "AllianceReplicaLagging"]
    assert rule["expr"] == f"max(alliance_replica_lag_seconds) > {Tuning().replica_max_lag_s}"


# --- the dashboard -------------------------------------------------------------------------


def test_the_dashboard_is_a_grafana_dashboard_on_a_chosen_prometheus() -> None:
    board = dashboard()
    assert board["schemaVersion"] >= 36 and board["uid"] and board["title"]
    variables = {variable["name"]: variable for variable in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    panels = dashboard_panels()
    assert len({panel["id"] for panel in panels}) == len(panels), "panel ids repeat"
    for panel in panels:
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"] and panel["title"] and panel["description"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == panel["datasource"], panel["title"]


def test_the_dashboard_panels_do_not_overlap() -> None:
    taken: set[tuple[int, int]] = set()
    for panel in dashboard()["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        cells = {(x, y) for x in range(grid["x"], grid["x"] + grid["w"])
                 for y in range(grid["y"], grid["y"] + grid["h"])}
        assert not cells & taken, f"{panel['title']} overlaps another panel"
        taken |= cells


def test_the_dashboard_names_only_metrics_the_hub_exposes_and_shows_each_of_them() -> None:
    allowed = exposed_names() | SCRAPE_SERIES
    used: set[str] = set()
    for expression in dashboard_expressions():
        names = metric_names_in(expression)
        assert names and names <= allowed, f"{expression!r}: unknown {names - allowed}"
        used |= names
    for variable in dashboard()["templating"]["list"]:
        if variable["type"] == "query":
            names = set(re.findall(r"label_values\((\w+)", variable["definition"]))
            assert names and names <= allowed, variable["name"]
    shown = {name for name in METRIC_NAMES if name in used or any(name + s in used for s in HISTOGRAM_SERIES)}
    assert shown == set(METRIC_NAMES), f"not on the dashboard: {sorted(set(METRIC_NAMES) - shown)}"


def test_every_dashboard_expression_is_promql(tmp_path: Path) -> None:
    # promtool parses each expression as a recording rule's (no other offline PromQL check exists).
    checked = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:expression_{index}", "expr": as_prometheus_sees_it(expression)}
        for index, expression in enumerate(dashboard_expressions())]}]}
    path = tmp_path / "dashboard-expressions.yml"
    path.write_text(yaml.safe_dump(checked))
    result = subprocess.run([promtool(), "check", "rules", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_name_finder_finds_names_and_only_names() -> None:
    assert metric_names_in('histogram_quantile(0.99, sum by (route, le) (rate(x_bucket{status=~"5.."}[5m])))') \
        == {"x_bucket"}
    assert metric_names_in("time() - max by (job) (a) > 2 * b + 300 and on (job) c offset 5m") == {"a", "b", "c"}
    assert metric_names_in('up{job="alliance-hub"} == 0 unless ignoring (host) d') == {"up", "d"}
