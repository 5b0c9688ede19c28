"""Point-in-time recovery: a base backup plus archived WAL restore into a fresh cluster at a chosen moment.

The procedure under test is the one operators run (``deploy/backup``): WAL archived by
``archive-wal.sh``, a base backup by ``base-backup.sh``, and ``restore-to-time.sh``
restoring it into a new data directory with ``recovery_target_time`` and promoting it.
Partners and members exist before the base backup; two batches of earns, redemptions
and refunds follow it, so everything the restore must bring back comes from the
archived WAL, not from the backup. The target moment lies between the batches, and
PostgreSQL's own commit timestamp of every acknowledged operation
(``track_commit_timestamp``) says on which side of it each one committed.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable, Iterator

import psycopg
import pytest
from click.testing import CliRunner
from flask import Flask
from psycopg import sql
from sqlalchemy import Connection, create_engine, text
from sqlalchemy.orm import Session

from alliance import create_app, migrate
from alliance.cli import main
from alliance.config import Settings
from alliance.db import make_engine
from alliance.extensions import HubState, hub_state
from alliance.services import redemptions
from alliance.services.member_verification import active_card_holder
from alliance.services.purchases import PurchaseReport, refund_purchase, report_purchase
from tests.factories import make_member, make_partner
from tests.postgres_server import SEARCH_DIRECTORIES, PostgresServer, start_postgres

pytestmark = pytest.mark.postgresql

BACKUP_SCRIPTS = Path(__file__).resolve().parents[2] / "deploy" / "backup"
DATABASE = "alliance"
ARCHIVE_WAIT_S = 30
# The gap left on each side of the target moment, so no commit can share its microsecond.
TARGET_MARGIN_S = 0.05

# How to find each kind of operation on a database, by the reference the partner gave it.
PRESENCE = {
    "earn": "SELECT count(*) FROM purchases WHERE receipt_id = :key",
    "purchase_refund": "SELECT count(*) FROM purchase_refunds WHERE refund_id = :key",
    "authorize": "SELECT count(*) FROM redemption_holds WHERE reference = :key",
    "capture": "SELECT count(*) FROM journal_transactions AS t JOIN redemption_holds AS h ON h.id = t.hold_id"
               " WHERE h.reference = :key AND t.kind = 'capture'",
    "redemption_refund": "SELECT count(*) FROM redemption_refunds WHERE refund_id = :key",
}


@dataclass(frozen=True)
class Operation:
    """One partner operation: its kind, the partner's reference for it, and how to run it."""

    kind: str
    key: str
    run: Callable[[Session, datetime], object]

    def __str__(self) -> str:
        return f"{self.kind} {self.key}"


@dataclass(frozen=True)
class Acknowledged:
    """An operation whose commit returned, with the commit time PostgreSQL recorded for it."""

    operation: Operation
    committed_at: datetime
    acknowledged_at: datetime


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _postgres_user_owns(path: Path) -> None:
    # PostgreSQL refuses to run as root, so as root the servers run as ``postgres``
    # (tests/postgres_server.py) and must be able to write the archive and restore here.
    if os.geteuid() == 0:
        shutil.chown(path, user="postgres")


@pytest.fixture
def workspace() -> Iterator[Path]:
    """A folder for the WAL archive, the base backup and the restored cluster; removed afterwards."""
    directory = Path(tempfile.mkdtemp(prefix="alliance-pitr-"))
    _postgres_user_owns(directory)
    for name in ("archive", "restored", "instance"):
        (directory / name).mkdir()
        _postgres_user_owns(directory / name)
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def archiving_server(workspace: Path) -> Iterator[PostgresServer]:
    """A durable PostgreSQL archiving every finished WAL segment with ``archive-wal.sh``."""
    server = start_postgres(durable=True)
    try:
        archive_command = f'bash {BACKUP_SCRIPTS / "archive-wal.sh"} "%p" "%f" {workspace / "archive"}'
        with _admin(server) as admin:
            admin.execute(sql.SQL("ALTER SYSTEM SET archive_command = {}").format(sql.Literal(archive_command)))
            admin.execute("ALTER SYSTEM SET archive_mode = on")
            admin.execute("ALTER SYSTEM SET track_commit_timestamp = on")
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DATABASE)))
        # archive_mode and track_commit_timestamp take effect only at server start.
        server.stop_immediately()
        server.start()
        engine = make_engine(server.url(DATABASE), Settings())
        migrate.upgrade(engine)
        engine.dispose()
        yield server
    finally:
        server.stop()


