"""Reward orders under crashes: ordered at one partner's desk with points earned at another, then
fulfilled or failed by their supplier, through gunicorn while workers are SIGKILLed and PostgreSQL crashes.

The hub runs under real gunicorn on its own durable PostgreSQL cluster, as in
``test_crash_safety``. Members earn at ``north``; the ``desk`` orders rewards for them
(card + PIN) from ``gifts``, which fulfils or fails each order (a seeded choice). Every
call is resent with the same ``Idempotency-Key`` until it has a definite answer, and the
desk threads (``load_client.RewardDeskThread``) keep their own tally. Afterwards each
acknowledged order is in the books exactly once, with one capture if fulfilled and its
hold released if failed, balances equal the tally, the audit is green, and the
supplier's statements reimburse exactly the items it fulfilled.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import select, text

from alliance.extensions import HubState
from alliance.models import JournalTransaction, RedemptionHold, RewardOrder
from alliance.models.rewards import Reward
from alliance.services import rewards
from alliance.services.accounts import member_balances
from alliance.services.audit import run_audit
from settlement.closing import close_due_cycles
from tests.chaos.load_client import CountingTransport, Customer, RewardDeskThread, RewardOffer, RewardTally, Till
from tests.chaos.support import ChaosReport, Scale, ScenarioFigures, stop_process
from tests.chaos.test_crash_safety import (  # noqa: F401 - durable_cluster and durable_hub are fixtures
    Faults,
    LoadShape,
    drive,
    durable_cluster,
    durable_hub,
    purchase_discrepancies,
    start_gunicorn,
)
from tests.factories import make_member_with_pin, make_signing_partner, set_risk_policy
from tests.postgres_server import PostgresServer
from tests.sdk_support import free_port

pytestmark = pytest.mark.postgresql

PIN = "5821"
EARN_AT, DESK, SUPPLIER = "north", "desk", "gifts"
# Half the orders or so are failed, so both endings are exercised under every fault.
FULFIL_SHARE = 0.6


@dataclass(frozen=True)
class Supplied:
    """A reward ``gifts`` supplies: its kind, its points and reimbursement per item, its first stock."""

    offer: RewardOffer
    kind: str
    unit_price_minor: int
    stock: int | None


SUPPLIED = (Supplied(RewardOffer("mug", 150, 3), "goods", 120, 100_000),
            Supplied(RewardOffer("phone-credit", 25, 10), "bill_credit", 20, None))
SHAPES = {"small": LoadShape(load_s=10, tills=3, members_per_till=2, workers=3, kill_interval_s=1.5),
          "full": LoadShape(load_s=90, tills=6, members_per_till=3, workers=4, kill_interval_s=1.0)}


def plant_partners_rewards_and_members(hub: HubState, shape: LoadShape) -> tuple[list[Till], list[list[Customer]]]:
    """The three partners with keys (``gifts`` settling daily in UTC), its two listed rewards, each thread's members.

    As in ``test_crash_safety``, the hub runs under a risk policy without limits: the
    load earns and orders on a few cards far faster than the built-in policy lets through.
    """
    set_risk_policy(hub)
    created = datetime.now(timezone.utc) - timedelta(days=1)
    tills = []
    for code in (EARN_AT, DESK, SUPPLIER):
        terms = {"settlement_cycle": "daily", "time_zone": "UTC"} if code == SUPPLIER else {}
        partner = make_signing_partner(hub, now=created, code=code, **terms)
        tills.append(Till(code, partner.key_id, partner.private_key))
    with hub.unit_of_work() as uow:
        for supplied in SUPPLIED:
            rewards.propose_reward(
                uow.session, supplier=SUPPLIER, code=supplied.offer.code, kind=supplied.kind,
                title=supplied.offer.code.replace("-", " ").title(), points_price=supplied.offer.points_price,
                unit_price_minor=supplied.unit_price_minor, stock=supplied.stock,
                return_days=0 if supplied.kind == "bill_credit" else 14, actor="console:pam", now=created)
            rewards.approve_reward(uow.session, code=supplied.offer.code, actor="console:paul", now=created)
        uow.commit()
    customers = []
    for _ in range(shape.tills):
        members = [make_member_with_pin(hub, now=created, pin=PIN) for _ in range(shape.members_per_till)]
        customers.append([Customer(member.member_id, member.card_number, PIN) for member in members])
    return tills, customers


def run_reward_load(base_url: str, tills: list[Till], customers: list[list[Customer]], master_pid: int,
                    cluster: PostgresServer, shape: LoadShape) -> tuple[list[RewardDeskThread], Faults,
                                                                        CountingTransport]:
    """The desk threads and the faults together for ``shape.load_s`` seconds, then every order in hand ended."""
    return drive(lambda number, transport, stop: RewardDeskThread(
        number, base_url, tills, customers[number], transport, stop, earn_at=EARN_AT, desk=DESK, supplier=SUPPLIER,
        offers=[supplied.offer for supplied in SUPPLIED], fulfil_share=FULFIL_SHARE), master_pid, cluster, shape)


def order_discrepancies(session, tally: RewardTally) -> list[str]:  # type: ignore[no-untyped-def]
    """Each acknowledged order once, as acknowledged; one capture if fulfilled, its hold released if failed."""
    rows = session.execute(
        select(RewardOrder.channel, RewardOrder.reference, RewardOrder.member_id, Reward.code, RewardOrder.items,
               RewardOrder.points, RewardOrder.status, RewardOrder.hold_id, RedemptionHold.status,
               RedemptionHold.reference)
        .join(Reward, Reward.id == RewardOrder.reward_id)
        .join(RedemptionHold, RedemptionHold.id == RewardOrder.hold_id)).all()
    postings = Counter(session.execute(select(JournalTransaction.hold_id, JournalTransaction.kind)
                                       .where(JournalTransaction.hold_id.is_not(None))).all())
    found = Counter((row.channel, row.reference) for row in rows)
    problems = [f"order {key} placed {count} times" for key, count in found.items() if count != 1]
    problems += [f"acknowledged order {key} is missing" for key in tally.orders if key not in found]
    # Holds of reward orders are named after their order: one without its order was half-applied.
    reward_holds = Counter(session.scalars(select(RedemptionHold.reference)
                                           .where(RedemptionHold.reference.like("reward:%"))))
    problems += [f"hold {reference} held {count} times" for reference, count in reward_holds.items() if count != 1]
    ordered_holds = {row[9] for row in rows}
    problems += [f"hold {reference} has no order" for reference in reward_holds if reference not in ordered_holds]
    expected_hold = {"fulfilled": ("captured", 1, 0), "failed": ("voided", 0, 1)}
    for row in rows:
        key = (row.channel, row.reference)
        acknowledged = tally.orders.get(key)
        if acknowledged is None:
            problems.append(f"order {key} ({row.status}) was never acknowledged")
            continue
        stored = (row.member_id, row.code, row.items, row.points, row.status)
        if stored != (acknowledged.member_id, acknowledged.reward, acknowledged.items, acknowledged.points,
                      acknowledged.status):
            problems.append(f"order {key}: stored {stored}, acknowledged {acknowledged}")
        hold_status, captures, releases = expected_hold.get(acknowledged.status, ("?", -1, -1))
        actual = (row[8], postings[(row.hold_id, "hold")], postings[(row.hold_id, "reward_capture")],
                  postings[(row.hold_id, "release")])
        if actual != (hold_status, 1, captures, releases):
            problems.append(f"order {key} ({acknowledged.status}): hold {actual[0]} with {actual[1]} hold, "
                            f"{actual[2]} reward_capture and {actual[3]} release postings")
    return problems


def stock_discrepancies(session, tally: RewardTally) -> list[str]:  # type: ignore[no-untyped-def]
    """A stocked reward has lost exactly the items of its fulfilled orders (a failed order gives them back)."""
    problems = []
    for supplied in SUPPLIED:
        if supplied.stock is None:
            continue
        taken = sum(order.items for order in tally.orders.values()
                    if order.reward == supplied.offer.code and order.status == "fulfilled")
        stock = session.scalar(select(Reward.stock).where(Reward.code == supplied.offer.code))
        if stock != supplied.stock - taken:
            problems.append(f"{supplied.offer.code}: stock {stock}, expected {supplied.stock} - {taken}")
    return problems


def ledger_discrepancies(hub: HubState, tally: RewardTally, customers: list[list[Customer]]) -> list[str]:
    """The purchases, orders and stock against the tally, each member's balance (earned minus fulfilled), the audit."""
    with hub.unit_of_work() as uow:
        session = uow.session
        problems = order_discrepancies(session, tally) + stock_discrepancies(session, tally)
        codes = dict(session.execute(text("SELECT id, code FROM partners")).all())
        problems += purchase_discrepancies(session, codes, tally)
        for customer in (customer for group in customers for customer in group):
            earned = sum(points for member_id, points in tally.purchases.values() if member_id == customer.member_id)
            spent = sum(order.points for order in tally.orders.values()
                        if order.member_id == customer.member_id and order.status == "fulfilled")
            expected = {"available": earned - spent, "pending": 0, "held": 0}
            actual = member_balances(session, customer.member_id)
            if actual != expected or tally.balance[customer.member_id] != earned - spent:
                problems.append(f"member {customer.member_id}: ledger {actual}, earned {earned} - spent {spent}, "
                                f"running tally {tally.balance[customer.member_id]}")
        report = run_audit(session)
        if not report.ok:
            problems.append(f"audit failed at {report.first_failure.name}: {report.first_failure.first_problem}")
    return problems


