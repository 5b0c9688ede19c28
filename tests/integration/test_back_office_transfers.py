"""Member-to-member transfers through the back office: lots travel with their issuer and
expiry, and the per-transfer, daily and membership-age limits hold, leaving the books
untouched whenever a transfer is refused."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import func, select

from alliance.models import JournalTransaction, Member, MemberTransfer, PointLot
from alliance.services import ledger, member_admin
from alliance.services.audit import run_audit
from tests.back_office_support import BackOffice, audit_entries, other_hub
from tests.factories import make_member, make_signing_partner
from tests.http_server import assert_audit_green, balances, books, wall_clock_partner_time

LONG_AGO = timedelta(days=90)


def _member(hub, *, enrolled: timedelta = LONG_AGO):  # type: ignore[no-untyped-def]
    """A member enrolled ``enrolled`` ago: (member id, member number)."""
    enrolment = make_member(hub, now=datetime.now(timezone.utc) - enrolled)
    return enrolment.member_id, enrolment.member_number


def _earn(hub, member_id: int, partner_id: int, points: int, *, expires_in: timedelta) -> int:  # type: ignore[no-untyped-def]
    now = datetime.now(timezone.utc)
    with hub.unit_of_work() as uow:
        lot_id = ledger.earn(uow.session, member_id=member_id, partner_id=partner_id, points=points, now=now,
                             expires_at=now + expires_in).lot_id
        uow.commit()
    return lot_id


def _transfer(bo: BackOffice, sender: str, receiver: str, points: int):  # type: ignore[no-untyped-def]
    return bo.post("/transfers", {"from_member": sender, "to_member": receiver, "points": points},
                   role="customer_service")


def _transfer_count(hub) -> int:  # type: ignore[no-untyped-def]
    with hub.unit_of_work() as uow:
        return uow.session.scalar(select(func.count()).select_from(MemberTransfer)) or 0


@pytest.fixture
def setting(app):  # type: ignore[no-untyped-def]
    bo = BackOffice(app)
    created = wall_clock_partner_time()
    shop = make_signing_partner(bo.hub, now=created, code="shop")
    issuer = make_signing_partner(bo.hub, now=created, code="issuer")
    return bo, shop, issuer


def test_a_transfer_within_limits_moves_lots_keeping_issuer_and_expiry(setting):
    bo, shop, issuer = setting
    hub = bo.hub
    sender_id, sender = _member(hub)
    receiver_id, receiver = _member(hub)
    soon_lot = _earn(hub, sender_id, shop.partner_id, 300, expires_in=timedelta(days=100))
    late_lot = _earn(hub, sender_id, issuer.partner_id, 500, expires_in=timedelta(days=200))

    reply = _transfer(bo, sender, receiver, 400)
    assert reply.status == 201, reply.body
    assert {key: reply.body[key] for key in ("from_member", "to_member", "points")} == {
        "from_member": sender, "to_member": receiver, "points": 400}
    assert balances(hub, sender_id) == {"available": 400, "pending": 0, "held": 0}
    assert balances(hub, receiver_id) == {"available": 400, "pending": 0, "held": 0}

    with hub.unit_of_work() as uow:
        source = {lot.id: lot for lot in uow.session.scalars(select(PointLot).where(PointLot.member_id == sender_id))}
        received = uow.session.scalars(select(PointLot).where(PointLot.member_id == receiver_id)
                                       .order_by(PointLot.id)).all()
        kinds = uow.session.execute(select(JournalTransaction.kind, JournalTransaction.transfer_id)
                                    .where(JournalTransaction.transfer_id.is_not(None))).all()
    assert [(lot.origin_lot_id, lot.points_earned, lot.state) for lot in received] == [
        (soon_lot, 300, "active"), (late_lot, 100, "active")]
    for lot in received:
        assert lot.partner_id == source[lot.origin_lot_id].partner_id
        assert lot.expires_at == source[lot.origin_lot_id].expires_at
    assert source[soon_lot].points_remaining == 0 and source[late_lot].points_remaining == 400
    assert kinds == [("transfer", reply.body["transfer_id"])] * 2
    entry = audit_entries(hub)[-1]
    assert (entry.action, entry.subject) == ("member.transfer", f"member:{sender}")
    assert entry.after == {"to": receiver, "points": 400, "transfer_id": reply.body["transfer_id"]}
    assert entry.actor == bo.actor("customer_service")

    # The receiver can pass the points on; their lots still name the first issuer.
    onward_id, onward = _member(hub)
    assert _transfer(bo, receiver, onward, 350).status == 201
    with hub.unit_of_work() as uow:
        onward_lots = uow.session.execute(select(PointLot.partner_id, PointLot.points_earned)
                                          .where(PointLot.member_id == onward_id).order_by(PointLot.id)).all()
        report = run_audit(uow.session)
    assert onward_lots == [(shop.partner_id, 300), (issuer.partner_id, 50)]
    assert report.ok, report.first_failure


def test_transfers_over_the_limits_or_the_balance_are_refused_and_leave_the_books_alone(setting):
    bo, shop, _ = setting
    hub = bo.hub
    sender_id, sender = _member(hub)
    _, receiver = _member(hub)
    _, newcomer = _member(hub, enrolled=timedelta(days=10))
    _earn(hub, sender_id, shop.partner_id, 20_000, expires_in=timedelta(days=300))
    settings = hub.settings
    assert (settings.transfer_max_points, settings.transfer_daily_max_points,
            settings.transfer_min_membership_days) == (5_000, 10_000, 30)

    # A transfer 25 hours ago no longer counts towards today's limit.
    with hub.unit_of_work() as uow:
        member_admin.transfer_points(
            uow.session, from_member_number=sender, to_member_number=receiver, points=5_000,
            limits=member_admin.TransferLimits(5_000, 10_000, 30), now=datetime.now(timezone.utc) - timedelta(hours=25),
            actor="test")
        uow.commit()

    def refused(reply, status: int, code: str) -> None:  # type: ignore[no-untyped-def]
        assert (reply.status, reply.code) == (status, code), reply.body

    before, transfers_before = books(hub), _transfer_count(hub)
    refused(_transfer(bo, sender, receiver, 5_001), 422, "validation_failed")
    refused(_transfer(bo, newcomer, receiver, 1), 409, "invalid_state")
    refused(_transfer(bo, receiver, sender, 5_001), 422, "validation_failed")
    refused(_transfer(bo, sender, "0000000000000000", 10), 404, "not_found")
    refused(bo.post("/transfers", {"from_member": sender, "to_member": receiver, "points": 0},
                    role="customer_service"), 422, "validation_failed")
    assert books(hub) == before and _transfer_count(hub) == transfers_before

    assert _transfer(bo, sender, receiver, 5_000).status == 201
    assert _transfer(bo, sender, receiver, 5_000).status == 201
    after_two, transfers_after_two = books(hub), _transfer_count(hub)
    over_daily = _transfer(bo, sender, receiver, 1)
    refused(over_daily, 422, "validation_failed")
    assert "daily" in str(over_daily.body["errors"])
    assert books(hub) == after_two and _transfer_count(hub) == transfers_after_two
    assert balances(hub, sender_id)["available"] == 5_000

    # More than the member has: refused before any lot is touched.
    poor_id, poor = _member(hub)
    _earn(hub, poor_id, shop.partner_id, 30, expires_in=timedelta(days=300))
    funded = books(hub)
    refused(_transfer(bo, poor, receiver, 31), 422, "insufficient_points")
    assert books(hub) == funded
    assert_audit_green(hub)


def test_a_transfer_to_a_closed_membership_is_refused(setting):
    bo, shop, _ = setting
    hub = bo.hub
    sender_id, sender = _member(hub)
    _, receiver = _member(hub)
    _earn(hub, sender_id, shop.partner_id, 100, expires_in=timedelta(days=300))
    assert bo.post(f"/members/{receiver}/erasure", role="customer_service").status == 204
    before = books(hub)
    to_closed = _transfer(bo, sender, receiver, 10)
    from_closed = _transfer(bo, receiver, sender, 10)
    assert (to_closed.status, to_closed.code) == (409, "invalid_state")
    assert (from_closed.status, from_closed.code) == (409, "invalid_state")
    assert books(hub) == before


def test_a_transfer_to_oneself_is_refused_as_invalid(setting):
    bo, shop, _ = setting
    hub = bo.hub
    member_id, member = _member(hub)
    _earn(hub, member_id, shop.partner_id, 100, expires_in=timedelta(days=300))
    before = books(hub)
    reply = _transfer(bo, member, member, 10)
    assert books(hub) == before
    assert (reply.status, reply.code) == (422, "validation_failed")


def test_transfer_limits_come_from_the_hubs_settings(setting, tmp_path):
    bo, shop, _ = setting
    sender_id, sender = _member(bo.hub, enrolled=timedelta(hours=1))
    _, receiver = _member(bo.hub)
    _earn(bo.hub, sender_id, shop.partner_id, 1_000, expires_in=timedelta(days=300))
    assert _transfer(bo, sender, receiver, 10).code == "invalid_state"
    with other_hub(bo.hub, tmp_path / "strict", transfer_max_points=100, transfer_daily_max_points=150,
                   transfer_min_membership_days=0) as strict_app:
        strict = BackOffice(strict_app)
        assert _transfer(strict, sender, receiver, 100).status == 201
        assert _transfer(strict, sender, receiver, 101).code == "validation_failed"
        assert _transfer(strict, sender, receiver, 50).status == 201
        assert _transfer(strict, sender, receiver, 1).code == "validation_failed"
    with bo.hub.unit_of_work() as uow:
        assert uow.session.scalar(select(Member.status).where(Member.id == sender_id)) == "active"
    assert balances(bo.hub, sender_id)["available"] == 850
    assert_audit_green(bo.hub)
