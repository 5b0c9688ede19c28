"""``AllianceClient``: every partner operation of the hub, signed, retried, and queued when offline.

Each logical operation gets one idempotency key, made before the first attempt and
sent again on every retry; each attempt is signed afresh (new nonce, new ``created``).
Purchase reports and refunds, when the client has an offline queue, are written to it
before the first attempt and leave it only on a definitive reply, so a hub that cannot
be reached, or a till that dies mid-send, never loses or doubles one. Redemptions and
balance inquiries need the member at the till and so are never queued: they fail fast
with ``HubUnreachable``.

Every call, retries and waits included, ends within ``deadline_s`` (8 s by default), and
each attempt within ``timeout_s`` (3 s) or the time left, whichever is less. A checkout
that first sends older queued operations shares that one deadline with them.
"""

from __future__ import annotations

import dataclasses
import json
import os
import threading
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable, Sequence, TypeVar
from urllib.parse import quote, urlsplit

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from partners_sdk import payloads
from partners_sdk.drainer import Drainer
from partners_sdk.errors import (
    AllianceError,
    ConfigurationError,
    HubUnreachable,
    ReceiptAlreadyReportedError,
    UnexpectedReplyError,
    error_from_reply,
)
from partners_sdk.offline_queue import OfflineQueue, PendingOperation, Refusal
from partners_sdk.payloads import PurchaseReport
from partners_sdk.results import (
    Balance,
    BatchResult,
    Event,
    FlushReport,
    Purchase,
    PurchaseRefund,
    Queued,
    Redemption,
    Reward,
    RewardOrder,
    WebhookDelivery,
    WebhookEndpoint,
    redeliveries_from_json,
    reward_orders_from_json,
    rewards_from_json,
    webhook_deliveries_from_json,
    webhook_endpoints_from_json,
)
from partners_sdk.retry import (
    DEFAULT_DEADLINE_S,
    MIN_ATTEMPT_TIME_S,
    Pacing,
    RetryPolicy,
    is_retryable_reply,
    send_with_retries,
)
from partners_sdk.signing import Clock, RequestSigner, utc_now
from partners_sdk.transport import HttpClientTransport, Reply, Transport
from partners_sdk.webhooks import load_webhook_keys

PREFIX = "/partner/v1"
# One attempt's bound: the hub answers a checkout in milliseconds, so an attempt still
# waiting after 3 s is better abandoned for a retry within the call's deadline.
DEFAULT_TIMEOUT_S = 3.0
MAX_TIMEOUT_S = 120.0
# A checkout that finds older operations waiting sends at most this many first; a longer
# backlog is left to flush() or the drainer, so the member is not kept waiting.
MAX_INLINE_FLUSH_OPERATIONS = 50
MAX_FLUSH_OPERATIONS = 10_000
MEMBER_PRESENT_HINT = "; redemptions and balance inquiries need the hub online and are never queued"
ALREADY_DELIVERED_CODES = {
    "purchase": frozenset({"receipt_already_reported"}),
    "purchase_refund": frozenset({"refund_already_recorded"}),
}

Result = TypeVar("Result")


STATEMENT_FORMATS = ("json", "csv", "json-signature", "csv-signature")
# The hub lists statements a page at a time; the client asks for the largest page.
STATEMENT_PAGE_SIZE = 200


@dataclass(frozen=True, slots=True)
class StatementSummary:
    """One signed statement as listed: its cycle, net and closing balance, and the signing key."""

    statement_id: int
    partner: str
    cycle_starts_at: str
    cycle_ends_at: str
    net_minor: int
    closing_balance_minor: int
    key_id: str

    @classmethod
    def from_json(cls, item: dict[str, Any]) -> "StatementSummary":
        """Read one item of the hub's statement list."""
        return cls(**{name: item[name] for name in cls.__dataclass_fields__})


@dataclass(frozen=True)
class _Operation:
    """One logical request: what is sent on every attempt, byte for byte."""

    method: str
    path: str
    body: bytes | None
    idempotency_key: str | None
    content_type: str = "application/json"


