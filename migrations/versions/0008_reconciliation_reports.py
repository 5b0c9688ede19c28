"""Reconciliation reports: what matching a partner's own file for a cycle found.

Why: finance and partners reconcile each statement against the partner's records; the
report (matched, missing on either side, mismatched) is kept as rendered, append-only,
so a later dispute can point at exactly what was found.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-24
"""

import sqlalchemy as sa
from alembic import op

from alliance.models.base import UTCDateTime

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "reconciliation_reports",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("statement_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("partner_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("source", sa.String(length=12), nullable=False),
        sa.Column("uploaded_by", sa.String(length=200), nullable=False),
        sa.Column("uploaded_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("discrepancies", sa.Integer(), nullable=False),
        sa.Column("report_json", sa.Text(), nullable=False),
        sa.Column("report_csv", sa.Text(), nullable=False),
        sa.CheckConstraint("source IN ('partner', 'back_office')", name=op.f("ck_reconciliation_reports_source")),
        sa.ForeignKeyConstraint(["partner_id"], ["partners.id"],
                                name=op.f("fk_reconciliation_reports_partner_id_partners")),
        sa.ForeignKeyConstraint(["statement_id"], ["statements.id"],
                                name=op.f("fk_reconciliation_reports_statement_id_statements")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reconciliation_reports")),
    )
    op.create_index(op.f("ix_reconciliation_reports_statement_id"), "reconciliation_reports", ["statement_id"])
    if op.get_bind().dialect.name == "postgresql":
        op.execute("CREATE TRIGGER trg_reconciliation_reports_append_only BEFORE UPDATE OR DELETE "
                   "ON reconciliation_reports FOR EACH ROW EXECUTE FUNCTION alliance_refuse_change()")
    else:
        for operation in ("UPDATE", "DELETE"):
            op.execute(f"""CREATE TRIGGER trg_reconciliation_reports_no_{operation.lower()} BEFORE {operation}
                ON reconciliation_reports BEGIN
                SELECT RAISE(ABORT, 'reconciliation reports are append-only: {operation} is refused');
            END""")


def downgrade() -> None:
    op.drop_index(op.f("ix_reconciliation_reports_statement_id"), table_name="reconciliation_reports")
    op.drop_table("reconciliation_reports")
