"""What the hub's metrics and JSON request logs cost the signed earn over HTTP.

Two gunicorn hubs on one database, with the same settings (``common.hub_environment``,
the benchmark's gunicorn setting) but for their observability:

- **on**, as production runs it: ``gunicorn -c python:alliance.gunicorn_conf``,
  ``PROMETHEUS_MULTIPROC_DIR`` a fresh folder (each worker writes its values to mmap
  files there), ``ALLIANCE_METRICS=on`` with a token, ``ALLIANCE_LOG_FORMAT=json``,
  ``ALLIANCE_REQUEST_LOG=on``, its standard error going to a log file; and scraped
  like Prometheus does (``GET /metrics`` with the token every 15 s, the scrape interval
  of ``deploy/templates/prometheus.yml.j2``) while its loads run;
- **off**: ``ALLIANCE_METRICS=off`` and ``ALLIANCE_REQUEST_LOG=off``, no multiprocess
  folder, no gunicorn configuration file.

Both get the signed earn load of ``benchmarks.http_earn`` (its request making and its
sized loads) at one connection count, in pairs whose order alternates (off, on; on,
off; ...), so that the machine's drift lands on both sides. The overhead is the median
over the pairs of each pair's throughput lost (1 − on ÷ off): the two loads of a pair
run back to back, so a pair's ratio is compared under one state of the machine, and
the median keeps one pair spoiled by other work from moving the figure. Target: ≤ 5%.

After the loads, the "on" side is shown to be on: ``/metrics`` answers the token, the
partner requests it counted with status 201 (summed over partners, read with
``prometheus_client.parser``) are exactly the purchases its loads committed in the
database and the 201 request lines in its log, its log holds one JSON request line per
request it counted (and nothing but JSON lines), and every scrape during the loads
answered 200. The "off" side's ``/metrics`` is a 404.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from prometheus_client.parser import text_string_to_metric_families

from benchmarks import common
from benchmarks.http_earn import _purchases, _rung

BENCHMARK = "observability overhead"
DATABASE = "bench_observability"
SIZES = {"full": {"partners": 4, "members": 2000, "min_requests": 4_000, "duration_s": 15, "pairs": 6},
         "quick": {"partners": 2, "members": 100, "min_requests": 1_000, "duration_s": 3, "pairs": 2}}
# At 4 connections the hub's throughput is within 8% of its best rung in http_earn's
# ladder (and the probe peaks there), both cores busy, so a cost per request shows as
# throughput lost; 2 connections is the best rung but bimodal (where wrk's two
# connections land among the workers moves it by up to a half), and 8 or 12 only add
# queueing.
CONNECTIONS = 4
OVERHEAD_TARGET = 0.05
SCRAPE_INTERVAL_S = 15.0
WARM_UP_REQUESTS = 100
WARM_UP_S = 2
EARN_ROUTE = "/partner/v1/purchases"
REQUEST_LOGGER = "alliance.request"
REQUEST_LINE_FIELDS = ("time", "level", "request_id", "partner", "key_id", "route", "method", "status", "duration_ms")


class Scraper:
    """Prometheus's part while the "on" hub is loaded: ``GET /metrics`` with the token every interval.

    Used as a context manager around each "on" load; the first scrape comes ``first_s``
    in (half the load's duration or half an interval, whichever is shorter), so every
    load gets at least one scrape and a load of one interval gets one.
    """

    def __init__(self, base_url: str, token: str, interval_s: float, first_s: float) -> None:
        self._url = base_url + "/metrics"
        self._token = token
        self._interval_s = interval_s
        self._first_s = first_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.scrapes = 0
        self.failures: list[str] = []

    def scrape(self) -> str:
        """One scrape's exposition text (raises for anything but 200)."""
        request = urllib.request.Request(self._url, headers={"Authorization": f"Bearer {self._token}"})
        with urllib.request.urlopen(request, timeout=10) as reply:
            return reply.read().decode()

    def _loop(self) -> None:
        delay = self._first_s
        while not self._stop.wait(delay):
            try:
                self.scrape()
                self.scrapes += 1
            except OSError as error:
                self.failures.append(f"{type(error).__name__}: {error}")
            delay = self._interval_s

    def __enter__(self) -> "Scraper":
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="scraper", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)


@dataclass
class Side:
    """One of the two hubs and its loads."""

    name: str
    server: common.Gunicorn
    rate_per_s: float = 0.0
    loads: list[common.LoadResult] = field(default_factory=list)


def _status(url: str, token: str) -> int:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return reply.status
    except urllib.error.HTTPError as error:
        return error.code


