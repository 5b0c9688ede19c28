"""What a budgeted campaign costs the signed earn under concurrency.

A campaign with a budget counts every award under the campaign row's lock: the purchase
pipeline locks the budgeted campaigns' rows after the member (``CampaignBook.load``),
and ``campaigns.record_awards`` adds to ``budget_used_points`` in the same transaction,
so every concurrent purchase that earns from one budgeted campaign waits on one row
until the purchase before it has committed. This module measures what that costs.

Signed ``POST /partner/v1/purchases`` over HTTP, the hub under gunicorn (as
``http_earn`` starts it), from N client threads (one keep-alive connection each, a
closed loop like a till), spread over many members of one partner, in configurations
run back to back on one database:

- (a) no campaign running;
- (b) a partner-funded campaign running at that partner, without a budget;
- (c) the same campaign with a points budget far larger than the run can spend;
- (d) the same campaign with a points budget that runs out part-way through the load
  (half of what (c)'s purchases were awarded on average, times the load's purchases).

(a), (b) and (c) run twice, in the order a, b, c, c, b, a, so a drift of the machine
lands on every configuration; each configuration's figures pool its two loads. A
configuration that changes stops the campaign before it and creates the next one
through the hub's own services. Every request is signed with the SDK just before its
load. Afterwards: every request answered 201; (b) and (c) gave an award on every
purchase; (d)'s budget was never exceeded, the points its awards hold equal
``budget_used_points``, some purchases were awarded and later ones were not; and
``alliance audit`` is green.
"""

from __future__ import annotations

import http.client
import queue
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

from sqlalchemy import func, select

from benchmarks import common

BENCHMARK = "campaign contention (HTTP)"
SIZES = {"full": {"members": 2000, "clients": 12, "purchases": 1500, "warm_up": 200},
         "quick": {"members": 200, "clients": 4, "purchases": 150, "warm_up": 40}}
# (a), (b), (c) and back: each configuration twice, the order mirrored.
ROUNDS = ("a", "b", "c", "c", "b", "a")
# (d)'s budget: this share of what (c) awarded per purchase, times (d)'s purchases.
BUDGET_SHARE = Decimal("0.5")
CAMPAIGN_MULTIPLIER = Decimal("2")
CAMPAIGN_BONUS_POINTS = 5
ACTOR = "bench:campaign-contention"
NAMES = {"a": "(a) no campaign", "b": "(b) partner campaign, no budget",
         "c": "(c) same campaign, points budget never reached", "d": "(d) same campaign, budget runs out part-way"}


@dataclass
class Load:
    """One load's outcome: the status and latency of each request, and the wall time."""

    statuses: list[int]
    latencies_ms: list[float]
    elapsed_s: float
    campaign_id: int | None

    @property
    def created(self) -> int:
        """Requests answered 201 (a purchase recorded)."""
        return sum(1 for status in self.statuses if status == 201)


class _Till(threading.Thread):
    """One client: sends the next signed purchase when the last is answered, until the work runs out."""

    def __init__(self, base_url: str, work: queue.Queue, statuses: list[int],  # type: ignore[type-arg]
                 latencies_ms: list[float]) -> None:
        super().__init__(daemon=True)
        host, port = base_url.removeprefix("http://").split(":")
        self._connection = http.client.HTTPConnection(host, int(port), timeout=60)
        self._work = work
        self._statuses = statuses
        self._latencies_ms = latencies_ms

    def run(self) -> None:
        while True:
            try:
                request: common.PreparedRequest = self._work.get_nowait()
            except queue.Empty:
                self._connection.close()
                return
            started = time.perf_counter()
            self._connection.request(request.method, request.path, body=request.body, headers=request.headers)
            reply = self._connection.getresponse()
            reply.read()
            self._latencies_ms.append((time.perf_counter() - started) * 1000)
            self._statuses.append(reply.status)


def _purchases(partner: common.BenchPartner, members, count: int, tag: str) -> list[common.PreparedRequest]:  # type: ignore[no-untyped-def]
    """``count`` purchase reports at ``partner``, member i mod len(members), each signed now."""
    from partners_sdk.signing import RequestSigner

    signer = RequestSigner(partner.key_id, partner.private_key)
    purchased_at = common.recent()
    requests = []
    for number in range(count):
        _, card_number = members[number % len(members)]
        receipt_id = f"{tag}-{number}-{uuid.uuid4().hex[:8]}"
        payload = common.purchase_payload(receipt_id, card_number, 1_000 + (number % 50) * 100, purchased_at)
        requests.append(common.signed_post(signer, "/partner/v1/purchases", payload, f"earn-{receipt_id}"))
    return requests


def _load(base_url: str, requests: list[common.PreparedRequest], clients: int,
          campaign_id: int | None) -> Load:
    work: queue.Queue = queue.Queue()  # type: ignore[type-arg]
    for request in requests:
        work.put(request)
    statuses: list[int] = []
    latencies_ms: list[float] = []
    tills = [_Till(base_url, work, statuses, latencies_ms) for _ in range(clients)]
    started = time.perf_counter()
    for till in tills:
        till.start()
    for till in tills:
        till.join(timeout=600)
    return Load(statuses, latencies_ms, time.perf_counter() - started, campaign_id)


