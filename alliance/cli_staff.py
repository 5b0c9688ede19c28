"""Operator commands for staff people and their console logins: ``alliance staff add-person | people | add |
list | set-roles | disable | enable | set-password``.

They join the ``staff`` group beside the back-office client commands. A person comes
first; each console login and each back-office client then names its person, so that
four-eyes rules see one person behind both. Passwords are read
from a prompt without echo (or from standard input when it is not a terminal), or made
up with ``--generate-password`` and printed once; they never appear in arguments, where
the shell history and the process list would keep them.
"""

from __future__ import annotations

import sys
from datetime import datetime, timezone
from typing import TYPE_CHECKING

import click
from flask import Flask

from alliance.cli_admin import cli_actor
from alliance.extensions import hub_state
from alliance.services.oauth import ROLES

if TYPE_CHECKING:
    from alliance.cli import WithApp


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _read_password(generate: bool) -> tuple[str, bool]:
    """The new password, and whether it was generated (and so must be printed)."""
    from alliance.services.staff_users import generate_password

    if generate:
        return generate_password(), True
    if not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\r\n"), False
    return click.prompt("Password", hide_input=True, confirmation_prompt=True), False


def register(main: click.Group, with_app: WithApp) -> None:
    """Add the console login commands to the existing ``staff`` group."""
    staff = main.commands["staff"]
    assert isinstance(staff, click.Group), "the staff group of back-office clients must be registered first"

    @staff.command("add-person")
    @click.argument("handle")
    @click.option("--name", required=True, help="The person's full name.")
    @with_app
    def staff_add_person(app: Flask, handle: str, name: str) -> None:
        """Register a staff person, who can then hold console logins and back-office clients."""
        from alliance.services import staff_people

        with hub_state(app).unit_of_work() as uow:
            person = staff_people.add_person(uow.session, handle=handle, name=name, actor=cli_actor(), now=_now())
            uow.commit()
        click.echo(f"staff person {person.handle} ({person.name}) added")

    @staff.command("people")
    @with_app
    def staff_list_people(app: Flask) -> None:
        """Staff people with how many console logins and back-office clients each holds."""
        from alliance.services import staff_people

        with hub_state(app).unit_of_work() as uow:
            people = staff_people.list_people(uow.session)
        for person in people:
            click.echo(f"{person.handle}\t{person.name}\t{person.logins} logins\t{person.clients} clients")
        click.echo(f"{len(people)} staff people")

    @staff.command("add")
    @click.argument("username")
    @click.option("--name", "display_name", required=True, help="The person's name, as the console shows it.")
    @click.option("--role", "roles", multiple=True, required=True, type=click.Choice(ROLES))
    @click.option("--person", required=True, help="Handle of the staff person whose login it is (staff add-person).")
    @click.option("--generate-password", is_flag=True, help="Make up a strong password and print it once.")
    @with_app
    def staff_add(app: Flask, username: str, display_name: str, roles: tuple[str, ...], person: str,
                  generate_password: bool) -> None:
        """Create a console login of one staff person; the password is prompted for (hidden) or generated."""
        from alliance.services import staff_users

        password, generated = _read_password(generate_password)
        with hub_state(app).unit_of_work() as uow:
            user = staff_users.add_user(uow.session, username=username, display_name=display_name, roles=roles,
                                        person=person, password=password, actor=cli_actor(), now=_now())
            uow.commit()
        click.echo(f"staff user {user.username} ({user.display_name}) of {person} added with roles {user.roles}")
        if generated:
            click.echo(f"password={password}")

    @staff.command("list")
    @with_app
    def staff_list(app: Flask) -> None:
        """Console logins with their roles, status and last login."""
        from alliance.services import staff_people, staff_users

        with hub_state(app).unit_of_work() as uow:
            users = staff_users.list_users(uow.session)
            handles = staff_people.handles(uow.session)
        for user in users:
            last = user.last_login_at.isoformat(timespec="seconds") if user.last_login_at else "never"
            click.echo(f"{user.username}\t{user.display_name}\t{user.roles}\t{user.status}\tlast login {last}"
                       f"\tperson {handles[user.person_id]}")
        click.echo(f"{len(users)} staff users")

    @staff.command("set-roles")
    @click.argument("username")
    @click.option("--role", "roles", multiple=True, required=True, type=click.Choice(ROLES),
                  help="Every role the login is to have (the others are removed).")
    @click.option("--reason", help="Why; recorded in the audit log.")
    @with_app
    def staff_set_roles(app: Flask, username: str, roles: tuple[str, ...], reason: str | None) -> None:
        """Give a console login exactly these roles (the last active admin keeps the admin role)."""
        from alliance.services import staff_users

        with hub_state(app).unit_of_work() as uow:
            stored = staff_users.set_roles(uow.session, username=username, roles=roles, reason=reason,
                                           actor=cli_actor(), now=_now())
            uow.commit()
        click.echo(f"staff user {username} now has roles {' '.join(stored)}")

    @staff.command("disable")
    @click.argument("username")
    @click.option("--reason", help="Why; recorded in the audit log.")
    @with_app
    def staff_disable(app: Flask, username: str, reason: str | None) -> None:
        """Disable a console login; its open sessions end at once (never the last active admin)."""
        from alliance.services import staff_users

        with hub_state(app).unit_of_work() as uow:
            staff_users.disable_user(uow.session, username=username, reason=reason, actor=cli_actor(), now=_now())
            uow.commit()
        click.echo(f"staff user {username} disabled")

    @staff.command("enable")
    @click.argument("username")
    @click.option("--reason", help="Why; recorded in the audit log.")
    @with_app
    def staff_enable(app: Flask, username: str, reason: str | None) -> None:
        """Let a disabled console login sign in again."""
        from alliance.services import staff_users

        with hub_state(app).unit_of_work() as uow:
            staff_users.enable_user(uow.session, username=username, reason=reason, actor=cli_actor(), now=_now())
            uow.commit()
        click.echo(f"staff user {username} enabled")

    @staff.command("set-password")
    @click.argument("username")
    @click.option("--generate-password", is_flag=True, help="Make up a strong password and print it once.")
    @with_app
    def staff_set_password(app: Flask, username: str, generate_password: bool) -> None:
        """Set a new password (also lifts a lockout and ends the user's sessions)."""
        from alliance.services import staff_users

        password, generated = _read_password(generate_password)
        with hub_state(app).unit_of_work() as uow:
            staff_users.set_password(uow.session, username=username, password=password, actor=cli_actor(), now=_now())
            uow.commit()
        click.echo(f"password of {username} set")
        if generated:
            click.echo(f"password={password}")
