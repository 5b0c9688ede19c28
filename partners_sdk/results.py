"""Typed values the client takes and returns, parsed strictly from the hub's JSON.

Points and amounts are ints; the multipliers in an earn breakdown are ``Decimal``
(the hub sends them as decimal strings so no precision is lost); times are aware
``datetime``s. Fields the hub adds later are ignored; a field this SDK needs that is
missing or of the wrong type raises ``UnexpectedReplyError``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Mapping

from partners_sdk.errors import UnexpectedReplyError


def _field(data: Mapping[str, Any], name: str) -> Any:
    if not isinstance(data, Mapping) or name not in data:
        raise UnexpectedReplyError(f"the hub's reply has no {name!r}")
    return data[name]


def _int(data: Mapping[str, Any], name: str) -> int:
    value = _field(data, name)
    if type(value) is not int:
        raise UnexpectedReplyError(f"{name!r} in the hub's reply is not a whole number")
    return value


def _str(data: Mapping[str, Any], name: str) -> str:
    value = _field(data, name)
    if not isinstance(value, str):
        raise UnexpectedReplyError(f"{name!r} in the hub's reply is not text")
    return value


def _optional_str(data: Mapping[str, Any], name: str) -> str | None:
    return None if data.get(name) is None else _str(data, name)


def _datetime(data: Mapping[str, Any], name: str) -> datetime:
    try:
        moment = datetime.fromisoformat(_str(data, name))
    except ValueError:
        raise UnexpectedReplyError(f"{name!r} in the hub's reply is not an ISO 8601 time") from None
    if moment.tzinfo is None:
        raise UnexpectedReplyError(f"{name!r} in the hub's reply has no UTC offset")
    return moment


def _optional_datetime(data: Mapping[str, Any], name: str) -> datetime | None:
    return None if data.get(name) is None else _datetime(data, name)


def _decimal(data: Mapping[str, Any], name: str) -> Decimal:
    try:
        return Decimal(_str(data, name))
    except InvalidOperation:
        raise UnexpectedReplyError(f"{name!r} in the hub's reply is not a decimal") from None


@dataclass(frozen=True)
class Points:
    """The points a purchase earned, and whether they are spendable yet."""

    total: int
    partner_funded: int
    hub_funded: int
    state: str
    pending_until: datetime | None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "Points":
        """Parse the ``points`` object of a purchase."""
        return cls(total=_int(data, "total"), partner_funded=_int(data, "partner_funded"),
                   hub_funded=_int(data, "hub_funded"), state=_str(data, "state"),
                   pending_until=_optional_datetime(data, "pending_until"))


@dataclass(frozen=True)
class CampaignPoints:
    """Extra points one campaign gave, and who pays for them."""

    campaign_id: int
    name: str
    funded_by: str
    points: int

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "CampaignPoints":
        """Parse one campaign line of a breakdown."""
        return cls(campaign_id=_int(data, "campaign_id"), name=_str(data, "name"),
                   funded_by=_str(data, "funded_by"), points=_int(data, "points"))


@dataclass(frozen=True)
class Breakdown:
    """How the hub computed a purchase's points: rate, ladder, tier, campaigns, caps."""

    amount_minor: int
    minor_units_per_unit: int
    base_points_per_unit: Decimal
    ladder_multiplier: Decimal
    tier: str
    tier_multiplier: Decimal
    rule_points: int
    campaigns: tuple[CampaignPoints, ...]
    points_before_caps: int
    capped_by: tuple[str, ...]
    partner_points: int
    hub_points: int
    points_total: int

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "Breakdown":
        """Parse the ``breakdown`` object of a purchase."""
        campaigns = _field(data, "campaigns")
        capped_by = _field(data, "capped_by")
        if not isinstance(campaigns, list) or not isinstance(capped_by, list):
            raise UnexpectedReplyError("campaigns and capped_by in a breakdown must be lists")
        return cls(
            amount_minor=_int(data, "amount_minor"), minor_units_per_unit=_int(data, "minor_units_per_unit"),
            base_points_per_unit=_decimal(data, "base_points_per_unit"),
            ladder_multiplier=_decimal(data, "ladder_multiplier"), tier=_str(data, "tier"),
            tier_multiplier=_decimal(data, "tier_multiplier"), rule_points=_int(data, "rule_points"),
            campaigns=tuple(CampaignPoints.from_json(line) for line in campaigns),
            points_before_caps=_int(data, "points_before_caps"), capped_by=tuple(str(cap) for cap in capped_by),
            partner_points=_int(data, "partner_points"), hub_points=_int(data, "hub_points"),
            points_total=_int(data, "points_total"),
        )