def _admin(server: PostgresServer) -> psycopg.Connection:
    return psycopg.connect(host="127.0.0.1", port=server.port, user=server.user, dbname="postgres", autocommit=True)


def _app(url: str, instance: Path) -> Flask:
    """A hub on ``url``; the same instance folder gives source and restore the same keys."""
    return create_app(Settings(database_url=url, instance_path=str(instance), environment="test",
                               secret_key="test-secret-key"))


def test_a_restore_to_a_moment_between_two_batches_holds_exactly_what_committed_before_it(
    workspace: Path, archiving_server: PostgresServer,
) -> None:
    source = hub_state(_app(archiving_server.url(DATABASE), workspace / "instance"))
    first_batch, second_batch = _batches(source)
    _take_base_backup(archiving_server, workspace / "backup")

    before = [_perform(source, operation) for operation in first_batch]
    with source.engine.connect() as connection:
        books_at_target = _books(connection)
    time.sleep(TARGET_MARGIN_S)
    target = datetime.now(timezone.utc)
    time.sleep(TARGET_MARGIN_S)
    after = [_perform(source, operation) for operation in second_batch]
    with source.engine.connect() as connection:
        # Otherwise the restore's books could match by accident and the test would prove nothing.
        assert _books(connection) != books_at_target
    source.engine.dispose()
    assert max(done.committed_at for done in before) < target < min(done.committed_at for done in after)
    assert all(done.committed_at <= done.acknowledged_at for done in before + after)
    _archive_everything(archiving_server, workspace / "archive")

    restored = PostgresServer(directory=workspace / "restored", port=_free_port(), user=archiving_server.user,
                              run_as=archiving_server.run_as)
    try:
        output = _run_script(
            archiving_server, "restore-to-time.sh", "--backup", str(workspace / "backup"),
            "--archive", str(workspace / "archive"), "--target-time", target.isoformat(sep=" "),
            "--data", str(restored.directory / "data"), "--port", str(restored.port),
            "--listen", "127.0.0.1", "--socket-dir", str(restored.directory), "--timeout-s", "60")
        # PostgreSQL stopped at the first commit after the target: the second batch's first.
        assert _recovery_stopped_at(output) == min(done.committed_at for done in after), output
        _assert_restored(restored.url(DATABASE), workspace / "instance", before, after, books_at_target)
    finally:
        restored.stop()


def _assert_restored(url: str, instance: Path, before: list[Acknowledged], after: list[Acknowledged],
                     books_at_target: dict[str, list[tuple]]) -> None:  # type: ignore[type-arg]
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            for done in before:
                assert _present(connection, done.operation) == 1, f"{done.operation} committed before the target"
            for done in after:
                assert _present(connection, done.operation) == 0, f"{done.operation} committed after the target"
            assert _books(connection) == books_at_target
            # The source host's settings in the backup were replaced: the restored server
            # listens where it was told and waits for no standby it does not have.
            assert connection.execute(text("SHOW listen_addresses")).scalar_one() == "127.0.0.1"
            assert connection.execute(text("SHOW synchronous_standby_names")).scalar_one() == ""
            # A promoted cluster takes writes: it is a primary, not a paused standby.
            assert connection.execute(text("SELECT pg_is_in_recovery()")).scalar_one() is False
            connection.execute(text("CREATE TABLE restored_cluster_takes_writes ()"))
            connection.commit()
    finally:
        engine.dispose()
    app = _app(url, instance)
    with app.app_context():
        audited = CliRunner().invoke(main, ["audit"], catch_exceptions=False)
    hub_state(app).engine.dispose()
    assert audited.exit_code == 0, audited.output
    assert "audit passed" in audited.output


def _batches(hub: HubState) -> tuple[list[Operation], list[Operation]]:
    """A partner and three members (before the base backup), and two batches of operations on them."""
    now = datetime.now(timezone.utc)
    shop = make_partner(hub, now=now - timedelta(days=1), code="shop")
    cards = [make_member(hub, now=now - timedelta(days=1)).card_number for _ in range(3)]
    first = [
        _earn(shop, cards[0], "R-1", 12_000), _earn(shop, cards[1], "R-2", 8_000), _earn(shop, cards[2], "R-3", 5_000),
        _purchase_refund(shop, "R-2", "F-1", 2_000),
        _authorize(shop, cards[0], "H-1", 50), _capture(shop, "H-1", 40), _redemption_refund(shop, "H-1", "RF-1", 10),
    ]
    second = [
        _earn(shop, cards[0], "R-4", 3_000), _earn(shop, cards[2], "R-5", 4_000),
        # Later operations on what the first batch created must not leak into the restore either.
        _purchase_refund(shop, "R-1", "F-2", 6_000), _redemption_refund(shop, "H-1", "RF-2", 5),
        _authorize(shop, cards[1], "H-2", 30), _capture(shop, "H-2", 30),
    ]
    return first, second


