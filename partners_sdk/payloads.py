"""Request bodies, checked against the wire contract before anything is queued or sent.

The checks mirror the limits the hub publishes (its docs/partner-api.md, the OpenAPI
document): an operation the hub would refuse for its form is refused here at once,
rather than waiting in the offline queue only to end as a dead letter.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Sequence

from partners_sdk.errors import InvalidRequestError

REFERENCE_PATTERN = re.compile(r"^[A-Za-z0-9._:-]{1,64}\Z")
CARD_NUMBER_PATTERN = re.compile(r"^[0-9]{16}\Z")
CURRENCY_PATTERN = re.compile(r"^[A-Z]{3}\Z")
TERMINAL_PATTERN = re.compile(r"^[a-z0-9][a-z0-9-]{1,39}\Z")
PIN_PATTERN = re.compile(r"^[0-9]{4,12}\Z")
REDEMPTION_CODE_PATTERN = re.compile(r"^[A-Za-z0-9]{6,32}\Z")
IDEMPOTENCY_KEY_PATTERN = re.compile(r"^[\x21-\x7e]{1,255}\Z")
MAX_AMOUNT_MINOR = 10**12
MAX_POINTS = 10**12
MAX_BATCH_ITEMS = 1000
MIN_HOLD_TTL_S = 30
MAX_HOLD_TTL_S = 7 * 24 * 3600


@dataclass(frozen=True)
class PurchaseReport:
    """One purchase as the till reports it (for a batch)."""

    receipt_id: str
    card_number: str
    amount_minor: int
    currency: str
    purchased_at: datetime
    terminal: str | None = None


def refuse(field: str, message: str) -> InvalidRequestError:
    """A local validation error for one field, shaped like the hub's own."""
    return InvalidRequestError(f"{field}: {message}", code="validation_failed", field_errors={field: [message]})


def text(value: Any, field: str, pattern: re.Pattern[str], description: str) -> str:
    """``value`` if it is text matching ``pattern``."""
    if not isinstance(value, str) or not pattern.match(value):
        raise refuse(field, f"must be {description}")
    return value


def whole(value: Any, field: str, *, minimum: int, maximum: int) -> int:
    """``value`` if it is an int (never a float or bool) within the limits."""
    if type(value) is not int:
        raise refuse(field, "must be a whole number (an int; points and money are never floats)")
    if not minimum <= value <= maximum:
        raise refuse(field, f"must be between {minimum} and {maximum}")
    return value


def aware_time(value: Any, field: str) -> str:
    """ISO 8601 text of a timezone-aware datetime."""
    if not isinstance(value, datetime) or value.tzinfo is None or value.utcoffset() is None:
        raise refuse(field, "must be a timezone-aware datetime")
    return value.isoformat()


def reference(value: Any, field: str) -> str:
    """A receipt id, refund id or redemption reference."""
    return text(value, field, REFERENCE_PATTERN, "1-64 letters, digits or . _ : -")


def idempotency_key(value: Any) -> str:
    """A caller-chosen idempotency key."""
    return text(value, "idempotency_key", IDEMPOTENCY_KEY_PATTERN, "1-255 visible ASCII characters")


def purchase(report: PurchaseReport, coupon: str | None = None) -> dict[str, Any]:
    """The body of one purchase report; ``coupon``: a coupon code presented with it (single reports only)."""
    payload: dict[str, Any] = {
        "receipt_id": reference(report.receipt_id, "receipt_id"),
        "card_number": text(report.card_number, "card_number", CARD_NUMBER_PATTERN, "16 digits"),
        "amount_minor": whole(report.amount_minor, "amount_minor", minimum=1, maximum=MAX_AMOUNT_MINOR),
        "currency": text(report.currency, "currency", CURRENCY_PATTERN, "a three-letter ISO 4217 code"),
        "purchased_at": aware_time(report.purchased_at, "purchased_at"),
    }
    if report.terminal is not None:
        payload["terminal"] = text(report.terminal, "terminal", TERMINAL_PATTERN, "a terminal code")
    if coupon is not None:
        payload["coupon_code"] = coupon_code(coupon)
    return payload


COUPON_CODE_PATTERN = re.compile(r"^[0-9A-Za-z -]{4,32}\Z")