class AllianceClient:
    """The point-of-sale client of the alliance hub's partner API."""

    def __init__(
        self,
        base_url: str,
        key_id: str,
        private_key: Ed25519PrivateKey,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        deadline_s: float = DEFAULT_DEADLINE_S,
        max_retries: int = 3,
        retry_policy: RetryPolicy | None = None,
        transport: Transport | None = None,
        queue: OfflineQueue | str | os.PathLike[str] | None = None,
        clock: Clock = utc_now,
        sleep: Callable[[float], None] | None = None,
        random: Callable[[], float] | None = None,
    ) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
            raise ConfigurationError(f"base_url must be an http(s) URL without query, got {base_url!r}")
        if not 0 < timeout_s <= MAX_TIMEOUT_S:
            raise ConfigurationError(f"timeout_s must be above 0 and at most {MAX_TIMEOUT_S}")
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self._signer = RequestSigner(key_id, private_key, clock=clock)
        self._clock = clock
        self._policy = retry_policy or RetryPolicy(max_retries=max_retries, deadline_s=deadline_s)
        self._pacing = Pacing()
        if sleep is not None:
            self._pacing.sleep = sleep
        if random is not None:
            self._pacing.random = random
        self._transport: Transport = transport or HttpClientTransport()
        # A queue given as a path is opened, and closed, by this client; a queue object is the caller's.
        self.queue: OfflineQueue | None
        if queue is None or isinstance(queue, OfflineQueue):
            self._owns_queue = False
            self.queue = queue
        else:
            self._owns_queue = True
            self.queue = OfflineQueue(queue)
        # Queued operations go out one at a time and in order, whichever thread sends them.
        self._delivery_lock = threading.RLock()

    # Purchases: reported live, or queued when the hub cannot be reached.

    def report_purchase(self, *, receipt_id: str, card_number: str, amount_minor: int, currency: str,
                        purchased_at: datetime | None = None, terminal: str | None = None,
                        idempotency_key: str | None = None, coupon_code: str | None = None) -> Purchase | Queued:
        """Report a purchase so the member earns points; ``Queued`` if the hub is out of reach.

        A receipt id this partner already reported raises ``ReceiptAlreadyReportedError``
        carrying the purchase the hub holds under it (``existing_purchase``).
        ``coupon_code``: a bonus or multiplier coupon the member presents, judged and used in
        the same call; a purchase with a coupon is sent live, never queued (the member is at
        the till), and a coupon that may not be used raises ``InvalidRequestError`` with the
        code ``coupon_invalid`` (nothing of the purchase is stored).
        """
        report = PurchaseReport(receipt_id=receipt_id, card_number=card_number, amount_minor=amount_minor,
                                currency=currency, purchased_at=purchased_at or self._clock(), terminal=terminal)
        body = payloads.encode(payloads.purchase(report, coupon=coupon_code))
        deadline_at_s = self._deadline_at_s()
        try:
            if coupon_code is not None:
                operation = _Operation("POST", f"{PREFIX}/purchases", body, _new_key(idempotency_key))
                try:
                    return self._live(operation, Purchase.from_json, deadline_at_s=deadline_at_s)
                except HubUnreachable as error:
                    raise HubUnreachable(error.detail + MEMBER_PRESENT_HINT, retry_safe=True) from error
            return self._queueable("purchase", f"{PREFIX}/purchases", body, receipt_id, idempotency_key,
                                   Purchase.from_json, deadline_at_s=deadline_at_s)
        except ReceiptAlreadyReportedError as error:
            error.existing_purchase = self._existing_purchase(receipt_id, deadline_at_s)
            raise

    def report_purchases(self, purchases: Sequence[PurchaseReport], *,
                         idempotency_key: str | None = None) -> BatchResult | Queued:
        """Report up to 1,000 purchases at once; each is applied or rejected on its own."""
        body = payloads.encode(payloads.batch(list(purchases)))
        first, last = purchases[0].receipt_id, purchases[-1].receipt_id
        return self._queueable("purchase_batch", f"{PREFIX}/purchases/batch", body, f"{first}..{last}",
                               idempotency_key, BatchResult.from_json, deadline_at_s=self._deadline_at_s())

    def refund_purchase(self, receipt_id: str, *, refund_id: str, amount_minor: int,
                        idempotency_key: str | None = None) -> PurchaseRefund | Queued:
        """Refund part or all of a purchase; points come back off in proportion."""
        path = f"{PREFIX}/purchases/{_segment(payloads.reference(receipt_id, 'receipt_id'))}/refunds"
        body = payloads.encode({
            "refund_id": payloads.reference(refund_id, "refund_id"),
            "amount_minor": payloads.whole(amount_minor, "amount_minor", minimum=1,
                                           maximum=payloads.MAX_AMOUNT_MINOR),
        })
        return self._queueable("purchase_refund", path, body, refund_id, idempotency_key, PurchaseRefund.from_json,
                               deadline_at_s=self._deadline_at_s())

    # Behaviour events: reported live, signed and retried under one idempotency key.

    def report_event(self, *, event_id: str, event_type: str, card_number: str | None = None,
                     member_number: str | None = None, occurred_at: datetime | None = None,
                     amount_minor: int | None = None, currency: str | None = None,
                     referred_member: str | None = None, idempotency_key: str | None = None) -> Event:
        """Report a behaviour event (sign_in, referral, survey, self_service, recharge, bill_payment) once.

        The member is named by ``card_number`` or ``member_number``; a recharge or bill
        payment carries ``amount_minor`` and ``currency``; a referral names the
        ``referred_member`` (awarded later, once that member's first purchase lands). The
        event id is the event's natural key: reporting it again answers the event as the
        hub holds it (``already_reported``), never counting it twice; the same id with
        other content raises ``ConflictError`` (``event_already_reported``).
        """
        body = payloads.encode(payloads.event(
            event_id=event_id, event_type=event_type, occurred_at=occurred_at or self._clock(),
            card_number=card_number, member_number=member_number, amount_minor=amount_minor, currency=currency,
            referred_member=referred_member))
        reply = self._send(_Operation("POST", f"{PREFIX}/events", body, _new_key(idempotency_key)))
        reported = _parse_reply(reply, Event.from_json)
        return dataclasses.replace(reported, already_reported=True) if reply[0] == 200 else reported

    def get_purchase(self, receipt_id: str) -> Purchase:
        """One of this partner's purchases, by receipt id."""
        path = f"{PREFIX}/purchases/{_segment(payloads.reference(receipt_id, 'receipt_id'))}"
        return self._live(_Operation("GET", path, None, None), Purchase.from_json)

    # Redemptions and balances: the member is at the till, so never queued.

    def authorize_redemption(self, *, reference: str, points: int, card_number: str | None = None,
                             pin: str | None = None, redemption_code: str | None = None,
                             ttl_s: int | None = None, terminal: str | None = None,
                             idempotency_key: str | None = None, coupon_code: str | None = None) -> Redemption:
        """Verify the member (card + PIN, or a redemption code) and hold points for a redemption.

        ``coupon_code``: an amount_off coupon the held points pay for (``points`` must be
        exactly its points cost); one that may not be used raises ``InvalidRequestError``
        with the code ``coupon_invalid`` and nothing is held.
        """
        payload: dict[str, Any] = {
            "reference": payloads.reference(reference, "reference"),
            "points": payloads.whole(points, "points", minimum=1, maximum=payloads.MAX_POINTS),
            **payloads.member_proof(card_number, pin, redemption_code),
        }
        if ttl_s is not None:
            payload["ttl_s"] = payloads.whole(ttl_s, "ttl_s", minimum=payloads.MIN_HOLD_TTL_S,
                                              maximum=payloads.MAX_HOLD_TTL_S)
        if terminal is not None:
            payload["terminal"] = payloads.text(terminal, "terminal", payloads.TERMINAL_PATTERN, "a terminal code")
        if coupon_code is not None:
            payload["coupon_code"] = payloads.coupon_code(coupon_code)
        return self._member_present(f"{PREFIX}/redemptions", payload, idempotency_key, Redemption.from_json)

    def capture_redemption(self, reference: str, *, points: int, idempotency_key: str | None = None) -> Redemption:
        """Spend some or all of the held points, once; the rest go back to the member."""
        payload = {"points": payloads.whole(points, "points", minimum=1, maximum=payloads.MAX_POINTS)}
        return self._member_present(self._redemption_path(reference, "capture"), payload, idempotency_key,
                                    Redemption.from_json)

    def void_redemption(self, reference: str, *, idempotency_key: str | None = None) -> Redemption:
        """Release every held point of an authorized redemption."""
        return self._member_present(self._redemption_path(reference, "void"), {}, idempotency_key,
                                    Redemption.from_json)

    def refund_redemption(self, reference: str, *, refund_id: str, points: int,
                          idempotency_key: str | None = None) -> Redemption:
        """Give back some points of a captured redemption."""
        payload = {"refund_id": payloads.reference(refund_id, "refund_id"),
                   "points": payloads.whole(points, "points", minimum=1, maximum=payloads.MAX_POINTS)}
        return self._member_present(self._redemption_path(reference, "refunds"), payload, idempotency_key,
                                    Redemption.from_json)

    def get_redemption(self, reference: str) -> Redemption:
        """One of this partner's redemptions, by reference."""
        return self._live(_Operation("GET", self._redemption_path(reference), None, None), Redemption.from_json)

    def get_balance(self, *, card_number: str, pin: str, idempotency_key: str | None = None) -> Balance:
        """The balance of a member verified by card and PIN."""
        payload = payloads.member_proof(card_number, pin, None)
        return self._member_present(f"{PREFIX}/balance-inquiries", payload, idempotency_key, Balance.from_json)

    # Rewards: a member orders at the desk (never queued); a supplier fulfils its orders.

    def list_rewards(self) -> list[Reward]:
        """The rewards a member can order now: listed, valid now and not sold out."""
        return self._live(_Operation("GET", f"{PREFIX}/rewards", None, None), rewards_from_json)

    def order_reward(self, reference: str, reward: str, items: int, card_number: str, pin: str | None = None,
                     redemption_code: str | None = None, *, idempotency_key: str | None = None) -> RewardOrder:
        """Order ``items`` of a reward for the member present: the card with its PIN, or with a one-time code.

        The points are held at the supplier until it fulfils; a voucher is fulfilled at
        once and its codes are in ``voucher_codes`` (shown this once). A reference ordered
        before answers the order as stored (``already_ordered``), without codes.
        """
        payload = payloads.reward_order(order_reference=reference, reward=reward, items=items,
                                        card_number=card_number, pin=pin, redemption_code=redemption_code)
        operation = _Operation("POST", f"{PREFIX}/reward-orders", payloads.encode(payload), _new_key(idempotency_key))
        try:
            reply = self._send(operation)
        except HubUnreachable as error:
            raise HubUnreachable(error.detail + MEMBER_PRESENT_HINT, retry_safe=True) from error
        placed = _parse_reply(reply, RewardOrder.from_json)
        return dataclasses.replace(placed, already_ordered=True) if reply[0] == 200 else placed

    def reward_orders(self, status: str | None = None, limit: int = 50, offset: int = 0) -> list[RewardOrder]:
        """The orders this partner supplies, newest first; ``status="placed"`` is what it must fulfil."""
        query: dict[str, object] = {
            "limit": payloads.whole(limit, "limit", minimum=1, maximum=payloads.MAX_REWARD_ORDER_PAGE),
            "offset": payloads.whole(offset, "offset", minimum=0, maximum=10**9)}
        if status is not None:
            if status not in payloads.REWARD_ORDER_STATUSES:
                raise payloads.refuse("status", f"one of {', '.join(payloads.REWARD_ORDER_STATUSES)}")
            query = {"status": status, **query}
        path = f"{PREFIX}/reward-orders?" + "&".join(f"{name}={value}" for name, value in query.items())
        return self._live(_Operation("GET", path, None, None), reward_orders_from_json)

    def get_reward_order(self, channel: str, reference: str) -> RewardOrder:
        """One order this partner supplies, by the channel that placed it and its reference."""
        return self._live(_Operation("GET", self._reward_order_path(channel, reference), None, None),
                          RewardOrder.from_json)

    def fulfil_reward_order(self, channel: str, reference: str, note: str | None = None, *,
                            idempotency_key: str | None = None) -> RewardOrder:
        """This supplier fulfilled the order (``note``: a parcel number, the bill credited); its points are spent."""
        return self._supplier_action(channel, reference, "fulfilment", payloads.fulfilment(note), idempotency_key)

    def fail_reward_order(self, channel: str, reference: str, reason: str, *,
                          idempotency_key: str | None = None) -> RewardOrder:
        """This supplier cannot fulfil a placed order: its points go back to the member."""
        return self._supplier_action(channel, reference, "failure", {"reason": payloads.reason(reason)},
                                     idempotency_key)

    def return_reward_order(self, channel: str, reference: str, reason: str, *,
                            idempotency_key: str | None = None) -> RewardOrder:
        """A fulfilled order came back within its return window: every point goes back to the member."""
        return self._supplier_action(channel, reference, "return", {"reason": payloads.reason(reason)},
                                     idempotency_key)

    # Webhooks: this partner's endpoints, their delivery logs and redelivery (never queued).

    def register_webhook_endpoint(self, url: str, event_types: Sequence[str], description: str | None = None, *,
                                  idempotency_key: str | None = None) -> WebhookEndpoint:
        """Register an https endpoint receiving events of ``event_types`` from now on (at most 10 per partner)."""
        payload = payloads.webhook_endpoint(url=url, event_types=event_types, description=description)
        operation = _Operation("POST", f"{PREFIX}/webhook-endpoints", payloads.encode(payload),
                               _new_key(idempotency_key))
        return self._live(operation, WebhookEndpoint.from_json)

    def webhook_endpoints(self) -> list[WebhookEndpoint]:
        """This partner's endpoints, by id, with their status and since when they fail."""
        return self._live(_Operation("GET", f"{PREFIX}/webhook-endpoints", None, None), webhook_endpoints_from_json)

    def change_webhook_endpoint(self, endpoint_id: int, *, url: str | None = None,
                                event_types: Sequence[str] | None = None, description: str | None = None,
                                idempotency_key: str | None = None) -> WebhookEndpoint:
        """Change an endpoint's URL, event types or description (at least one)."""
        payload = payloads.webhook_endpoint_change(url=url, event_types=event_types, description=description)
        operation = _Operation("PATCH", self._webhook_endpoint_path(endpoint_id), payloads.encode(payload),
                               _new_key(idempotency_key))
        return self._live(operation, WebhookEndpoint.from_json)

    def disable_webhook_endpoint(self, endpoint_id: int, reason: str, *,
                                 idempotency_key: str | None = None) -> WebhookEndpoint:
        """Stop deliveries to an endpoint (its pending ones are cancelled; they can be redelivered later)."""
        operation = _Operation("POST", self._webhook_endpoint_path(endpoint_id, "disabling"),
                               payloads.encode({"reason": payloads.reason(reason)}), _new_key(idempotency_key))
        return self._live(operation, WebhookEndpoint.from_json)

    def enable_webhook_endpoint(self, endpoint_id: int, *, idempotency_key: str | None = None) -> WebhookEndpoint:
        """Deliver to a disabled endpoint again, from new events on (earlier ones by ``redeliver_webhook_event``)."""
        operation = _Operation("POST", self._webhook_endpoint_path(endpoint_id, "enabling"), payloads.encode({}),
                               _new_key(idempotency_key))
        return self._live(operation, WebhookEndpoint.from_json)

    def webhook_deliveries(self, endpoint_id: int, limit: int = 50, offset: int = 0) -> list[WebhookDelivery]:
        """An endpoint's delivery log, newest first, each delivery with its attempts."""
        query = (f"limit={payloads.whole(limit, 'limit', minimum=1, maximum=payloads.MAX_WEBHOOK_PAGE)}"
                 f"&offset={payloads.whole(offset, 'offset', minimum=0, maximum=10**9)}")
        path = f"{self._webhook_endpoint_path(endpoint_id, 'deliveries')}?{query}"
        return self._live(_Operation("GET", path, None, None), webhook_deliveries_from_json)

    def redeliver_webhook_event(self, event_id: str, endpoint_id: int | None = None, *,
                                idempotency_key: str | None = None) -> int:
        """Send one of this partner's events again to its active endpoints (or ``endpoint_id`` only); how many."""
        payload: dict[str, Any] = {}
        if endpoint_id is not None:
            payload["endpoint_id"] = payloads.whole(endpoint_id, "endpoint_id", minimum=1, maximum=2**63 - 1)
        path = f"{PREFIX}/webhook-events/{payloads.webhook_event_id(event_id)}/redelivery"
        operation = _Operation("POST", path, payloads.encode(payload), _new_key(idempotency_key))
        return self._live(operation, redeliveries_from_json)

    # Statements and reconciliation (settlement).

    def list_statements(self) -> list[StatementSummary]:
        """All of this partner's signed statements, oldest cycle first (fetched a page of 200 at a time)."""
        statements: list[StatementSummary] = []
        page = 1
        while True:
            document = self._live(
                _Operation("GET", f"{PREFIX}/statements?page={page}&page_size={STATEMENT_PAGE_SIZE}", None, None),
                lambda reply: reply)
            statements += [StatementSummary.from_json(item) for item in document["statements"]]
            # A hub that does not page answers everything at once, without a total.
            if not document["statements"] or len(statements) >= document.get("total", len(statements)):
                return statements
            page += 1

    def get_statement(self, statement_id: int, *, format: str = "json") -> bytes:
        """The exact signed bytes of a statement: format json, csv, json-signature or csv-signature."""
        if format not in STATEMENT_FORMATS:
            raise ValueError(f"format must be one of {', '.join(STATEMENT_FORMATS)}")
        statement = payloads.whole(statement_id, 'statement_id', minimum=1, maximum=2**63 - 1)
        path = f"{PREFIX}/statements/{statement}?format={format}"
        status, headers, body = self._send(_Operation("GET", path, None, None))
        if not 200 <= status < 300:
            raise error_from_reply(status, headers, _problem(body))
        return body

    def upload_reconciliation(self, statement_id: int, document: bytes, *,
                              idempotency_key: str | None = None) -> dict[str, Any]:
        """Send this partner's own CSV of a statement's cycle; returns the hub's reconciliation report."""
        statement = payloads.whole(statement_id, 'statement_id', minimum=1, maximum=2**63 - 1)
        path = f"{PREFIX}/statements/{statement}/reconciliations"
        operation = _Operation("POST", path, bytes(document), _new_key(idempotency_key), content_type="text/csv")
        return self._live(operation, lambda report: report)

    # Webhooks.

    def webhook_keys(self) -> dict[str, Ed25519PublicKey]:
        """The hub's published webhook keys by key id (the active one, and any kept for a rotation's overlap),
        to pass to ``verify_webhook``."""
        return self._live(_Operation("GET", f"{PREFIX}/webhook-keys", None, None), load_webhook_keys)

    # The offline queue.

    def flush(self, *, limit: int = MAX_FLUSH_OPERATIONS) -> FlushReport:
        """Send queued operations in order until the queue is empty or the hub stops answering."""
        return self._flush(limit=min(limit, MAX_FLUSH_OPERATIONS), before_id=None, deadline_at_s=None)

    def start_drainer(self, *, interval_s: float = 5.0, max_interval_s: float = 300.0) -> Drainer:
        """Start a background thread that flushes the queue every ``interval_s`` (backing off while offline)."""
        drainer = Drainer(self, interval_s=interval_s, max_interval_s=max_interval_s)
        drainer.start()
        return drainer

    def close(self) -> None:
        """Close the offline queue if this client opened it."""
        if self._owns_queue and self.queue is not None:
            self.queue.close()

    def __enter__(self) -> "AllianceClient":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # Sending.

    def _redemption_path(self, reference: str, action: str | None = None) -> str:
        path = f"{PREFIX}/redemptions/{_segment(payloads.reference(reference, 'reference'))}"
        return f"{path}/{action}" if action else path

    def _reward_order_path(self, channel: str, reference: str, action: str | None = None) -> str:
        channel = payloads.text(channel, "channel", payloads.CHANNEL_PATTERN, "a partner code, or back-office")
        path = f"{PREFIX}/reward-orders/{channel}/{_segment(payloads.order_reference(reference))}"
        return f"{path}/{action}" if action else path

    def _webhook_endpoint_path(self, endpoint_id: int, action: str | None = None) -> str:
        path = f"{PREFIX}/webhook-endpoints/{payloads.whole(endpoint_id, 'endpoint_id', minimum=1, maximum=2**63 - 1)}"
        return f"{path}/{action}" if action else path

    def _supplier_action(self, channel: str, reference: str, action: str, payload: dict[str, Any],
                         idempotency_key: str | None) -> RewardOrder:
        operation = _Operation("POST", self._reward_order_path(channel, reference, action), payloads.encode(payload),
                               _new_key(idempotency_key))
        return self._live(operation, RewardOrder.from_json)

    def _deadline_at_s(self) -> float:
        """When a call starting now must be over, on the retry loop's clock."""
        return self._pacing.monotonic() + self._policy.deadline_s

    def _send(self, operation: _Operation, *, deadline_at_s: float | None = None) -> Reply:
        url = self.base_url + operation.path

        def attempt(time_left_s: float) -> Reply:
            # Signed inside the loop: every attempt carries a new nonce and created time.
            signed = self._signer.sign(operation.method, url, body=operation.body,
                                       idempotency_key=operation.idempotency_key,
                                       content_type=operation.content_type)
            return self._transport.send(operation.method, url, signed.headers, operation.body,
                                        min(self.timeout_s, time_left_s))

        return send_with_retries(attempt, policy=self._policy, pacing=self._pacing, deadline_at_s=deadline_at_s)

    def _live(self, operation: _Operation, parse: Callable[[Any], Result], *,
              deadline_at_s: float | None = None) -> Result:
        return _parse_reply(self._send(operation, deadline_at_s=deadline_at_s), parse)

    def _existing_purchase(self, receipt_id: str, deadline_at_s: float) -> Purchase | None:
        """The purchase the hub holds under this receipt id, or None if it cannot be had before the deadline."""
        path = f"{PREFIX}/purchases/{_segment(receipt_id)}"
        try:
            return self._live(_Operation("GET", path, None, None), Purchase.from_json, deadline_at_s=deadline_at_s)
        except AllianceError:
            # The refusal itself is what the caller must see; the purchase is a courtesy.
            return None

    def _member_present(self, path: str, payload: dict[str, Any], idempotency_key: str | None,
                        parse: Callable[[Any], Result]) -> Result:
        operation = _Operation("POST", path, payloads.encode(payload), _new_key(idempotency_key))
        try:
            return self._live(operation, parse)
        except HubUnreachable as error:
            raise HubUnreachable(error.detail + MEMBER_PRESENT_HINT, retry_safe=True) from error

    def _queueable(self, kind: str, path: str, body: bytes, reference: str, idempotency_key: str | None,
                   parse: Callable[[Any], Result], *, deadline_at_s: float) -> Result | Queued:
        key = _new_key(idempotency_key)
        operation = _Operation("POST", path, body, key)
        if self.queue is None:
            return self._live(operation, parse, deadline_at_s=deadline_at_s)
        # Older queued operations go first, and they share this call's deadline: a checkout
        # must not wait for a whole backlog to be delivered.
        with self._delivery_lock:
            # Written, and committed to disk, before the first attempt to send it.
            operation_id = self.queue.append(kind=kind, method="POST", path=path, body=body, idempotency_key=key,
                                             reference=reference)
            queued = Queued(operation_id=operation_id, kind=kind, reference=reference, idempotency_key=key,
                            reason="")
            if self.queue.has_pending_before(operation_id):
                self._flush(limit=MAX_INLINE_FLUSH_OPERATIONS, before_id=operation_id, deadline_at_s=deadline_at_s)
                if self.queue.has_pending_before(operation_id):
                    return _with_reason(queued, "older operations are still waiting for the hub")
            try:
                reply = self._send(operation, deadline_at_s=deadline_at_s)
            except HubUnreachable as error:
                self.queue.record_failed_attempt(operation_id, error.detail)
                return _with_reason(queued, error.detail)
            status, headers, reply_body = reply
            if not _is_definitive(status, reply_body):
                refusal = error_from_reply(status, headers, _problem(reply_body))
                self.queue.record_failed_attempt(operation_id, str(refusal))
                return _with_reason(queued, str(refusal))
            # A definitive reply, success or refusal, is the caller's to see; the queue is done with it.
            self.queue.remove(operation_id)
        return _parse_reply(reply, parse)

    def _flush(self, *, limit: int, before_id: int | None, deadline_at_s: float | None) -> FlushReport:
        """Deliver up to ``limit`` operations; each has its own deadline unless ``deadline_at_s`` is shared."""
        if self.queue is None:
            raise ConfigurationError("this client has no offline queue")
        delivered = dead_lettered = 0
        stopped_by = None
        for _ in range(limit):
            if deadline_at_s is not None and deadline_at_s - self._pacing.monotonic() < MIN_ATTEMPT_TIME_S:
                # The checkout's time is up; what is left waits for flush() or the drainer.
                stopped_by = "the call's deadline came before the hub took every older operation"
                break
            with self._delivery_lock:
                pending = self.queue.next_pending()
                if pending is None or (before_id is not None and pending.id >= before_id):
                    break
                outcome = self._deliver_pending(pending, deadline_at_s=deadline_at_s)
            if outcome == "delivered":
                delivered += 1
            elif outcome == "dead_lettered":
                dead_lettered += 1
            else:
                stopped_by = outcome
                break
        return FlushReport(delivered=delivered, dead_lettered=dead_lettered,
                           remaining=self.queue.pending_count(), stopped_by=stopped_by)

    def _deliver_pending(self, pending: PendingOperation, *, deadline_at_s: float | None) -> str:
        """Send one queued operation; returns "delivered", "dead_lettered" or why the flush must stop."""
        assert self.queue is not None
        operation = _Operation(pending.method, pending.path, pending.body, pending.idempotency_key)
        try:
            status, headers, body = self._send(operation, deadline_at_s=deadline_at_s)
        except HubUnreachable as error:
            self.queue.record_failed_attempt(pending.id, error.detail)
            return error.detail
        if 200 <= status < 300:
            if pending.kind == "purchase_batch":
                self.queue.settle_batch(pending, _rejected_batch_items(pending, body))
            else:
                self.queue.remove(pending.id)
            return "delivered"
        refusal = error_from_reply(status, headers, _problem(body))
        if status == 409 and refusal.code in ALREADY_DELIVERED_CODES.get(pending.kind, ()):
            # A lost reply, and the idempotency key since forgotten by the hub: the natural
            # key (receipt id, refund id) shows the operation did take effect.
            self.queue.remove(pending.id)
            return "delivered"
        if not _is_definitive(status, body) or status == 401:
            # A 401 is about this terminal (its clock, its key), not the operation: keep it.
            self.queue.record_failed_attempt(pending.id, str(refusal))
            return str(refusal)
        self.queue.move_to_dead_letters(pending.id, Refusal(refusal.http_status, refusal.code, refusal.detail,
                                                            refusal.request_id))
        return "dead_lettered"


