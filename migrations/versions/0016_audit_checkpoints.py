"""Signed daily checkpoints of the audit log's head.

Why: the audit log is a hash chain, which proves every entry it still holds but cannot
see its newest entries deleted, nor a tail rewritten and hashed again by someone who can
write the table. A checkpoint records the chain's head (entries and the newest entry's
hash) with a signature by the hub's statement key, which the database does not hold; the
operator exports them off the database, and ``alliance audit`` checks every checkpoint
it can see against the log. One per UTC day (a unique date), append-only like the log.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

from alliance.models.base import UTCDateTime

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "audit_checkpoints",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("taken_on", sa.Date(), nullable=False),
        sa.Column("taken_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("entries", sa.BigInteger(), nullable=False),
        sa.Column("head_hash", sa.String(length=64), nullable=False),
        sa.Column("key_id", sa.String(length=64), nullable=False),
        sa.Column("document", sa.Text(), nullable=False),
        sa.Column("signature", sa.Text(), nullable=False),
        sa.CheckConstraint("entries >= 0", name=op.f("ck_audit_checkpoints_entries_not_negative")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_checkpoints")),
        sa.UniqueConstraint("taken_on", name=op.f("uq_audit_checkpoints_taken_on")),
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute("CREATE TRIGGER trg_audit_checkpoints_append_only BEFORE UPDATE OR DELETE ON audit_checkpoints "
                   "FOR EACH ROW EXECUTE FUNCTION alliance_refuse_change()")
        op.execute("CREATE TRIGGER trg_audit_checkpoints_no_truncate BEFORE TRUNCATE ON audit_checkpoints "
                   "FOR EACH STATEMENT EXECUTE FUNCTION alliance_refuse_change()")
        return
    for operation in ("UPDATE", "DELETE"):
        op.execute(f"""CREATE TRIGGER trg_audit_checkpoints_no_{operation.lower()} BEFORE {operation}
            ON audit_checkpoints BEGIN
            SELECT RAISE(ABORT, 'audit checkpoints are append-only: {operation} is refused');
        END""")


def downgrade() -> None:
    # Dropping the table drops its triggers with it, on both databases.
    op.drop_table("audit_checkpoints")
