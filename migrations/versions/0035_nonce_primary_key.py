"""Signature nonces are keyed by the nonce itself.

Why: every signed request writes one ``signature_nonces`` row. Its surrogate ``id``
cost each request a sequence call and one more index entry, and was read by nothing
but the pruning job, which can delete by the nonce as well. The nonce's unique
constraint becomes the primary key (the replay guard is unchanged), and the table,
distributed by the nonce, no longer departs from the distribution plan.

Revision ID: 0035
Revises: 0034
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

from alliance.models.base import UTCDateTime

revision = "0035"
down_revision = "0034"
branch_labels = None
depends_on = None

ID_TYPE = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
COLUMNS = "nonce, partner_id, key_id, seen_at, prune_after"


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        _copy_sqlite_table(keyed_by_nonce=True)
        return
    op.drop_constraint("pk_signature_nonces", "signature_nonces", type_="primary")
    op.drop_constraint("uq_signature_nonces_nonce", "signature_nonces", type_="unique")
    op.drop_column("signature_nonces", "id")
    op.create_primary_key("pk_signature_nonces", "signature_nonces", ["nonce"])


def downgrade() -> None:
    # Nonces live five minutes past their signature; the ones kept are numbered afresh
    # (a new serial column on PostgreSQL, each copied row's rowid on SQLite), and
    # nothing read the numbers but the pruning job.
    if op.get_bind().dialect.name == "sqlite":
        _copy_sqlite_table(keyed_by_nonce=False)
        return
    op.drop_constraint("pk_signature_nonces", "signature_nonces", type_="primary")
    op.create_unique_constraint("uq_signature_nonces_nonce", "signature_nonces", ["nonce"])
    op.execute("ALTER TABLE signature_nonces ADD COLUMN id BIGSERIAL NOT NULL")
    op.create_primary_key("pk_signature_nonces", "signature_nonces", ["id"])


def _copy_sqlite_table(*, keyed_by_nonce: bool) -> None:
    """SQLite cannot change a table's key in place: a copy with the new key replaces it."""
    key: list[sa.SchemaItem] = (
        [sa.PrimaryKeyConstraint("nonce", name="pk_signature_nonces")] if keyed_by_nonce else
        [sa.PrimaryKeyConstraint("id", name="pk_signature_nonces"),
         sa.UniqueConstraint("nonce", name="uq_signature_nonces_nonce")])
    op.create_table(
        "signature_nonces_copy",
        *([] if keyed_by_nonce else [sa.Column("id", ID_TYPE, nullable=False)]),
        sa.Column("nonce", sa.String(length=128), nullable=False),
        sa.Column("partner_id", ID_TYPE, nullable=False),
        sa.Column("key_id", sa.String(length=100), nullable=False),
        sa.Column("seen_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("prune_after", UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["partner_id"], ["partners.id"], name="fk_signature_nonces_partner_id_partners"),
        *key,
    )
    op.execute(f"INSERT INTO signature_nonces_copy ({COLUMNS}) SELECT {COLUMNS} FROM signature_nonces")
    op.drop_index("ix_signature_nonces_prune_after", table_name="signature_nonces")
    op.drop_table("signature_nonces")
    op.rename_table("signature_nonces_copy", "signature_nonces")
    op.create_index("ix_signature_nonces_prune_after", "signature_nonces", ["prune_after"])
