"""The complaints queue: the opener as a person, the member and the purchase or redemption linked, sorting,
filters, the table's markup, and who may move a complaint (with a CSRF token)."""

from __future__ import annotations

import re
from datetime import datetime, timezone

import pytest
from sqlalchemy import select, update

from alliance.extensions import HubState, hub_state
from alliance.models import Complaint, Member, Purchase, RedemptionHold
from alliance.services import complaints
from tests.back_office_support import BackOffice
from tests.console_support import ConsoleClient, add_staff, audit_actions, build_alliance, signed_in, text_of

QUEUE = "/console/complaints"


def linked_complaints(app) -> dict[str, object]:  # type: ignore[no-untyped-def]
    """Two complaints of the alliance's busy member: one about a purchase filed in the console by Cass Service,
    one about a redemption filed through a back-office client of Dana Desk."""
    hub = hub_state(app)
    client = BackOffice(app).register_client("customer_service", "partner_manager", name="Dana Desk")
    now = datetime.now(timezone.utc)
    with hub.unit_of_work() as uow:
        session = uow.session
        member_id, receipt, purchase_id = session.execute(
            select(Purchase.member_id, Purchase.receipt_id, Purchase.id).where(Purchase.amount_minor == 7_500)).one()
        number = session.scalar(select(Member.member_number).where(Member.id == member_id))
        hold_id = session.scalar(select(RedemptionHold.id).order_by(RedemptionHold.id))
        session.execute(update(RedemptionHold).where(RedemptionHold.id == hold_id).values(reference="RDM-0001"))
        about_purchase = complaints.file_for_member(
            session, member_number=number, partner_code=None, category="wrong_points", description="3 points, not 30",
            purchase_id=purchase_id, redemption_reference=None, now=now, actor="console:cass")
        about_redemption = complaints.file_complaint(
            session, partner_code="fuel", category="redemption_error", description="charged twice",
            member_number=number, receipt_id=None, redemption_reference="RDM-0001", now=now,
            actor=f"client:{client.client_id}")
        uow.commit()
    return {"member": number, "receipt": receipt, "purchase": about_purchase.id, "redemption": about_redemption.id}


def row_text(response, complaint_id: int) -> str:  # type: ignore[no-untyped-def]
    body = response.get_data(as_text=True)
    found = re.search(rf'<tr id="complaint-{complaint_id}">(.*?)</tr>', body, re.S)
    assert found, f"no row for complaint {complaint_id}"
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", found.group(1))).strip()


def ids_in_order(response) -> list[int]:  # type: ignore[no-untyped-def]
    return [int(value) for value in re.findall(r'<tr id="complaint-(\d+)">', response.get_data(as_text=True))]


@pytest.fixture
def cass(app) -> ConsoleClient:  # type: ignore[no-untyped-def]
    """Cass Service, customer service, on a hub with three months of activity."""
    hub = hub_state(app)
    build_alliance(hub)
    add_staff(hub, "cass", "customer_service", display_name="Cass Service")
    browser = ConsoleClient(app)
    assert browser.login("cass").status_code == 303
    return browser


def test_the_opener_is_a_person_and_the_member_and_purchase_are_linked(app, cass):
    made = linked_complaints(app)
    page = cass.get(QUEUE)
    purchase_row = row_text(page, made["purchase"])
    assert "by Cass Service (customer service)" in purchase_row and "console:cass" not in purchase_row
    assert f"purchase {made['receipt']} at aurora" in purchase_row and "75.00 EUR" in purchase_row
    redemption_row = row_text(page, made["redemption"])
    assert "Dana Desk (partner manager, customer service, through the back-office API)" in redemption_row
    assert "client:" not in redemption_row
    assert "redemption RDM-0001 at fuel" in redemption_row and "50 points" in redemption_row
    body = page.get_data(as_text=True)
    assert body.count(f'href="/console/members/{made["member"]}"') == 2
    # The alliance's own complaints name no member, and their opener is a client that is not on record.
    shown = text_of(page)
    assert "not named" in shown and "back-office client service-desk (not on record)" in shown
    assert "None" not in shown
    # The member page links back to the member's complaints in the queue.
    mine = cass.get(QUEUE, member=made["member"])
    assert ids_in_order(mine) == sorted([made["purchase"], made["redemption"]], reverse=True)
    assert f"of member {made['member']}" in text_of(mine)
    assert "No complaint matches these filters" in text_of(cass.get(QUEUE, member="nobody"))


