"""The webhook delivery process: lease due deliveries, POST each signed, record what came back.

A loop of batches. Each batch leases up to ``batch`` due deliveries (``webhooks.lease_due``)
for ``timeout × batch + margin`` and commits the lease at once, so processes on other hosts
skip them; then each delivery is POSTed, signed with the hub's webhook key, through
``http.client`` with one timeout for connecting and for each read, reading at most 64 KiB
of the reply; its status, latency, error and ``Retry-After`` are recorded
(``webhooks.record_attempt``) in a transaction of its own, so a crash loses at most the
attempts in flight: their leases run out and another process sends them again (at least
once). When nothing is due the loop sleeps about a second. ``stop`` (set on SIGTERM) ends
the loop after the delivery in progress. Each attempt is counted by outcome
(``alliance_webhook_deliveries_total``), which the command serves with ``--metrics-address``.
"""

from __future__ import annotations

import http.client
import ipaddress
import logging
import random
import socket
import ssl
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Callable, Mapping, Protocol
from urllib.parse import urlsplit

from sqlalchemy.orm import Session, sessionmaker

from alliance.domain import webhooks as rules
from alliance.domain.webhook_signing import WebhookSigner
from alliance.observability import metrics
from alliance.services import webhooks

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 10.0
DEFAULT_BATCH = 20
# Signing and recording each attempt take milliseconds; the margin covers a slow database.
LEASE_MARGIN = timedelta(seconds=5)
MAX_REPLY_BYTES = 64 * 1024
IDLE_SLEEP_S = 1.0
USER_AGENT = "alliance-webhooks/1"

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


@dataclass(frozen=True, slots=True)
class Reply:
    """What one POST came to: a status (None when no HTTP answer came), how long it took, why it failed."""

    status_code: int | None
    duration_ms: int
    error: str | None = None
    retry_after: str | None = None


class Sender(Protocol):
    def __call__(self, url: str, body: bytes, headers: Mapping[str, str], timeout_s: float, *,
                 allow_private: bool = False) -> Reply: ...


class RefusedDestination(Exception):
    """The endpoint's host resolves to an address the hub does not send to."""


def post(url: str, body: bytes, headers: Mapping[str, str], timeout_s: float, *,
         allow_private: bool = False) -> Reply:
    """POST ``body`` to ``url`` with ``http.client``; never raises for network trouble, it is the reply's error.

    The host is resolved once and the connection made to that address (TLS still checks the
    certificate against the host name), so a name cannot be re-pointed between the check and
    the request. Unless ``allow_private`` (development and tests), only globally routable
    addresses are accepted: an endpoint may not make the hub POST into its own network
    (loopback, private ranges, link-local cloud metadata).
    """
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    started = time.perf_counter()
    connection: http.client.HTTPConnection | None = None
    try:
        address = _destination(host, port, allow_private=allow_private)
        connection = (_PinnedHTTPSConnection(host, port, address, timeout_s) if parts.scheme == "https"
                      else _PinnedHTTPConnection(host, port, address, timeout_s))
        connection.request("POST", target, body=body, headers={**headers, "User-Agent": USER_AGENT})
        response = connection.getresponse()
        response.read(MAX_REPLY_BYTES)
        return Reply(status_code=response.status, duration_ms=_elapsed_ms(started),
                     error=None if 200 <= response.status < 300 else f"HTTP {response.status} {response.reason}",
                     retry_after=response.getheader("Retry-After"))
    except RefusedDestination as refused:
        return Reply(status_code=None, duration_ms=_elapsed_ms(started), error=str(refused))
    except (TimeoutError, socket.timeout):
        return Reply(status_code=None, duration_ms=_elapsed_ms(started), error=f"no answer within {timeout_s:g} s")
    except (OSError, http.client.HTTPException) as error:
        return Reply(status_code=None, duration_ms=_elapsed_ms(started),
                     error=f"{type(error).__name__}: {error}" if str(error) else type(error).__name__)
    finally:
        if connection is not None:
            connection.close()


def _destination(host: str, port: int, *, allow_private: bool) -> str:
    """The address to connect to: the first the host resolves to, if every one of them may be used."""
    addresses = [info[4][0] for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)]
    if not addresses:
        raise RefusedDestination(f"{host} resolves to no address")
    if not allow_private:
        for address in addresses:
            if not ipaddress.ip_address(str(address).split("%")[0]).is_global:
                raise RefusedDestination(f"{host} resolves to {address}, not a public address; the hub does not "
                                         "deliver into private networks")
    return str(addresses[0])


