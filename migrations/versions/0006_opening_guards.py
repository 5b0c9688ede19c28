"""Opening guards: ledger accounts open at zero, lots open full.

Why: the triggers of 0001 stop UPDATE and DELETE from making a stored balance or a lot
remainder disagree with its rows, but a raw INSERT could still open a member account
with a balance, or a lot with a remainder other than what it earned. These triggers
close that gap, so raw SQL cannot create points out of nothing on either database.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-24
"""

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

POSTGRESQL_GUARDS = """
CREATE FUNCTION alliance_guard_new_account() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.balance_points IS NOT NULL AND NEW.balance_points <> 0 THEN
        RAISE EXCEPTION 'ledger account % must open at zero; balances change only through journal entries', NEW.code
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    RETURN NEW;
END $$;

CREATE FUNCTION alliance_guard_new_lot() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.points_remaining <> NEW.points_earned THEN
        RAISE EXCEPTION 'a lot must open with all it earned; it changes only through lot consumptions'
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER trg_ledger_accounts_open_at_zero BEFORE INSERT ON ledger_accounts
    FOR EACH ROW EXECUTE FUNCTION alliance_guard_new_account();
CREATE TRIGGER trg_point_lots_open_full BEFORE INSERT ON point_lots
    FOR EACH ROW EXECUTE FUNCTION alliance_guard_new_lot();
"""

SQLITE_GUARDS = [
    """CREATE TRIGGER trg_ledger_accounts_open_at_zero BEFORE INSERT ON ledger_accounts
    WHEN NEW.balance_points IS NOT NULL AND NEW.balance_points <> 0 BEGIN
        SELECT RAISE(ABORT, 'ledger account must open at zero; balances change only through journal entries');
    END""",
    """CREATE TRIGGER trg_point_lots_open_full BEFORE INSERT ON point_lots
    WHEN NEW.points_remaining <> NEW.points_earned BEGIN
        SELECT RAISE(ABORT, 'a lot must open with all it earned; it changes only through lot consumptions');
    END""",
]


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(POSTGRESQL_GUARDS)
    else:
        for statement in SQLITE_GUARDS:
            op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION alliance_guard_new_account() CASCADE")
        op.execute("DROP FUNCTION alliance_guard_new_lot() CASCADE")
    else:
        op.execute("DROP TRIGGER trg_ledger_accounts_open_at_zero")
        op.execute("DROP TRIGGER trg_point_lots_open_full")