def _warm_up(side: Side, make_requests, artifacts: Path) -> None:  # type: ignore[no-untyped-def]
    warm_up = artifacts / f"{side.name}-warm-up.requests"
    common.write_request_file(warm_up, make_requests(WARM_UP_REQUESTS, f"{side.name}-warm-up"))
    common.run_wrk(side.server.base_url, warm_up, artifacts, duration_s=WARM_UP_S, connections=CONNECTIONS)


def run(context: dict) -> list[dict]:  # type: ignore[type-arg]
    """Alternate the signed earn load between the hub with observability on and off; return the figures."""
    sizes = SIZES[context["scale"]]
    artifacts: Path = context["artifacts"]
    postgres = context["postgres"]
    _, environment, hub, partners, members = common.earning_hub(
        postgres, DATABASE, artifacts, partners=sizes["partners"], members=sizes["members"])

    def make_requests(count: int, tag: str) -> list[common.PreparedRequest]:
        return _purchases(partners, members, count, tag)

    observability = common.production_observability(artifacts, "observability-on")
    token, on_log = observability.token, observability.log
    on_environment = {**environment, **observability.environment}
    off_environment = {**environment, "ALLIANCE_METRICS_TOKEN": token, "ALLIANCE_LOG_FORMAT": "json",
                       "ALLIANCE_METRICS": "off", "ALLIANCE_REQUEST_LOG": "off", "PROMETHEUS_MULTIPROC_DIR": None}
    with common.Gunicorn(context, "alliance.wsgi:app", on_environment, ready_path="/healthz",
                         name="observability-on", options=observability.options, log=on_log) as on_server, \
            common.Gunicorn(context, "alliance.wsgi:app", off_environment, ready_path="/healthz",
                            name="observability-off") as off_server:
        on, off = Side("on", on_server), Side("off", off_server)
        scraper = Scraper(on_server.base_url, token, SCRAPE_INTERVAL_S,
                          first_s=min(SCRAPE_INTERVAL_S, sizes["duration_s"]) / 2)
        for side in (off, on):
            _warm_up(side, make_requests, artifacts)
            side.rate_per_s = common.calibrated_rate(side.server.base_url, make_requests, artifacts, side.name,
                                                     first_count=sizes["min_requests"])
        for pair in range(sizes["pairs"]):
            for side in ((off, on) if pair % 2 == 0 else (on, off)):
                if side is on:
                    with scraper:
                        side.loads.append(_load(side, make_requests, artifacts, pair, sizes))
                else:
                    side.loads.append(_load(side, make_requests, artifacts, pair, sizes))
        time.sleep(1)  # requests wrk left in flight at its deadline finish
        checks = _checks(on_server, off_server, token, postgres, scraper)
    checks["log"] = _log_check(on_log)
    audit_green, audit_note = common.run_audit_ok(hub)
    hub.engine.dispose()
    return _figures(on, off, checks, audit_green, audit_note)


def _load(side: Side, make_requests, artifacts: Path, pair: int, sizes: dict) -> common.LoadResult:  # type: ignore[no-untyped-def, type-arg]
    return _rung(side.server, make_requests, artifacts, f"{side.name}-pair{pair + 1}", CONNECTIONS, sizes,
                 side.rate_per_s)


def _checks(on_server: common.Gunicorn, off_server: common.Gunicorn, token: str, postgres,  # type: ignore[no-untyped-def]
            scraper: Scraper) -> dict:  # type: ignore[type-arg]
    """What the "on" hub counted, against the database; the "off" hub's /metrics."""
    partner_201 = 0
    counted_requests = 0
    exposition = scraper.scrape()
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            if sample.name == "alliance_partner_requests_total" and sample.labels.get("status") == "201":
                partner_201 += int(sample.value)
            elif sample.name == "alliance_http_request_duration_seconds_count":
                counted_requests += int(sample.value)
    with psycopg.connect(common.admin_url(postgres, DATABASE)) as connection:
        # Every request the "on" hub was sent carries a receipt id starting "on-" (its tags).
        committed = connection.execute("SELECT count(*) FROM purchases WHERE receipt_id LIKE 'on-%'").fetchone()[0]  # type: ignore[index]
    return {"partner_201": partner_201, "counted_requests": counted_requests, "committed": committed,
            "scrapes": scraper.scrapes, "scrape_failures": scraper.failures,
            "off_metrics_status": _status(off_server.base_url + "/metrics", token)}


def _log_check(log: Path) -> dict:  # type: ignore[type-arg]
    """The "on" hub's log, read after it stopped: JSON lines, one request line per request counted."""
    request_lines = earn_201_lines = not_json = incomplete = 0
    for line in log.read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            not_json += 1
            continue
        if not isinstance(record, dict):
            not_json += 1
            continue
        if record.get("logger") != REQUEST_LOGGER:
            continue
        request_lines += 1
        if any(name not in record for name in REQUEST_LINE_FIELDS):
            incomplete += 1
        if record.get("route") == EARN_ROUTE and record.get("status") == 201:
            earn_201_lines += 1
    return {"request_lines": request_lines, "earn_201_lines": earn_201_lines, "not_json": not_json,
            "incomplete": incomplete}


