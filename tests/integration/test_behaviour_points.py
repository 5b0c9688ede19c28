"""Behaviour points: events reported through the signed partner API (each event type, streaks, caps across the
alliance's midnight, eligibility), counted once by their natural key, referrals awarded by the job after the referred
member's first purchase, partner-funded awards on the funder's statement, and the rules' back-office API and CLI."""

from __future__ import annotations

import dataclasses
import json
from datetime import datetime, time, timedelta, timezone
from decimal import Decimal
from types import SimpleNamespace
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import func, select

from alliance.extensions import HubState, hub_state
from alliance.models import AuditLogEntry, BehaviourAward, BehaviourEvent, JournalTransaction, PointLot
from alliance.services import behaviour_points, jobs
from settlement.closing import close_cycle
from settlement.cycles import cycle_containing
from settlement.keys import load_statement_private_key, private_key_pem, statement_key_id
from tests.back_office_support import BackOffice, run_cli
from tests.factories import make_member, make_signing_partner
from tests.http_server import (
    assert_audit_green,
    assert_books_unchanged,
    balances,
    books,
    purchase_payload,
    wall_clock_partner_time,
)
from tests.partner_client import SignedTestClient
from tests.signing import sign_request

UTC = timezone.utc
EVENTS = "/partner/v1/events"
ISSUE_PRICE = Decimal("0.0125")


@pytest.fixture
def telco(app):  # type: ignore[no-untyped-def]
    """An operator partner ``telco`` (daily cycles, UTC), an old member and a new one."""
    hub = hub_state(app)
    created = wall_clock_partner_time()
    partner = make_signing_partner(hub, now=created, code="telco", settlement_cycle="daily", time_zone="UTC",
                                   issue_price_per_point=ISSUE_PRICE)
    old = make_member(hub, now=datetime.now(UTC) - timedelta(days=400))
    new = make_member(hub, now=datetime.now(UTC) - timedelta(days=2))
    return SimpleNamespace(app=app, hub=hub, partner=partner, old=old, new=new, client=SignedTestClient(app, partner),
                           http=app.test_client())


def set_rule(hub: HubState, event_type: str, **values: Any) -> behaviour_points.RuleView:
    with hub.unit_of_work() as uow:
        view = behaviour_points.set_rule(uow.session, event_type=event_type,
                                         now=datetime.now(UTC) - timedelta(days=100), actor="test", **values)
        uow.commit()
    return view


def event(event_id: str, event_type: str, member: Any, *, at: datetime | None = None, **extra: Any) -> dict[str, Any]:
    body = {"event_id": event_id, "event_type": event_type, "card_number": member.card_number,
            "occurred_at": (at or datetime.now(UTC) - timedelta(minutes=1)).isoformat()}
    body.update(extra)
    return body


def available(hub: HubState, member_id: int) -> int:
    return balances(hub, member_id)["available"]


def run_referral_job(hub: HubState, now: datetime | None = None) -> int:
    job = jobs.referral_job(hub.settings.alliance_time_zone, hub.settings.points_expiry_months)
    with hub.unit_of_work() as uow:
        done = job.run(uow.session, now=now or datetime.now(UTC), limit=100)
        uow.commit()
    return done


