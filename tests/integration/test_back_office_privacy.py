"""Privacy: erasing a member's personal data leaves the ledger intact, and the PII key
ring rotates (new active key, re-encryption by the CLI, old key dropped) without losing
a profile or a lookup."""

from __future__ import annotations

import re

from sqlalchemy import select, text

from alliance.domain.pii import KeyRing, PiiKey, with_new_active_key
from alliance.extensions import hub_state
from alliance.models import Card, Complaint, Member, MemberProfile
from tests.back_office_support import BackOffice, audit_entries, member_id_of, other_hub, raw_table_text, run_cli
from tests.factories import make_signing_partner
from tests.http_server import books, purchase_payload, wall_clock_partner_time
from tests.partner_client import SignedTestClient

PIN = "2468"
ERASED_DESCRIPTION = "[erased at the member's request]"


def _profile_tokens(hub) -> list[str]:  # type: ignore[no-untyped-def]
    with hub.engine.connect() as connection:
        rows = connection.execute(text(
            "SELECT name_encrypted, phone_encrypted, email_encrypted FROM member_profiles")).all()
    return [token for row in rows for token in row if token is not None]


def test_erasure_removes_personal_data_and_keeps_the_ledger(app):
    bo = BackOffice(app)
    hub = bo.hub
    till = SignedTestClient(app, make_signing_partner(hub, now=wall_clock_partner_time(), code="shop"))
    member_number, card_number = bo.enrol(name="Érika Forget", phone="+33 6 55 44 33 22", email="erika@example.org")
    keeper_number, _ = bo.enrol(name="Kept Member", phone="+33655443300")
    bo.set_pin(card_number, PIN)
    assert till.post("/partner/v1/purchases", purchase_payload("r-1", card_number, 25_000)).status == 201
    assert till.post("/partner/v1/redemptions", {"reference": "h-1", "points": 40, "card_number": card_number,
                                                 "pin": PIN}).status == 201
    complaint = bo.post("/complaints", {"partner": "shop", "category": "staff_conduct", "member": member_number,
                                        "receipt_id": "r-1", "description": "Érika was told her phone is wrong"},
                        role="customer_service")
    other_complaint = bo.post("/complaints", {"partner": "shop", "category": "other", "member": keeper_number,
                                              "description": "kept as written"}, role="customer_service")
    assert complaint.status == other_complaint.status == 201
    ledger_before = books(hub)
    member_id = member_id_of(hub, member_number)

    erased = bo.post(f"/members/{member_number}/erasure", role="customer_service")
    assert erased.status == 204, erased.body

    assert books(hub) == ledger_before
    shown = bo.get(f"/members/{member_number}", role="customer_service").body
    assert shown["status"] == "closed"
    assert shown["profile"] == {"name": None, "phone": None, "email": None, "birth_date": None}
    assert {card["status"] for card in shown["cards"]} == {"blocked"}
    assert shown["balances"] == {"available": 210, "pending": 0, "held": 40}
    assert bo.post("/members/search", {"phone": "+33655443322"}, role="customer_service").body["members"] == []
    assert bo.post("/members/search", {"email": "erika@example.org"}, role="customer_service").body["members"] == []
    assert len(bo.post("/members/search", {"phone": "+33655443300"}, role="customer_service").body["members"]) == 1
    with hub.unit_of_work() as uow:
        profile = uow.session.get(MemberProfile, member_id)
        descriptions = dict(uow.session.execute(select(Complaint.id, Complaint.description)).all())
        blocked_at = uow.session.scalars(select(Card.blocked_at).where(Card.member_id == member_id)).all()
    assert (profile.name_encrypted, profile.phone_encrypted, profile.email_encrypted,
            profile.phone_lookup, profile.email_lookup) == (None,) * 5
    assert profile.erased_at is not None and all(blocked_at)
    assert descriptions == {complaint.body["id"]: ERASED_DESCRIPTION, other_complaint.body["id"]: "kept as written"}
    assert not any("Érika" in value or "erika" in value for value in raw_table_text(hub, "complaints"))
    exported = bo.get(f"/members/{member_number}/export", role="customer_service").body
    assert exported["profile"] == {"name": None, "phone": None, "email": None, "birth_date": None}
    assert exported["profile_erased_at"] is not None
    assert [purchase["receipt_id"] for purchase in exported["purchases"]] == ["r-1"]

    # The partner side still settles what happened before the erasure.
    assert till.post("/partner/v1/redemptions/h-1/capture", {"points": 40}).status == 200
    audited = run_cli(app, "audit")
    assert audited.exit_code == 0, audited.output
    assert "audit passed" in audited.output

    twice = bo.post(f"/members/{member_number}/erasure", role="customer_service")
    assert (twice.status, twice.code) == (409, "invalid_state")
    update = bo.patch(f"/members/{member_number}/profile", {"name": "Back Again"}, role="customer_service")
    assert (update.status, update.code) == (409, "invalid_state")
    reuse = till.post("/partner/v1/purchases", purchase_payload("r-2", card_number, 1_000))
    assert (reuse.status, reuse.body["code"]) == (409, "card_not_usable")
    missing = bo.post("/members/0000000000000000/erasure", role="customer_service")
    assert (missing.status, missing.code) == (404, "not_found")


