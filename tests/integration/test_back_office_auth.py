"""Back-office authentication: the OAuth 2 token endpoint, bearer tokens, and the role
check on every back-office route, enumerated from the app's URL map so that a route
added without a role check (or without a sample request here) fails this file."""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from flask import Flask
from sqlalchemy import func, select

from alliance.extensions import hub_state
from alliance.models import Member, OAuthClient, OAuthToken, Partner
from alliance.services import oauth
from settlement import closing as settlement_closing
from settlement.cycles import Cycle, Frequency
from tests.back_office_support import BASE, ROLES, BackOffice, audit_count, new_public_key, raw_table_text
from tests.factories import SigningPartner, make_member, make_signing_partner
from tests.http_server import fund_member, purchase_payload, wall_clock_partner_time
from tests.partner_client import SignedTestClient
from tests.signing import sign_request

PATH_ARGUMENT = re.compile(r"<(?:[^:<>]+:)?([^<>]+)>")
# Routes whose effect would spoil later samples run last (they still run once per allowed role).
# A new limit change after the pending one is decided (one waits per partner at a time).
RUN_LATE = {"/replacement": 1, "/revocation": 1, "/erasure": 2, "/stop": 1, "/limit-changes": 1}
# Paying the statement from prepaid money needs the block the prepaid-blocks sample buys.
RUN_LATE["/prepaid-payments"] = 1
# A reward is withdrawn, and a fulfilled reward order returned, after the other reward samples.
RUN_LATE.update({"/withdrawal": 1, "/return": 1})
# A webhook endpoint is enabled after it is disabled, and its event redelivered once it is active again.
RUN_LATE.update({"/enabling": 1, "/redelivery": 2})


@dataclass
class Sample:
    """A request to a route that passes its schema, so only authentication can refuse it."""

    json: Any = None
    query: dict[str, str] = field(default_factory=dict)
    # A route kept only to refuse an old form: admitting a role means this refusal, not a 2xx.
    refused_with: str | None = None


@dataclass
class World:
    """Objects the sample requests name: members, a card, a partner, a complaint, a key, a client."""

    partner: SigningPartner
    member_number: str
    phone: str
    card_number: str
    sender: str
    receiver: str
    complaint_id: int
    spare_key_id: str
    spare_client_id: str
    person: str
    statement_id: int
    cycle_ends_at: str
    adjustment_id: int = 0
    dispute_id: int = 0
    period: str = ""
    grade_alert_id: int = 0
    goodwill_request_id: int = 0
    campaign_id: int = 0
    decision_id: int = 0
    change_id: int = 0
    webhook_endpoint_id: int = 0
    webhook_event_id: str = ""


def back_office_routes(app: Flask) -> list[tuple[str, str, Any]]:
    """(method, rule, Rule) of every back-office route, from the URL map."""
    routes = []
    for rule in app.url_map.iter_rules():
        if rule.rule.startswith(BASE):
            for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
                routes.append((method, rule.rule, rule))
    return routes


def required_roles(app: Flask, rule, method: str) -> set[str] | None:  # type: ignore[no-untyped-def]
    """The roles ``require_role`` attached to the view method, looking through decorators."""
    view = app.view_functions[rule.endpoint]
    function = getattr(getattr(view, "view_class", None), method.lower(), None) or view
    while function is not None:
        roles = getattr(function, "required_roles", None)
        if roles:
            return set(roles)
        function = getattr(function, "__wrapped__", None)
    return None


def _world(bo: BackOffice) -> World:
    hub = bo.hub
    partner = make_signing_partner(hub, now=wall_clock_partner_time(), code="shop")
    phone = "+33611111111"
    member_number, card_number = bo.enrol(name="Role Matrix", phone=phone)
    old = datetime.now(timezone.utc) - timedelta(days=90)
    sender, receiver = make_member(hub, now=old), make_member(hub, now=old)
    fund_member(hub, member_id=sender.member_id, partner_id=partner.partner_id, points=50)
    complaint = bo.post("/complaints", {"partner": "shop", "category": "other", "description": "slow till",
                                        "member": member_number}, role="customer_service")
    assert complaint.status == 201, complaint.body
    _, public_key = new_public_key()
    spare_key = bo.post("/partners/shop/keys", {"key_id": "spare-key", "public_key": public_key},
                        role="partner_manager")
    assert spare_key.status == 201, spare_key.body
    spare_terminal = bo.post("/partners/shop/terminals", {"code": "till-spare"}, role="partner_manager")
    assert spare_terminal.status == 201, spare_terminal.body
    spare_client = bo.register_client("finance", name="spare")
    adjustment_id = _finance_adjustments(bo)
    closed = _close_a_past_cycle(bo, partner)
    with bo.hub.unit_of_work() as uow:
        from settlement import finance

        dispute = finance.open_dispute(uow.session, statement_id=closed.statement_id, line_number=1,
                                       reason="sample", actor="client:someone", now=datetime.now(timezone.utc))
        uow.commit()
    period, grade_alert_id = _graded_period(bo)
    world = World(partner, member_number, phone, card_number, _number(hub, sender.member_id),
                  _number(hub, receiver.member_id), complaint.body["id"], "spare-key", spare_client.client_id,
                  spare_client.person, closed.statement_id, closed.cycle_ends_at.isoformat(), adjustment_id,
                  dispute.id, period, grade_alert_id)
    world.goodwill_request_id = _pending_goodwill(bo, member_number, complaint.body["id"])
    starts = datetime.now(timezone.utc) + timedelta(days=30)
    campaign = bo.post("/campaigns", {"name": "Role matrix", "funded_by": "hub", "bonus_points": 1,
                                      "starts_at": starts.isoformat(),
                                      "ends_at": (starts + timedelta(days=1)).isoformat()}, role="partner_manager")
    assert campaign.status == 201, campaign.body
    world.campaign_id = campaign.body["id"]
    world.decision_id, world.change_id = _risk_and_credit(bo, partner, member_number)
    _rewards(bo, partner, member_number)
    series = bo.post("/coupon-series", {
        "code": "role-matrix", "title": "Role matrix", "funder": "hub", "kind": "bonus", "bonus_points": 5,
        "valid_from": datetime.now(timezone.utc).isoformat(),
        "valid_until": (datetime.now(timezone.utc) + timedelta(days=30)).isoformat()}, role="partner_manager")
    assert series.status == 201, series.body
    world.webhook_endpoint_id, world.webhook_event_id = _webhook(bo, partner)
    return world