def _earn(partner_id: int, card_number: str, receipt_id: str, amount_minor: int) -> Operation:
    def run(session: Session, now: datetime) -> object:
        return report_purchase(session, partner_id=partner_id, now=now, expiry_months=24, report=PurchaseReport(
            receipt_id=receipt_id, card_number=card_number, amount_minor=amount_minor, currency="EUR",
            purchased_at=now - timedelta(minutes=1)))
    return Operation("earn", receipt_id, run)


def _purchase_refund(partner_id: int, receipt_id: str, refund_id: str, amount_minor: int) -> Operation:
    def run(session: Session, now: datetime) -> object:
        return refund_purchase(session, partner_id=partner_id, receipt_id=receipt_id, refund_id=refund_id,
                               amount_minor=amount_minor, now=now)
    return Operation("purchase_refund", refund_id, run)


def _authorize(partner_id: int, card_number: str, reference: str, points: int) -> Operation:
    def run(session: Session, now: datetime) -> object:
        return redemptions.authorize(session, partner_id=partner_id, holder=active_card_holder(session, card_number),
                                     reference=reference, points=points, ttl_s=900, terminal_id=None, now=now)
    return Operation("authorize", reference, run)


def _capture(partner_id: int, reference: str, points: int) -> Operation:
    def run(session: Session, now: datetime) -> object:
        return redemptions.capture(session, partner_id=partner_id, reference=reference, points=points, now=now)
    return Operation("capture", reference, run)


def _redemption_refund(partner_id: int, reference: str, refund_id: str, points: int) -> Operation:
    def run(session: Session, now: datetime) -> object:
        return redemptions.refund(session, partner_id=partner_id, reference=reference, refund_id=refund_id,
                                  points=points, now=now)
    return Operation("redemption_refund", refund_id, run)


def _perform(hub: HubState, operation: Operation) -> Acknowledged:
    """Run one operation in its own transaction; once its commit returns, read its commit timestamp."""
    with hub.unit_of_work() as uow:
        operation.run(uow.session, datetime.now(timezone.utc))
        transaction_id = uow.session.execute(text("SELECT pg_current_xact_id()::text")).scalar_one()
        uow.commit()
    acknowledged_at = datetime.now(timezone.utc)
    with hub.engine.connect() as connection:
        committed_at = connection.execute(text("SELECT pg_xact_commit_timestamp(CAST(:id AS xid))"),
                                          {"id": transaction_id}).scalar_one()
    return Acknowledged(operation, committed_at, acknowledged_at)


def _present(connection: Connection, operation: Operation) -> int:
    return connection.execute(text(PRESENCE[operation.kind]), {"key": operation.key}).scalar_one()


def _books(connection: Connection) -> dict[str, list[tuple]]:  # type: ignore[type-arg]
    """Every stored balance and the state of every purchase and redemption, to compare two databases."""
    queries = {
        "balances": "SELECT code, balance_points FROM ledger_accounts WHERE balance_points IS NOT NULL ORDER BY code",
        "purchases": "SELECT receipt_id, points_partner, refunded_amount_minor FROM purchases ORDER BY receipt_id",
        "holds": "SELECT reference, status, points_captured, points_refunded FROM redemption_holds ORDER BY reference",
        "postings": "SELECT kind, count(*), sum(abs(e.amount_points)) FROM journal_transactions AS t"
                    " JOIN journal_entries AS e ON e.transaction_id = t.id GROUP BY kind ORDER BY kind",
    }
    return {name: [tuple(row) for row in connection.execute(text(query))] for name, query in queries.items()}