def test_erasing_a_member_enrolled_without_a_profile_is_recorded_and_refused_the_second_time(app):
    bo = BackOffice(app)
    seeded = run_cli(app, "seed-demo")
    assert seeded.exit_code == 0, seeded.output
    member_number = re.search(r"member ([0-9a-f]{16})", seeded.output).group(1)
    assert bo.post(f"/members/{member_number}/erasure", role="customer_service").status == 204
    exported = bo.get(f"/members/{member_number}/export", role="customer_service").body
    twice = bo.post(f"/members/{member_number}/erasure", role="customer_service")
    erase_entries = [entry for entry in audit_entries(bo.hub) if entry.action == "member.erase"]
    assert exported["member"]["status"] == "closed"
    assert exported["profile_erased_at"] is not None
    assert (twice.status, twice.code) == (409, "invalid_state")
    assert len(erase_entries) == 1


def test_the_erasure_audit_entry_records_the_status_before_the_erasure(app):
    bo = BackOffice(app)
    member_number, _ = bo.enrol(name="Audit Before")
    assert bo.post(f"/members/{member_number}/erasure", role="customer_service").status == 204
    entry = audit_entries(bo.hub)[-1]
    assert entry.action == "member.erase"
    assert entry.after == {"status": "closed", "profile": "erased"}
    assert entry.before == {"status": "active"}


def test_erasure_also_redacts_the_resolution_notes_of_the_members_complaints(app):
    bo = BackOffice(app)
    make_signing_partner(bo.hub, now=wall_clock_partner_time(), code="shop")
    member_number, _ = bo.enrol(name="Erika Forget", phone="+33655443322")
    filed = bo.post("/complaints", {"partner": "shop", "category": "other", "member": member_number,
                                    "description": "wants a call back"}, role="customer_service")
    complaint_path = f"/complaints/{filed.body['id']}/transitions"
    assert bo.post(complaint_path, {"status": "investigating"}, role="customer_service").status == 200
    assert bo.post(complaint_path, {"status": "resolved", "note": "Called Erika Forget back on +33655443322"},
                   role="customer_service").status == 200
    assert bo.post(f"/members/{member_number}/erasure", role="customer_service").status == 204
    listed = bo.get("/complaints", role="customer_service").body["complaints"]
    assert listed[0]["description"] == ERASED_DESCRIPTION
    assert "Erika" not in str(listed) and "655443322" not in str(listed)
    assert not any("Erika" in value for value in raw_table_text(bo.hub, "complaints"))


