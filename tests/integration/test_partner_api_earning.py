"""Earning through the partner API: rule, ladder, tier, caps, campaigns, return windows, batches.

Purchases are reported through the whole HTTP stack; the reply's breakdown is checked
against the rules in ``alliance.domain.earning`` and against the ledger itself, so a
breakdown that promised points the books never posted (or the reverse) would fail.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal

from sqlalchemy import func, select, update

from alliance.domain.cards import card_number_from_sequence
from alliance.extensions import hub_state
from alliance.models import Campaign, IdempotencyRecord, Member, PointLot, Purchase
from alliance.services import ledger
from alliance.services.members import CARD_ISSUER_PREFIX
from tests.factories import make_member, make_member_with_pin, make_signing_partner
from tests.http_server import (
    assert_books_unchanged,
    audit_totals,
    balances,
    books,
    purchase_payload,
    wall_clock_partner_time,
)
from tests.partner_client import SignedTestClient

PURCHASES = "/partner/v1/purchases"
BATCH = "/partner/v1/purchases/batch"


def _setup(app, **terms):  # type: ignore[no-untyped-def]
    hub = hub_state(app)
    partner = make_signing_partner(hub, now=wall_clock_partner_time(), **terms)
    return hub, partner, SignedTestClient(app, partner)


def _new_member(hub, *, tier: str = "standard"):  # type: ignore[no-untyped-def]
    member = make_member(hub, now=wall_clock_partner_time())
    if tier != "standard":
        with hub.unit_of_work() as uow:
            uow.session.execute(update(Member).where(Member.id == member.member_id).values(tier=tier))
            uow.commit()
    return member


def _add_campaign(hub, *, partner_id: int | None, funded_by: str, multiplier: str = "1", bonus_points: int = 0,  # type: ignore[no-untyped-def]
                  min_amount_minor: int = 0, active: bool = True, name: str = "campaign") -> int:
    now = datetime.now(timezone.utc)
    starts_at, ends_at = (now - timedelta(days=1), now + timedelta(days=1)) if active else \
        (now - timedelta(days=10), now - timedelta(days=5))
    with hub.unit_of_work() as uow:
        campaign = Campaign(partner_id=partner_id, name=name, funded_by=funded_by, multiplier=Decimal(multiplier),
                            bonus_points=bonus_points, min_amount_minor=min_amount_minor, starts_at=starts_at,
                            ends_at=ends_at)
        uow.session.add(campaign)
        uow.session.flush()
        campaign_id = campaign.id
        uow.commit()
    return campaign_id


def _purchase_count(hub) -> int:  # type: ignore[no-untyped-def]
    with hub.unit_of_work() as uow:
        return uow.session.scalar(select(func.count()).select_from(Purchase))


def test_ladder_step_and_tier_multiply_the_base_rate_and_show_in_the_breakdown(app):
    hub, partner, client = _setup(app, base_points_per_unit=Decimal("2"), amount_ladder=[
        {"from_minor": 0, "multiplier": "1"}, {"from_minor": 10_000, "multiplier": "1.5"}])
    gold, standard = _new_member(hub, tier="gold"), _new_member(hub)

    # 123.45 EUR × 2 points × ladder 1.5 × gold 1.5 = 555.525, floored: never a fraction of a point.
    upper = client.post(PURCHASES, purchase_payload("r-upper", gold.card_number, amount_minor=12_345))
    # 50.00 EUR sits on the first step: 50 × 2 × 1 × standard 1 = 100.
    lower = client.post(PURCHASES, purchase_payload("r-lower", standard.card_number, amount_minor=5_000))

    assert upper.status == 201 and lower.status == 201
    breakdown = upper.body["breakdown"]
    assert Decimal(breakdown["base_points_per_unit"]) == 2
    assert Decimal(breakdown["ladder_multiplier"]) == Decimal("1.5")
    assert (breakdown["tier"], Decimal(breakdown["tier_multiplier"])) == ("gold", Decimal("1.5"))
    assert breakdown["minor_units_per_unit"] == 100
    assert breakdown["rule_points"] == 555 and breakdown["capped_by"] == [] and breakdown["campaigns"] == []
    assert upper.body["points"] == {"total": 555, "partner_funded": 555, "hub_funded": 0, "state": "active",
                                    "pending_until": None}
    assert Decimal(lower.body["breakdown"]["ladder_multiplier"]) == 1
    assert lower.body["breakdown"]["tier"] == "standard"
    assert lower.body["points"]["total"] == 100
    # The breakdown is what the ledger posted, not just a description.
    assert balances(hub, gold.member_id) == {"available": 555, "pending": 0, "held": 0}
    assert balances(hub, standard.member_id) == {"available": 100, "pending": 0, "held": 0}
    assert audit_totals(hub)["points_partner_issued"] == -655


def test_per_purchase_cap_limits_the_partner_funded_points_and_is_named(app):
    hub, partner, client = _setup(app, per_purchase_cap_points=100)
    member = _new_member(hub)

    reply = client.post(PURCHASES, purchase_payload("r-1", member.card_number, amount_minor=12_345))

    assert reply.status == 201
    breakdown = reply.body["breakdown"]
    assert (breakdown["rule_points"], breakdown["points_before_caps"]) == (123, 123)
    assert breakdown["capped_by"] == ["per_purchase_cap"]
    assert (breakdown["partner_points"], breakdown["points_total"]) == (100, 100)
    assert balances(hub, member.member_id)["available"] == 100


def test_a_members_second_purchase_of_the_day_at_a_partner_earns_points(app):
    hub, partner, client = _setup(app)
    member = _new_member(hub)
    first = purchase_payload("r-morning", member.card_number, amount_minor=12_345)
    assert client.post(PURCHASES, first).status == 201

    # A second shop visit the same day; no cap is configured, so nothing may limit it.
    second = client.post(PURCHASES, dict(first, receipt_id="r-evening", amount_minor=5_000))

    assert second.status == 201, second.body
    assert second.body["points"]["total"] == 50
    assert balances(hub, member.member_id)["available"] == 173


def test_per_member_day_cap_counts_the_members_earlier_purchases_of_the_day(app):
    hub, partner, client = _setup(app, per_purchase_cap_points=300, per_member_day_cap_points=500)
    member, other_member = _new_member(hub), _new_member(hub)
    # One purchase moment for all, so the three fall on the same local day in Paris.
    base = purchase_payload("r-1", member.card_number, amount_minor=40_000)

    first = client.post(PURCHASES, base)
    second = client.post(PURCHASES, dict(base, receipt_id="r-2"))
    third = client.post(PURCHASES, dict(base, receipt_id="r-3"))
    someone_else = client.post(PURCHASES, dict(base, receipt_id="r-4", card_number=other_member.card_number))

    assert [reply.status for reply in (first, second, third, someone_else)] == [201] * 4
    # 400 rule points; the purchase cap leaves 300, then the day leaves 500 − 300 = 200, then 0.
    assert (first.body["points"]["total"], first.body["breakdown"]["capped_by"]) == (300, ["per_purchase_cap"])
    assert (second.body["points"]["total"], second.body["breakdown"]["capped_by"]) == (
        200, ["per_purchase_cap", "per_member_day_cap"])
    assert third.body["points"]["total"] == 0, "a purchase may earn nothing once the day is used up"
    assert someone_else.body["points"]["total"] == 300, "the day cap is per member"
    assert balances(hub, member.member_id)["available"] == 500
    assert audit_totals(hub)["points_partner_issued"] == -800


def test_partner_and_hub_funded_campaigns_are_separate_and_only_partner_points_are_capped(app):
    hub, partner, client = _setup(app, per_purchase_cap_points=200)
    rival = make_signing_partner(hub, now=wall_clock_partner_time(), code="rival")
    doubled = _add_campaign(hub, partner_id=partner.partner_id, funded_by="partner", multiplier="2", name="double")
    bonus = _add_campaign(hub, partner_id=None, funded_by="hub", bonus_points=50, min_amount_minor=10_000,
                          name="alliance week")
    _add_campaign(hub, partner_id=partner.partner_id, funded_by="hub", bonus_points=999, active=False, name="over")
    _add_campaign(hub, partner_id=rival.partner_id, funded_by="partner", bonus_points=777, name="rival's own")
    big_spender, small_spender = _new_member(hub), _new_member(hub)

    big = client.post(PURCHASES, purchase_payload("r-big", big_spender.card_number, amount_minor=12_345))
    small = client.post(PURCHASES, purchase_payload("r-small", small_spender.card_number, amount_minor=5_000))

    assert big.status == 201 and small.status == 201
    breakdown = big.body["breakdown"]
    # Rule 123, the partner's campaign doubles it (+123), the hub adds 50; ended and
    # other partners' campaigns do not apply.
    assert breakdown["campaigns"] == [
        {"campaign_id": doubled, "name": "double", "funded_by": "partner", "points": 123},
        {"campaign_id": bonus, "name": "alliance week", "funded_by": "hub", "points": 50},
    ]
    assert breakdown["points_before_caps"] == 296 and breakdown["capped_by"] == ["per_purchase_cap"]
    # The cap bites only the partner's 246; the hub's 50 come on top.
    assert big.body["points"] == {"total": 250, "partner_funded": 200, "hub_funded": 50, "state": "active",
                                  "pending_until": None}
    # Below the hub campaign's minimum: only the partner's doubling (50 + 50).
    assert [line["funded_by"] for line in small.body["breakdown"]["campaigns"]] == ["partner"]
    assert small.body["points"]["partner_funded"] == 100 and small.body["points"]["hub_funded"] == 0

    totals = audit_totals(hub)
    assert totals["points_partner_issued"] == -300, "partner-funded points are charged to the partner"
    assert totals["points_hub_marketing"] == -50, "hub-funded points are charged to the hub's marketing account"
    with hub.unit_of_work() as uow:
        lots = uow.session.execute(select(PointLot.partner_id, PointLot.points_earned)
                                   .where(PointLot.member_id == big_spender.member_id)).all()
    assert sorted(lots, key=lambda lot: lot.points_earned) == [(None, 50), (partner.partner_id, 200)]
    assert balances(hub, big_spender.member_id)["available"] == 250


def test_points_inside_the_return_window_are_pending_until_activated(app):
    hub, partner, client = _setup(app, return_window_days=14)
    member = make_member_with_pin(hub, now=wall_clock_partner_time())
    payload = purchase_payload("r-1", member.card_number, amount_minor=12_345)

    reply = client.post(PURCHASES, payload)

    assert reply.status == 201
    assert reply.body["points"]["state"] == "pending"
    pending_until = datetime.fromisoformat(reply.body["points"]["pending_until"])
    assert pending_until == datetime.fromisoformat(payload["purchased_at"]) + timedelta(days=14)
    assert balances(hub, member.member_id) == {"available": 0, "pending": 123, "held": 0}

    # Pending points cannot be spent: the authorization is refused and changes nothing.
    before = books(hub)
    refused = client.post("/partner/v1/redemptions", {"reference": "red-1", "points": 100,
                                                      "card_number": member.card_number, "pin": "2468"})
    assert (refused.status, refused.body["code"]) == (422, "insufficient_points")
    assert_books_unchanged(hub, before)

    with hub.unit_of_work() as uow:
        assert ledger.activate_due_lots(uow.session, now=pending_until - timedelta(seconds=1)) == 0
        assert ledger.activate_due_lots(uow.session, now=pending_until + timedelta(seconds=1)) == 1
        uow.commit()
    assert balances(hub, member.member_id) == {"available": 123, "pending": 0, "held": 0}
    spent = client.post("/partner/v1/redemptions", {"reference": "red-2", "points": 100,
                                                    "card_number": member.card_number, "pin": "2468"})
    assert (spent.status, spent.body["points_held"]) == (201, 100)
    assert balances(hub, member.member_id) == {"available": 23, "pending": 0, "held": 100}
    audit_totals(hub)


def test_a_receipt_id_reported_twice_is_a_409_and_earns_once(app):
    hub, partner, client = _setup(app)
    member = _new_member(hub)
    payload = purchase_payload("r-1", member.card_number)
    assert client.post(PURCHASES, payload).status == 201
    before = books(hub)

    # A new idempotency key: this is a second report, not a retry of the first.
    again = client.post(PURCHASES, dict(payload, amount_minor=999))

    assert (again.status, again.body["code"]) == (409, "receipt_already_reported")
    assert_books_unchanged(hub, before)
    assert balances(hub, member.member_id)["available"] == 123


def test_a_batch_applies_good_items_and_rejects_bad_ones_each_with_its_problem(app):
    hub, partner, client = _setup(app)
    first, second, already = _new_member(hub), _new_member(hub), _new_member(hub)
    assert client.post(PURCHASES, purchase_payload("r-earlier", already.card_number)).status == 201
    bad_check_digit = first.card_number[:-1] + str((int(first.card_number[-1]) + 1) % 10)
    unknown_card = card_number_from_sequence(CARD_ISSUER_PREFIX, 987_654)
    future = (datetime.now(timezone.utc) + timedelta(hours=1)).isoformat()
    items = [
        purchase_payload("b-good-1", first.card_number, amount_minor=12_345),
        purchase_payload("b-bad-digit", bad_check_digit),
        purchase_payload("b-unknown-card", unknown_card),
        purchase_payload("b-good-1", second.card_number),  # repeats the receipt of item 0
        dict(purchase_payload("b-dollars", first.card_number), currency="USD"),
        purchase_payload("r-earlier", first.card_number),  # reported before the batch
        # The first member again: the day's earlier points are read inside the batch's own
        # transaction (on PostgreSQL this once came back as a Decimal and was refused).
        purchase_payload("b-good-2", first.card_number, amount_minor=5_000),
        dict(purchase_payload("b-future", first.card_number), purchased_at=future),
    ]
    before_batch = books(hub)

    reply = client.post(BATCH, {"purchases": items}, idempotency_key="batch-1")

    assert reply.status == 200
    assert (reply.body["applied"], reply.body["rejected"]) == (2, 6)
    outcomes = [(result["index"], result["receipt_id"], result["status"],
                 result["problem"]["code"] if result["problem"] else None) for result in reply.body["results"]]
    assert outcomes == [
        (0, "b-good-1", "applied", None),
        (1, "b-bad-digit", "rejected", "validation_failed"),
        (2, "b-unknown-card", "rejected", "not_found"),
        (3, "b-good-1", "rejected", "receipt_already_reported"),
        (4, "b-dollars", "rejected", "validation_failed"),
        (5, "r-earlier", "rejected", "receipt_already_reported"),
        (6, "b-good-2", "applied", None),
        (7, "b-future", "rejected", "validation_failed"),
    ]
    results = reply.body["results"]
    assert results[1]["problem"]["errors"] == {"card_number": ["fails the check digit"]}
    assert results[4]["problem"]["errors"] == {"currency": ["must be EUR"]}
    assert results[7]["problem"]["errors"] == {"purchased_at": ["in the future"]}
    assert all(result["purchase"] is None for result in results if result["status"] == "rejected")
    assert results[0]["purchase"]["points"]["total"] == 123 and results[6]["purchase"]["points"]["total"] == 50
    # Exactly the good items reached the books.
    assert _purchase_count(hub) == 3
    assert balances(hub, first.member_id)["available"] == 173
    assert balances(hub, second.member_id)["available"] == 0
    audit_totals(hub)

    # The whole batch is one idempotent call: a retry replays it and applies nothing again.
    after_batch = books(hub)
    assert after_batch != before_batch
    retry = client.post(BATCH, {"purchases": items}, idempotency_key="batch-1")
    assert retry.status == 200 and retry.body == reply.body
    assert retry.headers["Idempotent-Replayed"] == "true"
    assert_books_unchanged(hub, after_batch)


def test_a_batch_outside_1_to_1000_items_is_refused_whole(app):
    hub, partner, client = _setup(app)
    member = _new_member(hub)
    before = books(hub)
    for count in (1001, 0):
        items = [purchase_payload(f"b-{index}", member.card_number) for index in range(count)]

        reply = client.post(BATCH, {"purchases": items})

        assert (reply.status, reply.body["code"]) == (422, "validation_failed"), count
        assert "purchases" in reply.body["errors"]
    assert_books_unchanged(hub, before)
    # Refused before the idempotent operation ran: not even their keys were claimed.
    with hub.unit_of_work() as uow:
        assert uow.session.scalar(select(func.count()).select_from(IdempotencyRecord)) == 0
