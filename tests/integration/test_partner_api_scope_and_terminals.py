"""A partner sees and changes only its own data, and a terminal-bound key acts only for its till.

Another partner's purchase or redemption is a 404, indistinguishable from one that does
not exist, so partners cannot even probe each other's receipt ids or references.
"""

from __future__ import annotations

from types import SimpleNamespace

from alliance.extensions import hub_state
from alliance.services.partners import add_terminal
from tests.factories import make_member, make_member_with_pin, make_signing_partner
from tests.http_server import assert_books_unchanged, books, fund_member, purchase_payload, wall_clock_partner_time
from tests.partner_client import SignedTestClient

PURCHASES = "/partner/v1/purchases"
REDEMPTIONS = "/partner/v1/redemptions"
PIN = "2468"


def test_another_partners_purchases_and_redemptions_are_not_found_and_untouched(app):
    hub = hub_state(app)
    created = wall_clock_partner_time()
    owner, intruder = (make_signing_partner(hub, now=created, code=code) for code in ("owner", "intruder"))
    owner_client, intruder_client = SignedTestClient(app, owner), SignedTestClient(app, intruder)
    member = make_member_with_pin(hub, now=created, pin=PIN)
    assert owner_client.post(PURCHASES, purchase_payload("r-1", member.card_number, amount_minor=12_345)).status == 201
    assert owner_client.post(REDEMPTIONS, {"reference": "red-1", "points": 100, "card_number": member.card_number,
                                           "pin": PIN}).status == 201
    before = books(hub)

    attempts = {
        "read purchase": intruder_client.get(f"{PURCHASES}/r-1"),
        "read redemption": intruder_client.get(f"{REDEMPTIONS}/red-1"),
        "refund purchase": intruder_client.post(f"{PURCHASES}/r-1/refunds", {"refund_id": "rf-1", "amount_minor": 100}),
        "capture redemption": intruder_client.post(f"{REDEMPTIONS}/red-1/capture", {"points": 100}),
        "void redemption": intruder_client.post(f"{REDEMPTIONS}/red-1/void", {}),
        "refund redemption": intruder_client.post(f"{REDEMPTIONS}/red-1/refunds", {"refund_id": "rf-2", "points": 1}),
    }

    assert {name: (reply.status, reply.body["code"]) for name, reply in attempts.items()} == {
        name: (404, "not_found") for name in attempts}
    # The same answer as for ids that exist nowhere: nothing leaks about the owner's data.
    assert intruder_client.get(f"{PURCHASES}/r-none").body["detail"] == "no purchase with receipt 'r-none'"
    assert attempts["read purchase"].body["detail"] == "no purchase with receipt 'r-1'"
    assert_books_unchanged(hub, before)
    # The owner's redemption is intact and still capturable by the owner.
    assert owner_client.post(f"{REDEMPTIONS}/red-1/capture", {"points": 100}).body["status"] == "captured"

    # Receipt ids are the partner's own namespace: the intruder's "r-1" is a separate purchase.
    assert intruder_client.post(PURCHASES,
                                purchase_payload("r-1", member.card_number, amount_minor=5_000)).status == 201
    assert owner_client.get(f"{PURCHASES}/r-1").body["amount_minor"] == 12_345
    assert intruder_client.get(f"{PURCHASES}/r-1").body["amount_minor"] == 5_000


def _bound_shop(app):  # type: ignore[no-untyped-def]
    hub = hub_state(app)
    created = wall_clock_partner_time()
    partner = make_signing_partner(hub, now=created, code="shop", bind_key_to_terminal=True)
    with hub.unit_of_work() as uow:
        add_terminal(uow.session, partner_id=partner.partner_id, code="till-2", now=created)
        uow.commit()
    return SimpleNamespace(hub=hub, partner=partner, client=SignedTestClient(app, partner))


def test_a_key_bound_to_one_till_cannot_act_for_another_till_of_the_partner(app):
    shop = _bound_shop(app)
    member = make_member_with_pin(shop.hub, now=wall_clock_partner_time(), pin=PIN)
    fund_member(shop.hub, member_id=member.member_id, partner_id=shop.partner.partner_id, points=300)
    before = books(shop.hub)

    purchase = shop.client.post(PURCHASES, purchase_payload("r-1", member.card_number, terminal="till-2"))
    redemption = shop.client.post(REDEMPTIONS, {"reference": "red-1", "points": 10, "terminal": "till-2",
                                                "card_number": member.card_number, "pin": PIN})
    batch = shop.client.post(f"{PURCHASES}/batch", {"purchases": [
        purchase_payload("r-2", member.card_number, terminal="till-2")]})
    unknown_till = shop.client.post(PURCHASES, purchase_payload("r-3", member.card_number, terminal="till-9"))

    assert (purchase.status, purchase.body["code"]) == (403, "terminal_mismatch")
    assert (redemption.status, redemption.body["code"]) == (403, "terminal_mismatch")
    assert batch.status == 200 and batch.body["results"][0]["problem"]["code"] == "terminal_mismatch"
    assert (unknown_till.status, unknown_till.body["code"]) == (404, "not_found")
    assert_books_unchanged(shop.hub, before)


def test_a_bound_key_naming_its_own_till_or_none_acts_for_its_till(app):
    shop = _bound_shop(app)
    created = wall_clock_partner_time()
    member = make_member_with_pin(shop.hub, now=created, pin=PIN)
    fund_member(shop.hub, member_id=member.member_id, partner_id=shop.partner.partner_id, points=300)

    naming_own = shop.client.post(PURCHASES, purchase_payload("r-1", member.card_number, terminal="till-1"))
    naming_none = shop.client.post(PURCHASES, purchase_payload("r-2", member.card_number))
    redemption = shop.client.post(REDEMPTIONS, {"reference": "red-1", "points": 10,
                                                "card_number": member.card_number, "pin": PIN})

    assert [reply.status for reply in (naming_own, naming_none, redemption)] == [201, 201, 201]
    assert [reply.body["terminal"] for reply in (naming_own, naming_none, redemption)] == ["till-1"] * 3
    assert shop.client.get(f"{PURCHASES}/r-2").body["terminal"] == "till-1"


def test_an_unbound_key_acts_for_the_till_it_names_or_for_none(app):
    hub = hub_state(app)
    created = wall_clock_partner_time()
    partner = make_signing_partner(hub, now=created, code="shop")
    with hub.unit_of_work() as uow:
        add_terminal(uow.session, partner_id=partner.partner_id, code="till-2", now=created)
        uow.commit()
    client = SignedTestClient(app, partner)
    first, second = make_member(hub, now=created), make_member(hub, now=created)

    named = client.post(PURCHASES, purchase_payload("r-1", first.card_number, terminal="till-2"))
    unnamed = client.post(PURCHASES, purchase_payload("r-2", second.card_number))

    assert (named.status, named.body["terminal"]) == (201, "till-2")
    assert (unnamed.status, unnamed.body["terminal"]) == (201, None)
