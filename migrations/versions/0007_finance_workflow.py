"""Finance workflow: adjustments with a second approver, their application, invoices and payments.

Why: a late correction is an adjustment in a later cycle, and it must be approved by a
second staff member before it lands (the ``second_approver`` check is the database's
backstop). Which run applied an adjustment is an append-only row, not an edit of the
statement, so closed statements stay byte-identical. Invoices and payments are
append-only events on a statement: what was paid is the sum of its payment events.
A dispute on a statement line is resolved by linking an approved adjustment (each
adjustment resolves at most one dispute) or rejected; it changes state once.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-24
"""

import sqlalchemy as sa
from alembic import op

from alliance.models.base import UTCDateTime

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None

ID = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')


def upgrade() -> None:
    op.create_table('adjustments',
    sa.Column('id', ID, nullable=False),
    sa.Column('partner_id', ID, nullable=False),
    sa.Column('amount_minor', sa.BigInteger(), nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('reference', sa.String(length=64), nullable=False),
    sa.Column('status', sa.String(length=10), nullable=False),
    sa.Column('requested_by', sa.String(length=200), nullable=False),
    sa.Column('requested_at', UTCDateTime(timezone=True), nullable=False),
    sa.Column('decided_by', sa.String(length=200), nullable=True),
    sa.Column('decided_at', UTCDateTime(timezone=True), nullable=True),
    sa.CheckConstraint('amount_minor <> 0', name=op.f('ck_adjustments_amount_not_zero')),
    sa.CheckConstraint("status IN ('pending', 'approved', 'rejected')", name=op.f('ck_adjustments_status')),
    sa.CheckConstraint("(status = 'pending') = (decided_by IS NULL)",
                       name=op.f('ck_adjustments_decided_when_not_pending')),
    sa.CheckConstraint('decided_by IS NULL OR decided_by <> requested_by',
                       name=op.f('ck_adjustments_second_approver')),
    sa.ForeignKeyConstraint(['partner_id'], ['partners.id'], name=op.f('fk_adjustments_partner_id_partners')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_adjustments')),
    sa.UniqueConstraint('partner_id', 'reference', name=op.f('uq_adjustments_partner_id_reference'))
    )
    op.create_index('ix_adjustments_partner_id_status', 'adjustments', ['partner_id', 'status'], unique=False)
    op.create_table('adjustment_applications',
    sa.Column('id', ID, nullable=False),
    sa.Column('adjustment_id', ID, nullable=False),
    sa.Column('run_id', ID, nullable=False),
    sa.ForeignKeyConstraint(['adjustment_id'], ['adjustments.id'],
                            name=op.f('fk_adjustment_applications_adjustment_id_adjustments')),
    sa.ForeignKeyConstraint(['run_id'], ['settlement_runs.id'],
                            name=op.f('fk_adjustment_applications_run_id_settlement_runs')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_adjustment_applications')),
    sa.UniqueConstraint('adjustment_id', name=op.f('uq_adjustment_applications_adjustment_id'))
    )
    op.create_index(op.f('ix_adjustment_applications_run_id'), 'adjustment_applications', ['run_id'], unique=False)
    op.create_table('statement_events',
    sa.Column('id', ID, nullable=False),
    sa.Column('statement_id', ID, nullable=False),
    sa.Column('kind', sa.String(length=10), nullable=False),
    sa.Column('amount_minor', sa.BigInteger(), nullable=True),
    sa.Column('paid_on', sa.Date(), nullable=True),
    sa.Column('reference', sa.String(length=64), nullable=False),
    sa.Column('actor', sa.String(length=200), nullable=False),
    sa.Column('at', UTCDateTime(timezone=True), nullable=False),
    sa.CheckConstraint("kind IN ('invoiced', 'paid')", name=op.f('ck_statement_events_kind')),
    sa.CheckConstraint("(kind = 'paid' AND amount_minor > 0 AND paid_on IS NOT NULL) OR "
                       "(kind = 'invoiced' AND amount_minor IS NULL AND paid_on IS NULL)",
                       name=op.f('ck_statement_events_paid_has_amount_and_date')),
    sa.ForeignKeyConstraint(['statement_id'], ['statements.id'],
                            name=op.f('fk_statement_events_statement_id_statements')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_statement_events'))
    )
    op.create_index('ix_statement_events_statement_id', 'statement_events', ['statement_id'], unique=False)
    op.create_table('statement_line_disputes',
    sa.Column('id', ID, nullable=False),
    sa.Column('statement_line_id', ID, nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('status', sa.String(length=10), nullable=False),
    sa.Column('opened_by', sa.String(length=200), nullable=False),
    sa.Column('opened_at', UTCDateTime(timezone=True), nullable=False),
    sa.Column('resolved_by', sa.String(length=200), nullable=True),
    sa.Column('resolved_at', UTCDateTime(timezone=True), nullable=True),
    sa.Column('adjustment_id', ID, nullable=True),
    sa.CheckConstraint("status IN ('open', 'adjusted', 'rejected')", name=op.f('ck_statement_line_disputes_status')),
    sa.CheckConstraint("(status = 'open') = (resolved_by IS NULL)",
                       name=op.f('ck_statement_line_disputes_resolved_when_not_open')),
    sa.CheckConstraint("(status = 'adjusted') = (adjustment_id IS NOT NULL)",
                       name=op.f('ck_statement_line_disputes_adjusted_has_adjustment')),
    sa.ForeignKeyConstraint(['adjustment_id'], ['adjustments.id'],
                            name=op.f('fk_statement_line_disputes_adjustment_id_adjustments')),
    sa.ForeignKeyConstraint(['statement_line_id'], ['statement_lines.id'],
                            name=op.f('fk_statement_line_disputes_statement_line_id_statement_lines')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_statement_line_disputes')),
    sa.UniqueConstraint('adjustment_id', name=op.f('uq_statement_line_disputes_adjustment_id'))
    )
    op.create_index('ix_statement_line_disputes_status', 'statement_line_disputes', ['status'], unique=False)
    op.create_index(op.f('ix_statement_line_disputes_statement_line_id'), 'statement_line_disputes',
                    ['statement_line_id'], unique=False)
    _install_append_only_guards()


def downgrade() -> None:
    op.drop_index(op.f('ix_statement_line_disputes_statement_line_id'), table_name='statement_line_disputes')
    op.drop_index('ix_statement_line_disputes_status', table_name='statement_line_disputes')
    op.drop_table('statement_line_disputes')
    op.drop_index('ix_statement_events_statement_id', table_name='statement_events')
    op.drop_table('statement_events')
    op.drop_index(op.f('ix_adjustment_applications_run_id'), table_name='adjustment_applications')
    op.drop_table('adjustment_applications')
    op.drop_index('ix_adjustments_partner_id_status', table_name='adjustments')
    op.drop_table('adjustments')


APPEND_ONLY_TABLES = ("adjustment_applications", "statement_events")


def _install_append_only_guards() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for table in APPEND_ONLY_TABLES:
            op.execute(f"CREATE TRIGGER trg_{table}_append_only BEFORE UPDATE OR DELETE ON {table} "
                       "FOR EACH ROW EXECUTE FUNCTION alliance_refuse_change()")
            op.execute(f"CREATE TRIGGER trg_{table}_no_truncate BEFORE TRUNCATE ON {table} "
                       "FOR EACH STATEMENT EXECUTE FUNCTION alliance_refuse_change()")
        return
    for table in APPEND_ONLY_TABLES:
        for operation in ("UPDATE", "DELETE"):
            op.execute(f"""CREATE TRIGGER trg_{table}_no_{operation.lower()} BEFORE {operation} ON {table} BEGIN
                SELECT RAISE(ABORT, 'finance events are never edited: {operation} on {table} is refused');
            END""")
