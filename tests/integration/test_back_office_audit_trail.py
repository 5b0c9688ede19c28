"""The back-office audit trail: every change appends an attributed, hash-chained entry with
no personal data in it; the admin endpoint verifies the chain; tampering is caught by
``alliance audit``; and the database itself refuses edits and deletions."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError

from alliance.models import Member
from tests.back_office_support import (
    BackOffice,
    audit_count,
    audit_entries,
    new_public_key,
    raw_table_text,
    run_cli,
    tamper_audit_log,
)
from tests.factories import make_member, make_signing_partner
from tests.http_server import fund_member, purchase_payload, wall_clock_partner_time
from tests.partner_client import SignedTestClient

NAME, PHONE, EMAIL = "Mathilde Arrowsmith", "+33 6 77 88 99 00", "mathilde.arrowsmith@example.net"
PII_FRAGMENTS = ("Mathilde", "Arrowsmith", "+33677889900", "677889900", "mathilde.arrowsmith", "Renamed Person",
                 "+33611223344", "611223344", "renamed@example.net")


def _every_kind_of_change(bo: BackOffice) -> list[tuple[str, str, str]]:
    """Make one change of each kind; returns the (role, action, subject) each should log."""
    hub = bo.hub
    shop = make_signing_partner(hub, now=wall_clock_partner_time(), code="shop")
    member_number, card = bo.enrol(name=NAME, phone=PHONE, email=EMAIL)
    expected = [("customer_service", "member.enrol", f"member:{member_number}")]

    def did(role: str, action: str, subject: str, reply, status: int) -> None:  # type: ignore[no-untyped-def]
        assert reply.status == status, (action, reply.body)
        expected.append((role, action, subject))

    cs, pm, admin = "customer_service", "partner_manager", "admin"
    did(cs, "member.profile.update", f"member:{member_number}",
        bo.patch(f"/members/{member_number}/profile", {"name": "Renamed Person", "phone": "+33 6 11 22 33 44",
                                                        "email": "renamed@example.net"}, role=cs), 200)
    did(cs, "card.pin.reset", f"card:{'•' * 12}{card[-4:]}",
        bo.post("/cards/pin", {"card_number": card, "pin": "2468"}, role=cs), 204)
    did(cs, "member.redemption_code.issue", f"member:{member_number}",
        bo.post(f"/members/{member_number}/redemption-codes", role=cs), 201)
    assert SignedTestClient(bo.app, shop).post("/partner/v1/purchases",
                                               purchase_payload("r-1", card, 5_000)).status == 201
    replaced = bo.post("/cards/replacement", {"card_number": card}, role=cs)
    did(cs, "card.replace", f"member:{member_number}", replaced, 201)
    did(pm, "partner.onboard", "partner:newco", bo.post("/partners", {
        "code": "newco", "name": "NewCo", "currency": "EUR", "time_zone": "UTC", "settlement_cycle": "daily",
        "issue_price_per_point": "0.01", "redemption_price_per_point": "0.008", "base_points_per_unit": "1"},
        role=pm), 201)
    did(pm, "partner.status", "partner:newco", bo.post("/partners/newco/status", {"status": "active"}, role=pm), 200)
    soon = (datetime.now(timezone.utc) + timedelta(days=7)).isoformat()
    did(pm, "partner.price.add", "partner:newco", bo.post("/partners/newco/prices", {
        "effective_from": soon, "issue_price_per_point": "0.011", "redemption_price_per_point": "0.009"},
        role=pm), 201)
    did(pm, "partner.earn_rule.add", "partner:newco", bo.post("/partners/newco/earn-rules", {
        "effective_from": soon, "base_points_per_unit": "2"}, role=pm), 201)
    did(pm, "partner.terminal.add", "partner:newco", bo.post("/partners/newco/terminals", {"code": "till-1"},
                                                              role=pm), 201)
    _, public_key = new_public_key()
    did(pm, "partner.key.register", "partner:newco", bo.post("/partners/newco/keys", {
        "key_id": "newco-key", "public_key": public_key}, role=pm), 201)
    did(pm, "partner.key.revoke", "partner:newco", bo.post("/partners/newco/keys/newco-key/revocation", role=pm), 201)
    campaign = bo.post("/campaigns", {"name": "Launch", "funded_by": "partner", "partner": "newco",
                                      "starts_at": soon, "ends_at": (datetime.now(timezone.utc)
                                                                     + timedelta(days=9)).isoformat()}, role=pm)
    did(pm, "campaign.create", f"campaign:{campaign.body.get('id')}", campaign, 201)
    complaint = bo.post("/complaints", {"partner": "shop", "category": "other", "member": member_number,
                                        "description": f"{NAME} says the till was rude"}, role=cs)
    did(cs, "complaint.open", f"complaint:{complaint.body.get('id')}", complaint, 201)
    did(pm, "complaint.transition", f"complaint:{complaint.body['id']}",
        bo.post(f"/complaints/{complaint.body['id']}/transitions", {"status": "investigating"}, role=pm), 200)
    old = datetime.now(timezone.utc) - timedelta(days=60)
    sender, receiver = make_member(hub, now=old), make_member(hub, now=old)
    fund_member(hub, member_id=sender.member_id, partner_id=shop.partner_id, points=100)
    assert bo.get(f"/members/{member_number}", role=cs).status == 200  # reads other than exports are not logged
    numbers = _member_numbers(hub, sender.member_id, receiver.member_id)
    did(cs, "member.transfer", f"member:{numbers[0]}",
        bo.post("/transfers", {"from_member": numbers[0], "to_member": numbers[1], "points": 10}, role=cs), 201)
    did(admin, "staff.person.add", "person:rita", bo.post("/people", {"handle": "rita", "name": "Rita Reports"},
                                                          role=admin), 201)
    created = bo.post("/clients", {"name": "reporting", "roles": ["finance"], "person": "rita"}, role=admin)
    did(admin, "client.create", f"client:{created.body.get('client_id')}", created, 201)
    did(admin, "client.revoke", f"client:{created.body['client_id']}",
        bo.post(f"/clients/{created.body['client_id']}/revocation", role=admin), 204)
    did(cs, "member.export", f"member:{member_number}", bo.get(f"/members/{member_number}/export", role=cs), 200)
    did(cs, "member.erase", f"member:{member_number}", bo.post(f"/members/{member_number}/erasure", role=cs), 204)
    return expected


def _member_numbers(hub, *member_ids: int) -> list[str]:  # type: ignore[no-untyped-def]
    with hub.unit_of_work() as uow:
        by_id = dict(uow.session.execute(select(Member.id, Member.member_number)
                                         .where(Member.id.in_(member_ids))).all())
    return [by_id[member_id] for member_id in member_ids]


def test_every_back_office_change_appends_an_attributed_entry_without_personal_data(app):
    bo = BackOffice(app)
    expected = _every_kind_of_change(bo)
    entries = audit_entries(bo.hub)
    assert [(entry.actor, entry.action, entry.subject) for entry in entries] == [
        (bo.actor(role), action, subject) for role, action, subject in expected]
    assert [entry.sequence for entry in entries] == list(range(1, len(expected) + 1))
    assert entries[0].previous_hash == "0" * 64
    # Consecutive entries: entries[1:] is one shorter.
    assert all(later.previous_hash == earlier.entry_hash
               for earlier, later in zip(entries, entries[1:], strict=False))

    profile_update = next(entry for entry in entries if entry.action == "member.profile.update")
    assert profile_update.after == {"changed_fields": ["email", "name", "phone"]}
    stored = " ".join(raw_table_text(bo.hub, "audit_log"))
    for fragment in PII_FRAGMENTS:
        assert fragment.lower() not in stored.lower(), fragment
    with bo.hub.engine.connect() as connection:
        cards = connection.execute(text("SELECT card_number FROM cards")).scalars().all()
    assert not any(card in stored for card in cards)

    listed = bo.get("/audit-log", role="admin")
    assert listed.status == 200, listed.body
    assert listed.body["chain_ok"] is True and listed.body["first_break"] is None
    assert [item["sequence"] for item in listed.body["entries"]] == [entry.sequence for entry in entries]
    assert [item["entry_hash"] for item in listed.body["entries"]] == [entry.entry_hash for entry in entries]
    page = bo.get("/audit-log", role="admin", query={"after_sequence": 3, "limit": 2}).body
    assert [item["sequence"] for item in page["entries"]] == [4, 5]
    assert bo.get("/audit-log", role="admin", query={"limit": 501}).code == "validation_failed"
    # Reading the log is not itself a change.
    assert audit_count(bo.hub) == len(expected)
    audited = run_cli(bo.app, "audit")
    assert audited.exit_code == 0, audited.output


@pytest.mark.parametrize(("column", "value"), [
    ("actor", "'client:someone-else'"),
    ("subject", "'member:0000000000000000'"),
    ("occurred_at", None),
], ids=["actor", "subject", "occurred_at"])
def test_tampering_with_one_entry_breaks_the_chain_there_and_alliance_audit_fails(app, column, value):
    bo = BackOffice(app)
    for index in range(5):
        bo.enrol(name=f"Member {index}")
    entries_before = audit_entries(bo.hub)
    assert run_cli(bo.app, "audit").exit_code == 0
    if value is None:  # a timestamp moved by a second, written in the backend's own form
        value = ("occurred_at + interval '1 second'" if bo.hub.engine.dialect.name == "postgresql"
                 else "(SELECT occurred_at FROM audit_log WHERE sequence = 2)")
    tamper_audit_log(bo.hub, f"UPDATE audit_log SET {column} = {value} WHERE sequence = 3")
    assert [entry.sequence for entry in audit_entries(bo.hub)] == [entry.sequence for entry in entries_before]

    listed = bo.get("/audit-log", role="admin").body
    assert listed["chain_ok"] is False
    assert listed["first_break"].startswith("sequence 3: ")
    result = run_cli(bo.app, "audit")
    assert result.exit_code == 1, result.output
    assert "FAIL audit_log_chain" in result.output
    assert "audit FAILED at audit_log_chain: entry 3: " in result.output
    as_json = run_cli(bo.app, "audit", "--json")
    report = json.loads(as_json.output[:as_json.output.rindex("}") + 1])
    chain = next(check for check in report["checks"] if check["name"] == "audit_log_chain")
    assert chain["problems"] == 1 and chain["first_problem"].startswith("entry 3: ")
    assert all(check["problems"] == 0 for check in report["checks"] if check["name"] != "audit_log_chain")


@pytest.mark.parametrize("statement", [
    "UPDATE audit_log SET action = 'nothing.happened' WHERE sequence = 1",
    "UPDATE audit_log SET entry_hash = previous_hash",
    "DELETE FROM audit_log WHERE sequence = 2",
    "DELETE FROM audit_log",
], ids=["update-one", "update-all", "delete-one", "delete-all"])
def test_the_database_refuses_edits_and_deletions_of_the_audit_log(app, statement):
    bo = BackOffice(app)
    bo.enrol(name="First")
    bo.enrol(name="Second")
    before = [(entry.sequence, entry.action, entry.entry_hash) for entry in audit_entries(bo.hub)]
    with pytest.raises(DBAPIError):
        with bo.hub.engine.begin() as connection:
            connection.execute(text(statement))
    assert [(entry.sequence, entry.action, entry.entry_hash) for entry in audit_entries(bo.hub)] == before
    assert bo.get("/audit-log", role="admin").body["chain_ok"] is True


def test_postgresql_refuses_truncating_the_audit_log(pg_app):
    bo = BackOffice(pg_app)
    bo.enrol(name="Only")
    with pytest.raises(DBAPIError):
        with bo.hub.engine.begin() as connection:
            connection.execute(text("TRUNCATE audit_log"))
    assert audit_count(bo.hub) == 1
