"""Goodwill credits and corrections by customer service: funded by the hub or charged to a partner (which pays
its issue price on its next statement), corrections that take lots back to their issuers, four eyes above the
configured threshold, and the back-office API, the CLI and the console pages over them."""

from __future__ import annotations

import json
import re
from datetime import datetime, time, timedelta, timezone
from decimal import Decimal

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import func, select

from alliance.config import Settings
from alliance.domain.errors import ConfigurationError, InsufficientPoints, NotFound, ValidationFailed
from alliance.extensions import HubState, hub_state
from alliance.models import AuditLogEntry, GoodwillRequest, JournalTransaction, LedgerAccount, PointLot
from alliance.services import complaints, goodwill, ledger
from alliance.services.goodwill import AlreadyDecided, GoodwillPolicy, SameRequester
from settlement.closing import close_cycle
from settlement.cycles import cycle_containing
from settlement.keys import load_statement_private_key, private_key_pem, statement_key_id
from tests.back_office_support import BackOffice, run_cli
from tests.console_support import ConsoleClient, add_staff, audit_actions, signed_in, text_of
from tests.factories import make_member, make_partner
from tests.http_server import assert_audit_green, assert_books_unchanged, books

UTC = timezone.utc
ONBOARDED_AT = datetime(2026, 11, 1, 8, 0, tzinfo=UTC)
DAY = datetime(2026, 11, 2, tzinfo=UTC)
FAR_EXPIRY = datetime(2028, 12, 31, tzinfo=UTC)
POLICY = GoodwillPolicy(approval_threshold_points=1_000, expiry_months=24)
ISSUE_PRICE = Decimal("0.0125")


def at(hour: int, minute: int = 0) -> datetime:
    return DAY.replace(hour=hour, minute=minute)


def setup_member(hub: HubState) -> tuple[dict[str, int], str, int, int]:
    """Partners alpha and bravo (daily, UTC), a member with a complaint; (partners, member number, member id,
    complaint id)."""
    partners = {code: make_partner(hub, now=ONBOARDED_AT, code=code, settlement_cycle="daily", time_zone="UTC",
                                   issue_price_per_point=price, redemption_price_per_point=Decimal("0.0080"))
                for code, price in (("alpha", ISSUE_PRICE), ("bravo", Decimal("0.0100")))}
    member = make_member(hub, now=ONBOARDED_AT)
    with hub.unit_of_work() as uow:
        complaint = complaints.file_for_member(
            uow.session, member_number=member.member_number, partner_code="alpha", category="points_missing",
            description="points of my purchase never came", purchase_id=None, redemption_reference=None,
            now=ONBOARDED_AT, actor="console:cass")
        uow.commit()
    return partners, member.member_number, member.member_id, complaint.id


def request(hub: HubState, member_number: str, *, actor: str = "console:cass", now: datetime = DAY,
            policy: GoodwillPolicy = POLICY, **changes: object) -> goodwill.GoodwillView:
    arguments: dict[str, object] = {"direction": "credit", "points": 200, "reason": "sorry for the wait"}
    arguments.update(changes)
    with hub.unit_of_work() as uow:
        made = goodwill.request_goodwill(uow.session, member_number=member_number, policy=policy, now=now,
                                         actor=actor, **arguments)  # type: ignore[arg-type]
        uow.commit()
    return made


def decide(hub: HubState, request_id: int, decision: str, *, actor: str, now: datetime = DAY) -> goodwill.GoodwillView:
    with hub.unit_of_work() as uow:
        decided = goodwill.decide_goodwill(uow.session, request_id=request_id, decision=decision, policy=POLICY,
                                           now=now, actor=actor)
        uow.commit()
    return decided


def available(hub: HubState, member_id: int) -> int:
    with hub.unit_of_work() as uow:
        return uow.session.scalar(select(LedgerAccount.balance_points).where(
            LedgerAccount.member_id == member_id, LedgerAccount.kind == "member_available")) or 0