def _is_definitive(status: int, body: bytes) -> bool:
    """Whether a reply settles an operation: a success, or a refusal that sending again cannot change.

    Anything else (a 5xx, 429, a key still in flight, or a redirect from a misconfigured
    proxy) leaves a queued operation where it is.
    """
    return 200 <= status < 300 or (400 <= status < 500 and not is_retryable_reply(status, body))


def _new_key(idempotency_key: str | None) -> str:
    return payloads.idempotency_key(idempotency_key) if idempotency_key is not None else str(uuid.uuid4())


def _segment(value: str) -> str:
    return quote(value, safe="")


def _with_reason(queued: Queued, reason: str) -> Queued:
    return Queued(operation_id=queued.operation_id, kind=queued.kind, reference=queued.reference,
                  idempotency_key=queued.idempotency_key, reason=reason)


def _json_or_none(body: bytes) -> Any:
    try:
        return json.loads(body) if body else None
    except (ValueError, UnicodeDecodeError):
        return None


def _problem(body: bytes) -> dict[str, Any] | None:
    document = _json_or_none(body)
    return document if isinstance(document, dict) else None


def _parse_reply(reply: Reply, parse: Callable[[Any], Result]) -> Result:
    status, headers, body = reply
    document = _json_or_none(body)
    if not 200 <= status < 300:
        raise error_from_reply(status, headers, _problem(body))
    if not isinstance(document, dict):
        raise UnexpectedReplyError(f"the hub answered {status} without a JSON object", http_status=status,
                                   request_id=headers.get("x-request-id"))
    return parse(document)


def _rejected_batch_items(pending: PendingOperation, reply_body: bytes) -> list[tuple[str, bytes, Refusal]]:
    """Items of a delivered batch the hub refused for good (a receipt already reported counts as delivered)."""
    try:
        result = BatchResult.from_json(json.loads(reply_body))
        items = json.loads(pending.body)["purchases"]
    except (AllianceError, ValueError, KeyError, TypeError):
        # The batch was accepted; an unreadable reply must not keep it queued forever.
        return []
    rejected = []
    for item in result.results:
        problem = item.problem
        if item.applied or problem is None or problem.code == "receipt_already_reported":
            continue
        body = payloads.encode(items[item.index]) if 0 <= item.index < len(items) else b"{}"
        rejected.append((item.receipt_id, body, Refusal(problem.status, problem.code, problem.detail,
                                                        problem.request_id)))
    return rejected
