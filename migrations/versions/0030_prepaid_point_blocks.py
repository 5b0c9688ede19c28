"""Prepaid point blocks: money a partner pays ahead that covers its issuance.

Why: a partner may cover the points it issues by buying blocks of points ahead, at its
issue price in force, instead of (or besides) issuing on credit. ``partner_prepaid_blocks``
records each block bought: the points, the price, what was paid (points x price in minor
units, rounded up), finance's receipt reference (unique per partner) and the day it was
paid. A statement paid from that money gets an ordinary ``paid`` event that also names
the block it was drawn from (``statement_events.prepaid_block_id``), so every report of
paid and unpaid statements reads it as any payment, and what is left of a block is its
amount minus the payments naming it.

Revision ID: 0030
Revises: 0029
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

from alliance.models.base import ExactDecimal, UTCDateTime

revision = "0030"
down_revision = "0029"
branch_labels = None
depends_on = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "partner_prepaid_blocks",
        sa.Column("id", ID, nullable=False),
        sa.Column("partner_id", ID, nullable=False),
        sa.Column("points", sa.Integer(), nullable=False),
        sa.Column("price_per_point", ExactDecimal(precision=20, scale=8), nullable=False),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("reference", sa.String(length=64), nullable=False),
        sa.Column("paid_on", sa.Date(), nullable=False),
        sa.Column("recorded_by", sa.String(length=200), nullable=False),
        sa.Column("recorded_at", UTCDateTime(timezone=True), nullable=False),
        sa.CheckConstraint("points > 0", name=op.f("ck_partner_prepaid_blocks_points_positive")),
        sa.CheckConstraint("price_per_point > 0", name=op.f("ck_partner_prepaid_blocks_price_positive")),
        sa.CheckConstraint("amount_minor > 0", name=op.f("ck_partner_prepaid_blocks_amount_positive")),
        sa.ForeignKeyConstraint(["partner_id"], ["partners.id"],
                                name=op.f("fk_partner_prepaid_blocks_partner_id_partners")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_partner_prepaid_blocks")),
        sa.UniqueConstraint("partner_id", "reference", name=op.f("uq_partner_prepaid_blocks_partner_id_reference")),
    )
    # SQLite rebuilds statement_events to add the foreign key and the check (no table points at it);
    # PostgreSQL alters it in place.
    with op.batch_alter_table("statement_events") as batch:
        batch.add_column(sa.Column("prepaid_block_id", ID, nullable=True))
        batch.create_foreign_key(op.f("fk_statement_events_prepaid_block_id_partner_prepaid_blocks"),
                                 "partner_prepaid_blocks", ["prepaid_block_id"], ["id"])
        batch.create_check_constraint("prepaid_is_a_payment", "prepaid_block_id IS NULL OR kind = 'paid'")
        batch.create_index("ix_statement_events_prepaid_block_id", ["prepaid_block_id"])
    _restore_append_only_guards()


def downgrade() -> None:
    with op.batch_alter_table("statement_events") as batch:
        batch.drop_index("ix_statement_events_prepaid_block_id")
        batch.drop_constraint(op.f("ck_statement_events_prepaid_is_a_payment"), type_="check")
        batch.drop_constraint(op.f("fk_statement_events_prepaid_block_id_partner_prepaid_blocks"),
                              type_="foreignkey")
        batch.drop_column("prepaid_block_id")
    _restore_append_only_guards()
    op.drop_table("partner_prepaid_blocks")


def _restore_append_only_guards() -> None:
    """Put back the triggers that keep statement_events append-only (0007), which SQLite's rebuild dropped.

    PostgreSQL altered the table in place and kept them.
    """
    if op.get_bind().dialect.name != "sqlite":
        return
    for operation in ("UPDATE", "DELETE"):
        op.execute(f"""CREATE TRIGGER trg_statement_events_no_{operation.lower()} BEFORE {operation} ON statement_events
            BEGIN
                SELECT RAISE(ABORT, 'finance events are never edited: {operation} on statement_events is refused');
            END""")