def audit_of(hub: HubState, request_id: int) -> list[tuple[str, str]]:
    with hub.unit_of_work() as uow:
        return [tuple(row) for row in uow.session.execute(  # type: ignore[misc]
            select(AuditLogEntry.actor, AuditLogEntry.action)
            .where(AuditLogEntry.subject == f"goodwill:{request_id}").order_by(AuditLogEntry.sequence))]


def close_day(hub: HubState, partner_id: int, code: str) -> dict:  # type: ignore[type-arg]
    """Close the partner's cycle of DAY and return its signed JSON statement."""
    key = load_statement_private_key(private_key_pem(Ed25519PrivateKey.generate()))
    cycle = cycle_containing(DAY, partner_code=code, frequency="daily", time_zone="UTC", cutoff_local=time(0, 0))
    with hub.unit_of_work() as uow:
        closed = close_cycle(uow.session, partner_id=partner_id, cycle=cycle, now=DAY + timedelta(days=1, hours=1),
                             signing_key=key, key_id=statement_key_id(key.public_key()), payment_terms_days=14)
        uow.commit()
    return json.loads(closed.document_json)


def test_a_hub_funded_credit_is_posted_at_once_from_the_hubs_marketing_account(hub):
    _, number, member_id, complaint_id = setup_member(hub)
    made = request(hub, number, complaint_id=complaint_id)
    assert (made.status, made.direction, made.points, made.funded_by) == ("posted", "credit", 200, "hub")
    assert made.posted_at == DAY and len(made.transaction_ids) == 1
    assert available(hub, member_id) == 200
    with hub.unit_of_work() as uow:
        lot = uow.session.scalars(select(PointLot).where(PointLot.member_id == member_id)).one()
        posting = uow.session.get_one(JournalTransaction, made.transaction_ids[0])
    assert lot.partner_id is None and lot.points_earned == 200 and lot.expires_at == datetime(2028, 11, 2, tzinfo=UTC)
    assert (posting.kind, posting.partner_id, posting.price_per_point, posting.memo) == (
        "goodwill_credit", None, None, f"goodwill:{made.request_id}")
    assert audit_of(hub, made.request_id) == [("console:cass", "goodwill.request"), ("console:cass", "goodwill.post")]
    assert_audit_green(hub)


def test_a_partner_funded_credit_is_issued_by_the_partner_and_on_its_next_statement_at_its_issue_price(hub):
    partners, number, member_id, complaint_id = setup_member(hub)
    made = request(hub, number, complaint_id=complaint_id, points=400, funded_by="alpha", now=at(10))
    assert (made.status, made.funded_by) == ("posted", "alpha")
    with hub.unit_of_work() as uow:
        lot = uow.session.scalars(select(PointLot).where(PointLot.member_id == member_id)).one()
        posting = uow.session.get_one(JournalTransaction, made.transaction_ids[0])
    assert lot.partner_id == partners["alpha"] and posting.price_per_point == ISSUE_PRICE
    statement = close_day(hub, partners["alpha"], "alpha")
    # On its own line, apart from the points its tills issue.
    assert [line["line_kind"] for line in statement["lines"] if line.get("points")] == ["goodwill_points_issued"]
    issued = [line for line in statement["lines"] if line["line_kind"] == "goodwill_points_issued"]
    assert len(issued) == 1
    assert (issued[0]["points"], Decimal(issued[0]["price_per_point"]), issued[0]["amount_minor"]) == (
        400, ISSUE_PRICE, 500)  # 400 points × 1.25 cents
    assert statement["net_minor"] == 500
    # Bravo funded nothing: its statement of the day has no points line.
    assert not [line for line in close_day(hub, partners["bravo"], "bravo")["lines"] if line.get("points")]
    assert_audit_green(hub)


