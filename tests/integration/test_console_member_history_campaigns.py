"""The member's history names, on each purchase's earn, the campaign awards it included and who paid them
(the purchase's partner, the hub, or joint funders with their shares), read with one query per page; and
the words for the transaction kinds the ledger is gaining (joint shares, activities, goodwill)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

from flask import Flask
from sqlalchemy import event, select

from alliance.extensions import HubState, hub_state
from alliance.models import Purchase
from alliance.services import campaigns, member_console, purchases
from alliance.services.console_reports import Sort
from tests.console_support import signed_in, text_of
from tests.factories import make_member, make_partner

UTC = timezone.utc
ONBOARDED = datetime(2026, 10, 1, tzinfo=UTC)
NOW = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)


def _partners(hub: HubState) -> dict[str, int]:
    return {code: make_partner(hub, now=ONBOARDED, code=code, settlement_cycle="daily", time_zone="UTC",
                               issue_price_per_point=Decimal("0.0100")) for code in ("aurora", "fuel")}


def _campaign(hub: HubState, name: str, **terms: object) -> int:
    values: dict[str, object] = {"code": "aurora", "name": name, "funded_by": "hub", "multiplier": Decimal("1"),
                                 "bonus_points": 0, "min_amount_minor": 0, "starts_at": NOW - timedelta(days=1),
                                 "ends_at": NOW + timedelta(days=10)}
    values.update(terms)
    with hub.unit_of_work() as uow:
        campaign_id = campaigns.add_campaign(uow.session, now=NOW - timedelta(days=2), actor="test:operator",
                                             **values)
        uow.commit()
    return campaign_id


def _buy(hub: HubState, partner_id: int, card_number: str, receipt: str, minutes: int) -> Purchase:
    report = purchases.PurchaseReport(receipt_id=receipt, card_number=card_number, amount_minor=10_000,
                                      currency="EUR", purchased_at=NOW + timedelta(minutes=minutes - 5))
    with hub.unit_of_work() as uow:
        reported = purchases.report_purchase(uow.session, partner_id=partner_id, report=report,
                                             now=NOW + timedelta(minutes=minutes), expiry_months=24)
        uow.commit()
    with hub.unit_of_work() as uow:
        purchase = uow.session.scalars(select(Purchase).where(Purchase.partner_id == partner_id,
                                                              Purchase.receipt_id == reported.receipt_id)).one()
        uow.session.expunge(purchase)
    return purchase


def _history(hub: HubState, member_id: int, *, page_size: int = 50, page: int = 1
             ) -> tuple[dict[int, member_console.HistoryItem], int]:
    """The history page by transaction id, and how many statements read campaign_awards to make it."""
    statements: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if "campaign_awards" in statement:
            statements.append(statement)

    event.listen(hub.engine, "before_cursor_execute", count)
    try:
        with hub.unit_of_work() as uow:
            shown = member_console.history(uow.session, member_id=member_id, sort=Sort("date", True), page=page,
                                           page_size=page_size)
    finally:
        event.remove(hub.engine, "before_cursor_execute", count)
    return {item.transaction_id: item for item in shown.items}, len(statements)


def test_each_purchase_earn_names_its_campaigns_and_who_paid_with_one_query(app: Flask) -> None:
    hub = hub_state(app)
    ids = _partners(hub)
    member = make_member(hub, now=ONBOARDED)
    _campaign(hub, "Summer double", funded_by="partner", multiplier=Decimal("1.5"))
    _campaign(hub, "Hub gift", funded_by="hub", bonus_points=25)
    _campaign(hub, "Fuel week", funded_by="joint", bonus_points=100, funders=[("aurora", 6000), ("fuel", 4000)])
    first = _buy(hub, ids["aurora"], member.card_number, "r-1", 1)
    second = _buy(hub, ids["aurora"], member.card_number, "r-2", 2)
    plain = _buy(hub, ids["fuel"], member.card_number, "f-1", 3)  # no campaign at fuel

    rows, queries = _history(hub, member.member_id)
    assert queries == 1
    for purchase in (first, second):
        assert purchase.earn_transaction_id is not None and purchase.bonus_transaction_id is not None
        assert rows[purchase.earn_transaction_id].campaigns == (
            "includes 50 points from campaign 'Summer double' (paid by aurora)",
            "includes 100 points from campaign 'Fuel week' (paid by aurora 60%, fuel 40%)",
        )
        assert rows[purchase.bonus_transaction_id].campaigns == (
            "includes 25 points from campaign 'Hub gift' (paid by the hub)",)
    assert plain.earn_transaction_id is not None and rows[plain.earn_transaction_id].campaigns == ()
    shares = [item for item in rows.values() if item.memo and " share, receipt " in item.memo]
    assert len(shares) == 4 and all(item.campaigns == () for item in shares)  # the joint shares' own rows

    # A page that holds only some of the rows still reads the campaigns once, for its rows only.
    page, queries = _history(hub, member.member_id, page_size=3)
    assert queries == 1 and len(page) == 3

    service = signed_in(app, "cass", "customer_service")
    number = member.member_number
    shown = text_of(service.get(f"/console/members/{number}"))
    assert shown.count("includes 50 points from campaign 'Summer double' (paid by aurora)") == 2
    assert shown.count("includes 100 points from campaign 'Fuel week' (paid by aurora 60%, fuel 40%)") == 2
    assert shown.count("includes 25 points from campaign 'Hub gift' (paid by the hub)") == 2


def test_an_odd_joint_share_is_shown_to_the_hundredth_of_a_percent(app: Flask) -> None:
    hub = hub_state(app)
    ids = _partners(hub)
    member = make_member(hub, now=ONBOARDED)
    _campaign(hub, "Thirds", funded_by="joint", bonus_points=3,
              funders=[("aurora", 3333), ("fuel", 6667)])
    purchase = _buy(hub, ids["aurora"], member.card_number, "r-1", 1)
    rows, _ = _history(hub, member.member_id)
    assert purchase.earn_transaction_id is not None
    assert rows[purchase.earn_transaction_id].campaigns == (
        "includes 3 points from campaign 'Thirds' (paid by aurora 33.33%, fuel 66.67%)",)
    with hub.unit_of_work() as uow:
        assert member_console.campaign_lines(uow.session, member_id=member.member_id, transaction_ids=[]) == {}


def test_the_words_for_each_kind_old_and_new() -> None:
    at = datetime(2026, 11, 2, tzinfo=UTC)

    def words(kind: str, memo: str | None) -> str:
        return member_console.HistoryItem(1, kind, at, None, 10, 10, 0, 0, memo).kind_words

    assert words("campaign_share", "campaign 4 share, receipt r-1") == \
        "campaign points (joint share) (campaign 4 share, receipt r-1)"
    assert words("behaviour_award", "behaviour:12") == "points for an activity (behaviour:12)"
    assert words("goodwill_credit", "goodwill:7") == "goodwill credit (request #7)"
    assert words("earn", "goodwill:7") == "goodwill credit (request #7)"
    assert words("correction", "goodwill:8") == "correction (goodwill request #8)"
    assert words("clawback", "goodwill:8") == "correction (goodwill request #8)"
    assert words("goodwill_credit", None) == "goodwill credit"
    assert words("correction", None) == "correction"
    assert words("earn", None) == "points earned"
    assert words("clawback", None) == "points taken back (refund)"
    assert words("earn", "birthday:2027") == "birthday bonus 2027"
