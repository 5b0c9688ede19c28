"""The ``alliance`` command: database, development server, demo data, audit and jobs."""

from __future__ import annotations

import functools
import json
import os
import socket
import sys
import time
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Concatenate, ParamSpec, Protocol, TypeVar, cast

import click
from flask import Flask, current_app, has_app_context
from sqlalchemy.exc import OperationalError

from alliance.db import migration_engine
from alliance.domain.errors import AllianceError
from alliance.extensions import hub_state
from alliance.observability.logs import COMMAND_LOGGER

if TYPE_CHECKING:
    from werkzeug.local import LocalProxy

    from alliance.extensions import HubState

CommandArguments = ParamSpec("CommandArguments")
CommandResult = TypeVar("CommandResult")


class WithApp(Protocol):
    """``_with_app``'s type, for the modules that are handed it to wrap their commands."""

    def __call__(
        self, command: Callable[Concatenate[Flask, CommandArguments], CommandResult], /
    ) -> Callable[CommandArguments, CommandResult]: ...


def _with_app(
    command: Callable[Concatenate[Flask, CommandArguments], CommandResult],
) -> Callable[CommandArguments, CommandResult]:
    """Run ``command(app, ...)`` inside an app context, turning expected errors into CLI errors."""

    @functools.wraps(command)
    def wrapper(*args: CommandArguments.args, **kwargs: CommandArguments.kwargs) -> CommandResult:
        started = time.perf_counter()
        outcome = "failed"
        try:
            if has_app_context():
                # Flask declares current_app as a Flask; it is the proxy that finds the app of the context.
                app = cast("LocalProxy[Flask]", current_app)._get_current_object()
                result = command(app, *args, **kwargs)
            else:
                from alliance.app import create_app

                app = create_app()
                with app.app_context():
                    result = command(app, *args, **kwargs)
            outcome = "ok"
            return result
        except AllianceError as error:
            outcome = error.code
            raise click.ClickException(error.detail) from None
        except OperationalError as error:
            outcome = "database_unavailable"
            raise click.ClickException(f"cannot use the database: {error.orig}") from None
        except click.ClickException:
            outcome = "refused"
            raise
        finally:
            _log_command(outcome, started)

    return wrapper


def _log_command(outcome: str, started: float) -> None:
    """The command's log line: which command, how it ended, how long it took; never its arguments."""
    context = click.get_current_context(silent=True)
    COMMAND_LOGGER.info("command %s", outcome, extra={
        "command": context.command_path if context is not None else None, "outcome": outcome,
        "duration_ms": round((time.perf_counter() - started) * 1000, 3)})


def _parse_now(value: str | None) -> datetime:
    if value is None:
        return datetime.now(timezone.utc)
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter("use an ISO 8601 timestamp with offset, e.g. 2026-11-24T00:00:00+00:00") from None
    if moment.tzinfo is None:
        raise click.BadParameter("the timestamp needs a UTC offset, e.g. +00:00")
    return moment


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Points-alliance clearing house: run and operate the hub."""


@main.group()
def db() -> None:
    """Database schema migrations, on ALLIANCE_MIGRATION_DATABASE_URL (straight to the primary) if set."""


@db.command("upgrade")
@click.argument("revision", default="head")
@_with_app
def db_upgrade(app: Flask, revision: str) -> None:
    """Apply migrations up to REVISION (default: the newest)."""
    from alliance import migrate

    with migration_engine(hub_state(app).settings, hub_state(app).engine) as engine:
        migrate.upgrade(engine, revision)
        click.echo(f"database {engine.url.render_as_string(hide_password=True)} is at revision "
                   f"{migrate.current_revision(engine)}")


@db.command("downgrade")
@click.argument("revision")
@_with_app
def db_downgrade(app: Flask, revision: str) -> None:
    """Undo migrations down to REVISION ('base' empties the database)."""
    from alliance import migrate

    with migration_engine(hub_state(app).settings, hub_state(app).engine) as engine:
        migrate.downgrade(engine, revision)
        click.echo(f"database is at revision {migrate.current_revision(engine) or 'base'}")


@db.command("current")
@_with_app
def db_current(app: Flask) -> None:
    """Show the database's revision and the newest one available."""
    from alliance import migrate

    with migration_engine(hub_state(app).settings, hub_state(app).engine) as engine:
        click.echo(f"current: {migrate.current_revision(engine) or 'base'}; newest: {migrate.head_revision(engine)}")


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=5000, show_default=True, type=click.IntRange(1, 65535), help="Port to listen on.")
@click.option("--debug/--no-debug", default=False, help="Flask debug mode (never in production).")
@_with_app
def serve(app: Flask, host: str, port: int, debug: bool) -> None:
    """Run the development server (use gunicorn 'alliance.wsgi:app' in production)."""
    engine = hub_state(app).engine
    click.echo(f"Alliance hub on {engine.dialect.name} database {engine.url.render_as_string(hide_password=True)}")
    click.echo(f"Listening on http://{host}:{port}  (health: http://{host}:{port}/healthz)  Ctrl+C stops it")
    click.echo(f"Web console: http://{host}:{port}/console/  (logins: alliance staff add, or the demo's)")
    app.run(host=host, port=port, debug=debug, use_reloader=False, threaded=True)


