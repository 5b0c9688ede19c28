"""Complaints against partners: filed by customer service (tied to a member and a purchase
or redemption), moved open → investigating → resolved or rejected, listed a page at a time."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select

from alliance.models import Complaint, Purchase, RedemptionHold
from tests.back_office_support import BackOffice
from tests.factories import make_signing_partner
from tests.http_server import purchase_payload, wall_clock_partner_time
from tests.partner_client import SignedTestClient

PIN = "2468"


def _world(app):  # type: ignore[no-untyped-def]
    bo = BackOffice(app)
    created = wall_clock_partner_time()
    shop = make_signing_partner(bo.hub, now=created, code="shop")
    other = make_signing_partner(bo.hub, now=created, code="other")
    member_number, card = bo.enrol(name="Complainer")
    bo.set_pin(card, PIN)
    till = SignedTestClient(app, shop)
    assert till.post("/partner/v1/purchases", purchase_payload("r-1", card, 8_000)).status == 201
    assert till.post("/partner/v1/redemptions", {"reference": "h-1", "points": 20, "card_number": card,
                                                 "pin": PIN}).status == 201
    assert SignedTestClient(app, other).post("/partner/v1/purchases",
                                             purchase_payload("o-1", card, 1_000)).status == 201
    return bo, member_number


def _file(bo: BackOffice, **fields: object):  # type: ignore[no-untyped-def]
    body = {"partner": "shop", "category": "points_missing", "description": "no points on my receipt", **fields}
    return bo.post("/complaints", body, role="customer_service")


def _move(bo: BackOffice, complaint_id: int, status: str, note: str | None = None, *, role: str = "partner_manager"):  # type: ignore[no-untyped-def]
    body = {"status": status} if note is None else {"status": status, "note": note}
    return bo.post(f"/complaints/{complaint_id}/transitions", body, role=role)


def test_a_complaint_tied_to_a_purchase_goes_open_investigating_resolved_with_a_note(app):
    bo, member_number = _world(app)
    filed = _file(bo, member=member_number, receipt_id="r-1", description="  points missing on r-1  ")
    assert filed.status == 201, filed.body
    complaint = filed.body
    assert {key: complaint[key] for key in ("partner", "category", "description", "status", "opened_by",
                                            "investigating_at", "closed_at", "resolution_note")} == {
        "partner": "shop", "category": "points_missing", "description": "points missing on r-1", "status": "open",
        "opened_by": bo.actor("customer_service"), "investigating_at": None, "closed_at": None,
        "resolution_note": None}
    with bo.hub.unit_of_work() as uow:
        row = uow.session.get(Complaint, complaint["id"])
        purchase_id = uow.session.scalar(select(Purchase.id).where(Purchase.receipt_id == "r-1"))
        assert (row.purchase_id, row.hold_id, row.member_id is not None) == (purchase_id, None, True)

    early_close = _move(bo, complaint["id"], "resolved", "done")
    assert (early_close.status, early_close.code) == (409, "invalid_state")
    investigating = _move(bo, complaint["id"], "investigating")
    assert investigating.status == 200, investigating.body
    assert investigating.body["status"] == "investigating" and investigating.body["investigating_at"]
    for note in (None, "   "):
        unexplained = _move(bo, complaint["id"], "resolved", note)
        assert (unexplained.status, unexplained.code) == (422, "validation_failed"), note
    resolved = _move(bo, complaint["id"], "resolved", "  points credited by hand  ", role="customer_service")
    assert resolved.status == 200, resolved.body
    assert resolved.body["status"] == "resolved"
    assert resolved.body["resolution_note"] == "points credited by hand"
    closed_at = datetime.fromisoformat(resolved.body["closed_at"])
    assert closed_at >= datetime.fromisoformat(resolved.body["investigating_at"])

    for status in ("investigating", "rejected", "resolved"):
        reopened = _move(bo, complaint["id"], status, "again")
        assert (reopened.status, reopened.code) == (409, "invalid_state"), status
    bad_status = _move(bo, complaint["id"], "open")
    assert (bad_status.status, bad_status.code) == (422, "validation_failed")
    missing = _move(bo, 999_999, "investigating")
    assert (missing.status, missing.code) == (404, "not_found")
    with bo.hub.unit_of_work() as uow:
        assert uow.session.get(Complaint, complaint["id"]).status == "resolved"


def test_a_complaint_about_a_redemption_can_be_rejected(app):
    bo, member_number = _world(app)
    filed = _file(bo, category="redemption_refused", member=member_number, redemption_reference="h-1",
                  description="the till refused my points")
    assert filed.status == 201, filed.body
    with bo.hub.unit_of_work() as uow:
        hold_id = uow.session.scalar(select(RedemptionHold.id).where(RedemptionHold.reference == "h-1"))
        assert uow.session.get(Complaint, filed.body["id"]).hold_id == hold_id
    assert _move(bo, filed.body["id"], "investigating", role="customer_service").status == 200
    rejected = _move(bo, filed.body["id"], "rejected", "the redemption went through")
    assert (rejected.status, rejected.body["status"]) == (200, "rejected")


def test_filing_refuses_unknown_or_foreign_references_and_bad_input(app):
    bo, member_number = _world(app)
    for fields, status, code in (
        ({"receipt_id": "o-1"}, 404, "not_found"),  # the other partner's receipt
        ({"receipt_id": "nope"}, 404, "not_found"),
        ({"redemption_reference": "nope"}, 404, "not_found"),
        ({"member": "0000000000000000"}, 404, "not_found"),
        ({"partner": "ghost"}, 404, "not_found"),
        ({"category": "vibes"}, 422, "validation_failed"),
        ({"description": ""}, 422, "validation_failed"),
        ({"description": "   "}, 422, "validation_failed"),
        ({"description": "x" * 4001}, 422, "validation_failed"),
        ({"member": "not-a-number"}, 422, "validation_failed"),
        ({"status": "resolved"}, 422, "validation_failed"),
    ):
        reply = _file(bo, **fields)
        assert (reply.status, reply.code) == (status, code), fields
    with bo.hub.unit_of_work() as uow:
        assert uow.session.scalars(select(Complaint)).all() == []
    assert _file(bo, member=member_number, description="x" * 4000).status == 201


def test_complaints_list_newest_first_filtered_by_status_and_partner_a_page_at_a_time(app):
    bo, _ = _world(app)
    ids = {}
    for index, (partner, status) in enumerate([("shop", "open"), ("other", "open"), ("shop", "investigating"),
                                               ("shop", "open"), ("shop", "resolved"), ("other", "investigating"),
                                               ("shop", "open")]):
        filed = _file(bo, partner=partner, description=f"complaint {index}")
        assert filed.status == 201
        if status in ("investigating", "resolved"):
            assert _move(bo, filed.body["id"], "investigating").status == 200
        if status == "resolved":
            assert _move(bo, filed.body["id"], "resolved", "sorted").status == 200
        ids[index] = filed.body["id"]

    def listed(role: str = "customer_service", **query: object):  # type: ignore[no-untyped-def]
        reply = bo.get("/complaints", role=role, query=query)
        assert reply.status == 200, reply.body
        return reply.body

    everything = listed(page_size=200)
    assert everything["total"] == 7
    assert [item["description"] for item in everything["complaints"]] == [f"complaint {i}" for i in range(6, -1, -1)]

    shop_open = listed(status="open", partner="shop")
    assert shop_open["total"] == 3
    assert [item["id"] for item in shop_open["complaints"]] == [ids[6], ids[3], ids[0]]
    assert {(item["partner"], item["status"]) for item in shop_open["complaints"]} == {("shop", "open")}
    assert listed(role="partner_manager", status="investigating")["total"] == 2

    pages = [listed(page=page, page_size=3) for page in (1, 2, 3, 4)]
    assert [page["total"] for page in pages] == [7] * 4
    assert [(page["page"], page["page_size"]) for page in pages] == [(1, 3), (2, 3), (3, 3), (4, 3)]
    assert [len(page["complaints"]) for page in pages] == [3, 3, 1, 0]
    paged_ids = [item["id"] for page in pages for item in page["complaints"]]
    assert paged_ids == [item["id"] for item in everything["complaints"]]

    for query, status, code in (({"partner": "ghost"}, 404, "not_found"),
                                ({"status": "closed"}, 422, "validation_failed"),
                                ({"page": 0}, 422, "validation_failed"),
                                ({"page_size": 201}, 422, "validation_failed")):
        reply = bo.get("/complaints", role="customer_service", query=query)
        assert (reply.status, reply.code) == (status, code), query
