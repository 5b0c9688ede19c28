"""Closing cycles and checking statements from the command line, as finance would."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from alliance.cli import main


@pytest.fixture
def run(app):  # type: ignore[no-untyped-def]
    context = app.app_context()
    context.push()
    runner = CliRunner()
    yield lambda *arguments: runner.invoke(main, list(arguments), catch_exceptions=False)
    context.pop()


def test_close_export_and_verify_statements_offline(run, tmp_path: Path):
    assert run("seed-demo").exit_code == 0
    closed = run("settlement", "close", "--partner", "fuel-stop", "--now", "2026-12-31T00:00:00+00:00")
    assert closed.exit_code == 0, closed.output
    assert closed.output.strip().endswith("cycles closed")
    again = run("settlement", "close", "--partner", "fuel-stop", "--now", "2026-12-31T00:00:00+00:00")
    assert again.output.strip() == "0 cycles closed"
    exported = run("statements", "export", "--partner", "fuel-stop", "--out", str(tmp_path))
    assert exported.exit_code == 0, exported.output
    documents = sorted(tmp_path.glob("*.json"))
    statement = next(path for path in documents if not path.name.endswith(".sig.json"))
    assert run("statements", "verify", str(statement)).exit_code == 0
    statement.write_bytes(statement.read_bytes().replace(b'"net_minor":', b'"net_minor": '))
    tampered = run("statements", "verify", str(statement))
    assert tampered.exit_code == 1 and "not what key" in tampered.output
    assert run("audit").exit_code == 0


def test_the_demo_ends_by_closing_its_cycles_and_showing_the_netting(run):
    seeded = run("seed-demo")
    assert seeded.exit_code == 0, seeded.output
    assert "cycles closed into signed statements" in seeded.output
    for code in ("book-nook", "cafe-aurora", "fuel-stop"):
        assert f"  {code} " in seeded.output
    assert "gross obligations" in seeded.output and "netting efficiency" in seeded.output
    assert run("audit").exit_code == 0


def test_finance_reconciles_invoices_and_records_payment_from_the_cli(run, hub, tmp_path: Path):
    from sqlalchemy import select

    from alliance.models import SettlementStatement

    assert run("seed-demo").exit_code == 0
    with hub.unit_of_work() as uow:
        statement_id, net_minor = uow.session.execute(
            select(SettlementStatement.id, SettlementStatement.net_minor)
            .where(SettlementStatement.net_minor > 0).order_by(SettlementStatement.id).limit(1)).one()
    partner_file = tmp_path / "partner.csv"
    partner_file.write_text("receipt_id,amount_minor,currency,occurred_on\r\nr-404,100,EUR,2026-01-01\r\n")
    reconciled = run("finance", "reconcile", str(statement_id), str(partner_file))
    assert reconciled.exit_code == 0, reconciled.output
    assert '"missing_at_hub":1' in reconciled.output.replace(" ", "")
    assert run("finance", "paid", str(statement_id), "--amount-minor", "1", "--paid-on", "2026-12-01",
               "--reference", "p-1").exit_code == 1
    assert run("finance", "invoiced", str(statement_id), "--reference", "inv-1").exit_code == 0
    paid = run("finance", "paid", str(statement_id), "--amount-minor", str(net_minor), "--paid-on", "2026-12-01",
               "--reference", "p-1")
    assert paid.exit_code == 0 and "fully paid" in paid.output
    assert run("finance", "overdue").exit_code == 0
    assert run("audit").exit_code == 0