def _webhook(bo: BackOffice, partner: SigningPartner) -> tuple[int, str]:
    """An endpoint of the shop and one event delivered to it, to read, disable, enable and redeliver."""
    from alliance.services import webhooks

    now = datetime.now(timezone.utc)
    with bo.hub.unit_of_work() as uow:
        endpoint = webhooks.register_endpoint(uow.session, partner="shop", url="https://shop.example/hooks",
                                              event_types=["statement.closed"], actor="client:someone", now=now)
        event_id = webhooks.emit(uow.session, event_type="statement.closed", partner_id=partner.partner_id, now=now,
                                 data={"statement_id": 1})
        uow.commit()
    assert event_id is not None
    return endpoint.id, event_id


def _rewards(bo: BackOffice, partner: SigningPartner, member_number: str) -> None:
    """Rewards of a supplier that stays active: ``role-gift`` listed, ``role-cinema`` a voucher, ``role-proposed``
    waiting for approval by another person; the member orders three gifts (to fulfil and return, fail, cancel)."""
    from alliance.services import rewards
    from tests.factories import make_partner

    now = datetime.now(timezone.utc)
    make_partner(bo.hub, now=now, code="gifts")
    with bo.hub.unit_of_work() as uow:
        member_id = uow.session.scalar(select(Member.id).where(Member.member_number == member_number))
    fund_member(bo.hub, member_id=member_id, partner_id=partner.partner_id, points=100)
    with bo.hub.unit_of_work() as uow:
        for code, kind, stock in (("role-gift", "goods", 10), ("role-cinema", "voucher", None),
                                  ("role-proposed", "goods", 1)):
            rewards.propose_reward(uow.session, supplier="gifts", code=code, kind=kind, title=code, points_price=10,
                                   unit_price_minor=8, stock=stock, actor="client:someone", now=now)
            if code != "role-proposed":
                rewards.approve_reward(uow.session, code=code, actor="client:other", now=now)
        for reference in ("ROLE-ORDER", "ROLE-FAIL", "ROLE-CANCEL"):
            rewards.place_order(uow.session, reward_code="role-gift", member_id=member_id, items=1,
                                channel=rewards.BACK_OFFICE_CHANNEL, reference=reference, actor="client:someone",
                                key_ring=bo.hub.key_ring, now=now)
        uow.commit()


def _risk_and_credit(bo: BackOffice, partner: SigningPartner, member_number: str) -> tuple[int, int]:
    """A flagged risk decision at the shop to review and act on, and a raise of its credit limit that another
    client asked for, so the tokens here may decide it."""
    from alliance.domain.risk import Action
    from alliance.services import risk
    from settlement import credit

    now = datetime.now(timezone.utc)
    with bo.hub.unit_of_work() as uow:
        member_id = uow.session.scalar(select(Member.id).where(Member.member_number == member_number))
        decision_id = risk.keep(uow.session, risk.record(
            uow.session, operation="redeem", action=Action.FLAG, points=10, reference=None, now=now,
            subject=risk.Subject(partner_id=partner.partner_id, member_id=member_id), evidence=[{"limit": "sample"}]))
        credit.request_limit_change(uow.session, partner_code="shop", limit_minor=100_000, reason="sample",
                                    actor="client:someone", now=now)
        raise_ = credit.request_limit_change(uow.session, partner_code="shop", limit_minor=200_000, reason="sample",
                                             actor="client:someone", now=now)
        uow.commit()
    assert decision_id is not None
    return decision_id, raise_.id


def _pending_goodwill(bo: BackOffice, member_number: str, complaint_id: int) -> int:
    """A goodwill credit above the threshold that another client requested, so the tokens here may decide it."""
    from alliance.services import goodwill

    with bo.hub.unit_of_work() as uow:
        pending = goodwill.request_goodwill(
            uow.session, member_number=member_number, direction="credit", points=5_000, reason="sample",
            complaint_id=complaint_id, policy=goodwill.GoodwillPolicy(approval_threshold_points=1_000,
                                                                      expiry_months=24),
            now=datetime.now(timezone.utc), actor="client:someone")
        uow.commit()
    return pending.request_id


