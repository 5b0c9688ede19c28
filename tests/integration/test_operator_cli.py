"""Operator commands for partners, keys, members and campaigns, run as an operator would."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ec import SECP256R1, generate_private_key
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import select

from alliance.cli import main
from alliance.models import AuditLogEntry, Campaign, Partner, PartnerKey


@pytest.fixture
def run(app):  # type: ignore[no-untyped-def]
    context = app.app_context()
    context.push()
    runner = CliRunner()
    yield lambda *arguments: runner.invoke(main, list(arguments), catch_exceptions=False)
    context.pop()


def public_pem(tmp_path, private_key) -> str:  # type: ignore[no-untyped-def]
    path = tmp_path / "key.pub.pem"
    path.write_bytes(private_key.public_key().public_bytes(serialization.Encoding.PEM,
                                                           serialization.PublicFormat.SubjectPublicKeyInfo))
    return str(path)


def create_bakery(run) -> None:  # type: ignore[no-untyped-def]
    result = run("partners", "create", "--code", "bakery", "--name", "Bakery", "--issue-price", "0.0100",
                 "--redemption-price", "0.0080", "--time-zone", "Europe/Paris", "--cycle", "weekly",
                 "--ladder", '[{"from_minor": 0, "multiplier": "1"}, {"from_minor": 10000, "multiplier": "1.5"}]')
    assert result.exit_code == 0, result.output


def test_onboard_a_partner_with_a_terminal_bound_key_then_rotate_and_revoke(run, hub, tmp_path):
    create_bakery(run)
    assert run("partners", "add-terminal", "--partner", "bakery", "--code", "till-1").exit_code == 0
    first = run("partners", "add-key", "--partner", "bakery", "--key-id", "bakery-till-1",
                "--public-key", public_pem(tmp_path, Ed25519PrivateKey.generate()), "--terminal", "till-1")
    assert first.exit_code == 0, first.output
    second = run("partners", "add-key", "--partner", "bakery", "--key-id", "bakery-till-1-2026",
                 "--public-key", public_pem(tmp_path, Ed25519PrivateKey.generate()), "--terminal", "till-1")
    assert second.exit_code == 0, second.output
    assert run("partners", "revoke-key", "bakery-till-1").exit_code == 0
    with hub.unit_of_work() as uow:
        keys = dict(uow.session.execute(select(PartnerKey.key_id, PartnerKey.status)).all())
        partner = uow.session.scalars(select(Partner)).one()
        zone_and_cycle = (partner.time_zone, partner.settlement_cycle)
    assert keys == {"bakery-till-1": "revoked", "bakery-till-1-2026": "active"}
    assert zone_and_cycle == ("Europe/Paris", "weekly")
    listed = run("partners", "list")
    assert "bakery-till-1 (revoked)" in listed.output and "bakery-till-1-2026 (active)" in listed.output
    with hub.unit_of_work() as uow:
        actions = uow.session.scalars(select(AuditLogEntry.action).order_by(AuditLogEntry.sequence)).all()
        actors = set(uow.session.scalars(select(AuditLogEntry.actor)))
    # Operator commands are back-office changes too: each one is in the audit trail.
    assert actions == ["partner.onboard", "partner.status", "partner.terminal.add", "partner.key.register",
                       "partner.key.register", "partner.key.revoke"]
    assert all(actor.startswith("cli:") for actor in actors)


def test_operator_mistakes_are_clear_errors(run, tmp_path):
    create_bakery(run)
    duplicate = run("partners", "create", "--code", "bakery", "--name", "Again", "--issue-price", "1",
                    "--redemption-price", "1")
    assert duplicate.exit_code == 1 and "already exists" in duplicate.output
    not_ed25519 = tmp_path / "ec.pem"
    not_ed25519.write_bytes(generate_private_key(SECP256R1()).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    wrong_type = run("partners", "add-key", "--partner", "bakery", "--key-id", "k", "--public-key", str(not_ed25519))
    assert wrong_type.exit_code == 2 and "only Ed25519" in wrong_type.output
    unknown_terminal = run("partners", "add-key", "--partner", "bakery", "--key-id", "k", "--public-key",
                           public_pem(tmp_path, Ed25519PrivateKey.generate()), "--terminal", "till-9")
    assert unknown_terminal.exit_code == 1 and "no terminal" in unknown_terminal.output
    assert run("partners", "revoke-key", "nobody").exit_code == 1
    float_price = run("partners", "create", "--code", "x1", "--name", "X", "--issue-price", "abc",
                      "--redemption-price", "1")
    assert float_price.exit_code == 2
    bad_zone = run("partners", "create", "--code", "x2", "--name", "X", "--issue-price", "1", "--redemption-price", "1",
                   "--time-zone", "Mars/Base")
    assert bad_zone.exit_code == 1 and "invalid" in bad_zone.output


def test_members_get_cards_pins_and_one_time_codes(run):
    enrolled = run("members", "enrol")
    assert enrolled.exit_code == 0
    card_number = enrolled.output.split("card ")[1].strip()
    assert run("members", "set-pin", "--card", card_number, "--pin", "4682").exit_code == 0
    assert run("members", "set-pin", "--card", card_number, "--pin", "12").exit_code == 1
    guessable = run("members", "set-pin", "--card", card_number, "--pin", "4321")
    assert guessable.exit_code == 1 and "too easy to guess" in guessable.output
    code = run("members", "issue-code", "--card", card_number)
    assert code.exit_code == 0 and "redemption code" in code.output
    assert run("members", "issue-code", "--card", "6390000000000099").exit_code == 1


def test_campaigns_state_their_funder(run, hub):
    create_bakery(run)
    made = run("campaigns", "create", "--name", "Double days", "--funded-by", "partner", "--partner", "bakery",
               "--multiplier", "2", "--starts-at", "2026-11-01T00:00:00+01:00",
               "--ends-at", "2026-12-01T00:00:00+01:00")
    assert made.exit_code == 0, made.output
    hub_funded = run("campaigns", "create", "--name", "Welcome", "--funded-by", "hub", "--bonus-points", "50",
                     "--starts-at", "2026-11-01T00:00:00+00:00", "--ends-at", "2026-12-01T00:00:00+00:00")
    assert hub_funded.exit_code == 0, hub_funded.output
    orphan = run("campaigns", "create", "--name", "Orphan", "--funded-by", "partner", "--multiplier", "2",
                 "--starts-at", "2026-11-01T00:00:00+00:00", "--ends-at", "2026-12-01T00:00:00+00:00")
    assert orphan.exit_code == 1 and "must name its partner" in orphan.output
    backwards = run("campaigns", "create", "--name", "Backwards", "--funded-by", "hub", "--bonus-points", "1",
                    "--starts-at", "2026-12-01T00:00:00+00:00", "--ends-at", "2026-11-01T00:00:00+00:00")
    assert backwards.exit_code == 1
    with hub.unit_of_work() as uow:
        funders = dict(uow.session.execute(select(Campaign.name, Campaign.funded_by)).all())
    assert funders == {"Double days": "partner", "Welcome": "hub"}
