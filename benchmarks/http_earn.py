"""Signed earn over real HTTP: the hub under gunicorn against its floors, in one run.

Load: wrk replays a file of purchase reports signed with the SDK's signer just before
the run (fresh nonce, own Idempotency-Key, ``created`` now), spread over many members
of a few partners. Floors under the same gunicorn settings: (a) a bare Flask route,
(b) a probe that verifies the same signatures and runs one earn-shaped transaction
through SQLAlchemy Core (benchmarks/probe_app.py).
"""

from __future__ import annotations

import uuid
from pathlib import Path


from benchmarks import common
from benchmarks.probe_app import probe_server

BENCHMARK = "signed earn (HTTP)"
# wrk runs for the duration; the requests must outlast it (see LoadResult.exhausted).
SIZES = {"full": {"partners": 4, "members": 2000, "requests": 20_000, "bare_requests": 300_000, "duration_s": 15,
                  "light_requests": 6_000, "light_duration_s": 10},
         "quick": {"partners": 2, "members": 100, "requests": 5_000, "bare_requests": 30_000, "duration_s": 5,
                   "light_requests": 2_500, "light_duration_s": 4}}
# Latency without queueing: as many connections as cores, so requests rarely wait for a worker.
LIGHT_CONNECTIONS = 2
WARM_UP_REQUESTS = 60


def _purchases(partners, members, count: int, tag: str) -> list[common.PreparedRequest]:  # type: ignore[no-untyped-def]
    """``count`` purchase reports, member i at partner i mod len(partners), each signed afresh."""
    from partners_sdk.signing import RequestSigner

    signers = [RequestSigner(partner.key_id, partner.private_key) for partner in partners]
    purchased_at = common.recent()
    requests = []
    for number in range(count):
        member_id, card_number = members[number % len(members)]
        receipt_id = f"{tag}-{number}-{uuid.uuid4().hex[:8]}"
        payload = common.purchase_payload(receipt_id, card_number, 1_000 + (number % 50) * 100, purchased_at)
        requests.append(common.signed_post(signers[number % len(signers)], "/partner/v1/purchases", payload,
                                           f"earn-{receipt_id}"))
    return requests


def _load(server: common.Gunicorn, make_requests, artifacts: Path, name: str,  # type: ignore[no-untyped-def]
          sizes: dict) -> tuple[common.LoadResult, common.LoadResult]:  # type: ignore[type-arg]
    """Warm up, then a saturating load and a light one, each with requests signed just before it."""
    requests = make_requests(sizes["requests"] + WARM_UP_REQUESTS, name)
    warm_up = artifacts / f"{name}-warm-up.requests"
    measured = artifacts / f"{name}.requests"
    common.write_request_file(warm_up, requests[:WARM_UP_REQUESTS])
    common.write_request_file(measured, requests[WARM_UP_REQUESTS:])
    common.run_wrk(server.base_url, warm_up, artifacts, duration_s=10, connections=4)
    saturated = common.run_wrk(server.base_url, measured, artifacts, duration_s=sizes["duration_s"])
    light_file = artifacts / f"{name}-light.requests"
    common.write_request_file(light_file, make_requests(sizes["light_requests"], f"{name}-light"))
    light = common.run_wrk(server.base_url, light_file, artifacts, duration_s=sizes["light_duration_s"],
                           connections=LIGHT_CONNECTIONS, threads=LIGHT_CONNECTIONS)
    return saturated, light


