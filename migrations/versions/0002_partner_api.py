"""Partner API: purchases, refunds, idempotency keys, signature nonces, redemption codes, campaigns.

Why: the signed partner API needs durable records of what partners reported (with
receipt ids and redemption references unique per partner), a unique idempotency key
per partner so a retried request never has a second effect, a unique nonce per
signature so a captured request cannot be replayed, one-time redemption codes, and
campaigns whose funder is explicit.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24
"""

import sqlalchemy as sa
from alembic import op

from alliance.models.base import ExactDecimal, UTCDateTime

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('campaigns',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('partner_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('funded_by', sa.String(length=10), nullable=False),
    sa.Column('multiplier', ExactDecimal(precision=8, scale=4), nullable=False),
    sa.Column('bonus_points', sa.Integer(), nullable=False),
    sa.Column('min_amount_minor', sa.BigInteger(), nullable=False),
    sa.Column('starts_at', UTCDateTime(timezone=True), nullable=False),
    sa.Column('ends_at', UTCDateTime(timezone=True), nullable=False),
    sa.CheckConstraint("funded_by = 'hub' OR partner_id IS NOT NULL", name=op.f('ck_campaigns_partner_funds_own')),
    sa.CheckConstraint("funded_by IN ('partner', 'hub')", name=op.f('ck_campaigns_funded_by')),
    sa.CheckConstraint('ends_at > starts_at', name=op.f('ck_campaigns_period')),
    sa.CheckConstraint('multiplier >= 1 AND bonus_points >= 0 AND min_amount_minor >= 0',
                       name=op.f('ck_campaigns_terms')),
    sa.ForeignKeyConstraint(['partner_id'], ['partners.id'], name=op.f('fk_campaigns_partner_id_partners')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_campaigns'))
    )
    op.create_index('ix_campaigns_period', 'campaigns', ['starts_at', 'ends_at'], unique=False)
    op.create_table('idempotency_keys',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('partner_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('idempotency_key', sa.String(length=255), nullable=False),
    sa.Column('request_fingerprint', sa.String(length=64), nullable=False),
    sa.Column('status', sa.String(length=10), nullable=False),
    sa.Column('response_status', sa.Integer(), nullable=True),
    sa.Column('response_body', sa.Text(), nullable=True),
    sa.Column('created_at', UTCDateTime(timezone=True), nullable=False),
    sa.Column('completed_at', UTCDateTime(timezone=True), nullable=True),
    sa.CheckConstraint("status IN ('in_flight', 'completed')", name=op.f('ck_idempotency_keys_status')),
    sa.ForeignKeyConstraint(['partner_id'], ['partners.id'], name=op.f('fk_idempotency_keys_partner_id_partners')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_idempotency_keys')),
    sa.UniqueConstraint('partner_id', 'idempotency_key', name=op.f('uq_idempotency_keys_partner_id_idempotency_key'))
    )
    op.create_index('ix_idempotency_keys_created_at', 'idempotency_keys', ['created_at'], unique=False)
    op.create_table('redemption_codes',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('member_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('code_hash', sa.String(length=64), nullable=False),
    sa.Column('created_at', UTCDateTime(timezone=True), nullable=False),
    sa.Column('expires_at', UTCDateTime(timezone=True), nullable=False),
    sa.Column('used_at', UTCDateTime(timezone=True), nullable=True),
    sa.Column('used_by_partner_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.ForeignKeyConstraint(['member_id'], ['members.id'], name=op.f('fk_redemption_codes_member_id_members')),
    sa.ForeignKeyConstraint(['used_by_partner_id'], ['partners.id'],
                            name=op.f('fk_redemption_codes_used_by_partner_id_partners')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_redemption_codes')),
    sa.UniqueConstraint('code_hash', name=op.f('uq_redemption_codes_code_hash'))
    )
    op.create_index(op.f('ix_redemption_codes_member_id'), 'redemption_codes', ['member_id'], unique=False)
    op.create_table('signature_nonces',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('nonce', sa.String(length=128), nullable=False),
    sa.Column('partner_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('key_id', sa.String(length=100), nullable=False),
    sa.Column('seen_at', UTCDateTime(timezone=True), nullable=False),
    sa.Column('prune_after', UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['partner_id'], ['partners.id'], name=op.f('fk_signature_nonces_partner_id_partners')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_signature_nonces')),
    sa.UniqueConstraint('nonce', name=op.f('uq_signature_nonces_nonce'))
    )
    op.create_index('ix_signature_nonces_prune_after', 'signature_nonces', ['prune_after'], unique=False)
    op.create_table('purchases',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('partner_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('receipt_id', sa.String(length=64), nullable=False),
    sa.Column('member_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('card_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('terminal_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('amount_minor', sa.BigInteger(), nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('purchased_at', UTCDateTime(timezone=True), nullable=False),
    sa.Column('reported_at', UTCDateTime(timezone=True), nullable=False),
    sa.Column('points_partner', sa.BigInteger(), nullable=False),
    sa.Column('points_hub', sa.BigInteger(), nullable=False),
    sa.Column('earn_transaction_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('bonus_transaction_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('pending_until', UTCDateTime(timezone=True), nullable=True),
    sa.Column('breakdown', sa.JSON(), nullable=False),
    sa.Column('refunded_amount_minor', sa.BigInteger(), nullable=False),
    sa.CheckConstraint('amount_minor > 0', name=op.f('ck_purchases_amount_positive')),
    sa.CheckConstraint('points_partner >= 0 AND points_hub >= 0', name=op.f('ck_purchases_points_not_negative')),
    sa.CheckConstraint('refunded_amount_minor >= 0 AND refunded_amount_minor <= amount_minor',
                       name=op.f('ck_purchases_refund_in_range')),
    sa.ForeignKeyConstraint(['bonus_transaction_id'], ['journal_transactions.id'],
                            name=op.f('fk_purchases_bonus_transaction_id_journal_transactions')),
    sa.ForeignKeyConstraint(['card_id'], ['cards.id'], name=op.f('fk_purchases_card_id_cards')),
    sa.ForeignKeyConstraint(['earn_transaction_id'], ['journal_transactions.id'],
                            name=op.f('fk_purchases_earn_transaction_id_journal_transactions')),
    sa.ForeignKeyConstraint(['member_id'], ['members.id'], name=op.f('fk_purchases_member_id_members')),
    sa.ForeignKeyConstraint(['partner_id'], ['partners.id'], name=op.f('fk_purchases_partner_id_partners')),
    sa.ForeignKeyConstraint(['terminal_id'], ['terminals.id'], name=op.f('fk_purchases_terminal_id_terminals')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_purchases')),
    sa.UniqueConstraint('partner_id', 'receipt_id', name=op.f('uq_purchases_partner_id_receipt_id'))
    )
    op.create_index('ix_purchases_member_partner_reported', 'purchases', ['member_id', 'partner_id', 'reported_at'],
                    unique=False)
    op.create_table('redemption_refunds',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('hold_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('partner_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('refund_id', sa.String(length=64), nullable=False),
    sa.Column('points', sa.BigInteger(), nullable=False),
    sa.Column('transaction_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('created_at', UTCDateTime(timezone=True), nullable=False),
    sa.CheckConstraint('points > 0', name=op.f('ck_redemption_refunds_points_positive')),
    sa.ForeignKeyConstraint(['hold_id'], ['redemption_holds.id'],
                            name=op.f('fk_redemption_refunds_hold_id_redemption_holds')),
    sa.ForeignKeyConstraint(['partner_id'], ['partners.id'], name=op.f('fk_redemption_refunds_partner_id_partners')),
    sa.ForeignKeyConstraint(['transaction_id'], ['journal_transactions.id'],
                            name=op.f('fk_redemption_refunds_transaction_id_journal_transactions')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_redemption_refunds')),
    sa.UniqueConstraint('partner_id', 'refund_id', name=op.f('uq_redemption_refunds_partner_id_refund_id'))
    )
    op.create_index(op.f('ix_redemption_refunds_hold_id'), 'redemption_refunds', ['hold_id'], unique=False)
    op.create_table('purchase_refunds',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('purchase_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('partner_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('refund_id', sa.String(length=64), nullable=False),
    sa.Column('amount_minor', sa.BigInteger(), nullable=False),
    sa.Column('points_recovered', sa.BigInteger(), nullable=False),
    sa.Column('points_unrecovered', sa.BigInteger(), nullable=False),
    sa.Column('created_at', UTCDateTime(timezone=True), nullable=False),
    sa.CheckConstraint('amount_minor > 0', name=op.f('ck_purchase_refunds_amount_positive')),
    sa.ForeignKeyConstraint(['partner_id'], ['partners.id'], name=op.f('fk_purchase_refunds_partner_id_partners')),
    sa.ForeignKeyConstraint(['purchase_id'], ['purchases.id'], name=op.f('fk_purchase_refunds_purchase_id_purchases')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_purchase_refunds')),
    sa.UniqueConstraint('partner_id', 'refund_id', name=op.f('uq_purchase_refunds_partner_id_refund_id'))
    )
    op.create_index(op.f('ix_purchase_refunds_purchase_id'), 'purchase_refunds', ['purchase_id'], unique=False)
    op.add_column('redemption_holds', sa.Column('reference', sa.String(length=64), nullable=True))
    if op.get_bind().dialect.name == 'sqlite':
        # SQLite adds a referencing column in place only with an inline REFERENCES clause.
        op.execute('ALTER TABLE redemption_holds ADD COLUMN terminal_id INTEGER REFERENCES terminals (id)')
        op.execute('ALTER TABLE redemption_holds ADD COLUMN card_id INTEGER REFERENCES cards (id)')
    else:
        op.add_column('redemption_holds', sa.Column('terminal_id', sa.BigInteger(), nullable=True))
        op.add_column('redemption_holds', sa.Column('card_id', sa.BigInteger(), nullable=True))
        op.create_foreign_key(op.f('fk_redemption_holds_terminal_id_terminals'), 'redemption_holds', 'terminals',
                              ['terminal_id'], ['id'])
        op.create_foreign_key(op.f('fk_redemption_holds_card_id_cards'), 'redemption_holds', 'cards',
                              ['card_id'], ['id'])
    op.create_index('uq_redemption_holds_partner_id_reference', 'redemption_holds', ['partner_id', 'reference'],
                    unique=True)


def downgrade() -> None:
    op.drop_index('uq_redemption_holds_partner_id_reference', table_name='redemption_holds')
    # SQLite (3.35+) drops a column only without a foreign key, so the batch mode
    # rebuilds the table there; PostgreSQL drops constraint and column in place.
    with op.batch_alter_table('redemption_holds') as batch:
        batch.drop_column('card_id')
        batch.drop_column('terminal_id')
        batch.drop_column('reference')
    op.drop_index(op.f('ix_purchase_refunds_purchase_id'), table_name='purchase_refunds')
    op.drop_table('purchase_refunds')
    op.drop_index(op.f('ix_redemption_refunds_hold_id'), table_name='redemption_refunds')
    op.drop_table('redemption_refunds')
    op.drop_index('ix_purchases_member_partner_reported', table_name='purchases')
    op.drop_table('purchases')
    op.drop_index('ix_signature_nonces_prune_after', table_name='signature_nonces')
    op.drop_table('signature_nonces')
    op.drop_index(op.f('ix_redemption_codes_member_id'), table_name='redemption_codes')
    op.drop_table('redemption_codes')
    op.drop_index('ix_idempotency_keys_created_at', table_name='idempotency_keys')
    op.drop_table('idempotency_keys')
    op.drop_index('ix_campaigns_period', table_name='campaigns')
    op.drop_table('campaigns')
