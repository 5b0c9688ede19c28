"""The risk controls against a synthetic alliance: honest traffic with the known fraud schemes mixed in.

``python -m benchmarks.risk_scenarios [--seed N] [--days D] [--members M]`` (and ``make bench``)
plays, on its own database, ten days of an alliance of four partners through the hub's
own services with a moving clock (as the demo does): honest members shopping a few times
a week at random tills, redeeming now and then, sometimes mistyping a PIN, refunding a
purchase, giving points to family; and, mixed in at random moments, the schemes the risk
controls are meant to stop:

- **card testing**: one till tries a PIN on thirty stolen card numbers in ten minutes;
- **scripted till**: one card earning forty times in an hour at a colluding till;
- **earn then burn**: points earned at a colluding partner on several cards and redeemed
  within minutes at another partner, the same pair of tills each time;
- **refund abuse**: earn, redeem the points elsewhere, then refund the purchase, twice by one member;
- **split purchases**: one card, one till, five purchases in five minutes that together
  pass the partner's per-purchase cap;
- **transfer chain**: new members each giving their points to one collector;
- **outlier amount**: a purchase fifty times the partner's usual basket.

Every operation is labelled honest or with its scheme. Afterwards each kept risk decision
is matched to the operation that caused it (decisions are counted before and after each
operation, which runs in a transaction of its own), and the report gives, per rule (a
velocity limit or a pattern): the scheme operations it caught, the honest operations it
stopped or flagged (false positives), and the points it saved (the points of scheme
operations refused or held). The same seed gives the same traffic.
"""

from __future__ import annotations

import argparse
import random
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any, Callable

from benchmarks import common

BENCHMARK = "risk scenarios"
SIZES = {"full": {"members": 300, "days": 10}, "quick": {"members": 120, "days": 4}}
PIN = "2468"
HONEST = "honest"
START = datetime(2026, 11, 2, 8, tzinfo=timezone.utc)


@dataclass
class Operation:
    """One thing done at a till or for a member, its label, and what the hub decided."""

    label: str
    kind: str
    points: int = 0
    outcome: str = "allowed"  # allowed, flagged, held, refused, failed
    rules: set[str] = field(default_factory=set)


@dataclass
class _Member:
    member_id: int
    number: str
    card: str
    enrolled_at: datetime


@dataclass
class World:
    """The alliance being played, its clock and the record of every operation."""

    hub: Any
    random: random.Random
    partners: dict[str, int]
    terminals: dict[str, list[int]]
    members: list[_Member]
    operations: list[Operation] = field(default_factory=list)
    counter: int = 0

    def reference(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}-{self.counter:06d}"


def _setup(hub: Any, members: int, rng: random.Random) -> World:
    from alliance.services.member_verification import set_pin
    from alliance.services.members import enrol_member
    from alliance.services.partners import PartnerTerms, add_terminal, create_partner

    created = START - timedelta(days=120)
    partners, terminals = {}, {}
    with hub.unit_of_work() as uow:
        for code, cap in (("grocer", None), ("fuel", None), ("books", 200), ("electro", 300)):
            terms = PartnerTerms(currency="EUR", time_zone="Europe/Paris", settlement_cycle="monthly",
                                 issue_price_per_point=Decimal("0.0100"),
                                 redemption_price_per_point=Decimal("0.0080"), base_points_per_unit=Decimal("1"),
                                 per_purchase_cap_points=cap)
            partners[code] = create_partner(uow.session, code=code, name=code.title(), terms=terms, now=created)
            terminals[code] = [add_terminal(uow.session, partner_id=partners[code], code=f"till-{number}",
                                            now=created) for number in range(1, 4)]
        enrolled = []
        for index in range(members):
            moment = created + timedelta(hours=index)
            enrolment = enrol_member(uow.session, now=moment)
            set_pin(uow.session, card_number=enrolment.card_number, pin=PIN)
            enrolled.append(_Member(enrolment.member_id, enrolment.member_number, enrolment.card_number, moment))
        uow.commit()
    return World(hub, rng, partners, terminals, enrolled)