def test_a_correction_takes_soonest_expiring_lots_back_to_their_issuers_at_the_price_they_paid(hub):
    partners, number, member_id, _ = setup_member(hub)
    with hub.unit_of_work() as uow:
        ledger.earn(uow.session, member_id=member_id, partner_id=partners["alpha"], points=300, now=at(9),
                    expires_at=FAR_EXPIRY - timedelta(days=400))
        ledger.earn(uow.session, member_id=member_id, partner_id=None, points=100, now=at(9, 5),
                    expires_at=FAR_EXPIRY)
        uow.commit()
    made = request(hub, number, direction="debit", points=350, reference="TICKET-77", now=at(11))
    assert (made.status, made.funded_by, len(made.transaction_ids)) == ("posted", None, 2)
    assert available(hub, member_id) == 50
    with hub.unit_of_work() as uow:
        postings = uow.session.scalars(select(JournalTransaction).where(
            JournalTransaction.id.in_(made.transaction_ids)).order_by(JournalTransaction.id)).all()
        remaining = dict(uow.session.execute(select(PointLot.partner_id, PointLot.points_remaining)
                                             .where(PointLot.member_id == member_id)).all())
    assert [(p.kind, p.partner_id, p.price_per_point) for p in postings] == [
        ("correction", partners["alpha"], ISSUE_PRICE), ("correction", None, None)]
    assert remaining == {partners["alpha"]: 0, None: 50}
    # Alpha issued 300 (3.75 EUR) and is credited 300 back at the same price: it owes nothing for the day.
    statement = close_day(hub, partners["alpha"], "alpha")
    kinds = {line["line_kind"]: line for line in statement["lines"] if line.get("points")}
    assert set(kinds) == {"points_issued", "points_corrected"}
    assert kinds["points_corrected"]["points"] == 300 and kinds["points_corrected"]["amount_minor"] == -375
    assert statement["net_minor"] == 0
    assert_audit_green(hub)


def test_a_correction_of_more_than_the_member_has_is_refused_and_changes_nothing(hub):
    partners, number, member_id, complaint_id = setup_member(hub)
    request(hub, number, complaint_id=complaint_id, points=100)
    before = books(hub)
    with pytest.raises(InsufficientPoints, match="100 available points"):
        request(hub, number, direction="debit", points=101, complaint_id=complaint_id)
    assert_books_unchanged(hub, before)
    with hub.unit_of_work() as uow:
        assert uow.session.scalar(select(func.count()).select_from(GoodwillRequest)) == 1


@pytest.mark.parametrize(("changes", "refusal", "field"), [
    ({"complaint_id": None}, ValidationFailed, "complaint_id"),
    ({"direction": "debit", "complaint_id": None}, ValidationFailed, "reference"),
    ({"points": 0}, ValidationFailed, "points"),
    ({"reason": "  "}, ValidationFailed, "reason"),
    ({"direction": "gift"}, ValidationFailed, "direction"),
    ({"funded_by": "nobody"}, NotFound, None),
    ({"direction": "debit", "funded_by": "alpha"}, ValidationFailed, "funded_by"),
])
def test_malformed_requests_are_refused_and_change_nothing(hub, changes, refusal, field):
    _, number, _, complaint_id = setup_member(hub)
    before = books(hub)
    with pytest.raises(refusal) as refused:
        request(hub, number, **{"complaint_id": complaint_id, **changes})
    if field is not None:
        assert field in refused.value.fields
    assert_books_unchanged(hub, before)


def test_a_complaint_of_another_member_is_refused(hub):
    _, number, _, complaint_id = setup_member(hub)
    other = make_member(hub, now=ONBOARDED_AT)
    before = books(hub)
    with pytest.raises(ValidationFailed, match="not a complaint of member") as refused:
        request(hub, other.member_number, complaint_id=complaint_id)
    assert refused.value.fields == {"complaint_id": ["not this member's"]}
    assert_books_unchanged(hub, before)
    with hub.unit_of_work() as uow:
        assert uow.session.scalar(select(func.count()).select_from(GoodwillRequest)) == 0


