"""Helpers for partner API tests: a real HTTP server, a signed raw-HTTP client, book snapshots.

``serve`` runs a hub in a thread behind Werkzeug's threaded server, so concurrency tests
exercise real sockets, real WSGI environs and one database connection per request
thread, as production does. ``books`` captures everything a request could change in the
ledger, so a test can prove that a refused request left no trace.
"""

from __future__ import annotations

import http.client
import json
import threading
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Iterator
from urllib.parse import urlsplit

from flask import Flask
from sqlalchemy import func, select
from werkzeug.serving import make_server

from alliance.extensions import HubState
from alliance.models import (
    IdempotencyRecord,
    JournalEntry,
    JournalTransaction,
    LedgerAccount,
    LotConsumption,
    PointLot,
    Purchase,
    PurchaseRefund,
    RedemptionCode,
    RedemptionHold,
    RedemptionRefund,
    SeenNonce,
)
from alliance.services import ledger
from alliance.services.accounts import member_balances
from alliance.services.audit import run_audit
from tests.factories import SigningPartner
from tests.signing import sign_request

REQUEST_TIMEOUT_S = 20


@contextmanager
def serve(app: Flask) -> Iterator[str]:
    """Serve ``app`` on a free loopback port in a background thread; yields the base URL."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="partner-api-test-server", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@dataclass
class HttpReply:
    """What came back over the wire: status, headers (names lower-cased), raw and parsed body."""

    status: int
    headers: dict[str, str]
    raw: bytes

    @property
    def body(self) -> Any:
        return json.loads(self.raw) if self.raw else None


def send_signed(base_url: str, partner: SigningPartner, method: str, path: str, payload: Any = None, *,
                idempotency_key: str | None = None, timeout_s: float = REQUEST_TIMEOUT_S) -> HttpReply:
    """Sign one request afresh (new nonce) with the partner's key and send it over HTTP."""
    body = b"" if payload is None else json.dumps(payload).encode()
    if method != "GET" and idempotency_key is None:
        idempotency_key = str(uuid.uuid4())
    headers = sign_request(method=method, url=base_url + path, body=body, key_id=partner.key_id,
                           private_key=partner.private_key, idempotency_key=idempotency_key)
    return send_prepared(base_url, method, path, body, headers, timeout_s=timeout_s)


def send_prepared(base_url: str, method: str, path: str, body: bytes, headers: dict[str, str], *,
                  timeout_s: float = REQUEST_TIMEOUT_S) -> HttpReply:
    """Send a request exactly as given (already signed, say: the same bytes may be sent twice)."""
    parts = urlsplit(base_url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout_s)
    try:
        connection.request(method, path, body=body if method != "GET" else None, headers=headers)
        response = connection.getresponse()
        return HttpReply(response.status, {name.lower(): value for name, value in response.getheaders()},
                         response.read())
    finally:
        connection.close()


def wall_clock_partner_time() -> datetime:
    """A moment one day ago: partners created then have prices and rules in force now."""
    return datetime.now(timezone.utc) - timedelta(days=1)


def purchase_payload(receipt_id: str, card_number: str, amount_minor: int = 12_345, **extra: Any) -> dict[str, Any]:
    """A valid purchase report, made a minute ago by the wall clock."""
    purchased_at = (datetime.now(timezone.utc) - timedelta(minutes=1)).isoformat()
    return {"receipt_id": receipt_id, "card_number": card_number, "amount_minor": amount_minor, "currency": "EUR",
            "purchased_at": purchased_at, **extra}


def _count(session, model) -> int:  # type: ignore[no-untyped-def]
    return session.scalar(select(func.count()).select_from(model)) or 0


def books(hub: HubState) -> dict[str, Any]:
    """Everything a partner request could change in the books, comparable with ``==``."""
    with hub.unit_of_work() as uow:
        session = uow.session
        return {
            "member_balances": sorted(session.execute(
                select(LedgerAccount.code, LedgerAccount.balance_points).where(LedgerAccount.member_id.is_not(None))
            ).all()),
            "journal_transactions": _count(session, JournalTransaction),
            "journal_entries": _count(session, JournalEntry),
            "lots": sorted(session.execute(select(PointLot.id, PointLot.state, PointLot.points_remaining)).all()),
            "lot_consumptions": _count(session, LotConsumption),
            "purchases": sorted(session.execute(
                select(Purchase.id, Purchase.refunded_amount_minor)).all()),
            "purchase_refunds": _count(session, PurchaseRefund),
            "holds": sorted(session.execute(
                select(RedemptionHold.id, RedemptionHold.status, RedemptionHold.points_captured,
                       RedemptionHold.points_refunded)).all()),
            "redemption_refunds": _count(session, RedemptionRefund),
            "redemption_codes_used": session.scalar(
                select(func.count()).select_from(RedemptionCode).where(RedemptionCode.used_at.is_not(None))),
        }


def api_traces(hub: HubState) -> dict[str, int]:
    """Rows the API layer itself writes: accepted nonces and idempotency records."""
    with hub.unit_of_work() as uow:
        return {"nonces": _count(uow.session, SeenNonce), "idempotency_keys": _count(uow.session, IdempotencyRecord)}


def assert_books_unchanged(hub: HubState, before: dict[str, Any]) -> None:
    """The books are exactly as ``before`` and every audit invariant still holds."""
    assert books(hub) == before
    assert_audit_green(hub)


def assert_audit_green(hub: HubState) -> None:
    """``alliance audit`` finds nothing wrong."""
    with hub.unit_of_work() as uow:
        report = run_audit(uow.session)
    assert report.ok, report.first_failure


def fund_member(hub: HubState, *, member_id: int, partner_id: int | None, points: int,
                pending_until: datetime | None = None) -> None:
    """Credit a member straight on the ledger (no purchase), spendable unless pending."""
    now = datetime.now(timezone.utc)
    with hub.unit_of_work() as uow:
        ledger.earn(uow.session, member_id=member_id, partner_id=partner_id, points=points, now=now,
                    expires_at=now + timedelta(days=365), pending_until=pending_until)
        uow.commit()


def balances(hub: HubState, member_id: int) -> dict[str, int]:
    """The member's stored available, pending and held points."""
    with hub.unit_of_work() as uow:
        return member_balances(uow.session, member_id)


def audit_totals(hub: HubState) -> dict[str, int]:
    """The audit's ledger totals (net points per account kind), after checking it is green."""
    with hub.unit_of_work() as uow:
        report = run_audit(uow.session)
    assert report.ok, report.first_failure
    return report.totals


class HubClock:
    """The partner API's notion of now, shifted by a controllable offset from the wall clock.

    The API reads the clock through ``alliance.api.partner.auth.utc_now``, which
    ``routes`` imports by name, so both are patched. Requests must
    then be signed with ``created=clock.now()`` or they look stale to the hub.
    """

    MODULES = ("alliance.api.partner.auth", "alliance.api.partner.routes")

    def __init__(self, monkeypatch) -> None:  # type: ignore[no-untyped-def]
        self.offset = timedelta(0)
        for module in self.MODULES:
            monkeypatch.setattr(f"{module}.utc_now", self.now)

    def now(self) -> datetime:
        return datetime.now(timezone.utc) + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += timedelta(seconds=seconds)
