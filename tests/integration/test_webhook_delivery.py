"""The delivery process against real HTTP receivers on 127.0.0.1: one that answers, one that fails then answers,
one that hangs past the timeout, a slow one, one that answers 410, one that goes away and comes back, and busy
ones that ask for Retry-After. Every event arrives signed (checked with the SDK's ``verify_webhook``), the delivery
log shows each attempt with its status and latency, 410 disables the endpoint and Retry-After is honoured; the
clock is the test's, so retries come without waiting minutes.

Then ``alliance webhooks deliver`` as real processes on PostgreSQL: SIGKILLed mid-batch, started again twice at
once; every event is received at least once, duplicates only for what was in flight at the kill, and the SDK's
deduplicator removes them; SIGTERM ends both cleanly.
"""

from __future__ import annotations

import json
import random
import re
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Iterator

import pytest
from click.testing import CliRunner

from alliance.cli import main
from alliance.domain.webhook_signing import WebhookSigner, webhook_key_id
from alliance.extensions import HubState
from alliance.services import webhooks
from alliance.services.webhook_delivery import Deliverer
from partners_sdk import WebhookDeduplicator, WebhookVerificationError, verify_webhook
from tests.factories import make_partner
from tests.sdk_support import ALLIANCE, subprocess_environment

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
TIMEOUT_S = 0.5


@dataclass
class Received:
    path: str
    event_id: str | None
    verified: bool
    error: str | None


@dataclass
class Receiver:
    """An HTTP server in a thread; ``behave(path, count)`` answers (status, delay_s, headers) for the count-th request
    to a path. Each request's signature is verified as it arrives, at the test clock's moment."""

    behave: Callable[[str, int], tuple[int, float, dict[str, str]]]
    keys: dict[str, object]
    clock: Callable[[], datetime]
    port: int = 0
    received: list[Received] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)
    server: ThreadingHTTPServer | None = None

    def start(self) -> "Receiver":
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the standard library's name
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                url = f"http://127.0.0.1:{receiver.port}{self.path}"
                try:
                    event = verify_webhook("POST", url, list(self.headers.items()), body,
                                           receiver.keys, now=receiver.clock())  # type: ignore[arg-type]
                    record = Received(self.path, event.id, True, None)
                except WebhookVerificationError as error:
                    record = Received(self.path, None, False, error.code)
                with receiver.lock:
                    receiver.received.append(record)
                    receiver.counts[self.path] += 1
                    count = receiver.counts[self.path]
                status, delay_s, headers = receiver.behave(self.path, count)
                time.sleep(delay_s)
                try:
                    self.send_response(status)
                    for name, value in headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                except OSError:
                    pass  # the hub gave up waiting and closed the connection

            def log_message(self, *args: object) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_port
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        assert self.server is not None
        self.server.shutdown()
        self.server.server_close()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def ids(self, path: str) -> list[str | None]:
        with self.lock:
            return [item.event_id for item in self.received if item.path == path]


class Clock:
    def __init__(self, moment: datetime) -> None:
        self.moment = moment

    def __call__(self) -> datetime:
        return self.moment


def behaviour(path: str, count: int) -> tuple[int, float, dict[str, str]]:
    """How each test endpoint answers its count-th request (three events each)."""
    if path == "/ok":
        return 204, 0, {}
    if path == "/flaky":  # every event's first try fails
        return (500, 0, {}) if count <= 3 else (200, 0, {})
    if path == "/hang":  # hangs past the hub's timeout on the first try of each event
        return (204, TIMEOUT_S * 2, {}) if count <= 3 else (204, 0, {})
    if path == "/slow":  # slow, but within the timeout
        return 200, TIMEOUT_S * 0.4, {}
    if path == "/gone":
        return 410, 0, {}
    if path == "/busy":  # 503 asking for two minutes
        return (503, 0, {"Retry-After": "120"}) if count <= 3 else (204, 0, {})
    if path == "/throttled":  # 429 with an HTTP date 90 s after the test clock's start
        return (429, 0, {"Retry-After": "Mon, 02 Nov 2026 09:01:30 GMT"}) if count <= 3 else (204, 0, {})
    if path == "/away":
        return 204, 0, {}
    raise AssertionError(path)


