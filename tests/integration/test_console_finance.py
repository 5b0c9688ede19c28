"""Finance pages: closing cycles, a statement and its signature, invoicing and payment, the net position,
reconciliation, four-eyes approvals, CSV downloads and forged forms."""

from __future__ import annotations

import csv
import io
import re
from datetime import datetime, timezone

import pytest
from sqlalchemy import select, text, update

from alliance.console.blueprint import money
from alliance.domain.money import major_units_text
from alliance.extensions import hub_state
from alliance.models import Partner, SettlementStatement
from alliance.services import staff_people
from settlement import closing as settlement_closing
from settlement import finance as finance_service
from tests.back_office_support import BackOffice
from tests.console_support import (
    ConsoleClient,
    add_staff,
    audit_actions,
    build_alliance,
    settlement_counts,
    signed_in,
    text_of,
)

CYCLES = "/console/finance/cycles"


@pytest.fixture
def finance(app):  # type: ignore[no-untyped-def]
    """A finance user signed in on a hub with three months of activity and nothing closed yet."""
    build_alliance(hub_state(app))
    return signed_in(app, "fiona", "finance")


def close_due(browser) -> None:  # type: ignore[no-untyped-def]
    response = browser.post("/console/finance/closings")
    assert response.status_code == 303 and response.headers["Location"].endswith(CYCLES)


def statement_ids(hub, code: str) -> list[int]:  # type: ignore[no-untyped-def]
    with hub.unit_of_work() as uow:
        return list(uow.session.scalars(select(SettlementStatement.id)
                                        .join(Partner, Partner.id == SettlementStatement.partner_id)
                                        .where(Partner.code == code).order_by(SettlementStatement.id)))


def test_cycles_page_offers_closing_then_lists_the_closed_cycles(app, finance):
    hub = hub_state(app)
    before = text_of(finance.get(CYCLES))
    assert "No closed cycles yet" in before
    assert re.search(r"[1-9]\d* ended cycles? waiting to be closed", before)
    close_due(finance)
    page = finance.get(CYCLES)
    shown = text_of(page)
    assert "cycles closed into signed statements" in shown
    assert "0 ended cycles waiting to be closed" in shown
    aurora = statement_ids(hub, "aurora")
    assert aurora and all(f"#{statement_id}" in shown for statement_id in aurora)
    assert ("console:fiona", "settlement.close", "settlement") in audit_actions(hub)
    # Closing again finds nothing due and says so.
    close_due(finance)
    assert "No cycle was due" in text_of(finance.get(CYCLES))


def test_statement_page_shows_lines_a_valid_signature_and_the_payment_workflow(app, finance):
    hub = hub_state(app)
    close_due(finance)
    with hub.unit_of_work() as uow:
        statement = uow.session.scalars(select(SettlementStatement).where(SettlementStatement.net_minor > 0)
                                        .order_by(SettlementStatement.id)).first()
        statement_id, net_minor = statement.id, statement.net_minor
    path = f"/console/finance/statements/{statement_id}"
    page = text_of(finance.get(path))
    assert "JSON: valid" in page and "CSV: valid" in page
    assert "points issued" in page and "not invoiced" in page
    invoiced = finance.post(f"{path}/invoiced", {"reference": "INV-2026-001"})
    assert invoiced.status_code == 303
    assert "invoiced" in text_of(finance.get(path))
    partial = net_minor // 2 or net_minor
    # Amounts are typed in the statement's currency, as a person reads them.
    assert f'value="{major_units_text(net_minor, "EUR")}"' in finance.get(path).get_data(as_text=True)
    first = finance.post(f"{path}/payments", {"amount": major_units_text(partial, "EUR"), "paid_on": "2026-11-30",
                                               "reference": "PAY-1"})
    rest = net_minor - partial
    assert f"Payment recorded: {money(partial, 'EUR')} paid, {money(rest, 'EUR')} outstanding." in text_of(
        finance.client.get(first.headers["Location"]))
    if rest:
        finance.post(f"{path}/payments", {"amount": major_units_text(rest, "EUR"), "paid_on": "2026-11-30",
                                          "reference": "PAY-2"})
    paid_page = text_of(finance.get(path))
    assert "paid" in paid_page and "outstanding 0.00 EUR" in paid_page
    overpaid = finance.post(f"{path}/payments", {"amount": "0.01", "paid_on": "2026-11-30", "reference": "PAY-3"})
    assert overpaid.status_code == 303
    assert "has 0 minor units outstanding" in text_of(finance.get(path))
    actions = [action for actor, action, subject in audit_actions(hub) if subject == f"statement:{statement_id}"]
    assert actions[0] == "statement.invoiced" and set(actions[1:]) == {"statement.paid"}
    assert f"#{statement_id}" in text_of(finance.get(CYCLES, state="paid"))
    assert f"#{statement_id}" not in text_of(finance.get(CYCLES, state="uninvoiced"))


