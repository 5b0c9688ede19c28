"""Closing many cycles aggregates them in one pass; it must say exactly what one query per cycle says."""

from __future__ import annotations

import json
from datetime import timedelta

from alliance.services import ledger
from settlement.closing import (
    BATCH_MIN_PARTNERS,
    aggregate_due_cycles,
    aggregate_postings,
    close_due_cycles,
)
from settlement.cycles import cycle_containing
from tests.factories import make_member, make_partner
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
