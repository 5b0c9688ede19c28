"""Partner lifecycle on the partner API, and idempotency keys that never reached anything."""

from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import update

from alliance.models import Partner
from alliance.services import jobs
from tests.factories import make_member_with_pin, make_signing_partner
from tests.http_server import fund_member, purchase_payload, wall_clock_partner_time
from tests.partner_client import SignedTestClient

PIN = "2468"


def set_status(hub, partner_id: int, status: str) -> None:  # type: ignore[no-untyped-def]
    with hub.unit_of_work() as uow:
        uow.session.execute(update(Partner).where(Partner.id == partner_id).values(status=status))
        uow.commit()


def test_a_suspended_partner_may_void_but_not_capture_and_a_terminated_one_is_shut_out(app, hub):
    shop = make_signing_partner(hub, now=wall_clock_partner_time())
    member = make_member_with_pin(hub, now=wall_clock_partner_time(), pin=PIN)
    fund_member(hub, member_id=member.member_id, partner_id=shop.partner_id, points=300)
    client = SignedTestClient(app, shop)
    for reference in ("hold-1", "hold-2"):
        held = client.post("/partner/v1/redemptions", {"reference": reference, "points": 100,
                                                       "card_number": member.card_number, "pin": PIN})
        assert held.status == 201, held.body
    set_status(hub, shop.partner_id, "suspended")
    capture = client.post("/partner/v1/redemptions/hold-1/capture", {"points": 100})
    assert (capture.status, capture.body["code"]) == (409, "invalid_state")
    assert client.post("/partner/v1/redemptions/hold-1/void", {}).status == 200
    set_status(hub, shop.partner_id, "terminated")
    refused = client.post("/partner/v1/redemptions/hold-2/void", {})
    assert (refused.status, refused.body["code"]) == (401, "partner_inactive")
    assert client.get("/partner/v1/redemptions/hold-2").body["code"] == "partner_inactive"


def test_a_refund_of_a_receipt_not_yet_reported_does_not_spend_its_key(app, hub):
    shop = make_signing_partner(hub, now=wall_clock_partner_time())
    member = make_member_with_pin(hub, now=wall_clock_partner_time(), pin=PIN)
    client = SignedTestClient(app, shop)
    refund = {"refund_id": "rf-1", "amount_minor": 1_000}
    early = client.post("/partner/v1/purchases/r-1/refunds", refund, idempotency_key="refund-key")
    assert (early.status, early.body["code"]) == (404, "not_found")
    assert client.post("/partner/v1/purchases", purchase_payload("r-1", member.card_number)).status == 201
    retried = client.post("/partner/v1/purchases/r-1/refunds", refund, idempotency_key="refund-key")
    assert retried.status == 201, retried.body
    assert retried.headers["Idempotent-Replayed"] == "false"
    again = client.post("/partner/v1/purchases/r-1/refunds", refund, idempotency_key="refund-key")
    assert (again.status, again.headers["Idempotent-Replayed"]) == (201, "true")


def test_a_pretended_future_cannot_take_a_live_lease(hub):
    real_now = datetime.now(timezone.utc)
    job = {job.name: job for job in jobs.standard_jobs("EUR")}["expire-points"]
    with hub.unit_of_work() as uow:
        assert jobs.acquire_lease(uow.session, job_name=job.name, holder="scheduler", now=real_now)
        uow.commit()
    far_future = datetime(2099, 1, 1, tzinfo=timezone.utc)
    assert jobs.run_exclusively(hub.session_factory, job, holder="operator", now=far_future) is None
