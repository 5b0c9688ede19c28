"""A campaign budget in money: what the funders are charged for its awards, counted exactly.

Why: a campaign could be capped only in points. A partner-funded or joint campaign may now
be capped in money instead (``budget_minor`` in minor units of ``budget_currency``): the
funders are charged points x their issue price in force for every award, and that exact
cost (up to 8 decimal places of a minor unit, since statements round per line, not per
award) is added to ``budget_used_amount`` under the campaign's row lock, which never
passes the budget. A campaign has a points budget, a money budget, or none.

Revision ID: 0026
Revises: 0025
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

from alliance.models.base import ExactDecimal

revision = "0026"
down_revision = "0025"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("campaigns") as batch:
        batch.add_column(sa.Column("budget_minor", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("budget_currency", sa.CHAR(length=3), nullable=True))
        batch.add_column(sa.Column("budget_used_amount", ExactDecimal(precision=20, scale=8), nullable=False,
                                   server_default="0"))
        batch.create_check_constraint("budget_currency", "(budget_minor IS NULL) = (budget_currency IS NULL)")
        batch.create_check_constraint(
            "budget_money", "budget_minor IS NULL OR (budget_minor > 0 AND budget_used_amount <= budget_minor)")
        batch.create_check_constraint("budget_used_amount", "budget_used_amount >= 0")
        batch.create_check_constraint("one_budget", "budget_points IS NULL OR budget_minor IS NULL")


def downgrade() -> None:
    with op.batch_alter_table("campaigns") as batch:
        batch.drop_constraint(op.f("ck_campaigns_one_budget"), type_="check")
        batch.drop_constraint(op.f("ck_campaigns_budget_used_amount"), type_="check")
        batch.drop_constraint(op.f("ck_campaigns_budget_money"), type_="check")
        batch.drop_constraint(op.f("ck_campaigns_budget_currency"), type_="check")
        for column in ("budget_used_amount", "budget_currency", "budget_minor"):
            batch.drop_column(column)