def test_each_event_type_through_the_signed_api_earns_its_rule_points_funded_by_the_hub(telco):
    set_rule(telco.hub, "sign_in", points=10)
    set_rule(telco.hub, "survey", points=50)
    set_rule(telco.hub, "self_service", points=5)
    set_rule(telco.hub, "recharge", points=1, per_amount_minor=100, currency="EUR")
    set_rule(telco.hub, "bill_payment", points=3, per_amount_minor=1_000, currency="EUR")
    replies = {
        "sign_in": telco.client.post(EVENTS, event("e-1", "sign_in", telco.old)),
        "survey": telco.client.post(EVENTS, event("e-2", "survey", telco.old)),
        "self_service": telco.client.post(EVENTS, event("e-3", "self_service", telco.old)),
        # 25.99 EUR: 25 whole euros, 1 point each, rounded down.
        "recharge": telco.client.post(EVENTS, event("e-4", "recharge", telco.old, amount_minor=2_599, currency="EUR")),
        # 45.00 EUR: four whole 10 EUR units, 3 points each.
        "bill_payment": telco.client.post(EVENTS, event("e-5", "bill_payment", telco.old, amount_minor=4_500,
                                                        currency="EUR")),
    }
    assert {kind: (reply.status, reply.body["status"], reply.body["points_awarded"])
            for kind, reply in replies.items()} == {
        "sign_in": (201, "awarded", 10), "survey": (201, "awarded", 50), "self_service": (201, "awarded", 5),
        "recharge": (201, "awarded", 25), "bill_payment": (201, "awarded", 12)}
    assert replies["sign_in"].body["streak_day"] == 1
    assert replies["survey"].body["awards"][0]["funded_by"] == "hub"
    assert available(telco.hub, telco.old.member_id) == 102
    with telco.hub.unit_of_work() as uow:
        lots = uow.session.scalars(select(PointLot).where(PointLot.member_id == telco.old.member_id)).all()
        memos = set(uow.session.scalars(select(JournalTransaction.memo).where(
            JournalTransaction.member_id == telco.old.member_id)))
    assert {lot.partner_id for lot in lots} == {None}
    assert all(memo.startswith("behaviour:") for memo in memos) and len(memos) == 5
    # By member number instead of card: the same member.
    by_number = {"event_id": "e-6", "event_type": "survey", "member_number": telco.old.member_number,
                 "occurred_at": (datetime.now(UTC) - timedelta(minutes=1)).isoformat()}
    assert telco.client.post(EVENTS, by_number).body["points_awarded"] == 50
    assert_audit_green(telco.hub)


def test_a_sign_in_streak_earns_its_bonus_on_every_streak_days_th_consecutive_day_and_once_a_day(telco):
    set_rule(telco.hub, "sign_in", points=10, streak_days=3, streak_bonus_points=20)
    zone = ZoneInfo(telco.hub.settings.alliance_time_zone)
    today = datetime.now(zone).replace(hour=12, minute=0, second=0, microsecond=0)
    if today > datetime.now(zone):
        today -= timedelta(days=1)
    days = [today - timedelta(days=offset) for offset in (6, 5, 4, 3, 1, 0)]  # a gap two days ago
    replies = [telco.client.post(EVENTS, event(f"s-{index}", "sign_in", telco.old, at=day)).body
               for index, day in enumerate(days)]
    assert [(reply["streak_day"], reply["points_awarded"]) for reply in replies] == [
        (1, 10), (2, 10), (3, 30), (4, 10), (1, 10), (2, 10)]
    assert replies[2]["awards"][0]["streak_bonus_points"] == 20
    again = telco.client.post(EVENTS, event("s-again", "sign_in", telco.old, at=today + timedelta(minutes=-5))).body
    assert (again["status"], again["reason"], again["points_awarded"], again["streak_day"]) == (
        "not_awarded", "already_signed_in_today", 0, 0)
    assert available(telco.hub, telco.old.member_id) == 80
    assert_audit_green(telco.hub)


def test_caps_per_day_and_month_count_by_the_alliances_day_across_its_midnight(telco):
    # Auckland's midnight is at 11:00 or 12:00 UTC: a UTC day holds two Auckland days.
    telco.hub.settings = dataclasses.replace(telco.hub.settings, alliance_time_zone="Pacific/Auckland")
    zone = ZoneInfo("Pacific/Auckland")
    set_rule(telco.hub, "survey", points=10, cap_per_day=15, cap_per_month=40)
    now = datetime.now(zone)
    midnight = datetime.combine(now.date(), time(0, 0), tzinfo=zone)
    if now - midnight < timedelta(minutes=10):
        midnight -= timedelta(days=1)
    if midnight.day < 3:
        # The days before midnight must be in the same month for the month cap below.
        midnight = datetime.combine(midnight.date().replace(day=1) - timedelta(days=1), time(0, 0), tzinfo=zone)
    before, after = midnight - timedelta(minutes=2), midnight + timedelta(minutes=2)

    def survey(event_id: str, at: datetime) -> dict[str, Any]:
        return telco.client.post(EVENTS, event(event_id, "survey", telco.old, at=at)).body

    day_one = [survey("c-1", before - timedelta(hours=1)), survey("c-2", before), survey("c-3", before)]
    assert [(body["points_awarded"], body["reason"]) for body in day_one] == [
        (10, None), (5, "day_cap_reached"), (0, "day_cap_reached")]
    assert day_one[2]["status"] == "not_awarded"
    # Four minutes later, past the alliance's midnight: a new day's cap.
    day_two = [survey("c-4", after), survey("c-5", after)]
    assert [(body["points_awarded"], body["reason"]) for body in day_two] == [(10, None), (5, "day_cap_reached")]
    if midnight.month == before.month:
        # Month: 15 + 15 so far; 40 leaves 10 on a third day.
        day_three = survey("c-6", before - timedelta(days=1))
        assert (day_three["points_awarded"], day_three["reason"]) == (10, None)
        assert survey("c-7", before - timedelta(days=1, minutes=1))["reason"] in ("day_cap_reached",
                                                                                    "month_cap_reached")
    assert_audit_green(telco.hub)


