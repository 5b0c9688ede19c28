"""Ledger foundation: partners, keys, terminals, members, cards and the points ledger.

Why: everything else in the hub stands on these tables. Besides the tables, this
revision installs what lets the database itself keep the books honest: triggers that
refuse UPDATE and DELETE of journal rows, triggers that maintain member balances and
lot remainders from inserted rows (so CHECK constraints stop overdrafts inside the
write), and on PostgreSQL a deferred check that every journal transaction sums to zero.
It also opens the hub's own accounts, which every alliance has exactly once.

Revision ID: 0001
Revises:
Create Date: 2026-11-24
"""

from datetime import datetime, timezone

import sqlalchemy as sa
from alembic import op

from alliance.models.base import ExactDecimal, UTCDateTime

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('members',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('member_number', sa.String(length=20), nullable=False),
    sa.Column('status', sa.String(length=10), nullable=False),
    sa.Column('tier', sa.String(length=10), nullable=False),
    sa.Column('enrolled_at', UTCDateTime(timezone=True), nullable=False),
    sa.CheckConstraint("status IN ('active', 'closed')", name=op.f('ck_members_status')),
    sa.CheckConstraint("tier IN ('standard', 'silver', 'gold', 'diamond')", name=op.f('ck_members_tier')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_members')),
    sa.UniqueConstraint('member_number', name=op.f('uq_members_member_number'))
    )
    op.create_table('partners',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('code', sa.String(length=40), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('time_zone', sa.String(length=64), nullable=False),
    sa.Column('settlement_cycle', sa.String(length=10), nullable=False),
    sa.Column('settlement_cutoff_local', sa.Time(), nullable=False),
    sa.Column('return_window_days', sa.Integer(), nullable=False),
    sa.Column('created_at', UTCDateTime(timezone=True), nullable=False),
    sa.CheckConstraint("settlement_cycle IN ('daily', 'weekly', 'monthly')", name=op.f('ck_partners_settlement_cycle')),
    sa.CheckConstraint("status IN ('pending', 'active', 'suspended', 'terminated')", name=op.f('ck_partners_status')),
    sa.CheckConstraint('length(currency) = 3', name=op.f('ck_partners_currency')),
    sa.CheckConstraint('return_window_days >= 0 AND return_window_days <= 365', name=op.f('ck_partners_return_window')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_partners')),
    sa.UniqueConstraint('code', name=op.f('uq_partners_code'))
    )
    op.create_table('cards',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('member_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('card_number', sa.String(length=19), nullable=False),
    sa.Column('status', sa.String(length=10), nullable=False),
    sa.Column('pin_hash', sa.String(length=200), nullable=True),
    sa.Column('failed_pin_attempts', sa.Integer(), nullable=False),
    sa.Column('issued_at', UTCDateTime(timezone=True), nullable=False),
    sa.Column('blocked_at', UTCDateTime(timezone=True), nullable=True),
    sa.CheckConstraint("status IN ('active', 'blocked', 'replaced')", name=op.f('ck_cards_status')),
    sa.CheckConstraint('failed_pin_attempts >= 0', name=op.f('ck_cards_failed_pin_attempts')),
    sa.ForeignKeyConstraint(['member_id'], ['members.id'], name=op.f('fk_cards_member_id_members')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_cards')),
    sa.UniqueConstraint('card_number', name=op.f('uq_cards_card_number'))
    )
    op.create_index(op.f('ix_cards_member_id'), 'cards', ['member_id'], unique=False)
    op.create_table('ledger_accounts',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('code', sa.String(length=60), nullable=False),
    sa.Column('kind', sa.String(length=20), nullable=False),
    sa.Column('member_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('partner_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('balance_points', sa.BigInteger(), nullable=True),
    sa.Column('created_at', UTCDateTime(timezone=True), nullable=False),
    sa.CheckConstraint("(kind IN ('member_available', 'member_pending', 'member_held')"
                       " AND member_id IS NOT NULL AND partner_id IS NULL AND balance_points IS NOT NULL)"
                       " OR (kind IN ('partner_issued', 'partner_redeemed')"
                       " AND partner_id IS NOT NULL AND member_id IS NULL AND balance_points IS NULL)"
                       " OR (kind IN ('hub_marketing', 'hub_breakage', 'hub_rounding')"
                       " AND member_id IS NULL AND partner_id IS NULL AND balance_points IS NULL)",
                       name=op.f('ck_ledger_accounts_owner_matches_kind')),
    sa.CheckConstraint("kind IN ('member_available', 'member_pending', 'member_held', 'partner_issued',"
                       " 'partner_redeemed', 'hub_marketing', 'hub_breakage', 'hub_rounding')",
                       name=op.f('ck_ledger_accounts_kind')),
    sa.CheckConstraint('balance_points IS NULL OR balance_points >= 0',
                       name=op.f('ck_ledger_accounts_balance_not_negative')),
    sa.ForeignKeyConstraint(['member_id'], ['members.id'], name=op.f('fk_ledger_accounts_member_id_members')),
    sa.ForeignKeyConstraint(['partner_id'], ['partners.id'], name=op.f('fk_ledger_accounts_partner_id_partners')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_ledger_accounts')),
    sa.UniqueConstraint('code', name=op.f('uq_ledger_accounts_code'))
    )
    op.create_table('partner_earn_rules',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('partner_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('effective_from', UTCDateTime(timezone=True), nullable=False),
    sa.Column('base_points_per_unit', ExactDecimal(precision=12, scale=4), nullable=False),
    sa.Column('amount_ladder', sa.JSON(), nullable=False),
    sa.Column('per_purchase_cap_points', sa.Integer(), nullable=True),
    sa.Column('per_member_day_cap_points', sa.Integer(), nullable=True),
    sa.CheckConstraint('base_points_per_unit >= 0', name=op.f('ck_partner_earn_rules_base_rate')),
    sa.CheckConstraint('per_member_day_cap_points IS NULL OR per_member_day_cap_points > 0',
                       name=op.f('ck_partner_earn_rules_day_cap')),
    sa.CheckConstraint('per_purchase_cap_points IS NULL OR per_purchase_cap_points > 0',
                       name=op.f('ck_partner_earn_rules_purchase_cap')),
    sa.ForeignKeyConstraint(['partner_id'], ['partners.id'], name=op.f('fk_partner_earn_rules_partner_id_partners')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_partner_earn_rules')),
    sa.UniqueConstraint('partner_id', 'effective_from', name=op.f('uq_partner_earn_rules_partner_id_effective_from'))
    )
    op.create_table('partner_prices',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('partner_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('effective_from', UTCDateTime(timezone=True), nullable=False),
    sa.Column('issue_price_per_point', ExactDecimal(precision=20, scale=8), nullable=False),
    sa.Column('redemption_price_per_point', ExactDecimal(precision=20, scale=8), nullable=False),
    sa.CheckConstraint('issue_price_per_point >= 0', name=op.f('ck_partner_prices_issue_price')),
    sa.CheckConstraint('redemption_price_per_point >= 0', name=op.f('ck_partner_prices_redemption_price')),
    sa.ForeignKeyConstraint(['partner_id'], ['partners.id'], name=op.f('fk_partner_prices_partner_id_partners')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_partner_prices')),
    sa.UniqueConstraint('partner_id', 'effective_from', name=op.f('uq_partner_prices_partner_id_effective_from'))
    )
    op.create_table('redemption_holds',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('member_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('partner_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('status', sa.String(length=10), nullable=False),
    sa.Column('points_held', sa.BigInteger(), nullable=False),
    sa.Column('points_captured', sa.BigInteger(), nullable=False),
    sa.Column('points_refunded', sa.BigInteger(), nullable=False),
    sa.Column('created_at', UTCDateTime(timezone=True), nullable=False),
    sa.Column('expires_at', UTCDateTime(timezone=True), nullable=False),
    sa.Column('closed_at', UTCDateTime(timezone=True), nullable=True),
    sa.CheckConstraint("status IN ('open', 'captured', 'voided', 'expired')", name=op.f('ck_redemption_holds_status')),
    sa.CheckConstraint('points_held > 0 AND points_captured >= 0 AND points_captured <= points_held'
                       ' AND points_refunded >= 0 AND points_refunded <= points_captured',
                       name=op.f('ck_redemption_holds_amounts_in_range')),
    sa.ForeignKeyConstraint(['member_id'], ['members.id'], name=op.f('fk_redemption_holds_member_id_members')),
    sa.ForeignKeyConstraint(['partner_id'], ['partners.id'], name=op.f('fk_redemption_holds_partner_id_partners')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_redemption_holds'))
    )
    op.create_index(op.f('ix_redemption_holds_member_id'), 'redemption_holds', ['member_id'], unique=False)
    op.create_index('ix_redemption_holds_status_expires', 'redemption_holds', ['status', 'expires_at'], unique=False)
    op.create_table('terminals',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('partner_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('code', sa.String(length=40), nullable=False),
    sa.Column('status', sa.String(length=10), nullable=False),
    sa.Column('created_at', UTCDateTime(timezone=True), nullable=False),
    sa.CheckConstraint("status IN ('active', 'retired')", name=op.f('ck_terminals_status')),
    sa.ForeignKeyConstraint(['partner_id'], ['partners.id'], name=op.f('fk_terminals_partner_id_partners')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_terminals')),
    sa.UniqueConstraint('partner_id', 'code', name=op.f('uq_terminals_partner_id_code'))
    )
    op.create_table('journal_transactions',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('kind', sa.String(length=20), nullable=False),
    sa.Column('member_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('partner_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('posted_at', UTCDateTime(timezone=True), nullable=False),
    sa.Column('price_per_point', ExactDecimal(precision=20, scale=8), nullable=True),
    sa.Column('currency', sa.String(length=3), nullable=True),
    sa.Column('hold_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('reverses_transaction_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('memo', sa.String(length=200), nullable=True),
    sa.ForeignKeyConstraint(['hold_id'], ['redemption_holds.id'],
                            name=op.f('fk_journal_transactions_hold_id_redemption_holds')),
    sa.ForeignKeyConstraint(['member_id'], ['members.id'], name=op.f('fk_journal_transactions_member_id_members')),
    sa.ForeignKeyConstraint(['partner_id'], ['partners.id'], name=op.f('fk_journal_transactions_partner_id_partners')),
    sa.ForeignKeyConstraint(['reverses_transaction_id'], ['journal_transactions.id'],
                            name=op.f('fk_journal_transactions_reverses_transaction_id_journal_transactions')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_journal_transactions'))
    )
    op.create_index('ix_journal_transactions_member_posted', 'journal_transactions', ['member_id', 'posted_at'],
                    unique=False)
    op.create_index('ix_journal_transactions_partner_posted', 'journal_transactions', ['partner_id', 'posted_at'],
                    unique=False)
    op.create_table('partner_keys',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('partner_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('key_id', sa.String(length=100), nullable=False),
    sa.Column('public_key', sa.LargeBinary(length=32), nullable=False),
    sa.Column('status', sa.String(length=10), nullable=False),
    sa.Column('terminal_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('created_at', UTCDateTime(timezone=True), nullable=False),
    sa.Column('expires_at', UTCDateTime(timezone=True), nullable=True),
    sa.Column('revoked_at', UTCDateTime(timezone=True), nullable=True),
    sa.CheckConstraint("status IN ('active', 'revoked')", name=op.f('ck_partner_keys_status')),
    sa.CheckConstraint('length(public_key) = 32', name=op.f('ck_partner_keys_ed25519_length')),
    sa.ForeignKeyConstraint(['partner_id'], ['partners.id'], name=op.f('fk_partner_keys_partner_id_partners')),
    sa.ForeignKeyConstraint(['terminal_id'], ['terminals.id'], name=op.f('fk_partner_keys_terminal_id_terminals')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_partner_keys')),
    sa.UniqueConstraint('key_id', name=op.f('uq_partner_keys_key_id'))
    )
    op.create_index(op.f('ix_partner_keys_partner_id'), 'partner_keys', ['partner_id'], unique=False)
    op.create_table('journal_entries',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('transaction_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('account_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('amount_points', sa.BigInteger(), nullable=False),
    sa.CheckConstraint('amount_points <> 0', name=op.f('ck_journal_entries_amount_not_zero')),
    sa.ForeignKeyConstraint(['account_id'], ['ledger_accounts.id'],
                            name=op.f('fk_journal_entries_account_id_ledger_accounts')),
    sa.ForeignKeyConstraint(['transaction_id'], ['journal_transactions.id'],
                            name=op.f('fk_journal_entries_transaction_id_journal_transactions')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_journal_entries'))
    )
    op.create_index(op.f('ix_journal_entries_account_id'), 'journal_entries', ['account_id'], unique=False)
    op.create_index(op.f('ix_journal_entries_transaction_id'), 'journal_entries', ['transaction_id'], unique=False)
    op.create_table('point_lots',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('member_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('partner_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('funding_account_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('earn_transaction_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('state', sa.String(length=10), nullable=False),
    sa.Column('points_earned', sa.BigInteger(), nullable=False),
    sa.Column('points_remaining', sa.BigInteger(), nullable=False),
    sa.Column('earned_at', UTCDateTime(timezone=True), nullable=False),
    sa.Column('activates_at', UTCDateTime(timezone=True), nullable=True),
    sa.Column('expires_at', UTCDateTime(timezone=True), nullable=False),
    sa.CheckConstraint("state IN ('pending', 'active')", name=op.f('ck_point_lots_state')),
    sa.CheckConstraint('points_earned > 0', name=op.f('ck_point_lots_earned_positive')),
    sa.CheckConstraint('points_remaining >= 0 AND points_remaining <= points_earned',
                       name=op.f('ck_point_lots_remaining_in_range')),
    sa.ForeignKeyConstraint(['earn_transaction_id'], ['journal_transactions.id'],
                            name=op.f('fk_point_lots_earn_transaction_id_journal_transactions')),
    sa.ForeignKeyConstraint(['funding_account_id'], ['ledger_accounts.id'],
                            name=op.f('fk_point_lots_funding_account_id_ledger_accounts')),
    sa.ForeignKeyConstraint(['member_id'], ['members.id'], name=op.f('fk_point_lots_member_id_members')),
    sa.ForeignKeyConstraint(['partner_id'], ['partners.id'], name=op.f('fk_point_lots_partner_id_partners')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_point_lots')),
    sa.UniqueConstraint('earn_transaction_id', name=op.f('uq_point_lots_earn_transaction_id'))
    )
    op.create_index('ix_point_lots_member_state_expiry', 'point_lots', ['member_id', 'state', 'expires_at'],
                    unique=False)
    op.create_table('lot_consumptions',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('lot_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('transaction_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('member_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('hold_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('points', sa.BigInteger(), nullable=False),
    sa.CheckConstraint('points <> 0', name=op.f('ck_lot_consumptions_points_not_zero')),
    sa.ForeignKeyConstraint(['hold_id'], ['redemption_holds.id'],
                            name=op.f('fk_lot_consumptions_hold_id_redemption_holds')),
    sa.ForeignKeyConstraint(['lot_id'], ['point_lots.id'], name=op.f('fk_lot_consumptions_lot_id_point_lots')),
    sa.ForeignKeyConstraint(['member_id'], ['members.id'], name=op.f('fk_lot_consumptions_member_id_members')),
    sa.ForeignKeyConstraint(['transaction_id'], ['journal_transactions.id'],
                            name=op.f('fk_lot_consumptions_transaction_id_journal_transactions')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_lot_consumptions'))
    )
    op.create_index(op.f('ix_lot_consumptions_hold_id'), 'lot_consumptions', ['hold_id'], unique=False)
    op.create_index(op.f('ix_lot_consumptions_lot_id'), 'lot_consumptions', ['lot_id'], unique=False)
    op.create_index(op.f('ix_lot_consumptions_transaction_id'), 'lot_consumptions', ['transaction_id'], unique=False)
    install_ledger_guards()
    opened_at = datetime.now(timezone.utc)
    op.bulk_insert(
        sa.table(
            "ledger_accounts",
            sa.column("code", sa.String), sa.column("kind", sa.String), sa.column("created_at", UTCDateTime()),
        ),
        [
            {"code": f"hub:{name}", "kind": f"hub_{name}", "created_at": opened_at}
            for name in ("marketing", "breakage", "rounding")
        ],
    )


def downgrade() -> None:
    remove_ledger_guards()
    op.drop_index(op.f('ix_lot_consumptions_transaction_id'), table_name='lot_consumptions')
    op.drop_index(op.f('ix_lot_consumptions_lot_id'), table_name='lot_consumptions')
    op.drop_index(op.f('ix_lot_consumptions_hold_id'), table_name='lot_consumptions')
    op.drop_table('lot_consumptions')
    op.drop_index('ix_point_lots_member_state_expiry', table_name='point_lots')
    op.drop_table('point_lots')
    op.drop_index(op.f('ix_journal_entries_transaction_id'), table_name='journal_entries')
    op.drop_index(op.f('ix_journal_entries_account_id'), table_name='journal_entries')
    op.drop_table('journal_entries')
    op.drop_index(op.f('ix_partner_keys_partner_id'), table_name='partner_keys')
    op.drop_table('partner_keys')
    op.drop_index('ix_journal_transactions_partner_posted', table_name='journal_transactions')
    op.drop_index('ix_journal_transactions_member_posted', table_name='journal_transactions')
    op.drop_table('journal_transactions')
    op.drop_table('terminals')
    op.drop_index('ix_redemption_holds_status_expires', table_name='redemption_holds')
    op.drop_index(op.f('ix_redemption_holds_member_id'), table_name='redemption_holds')
    op.drop_table('redemption_holds')
    op.drop_table('partner_prices')
    op.drop_table('partner_earn_rules')
    op.drop_table('ledger_accounts')
    op.drop_index(op.f('ix_cards_member_id'), table_name='cards')
    op.drop_table('cards')
    op.drop_table('partners')
    op.drop_table('members')


APPEND_ONLY_TABLES = ("journal_transactions", "journal_entries", "lot_consumptions")

POSTGRESQL_GUARDS = """
CREATE FUNCTION alliance_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the ledger is append-only: % on % is refused', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'integrity_constraint_violation';
END $$;

CREATE FUNCTION alliance_apply_entry() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE ledger_accounts SET balance_points = balance_points + NEW.amount_points
     WHERE id = NEW.account_id AND balance_points IS NOT NULL;
    RETURN NULL;
END $$;

CREATE FUNCTION alliance_apply_consumption() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE point_lots SET points_remaining = points_remaining - NEW.points WHERE id = NEW.lot_id;
    RETURN NULL;
END $$;

-- Stored counters may change only from inside the triggers above (trigger depth 2),
-- so raw SQL cannot make a balance disagree with its entries.
CREATE FUNCTION alliance_guard_account() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF (NEW.id, NEW.code, NEW.kind, NEW.member_id, NEW.partner_id)
       IS DISTINCT FROM (OLD.id, OLD.code, OLD.kind, OLD.member_id, OLD.partner_id)
       OR (NEW.balance_points IS DISTINCT FROM OLD.balance_points AND pg_trigger_depth() < 2) THEN
        RAISE EXCEPTION 'ledger account % changes only through journal entries', OLD.code
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    RETURN NEW;
END $$;

CREATE FUNCTION alliance_guard_lot() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF (NEW.id, NEW.member_id, NEW.partner_id, NEW.funding_account_id, NEW.earn_transaction_id,
        NEW.points_earned, NEW.earned_at, NEW.expires_at)
       IS DISTINCT FROM (OLD.id, OLD.member_id, OLD.partner_id, OLD.funding_account_id,
        OLD.earn_transaction_id, OLD.points_earned, OLD.earned_at, OLD.expires_at)
       OR (NEW.state <> OLD.state AND NOT (OLD.state = 'pending' AND NEW.state = 'active'))
       OR (NEW.points_remaining IS DISTINCT FROM OLD.points_remaining AND pg_trigger_depth() < 2) THEN
        RAISE EXCEPTION 'lot % changes only through lot consumptions and activation', OLD.id
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    RETURN NEW;
END $$;

CREATE FUNCTION alliance_check_balanced() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    checked_id bigint;
    total numeric;
    entry_count integer;
BEGIN
    IF TG_TABLE_NAME = 'journal_transactions' THEN
        checked_id := NEW.id;
    ELSE
        checked_id := NEW.transaction_id;
    END IF;
    SELECT coalesce(sum(amount_points), 0), count(*) INTO total, entry_count
      FROM journal_entries WHERE transaction_id = checked_id;
    IF total <> 0 OR entry_count < 2 THEN
        RAISE EXCEPTION 'journal transaction % is unbalanced: % entries summing to %', checked_id, entry_count, total
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER trg_journal_entries_apply AFTER INSERT ON journal_entries
    FOR EACH ROW EXECUTE FUNCTION alliance_apply_entry();
CREATE TRIGGER trg_lot_consumptions_apply AFTER INSERT ON lot_consumptions
    FOR EACH ROW EXECUTE FUNCTION alliance_apply_consumption();
CREATE TRIGGER trg_ledger_accounts_guard BEFORE UPDATE ON ledger_accounts
    FOR EACH ROW EXECUTE FUNCTION alliance_guard_account();
CREATE TRIGGER trg_ledger_accounts_no_delete BEFORE DELETE ON ledger_accounts
    FOR EACH ROW EXECUTE FUNCTION alliance_refuse_change();
CREATE TRIGGER trg_point_lots_guard BEFORE UPDATE ON point_lots
    FOR EACH ROW EXECUTE FUNCTION alliance_guard_lot();
CREATE TRIGGER trg_point_lots_no_delete BEFORE DELETE ON point_lots
    FOR EACH ROW EXECUTE FUNCTION alliance_refuse_change();
CREATE CONSTRAINT TRIGGER trg_journal_entries_balanced AFTER INSERT ON journal_entries
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION alliance_check_balanced();
CREATE CONSTRAINT TRIGGER trg_journal_transactions_balanced AFTER INSERT ON journal_transactions
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION alliance_check_balanced();
"""

POSTGRESQL_FUNCTIONS = (
    "alliance_refuse_change", "alliance_apply_entry", "alliance_apply_consumption",
    "alliance_guard_account", "alliance_guard_lot", "alliance_check_balanced",
)

# SQLite has neither deferred triggers nor a trigger depth. It gets the append-only
# guards and the counter maintenance, and refuses any change of a stored counter that
# would make it disagree with its rows (the maintenance triggers run after the new row
# is in, so their updates always agree).
SQLITE_GUARDS = [
    """CREATE TRIGGER trg_ledger_accounts_guard BEFORE UPDATE ON ledger_accounts
    WHEN NEW.balance_points IS NOT (SELECT CASE WHEN NEW.balance_points IS NULL THEN NULL
                                   ELSE coalesce(sum(amount_points), 0) END
                                   FROM journal_entries WHERE account_id = NEW.id)
      OR NEW.kind IS NOT OLD.kind OR NEW.code IS NOT OLD.code
      OR NEW.member_id IS NOT OLD.member_id OR NEW.partner_id IS NOT OLD.partner_id
    BEGIN
        SELECT RAISE(ABORT, 'ledger account changes only through journal entries');
    END""",
    """CREATE TRIGGER trg_point_lots_guard BEFORE UPDATE ON point_lots
    WHEN NEW.points_remaining IS NOT NEW.points_earned - (SELECT coalesce(sum(points), 0)
                                                        FROM lot_consumptions WHERE lot_id = NEW.id)
      OR NEW.points_earned IS NOT OLD.points_earned OR NEW.member_id IS NOT OLD.member_id
      OR NEW.partner_id IS NOT OLD.partner_id OR NEW.funding_account_id IS NOT OLD.funding_account_id
      OR NEW.earn_transaction_id IS NOT OLD.earn_transaction_id OR NEW.expires_at IS NOT OLD.expires_at
      OR NEW.earned_at IS NOT OLD.earned_at
      OR (NEW.state IS NOT OLD.state AND NOT (OLD.state = 'pending' AND NEW.state = 'active'))
    BEGIN
        SELECT RAISE(ABORT, 'lot changes only through lot consumptions and activation');
    END""",
    """CREATE TRIGGER trg_journal_entries_apply AFTER INSERT ON journal_entries BEGIN
        UPDATE ledger_accounts SET balance_points = balance_points + NEW.amount_points
         WHERE id = NEW.account_id AND balance_points IS NOT NULL;
    END""",
    """CREATE TRIGGER trg_lot_consumptions_apply AFTER INSERT ON lot_consumptions BEGIN
        UPDATE point_lots SET points_remaining = points_remaining - NEW.points WHERE id = NEW.lot_id;
    END""",
    """CREATE TRIGGER trg_ledger_accounts_no_delete BEFORE DELETE ON ledger_accounts BEGIN
        SELECT RAISE(ABORT, 'the ledger is append-only: DELETE on ledger_accounts is refused');
    END""",
    """CREATE TRIGGER trg_point_lots_no_delete BEFORE DELETE ON point_lots BEGIN
        SELECT RAISE(ABORT, 'the ledger is append-only: DELETE on point_lots is refused');
    END""",
] + [
    f"""CREATE TRIGGER trg_{table}_no_{operation.lower()} BEFORE {operation} ON {table} BEGIN
        SELECT RAISE(ABORT, 'the ledger is append-only: {operation} on {table} is refused');
    END"""
    for table in APPEND_ONLY_TABLES
    for operation in ("UPDATE", "DELETE")
]


def install_ledger_guards() -> None:
    """Create the triggers that keep the books honest on this database."""
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        op.execute(POSTGRESQL_GUARDS)
        for table in APPEND_ONLY_TABLES:
            op.execute(
                f"CREATE TRIGGER trg_{table}_append_only BEFORE UPDATE OR DELETE ON {table} "
                "FOR EACH ROW EXECUTE FUNCTION alliance_refuse_change()"
            )
            op.execute(
                f"CREATE TRIGGER trg_{table}_no_truncate BEFORE TRUNCATE ON {table} "
                "FOR EACH STATEMENT EXECUTE FUNCTION alliance_refuse_change()"
            )
    elif bind.dialect.name == "sqlite":
        for statement in SQLITE_GUARDS:
            op.execute(statement)


def remove_ledger_guards() -> None:
    """Drop the triggers (their tables are dropped right after)."""
    if op.get_bind().dialect.name == "postgresql":
        for function in POSTGRESQL_FUNCTIONS:
            op.execute(f"DROP FUNCTION {function}() CASCADE")
