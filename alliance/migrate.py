"""Schema migrations through Alembic, on the hub's own engine."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import Engine

from alliance.domain.errors import AllianceError, ConfigurationError
from alliance.models import Base

MIGRATIONS_DIRECTORY = Path(__file__).resolve().parent.parent / "migrations"
# Tables that only the database's own triggers write, which no model maps: on SQLite,
# ``journal_balances`` carries the balanced-at-commit rule (migration 0014).
GUARD_TABLES = frozenset({"journal_balances"})


def _config(engine: Engine) -> Config:
    if not (MIGRATIONS_DIRECTORY / "env.py").exists():
        raise ConfigurationError(
            f"migrations not found at {MIGRATIONS_DIRECTORY}; install the hub from a checkout (pip install -e .)"
        )
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIRECTORY))
    return config


class MigrationFailed(AllianceError):
    """A migration command that Alembic refused, such as an unknown revision."""

    code = "migration_failed"
    http_status = 500
    title = "Migration failed"


def _run(engine: Engine, action: Callable[[Config, str], None], *arguments: str) -> None:
    config = _config(engine)
    try:
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            action(config, *arguments)
    except CommandError as error:
        raise MigrationFailed(str(error)) from error


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Apply migrations up to ``revision``."""
    _run(engine, command.upgrade, revision)


def downgrade(engine: Engine, revision: str) -> None:
    """Undo migrations down to ``revision`` (``base`` for an empty database)."""
    _run(engine, command.downgrade, revision)


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at, or None when it has none."""
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def head_revision(engine: Engine) -> str | None:
    """The newest revision in ``migrations/``."""
    return ScriptDirectory.from_config(_config(engine)).get_current_head()


def known_revisions(engine: Engine) -> frozenset[str]:
    """Every revision in ``migrations/``: a database at any other was migrated by a newer release."""
    return frozenset(script.revision for script in ScriptDirectory.from_config(_config(engine)).walk_revisions())


def pending_model_changes(engine: Engine) -> list[object]:
    """Differences between the models and the migrated database (empty when they agree)."""
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={
            "compare_type": True,
            "include_name": lambda name, type_, _parents: not (type_ == "table" and name in GUARD_TABLES),
        })
        return compare_metadata(context, Base.metadata)