def coupon_code(value: Any) -> str:
    """A coupon code as the member shows it (letters and digits; spaces and hyphens are ignored by the hub)."""
    return text(value, "coupon_code", COUPON_CODE_PATTERN, "a coupon code")


def batch(reports: list[PurchaseReport]) -> dict[str, Any]:
    """The body of a batch of purchase reports."""
    if not 1 <= len(reports) <= MAX_BATCH_ITEMS:
        raise refuse("purchases", f"a batch holds 1 to {MAX_BATCH_ITEMS} purchases")
    if not all(isinstance(report, PurchaseReport) for report in reports):
        raise refuse("purchases", "items must be PurchaseReport values")
    return {"purchases": [purchase(report) for report in reports]}


def member_proof(card_number: str | None, pin: str | None, redemption_code: str | None) -> dict[str, str]:
    """Card + PIN, or a redemption code alone: how the member proves presence."""
    if redemption_code is not None and card_number is None and pin is None:
        return {"redemption_code": text(redemption_code, "redemption_code", REDEMPTION_CODE_PATTERN,
                                        "a redemption code")}
    if redemption_code is None and card_number is not None and pin is not None:
        return {"card_number": text(card_number, "card_number", CARD_NUMBER_PATTERN, "16 digits"),
                "pin": text(pin, "pin", PIN_PATTERN, "4-12 digits")}
    raise refuse("pin", "give card_number with pin, or redemption_code alone")


def encode(payload: dict[str, Any]) -> bytes:
    """The exact bytes sent (and stored in the queue): compact, keys sorted, UTF-8."""
    return json.dumps(payload, separators=(",", ":"), sort_keys=True, ensure_ascii=False).encode("utf-8")


MEMBER_NUMBER_PATTERN = re.compile(r"^[0-9a-f]{16}\Z")
EVENT_TYPES = ("sign_in", "referral", "survey", "self_service", "recharge", "bill_payment")


def event(*, event_id: str, event_type: str, occurred_at: datetime, card_number: str | None,
          member_number: str | None, amount_minor: int | None, currency: str | None,
          referred_member: str | None) -> dict[str, Any]:
    """The body of one behaviour event report: the member by card or by member number."""
    if event_type not in EVENT_TYPES:
        raise refuse("event_type", f"one of {', '.join(EVENT_TYPES)}")
    if (card_number is None) == (member_number is None):
        raise refuse("card_number", "give card_number or member_number (one of them)")
    payload: dict[str, Any] = {"event_id": reference(event_id, "event_id"), "event_type": event_type,
                               "occurred_at": aware_time(occurred_at, "occurred_at")}
    if card_number is not None:
        payload["card_number"] = text(card_number, "card_number", CARD_NUMBER_PATTERN, "16 digits")
    if member_number is not None:
        payload["member_number"] = text(member_number, "member_number", MEMBER_NUMBER_PATTERN, "a member number")
    if amount_minor is not None:
        payload["amount_minor"] = whole(amount_minor, "amount_minor", minimum=1, maximum=MAX_AMOUNT_MINOR)
    if currency is not None:
        payload["currency"] = text(currency, "currency", CURRENCY_PATTERN, "a three-letter ISO 4217 code")
    if referred_member is not None:
        payload["referred_member"] = text(referred_member, "referred_member", MEMBER_NUMBER_PATTERN,
                                          "a member number")
    return payload


REWARD_CODE_PATTERN = re.compile(r"^[a-z0-9][a-z0-9-]{1,39}\Z")
CHANNEL_PATTERN = re.compile(r"^[a-z0-9][a-z0-9-]{1,39}\Z")
ORDER_REFERENCE_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,63}\Z")
MAX_REWARD_ITEMS = 100
REWARD_ORDER_STATUSES = ("placed", "fulfilled", "failed", "cancelled", "expired", "returned")
MAX_REWARD_ORDER_PAGE = 200