def _graded_period(bo: BackOffice) -> tuple[str, int]:
    """This month graded as if it were over (the partner exists only since today), and one alert to acknowledge."""
    from alliance.domain.grading import GradingConfig, Period
    from alliance.models import GradeAlert, PartnerGrade
    from alliance.services import grading

    today = datetime.now(timezone.utc)
    period = Period(today.year, today.month, 1)
    with bo.hub.unit_of_work() as uow:
        grading.compute(uow.session, period=period, config=GradingConfig(), time_zone="UTC",
                        now=period.bounds("UTC")[1] + timedelta(days=1), actor="client:someone")
        grade_id = uow.session.scalar(select(PartnerGrade.id))
        # The sample data has no purchases, so no alert arises from it; plant one to acknowledge.
        alert_id = uow.session.execute(GradeAlert.__table__.insert().values(
            partner_grade_id=grade_id, kind="complaint_rate", detail="sample", raised_at=today
        ).returning(GradeAlert.id)).scalar_one()
        uow.commit()
    return period.label, alert_id


def _finance_adjustments(bo: BackOffice) -> int:
    """An adjustment approved before the closed cycle (so its statement owes money) and a pending one that
    another client requested, so the finance role's token may decide it."""
    from settlement import finance

    before = datetime(2025, 12, 31, tzinfo=timezone.utc)
    with bo.hub.unit_of_work() as uow:
        owed = finance.request_adjustment(uow.session, partner_code="shop", amount_minor=1000, reason="sample",
                                          reference="ADJ-OWED", actor="client:someone", now=before)
        finance.decide_adjustment(uow.session, adjustment_id=owed.id, decision="approve", actor="client:other",
                                  now=before)
        pending = finance.request_adjustment(uow.session, partner_code="shop", amount_minor=-50, reason="sample",
                                             reference="ADJ-PENDING", actor="client:someone", now=before)
        uow.commit()
    return pending.id


def _close_a_past_cycle(bo: BackOffice, partner: SigningPartner):  # type: ignore[no-untyped-def]
    """One closed statement, so the finance routes have something to show."""
    signer = hub_state(bo.app).statement_signer
    cycle = Cycle(partner.code, Frequency.DAILY, datetime(2026, 1, 1, tzinfo=timezone.utc),
                  datetime(2026, 1, 2, tzinfo=timezone.utc))
    with bo.hub.unit_of_work() as uow:
        closed = settlement_closing.close_cycle(
            uow.session, partner_id=partner.partner_id, cycle=cycle, now=datetime.now(timezone.utc),
            signing_key=signer.signing_key, key_id=signer.key_id, payment_terms_days=signer.payment_terms_days)
        uow.commit()
    return closed


def _number(hub, member_id: int) -> str:  # type: ignore[no-untyped-def]
    with hub.unit_of_work() as uow:
        return uow.session.scalar(select(Member.member_number).where(Member.id == member_id))


