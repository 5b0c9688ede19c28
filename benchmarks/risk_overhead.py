"""What the risk controls' default policy costs the signed earn: the earn with the policy on and off.

Two hubs under gunicorn with the same settings, each on its own database of the same
PostgreSQL server, seeded identically: the "on" database is seeded by
``common.earning_hub`` and the "off" one is a copy of it (``CREATE DATABASE ... TEMPLATE``,
so the same partners, keys, members and cards; both hubs share the instance folder and
so its keys):

- **on**: nothing stored in ``risk_policy_versions``, so the built-in
  ``alliance.domain.risk.DEFAULT_POLICY`` is in force, as on a hub whose operator has
  not set a policy: every earn reads the figures of the limits on earns, joined to the
  first read its idempotency claim carries (no statement of its own);
- **off**: one stored version with no limits at all, in force since before the seed
  (``alliance.services.risk.set_policy``): the earn asks the policy and reads nothing.

Both get the signed earn load of ``benchmarks.http_earn`` (its sized loads) at one
connection count, in pairs whose order alternates (off, on; on, off; ...), so that the
machine's drift lands on both sides; the overhead is the median over the pairs of each
pair's throughput lost (1 − on ÷ off), and the p99 ratio likewise. Target: ≤ 5%.

The default policy must not fire on the benchmark's honest traffic (a hold or a flag
writes a decision, and would measure something else): the purchase reports cycle
through many members, each side continuing where its last load stopped, so no card gets
near the 20 purchases an hour of ``card-earns-hour`` (nor a member near the points of
``member-earn-points-day``); the reports carry no terminal, so ``terminal-earns-10min``
applies to none of them. After the loads the "on" database is shown to have kept no
decision, its busiest card's purchases are counted, and no purchase has a terminal.
Before the loads, each side also gets earns sent in process through its WSGI app, in
rounds whose order alternates (off, on; on, off; ...): the SQL statements each earn sends
are counted at psycopg (as ``http_profile`` does; the "on" side must send no more than
the "off" side) and the CPU each earn costs this process is timed, the risk check's own cost in
Python, apart from the machine's noise over HTTP.
"""

from __future__ import annotations

import itertools
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import psycopg

from benchmarks import common
from benchmarks.http_earn import _rung

BENCHMARK = "risk overhead"
ON_DATABASE = "bench_risk_on"
OFF_DATABASE = "bench_risk_off"
# Members: enough that the requests of every load, calibration and warm-up of one side,
# spread evenly, leave each card far below card-earns-hour's 20 purchases an hour.
SIZES = {"full": {"partners": 4, "members": 5000, "min_requests": 4_000, "duration_s": 8, "pairs": 6,
                  "in_process_rounds": 4, "in_process_earns": 100},
         "quick": {"partners": 2, "members": 1000, "min_requests": 1_000, "duration_s": 3, "pairs": 2,
                   "in_process_rounds": 2, "in_process_earns": 50}}
# As observability_overhead: at 4 connections both cores are busy and the hub is within a
# few percent of its best rung, so a cost per request shows as throughput lost.
CONNECTIONS = 4
OVERHEAD_TARGET = 0.05
WARM_UP_REQUESTS = 100
WARM_UP_S = 2
IN_PROCESS_WARM_UP = 20
EARN_ROUTE = "/partner/v1/purchases"


@dataclass
class Side:
    """One of the two hubs, the purchase reports it is sent, and its loads."""

    name: str
    server: common.Gunicorn
    make_requests: Callable[[int, str], list[common.PreparedRequest]]
    rate_per_s: float = 0.0
    loads: list[common.LoadResult] = field(default_factory=list)


def _purchase_maker(partners, members) -> Callable[[int, str], list[common.PreparedRequest]]:  # type: ignore[no-untyped-def]
    """Purchase reports that go on through the members from where the last batch stopped.

    The same cards in the same order on both sides; a member reports at partner
    (its position mod the partners), so each card earns at one partner.
    """
    from partners_sdk.signing import RequestSigner

    signers = [RequestSigner(partner.key_id, partner.private_key) for partner in partners]
    cursor = itertools.count()

    def make(count: int, tag: str) -> list[common.PreparedRequest]:
        purchased_at = common.recent()
        requests = []
        for number in itertools.islice(cursor, count):
            position = number % len(members)
            _, card_number = members[position]
            receipt_id = f"{tag}-{number}-{uuid.uuid4().hex[:8]}"
            payload = common.purchase_payload(receipt_id, card_number, 1_000 + (number % 50) * 100, purchased_at)
            requests.append(common.signed_post(signers[position % len(signers)], EARN_ROUTE, payload,
                                               f"earn-{receipt_id}"))
        return requests

    return make