@dataclass(frozen=True)
class Purchase:
    """A reported purchase as the hub holds it, with the points it earned and how."""

    receipt_id: str
    card_number: str
    amount_minor: int
    currency: str
    purchased_at: datetime
    reported_at: datetime
    terminal: str | None
    points: Points
    breakdown: Breakdown
    refunded_amount_minor: int

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "Purchase":
        """Parse a purchase reply."""
        return cls(
            receipt_id=_str(data, "receipt_id"), card_number=_str(data, "card_number"),
            amount_minor=_int(data, "amount_minor"), currency=_str(data, "currency"),
            purchased_at=_datetime(data, "purchased_at"), reported_at=_datetime(data, "reported_at"),
            terminal=_optional_str(data, "terminal"), points=Points.from_json(_field(data, "points")),
            breakdown=Breakdown.from_json(_field(data, "breakdown")),
            refunded_amount_minor=_int(data, "refunded_amount_minor"),
        )


@dataclass(frozen=True)
class Problem:
    """Why the hub refused something (an item of a batch, say), as its problem+json said."""

    status: int
    code: str
    title: str
    detail: str
    request_id: str | None
    field_errors: dict[str, list[str]]

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "Problem":
        """Parse a problem+json document."""
        given_errors = data.get("errors")
        errors: Mapping[object, object] = given_errors if isinstance(given_errors, dict) else {}
        return cls(status=_int(data, "status"), code=_str(data, "code"), title=str(data.get("title") or ""),
                   detail=str(data.get("detail") or ""), request_id=_optional_str(data, "request_id"),
                   field_errors={str(name): [str(text) for text in texts] for name, texts in errors.items()
                                 if isinstance(texts, list)})


@dataclass(frozen=True)
class BatchItemResult:
    """One purchase of a batch: applied (with its purchase) or rejected (with the problem)."""

    index: int
    receipt_id: str
    status: str
    purchase: Purchase | None
    problem: Problem | None

    @property
    def applied(self) -> bool:
        """Whether the hub applied this item."""
        return self.status == "applied"

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "BatchItemResult":
        """Parse one item of a batch reply."""
        purchase, problem = data.get("purchase"), data.get("problem")
        return cls(index=_int(data, "index"), receipt_id=_str(data, "receipt_id"), status=_str(data, "status"),
                   purchase=Purchase.from_json(purchase) if purchase is not None else None,
                   problem=Problem.from_json(problem) if problem is not None else None)


@dataclass(frozen=True)
class BatchResult:
    """A batch reply: how many purchases were applied and rejected, and each one's result."""

    applied: int
    rejected: int
    results: tuple[BatchItemResult, ...]

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "BatchResult":
        """Parse a batch reply."""
        results = _field(data, "results")
        if not isinstance(results, list):
            raise UnexpectedReplyError("'results' in a batch reply must be a list")
        return cls(applied=_int(data, "applied"), rejected=_int(data, "rejected"),
                   results=tuple(BatchItemResult.from_json(item) for item in results))


@dataclass(frozen=True)
class PurchaseRefund:
    """A refund of a purchase and the points it took back."""

    refund_id: str
    amount_minor: int
    points_recovered: int
    points_unrecovered: int
    created_at: datetime
    purchase: Purchase

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "PurchaseRefund":
        """Parse a purchase refund reply."""
        return cls(refund_id=_str(data, "refund_id"), amount_minor=_int(data, "amount_minor"),
                   points_recovered=_int(data, "points_recovered"),
                   points_unrecovered=_int(data, "points_unrecovered"), created_at=_datetime(data, "created_at"),
                   purchase=Purchase.from_json(_field(data, "purchase")))