def _samples(world: World) -> dict[tuple[str, str], Sample]:
    soon = (datetime.now(timezone.utc) + timedelta(days=30)).isoformat()
    later = (datetime.now(timezone.utc) + timedelta(days=60)).isoformat()
    _, public_key = new_public_key()
    b = BASE
    return {
        ("GET", f"{b}/members"): Sample(query={"phone": world.phone}, refused_with="search_by_post"),
        ("POST", f"{b}/members/search"): Sample(json={"phone": world.phone}),
        ("POST", f"{b}/members"): Sample(json={"name": "Another Member"}),
        ("GET", f"{b}/members/<member_number>"): Sample(),
        ("PATCH", f"{b}/members/<member_number>/profile"): Sample(json={"email": "role.matrix@example.org"}),
        ("GET", f"{b}/members/<member_number>/history"): Sample(query={"limit": "10"}),
        ("GET", f"{b}/members/<member_number>/export"): Sample(),
        ("POST", f"{b}/members/<member_number>/erasure"): Sample(json={}),
        ("POST", f"{b}/members/<member_number>/redemption-codes"): Sample(json={}),
        ("POST", f"{b}/cards/replacement"): Sample(json={"card_number": world.card_number}),
        ("POST", f"{b}/cards/pin"): Sample(json={"card_number": world.card_number, "pin": "4682"}),
        ("POST", f"{b}/members/<member_number>/goodwill"): Sample(json={
            "direction": "credit", "points": 1, "reason": "sample", "complaint_id": world.complaint_id}),
        ("GET", f"{b}/goodwill"): Sample(query={"status": "pending"}),
        ("POST", f"{b}/goodwill/<int:request_id>/decision"): Sample(json={"decision": "reject"}),
        ("POST", f"{b}/transfers"): Sample(json={"from_member": world.sender, "to_member": world.receiver,
                                                 "points": 1}),
        ("GET", f"{b}/partners"): Sample(),
        ("POST", f"{b}/partners"): Sample(json={
            "code": "role-new", "name": "Role New", "currency": "EUR", "time_zone": "Europe/Paris",
            "settlement_cycle": "monthly", "issue_price_per_point": "0.01", "redemption_price_per_point": "0.008",
            "base_points_per_unit": "1"}),
        ("GET", f"{b}/partners/<code>"): Sample(),
        ("POST", f"{b}/partners/<code>/status"): Sample(json={"status": "suspended"}),
        ("POST", f"{b}/partners/<code>/prices"): Sample(json={
            "effective_from": soon, "issue_price_per_point": "0.02", "redemption_price_per_point": "0.015"}),
        ("POST", f"{b}/partners/<code>/earn-rules"): Sample(json={"effective_from": soon,
                                                                  "base_points_per_unit": "2"}),
        ("POST", f"{b}/partners/<code>/terminals"): Sample(json={"code": "till-9"}),
        ("POST", f"{b}/partners/<code>/keys"): Sample(json={"key_id": "role-key", "public_key": public_key}),
        ("POST", f"{b}/partners/<code>/keys/<key_id>/revocation"): Sample(json={}),
        ("POST", f"{b}/partners/<code>/terminals/<terminal_code>/retirement"): Sample(json={"reason": "sold"}),
        ("POST", f"{b}/campaigns"): Sample(json={"name": "Spring", "funded_by": "hub", "bonus_points": 5,
                                                 "starts_at": soon, "ends_at": later}),
        ("GET", f"{b}/campaigns"): Sample(query={"status": "scheduled"}),
        ("GET", f"{b}/campaigns/<int:campaign_id>"): Sample(),
        ("PATCH", f"{b}/campaigns/<int:campaign_id>"): Sample(json={"bonus_points": 2}),
        ("POST", f"{b}/campaigns/<int:campaign_id>/stop"): Sample(json={"reason": "sample"}),
        ("GET", f"{b}/complaints"): Sample(query={"status": "open"}),
        ("POST", f"{b}/complaints"): Sample(json={"partner": "shop", "category": "other", "description": "rude"}),
        ("POST", f"{b}/complaints/<int:complaint_id>/transitions"): Sample(json={"status": "investigating"}),
        ("POST", f"{b}/clients"): Sample(json={"name": "new system", "roles": ["finance"], "person": world.person}),
        ("POST", f"{b}/people"): Sample(json={"handle": "role-person", "name": "Role Person"}),
        ("POST", f"{b}/clients/<client_id>/revocation"): Sample(json={}),
        ("GET", f"{b}/audit-log"): Sample(query={"limit": "5"}),
        ("POST", f"{b}/settlement/closings"): Sample(json={"partner": "shop"}),
        ("GET", f"{b}/settlement/statements"): Sample(query={"partner": "shop"}),
        ("GET", f"{b}/settlement/statements/<int:statement_id>"): Sample(query={"format": "csv"}),
        ("POST", f"{b}/settlement/statements/<int:statement_id>/reconciliations"): Sample(
            json={"document": "receipt_id,amount_minor,currency,occurred_on\n"}),
        ("GET", f"{b}/settlement/summary"): Sample(query={"cycle_ends_at": world.cycle_ends_at, "currency": "EUR"}),
        ("POST", f"{b}/settlement/adjustments"): Sample(json={"partner": "shop", "amount_minor": 100,
                                                              "reason": "sample", "reference": "ADJ-ROLE"}),
        ("GET", f"{b}/settlement/adjustments"): Sample(query={"status": "pending"}),
        ("POST", f"{b}/settlement/adjustments/<int:adjustment_id>/decision"): Sample(json={"decision": "approve"}),
        ("POST", f"{b}/settlement/statements/<int:statement_id>/invoiced"): Sample(json={"reference": "INV-ROLE"}),
        ("POST", f"{b}/settlement/statements/<int:statement_id>/payments"): Sample(json={
            "amount_minor": 10, "paid_on": "2026-01-10", "reference": "PAY-ROLE"}),
        ("GET", f"{b}/settlement/overdue"): Sample(query={"as_of": "2026-03-01"}),
        ("GET", f"{b}/liability"): Sample(query={"as_of": "2026-03-01"}),
        ("POST", f"{b}/settlement/statements/<int:statement_id>/lines/<int:line_number>/disputes"): Sample(
            json={"reason": "sample"}),
        ("GET", f"{b}/settlement/disputes"): Sample(query={"status": "open"}),
        ("POST", f"{b}/settlement/disputes/<int:dispute_id>/resolution"): Sample(json={"outcome": "rejected"}),
        ("POST", f"{b}/grades/computations"): Sample(json={"period": "2026-01"}),
        ("GET", f"{b}/grades/<period>"): Sample(query={"limit": "10"}),
        ("GET", f"{b}/grades/<period>/export"): Sample(),
        ("GET", f"{b}/partners/<code>/grades"): Sample(),
        ("GET", f"{b}/partners/<code>/grades/<period>"): Sample(),
        ("POST", f"{b}/partners/<code>/grades/<period>/override"): Sample(json={"grade": "B", "reason": "sample"}),
        ("GET", f"{b}/grade-alerts"): Sample(query={"acknowledged": "all"}),
        ("GET", f"{b}/behaviour-rules"): Sample(),
        ("POST", f"{b}/behaviour-rules"): Sample(json={"event_type": "survey", "points": 20, "cap_per_day": 40}),
        ("GET", f"{b}/behaviour-rules/<event_type>"): Sample(),
        ("PATCH", f"{b}/behaviour-rules/<event_type>"): Sample(json={"points": 25}),
        ("GET", f"{b}/members/<member_number>/behaviour-events"): Sample(query={"limit": "10"}),
        ("GET", f"{b}/tier-policy"): Sample(),
        ("POST", f"{b}/tier-policy"): Sample(json={
            "effective_from": soon, "basis": "spend", "window_months": 12, "downgrade": "to_earned",
            "tiers": [{"tier": "standard", "threshold": 0, "multiplier": "1"},
                      {"tier": "gold", "threshold": 1000, "multiplier": "1.5", "birthday_bonus_points": 100}]}),
        ("GET", f"{b}/members/<member_number>/tier-history"): Sample(),
        ("POST", f"{b}/grade-alerts/<int:alert_id>/acknowledgement"): Sample(json={}),
        ("GET", f"{b}/risk/policy"): Sample(),
        ("POST", f"{b}/risk/policy/versions"): Sample(json={"policy": {"limits": []}, "effective_from": soon,
                                                            "reason": "sample"}),
        ("GET", f"{b}/risk/patterns"): Sample(),
        ("PATCH", f"{b}/risk/patterns/<name>"): Sample(json={"terms": {"window_minutes": 15}, "reason": "sample"}),
        ("GET", f"{b}/risk/decisions"): Sample(query={"member": world.member_number}),
        ("GET", f"{b}/risk/cases"): Sample(query={"by": "partner"}),
        ("POST", f"{b}/risk/decisions/<int:decision_id>/review"): Sample(json={"action": "dismiss", "note": "sample"}),
        ("POST", f"{b}/risk/decisions/<int:decision_id>/actions"): Sample(json={"action": "open_complaint",
                                                                                "note": "sample"}),
        ("GET", f"{b}/partners/<code>/credit"): Sample(),
        ("POST", f"{b}/partners/<code>/credit/limit-changes"): Sample(json={"limit_minor": 50_000,
                                                                            "reason": "sample"}),
        ("POST", f"{b}/partners/<code>/credit/limit-changes/<int:change_id>/decision"): Sample(
            json={"decision": "approve"}),
        ("GET", f"{b}/partners/<code>/credit/prepaid-blocks"): Sample(),
        ("POST", f"{b}/partners/<code>/credit/prepaid-blocks"): Sample(json={"points": 1_000, "reference": "PRE-ROLE",
                                                                             "paid_on": "2026-01-10"}),
        ("POST", f"{b}/settlement/statements/<int:statement_id>/prepaid-payments"): Sample(),
        ("GET", f"{b}/rewards"): Sample(query={"status": "listed", "supplier": "gifts"}),
        ("POST", f"{b}/rewards"): Sample(json={"supplier": "gifts", "code": "role-new", "kind": "goods",
                                               "title": "New", "points_price": 10, "unit_price_minor": 8,
                                               "stock": 1}),
        ("GET", f"{b}/rewards/<reward_code>"): Sample(),
        ("POST", f"{b}/rewards/<reward_code>/approval"): Sample(),
        ("POST", f"{b}/rewards/<reward_code>/withdrawal"): Sample(json={"reason": "sample"}),
        ("POST", f"{b}/rewards/<reward_code>/prices"): Sample(json={"points_price": 12, "unit_price_minor": 9,
                                                                    "effective_from": soon}),
        ("POST", f"{b}/rewards/<reward_code>/stock"): Sample(json={"items": 2}),
        ("POST", f"{b}/rewards/<reward_code>/voucher-codes"): Sample(json={"codes": ["ROLE-0001"]}),
        ("POST", f"{b}/members/<member_number>/reward-orders"): Sample(json={"reference": "ROLE-NEW",
                                                                             "reward": "role-gift"}),
        ("GET", f"{b}/reward-orders"): Sample(query={"status": "placed", "supplier": "gifts"}),
        ("GET", f"{b}/reward-orders/<channel>/<path:reference>"): Sample(),
        ("POST", f"{b}/reward-orders/<channel>/<path:reference>/fulfilment"): Sample(json={"note": "sample"}),
        ("POST", f"{b}/reward-orders/<channel>/<path:reference>/failure"): Sample(json={"reason": "sample"}),
        ("POST", f"{b}/reward-orders/<channel>/<path:reference>/cancellation"): Sample(json={"reason": "sample"}),
        ("POST", f"{b}/reward-orders/<channel>/<path:reference>/return"): Sample(json={"reason": "sample"}),
        ("POST", f"{b}/coupon-series"): Sample(json={
            "code": "role-new-series", "title": "Role", "funder": "hub", "kind": "bonus", "bonus_points": 5,
            "valid_from": datetime.now(timezone.utc).isoformat(),
            "valid_until": (datetime.now(timezone.utc) + timedelta(days=30)).isoformat()}),
        ("GET", f"{b}/coupon-series"): Sample(),
        ("GET", f"{b}/coupon-series/<series_code>"): Sample(),
        ("POST", f"{b}/coupon-series/<series_code>/issues"): Sample(json={"member_numbers": [world.member_number]}),
        ("GET", f"{b}/coupon-series/<series_code>/codes"): Sample(query={"format": "csv"}),
        ("POST", f"{b}/coupon-series/<series_code>/stop"): Sample(json={"reason": "sample"}),
        ("GET", f"{b}/partners/<code>/webhook-endpoints"): Sample(),
        ("POST", f"{b}/partners/<code>/webhook-endpoints"): Sample(json={
            "url": "https://shop.example/hooks/new", "event_types": ["statement.closed"], "description": "sample"}),
        ("GET", f"{b}/webhook-endpoints/<int:endpoint_id>"): Sample(),
        ("PATCH", f"{b}/webhook-endpoints/<int:endpoint_id>"): Sample(json={"description": "sample"}),
        ("POST", f"{b}/webhook-endpoints/<int:endpoint_id>/disabling"): Sample(json={"reason": "sample"}),
        ("POST", f"{b}/webhook-endpoints/<int:endpoint_id>/enabling"): Sample(),
        ("GET", f"{b}/webhook-endpoints/<int:endpoint_id>/deliveries"): Sample(query={"limit": "10"}),
        ("POST", f"{b}/webhook-events/<event_id>/redelivery"): Sample(json={}),
    }


