"""Goodwill credits and corrections by customer service: funded by the hub or charged to a partner (which pays
its issue price on its next statement), corrections that take lots back to their issuers, four eyes above the
configured threshold, and the back-office API, the CLI and the console pages over them."""

from __future__ import annotations

import json
from datetime import datetime, time, timedelta, timezone
from decimal import Decimal

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import func, select

from alliance.config import Settings
from alliance.domain.errors import ConfigurationError, InsufficientPoints, NotFound, ValidationFailed
from alliance.extensions import HubState
from alliance.models import AuditLogEntry, GoodwillRequest, JournalTransaction, LedgerAccount, PointLot
from alliance.services import complaints, goodwill, ledger
from alliance.services.goodwill import AlreadyDecided, GoodwillPolicy, SameRequester
from settlement.closing import close_cycle
from settlement.cycles import cycle_containing
from settlement.keys import load_statement_private_key, private_key_pem, statement_key_id
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
        "earn", None, None, f"goodwill:{made.request_id}")
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
    issued = [line for line in statement["lines"] if line["line_kind"] == "points_issued"]
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
        ("clawback", partners["alpha"], ISSUE_PRICE), ("clawback", None, None)]
    assert remaining == {partners["alpha"]: 0, None: 50}
    # Alpha issued 300 (3.75 EUR) and is credited 300 back at the same price: it owes nothing for the day.
    statement = close_day(hub, partners["alpha"], "alpha")
    kinds = {line["line_kind"]: line for line in statement["lines"] if line.get("points")}
    assert kinds["issuance_reversed"]["points"] == 300 and kinds["issuance_reversed"]["amount_minor"] == -375
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