def _decisions_after(world: World, before: int) -> list[tuple[str, list[dict[str, Any]]]]:
    from sqlalchemy import select

    from alliance.models import RiskDecision

    with world.hub.unit_of_work() as uow:
        return [(action, list(evidence)) for action, evidence in uow.session.execute(
            select(RiskDecision.action, RiskDecision.evidence).where(RiskDecision.id > before)
            .order_by(RiskDecision.id))]


def _last_decision(world: World) -> int:
    from sqlalchemy import func, select

    from alliance.models import RiskDecision

    with world.hub.unit_of_work() as uow:
        return int(uow.session.scalar(select(func.coalesce(func.max(RiskDecision.id), 0))) or 0)


def _play(world: World, label: str, kind: str, points: int, action: Callable[[Any], str | None]) -> Operation:
    """Run one operation in its own transaction; record what the hub decided about it."""
    from alliance.domain.errors import AllianceError
    from alliance.domain.risk import RiskDeclined

    operation = Operation(label, kind, points)
    before = _last_decision(world)
    try:
        with world.hub.unit_of_work() as uow:
            held = action(uow.session)
            uow.commit()
        operation.outcome = held or "allowed"
    except RiskDeclined:
        operation.outcome = "refused"
    except AllianceError:
        operation.outcome = "failed"  # refused for another reason: a wrong PIN, no points, a cap
    for decided, evidence in _decisions_after(world, before):
        operation.rules.update(str(item.get("limit") or item.get("pattern")) for item in evidence)
        if operation.outcome == "allowed" and decided == "flag":
            operation.outcome = "flagged"
    world.operations.append(operation)
    return operation


# -- what members and tills do ---------------------------------------------------------------

