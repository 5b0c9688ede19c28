"""Nothing the hub does on PostgreSQL outlives its transaction, so PgBouncer's transaction pooling can serve it.

Behind transaction pooling each transaction may run on another server session: a
session-level advisory lock, a plain ``SET``, ``LISTEN``, a named ``PREPARE``, a cursor
``WITH HOLD`` or a temporary table that outlives the transaction would stay behind on a
session the next transaction does not get. This reads every string literal and every
``func.<name>`` of the hub's code (migrations run straight on the primary, see
``alliance db``) and names any that would; the hub writes SQL keywords in capitals,
which keeps prose ("Set up ...") out of it. psycopg's own preparing is switched off in
``alliance.db`` for that mode; the integration tests in
``tests/integration/test_transaction_pooling.py`` run the hub through a real PgBouncer.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from alliance.config import Settings
from alliance.db import _postgres_connect_args

ROOT = Path(__file__).resolve().parents[2]
HUB_PACKAGES = ("alliance", "settlement")
SESSION_STATE = re.compile(
    r"pg_(try_)?advisory_lock(_shared)?\b"  # the _xact_ variants end with the transaction
    r"|^\s*SET\s+(?!LOCAL\b|TRANSACTION\b)"  # SET LOCAL and SET TRANSACTION end with it too
    r"|^\s*(LISTEN|PREPARE|DEALLOCATE)\b"
    r"|\bWITH\s+HOLD\b"
    r"|\bCREATE\s+(TEMP|TEMPORARY)\s+TABLE\b(?![^;]*ON\s+COMMIT\s+DROP)",
)


def session_state_uses() -> list[str]:
    found = []
    for package in HUB_PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
                if isinstance(node, ast.Constant) and isinstance(node.value, str):
                    candidate = node.value
                elif isinstance(node, ast.Attribute):
                    candidate = node.attr
                else:
                    continue
                if SESSION_STATE.search(candidate):
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {candidate.strip()[:80]!r}")
    return found


def test_the_hub_keeps_no_session_state_on_the_server():
    assert session_state_uses() == []


@pytest.mark.parametrize("statement", [
    "SELECT pg_advisory_lock(:key)", "SELECT pg_try_advisory_lock(1)", "SET work_mem = '1GB'",
    "  SET search_path TO ledger", "LISTEN jobs", "PREPARE earn AS SELECT 1", "DECLARE c CURSOR WITH HOLD FOR SELECT 1",
    "CREATE TEMP TABLE moved (id INTEGER)",
])
def test_the_check_recognises_session_state(statement):
    assert SESSION_STATE.search(statement)


@pytest.mark.parametrize("statement", [
    "SELECT pg_advisory_xact_lock(:key)", "SELECT pg_try_advisory_xact_lock(1)", "SET LOCAL synchronous_commit TO OFF",
    "SET TRANSACTION READ ONLY", "UPDATE ledger_accounts SET balance_points = 0",
    "CREATE TEMP TABLE moved (id INTEGER) ON COMMIT DROP",
])
def test_the_check_lets_transaction_scoped_statements_pass(statement):
    assert not SESSION_STATE.search(statement)


def test_transaction_pooling_switches_psycopg_preparing_off_and_session_pooling_leaves_it_on():
    transaction = _postgres_connect_args(Settings(database_pooling="transaction", database_connect_timeout_s=3))
    session = _postgres_connect_args(Settings())
    assert transaction == {"connect_timeout": 3, "prepare_threshold": None}
    assert session == {"connect_timeout": 5}
