"""Console login guesses are throttled per (username, source address) and per source, not by locking accounts.

Why: a security review found that five wrong passwords locked any console account for
fifteen minutes, repeatably, so anyone who knew a username could keep its owner out; and
that a locked account answered differently (and faster) than an unknown one, which told
which usernames exist. Failures are now counted in ``staff_login_throttles``, per
(username, source address) and per source address, in the database so that every
worker process sees the same counts; the per-account counter and lock
(``staff_users.failed_logins``, ``locked_until``) go away. A lockout in force at the
upgrade is lifted: the new throttle starts with no history.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-07
"""

from contextlib import contextmanager
from typing import Iterator

import sqlalchemy as sa
from alembic import op
from alembic.operations import BatchOperations

from alliance.models.base import UTCDateTime

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


@contextmanager
def _altered_staff_users() -> Iterator[BatchOperations]:
    """Batch operations on ``staff_users``, with its sessions set aside around them on SQLite.

    PostgreSQL alters the table in place. SQLite cannot drop a column named in a CHECK
    constraint, so the batch mode rebuilds the table, and dropping the old one would
    break ``staff_sessions``' foreign key to it: the sessions wait in a temporary table
    meanwhile and come back unchanged, ids and all.
    """
    on_sqlite = op.get_bind().dialect.name == "sqlite"
    if on_sqlite:
        op.execute("CREATE TEMPORARY TABLE staff_sessions_kept AS SELECT * FROM staff_sessions")
        op.execute("DELETE FROM staff_sessions")
    with op.batch_alter_table("staff_users") as batch:
        yield batch
    if on_sqlite:
        op.execute("INSERT INTO staff_sessions SELECT * FROM staff_sessions_kept")
        op.execute("DROP TABLE staff_sessions_kept")


def upgrade() -> None:
    op.create_table(
        "staff_login_throttles",
        sa.Column("key_digest", sa.String(length=64), nullable=False),
        sa.Column("scope", sa.String(length=6), nullable=False),
        sa.Column("username_digest", sa.String(length=64), nullable=True),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("last_attempt_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("blocked_until", UTCDateTime(timezone=True), nullable=True),
        sa.CheckConstraint("scope IN ('pair', 'source')", name=op.f("ck_staff_login_throttles_scope")),
        sa.CheckConstraint("failures >= 0", name=op.f("ck_staff_login_throttles_failures")),
        sa.PrimaryKeyConstraint("key_digest", name=op.f("pk_staff_login_throttles")),
    )
    op.create_index("ix_staff_login_throttles_last_attempt_at", "staff_login_throttles", ["last_attempt_at"])
    op.create_index("ix_staff_login_throttles_username_digest", "staff_login_throttles", ["username_digest"])
    with _altered_staff_users() as batch:
        batch.drop_constraint(op.f("ck_staff_users_failed_logins"), type_="check")
        batch.drop_column("failed_logins")
        batch.drop_column("locked_until")


def downgrade() -> None:
    with _altered_staff_users() as batch:
        batch.add_column(sa.Column("failed_logins", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("locked_until", UTCDateTime(timezone=True), nullable=True))
        batch.create_check_constraint(op.f("ck_staff_users_failed_logins"), "failed_logins >= 0")
    with _altered_staff_users() as batch:
        batch.alter_column("failed_logins", server_default=None)
    op.drop_index("ix_staff_login_throttles_username_digest", table_name="staff_login_throttles")
    op.drop_index("ix_staff_login_throttles_last_attempt_at", table_name="staff_login_throttles")
    op.drop_table("staff_login_throttles")
