"""A signing shop whose member earns there, for the partners' credit tests (limits and prepaid blocks)."""

from __future__ import annotations

from types import SimpleNamespace

from flask import Flask

from alliance.extensions import hub_state
from tests.factories import make_member_with_pin, make_signing_partner
from tests.http_server import purchase_payload, wall_clock_partner_time
from tests.partner_client import Reply, SignedTestClient

PURCHASES = "/partner/v1/purchases"
PIN = "2468"
# 123.45 EUR at 1 point per EUR, issued at 0.01 EUR a point: 123 points, 123 cents.
PURCHASE_MINOR = 12_345
PURCHASE_COST = 123


def credit_shop(app: Flask) -> SimpleNamespace:
    """A signing shop (code ``shop``, issue price 0.01 EUR a point) and a member with a PIN who earns there."""
    hub = hub_state(app)
    created = wall_clock_partner_time()
    partner = make_signing_partner(hub, now=created, code="shop")
    member = make_member_with_pin(hub, now=created, pin=PIN)
    return SimpleNamespace(app=app, hub=hub, partner=partner, member=member, client=SignedTestClient(app, partner))


def earn(shop: SimpleNamespace, receipt_id: str) -> Reply:
    """The shop's member earns on a purchase of ``PURCHASE_MINOR``, through the signed API."""
    return shop.client.post(PURCHASES, purchase_payload(receipt_id, shop.member.card_number,
                                                        amount_minor=PURCHASE_MINOR))
