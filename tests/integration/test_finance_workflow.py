"""The finance workflow: adjustments approved by a second client, invoices, payments and overdue statements."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from alliance.domain.errors import InvalidState
from alliance.extensions import hub_state
from settlement import closing as settlement_closing
from settlement import finance
from settlement.cycles import Cycle, Frequency
from tests.back_office_support import BackOffice, audit_count, audit_entries
from tests.factories import make_signing_partner
from tests.http_server import wall_clock_partner_time

JAN = datetime(2026, 1, 1, tzinfo=timezone.utc)
A, B = "client:requester", "client:approver"


@pytest.fixture
def finance_app(app):  # type: ignore[no-untyped-def]
    """The hub, whose finance routes the app factory registers."""
    assert "back_office_finance" in app.blueprints
    return app


def _close(app, partner, starts_at: datetime, *, now: datetime | None = None):  # type: ignore[no-untyped-def]
    signer = hub_state(app).statement_signer
    cycle = Cycle(partner.code, Frequency.DAILY, starts_at, starts_at + timedelta(days=1))
    with hub_state(app).unit_of_work() as uow:
        closed = settlement_closing.close_cycle(
            uow.session, partner_id=partner.partner_id, cycle=cycle, now=now or cycle.ends_at + timedelta(hours=1),
            signing_key=signer.signing_key, key_id=signer.key_id, payment_terms_days=signer.payment_terms_days)
        uow.commit()
    return closed


def _adjust(hub, amount: int, reference: str, *, at: datetime, decision: str | None, decided_at: datetime):  # type: ignore[no-untyped-def]
    with hub.unit_of_work() as uow:
        view = finance.request_adjustment(uow.session, partner_code="shop", amount_minor=amount,
                                          reason="late correction", reference=reference, actor=A, now=at)
        if decision:
            view = finance.decide_adjustment(uow.session, adjustment_id=view.id, decision=decision, actor=B,
                                             now=decided_at)
        uow.commit()
    return view


def _adjustment_lines(closed) -> list[tuple[str, int]]:  # type: ignore[no-untyped-def]
    lines = json.loads(closed.document_json)["lines"]
    return sorted((line["reference"], int(line["amount_minor"])) for line in lines
                  if line["line_kind"] == "adjustment")


def test_only_approved_adjustments_land_in_the_next_cycle_closed_after_their_approval(app):
    hub = hub_state(app)
    shop = make_signing_partner(hub, now=wall_clock_partner_time(), code="shop")
    approved = _adjust(hub, 1250, "ADJ-1", at=JAN + timedelta(hours=10), decision="approve",
                       decided_at=JAN + timedelta(hours=12))
    _adjust(hub, -300, "ADJ-2", at=JAN + timedelta(hours=10), decision="reject", decided_at=JAN + timedelta(hours=12))
    _adjust(hub, 999, "ADJ-PENDING", at=JAN + timedelta(hours=10), decision=None, decided_at=JAN)
    # Approved after the first cycle's end (before it was closed): it belongs to the next one.
    late = _adjust(hub, -400, "ADJ-3", at=JAN + timedelta(hours=20), decision="approve",
                   decided_at=JAN + timedelta(days=1, minutes=30))

    first = _close(app, shop, JAN)
    assert first.net_minor == 1250 and first.closing_balance_minor == 1250
    assert _adjustment_lines(first) == [("ADJ-1", 1250)]
    # A re-run of the closed cycle returns the same bytes, even with other adjustments approved since.
    again = _close(app, shop, JAN, now=JAN + timedelta(days=5))
    assert not again.newly_closed
    assert (again.document_json, again.signature_json, again.document_csv) == \
        (first.document_json, first.signature_json, first.document_csv)

    second = _close(app, shop, JAN + timedelta(days=1))
    assert second.net_minor == -400 and second.closing_balance_minor == 850
    assert _adjustment_lines(second) == [("ADJ-3", -400)]
    third = _close(app, shop, JAN + timedelta(days=2))
    assert third.net_minor == 0 and _adjustment_lines(third) == []

    with hub.unit_of_work() as uow:
        views = {view.reference: view for view in finance.list_adjustments(uow.session, partner_code="shop")}
        assert views["ADJ-1"].applied_run_id == first.run_id != approved.applied_run_id
        assert views["ADJ-3"].applied_run_id == second.run_id and late.applied_run_id is None
        assert views["ADJ-2"].status == "rejected" and views["ADJ-2"].applied_run_id is None
        assert views["ADJ-PENDING"].status == "pending" and views["ADJ-PENDING"].applied_run_id is None
        # The requester can never decide its own adjustment, and a decision is final.
        with pytest.raises(finance.SameApprover):
            finance.decide_adjustment(uow.session, adjustment_id=views["ADJ-PENDING"].id, decision="approve",
                                      actor=A, now=JAN)
        with pytest.raises(finance.AlreadyDecided):
            finance.decide_adjustment(uow.session, adjustment_id=views["ADJ-2"].id, decision="approve",
                                      actor=B, now=JAN)
    # The application of an adjustment is append-only in the database (its trigger's refusal is an
    # IntegrityError on PostgreSQL and on SQLite alike).
    with hub.unit_of_work() as uow, pytest.raises(IntegrityError):
        uow.session.execute(text("DELETE FROM adjustment_applications"))
        uow.session.flush()


def test_finance_requests_an_adjustment_another_client_approves_it_and_the_net_moves_by_it(finance_app):
    bo = BackOffice(finance_app)
    shop = make_signing_partner(bo.hub, now=wall_clock_partner_time(), code="shop")
    second = bo.register_client("finance", name="second approver")
    second_token = bo.request_token(second.client_id, second.client_secret).body["access_token"]
    before = audit_count(bo.hub)

    requested = bo.post("/settlement/adjustments", {"partner": "shop", "amount_minor": 2500,
                                                    "reason": "missed campaign fee", "reference": "ADJ-API-1"},
                        role="finance")
    assert requested.status == 201, requested.body
    assert (requested.body["status"], requested.body["currency"]) == ("pending", "EUR")
    path = f"/settlement/adjustments/{requested.body['id']}/decision"
    same = bo.post(path, {"decision": "approve"}, role="finance")
    assert (same.status, same.code) == (409, "same_approver")
    duplicate = bo.post("/settlement/adjustments", {"partner": "shop", "amount_minor": 1, "reason": "again",
                                                    "reference": "ADJ-API-1"}, role="finance")
    assert (duplicate.status, duplicate.code) == (409, "duplicate_reference")
    zero = bo.post("/settlement/adjustments", {"partner": "shop", "amount_minor": 0, "reason": "none",
                                               "reference": "ADJ-ZERO"}, role="finance")
    assert zero.status == 422
    approved = bo.call("POST", path, token=second_token, json={"decision": "approve"})
    assert approved.status == 200, approved.body
    assert approved.body["status"] == "approved" and approved.body["decided_by"] == f"client:{second.client_id}"
    again = bo.call("POST", path, token=second_token, json={"decision": "reject"})
    assert (again.status, again.code) == (409, "already_decided")
    entries = audit_entries(bo.hub)[before:]
    assert [entry.action for entry in entries] == ["adjustment.request", "adjustment.approve"]
    assert entries[0].actor == bo.actor("finance") and "missed campaign fee" not in json.dumps(entries[0].after)

    today = datetime.now(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
    closed = _close(finance_app, shop, today)
    assert closed.net_minor == 2500
    listed = bo.get("/settlement/adjustments", role="finance", query={"partner": "shop", "status": "approved"})
    assert [item["applied_run_id"] for item in listed.body["adjustments"]] == [closed.run_id]


def test_invoiced_payments_and_overdue(finance_app):
    bo = BackOffice(finance_app)
    hub = bo.hub
    shop = make_signing_partner(hub, now=wall_clock_partner_time(), code="shop")
    _adjust(hub, 1000, "ADJ-OWED", at=JAN, decision="approve", decided_at=JAN + timedelta(hours=1))
    owed = _close(finance_app, shop, JAN)
    _adjust(hub, -700, "ADJ-CREDIT", at=JAN + timedelta(days=1), decision="approve",
            decided_at=JAN + timedelta(days=1, hours=1))
    credit = _close(finance_app, shop, JAN + timedelta(days=1))
    empty = _close(finance_app, shop, JAN + timedelta(days=2))
    sid = owed.statement_id
    payment = {"amount_minor": 400, "paid_on": "2026-01-20", "reference": "PAY-1"}

    early = bo.post(f"/settlement/statements/{sid}/payments", payment, role="finance")
    assert (early.status, early.code) == (409, "not_invoiced")
    invoiced = bo.post(f"/settlement/statements/{sid}/invoiced", {"reference": "INV-1"}, role="finance")
    assert invoiced.status == 201, invoiced.body
    assert invoiced.body["invoiced"] and invoiced.body["outstanding_minor"] == 1000
    twice = bo.post(f"/settlement/statements/{sid}/invoiced", {"reference": "INV-1b"}, role="finance")
    assert (twice.status, twice.code) == (409, "already_invoiced")
    missing = bo.post("/settlement/statements/999999/invoiced", {"reference": "INV-X"}, role="finance")
    assert (missing.status, missing.code) == (404, "not_found")
    due_date = invoiced.body["due_date"]

    def overdue(as_of: str) -> dict[int, int]:
        reply = bo.get("/settlement/overdue", role="finance", query={"as_of": as_of})
        assert reply.status == 200, reply.body
        return {item["statement_id"]: item["outstanding_minor"] for item in reply.body["statements"]}

    # Only the statement owed to the hub, only after its due date.
    assert overdue(due_date) == {}
    assert overdue("2026-03-01") == {sid: 1000}
    part = bo.post(f"/settlement/statements/{sid}/payments", payment, role="finance")
    assert part.status == 201 and (part.body["paid_minor"], part.body["paid"]) == (400, False)
    over = bo.post(f"/settlement/statements/{sid}/payments",
                   {"amount_minor": 601, "paid_on": "2026-02-20", "reference": "PAY-2"}, role="finance")
    assert (over.status, over.code) == (409, "overpayment")
    assert overdue("2026-03-01") == {sid: 600}
    rest = bo.post(f"/settlement/statements/{sid}/payments",
                   {"amount_minor": 600, "paid_on": "2026-02-20", "reference": "PAY-2"}, role="finance")
    assert rest.status == 201 and (rest.body["outstanding_minor"], rest.body["paid"]) == (0, True)
    assert overdue("2026-03-01") == {}
    # Paid late: overdue on a date before the last payment, not after.
    assert overdue("2026-02-19") == {sid: 600}
    full = bo.post(f"/settlement/statements/{sid}/payments",
                   {"amount_minor": 1, "paid_on": "2026-02-21", "reference": "PAY-3"}, role="finance")
    assert (full.status, full.code) == (409, "overpayment")

    # A credit statement is paid by the hub; a zero net takes no payment.
    assert bo.post(f"/settlement/statements/{credit.statement_id}/invoiced", {"reference": "INV-2"},
                   role="finance").status == 201
    paid_out = bo.post(f"/settlement/statements/{credit.statement_id}/payments",
                       {"amount_minor": 700, "paid_on": "2026-01-10", "reference": "PAYOUT-1"}, role="finance")
    assert paid_out.status == 201 and paid_out.body["paid"]
    assert bo.post(f"/settlement/statements/{empty.statement_id}/invoiced", {"reference": "INV-3"},
                   role="finance").status == 201
    nothing = bo.post(f"/settlement/statements/{empty.statement_id}/payments",
                      {"amount_minor": 1, "paid_on": "2026-01-10", "reference": "PAY-0"}, role="finance")
    assert (nothing.status, nothing.code) == (409, "nothing_owed")
    assert bo.get("/settlement/overdue", role="customer_service").status == 403
    actions = [entry.action for entry in audit_entries(hub)]
    assert actions.count("statement.invoiced") == 3 and actions.count("statement.paid") == 3
    with hub.unit_of_work() as uow, pytest.raises(IntegrityError):
        uow.session.execute(text("UPDATE statement_events SET amount_minor = 1"))
        uow.session.flush()


def test_disputes_on_statement_lines_resolve_with_an_approved_adjustment_or_are_rejected(finance_app):
    bo = BackOffice(finance_app)
    hub = bo.hub
    shop = make_signing_partner(hub, now=wall_clock_partner_time(), code="shop")
    _adjust(hub, 1000, "ADJ-OWED", at=JAN, decision="approve", decided_at=JAN + timedelta(hours=1))
    sid = _close(finance_app, shop, JAN).statement_id
    base = f"/settlement/statements/{sid}/lines"

    opened = bo.post(f"{base}/1/disputes", {"reason": "fee charged twice"}, role="finance")
    assert opened.status == 201, opened.body
    assert (opened.body["status"], opened.body["line_number"], opened.body["partner"]) == ("open", 1, "shop")
    assert bo.post(f"{base}/9/disputes", {"reason": "no such line"}, role="finance").code == "not_found"
    other = bo.post(f"{base}/1/disputes", {"reason": "another view"}, role="finance").body
    listed = bo.get("/settlement/disputes", role="finance", query={"status": "open", "partner": "shop"})
    assert [item["id"] for item in listed.body["disputes"]] == [opened.body["id"], other["id"]]

    pending = _adjust(hub, -1000, "ADJ-FIX-PENDING", at=JAN + timedelta(days=3), decision=None, decided_at=JAN)
    fix = _adjust(hub, -1000, "ADJ-FIX", at=JAN + timedelta(days=3), decision="approve",
                  decided_at=JAN + timedelta(days=3, hours=1))
    path = f"/settlement/disputes/{opened.body['id']}/resolution"
    assert bo.post(path, {"outcome": "adjusted"}, role="finance").status == 422
    unusable = bo.post(path, {"outcome": "adjusted", "adjustment_id": pending.id}, role="finance")
    assert (unusable.status, unusable.code) == (409, "adjustment_not_usable")
    resolved = bo.post(path, {"outcome": "adjusted", "adjustment_id": fix.id}, role="finance")
    assert resolved.status == 200, resolved.body
    assert (resolved.body["status"], resolved.body["adjustment_id"]) == ("adjusted", fix.id)
    again = bo.post(path, {"outcome": "rejected"}, role="finance")
    assert (again.status, again.code) == (409, "dispute_closed")
    reused = bo.post(f"/settlement/disputes/{other['id']}/resolution",
                     {"outcome": "adjusted", "adjustment_id": fix.id}, role="finance")
    assert (reused.status, reused.code) == (409, "adjustment_not_usable")
    rejected = bo.post(f"/settlement/disputes/{other['id']}/resolution", {"outcome": "rejected"}, role="finance")
    assert rejected.status == 200 and rejected.body["status"] == "rejected"
    actions = [entry.action for entry in audit_entries(hub)]
    assert actions.count("dispute.open") == 2 and "dispute.adjusted" in actions and "dispute.rejected" in actions
    assert all("fee charged twice" not in json.dumps(entry.after) for entry in audit_entries(hub))


def test_an_approval_dated_inside_a_closed_cycle_is_refused_so_it_cannot_land_elsewhere(app):
    hub = hub_state(app)
    shop = make_signing_partner(hub, now=wall_clock_partner_time(), code="shop")
    pending = _adjust(hub, 700, "ADJ-LAGGING", at=JAN + timedelta(hours=10), decision=None, decided_at=JAN)
    first = _close(app, shop, JAN)
    # A host whose clock lags the closing would date the approval inside the closed day.
    with hub.unit_of_work() as uow, pytest.raises(InvalidState, match="closed until"):
        finance.decide_adjustment(uow.session, adjustment_id=pending.id, decision="approve", actor=B,
                                  now=first.cycle_ends_at - timedelta(minutes=1))
    with hub.unit_of_work() as uow:
        assert finance.adjustment_by_id(uow.session, pending.id).status == "pending"
        # Approved again with a clock past the closing, it lands in the next cycle.
        finance.decide_adjustment(uow.session, adjustment_id=pending.id, decision="approve", actor=B,
                                  now=first.cycle_ends_at + timedelta(minutes=1))
        uow.commit()
    second = _close(app, shop, JAN + timedelta(days=1))
    assert _adjustment_lines(second) == [("ADJ-LAGGING", 700)]
