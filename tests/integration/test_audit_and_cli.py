"""``alliance audit`` and the rest of the CLI, run as a user would run them."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from sqlalchemy import text

from alliance import migrate
from alliance.cli import main


@pytest.fixture
def runner(app, monkeypatch) -> CliRunner:
    """A CLI runner whose ``alliance`` commands use the test's hub via its app context."""
    context = app.app_context()
    context.push()
    yield CliRunner()
    context.pop()


def invoke(runner: CliRunner, *arguments: str):
    return runner.invoke(main, list(arguments), catch_exceptions=False)


def test_seed_demo_then_audit_is_green(runner):
    seeded = invoke(runner, "seed-demo")
    assert seeded.exit_code == 0, seeded.output
    assert "partner cafe-aurora" in seeded.output
    again = invoke(runner, "seed-demo")
    assert again.exit_code == 0 and "already present" in again.output
    audited = invoke(runner, "audit", "--json")
    assert audited.exit_code == 0, audited.output
    # Exactly one JSON document on stdout, so a script can parse it as it comes.
    report = json.loads(audited.stdout)
    assert report["ok"] is True and report["first_failure"] is None
    assert report["totals"]["sum_of_all_entries"] == 0
    assert report["totals"]["transactions"] > 0


def test_audit_json_on_a_failing_audit_is_one_document_naming_the_first_problem(runner, hub):
    invoke(runner, "seed-demo")
    tamper(hub, "UPDATE ledger_accounts SET balance_points = balance_points + 7 "
                "WHERE id = (SELECT min(id) FROM ledger_accounts WHERE kind = 'member_available')")
    audited = invoke(runner, "audit", "--json")
    assert audited.exit_code == 1
    report = json.loads(audited.stdout)
    assert report["ok"] is False
    assert report["first_failure"]["name"] == "balances_match_entries"
    assert report["first_failure"]["first_problem"].startswith("account member:")


def tamper(hub, statement: str) -> None:
    """Change the books behind the hub's back, the way only a database superuser could."""
    with hub.engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            # Replica mode skips ordinary triggers: what a superuser with psql could do.
            connection.execute(text("SET LOCAL session_replication_role = replica"))
            connection.execute(text(statement))
        else:
            connection.execute(text("DROP TRIGGER trg_ledger_accounts_guard"))
            connection.execute(text("DROP TRIGGER trg_journal_entries_no_delete"))
            connection.execute(text(statement))


@pytest.mark.parametrize(
    ("statement", "failed_check"),
    [
        ("UPDATE ledger_accounts SET balance_points = balance_points + 7 "
         "WHERE id = (SELECT min(id) FROM ledger_accounts WHERE kind = 'member_available')", "balances_match_entries"),
        ("DELETE FROM journal_entries WHERE id = (SELECT max(id) FROM journal_entries)", "transactions_balanced"),
    ],
    ids=["edited-balance", "deleted-entry"],
)
def test_audit_fails_on_a_corrupted_database_and_names_the_first_problem(runner, hub, statement, failed_check):
    invoke(runner, "seed-demo")
    tamper(hub, statement)
    result = invoke(runner, "audit")
    assert result.exit_code == 1
    assert f"audit FAILED at {failed_check}" in result.output
    assert "FAIL" in result.output


def test_audit_notices_a_missing_guard(runner, hub):
    invoke(runner, "seed-demo")
    with hub.engine.begin() as connection:
        connection.execute(text(
            "ALTER TABLE journal_entries DISABLE TRIGGER trg_journal_entries_append_only"
            if connection.dialect.name == "postgresql" else "DROP TRIGGER trg_journal_entries_no_update"
        ))
    result = invoke(runner, "audit")
    assert result.exit_code == 1
    assert "audit FAILED at database_guards" in result.output


def test_jobs_run_by_hand_and_refuse_a_bad_clock(runner):
    invoke(runner, "seed-demo")
    expired = invoke(runner, "jobs", "expire-holds", "--now", "2099-01-01T00:00:00+00:00")
    # The hold at a till and the order of bill credit waiting for the operator's next file.
    assert expired.exit_code == 0 and "2 holds released" in expired.output
    activated = invoke(runner, "jobs", "activate-pending", "--now", "2099-01-01T00:00:00+00:00")
    assert activated.exit_code == 0 and "5 lots activated" in activated.output
    points = invoke(runner, "jobs", "expire-points", "--now", "2099-01-01T00:00:00+00:00")
    assert points.exit_code == 0 and "points expired" in points.output
    assert invoke(runner, "audit").exit_code == 0
    naive = invoke(runner, "jobs", "expire-holds", "--now", "2099-01-01T00:00:00")
    assert naive.exit_code == 2 and "UTC offset" in naive.output


def test_db_commands_report_and_refuse_unknown_revisions(runner, hub):
    current = invoke(runner, "db", "current")
    head = migrate.head_revision(hub.engine)
    assert current.exit_code == 0 and f"current: {head}; newest: {head}" in current.output
    bad = invoke(runner, "db", "upgrade", "no-such-revision")
    assert bad.exit_code == 1 and "Can't locate revision" in bad.output


def test_unknown_commands_and_options_exit_non_zero(runner):
    assert invoke(runner, "no-such-command").exit_code == 2
    assert invoke(runner, "serve", "--port", "70000").exit_code == 2