def _concrete(rule: str, world: World) -> str:
    values = {"member_number": world.member_number, "card_number": world.card_number, "code": "shop",
              "key_id": world.spare_key_id, "complaint_id": str(world.complaint_id),
              "client_id": world.spare_client_id, "statement_id": str(world.statement_id),
              "adjustment_id": str(world.adjustment_id), "dispute_id": str(world.dispute_id), "line_number": "1",
              "terminal_code": "till-spare", "request_id": str(world.goodwill_request_id),
              "period": world.period, "alert_id": str(world.grade_alert_id), "event_type": "survey",
              "campaign_id": str(world.campaign_id), "decision_id": str(world.decision_id),
              "change_id": str(world.change_id), "name": "split-purchase"}
    # One reward and one order per route: approval needs a proposed reward, voucher codes a voucher, and failure
    # and cancellation orders of their own.
    values.update({"reward_code": "role-gift", "channel": "back-office", "reference": "ROLE-ORDER",
                   "series_code": "role-matrix"})
    values.update({"endpoint_id": str(world.webhook_endpoint_id), "event_id": world.webhook_event_id})
    values.update({"/approval": {"reward_code": "role-proposed"}, "/voucher-codes": {"reward_code": "role-cinema"},
                   "/failure": {"reference": "ROLE-FAIL"}, "/cancellation": {"reference": "ROLE-CANCEL"}}
                  .get(rule[rule.rfind("/"):], {}))
    return PATH_ARGUMENT.sub(lambda match: values[match.group(1)], rule)


