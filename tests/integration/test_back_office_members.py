"""Customer service on members: enrolment with encrypted personal data, lookups, profile
changes, PINs, one-time codes, history, export, and card replacement that keeps the
member's lots and holds. Partner-side effects go through the signed partner API."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import select, text

from alliance.domain.cards import card_number_from_sequence
from alliance.models import Card, PointLot, RedemptionHold
from alliance.services.member_verification import MAX_PIN_FAILURES
from tests.back_office_support import BackOffice, audit_entries, member_id_of, raw_table_text
from tests.factories import make_signing_partner
from tests.http_server import assert_audit_green, balances, purchase_payload, wall_clock_partner_time
from tests.partner_client import SignedTestClient

PURCHASES = "/partner/v1/purchases"
REDEMPTIONS = "/partner/v1/redemptions"
BALANCE = "/partner/v1/balance-inquiries"
PIN = "2468"
UNISSUED_CARD = card_number_from_sequence("6390", 987_654)
NAME, PHONE, EMAIL = "Zoé Lefèvre-Quintard", "+33 6 12 34 56 78", "Zoe.Quintard@Example.org"


@pytest.fixture
def desk(app):  # type: ignore[no-untyped-def]
    """Customer service, and a partner whose tills sign their calls."""
    bo = BackOffice(app)
    partner = make_signing_partner(bo.hub, now=wall_clock_partner_time(), code="shop")
    return bo, SignedTestClient(app, partner)


def test_enrolment_encrypts_personal_data_and_lookup_matches_any_phone_format(desk):
    bo, _ = desk
    member_number, card_number = bo.enrol(name=NAME, phone=PHONE, email=EMAIL)
    bo.enrol(name="Someone Else", phone="+33 7 00 00 00 01")

    for written in ("0033 6 12 34 56 78", "+33612345678", "+33-6-12-34-56-78", "(+33) 6.12.34.56.78"):
        found = bo.post("/members/search", {"phone": written}, role="customer_service")
        assert found.status == 200, found.body
        assert [member["member_number"] for member in found.body["members"]] == [member_number], written
    by_email = bo.post("/members/search", {"email": "  zoe.quintard@EXAMPLE.org "}, role="customer_service")
    assert [member["member_number"] for member in by_email.body["members"]] == [member_number]
    shown = by_email.body["members"][0]
    assert shown["profile"] == {"name": NAME, "phone": "+33612345678", "email": "zoe.quintard@example.org",
                               "birth_date": None}
    assert shown["cards"] == [{"card_number": card_number, "status": "active"}]
    assert shown["status"] == "active" and shown["tier"] == "standard"
    assert bo.post("/members/search", {"phone": "+33612345679"}, role="customer_service").body["members"] == []
    neither = bo.post("/members/search", {}, role="customer_service")
    assert (neither.status, neither.code) == (422, "validation_failed")

    stored = raw_table_text(bo.hub, "member_profiles")
    assert stored, "the profile row exists"
    for plaintext in (NAME, "Zoé", "Quintard", "+33612345678", "612345678", "zoe.quintard@example.org",
                      EMAIL, "example.org"):
        assert not any(plaintext.lower() in value.lower() for value in stored), plaintext
    with bo.hub.engine.connect() as connection:
        tokens = connection.execute(text(
            "SELECT name_encrypted, phone_encrypted, email_encrypted FROM member_profiles "
            "WHERE member_id = :id"), {"id": member_id_of(bo.hub, member_number)}).one()
    assert all(token.startswith("v1.k1.") for token in tokens)


def test_profile_update_changes_clears_and_relooks_up(desk):
    bo, _ = desk
    member_number, _ = bo.enrol(name="Old Name", phone="+33611112222")
    changed = bo.patch(f"/members/{member_number}/profile", {"name": "New Name", "phone": "0033 6 99 88 77 66",
                                                             "email": "new@example.org"}, role="customer_service")
    assert changed.status == 200, changed.body
    assert changed.body["profile"] == {"name": "New Name", "phone": "+33699887766", "email": "new@example.org",
                                      "birth_date": None}
    assert bo.post("/members/search", {"phone": "+33611112222"}, role="customer_service").body["members"] == []
    assert len(bo.post("/members/search", {"phone": "+33699887766"}, role="customer_service").body["members"]) == 1

    cleared = bo.patch(f"/members/{member_number}/profile", {"email": None}, role="customer_service")
    assert cleared.body["profile"] == {"name": "New Name", "phone": "+33699887766", "email": None,
                                      "birth_date": None}
    assert bo.post("/members/search", {"email": "new@example.org"}, role="customer_service").body["members"] == []

    bad_phone = bo.patch(f"/members/{member_number}/profile", {"phone": "call me"}, role="customer_service")
    bad_email = bo.patch(f"/members/{member_number}/profile", {"email": "nobody"}, role="customer_service")
    unknown_field = bo.patch(f"/members/{member_number}/profile", {"birthday": "1990-01-01"},
                             role="customer_service")
    unknown_member = bo.patch("/members/0000000000000000/profile", {"name": "X"}, role="customer_service")
    assert (bad_phone.status, bad_phone.code) == (422, "validation_failed")
    assert (bad_email.status, bad_email.code) == (422, "validation_failed")
    assert (unknown_field.status, unknown_field.code) == (422, "validation_failed")
    assert (unknown_member.status, unknown_member.code) == (404, "not_found")
    shown = bo.get(f"/members/{member_number}", role="customer_service")
    assert shown.body["profile"]["phone"] == "+33699887766"


def test_pin_reset_unlocks_a_card_locked_by_wrong_pins_at_a_till(desk):
    bo, till = desk
    _, card_number = bo.enrol(name="Locked Out")
    bo.set_pin(card_number, PIN)
    assert till.post(BALANCE, {"card_number": card_number, "pin": PIN}).status == 200

    wrong = [till.post(BALANCE, {"card_number": card_number, "pin": "0000"}) for _ in range(MAX_PIN_FAILURES)]
    assert [reply.body["code"] for reply in wrong] == ["member_not_verified"] * (MAX_PIN_FAILURES - 1) + ["pin_locked"]
    locked = till.post(BALANCE, {"card_number": card_number, "pin": PIN})
    assert (locked.status, locked.body["code"]) == (403, "pin_locked")

    bad_pin = bo.post("/cards/pin", {"card_number": card_number, "pin": "12"}, role="customer_service")
    assert (bad_pin.status, bad_pin.code) == (422, "validation_failed")
    # A PIN anyone would try first is refused here as at the console's desk, and the card stays locked.
    for guessable in ("1234", "0000", "9876"):
        refused = bo.post("/cards/pin", {"card_number": card_number, "pin": guessable}, role="customer_service")
        assert (refused.status, refused.code) == (422, "validation_failed"), guessable
    assert till.post(BALANCE, {"card_number": card_number, "pin": PIN}).body["code"] == "pin_locked"
    bo.set_pin(card_number, "97531")
    assert till.post(BALANCE, {"card_number": card_number, "pin": PIN}).body["code"] == "member_not_verified"
    unlocked = till.post(BALANCE, {"card_number": card_number, "pin": "97531"})
    assert unlocked.status == 200, unlocked.body
    assert unlocked.body["card_number"].endswith(card_number[-4:])
    unknown_card = bo.post("/cards/pin", {"card_number": UNISSUED_CARD, "pin": "1234"}, role="customer_service")
    assert (unknown_card.status, unknown_card.code) == (404, "not_found")


def test_a_one_time_redemption_code_works_once_at_a_till(desk):
    bo, till = desk
    member_number, card_number = bo.enrol(name="Code User")
    assert till.post(PURCHASES, purchase_payload("r-1", card_number, 20_000)).status == 201
    issued = bo.post(f"/members/{member_number}/redemption-codes", role="customer_service")
    assert issued.status == 201, issued.body
    code = issued.body["redemption_code"]
    expires_at = datetime.fromisoformat(issued.body["expires_at"])
    assert timedelta(minutes=14) < expires_at - datetime.now(timezone.utc) <= timedelta(minutes=15)

    first = till.post(REDEMPTIONS, {"reference": "code-1", "points": 50, "redemption_code": code.lower()})
    assert first.status == 201, first.body
    second = till.post(REDEMPTIONS, {"reference": "code-2", "points": 50, "redemption_code": code})
    assert (second.status, second.body["code"]) == (403, "member_not_verified")
    assert balances(bo.hub, member_id_of(bo.hub, member_number)) == {"available": 150, "pending": 0, "held": 50}
    assert code not in " ".join(raw_table_text(bo.hub, "redemption_codes"))
    missing = bo.post("/members/0000000000000000/redemption-codes", role="customer_service")
    assert (missing.status, missing.code) == (404, "not_found")


def test_history_lists_transactions_newest_first_and_pages_with_before(desk):
    bo, till = desk
    member_number, card_number = bo.enrol(name="History")
    bo.set_pin(card_number, PIN)
    for receipt, amount in (("r-1", 10_000), ("r-2", 5_000), ("r-3", 2_000)):
        assert till.post(PURCHASES, purchase_payload(receipt, card_number, amount)).status == 201
    assert till.post(REDEMPTIONS, {"reference": "h-1", "points": 30, "card_number": card_number,
                                   "pin": PIN}).status == 201
    assert till.post(f"{REDEMPTIONS}/h-1/capture", {"points": 20}).status == 200

    whole = bo.get(f"/members/{member_number}/history", role="customer_service")
    assert whole.status == 200, whole.body
    transactions = whole.body["transactions"]
    assert [item["kind"] for item in transactions] == ["capture", "hold", "earn", "earn", "earn"]
    ids = [item["transaction_id"] for item in transactions]
    assert ids == sorted(ids, reverse=True)
    assert [item["points"] for item in transactions] == [
        {"available": 10, "held": -30}, {"available": -30, "held": 30},
        {"available": 20}, {"available": 50}, {"available": 100}]
    assert whole.body["next_before"] is None

    pages, before = [], None
    while True:
        query = {"limit": 2} if before is None else {"limit": 2, "before": before}
        page = bo.get(f"/members/{member_number}/history", role="customer_service", query=query).body
        pages.append([item["transaction_id"] for item in page["transactions"]])
        before = page["next_before"]
        if before is None:
            break
    assert [transaction for page in pages for transaction in page][:len(ids)] == ids
    assert [len(page) for page in pages][:2] == [2, 2]
    too_many = bo.get(f"/members/{member_number}/history", role="customer_service", query={"limit": 201})
    assert (too_many.status, too_many.code) == (422, "validation_failed")
    unknown = bo.get("/members/0000000000000000/history", role="customer_service")
    assert (unknown.status, unknown.code) == (404, "not_found")


def test_export_holds_profile_balances_lots_purchases_redemptions_and_complaints(desk):
    bo, till = desk
    member_number, card_number = bo.enrol(name=NAME, phone=PHONE, email=EMAIL)
    bo.set_pin(card_number, PIN)
    assert till.post(PURCHASES, purchase_payload("r-1", card_number, 10_000)).status == 201
    assert till.post(PURCHASES, purchase_payload("r-2", card_number, 4_000)).status == 201
    assert till.post(REDEMPTIONS, {"reference": "h-1", "points": 25, "card_number": card_number,
                                   "pin": PIN}).status == 201
    complaint = bo.post("/complaints", {"partner": "shop", "category": "wrong_points", "member": member_number,
                                        "receipt_id": "r-2", "description": "expected more points"},
                        role="customer_service")
    assert complaint.status == 201, complaint.body

    exported = bo.get(f"/members/{member_number}/export", role="customer_service")
    assert exported.status == 200, exported.body
    body = exported.body
    assert body["member"]["member_number"] == member_number and body["member"]["status"] == "active"
    assert body["profile"] == {"name": NAME, "phone": "+33612345678", "email": "zoe.quintard@example.org",
                              "birth_date": None}
    assert body["profile_erased_at"] is None
    assert body["balances"] == {"available": 115, "pending": 0, "held": 25}
    assert [card["card_number"] for card in body["cards"]] == [card_number]
    assert [(lot["points_earned"], lot["points_remaining"]) for lot in body["lots"]] == [(100, 75), (40, 40)]
    assert [(purchase["receipt_id"], purchase["amount_minor"]) for purchase in body["purchases"]] == [
        ("r-1", 10_000), ("r-2", 4_000)]
    assert [(hold["reference"], hold["status"], hold["points_held"]) for hold in body["redemptions"]] == [
        ("h-1", "open", 25)]
    assert [(item["category"], item["description"]) for item in body["complaints"]] == [
        ("wrong_points", "expected more points")]
    assert [item["kind"] for item in body["history"]] == ["hold", "earn", "earn"]
    assert audit_entries(bo.hub)[-1].action == "member.export"
    missing = bo.get("/members/0000000000000000/export", role="customer_service")
    assert (missing.status, missing.code) == (404, "not_found")


def test_card_replacement_blocks_the_old_card_and_keeps_lots_holds_and_pin(desk):
    bo, till = desk
    hub = bo.hub
    issuer = make_signing_partner(hub, now=wall_clock_partner_time(), code="issuer")
    member_number, old_card = bo.enrol(name="Lost Wallet")
    member_id = member_id_of(hub, member_number)
    bo.set_pin(old_card, PIN)
    assert till.post(PURCHASES, purchase_payload("r-1", old_card, 10_000)).status == 201
    assert SignedTestClient(bo.app, issuer).post(PURCHASES, purchase_payload("i-1", old_card, 6_000)).status == 201
    hold = till.post(REDEMPTIONS, {"reference": "h-old", "points": 120, "card_number": old_card, "pin": PIN})
    assert hold.status == 201, hold.body

    def lots_and_holds():  # type: ignore[no-untyped-def]
        with hub.unit_of_work() as uow:
            lots = uow.session.execute(select(PointLot.id, PointLot.partner_id, PointLot.points_remaining,
                                              PointLot.expires_at).where(PointLot.member_id == member_id)
                                       .order_by(PointLot.id)).all()
            holds = uow.session.execute(select(RedemptionHold.id, RedemptionHold.status, RedemptionHold.points_held)
                                        .where(RedemptionHold.member_id == member_id)).all()
        return lots, holds

    before = lots_and_holds()
    balances_before = balances(hub, member_id)
    assert balances_before == {"available": 40, "pending": 0, "held": 120}
    assert len(before[0]) == 2

    replaced = bo.post("/cards/replacement", {"card_number": old_card}, role="customer_service")
    assert replaced.status == 201, replaced.body
    new_card = replaced.body["card_number"]
    assert new_card != old_card
    with hub.unit_of_work() as uow:
        statuses = dict(uow.session.execute(select(Card.card_number, Card.status)
                                            .where(Card.member_id == member_id)).all())
    assert statuses == {old_card: "blocked", new_card: "active"}
    assert lots_and_holds() == before
    assert balances(hub, member_id) == balances_before

    old_refused = till.post(REDEMPTIONS, {"reference": "h-2", "points": 10, "card_number": old_card, "pin": PIN})
    assert (old_refused.status, old_refused.body["code"]) == (409, "card_not_usable")
    old_purchase = till.post(PURCHASES, purchase_payload("r-old", old_card, 1_000))
    assert (old_purchase.status, old_purchase.body["code"]) == (409, "card_not_usable")
    with_new = till.post(REDEMPTIONS, {"reference": "h-new", "points": 40, "card_number": new_card, "pin": PIN})
    assert with_new.status == 201, with_new.body
    captured = till.post(f"{REDEMPTIONS}/h-old/capture", {"points": 100})
    assert captured.status == 200, captured.body
    assert (captured.body["status"], captured.body["points_captured"]) == ("captured", 100)
    assert balances(hub, member_id) == {"available": 20, "pending": 0, "held": 40}
    assert_audit_green(hub)

    again = bo.post("/cards/replacement", {"card_number": old_card}, role="customer_service")
    assert (again.status, again.code) == (409, "invalid_state")
    unknown = bo.post("/cards/replacement", {"card_number": UNISSUED_CARD}, role="customer_service")
    assert (unknown.status, unknown.code) == (404, "not_found")
    entry = [item for item in audit_entries(hub) if item.action == "card.replace"][-1]
    assert entry.subject == f"member:{member_number}"
    assert old_card not in str(entry.after) and new_card not in str(entry.after)
    assert entry.after["new_card"].endswith(new_card[-4:])
