"""The database keeps the books honest on its own: raw SQL cannot break them."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, IntegrityError

from alliance.services import ledger
from tests.factories import make_member, make_partner

EXPIRY = timedelta(days=730)


@pytest.fixture
def posted(hub, now):
    """One earn posted; returns (member_id, transaction_id, lot_id)."""
    partner_id = make_partner(hub, now=now)
    member = make_member(hub, now=now)
    with hub.unit_of_work() as uow:
        result = ledger.earn(uow.session, member_id=member.member_id, partner_id=partner_id, points=100, now=now,
                             expires_at=now + EXPIRY)
        uow.commit()
    return member.member_id, result.transaction_id, result.lot_id


def execute_raw(hub, statement: str, **parameters) -> None:
    with hub.engine.begin() as connection:
        connection.execute(text(statement), parameters)


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE journal_entries SET amount_points = amount_points * 2",
        "DELETE FROM journal_entries",
        "UPDATE journal_transactions SET kind = 'capture'",
        "DELETE FROM journal_transactions",
        "DELETE FROM point_lots",
        "DELETE FROM ledger_accounts WHERE code LIKE 'member:%'",
    ],
)
def test_journal_rows_cannot_be_changed_or_deleted(hub, posted, statement):
    with pytest.raises(DBAPIError, match="append-only"):
        execute_raw(hub, statement)


def test_a_balance_cannot_be_driven_negative_even_by_raw_entries(hub, posted):
    member_id, _, _ = posted
    with pytest.raises(IntegrityError, match="ck_ledger_accounts_balance_not_negative"):
        with hub.engine.begin() as connection:
            transaction_id = connection.execute(text(
                "INSERT INTO journal_transactions (kind, member_id, posted_at) "
                "VALUES ('hold', :member, CURRENT_TIMESTAMP) RETURNING id"), {"member": member_id}).scalar_one()
            connection.execute(text(
                "INSERT INTO journal_entries (transaction_id, account_id, amount_points) "
                "SELECT :txn, id, -101 FROM ledger_accounts WHERE code = :code"),
                {"txn": transaction_id, "code": f"member:{member_id}:available"})


def test_zero_amount_entries_are_refused(hub, posted):
    member_id, transaction_id, _ = posted
    with pytest.raises(IntegrityError, match="ck_journal_entries_amount_not_zero"):
        execute_raw(hub, "INSERT INTO journal_entries (transaction_id, account_id, amount_points) "
                         "SELECT :txn, id, 0 FROM ledger_accounts WHERE code = 'hub:breakage'", txn=transaction_id)


def test_postgresql_refuses_an_unbalanced_transaction_at_commit(pg_hub, now):
    make_partner(pg_hub, now=now)
    member = make_member(pg_hub, now=now)
    with pytest.raises(IntegrityError, match="unbalanced"):
        with pg_hub.engine.begin() as connection:
            transaction_id = connection.execute(text(
                "INSERT INTO journal_transactions (kind, member_id, posted_at) "
                "VALUES ('earn', :member, now()) RETURNING id"), {"member": member.member_id}).scalar_one()
            connection.execute(text(
                "INSERT INTO journal_entries (transaction_id, account_id, amount_points) "
                "SELECT :txn, id, 50 FROM ledger_accounts WHERE code = :code"),
                {"txn": transaction_id, "code": f"member:{member.member_id}:available"})
    with pg_hub.engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM journal_transactions")).scalar_one() == 0


def test_postgresql_refuses_a_transaction_without_entries(pg_hub):
    with pytest.raises(IntegrityError, match="unbalanced: 0 entries"):
        execute_raw(pg_hub, "INSERT INTO journal_transactions (kind, posted_at) VALUES ('earn', now())")


def test_direct_balance_and_lot_edits_are_refused(hub, posted):
    for statement in (
        "UPDATE ledger_accounts SET balance_points = balance_points + 1000 WHERE balance_points IS NOT NULL",
        "UPDATE ledger_accounts SET kind = 'member_held' WHERE kind = 'member_available'",
        "UPDATE point_lots SET points_remaining = points_remaining - 1",
        "UPDATE point_lots SET points_earned = points_earned + 5",
        "UPDATE point_lots SET state = 'pending'",
    ):
        with pytest.raises(DBAPIError, match="changes only through"):
            execute_raw(hub, statement)


def test_postgresql_refuses_truncating_the_journal(pg_hub):
    for table in ("journal_entries", "journal_transactions", "lot_consumptions"):
        with pytest.raises(DBAPIError, match="append-only"):
            execute_raw(pg_hub, f"TRUNCATE {table} CASCADE")


def test_raw_inserts_cannot_open_a_balance_or_an_overfull_lot(hub, posted):
    member_id, transaction_id, lot_id = posted
    with pytest.raises(DBAPIError, match="must open at zero"):
        execute_raw(hub, "INSERT INTO ledger_accounts (code, kind, member_id, balance_points, created_at) "
                         "VALUES ('member:999:forged', 'member_available', :member, 1000, CURRENT_TIMESTAMP)",
                    member=member_id)
    with pytest.raises(DBAPIError, match="must open with all it earned"):
        execute_raw(hub, "INSERT INTO point_lots (member_id, partner_id, funding_account_id, earn_transaction_id, "
                         "state, points_earned, points_remaining, earned_at, expires_at) "
                         "SELECT member_id, partner_id, funding_account_id, :txn, state, 10, 1000, earned_at, "
                         "expires_at FROM point_lots WHERE id = :lot", txn=transaction_id, lot=lot_id)
