"""Debian's Prometheus scrapes a hub running under gunicorn with three workers, and its
HTTP API reports exactly the requests, refusals, replays and postings that were sent.

This is the exposition as Prometheus itself reads it (a target whose exposition does
not parse is down, with the parser's error), and the multiprocess collection as
production runs it (``-c python:alliance.gunicorn_conf``, ``--preload``, gthread
workers sharing ``PROMETHEUS_MULTIPROC_DIR``): the earns are sent concurrently until
at least two workers have served some, each worker's own file is read on its own, and
Prometheus's sum must be their sum and the number sent.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from prometheus_client import CollectorRegistry, multiprocess

from alliance.extensions import hub_state
from alliance.observability.metrics import METRIC_NAMES
from alliance.scheduler import hub_jobs
from tests.back_office_support import hub_app
from tests.factories import SigningPartner, make_member, make_signing_partner
from tests.http_server import HttpReply, purchase_payload, send_prepared, send_signed, wall_clock_partner_time
from tests.signing import sign_request

PROMETHEUS = "/usr/bin/prometheus"
REPOSITORY = Path(__file__).resolve().parents[2]
TOKEN = "scrape-test-metrics-token-5f0c2a9e"
PARTNER = "scrape-shop"
PURCHASES_ROUTE = "/partner/v1/purchases"
WORKERS = 3
# Earns go out WAVE at a time, at least MIN_EARNS of them, until two workers or more have
# served some (at most MAX_EARNS: three workers taking concurrent connections share them).
WAVE = 6
MIN_EARNS = 18
MAX_EARNS = 90
REFUSED = 5
REPLAYED = 4
# Deadlines, polled rather than slept: a server's start, and the first scrape after the traffic.
START_S = 30
SCRAPED_S = 15
HISTOGRAMS = ("alliance_http_request_duration_seconds", "alliance_db_pool_checkout_wait_seconds",
              "alliance_job_duration_seconds")

pytestmark = pytest.mark.skipif(not Path(PROMETHEUS).exists(),
                                reason=f"{PROMETHEUS} is missing: scripts/ensure-prometheus.sh installs Debian's "
                                       "prometheus (make test runs it)")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _get(url: str, *, timeout_s: float = 5) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as reply:
            return reply.status, reply.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def _wait_until_answering(url: str, process: subprocess.Popen, log: Path, what: str) -> None:  # type: ignore[type-arg]
    """Poll ``url`` until it answers 200; fail with the process's log if it exits or the deadline passes."""
    deadline = time.monotonic() + START_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"{what} exited with {process.returncode} at start:\n{log.read_text()[-4000:]}")
        try:
            if _get(url, timeout_s=2)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    pytest.fail(f"{what} did not answer {url} within {START_S} s:\n{log.read_text()[-4000:]}")


def _stop(process: subprocess.Popen | None) -> None:  # type: ignore[type-arg]
    """SIGTERM to the process we started (gunicorn's master stops its workers), then wait; SIGKILL if it hangs."""
    if process is None or process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


@dataclass(frozen=True)
class RunningHub:
    """A hub under gunicorn: where it listens, its partner and member, its workers' metrics folder and log."""

    base_url: str
    port: int
    partner: SigningPartner
    card: str
    metrics_directory: Path
    jobs: int
    log: Path


@pytest.fixture
def gunicorn_hub(postgres_url: str, tmp_path: Path) -> Iterator[RunningHub]:
    """The hub under gunicorn as production starts it, on a fresh PostgreSQL database with one signing partner."""
    instance = tmp_path / "instance"
    seeding = hub_app(postgres_url, instance)
    hub = hub_state(seeding)
    try:
        created = wall_clock_partner_time()
        partner = make_signing_partner(hub, now=created, code=PARTNER)
        member = make_member(hub, now=created)
        jobs = len(hub_jobs(hub))
    finally:
        hub.dispose()
    metrics_directory = tmp_path / "multiprocess"
    metrics_directory.mkdir(mode=0o700)
    port = _free_port()
    environment = {name: value for name, value in os.environ.items() if not name.startswith("ALLIANCE_")}
    environment.update({
        "ALLIANCE_DATABASE_URL": postgres_url, "ALLIANCE_INSTANCE_PATH": str(instance),
        "ALLIANCE_ENVIRONMENT": "test", "ALLIANCE_SECRET_KEY": "test-secret-key",
        "ALLIANCE_METRICS_TOKEN": TOKEN, "ALLIANCE_DATABASE_POOL_SIZE": "3",
        "ALLIANCE_PARTNER_RATE_PER_S": "0", "ALLIANCE_PARTNER_BURST": "0", "ALLIANCE_PARTNER_MAX_IN_FLIGHT": "0",
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_directory), "PYTHONPATH": str(REPOSITORY),
        # gunicorn's control socket lives in $HOME/.gunicorn: this server's own, as production's unit does.
        "HOME": str(tmp_path),
    })
    log = tmp_path / "gunicorn.log"
    process = None
    try:
        with log.open("wb") as output:
            process = subprocess.Popen(
                [sys.executable, "-m", "gunicorn", "-c", "python:alliance.gunicorn_conf",
                 "--bind", f"127.0.0.1:{port}", "--workers", str(WORKERS), "--threads", "2",
                 "--worker-class", "gthread", "--timeout", "30", "--graceful-timeout", "5", "--preload",
                 "alliance.wsgi:app"],
                cwd=REPOSITORY, env=environment, stdout=output, stderr=subprocess.STDOUT)
        base_url = f"http://127.0.0.1:{port}"
        _wait_until_answering(base_url + "/healthz", process, log, "gunicorn")
        yield RunningHub(base_url, port, partner, member.card_number, metrics_directory, jobs, log)
    finally:
        _stop(process)