def _purchase(world: World, label: str, member: _Member, partner: str, terminal: int, amount_minor: int,
              now: datetime) -> Operation:
    from alliance.services import purchases

    receipt = world.reference("R")

    def act(session: Any) -> str | None:
        reported = purchases.report_purchase(
            session, partner_id=world.partners[partner], now=now, expiry_months=24,
            report=purchases.PurchaseReport(receipt_id=receipt, card_number=member.card, amount_minor=amount_minor,
                                            currency="EUR", purchased_at=now - timedelta(minutes=1),
                                            terminal_id=terminal))
        return "held" if reported.held_for_review else None

    operation = _play(world, label, "earn", amount_minor // 100, act)
    operation.reference = receipt  # type: ignore[attr-defined]
    return operation


def _redeem(world: World, label: str, member: _Member, partner: str, terminal: int, points: int, now: datetime,
            pin: str = PIN) -> Operation:
    from alliance.services import member_verification, redemptions, risk

    reference = world.reference("D")

    def act(session: Any) -> str | None:
        till = risk.Subject(partner_id=world.partners[partner], terminal_id=terminal)
        holder = member_verification.verify_pin_at_till(session, card_number=member.card, pin=pin, till=till,
                                                          now=now)
        redemptions.authorize(session, partner_id=world.partners[partner], holder=holder, reference=reference,
                              points=points, ttl_s=600, terminal_id=terminal, now=now)
        redemptions.capture(session, partner_id=world.partners[partner], reference=reference, points=points, now=now)
        return None

    return _play(world, label, "redeem", points, act)


def _refund(world: World, label: str, partner: str, receipt: str, amount_minor: int, now: datetime) -> Operation:
    from alliance.services import purchases

    def act(session: Any) -> str | None:
        purchases.refund_purchase(session, partner_id=world.partners[partner], receipt_id=receipt,
                                  refund_id=world.reference("F"), amount_minor=amount_minor, now=now)
        return None

    return _play(world, label, "refund", 0, act)


def _transfer(world: World, label: str, giver: _Member, receiver: _Member, points: int, now: datetime) -> Operation:
    from alliance.services import member_admin

    limits = member_admin.TransferLimits(max_points_per_transfer=5_000, max_points_per_day=10_000,
                                         min_membership_days=0)

    def act(session: Any) -> str | None:
        member_admin.transfer_points(session, from_member_number=giver.number, to_member_number=receiver.number,
                                     points=points, limits=limits, now=now, actor="scenario:customer-service")
        return None

    return _play(world, label, "transfer", points, act)


# -- the traffic -----------------------------------------------------------------------------

def _honest_events(world: World, days: int) -> list[tuple[datetime, Callable[[datetime], Any]]]:
    rng = world.random
    events: list[tuple[datetime, Callable[[datetime], Any]]] = []
    for member in world.members[: len(world.members) - 12]:  # the last ones are the schemes' new members
        moment = START + timedelta(hours=rng.uniform(0, 48))
        while moment < START + timedelta(days=days):
            partner = rng.choice(list(world.partners))
            terminal = rng.choice(world.terminals[partner])
            amount = int(min(60_000, max(300, rng.lognormvariate(8.2, 0.7))))
            events.append((moment, lambda now, m=member, p=partner, t=terminal, a=amount:
                           _honest_visit(world, m, p, t, a, now)))
            moment += timedelta(hours=rng.expovariate(1 / 40))
    return events


def _honest_visit(world: World, member: _Member, partner: str, terminal: int, amount: int, now: datetime) -> None:
    rng = world.random
    roll = rng.random()
    if roll < 0.12:
        # Redeem a little at the till, mistyping the PIN first now and then.
        if rng.random() < 0.03:
            _redeem(world, HONEST, member, partner, terminal, 50, now, pin="1357")
        _redeem(world, HONEST, member, partner, terminal, rng.choice((50, 100, 150)), now + timedelta(seconds=30))
        return
    bought = _purchase(world, HONEST, member, partner, terminal, amount, now)
    if rng.random() < 0.02 and bought.outcome in ("allowed", "flagged", "held"):
        _refund(world, HONEST, partner, bought.reference, amount, now + timedelta(days=1))  # type: ignore[attr-defined]
    elif rng.random() < 0.01:
        family = rng.choice(world.members[:50])
        if family.member_id != member.member_id:
            _transfer(world, HONEST, member, family, 50, now + timedelta(minutes=5))


def _scheme_events(world: World, days: int) -> list[tuple[datetime, Callable[[datetime], Any]]]:
    rng = world.random
    honest = world.members[: len(world.members) - 12]
    events: list[tuple[datetime, Callable[[datetime], Any]]] = []

    def at() -> datetime:
        return START + timedelta(hours=rng.uniform(24, days * 24 - 6))

    def card_testing(now: datetime) -> None:
        terminal = world.terminals["electro"][2]
        for index, victim in enumerate(rng.sample(honest, 30)):
            _redeem(world, "card testing", victim, "electro", terminal, 100, now + timedelta(seconds=20 * index),
                    pin=f"{rng.randrange(10_000):04d}")

    def scripted_till(now: datetime) -> None:
        card = rng.choice(honest)
        terminal = world.terminals["fuel"][1]
        for index in range(40):
            _purchase(world, "scripted till", card, "fuel", terminal, 2_000, now + timedelta(seconds=90 * index))

    def earn_then_burn(now: datetime) -> None:
        earn_till, burn_till = world.terminals["books"][0], world.terminals["grocer"][0]
        for index, mule in enumerate(rng.sample(honest, 6)):
            moment = now + timedelta(minutes=15 * index)
            _purchase(world, "earn then burn", mule, "books", earn_till, 19_000, moment)
            _redeem(world, "earn then burn", mule, "grocer", burn_till, 150, moment + timedelta(minutes=4))

    def refund_abuse(now: datetime) -> None:
        # Twice by one member, a day apart: the first return after spending the points can be honest.
        member = rng.choice(honest)
        for day in range(2):
            moment = now + timedelta(days=day)
            bought = _purchase(world, "refund abuse", member, "electro", world.terminals["electro"][0], 29_000, moment)
            _redeem(world, "refund abuse", member, "fuel", world.terminals["fuel"][0], 250,
                    moment + timedelta(minutes=20))
            _refund(world, "refund abuse", "electro", bought.reference, 29_000,  # type: ignore[attr-defined]
                    moment + timedelta(hours=2))

    def split_purchases(now: datetime) -> None:
        member = rng.choice(honest)
        terminal = world.terminals["electro"][1]
        for index in range(5):
            _purchase(world, "split purchases", member, "electro", terminal, 29_900, now + timedelta(minutes=index))

    def transfer_chain(now: datetime) -> None:
        collector = rng.choice(honest)
        for index, mule in enumerate(world.members[-12:-4]):
            _purchase(world, "transfer chain", mule, "grocer", world.terminals["grocer"][1], 10_000,
                      now + timedelta(minutes=index))
            _transfer(world, "transfer chain", mule, collector, 100, now + timedelta(minutes=30 + index))

    def outlier_amount(now: datetime) -> None:
        member = rng.choice(honest)
        _purchase(world, "outlier amount", member, "grocer", world.terminals["grocer"][2], 480_000, now)

    for scheme in (card_testing, scripted_till, earn_then_burn, refund_abuse, split_purchases, transfer_chain,
                   outlier_amount):
        for _ in range(2):
            events.append((at(), scheme))
    return events


def _nightly(world: World, now: datetime) -> None:
    """What the scheduler does at night that the risk controls read: partners' amount profiles, pending lots."""
    from alliance.services import ledger, risk_patterns

    with world.hub.unit_of_work() as uow:
        risk_patterns.profile_partner_amounts(uow.session, now=now, limit=1_000)
        ledger.activate_due_lots(uow.session, now=now)
        uow.commit()


def _recent_members(world: World, days: int) -> None:
    """The schemes' mules joined just before the fortnight: new members."""
    from sqlalchemy import update

    from alliance.models import Member

    with world.hub.unit_of_work() as uow:
        for member in world.members[-12:]:
            member.enrolled_at = START - timedelta(days=3)
            uow.session.execute(update(Member).where(Member.id == member.member_id).values(enrolled_at=START -
                                                                                          timedelta(days=3)))
        uow.commit()


def play(hub: Any, *, seed: int, members: int, days: int) -> World:
    """Seed the alliance and play honest traffic and the schemes in time order; the world afterwards."""
    world = _setup(hub, members, random.Random(seed))
    _recent_members(world, days)
    events = _honest_events(world, days) + _scheme_events(world, days)
    events += [(START.replace(hour=2) + timedelta(days=day), lambda now: _nightly(world, now))
               for day in range(1, days + 1)]
    events.sort(key=lambda event: event[0])
    for moment, event in events:
        event(moment)
    return world


# -- the report --------------------------------------------------------------------------------

@dataclass
class RuleFigures:
    caught: Counter[str] = field(default_factory=Counter)
    false_positives: int = 0
    points_saved: int = 0


def report(world: World) -> tuple[dict[str, RuleFigures], dict[str, Counter[str]], Counter[str]]:
    """Per rule: scheme operations caught, honest ones it fired on, points saved; per label: outcomes."""
    rules: dict[str, RuleFigures] = defaultdict(RuleFigures)
    outcomes: dict[str, Counter[str]] = defaultdict(Counter)
    totals: Counter[str] = Counter()
    for operation in world.operations:
        outcomes[operation.label][operation.outcome] += 1
        totals[operation.label] += 1
        for rule in operation.rules:
            figures = rules[rule]
            if operation.label == HONEST:
                figures.false_positives += 1
            else:
                figures.caught[operation.label] += 1
                if operation.outcome in ("refused", "held"):
                    figures.points_saved += operation.points
    return rules, outcomes, totals


def table(world: World) -> str:
    """The report as markdown: per rule, then per scheme."""
    rules, outcomes, totals = report(world)
    honest = totals[HONEST]
    lines = ["| rule | scheme operations caught | honest operations it fired on | points saved |",
             "|---|---|---:|---:|"]
    for name in sorted(rules):
        figures = rules[name]
        caught = ", ".join(f"{label} {count}" for label, count in sorted(figures.caught.items())) or "—"
        lines.append(f"| `{name}` | {caught} | {figures.false_positives} of {honest:,} "
                     f"({figures.false_positives / honest:.2%}) | {figures.points_saved:,} |")
    lines += ["", "| operations | count | allowed | flagged | held | refused | failed otherwise |",
              "|---|---:|---:|---:|---:|---:|---:|"]
    for label in [HONEST, *sorted(label for label in outcomes if label != HONEST)]:
        seen = outcomes[label]
        lines.append(f"| {label} | {totals[label]:,} | {seen['allowed']:,} | {seen['flagged']:,} | {seen['held']:,} "
                     f"| {seen['refused']:,} | {seen['failed']:,} |")
    return "\n".join(lines)


def run(context: dict) -> list[dict]:  # type: ignore[type-arg]
    """Play the scenario set at the run's scale; one figure per rule and the honest false-positive rate."""
    sizes = SIZES[context["scale"]]
    app, _ = common.migrated_hub(context["postgres"], "bench_risk_scenarios", context["artifacts"])
    hub = app.extensions["alliance"]
    world = play(hub, seed=context.get("seed", 7), members=sizes["members"], days=sizes["days"])
    (context["artifacts"] / "risk-scenarios.md").write_text(table(world) + "\n")
    rules, outcomes, totals = report(world)
    honest = totals[HONEST]
    stopped_honest = sum(count for outcome, count in outcomes[HONEST].items() if outcome in ("flagged", "held",
                                                                                           "refused"))
    figures = [common.figure(BENCHMARK, "honest operations flagged, held or refused", stopped_honest / honest * 100,
                             "%", note=f"{stopped_honest} of {honest} honest operations; seed "
                                       f"{context.get('seed', 7)}, {sizes['members']} members, {sizes['days']} days")]
    for name in sorted(rules):
        caught = sum(rules[name].caught.values())
        figures.append(common.figure(BENCHMARK, f"rule {name}: scheme operations caught", caught, "operations",
                                     note=f"false positives {rules[name].false_positives}; points saved "
                                          f"{rules[name].points_saved}", places=0))
    audit_green, audit_note = common.run_audit_ok(hub)
    figures.append(common.figure(BENCHMARK, "audit after the scenarios", 1 if audit_green else 0, "green",
                                 met=audit_green, note=audit_note, places=0))
    hub.engine.dispose()
    return figures


def main(argv: list[str] | None = None) -> int:
    """Play the scenario set on a throwaway PostgreSQL and print the tables."""
    from tests.postgres_server import start_postgres

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--members", type=int, default=SIZES["full"]["members"])
    parser.add_argument("--days", type=int, default=SIZES["full"]["days"])
    arguments = parser.parse_args(argv)
    artifacts: Path = common.ARTIFACTS / "risk-scenarios"
    artifacts.mkdir(parents=True, exist_ok=True)
    server = start_postgres(durable=False)
    try:
        app, _ = common.migrated_hub(server, "risk_scenarios", artifacts)
        hub = app.extensions["alliance"]
        world = play(hub, seed=arguments.seed, members=arguments.members, days=arguments.days)
        print(table(world))
        green, note = common.run_audit_ok(hub)
        print(f"\n{note}")
        hub.engine.dispose()
        return 0 if green else 1
    finally:
        server.stop()


if __name__ == "__main__":
    sys.exit(main())