def test_partner_managers_see_the_member_without_a_link_to_the_member_page(app, cass):
    made = linked_complaints(app)
    manager = signed_in(app, "paco", "partner_manager")
    page = manager.get(QUEUE)
    assert page.status_code == 200
    body = page.get_data(as_text=True)
    assert made["member"] in body and "/console/members/" not in body
    assert manager.get(f"/console/members/{made['member']}").status_code == 403


def test_the_queue_table_has_a_caption_scopes_and_labelled_cells(app, cass):
    linked_complaints(app)
    body = cass.get(QUEUE).get_data(as_text=True)
    assert body.count("<caption>") == body.count("<table") == 1
    assert "<th>" not in body and re.search(r"<td(?![^>]*data-label)", body) is None
    assert len(re.findall(r'<th scope="col"', body)) == 9
    assert '<th scope="row" data-label="Complaint">' in body
    assert 'aria-sort="descending"' in body  # newest first


def test_the_queue_sorts_by_opened_status_and_partner(app, cass):
    hub = hub_state(app)
    made = linked_complaints(app)
    with hub.unit_of_work() as uow:
        rows = uow.session.execute(select(Complaint.id, Complaint.opened_at)).all()
    cass.post(f"{QUEUE}/{made['purchase']}/transitions", {"status": "investigating"})
    oldest_first = ids_in_order(cass.get(QUEUE, sort="opened", order="asc"))
    assert oldest_first == [complaint_id for complaint_id, _ in sorted(rows, key=lambda row: (row[1], row[0]))]
    assert ids_in_order(cass.get(QUEUE))[-1] == oldest_first[0]
    # The lifecycle's order: open, then investigating (then resolved and rejected).
    assert ids_in_order(cass.get(QUEUE, sort="status"))[-1] == made["purchase"]
    assert ids_in_order(cass.get(QUEUE, sort="status", order="desc"))[0] == made["purchase"]
    by_partner = cass.get(QUEUE, sort="partner", order="desc")
    assert ids_in_order(by_partner)[0] == made["redemption"]  # fuel before aurora
    assert 'aria-sort="descending"' in by_partner.get_data(as_text=True)
    assert ids_in_order(cass.get(QUEUE, sort="partner"))[-1] == made["redemption"]
    assert cass.get(QUEUE, sort="description").status_code == 400


def test_moving_a_complaint_needs_the_role_and_the_forms_token(app, cass):
    hub: HubState = hub_state(app)
    made = linked_complaints(app)
    finance = signed_in(app, "fiona", "finance")
    path = f"{QUEUE}/{made['purchase']}/transitions"
    before = audit_actions(hub)
    assert cass.post(path, {"status": "investigating"}, csrf=None).status_code == 400
    assert finance.post(path, {"status": "investigating"}).status_code == 403
    assert finance.get(QUEUE).status_code == 403
    assert ConsoleClient(app).get(QUEUE).headers["Location"].startswith("/console/login")
    assert cass.post(path, {"status": "reopened"}).status_code == 400
    with hub.unit_of_work() as uow:
        assert uow.session.scalar(select(Complaint.status).where(Complaint.id == made["purchase"])) == "open"
    assert audit_actions(hub) == before
    moved = cass.post(path, {"status": "investigating"})
    assert moved.status_code == 303
    assert f"Complaint {made['purchase']} is now investigating" in text_of(cass.get(QUEUE))
    assert audit_actions(hub)[-1] == ("console:cass", "complaint.transition", f"complaint:{made['purchase']}")


def test_an_empty_queue_says_where_complaints_come_from(app):
    browser = signed_in(app, "cass", "customer_service")
    shown = text_of(browser.get(QUEUE))
    assert "No complaints yet" in shown and "find a member" in shown
    manager = signed_in(app, "paco", "partner_manager")
    assert "find a member" not in text_of(manager.get(QUEUE))