@dataclass(frozen=True)
class Redemption:
    """A redemption: authorized (a hold), captured, voided or expired."""

    reference: str
    status: str
    points_held: int
    points_captured: int
    points_refunded: int
    created_at: datetime
    expires_at: datetime
    closed_at: datetime | None
    terminal: str | None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "Redemption":
        """Parse a redemption reply."""
        return cls(reference=_str(data, "reference"), status=_str(data, "status"),
                   points_held=_int(data, "points_held"), points_captured=_int(data, "points_captured"),
                   points_refunded=_int(data, "points_refunded"), created_at=_datetime(data, "created_at"),
                   expires_at=_datetime(data, "expires_at"), closed_at=_optional_datetime(data, "closed_at"),
                   terminal=_optional_str(data, "terminal"))


@dataclass(frozen=True)
class Balance:
    """A verified member's points: available, pending (inside a return window) and held."""

    card_number: str
    tier: str
    points_available: int
    points_pending: int
    points_held: int

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "Balance":
        """Parse a balance inquiry reply."""
        return cls(card_number=_str(data, "card_number"), tier=_str(data, "tier"),
                   points_available=_int(data, "points_available"), points_pending=_int(data, "points_pending"),
                   points_held=_int(data, "points_held"))


@dataclass(frozen=True)
class Queued:
    """An operation the hub could not be reached for; it waits in the offline queue, in order."""

    operation_id: int
    kind: str
    reference: str
    idempotency_key: str
    reason: str


@dataclass(frozen=True)
class FlushReport:
    """What one pass over the offline queue did."""

    delivered: int
    dead_lettered: int
    remaining: int
    stopped_by: str | None

    @property
    def complete(self) -> bool:
        """Whether the queue is now empty."""
        return self.remaining == 0


def to_json_ready(value: Any) -> Any:
    """Plain JSON values from results: dataclasses as dicts, times as ISO 8601, decimals as strings."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {field.name: to_json_ready(getattr(value, field.name)) for field in dataclasses.fields(value)}
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, Mapping):
        return {str(key): to_json_ready(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json_ready(item) for item in value]
    return value


def _optional_int(data: Mapping[str, Any], name: str) -> int | None:
    return None if data.get(name) is None else _int(data, name)


@dataclass(frozen=True)
class EventAward:
    """One member's points for a behaviour event, and who issued (and pays for) them."""

    member_number: str
    side: str
    points: int
    streak_bonus_points: int
    funded_by: str
    awarded_at: datetime

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "EventAward":
        """Parse one award of an event reply."""
        return cls(member_number=_str(data, "member_number"), side=_str(data, "side"), points=_int(data, "points"),
                   streak_bonus_points=_int(data, "streak_bonus_points"), funded_by=_str(data, "funded_by"),
                   awarded_at=_datetime(data, "awarded_at"))


@dataclass(frozen=True)
class Event:
    """A reported behaviour event: awarded, not_awarded (with a reason) or pending (a referral)."""

    event_id: str
    event_type: str
    member_number: str
    status: str
    reason: str | None
    points_awarded: int
    streak_day: int | None
    occurred_at: datetime
    reported_at: datetime
    awards: tuple[EventAward, ...]
    # True when the hub answered an event id it already held (HTTP 200): nothing was counted twice.
    already_reported: bool = False

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "Event":
        """Parse an event reply."""
        awards = _field(data, "awards")
        if not isinstance(awards, list):
            raise UnexpectedReplyError("'awards' in the hub's reply is not a list")
        return cls(event_id=_str(data, "event_id"), event_type=_str(data, "event_type"),
                   member_number=_str(data, "member_number"), status=_str(data, "status"),
                   reason=_optional_str(data, "reason"), points_awarded=_int(data, "points_awarded"),
                   streak_day=_optional_int(data, "streak_day"), occurred_at=_datetime(data, "occurred_at"),
                   reported_at=_datetime(data, "reported_at"),
                   awards=tuple(EventAward.from_json(award) for award in awards))


