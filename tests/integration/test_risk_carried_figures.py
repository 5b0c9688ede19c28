"""A single purchase report's earn-limit figures come with its first read (``purchases.first_read``,
``risk.carried_earn_figures``): no statement of their own, and the same decisions as when read alone.

The first read counts by what the report names (the card's number, the partner, the
till's code or the key's own till), before the member's tier is known; a limit that
applies differently to the member (a tier's override of its window) or a till other than
the one counted is read on its own, as before.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

import pytest
from sqlalchemy import select, update

from alliance.extensions import hub_state
from alliance.models import Member, RiskDecision
from alliance.services import purchases, risk
from tests.factories import make_member, make_signing_partner, set_risk_policy
from tests.http_server import purchase_payload, wall_clock_partner_time
from tests.partner_client import SignedTestClient

PURCHASES = "/partner/v1/purchases"
POLICY = {"limits": [
    {"name": "card-hour", "scope": "card", "measure": "earn", "window_minutes": 60, "max_count": 3,
     "action": "hold"},
    {"name": "till-hour", "scope": "terminal", "measure": "earn", "window_minutes": 60, "max_count": 4,
     "action": "refuse"},
    {"name": "member-points", "scope": "member", "measure": "earn", "window_minutes": 1440, "max_points": 250,
     "action": "flag"},
    {"name": "partner-hour", "scope": "partner", "measure": "earn", "window_minutes": 60, "max_count": 1000,
     "action": "flag"}]}


@pytest.fixture
def shop(app, monkeypatch):  # type: ignore[no-untyped-def]
    """A shop whose key names its till by code, and every separate read of figures recorded."""
    hub = hub_state(app)
    created = wall_clock_partner_time()
    partner = make_signing_partner(hub, now=created, code="shop")
    reads: list[list[str]] = []
    real = risk.figures

    def recorded(session, limits, subjects, *, now):  # type: ignore[no-untyped-def]
        reads.append([limit.name for limit in limits])
        return real(session, limits, subjects, now=now)

    monkeypatch.setattr(risk, "figures", recorded)
    return SimpleNamespace(hub=hub, partner=partner, created=created, client=SignedTestClient(app, partner),
                           reads=reads)


def _earn(shop, card_number: str, receipt: str, amount_minor: int = 10_000, terminal: str | None = "till-1"):  # type: ignore[no-untyped-def]
    extra = {"terminal": terminal} if terminal is not None else {}
    return shop.client.post(PURCHASES, purchase_payload(receipt, card_number, amount_minor, **extra))


def _decisions(hub) -> list[tuple[str, str, list[str]]]:  # type: ignore[no-untyped-def]
    with hub.unit_of_work() as uow:
        return [(row.reference, row.action, [item["limit"] for item in row.evidence])
                for row in uow.session.scalars(select(RiskDecision).order_by(RiskDecision.id))]


def test_every_scope_is_counted_in_the_first_read_and_decides_as_a_separate_read_would(shop):
    set_risk_policy(shop.hub, POLICY)
    member = make_member(shop.hub, now=shop.created)
    states = [_earn(shop, member.card_number, f"r-{index}").body["points"]["state"] for index in range(4)]
    # The card's fourth purchase in the hour is held; the member passed 250 points on the third.
    assert states == ["active", "active", "active", "held_for_review"]
    assert _decisions(shop.hub) == [("r-2", "flag", ["member-points"]), ("r-3", "hold", ["card-hour", "member-points"])]
    # The till's fifth purchase in the hour, named by its code, from another card: refused.
    other = make_member(shop.hub, now=shop.created)
    refused = _earn(shop, other.card_number, "r-4")
    assert (refused.status, refused.body["code"]) == (403, "declined")
    assert _decisions(shop.hub)[-1][:2] == ("r-4", "refuse")
    # Without a till the till's limit does not apply, and nothing was read apart from the first read.
    assert _earn(shop, other.card_number, "r-5", terminal=None).status == 201
    assert shop.reads == []


def test_a_tier_override_of_a_window_is_read_on_its_own_with_the_members_own_window(shop):
    # Gold members' card limit counts over ten minutes, not an hour: the first read counted the hour.
    set_risk_policy(shop.hub, {**POLICY, "tiers": {"gold": {"card-hour": {"window_minutes": 10}}}})
    member, gold = make_member(shop.hub, now=shop.created), make_member(shop.hub, now=shop.created)
    with shop.hub.unit_of_work() as uow:
        uow.session.execute(update(Member).where(Member.id == gold.member_id).values(tier="gold"))
        uow.commit()
    # Three purchases of each card half an hour ago: inside the hour, outside gold's ten minutes.
    half_an_hour_ago = datetime.now(timezone.utc) - timedelta(minutes=30)
    for enrolment in (member, gold):
        with shop.hub.unit_of_work() as uow:
            for index in range(3):
                purchases.report_purchase(uow.session, partner_id=shop.partner.partner_id, now=half_an_hour_ago,
                                          expiry_months=24, report=purchases.PurchaseReport(
                                              receipt_id=f"old-{enrolment.member_id}-{index}",
                                              card_number=enrolment.card_number, amount_minor=100, currency="EUR",
                                              purchased_at=half_an_hour_ago - timedelta(minutes=1)))
            uow.commit()
    shop.reads.clear()
    assert _earn(shop, member.card_number, "standard-4", amount_minor=100).body["points"]["state"] == (
        "held_for_review")
    assert shop.reads == []
    assert _earn(shop, gold.card_number, "gold-4", amount_minor=100).body["points"]["state"] == "active"
    # The gold earn read the card's figures over its own window, and only those.
    assert shop.reads == [["card-hour"]]
    assert [reference for reference, _, _ in _decisions(shop.hub)] == ["standard-4"]


def test_a_batch_reads_its_figures_in_one_statement_of_its_own(shop):
    set_risk_policy(shop.hub, POLICY)
    member = make_member(shop.hub, now=shop.created)
    reply = shop.client.post(f"{PURCHASES}/batch", {"purchases": [
        purchase_payload(f"b-{index}", member.card_number, 100, terminal="till-1") for index in range(4)]})
    assert reply.status == 200, reply.body
    assert [item["purchase"]["points"]["state"] for item in reply.body["results"]] == [
        "active", "active", "active", "held_for_review"]
    assert len(shop.reads) == 1