def register(hub: HubState, url: str) -> int:
    with hub.unit_of_work() as uow:
        endpoint = webhooks.register_endpoint(uow.session, partner="shop", url=url, event_types=["statement.closed"],
                                              actor="console:pam", now=T0)
        uow.commit()
    return endpoint.id


def emit(hub: HubState, partner_id: int, statement_id: int, now: datetime) -> str:
    with hub.unit_of_work() as uow:
        event_id = webhooks.emit(uow.session, event_type="statement.closed", partner_id=partner_id,
                                 data={"statement_id": statement_id}, now=now)
        uow.commit()
    assert event_id is not None
    return event_id


def log(hub: HubState, endpoint_id: int) -> list[webhooks.DeliveryView]:
    with hub.unit_of_work() as uow:
        return webhooks.delivery_log(uow.session, endpoint_id=endpoint_id)


@pytest.fixture()
def signer(hub: HubState) -> WebhookSigner:
    return hub.extras["webhook_signer"]  # type: ignore[return-value]


@pytest.fixture()
def receivers(hub: HubState, signer: WebhookSigner) -> Iterator[tuple[Receiver, Receiver, Clock]]:
    clock = Clock(T0)
    keys = {signer.key_id: signer.private_key.public_key()}
    main_receiver = Receiver(behaviour, keys, clock).start()
    away = Receiver(behaviour, keys, clock).start()
    away.stop()  # its port is closed until the test brings it back
    yield main_receiver, away, clock
    main_receiver.stop()
    if away.server is not None and away.server.socket.fileno() != -1:
        away.stop()


def test_every_event_is_delivered_signed_through_failures_hangs_410_retry_after_and_a_receiver_away(
        hub, signer, receivers):
    receiver, away, clock = receivers
    shop = make_partner(hub, now=T0 - timedelta(days=1), code="shop")
    paths = ("/ok", "/flaky", "/hang", "/slow", "/gone", "/busy", "/throttled")
    endpoints = {path: register(hub, receiver.url(path)) for path in paths}
    endpoints["/away"] = register(hub, away.url("/away"))
    events = [emit(hub, shop, number, T0) for number in range(3)]
    deliverer = Deliverer(hub.session_factory, signer, holder="test:1", batch=8, timeout_s=TIMEOUT_S, clock=clock,
                          rng=random.Random(7), allow_private=True)

    totals = deliverer.run(once=True)
    assert totals.outcomes["delivered"] == 6  # /ok and /slow
    assert totals.outcomes["gone"] == 1  # the first 410 disabled /gone; its other deliveries were not sent
    assert receiver.ids("/ok") == receiver.ids("/slow") == events
    assert receiver.ids("/gone") == events[:1]
    assert len(receiver.ids("/flaky")) == len(receiver.ids("/hang")) == 3

    # 61 s later: the schedule's first retry (15-30 s) and the 429's HTTP date (90 s) ... only the former are due.
    clock.moment = T0 + timedelta(seconds=61)
    deliverer.run(once=True)
    assert sorted(receiver.ids("/flaky")[3:]) == sorted(receiver.ids("/hang")[3:]) == sorted(events)
    assert len(receiver.ids("/busy")) == len(receiver.ids("/throttled")) == 3  # Retry-After holds them back
    # The receiver comes back on its port; ten minutes on, everything is due and delivered.
    away.start()
    clock.moment = T0 + timedelta(minutes=10)
    deliverer.run(once=True)
    for path in ("/ok", "/flaky", "/hang", "/slow", "/busy", "/throttled", "/away"):
        assert set(receiver.ids(path) if path != "/away" else away.ids(path)) == set(events), path
        assert all(view.status == "delivered" for view in log(hub, endpoints[path])), path
    assert all(item.verified for item in receiver.received + away.received), [
        item for item in receiver.received if not item.verified]

    # The delivery log: each attempt with its status and latency.
    flaky = log(hub, endpoints["/flaky"])[0]
    assert [(attempt.status_code, attempt.outcome) for attempt in flaky.tries] == [(200, "delivered"),
                                                                                     (500, "failed")]
    hang = log(hub, endpoints["/hang"])[0]
    assert hang.tries[-1].status_code is None and hang.tries[-1].error == f"no answer within {TIMEOUT_S:g} s"
    assert hang.tries[-1].duration_ms >= TIMEOUT_S * 1000 * 0.9
    assert all(view.tries[0].duration_ms >= TIMEOUT_S * 400 * 0.9 for view in log(hub, endpoints["/slow"]))
    for path, earliest in (("/busy", T0 + timedelta(seconds=120)), ("/throttled", T0 + timedelta(seconds=90))):
        for view in log(hub, endpoints[path]):
            first, second = view.tries[-1], view.tries[0]
            assert first.status_code in (503, 429) and second.attempted_at >= earliest, path
    away_log = log(hub, endpoints["/away"])[0]
    assert away_log.tries[-1].status_code is None and "ConnectionRefused" in (away_log.tries[-1].error or "")
    # 410 disabled the endpoint and cancelled its other deliveries.
    with hub.unit_of_work() as uow:
        gone = webhooks.endpoint_view(uow.session, endpoints["/gone"])
    assert gone.status == "disabled" and gone.disabled_reason == "the endpoint answered 410 Gone"
    assert sorted(view.status for view in log(hub, endpoints["/gone"])) == ["cancelled"] * 3
    with hub.unit_of_work() as uow:
        assert webhooks.pending_count(uow.session) == 0


