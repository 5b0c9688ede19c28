"""Redemption authorize + capture over HTTP under contention on a few hot members.

Several client threads spend the points of a handful of members at once through the
hub under gunicorn: each authorizes a hold (member proven by a one-time redemption code,
so what is measured is the ledger, not member verification) and captures it. The
demand is larger than the members' balances, so the last authorizations must be refused
(422 insufficient_points), never overdrawn. Afterwards: every member balance >= 0,
every member's captured points within what it had, and ``alliance audit`` green.

The hub runs under a stored risk policy without limits: the default policy's
``member-redemptions-hour`` refuses an eleventh redemption by a member within the hour
(it did: 80 pairs captured of 2,400, the rest 403 ``declined``), and a handful of
members redeeming hundreds of times is exactly what it is there to stop.
"""

from __future__ import annotations

import http.client
import json
import queue
import threading
import time
import uuid
from datetime import timedelta
from pathlib import Path

from sqlalchemy import func, select

from benchmarks import common

BENCHMARK = "redemption contention (HTTP)"
SIZES = {"full": {"members": 8, "clients": 12, "redemptions": 2400, "points_per_member": 6000},
         "quick": {"members": 8, "clients": 8, "redemptions": 240, "points_per_member": 600}}
POINTS_PER_REDEMPTION = (5, 10, 15, 20, 25, 30, 35, 40, 45, 50)


def _fund_members(hub, partner_id: int, members, points: int) -> None:  # type: ignore[no-untyped-def]
    from alliance.services import ledger

    now = common.utc_now()
    with hub.unit_of_work() as uow:
        for member_id, _ in members:
            ledger.earn(uow.session, member_id=member_id, partner_id=partner_id, points=points, now=now,
                        expires_at=now + timedelta(days=365))
        uow.commit()


def _codes(hub, members, count: int) -> list[tuple[int, str]]:  # type: ignore[no-untyped-def]
    from alliance.services.member_verification import issue_redemption_code

    now = common.utc_now()
    codes = []
    with hub.unit_of_work() as uow:
        for number in range(count):
            member_id = members[number % len(members)][0]
            codes.append((member_id, issue_redemption_code(uow.session, member_id=member_id, now=now)[0]))
        uow.commit()
    return codes


def _pairs(partner, codes) -> list[tuple[int, int, common.PreparedRequest, common.PreparedRequest]]:  # type: ignore[no-untyped-def]
    from partners_sdk.signing import RequestSigner

    signer = RequestSigner(partner.key_id, partner.private_key)
    pairs = []
    for number, (member_id, code) in enumerate(codes):
        reference = f"redeem-{number}-{uuid.uuid4().hex[:8]}"
        points = POINTS_PER_REDEMPTION[number % len(POINTS_PER_REDEMPTION)]
        authorize = common.signed_post(signer, "/partner/v1/redemptions",
                                       {"reference": reference, "points": points, "redemption_code": code},
                                       f"authorize-{reference}")
        capture = common.signed_post(signer, f"/partner/v1/redemptions/{reference}/capture", {"points": points},
                                     f"capture-{reference}")
        pairs.append((member_id, points, authorize, capture))
    return pairs


class _Client(threading.Thread):
    """One till: authorize, then capture what was held, until the work runs out."""

    def __init__(self, base_url: str, work: queue.Queue, results: list) -> None:  # type: ignore[type-arg]
        super().__init__(daemon=True)
        host, port = base_url.removeprefix("http://").split(":")
        self._connection = http.client.HTTPConnection(host, int(port), timeout=60)
        self._work = work
        self._results = results

    def _send(self, request: common.PreparedRequest) -> tuple[int, float, bytes]:
        started = time.perf_counter()
        self._connection.request(request.method, request.path, body=request.body, headers=request.headers)
        reply = self._connection.getresponse()
        body = reply.read()
        return reply.status, (time.perf_counter() - started) * 1000, body

    def run(self) -> None:
        while True:
            try:
                member_id, points, authorize, capture = self._work.get_nowait()
            except queue.Empty:
                return
            status, authorize_ms, body = self._send(authorize)
            outcome = {"member_id": member_id, "points": points, "authorize_status": status,
                       "authorize_ms": authorize_ms, "code": json.loads(body).get("code") if status >= 400 else None}
            if status == 201:
                outcome["capture_status"], outcome["capture_ms"], _ = self._send(capture)
            self._results.append(outcome)


