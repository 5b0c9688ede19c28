"""Tiers from qualifying spend (``alliance jobs recompute-tiers``) as the tills then see
them, and the back-office operator commands: ``staff`` clients and the ``pii`` key ring."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

from alliance.domain.pii import KeyRing
from tests.back_office_support import BackOffice, audit_entries, run_cli
from tests.factories import make_signing_partner
from tests.http_server import assert_audit_green, purchase_payload, wall_clock_partner_time
from tests.partner_client import SignedTestClient

PURCHASES = "/partner/v1/purchases"


def _tier(bo: BackOffice, member_number: str) -> str:
    return bo.get(f"/members/{member_number}", role="customer_service").body["tier"]


def _recompute(bo: BackOffice, *extra: str) -> str:
    result = run_cli(bo.app, "jobs", "recompute-tiers", *extra)
    assert result.exit_code == 0, result.output
    return result.output


def test_qualifying_spend_sets_the_tier_that_the_next_purchase_earns_with(app):
    bo = BackOffice(app)
    created = wall_clock_partner_time()
    shop = SignedTestClient(app, make_signing_partner(bo.hub, now=created, code="shop"))
    dollars = SignedTestClient(app, make_signing_partner(bo.hub, now=created, code="dollars", currency="USD"))
    silver, silver_card = bo.enrol(name="Silver Spender")
    refunder, refunder_card = bo.enrol(name="Refunder")
    foreigner, foreigner_card = bo.enrol(name="Dollar Spender")
    big, big_card = bo.enrol(name="Big Spender")

    def buy(till, receipt: str, card: str, amount_minor: int, currency: str = "EUR"):  # type: ignore[no-untyped-def]
        reply = till.post(PURCHASES, purchase_payload(receipt, card, amount_minor, currency=currency))
        assert reply.status == 201, reply.body
        return reply.body

    for receipt, amount in (("s-1", 20_000), ("s-2", 20_000), ("s-3", 10_000)):
        buy(shop, receipt, silver_card, amount)
    for receipt, amount in (("r-1", 30_000), ("r-2", 30_000)):
        buy(shop, receipt, refunder_card, amount)
    refund = shop.post(f"{PURCHASES}/r-2/refunds", {"refund_id": "rf-1", "amount_minor": 15_000})
    assert refund.status == 201, refund.body
    buy(dollars, "d-1", foreigner_card, 90_000, "USD")
    buy(shop, "b-1", big_card, 160_000)

    output = _recompute(bo)
    assert "recompute-tiers: 2 members changed tier" in output
    assert (_tier(bo, silver), _tier(bo, refunder), _tier(bo, foreigner), _tier(bo, big)) == (
        "silver", "standard", "standard", "gold")

    next_purchase = buy(shop, "s-4", silver_card, 10_000)
    assert next_purchase["breakdown"]["tier"] == "silver"
    assert next_purchase["breakdown"]["tier_multiplier"] == "1.25"
    assert next_purchase["points"]["total"] == 125
    assert buy(shop, "b-2", big_card, 10_000)["breakdown"]["tier_multiplier"] == "1.5"
    balance_check = bo.get(f"/members/{silver}", role="customer_service").body["balances"]
    assert balance_check["available"] == 500 + 125

    # A refund brings the silver member back under 500 EUR; the job is idempotent.
    assert shop.post(f"{PURCHASES}/s-4/refunds", {"refund_id": "rf-2", "amount_minor": 10_000}).status == 201
    assert shop.post(f"{PURCHASES}/s-3/refunds", {"refund_id": "rf-3", "amount_minor": 100}).status == 201
    assert "1 members changed tier" in _recompute(bo)
    assert _tier(bo, silver) == "standard"
    assert "0 members changed tier" in _recompute(bo)
    assert buy(shop, "s-5", silver_card, 10_000)["breakdown"]["tier_multiplier"] == "1"

    # Twelve months on, none of this spend qualifies any more.
    far = (datetime.now(timezone.utc) + timedelta(days=400)).isoformat()
    assert "1 members changed tier" in _recompute(bo, "--now", far)
    assert _tier(bo, big) == "standard"
    assert_audit_green(bo.hub)


def test_staff_create_client_prints_credentials_that_work_at_the_token_endpoint(app):
    bo = BackOffice(app)
    no_person = run_cli(app, "staff", "create-client", "--name", "ops console", "--role", "admin")
    assert no_person.exit_code == 2 and "--person" in no_person.output
    unknown_person = run_cli(app, "staff", "create-client", "--name", "ops", "--role", "admin", "--person", "opal")
    assert unknown_person.exit_code == 1 and "alliance staff add-person" in unknown_person.output
    assert run_cli(app, "staff", "add-person", "opal", "--name", "Opal Ops").exit_code == 0
    result = run_cli(app, "staff", "create-client", "--name", "ops console", "--role", "admin",
                     "--role", "finance", "--person", "opal")
    assert result.exit_code == 0, result.output
    assert re.search(r"^person=opal$", result.output, re.MULTILINE)
    client_id = re.search(r"^client_id=(\S+)$", result.output, re.MULTILINE).group(1)
    client_secret = re.search(r"^client_secret=(\S+)$", result.output, re.MULTILINE).group(1)
    assert re.search(r"^roles=admin finance$", result.output, re.MULTILINE)
    token = bo.request_token(client_id, client_secret)
    assert token.status == 200, token.body
    assert set(token.body["scope"].split()) == {"admin", "finance"}
    audit_log = bo.call("GET", "/audit-log", token=token.body["access_token"])
    assert audit_log.status == 200 and audit_log.body["chain_ok"] is True
    person_entry, created_entry = audit_entries(bo.hub)[:2]
    assert (person_entry.action, person_entry.subject) == ("staff.person.add", "person:opal")
    assert (created_entry.action, created_entry.subject) == ("client.create", f"client:{client_id}")
    assert created_entry.after["person"] == "opal"
    assert created_entry.actor.startswith("cli:")
    assert client_secret not in str(created_entry.after)

    revoked = run_cli(app, "staff", "revoke-client", client_id)
    assert revoked.exit_code == 0, revoked.output
    after = bo.call("GET", "/audit-log", token=token.body["access_token"])
    assert (after.status, after.code) == (401, "not_authenticated")
    assert bo.request_token(client_id, client_secret).status == 401
    assert audit_entries(bo.hub)[-1].action == "client.revoke"

    unknown = run_cli(app, "staff", "revoke-client", "bo_0000000000000000")
    assert unknown.exit_code == 1 and "no client" in unknown.output
    bad_role = run_cli(app, "staff", "create-client", "--name", "x", "--role", "root", "--person", "opal")
    assert bad_role.exit_code == 2


def test_pii_commands_print_key_rings_the_hub_accepts(app):
    fresh = run_cli(app, "pii", "new-key-ring")
    assert fresh.exit_code == 0, fresh.output
    ring = KeyRing.from_config(fresh.output.strip())
    assert ring.active_key_id == "k1" and len(ring.keys) == 1
    assert run_cli(app, "pii", "new-key-ring").output != fresh.output

    added = run_cli(app, "pii", "add-key", "--key-id", "k2")
    assert added.exit_code == 0, added.output
    rotated = KeyRing.from_config(added.output.strip())
    current = BackOffice(app).hub.key_ring
    assert rotated.active_key_id == "k2"
    assert [key.key_id for key in rotated.keys] == ["k1", "k2"]
    assert rotated.lookup_secret == current.lookup_secret
    token = current.encrypt("+33612345678", context="member:1:phone")
    assert rotated.decrypt(token, context="member:1:phone") == "+33612345678"
    duplicate = run_cli(app, "pii", "add-key", "--key-id", "k1")
    assert duplicate.exit_code == 1 and "already" in duplicate.output