def _copy_database(postgres, source: str, target: str) -> str:  # type: ignore[no-untyped-def]
    """``target`` as a copy of ``source`` (which nobody may be connected to); returns its SQLAlchemy URL."""
    with psycopg.connect(common.admin_url(postgres), autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{target}" WITH (FORCE)')
        connection.execute(f'CREATE DATABASE "{target}" TEMPLATE "{source}"')
    return postgres.url(target)


def _in_process(hub_app, requests: list[common.PreparedRequest]) -> tuple[int, float]:  # type: ignore[no-untyped-def]
    """Send ``requests`` through the app in process: (SQL statements psycopg sent, CPU seconds this process spent).

    The statements are counted below SQLAlchemy, as ``http_profile`` counts them (the
    COMMIT is not among them); the CPU is the whole request path's in Python, the
    PostgreSQL server's share not included.
    """
    client = hub_app.test_client()
    counted = 0
    execute = psycopg.Cursor.execute

    def _count(cursor, query, *args, **kwargs):  # type: ignore[no-untyped-def]
        nonlocal counted
        counted += 1
        return execute(cursor, query, *args, **kwargs)

    psycopg.Cursor.execute = _count  # type: ignore[method-assign]
    try:
        started = time.process_time()
        for item in requests:
            reply = client.post(item.path, data=item.body, headers=item.headers)
            if reply.status_code != 201:
                raise RuntimeError(f"earn in process: {reply.status_code} {reply.get_data(as_text=True)[:200]}")
        cpu_s = time.process_time() - started
    finally:
        psycopg.Cursor.execute = execute  # type: ignore[method-assign]
    return counted, cpu_s


def _in_process_rounds(apps: dict[str, Any], makers: dict[str, Callable[[int, str], list[common.PreparedRequest]]],  # type: ignore[type-arg]
                       sizes: dict) -> dict[str, list[tuple[int, float]]]:
    """Both sides' earns in process, after a warm-up each, in rounds whose order alternates like the loads'."""
    for name, app in apps.items():
        _in_process(app, makers[name](IN_PROCESS_WARM_UP, f"{name}-in-process-warm-up"))
    rounds: dict[str, list[tuple[int, float]]] = {"on": [], "off": []}
    for number in range(sizes["in_process_rounds"]):
        for name in (("off", "on") if number % 2 == 0 else ("on", "off")):
            rounds[name].append(_in_process(apps[name], makers[name](sizes["in_process_earns"],
                                                                     f"{name}-in-process{number + 1}")))
    return rounds


def run(context: dict) -> list[dict]:  # type: ignore[type-arg]
    """Alternate the signed earn load between the hub under the default risk policy and one without limits."""
    from alliance import create_app
    from alliance.config import Settings

    sizes = SIZES[context["scale"]]
    artifacts: Path = context["artifacts"]
    postgres = context["postgres"]
    on_app, on_environment, on_hub, partners, members = common.earning_hub(
        postgres, ON_DATABASE, artifacts, partners=sizes["partners"], members=sizes["members"])
    on_hub.engine.dispose()
    off_environment = {**on_environment, "ALLIANCE_DATABASE_URL": _copy_database(postgres, ON_DATABASE, OFF_DATABASE)}
    off_app = create_app(Settings.from_env(off_environment))
    off_hub = off_app.extensions["alliance"]
    common.store_policy_without_limits(off_hub, "benchmark: the earn with no risk limits")
    make_on, make_off = _purchase_maker(partners, members), _purchase_maker(partners, members)
    in_process = _in_process_rounds({"on": on_app, "off": off_app}, {"on": make_on, "off": make_off}, sizes)
    on_hub.engine.dispose()
    off_hub.engine.dispose()
    with common.Gunicorn(context, "alliance.wsgi:app", on_environment, ready_path="/healthz",
                         name="risk-on") as on_server, \
            common.Gunicorn(context, "alliance.wsgi:app", off_environment, ready_path="/healthz",
                            name="risk-off") as off_server:
        on, off = Side("on", on_server, make_on), Side("off", off_server, make_off)
        for side in (off, on):
            warm_up = artifacts / f"risk-{side.name}-warm-up.requests"
            common.write_request_file(warm_up, side.make_requests(WARM_UP_REQUESTS, f"{side.name}-warm-up"))
            common.run_wrk(side.server.base_url, warm_up, artifacts, duration_s=WARM_UP_S, connections=CONNECTIONS)
            side.rate_per_s = common.calibrated_rate(side.server.base_url, side.make_requests, artifacts,
                                                     f"risk-{side.name}", first_count=sizes["min_requests"])
        for pair in range(sizes["pairs"]):
            for side in ((off, on) if pair % 2 == 0 else (on, off)):
                side.loads.append(_rung(side.server, side.make_requests, artifacts, f"risk-{side.name}-pair{pair + 1}",
                                        CONNECTIONS, sizes, side.rate_per_s))
        time.sleep(1)  # requests wrk left in flight at its deadline finish
    checks = {"on": _database_checks(postgres, ON_DATABASE), "off": _database_checks(postgres, OFF_DATABASE)}
    audits = [common.run_audit_ok(hub) for hub in (on_hub, off_hub)]
    on_hub.engine.dispose()
    off_hub.engine.dispose()
    return _figures(on, off, _InProcess(in_process, sizes["in_process_earns"]), checks, audits)


def _database_checks(postgres, database: str) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    """What a side's database kept: decisions by limit, policy versions, the busiest card and member, terminals."""
    with psycopg.connect(common.admin_url(postgres, database)) as connection:
        def one(query: str) -> Any:
            return connection.execute(query).fetchone()[0]  # type: ignore[index]

        decisions = connection.execute(
            "SELECT action, count(*), min(evidence::text) FROM risk_decisions GROUP BY action").fetchall()
        return {
            "decisions": sum(row[1] for row in decisions),
            "decision_kinds": [f"{row[1]} {row[0]} (e.g. {row[2][:120]})" for row in decisions],
            "versions": one("SELECT count(*) FROM risk_policy_versions"),
            "purchases": one("SELECT count(*) FROM purchases"),
            "busiest_card": one("SELECT coalesce(max(n), 0) FROM (SELECT count(*) AS n FROM purchases "
                                "WHERE reported_at > now() - interval '1 hour' GROUP BY card_id) AS per_card"),
            "busiest_member_points": one(
                "SELECT coalesce(max(p), 0) FROM (SELECT sum(points_partner + points_hub) AS p FROM purchases "
                "WHERE reported_at > now() - interval '1 day' GROUP BY member_id) AS per_member"),
            "with_terminal": one("SELECT count(*) FROM purchases WHERE terminal_id IS NOT NULL"),
        }


def _valid(result: common.LoadResult) -> bool:
    return result.refused == 0 and result.socket_errors == 0 and not result.exhausted


def _rounds_text(loads: list[common.LoadResult]) -> str:
    return "; ".join(f"{common.decimal_text(load.ok_per_s, 1)} req/s p99 {common.decimal_text(load.p99_ms)} ms"
                     for load in loads)


@dataclass(frozen=True)
class _InProcess:
    """The in-process rounds' figures: statements per earn, CPU per earn, and the pairs' CPU added."""

    rounds: dict[str, list[tuple[int, float]]]
    earns: int

    def statements(self, side: str) -> float:
        """SQL statements per earn over every round of ``side``."""
        return sum(count for count, _ in self.rounds[side]) / (self.earns * len(self.rounds[side]))

    def cpu_ms(self, side: str) -> list[float]:
        """CPU per earn in each round of ``side``, in ms."""
        return [cpu_s / self.earns * 1000 for _, cpu_s in self.rounds[side]]

    def added_ms(self) -> list[float]:
        """Each pair's CPU per earn on the "on" side less the "off" side's, in ms."""
        return [on - off for on, off in zip(self.cpu_ms("on"), self.cpu_ms("off"), strict=True)]


def _policy_check(in_process: _InProcess, checks: dict[str, dict[str, Any]]) -> tuple[bool, str]:
    """The "on" side ran under the default policy and it never fired; the "off" side under a stored empty one."""
    on, off = checks["on"], checks["off"]
    statements = {side: in_process.statements(side) for side in ("on", "off")}
    extra = statements["on"] - statements["off"]
    from alliance.domain.risk import DEFAULT_POLICY_DATA

    caps = {limit["name"]: limit for limit in DEFAULT_POLICY_DATA["limits"]}
    card_cap, points_cap = caps["card-earns-hour"]["max_count"], caps["member-earn-points-day"]["max_points"]
    ok = (on["versions"] == 0 and off["versions"] == 1 and on["decisions"] == 0 and off["decisions"] == 0
          and abs(extra) < 0.05 and on["with_terminal"] == 0 and off["with_terminal"] == 0
          and on["busiest_card"] <= card_cap and on["busiest_member_points"] <= points_cap)
    earns = in_process.earns * len(in_process.rounds["on"])
    note = (f"SQL statements per earn (psycopg, {earns} earns a side in process): on "
            f"{common.decimal_text(statements['on'], 1)}, off {common.decimal_text(statements['off'], 1)}; policy "
            f"versions stored: on {on['versions']} (default in force), off {off['versions']} (no limits); decisions "
            f"kept: on {on['decisions']}"
            + (f" ({'; '.join(on['decision_kinds'])[:300]})" if on["decision_kinds"] else "")
            + f", off {off['decisions']}; purchases committed: on {on['purchases']}, off {off['purchases']}; busiest "
            f"card in the last hour on the on side: {on['busiest_card']} purchases (card-earns-hour holds past "
            f"{card_cap}); busiest member's points in the day: {on['busiest_member_points']} (member-earn-points-day "
            f"holds past {points_cap:,}); purchases with a terminal: on {on['with_terminal']}, off "
            f"{off['with_terminal']} (terminal-earns-10min applies to none)")
    return ok, note


def _figures(on: Side, off: Side, in_process: _InProcess, checks: dict[str, dict[str, Any]],  # type: ignore[type-arg]
             audits: list[tuple[bool, str]]) -> list[dict]:
    on_rate = common.median([load.ok_per_s for load in on.loads])
    off_rate = common.median([load.ok_per_s for load in off.loads])
    on_p99 = common.median([load.p99_ms for load in on.loads])
    off_p99 = common.median([load.p99_ms for load in off.loads])
    pair_overheads = [1 - on_load.ok_per_s / off_load.ok_per_s
                      for on_load, off_load in zip(on.loads, off.loads, strict=True)]
    pair_p99_ratios = [on_load.p99_ms / off_load.p99_ms for on_load, off_load in zip(on.loads, off.loads, strict=True)]
    overhead = common.median(pair_overheads)
    p99_ratio = common.median(pair_p99_ratios)
    all_valid = all(_valid(load) for load in (*on.loads, *off.loads))
    policy_ok, policy_note = _policy_check(in_process, checks)
    on_cpu, off_cpu = common.median(in_process.cpu_ms("on")), common.median(in_process.cpu_ms("off"))
    added_cpu = common.median(in_process.added_ms())
    audit_green = all(green for green, _ in audits)
    audit_note = "audit: on " + audits[0][1] + ", off " + audits[1][1]
    invalid = [] if all_valid else ["some loads were not valid (non-2xx, socket errors or ran out): see the rounds"]
    setting = (f"{len(pair_overheads)} pairs of {CONNECTIONS}-connection loads, order alternating (off, on; on, off; "
               f"...); gunicorn gthread {common.GUNICORN_WORKERS}x{common.GUNICORN_THREADS}, partner rate limits off")
    return [
        common.figure(BENCHMARK, "signed earn, no risk limits (median of rounds)", off_rate, "req/s",
                      note=f"p99 {common.decimal_text(off_p99)} ms (median); rounds: {_rounds_text(off.loads)}"),
        common.figure(BENCHMARK, "signed earn, default risk policy (median of rounds)", on_rate, "req/s",
                      floor="off", floor_value=off_rate, ratio=on_rate / off_rate,
                      note=f"p99 {common.decimal_text(on_p99)} ms (median); rounds: {_rounds_text(on.loads)}"),
        common.figure(BENCHMARK, "signed earn p99, default policy against none (median of pairs' ratios)", p99_ratio,
                      "x", note="per pair: " + ", ".join(common.decimal_text(value, 2) for value in pair_p99_ratios)
                      + f"; ratio of medians {common.decimal_text(on_p99 / off_p99, 2)}"),
        common.figure(BENCHMARK, "throughput lost to the default risk policy (median of pairs)", overhead * 100, "%",
                      target=f"<= {OVERHEAD_TARGET:.0%}",
                      met=overhead <= OVERHEAD_TARGET and all_valid and policy_ok and audit_green,
                      note="per pair: "
                           + ", ".join(f"{common.decimal_text(value * 100, 1)}%" for value in pair_overheads)
                           + f"; ratio of medians {common.decimal_text((1 - on_rate / off_rate) * 100, 1)}%; "
                           + "; ".join([*invalid, audit_note, setting])),
        common.figure(BENCHMARK, "CPU per earn in process, default policy (median of rounds)", on_cpu, "ms",
                      floor="off", floor_value=off_cpu, ratio=on_cpu / off_cpu, ratio_unit="x",
                      note=f"the whole request path in Python through the WSGI app, PostgreSQL's share not counted; "
                           f"{len(in_process.rounds['on'])} rounds of {in_process.earns} earns a side, order "
                           f"alternating; added per pair: "
                           + ", ".join(f"{common.decimal_text(value)} ms" for value in in_process.added_ms())
                           + f" (median {common.decimal_text(added_cpu)} ms); rounds on: "
                           + ", ".join(common.decimal_text(value) for value in in_process.cpu_ms("on"))
                           + "; off: " + ", ".join(common.decimal_text(value) for value in in_process.cpu_ms("off"))),
        common.figure(BENCHMARK, "the default policy was evaluated and never fired", checks["on"]["decisions"],
                      "decisions", target="0 decisions; on sends no more statements per earn", met=policy_ok,
                      note=policy_note, places=0),
    ]


if __name__ == "__main__":
    common.standalone(run)
