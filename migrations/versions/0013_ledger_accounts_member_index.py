"""Index ledger accounts by member.

Why: every posting locks a member's three accounts (``WHERE member_id = …``) and every
balance inquiry reads them the same way, but PostgreSQL does not index a foreign key by
itself: with a million members each such lookup scanned three million account rows
(130 ms at the median in the balance-inquiry benchmark).

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-30
"""

from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(op.f("ix_ledger_accounts_member_id"), "ledger_accounts", ["member_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_ledger_accounts_member_id"), table_name="ledger_accounts")
