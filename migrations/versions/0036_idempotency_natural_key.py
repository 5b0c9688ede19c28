"""Idempotency keys are keyed by their natural key, (idempotency_key, partner_id).

Why: every signed write inserts one ``idempotency_keys`` row. Its surrogate ``id``
cost each write a sequence call and one more index entry (the primary key beside the
unique (partner_id, idempotency_key)), and was read only by the reply's update, the
forgetting of an unspent key and the pruning job, all of which can name the record by
its natural key. That key becomes the primary key, in the order the distribution plan
names (the distribution column first; the claim and the reply look it up by both
columns, equalities either way); the table no longer departs from the plan. Pruning
keeps its index on ``created_at``.

Revision ID: 0036
Revises: 0035
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

from alliance.models.base import UTCDateTime

revision = "0036"
down_revision = "0035"
branch_labels = None
depends_on = None

ID_TYPE = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
COLUMNS = ("partner_id, idempotency_key, request_fingerprint, status, response_status, response_body, "
           "created_at, completed_at")


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        _copy_sqlite_table(keyed_by_natural_key=True)
        return
    op.drop_constraint("pk_idempotency_keys", "idempotency_keys", type_="primary")
    op.drop_constraint("uq_idempotency_keys_partner_id_idempotency_key", "idempotency_keys", type_="unique")
    op.drop_column("idempotency_keys", "id")
    op.create_primary_key("pk_idempotency_keys", "idempotency_keys", ["idempotency_key", "partner_id"])


def downgrade() -> None:
    # Keys live 72 hours; the ones kept are numbered afresh (a new serial column on
    # PostgreSQL, each copied row's rowid on SQLite), and nothing outside a request's own
    # transaction held on to a number.
    if op.get_bind().dialect.name == "sqlite":
        _copy_sqlite_table(keyed_by_natural_key=False)
        return
    op.drop_constraint("pk_idempotency_keys", "idempotency_keys", type_="primary")
    op.create_unique_constraint("uq_idempotency_keys_partner_id_idempotency_key", "idempotency_keys",
                                ["partner_id", "idempotency_key"])
    op.execute("ALTER TABLE idempotency_keys ADD COLUMN id BIGSERIAL NOT NULL")
    op.create_primary_key("pk_idempotency_keys", "idempotency_keys", ["id"])


def _copy_sqlite_table(*, keyed_by_natural_key: bool) -> None:
    """SQLite cannot change a table's key in place: a copy with the new key replaces it."""
    key: list[sa.SchemaItem] = (
        [sa.PrimaryKeyConstraint("idempotency_key", "partner_id", name="pk_idempotency_keys")]
        if keyed_by_natural_key else
        [sa.PrimaryKeyConstraint("id", name="pk_idempotency_keys"),
         sa.UniqueConstraint("partner_id", "idempotency_key", name="uq_idempotency_keys_partner_id_idempotency_key")])
    op.create_table(
        "idempotency_keys_copy",
        *([] if keyed_by_natural_key else [sa.Column("id", ID_TYPE, nullable=False)]),
        sa.Column("partner_id", ID_TYPE, nullable=False),
        sa.Column("idempotency_key", sa.String(length=255), nullable=False),
        sa.Column("request_fingerprint", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("response_status", sa.Integer(), nullable=True),
        sa.Column("response_body", sa.Text(), nullable=True),
        sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("completed_at", UTCDateTime(timezone=True), nullable=True),
        sa.CheckConstraint("status IN ('in_flight', 'completed')", name=op.f("ck_idempotency_keys_status")),
        sa.ForeignKeyConstraint(["partner_id"], ["partners.id"], name="fk_idempotency_keys_partner_id_partners"),
        *key,
    )
    op.execute(f"INSERT INTO idempotency_keys_copy ({COLUMNS}) SELECT {COLUMNS} FROM idempotency_keys")
    op.drop_index("ix_idempotency_keys_created_at", table_name="idempotency_keys")
    op.drop_table("idempotency_keys")
    op.rename_table("idempotency_keys_copy", "idempotency_keys")
    op.create_index("ix_idempotency_keys_created_at", "idempotency_keys", ["created_at"])
