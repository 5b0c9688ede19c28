"""``alliance webhooks …``: the delivery process, and the hub's webhook signing key."""

from __future__ import annotations

import os
import signal
import socket
import threading
from types import FrameType
from typing import TYPE_CHECKING, cast

import click
from flask import Flask

from alliance.extensions import hub_state

if TYPE_CHECKING:
    from alliance.cli import WithApp
    from alliance.domain.webhook_signing import WebhookSigner


def register(main: click.Group, with_app: WithApp) -> None:
    """Add the ``webhooks`` group to the CLI."""

    @main.group()
    def webhooks() -> None:
        """Webhooks: the delivery process and the key deliveries are signed with."""

    @webhooks.command("deliver")
    @click.option("--once", is_flag=True, help="Deliver what is due now, then exit.")
    @click.option("--batch", type=click.IntRange(1, 500), default=20, show_default=True,
                  help="Deliveries leased at a time.")
    @click.option("--timeout", "timeout_s", type=click.FloatRange(0.1, 120), default=10.0, show_default=True,
                  help="Seconds to connect, and for each read of the receiver's reply.")
    @click.option("--metrics-address", "metrics_address", default=None, metavar="HOST:PORT",
                  help="Serve this process's delivery metrics for Prometheus there (e.g. 10.0.0.5:9109).")
    @with_app
    def webhooks_deliver(app: Flask, once: bool, batch: int, timeout_s: float, metrics_address: str | None) -> None:
        """Send due webhook deliveries, signed; run as many as you like, on any hosts (they share by leases).

        SIGTERM (or Ctrl-C) stops after the delivery in progress. With --metrics-address the
        attempts by outcome (alliance_webhook_deliveries_total) are served there for Prometheus.
        """
        from alliance.services.webhook_delivery import Deliverer, pending

        state = hub_state(app)
        if metrics_address is not None:
            _serve_metrics(_host_and_port(metrics_address))
        stop = threading.Event()

        def request_stop(_signal: int, _frame: FrameType | None) -> None:
            stop.set()

        previous = {number: signal.signal(number, request_stop) for number in (signal.SIGTERM, signal.SIGINT)}
        holder = f"{socket.gethostname()}:{os.getpid()}"
        # Outside production, endpoints on this machine or a private network are allowed (development, tests).
        deliverer = Deliverer(state.session_factory, _signer(app), holder=holder, batch=batch, timeout_s=timeout_s,
                              stop=stop, allow_private=state.settings.environment != "production")
        click.echo(f"delivering as {holder} (batch {batch}, timeout {timeout_s:g} s, lease "
                   f"{deliverer.lease.total_seconds():g} s)", err=True)
        try:
            totals = deliverer.run(once=once)
        finally:
            for number, handler in previous.items():
                signal.signal(number, handler)
        outcomes = ", ".join(f"{totals.outcomes[name]} {name}" for name in ("delivered", "failed", "gone"))
        click.echo(f"{totals.attempts} attempts: {outcomes}; {pending(state.session_factory)} deliveries pending")

    @webhooks.command("public-key")
    @with_app
    def webhooks_public_key(app: Flask) -> None:
        """Print the webhook keys the hub publishes (id and PEM), the active one first."""
        for key in _signer(app).published_keys():
            click.echo(f"key id: {key.key_id}{' (active)' if key.active else ''}")
            click.echo(key.public_key_pem, nl=False)

    @webhooks.command("new-key")
    def webhooks_new_key() -> None:
        """Print a fresh Ed25519 webhook key (PEM) for ALLIANCE_WEBHOOK_KEY; its id goes to stderr."""
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        from alliance.domain.ed25519_keys import private_key_pem
        from alliance.domain.webhook_signing import webhook_key_id

        key = Ed25519PrivateKey.generate()
        click.echo(f"key id: {webhook_key_id(key.public_key())}", err=True)
        click.echo(private_key_pem(key), nl=False)


def _serve_metrics(address: tuple[str, int]) -> None:
    """Serve this process's metrics on ``address`` (a thread of prometheus_client's own HTTP server)."""
    from prometheus_client import start_http_server

    from alliance.observability import metrics

    if metrics.multiprocess_directory():
        # That folder belongs to the web workers: their scrape would report these deliveries a second time.
        raise click.UsageError(f"{metrics.MULTIPROCESS_DIRECTORY_VARIABLE} is for the hub's web workers; start the "
                               "delivery process without it (its metrics are its own, on --metrics-address)")
    try:
        start_http_server(address[1], addr=address[0])
    except OSError as error:
        raise click.ClickException(f"cannot serve metrics on {address[0]}:{address[1]}: {error.strerror or error}") \
            from None
    click.echo(f"delivery metrics on http://{address[0]}:{address[1]}/metrics", err=True)


def _host_and_port(value: str) -> tuple[str, int]:
    host, separator, port = value.rpartition(":")
    if not separator or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise click.BadParameter(f"{value!r} is not HOST:PORT (e.g. 127.0.0.1:9109)", param_hint="--metrics-address")
    return host.strip("[]"), int(port)


def _signer(app: Flask) -> WebhookSigner:
    from alliance.domain.webhook_signing import WebhookSigner

    return cast(WebhookSigner, hub_state(app).extras["webhook_signer"])
