"""A point-of-sale load for the crash-safety scenario, with an independent tally of what was acknowledged.

Each till thread drives the real POS SDK for its own members at two partners: signed
purchase reports (earn), partial refunds of its own purchases, and redemptions
(authorize with card + PIN, then capture). Like a real till, it retries an operation
whose outcome is unknown (no reply, a 5xx, a key still in flight, a rate limit) with
the *same* idempotency key until the hub gives a definitive answer, and only then moves
on. What the hub acknowledged is written down here, never read back from the hub, so
the ledger can be checked against it afterwards.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from typing import Callable, TypeVar

from partners_sdk import AllianceClient, HttpClientTransport, RetryPolicy, TransportError
from partners_sdk.errors import AllianceError

# A real till gives up on a member at the counter long before this; the load keeps
# trying so that no outcome stays unknown (an unresolved one is reported as such).
RESOLVE_DEADLINE_S = 180.0
CLIENT_RETRY_PAUSE_S = 0.3
HOLD_TTL_S = 900
Result = TypeVar("Result")


class Unresolved(Exception):
    """An operation whose outcome was still unknown at the deadline."""


class CountingTransport:
    """The SDK's default transport, counting attempts and the ones that got no reply."""

    def __init__(self) -> None:
        self.inner = HttpClientTransport()
        self.attempts = 0
        self.no_reply = 0
        self.server_errors = 0
        self._lock = threading.Lock()

    def send(self, *arguments):  # type: ignore[no-untyped-def]
        with self._lock:
            self.attempts += 1
        try:
            reply = self.inner.send(*arguments)
        except (TransportError, OSError):
            with self._lock:
                self.no_reply += 1
            raise
        if reply[0] >= 500:
            with self._lock:
                self.server_errors += 1
        return reply


@dataclass(frozen=True)
class Till:
    """A partner's signing identity at the hub."""

    code: str
    key_id: str
    private_key: object


@dataclass(frozen=True)
class Customer:
    """A member this till serves, with the card and PIN they present."""

    member_id: int
    card_number: str
    pin: str


@dataclass
class Tally:
    """What the hub acknowledged to one till thread, and how the operations went."""

    # (partner, receipt) -> (member, points)
    purchases: dict[tuple[str, str], tuple[int, int]] = field(default_factory=dict)
    refunds: dict[tuple[str, str], int] = field(default_factory=dict)  # (partner, refund id) -> points recovered
    # (partner, ref) -> (member, captured)
    redemptions: dict[tuple[str, str], tuple[int, int]] = field(default_factory=dict)
    balance: Counter = field(default_factory=Counter)  # member id -> points the member should have
    sent: int = 0
    acknowledged: int = 0
    client_retries: int = 0
    unresolved: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)

    def absorb(self, other: Tally) -> None:
        """Add another thread's tally to this one: maps joined (members are disjoint), counts summed, lists joined."""
        for item in fields(self):
            mine, theirs = getattr(self, item.name), getattr(other, item.name)
            if isinstance(mine, dict):
                mine.update(theirs)
            elif isinstance(mine, list):
                mine.extend(theirs)
            else:
                setattr(self, item.name, mine + theirs)