def _send(bo: BackOffice, method: str, path: str, sample: Sample, headers: dict[str, str]):  # type: ignore[no-untyped-def]
    response = bo.client.open(path, method=method, json=sample.json, query_string=sample.query, headers=headers)
    return response.status_code, response.get_json(silent=True) or {}


def _partner_signed_headers(partner: SigningPartner, method: str, path: str, sample: Sample) -> dict[str, str]:
    body = b"" if sample.json is None else json.dumps(sample.json).encode()
    query = "&".join(f"{key}={value}" for key, value in sample.query.items())
    url = "http://localhost" + path + (f"?{query}" if query else "")
    return sign_request(method=method, url=url, body=body, key_id=partner.key_id, private_key=partner.private_key,
                        idempotency_key=str(uuid.uuid4()) if method != "GET" else None)


def _revoked_token(bo: BackOffice) -> str:
    created = bo.register_client(*ROLES, name="to revoke")
    token = bo.request_token(created.client_id, created.client_secret).body["access_token"]
    with bo.hub.unit_of_work() as uow:
        oauth.revoke_client(uow.session, client_id=created.client_id, now=datetime.now(timezone.utc))
        uow.commit()
    return token


def _expired_token(bo: BackOffice) -> str:
    """A token of an active all-roles client, issued two hours ago for one hour."""
    created = bo.register_client(*ROLES, name="expired")
    token = "expired-" + uuid.uuid4().hex
    with bo.hub.unit_of_work() as uow:
        row = uow.session.scalar(select(OAuthClient).where(OAuthClient.client_id == created.client_id))
        oauth.store_token(uow.session, client=row, access_token=token, scope=" ".join(ROLES),
                          now=datetime.now(timezone.utc) - timedelta(hours=2), expires_in_s=3600)
        uow.commit()
    return token


