"""The risk controls in the back-office API: the policy and its versions, the decisions with their evidence, the
review queue's cases and reviews (four eyes above the threshold), for the risk role; customer service looks a
decision up by its reference or member; every refusal is problem+json and changes nothing."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy import func, select

from alliance.domain.risk import DEFAULT_POLICY
from alliance.extensions import hub_state
from alliance.models import AuditLogEntry, RiskDecision, RiskPolicyVersion
from tests.back_office_support import BackOffice, audit_count, other_hub
from tests.factories import make_member_with_pin, make_signing_partner, set_risk_policy
from tests.http_server import (
    assert_audit_green,
    balances,
    books,
    fund_member,
    purchase_payload,
    wall_clock_partner_time,
)
from tests.partner_client import SignedTestClient

UTC = timezone.utc
PIN = "2468"
PURCHASES = "/partner/v1/purchases"
REDEMPTIONS = "/partner/v1/redemptions"
# The card's fourth purchase in an hour is held; a member's eleventh redemption in an hour refused.
HOLD_THE_FOURTH = {"limits": [
    {"name": "card-hour", "scope": "card", "measure": "earn", "window_minutes": 60, "max_count": 3,
     "action": "hold"},
    {"name": "member-redemptions-hour", "scope": "member", "measure": "redeem", "window_minutes": 60,
     "max_count": 10, "action": "refuse"}]}


@pytest.fixture
def risky(app):  # type: ignore[no-untyped-def]
    """A shop whose key is bound to its till, a member with 3,000 points, a held purchase of 100 points and a
    refused redemption, and a back-office caller."""
    hub = hub_state(app)
    created = wall_clock_partner_time()
    shop = make_signing_partner(hub, now=created, code="shop", bind_key_to_terminal=True)
    member = make_member_with_pin(hub, now=created, pin=PIN)
    fund_member(hub, member_id=member.member_id, partner_id=shop.partner_id, points=3_000)
    client = SignedTestClient(app, shop)
    set_risk_policy(hub, HOLD_THE_FOURTH)
    for index in range(4):
        assert client.post(PURCHASES, purchase_payload(f"h-{index}", member.card_number, 10_000)).status == 201
    for index in range(11):
        client.post(REDEMPTIONS, {"reference": f"r-{index}", "points": 10, "card_number": member.card_number,
                                  "pin": PIN})
    with hub.unit_of_work() as uow:
        held, refused = uow.session.scalars(select(RiskDecision).order_by(RiskDecision.id)).all()
    assert (held.action, refused.action) == ("hold", "refuse")
    return SimpleNamespace(app=app, hub=hub, shop=shop, member=member, held=held, refused=refused,
                           bo=BackOffice(app))


def state(hub) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    """Everything a risk call could change: the books, the decisions' reviews, the policy versions, the audit."""
    with hub.unit_of_work() as uow:
        reviews = uow.session.execute(select(
            RiskDecision.id, RiskDecision.review_status, RiskDecision.reviewed_by, RiskDecision.proposed_action,
            RiskDecision.proposed_by).order_by(RiskDecision.id)).all()
        versions = uow.session.scalar(select(func.count()).select_from(RiskPolicyVersion))
    return {"books": books(hub), "reviews": reviews, "versions": versions, "audit": audit_count(hub)}


def audited(hub, subject: str) -> list[tuple[str, str]]:  # type: ignore[no-untyped-def]
    with hub.unit_of_work() as uow:
        return [tuple(row) for row in uow.session.execute(select(AuditLogEntry.action, AuditLogEntry.actor).where(
            AuditLogEntry.subject == subject).order_by(AuditLogEntry.sequence))]


# -- the policy ---------------------------------------------------------------------------

def test_the_policy_in_force_and_a_new_version_stored_and_audited(app):
    bo = BackOffice(app)
    shown = bo.get("/risk/policy", role="risk")
    assert shown.status == 200
    assert (shown.body["version"], shown.body["policy"], shown.body["versions"]) == (
        None, DEFAULT_POLICY.as_data(), [])
    document = DEFAULT_POLICY.as_data()
    document["limits"][0]["max_count"] = 30
    starts = datetime.now(UTC) + timedelta(hours=1)
    stored = bo.post("/risk/policy/versions", {"policy": document, "effective_from": starts.isoformat(),
                                               "reason": "busier tills for the holidays"}, role="admin")
    assert stored.status == 201
    assert (stored.body["version"], stored.body["status"], stored.body["created_by"], stored.body["reason"]) == (
        1, "scheduled", bo.actor("admin"), "busier tills for the holidays")
    assert stored.body["policy"]["limits"][0]["max_count"] == 30
    assert datetime.fromisoformat(stored.body["effective_from"]) == starts
    shown = bo.get("/risk/policy", role="risk")
    # Scheduled, not yet in force: the default still is.
    assert shown.body["version"] is None and [row["version"] for row in shown.body["versions"]] == [1]
    assert audited(bo.hub, "risk-policy:1") == [("risk.policy.set", bo.actor("admin"))]
    assert_audit_green(bo.hub)