def test_above_the_threshold_a_credit_waits_for_another_person_and_posts_on_approval(hub):
    _, number, member_id, complaint_id = setup_member(hub)
    before = books(hub)
    pending = request(hub, number, complaint_id=complaint_id, points=1_001)
    assert (pending.status, pending.transaction_ids, pending.posted_at) == ("pending", (), None)
    assert books(hub) == before
    with pytest.raises(SameRequester):
        decide(hub, pending.request_id, "approve", actor="console:cass")
    assert books(hub) == before
    approved = decide(hub, pending.request_id, "approve", actor="console:petra")
    assert (approved.status, approved.decided_by, len(approved.transaction_ids)) == ("posted", "console:petra", 1)
    assert available(hub, member_id) == 1_001
    with pytest.raises(AlreadyDecided):
        decide(hub, pending.request_id, "reject", actor="console:otto")
    assert audit_of(hub, pending.request_id) == [
        ("console:cass", "goodwill.request"), ("console:petra", "goodwill.approve"),
        ("console:petra", "goodwill.post")]
    # Exactly at the threshold it posts at once.
    assert request(hub, number, complaint_id=complaint_id, points=1_000).status == "posted"
    assert_audit_green(hub)


def test_a_rejected_request_posts_nothing(hub):
    _, number, _, complaint_id = setup_member(hub)
    pending = request(hub, number, complaint_id=complaint_id, points=5_000)
    before = books(hub)
    rejected = decide(hub, pending.request_id, "reject", actor="console:petra")
    assert (rejected.status, rejected.transaction_ids) == ("rejected", ())
    assert_books_unchanged(hub, before)
    assert audit_of(hub, pending.request_id)[-1] == ("console:petra", "goodwill.reject")


def test_an_approval_that_cannot_post_leaves_the_request_pending(hub):
    _, number, _, complaint_id = setup_member(hub)
    pending = request(hub, number, direction="debit", complaint_id=complaint_id, points=2_000)
    before = books(hub)
    with pytest.raises(InsufficientPoints):
        decide(hub, pending.request_id, "approve", actor="console:petra")
    assert_books_unchanged(hub, before)
    with hub.unit_of_work() as uow:
        assert goodwill.goodwill_by_id(uow.session, pending.request_id).status == "pending"


def test_the_threshold_is_a_setting():
    assert Settings().goodwill_approval_threshold_points == 1_000
    assert Settings.from_env({"ALLIANCE_GOODWILL_APPROVAL_THRESHOLD_POINTS": "50"}).goodwill_approval_threshold_points \
        == 50
    with pytest.raises(ConfigurationError, match="GOODWILL_APPROVAL_THRESHOLD_POINTS"):
        Settings.from_env({"ALLIANCE_GOODWILL_APPROVAL_THRESHOLD_POINTS": "-1"})


def test_a_zero_threshold_puts_every_request_behind_four_eyes(hub):
    _, number, _, complaint_id = setup_member(hub)
    made = request(hub, number, complaint_id=complaint_id, points=1,
                   policy=GoodwillPolicy(approval_threshold_points=0, expiry_months=24))
    assert made.status == "pending"


# --- The back-office API -------------------------------------------------------------------------------------------

