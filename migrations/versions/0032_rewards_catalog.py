"""The rewards catalog: rewards partners supply, their prices, voucher code pools and orders.

Why: members spend points beyond the till, on goods, vouchers, experiences and bill
credit supplied by partners. ``rewards`` lists what a partner supplies (listed once a
partner manager approves it), ``reward_prices`` its prices with effective dates (points
per item, and the reimbursement per item the hub pays the supplier), ``reward_voucher_codes``
the pool of voucher codes a supplier uploads (encrypted, each given to one order) and
``reward_orders`` each order with the hold on the member's points, its status and the
ledger postings that captured or returned it; settlement reimburses suppliers from it.

Revision ID: 0032
Revises: 0031
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

from alliance.models.base import UTCDateTime

revision = "0032"
down_revision = "0031"
branch_labels = None
depends_on = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "rewards",
        sa.Column("id", ID, nullable=False),
        sa.Column("code", sa.String(length=40), nullable=False),
        sa.Column("supplier_partner_id", ID, nullable=False),
        sa.Column("kind", sa.String(length=12), nullable=False),
        sa.Column("title", sa.String(length=120), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("min_tier", sa.String(length=10), nullable=True),
        sa.Column("per_member_limit", sa.Integer(), nullable=True),
        sa.Column("stock", sa.Integer(), nullable=True),
        sa.Column("fulfilment_days", sa.Integer(), nullable=False),
        sa.Column("return_days", sa.Integer(), nullable=False),
        sa.Column("valid_from", UTCDateTime(timezone=True), nullable=False),
        sa.Column("valid_until", UTCDateTime(timezone=True), nullable=True),
        sa.Column("proposed_by", sa.String(length=200), nullable=False),
        sa.Column("proposed_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("approved_by", sa.String(length=200), nullable=True),
        sa.Column("approved_at", UTCDateTime(timezone=True), nullable=True),
        sa.Column("withdrawn_by", sa.String(length=200), nullable=True),
        sa.Column("withdrawn_at", UTCDateTime(timezone=True), nullable=True),
        sa.Column("withdrawn_reason", sa.Text(), nullable=True),
        sa.CheckConstraint("kind IN ('goods', 'voucher', 'experience', 'bill_credit')", name=op.f("ck_rewards_kind")),
        sa.CheckConstraint("status IN ('proposed', 'listed', 'withdrawn')", name=op.f("ck_rewards_status")),
        sa.CheckConstraint("stock IS NULL OR stock >= 0", name=op.f("ck_rewards_stock")),
        sa.CheckConstraint("per_member_limit IS NULL OR per_member_limit > 0",
                           name=op.f("ck_rewards_per_member_limit")),
        sa.CheckConstraint("fulfilment_days BETWEEN 1 AND 30", name=op.f("ck_rewards_fulfilment_days")),
        sa.CheckConstraint("return_days BETWEEN 0 AND 365", name=op.f("ck_rewards_return_days")),
        sa.CheckConstraint("valid_until IS NULL OR valid_until > valid_from", name=op.f("ck_rewards_validity")),
        sa.CheckConstraint("approved_by IS NULL OR approved_by <> proposed_by", name=op.f("ck_rewards_second_person")),
        sa.CheckConstraint("status <> 'listed' OR approved_at IS NOT NULL",
                           name=op.f("ck_rewards_listed_when_approved")),
        sa.ForeignKeyConstraint(["supplier_partner_id"], ["partners.id"],
                                name=op.f("fk_rewards_supplier_partner_id_partners")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rewards")),
        sa.UniqueConstraint("code", name=op.f("uq_rewards_code")),
    )
    op.create_index(op.f("ix_rewards_supplier_partner_id"), "rewards", ["supplier_partner_id"])
    op.create_table(
        "reward_prices",
        sa.Column("id", ID, nullable=False),
        sa.Column("reward_id", ID, nullable=False),
        sa.Column("points_price", sa.BigInteger(), nullable=False),
        sa.Column("unit_price_minor", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("effective_from", UTCDateTime(timezone=True), nullable=False),
        sa.Column("set_by", sa.String(length=200), nullable=False),
        sa.Column("set_at", UTCDateTime(timezone=True), nullable=False),
        sa.CheckConstraint("points_price > 0", name=op.f("ck_reward_prices_points_price")),
        sa.CheckConstraint("unit_price_minor >= 0", name=op.f("ck_reward_prices_unit_price")),
        sa.ForeignKeyConstraint(["reward_id"], ["rewards.id"], name=op.f("fk_reward_prices_reward_id_rewards")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reward_prices")),
        sa.UniqueConstraint("reward_id", "effective_from", name=op.f("uq_reward_prices_reward_id_effective_from")),
    )
    op.create_table(
        "reward_orders",
        sa.Column("id", ID, nullable=False),
        sa.Column("channel", sa.String(length=40), nullable=False),
        sa.Column("reference", sa.String(length=64), nullable=False),
        sa.Column("member_id", ID, nullable=False),
        sa.Column("reward_id", ID, nullable=False),
        sa.Column("price_id", ID, nullable=False),
        sa.Column("supplier_partner_id", ID, nullable=False),
        sa.Column("items", sa.Integer(), nullable=False),
        sa.Column("points", sa.BigInteger(), nullable=False),
        sa.Column("unit_price_minor", sa.BigInteger(), nullable=False),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("hold_id", ID, nullable=False),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("placed_by", sa.String(length=200), nullable=False),
        sa.Column("placed_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("fulfilled_at", UTCDateTime(timezone=True), nullable=True),
        sa.Column("closed_at", UTCDateTime(timezone=True), nullable=True),
        sa.Column("fulfilment_note", sa.String(length=200), nullable=True),
        sa.Column("end_reason", sa.Text(), nullable=True),
        sa.Column("capture_transaction_id", ID, nullable=True),
        sa.Column("return_transaction_id", ID, nullable=True),
        sa.CheckConstraint("status IN ('placed', 'fulfilled', 'failed', 'cancelled', 'returned', 'expired')",
                           name=op.f("ck_reward_orders_status")),
        sa.CheckConstraint("items > 0 AND points > 0 AND amount_minor >= 0", name=op.f("ck_reward_orders_amounts")),
        sa.CheckConstraint("amount_minor = items * unit_price_minor",
                           name=op.f("ck_reward_orders_amount_is_items_times_price")),
        sa.CheckConstraint("(status IN ('fulfilled', 'returned')) = (capture_transaction_id IS NOT NULL)",
                           name=op.f("ck_reward_orders_captured_when_fulfilled")),
        sa.CheckConstraint("(status = 'returned') = (return_transaction_id IS NOT NULL)",
                           name=op.f("ck_reward_orders_returned")),
        sa.ForeignKeyConstraint(["member_id"], ["members.id"], name=op.f("fk_reward_orders_member_id_members")),
        sa.ForeignKeyConstraint(["reward_id"], ["rewards.id"], name=op.f("fk_reward_orders_reward_id_rewards")),
        sa.ForeignKeyConstraint(["price_id"], ["reward_prices.id"],
                                name=op.f("fk_reward_orders_price_id_reward_prices")),
        sa.ForeignKeyConstraint(["supplier_partner_id"], ["partners.id"],
                                name=op.f("fk_reward_orders_supplier_partner_id_partners")),
        sa.ForeignKeyConstraint(["hold_id"], ["redemption_holds.id"],
                                name=op.f("fk_reward_orders_hold_id_redemption_holds")),
        sa.ForeignKeyConstraint(["capture_transaction_id"], ["journal_transactions.id"],
                                name=op.f("fk_reward_orders_capture_transaction_id_journal_transactions")),
        sa.ForeignKeyConstraint(["return_transaction_id"], ["journal_transactions.id"],
                                name=op.f("fk_reward_orders_return_transaction_id_journal_transactions")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reward_orders")),
        sa.UniqueConstraint("channel", "reference", name=op.f("uq_reward_orders_channel_reference")),
        sa.UniqueConstraint("hold_id", name=op.f("uq_reward_orders_hold_id")),
        sa.UniqueConstraint("capture_transaction_id", name=op.f("uq_reward_orders_capture_transaction_id")),
        sa.UniqueConstraint("return_transaction_id", name=op.f("uq_reward_orders_return_transaction_id")),
    )
    op.create_index("ix_reward_orders_member_reward", "reward_orders", ["member_id", "reward_id"])
    op.create_index("ix_reward_orders_supplier_status", "reward_orders", ["supplier_partner_id", "status", "placed_at"])
    op.create_table(
        "reward_voucher_codes",
        sa.Column("id", ID, nullable=False),
        sa.Column("reward_id", ID, nullable=False),
        sa.Column("code_digest", sa.String(length=64), nullable=False),
        sa.Column("code_encrypted", sa.Text(), nullable=False),
        sa.Column("uploaded_by", sa.String(length=200), nullable=False),
        sa.Column("uploaded_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("order_id", ID, nullable=True),
        sa.Column("assigned_at", UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["reward_id"], ["rewards.id"], name=op.f("fk_reward_voucher_codes_reward_id_rewards")),
        sa.ForeignKeyConstraint(["order_id"], ["reward_orders.id"],
                                name=op.f("fk_reward_voucher_codes_order_id_reward_orders")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reward_voucher_codes")),
        sa.UniqueConstraint("reward_id", "code_digest", name=op.f("uq_reward_voucher_codes_reward_id_code_digest")),
        sa.UniqueConstraint("order_id", name=op.f("uq_reward_voucher_codes_order_id")),
    )
    op.create_index("ix_reward_voucher_codes_free", "reward_voucher_codes", ["reward_id", "order_id"])


def downgrade() -> None:
    op.drop_table("reward_voucher_codes")
    op.drop_table("reward_orders")
    op.drop_table("reward_prices")
    op.drop_table("rewards")