@pytest.mark.parametrize(("body", "field"), [
    ({"policy": {"limits": [{"name": "x"}]}, "reason": "why"}, None),  # the document's own problems
    ({"policy": {"limits": []}, "reason": "why", "soon": True}, "soon"),  # an unknown field
    ({"policy": {"limits": []}, "reason": ""}, "reason"),
    ({"policy": {**DEFAULT_POLICY.as_data(), "partners": {"nobody": {"member-transfers-day": {"enabled": False}}}},
      "reason": "why"}, "partners"),
    ({"policy": {"limits": []}, "reason": "why", "effective_from": "in a minute"}, "effective_from"),
    ({"policy": "limits", "reason": "why"}, "policy"),
])
def test_a_bad_policy_version_is_refused_with_its_problems_and_nothing_stored(app, body, field):
    bo = BackOffice(app)
    bo.token("risk")
    before = state(bo.hub)
    body = {"effective_from": (datetime.now(UTC) + timedelta(hours=1)).isoformat(), **body}
    refused = bo.post("/risk/policy/versions", body, role="risk")
    assert (refused.status, refused.code) == (422, "validation_failed")
    assert refused.headers["Content-Type"].startswith("application/problem+json")
    if field is not None:
        assert field in str(refused.body)
    else:
        assert "limits" in refused.body["detail"]
    assert state(bo.hub) == before


def test_a_version_too_soon_is_refused_by_its_start(app):
    bo = BackOffice(app)
    bo.token("risk")
    before = state(bo.hub)
    refused = bo.post("/risk/policy/versions", {"policy": {"limits": []}, "reason": "now",
                                                "effective_from": datetime.now(UTC).isoformat()}, role="risk")
    assert (refused.status, refused.code) == (422, "validation_failed")
    assert "60 seconds" in refused.body["detail"]
    assert state(bo.hub) == before


@pytest.mark.parametrize(("method", "path"), [
    ("GET", "/risk/policy"), ("POST", "/risk/policy/versions"), ("GET", "/risk/cases"),
    ("POST", "/risk/decisions/1/review"),
])
def test_other_roles_are_refused_and_no_token_is_not_authenticated(app, method, path):
    bo = BackOffice(app)
    for role in ("customer_service", "finance", "partner_manager"):
        bo.token(role)
    before = state(bo.hub)
    body = {"policy": {"limits": []}, "reason": "x", "effective_from": "2030-01-01T00:00:00+00:00",
            "action": "dismiss", "note": "x"}
    for role in ("customer_service", "finance", "partner_manager"):
        refused = bo.call(method, path, role=role, json=body if method == "POST" else None)
        assert (refused.status, refused.code) == (403, "role_refused")
    anonymous = bo.call(method, path, json=body if method == "POST" else None)
    assert (anonymous.status, anonymous.code) == (401, "not_authenticated")
    assert state(bo.hub) == before


# -- decisions and cases --------------------------------------------------------------------

def test_decisions_come_with_their_evidence_and_filters(risky):
    bo = risky.bo
    listed = bo.get("/risk/decisions", role="risk")
    assert listed.status == 200
    rows = listed.body["decisions"]
    assert [(row["decision_id"], row["operation"], row["action"]) for row in rows] == [
        (risky.refused.id, "redeem", "refuse"), (risky.held.id, "earn", "hold")]
    held = rows[1]
    assert (held["token"], held["partner_code"], held["terminal_code"], held["member_number"], held["reference"],
            held["points"], held["review_status"], held["policy_version"]) == (
        risky.held.token, "shop", "till-1", risky.member.member_number, "h-3", 100, "open", 1)
    assert held["evidence"][0]["limit"] == "card-hour" and held["evidence"][0]["count"] == 4
    assert [row["action"] for row in bo.get("/risk/decisions", role="admin", query={"partner": "shop"})
            .body["decisions"]] == ["refuse", "hold"]
    assert bo.get("/risk/decisions", role="risk", query={"partner": "other"}).body["decisions"] == []
    assert bo.get("/risk/decisions", role="risk", query={"status": "released"}).body["decisions"] == []
    bad = bo.get("/risk/decisions", role="risk", query={"status": "closed"})
    assert (bad.status, bad.code) == (422, "validation_failed")


