"""The set-based batch service against the single path, item by item, on PostgreSQL and SQLite.

Each test reports the same purchases twice on the same starting books: once one by one
through ``purchases.report_purchase`` (each in its own savepoint, as the batch route
used to), once as one batch through ``purchases.report_purchases``. The first run
is rolled back, so both start from identical state. Every stored row the runs create
(purchases, journal transactions, entries, lots, member balances) and every item's
reply (the presented purchase, or its problem+json body) must be the same; ids are
compared by their order among the rows of the run, since PostgreSQL's sequences do not
roll back.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from flask import Flask
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Text, cast, func, insert, select, update
from sqlalchemy.orm import Session

from alliance.api.errors import problem_body
from alliance.api.partner import presenters
from alliance.api.partner.auth import Caller, resolve_terminal
from alliance.api.partner.schemas import PurchaseOutput
from alliance.domain.cards import card_number_from_sequence
from alliance.domain.errors import AllianceError
from alliance.extensions import HubState, hub_state
from alliance.models import (
    Campaign,
    Card,
    JournalEntry,
    JournalTransaction,
    LedgerAccount,
    Member,
    PartnerEarnRule,
    PartnerPrice,
    PointLot,
    Purchase,
)
from alliance.services import purchases
from alliance.services.audit import run_audit
from alliance.services.members import CARD_ISSUER_PREFIX, enrol_member
from alliance.services.partners import add_terminal
from tests.factories import make_signing_partner
from tests.http_server import purchase_payload, wall_clock_partner_time
from tests.partner_client import SignedTestClient

NOW = datetime(2026, 11, 2, 9, 30, tzinfo=timezone.utc)  # 10:30 in Paris, the partner's zone
PARIS = timezone(timedelta(hours=1))  # Paris in November, as a till would send its local time
EXPIRY_MONTHS = 24
PURCHASES = "/partner/v1/purchases"
BATCH = f"{PURCHASES}/batch"


@dataclass
class World:
    """A partner with two rules, campaigns, terminals and members in every state a batch meets."""

    caller: Caller
    cards: dict[str, str]


def _campaign(session: Session, *, partner_id: int | None, name: str, funded_by: str, starts_at: datetime,
              ends_at: datetime, multiplier: str = "1", bonus_points: int = 0, min_amount_minor: int = 0) -> None:
    session.execute(insert(Campaign).values(
        partner_id=partner_id, name=name, funded_by=funded_by, multiplier=Decimal(multiplier),
        bonus_points=bonus_points, min_amount_minor=min_amount_minor, starts_at=starts_at, ends_at=ends_at))


def _build_world(hub: HubState) -> World:
    """The shop opened 60 days ago (rule A), changed its rule 20 days ago (rule B), keeps a 14-day return window."""
    opened = NOW - timedelta(days=60)
    shop = make_signing_partner(hub, now=opened, code="shop", bind_key_to_terminal=True, per_purchase_cap_points=300,
                                per_member_day_cap_points=500, return_window_days=14)
    rival = make_signing_partner(hub, now=opened, code="rival")
    with hub.unit_of_work() as uow:
        session = uow.session
        add_terminal(session, partner_id=shop.partner_id, code="till-2", now=opened)
        session.execute(insert(PartnerEarnRule).values(
            partner_id=shop.partner_id, effective_from=NOW - timedelta(days=20), base_points_per_unit=Decimal("2"),
            amount_ladder=[{"from_minor": 0, "multiplier": "1"}, {"from_minor": 20_000, "multiplier": "1.5"}],
            per_purchase_cap_points=600, per_member_day_cap_points=900))
        _campaign(session, partner_id=shop.partner_id, name="shop doubles", funded_by="partner", multiplier="2",
                  min_amount_minor=5_000, starts_at=NOW - timedelta(days=30), ends_at=NOW + timedelta(days=1))
        _campaign(session, partner_id=None, name="alliance week", funded_by="hub", bonus_points=40,
                  min_amount_minor=10_000, starts_at=NOW - timedelta(days=5), ends_at=NOW + timedelta(days=1))
        _campaign(session, partner_id=None, name="autumn bonus", funded_by="hub", bonus_points=999,
                  starts_at=NOW - timedelta(days=50), ends_at=NOW - timedelta(days=40))
        _campaign(session, partner_id=rival.partner_id, name="rival's own", funded_by="partner", bonus_points=777,
                  starts_at=NOW - timedelta(days=30), ends_at=NOW + timedelta(days=1))
        members = {name: enrol_member(session, now=opened) for name in ("ann", "bob", "gil", "blocked", "closed")}
        session.execute(update(Member).where(Member.id == members["gil"].member_id).values(tier="gold"))
        session.execute(update(Card).where(Card.id == members["blocked"].card_id).values(status="blocked"))
        session.execute(update(Member).where(Member.id == members["closed"].member_id).values(status="closed"))
        uow.commit()
    cards = {name: enrolment.card_number for name, enrolment in members.items()}
    cards["unknown"] = card_number_from_sequence(CARD_ISSUER_PREFIX, 987_654)
    cards["bad digit"] = cards["ann"][:-1] + str((int(cards["ann"][-1]) + 1) % 10)
    caller = Caller(partner_id=shop.partner_id, key_id=shop.key_id, bound_terminal_id=shop.terminal_id)
    # Reported before the batch: counts towards ann's day, and its receipt is taken.
    with hub.unit_of_work() as uow:
        purchases.report_purchase(uow.session, partner_id=shop.partner_id, now=NOW - timedelta(minutes=30),
                                  expiry_months=EXPIRY_MONTHS, report=purchases.PurchaseReport(
                                      "r-earlier", cards["ann"], 15_000, "EUR", NOW - timedelta(hours=1)))
        uow.commit()
    return World(caller=caller, cards=cards)


def _item(world: World, receipt_id: str, card: str, amount_minor: int, ago: timedelta, *, currency: str = "EUR",
          terminal: str | None = None, zone: timezone = timezone.utc) -> purchases.BatchItem:
    return purchases.BatchItem(receipt_id, world.cards.get(card, card), amount_minor, currency,
                                    (NOW - ago).astimezone(zone), terminal)


def _mixed_batch(world: World) -> list[purchases.BatchItem]:
    hour, day = timedelta(hours=1), timedelta(days=1)
    return [
        # ann's day (2 Nov in Paris) already holds r-earlier; rule B, the cap of 900 a day bites within the batch.
        _item(world, "b-01", "ann", 30_000, 2 * hour, zone=PARIS),
        _item(world, "b-02", "ann", 25_000, 3 * hour, terminal="till-1"),
        _item(world, "b-03", "ann", 8_000, 4 * hour),
        # 22:30 UTC on 1 Nov is 23:30 in Paris: the day before, with a fresh cap; 23:30 UTC is already 2 Nov.
        _item(world, "b-04", "ann", 40_000, 11 * hour),
        _item(world, "b-05", "ann", 12_000, 10 * hour),
        _item(world, "b-06", "gil", 12_345, 2 * hour),  # gold tier, both campaigns
        _item(world, "b-07", "bob", 4_000, 16 * day),  # pending window already over: active lot, rule B
        _item(world, "b-08", "bob", 20_000, 45 * day, zone=PARIS),  # rule A and the ended hub campaign's window
        _item(world, "b-09", "bob", 20_000, 70 * day),  # before the shop's first rule
        _item(world, "b-10", "bob", 49, hour),  # earns nothing: applied with zero points, no posting
        _item(world, "b-01", "bob", 5_000, hour),  # the batch's own receipt again
        _item(world, "r-earlier", "bob", 5_000, hour),  # reported before the batch
        _item(world, "b-11", "unknown", 5_000, hour),
        _item(world, "b-12", "bad digit", 5_000, hour),
        _item(world, "b-12", "bob", 6_000, hour),  # its receipt's first use was rejected: this one applies
        _item(world, "b-13", "blocked", 5_000, hour),
        _item(world, "b-14", "closed", 5_000, hour),
        _item(world, "b-15", "bob", 5_000, hour, currency="USD"),
        _item(world, "b-16", "bob", 5_000, -hour),  # an hour in the future
        _item(world, "b-17", "bob", 5_000, 91 * day),
        _item(world, "b-18", "bob", 5_000, hour, terminal="till-2"),  # the key is bound to till-1
        _item(world, "b-19", "bob", 5_000, hour, terminal="till-9"),
        _item(world, "b-20", "gil", 60_000, hour, terminal="till-1"),
        _item(world, "b-21", "ann", 30_000, hour, zone=PARIS),  # ann's day is used up: only the hub's points
        # Paris midnight belongs to the day it starts, a minute before to the day before.
        _item(world, "b-22", "bob", 60_000, timedelta(hours=10, minutes=30), zone=PARIS),
        _item(world, "b-23", "bob", 60_000, timedelta(hours=10, minutes=31)),
        _item(world, "b-24", "bob", 60_000, timedelta(minutes=30)),
    ]


# ---------------------------------------------------------------- running both paths


def _report_one_by_one(session: Session, world: World, items: list[purchases.BatchItem]) -> list[Any]:
    """The single path, as the batch route ran it before: each item in its own savepoint."""
    purchases.lock_card_holders(session, [item.card_number for item in items])
    replies = []
    for item in items:
        try:
            with session.begin_nested():
                report = purchases.PurchaseReport(
                    item.receipt_id, item.card_number, item.amount_minor, item.currency, item.purchased_at,
                    terminal_id=resolve_terminal(session, world.caller, item.terminal))
                row = purchases.report_purchase(session, partner_id=world.caller.partner_id, report=report, now=NOW,
                                                expiry_months=EXPIRY_MONTHS)
                replies.append(("applied", PurchaseOutput().dump(presenters.purchase(session, row, NOW))))
        except AllianceError as error:
            replies.append(("rejected", problem_body(error)))
    return replies


def _report_as_batch(session: Session, world: World, items: list[purchases.BatchItem]) -> list[Any]:
    outcomes = purchases.report_purchases(
        session, partner_id=world.caller.partner_id, items=items, now=NOW, expiry_months=EXPIRY_MONTHS,
        resolve_terminal=lambda code: resolve_terminal(session, world.caller, code))
    return [("rejected", problem_body(outcome.error)) if outcome.error is not None else
            ("applied", PurchaseOutput().dump(presenters.purchase(session, outcome.purchase, NOW,
                                                                  card_number=outcome.purchase.card_number)))
            for outcome in outcomes]


def _high_water_marks(session: Session) -> dict[str, int]:
    return {table.__tablename__: session.scalar(select(func.coalesce(func.max(table.id), 0)))
            for table in (Purchase, JournalTransaction, JournalEntry, PointLot)}


def _books_written(session: Session, since: dict[str, int]) -> dict[str, Any]:
    """The rows a run created and every member balance, ids replaced by their order within the run."""
    def new(table: Any) -> list[dict[str, Any]]:
        rows = session.execute(select(table.__table__).where(table.id > since[table.__tablename__])
                               .order_by(table.id)).mappings().all()
        return [dict(row) for row in rows]

    transactions, entries, lots, stored = new(JournalTransaction), new(JournalEntry), new(PointLot), new(Purchase)
    order = {row["id"]: position for position, row in enumerate(transactions)}
    for row in transactions:
        row["id"] = order[row["id"]]
    for row in entries:
        row["id"], row["transaction_id"] = None, order[row["transaction_id"]]
    for position, row in enumerate(lots):
        row["id"], row["earn_transaction_id"] = position, order[row["earn_transaction_id"]]
    for position, row in enumerate(stored):
        row["id"] = position
        row["earn_transaction_id"] = order.get(row["earn_transaction_id"])
        row["bonus_transaction_id"] = order.get(row["bonus_transaction_id"])
    return {
        "transactions": transactions, "entries": entries, "lots": lots, "purchases": stored,
        # The stored JSON text too, not only its value: exports read it as it is.
        "breakdown_texts": session.execute(select(Purchase.receipt_id, cast(Purchase.breakdown, Text))
                                           .where(Purchase.id > since["purchases"]).order_by(Purchase.id)).all(),
        "balances": session.execute(select(LedgerAccount.code, LedgerAccount.balance_points)
                                    .where(LedgerAccount.member_id.is_not(None)).order_by(LedgerAccount.id)).all(),
    }


def _both_paths(hub: HubState, world: World, items: list[purchases.BatchItem], *,
                keep_batch: bool = False) -> tuple[tuple[list[Any], dict[str, Any]], tuple[list[Any], dict[str, Any]]]:
    """(replies, books written) of the single path, rolled back, then of the batch (committed if asked)."""
    with hub.unit_of_work() as uow:
        since = _high_water_marks(uow.session)
        single = _report_one_by_one(uow.session, world, items), _books_written(uow.session, since)
    with hub.unit_of_work() as uow:
        since = _high_water_marks(uow.session)
        batch = _report_as_batch(uow.session, world, items), _books_written(uow.session, since)
        if keep_batch:
            uow.commit()
    return single, batch


@pytest.fixture
def world(app: Flask) -> World:
    with app.app_context():
        return _build_world(hub_state(app))


# ---------------------------------------------------------------- the tests


def test_a_batch_gives_every_item_exactly_what_reporting_it_alone_gives(app, world):
    hub = hub_state(app)
    with app.app_context():
        (single_replies, single_books), (batch_replies, batch_books) = _both_paths(hub, world, _mixed_batch(world))

    assert batch_replies == single_replies
    assert batch_books == single_books
    # Not merely equal: the very outcomes the mix was built for.
    outcomes = [(reply["receipt_id"], reply["points"]["partner_funded"], reply["points"]["hub_funded"],
                 reply["points"]["state"]) if status == "applied" else reply["code"]
                for status, reply in batch_replies]
    assert outcomes == [
        # Rule B: 300 EUR × 2 × ladder 1.5 = 900, the shop doubles it, the purchase cap leaves
        # 600, and ann's day (900) already holds r-earlier's 600: 300 fit. The hub adds 40.
        ("b-01", 300, 40, "pending"),
        ("b-02", 0, 40, "pending"),  # the day is used up by the item before: only the hub's bonus
        ("b-03", 0, 0, "pending"),  # and below the hub campaign's minimum nothing at all
        ("b-04", 600, 40, "pending"),  # 23:30 in Paris on 1 November: a day of its own
        ("b-05", 0, 40, "pending"),  # 00:30 in Paris on 2 November: ann's full day again
        ("b-06", 600, 40, "pending"),  # gold: 123.45 × 2 × 1.5 = 370, doubled to 740, capped at 600
        ("b-07", 80, 0, "active"),  # below the doubling's minimum; its 14-day window ended two days ago
        ("b-08", 200, 999, "active"),  # rule A (1 a euro), and the autumn campaign that ran 45 days ago
        "invalid_state",  # before the shop's first rule
        ("b-10", 0, 0, "pending"),  # 49 cents earn nothing, and that is no error
        "receipt_already_reported",
        "receipt_already_reported",
        "not_found",
        "validation_failed",
        ("b-12", 240, 0, "pending"),
        "card_not_usable",
        "card_not_usable",
        "validation_failed",
        "validation_failed",
        "validation_failed",
        "terminal_mismatch",
        "not_found",
        ("b-20", 300, 40, "pending"),  # gil's day holds b-06's 600 of 900
        ("b-21", 0, 40, "pending"),
        ("b-22", 600, 40, "pending"),  # bob's 2 November held b-12's 240 of 900
        ("b-23", 600, 40, "pending"),  # 23:59 on 1 November: a day of its own
        ("b-24", 60, 40, "pending"),  # 2 November again: 900 − 240 − 600 = 60 left
    ]


def test_the_audit_stays_green_after_a_batch_and_its_totals_are_the_batchs_points(app, world):
    hub = hub_state(app)
    with app.app_context():
        _, (replies, _) = _both_paths(hub, world, _mixed_batch(world), keep_batch=True)
    with hub.unit_of_work() as uow:
        report = run_audit(uow.session)
        balances = dict(uow.session.execute(select(LedgerAccount.code, LedgerAccount.balance_points).where(
            LedgerAccount.code.in_(["member:%d:%s" % (uow.session.scalar(select(Card.member_id).where(
                Card.card_number == world.cards["bob"])), kind) for kind in ("available", "pending")]))).all())

    assert report.ok, report.first_failure
    applied = [reply["points"] for status, reply in replies if status == "applied"]
    # r-earlier, reported before the batch, gave 600 of the shop's points and 40 of the hub's.
    assert report.totals["points_partner_issued"] == -(600 + sum(points["partner_funded"] for points in applied))
    assert report.totals["points_hub_marketing"] == -(40 + sum(points["hub_funded"] for points in applied))
    assert (report.totals["points_partner_issued"], report.totals["points_hub_marketing"]) == (-4_180, -1_439)
    assert report.totals["sum_of_all_entries"] == 0
    # bob: b-07 and b-08 are past their window (80 + 200 + 999 spendable), the others' wait.
    assert sorted(balances.values()) == [1_279, 240 + 640 + 640 + 100]


def test_a_receipt_reported_meanwhile_is_rejected_and_gives_the_members_day_back(app, world, monkeypatch):
    hub = hub_state(app)
    read_facts = purchases._read_facts

    def read_then_lose_a_race(session, partner_id, items, now):  # type: ignore[no-untyped-def]
        facts = read_facts(session, partner_id, items, now)
        # Another till reports b-01 (for bob) after the batch checked its receipts.
        bob = session.execute(select(Card.id, Card.member_id).where(Card.card_number == world.cards["bob"])).one()
        session.execute(insert(Purchase).values(
            partner_id=partner_id, receipt_id="b-01", member_id=bob.member_id, card_id=bob.id, amount_minor=100,
            currency="EUR", purchased_at=now, reported_at=now, points_partner=0, points_hub=0, breakdown={},
            refunded_amount_minor=0))
        return facts

    monkeypatch.setattr(purchases, "_read_facts", read_then_lose_a_race)
    with app.app_context(), hub.unit_of_work() as uow:
        alone = _report_as_batch(uow.session, world, _mixed_batch(world)[:1])
    with app.app_context(), hub.unit_of_work() as uow:
        replies = _report_as_batch(uow.session, world, _mixed_batch(world)[:2])

    lost = ("rejected", {
        "type": "https://alliance.invalid/problems/receipt_already_reported", "title": "Conflict", "status": 409,
        "detail": "receipt 'b-01' was already reported", "code": "receipt_already_reported", "request_id": None})
    assert alone == [lost] and replies[0] == lost
    # b-01 took none of ann's day after all: b-02 gets the 300 points left under the cap, as
    # it would have had the single path's savepoint taken b-01 back.
    status, purchase = replies[1]
    assert (status, purchase["points"]["partner_funded"], purchase["breakdown"]["capped_by"]) == (
        "applied", 300, ["per_purchase_cap", "per_member_day_cap"])


CARD_POOL = ("ann", "ann", "ann", "bob", "gil", "gil", "blocked", "closed", "unknown", "bad digit")
DAY = 24 * 60
# Minutes before NOW where a rule changes: the clock's 5 minutes ahead, Paris midnight
# (10 h 30 earlier), the hub campaign's start, the return window, rule B, the autumn
# campaign's end and start, rule A, and the 90 days a till may be late.
EDGES = (-6, -5, 629, 630, 631, 5 * DAY, 14 * DAY, 20 * DAY, 40 * DAY, 50 * DAY, 60 * DAY, 90 * DAY, 90 * DAY + 1)
items_strategy = st.lists(st.builds(
    lambda receipt, card, amount_minor, minutes_ago, currency, terminal, zone: (
        receipt, card, amount_minor, timedelta(minutes=minutes_ago), currency, terminal, zone),
    receipt=st.sampled_from(["h-1", "h-2", "h-3", "h-4", "h-5", "r-earlier"]),
    card=st.sampled_from(CARD_POOL),
    amount_minor=st.one_of(st.integers(1, 120_000), st.sampled_from([49, 4_999, 5_000, 10_000, 20_000])),
    minutes_ago=st.one_of(st.integers(0, 36 * 60), st.sampled_from(EDGES), st.integers(-10, 95 * DAY)),
    currency=st.sampled_from(["EUR", "EUR", "EUR", "EUR", "USD"]),
    terminal=st.sampled_from([None, None, None, "till-1", "till-2", "till-9"]),
    zone=st.sampled_from([timezone.utc, PARIS]),
), min_size=1, max_size=16)


@settings(max_examples=40, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(drawn=items_strategy)
def test_any_batch_matches_its_items_reported_one_by_one(app, world, drawn):
    # Both runs roll back, so every example starts from the same books.
    items = [_item(world, receipt, card, amount_minor, ago, currency=currency, terminal=terminal, zone=zone)
             for receipt, card, amount_minor, ago, currency, terminal, zone in drawn]
    with app.app_context():
        single, batch = _both_paths(hub_state(app), world, items)
    assert batch == single


def test_a_batch_reply_presents_each_purchase_as_fetching_it_alone_does(app):
    hub = hub_state(app)
    # A key bound to till-1: an item naming no terminal acts for it too.
    shop = make_signing_partner(hub, now=wall_clock_partner_time(), return_window_days=14, bind_key_to_terminal=True)
    client = SignedTestClient(app, shop)
    with hub.unit_of_work() as uow:
        _campaign(uow.session, partner_id=None, name="alliance week", funded_by="hub", bonus_points=40,
                  starts_at=datetime.now(timezone.utc) - timedelta(days=1),
                  ends_at=datetime.now(timezone.utc) + timedelta(days=1))
        members = [enrol_member(uow.session, now=wall_clock_partner_time()) for _ in range(2)]
        uow.commit()
    local = (datetime.now(timezone.utc) - timedelta(minutes=3)).astimezone(PARIS).isoformat()
    items = [purchase_payload("h-1", members[0].card_number, 12_345, terminal="till-1"),
             purchase_payload("h-2", members[1].card_number, 999, purchased_at=local),
             purchase_payload("h-3", card_number_from_sequence(CARD_ISSUER_PREFIX, 987_654), 999)]

    reply = client.post(BATCH, {"purchases": items})

    assert reply.status == 200 and (reply.body["applied"], reply.body["rejected"]) == (2, 1)
    first, second, third = reply.body["results"]
    assert first["purchase"] == client.get(f"{PURCHASES}/h-1").body
    assert second["purchase"] == client.get(f"{PURCHASES}/h-2").body
    assert first["purchase"]["terminal"] == second["purchase"]["terminal"] == "till-1"
    assert first["purchase"]["card_number"] == "•" * 12 + members[0].card_number[-4:]
    pending_until = datetime.fromisoformat(items[0]["purchased_at"]) + timedelta(days=14)
    assert first["purchase"]["points"] == {"total": 163, "partner_funded": 123, "hub_funded": 40,
                                           "state": "pending", "pending_until": pending_until.isoformat()}
    # Stored moments come back in UTC, whatever offset the till sent.
    assert second["purchase"]["purchased_at"] == datetime.fromisoformat(local).astimezone(timezone.utc).isoformat()
    assert third["problem"]["code"] == "not_found" and third["purchase"] is None


def test_without_a_price_in_force_only_the_items_that_cost_the_partner_points_are_refused(app, world):
    hub = hub_state(app)
    with hub.unit_of_work() as uow:
        # The shop's only price now starts tomorrow: nothing it issues today can be billed.
        uow.session.execute(update(PartnerPrice).where(PartnerPrice.partner_id == world.caller.partner_id)
                            .values(effective_from=NOW + timedelta(days=1)))
        uow.commit()
    items = [_item(world, "p-1", "ann", 12_000, timedelta(hours=2)),  # the shop's points: refused
             _item(world, "p-2", "bob", 49, timedelta(days=45)),  # no shop points, the autumn campaign's 999
             _item(world, "p-3", "bob", 49, timedelta(hours=2))]  # nothing to post at all
    with app.app_context():
        (single_replies, single_books), (batch_replies, batch_books) = _both_paths(hub, world, items)

    assert (batch_replies, batch_books) == (single_replies, single_books)
    refused, hub_only, nothing = batch_replies
    assert refused == ("rejected", {
        "type": "https://alliance.invalid/problems/invalid_state", "title": "Invalid state", "status": 409,
        "detail": f"the partner has no price in force at {NOW.isoformat()}",
        "code": "invalid_state", "request_id": None})
    assert (hub_only[1]["points"]["partner_funded"], hub_only[1]["points"]["hub_funded"]) == (0, 999)
    assert nothing[1]["points"]["total"] == 0
    assert [row["partner_id"] for row in batch_books["transactions"]] == [None]
