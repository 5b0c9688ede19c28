"""Helpers for the audit's tests: run ``alliance audit``, and corrupt the books as only a superuser could."""

from __future__ import annotations

from typing import Iterator

import pytest
from click.testing import CliRunner, Result
from flask import Flask
from sqlalchemy import text

from alliance.cli import main
from alliance.domain.audit_chain import next_entry
from alliance.extensions import HubState
from alliance.models import AuditLogEntry


@pytest.fixture
def runner(app: Flask) -> Iterator[CliRunner]:
    """A CLI runner whose ``alliance`` commands use the test's hub via its app context."""
    context = app.app_context()
    context.push()
    yield CliRunner()
    context.pop()


def invoke(runner: CliRunner, *arguments: str) -> Result:
    """Run ``alliance ARGUMENTS``; exceptions propagate, so a crash is never read as a refusal."""
    return runner.invoke(main, list(arguments), catch_exceptions=False)


def tamper(hub: HubState, table: str, *statements: str) -> None:
    """Run ``statements`` against ``table`` past its append-only guards, and leave the guards in place.

    On PostgreSQL replica mode skips ordinary triggers for this transaction alone, which
    is what a superuser with psql could do. SQLite cannot switch a trigger off, so the
    table's triggers are dropped for the change and created again exactly as they were:
    either way the audit's check of the guards stays green, and the check under test is
    the one that has to notice.
    """
    with hub.engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SET LOCAL session_replication_role = replica"))
            for statement in statements:
                connection.execute(text(statement))
            return
        triggers = connection.execute(text(
            "SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND tbl_name = :table"), {"table": table}).all()
        for name, _ in triggers:
            connection.execute(text(f"DROP TRIGGER {name}"))
        for statement in statements:
            connection.execute(text(statement))
        for _, sql in triggers:
            connection.execute(text(sql))


def rewrite_audit_log(hub: HubState, *, actor_of_first_entry: str) -> None:
    """Change the first audit entry and hash the whole chain again, so that every link still holds.

    This is what someone able to write the table and run the hub's code could do; only a
    head anchored outside the table can tell the rewritten chain from the real one.
    """
    with hub.unit_of_work() as uow:
        rows = uow.session.query(AuditLogEntry).order_by(AuditLogEntry.sequence).all()
        rewritten, previous = [], None
        for row in rows:
            previous = next_entry(previous, occurred_at=row.occurred_at,
                                  actor=actor_of_first_entry if row.sequence == 1 else row.actor,
                                  action=row.action, subject=row.subject, before=row.before, after=row.after)
            rewritten.append(previous)
    tamper(hub, "audit_log", *[
        f"UPDATE audit_log SET actor = '{entry.actor}', previous_hash = '{entry.previous_hash}', "
        f"entry_hash = '{entry.entry_hash}' WHERE sequence = {entry.sequence}"
        for entry in rewritten
    ])