def _list(data: Mapping[str, Any], name: str) -> list[Any]:
    value = _field(data, name)
    if not isinstance(value, list):
        raise UnexpectedReplyError(f"{name!r} in the hub's reply is not a list")
    return value


@dataclass(frozen=True)
class Reward:
    """A reward a member can order now, at its price in force."""

    code: str
    title: str
    description: str | None
    kind: str
    supplier: str
    points_price: int
    bill_credit_minor: int | None
    currency: str | None
    stock: int | None
    vouchers_left: int | None
    min_tier: str | None
    per_member_limit: int | None
    fulfilment_days: int
    return_days: int
    valid_until: datetime | None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "Reward":
        """Parse one reward of the catalog."""
        return cls(code=_str(data, "code"), title=_str(data, "title"), description=_optional_str(data, "description"),
                   kind=_str(data, "kind"), supplier=_str(data, "supplier"), points_price=_int(data, "points_price"),
                   bill_credit_minor=_optional_int(data, "bill_credit_minor"),
                   currency=_optional_str(data, "currency"), stock=_optional_int(data, "stock"),
                   vouchers_left=_optional_int(data, "vouchers_left"), min_tier=_optional_str(data, "min_tier"),
                   per_member_limit=_optional_int(data, "per_member_limit"),
                   fulfilment_days=_int(data, "fulfilment_days"), return_days=_int(data, "return_days"),
                   valid_until=_optional_datetime(data, "valid_until"))


@dataclass(frozen=True)
class RewardOrder:
    """A reward order: placed (points held at the supplier), fulfilled, failed, cancelled, expired or returned.

    ``voucher_codes`` are the codes to hand the member, in the reply that placed a voucher
    order only; ``already_ordered`` is True when the hub answered a reference ordered
    before (HTTP 200): the order as stored, nothing ordered twice and no codes.
    """

    channel: str
    reference: str
    member_number: str
    reward: str
    reward_kind: str
    supplier: str
    items: int
    points: int
    unit_price_minor: int | None
    amount_minor: int | None
    currency: str | None
    status: str
    placed_at: datetime
    fulfil_by: datetime
    fulfilled_at: datetime | None
    returnable_until: datetime | None
    closed_at: datetime | None
    fulfilment_note: str | None
    end_reason: str | None
    voucher_codes: tuple[str, ...] | None = None
    already_ordered: bool = False

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "RewardOrder":
        """Parse a reward order reply."""
        codes = None
        if data.get("voucher_codes") is not None:
            codes = tuple(_list(data, "voucher_codes"))
            if not all(isinstance(code, str) for code in codes):
                raise UnexpectedReplyError("'voucher_codes' in the hub's reply are not all text")
        return cls(channel=_str(data, "channel"), reference=_str(data, "reference"),
                   member_number=_str(data, "member_number"), reward=_str(data, "reward"),
                   reward_kind=_str(data, "reward_kind"), supplier=_str(data, "supplier"), items=_int(data, "items"),
                   points=_int(data, "points"), unit_price_minor=_optional_int(data, "unit_price_minor"),
                   amount_minor=_optional_int(data, "amount_minor"), currency=_optional_str(data, "currency"),
                   status=_str(data, "status"), placed_at=_datetime(data, "placed_at"),
                   fulfil_by=_datetime(data, "fulfil_by"), fulfilled_at=_optional_datetime(data, "fulfilled_at"),
                   returnable_until=_optional_datetime(data, "returnable_until"),
                   closed_at=_optional_datetime(data, "closed_at"),
                   fulfilment_note=_optional_str(data, "fulfilment_note"),
                   end_reason=_optional_str(data, "end_reason"), voucher_codes=codes)


