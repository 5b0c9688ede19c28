"""Scheduler duplication: two scheduler processes through a simulated week; every effect exactly once.

Builds on ``tests/integration/test_scheduler.py`` (two processes, lapsed holds and the
due cycles, on the real clock) by running every job through a week of simulated time
(``accelerated_scheduler``): holds lapsing all week, pending points activating, lots
expiring, expiry reminders, idempotency keys and nonces ageing out, members changing
tier and daily cycles closing. Each effect is counted in the database and against the
sum of what the two processes said they did, which must agree: one release per hold,
one activation per pending lot, one expiry per lot, one reminder per lot, one run per
cycle, each pruned row once, each tier change once.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import func, insert, select

from alliance.extensions import HubState
from alliance.models import (
    IdempotencyRecord,
    JournalTransaction,
    LotConsumption,
    Member,
    MemberNotification,
    PointLot,
    RedemptionHold,
    SeenNonce,
    SettlementRun,
)
from alliance.services import ledger
from alliance.services.audit import run_audit
from alliance.services.purchases import PurchaseReport, report_purchase
from settlement.closing import DEFAULT_CLOSING_GRACE
from tests.chaos.support import ROOT, ChaosReport, Scale, ScenarioFigures
from tests.factories import make_member, make_partner
from tests.sdk_support import subprocess_environment

pytestmark = pytest.mark.postgresql

UTC = timezone.utc
WEEK = timedelta(days=7)
STARTUP_S = 8
SETTLE_S = 4
OUTPUT_LINE = re.compile(r"^(?P<job>[a-z-]+): (?P<count>\d+) ")
SILVER_SPEND_MINOR = 60_000


@dataclass(frozen=True)
class WeekShape:
    """How much is planted, and how many wall-clock seconds the simulated week lasts."""

    items: int
    week_s: int


SHAPES = {"small": WeekShape(items=12, week_s=10), "full": WeekShape(items=150, week_s=60)}


@dataclass
class Planted:
    """What the week must do, by kind of effect."""

    partner_ids: list[int]
    hold_ids: list[int]
    pending_lot_ids: list[int]
    expiring_lots: dict[int, int]  # lot id -> points that expire
    reminder_lot_ids: set[int]
    old_keys: int
    young_keys: int
    old_nonces: int
    young_nonces: int
    tier_member_ids: list[int]


def within(start: datetime, end: datetime, index: int, count: int) -> datetime:
    """The index-th of ``count`` moments spread evenly strictly inside (start, end)."""
    return start + (end - start) * (index + 1) / (count + 1)


def plant_ledger(hub: HubState, start: datetime, items: int, partner_ids: list[int]) -> dict[str, object]:
    """Holds lapsing, pending lots activating, lots expiring this week, and lots to be reminded of."""
    end = start + WEEK
    holder, pending, expiring, later = (make_member(hub, now=start - timedelta(days=2)).member_id for _ in range(4))
    earlier = start - timedelta(hours=1)
    far = start + timedelta(days=400)
    with hub.unit_of_work() as uow:
        session = uow.session
        ledger.earn(session, member_id=holder, partner_id=partner_ids[0], points=100 * items,
                    now=earlier - timedelta(hours=1), expires_at=far)
        holds = [ledger.authorize_hold(session, member_id=holder, partner_id=partner_ids[index % len(partner_ids)],
                                       points=10 + index, now=earlier,
                                       ttl_s=int((within(start, end, index, items) - earlier).total_seconds())).hold_id
                 for index in range(items)]
        pending_lots = [ledger.earn(session, member_id=pending, partner_id=partner_ids[index % len(partner_ids)],
                                    points=5 + index, now=earlier, expires_at=far,
                                    pending_until=within(start, end, index, items)).lot_id for index in range(items)]
        # From the second simulated day on: a lot that expired before the first reminder run
        # (a slow start on a busy machine) would rightly never be reminded of.
        expiring_lots = {ledger.earn(session, member_id=expiring, partner_id=partner_ids[index % len(partner_ids)],
                                     points=7 + index, now=earlier,
                                     expires_at=within(start + timedelta(days=1), end, index, items)).lot_id: 7 + index
                         for index in range(items)}
        # Expiring a month after the week at the latest: reminded during the week, not expired.
        later_lots = [ledger.earn(session, member_id=later, partner_id=partner_ids[index % len(partner_ids)],
                                  points=3 + index, now=earlier,
                                  expires_at=within(start + timedelta(days=31), end + timedelta(days=29), index, items)
                                  ).lot_id for index in range(items)]
        uow.commit()
    return {"hold_ids": holds, "pending_lot_ids": pending_lots, "expiring_lots": expiring_lots,
            "reminder_lot_ids": set(expiring_lots) | set(later_lots)}


def plant_traces(hub: HubState, start: datetime, items: int, partner_id: int) -> None:
    """Idempotency keys and nonces, old enough to be pruned during the week, and as many that stay."""
    end = start + WEEK
    retention = timedelta(hours=72)
    old_key_times = [within(start - retention, end - retention, index, items) for index in range(items)]
    key_times = old_key_times + [end - retention + timedelta(hours=2)] * items
    nonce_times = [within(start, end, index, items) for index in range(items)] + [end + timedelta(days=1)] * items
    with hub.unit_of_work() as uow:
        uow.session.execute(insert(IdempotencyRecord), [
            {"partner_id": partner_id, "idempotency_key": str(uuid.uuid4()), "request_fingerprint": "0" * 64,
             "status": "completed", "response_status": 201, "response_body": "{}", "created_at": moment,
             "completed_at": moment} for moment in key_times])
        uow.session.execute(insert(SeenNonce), [
            {"nonce": uuid.uuid4().hex * 2, "partner_id": partner_id, "key_id": "chaos-key",
             "seen_at": moment - timedelta(minutes=10), "prune_after": moment} for moment in nonce_times])
        uow.commit()


def plant_tier_spenders(hub: HubState, start: datetime, partner_id: int, count: int) -> list[int]:
    """Members whose last year's spend makes them silver at the week's first tier run."""
    members = [make_member(hub, now=start - timedelta(days=2)) for _ in range(count)]
    with hub.unit_of_work() as uow:
        for number, member in enumerate(members):
            report = PurchaseReport(receipt_id=f"tier-{number}", card_number=member.card_number,
                                    amount_minor=SILVER_SPEND_MINOR, currency="EUR",
                                    purchased_at=start - timedelta(hours=3))
            report_purchase(uow.session, partner_id=partner_id, report=report, now=start - timedelta(hours=2),
                            expiry_months=24)
        uow.commit()
    return [member.member_id for member in members]


def plant(hub: HubState, start: datetime, items: int) -> Planted:
    """Everything the simulated week must act on, exactly once each."""
    partner_ids = [make_partner(hub, now=start - timedelta(days=1), code=code, settlement_cycle="daily",
                                time_zone="UTC") for code in ("alpha", "bravo", "charlie")]
    ledger_items = plant_ledger(hub, start, items, partner_ids)
    plant_traces(hub, start, items, partner_ids[0])
    tier_member_ids = plant_tier_spenders(hub, start, partner_ids[1], max(3, items // 10))
    return Planted(partner_ids=partner_ids, old_keys=items, young_keys=items, old_nonces=items, young_nonces=items,
                   tier_member_ids=tier_member_ids, **ledger_items)  # type: ignore[arg-type]


def run_two_schedulers(hub: HubState, start: datetime, shape: WeekShape, tmp_path) -> tuple[list[str], list[int]]:  # type: ignore[no-untyped-def]
    """Two accelerated scheduler processes sharing one simulated clock; returns their outputs and exit codes."""
    epoch_s = time.time() + STARTUP_S
    arguments = ["--start", start.isoformat(), "--epoch", str(epoch_s),
                 "--speed", str(WEEK.total_seconds() / shape.week_s),
                 "--days", "7", "--run-for-s", str(STARTUP_S + shape.week_s + SETTLE_S)]
    environment = subprocess_environment(ALLIANCE_DATABASE_URL=hub.engine.url.render_as_string(hide_password=False),
                                         ALLIANCE_INSTANCE_PATH=str(tmp_path / "instance"))
    processes = [subprocess.Popen([sys.executable, "-m", "tests.chaos.accelerated_scheduler", *arguments],
                                  env=environment, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                  text=True) for _ in range(2)]
    outputs = [process.communicate(timeout=STARTUP_S + shape.week_s + 120)[0] for process in processes]
    return outputs, [process.returncode for process in processes]


def reported(outputs: list[str]) -> Counter:
    """The sum, per job, of what both processes said each run did."""
    totals: Counter = Counter()
    for output in outputs:
        for line in output.splitlines():
            match = OUTPUT_LINE.match(line)
            if match:
                totals[match["job"]] += int(match["count"])
    return totals


def expected_runs(start: datetime) -> int:
    """Daily UTC cycles from the partners' onboarding day to the last one ended by the week's end, less the grace."""
    onboarding_day = (start - timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    last_end = (start + WEEK - DEFAULT_CLOSING_GRACE).replace(hour=0, minute=0, second=0, microsecond=0)
    return (last_end - onboarding_day).days


def effect_discrepancies(hub: HubState, planted: Planted, totals: Counter, start: datetime) -> list[str]:
    """Each effect counted in the database, and against the processes' own reports."""
    problems: list[str] = []

    def check(what: str, actual: object, expected: object) -> None:
        if actual != expected:
            problems.append(f"{what}: {actual!r}, expected {expected!r}")

    with hub.unit_of_work() as uow:
        session = uow.session
        releases = Counter(session.scalars(select(JournalTransaction.hold_id)
                                           .where(JournalTransaction.kind == "release")))
        check("releases per hold", sorted(releases.items()), sorted((hold_id, 1) for hold_id in planted.hold_ids))
        check("hold statuses", set(session.scalars(select(RedemptionHold.status))), {"expired"})
        check("holds released (reported)", totals["expire-holds"], len(planted.hold_ids))
        activations = session.scalar(select(func.count()).select_from(JournalTransaction)
                                     .where(JournalTransaction.kind == "activation"))
        check("activation transactions", activations, len(planted.pending_lot_ids))
        check("pending lots left", session.scalar(select(func.count()).select_from(PointLot)
                                                  .where(PointLot.state == "pending")), 0)
        check("lots activated (reported)", totals["activate-pending"], len(planted.pending_lot_ids))
        expiries = session.execute(select(LotConsumption.lot_id, func.count(), func.sum(LotConsumption.points))
                                   .join(JournalTransaction, JournalTransaction.id == LotConsumption.transaction_id)
                                   .where(JournalTransaction.kind == "expiry").group_by(LotConsumption.lot_id)).all()
        check("expiries per lot", sorted(tuple(row) for row in expiries),
              sorted((lot_id, 1, points) for lot_id, points in planted.expiring_lots.items()))
        check("points expired (reported)", totals["expire-points"], sum(planted.expiring_lots.values()))
        reminders = Counter(session.scalars(select(MemberNotification.lot_id)
                                            .where(MemberNotification.kind == "expiry_reminder")))
        check("reminders per lot", sorted(reminders.items()),
              sorted((lot_id, 1) for lot_id in planted.reminder_lot_ids))
        check("reminders written (reported)", totals["remind-expiring-points"], len(planted.reminder_lot_ids))
        check("idempotency keys left", session.scalar(select(func.count()).select_from(IdempotencyRecord)),
              planted.young_keys)
        check("keys pruned (reported)", totals["prune-idempotency-keys"], planted.old_keys)
        check("nonces left", session.scalar(select(func.count()).select_from(SeenNonce)), planted.young_nonces)
        check("nonces pruned (reported)", totals["prune-nonces"], planted.old_nonces)
        tiers = Counter(session.scalars(select(Member.tier).where(Member.id.in_(planted.tier_member_ids))))
        check("tiers of the spenders", dict(tiers), {"silver": len(planted.tier_member_ids)})
        check("tier changes (reported)", totals["recompute-tiers"], len(planted.tier_member_ids))
        runs = session.execute(select(SettlementRun.partner_id, SettlementRun.cycle_starts_at,
                                      SettlementRun.cycle_ends_at)
                               .order_by(SettlementRun.partner_id, SettlementRun.cycle_starts_at)).all()
        for partner_id in planted.partner_ids:
            cycles = [(run.cycle_starts_at, run.cycle_ends_at) for run in runs if run.partner_id == partner_id]
            check(f"runs of partner {partner_id}", len(cycles), expected_runs(start))
            # Consecutive cycles: cycles[1:] is one shorter.
            check(f"gaps or overlaps in partner {partner_id}'s cycles",
                  [pair for pair in zip(cycles, cycles[1:], strict=False) if pair[0][1] != pair[1][0]], [])
        check("cycles closed (reported)", totals["close-due-cycles"], len(runs))
        report = run_audit(session)
        check("audit", report.ok, True)
    return problems


