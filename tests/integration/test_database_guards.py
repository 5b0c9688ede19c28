"""The database keeps the books honest on its own: raw SQL cannot break them."""

from __future__ import annotations

from datetime import timedelta
from typing import Iterator

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, IntegrityError

from alliance.extensions import HubState, hub_state
from alliance.services import ledger
from tests.conftest import _app_for
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


def journal_count(hub) -> int:
    with hub.engine.connect() as connection:
        return connection.execute(text("SELECT count(*) FROM journal_transactions")).scalar_one()


def test_an_unbalanced_transaction_is_refused_at_commit_on_both_databases(hub, now):
    make_partner(hub, now=now)
    member = make_member(hub, now=now)
    # PostgreSQL names the transaction in its constraint trigger's message; SQLite's
    # deferred foreign key (migration 0014) fails the COMMIT itself.
    with pytest.raises(IntegrityError, match="unbalanced|FOREIGN KEY constraint failed"):
        with hub.engine.begin() as connection:
            transaction_id = connection.execute(text(
                "INSERT INTO journal_transactions (kind, member_id, posted_at) "
                "VALUES ('earn', :member, CURRENT_TIMESTAMP) RETURNING id"), {"member": member.member_id}).scalar_one()
            connection.execute(text(
                "INSERT INTO journal_entries (transaction_id, account_id, amount_points) "
                "SELECT :txn, id, 50 FROM ledger_accounts WHERE code = :code"),
                {"txn": transaction_id, "code": f"member:{member.member_id}:available"})
    assert journal_count(hub) == 0
    with hub.engine.connect() as connection:
        assert connection.execute(text("SELECT balance_points FROM ledger_accounts WHERE code = :code"),
                                  {"code": f"member:{member.member_id}:available"}).scalar_one() == 0


def test_a_transaction_without_entries_is_refused_on_both_databases(hub):
    with pytest.raises(IntegrityError, match="unbalanced: 0 entries|FOREIGN KEY constraint failed"):
        execute_raw(hub, "INSERT INTO journal_transactions (kind, posted_at) VALUES ('earn', CURRENT_TIMESTAMP)")
    assert journal_count(hub) == 0


def test_an_entry_added_later_to_a_balanced_transaction_is_refused(hub, posted):
    member_id, transaction_id, _ = posted
    with pytest.raises(IntegrityError, match="unbalanced|FOREIGN KEY constraint failed"):
        execute_raw(hub, "INSERT INTO journal_entries (transaction_id, account_id, amount_points) "
                         "SELECT :txn, id, 7 FROM ledger_accounts WHERE code = :code",
                    txn=transaction_id, code=f"member:{member_id}:available")
    with hub.engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM journal_entries WHERE transaction_id = :txn"),
                                  {"txn": transaction_id}).scalar_one() == 2


@pytest.fixture
def sqlite_hub(sqlite_url: str, tmp_path) -> Iterator[HubState]:
    """The database state of a hub on a fresh SQLite database."""
    for app in _app_for(sqlite_url, tmp_path / "instance"):
        yield hub_state(app)


def test_sqlite_balance_markers_cannot_be_forged(sqlite_hub, now):
    partner_id = make_partner(sqlite_hub, now=now)
    member = make_member(sqlite_hub, now=now)
    with sqlite_hub.unit_of_work() as uow:
        ledger.earn(uow.session, member_id=member.member_id, partner_id=partner_id, points=100, now=now,
                    expires_at=now + EXPIRY)
        uow.commit()
    # Marking a one-sided transaction as balanced by hand is refused inside the write.
    with pytest.raises(DBAPIError, match="changes only through journal entries"):
        with sqlite_hub.engine.begin() as connection:
            transaction_id = connection.execute(text(
                "INSERT INTO journal_transactions (kind, member_id, posted_at) "
                "VALUES ('earn', :member, CURRENT_TIMESTAMP) RETURNING id"), {"member": member.member_id}).scalar_one()
            connection.execute(text("UPDATE journal_balances SET balanced_transaction_id = transaction_id "
                                    "WHERE transaction_id = :txn"), {"txn": transaction_id})
    for statement, refusal in (
        ("DELETE FROM journal_balances", "append-only"),
        ("UPDATE journal_balances SET balanced_transaction_id = NULL", "changes only through journal entries"),
        ("INSERT INTO journal_balances (transaction_id, balanced_transaction_id) VALUES (999, 999)", "open unbalanced"),
    ):
        with pytest.raises(DBAPIError, match=refusal):
            execute_raw(sqlite_hub, statement)
    assert journal_count(sqlite_hub) == 1