def test_a_tampered_statement_shows_an_invalid_signature(app, finance):
    hub = hub_state(app)
    close_due(finance)
    statement_id = statement_ids(hub, "aurora")[-1]
    with hub.engine.begin() as connection:
        # Only a database superuser could do this: the append-only triggers refuse it otherwise.
        if connection.dialect.name == "postgresql":
            connection.execute(text("SET LOCAL session_replication_role = replica"))
        else:
            connection.execute(text("DROP TRIGGER trg_statements_no_update"))
        connection.execute(update(SettlementStatement).where(SettlementStatement.id == statement_id)
                           .values(document_csv=SettlementStatement.document_csv + "tampered\n"))
    page = text_of(finance.get(f"/console/finance/statements/{statement_id}"))
    assert "JSON: valid" in page and "CSV: INVALID" in page and "signature_mismatch" in page


def test_statement_downloads_are_the_exact_signed_bytes(app, finance):
    hub = hub_state(app)
    close_due(finance)
    statement_id = statement_ids(hub, "aurora")[0]
    with hub.unit_of_work() as uow:
        stored = settlement_closing.statement_by_id(uow.session, statement_id=statement_id)
    for document_format, expected in (("csv", stored.document_csv), ("json", stored.document_json),
                                      ("csv-signature", stored.signature_csv)):
        response = finance.get(f"/console/finance/statements/{statement_id}/document", format=document_format)
        assert response.status_code == 200 and response.data == expected
        assert "attachment" in response.headers["Content-Disposition"]


def test_closed_cycles_download_as_csv_with_the_filters(app, finance):
    close_due(finance)
    response = finance.get("/console/finance/cycles.csv", partner="fuel")
    assert response.status_code == 200 and response.mimetype == "text/csv"
    rows = list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))
    assert rows and {row["partner"] for row in rows} == {"fuel"}
    assert statement_ids(hub_state(app), "fuel") == sorted(int(row["statement_id"]) for row in rows)


def test_net_position_shows_nets_gross_vs_net_and_the_issuer_redeemer_matrix(app, finance):
    hub = hub_state(app)
    close_due(finance)
    with hub.unit_of_work() as uow:
        position = settlement_closing.period_position(uow.session, currency="EUR")
    page = finance.get("/console/finance/position")
    shown = text_of(page)
    assert position.partner_nets_minor["aurora"] > 0 > position.partner_nets_minor["fuel"]
    assert f"{position.netting_efficiency * 100:.2f}%" in shown
    # Pick the cycle in which fuel redeemed aurora's points: the matrix shows them.
    ends = re.findall(r'<option value="([^"]+)"', page.get_data(as_text=True))
    matrices = [text_of(finance.get("/console/finance/position", cycle_ends_at=end)) for end in ends]
    assert any("issued by ↓ / redeemed at → aurora fuel aurora 0 points 50 points" in matrix for matrix in matrices)
    # The picker names each cycle end by its day in the viewer's zone and whose cycles ended then.
    assert re.search(r"<optgroup label=\"\w+ \d{4}\">", page.get_data(as_text=True))
    assert "aurora (monthly)" in shown and "T00:00:00" not in shown


def test_the_net_position_sorts_by_what_is_still_to_pay(app, finance):
    close_due(finance)
    by_partner = finance.get("/console/finance/position").get_data(as_text=True)
    assert re.findall(r'<tr><th scope="row">(\w+)</th>', by_partner)[:2] == ["aurora", "fuel"]
    descending = finance.get("/console/finance/position", sort="still", order="desc")
    body = descending.get_data(as_text=True)
    assert 'aria-sort="descending"' in body
    rows = re.findall(r'<tr><th scope="row">(\w+)</th>', body)
    assert rows[:2] == ["aurora", "fuel"]
    ascending = finance.get("/console/finance/position", sort="still", order="asc").get_data(as_text=True)
    assert re.findall(r'<tr><th scope="row">(\w+)</th>', ascending)[:2] == ["fuel", "aurora"]
    assert finance.get("/console/finance/position", sort="nonsense").status_code == 400


