"""Closing many cycles aggregates them in one pass; it must say exactly what one query per cycle says."""

from __future__ import annotations

import json
from datetime import time, timedelta

import pytest
from sqlalchemy import func, select

from alliance.models import SettlementStatement
from alliance.services import ledger, rewards
from settlement import closing
from settlement.closing import (
    BATCH_MIN_PARTNERS,
    aggregate_due_cycles,
    aggregate_due_reward_items,
    aggregate_postings,
    aggregate_reward_items,
    close_due_cycles,
)
from settlement.cycles import cycle_containing
from tests.factories import make_member, make_partner
from tests.integration.test_rewards import (
    DAY,
    at,
    order,
    step,
    world,  # noqa: F401  (the rewards catalog fixture)
)
from tests.integration.test_settlement_closing import (
    DAY_ONE,
    DAY_TWO,
    FAR_EXPIRY,
    ONBOARDED_AT,
    make_partners,
    post_day_one,
    post_day_two,
    signer,  # noqa: F401  (the module's statement key fixture)
)


def due_pairs(partners: dict[str, int]):  # type: ignore[no-untyped-def]
    """Every (partner id, daily cycle) of the worked example's two days, plus an empty third day."""
    return [
        (partner_id, cycle_containing(day, partner_code=code, frequency="daily", time_zone="UTC",
                                      cutoff_local=DAY_ONE.time()))
        for code, partner_id in sorted(partners.items())
        for day in (DAY_ONE, DAY_TWO, DAY_TWO + timedelta(days=1))
    ]


def test_the_batch_aggregate_equals_the_per_cycle_aggregate_cycle_by_cycle(pg_hub):
    partners = make_partners(pg_hub)
    post_day_one(pg_hub, partners)
    post_day_two(pg_hub, partners)
    due = due_pairs(partners)
    batched = aggregate_due_cycles(pg_hub.session_factory, due, first_position=10, min_partners=1)
    assert sorted(batched) == list(range(10, 10 + len(due)))
    with pg_hub.session_factory() as session:
        for offset, (partner_id, cycle) in enumerate(due):
            one_by_one = aggregate_postings(session, partner_id=partner_id, partner_code=cycle.partner_code,
                                            cycle=cycle)
            key = lambda aggregate: (aggregate.line_kind, aggregate.price_per_point)  # noqa: E731
            assert sorted(batched[10 + offset], key=key) == sorted(one_by_one, key=key)
    # The empty third day is an empty list (nothing to settle), not a missing answer.
    assert batched[10 + 2] == []
    assert any(batched.values())


def test_few_partners_and_sqlite_leave_aggregation_to_each_cycle(hub):
    partners = make_partners(hub)
    assert aggregate_due_cycles(hub.session_factory, due_pairs(partners)) == {}
    answer = aggregate_due_cycles(hub.session_factory, due_pairs(partners), min_partners=1)
    assert (answer == {}) == (hub.engine.dialect.name == "sqlite")


def test_closing_many_partners_at_once_prices_each_statement_from_its_own_postings(pg_hub, signer):  # noqa: F811
    member = make_member(pg_hub, now=ONBOARDED_AT).member_id
    partner_ids = [make_partner(pg_hub, now=ONBOARDED_AT, code=f"shop-{number}", settlement_cycle="daily",
                                time_zone="UTC") for number in range(BATCH_MIN_PARTNERS + 1)]
    with pg_hub.unit_of_work() as uow:
        for number, partner_id in enumerate(partner_ids):
            ledger.earn(uow.session, member_id=member, partner_id=partner_id, points=100 + number,
                        now=DAY_ONE + timedelta(minutes=number), expires_at=FAR_EXPIRY)
        uow.commit()
    closed = close_due_cycles(pg_hub.session_factory, now=DAY_TWO + timedelta(hours=1), signer=signer)
    issued = {}
    for statement in closed:
        lines = json.loads(statement.document_json)["lines"]
        issued[statement.partner_id] = [line["points"] for line in lines if line["line_kind"] == "points_issued"]
    assert issued == {partner_id: [100 + number] for number, partner_id in enumerate(partner_ids)}
    assert close_due_cycles(pg_hub.session_factory, now=DAY_TWO + timedelta(hours=1), signer=signer) == []


def test_the_batched_reward_items_equal_the_per_cycle_ones(hub, world):  # noqa: F811
    order(hub, world, "mug", "ORD-1", items=2)
    step(hub, rewards.fulfil_order, "ORD-1", supplier_id=None, note=None, now=at(9))
    order(hub, world, "mug", "ORD-2")
    step(hub, rewards.fulfil_order, "ORD-2", supplier_id=None, note=None, now=at(10))
    step(hub, rewards.cancel_order, "ORD-2", reason="changed my mind", now=at(12))
    due = [(world[code], cycle_containing(day, partner_code=code, frequency="daily", time_zone="UTC",
                                          cutoff_local=time(0, 0)))
           for code in ("alpha", "gifts", "telco") for day in (DAY - timedelta(days=1), DAY, DAY + timedelta(days=1))]
    with hub.session_factory() as session:
        batched = aggregate_due_reward_items(session, due)
        if hub.engine.dialect.name == "sqlite":
            assert batched is None
            return
        assert batched is not None
        one_by_one = [aggregate_reward_items(session, partner_id=partner_id, partner_code=cycle.partner_code,
                                             cycle=cycle) for partner_id, cycle in due]
    key = lambda item: (item.line_kind, item.reference, item.unit_price_minor)  # noqa: E731
    assert [sorted(items, key=key) for items in batched] == [sorted(items, key=key) for items in one_by_one]
    assert [len(items) for items in batched] == [0, 0, 0, 0, 2, 0, 0, 0, 0]


def test_a_cycle_that_fails_in_a_batch_leaves_the_cycles_before_it_closed(hub, signer, monkeypatch):  # noqa: F811
    partner_ids = [make_partner(hub, now=ONBOARDED_AT, code=f"shop-{number}", settlement_cycle="daily",
                                time_zone="UTC") for number in range(6)]
    emit = closing.webhooks.emit

    def refusing(session, **arguments):  # type: ignore[no-untyped-def]
        if arguments.get("partner_id") == partner_ids[4]:
            raise RuntimeError("the event could not be written")
        return emit(session, **arguments)

    monkeypatch.setattr(closing.webhooks, "emit", refusing)
    # Each partner has two due days (onboarding's and DAY_ONE's): 12 cycles, in batches of 1, 2, 4 and 5.
    with pytest.raises(RuntimeError):
        close_due_cycles(hub.session_factory, now=DAY_TWO + timedelta(hours=1), signer=signer)
    with hub.session_factory() as session:
        closed = dict(session.execute(select(SettlementStatement.partner_id, func.count())
                                      .group_by(SettlementStatement.partner_id)).all())
    # Shop 4's first cycle sits in the fourth batch; it is closed again cycle by cycle up to it.
    assert closed == {partner_id: 2 for partner_id in partner_ids[:4]}
    monkeypatch.setattr(closing.webhooks, "emit", emit)
    again = close_due_cycles(hub.session_factory, now=DAY_TWO + timedelta(hours=1), signer=signer)
    assert sorted(statement.partner_id for statement in again) == sorted(partner_ids[4:] * 2)