@main.command("seed-demo")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Where 'alliance serve' will listen, for the console address.")
@click.option("--port", default=5000, show_default=True, type=click.IntRange(1, 65535))
@click.option("--webhook-url", "webhook_url", default=None, metavar="URL",
              help="Register every demo partner's webhook endpoint at URL (every partner event) and the operator's "
                   "member-messaging endpoint at URL/members, before the history is played.")
@_with_app
def seed_demo(app: Flask, host: str, port: int, webhook_url: str | None) -> None:
    """Create the demo alliance and five months of its activity, and one console login per role."""
    from alliance.services.demo import DEMO_HISTORY, refuse_in_production, seed_demo_alliance, seed_demo_staff
    from alliance.services.goodwill import GoodwillPolicy

    state = hub_state(app)
    settings = state.settings
    refuse_in_production(settings.environment)
    now = datetime.now(timezone.utc)
    # The logins exist from the demo's first day: its history has them request, approve,
    # invoice and acknowledge things. One unit of work, so a failure leaves nothing behind.
    with state.unit_of_work() as uow:
        logins = seed_demo_staff(uow.session, now=now - DEMO_HISTORY, environment=settings.environment)
        summary = seed_demo_alliance(uow.session, instance_path=app.instance_path, now=now,
                                     expiry_months=settings.points_expiry_months, key_ring=state.key_ring,
                                     signer=state.statement_signer, grading_config=settings.grading_config(),
                                     time_zone=settings.alliance_time_zone,
                                     goodwill_policy=GoodwillPolicy.from_settings(settings),
                                     webhook_url=webhook_url)
        uow.commit()
    click.echo(summary)
    if summary.startswith("demo alliance created"):
        _print_demo_netting(state)
    click.echo(f"web console: http://{host}:{port}/console/ (once 'alliance serve' runs), demo logins:")
    click.echo("\n".join(logins))


def _print_demo_netting(state: HubState) -> None:
    """Print each demo partner's net position and the netting of its closed statements."""
    from decimal import Decimal

    from alliance.domain.money import minor_units_per_unit
    from settlement.api import period_position

    currency = state.settings.alliance_currency
    with state.unit_of_work() as uow:
        position = period_position(uow.session, currency=currency)
    unit = minor_units_per_unit(currency)

    def money(amount_minor: int) -> str:
        return f"{Decimal(amount_minor) / unit:.{len(str(unit)) - 1}f} {currency}"

    click.echo("net positions of the closed statements:")
    for code, net_minor in position.partner_nets_minor.items():
        side = "owes the hub" if net_minor > 0 else "is owed by the hub" if net_minor < 0 else "is square"
        click.echo(f"  {code} {side} {money(abs(net_minor))}")
    click.echo(f"  gross obligations {money(position.gross_obligations_minor)}, net payments "
               f"{money(position.net_payments_minor)}, netting efficiency {position.netting_efficiency * 100:.2f}%")


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON document and nothing else.")
@click.option("--checkpoints", "checkpoint_files", multiple=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Also check the log against checkpoints exported with 'alliance audit-checkpoints export' "
                   "(repeatable).")