def test_reconciliation_from_the_statement_page_is_stored_listed_and_downloadable(app, finance):
    hub = hub_state(app)
    close_due(finance)
    statement_id = statement_ids(hub, "aurora")[-1]
    document = "receipt_id,amount_minor,currency,occurred_on\nR-unknown,100,EUR,2026-01-01\n"
    response = finance.post(f"/console/finance/statements/{statement_id}/reconciliations", {"document": document})
    assert response.status_code == 303
    assert "discrepancies" in text_of(finance.get(f"/console/finance/statements/{statement_id}"))
    listing = finance.get("/console/finance/reconciliations", discrepancies="only")
    report_id = int(re.search(r"/console/finance/reconciliations/(\d+)", listing.get_data(as_text=True)).group(1))
    detail = text_of(finance.get(f"/console/finance/reconciliations/{report_id}"))
    assert "R-unknown" in detail
    # Read as a person reads it: money with its currency, which side lacks the receipt,
    # and no raw [], None or JSON in the cells.
    assert "In the partner's file, not at the hub (1)" in detail
    assert "R-unknown — line 2: 1.00 EUR on 2026-01-01 not at the hub" in detail
    assert not {"[]", "None", "{", "amount_minor"} & set(detail.split())
    assert finance.get(f"/console/finance/reconciliations/{report_id}.csv").mimetype == "text/csv"
    assert ("console:fiona", "statement.reconcile", f"statement:{statement_id}") in audit_actions(hub)


def test_four_eyes_the_requester_cannot_approve_a_colleague_can(app, finance):
    hub = hub_state(app)
    requested = finance.post("/console/finance/adjustments", {"partner": "aurora", "amount": "-15.00",
                                                             "reason": "goodwill credit", "reference": "ADJ-7"})
    assert requested.status_code == 303
    page = finance.get("/console/finance/approvals", status="pending")
    adjustment_id = _pending_adjustment_id(hub, "ADJ-7")
    # The requester is not offered the buttons the rule would refuse...
    assert "awaiting another person: you requested it" in text_of(page)
    assert f'action="/console/finance/adjustments/{adjustment_id}/decision"' not in page.get_data(as_text=True)
    # ...and a decision sent anyway is refused by the service.
    own = finance.post(f"/console/finance/adjustments/{adjustment_id}/decision", {"decision": "approve"})
    assert own.status_code == 303
    assert "must be decided by another person" in text_of(finance.get("/console/finance/approvals"))
    colleague = signed_in(app, "ada", "admin")
    offered = colleague.get("/console/finance/approvals", status="pending").get_data(as_text=True)
    assert f'action="/console/finance/adjustments/{adjustment_id}/decision"' in offered
    colleague.post(f"/console/finance/adjustments/{adjustment_id}/decision", {"decision": "approve"})
    approved = text_of(colleague.get("/console/finance/approvals", status="approved"))
    assert "ADJ-7" in approved and "-15.00 EUR" in approved
    assert ("console:fiona", "adjustment.request", f"adjustment:{adjustment_id}") in audit_actions(hub)
    assert ("console:ada", "adjustment.approve", f"adjustment:{adjustment_id}") in audit_actions(hub)
    exported = list(csv.DictReader(io.StringIO(
        colleague.get("/console/finance/adjustments.csv").get_data(as_text=True))))
    assert [(row["reference"], row["status"], row["decided_by"]) for row in exported] == [
        ("ADJ-7", "approved", "console:ada")]


def _pending_adjustment_id(hub, reference: str) -> int:  # type: ignore[no-untyped-def]
    with hub.unit_of_work() as uow:
        return next(item.id for item in finance_service.list_adjustments(uow.session, status="pending")
                    if item.reference == reference)


def _status_of(hub, adjustment_id: int) -> str:  # type: ignore[no-untyped-def]
    with hub.unit_of_work() as uow:
        return finance_service.adjustment_by_id(uow.session, adjustment_id).status