def test_two_schedulers_through_a_simulated_week_do_every_job_effect_exactly_once(
        pg_hub: HubState, tmp_path, scale: Scale, chaos_report: ChaosReport):
    shape = SHAPES[scale.name]
    started_s = time.monotonic()
    start = datetime.now(UTC).replace(microsecond=0)
    planted = plant(pg_hub, start, shape.items)
    outputs, exit_codes = run_two_schedulers(pg_hub, start, shape, tmp_path)
    totals = reported(outputs)
    problems = effect_discrepancies(pg_hub, planted, totals, start)
    runs_made = [sum(1 for line in output.splitlines() if OUTPUT_LINE.match(line)) for output in outputs]
    skipped = sum(output.count("held by another process, skipped") for output in outputs)
    failed = sum(output.count(": failed (") for output in outputs)
    expected_effects = (len(planted.hold_ids) + len(planted.pending_lot_ids) + len(planted.expiring_lots)
                        + len(planted.reminder_lot_ids) + planted.old_keys + planted.old_nonces
                        + len(planted.tier_member_ids) + 3 * expected_runs(start))
    chaos_report.add(ScenarioFigures(
        "scheduler duplication (2 processes, 1 week)", operations_sent=sum(runs_made) + skipped + failed,
        acknowledged=sum(runs_made), retried=failed, faults_injected=1, discrepancies=len(problems),
        duration_s=time.monotonic() - started_s,
        notes=[f"a second scheduler process is the fault; a simulated week in {shape.week_s} s; "
               f"{sum(runs_made)} job runs, {skipped} skipped because the other "
               f"process held the job, {failed} failed and ran again; {expected_effects} effects expected, each found "
               f"once: {dict(sorted(totals.items()))}"],
    ))
    assert exit_codes == [0, 0], outputs
    assert problems == [], problems
    # Both processes really took part: each ran jobs.
    assert all(runs_made), runs_made
