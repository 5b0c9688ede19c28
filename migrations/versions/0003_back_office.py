"""Back office: OAuth 2 clients and tokens, the hash-chained audit log, encrypted member
profiles, complaints, and member-to-member transfers.

Why: staff and back-office systems need their own authentication (OAuth 2 client
credentials, roles as scopes), every back-office change must be provable after the fact
(an append-only, hash-chained log), personal data must be kept apart from the ledger so
that it can be encrypted, rotated and erased without touching the books, and transfers
need lots that remember the sender's lot so issuer and expiry carry over.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24
"""

import sqlalchemy as sa
from alembic import op

from alliance.models.base import UTCDateTime

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('audit_log',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('sequence', sa.BigInteger(), nullable=False),
    sa.Column('occurred_at', UTCDateTime(timezone=True), nullable=False),
    sa.Column('actor', sa.String(length=200), nullable=False),
    sa.Column('action', sa.String(length=100), nullable=False),
    sa.Column('subject', sa.String(length=200), nullable=False),
    sa.Column('before', sa.JSON(), nullable=True),
    sa.Column('after', sa.JSON(), nullable=True),
    sa.Column('previous_hash', sa.String(length=64), nullable=False),
    sa.Column('entry_hash', sa.String(length=64), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_audit_log')),
    sa.UniqueConstraint('sequence', name=op.f('uq_audit_log_sequence'))
    )
    op.create_table('oauth_clients',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('client_id', sa.String(length=64), nullable=False),
    sa.Column('client_secret_hash', sa.String(length=200), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('roles', sa.String(length=200), nullable=False),
    sa.Column('status', sa.String(length=10), nullable=False),
    sa.Column('created_at', UTCDateTime(timezone=True), nullable=False),
    sa.CheckConstraint("status IN ('active', 'revoked')", name=op.f('ck_oauth_clients_status')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_oauth_clients')),
    sa.UniqueConstraint('client_id', name=op.f('uq_oauth_clients_client_id'))
    )
    op.create_table('member_profiles',
    sa.Column('member_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('name_encrypted', sa.Text(), nullable=True),
    sa.Column('phone_encrypted', sa.Text(), nullable=True),
    sa.Column('email_encrypted', sa.Text(), nullable=True),
    sa.Column('phone_lookup', sa.String(length=64), nullable=True),
    sa.Column('email_lookup', sa.String(length=64), nullable=True),
    sa.Column('updated_at', UTCDateTime(timezone=True), nullable=False),
    sa.Column('erased_at', UTCDateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['member_id'], ['members.id'], name=op.f('fk_member_profiles_member_id_members')),
    sa.PrimaryKeyConstraint('member_id', name=op.f('pk_member_profiles'))
    )
    op.create_index(op.f('ix_member_profiles_email_lookup'), 'member_profiles', ['email_lookup'], unique=False)
    op.create_index(op.f('ix_member_profiles_phone_lookup'), 'member_profiles', ['phone_lookup'], unique=False)
    op.create_table('member_transfers',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('from_member_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('to_member_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('points', sa.BigInteger(), nullable=False),
    sa.Column('created_at', UTCDateTime(timezone=True), nullable=False),
    sa.Column('created_by', sa.String(length=200), nullable=False),
    sa.CheckConstraint('from_member_id <> to_member_id', name=op.f('ck_member_transfers_different_members')),
    sa.CheckConstraint('points > 0', name=op.f('ck_member_transfers_points_positive')),
    sa.ForeignKeyConstraint(['from_member_id'], ['members.id'],
                            name=op.f('fk_member_transfers_from_member_id_members')),
    sa.ForeignKeyConstraint(['to_member_id'], ['members.id'], name=op.f('fk_member_transfers_to_member_id_members')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_member_transfers'))
    )
    op.create_index('ix_member_transfers_from_created', 'member_transfers', ['from_member_id', 'created_at'],
                    unique=False)
    op.create_table('oauth_tokens',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('client_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('access_token_hash', sa.String(length=64), nullable=False),
    sa.Column('scope', sa.String(length=200), nullable=False),
    sa.Column('issued_at', UTCDateTime(timezone=True), nullable=False),
    sa.Column('expires_at', UTCDateTime(timezone=True), nullable=False),
    sa.Column('revoked_at', UTCDateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['client_id'], ['oauth_clients.id'], name=op.f('fk_oauth_tokens_client_id_oauth_clients')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_oauth_tokens')),
    sa.UniqueConstraint('access_token_hash', name=op.f('uq_oauth_tokens_access_token_hash'))
    )
    op.create_index(op.f('ix_oauth_tokens_client_id'), 'oauth_tokens', ['client_id'], unique=False)
    op.create_index('ix_oauth_tokens_expires_at', 'oauth_tokens', ['expires_at'], unique=False)
    op.create_table('complaints',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('partner_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('member_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('purchase_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('hold_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('category', sa.String(length=30), nullable=False),
    sa.Column('description', sa.Text(), nullable=False),
    sa.Column('status', sa.String(length=15), nullable=False),
    sa.Column('opened_by', sa.String(length=200), nullable=False),
    sa.Column('opened_at', UTCDateTime(timezone=True), nullable=False),
    sa.Column('investigating_at', UTCDateTime(timezone=True), nullable=True),
    sa.Column('closed_at', UTCDateTime(timezone=True), nullable=True),
    sa.Column('resolution_note', sa.Text(), nullable=True),
    sa.CheckConstraint("category IN ('points_missing', 'wrong_points', 'redemption_refused', 'redemption_error',"
                       " 'staff_conduct', 'product_or_service', 'other')",
                       name=op.f('ck_complaints_category')),
    sa.CheckConstraint("status IN ('open', 'investigating', 'resolved', 'rejected')",
                       name=op.f('ck_complaints_status')),
    sa.ForeignKeyConstraint(['hold_id'], ['redemption_holds.id'], name=op.f('fk_complaints_hold_id_redemption_holds')),
    sa.ForeignKeyConstraint(['member_id'], ['members.id'], name=op.f('fk_complaints_member_id_members')),
    sa.ForeignKeyConstraint(['partner_id'], ['partners.id'], name=op.f('fk_complaints_partner_id_partners')),
    sa.ForeignKeyConstraint(['purchase_id'], ['purchases.id'], name=op.f('fk_complaints_purchase_id_purchases')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_complaints'))
    )
    op.create_index('ix_complaints_partner_opened', 'complaints', ['partner_id', 'opened_at'], unique=False)
    _add_referencing_columns()
    _install_audit_log_guards()


def downgrade() -> None:
    _remove_referencing_columns()
    op.drop_index('ix_complaints_partner_opened', table_name='complaints')
    op.drop_table('complaints')
    op.drop_index('ix_oauth_tokens_expires_at', table_name='oauth_tokens')
    op.drop_index(op.f('ix_oauth_tokens_client_id'), table_name='oauth_tokens')
    op.drop_table('oauth_tokens')
    op.drop_index('ix_member_transfers_from_created', table_name='member_transfers')
    op.drop_table('member_transfers')
    op.drop_index(op.f('ix_member_profiles_phone_lookup'), table_name='member_profiles')
    op.drop_index(op.f('ix_member_profiles_email_lookup'), table_name='member_profiles')
    op.drop_table('member_profiles')
    op.drop_table('oauth_clients')
    op.drop_table('audit_log')


GUARD_LOT_WITH_ORIGIN = """
CREATE OR REPLACE FUNCTION alliance_guard_lot() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF (NEW.id, NEW.member_id, NEW.partner_id, NEW.funding_account_id, NEW.earn_transaction_id,
        NEW.points_earned, NEW.earned_at, NEW.expires_at, NEW.origin_lot_id)
       IS DISTINCT FROM (OLD.id, OLD.member_id, OLD.partner_id, OLD.funding_account_id,
        OLD.earn_transaction_id, OLD.points_earned, OLD.earned_at, OLD.expires_at, OLD.origin_lot_id)
       OR (NEW.state <> OLD.state AND NOT (OLD.state = 'pending' AND NEW.state = 'active'))
       OR (NEW.points_remaining IS DISTINCT FROM OLD.points_remaining AND pg_trigger_depth() < 2) THEN
        RAISE EXCEPTION 'lot % changes only through lot consumptions and activation', OLD.id
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    RETURN NEW;
END $$;
"""

GUARD_LOT_WITHOUT_ORIGIN = GUARD_LOT_WITH_ORIGIN.replace(", NEW.origin_lot_id", "").replace(", OLD.origin_lot_id", "")


def _column_names(table: str) -> set[str]:
    return {column["name"] for column in sa.inspect(op.get_bind()).get_columns(table)}


def _add_referencing_columns() -> None:
    if op.get_bind().dialect.name == "sqlite":
        # SQLite adds a referencing column in place only with an inline REFERENCES clause;
        # a column left behind by a SQLite downgrade (see below) is reused.
        if "transfer_id" not in _column_names("journal_transactions"):
            op.execute("ALTER TABLE journal_transactions"
                       " ADD COLUMN transfer_id INTEGER REFERENCES member_transfers (id)")
        if "origin_lot_id" not in _column_names("point_lots"):
            op.execute("ALTER TABLE point_lots ADD COLUMN origin_lot_id INTEGER REFERENCES point_lots (id)")
        return
    op.add_column('journal_transactions', sa.Column('transfer_id', sa.BigInteger(), nullable=True))
    op.create_foreign_key(op.f('fk_journal_transactions_transfer_id_member_transfers'), 'journal_transactions',
                          'member_transfers', ['transfer_id'], ['id'])
    op.add_column('point_lots', sa.Column('origin_lot_id', sa.BigInteger(), nullable=True))
    op.create_foreign_key(op.f('fk_point_lots_origin_lot_id_point_lots'), 'point_lots', 'point_lots',
                          ['origin_lot_id'], ['id'])
    op.execute(GUARD_LOT_WITH_ORIGIN)


def _remove_referencing_columns() -> None:
    if op.get_bind().dialect.name == "sqlite":
        # SQLite cannot drop a column that references another table, and rebuilding the
        # append-only journal tables would need their triggers off. The two nullable
        # columns stay, unused, and an upgrade reuses them.
        return
    op.execute(GUARD_LOT_WITHOUT_ORIGIN)
    op.drop_constraint(op.f('fk_point_lots_origin_lot_id_point_lots'), 'point_lots', type_='foreignkey')
    op.drop_column('point_lots', 'origin_lot_id')
    op.drop_constraint(op.f('fk_journal_transactions_transfer_id_member_transfers'), 'journal_transactions',
                       type_='foreignkey')
    op.drop_column('journal_transactions', 'transfer_id')


def _install_audit_log_guards() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("CREATE TRIGGER trg_audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log "
                   "FOR EACH ROW EXECUTE FUNCTION alliance_refuse_change()")
        op.execute("CREATE TRIGGER trg_audit_log_no_truncate BEFORE TRUNCATE ON audit_log "
                   "FOR EACH STATEMENT EXECUTE FUNCTION alliance_refuse_change()")
        return
    for operation in ("UPDATE", "DELETE"):
        op.execute(f"""CREATE TRIGGER trg_audit_log_no_{operation.lower()} BEFORE {operation} ON audit_log BEGIN
            SELECT RAISE(ABORT, 'the audit log is append-only: {operation} on audit_log is refused');
        END""")
