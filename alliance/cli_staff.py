"""Operator commands for people's console logins: ``alliance staff add | list | disable | set-password``.

They join the ``staff`` group beside the back-office client commands. Passwords are read
from a prompt without echo (or from standard input when it is not a terminal), or made
up with ``--generate-password`` and printed once; they never appear in arguments, where
the shell history and the process list would keep them.
"""

from __future__ import annotations

import sys
from datetime import datetime, timezone

import click
from flask import Flask

from alliance.cli_admin import cli_actor
from alliance.extensions import hub_state
from alliance.services.oauth import ROLES


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


def register(main: click.Group, with_app) -> None:  # type: ignore[no-untyped-def]
    """Add the console login commands to the existing ``staff`` group."""
    staff = main.commands["staff"]
    assert isinstance(staff, click.Group), "the staff group of back-office clients must be registered first"

    @staff.command("add")
    @click.argument("username")
    @click.option("--name", "display_name", required=True, help="The person's name, as the console shows it.")
    @click.option("--role", "roles", multiple=True, required=True, type=click.Choice(ROLES))
    @click.option("--generate-password", is_flag=True, help="Make up a strong password and print it once.")
    @with_app
    def staff_add(app: Flask, username: str, display_name: str, roles: tuple[str, ...], generate_password: bool) -> None:
        """Create a console login; the password is prompted for (hidden) or generated."""
        from alliance.services import staff_users

        password, generated = _read_password(generate_password)
        with hub_state(app).unit_of_work() as uow:
            user = staff_users.add_user(uow.session, username=username, display_name=display_name, roles=roles,
                                        password=password, actor=cli_actor(), now=_now())
            uow.commit()
        click.echo(f"staff user {user.username} ({user.display_name}) added with roles {user.roles}")
        if generated:
            click.echo(f"password={password}")

    @staff.command("list")
    @with_app
    def staff_list(app: Flask) -> None:
        """Console logins with their roles, status and last login."""
        from alliance.services import staff_users

        with hub_state(app).unit_of_work() as uow:
            users = staff_users.list_users(uow.session)
        for user in users:
            last = user.last_login_at.isoformat(timespec="seconds") if user.last_login_at else "never"
            click.echo(f"{user.username}\t{user.display_name}\t{user.roles}\t{user.status}\tlast login {last}")
        click.echo(f"{len(users)} staff users")

    @staff.command("disable")
    @click.argument("username")
    @with_app
    def staff_disable(app: Flask, username: str) -> None:
        """Disable a console login; its open sessions end at once."""
        from alliance.services import staff_users

        with hub_state(app).unit_of_work() as uow:
            staff_users.disable_user(uow.session, username=username, actor=cli_actor(), now=_now())
            uow.commit()
        click.echo(f"staff user {username} disabled")

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