def test_sigterm_stops_the_process_after_the_delivery_in_progress(hub, signer, receivers):
    receiver, _away, clock = receivers
    shop = make_partner(hub, now=T0 - timedelta(days=1), code="shop")
    register(hub, receiver.url("/slow"))
    for number in range(4):
        emit(hub, shop, number, T0)
    stop = threading.Event()

    def stop_after_first(_delivery, _reply, _outcome) -> None:  # type: ignore[no-untyped-def]
        stop.set()

    deliverer = Deliverer(hub.session_factory, signer, holder="test:1", batch=4, timeout_s=TIMEOUT_S, clock=clock,
                          stop=stop, on_attempt=stop_after_first, allow_private=True)
    assert deliverer.run().attempts == 1
    assert len(receiver.ids("/slow")) == 1


def test_the_cli_prints_a_new_key_and_the_published_keys(pg_app, pg_hub):
    app, signer = pg_app, pg_hub.extras["webhook_signer"]
    runner = CliRunner()
    made = runner.invoke(main, ["webhooks", "new-key"])
    assert made.exit_code == 0 and "-----BEGIN PRIVATE KEY-----" in made.stdout
    assert re.search(r"key id: whk-[0-9a-f]{16}", made.stderr)
    with app.app_context():
        shown = runner.invoke(main, ["webhooks", "public-key"])
    assert shown.exit_code == 0 and f"key id: {signer.key_id} (active)" in shown.stdout


# --- processes killed mid-batch, on PostgreSQL ----------------------------------------------------------------

EVENTS = 24