def test_eligibility_by_tier_and_tenure_answers_zero_with_a_reason_and_leaves_the_books(telco):
    set_rule(telco.hub, "survey", points=50, eligible_tiers=["gold", "diamond"])
    set_rule(telco.hub, "self_service", points=5, min_tenure_months=3)
    before = books(telco.hub)
    tier = telco.client.post(EVENTS, event("t-1", "survey", telco.old)).body
    tenure = telco.client.post(EVENTS, event("t-2", "self_service", telco.new)).body
    none = telco.client.post(EVENTS, event("t-3", "sign_in", telco.old)).body
    assert [(body["status"], body["points_awarded"], body["reason"]) for body in (tier, tenure, none)] == [
        ("not_awarded", 0, "tier_not_eligible"), ("not_awarded", 0, "tenure_too_short"),
        ("not_awarded", 0, "no_rule_in_force")]
    assert_books_unchanged(telco.hub, before)
    # The old member has the tenure.
    assert telco.client.post(EVENTS, event("t-4", "self_service", telco.old)).body["points_awarded"] == 5


def _post_raw(telco, payload: dict[str, Any], key: str):  # type: ignore[no-untyped-def]
    body = json.dumps(payload).encode()
    headers = sign_request(method="POST", url="http://localhost" + EVENTS, body=body, key_id=telco.partner.key_id,
                           private_key=telco.partner.private_key, idempotency_key=key)
    return telco.http.post(EVENTS, data=body, headers=headers)


def test_an_event_is_counted_once_by_its_event_id_and_another_event_under_it_is_a_409(telco):
    set_rule(telco.hub, "survey", points=50)
    payload = event("once-1", "survey", telco.old)
    first = _post_raw(telco, payload, "key-1")
    after_first = books(telco.hub)
    retry = _post_raw(telco, payload, "key-1")
    assert (first.status_code, retry.status_code, retry.headers["Idempotent-Replayed"]) == (201, 201, "true")
    assert retry.get_data() == first.get_data()
    # The same event under another idempotency key: the event as stored, nothing counted twice.
    again = _post_raw(telco, payload, "key-2")
    assert again.status_code == 200
    assert {k: v for k, v in again.get_json().items()} == first.get_json()
    assert_books_unchanged(telco.hub, after_first)
    other = _post_raw(telco, dict(payload, event_type="self_service"), "key-3")
    assert (other.status_code, other.get_json()["code"]) == (409, "event_already_reported")
    assert other.content_type == "application/problem+json"
    assert_books_unchanged(telco.hub, after_first)
    # The same idempotency key with another body: the key's rule, not the event's.
    reused = _post_raw(telco, event("once-2", "survey", telco.old), "key-1")
    assert (reused.status_code, reused.get_json()["code"]) == (422, "idempotency_key_reused")
    with telco.hub.unit_of_work() as uow:
        assert uow.session.scalar(select(func.count()).select_from(BehaviourEvent)) == 1
    assert available(telco.hub, telco.old.member_id) == 50


