"""``alliance staff add-person | people | add | list | disable | set-password`` and the demo's console logins."""

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