def _start_campaign(hub, partner: common.BenchPartner, name: str, budget_points: int | None) -> int:  # type: ignore[no-untyped-def]
    """A partner-funded campaign at ``partner``, running since an hour ago, with or without a points budget."""
    from alliance.services.campaigns import add_campaign

    now = common.utc_now()
    with hub.unit_of_work() as uow:
        campaign_id = add_campaign(uow.session, code=partner.code, name=name, funded_by="partner",
                                   multiplier=CAMPAIGN_MULTIPLIER, bonus_points=CAMPAIGN_BONUS_POINTS,
                                   min_amount_minor=0, starts_at=now - timedelta(hours=1),
                                   ends_at=now + timedelta(days=1), now=now, actor=ACTOR,
                                   budget_points=budget_points)
        uow.commit()
    return campaign_id


def _stop_campaign(hub, campaign_id: int) -> None:  # type: ignore[no-untyped-def]
    from alliance.services.campaigns import stop_campaign

    with hub.unit_of_work() as uow:
        stop_campaign(uow.session, campaign_id=campaign_id, reason="benchmark: next configuration",
                      now=common.utc_now(), actor=ACTOR)
        uow.commit()


@dataclass(frozen=True)
class Awards:
    """What one campaign gave: purchases awarded, points in its award rows, and its budget as counted."""

    purchases: int
    points: int
    budget_points: int | None
    budget_used_points: int


def _awards(hub, campaign_id: int) -> Awards:  # type: ignore[no-untyped-def]
    from alliance.models import Campaign, CampaignAward

    with hub.unit_of_work() as uow:
        purchases, points = uow.session.execute(
            # A partner-funded campaign has one payer: one award row per purchase it awarded.
            select(func.count(), func.coalesce(func.sum(CampaignAward.points), 0))
            .where(CampaignAward.campaign_id == campaign_id)).one()
        budget, used = uow.session.execute(select(Campaign.budget_points, Campaign.budget_used_points)
                                           .where(Campaign.id == campaign_id)).one()
    return Awards(int(purchases), int(points), budget, int(used))


def _load_average() -> str:
    """The 1-, 5- and 15-minute load averages of the machine."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def run(context: dict) -> list[dict]:  # type: ignore[type-arg]
    """Earns/s, p50 and p99 in each configuration, the ratios, and (d)'s budget checks."""
    sizes = SIZES[context["scale"]]
    artifacts: Path = context["artifacts"]
    load_before = _load_average()
    app, environment = common.migrated_hub(context["postgres"], "bench_campaign", artifacts)
    hub = app.extensions["alliance"]
    seeded_at = common.utc_now() - timedelta(hours=1)
    partner, = common.seed_partners(hub, 1, seeded_at)
    members = common.seed_members(hub, sizes["members"], seeded_at)
    loads: dict[str, list[Load]] = {"a": [], "b": [], "c": [], "d": []}
    with common.Gunicorn(context, "alliance.wsgi:app", environment, ready_path="/healthz", name="campaign") as server:
        warm_up = _load(server.base_url, _purchases(partner, members, sizes["warm_up"], "warm-up"),
                        sizes["clients"], None)
        if warm_up.created != len(warm_up.statuses):
            raise RuntimeError(f"the warm-up was refused: statuses {sorted(set(warm_up.statuses))}")
        campaign_id: int | None = None
        running = None
        for number, configuration in enumerate(ROUNDS):
            if configuration != running:
                if campaign_id is not None:
                    _stop_campaign(hub, campaign_id)
                    campaign_id = None
                if configuration == "b":
                    campaign_id = _start_campaign(hub, partner, f"bench (b) {number}", None)
                elif configuration == "c":
                    # Far more than the run can award: every purchase's award fits.
                    campaign_id = _start_campaign(hub, partner, f"bench (c) {number}", 10**12)
                running = configuration
            requests = _purchases(partner, members, sizes["purchases"], f"{configuration}{number}")
            loads[configuration].append(_load(server.base_url, requests, sizes["clients"], campaign_id))
        if campaign_id is not None:
            _stop_campaign(hub, campaign_id)
        per_purchase = _per_purchase(hub, loads["c"])
        budget = max(1, int(per_purchase * sizes["purchases"] * BUDGET_SHARE))
        campaign_id = _start_campaign(hub, partner, "bench (d)", budget)
        requests = _purchases(partner, members, sizes["purchases"], "d")
        loads["d"].append(_load(server.base_url, requests, sizes["clients"], campaign_id))
        _stop_campaign(hub, campaign_id)
    audit_green, audit_note = common.run_audit_ok(hub)
    checks = _checks(hub, loads)
    hub.engine.dispose()
    return _figures(loads, sizes, checks, audit_green, audit_note,
                    f"load average before {load_before}, after {_load_average()}")