@_with_app
def audit(app: Flask, as_json: bool, checkpoint_files: tuple[Path, ...]) -> None:
    """Recompute the books and check every invariant; exit 1 naming the first problem."""
    from alliance.services.audit import run_audit
    from alliance.services.audit_checkpoints import parse_export

    signer = hub_state(app).statement_signer
    copies = [item for path in checkpoint_files for item in parse_export(path.read_bytes())]
    with hub_state(app).unit_of_work() as uow:
        report = run_audit(uow.session, statement_keys={signer.key_id: signer.signing_key.public_key()},
                           checkpoint_copies=copies)
    failure = report.first_failure
    if as_json:
        # Only the document on stdout, so a script can parse it; the exit status says pass or fail.
        click.echo(json.dumps({
            "ok": report.ok,
            "first_failure": None if failure is None else asdict(failure),
            "checks": [asdict(check) for check in report.checks],
            "totals": report.totals,
        }, indent=2))
        if failure is not None:
            sys.exit(1)
        return
    for check in report.checks:
        mark = "ok  " if not check.problems else "FAIL"
        click.echo(f"{mark} {check.name}: {check.description}"
                   + (f" ({check.problems} problems)" if check.problems else ""))
    click.echo("totals: " + ", ".join(f"{name}={value}" for name, value in report.totals.items()))
    if failure is not None:
        click.echo(f"audit FAILED at {failure.name}: {failure.first_problem}", err=True)
        sys.exit(1)
    click.echo("audit passed")


@main.group("audit-checkpoints")
def audit_checkpoints() -> None:
    """Signed daily checkpoints of the audit log's head (the job checkpoint-audit-log takes them)."""


@audit_checkpoints.command("export")
@click.option("--out", "out_path", default=None, type=click.Path(dir_okay=False, path_type=Path),
              help="Write to this file; default: stdout.")
@_with_app
def audit_checkpoints_export(app: Flask, out_path: Path | None) -> None:
    """Write every signed checkpoint as one JSON file, to keep off the database (see 'alliance audit --checkpoints')."""
    from alliance.services.audit_checkpoints import export_document, stored_checkpoints

    with hub_state(app).unit_of_work() as uow:
        checkpoints = stored_checkpoints(uow.session)
    document = export_document(checkpoints)
    if out_path is None:
        click.echo(document.decode("utf-8"))
        return
    out_path.write_bytes(document)
    click.echo(f"{len(checkpoints)} checkpoints written to {out_path}")


@main.group()
def jobs() -> None:
    """Ledger housekeeping jobs, the same ones the scheduler runs."""


JOB_HELP = {
    "expire-holds": "Release redemption holds whose time to live has passed.",
    "activate-pending": "Make pending points spendable once their return window has passed.",
    "expire-points": "Move points past their expiry to the hub's breakage account.",
    "remind-expiring-points": "Write an expiry reminder for each lot expiring within 30 days (once per lot).",
    "prune-idempotency-keys": "Forget idempotency keys older than 72 hours.",
    "prune-nonces": "Forget signature nonces whose signatures can no longer be valid.",
    "recompute-tiers": "Set member tiers from qualifying spend over the last 12 months.",
    "close-due-cycles": "Close every overdue settlement cycle into a signed statement, oldest first.",
    "refresh-credit-exposure": "Recompute every credit-limited partner's exposure and state (warning, over).",
    "grade-partners": "Grade every partner for the last whole month, once (later runs find it done).",
    "checkpoint-audit-log": "Sign the audit log's head (entries, newest hash) with the statement key, once a UTC day.",
    "award-referrals": "Award pending referrals, both sides, whose referred member has made a first purchase.",
    "award-birthday-bonuses": "Credit each tier's birthday bonus to members whose birthday is today (once a year).",
    "profile-partner-amounts": "Recompute each partner's purchase amounts (count, mean, deviation; 90 days unless "
                               "changed) for the amount-outlier pattern.",
    "expire-reward-orders": "End reward orders their supplier did not fulfil in time; their points come back.",
    "announce-expiring-keys": "Tell each partner once of its signing keys expiring within the notice period "
                              "(the key.expiring webhook event).",
    "announce-overdue-statements": "Tell each partner once of its statements newly past their due date and not paid "
                                   "(the statement.overdue webhook event).",
}