def statement_discrepancies(hub: HubState, tally: RewardTally) -> tuple[list[str], int]:
    """Close every cycle of the supplier up to tomorrow; its ``rewards_supplied`` lines are its fulfilled orders.

    Returns the problems and how many statements closed.
    """
    closed = close_due_cycles(hub.session_factory, now=datetime.now(timezone.utc) + timedelta(days=2),
                              signer=hub.statement_signer, partner_code=SUPPLIER)
    supplied: Counter = Counter()
    other_item_lines = []
    for statement in closed:
        for line in json.loads(statement.document_json)["lines"]:
            if line["line_kind"] == "rewards_supplied":
                supplied[(line["reference"], "items")] += line["count"]
                supplied[(line["reference"], "points")] += line["points"]
                supplied[(line["reference"], "amount_minor")] += line["amount_minor"]
            elif line["line_kind"].startswith("rewards_"):
                other_item_lines.append(line)
    expected: Counter = Counter()
    prices = {item.offer.code: item.unit_price_minor for item in SUPPLIED}
    for order in tally.orders.values():
        if order.status == "fulfilled":
            expected[(order.reward, "items")] += order.items
            expected[(order.reward, "points")] += order.points
            expected[(order.reward, "amount_minor")] -= order.items * prices[order.reward]
    problems = [f"rewards_supplied {key}: statements {supplied[key]}, fulfilled orders {expected[key]}"
                for key in sorted(set(supplied) | set(expected)) if supplied[key] != expected[key]]
    problems += [f"unexpected statement line {line}" for line in other_item_lines]
    return problems, len(closed)


