"""SQLite refuses an unbalanced journal transaction at commit, as PostgreSQL does.

Why: PostgreSQL checks at commit, in a deferred constraint trigger, that every journal
transaction has two or more entries summing to zero. SQLite has no deferred triggers,
so until now a one-entry transaction committed there and only ``alliance audit``
noticed. SQLite does have deferred foreign keys, checked at COMMIT, and they carry the
same rule: every journal transaction gets a row in ``journal_balances`` whose
``transaction_id`` must match some row's ``balanced_transaction_id``, and a trigger
sets that column to the transaction's own id only while its entries sum to zero and
number two or more. A transaction left unbalanced is a dangling deferred reference, so
its COMMIT fails with ``FOREIGN KEY constraint failed`` and nothing of it is written.
Guards refuse any other change of the table. The hub turns foreign keys on for every
SQLite connection (``alliance.db``); ``alliance audit`` checks that, the triggers, and a
row per transaction.

PostgreSQL keeps its constraint trigger and gets no table.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-06
"""

from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

# A transaction is balanced when its entries number two or more and sum to zero.
BALANCED = """(SELECT count(*) >= 2 AND coalesce(sum(amount_points), 0) = 0
               FROM journal_entries WHERE transaction_id = {transaction_id})"""

SQLITE_STATEMENTS = [
    """CREATE TABLE journal_balances (
        transaction_id INTEGER NOT NULL,
        balanced_transaction_id INTEGER,
        CONSTRAINT pk_journal_balances PRIMARY KEY (transaction_id),
        CONSTRAINT uq_journal_balances_balanced_transaction_id UNIQUE (balanced_transaction_id),
        CONSTRAINT fk_journal_balances_transaction_id_journal_transactions
            FOREIGN KEY (transaction_id) REFERENCES journal_transactions (id),
        CONSTRAINT fk_journal_balances_balanced_at_commit
            FOREIGN KEY (transaction_id) REFERENCES journal_balances (balanced_transaction_id)
            DEFERRABLE INITIALLY DEFERRED
    )""",
    # Every existing transaction, marked as its entries stand (0001's rules kept them balanced).
    f"""INSERT INTO journal_balances (transaction_id, balanced_transaction_id)
        SELECT id, CASE WHEN {BALANCED.format(transaction_id="journal_transactions.id")} THEN id END
        FROM journal_transactions""",
    """CREATE TRIGGER trg_journal_transactions_open_balance AFTER INSERT ON journal_transactions BEGIN
        INSERT INTO journal_balances (transaction_id, balanced_transaction_id) VALUES (NEW.id, NULL);
    END""",
    f"""CREATE TRIGGER trg_journal_entries_balance AFTER INSERT ON journal_entries BEGIN
        UPDATE journal_balances
           SET balanced_transaction_id = CASE WHEN {BALANCED.format(transaction_id="NEW.transaction_id")}
                                              THEN NEW.transaction_id END
         WHERE transaction_id = NEW.transaction_id;
    END""",
    """CREATE TRIGGER trg_journal_balances_open_unbalanced BEFORE INSERT ON journal_balances
    WHEN NEW.balanced_transaction_id IS NOT NULL BEGIN
        SELECT RAISE(ABORT, 'journal_balances rows open unbalanced; only journal entries balance them');
    END""",
    f"""CREATE TRIGGER trg_journal_balances_guard BEFORE UPDATE ON journal_balances
    WHEN NEW.transaction_id IS NOT OLD.transaction_id
      OR NEW.balanced_transaction_id IS NOT
         CASE WHEN {BALANCED.format(transaction_id="NEW.transaction_id")} THEN NEW.transaction_id END
    BEGIN
        SELECT RAISE(ABORT, 'journal_balances changes only through journal entries');
    END""",
    """CREATE TRIGGER trg_journal_balances_no_delete BEFORE DELETE ON journal_balances BEGIN
        SELECT RAISE(ABORT, 'the ledger is append-only: DELETE on journal_balances is refused');
    END""",
]


def upgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    unbalanced = op.get_bind().exec_driver_sql(
        f"SELECT id FROM journal_transactions WHERE NOT {BALANCED.format(transaction_id='journal_transactions.id')} "
        "ORDER BY id LIMIT 1"
    ).scalar()
    if unbalanced is not None:
        raise RuntimeError(
            f"journal transaction {unbalanced} is unbalanced; run `alliance audit`, correct the books, then upgrade"
        )
    for statement in SQLITE_STATEMENTS:
        op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    for trigger in ("trg_journal_transactions_open_balance", "trg_journal_entries_balance",
                    "trg_journal_balances_open_unbalanced", "trg_journal_balances_guard",
                    "trg_journal_balances_no_delete"):
        op.execute(f"DROP TRIGGER {trigger}")
    op.execute("DROP TABLE journal_balances")
