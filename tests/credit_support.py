"""A signing shop whose member earns there, for the partners' credit tests (limits and prepaid blocks)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from types import SimpleNamespace
from typing import Any

from flask import Flask

from alliance.extensions import hub_state
from settlement import closing as settlement_closing
from settlement.cycles import Cycle, Frequency
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


def close_today(shop: SimpleNamespace) -> Any:
    """Close the shop's daily cycle around today, signed by the hub's statement key; the closed statement."""
    signer = shop.hub.statement_signer
    today = datetime.now(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
    cycle = Cycle("shop", Frequency.DAILY, today - timedelta(days=1), today + timedelta(days=1))
    with shop.hub.unit_of_work() as uow:
        closed = settlement_closing.close_cycle(
            uow.session, partner_id=shop.partner.partner_id, cycle=cycle, now=cycle.ends_at + timedelta(hours=1),
            signing_key=signer.signing_key, key_id=signer.key_id, payment_terms_days=signer.payment_terms_days)
        uow.commit()
    return closed