@pytest.fixture
def prometheus(gunicorn_hub: RunningHub, tmp_path: Path) -> Iterator[str]:
    """Debian's Prometheus scraping the hub every second as deploy/templates/prometheus.yml.j2 does (bearer token
    from a file, honor_labels so the hub's own "job" label, a scheduled job's name, is kept); yields its URL."""
    token_file = tmp_path / "metrics-token"
    token_file.write_text(TOKEN)
    token_file.chmod(0o600)
    config = tmp_path / "prometheus.yml"
    # JSON is YAML, and spares quoting the paths.
    config.write_text(json.dumps({
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s"},
        "scrape_configs": [{
            "job_name": "alliance-hub", "honor_labels": True, "metrics_path": "/metrics",
            "authorization": {"type": "Bearer", "credentials_file": str(token_file)},
            "static_configs": [{"targets": [f"127.0.0.1:{gunicorn_hub.port}"]}],
        }],
    }))
    port = _free_port()
    log = tmp_path / "prometheus.log"
    process = None
    try:
        with log.open("wb") as output:
            process = subprocess.Popen(
                [PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                 f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
                cwd=tmp_path, stdout=output, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        _wait_until_answering(url + "/-/ready", process, log, "prometheus")
        yield url
    finally:
        _stop(process)


def _query(prometheus_url: str, promql: str, at: float) -> list[dict[str, Any]]:
    """The instant vector of ``promql`` evaluated at ``at`` (seconds since the epoch)."""
    status, body = _get(f"{prometheus_url}/api/v1/query?" + urllib.parse.urlencode({"query": promql, "time": at}))
    answer = json.loads(body)
    assert status == 200 and answer["status"] == "success", (promql, answer)
    return answer["data"]["result"]


def _scalar(prometheus_url: str, promql: str, at: float) -> float:
    """The one value of ``promql`` at ``at``."""
    result = _query(prometheus_url, promql, at)
    assert len(result) == 1, (promql, result)
    return float(result[0]["value"][1])


def _scraped_after(prometheus_url: str, moment: float) -> float:
    """The time of the first successful scrape that started after ``moment`` (waiting for it)."""
    deadline = time.monotonic() + SCRAPED_S
    while time.monotonic() < deadline:
        result = _query(prometheus_url, 'timestamp(up{job="alliance-hub"} == 1)', time.time())
        if result and float(result[0]["value"][1]) > moment:
            return float(result[0]["value"][1])
        time.sleep(0.25)
    pytest.fail(f"Prometheus had not scraped the hub successfully within {SCRAPED_S} s of the traffic")


def _per_worker(directory: Path, tmp_path: Path, name: str, labels: dict[str, str]) -> dict[int, float]:
    """Each process's own value of a counter, read from its file alone by the client library's collector."""
    values = {}
    for file in sorted(directory.glob("counter_*.db")):
        alone = tmp_path / "one-worker" / file.stem
        alone.mkdir(parents=True)
        shutil.copyfile(file, alone / file.name)
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=str(alone))
        values[int(file.stem.removeprefix("counter_"))] = registry.get_sample_value(name, labels) or 0.0
        shutil.rmtree(alone)
    return values


def _earn(base_url: str, partner: SigningPartner, card: str) -> tuple[HttpReply, dict[str, Any], str]:
    """One signed earn on a receipt of its own: the reply, and the payload and key a replay would resend."""
    payload, key = purchase_payload(f"scrape-{uuid.uuid4().hex[:12]}", card), str(uuid.uuid4())
    return send_signed(base_url, partner, "POST", PURCHASES_ROUTE, payload, idempotency_key=key), payload, key


def test_prometheus_scrapes_the_workers_and_reports_exactly_the_traffic_sent(gunicorn_hub, prometheus, tmp_path):
    base_url, partner, card = gunicorn_hub.base_url, gunicorn_hub.partner, gunicorn_hub.card
    directory = gunicorn_hub.metrics_directory
    served = {"partner": PARTNER, "status": "201"}
    earns: list[tuple[HttpReply, dict[str, Any], str]] = []
    with ThreadPoolExecutor(max_workers=WAVE) as pool:
        while len(earns) < MAX_EARNS:
            earns += pool.map(lambda _: _earn(base_url, partner, card), range(WAVE))
            workers_serving = [pid for pid, count in _per_worker(
                directory, tmp_path, "alliance_partner_requests_total", served).items() if count > 0]
            if len(earns) >= MIN_EARNS and len(workers_serving) >= 2:
                break
    assert [reply.status for reply, _, _ in earns] == [201] * len(earns), gunicorn_hub.log.read_text()[-4000:]
    points = sum(reply.body["points"]["total"] for reply, _, _ in earns)

    replays = [send_signed(base_url, partner, "POST", PURCHASES_ROUTE, payload, idempotency_key=key)
               for _, payload, key in earns[:REPLAYED]]
    assert [(reply.status, reply.headers["idempotent-replayed"]) for reply in replays] == [(201, "true")] * REPLAYED
    impostor = Ed25519PrivateKey.generate()
    refusals = []
    for _ in range(REFUSED):
        body = json.dumps(purchase_payload(f"scrape-{uuid.uuid4().hex[:12]}", card)).encode()
        headers = sign_request(method="POST", url=base_url + PURCHASES_ROUTE, body=body, key_id=partner.key_id,
                               private_key=impostor, idempotency_key=str(uuid.uuid4()))
        refusals.append(send_prepared(base_url, "POST", PURCHASES_ROUTE, body, headers))
    assert [(reply.status, reply.body["code"]) for reply in refusals] == [(401, "signature_invalid")] * REFUSED
    traffic_done = time.time()

    # Every figure is read at the time of one scrape that began after the last reply, so it holds them all.
    at = _scraped_after(prometheus, traffic_done)

    def value(promql: str) -> float:
        return _scalar(prometheus, promql, at)

    earned = len(earns)
    assert value('up{job="alliance-hub"}') == 1
    assert value(f'sum(alliance_partner_requests_total{{partner="{PARTNER}",status="201"}})') == earned + REPLAYED
    assert value(f'sum(alliance_partner_requests_total{{partner="{PARTNER}",status="401"}})') == REFUSED
    assert value(f'sum(alliance_partner_refusals_total{{partner="{PARTNER}",reason="signature_invalid"}})') == REFUSED
    assert value(f'sum(alliance_idempotent_replays_total{{partner="{PARTNER}"}})') == REPLAYED
    # A replay answers from the stored reply: one earn posting per purchase, its points once.
    assert value('sum(alliance_ledger_postings_total{kind="earn"})') == earned
    assert value('sum(alliance_ledger_points_total{kind="earn"})') == points
    route = f'route="{PURCHASES_ROUTE}",method="POST"'
    assert value(f'sum(alliance_http_request_duration_seconds_count{{{route},status="201"}})') == earned + REPLAYED
    assert value(f'sum(alliance_http_request_duration_seconds_bucket{{{route},status="201",le="+Inf"}})') == (
        earned + REPLAYED)
    assert value(f'sum(alliance_http_request_duration_seconds_count{{{route},status="401"}})') == REFUSED
    assert value("sum(alliance_db_pool_connections_in_use)") == 0
    assert value("count(alliance_job_interval_seconds)") == gunicorn_hub.jobs
    assert value('alliance_job_interval_seconds{job="prune-nonces"}') == 600
    assert value("alliance_redemption_holds_open") == 0
    assert _query(prometheus, '{exported_job!=""}', at) == []

    # The sum is over processes: two or more workers served earns, and their own files add up to it.
    per_worker = _per_worker(directory, tmp_path, "alliance_partner_requests_total", served)
    assert len([pid for pid, count in per_worker.items() if count > 0]) >= 2, per_worker
    assert sum(per_worker.values()) == earned + REPLAYED

    names = json.loads(_get(f"{prometheus}/api/v1/label/__name__/values")[1])["data"]
    ingested = {name for name in names if name.startswith("alliance_")}
    known = set(METRIC_NAMES) | {f"{histogram}_{suffix}" for histogram in HISTOGRAMS
                                 for suffix in ("bucket", "count", "sum")}
    assert ingested - known == set()
    assert {"alliance_partner_requests_total", "alliance_partner_refusals_total", "alliance_idempotent_replays_total",
            "alliance_ledger_postings_total", "alliance_http_request_duration_seconds_bucket",
            "alliance_job_interval_seconds", "alliance_redemption_holds_open"} <= ingested

    # The workers' log lines reached gunicorn's standard error as JSON: one per request, no card number.
    lines = [json.loads(line) for line in gunicorn_hub.log.read_text().splitlines()]
    purchases = [(line["status"], line["partner"]) for line in lines
                 if line["logger"] == "alliance.request" and line["route"] == PURCHASES_ROUTE]
    assert sorted(purchases) == [(201, PARTNER)] * (earned + REPLAYED) + [(401, PARTNER)] * REFUSED
    assert card not in gunicorn_hub.log.read_text()