def test_reward_orders_are_fulfilled_or_refunded_exactly_once_under_killed_workers_and_a_database_crash(
        durable_cluster: PostgresServer, durable_hub, tmp_path: Path, scale: Scale,  # noqa: F811
        chaos_report: ChaosReport):
    hub, url = durable_hub
    shape = SHAPES[scale.name]
    started_s = time.monotonic()
    tills, customers = plant_partners_rewards_and_members(hub, shape)
    port = free_port()
    server = start_gunicorn(url, tmp_path / "instance", port, shape.workers, tmp_path / "gunicorn.log")
    try:
        threads, faults, transport = run_reward_load(f"http://127.0.0.1:{port}", tills, customers, server.pid,
                                                     durable_cluster, shape)
    finally:
        stop_process(server)
    tally = RewardTally()
    for thread in threads:
        tally.absorb(thread.tally)
    problems = tally.unresolved + tally.unexpected + ledger_discrepancies(hub, tally, customers)
    statement_problems, statements = statement_discrepancies(hub, tally)
    problems += statement_problems
    endings = Counter(order.status for order in tally.orders.values())
    figures = ScenarioFigures(
        "reward orders (gunicorn + PostgreSQL)", operations_sent=tally.sent, acknowledged=tally.acknowledged,
        retried=transport.attempts - tally.sent,
        faults_injected=faults.workers_killed + faults.database_restarts, discrepancies=len(problems),
        duration_s=time.monotonic() - started_s,
        notes=[f"{len(tally.purchases)} purchases at {EARN_AT}, {len(tally.orders)} orders at the {DESK} "
               f"({endings['fulfilled']} fulfilled, {endings['failed']} failed by {SUPPLIER}), {statements} "
               f"statements of {SUPPLIER} closed; {transport.attempts} HTTP attempts, {transport.no_reply} without "
               f"a reply, {transport.server_errors} 5xx; {tally.client_retries} resends of unknown outcomes; "
               f"{faults.workers_killed} workers SIGKILLed, {faults.database_restarts} immediate PostgreSQL restart"],
    )
    chaos_report.add(figures)
    assert faults.database_restarts == 1 and faults.workers_killed >= 3, figures.notes
    assert endings["fulfilled"] > 0 and endings["failed"] > 0, figures.notes
    assert transport.no_reply + transport.server_errors > 0, figures.notes
    assert problems == [], problems[:20]
