"""The audit log's head, anchored where the database cannot roll it back: statements and signed checkpoints.

A hash chain cannot see its newest entries deleted, nor a tail rewritten and hashed
again. Each signed statement carries the chain's head at closing (and partners keep
those files); a daily checkpoint signs it too, and can be exported off the database.
``alliance audit`` checks every anchor it can see against the log.
"""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

from sqlalchemy import func, select

from alliance.models import AuditCheckpoint, AuditLogEntry, SettlementStatement
from alliance.scheduler import hub_jobs
from alliance.services import audit_log
from alliance.services.audit_log import head
from settlement.statements import parse_signature, verify_statement
from tests.audit_support import invoke, rewrite_audit_log, runner, tamper  # noqa: F401 - runner is a fixture

NOW = datetime.now(timezone.utc)


def seeded(runner) -> None:  # type: ignore[no-untyped-def]
    assert invoke(runner, "seed-demo").exit_code == 0
    result = invoke(runner, "audit")
    assert result.exit_code == 0, result.output


def failed_at(runner, check: str, *options: str) -> str:  # type: ignore[no-untyped-def]
    result = invoke(runner, "audit", *options)
    assert result.exit_code == 1, result.output
    assert f"audit FAILED at {check}: " in result.output, result.output
    return result.output.split(f"audit FAILED at {check}: ", 1)[1].splitlines()[0]


def audit_entries(hub) -> int:  # type: ignore[no-untyped-def]
    with hub.unit_of_work() as uow:
        return uow.session.scalar(select(func.count()).select_from(AuditLogEntry))


def newest_statement(hub) -> SettlementStatement:  # type: ignore[no-untyped-def]
    with hub.unit_of_work() as uow:
        return uow.session.scalars(select(SettlementStatement).order_by(SettlementStatement.id.desc()).limit(1)).one()


def checkpoint(runner, now: datetime = NOW) -> str:  # type: ignore[no-untyped-def]
    result = invoke(runner, "jobs", "checkpoint-audit-log", "--now", now.isoformat())
    assert result.exit_code == 0, result.output
    return result.output


def test_each_statement_carries_the_audit_log_head_at_its_closing(runner, hub, tmp_path: Path):
    seeded(runner)
    statement = newest_statement(hub)
    document = json.loads(statement.document_json)
    with hub.unit_of_work() as uow:
        anchored = uow.session.scalars(select(AuditLogEntry).where(
            AuditLogEntry.sequence == document["audit_chain"]["entries"])).one()
    assert document["audit_chain"] == {"entries": anchored.sequence, "head_hash": anchored.entry_hash}
    trailer = list(csv.DictReader(io.StringIO(statement.document_csv)))[-1]
    assert (trailer["record"], trailer["count"], trailer["reference"]) == (
        "audit_chain", str(anchored.sequence), anchored.entry_hash)
    # The partner's copies still verify with the published key, offline.
    exported = invoke(runner, "statements", "export", "--partner", "fuel-stop", "--out", str(tmp_path))
    assert exported.exit_code == 0, exported.output
    for path in sorted(tmp_path.glob("fuel-stop-*Z.json"))[-1:] + sorted(tmp_path.glob("fuel-stop-*Z.csv"))[-1:]:
        verified = invoke(runner, "statements", "verify", str(path))
        assert verified.exit_code == 0 and "verified" in verified.output, verified.output


def test_audit_names_a_truncation_below_a_statements_anchor(runner, hub):
    seeded(runner)
    tamper(hub, "audit_log", "DELETE FROM audit_log")
    problem = failed_at(runner, "audit_log_anchors")
    assert problem.startswith("statement ") and "anchors the audit log at " in problem
    assert "the log has no entry " in problem and "(its newest is 0): truncated" in problem


def test_audit_names_the_newest_entries_deleted_after_a_signed_checkpoint(runner, hub):
    seeded(runner)
    # Whether the demo's last act is a statement closing depends on the day it is seeded;
    # one change after it makes the checkpoint the only anchor at the log's head.
    with hub.unit_of_work() as uow:
        audit_log.append(uow.session, actor="test", action="test.after_seeding", subject="audit", now=NOW)
    assert "checkpoint-audit-log: 1 checkpoints signed" in checkpoint(runner)
    entries = audit_entries(hub)
    tamper(hub, "audit_log", f"DELETE FROM audit_log WHERE sequence = {entries}")
    problem = failed_at(runner, "audit_log_anchors")
    assert problem.startswith("checkpoint 1 (taken ")
    assert f"anchors the audit log at {entries} entries" in problem
    assert f"the log has no entry {entries} (its newest is {entries - 1}): truncated" in problem