def start_deliverer(hub: HubState, timeout_s: float) -> subprocess.Popen[str]:
    environment = subprocess_environment(ALLIANCE_DATABASE_URL=str(hub.settings.database_url),
                                         ALLIANCE_INSTANCE_PATH=str(hub.settings.instance_path))
    return subprocess.Popen([ALLIANCE, "webhooks", "deliver", "--batch", "4", "--timeout", str(timeout_s)],
                            env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_until(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_a_delivery_process_killed_mid_batch_loses_nothing_and_two_processes_share_the_rest(pg_hub):
    hub = pg_hub
    signer: WebhookSigner = hub.extras["webhook_signer"]  # type: ignore[assignment]
    # Closed after the kill until both new processes have a request in flight: each has leased a share.
    gate, waiting = threading.Event(), Counter[str]()
    gate.set()

    def behave(_path: str, _count: int) -> tuple[int, float, dict[str, str]]:
        if not gate.is_set():
            waiting["requests"] += 1
            gate.wait(20)
        return 204, 0.05, {}

    receiver = Receiver(behave, {signer.key_id: signer.private_key.public_key()}, lambda: datetime.now(UTC)).start()
    processes: list[subprocess.Popen[str]] = []
    try:
        shop = make_partner(hub, now=datetime.now(UTC) - timedelta(days=1), code="shop")
        with hub.unit_of_work() as uow:
            webhooks.register_endpoint(uow.session, partner="shop", url=receiver.url("/hooks"),
                                       event_types=["statement.closed"], actor="console:pam", now=datetime.now(UTC))
            uow.commit()
        events = {emit(hub, shop, number, datetime.now(UTC)) for number in range(EVENTS)}

        first = start_deliverer(hub, 0.5)
        processes.append(first)
        wait_until(lambda: len(receiver.received) >= 6, 30, "the first deliveries")
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
        before_kill = set(receiver.ids("/hooks"))
        assert before_kill < events  # killed mid-way

        gate.clear()
        second, third = start_deliverer(hub, 5), start_deliverer(hub, 5)
        processes += [second, third]
        wait_until(lambda: waiting["requests"] >= 2, 30, "both processes sending")
        gate.set()

        def all_delivered() -> bool:
            with hub.unit_of_work() as uow:
                return webhooks.pending_count(uow.session) == 0

        wait_until(all_delivered, 40, "every event delivered")
        summaries = []
        for process in (second, third):
            process.send_signal(signal.SIGTERM)
            output, _ = process.communicate(timeout=15)
            assert process.returncode == 0, output
            summaries.append(int(re.search(r"(\d+) attempts: (\d+) delivered", output).group(2)))  # type: ignore[union-attr]
        assert all(count > 0 for count in summaries), summaries  # both shared the work

        received = receiver.ids("/hooks")
        assert all(item.verified for item in receiver.received)
        assert set(received) == events  # none lost
        duplicates = {event_id for event_id, count in Counter(received).items() if count > 1}
        # Only what the killed process had sent without recording it can come twice (one request at a time).
        assert len(duplicates) <= 1 and duplicates <= before_kill
        assert sum(summaries) + len(before_kill) - len(duplicates) == EVENTS
        with WebhookDeduplicator() as seen:
            processed = [event_id for event_id in received if not seen.seen_before(str(event_id))]
        assert sorted(processed) == sorted(events)
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=10)
        receiver.stop()



def test_a_partner_fetches_the_published_keys_with_the_sdk_and_verifies_a_delivery_with_them(app, hub, signer):
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from partners_sdk import AllianceClient
    from tests.sdk_support import make_shop, serve_in_thread

    # A rotation's overlap: the next key is published beside the active one.
    following = Ed25519PrivateKey.generate()
    hub.extras["webhook_signer"] = WebhookSigner(private_key=signer.private_key, key_id=signer.key_id,
                                                 extra_public_keys=(following.public_key(),))
    shop = make_shop(hub)
    with serve_in_thread(app) as base_url:
        with urllib.request.urlopen(f"{base_url}/openapi.json", timeout=10) as response:
            assert "/partner/v1/webhook-keys" in json.load(response)["paths"]
        with pytest.raises(urllib.error.HTTPError) as unsigned:
            urllib.request.urlopen(f"{base_url}/partner/v1/webhook-keys", timeout=10)
        assert unsigned.value.code == 401
        client = AllianceClient(base_url, shop.partner.key_id, shop.partner.private_key)
        keys = client.webhook_keys()
    assert list(keys) == [signer.key_id, webhook_key_id(following.public_key())]
    receiver = Receiver(lambda _path, _count: (204, 0, {}), dict(keys), lambda: datetime.now(UTC)).start()
    try:
        with hub.unit_of_work() as uow:
            webhooks.register_endpoint(uow.session, partner="shop", url=receiver.url("/hooks"),
                                       event_types=["statement.closed"], actor="console:pam", now=datetime.now(UTC))
            uow.commit()
        event_id = emit(hub, shop.partner.partner_id, 1, datetime.now(UTC))
        Deliverer(hub.session_factory, hub.extras["webhook_signer"], holder="test:1",  # type: ignore[arg-type]
                  timeout_s=5, allow_private=True).run(once=True)
    finally:
        receiver.stop()
    assert [(item.event_id, item.verified) for item in receiver.received] == [(event_id, True)]


def test_outside_development_the_hub_does_not_post_into_private_networks(hub, signer, receivers):
    receiver, _away, clock = receivers
    shop = make_partner(hub, now=T0 - timedelta(days=1), code="shop")
    endpoint = register(hub, receiver.url("/ok"))
    emit(hub, shop, 1, T0)
    Deliverer(hub.session_factory, signer, holder="test:1", timeout_s=TIMEOUT_S, clock=clock).run(once=True)
    assert receiver.received == []
    [view] = log(hub, endpoint)
    assert view.status == "pending" and view.tries[0].status_code is None
    assert "127.0.0.1 resolves to 127.0.0.1, not a public address" in (view.tries[0].error or "")