def test_four_eyes_compares_people_so_one_persons_client_and_login_cannot_approve_their_own(app, finance):
    hub = hub_state(app)
    # Ines holds a finance back-office client and a finance console login: one person, two credentials.
    with hub.unit_of_work() as uow:
        staff_people.add_person(uow.session, handle="ines", name="Ines Twohats", actor="cli:test",
                                now=datetime.now(timezone.utc))
        uow.commit()
    add_staff(hub, "ines", "finance", person="ines")
    ines_console = ConsoleClient(app)
    assert ines_console.login("ines").status_code == 303
    assert "You are Ines Twohats (finance)." in text_of(ines_console.get("/console/finance/approvals"))
    bo = BackOffice(app)
    ines_client = bo.register_client("finance", name="ines's script", person="ines")
    ines_token = bo.request_token(ines_client.client_id, ines_client.client_secret).body["access_token"]

    by_api = bo.call("POST", "/settlement/adjustments", token=ines_token, json={
        "partner": "aurora", "amount_minor": 2500, "reason": "missed fee", "reference": "ADJ-API-9"})
    assert by_api.status == 201, by_api.body
    ines_console.post(f"/console/finance/adjustments/{by_api.body['id']}/decision", {"decision": "approve"})
    assert "must be decided by another person" in text_of(ines_console.get("/console/finance/approvals"))
    assert _status_of(hub, by_api.body["id"]) == "pending"

    ines_console.post("/console/finance/adjustments", {"partner": "aurora", "amount": "-7",
                                                       "reason": "goodwill", "reference": "ADJ-CON-9"})
    in_console = _pending_adjustment_id(hub, "ADJ-CON-9")
    refused = bo.call("POST", f"/settlement/adjustments/{in_console}/decision", token=ines_token,
                      json={"decision": "approve"})
    assert (refused.status, refused.code) == (409, "same_approver")
    assert _status_of(hub, in_console) == "pending"

    # Two different people can: Fiona in the console, another person's client through the API.
    finance.post(f"/console/finance/adjustments/{by_api.body['id']}/decision", {"decision": "approve"})
    colleague = bo.call("POST", f"/settlement/adjustments/{in_console}/decision", token=bo.token("finance"),
                        json={"decision": "approve"})
    assert colleague.status == 200, colleague.body
    assert (_status_of(hub, by_api.body["id"]), _status_of(hub, in_console)) == ("approved", "approved")


def _dispute_aurora_line_1(hub, finance):  # type: ignore[no-untyped-def]
    """Close the due cycles and dispute line 1 of aurora's statement that issued points."""
    close_due(finance)
    statement_id = next(sid for sid in statement_ids(hub, "aurora")
                        if "points issued" in text_of(finance.get(f"/console/finance/statements/{sid}")))
    finance.post(f"/console/finance/statements/{statement_id}/disputes", {"line_number": "1", "reason": "count is off"})


def test_disputes_open_on_a_line_and_are_resolved_from_the_approvals_page(app, finance):
    hub = hub_state(app)
    _dispute_aurora_line_1(hub, finance)
    page = finance.get("/console/finance/approvals")
    dispute_id = int(re.search(r"/console/finance/disputes/(\d+)/resolution", page.get_data(as_text=True)).group(1))
    finance.post(f"/console/finance/disputes/{dispute_id}/resolution", {"outcome": "rejected"})
    assert "No open disputes" in text_of(finance.get("/console/finance/approvals"))
    assert [action for _, action, subject in audit_actions(hub) if subject == f"dispute:{dispute_id}"] == \
        ["dispute.open", "dispute.rejected"]


@pytest.mark.parametrize("token", [None, "forged-token"])
def test_a_form_without_the_right_csrf_token_is_refused_and_changes_nothing(app, finance, token):
    hub = hub_state(app)
    before = settlement_counts(hub)
    refused = finance.post("/console/finance/closings", csrf=token)
    assert refused.status_code == 400 and "text/html" in refused.content_type
    assert "did not come from the console" in text_of(refused)
    assert settlement_counts(hub) == before


def test_a_get_never_changes_anything(app, finance):
    hub = hub_state(app)
    before = settlement_counts(hub)
    response = finance.get("/console/finance/closings")
    assert response.status_code == 404
    assert settlement_counts(hub) == before


