"""``alliance staff add-person | people | add | list | set-roles | disable | enable | set-password`` and the demo's
console logins."""

from __future__ import annotations

import re

import pytest
from click.testing import CliRunner

from alliance.cli import main
from alliance.extensions import hub_state
from alliance.services.demo import DEMO_STAFF, DEMO_STAFF_PASSWORD
from tests.back_office_support import run_cli
from tests.console_support import PASSWORD, ConsoleClient, audit_actions, production_app, text_of


def run_with_input(app, text: str, *arguments: str):  # type: ignore[no-untyped-def]
    with app.app_context():
        return CliRunner().invoke(main, list(arguments), input=text, catch_exceptions=False)


ADD_CASS = ("staff", "add", "cass", "--person", "cass", "--name", "Cass")


@pytest.fixture(autouse=True)
def people(app):  # type: ignore[no-untyped-def]
    """The staff people the logins below belong to."""
    for handle, name in (("fiona", "Fiona Finance"), ("cass", "Cass Service")):
        assert run_cli(app, "staff", "add-person", handle, "--name", name).exit_code == 0


def test_staff_add_with_a_generated_password_prints_it_once_and_it_works(app):
    added = run_cli(app, "staff", "add", "fiona", "--person", "fiona", "--name", "Fiona Finance", "--role", "finance",
                    "--role", "admin", "--generate-password")
    assert added.exit_code == 0, added.output
    assert "staff user fiona (Fiona Finance) of fiona added with roles admin finance" in added.output
    password = re.search(r"^password=(\S+)$", added.output, re.M).group(1)
    assert len(password) >= 20
    assert ConsoleClient(app).login("fiona", password).status_code == 303
    assert ("cli:", "staff.add", "staff:fiona") in [
        (actor[:4], action, subject)
        for actor, action, subject in audit_actions(hub_state(app), actor_prefix="cli:")]


def test_staff_add_reads_the_password_from_standard_input_and_never_echoes_it(app):
    added = run_with_input(app, PASSWORD + "\n", *ADD_CASS, "--role", "customer_service")
    assert added.exit_code == 0, added.output
    assert PASSWORD not in added.output
    assert ConsoleClient(app).login("cass", PASSWORD).status_code == 303


def test_staff_add_refuses_bad_input_without_a_traceback(app):
    short = run_with_input(app, "short\n", *ADD_CASS, "--role", "customer_service")
    assert short.exit_code == 1 and "12-256 characters" in short.output
    unknown_role = run_with_input(app, PASSWORD + "\n", *ADD_CASS, "--role", "root")
    assert unknown_role.exit_code == 2
    run_with_input(app, PASSWORD + "\n", *ADD_CASS, "--role", "customer_service")
    twice = run_with_input(app, PASSWORD + "\n", *ADD_CASS, "--role", "finance")
    assert twice.exit_code == 1 and "already exists" in twice.output
    no_person = run_with_input(app, PASSWORD + "\n", "staff", "add", "dana", "--name", "Dana", "--role", "finance")
    assert no_person.exit_code == 2 and "--person" in no_person.output
    unknown_person = run_with_input(app, PASSWORD + "\n", "staff", "add", "dana", "--person", "dana", "--name", "Dana",
                                    "--role", "finance")
    assert unknown_person.exit_code == 1 and "alliance staff add-person" in unknown_person.output


def test_staff_list_disable_and_set_password(app):
    hub = hub_state(app)
    run_with_input(app, PASSWORD + "\n", "staff", "add", "fiona", "--person", "fiona", "--name", "Fiona",
                   "--role", "finance")
    assert "fiona\tFiona Finance\t1 logins\t0 clients" in run_cli(app, "staff", "people").output
    listed = run_cli(app, "staff", "list")
    assert "fiona\tFiona\tfinance\tactive\tlast login never\tperson fiona" in listed.output
    assert "1 staff users" in listed.output
    browser = ConsoleClient(app)
    browser.login("fiona", PASSWORD)
    reset = run_cli(app, "staff", "set-password", "fiona", "--generate-password")
    new_password = re.search(r"^password=(\S+)$", reset.output, re.M).group(1)
    # A new password ends the sessions opened with the old one.
    assert browser.get("/console/").status_code == 302
    assert ConsoleClient(app).login("fiona", PASSWORD).status_code == 401
    assert ConsoleClient(app).login("fiona", new_password).status_code == 303
    disabled = run_cli(app, "staff", "disable", "fiona")
    assert disabled.exit_code == 0 and "disabled" in disabled.output
    assert "fiona\tFiona\tfinance\tdisabled" in run_cli(app, "staff", "list").output
    assert run_cli(app, "staff", "disable", "fiona").exit_code == 1
    assert run_cli(app, "staff", "disable", "nobody").exit_code == 1
    actions = [action for actor, action, subject in audit_actions(hub, actor_prefix="cli:") if subject == "staff:fiona"]
    assert actions == ["staff.add", "staff.set_password", "staff.disable"]


