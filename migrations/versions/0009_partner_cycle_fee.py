"""Partner cycle fee: a fixed fee per settlement cycle, charged on the statement.

Why: statements carry fees beside points issued and redeemed (docs/design.md, "What
settles"); the simplest fee an alliance charges its members is a fixed amount per
cycle, set per partner.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-24
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        # In place, with a column CHECK: rebuilding the partners table would need every
        # referencing table's foreign keys switched off.
        op.execute("ALTER TABLE partners ADD COLUMN cycle_fee_minor BIGINT NOT NULL DEFAULT 0 "
                   "CONSTRAINT ck_partners_cycle_fee CHECK (cycle_fee_minor >= 0)")
        return
    op.add_column("partners", sa.Column("cycle_fee_minor", sa.BigInteger(), server_default="0", nullable=False))
    op.create_check_constraint(op.f("ck_partners_cycle_fee"), "partners", "cycle_fee_minor >= 0")


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        op.drop_constraint(op.f("ck_partners_cycle_fee"), "partners", type_="check")
    op.drop_column("partners", "cycle_fee_minor")