def test_finance_pages_with_nothing_yet_say_what_to_do(app):
    browser = signed_in(app, "fiona", "finance")
    assert "No closed cycles yet" in text_of(browser.get(CYCLES))
    assert "No settling partner" in text_of(browser.get(CYCLES))
    assert "No closed statements in EUR yet" in text_of(browser.get("/console/finance/position"))
    assert "No reconciliation yet" in text_of(browser.get("/console/finance/reconciliations"))
    approvals = text_of(browser.get("/console/finance/approvals"))
    assert "No adjustments yet" in approvals and "No open disputes" in approvals
    missing = browser.get("/console/finance/statements/999")
    assert missing.status_code == 404 and "no statement 999" in text_of(missing)


def test_a_bad_filter_is_a_clear_400_page(app, finance):
    response = finance.get(CYCLES, state="bogus")
    assert response.status_code == 400 and "not one of the choices" in text_of(response)
    assert finance.get(CYCLES, page="0").status_code == 400


def test_closed_cycles_filter_by_which_way_the_net_goes(app, finance):
    close_due(finance)
    with hub_state(app).unit_of_work() as uow:
        nets = dict(uow.session.execute(select(SettlementStatement.id, SettlementStatement.net_minor)).all())
    assert any(net > 0 for net in nets.values()) and any(net == 0 for net in nets.values())
    for direction, keep in (("owed_to_hub", lambda net: net > 0), ("owed_to_partner", lambda net: net < 0),
                            ("zero", lambda net: net == 0)):
        rows = list(csv.DictReader(io.StringIO(finance.get("/console/finance/cycles.csv", net=direction)
                                               .get_data(as_text=True))))
        assert sorted(int(row["statement_id"]) for row in rows) == sorted(
            statement_id for statement_id, net in nets.items() if keep(net)), direction
    owed = text_of(finance.get(CYCLES, net="owed_to_hub", page_size=100))
    assert all(f"#{statement_id} " in owed for statement_id, net in nets.items() if net > 0)
    assert finance.get(CYCLES, net="sideways").status_code == 400


@pytest.mark.parametrize(("typed", "why"), [
    ("14.605", "The amount in EUR has more decimals than EUR's 2."),
    ("1460 paid", "The amount in EUR is not an amount such as 14.60, got '1460 paid'."),
    ("-5", "The amount in EUR must not carry a sign."),
])
def test_a_payment_typed_wrongly_is_refused_saying_why_and_records_nothing(app, finance, typed, why):
    hub = hub_state(app)
    close_due(finance)
    with hub.unit_of_work() as uow:
        statement_id = uow.session.scalars(select(SettlementStatement.id).where(SettlementStatement.net_minor > 0)
                                           .order_by(SettlementStatement.id)).first()
    path = f"/console/finance/statements/{statement_id}"
    finance.post(f"{path}/invoiced", {"reference": "INV-2026-002"})
    before = audit_actions(hub)
    refused = finance.post(f"{path}/payments", {"amount": typed, "paid_on": "2026-11-30", "reference": "PAY-9"})
    assert refused.status_code == 400
    assert why in text_of(refused)
    assert audit_actions(hub) == before
    assert "not paid" in text_of(finance.get(path)) or "outstanding" in text_of(finance.get(path))


def test_an_adjustment_is_requested_in_the_partners_currency(app, finance):
    requested = finance.post("/console/finance/adjustments", {"partner": "aurora", "amount": "12.34",
                                                             "reason": "missed fee", "reference": "ADJ-MAJOR"})
    assert requested.status_code == 303
    assert "12.34 EUR" in text_of(finance.get("/console/finance/approvals", status="pending"))