def audit_entry_of(app, action: str):  # type: ignore[no-untyped-def]
    """The newest audit entry with ``action``."""
    from sqlalchemy import select

    from alliance.models import AuditLogEntry

    with hub_state(app).unit_of_work() as uow:
        entry = uow.session.scalars(select(AuditLogEntry).where(AuditLogEntry.action == action)
                                    .order_by(AuditLogEntry.sequence.desc())).first()
        return entry.actor, entry.before, entry.after


def test_staff_set_roles_disable_with_a_reason_and_enable(app):
    run_with_input(app, PASSWORD + "\n", "staff", "add", "fiona", "--person", "fiona", "--name", "Fiona",
                   "--role", "admin")
    run_with_input(app, PASSWORD + "\n", *ADD_CASS, "--role", "customer_service")
    # Fiona is the only admin: she keeps the role and stays enabled.
    last = run_cli(app, "staff", "set-roles", "fiona", "--role", "finance")
    assert last.exit_code == 1 and "would leave no active admin" in last.output
    assert run_cli(app, "staff", "disable", "fiona").exit_code == 1
    promoted = run_cli(app, "staff", "set-roles", "cass", "--role", "admin", "--role", "customer_service",
                       "--reason", "second admin for the holidays")
    assert promoted.exit_code == 0 and "staff user cass now has roles admin customer_service" in promoted.output
    actor, before, after = audit_entry_of(app, "staff.set_roles")
    assert actor.startswith("cli:") and before == {"roles": ["customer_service"]}
    assert after == {"roles": ["admin", "customer_service"], "reason": "second admin for the holidays"}
    disabled = run_cli(app, "staff", "disable", "fiona", "--reason", "on leave")
    assert disabled.exit_code == 0 and "staff user fiona disabled" in disabled.output
    assert audit_entry_of(app, "staff.disable")[2] == {"status": "disabled", "sessions_ended": 0,
                                                       "reason": "on leave"}
    assert ConsoleClient(app).login("fiona", PASSWORD).status_code == 401
    enabled = run_cli(app, "staff", "enable", "fiona", "--reason", "back")
    assert enabled.exit_code == 0 and "staff user fiona enabled" in enabled.output
    assert audit_entry_of(app, "staff.enable")[2] == {"status": "active", "reason": "back"}
    assert ConsoleClient(app).login("fiona", PASSWORD).status_code == 303
    assert run_cli(app, "staff", "enable", "fiona").exit_code == 1
    assert run_cli(app, "staff", "set-roles", "fiona", "--role", "root").exit_code == 2


def test_seed_demo_prints_the_console_address_and_one_working_login_per_role(app):
    seeded = run_cli(app, "seed-demo", "--port", "5123")
    assert seeded.exit_code == 0, seeded.output
    assert "web console: http://127.0.0.1:5123/console/" in seeded.output
    for username, _, role in DEMO_STAFF:
        assert re.search(rf"{role}\s+username {username}\s+password {DEMO_STAFF_PASSWORD}", seeded.output)
    browser = ConsoleClient(app)
    assert browser.login("demo-finance", DEMO_STAFF_PASSWORD).status_code == 303
    cycles = text_of(browser.get("/console/finance/cycles"))
    assert "No closed cycles yet" not in cycles  # the demo closed its ended cycles
    again = run_cli(app, "seed-demo")
    assert again.exit_code == 0 and "already present" in again.output and "demo-admin" in again.output


def test_seed_demo_refuses_a_production_hub(sqlite_url, tmp_path):
    app = production_app(sqlite_url, tmp_path / "production")
    try:
        refused = run_cli(app, "seed-demo")
        assert refused.exit_code == 1 and "refuses to run when ALLIANCE_ENVIRONMENT=production" in refused.output
        assert run_cli(app, "staff", "list").output.strip() == "0 staff users"
    finally:
        hub_state(app).engine.dispose()
