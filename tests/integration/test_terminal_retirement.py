"""Retiring a terminal: requests naming it are refused, the keys bound to it are revoked, the reason is audited.

From the console (confirmed, with a reason) and the back-office API; a refusal changes nothing.
"""

from __future__ import annotations

from sqlalchemy import select

from alliance.extensions import hub_state
from alliance.models import AuditLogEntry, Partner, PartnerKey, Terminal
from tests.back_office_support import BackOffice
from tests.console_support import signed_in, text_of
from tests.factories import make_member_with_pin, make_signing_partner
from tests.http_server import assert_books_unchanged, books, purchase_payload, wall_clock_partner_time
from tests.partner_client import SignedTestClient

PURCHASES = "/partner/v1/purchases"
PIN = "2468"


def _state(hub, partner: str = "shop") -> tuple[str, list[tuple[str, str]], list[object]]:  # type: ignore[no-untyped-def]
    """The partner's till-1's status, every key's status, and what each retirement audited."""
    with hub.unit_of_work() as uow:
        terminal = uow.session.scalar(select(Terminal).join(Partner, Partner.id == Terminal.partner_id)
                                      .where(Partner.code == partner, Terminal.code == "till-1"))
        keys = [(row.key_id, row.status) for row in uow.session.scalars(select(PartnerKey).order_by(PartnerKey.key_id))]
        retirements = [entry.after for entry in uow.session.scalars(
            select(AuditLogEntry).where(AuditLogEntry.action == "partner.terminal.retire"))]
    assert terminal is not None
    return terminal.status, keys, retirements


def test_a_retired_terminal_is_refused_and_its_bound_key_revoked(app):
    hub = hub_state(app)
    created = wall_clock_partner_time()
    bound = make_signing_partner(hub, now=created, code="shop", bind_key_to_terminal=True)
    free = make_signing_partner(hub, now=created, code="kiosk")
    member = make_member_with_pin(hub, now=created, pin=PIN)
    manager = signed_in(app, "paco", "partner_manager")

    # No tick, or no reason: refused, nothing changes.
    for form in ({"reason": "sold"}, {"confirm": "yes"}):
        assert manager.post("/console/partners/shop/terminals/till-1/retirement", form).status_code == 400
    assert _state(hub) == ("active", [("kiosk-key", "active"), ("shop-key", "active")], [])

    retired = manager.post("/console/partners/shop/terminals/till-1/retirement",
                           {"confirm": "yes", "reason": "The till was sold with the shop's fittings."})
    assert retired.status_code == 303
    assert "Terminal till-1 retired; keys shop-key revoked." in text_of(manager.get("/console/partners/shop"))
    status, keys, retirements = _state(hub)
    assert status == "retired" and ("shop-key", "revoked") in keys and ("kiosk-key", "active") in keys
    assert retirements == [{
        "terminal": "till-1", "status": "retired", "keys_revoked": ["shop-key"],
        "reason": "The till was sold with the shop's fittings."}]

    # The bound key no longer signs; a key of another partner naming its own till-1 still works.
    before = books(hub)
    refused = SignedTestClient(app, bound).post(PURCHASES, purchase_payload("r-1", member.card_number))
    assert refused.status == 401 and refused.body["code"] == "key_revoked"
    assert_books_unchanged(hub, before)
    assert SignedTestClient(app, free).post(PURCHASES, purchase_payload(
        "r-2", member.card_number, terminal="till-1")).status == 201

    # Retiring it again is refused and audited once only.
    again = manager.post("/console/partners/shop/terminals/till-1/retirement", {"confirm": "yes", "reason": "again"})
    assert again.status_code == 303 and "already retired" in text_of(manager.get("/console/partners/shop"))
    assert len(_state(hub)[2]) == 1


def test_a_request_naming_a_retired_terminal_is_refused_with_its_own_code(app):
    hub = hub_state(app)
    created = wall_clock_partner_time()
    partner = make_signing_partner(hub, now=created, code="shop")
    member = make_member_with_pin(hub, now=created, pin=PIN)
    office = BackOffice(app)
    missing = office.post("/partners/shop/terminals/till-1/retirement", {}, role="partner_manager")
    assert missing.status == 422
    answer = office.post("/partners/shop/terminals/till-1/retirement", {"reason": "stolen"}, role="partner_manager")
    assert answer.status == 201 and answer.body == {"keys_revoked": []}
    unknown = office.post("/partners/shop/terminals/till-9/retirement", {"reason": "x"}, role="partner_manager")
    assert unknown.status == 404
    assert office.post("/partners/shop/terminals/till-1/retirement", {"reason": "x"},
                       role="customer_service").status == 403

    client = SignedTestClient(app, partner)
    before = books(hub)
    refused = client.post(PURCHASES, purchase_payload("r-1", member.card_number, terminal="till-1"))
    assert (refused.status, refused.body["code"]) == (403, "terminal_retired")
    batch = client.post(f"{PURCHASES}/batch", {"purchases": [purchase_payload("r-2", member.card_number,
                                                                             terminal="till-1")]})
    assert batch.status == 200 and batch.body["results"][0]["problem"]["code"] == "terminal_retired"
    assert_books_unchanged(hub, before)
    # Without a terminal named, the partner's (unbound) key still reports purchases.
    assert client.post(PURCHASES, purchase_payload("r-3", member.card_number)).status == 201
