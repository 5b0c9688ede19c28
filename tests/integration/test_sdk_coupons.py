"""The SDK's coupon_code over real HTTP against a hub on PostgreSQL: a bonus coupon with a purchase, an amount_off
coupon with a redemption, and the hub's refusal surfaced as the SDK's error with the code coupon_invalid."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from alliance.extensions import HubState, hub_state
from alliance.models import Member
from alliance.services import coupons
from partners_sdk import AllianceClient, InvalidRequestError
from tests.http_server import fund_member
from tests.sdk_support import PIN, make_shop, purchase_rows, serve_in_thread

pytestmark = pytest.mark.postgresql


def _coupon(hub: HubState, member_id: int, series: str, **terms: object) -> str:
    now = datetime.now(timezone.utc)
    with hub.unit_of_work() as uow:
        number = uow.session.get_one(Member, member_id).member_number
        coupons.create_series(uow.session, code=series, title=series, funder="hub", valid_from=now - timedelta(hours=1),
                              valid_until=now + timedelta(days=1), now=now, actor="test:ops", **terms)  # type: ignore[arg-type]
        coupons.issue(uow.session, code=series, member_numbers=[number], now=now, actor="test:ops")
        code = coupons.coupon_codes(uow.session, code=series)["coupons"][0]["code"]
        uow.commit()
    return code


def test_the_sdk_presents_coupons_with_a_purchase_and_a_redemption_and_surfaces_coupon_invalid(pg_app):
    hub = hub_state(pg_app)
    shop = make_shop(hub)
    bonus = _coupon(hub, shop.member_id, "welcome", kind="bonus", bonus_points=70)
    off = _coupon(hub, shop.member_id, "five-off", kind="amount_off", amount_off_minor=500, currency="EUR",
                  points_cost=300)
    fund_member(hub, member_id=shop.member_id, partner_id=shop.partner.partner_id, points=1_000)
    with serve_in_thread(pg_app) as base_url:
        client = AllianceClient(base_url, shop.partner.key_id, shop.partner.private_key, timeout_s=10)
        bought = client.report_purchase(receipt_id="r-1", card_number=shop.card_number, amount_minor=10_000,
                                        currency="EUR", coupon_code=bonus)
        assert bought.points.total == 100 + 70  # type: ignore[union-attr]
        with pytest.raises(InvalidRequestError) as refused:
            client.report_purchase(receipt_id="r-2", card_number=shop.card_number, amount_minor=10_000,
                                   currency="EUR", coupon_code=bonus)
        assert refused.value.code == "coupon_invalid" and "used up" in refused.value.detail
        assert purchase_rows(hub, "r-2") == 0
        with pytest.raises(InvalidRequestError) as wrong_points:
            client.authorize_redemption(reference="h-1", points=200, card_number=shop.card_number, pin=PIN,
                                        coupon_code=off)
        assert wrong_points.value.code == "coupon_invalid"
        held = client.authorize_redemption(reference="h-2", points=300, card_number=shop.card_number, pin=PIN,
                                           coupon_code=off)
        assert held.points_held == 300
        client.close()
