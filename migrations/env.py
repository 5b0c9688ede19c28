"""Alembic environment: runs on the connection ``alliance.migrate`` hands over.

On PostgreSQL every upgrade runs in one transaction under an advisory lock, so two
deploys starting at once apply the migrations exactly once.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import text

from alliance.models import Base

MIGRATION_ADVISORY_LOCK_KEY = 7_150_001

config = context.config
connection = config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through 'alliance db upgrade', which provides the connection")

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_ADVISORY_LOCK_KEY})
    context.run_migrations()