def test_customer_service_looks_a_decision_up_by_its_reference_or_member_only(risky):
    bo = risky.bo
    by_token = bo.get("/risk/decisions", role="customer_service", query={"token": risky.refused.token.lower()})
    assert by_token.status == 200
    assert [row["decision_id"] for row in by_token.body["decisions"]] == [risky.refused.id]
    by_member = bo.get("/risk/decisions", role="customer_service",
                       query={"member": risky.member.member_number})
    assert len(by_member.body["decisions"]) == 2
    for query in ({}, {"partner": "shop"}, {"status": "open"}):
        refused = bo.get("/risk/decisions", role="customer_service", query=query)
        assert (refused.status, refused.code) == (403, "role_refused")
    assert bo.get("/risk/decisions", role="finance", query={"token": risky.refused.token}).status == 403
    assert bo.call("GET", "/risk/decisions").status == 401
    assert bo.get("/risk/decisions", role="customer_service", query={"token": "R12"}).status == 422


def test_the_queue_groups_open_decisions_by_member_terminal_and_partner(risky):
    bo = risky.bo
    by_member = bo.get("/risk/cases", role="risk", query={"by": "member"})
    assert by_member.status == 200 and by_member.body["by"] == "member"
    (case,) = by_member.body["cases"]
    assert (case["subject"], case["decisions"], case["points"], case["actions"], sorted(case["decision_ids"])) == (
        risky.member.member_number, 2, 110, {"hold": 1, "refuse": 1}, [risky.held.id, risky.refused.id])
    assert [case["subject"] for case in bo.get("/risk/cases", role="admin", query={"by": "terminal"})
            .body["cases"]] == ["shop/till-1"]
    assert [case["subject"] for case in bo.get("/risk/cases", role="risk", query={"by": "partner"})
            .body["cases"]] == ["shop"]
    assert bo.get("/risk/cases", role="risk").body["by"] == "member"
    bad = bo.get("/risk/cases", role="risk", query={"by": "card"})
    assert (bad.status, bad.code) == (422, "validation_failed")


# -- reviews ----------------------------------------------------------------------------------

def test_releasing_a_hold_makes_its_points_spendable_and_is_audited_and_a_second_review_is_refused(risky):
    bo = risky.bo
    assert balances(risky.hub, risky.member.member_id)["pending"] == 100
    path = f"/risk/decisions/{risky.held.id}/review"
    released = bo.post(path, {"action": "release", "note": "the till's journal shows four real sales"},
                       role="risk")
    assert released.status == 200
    assert released.body == {"decision_id": risky.held.id, "status": "released", "points_released": 100,
                             "points_reversed": 0, "points_unrecovered": 0}
    assert balances(risky.hub, risky.member.member_id)["pending"] == 0
    assert audited(risky.hub, f"risk-decision:{risky.held.id}") == [("risk.review.release", bo.actor("risk"))]
    shown = bo.get("/risk/decisions", role="risk", query={"token": risky.held.token}).body["decisions"][0]
    assert (shown["review_status"], shown["reviewed_by"], shown["review_note"]) == (
        "released", bo.actor("risk"), "the till's journal shows four real sales")
    before = state(risky.hub)
    again = bo.post(path, {"action": "reverse", "note": "second thoughts"}, role="risk")
    assert (again.status, again.code) == (409, "already_reviewed")
    assert again.headers["Content-Type"].startswith("application/problem+json")
    assert state(risky.hub) == before
    assert_audit_green(risky.hub)


def test_confirming_a_refusal_is_audited(risky):
    bo = risky.bo
    confirmed = bo.post(f"/risk/decisions/{risky.refused.id}/review", {"action": "confirm", "note": "a script"},
                        role="risk")
    assert confirmed.status == 200 and confirmed.body["status"] == "confirmed"
    assert audited(risky.hub, f"risk-decision:{risky.refused.id}") == [("risk.review.confirm", bo.actor("risk"))]
    assert [case["decisions"] for case in bo.get("/risk/cases", role="risk").body["cases"]] == [1]