def _take_base_backup(server: PostgresServer, backup: Path) -> None:
    """``base-backup.sh``, with settings in the configuration that only make sense on the source host.

    A backup of a Patroni node carries such settings in its postgresql.conf: the node's
    own addresses, its synchronous standby, its log collector. They are written here
    without reloading the running server and taken back after the backup, so only the
    backup holds them; the restore must replace them to start and take writes at all.
    """
    host_settings = {"listen_addresses": "192.0.2.1", "synchronous_standby_names": "standby_the_restore_lacks",
                     "logging_collector": "on"}
    with _admin(server) as admin:
        for name, value in host_settings.items():
            admin.execute(sql.SQL("ALTER SYSTEM SET {} = {}").format(sql.Identifier(name), sql.Literal(value)))
    _run_script(server, "base-backup.sh", str(backup), "-h", "127.0.0.1", "-p", str(server.port), "-U", server.user)
    with _admin(server) as admin:
        for name in host_settings:
            admin.execute(sql.SQL("ALTER SYSTEM RESET {}").format(sql.Identifier(name)))


def _recovery_stopped_at(output: str) -> datetime:
    """The commit time of the transaction recovery stopped before, from PostgreSQL's log line."""
    found = re.search(r"recovery stopping before commit of transaction \d+, time (.+)$", output, re.MULTILINE)
    assert found is not None, output
    return datetime.fromisoformat(found.group(1))


def _archive_everything(server: PostgresServer, archive: Path) -> None:
    """Close the current WAL segment and wait until the archiver has copied it."""
    with _admin(server) as admin:
        segment = admin.execute("SELECT pg_walfile_name(pg_switch_wal())").fetchone()[0]  # type: ignore[index]
        deadline = time.monotonic() + ARCHIVE_WAIT_S
        while not (archive / segment).exists():
            if time.monotonic() > deadline:
                status = admin.execute("SELECT * FROM pg_stat_archiver").fetchone()
                raise AssertionError(f"segment {segment} not archived within {ARCHIVE_WAIT_S} s: {status}")
            time.sleep(0.05)


def _run_script(server: PostgresServer, script: str, *arguments: str) -> str:
    """Run one of deploy/backup's scripts as the user PostgreSQL runs as, with this server's programs."""
    result = subprocess.run(
        [*server.run_as, "env", f"PG_BINDIR={_server_binary_folder()}", "bash", str(BACKUP_SCRIPTS / script),
         *arguments],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, f"{script} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def _server_binary_folder() -> str:
    """The folder of the PostgreSQL programs the test servers run (tests/postgres_server.py's choice)."""
    for directory in SEARCH_DIRECTORIES:
        if (Path(directory) / "pg_ctl").exists():
            return directory
    found = shutil.which("pg_ctl")
    assert found is not None, "PostgreSQL's programs are not installed"
    return str(Path(found).parent)


def test_the_archive_command_accepts_a_segment_archived_again_and_refuses_to_overwrite_a_different_one(tmp_path):
    archive = tmp_path / "archive"
    archive.mkdir()
    segment = tmp_path / "000000010000000000000007"
    segment.write_bytes(b"wal bytes")
    archive_wal = ["bash", str(BACKUP_SCRIPTS / "archive-wal.sh"), str(segment), segment.name, str(archive)]
    assert subprocess.run(archive_wal, capture_output=True).returncode == 0
    # After a crash PostgreSQL may archive the same segment again: the same bytes are success.
    assert subprocess.run(archive_wal, capture_output=True).returncode == 0
    segment.write_bytes(b"other bytes")
    refused = subprocess.run(archive_wal, capture_output=True, text=True)
    assert refused.returncode == 1 and "different contents" in refused.stderr
    assert (archive / segment.name).read_bytes() == b"wal bytes"
    assert sorted(path.name for path in archive.iterdir()) == [segment.name]


def test_a_restore_target_without_an_offset_is_refused_before_anything_is_written(tmp_path):
    backup = tmp_path / "backup"
    backup.mkdir()
    (backup / "backup_label").write_text("START WAL LOCATION: 0/2000028\n")
    (backup / "postgresql.conf").write_text("")
    (tmp_path / "archive").mkdir()
    refused = subprocess.run(
        ["bash", str(BACKUP_SCRIPTS / "restore-to-time.sh"), "--backup", str(backup), "--archive",
         str(tmp_path / "archive"), "--target-time", "2026-12-06 14:03:27", "--data", str(tmp_path / "data"),
         "--port", "5999"], capture_output=True, text=True)
    assert refused.returncode == 1 and "explicit offset" in refused.stderr
    assert not (tmp_path / "data").exists()