def _run_clients(base_url: str, pairs, clients: int) -> tuple[list[dict], float]:  # type: ignore[no-untyped-def, type-arg]
    work: queue.Queue = queue.Queue()  # type: ignore[type-arg]
    for pair in pairs:
        work.put(pair)
    results: list[dict] = []  # type: ignore[type-arg]
    threads = [_Client(base_url, work, results) for _ in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=600)
    return results, time.perf_counter() - started


def _books(hub, members, funded: int, results: list[dict]) -> tuple[bool, str]:  # type: ignore[no-untyped-def, type-arg]
    """Zero overdrafts: balances >= 0 and each member's captures within what it had."""
    from alliance.models import LedgerAccount

    with hub.unit_of_work() as uow:
        lowest = uow.session.scalar(select(func.min(LedgerAccount.balance_points))
                                    .where(LedgerAccount.member_id.is_not(None)))
        available = dict(uow.session.execute(
            select(LedgerAccount.member_id, LedgerAccount.balance_points)
            .where(LedgerAccount.kind == "member_available")).all())
    captured: dict[int, int] = {}
    for outcome in results:
        if outcome.get("capture_status") == 200:
            captured[outcome["member_id"]] = captured.get(outcome["member_id"], 0) + outcome["points"]
    overdrawn = [member_id for member_id, _ in members
                 if captured.get(member_id, 0) > funded or available[member_id] != funded - captured.get(member_id, 0)]
    green, audit_note = common.run_audit_ok(hub)
    ok = lowest is not None and lowest >= 0 and not overdrawn and green
    return ok, f"lowest member balance {lowest}; members over or off their funding: {len(overdrawn)}; {audit_note}"


def run(context: dict) -> list[dict]:  # type: ignore[type-arg]
    """Authorize + capture pairs/s, p99 of each call, and the overdraft check."""
    sizes = SIZES[context["scale"]]
    artifacts: Path = context["artifacts"]
    app, environment = common.migrated_hub(context["postgres"], "bench_redemption", artifacts)
    hub = app.extensions["alliance"]
    seeded_at = common.utc_now() - timedelta(hours=1)
    partner, = common.seed_partners(hub, 1, seeded_at)
    members = common.seed_members(hub, sizes["members"], seeded_at)
    common.store_policy_without_limits(hub, "benchmark: redemptions under contention, no velocity limits")
    _fund_members(hub, partner.partner_id, members, sizes["points_per_member"])
    pairs = _pairs(partner, _codes(hub, members, sizes["redemptions"]))
    with common.Gunicorn(context, "alliance.wsgi:app", environment, ready_path="/healthz", name="redemption") as server:
        results, elapsed = _run_clients(server.base_url, pairs, sizes["clients"])
    books_ok, books_note = _books(hub, members, sizes["points_per_member"], results)
    hub.engine.dispose()
    authorized = [outcome for outcome in results if outcome["authorize_status"] == 201]
    captured = [outcome for outcome in authorized if outcome.get("capture_status") == 200]
    refused = [outcome for outcome in results if outcome["authorize_status"] != 201]
    unexpected = [outcome for outcome in refused if outcome["code"] != "insufficient_points"]
    calls_ms = [outcome["authorize_ms"] for outcome in results] + [outcome["capture_ms"] for outcome in authorized]
    note = (f"{sizes['clients']} clients on {sizes['members']} members; {len(captured)} captured, "
            f"{len(refused) - len(unexpected)} refused insufficient_points, {len(unexpected)} other refusals, "
            f"{len(authorized) - len(captured)} captures failed")
    return [
        common.figure(BENCHMARK, "authorize + capture pairs", len(captured) / elapsed, "pairs/s",
                      note=note + f"; {len(calls_ms)} calls in {common.decimal_text(elapsed)} s"),
        common.figure(BENCHMARK, "call p99 (authorize or capture)", common.percentile(calls_ms, 0.99), "ms",
                      note=f"p50 {common.decimal_text(common.median(calls_ms))} ms"),
        common.figure(BENCHMARK, "overdrafts", 0 if books_ok else 1, "failures", target="0 overdrafts, audit green",
                      met=books_ok and not unexpected and len(captured) == len(authorized), note=books_note,
                      places=0),
    ]


if __name__ == "__main__":
    common.standalone(run)