def test_the_back_office_posts_requests_lists_and_decides_with_problem_json_refusals(app):
    bo = BackOffice(app)
    hub = bo.hub
    partners, number, member_id, complaint_id = setup_member(hub)
    posted = bo.post(f"/members/{number}/goodwill", {"direction": "credit", "points": 300, "reason": "late delivery",
                                                      "complaint_id": complaint_id, "funded_by": "alpha"},
                     role="customer_service")
    assert posted.status == 201, posted.body
    assert (posted.body["status"], posted.body["funded_by"], posted.body["member"]) == ("posted", "alpha", number)
    assert len(posted.body["transaction_ids"]) == 1
    big = bo.post(f"/members/{number}/goodwill", {"direction": "credit", "points": 2_000, "reason": "big sorry",
                                                   "complaint_id": complaint_id}, role="customer_service")
    assert (big.status, big.body["status"], big.body["transaction_ids"]) == (201, "pending", [])
    listed = bo.get("/goodwill", role="customer_service", query={"status": "pending"})
    assert [item["id"] for item in listed.body["requests"]] == [big.body["id"]]

    before = books(hub)
    refusals = [
        (bo.post(f"/members/{number}/goodwill", {"direction": "debit", "points": 500, "reason": "mistake",
                                                  "reference": "T-1"}, role="customer_service"),
         422, "insufficient_points"),
        (bo.post(f"/members/{number}/goodwill", {"direction": "credit", "points": 5, "reason": "x"},
                 role="customer_service"), 422, "validation_failed"),
        (bo.post("/members/0000000000000000/goodwill", {"direction": "credit", "points": 5, "reason": "x",
                                                         "complaint_id": complaint_id}, role="customer_service"),
         404, "not_found"),
        (bo.post(f"/members/{number}/goodwill", {"direction": "credit", "points": 5, "reason": "x",
                                                  "complaint_id": complaint_id, "extra": 1}, role="customer_service"),
         422, "validation_failed"),
        # The requester's own client, and the same person's other client, are one pair of eyes.
        (bo.post(f"/goodwill/{big.body['id']}/decision", {"decision": "approve"}, role="customer_service"),
         409, "same_approver"),
        (bo.post("/goodwill/999999/decision", {"decision": "approve"}, role="admin"), 404, "not_found"),
    ]
    for reply, status, code in refusals:
        assert (reply.status, reply.code) == (status, code), reply.body
        assert reply.headers["Content-Type"].startswith("application/problem+json")
    assert_books_unchanged(hub, before)

    approved = bo.post(f"/goodwill/{big.body['id']}/decision", {"decision": "approve"}, role="admin")
    assert (approved.status, approved.body["status"], approved.body["decided_by"]) == (
        200, "posted", bo.actor("admin"))
    assert available(hub, member_id) == 2_300
    again = bo.post(f"/goodwill/{big.body['id']}/decision", {"decision": "reject"}, role="admin")
    assert (again.status, again.code) == (409, "already_decided")
    assert_audit_green(hub)


def test_the_same_person_through_a_console_login_and_a_client_is_refused(app):
    bo = BackOffice(app)
    hub = bo.hub
    _, number, _, complaint_id = setup_member(hub)
    service = signed_in(app, "cass", "customer_service")
    own_client = bo.register_client("customer_service", person="cass")
    token = bo.request_token(own_client.client_id, own_client.client_secret).body["access_token"]
    pending = bo.call("POST", f"/members/{number}/goodwill", token=token, json={
        "direction": "credit", "points": 1_500, "reason": "sorry", "complaint_id": complaint_id})
    assert pending.body["status"] == "pending"
    page = service.get("/console/goodwill")
    assert "awaiting another person: you requested it" in text_of(page)
    assert f"/console/goodwill/{pending.body['id']}/decision" not in page.get_data(as_text=True)
    before = books(hub)
    refused = service.post(f"/console/goodwill/{pending.body['id']}/decision", {"decision": "approve"})
    assert refused.status_code == 303
    assert "another person than the one who requested it" in text_of(service.get("/console/goodwill"))
    assert_books_unchanged(hub, before)
    add_staff(hub, "petra", "admin")
    other = ConsoleClient(app)
    assert other.login("petra").status_code == 303
    other.post(f"/console/goodwill/{pending.body['id']}/decision", {"decision": "approve"})
    shown = text_of(other.get("/console/goodwill", status="posted"))
    assert "approved by Petra" in shown and "1,500 points" in shown


# --- The command line ----------------------------------------------------------------------------------------------