def run(context: dict) -> list[dict]:  # type: ignore[type-arg]
    """Measure bare Flask, the probe and the hub's signed earn; return the figures."""
    sizes = SIZES[context["scale"]]
    artifacts: Path = context["artifacts"]
    server = context["postgres"]
    app, environment, hub, partners, members = common.earning_hub(
        server, "bench_earn", artifacts, partners=sizes["partners"], members=sizes["members"])

    def make_requests(count: int, tag: str) -> list[common.PreparedRequest]:
        return _purchases(partners, members, count, tag)

    with probe_server(context, partners, members) as probe:
        bare_file = artifacts / "bare.requests"
        common.write_request_file(bare_file, [common.PreparedRequest("GET", "/bare", {}, b"")] * sizes["bare_requests"])
        common.run_wrk(probe.base_url, bare_file, artifacts, duration_s=3, connections=4)
        bare = common.run_wrk(probe.base_url, bare_file, artifacts, duration_s=sizes["duration_s"])
        probe_result, probe_light = _load(probe, make_requests, artifacts, "probe", sizes)
    with common.Gunicorn(context, "alliance.wsgi:app", environment, ready_path="/healthz", name="hub") as hub_server:
        earn, earn_light = _load(hub_server, make_requests, artifacts, "earn", sizes)
    audit_green, audit_note = common.run_audit_ok(hub)
    hub.engine.dispose()
    return _figures(bare, probe_result, earn, audit_green, audit_note) + [
        common.figure(BENCHMARK, f"earn p99 at {LIGHT_CONNECTIONS} connections", earn_light.p99_ms, "ms",
                      floor=f"probe (b) p99 at {LIGHT_CONNECTIONS}", floor_value=probe_light.p99_ms,
                      ratio=earn_light.p99_ms / probe_light.p99_ms, ratio_unit="x", target="<= 50 ms",
                      met=earn_light.p99_ms <= 50 and earn_light.refused == 0,
                      note=f"unsaturated: earn p50 {common.decimal_text(earn_light.p50_ms)} ms at "
                           f"{common.decimal_text(earn_light.ok_per_s)} req/s ({earn_light.errors_note()}); probe p50 "
                           f"{common.decimal_text(probe_light.p50_ms)} ms at {common.decimal_text(probe_light.ok_per_s)} req/s "
                           f"({probe_light.errors_note()})"),
    ]


def _figures(bare: common.LoadResult, probe: common.LoadResult, earn: common.LoadResult, audit_green: bool,
             audit_note: str) -> list[dict]:  # type: ignore[type-arg]
    ratio = earn.ok_per_s / probe.ok_per_s
    settings = (f"gunicorn gthread {common.GUNICORN_WORKERS}x{common.GUNICORN_THREADS}, wrk {common.WRK_THREADS} threads "
                f"{common.WRK_CONNECTIONS} connections; partner rate limits off")
    return [
        common.figure(BENCHMARK, "(a) bare Flask JSON route", bare.ok_per_s, "req/s",
                      note=f"p50 {common.decimal_text(bare.p50_ms)} ms, p99 {common.decimal_text(bare.p99_ms)} ms; "
                           f"{bare.errors_note()}"),
        common.figure(BENCHMARK, "(b) probe: Ed25519 verify + 1 Core transaction", probe.ok_per_s, "req/s",
                      note=f"p50 {common.decimal_text(probe.p50_ms)} ms, p99 {common.decimal_text(probe.p99_ms)} ms; "
                           f"{probe.errors_note()}"),
        common.figure(BENCHMARK, "earn throughput", earn.ok_per_s, "req/s", floor="probe (b)",
                      floor_value=probe.ok_per_s, ratio=ratio, target=">= 60% of probe (b)", met=ratio >= 0.6 and
                      earn.refused == 0 and audit_green,
                      note=f"{earn.errors_note()}; {audit_note}; {settings}"),
        common.figure(BENCHMARK, "earn p50", earn.p50_ms, "ms", floor="probe (b) p50", floor_value=probe.p50_ms,
                      ratio=earn.p50_ms / probe.p50_ms, ratio_unit="x", target="", note=""),
        common.figure(BENCHMARK, f"earn p99 at {common.WRK_CONNECTIONS} connections", earn.p99_ms, "ms",
                      floor="probe (b) p99", floor_value=probe.p99_ms, ratio=earn.p99_ms / probe.p99_ms, ratio_unit="x",
                      target="<= 50 ms", met=earn.p99_ms <= 50,
                      note=f"saturated: queueing included; bare Flask p99 {common.decimal_text(bare.p99_ms)} ms"),
    ]


if __name__ == "__main__":
    common.standalone(run)