class _PinnedHTTPConnection(http.client.HTTPConnection):
    """Plain HTTP to an address resolved and checked beforehand."""

    def __init__(self, host: str, port: int, address: str, timeout_s: float) -> None:
        super().__init__(host, port, timeout=timeout_s)
        self._address = address

    def connect(self) -> None:
        self.sock = socket.create_connection((self._address, self.port), self.timeout)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """HTTPS to an address resolved and checked beforehand; the certificate is checked against the host name."""

    def __init__(self, host: str, port: int, address: str, timeout_s: float) -> None:
        self._tls = ssl.create_default_context()
        super().__init__(host, port, timeout=timeout_s, context=self._tls)
        self._address = address

    def connect(self) -> None:
        raw = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = self._tls.wrap_socket(raw, server_hostname=self.host)


def _elapsed_ms(started: float) -> int:
    return max(0, round((time.perf_counter() - started) * 1000))


@dataclass
class DeliveryTotals:
    """Deliveries tried by this process, by outcome (delivered, failed, gone)."""

    outcomes: Counter[str] = field(default_factory=Counter)
    batches: int = 0

    @property
    def attempts(self) -> int:
        return sum(self.outcomes.values())


class Deliverer:
    """One delivery process's loop; ``holder`` names it in the leases (host:pid)."""

    def __init__(self, session_factory: sessionmaker[Session], signer: WebhookSigner, *, holder: str,
                 batch: int = DEFAULT_BATCH, timeout_s: float = DEFAULT_TIMEOUT_S, clock: Clock = utc_now,
                 sender: Sender = post, sleep: Callable[[float], object] | None = None,
                 stop: threading.Event | None = None, rng: random.Random | None = None,
                 on_attempt: Callable[[webhooks.DueDelivery, Reply, str], None] | None = None,
                 allow_private: bool = False) -> None:
        if batch < 1 or timeout_s <= 0:
            raise ValueError("batch must be at least 1 and timeout_s positive")
        self.session_factory = session_factory
        self.signer = signer
        self.holder = holder
        self.batch = batch
        self.timeout_s = timeout_s
        self.clock = clock
        self.sender = sender
        self.sleep = sleep
        self.stop = stop or threading.Event()
        self.rng = rng
        self.on_attempt = on_attempt
        self.allow_private = allow_private
        self.totals = DeliveryTotals()

    @property
    def lease(self) -> timedelta:
        """Long enough for every delivery of a batch to time out, and a margin."""
        return timedelta(seconds=self.timeout_s * self.batch) + LEASE_MARGIN

    def run(self, *, once: bool = False) -> DeliveryTotals:
        """Deliver until ``stop`` is set (or, with ``once``, until nothing is due)."""
        while not self.stop.is_set():
            if self.deliver_batch() == 0:
                if once:
                    break
                # By default a wait on ``stop``: SIGTERM ends an idle process at once.
                (self.sleep or self.stop.wait)(IDLE_SLEEP_S)
        return self.totals

    def deliver_batch(self) -> int:
        """Lease one batch and try each of its deliveries; how many were tried."""
        with self.session_factory() as session:
            due = webhooks.lease_due(session, now=self.clock(), holder=self.holder, limit=self.batch, lease=self.lease)
            session.commit()
        if not due:
            return 0
        self.totals.batches += 1
        tried = 0
        gone: set[int] = set()
        for delivery in due:
            if self.stop.is_set():
                break  # the rest keep their lease until it runs out, then any process takes them
            if delivery.endpoint_id in gone:
                continue  # disabled by its 410 a moment ago: its other deliveries were cancelled with it
            if self.deliver(delivery) == "gone":
                gone.add(delivery.endpoint_id)
            tried += 1
        return tried

    def deliver(self, delivery: webhooks.DueDelivery) -> str:
        """POST one delivery signed and record the attempt; its outcome."""
        headers = self.signer.sign(url=delivery.url, body=delivery.body, event_id=delivery.event_id,
                                   now=self.clock())
        reply = self.sender(delivery.url, delivery.body, headers, self.timeout_s, allow_private=self.allow_private)
        now = self.clock()
        retry_after = rules.parse_retry_after(reply.retry_after, now=now)
        with self.session_factory() as session:
            outcome = webhooks.record_attempt(session, delivery_id=delivery.delivery_id, now=now,
                                              duration_ms=reply.duration_ms, status_code=reply.status_code,
                                              error=reply.error, retry_after=retry_after, rng=self.rng)
            session.commit()
        self.totals.outcomes[outcome] += 1
        metrics.observe_webhook_delivery(outcome)
        logger.info("webhook %s", outcome, extra={
            "event_id": delivery.event_id, "endpoint_id": delivery.endpoint_id, "status": reply.status_code,
            "duration_ms": reply.duration_ms, "attempt": delivery.attempts + 1})
        if self.on_attempt is not None:
            self.on_attempt(delivery, reply, outcome)
        return outcome


def pending(session_factory: sessionmaker[Session]) -> int:
    """Deliveries waiting to be sent, for the command's summary."""
    with session_factory() as session:
        return webhooks.pending_count(session)