def test_every_back_office_route_refuses_missing_foreign_and_insufficient_credentials_and_admits_its_roles(app):
    bo = BackOffice(app)
    world = _world(bo)
    samples = _samples(world)
    routes = back_office_routes(app)
    enumerated = {(method, rule) for method, rule, _ in routes}
    assert len(routes) >= 27
    assert enumerated == set(samples), "every route needs a sample request here (and every sample a route)"

    roles_by_route = {(method, rule): required_roles(app, rule_object, method) for method, rule, rule_object in routes}
    unguarded = sorted(route for route, roles in roles_by_route.items() if not roles)
    assert not unguarded, f"back-office routes without require_role: {unguarded}"
    assert all(roles <= set(ROLES) for roles in roles_by_route.values())

    revoked, expired = _revoked_token(bo), _expired_token(bo)
    role_tokens = {role: bo.token(role) for role in ROLES}
    unauthenticated_headers = {
        "no Authorization": {},
        "unknown bearer token": {"Authorization": "Bearer " + uuid.uuid4().hex},
        "Basic scheme": {"Authorization": "Basic Zm9vOmJhcg=="},
        "empty bearer": {"Authorization": "Bearer "},
        "revoked client's token": {"Authorization": f"Bearer {revoked}"},
        "expired token": {"Authorization": f"Bearer {expired}"},
    }
    entries_before = audit_count(bo.hub)
    failures: list[str] = []
    for method, rule, _ in routes:
        path, sample = _concrete(rule, world), samples[(method, rule)]
        for label, headers in unauthenticated_headers.items():
            status, body = _send(bo, method, path, sample, headers)
            if (status, body.get("code")) != (401, "not_authenticated"):
                failures.append(f"{method} {rule} with {label}: {status} {body.get('code')}")
        status, body = _send(bo, method, path, sample,
                             _partner_signed_headers(world.partner, method, path, sample))
        if (status, body.get("code")) != (401, "not_authenticated"):
            failures.append(f"{method} {rule} with a partner signature: {status} {body.get('code')}")
        for role in sorted(set(ROLES) - roles_by_route[(method, rule)]):
            status, body = _send(bo, method, path, sample, {"Authorization": f"Bearer {role_tokens[role]}"})
            if (status, body.get("code")) != (403, "role_refused"):
                failures.append(f"{method} {rule} as {role}: {status} {body.get('code')}")
    assert not failures, "\n".join(failures)
    # Nothing refused left a trace: every change writes an audit entry in its own transaction.
    assert audit_count(bo.hub) == entries_before

    ordered = sorted(routes, key=lambda route: max([rank for suffix, rank in RUN_LATE.items()
                                                    if route[1].endswith(suffix)] or [0]))
    for method, rule, _ in ordered:
        path, sample = _concrete(rule, world), samples[(method, rule)]
        for position, role in enumerate(sorted(roles_by_route[(method, rule)])):
            status, body = _send(bo, method, path, sample, {"Authorization": f"Bearer {role_tokens[role]}"})
            # The first allowed role performs the sample; a second one may find it already done.
            admitted = status < 300 if position == 0 else status not in (401, 403) and status < 500
            if sample.refused_with is not None:
                admitted = (status, body.get("code")) == (400, sample.refused_with)
            if not admitted:
                failures.append(f"{method} {rule} as allowed {role}: {status} {body}")
    assert not failures, "\n".join(failures)
    with bo.hub.unit_of_work() as uow:
        assert uow.session.scalar(select(Partner.status).where(Partner.code == "shop")) == "suspended"
        assert uow.session.scalar(select(Member.status).where(Member.member_number == world.member_number)) == "closed"


def test_an_unauthenticated_request_with_a_valid_body_is_refused_without_reaching_the_service(app):
    bo = BackOffice(app)
    reply = bo.call("POST", "/members", json={"name": "Nobody"})
    assert (reply.status, reply.code) == (401, "not_authenticated")
    assert reply.headers["Content-Type"] == "application/problem+json"
    with bo.hub.unit_of_work() as uow:
        assert uow.session.scalar(select(func.count()).select_from(Member)) == 0


def test_an_unauthenticated_request_with_an_invalid_body_is_refused_as_unauthenticated(app):
    bo = BackOffice(app)
    body_reply = bo.call("POST", "/members", json={"bogus": 1})
    query_reply = bo.call("GET", "/members", query={"nonsense": "1"})
    assert (body_reply.status, body_reply.code) == (401, "not_authenticated")
    assert (query_reply.status, query_reply.code) == (401, "not_authenticated")


def test_token_endpoint_issues_bearer_tokens_for_the_clients_roles_and_stores_only_digests(app):
    bo = BackOffice(app)
    created = bo.register_client("customer_service", "partner_manager")
    reply = bo.request_token(created.client_id, created.client_secret)
    assert reply.status == 200, reply.body
    assert reply.body["token_type"] == "Bearer"
    assert reply.body["expires_in"] == 3600
    assert set(reply.body["scope"].split()) == {"customer_service", "partner_manager"}
    token = reply.body["access_token"]
    assert bo.call("GET", "/partners", token=token).status == 200
    assert bo.call("POST", "/members/search", token=token, json={"phone": "+33600000000"}).status == 200
    admin_only = bo.call("GET", "/audit-log", token=token)
    assert (admin_only.status, admin_only.code) == (403, "role_refused")
    stored = raw_table_text(bo.hub, "oauth_tokens") + raw_table_text(bo.hub, "oauth_clients")
    assert token not in stored and created.client_secret not in stored


def test_token_endpoint_refuses_a_wrong_secret_an_unknown_client_and_other_grant_types(app):
    bo = BackOffice(app)
    created = bo.register_client("admin")
    wrong_secret = bo.request_token(created.client_id, created.client_secret + "x")
    unknown_client = bo.request_token("bo_0000000000000000", created.client_secret)
    password_grant = bo.request_token(created.client_id, created.client_secret, grant_type="password")
    made_up_grant = bo.request_token(created.client_id, created.client_secret, grant_type="urn:example:magic")
    assert (wrong_secret.status, wrong_secret.body["error"]) == (401, "invalid_client")
    assert (unknown_client.status, unknown_client.body["error"]) == (401, "invalid_client")
    assert (password_grant.status, password_grant.body["error"]) == (400, "unsupported_grant_type")
    assert (made_up_grant.status, made_up_grant.body["error"]) == (400, "unsupported_grant_type")
    with bo.hub.unit_of_work() as uow:
        assert uow.session.scalar(select(func.count()).select_from(OAuthToken)) == 0