def test_pii_key_rotation_reencrypts_every_profile_and_the_old_key_can_then_go(app, tmp_path):
    bo = BackOffice(app)
    ring_a = bo.hub.key_ring
    assert ring_a.active_key_id == "k1"
    people = {
        "Ana Prima": "+33 6 10 00 00 01",
        "Bruno Secundo": "+33 6 10 00 00 02",
        "Chloé Tertia": "+33 6 10 00 00 03",
    }
    members = {name: bo.enrol(name=name, phone=phone, email=f"{name.split()[0].lower()}@example.org")[0]
               for name, phone in people.items()}
    erased_number, _ = bo.enrol(name="Gone Already", phone="+33610000009")
    assert bo.post(f"/members/{erased_number}/erasure", role="customer_service").status == 204
    assert {token.split(".")[1] for token in _profile_tokens(bo.hub)} == {"k1"}

    config_b = with_new_active_key(ring_a.to_config(), "k2")
    with other_hub(bo.hub, tmp_path / "ring-b", pii_keys=config_b) as app_b:
        hub_b = BackOffice(app_b)
        assert hub_state(app_b).key_ring.active_key_id == "k2"
        for name, member_number in members.items():
            shown = hub_b.get(f"/members/{member_number}", role="customer_service").body
            assert shown["profile"]["name"] == name
        newcomer, _ = hub_b.enrol(name="Dario Quarto", phone="+33610000004")
        assert sorted(token.split(".")[1] for token in _profile_tokens(bo.hub)) == ["k1"] * 9 + ["k2"] * 2

        result = run_cli(app_b, "pii", "reencrypt", "--batch-size", "2")
        assert result.exit_code == 0, result.output
        assert "re-encrypted 3 member profiles under key k2" in result.output
        tokens = _profile_tokens(bo.hub)
        assert len(tokens) == 11 and all(token.startswith("v1.k2.") for token in tokens)
        again = run_cli(app_b, "pii", "reencrypt")
        assert "re-encrypted 0 member profiles" in again.output
        for name, phone in people.items():
            found = hub_b.post("/members/search", {"phone": phone}, role="customer_service").body["members"]
            assert [member["profile"]["name"] for member in found] == [name]

    ring_b = KeyRing.from_config(config_b)
    only_k2 = KeyRing([PiiKey("k2", ring_b._secrets_by_key_id["k2"])], "k2", ring_b.lookup_secret).to_config()
    assert "k1=" not in only_k2
    with other_hub(bo.hub, tmp_path / "ring-c", pii_keys=only_k2) as app_c:
        hub_c = BackOffice(app_c)
        for name, member_number in {**members, "Dario Quarto": newcomer}.items():
            shown = hub_c.get(f"/members/{member_number}", role="customer_service")
            assert shown.status == 200, shown.body
            assert shown.body["profile"]["name"] == name
        found = hub_c.post("/members/search", {"email": "bruno@example.org"}, role="customer_service").body
        assert [member["member_number"] for member in found["members"]] == [members["Bruno Secundo"]]
        exported = hub_c.get(f"/members/{members['Ana Prima']}/export", role="customer_service").body
        assert exported["profile"] == {"name": "Ana Prima", "phone": "+33610000001", "email": "ana@example.org",
                                      "birth_date": None}

    # The hub still on ring A (k1 only) can no longer read: the data is under k2 now.
    stale = bo.get(f"/members/{members['Ana Prima']}", role="customer_service")
    assert (stale.status, stale.code) == (500, "pii_key_missing")
    assert "k2" in stale.body["detail"] and ring_a.to_config().split(";")[1].split("=")[1] not in str(stale.body)
    with bo.hub.unit_of_work() as uow:
        assert uow.session.scalar(select(Member.status).where(Member.member_number == erased_number)) == "closed"


def test_phone_numbers_e_mails_and_card_numbers_never_travel_in_a_back_office_url(app):
    bo = BackOffice(app)
    member_number, card_number = bo.enrol(name="Ursula Url", phone="+33 6 12 00 00 01", email="ursula@example.org")
    found = bo.post("/members/search", {"phone": "+33612000001", "email": "nobody@example.org"},
                    role="customer_service")
    assert found.status == 200, found.body
    assert [member["member_number"] for member in found.body["members"]] == [member_number]

    old_form = bo.get("/members", role="customer_service", query={"email": "ursula@example.org"})
    assert (old_form.status, old_form.code) == (400, "search_by_post")
    assert "POST /back-office/v1/members/search" in old_form.body["detail"]
    assert "ursula" not in old_form.body["detail"]
    nothing = bo.post("/members/search", {}, role="customer_service")
    assert (nothing.status, nothing.code) == (422, "validation_failed") and "phone" in nothing.body["errors"]

    pin = bo.post("/cards/pin", {"card_number": card_number, "pin": "8642"}, role="customer_service")
    assert pin.status == 204, pin.body
    replaced = bo.post("/cards/replacement", {"card_number": card_number}, role="customer_service")
    assert replaced.status == 201 and replaced.body["card_number"] != card_number
    assert bo.post(f"/cards/{card_number}/pin", {"pin": "8642"}, role="customer_service").status == 404

    spec = app.test_client().get("/openapi.json").get_json()
    for path, item in spec["paths"].items():
        if not path.startswith("/back-office/"):
            continue
        assert "card" not in re.sub(r"^/back-office/v1/cards/", "", path), path
        for method, operation in item.items():
            if method not in ("get", "post", "put", "patch", "delete"):
                continue
            names = {parameter["name"] for parameter in [*item.get("parameters", []),
                                                         *operation.get("parameters", [])]}
            assert not names & {"phone", "email", "card_number", "card"}, (method, path, names)