@pytest.mark.parametrize(("decision", "body", "status", "code"), [
    ("held", {"action": "dismiss", "note": "fine"}, 409, "invalid_state"),
    ("refused", {"action": "release", "note": "fine"}, 409, "invalid_state"),
    ("held", {"action": "pardon", "note": "fine"}, 422, "validation_failed"),
    ("held", {"action": "release", "note": "   "}, 422, "validation_failed"),
    ("held", {"action": "release", "note": ""}, 422, "validation_failed"),
    ("held", {"action": "release"}, 422, "validation_failed"),
    ("unknown", {"action": "release", "note": "fine"}, 404, "not_found"),
])
def test_a_wrong_review_is_refused_and_changes_nothing(risky, decision, body, status, code):
    bo = risky.bo
    bo.token("risk")
    decision_id = {"held": risky.held.id, "refused": risky.refused.id, "unknown": 999_999}[decision]
    before = state(risky.hub)
    refused = bo.post(f"/risk/decisions/{decision_id}/review", body, role="risk")
    assert (refused.status, refused.code) == (status, code)
    assert refused.headers["Content-Type"].startswith("application/problem+json")
    assert state(risky.hub) == before


def test_only_the_risk_role_reviews(risky):
    bo = risky.bo
    bo.token("admin")
    before = state(risky.hub)
    refused = bo.post(f"/risk/decisions/{risky.held.id}/review", {"action": "release", "note": "ok"}, role="admin")
    assert (refused.status, refused.code) == (403, "role_refused")
    assert state(risky.hub) == before


def test_with_a_threshold_of_zero_a_release_is_proposed_and_done_by_a_second_person(risky, tmp_path):
    with other_hub(risky.hub, tmp_path / "strict", risk_approval_threshold_points=0) as strict_app:
        bo = BackOffice(strict_app)
        first, second = bo.register_client("risk", name="rita"), bo.register_client("risk", name="ravi")
        tokens = [bo.request_token(client.client_id, client.client_secret).body["access_token"]
                  for client in (first, second)]
        path = f"/risk/decisions/{risky.held.id}/review"
        body = {"action": "release", "note": "the till's journal shows four real sales"}
        proposed = bo.call("POST", path, token=tokens[0], json=body)
        assert proposed.status == 200
        assert (proposed.body["status"], proposed.body["points_released"]) == ("proposed", 0)
        assert balances(risky.hub, risky.member.member_id)["pending"] == 100
        before = state(risky.hub)
        same = bo.call("POST", path, token=tokens[0], json=body)
        assert (same.status, same.code) == (409, "same_approver")
        assert state(risky.hub) == before
        done = bo.call("POST", path, token=tokens[1], json=body)
        assert (done.status, done.body["status"], done.body["points_released"]) == (200, "released", 100)
    assert balances(risky.hub, risky.member.member_id)["pending"] == 0
    assert audited(risky.hub, f"risk-decision:{risky.held.id}") == [
        ("risk.review.propose_release", f"client:{first.client_id}"),
        ("risk.review.release", f"client:{second.client_id}")]
    assert_audit_green(risky.hub)


def test_a_reviewer_acts_on_a_decision_through_the_api(risky):
    bo = risky.bo
    path = f"/risk/decisions/{risky.held.id}/actions"
    blocked = bo.post(path, {"action": "block_card", "note": "the card is scripted"}, role="risk")
    assert blocked.status == 200 and blocked.body == {"decision_id": risky.held.id, "action": "block_card",
                                                      "card_blocked": True}
    complaint = bo.post(path, {"action": "open_complaint", "note": "ask the till's owner"}, role="risk")
    assert complaint.status == 200 and complaint.body["complaint_id"] > 0
    assert [action for action, _ in audited(risky.hub, f"risk-decision:{risky.held.id}")] == [
        "risk.act.block_card", "risk.act.open_complaint"]
    before = state(risky.hub)
    again = bo.post(path, {"action": "block_card", "note": "again"}, role="risk")
    assert (again.status, again.code) == (409, "invalid_state")
    for body in ({"action": "shred", "note": "x"}, {"action": "block_card", "note": ""}):
        assert bo.post(path, body, role="risk").status == 422
    assert bo.post(path, {"action": "block_card", "note": "x"}, role="admin").status == 403
    assert bo.post("/risk/decisions/999999/actions", {"action": "block_card", "note": "x"}, role="risk").status == 404
    assert state(risky.hub) == before