@pytest.mark.parametrize(("payload", "status", "code"), [
    ({"event_type": "survey", "amount_minor": 100, "currency": "EUR"}, 422, "validation_failed"),
    ({"event_type": "recharge"}, 422, "validation_failed"),
    ({"event_type": "recharge", "amount_minor": 100, "currency": "USD"}, 422, "validation_failed"),
    ({"event_type": "referral"}, 422, "validation_failed"),
    ({"event_type": "survey", "occurred_at": "2099-01-01T00:00:00+00:00"}, 422, "validation_failed"),
    ({"event_type": "survey", "card_number": "6390000000000001"}, 404, "not_found"),
    ({"event_type": "birthday"}, 422, "validation_failed"),
])
def test_refusals_are_problems_and_leave_the_books_and_the_events_unchanged(telco, payload, status, code):
    set_rule(telco.hub, "survey", points=50)
    set_rule(telco.hub, "recharge", points=1, per_amount_minor=100, currency="EUR")
    before = books(telco.hub)
    reply = telco.client.post(EVENTS, dict(event("bad-1", "survey", telco.old), **payload))
    assert (reply.status, reply.body["code"]) == (status, code)
    assert_books_unchanged(telco.hub, before)
    with telco.hub.unit_of_work() as uow:
        assert uow.session.scalar(select(func.count()).select_from(BehaviourEvent)) == 0


def test_a_referral_is_awarded_both_sides_once_by_the_job_after_the_referred_members_first_purchase(telco):
    set_rule(telco.hub, "referral", points=100, referred_points=40)
    registered = telco.client.post(EVENTS, event("ref-1", "referral", telco.old,
                                                 referred_member=telco.new.member_number))
    assert (registered.status, registered.body["status"], registered.body["reason"],
            registered.body["points_awarded"]) == (201, "pending", "awaiting_first_purchase", 0)
    assert run_referral_job(telco.hub) == 0
    assert available(telco.hub, telco.old.member_id) == 0
    # Referred once: another referral of the same member is refused.
    another = make_member(telco.hub, now=datetime.now(UTC))
    before = books(telco.hub)
    twice = telco.client.post(EVENTS, event("ref-2", "referral", another, referred_member=telco.new.member_number))
    assert (twice.status, twice.body["code"]) == (409, "already_referred")
    assert_books_unchanged(telco.hub, before)
    # The first purchase lands; the purchase itself does nothing about the referral.
    assert telco.client.post("/partner/v1/purchases", purchase_payload("r-1", telco.new.card_number)).status == 201
    new_after_purchase = available(telco.hub, telco.new.member_id)
    assert available(telco.hub, telco.old.member_id) == 0
    assert run_referral_job(telco.hub) == 1
    assert run_referral_job(telco.hub) == 0
    assert available(telco.hub, telco.old.member_id) == 100
    assert available(telco.hub, telco.new.member_id) == new_after_purchase + 40
    with telco.hub.unit_of_work() as uow:
        sides = sorted(uow.session.execute(select(BehaviourAward.side, BehaviourAward.points)).all())
    assert sides == [("referred", 40), ("referrer", 100)]
    stored = telco.client.post(EVENTS, event("ref-1", "referral", telco.old, referred_member=telco.new.member_number,
                                             occurred_at=registered.body["occurred_at"]))
    assert (stored.status, stored.body["status"], stored.body["points_awarded"]) == (200, "awarded", 100)
    assert {award["side"] for award in stored.body["awards"]} == {"referrer", "referred"}
    assert_audit_green(telco.hub)


def test_a_referral_of_a_member_who_already_bought_is_answered_not_new(telco):
    set_rule(telco.hub, "referral", points=100, referred_points=40)
    assert telco.client.post("/partner/v1/purchases", purchase_payload("r-1", telco.new.card_number)).status == 201
    reply = telco.client.post(EVENTS, event("ref-1", "referral", telco.old, referred_member=telco.new.member_number))
    assert (reply.body["status"], reply.body["reason"]) == ("not_awarded", "referred_member_not_new")
    assert run_referral_job(telco.hub) == 0


def _close_today(hub: HubState, partner_id: int) -> dict[str, Any]:
    key = load_statement_private_key(private_key_pem(Ed25519PrivateKey.generate()))
    cycle = cycle_containing(datetime.now(UTC), partner_code="telco", frequency="daily", time_zone="UTC",
                             cutoff_local=time(0, 0))
    with hub.unit_of_work() as uow:
        closed = close_cycle(uow.session, partner_id=partner_id, cycle=cycle, now=cycle.ends_at + timedelta(hours=1),
                             signing_key=key, key_id=statement_key_id(key.public_key()), payment_terms_days=14)
        uow.commit()
    document: dict[str, Any] = json.loads(closed.document_json)
    return document