def _on_is_on(checks: dict) -> tuple[bool, str]:  # type: ignore[type-arg]
    log = checks["log"]
    ok = (checks["partner_201"] == checks["committed"] == log["earn_201_lines"] > 0
          and log["request_lines"] == checks["counted_requests"] and log["not_json"] == 0 and log["incomplete"] == 0
          and checks["scrapes"] > 0 and not checks["scrape_failures"] and checks["off_metrics_status"] == 404)
    note = (f"/metrics (token): alliance_partner_requests_total{{status=\"201\"}} summed over partners "
            f"{checks['partner_201']}; purchases its loads committed (database) {checks['committed']}; JSON request "
            f"lines with status 201 {log['earn_201_lines']}; request lines {log['request_lines']} against requests "
            f"counted (request duration histogram) {checks['counted_requests']}; lines not JSON {log['not_json']}, "
            f"request lines missing a field {log['incomplete']}; scrapes during the loads {checks['scrapes']} "
            f"({len(checks['scrape_failures'])} failed"
            + (f": {checks['scrape_failures'][0][:100]}" if checks["scrape_failures"] else "")
            + f"); off hub /metrics {checks['off_metrics_status']}")
    return ok, note


def _valid(result: common.LoadResult) -> bool:
    return result.refused == 0 and result.socket_errors == 0 and not result.exhausted


def _rounds_text(loads: list[common.LoadResult]) -> str:
    return "; ".join(f"{common.decimal_text(load.ok_per_s, 1)} req/s p99 {common.decimal_text(load.p99_ms)} ms"
                     for load in loads)


def _figures(on: Side, off: Side, checks: dict, audit_green: bool, audit_note: str) -> list[dict]:  # type: ignore[type-arg]
    on_rate = common.median([load.ok_per_s for load in on.loads])
    off_rate = common.median([load.ok_per_s for load in off.loads])
    on_p99 = common.median([load.p99_ms for load in on.loads])
    off_p99 = common.median([load.p99_ms for load in off.loads])
    pair_overheads = [1 - on_load.ok_per_s / off_load.ok_per_s
                      for on_load, off_load in zip(on.loads, off.loads, strict=True)]
    overhead = common.median(pair_overheads)
    all_valid = all(_valid(load) for load in (*on.loads, *off.loads))
    on_is_on, on_note = _on_is_on(checks)
    invalid = [] if all_valid else ["some loads were not valid (non-2xx, socket errors or ran out): see the rounds"]
    setting = (f"{len(pair_overheads)} pairs of {CONNECTIONS}-connection loads, order alternating (off, on; on, off; "
               f"...); gunicorn gthread {common.GUNICORN_WORKERS}x{common.GUNICORN_THREADS}, partner rate limits off")
    return [
        common.figure(BENCHMARK, "signed earn, observability off (median of rounds)", off_rate, "req/s",
                      note=f"p99 {common.decimal_text(off_p99)} ms (median); rounds: {_rounds_text(off.loads)}"),
        common.figure(BENCHMARK, "signed earn, observability on (median of rounds)", on_rate, "req/s",
                      floor="off", floor_value=off_rate, ratio=on_rate / off_rate,
                      note=f"p99 {common.decimal_text(on_p99)} ms (median); rounds: {_rounds_text(on.loads)}"),
        common.figure(BENCHMARK, "signed earn p99, observability on (median of rounds)", on_p99, "ms",
                      floor="off", floor_value=off_p99, ratio=on_p99 / off_p99, ratio_unit="x"),
        common.figure(BENCHMARK, "throughput lost to metrics + JSON request logs (median of pairs)", overhead * 100,
                      "%", target=f"<= {OVERHEAD_TARGET:.0%}",
                      met=overhead <= OVERHEAD_TARGET and all_valid and on_is_on and audit_green,
                      note="per pair: "
                           + ", ".join(f"{common.decimal_text(value * 100, 1)}%" for value in pair_overheads)
                           + f"; ratio of medians {common.decimal_text((1 - on_rate / off_rate) * 100, 1)}%; "
                           + "; ".join([*invalid, audit_note, setting])),
        common.figure(BENCHMARK, "the on side is on: 201s counted by /metrics", checks["partner_201"], "requests",
                      target="= purchases committed = 201 log lines; a JSON line per request", met=on_is_on,
                      note=on_note, places=0),
    ]


if __name__ == "__main__":
    common.standalone(run)
