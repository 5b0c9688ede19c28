"""Idempotency keys leave a tenth of each page free on PostgreSQL, for the reply.

Why: a key's row is inserted small (the claim) and grows by the stored reply in the
same transaction. Filled to the brim, a page takes one claim more than it has room to
complete: that reply's update cannot stay on the page, so it is not HOT and writes the
table's index entries again (measured: 11% of an earn's reply updates once the
surrogate id was gone, 0036). With a tenth of the page kept back (819 bytes, an earn's
reply grows the row by about 690), every earn's update stays on its page. Only rows
inserted from now on are placed so; SQLite has no such setting.

Revision ID: 0037
Revises: 0036
Create Date: 2026-12-07
"""

from alembic import op

revision = "0037"
down_revision = "0036"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE idempotency_keys SET (fillfactor = 90)")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE idempotency_keys RESET (fillfactor)")