def test_a_partner_funded_award_is_issued_by_the_partner_and_on_its_statement_at_its_issue_price(telco):
    set_rule(telco.hub, "recharge", points=2, per_amount_minor=100, currency="EUR", funded_by="reporter")
    reply = telco.client.post(EVENTS, event("rc-1", "recharge", telco.old, amount_minor=20_000, currency="EUR"))
    assert reply.body["points_awarded"] == 400 and reply.body["awards"][0]["funded_by"] == "telco"
    with telco.hub.unit_of_work() as uow:
        lot = uow.session.scalars(select(PointLot).where(PointLot.member_id == telco.old.member_id)).one()
        posting = uow.session.get_one(JournalTransaction, lot.earn_transaction_id)
    assert (lot.partner_id, posting.price_per_point) == (telco.partner.partner_id, ISSUE_PRICE)
    statement = _close_today(telco.hub, telco.partner.partner_id)
    issued = [line for line in statement["lines"] if line["line_kind"] == "behaviour_points_issued"]
    assert [(line["points"], Decimal(line["price_per_point"]), line["amount_minor"]) for line in issued] == [
        (400, ISSUE_PRICE, 500)]  # 400 points x 1.25 cents
    assert_audit_green(telco.hub)


def test_a_rule_funded_by_a_named_partner_is_issued_by_that_partner(telco):
    bank = make_signing_partner(telco.hub, now=wall_clock_partner_time(), code="bank")
    set_rule(telco.hub, "bill_payment", points=1, per_amount_minor=100, currency="EUR", funded_by="bank")
    reply = telco.client.post(EVENTS, event("bp-1", "bill_payment", telco.old, amount_minor=1_000, currency="EUR"))
    assert reply.body["awards"][0]["funded_by"] == "bank"
    with telco.hub.unit_of_work() as uow:
        lot = uow.session.scalars(select(PointLot).where(PointLot.member_id == telco.old.member_id)).one()
    assert lot.partner_id == bank.partner_id


# --- back office and CLI --------------------------------------------------------------------


def test_partner_managers_and_admins_create_read_and_change_rules_audited_and_others_are_refused(app):
    bo = BackOffice(app)
    created = bo.post("/behaviour-rules", {"event_type": "sign_in", "points": 10, "streak_days": 7,
                                           "streak_bonus_points": 50, "cap_per_day": 60}, role="partner_manager")
    assert created.status == 201, created.body
    assert (created.body["funded_by"], created.body["streak_days"], created.body["cap_per_month"]) == ("hub", 7, None)
    assert bo.post("/behaviour-rules", {"event_type": "sign_in", "points": 1}, role="admin").status == 409
    changed = bo.patch("/behaviour-rules/sign_in", {"points": 12, "eligible_tiers": ["gold"]}, role="admin")
    assert (changed.status, changed.body["points"], changed.body["eligible_tiers"]) == (200, 12, ["gold"])
    listed = bo.get("/behaviour-rules", role="partner_manager")
    assert [rule["event_type"] for rule in listed.body["rules"]] == ["sign_in"]
    assert bo.get("/behaviour-rules/survey", role="admin").status == 404
    assert bo.patch("/behaviour-rules/survey", {"points": 1}, role="admin").status == 404
    refused = bo.post("/behaviour-rules", {"event_type": "survey", "points": 5}, role="customer_service")
    assert (refused.status, refused.body["code"]) == (403, "role_refused")
    bad = bo.post("/behaviour-rules", {"event_type": "recharge", "points": 5}, role="partner_manager")
    assert (bad.status, bad.body["code"]) == (422, "validation_failed")
    unknown_funder = bo.post("/behaviour-rules", {"event_type": "survey", "points": 5, "funded_by": "nobody"},
                             role="partner_manager")
    assert unknown_funder.status == 404
    with hub_state(app).unit_of_work() as uow:
        actions = [row[0] for row in uow.session.execute(select(AuditLogEntry.action).where(
            AuditLogEntry.subject == "behaviour_rule:sign_in").order_by(AuditLogEntry.sequence))]
    assert actions == ["behaviour_rule.create", "behaviour_rule.change"]


def test_customer_service_reads_a_members_events(telco):
    set_rule(telco.hub, "survey", points=50)
    telco.client.post(EVENTS, event("m-1", "survey", telco.old))
    bo = BackOffice(telco.app)
    reply = bo.get(f"/members/{telco.old.member_number}/behaviour-events", role="customer_service")
    assert reply.status == 200
    assert [(item["event_id"], item["points_awarded"]) for item in reply.body["events"]] == [("m-1", 50)]