def rewards_from_json(data: Mapping[str, Any]) -> list[Reward]:
    """Parse the catalog reply."""
    return [Reward.from_json(item) for item in _list(data, "rewards")]


def reward_orders_from_json(data: Mapping[str, Any]) -> list[RewardOrder]:
    """Parse a page of reward orders."""
    return [RewardOrder.from_json(item) for item in _list(data, "orders")]


@dataclass(frozen=True)
class WebhookEndpoint:
    """One of this partner's webhook endpoints: where events of its types are sent, and whether they arrive.

    ``failing_since`` is the first failed delivery since the last one delivered (None while
    they arrive); an endpoint failing for days, or answering ``410 Gone``, is disabled by
    the hub, with ``disabled_reason`` saying why.
    """

    id: int
    partner: str
    audience: str
    url: str
    event_types: tuple[str, ...]
    description: str | None
    status: str
    created_at: datetime
    disabled_at: datetime | None
    disabled_reason: str | None
    failing_since: datetime | None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "WebhookEndpoint":
        """Parse an endpoint reply."""
        types = tuple(_list(data, "event_types"))
        if not all(isinstance(name, str) for name in types):
            raise UnexpectedReplyError("'event_types' in the hub's reply are not all text")
        return cls(id=_int(data, "id"), partner=_str(data, "partner"), audience=_str(data, "audience"),
                   url=_str(data, "url"), event_types=types, description=_optional_str(data, "description"),
                   status=_str(data, "status"), created_at=_datetime(data, "created_at"),
                   disabled_at=_optional_datetime(data, "disabled_at"),
                   disabled_reason=_optional_str(data, "disabled_reason"),
                   failing_since=_optional_datetime(data, "failing_since"))


@dataclass(frozen=True)
class WebhookAttempt:
    """One try of a delivery: when, how long, the receiver's status code (None: no answer) and the outcome."""

    attempted_at: datetime
    duration_ms: int
    status_code: int | None
    outcome: str
    error: str | None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "WebhookAttempt":
        """Parse one attempt of the delivery log."""
        return cls(attempted_at=_datetime(data, "attempted_at"), duration_ms=_int(data, "duration_ms"),
                   status_code=_optional_int(data, "status_code"), outcome=_str(data, "outcome"),
                   error=_optional_str(data, "error"))


@dataclass(frozen=True)
class WebhookDelivery:
    """One event sent to one endpoint: pending, delivered, failed (given up) or cancelled, with its tries."""

    id: int
    event_id: str
    event_type: str
    event_created_at: datetime
    status: str
    attempts: int
    next_attempt_at: datetime | None
    delivered_at: datetime | None
    last_status_code: int | None
    last_error: str | None
    tries: tuple[WebhookAttempt, ...]

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "WebhookDelivery":
        """Parse one delivery of the delivery log."""
        return cls(id=_int(data, "id"), event_id=_str(data, "event_id"), event_type=_str(data, "event_type"),
                   event_created_at=_datetime(data, "event_created_at"), status=_str(data, "status"),
                   attempts=_int(data, "attempts"), next_attempt_at=_optional_datetime(data, "next_attempt_at"),
                   delivered_at=_optional_datetime(data, "delivered_at"),
                   last_status_code=_optional_int(data, "last_status_code"),
                   last_error=_optional_str(data, "last_error"),
                   tries=tuple(WebhookAttempt.from_json(item) for item in _list(data, "tries")))


def webhook_endpoints_from_json(data: Mapping[str, Any]) -> list[WebhookEndpoint]:
    """Parse the list of this partner's endpoints."""
    return [WebhookEndpoint.from_json(item) for item in _list(data, "endpoints")]


def webhook_deliveries_from_json(data: Mapping[str, Any]) -> list[WebhookDelivery]:
    """Parse a page of an endpoint's delivery log."""
    return [WebhookDelivery.from_json(item) for item in _list(data, "deliveries")]


def redeliveries_from_json(data: Mapping[str, Any]) -> int:
    """How many deliveries a redelivery made due again."""
    return _int(data, "deliveries")
