"""``alliance audit`` prices every settling posting again and reads every statement back from its signed bytes.

Each test corrupts one thing the way a database superuser could (the append-only
guards stay installed, see ``tests.audit_support.tamper``) and expects the audit to
fail at that check, naming the row and the expected and found values.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest
from sqlalchemy import select

from alliance.models import (
    JournalTransaction,
    Partner,
    RedemptionHold,
    SettlementRun,
    SettlementStatement,
    SettlementStatementLine,
)
from alliance.services import ledger
from tests.audit_support import invoke, runner, tamper  # noqa: F401 - runner is a fixture


def seeded(runner) -> None:  # type: ignore[no-untyped-def]
    """The demo alliance, its cycles closed into signed statements, and a green audit to start from."""
    assert invoke(runner, "seed-demo").exit_code == 0
    result = invoke(runner, "audit")
    assert result.exit_code == 0, result.output


def failed_at(runner, check: str) -> str:  # type: ignore[no-untyped-def]
    """Run the audit, expect it to fail first at ``check``, and return what it says about the problem."""
    result = invoke(runner, "audit")
    assert result.exit_code == 1, result.output
    assert f"audit FAILED at {check}: " in result.output, result.output
    return result.output.split(f"audit FAILED at {check}: ", 1)[1].splitlines()[0]


def first_posting(hub, kind: str) -> JournalTransaction:  # type: ignore[no-untyped-def]
    with hub.unit_of_work() as uow:
        return uow.session.scalars(select(JournalTransaction).where(
            JournalTransaction.kind == kind, JournalTransaction.partner_id.is_not(None))
            .order_by(JournalTransaction.id).limit(1)).one()


def partner_code(hub, partner_id: int) -> str:  # type: ignore[no-untyped-def]
    with hub.unit_of_work() as uow:
        return uow.session.get_one(Partner, partner_id).code


@pytest.mark.parametrize(("kind", "schedule"), [("earn", "issue"), ("capture", "redemption")])
def test_audit_names_a_posting_whose_recorded_price_was_edited(runner, hub, kind, schedule):
    seeded(runner)
    posting = first_posting(hub, kind)
    tamper(hub, "journal_transactions",
           f"UPDATE journal_transactions SET price_per_point = 0.5 WHERE id = {posting.id}")
    problem = failed_at(runner, "posting_prices")
    assert f"transaction {posting.id} ({kind} of partner {partner_code(hub, posting.partner_id)}" in problem
    assert f"records 0.5, the {schedule} price in force then is {posting.price_per_point.normalize()}" in problem


def test_audit_names_the_first_posting_priced_off_an_edited_price_row(runner, hub):
    seeded(runner)
    posting = first_posting(hub, "earn")
    tamper(hub, "partner_prices",
           f"UPDATE partner_prices SET issue_price_per_point = 0.25 WHERE partner_id = {posting.partner_id}")
    problem = failed_at(runner, "posting_prices")
    assert f"transaction {posting.id} (earn of partner" in problem
    assert f"records {posting.price_per_point.normalize()}, the issue price in force then is 0.25" in problem


def test_audit_names_a_clawback_not_at_its_earns_price(runner, hub):
    seeded(runner)
    clawback = first_posting(hub, "clawback")
    tamper(hub, "journal_transactions",
           f"UPDATE journal_transactions SET price_per_point = 0.75 WHERE id = {clawback.id}")
    problem = failed_at(runner, "posting_prices")
    assert (f"transaction {clawback.id} (clawback of partner {partner_code(hub, clawback.partner_id)}" in problem
            and f"records 0.75, the price of the transaction it reverses ({clawback.reverses_transaction_id}) is"
            in problem)


def test_audit_names_a_redemption_refund_not_at_its_captures_price(runner, hub):
    seeded(runner)
    with hub.unit_of_work() as uow:
        hold_id = uow.session.scalars(select(RedemptionHold.id).where(RedemptionHold.status == "captured")).first()
        refund_id = ledger.refund_redemption(uow.session, hold_id=hold_id, points=10, now=datetime.now(timezone.utc))
        uow.commit()
    assert invoke(runner, "audit").exit_code == 0
    tamper(hub, "journal_transactions",
           f"UPDATE journal_transactions SET price_per_point = 0.001 WHERE id = {refund_id}")
    problem = failed_at(runner, "posting_prices")
    assert f"transaction {refund_id} (redemption_refund of partner" in problem
    assert "records 0.001, the price of the transaction it reverses" in problem


def first_statement_with_lines(hub) -> tuple[SettlementStatement, dict]:  # type: ignore[no-untyped-def,type-arg]
    with hub.unit_of_work() as uow:
        statement = uow.session.scalars(select(SettlementStatement).where(SettlementStatement.id.in_(
            select(SettlementStatementLine.statement_id))).order_by(SettlementStatement.id).limit(1)).one()
        return statement, json.loads(statement.document_json)


@pytest.mark.parametrize(
    ("change", "field", "document_field"),
    [
        ("net_minor = net_minor + 7, closing_balance_minor = closing_balance_minor + 7", "net_minor", "net_minor"),
        ("opening_balance_minor = opening_balance_minor - 3, closing_balance_minor = closing_balance_minor - 3",
         "opening_balance_minor", "opening_balance_minor"),
        ("due_date = '2031-01-01'", "due_date", "due_date"),
    ],
    ids=["net", "opening-balance", "due-date"],
)
def test_audit_names_a_statement_row_that_differs_from_its_signed_document(runner, hub, change, field,
                                                                           document_field):
    seeded(runner)
    statement, document = first_statement_with_lines(hub)
    tamper(hub, "statements", f"UPDATE statements SET {change} WHERE id = {statement.id}")
    problem = failed_at(runner, "statements_match_documents")
    assert problem.startswith(f"statement {statement.id} ({document['partner_code']}, cycle from "
                              f"{document['cycle']['starts_at']}): {field} is {document[document_field]} in the "
                              f"signed document, the row stores "), problem


def test_audit_names_a_statement_line_whose_amount_differs_from_its_signed_document(runner, hub):
    seeded(runner)
    statement, document = first_statement_with_lines(hub)
    tamper(hub, "statement_lines", "UPDATE statement_lines SET amount_minor = amount_minor + 5 "
                                   f"WHERE statement_id = {statement.id} AND line_number = 1")
    problem = failed_at(runner, "statements_match_documents")
    signed = document["lines"][0]["amount_minor"]
    assert problem.endswith(f"line 1: amount_minor is {signed} in the signed document, the row stores {signed + 5}")


@pytest.mark.parametrize("column", ["document_json", "document_csv"])
def test_audit_names_a_statement_whose_signature_no_longer_verifies(runner, hub, column):
    seeded(runner)
    statement, _ = first_statement_with_lines(hub)
    # The figures are made to agree everywhere else, so only the signature can tell.
    tamper(hub, "statements", f"UPDATE statements SET {column} = replace({column}, '\"currency\":\"EUR\"', "
                              f"'\"currency\":\"EUR\" ') || ' ' WHERE id = {statement.id}")
    problem = failed_at(runner, "statements_signed")
    assert problem.startswith(f"statement {statement.id} ("), problem
    assert f"the {column.removeprefix('document_').upper()} signature does not verify (signature_mismatch" in problem


def test_audit_names_the_statement_after_one_removed_from_a_partners_chain(runner, hub):
    seeded(runner)
    with hub.unit_of_work() as uow:
        runs = uow.session.execute(
            select(SettlementRun.partner_id, SettlementRun.id, SettlementStatement.id, SettlementRun.cycle_starts_at)
            .join(SettlementStatement, SettlementStatement.run_id == SettlementRun.id)
            .order_by(SettlementRun.partner_id, SettlementRun.cycle_starts_at)).all()
    chain = [row for row in runs if row.partner_id == runs[0].partner_id]
    assert len(chain) >= 3, "the demo closes several cycles per partner"
    _, removed_run, removed_statement, _ = chain[1]
    # A whole signed statement removed (or never delivered): every remaining one still
    # matches its own document, so only the chain between them can tell.
    # With everything recorded against it (the demo invoices, pays, reconciles and disputes statements).
    tamper(hub, "statement_line_disputes", "DELETE FROM statement_line_disputes WHERE statement_line_id IN "
           f"(SELECT id FROM statement_lines WHERE statement_id = {removed_statement})")
    tamper(hub, "statement_events", f"DELETE FROM statement_events WHERE statement_id = {removed_statement}")
    tamper(hub, "reconciliation_reports",
           f"DELETE FROM reconciliation_reports WHERE statement_id = {removed_statement}")
    tamper(hub, "adjustment_applications", f"DELETE FROM adjustment_applications WHERE run_id = {removed_run}")
    tamper(hub, "statement_lines", f"DELETE FROM statement_lines WHERE statement_id = {removed_statement}")
    tamper(hub, "statements", f"DELETE FROM statements WHERE id = {removed_statement}")
    tamper(hub, "settlement_runs", f"DELETE FROM settlement_runs WHERE id = {removed_run}")
    problem = failed_at(runner, "statements_continuous")
    assert problem.startswith(
        f"statement {chain[2][2]} ({partner_code(hub, chain[0].partner_id)}, cycle from "), problem
    assert "does not start where the previous cycle ended" in problem
