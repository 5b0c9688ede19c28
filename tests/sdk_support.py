"""Helpers for the POS SDK's tests: fake transports, live and hanging hubs, and the guides' examples.

A live hub is either served in-process by Werkzeug on a ``pg_app`` (fast, and enough
for "hub down, then up") or started as an ``alliance serve`` subprocess on the test's
PostgreSQL database, which a test can SIGKILL mid-request.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

from flask import Flask
from sqlalchemy import func, select
from werkzeug.serving import make_server

from alliance.extensions import HubState
from alliance.models import Purchase
from alliance.services.accounts import member_balances
from tests.factories import SigningPartner, make_member_with_pin, make_signing_partner

ROOT = Path(__file__).resolve().parents[1]
ALLIANCE = str(Path(sys.executable).parent / "alliance")
HEALTH_TIMEOUT_S = 30.0
PIN = "2468"

# The guides' checkout example, exactly as partners_sdk/README.md and docs/sdk.md show it.
README_EXAMPLE = '''\
import uuid
from partners_sdk import AllianceClient, Queued, load_private_key

client = AllianceClient("http://127.0.0.1:5000", "cafe-aurora-till-1",
                        load_private_key("instance/demo-keys/cafe-aurora-till-1.pem"),
                        queue="instance/pos-queue.sqlite3")  # purchases wait here while the hub is down
card = "6390000000000013"  # a demo card; its PIN is 1234
result = client.report_purchase(receipt_id=f"R-{uuid.uuid4().hex[:8]}", card_number=card,
                                amount_minor=15_000, currency="EUR")
print("queued" if isinstance(result, Queued) else f"earned {result.points.total} points")
balance = client.get_balance(card_number=card, pin="1234")
print(f"{balance.points_available} points available")
'''

# The guides' redemption example: hold, capture, void, and an overdraft refused.
REDEMPTION_EXAMPLE = '''\
import uuid
from partners_sdk import AllianceClient, InsufficientPointsError, load_private_key

client = AllianceClient("http://127.0.0.1:5000", "cafe-aurora-till-1",
                        load_private_key("instance/demo-keys/cafe-aurora-till-1.pem"))
card, pin = "6390000000000013", "1234"  # a demo card and its PIN, typed by the member


def reference() -> str:
    return f"RD-{uuid.uuid4().hex[:8]}"  # one per redemption, never reused


# The member pays part of the bill in points: hold them first...
held = client.authorize_redemption(reference=reference(), points=200, card_number=card, pin=pin)
# ...and spend them when the sale goes through: all or part, once; the rest goes back.
spent = client.capture_redemption(held.reference, points=150)
print(f"{spent.status}: {spent.points_captured} points")
# A sale abandoned after the hold: void it, and every held point goes back at once.
held = client.authorize_redemption(reference=reference(), points=100, card_number=card, pin=pin)
print(client.void_redemption(held.reference).status)
try:
    client.authorize_redemption(reference=reference(), points=1_000_000, card_number=card, pin=pin)
except InsufficientPointsError as refused:
    print(f"refused: {refused.detail}")
'''


def free_port() -> int:
    """A loopback port nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def serve_in_thread(app: Flask, *, port: int = 0) -> Iterator[str]:
    """Serve ``app`` over real HTTP on 127.0.0.1 in a thread; yields the base URL."""
    server = make_server("127.0.0.1", port, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="sdk-test-hub", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@contextmanager
def hanging_hub() -> Iterator[str]:
    """A hub that accepts every connection and never answers a byte; yields its base URL.

    This is the failure a refused connection does not show: a hub whose process is
    wedged (or a proxy in front of it) keeps the till waiting instead of failing fast.
    """
    listener = socket.create_server(("127.0.0.1", 0))
    # The accept loop wakes up this often to see whether the test is over.
    listener.settimeout(0.1)
    held: list[socket.socket] = []
    stopping = threading.Event()

    def accept_and_hold() -> None:
        while not stopping.is_set():
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            held.append(connection)

    thread = threading.Thread(target=accept_and_hold, name="sdk-test-hanging-hub", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stopping.set()
        thread.join(timeout=5)
        listener.close()
        for connection in held:
            connection.close()


def subprocess_environment(**extra: str) -> dict[str, str]:
    """This environment without ``ALLIANCE_*`` settings, with the work tree importable."""
    environment = {name: value for name, value in os.environ.items() if not name.startswith("ALLIANCE_")}
    environment["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), environment.get("PYTHONPATH")]))
    environment.update(extra)
    return environment


def wait_for_health(base_url: str, *, timeout_s: float = HEALTH_TIMEOUT_S) -> None:
    """Return once the hub answers /healthz."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(f"{base_url}/healthz", timeout=2):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise AssertionError(f"the hub at {base_url} did not answer within {timeout_s} s") from None
            time.sleep(0.1)


def start_hub_process(database_url: str, instance_path: Path, port: int) -> subprocess.Popen[bytes]:
    """``alliance serve`` on ``port`` over ``database_url``, answering health checks."""
    environment = subprocess_environment(ALLIANCE_DATABASE_URL=database_url, ALLIANCE_INSTANCE_PATH=str(instance_path))
    process = subprocess.Popen([ALLIANCE, "serve", "--port", str(port)], env=environment,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_health(f"http://127.0.0.1:{port}")
    except BaseException:
        process.kill()
        process.wait(timeout=10)
        raise
    return process


@dataclass(frozen=True)
class Shop:
    """A partner with a signing key and a member with a card and PIN, created a day ago."""

    partner: SigningPartner
    card_number: str
    member_id: int


def make_shop(hub: HubState, *, code: str = "shop") -> Shop:
    """Create the partner and member every SDK end-to-end test uses."""
    created = datetime.now(timezone.utc) - timedelta(days=1)
    partner = make_signing_partner(hub, now=created, code=code)
    member = make_member_with_pin(hub, now=created, pin=PIN)
    return Shop(partner=partner, card_number=member.card_number, member_id=member.member_id)


def purchase_rows(hub: HubState, receipt_id: str | None = None) -> int:
    """How many purchases the hub holds (for one receipt, if given)."""
    with hub.unit_of_work() as uow:
        query = select(func.count()).select_from(Purchase)
        if receipt_id is not None:
            query = query.where(Purchase.receipt_id == receipt_id)
        return uow.session.scalar(query) or 0


def available_points(hub: HubState, member_id: int) -> int:
    """The member's available balance, straight from the ledger."""
    with hub.unit_of_work() as uow:
        return member_balances(uow.session, member_id)["available"]


def problem(status: int, code: str, detail: str = "refused", **extra: Any) -> bytes:
    """A problem+json body as the hub writes it."""
    return json.dumps({"type": f"https://alliance.invalid/problems/{code}", "title": code, "status": status,
                       "detail": detail, "code": code, "request_id": "req-1", **extra}).encode()


def purchase_json(receipt_id: str = "r-1", points_total: int = 150) -> dict[str, Any]:
    """A purchase reply as the hub's presenter writes it."""
    return {
        "receipt_id": receipt_id, "card_number": "••••••••••••0013", "amount_minor": 15_000, "currency": "EUR",
        "purchased_at": "2026-11-02T09:29:00+00:00", "reported_at": "2026-11-02T09:30:00+00:00",
        "terminal": "till-1",
        "points": {"total": points_total, "partner_funded": points_total, "hub_funded": 0, "state": "active",
                   "pending_until": None},
        "breakdown": {
            "amount_minor": 15_000, "minor_units_per_unit": 100, "base_points_per_unit": "1.0000",
            "ladder_multiplier": "1.5", "tier": "standard", "tier_multiplier": "1", "rule_points": points_total,
            "campaigns": [], "points_before_caps": points_total, "capped_by": [], "partner_points": points_total,
            "hub_points": 0, "points_total": points_total,
        },
        "refunded_amount_minor": 0,
    }


@dataclass
class Attempt:
    """One request a fake transport received."""

    method: str
    url: str
    headers: dict[str, str]
    body: bytes | None
    timeout_s: float


Script = Callable[[Attempt], tuple[int, dict[str, str], bytes]]


@dataclass
class FakeTransport:
    """Answers from a list of scripted replies (or exceptions to raise), recording every attempt."""

    replies: list[Any] = field(default_factory=list)
    attempts: list[Attempt] = field(default_factory=list)
    default: Any = None

    def send(self, method: str, url: str, headers: Mapping[str, str], body: bytes | None,
             timeout_s: float) -> tuple[int, dict[str, str], bytes]:
        attempt = Attempt(method, url, dict(headers), body, timeout_s)
        self.attempts.append(attempt)
        reply = self.replies.pop(0) if self.replies else self.default
        if reply is None:
            raise AssertionError(f"unexpected request {method} {url}")
        if callable(reply):
            reply = reply(attempt)
        if isinstance(reply, BaseException):
            raise reply
        return reply


def json_reply(status: int, document: Any, **headers: str) -> tuple[int, dict[str, str], bytes]:
    """A reply with a JSON body."""
    return status, {"content-type": "application/json", **headers}, json.dumps(document).encode()


def problem_reply(status: int, code: str, **headers: str) -> tuple[int, dict[str, str], bytes]:
    """A problem+json reply."""
    return status, {"content-type": "application/problem+json", **headers}, problem(status, code)


class RecordingSleep:
    """An injectable ``sleep`` that records instead of waiting."""

    def __init__(self) -> None:
        self.calls: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)
