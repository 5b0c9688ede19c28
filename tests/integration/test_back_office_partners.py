"""Partner management: onboarding and the status lifecycle as the tills feel it, scheduled
prices and earn rules, campaigns, terminals, and signing keys registered and revoked
through the back office, then used (or refused) on the signed partner API."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest
from sqlalchemy import select

from alliance.models import JournalTransaction, Partner, PartnerEarnRule, PartnerKey, PartnerPrice, Purchase
from tests.back_office_support import BackOffice, new_public_key, run_cli
from tests.factories import SigningPartner, make_signing_partner
from tests.http_server import HubClock, assert_audit_green, purchase_payload, wall_clock_partner_time
from tests.partner_client import SignedTestClient

PURCHASES = "/partner/v1/purchases"
REDEMPTIONS = "/partner/v1/redemptions"
PIN = "2468"


def _partner_input(partner_code: str, **overrides: object) -> dict[str, object]:
    values: dict[str, object] = {
        "code": partner_code, "name": partner_code.title(), "currency": "EUR", "time_zone": "Europe/Paris",
        "settlement_cycle": "weekly", "issue_price_per_point": "0.0100", "redemption_price_per_point": "0.0080",
        "base_points_per_unit": "1",
        "amount_ladder": [{"from_minor": 0, "multiplier": "1"}, {"from_minor": 10_000, "multiplier": "1.5"}],
    }
    values.update(overrides)
    return values


def _onboard_with_key(bo: BackOffice, code: str) -> SignedTestClient:
    """Onboard ``code`` and register a key for it, all through the back office; its till client."""
    onboarded = bo.post("/partners", _partner_input(code), role="partner_manager")
    assert onboarded.status == 201, onboarded.body
    private_key, public_key = new_public_key()
    registered = bo.post(f"/partners/{code}/keys", {"key_id": f"{code}-key", "public_key": public_key},
                         role="partner_manager")
    assert registered.status == 201, registered.body
    with bo.hub.unit_of_work() as uow:
        partner_id = uow.session.scalar(select(Partner.id).where(Partner.code == code))
    return SignedTestClient(bo.app, SigningPartner(partner_id, code, f"{code}-key", private_key, 0))


def _now_purchase(receipt: str, card: str, amount: int = 10_000, **extra: object) -> dict[str, object]:
    return purchase_payload(receipt, card, amount, purchased_at=datetime.now(timezone.utc).isoformat(), **extra)


def _set_status(bo: BackOffice, code: str, status: str):  # type: ignore[no-untyped-def]
    return bo.post(f"/partners/{code}/status", {"status": status}, role="partner_manager")


def test_a_partner_earns_and_redeems_only_while_active_and_termination_is_final(app):
    bo = BackOffice(app)
    till = _onboard_with_key(bo, "acme")
    shown = bo.get("/partners/acme", role="partner_manager").body
    assert {key: shown[key] for key in ("code", "name", "status", "currency", "time_zone", "settlement_cycle",
                                        "return_window_days")} == {
        "code": "acme", "name": "Acme", "status": "pending", "currency": "EUR", "time_zone": "Europe/Paris",
        "settlement_cycle": "weekly", "return_window_days": 0}
    member_number, card = bo.enrol(name="Shopper")
    bo.set_pin(card, PIN)

    # A pending (not yet active) partner's keys open nothing on the partner API.
    pending = till.post(PURCHASES, _now_purchase("p-1", card))
    assert (pending.status, pending.body["code"]) == (401, "partner_inactive")
    assert (_set_status(bo, "acme", "suspended").code) == "invalid_state"

    assert _set_status(bo, "acme", "active").body["status"] == "active"
    earned = till.post(PURCHASES, _now_purchase("p-2", card, 20_000))
    assert earned.status == 201, earned.body
    assert earned.body["points"]["total"] == 300 and earned.body["breakdown"]["ladder_multiplier"] == "1.5"
    assert till.post(REDEMPTIONS, {"reference": "h-1", "points": 50, "card_number": card, "pin": PIN}).status == 201

    assert _set_status(bo, "acme", "suspended").body["status"] == "suspended"
    suspended_purchase = till.post(PURCHASES, _now_purchase("p-3", card))
    suspended_redemption = till.post(REDEMPTIONS, {"reference": "h-2", "points": 10, "card_number": card, "pin": PIN})
    assert (suspended_purchase.status, suspended_purchase.body["code"]) == (409, "invalid_state")
    assert (suspended_redemption.status, suspended_redemption.body["code"]) == (409, "invalid_state")
    listed = bo.get("/partners", role="partner_manager").body["partners"]
    assert [(partner["code"], partner["status"]) for partner in listed] == [("acme", "suspended")]

    assert _set_status(bo, "acme", "active").status == 200
    assert till.post(PURCHASES, _now_purchase("p-4", card)).status == 201
    assert _set_status(bo, "acme", "terminated").body["status"] == "terminated"
    for status in ("active", "suspended", "pending", "terminated"):
        again = _set_status(bo, "acme", status)
        assert (again.status, again.code) == (409, "invalid_state"), status
    terminated = till.post(PURCHASES, _now_purchase("p-5", card))
    assert (terminated.status, terminated.body["code"]) == (401, "partner_inactive")

    duplicate = bo.post("/partners", _partner_input("acme"), role="partner_manager")
    unknown = _set_status(bo, "nobody", "active")
    bad_status = _set_status(bo, "acme", "closed")
    assert (duplicate.status, duplicate.code) == (409, "conflict")
    assert (unknown.status, unknown.code) == (404, "not_found")
    assert (bad_status.status, bad_status.code) == (422, "validation_failed")
    assert_audit_green(bo.hub)


def test_scheduled_prices_and_earn_rules_apply_from_their_moment_on(app, monkeypatch):
    bo = BackOffice(app)
    clock = HubClock(monkeypatch)
    partner = make_signing_partner(bo.hub, now=wall_clock_partner_time(), code="shop")
    till = SignedTestClient(app, partner)
    _, card = bo.enrol(name="Price Watcher")
    start = datetime.now(timezone.utc)
    # Ten seconds of margin, so a slow machine still schedules in the future and buys before it.
    new_price_from = start + timedelta(seconds=10)
    new_rule_from = start + timedelta(seconds=10)
    scheduled = bo.post("/partners/shop/prices", {"effective_from": new_price_from.isoformat(),
                                                  "issue_price_per_point": "0.0125",
                                                  "redemption_price_per_point": "0.0090"}, role="partner_manager")
    assert scheduled.status == 201, scheduled.body
    rule = bo.post("/partners/shop/earn-rules", {"effective_from": new_rule_from.isoformat(),
                                                 "base_points_per_unit": "3", "per_purchase_cap_points": 1_000},
                   role="partner_manager")
    assert rule.status == 201, rule.body

    def buy(receipt: str, purchased_at: datetime):  # type: ignore[no-untyped-def]
        reply = till.post(PURCHASES, purchase_payload(receipt, card, 10_000, purchased_at=purchased_at.isoformat()),
                          created=clock.now())
        assert reply.status == 201, reply.body
        return reply

    before = buy("before", start - timedelta(seconds=5))
    clock.advance(15)
    after = buy("after", start + timedelta(seconds=11))
    # A purchase made before the new rule but reported after the new price: old rule, new price.
    late_report = buy("late-report", start - timedelta(seconds=10))

    assert before.body["points"]["total"] == 100
    assert Decimal(before.body["breakdown"]["base_points_per_unit"]) == 1
    assert after.body["points"]["total"] == 300
    assert Decimal(after.body["breakdown"]["base_points_per_unit"]) == 3
    assert late_report.body["points"]["total"] == 100
    with bo.hub.unit_of_work() as uow:
        prices = dict(uow.session.execute(
            select(Purchase.receipt_id, JournalTransaction.price_per_point)
            .join(JournalTransaction, JournalTransaction.id == Purchase.earn_transaction_id)).all())
    assert prices == {"before": Decimal("0.0100"), "after": Decimal("0.0125"), "late-report": Decimal("0.0125")}

    past = (datetime.now(timezone.utc) - timedelta(minutes=1)).isoformat()
    past_price = bo.post("/partners/shop/prices", {"effective_from": past, "issue_price_per_point": "0.02",
                                                   "redemption_price_per_point": "0.01"}, role="partner_manager")
    past_rule = bo.post("/partners/shop/earn-rules", {"effective_from": past, "base_points_per_unit": "2"},
                        role="partner_manager")
    tomorrow = {"effective_from": (start + timedelta(days=1)).isoformat(), "issue_price_per_point": "0.02",
                "redemption_price_per_point": "0.01"}
    assert bo.post("/partners/shop/prices", tomorrow, role="partner_manager").status == 201
    same_moment = bo.post("/partners/shop/prices", tomorrow, role="partner_manager")
    unknown_partner = bo.post("/partners/ghost/prices", tomorrow, role="partner_manager")
    assert (past_price.status, past_price.code) == (422, "validation_failed")
    assert (past_rule.status, past_rule.code) == (422, "validation_failed")
    assert (same_moment.status, same_moment.code) == (409, "conflict")
    assert (unknown_partner.status, unknown_partner.code) == (404, "not_found")
    assert_audit_green(bo.hub)


@pytest.mark.parametrize(("ladder", "problem"), [
    ([{"from_minor": 10_000, "multiplier": "1.5"}, {"from_minor": 0, "multiplier": "1"}], "descending steps"),
    ([{"from_minor": 0, "multiplier": "1"}, {"from_minor": 0, "multiplier": "2"}], "repeated step"),
    ([{"from_minor": 0, "multiplier": "0"}], "zero multiplier"),
    ([{"from_minor": 0, "multiplier": 1.5}], "float multiplier"),
    ([{"from_minor": -1, "multiplier": "1"}], "negative amount"),
    ([{"from_minor": 0}], "missing multiplier"),
])
def test_an_earn_rule_or_partner_with_a_bad_ladder_is_refused(pg_app, ladder, problem):
    bo = BackOffice(pg_app)
    make_signing_partner(bo.hub, now=wall_clock_partner_time(), code="shop")
    soon = (datetime.now(timezone.utc) + timedelta(days=1)).isoformat()
    rule = bo.post("/partners/shop/earn-rules", {"effective_from": soon, "base_points_per_unit": "1",
                                                 "amount_ladder": ladder}, role="partner_manager")
    partner = bo.post("/partners", _partner_input("ladder-test", amount_ladder=ladder), role="partner_manager")
    assert (rule.status, rule.code) == (422, "validation_failed"), problem
    assert (partner.status, partner.code) == (422, "validation_failed"), problem
    assert bo.get("/partners/ladder-test", role="partner_manager").status == 404


def test_partner_input_refuses_floats_bad_zones_and_unknown_fields(app):
    bo = BackOffice(app)
    for overrides, field in (({"issue_price_per_point": 0.01}, "issue_price_per_point"),
                             ({"time_zone": "Mars/Olympus"}, "time_zone"),
                             ({"currency": "eur"}, "currency"),
                             ({"code": "Bad Code"}, "code"),
                             ({"code": "good-code\n"}, "code"),
                             ({"discount": "10"}, "discount")):
        reply = bo.post("/partners", _partner_input("good-code", **overrides), role="partner_manager")
        assert (reply.status, reply.code) == (422, "validation_failed"), overrides
        assert field in reply.body["errors"], reply.body
    assert bo.get("/partners", role="partner_manager").body["partners"] == []


def test_campaigns_name_their_funder_and_a_hub_campaign_pays_a_bonus(app):
    bo = BackOffice(app)
    make_signing_partner(bo.hub, now=wall_clock_partner_time(), code="shop")
    partner = make_signing_partner(bo.hub, now=wall_clock_partner_time(), code="other")
    now = datetime.now(timezone.utc)
    window = {"starts_at": (now - timedelta(hours=1)).isoformat(), "ends_at": (now + timedelta(days=1)).isoformat()}

    partner_without_partner = bo.post("/campaigns", {"name": "Orphan", "funded_by": "partner", **window},
                                      role="partner_manager")
    assert (partner_without_partner.status, partner_without_partner.code) == (422, "validation_failed")
    assert "partner" in partner_without_partner.body["errors"]
    backwards = bo.post("/campaigns", {"name": "Backwards", "funded_by": "hub", "starts_at": window["ends_at"],
                                       "ends_at": window["starts_at"]}, role="partner_manager")
    unknown_partner = bo.post("/campaigns", {"name": "Ghost", "funded_by": "partner", "partner": "ghost", **window},
                              role="partner_manager")
    bad_funder = bo.post("/campaigns", {"name": "Who", "funded_by": "member", **window}, role="partner_manager")
    assert (backwards.status, backwards.code) == (422, "validation_failed")
    assert (unknown_partner.status, unknown_partner.code) == (404, "not_found")
    assert (bad_funder.status, bad_funder.code) == (422, "validation_failed")
    # A campaign ending a minute after year 9999 in UTC: refused with the other bad input.
    endless = bo.post("/campaigns", {"name": "Endless", "funded_by": "hub", "starts_at": window["starts_at"],
                                     "ends_at": "9999-12-31T23:59:59-00:01"}, role="partner_manager")
    assert (endless.status, endless.code) == (422, "validation_failed"), endless.body
    assert "ends_at" in endless.body["errors"]

    hub_bonus = bo.post("/campaigns", {"name": "Welcome week", "funded_by": "hub", "bonus_points": 7, **window},
                        role="partner_manager")
    shop_double = bo.post("/campaigns", {"name": "Shop double", "funded_by": "partner", "partner": "shop",
                                         "multiplier": "2", **window}, role="partner_manager")
    assert hub_bonus.status == shop_double.status == 201
    assert hub_bonus.body["id"] != shop_double.body["id"]
    _, card = bo.enrol(name="Bonus Hunter")
    earned = SignedTestClient(bo.app, partner).post(PURCHASES, purchase_payload("b-1", card, 5_000))
    assert earned.status == 201, earned.body
    assert earned.body["points"] == {**earned.body["points"], "partner_funded": 50, "hub_funded": 7, "total": 57}
    assert [line["name"] for line in earned.body["breakdown"]["campaigns"]] == ["Welcome week"]


def test_terminals_and_keys_are_managed_through_the_back_office_and_used_by_tills(app):
    bo = BackOffice(app)
    shop = make_signing_partner(bo.hub, now=wall_clock_partner_time(), code="shop")
    other = make_signing_partner(bo.hub, now=wall_clock_partner_time(), code="other")
    _, card = bo.enrol(name="Till User")

    terminal = bo.post("/partners/shop/terminals", {"code": "till-2"}, role="partner_manager")
    assert terminal.status == 201 and terminal.body["id"] > 0
    duplicate_terminal = bo.post("/partners/shop/terminals", {"code": "till-2"}, role="partner_manager")
    bad_terminal = bo.post("/partners/shop/terminals", {"code": "Till 2"}, role="partner_manager")
    assert (duplicate_terminal.status, duplicate_terminal.code) == (409, "conflict")
    assert (bad_terminal.status, bad_terminal.code) == (422, "validation_failed")

    private_key, public_key = new_public_key()
    registered = bo.post("/partners/shop/keys", {"key_id": "shop-till-2", "public_key": public_key,
                                                 "terminal": "till-2"}, role="partner_manager")
    assert registered.status == 201, registered.body
    till = SignedTestClient(app, SigningPartner(shop.partner_id, "shop", "shop-till-2", private_key, 0))
    signed = till.post(PURCHASES, purchase_payload("k-1", card, 3_000))
    assert signed.status == 201, signed.body
    assert signed.body["terminal"] == "till-2"

    _, another_key = new_public_key()
    for body, status, code in (
        ({"key_id": "shop-till-2", "public_key": another_key}, 409, "conflict"),
        ({"key_id": "k-short", "public_key": "AAAA"}, 422, "validation_failed"),
        ({"key_id": "k-not-b64", "public_key": "not base64!"}, 422, "validation_failed"),
        ({"key_id": "k-bad-terminal", "public_key": another_key, "terminal": "till-77"}, 404, "not_found"),
        ({"key_id": "has space", "public_key": another_key}, 422, "validation_failed"),
    ):
        reply = bo.post("/partners/shop/keys", body, role="partner_manager")
        assert (reply.status, reply.code) == (status, code), body

    foreign = bo.post(f"/partners/shop/keys/{other.key_id}/revocation", role="partner_manager")
    unknown = bo.post("/partners/shop/keys/no-such-key/revocation", role="partner_manager")
    assert (foreign.status, foreign.code) == (404, "not_found")
    assert (unknown.status, unknown.code) == (404, "not_found")
    assert SignedTestClient(app, other).post(PURCHASES, purchase_payload("o-1", card, 1_000)).status == 201

    revoked = bo.post("/partners/shop/keys/shop-till-2/revocation", role="partner_manager")
    assert revoked.status == 201, revoked.body
    refused = till.post(PURCHASES, purchase_payload("k-2", card, 3_000))
    assert (refused.status, refused.body["code"]) == (401, "key_revoked")
    twice = bo.post("/partners/shop/keys/shop-till-2/revocation", role="partner_manager")
    assert (twice.status, twice.code) == (409, "invalid_state")
    # The partner's other key is untouched.
    assert SignedTestClient(app, shop).post(PURCHASES, purchase_payload("k-3", card, 3_000)).status == 201


def test_a_price_finer_than_the_stored_precision_is_refused_not_rounded(app):
    bo = BackOffice(app)
    make_signing_partner(bo.hub, now=wall_clock_partner_time(), code="shop")
    soon = (datetime.now(timezone.utc) + timedelta(days=1)).isoformat()
    reply = bo.post("/partners/shop/prices", {"effective_from": soon, "issue_price_per_point": "0.000000001",
                                              "redemption_price_per_point": "0.008"}, role="partner_manager")
    with bo.hub.unit_of_work() as uow:
        stored = uow.session.scalars(select(PartnerPrice.issue_price_per_point)
                                     .order_by(PartnerPrice.effective_from)).all()
    assert Decimal(0) not in stored, "a positive price was stored as zero"
    assert (reply.status, reply.code) == (422, "validation_failed")


def test_an_out_of_range_price_is_refused_as_invalid_not_a_server_error(app):
    bo = BackOffice(app)
    make_signing_partner(bo.hub, now=wall_clock_partner_time(), code="shop")
    replies = []
    for days, price in ((1, "1E+30"), (2, "99999999999999")):
        soon = (datetime.now(timezone.utc) + timedelta(days=days)).isoformat()
        replies.append(bo.post("/partners/shop/prices", {"effective_from": soon, "issue_price_per_point": price,
                                                         "redemption_price_per_point": "0.008"},
                               role="partner_manager"))
    assert [(reply.status, reply.code) for reply in replies] == [(422, "validation_failed")] * 2


@pytest.mark.parametrize("key_id", ["k{0}", "k{result.__class__}", 'quote"d', "semi;colon", "-leading", "x" * 101])
def test_the_api_refuses_a_key_id_outside_its_character_set_with_a_field_error(app, key_id):
    bo = BackOffice(app)
    make_signing_partner(bo.hub, now=wall_clock_partner_time(), code="shop")
    _, public_key = new_public_key()
    reply = bo.post("/partners/shop/keys", {"key_id": key_id, "public_key": public_key}, role="partner_manager")
    assert (reply.status, reply.code) == (422, "validation_failed")
    assert reply.headers["Content-Type"] == "application/problem+json"
    assert "letters A-Z and a-z, digits, '.', '_', ':' and '-'" in reply.body["errors"]["key_id"][0]
    with bo.hub.unit_of_work() as uow:
        assert uow.session.scalar(select(PartnerKey.id).where(PartnerKey.key_id == key_id)) is None


@pytest.mark.parametrize("arguments, option", [
    (("partners", "create", "--code", "Cafe Aurora", "--name", "Cafe", "--issue-price", "0.01",
      "--redemption-price", "0.008"), "--code"),
    (("partners", "add-terminal", "--partner", "shop", "--code", "till{0}"), "--code"),
    (("partners", "add-key", "--partner", "shop", "--key-id", "k{result}", "--public-key", "KEYFILE"), "--key-id"),
    (("partners", "add-key", "--partner", "shop", "--key-id", "k-1", "--public-key", "KEYFILE",
      "--terminal", "Till 1"), "--terminal"),
])
def test_the_cli_refuses_identifiers_outside_their_character_set_with_exit_2(app, tmp_path, arguments, option):
    bo = BackOffice(app)
    make_signing_partner(bo.hub, now=wall_clock_partner_time(), code="shop")
    key_file = tmp_path / "key.b64"
    key_file.write_text(new_public_key()[1])
    result = run_cli(app, *[str(key_file) if argument == "KEYFILE" else argument for argument in arguments])
    assert result.exit_code == 2, result.output
    assert f"Invalid value for '{option}'" in result.output and "characters" in result.output
    with bo.hub.unit_of_work() as uow:
        assert uow.session.scalars(select(Partner.code)).all() == ["shop"]
        assert uow.session.scalars(select(PartnerKey.key_id)).all() == ["shop-key"]


def test_scheduling_and_registering_answer_the_created_rows_real_ids_and_what_a_client_needs(app):
    bo = BackOffice(app)
    make_signing_partner(bo.hub, now=wall_clock_partner_time(), code="shop")
    assert bo.post("/partners/shop/terminals", {"code": "till-2"}, role="partner_manager").status == 201
    soon = (datetime.now(timezone.utc) + timedelta(days=1)).replace(microsecond=0)
    price = bo.post("/partners/shop/prices", {"effective_from": soon.isoformat(), "issue_price_per_point": "0.0125",
                                              "redemption_price_per_point": "0.0090"}, role="partner_manager")
    rule = bo.post("/partners/shop/earn-rules", {"effective_from": soon.isoformat(), "base_points_per_unit": "2",
                                                 "per_purchase_cap_points": 500}, role="partner_manager")
    _, public_key = new_public_key()
    key = bo.post("/partners/shop/keys", {"key_id": "shop-till-2", "public_key": public_key, "terminal": "till-2"},
                  role="partner_manager")
    assert (price.status, rule.status, key.status) == (201, 201, 201), (price.body, rule.body, key.body)
    with bo.hub.unit_of_work() as uow:
        price_id = uow.session.scalar(select(PartnerPrice.id).where(PartnerPrice.effective_from == soon))
        rule_id = uow.session.scalar(select(PartnerEarnRule.id).where(PartnerEarnRule.effective_from == soon))
        key_row_id = uow.session.scalar(select(PartnerKey.id).where(PartnerKey.key_id == "shop-till-2"))
    assert price.body == {"id": price_id, "effective_from": soon.isoformat(), "issue_price_per_point": "0.0125",
                          "redemption_price_per_point": "0.0090"}
    assert price_id > 0 and rule.body["id"] == rule_id > 0
    assert (rule.body["effective_from"], rule.body["base_points_per_unit"], rule.body["per_purchase_cap_points"]) == \
        (soon.isoformat(), "2", 500)
    assert key_row_id > 0 and {name: key.body[name] for name in ("id", "key_id", "status", "terminal", "expires_at")} \
        == {"id": key_row_id, "key_id": "shop-till-2", "status": "active", "terminal": "till-2", "expires_at": None}
    revoked = bo.post("/partners/shop/keys/shop-till-2/revocation", role="partner_manager")
    assert revoked.status == 201 and (revoked.body["id"], revoked.body["status"]) == (key_row_id, "revoked")
    assert revoked.body["revoked_at"] is not None