def test_audit_names_an_audit_log_rewritten_and_hashed_again(runner, hub):
    seeded(runner)
    rewrite_audit_log(hub, actor_of_first_entry="someone-else")
    problem = failed_at(runner, "audit_log_anchors")
    assert "anchors the audit log at " in problem and "; its entry " in problem and " instead: rewritten" in problem


def test_audit_names_an_edited_audit_entry(runner, hub):
    seeded(runner)
    tamper(hub, "audit_log", "UPDATE audit_log SET actor = 'someone-else' WHERE sequence = 1")
    problem = failed_at(runner, "audit_log_chain")
    assert problem.startswith("entry 1: entry_hash_mismatch")


def test_audit_names_a_checkpoint_whose_signature_was_tampered_with(runner, hub):
    seeded(runner)
    checkpoint(runner)
    with hub.unit_of_work() as uow:
        stored = uow.session.scalars(select(AuditCheckpoint)).one()
    signature = json.loads(stored.signature)
    flipped = signature["signature_b64"][:10] + ("A" if signature["signature_b64"][10] != "A" else "B") \
        + signature["signature_b64"][11:]
    tamper(hub, "audit_checkpoints", f"UPDATE audit_checkpoints SET signature = "
                                     f"replace(signature, '{signature['signature_b64']}', '{flipped}')")
    problem = failed_at(runner, "audit_checkpoints_signed")
    assert problem.startswith("checkpoint 1 (taken ") and "signature_mismatch" in problem


def test_a_checkpoint_row_that_differs_from_its_signed_document_is_named(runner, hub):
    seeded(runner)
    checkpoint(runner)
    tamper(hub, "audit_checkpoints", "UPDATE audit_checkpoints SET entries = entries - 1")
    problem = failed_at(runner, "audit_checkpoints_match_documents")
    assert problem.startswith("checkpoint 1 (taken ") and "entries is " in problem and "the row stores" in problem


def test_one_checkpoint_a_day_signed_with_the_statement_key(runner, hub):
    seeded(runner)
    assert "1 checkpoints signed" in checkpoint(runner)
    assert "0 checkpoints signed" in checkpoint(runner)
    assert "1 checkpoints signed" in checkpoint(runner, NOW + timedelta(days=1))
    with hub.unit_of_work() as uow:
        stored = uow.session.scalars(select(AuditCheckpoint).order_by(AuditCheckpoint.id)).all()
        chain_head = head(uow.session)
    assert [(row.entries, row.head_hash) for row in stored] == [(chain_head.entries, chain_head.head_hash)] * 2
    signer = hub.statement_signer
    public_keys = {signer.key_id: signer.signing_key.public_key()}
    for row in stored:
        assert verify_statement(row.document.encode(), parse_signature(row.signature.encode()), public_keys)
    assert "checkpoint-audit-log" in {job.name for job in hub_jobs(hub)}


def test_exported_checkpoints_anchor_the_log_even_after_the_table_is_emptied(runner, hub, tmp_path: Path):
    seeded(runner)
    checkpoint(runner)
    copy = tmp_path / "checkpoints.json"
    exported = invoke(runner, "audit-checkpoints", "export", "--out", str(copy))
    assert exported.exit_code == 0 and "1 checkpoints written" in exported.output, exported.output
    assert invoke(runner, "audit", "--checkpoints", str(copy)).exit_code == 0
    entries = audit_entries(hub)
    tamper(hub, "audit_checkpoints", "DELETE FROM audit_checkpoints")
    tamper(hub, "audit_log", f"DELETE FROM audit_log WHERE sequence = {entries}")
    assert invoke(runner, "audit").exit_code == 0, "no anchor inside the database covers the last entry"
    problem = failed_at(runner, "audit_log_anchors", "--checkpoints", str(copy))
    assert problem.startswith("exported checkpoint 1 (taken ")
    assert f"the log has no entry {entries} (its newest is {entries - 1}): truncated" in problem
