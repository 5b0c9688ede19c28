"""Settlement: runs, signed statements and their lines.

Why: closing a partner's cycle must happen exactly once and never change afterwards.
A run per (partner, cycle start), enforced by a unique constraint, is the "exactly
once"; the statement keeps the very bytes that were signed (JSON, CSV and their
detached Ed25519 signatures), so a re-run returns them unchanged; its lines are kept
as rows so that cycle summaries, and later disputes, can address them. The money
rounding residue is stored per statement and line, because the ledger's rounding
account counts points, not money. Triggers refuse UPDATE and DELETE on all three
tables, as on the ledger: a late correction is an adjustment in a later cycle, never
an edit.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-24
"""

import sqlalchemy as sa
from alembic import op

from alliance.models.base import ExactDecimal, UTCDateTime

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('settlement_runs',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('partner_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('cycle_frequency', sa.String(length=10), nullable=False),
    sa.Column('cycle_starts_at', UTCDateTime(timezone=True), nullable=False),
    sa.Column('cycle_ends_at', UTCDateTime(timezone=True), nullable=False),
    sa.Column('closed_at', UTCDateTime(timezone=True), nullable=False),
    sa.CheckConstraint('cycle_starts_at < cycle_ends_at', name=op.f('ck_settlement_runs_cycle_bounds')),
    sa.ForeignKeyConstraint(['partner_id'], ['partners.id'], name=op.f('fk_settlement_runs_partner_id_partners')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_settlement_runs')),
    sa.UniqueConstraint('partner_id', 'cycle_starts_at', name=op.f('uq_settlement_runs_partner_id_cycle_starts_at'))
    )
    op.create_index('ix_settlement_runs_cycle_ends_at', 'settlement_runs', ['cycle_ends_at'], unique=False)
    op.create_table('statements',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('run_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('partner_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('opening_balance_minor', sa.BigInteger(), nullable=False),
    sa.Column('net_minor', sa.BigInteger(), nullable=False),
    sa.Column('closing_balance_minor', sa.BigInteger(), nullable=False),
    sa.Column('due_date', sa.Date(), nullable=False),
    sa.Column('rounding_residue_minor', ExactDecimal(precision=24, scale=8), nullable=False),
    sa.Column('document_json', sa.Text(), nullable=False),
    sa.Column('document_csv', sa.Text(), nullable=False),
    sa.Column('signature_json', sa.Text(), nullable=False),
    sa.Column('signature_csv', sa.Text(), nullable=False),
    sa.Column('key_id', sa.String(length=64), nullable=False),
    sa.CheckConstraint('closing_balance_minor = opening_balance_minor + net_minor',
                       name=op.f('ck_statements_closing_is_opening_plus_net')),
    sa.CheckConstraint('length(currency) = 3', name=op.f('ck_statements_currency')),
    sa.ForeignKeyConstraint(['partner_id'], ['partners.id'], name=op.f('fk_statements_partner_id_partners')),
    sa.ForeignKeyConstraint(['run_id'], ['settlement_runs.id'], name=op.f('fk_statements_run_id_settlement_runs')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_statements')),
    sa.UniqueConstraint('run_id', name=op.f('uq_statements_run_id'))
    )
    op.create_index('ix_statements_partner_id', 'statements', ['partner_id'], unique=False)
    op.create_table('statement_lines',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('statement_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('line_number', sa.Integer(), nullable=False),
    sa.Column('line_kind', sa.String(length=30), nullable=False),
    sa.Column('price_per_point', ExactDecimal(precision=20, scale=8), nullable=True),
    sa.Column('points', sa.BigInteger(), nullable=True),
    sa.Column('count', sa.BigInteger(), nullable=False),
    sa.Column('reference', sa.String(length=64), nullable=True),
    sa.Column('amount_minor', sa.BigInteger(), nullable=False),
    sa.Column('rounding_residue_minor', ExactDecimal(precision=24, scale=8), nullable=False),
    sa.CheckConstraint('count >= 1', name=op.f('ck_statement_lines_count_positive')),
    sa.ForeignKeyConstraint(['statement_id'], ['statements.id'],
                            name=op.f('fk_statement_lines_statement_id_statements')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_statement_lines')),
    sa.UniqueConstraint('statement_id', 'line_number', name=op.f('uq_statement_lines_statement_id_line_number'))
    )
    _install_closed_settlement_guards()


def downgrade() -> None:
    op.drop_table('statement_lines')
    op.drop_index('ix_statements_partner_id', table_name='statements')
    op.drop_table('statements')
    op.drop_index('ix_settlement_runs_cycle_ends_at', table_name='settlement_runs')
    op.drop_table('settlement_runs')


SETTLEMENT_TABLES = ("settlement_runs", "statements", "statement_lines")


def _install_closed_settlement_guards() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for table in SETTLEMENT_TABLES:
            op.execute(f"CREATE TRIGGER trg_{table}_append_only BEFORE UPDATE OR DELETE ON {table} "
                       "FOR EACH ROW EXECUTE FUNCTION alliance_refuse_change()")
            op.execute(f"CREATE TRIGGER trg_{table}_no_truncate BEFORE TRUNCATE ON {table} "
                       "FOR EACH STATEMENT EXECUTE FUNCTION alliance_refuse_change()")
        return
    for table in SETTLEMENT_TABLES:
        for operation in ("UPDATE", "DELETE"):
            op.execute(f"""CREATE TRIGGER trg_{table}_no_{operation.lower()} BEFORE {operation} ON {table} BEGIN
                SELECT RAISE(ABORT, 'closed settlements are never edited: {operation} on {table} is refused');
            END""")