def test_the_cli_credits_requests_and_decides(app):
    hub = hub_state(app)
    _, number, member_id, complaint_id = setup_member(hub)
    done = run_cli(app, "members", "goodwill", "--member", number, "--points", "250", "--reason", "sorry",
                   "--complaint", str(complaint_id), "--funded-by", "alpha")
    assert done.exit_code == 0, done.output
    assert "credit of 250 points" in done.output and "funded by alpha" in done.output and "posted" in done.output
    big = run_cli(app, "members", "goodwill", "--member", number, "--points", "1200", "--reason", "sorry",
                  "--complaint", str(complaint_id))
    assert "pending" in big.output and "another person must approve it" in big.output
    request_id = goodwill_ids(hub, "pending")[0]
    # The same operator cannot approve their own request.
    own = run_cli(app, "members", "goodwill-decide", str(request_id), "--approve")
    assert own.exit_code == 1 and "another person" in own.output
    listed = run_cli(app, "members", "goodwill-list", "--status", "pending")
    assert f"goodwill request {request_id}:" in listed.output
    correction = run_cli(app, "members", "goodwill", "--member", number, "--points", "50", "--reason", "typo",
                         "--reference", "T-9", "--debit")
    assert correction.exit_code == 0 and "debit of 50 points" in correction.output
    assert available(hub, member_id) == 200
    short = run_cli(app, "members", "goodwill", "--member", number, "--points", "999", "--reason", "typo",
                    "--reference", "T-9", "--debit")
    assert short.exit_code == 1 and "available points" in short.output
    with hub.unit_of_work() as uow:
        goodwill.decide_goodwill(uow.session, request_id=request_id, decision="reject", policy=POLICY,
                                 now=datetime.now(UTC), actor="console:petra")
        uow.commit()
    assert "rejected" in run_cli(app, "members", "goodwill-list").output


def goodwill_ids(hub: HubState, status: str) -> list[int]:
    with hub.unit_of_work() as uow:
        return [view.request_id for view in goodwill.goodwill_requests(uow.session, status=status)]


# --- The console ---------------------------------------------------------------------------------------------------

def test_the_member_page_form_posts_or_requests_and_says_which(app):
    hub = hub_state(app)
    _, number, member_id, complaint_id = setup_member(hub)
    service = signed_in(app, "cass", "customer_service")
    page = service.get(f"/console/members/{number}")
    html = page.get_data(as_text=True)
    assert "Goodwill credit or correction" in text_of(page)
    assert f'<option value="{complaint_id}">Complaint #{complaint_id}' in html
    assert '<option value="alpha">alpha (charged at its issue price)</option>' in html
    form = {"direction": "credit", "points": "120", "reason": "sorry for the wait", "complaint": str(complaint_id),
            "funded_by": "alpha"}
    posted = service.post(f"/console/members/{number}/goodwill", form)
    assert posted.status_code == 303 and posted.headers["Location"].endswith("#goodwill")
    assert "goodwill credit of 120 points is posted" in text_of(service.get(f"/console/members/{number}"))
    assert available(hub, member_id) == 120
    requested = service.post(f"/console/members/{number}/goodwill", {**form, "points": "1,500"})
    assert requested.status_code == 303
    shown = text_of(service.get(f"/console/members/{number}"))
    assert "is requested" in shown and "another person must approve it" in shown
    assert available(hub, member_id) == 120
    assert [action for _, action, _ in audit_actions(hub)][-3:] == [
        "goodwill.request", "goodwill.post", "goodwill.request"]
    corrected = service.post(f"/console/members/{number}/goodwill", {
        "direction": "debit", "points": "20", "reason": "double credit", "complaint": "", "reference": "T-12",
        "funded_by": "hub"})
    assert corrected.status_code == 303 and available(hub, member_id) == 100
    page = text_of(service.get(f"/console/members/{number}"))
    assert "correction of 20 points is posted" in page
    # The member's history names each posting as goodwill, with its request, not as a purchase or a refund.
    assert re.search(r"goodwill credit \(request #\d+\) \S+ 120 points", page)
    assert re.search(r"correction \(goodwill request #\d+\) \S+ -20 points", page)