def _process_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _job_command(name: str) -> None:
    @jobs.command(name, help=JOB_HELP[name] + " Exclusive: skipped while another process runs it.")
    @click.option("--now", "now_text", default=None, help="Pretend it is this moment (ISO 8601 with offset).")
    @_with_app
    def job(app: Flask, now_text: str | None) -> None:
        from alliance.scheduler import hub_jobs
        from alliance.services.jobs import run_exclusively

        state = hub_state(app)
        chosen = {job.name: job for job in hub_jobs(state)}[name]
        done = run_exclusively(state.session_factory, chosen, holder=_process_name(), now=_parse_now(now_text))
        if done is None:
            raise click.ClickException(f"{name} is running in another process; nothing done")
        click.echo(f"{name}: {done} {chosen.unit}")


for _name in JOB_HELP:
    _job_command(_name)


@main.command()
@click.option("--once", is_flag=True, help="Run every job once, now, and exit.")
@click.option("--run-for-s", type=click.IntRange(1, 86_400), default=None,
              help="Stop after this many seconds (for tests and drills); default: until stopped.")
@click.option("--metrics-address", "metrics_address", default=None, metavar="HOST:PORT",
              help="Serve this process's job metrics for Prometheus there (e.g. 10.0.0.5:9108).")
@_with_app
def scheduler(app: Flask, once: bool, run_for_s: int | None, metrics_address: str | None) -> None:
    """Run the scheduled jobs in this process (never inside web workers)."""
    from alliance.scheduler import run_scheduler

    run_scheduler(hub_state(app), holder=_process_name(), once=once, run_for_s=run_for_s, echo=click.echo,
                  metrics_address=_host_and_port(metrics_address) if metrics_address else None)


def _host_and_port(value: str) -> tuple[str, int]:
    host, separator, port = value.rpartition(":")
    if not separator or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise click.BadParameter(f"{value!r} is not HOST:PORT (e.g. 127.0.0.1:9108)", param_hint="--metrics-address")
    return host.strip("[]"), int(port)


def _register_admin_commands() -> None:
    from alliance import cli_admin

    cli_admin.register(main, _with_app)
    cli_admin.register_back_office(main, _with_app)
    cli_admin.register_settlement(main, _with_app)
    cli_admin.register_finance(main, _with_app)
    from alliance import cli_grades

    cli_grades.register(main, _with_app)
    from alliance import cli_staff

    cli_staff.register(main, _with_app)
    from alliance import cli_risk

    cli_risk.register(main, _with_app)
    from alliance import cli_rewards

    cli_rewards.register(main, _with_app)
    from alliance import cli_coupons

    cli_coupons.register(main, _with_app)
    from alliance import cli_webhooks

    cli_webhooks.register(main, _with_app)
    # After cli_webhooks: these commands join its ``webhooks`` group.
    from alliance import cli_webhook_endpoints

    cli_webhook_endpoints.register(main, _with_app)


_register_admin_commands()


def init_app(app: Flask) -> None:
    """Make the same commands available as ``flask --app alliance.wsgi ...``."""
    for command in main.commands.values():
        app.cli.add_command(command)