def _per_purchase(hub, loads: list[Load]) -> Decimal:  # type: ignore[no-untyped-def]
    """(c)'s points awarded per purchase awarded, measured."""
    awarded = [_awards(hub, campaign_id) for campaign_id in {load.campaign_id for load in loads}
               if campaign_id is not None]
    purchases = sum(awards.purchases for awards in awarded)
    if not purchases:
        raise RuntimeError("(c) awarded nothing: no campaign ran")
    return Decimal(sum(awards.points for awards in awarded)) / purchases


def _checks(hub, loads: dict[str, list[Load]]) -> dict[str, tuple[bool, str]]:  # type: ignore[no-untyped-def]
    """Each configuration's books: every purchase awarded in (b) and (c); (d)'s budget exact and spent part-way."""
    checks = {}
    for configuration in ("b", "c"):
        created: dict[int, int] = {}
        for load in loads[configuration]:
            assert load.campaign_id is not None
            created[load.campaign_id] = created.get(load.campaign_id, 0) + load.created
        problems = []
        for campaign_id, count in sorted(created.items()):
            awards = _awards(hub, campaign_id)
            if awards.purchases != count:
                problems.append(f"campaign {campaign_id} awarded {awards.purchases} of {count} purchases")
            if awards.budget_points is not None and awards.points != awards.budget_used_points:
                problems.append(f"campaign {campaign_id} holds {awards.points} awarded points but counted "
                                f"{awards.budget_used_points}")
        checks[configuration] = (not problems, "; ".join(problems) or "every purchase awarded")
    load, = loads["d"]
    assert load.campaign_id is not None
    awards = _awards(hub, load.campaign_id)
    assert awards.budget_points is not None
    within = awards.budget_used_points <= awards.budget_points
    exact = awards.points == awards.budget_used_points
    part_way = 0 < awards.purchases < load.created
    checks["d"] = (within and exact and part_way, (
        f"budget {awards.budget_points} points, used {awards.budget_used_points} "
        f"({'within' if within else 'EXCEEDED'}); award rows hold {awards.points} points "
        f"({'equal' if exact else 'NOT equal'}); {awards.purchases} of {load.created} purchases awarded"
        + ("" if part_way else " (the budget did NOT run out part-way)")))
    return checks


def _pooled(loads: list[Load]) -> tuple[float, float, float, int, int]:
    """Earns/s over the loads' total time, p50 and p99 over all their requests, 201s, and the others."""
    latencies = [latency for load in loads for latency in load.latencies_ms]
    created = sum(load.created for load in loads)
    refused = sum(len(load.statuses) for load in loads) - created
    rate = created / sum(load.elapsed_s for load in loads)
    return rate, common.percentile(latencies, 0.5), common.percentile(latencies, 0.99), created, refused


def _figures(loads: dict[str, list[Load]], sizes: dict, checks: dict[str, tuple[bool, str]],  # type: ignore[type-arg]
             audit_green: bool, audit_note: str, load_note: str) -> list[dict]:  # type: ignore[type-arg]
    pooled = {configuration: _pooled(configuration_loads) for configuration, configuration_loads in loads.items()}
    floors = {"b": "a", "c": "b", "d": "b"}
    figures = []
    for configuration in ("a", "b", "c", "d"):
        rate, p50, p99, created, refused = pooled[configuration]
        each = ", ".join(common.decimal_text(load.created / load.elapsed_s, 1) for load in loads[configuration])
        note = (f"p50 {common.decimal_text(p50)} ms, p99 {common.decimal_text(p99)} ms; {created} created, "
                f"{refused} other statuses; {len(loads[configuration])} load(s) of {sizes['purchases']} purchases "
                f"from {sizes['clients']} clients on {sizes['members']} members of 1 partner (each load: {each} "
                f"earns/s)")
        if configuration in checks:
            note += f"; {checks[configuration][1]}"
        floor = floors.get(configuration)
        row = common.figure(
            BENCHMARK, NAMES[configuration], rate, "earns/s",
            floor=NAMES[floor].split(" ", 1)[0] if floor else None,
            floor_value=pooled[floor][0] if floor else None,
            ratio=rate / pooled[floor][0] if floor else None, note=note)
        if configuration == "a":
            row["note"] += f"; {load_note}"
        figures.append(row)
    for configuration, floor in (("b", "a"), ("c", "b"), ("d", "b")):
        figures.append(common.figure(
            BENCHMARK, f"{NAMES[configuration].split(' ', 1)[0]} p99", pooled[configuration][2], "ms",
            floor=f"{floor} p99", floor_value=pooled[floor][2], ratio=pooled[configuration][2] / pooled[floor][2],
            ratio_unit="x", note=f"p50 {common.decimal_text(pooled[configuration][1])} ms against "
                                 f"{common.decimal_text(pooled[floor][1])} ms"))
    refused = sum(pooled[configuration][4] for configuration in pooled)
    sound = all(ok for ok, _ in checks.values()) and audit_green and refused == 0
    figures.append(common.figure(
        BENCHMARK, "(d) budget never exceeded, awards = budget used", 0 if sound else 1, "failures",
        target="budget never exceeded, awarded = used, every purchase 201, audit green", met=sound,
        note=f"{checks['d'][1]}; {refused} requests not 201; {audit_note}", places=0))
    return figures


if __name__ == "__main__":
    common.standalone(run)