def test_asking_for_a_role_the_client_lacks_gives_a_token_without_it(app):
    bo = BackOffice(app)
    created = bo.register_client("customer_service", "partner_manager")
    narrowed = bo.request_token(created.client_id, created.client_secret, scope="partner_manager admin")
    assert narrowed.status == 200, narrowed.body
    assert narrowed.body["scope"] == "partner_manager"
    token = narrowed.body["access_token"]
    assert bo.call("GET", "/partners", token=token).status == 200
    for method, path, body in (("GET", "/audit-log", None), ("POST", "/members/search", {"phone": "+33600000000"})):
        refused = bo.call(method, path, token=token, json=body)
        assert (refused.status, refused.code) == (403, "role_refused")
    nothing_held = bo.request_token(created.client_id, created.client_secret, scope="finance")
    assert nothing_held.status == 200
    assert not nothing_held.body.get("scope")
    refused = bo.call("GET", "/partners", token=nothing_held.body["access_token"])
    assert (refused.status, refused.code) == (403, "role_refused")
    unknown_scope = bo.request_token(created.client_id, created.client_secret, scope="superuser")
    assert (unknown_scope.status, unknown_scope.body["error"]) == (400, "invalid_scope")


def test_token_endpoint_accepts_client_secret_post(app):
    bo = BackOffice(app)
    created = bo.register_client("admin")
    reply = bo.request_token(created.client_id, created.client_secret, auth="post")
    assert reply.status == 200, reply.body
    assert bo.call("GET", "/audit-log", token=reply.body["access_token"]).status == 200


def test_a_revoked_client_loses_its_tokens_and_cannot_get_new_ones(app):
    bo = BackOffice(app)
    victim = bo.register_client("partner_manager")
    token = bo.request_token(victim.client_id, victim.client_secret).body["access_token"]
    assert bo.call("GET", "/partners", token=token).status == 200
    revoked = bo.post(f"/clients/{victim.client_id}/revocation", role="admin")
    assert revoked.status == 204
    after = bo.call("GET", "/partners", token=token)
    assert (after.status, after.code) == (401, "not_authenticated")
    again = bo.request_token(victim.client_id, victim.client_secret)
    assert (again.status, again.body["error"]) == (401, "invalid_client")
    unknown = bo.post("/clients/bo_ffffffffffffffff/revocation", role="admin")
    assert (unknown.status, unknown.code) == (404, "not_found")


def test_admin_creates_a_client_whose_secret_is_shown_once_and_works(app):
    bo = BackOffice(app)
    assert bo.post("/people", {"handle": "cora", "name": "Cora Sync"}, role="admin").status == 201
    reply = bo.post("/clients", {"name": "crm sync", "roles": ["customer_service", "customer_service"],
                                 "person": "cora"}, role="admin")
    assert reply.status == 201, reply.body
    assert reply.body["roles"] == ["customer_service"] and reply.body["person"] == "cora"
    token = bo.request_token(reply.body["client_id"], reply.body["client_secret"])
    assert token.status == 200 and token.body["scope"] == "customer_service"
    bad_role = bo.post("/clients", {"name": "x", "roles": ["superuser"], "person": "cora"}, role="admin")
    no_roles = bo.post("/clients", {"name": "x", "roles": [], "person": "cora"}, role="admin")
    no_person = bo.post("/clients", {"name": "x", "roles": ["finance"]}, role="admin")
    unknown_person = bo.post("/clients", {"name": "x", "roles": ["finance"], "person": "nobody"}, role="admin")
    assert (bad_role.status, bad_role.code) == (422, "validation_failed")
    assert (no_roles.status, no_roles.code) == (422, "validation_failed")
    assert (no_person.status, no_person.code) == (422, "validation_failed") and "person" in no_person.body["errors"]
    assert (unknown_person.status, unknown_person.code) == (404, "not_found")
    assert reply.body["client_secret"] not in raw_table_text(bo.hub, "oauth_clients")


def test_partner_routes_refuse_a_bearer_token_without_a_signature(app):
    bo = BackOffice(app)
    partner = make_signing_partner(bo.hub, now=wall_clock_partner_time(), code="shop")
    member_number, card_number = bo.enrol(name="Bearer Only")
    token = bo.token(*ROLES)
    for method, path, payload in (
        ("POST", "/partner/v1/purchases", purchase_payload("r-1", card_number)),
        ("GET", "/partner/v1/purchases/r-1", None),
        ("POST", "/partner/v1/balance-inquiries", {"card_number": card_number, "pin": "1234"}),
        ("POST", "/partner/v1/events", {"event_id": "ev-1", "event_type": "survey", "card_number": card_number,
                                        "occurred_at": datetime.now(timezone.utc).isoformat()}),
    ):
        response = bo.client.open(path, method=method, json=payload, headers={
            "Authorization": f"Bearer {token}", "Idempotency-Key": str(uuid.uuid4())})
        body = response.get_json()
        assert (response.status_code, body["code"]) == (401, "signature_missing"), (path, body)
    # The same purchase, signed, goes through: the refusal was about the credential alone.
    assert SignedTestClient(app, partner).post("/partner/v1/purchases",
                                               purchase_payload("r-1", card_number)).status == 201