def test_the_member_page_form_refusals_change_nothing(app):
    hub = hub_state(app)
    _, number, _, complaint_id = setup_member(hub)
    other = make_member(hub, now=ONBOARDED_AT)
    service = signed_in(app, "cass", "customer_service")
    url = f"/console/members/{number}/goodwill"
    form = {"direction": "credit", "points": "10", "reason": "sorry", "complaint": str(complaint_id)}
    before = books(hub)
    assert service.post(url, {**form, "points": "ten"}).status_code == 400
    assert service.post(url, {**form, "direction": "gift"}).status_code == 400
    assert service.post(url, {**form, "complaint": "first"}).status_code == 400
    assert service.post(url, form, csrf=None).status_code == 400
    assert service.post(url, {**form, "direction": "debit"}).status_code == 303
    assert "available points" in text_of(service.get(f"/console/members/{number}"))
    service.post(f"/console/members/{other.member_number}/goodwill", form)
    assert "not a complaint of member" in text_of(service.get(f"/console/members/{other.member_number}"))
    assert service.post(url, {**form, "complaint": ""}).status_code == 303
    assert "names the member's complaint" in text_of(service.get(f"/console/members/{number}"))
    finance = signed_in(app, "fin", "finance")
    assert finance.post(url, form).status_code == 403
    anonymous = ConsoleClient(app).client.post(url, data=form)
    assert anonymous.status_code in (302, 303, 400)
    assert_books_unchanged(hub, before)
    with hub.unit_of_work() as uow:
        assert uow.session.scalar(select(func.count()).select_from(GoodwillRequest)) == 0


def test_the_approvals_page_lists_sorts_and_checks_roles(app):
    hub = hub_state(app)
    _, number, _, complaint_id = setup_member(hub)
    admin = signed_in(app, "petra", "admin")
    empty = admin.get("/console/goodwill")
    assert empty.status_code == 200 and "No goodwill credit or correction waits for approval." in text_of(empty)
    assert "Goodwill approvals" in text_of(admin.get("/console/"))
    for points, hour in ((3_000, 9), (1_200, 10), (2_000, 11)):
        request(hub, number, complaint_id=complaint_id, points=points, now=datetime.now(UTC) - timedelta(hours=hour))
    page = admin.get("/console/goodwill")
    html = page.get_data(as_text=True)
    assert '<th scope="row" data-label="Request">' in html and 'data-label="Points"' in html
    assert "<caption>Goodwill requests pending (3)" in html
    shown = text_of(page)
    # Pending requests are listed oldest first: the one asked 11 hours ago leads.
    assert shown.index("2,000 points") < shown.index("1,200 points") < shown.index("3,000 points")
    by_points = text_of(admin.get("/console/goodwill", sort="points", order="desc"))
    assert by_points.index("3,000 points") < by_points.index("2,000 points") < by_points.index("1,200 points")
    by_points = text_of(admin.get("/console/goodwill", sort="points", order="asc"))
    assert by_points.index("1,200 points") < by_points.index("2,000 points")
    assert html.count("Approve and post") == 3
    rejected_id = goodwill_ids(hub, "pending")[0]
    before = books(hub)
    assert admin.post(f"/console/goodwill/{rejected_id}/decision", {"decision": "reject"}).status_code == 303
    assert f"Goodwill request #{rejected_id} is rejected" in text_of(admin.get("/console/goodwill"))
    assert_books_unchanged(hub, before)
    assert "rejected by Petra" in text_of(admin.get("/console/goodwill", status="rejected"))
    assert admin.post(f"/console/goodwill/{rejected_id}/decision", {"decision": "maybe"}).status_code == 400
    assert admin.get("/console/goodwill", status="lost").status_code == 400
    assert signed_in(app, "fin", "finance").get("/console/goodwill").status_code == 403
    assert signed_in(app, "pm", "partner_manager").post(
        f"/console/goodwill/{rejected_id}/decision", {"decision": "approve"}).status_code == 403
    anonymous = ConsoleClient(app).get("/console/goodwill")
    assert anonymous.status_code in (302, 303) and "/console/login" in anonymous.headers["Location"]
    with hub.unit_of_work() as uow:
        entry = uow.session.scalars(select(AuditLogEntry).where(AuditLogEntry.action == "goodwill.reject")).one()
    assert (entry.actor, entry.subject) == ("console:petra", f"goodwill:{rejected_id}")
