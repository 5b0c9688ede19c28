"""``alliance webhooks endpoints|log|redeliver``: partners' webhook endpoints, their delivery log and
redelivery (docs/webhooks.md), beside the delivery process and the key commands of ``cli_webhooks``.

Every change goes through ``alliance.services.webhooks``, audited as ``cli:<operator>``.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import TYPE_CHECKING

import click
from flask import Flask

from alliance.cli_admin import cli_actor
from alliance.domain import webhooks as rules
from alliance.extensions import hub_state

if TYPE_CHECKING:
    from alliance.cli import WithApp
    from alliance.services.webhooks import DeliveryView, EndpointView

STATUSES = ("active", "disabled")


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _moment(value: datetime | None) -> str:
    return value.isoformat() if value is not None else "-"


def endpoint_line(view: EndpointView) -> str:
    """One endpoint as a tab-separated line: id, partner, audience, status, failing since, URL, types."""
    status = view.status if view.status == "active" else f"disabled ({view.disabled_reason})"
    failing = f"failing since {_moment(view.failing_since)}" if view.failing_since else "ok"
    return f"{view.id}\t{view.partner}\t{view.audience}\t{status}\t{failing}\t{view.url}\t{','.join(view.event_types)}"


def delivery_line(view: DeliveryView) -> str:
    """One delivery: event, type, status, attempts, last status code and latency, next try."""
    last = view.tries[0] if view.tries else None
    latency = f"{last.duration_ms} ms" if last is not None else "-"
    code = view.last_status_code if view.last_status_code is not None else ("no answer" if view.attempts else "-")
    following = f"\tnext {_moment(view.next_attempt_at)}" if view.status == "pending" else ""
    error = f"\t{view.last_error}" if view.last_error else ""
    return (f"{view.event_id}\t{view.event_type}\t{view.status}\t{view.attempts} attempts\tlast {code} "
            f"in {latency}{following}{error}")


def register(main: click.Group, with_app: WithApp) -> None:
    """Add the endpoint, log and redelivery commands to the ``webhooks`` group (made here if it is not yet)."""
    group = main.commands.get("webhooks")
    if not isinstance(group, click.Group):
        @main.group("webhooks")
        def webhooks_group() -> None:
            """Webhooks: endpoints, the delivery log and redelivery."""
        group = webhooks_group

    @group.group("endpoints")
    def endpoints() -> None:
        """Partners' webhook endpoints: add, list, show, disable, enable."""

    @endpoints.command("add")
    @click.option("--partner", required=True, help="The partner's code (the operator's for a member endpoint).")
    @click.option("--url", required=True, help="https URL (plain http only to this machine's loopback).")
    @click.option("--event", "event_types", required=True, multiple=True, type=click.Choice(tuple(rules.EVENT_TYPES)),
                  help="An event type it receives; repeat for more.")
    @click.option("--audience", type=click.Choice([audience.value for audience in rules.Audience]),
                  default=rules.Audience.PARTNER.value, show_default=True)
    @click.option("--description", default=None, help="What it is for (at most 200 characters).")
    @with_app
    def add(app: Flask, partner: str, url: str, event_types: tuple[str, ...], audience: str,
            description: str | None) -> None:
        """Register an endpoint; it receives events of its types from now on."""
        from alliance.services import webhooks

        with hub_state(app).unit_of_work() as uow:
            view = webhooks.register_endpoint(uow.session, partner=partner, url=url, event_types=event_types,
                                              audience=audience, description=description, actor=cli_actor(),
                                              now=_now())
            uow.commit()
        click.echo(endpoint_line(view))

    @endpoints.command("list")
    @click.option("--partner", default=None, help="Only this partner's endpoints.")
    @click.option("--status", type=click.Choice(STATUSES), default=None)
    @with_app
    def list_endpoints(app: Flask, partner: str | None, status: str | None) -> None:
        """Endpoints by partner and id: status (with the reason when disabled) and since when they fail."""
        from alliance.services import webhooks

        with hub_state(app).read_only_unit_of_work() as uow:
            views = webhooks.endpoints(uow.session, partner=partner, status=status)
        for view in views:
            click.echo(endpoint_line(view))
        if not views:
            click.echo("no endpoints", err=True)

    @endpoints.command("show")
    @click.argument("endpoint_id", type=click.IntRange(1))
    @with_app
    def show(app: Flask, endpoint_id: int) -> None:
        """One endpoint, field by field."""
        from alliance.services import webhooks

        with hub_state(app).read_only_unit_of_work() as uow:
            view = webhooks.endpoint_view(uow.session, endpoint_id)
        for name, value in (("id", view.id), ("partner", view.partner), ("audience", view.audience),
                            ("url", view.url), ("event types", ", ".join(view.event_types)),
                            ("description", view.description or "-"), ("status", view.status),
                            ("created", f"{_moment(view.created_at)} by {view.created_by}"),
                            ("failing since", _moment(view.failing_since)),
                            ("disabled", f"{_moment(view.disabled_at)}: {view.disabled_reason}"
                             if view.disabled_at else "-")):
            click.echo(f"{name}: {value}")

    @endpoints.command("disable")
    @click.argument("endpoint_id", type=click.IntRange(1))
    @click.option("--reason", required=True, help="Why (kept in the audit log and shown on the endpoint).")
    @with_app
    def disable(app: Flask, endpoint_id: int, reason: str) -> None:
        """Stop delivering to an endpoint; its pending deliveries are cancelled."""
        from alliance.services import webhooks

        with hub_state(app).unit_of_work() as uow:
            view = webhooks.disable_endpoint(uow.session, endpoint_id=endpoint_id, reason=reason, actor=cli_actor(),
                                             now=_now())
            uow.commit()
        click.echo(endpoint_line(view))

    @endpoints.command("enable")
    @click.argument("endpoint_id", type=click.IntRange(1))
    @with_app
    def enable(app: Flask, endpoint_id: int) -> None:
        """Deliver to a disabled endpoint again, from new events on (earlier ones by ``redeliver``)."""
        from alliance.services import webhooks

        with hub_state(app).unit_of_work() as uow:
            view = webhooks.enable_endpoint(uow.session, endpoint_id=endpoint_id, actor=cli_actor(), now=_now())
            uow.commit()
        click.echo(endpoint_line(view))

    @group.command("log")
    @click.option("--endpoint", "endpoint_id", required=True, type=click.IntRange(1))
    @click.option("--limit", type=click.IntRange(1, 500), default=50, show_default=True)
    @click.option("--offset", type=click.IntRange(0), default=0, show_default=True)
    @with_app
    def log(app: Flask, endpoint_id: int, limit: int, offset: int) -> None:
        """An endpoint's deliveries, newest first: event, type, status, attempts, last status and latency."""
        from alliance.services import webhooks

        with hub_state(app).read_only_unit_of_work() as uow:
            deliveries = webhooks.delivery_log(uow.session, endpoint_id=endpoint_id, limit=limit, offset=offset)
        for view in deliveries:
            click.echo(delivery_line(view))
        if not deliveries:
            click.echo("no deliveries", err=True)

    @group.command("redeliver")
    @click.argument("event_id")
    @click.option("--endpoint", "endpoint_id", type=click.IntRange(1), default=None,
                  help="Only to this endpoint (default: every active endpoint the event went to).")
    @with_app
    def redeliver(app: Flask, event_id: str, endpoint_id: int | None) -> None:
        """Send an event again, whatever became of it; the delivery process sends it at once."""
        from alliance.services import webhooks

        with hub_state(app).unit_of_work() as uow:
            count = webhooks.redeliver(uow.session, event_id=event_id, endpoint_id=endpoint_id, actor=cli_actor(),
                                       now=_now())
            uow.commit()
        click.echo(f"{event_id}: {count} deliver{'y' if count == 1 else 'ies'} due again")