class TillThread(threading.Thread):
    """One till: a random stream of earns, refunds and redemptions until ``stop`` is set."""

    def __init__(self, number: int, base_url: str, tills: list[Till], customers: list[Customer],
                 transport: CountingTransport, stop: threading.Event) -> None:
        super().__init__(name=f"till-{number}", daemon=True)
        policy = RetryPolicy(max_retries=6, initial_backoff_s=0.1, max_backoff_s=1.0, deadline_s=20)
        self.clients = {till.code: AllianceClient(base_url, till.key_id, till.private_key, timeout_s=15,
                                                  retry_policy=policy, transport=transport) for till in tills}
        self.customers = customers
        self.stop = stop
        self.tally = Tally()
        self.random = random.Random(number)
        self.number = number
        self.refundable: list[tuple[str, str, int]] = []

    def run(self) -> None:
        while not self.stop.is_set():
            code = self.random.choice(sorted(self.clients))
            customer = self.random.choice(self.customers)
            choice = self.random.random()
            try:
                if choice < 0.15 and self.refundable:
                    self.refund(code)
                elif choice < 0.5 and self.tally.balance[customer.member_id] >= 20:
                    self.redeem(code, customer)
                else:
                    self.earn(code, customer)
            except Unresolved as error:
                self.tally.unresolved.append(str(error))

    def resolve(self, what: str, call: Callable[[], Result]) -> Result:
        """Send until the outcome is known; every call reuses the operation's idempotency key."""
        deadline = time.monotonic() + RESOLVE_DEADLINE_S
        while True:
            try:
                return call()
            except AllianceError as error:
                if not error.retry_safe:
                    raise
                if time.monotonic() > deadline:
                    raise Unresolved(f"{what}: {error}") from error
                self.tally.client_retries += 1
                time.sleep(CLIENT_RETRY_PAUSE_S)

    def earn(self, code: str, customer: Customer) -> None:
        receipt_id = f"t{self.number}-{uuid.uuid4().hex[:12]}"
        amount_minor = self.random.randrange(500, 30_000)
        key = str(uuid.uuid4())
        # The checkout moment is fixed once: a resend with the same key must carry the same body,
        # and the SDK would otherwise stamp each call with its own clock.
        purchased_at = datetime.now(timezone.utc)
        self.tally.sent += 1
        try:
            purchase = self.resolve(f"purchase {receipt_id}", lambda: self.clients[code].report_purchase(
                receipt_id=receipt_id, card_number=customer.card_number, amount_minor=amount_minor, currency="EUR",
                purchased_at=purchased_at, idempotency_key=key))
        except AllianceError as error:
            self.tally.unexpected.append(f"purchase {receipt_id} refused: {error}")
            return
        self.tally.acknowledged += 1
        points = purchase.points.total
        self.tally.purchases[(code, receipt_id)] = (customer.member_id, points)
        self.tally.balance[customer.member_id] += points
        self.refundable.append((code, receipt_id, amount_minor))

    def refund(self, code: str) -> None:
        code, receipt_id, amount_minor = self.refundable.pop(self.random.randrange(len(self.refundable)))
        refund_id = f"rf-{uuid.uuid4().hex[:12]}"
        key = str(uuid.uuid4())
        self.tally.sent += 1
        try:
            refund = self.resolve(f"refund {refund_id}", lambda: self.clients[code].refund_purchase(
                receipt_id, refund_id=refund_id, amount_minor=max(1, amount_minor // 2), idempotency_key=key))
        except AllianceError as error:
            self.tally.unexpected.append(f"refund {refund_id} of {receipt_id} refused: {error}")
            return
        self.tally.acknowledged += 1
        member_id = self.tally.purchases[(code, receipt_id)][0]
        self.tally.refunds[(code, refund_id)] = refund.points_recovered
        self.tally.balance[member_id] -= refund.points_recovered

    def redeem(self, code: str, customer: Customer) -> None:
        reference = f"rd-{uuid.uuid4().hex[:12]}"
        points = self.random.randrange(10, min(self.tally.balance[customer.member_id], 400) + 1)
        client = self.clients[code]
        authorize_key, capture_key = str(uuid.uuid4()), str(uuid.uuid4())
        self.tally.sent += 1
        try:
            self.resolve(f"authorize {reference}", lambda: client.authorize_redemption(
                reference=reference, points=points, card_number=customer.card_number, pin=customer.pin,
                ttl_s=HOLD_TTL_S, idempotency_key=authorize_key))
        except AllianceError as error:
            # The tally knows the member's exact balance, so even insufficient_points is a discrepancy.
            self.tally.unexpected.append(f"authorize {reference} refused: {error}")
            return
        self.tally.acknowledged += 1
        captured_points = points if self.random.random() < 0.7 else self.random.randrange(1, points + 1)
        self.tally.sent += 1
        try:
            redemption = self.resolve(f"capture {reference}", lambda: client.capture_redemption(
                reference, points=captured_points, idempotency_key=capture_key))
        except AllianceError as error:
            self.tally.unexpected.append(f"capture {reference} refused: {error}")
            return
        self.tally.acknowledged += 1
        self.tally.redemptions[(code, reference)] = (customer.member_id, redemption.points_captured)
        self.tally.balance[customer.member_id] -= redemption.points_captured


# --- rewards: orders at a desk, fulfilled or failed by their supplier -----------------


@dataclass(frozen=True)
class RewardOffer:
    """A reward the desk may order: its code, its points per item, and the most items one order takes."""

    code: str
    points_price: int
    max_items: int


@dataclass(frozen=True)
class OrderOutcome:
    """An order the hub acknowledged, and how its supplier ended it (``placed`` until then)."""

    member_id: int
    reward: str
    items: int
    points: int
    status: str


@dataclass
class RewardTally(Tally):
    """A till's tally plus the reward orders the hub acknowledged: (channel, reference) -> outcome."""

    orders: dict[tuple[str, str], OrderOutcome] = field(default_factory=dict)


class RewardDeskThread(TillThread):
    """A member earns at ``earn_at`` until they can afford a reward, then orders it at ``desk``, then
    ``supplier`` fulfils the order or fails it (a seeded choice), until ``stop`` is set.

    Every call is resolved with its own idempotency key, reused on each resend, like
    ``TillThread``'s; what the hub acknowledged is written to a ``RewardTally``.
    """

    def __init__(self, number: int, base_url: str, tills: list[Till], customers: list[Customer],
                 transport: CountingTransport, stop: threading.Event, *, earn_at: str, desk: str, supplier: str,
                 offers: list[RewardOffer], fulfil_share: float) -> None:
        super().__init__(number, base_url, tills, customers, transport, stop)
        self.name = f"desk-{number}"
        self.tally: RewardTally = RewardTally()
        self.earn_at, self.desk, self.supplier = earn_at, desk, supplier
        self.offers = offers
        self.fulfil_share = fulfil_share
        self.cheapest = min(offer.points_price for offer in offers)

    def run(self) -> None:
        while not self.stop.is_set():
            customer = self.random.choice(self.customers)
            try:
                if self.tally.balance[customer.member_id] < 4 * self.cheapest or self.random.random() < 0.2:
                    self.earn(self.earn_at, customer)
                else:
                    self.order_and_settle(customer)
            except Unresolved as error:
                self.tally.unresolved.append(str(error))

    def order_and_settle(self, customer: Customer) -> None:
        balance = self.tally.balance[customer.member_id]
        offer = self.random.choice([offer for offer in self.offers if offer.points_price <= balance])
        items = self.random.randint(1, min(offer.max_items, balance // offer.points_price))
        fulfil = self.random.random() < self.fulfil_share
        reference = f"o{self.number}-{uuid.uuid4().hex[:12]}"
        order_key, settle_key = str(uuid.uuid4()), str(uuid.uuid4())
        desk = self.clients[self.desk]
        self.tally.sent += 1
        try:
            placed = self.resolve(f"order {reference}", lambda: desk.order_reward(
                reference, offer.code, items, customer.card_number, pin=customer.pin, idempotency_key=order_key))
        except AllianceError as error:
            # The tally knows the member's exact balance and the stock is ample: any refusal is a discrepancy.
            self.tally.unexpected.append(f"order {reference} refused: {error}")
            return
        self.tally.acknowledged += 1
        key = (self.desk, reference)
        if (placed.status, placed.items, placed.points) != ("placed", items, items * offer.points_price):
            self.tally.unexpected.append(f"order {reference}: the hub answered {placed.status} {placed.items} items "
                                         f"{placed.points} points, ordered {items} at {offer.points_price}")
        self.tally.orders[key] = OrderOutcome(customer.member_id, offer.code, items, placed.points, "placed")
        self.tally.balance[customer.member_id] -= placed.points
        supplier = self.clients[self.supplier]
        wanted = "fulfilled" if fulfil else "failed"
        self.tally.sent += 1
        try:
            if fulfil:
                ended = self.resolve(f"fulfil {reference}", lambda: supplier.fulfil_reward_order(
                    self.desk, reference, note=f"parcel {reference}", idempotency_key=settle_key))
            else:
                ended = self.resolve(f"fail {reference}", lambda: supplier.fail_reward_order(
                    self.desk, reference, "out of this colour", idempotency_key=settle_key))
        except AllianceError as error:
            self.tally.unexpected.append(f"{wanted} of order {reference} refused: {error}")
            return
        self.tally.acknowledged += 1
        if ended.status != wanted:
            self.tally.unexpected.append(f"order {reference}: the hub answered {ended.status}, asked {wanted}")
            return
        self.tally.orders[key] = OrderOutcome(customer.member_id, offer.code, items, placed.points, wanted)
        if not fulfil:
            self.tally.balance[customer.member_id] += placed.points