def test_overdue_statements_are_marked_and_can_be_listed_alone(app, finance, monkeypatch):
    from alliance.console import finance_views

    hub = hub_state(app)
    close_due(finance)
    with hub.unit_of_work() as uow:
        owed = set(uow.session.scalars(select(SettlementStatement.id).where(SettlementStatement.net_minor > 0)))
        others = set(uow.session.scalars(select(SettlementStatement.id).where(SettlementStatement.net_minor <= 0)))
    assert owed and others
    # Before any due date nothing is overdue...
    monkeypatch.setattr(finance_views, "now", lambda: datetime(2026, 9, 1, tzinfo=timezone.utc))
    assert "overdue since" not in text_of(finance.get(CYCLES, page_size=100))
    assert ">Statement #" not in finance.get(CYCLES, state="overdue").get_data(as_text=True)
    # ...and long after every due date, each statement owed to the hub and unpaid is overdue; one
    # owed by the hub, or settling at zero, is not (the partner is not late).
    monkeypatch.setattr(finance_views, "now", lambda: datetime(2099, 1, 1, tzinfo=timezone.utc))
    listed = finance.get(CYCLES, state="overdue", page_size=100).get_data(as_text=True)
    assert {int(found) for found in re.findall(r">Statement #(\d+)</a>", listed)} == owed
    assert listed.count('data-testid="overdue"') == len(owed)
    rows = list(csv.DictReader(io.StringIO(finance.get(f"{CYCLES}.csv").get_data(as_text=True))))
    assert {int(row["statement_id"]) for row in rows if row["overdue"] == "true"} == owed


def test_a_dispute_is_resolved_with_an_approved_adjustment_the_page_offers(app, finance):
    hub = hub_state(app)
    _dispute_aurora_line_1(hub, finance)
    # No approved adjustment yet: the page says how to get one instead of asking for a number.
    waiting = text_of(finance.get("/console/finance/approvals"))
    assert "request an adjustment for aurora above; once a colleague approves it, it is offered here" in waiting
    assert "Resolve with it" not in waiting
    finance.post("/console/finance/adjustments", {"partner": "aurora", "amount": "-2.50", "reason": "line 1 count",
                                                  "reference": "ADJ-LINE-1"})
    adjustment_id = _pending_adjustment_id(hub, "ADJ-LINE-1")
    signed_in(app, "ada", "admin").post(f"/console/finance/adjustments/{adjustment_id}/decision",
                                        {"decision": "approve"})
    page = finance.get("/console/finance/approvals")
    assert f"#{adjustment_id} · -2.50 EUR · ADJ-LINE-1" in text_of(page)
    dispute_id = int(re.search(r"/console/finance/disputes/(\d+)/resolution", page.get_data(as_text=True)).group(1))
    resolved = finance.post(f"/console/finance/disputes/{dispute_id}/resolution",
                            {"outcome": "adjusted", "adjustment_id": str(adjustment_id)})
    assert f"Dispute {dispute_id} is now" in text_of(finance.client.get(resolved.headers["Location"]))
    assert "No open disputes" in text_of(finance.get("/console/finance/approvals"))


def test_the_net_position_counts_the_payments_received(app, finance):
    hub = hub_state(app)
    close_due(finance)
    with hub.unit_of_work() as uow:
        statement_id, net_minor = uow.session.execute(
            select(SettlementStatement.id, SettlementStatement.net_minor).join(
                Partner, Partner.id == SettlementStatement.partner_id)
            .where(Partner.code == "aurora", SettlementStatement.net_minor > 0)
            .order_by(SettlementStatement.id)).first()
        aurora_net = settlement_closing.period_position(uow.session, currency="EUR").partner_nets_minor["aurora"]
    before = text_of(finance.get("/console/finance/position"))
    assert f"aurora {money(aurora_net, 'EUR')} 0.00 EUR {money(aurora_net, 'EUR')} owes the hub" in before
    path = f"/console/finance/statements/{statement_id}"
    finance.post(f"{path}/invoiced", {"reference": "INV-POS-1"})
    finance.post(f"{path}/payments", {"amount": major_units_text(net_minor, "EUR"), "paid_on": "2026-11-30",
                                      "reference": "PAY-POS-1"})
    after = text_of(finance.get("/console/finance/position"))
    still = aurora_net - net_minor
    assert (f"aurora {money(aurora_net, 'EUR')} {money(net_minor, 'EUR')} {money(still, 'EUR')} "
            + (f"owes the hub {money(still, 'EUR')}" if still > 0 else "settled")) in after


def test_who_requested_an_adjustment_is_shown_as_a_person_not_an_actor_string(app, finance):
    finance.post("/console/finance/adjustments", {"partner": "aurora", "amount": "1.00", "reason": "fee",
                                                  "reference": "ADJ-WHO"})
    shown = text_of(finance.get("/console/finance/approvals"))
    assert "Fiona (finance)," in shown and "console:fiona" not in shown