def test_the_cli_sets_and_lists_rules_audited(app):
    result = run_cli(app, "behaviour", "rules", "set", "survey", "--points", "25", "--cap-per-day", "50",
                     "--funded-by", "hub")
    assert result.exit_code == 0, result.output
    assert "survey" in result.output and "25 points" in result.output
    changed = run_cli(app, "behaviour", "rules", "set", "survey", "--points", "30")
    assert changed.exit_code == 0, changed.output
    listed = run_cli(app, "behaviour", "rules", "list")
    assert listed.exit_code == 0 and "survey" in listed.output and "30 points" in listed.output
    refused = run_cli(app, "behaviour", "rules", "set", "recharge", "--points", "1")
    assert refused.exit_code != 0
    with hub_state(app).unit_of_work() as uow:
        actions = [row[0] for row in uow.session.execute(select(AuditLogEntry.action).where(
            AuditLogEntry.subject == "behaviour_rule:survey").order_by(AuditLogEntry.sequence))]
    assert actions == ["behaviour_rule.create", "behaviour_rule.change"]


def test_the_award_referrals_job_runs_from_the_cli_like_the_scheduler_does(telco):
    set_rule(telco.hub, "referral", points=100, referred_points=40, funded_by="reporter")
    telco.client.post(EVENTS, event("ref-1", "referral", telco.old, referred_member=telco.new.member_number))
    assert telco.client.post("/partner/v1/purchases", purchase_payload("r-1", telco.new.card_number)).status == 201
    result = run_cli(telco.app, "jobs", "award-referrals")
    assert result.exit_code == 0 and "award-referrals: 1 referrals awarded" in result.output
    assert run_cli(telco.app, "jobs", "award-referrals").output.strip() == "award-referrals: 0 referrals awarded"
    with telco.hub.unit_of_work() as uow:
        funders = set(uow.session.scalars(select(BehaviourAward.funder_partner_id)))
    assert funders == {telco.partner.partner_id}
    assert_audit_green(telco.hub)


# --- console ------------------------------------------------------------------------------


def test_the_console_shows_the_rules_read_only_sorted_to_partner_managers_only(app):
    from tests.console_support import ConsoleClient, signed_in, text_of

    hub = hub_state(app)
    set_rule(hub, "sign_in", points=10, streak_days=7, streak_bonus_points=50, cap_per_day=60)
    set_rule(hub, "recharge", points=2, per_amount_minor=100, currency="EUR", cap_per_month=500,
             eligible_tiers=["gold"], min_tenure_months=3)
    browser = signed_in(app, "paco", "partner_manager")
    page = browser.get("/console/partners/behaviour-rules")
    assert page.status_code == 200
    text = text_of(page)
    assert "Daily sign-in 10 points and 50 points more on every 7th day in a row the hub 60 points a day" in text
    assert "Recharge 2 points for every 1.00 EUR" in text and "500 points a month" in text
    assert "gold members, members for 3 months or more" in text
    assert "No rule yet (such events earn nothing): Referral of a new member, Survey completed" in text
    html = page.get_data(as_text=True)
    assert '<th scope="row">Daily sign-in</th>' in html and 'data-label="Funded by"' in html
    by_points = browser.get("/console/partners/behaviour-rules", sort="points").get_data(as_text=True)
    assert by_points.index(">Recharge<") < by_points.index(">Daily sign-in<")
    assert 'aria-sort="ascending"' in by_points
    by_event = browser.get("/console/partners/behaviour-rules").get_data(as_text=True)
    assert by_event.index(">Daily sign-in<") < by_event.index(">Recharge<")
    assert browser.get("/console/partners/behaviour-rules", sort="colour").status_code == 400
    assert "Behaviour rules" in text_of(browser.get("/console/"))
    assert signed_in(app, "cass", "customer_service").get("/console/partners/behaviour-rules").status_code == 403
    anonymous = ConsoleClient(app).get("/console/partners/behaviour-rules")
    assert anonymous.status_code == 302 and "/console/login" in anonymous.headers["Location"]


def test_the_console_rules_page_says_when_there_is_no_rule(app):
    from tests.console_support import signed_in, text_of

    page = signed_in(app, "ada", "admin").get("/console/partners/behaviour-rules")
    assert page.status_code == 200
    assert "No behaviour rule yet: events partners report earn nothing" in text_of(page)