def reward_order(*, order_reference: str, reward: str, items: int, card_number: str, pin: str | None,
                 redemption_code: str | None) -> dict[str, Any]:
    """The body of a reward order: the card, with its PIN or a one-time redemption code of its member."""
    payload: dict[str, Any] = {
        "reference": reference(order_reference, "reference"),
        "reward": text(reward, "reward", REWARD_CODE_PATTERN, "a reward code"),
        "items": whole(items, "items", minimum=1, maximum=MAX_REWARD_ITEMS),
        "card_number": text(card_number, "card_number", CARD_NUMBER_PATTERN, "16 digits"),
    }
    if (pin is None) == (redemption_code is None):
        raise refuse("pin", "give the card's pin or a redemption_code (one of them)")
    if pin is not None:
        payload["pin"] = text(pin, "pin", PIN_PATTERN, "4-12 digits")
    else:
        payload["redemption_code"] = text(redemption_code, "redemption_code", REDEMPTION_CODE_PATTERN,
                                          "a redemption code")
    return payload


def order_reference(value: Any) -> str:
    """A reward order's reference as the hub keeps it (one placed in the back office may hold a slash)."""
    return text(value, "reference", ORDER_REFERENCE_PATTERN, "1-64 letters, digits or . _ : / -")


def reason(value: Any) -> str:
    """Why an order fails or comes back: 1-500 characters."""
    if not isinstance(value, str) or not 1 <= len(value) <= 500:
        raise refuse("reason", "must be 1-500 characters")
    return value


def fulfilment(note: str | None) -> dict[str, Any]:
    """The body of a fulfilment: an optional note of 1-200 characters."""
    if note is None:
        return {}
    if not isinstance(note, str) or not 1 <= len(note) <= 200:
        raise refuse("note", "must be 1-200 characters")
    return {"note": note}


# Webhooks: the events a partner's endpoints may receive (the hub's partner-audience types).
WEBHOOK_EVENT_TYPES = ("statement.closed", "statement.paid", "statement.overdue", "redemption.hold_expired",
                       "purchase.refunded", "key.expiring", "grade.published", "review_case.opened",
                       "reward_order.placed", "reward_order.cancelled")
WEBHOOK_EVENT_ID_PATTERN = re.compile(r"^evt_[a-z0-9]{26}\Z")
MAX_WEBHOOK_URL = 2_000
MAX_WEBHOOK_PAGE = 200


def webhook_url(value: Any) -> str:
    """An endpoint URL: https (the hub also refuses plain http other than to its own loopback)."""
    if not isinstance(value, str) or not 1 <= len(value) <= MAX_WEBHOOK_URL or \
            not value.startswith(("https://", "http://")):
        raise refuse("url", f"must be an absolute https URL of at most {MAX_WEBHOOK_URL} characters")
    return value


def webhook_event_types(value: Any) -> list[str]:
    """The event types an endpoint receives: a non-empty list of known partner event types."""
    if isinstance(value, str) or not isinstance(value, (list, tuple)) or not value:
        raise refuse("event_types", "must be a non-empty list of event types")
    unknown = [name for name in value if name not in WEBHOOK_EVENT_TYPES]
    if unknown:
        raise refuse("event_types", f"unknown event type(s) {', '.join(map(str, unknown))}; known: "
                                    f"{', '.join(WEBHOOK_EVENT_TYPES)}")
    return list(value)


def webhook_description(value: Any) -> str:
    """What an endpoint is for: 1-200 characters."""
    if not isinstance(value, str) or not 1 <= len(value) <= 200:
        raise refuse("description", "must be 1-200 characters")
    return value


def webhook_endpoint(*, url: str, event_types: Sequence[str], description: str | None) -> dict[str, Any]:
    """The body registering an endpoint."""
    payload: dict[str, Any] = {"url": webhook_url(url), "event_types": webhook_event_types(event_types)}
    if description is not None:
        payload["description"] = webhook_description(description)
    return payload


def webhook_endpoint_change(*, url: str | None, event_types: Sequence[str] | None,
                            description: str | None) -> dict[str, Any]:
    """The body changing an endpoint: at least one of its URL, event types and description."""
    payload: dict[str, Any] = {}
    if url is not None:
        payload["url"] = webhook_url(url)
    if event_types is not None:
        payload["event_types"] = webhook_event_types(event_types)
    if description is not None:
        payload["description"] = webhook_description(description)
    if not payload:
        raise refuse("url", "give url, event_types or description to change")
    return payload


def webhook_event_id(value: Any) -> str:
    """An event id as the hub writes it: evt_ and 26 lower-case letters and digits."""
    return text(value, "event_id", WEBHOOK_EVENT_ID_PATTERN, "evt_ and 26 lower-case letters and digits")
