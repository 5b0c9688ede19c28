"""Webhooks as plain rules: the event types, the retry schedule, ``Retry-After`` and endpoint URLs.

An event is written to an outbox in the transaction of the change that caused it and
delivered at least once to each endpoint subscribed to its type. A failed delivery is
tried again on an exponential schedule with jitter, for at most ``RETRY_PERIOD`` after
the event was created; an endpoint that has answered nothing but failures for
``DISABLE_AFTER`` is disabled, and one that answers ``410 Gone`` is disabled at once.
"""

from __future__ import annotations

import ipaddress
import random
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from email.utils import parsedate_to_datetime
from enum import StrEnum
from types import MappingProxyType
from typing import Mapping
from urllib.parse import urlsplit

from alliance.domain.errors import ValidationFailed


class Audience(StrEnum):
    """Who receives an event: the partner it is about, or the operator's member-messaging endpoint."""

    PARTNER = "partner"
    MEMBER = "member"


@dataclass(frozen=True, slots=True)
class EventType:
    """One kind of event, what it means and who receives it."""

    name: str
    audience: Audience
    description: str


_TYPES = (
    EventType("statement.closed", Audience.PARTNER, "a settlement cycle of the partner closed; its signed "
              "statement is ready"),
    EventType("statement.paid", Audience.PARTNER, "finance recorded a payment that settled one of the partner's "
              "statements in full"),
    EventType("statement.overdue", Audience.PARTNER, "one of the partner's statements is unpaid past its due date"),
    EventType("redemption.hold_expired", Audience.PARTNER, "a redemption the partner authorized was neither "
              "captured nor voided in time; its points went back to the member"),
    EventType("purchase.refunded", Audience.PARTNER, "a purchase reported by the partner was refunded"),
    EventType("key.expiring", Audience.PARTNER, "one of the partner's signing keys expires within the notice "
              "period"),
    EventType("grade.published", Audience.PARTNER, "the partner's grade for a period was published"),
    EventType("review_case.opened", Audience.PARTNER, "the risk controls opened a review case about the "
              "partner's activity"),
    EventType("reward_order.placed", Audience.PARTNER, "a member ordered a reward the partner supplies; fulfil it "
              "or say it cannot be fulfilled"),
    EventType("reward_order.cancelled", Audience.PARTNER, "a member cancelled or returned an order of a reward "
              "the partner supplies"),
    EventType("member.points_expiring", Audience.MEMBER, "a member's points expire soon (the expiry reminder)"),
    EventType("member.tier_changed", Audience.MEMBER, "a member moved to another tier"),
    EventType("member.points_earned", Audience.MEMBER, "a member earned at least the notification threshold of "
              "points at once"),
    EventType("member.reward_shipped", Audience.MEMBER, "a reward the member ordered was fulfilled by its "
              "supplier"),
)
EVENT_TYPES: Mapping[str, EventType] = MappingProxyType({event.name: event for event in _TYPES})
PARTNER_EVENT_TYPES = tuple(event.name for event in _TYPES if event.audience is Audience.PARTNER)
MEMBER_EVENT_TYPES = tuple(event.name for event in _TYPES if event.audience is Audience.MEMBER)

# The retry schedule: 30 s after the first failure, doubling to at most 6 hours between
# tries, each delay drawn uniformly from its upper half (jitter), for 3 days from the
# event's creation; then the delivery is given up.
FIRST_RETRY = timedelta(seconds=30)
MAX_RETRY_DELAY = timedelta(hours=6)
RETRY_PERIOD = timedelta(days=3)
# An endpoint whose deliveries have failed without one success for this long is disabled.
DISABLE_AFTER = timedelta(days=3)
# A Retry-After beyond this is capped: the schedule still ends at RETRY_PERIOD.
MAX_RETRY_AFTER = timedelta(hours=6)
MAX_URL_LENGTH = 2_000
EVENT_ID_PATTERN = re.compile(r"^evt_[a-z0-9]{26}\Z")


def retry_delay(failed_attempts: int, *, rng: random.Random | None = None) -> timedelta:
    """How long to wait after the ``failed_attempts``-th failure: exponential, capped, with jitter."""
    if failed_attempts < 1:
        raise ValueError("a retry follows at least one failed attempt")
    ceiling: timedelta = min(MAX_RETRY_DELAY, FIRST_RETRY * 2 ** min(failed_attempts - 1, 20))
    half: timedelta = ceiling / 2
    fraction: float = (rng or random).random()
    return half + half * fraction


def next_attempt_at(*, failed_attempts: int, now: datetime, event_created_at: datetime,
                    retry_after: timedelta | None = None, rng: random.Random | None = None) -> datetime | None:
    """When to try again, or None when the retry period is over.

    A receiver's ``Retry-After`` is honoured when it asks for longer than the schedule
    (capped at ``MAX_RETRY_AFTER``); it never makes the hub try sooner.
    """
    delay = retry_delay(failed_attempts, rng=rng)
    if retry_after is not None:
        delay = max(delay, min(retry_after, MAX_RETRY_AFTER))
    when = now + delay
    if when > event_created_at + RETRY_PERIOD:
        return None
    return when


def parse_retry_after(value: str | None, *, now: datetime) -> timedelta | None:
    """RFC 9110 ``Retry-After``: delay seconds or an HTTP date; None when absent or unreadable."""
    if value is None:
        return None
    text = value.strip()
    if text.isdigit():
        return timedelta(seconds=min(int(text), int(MAX_RETRY_AFTER.total_seconds())))
    try:
        moment = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return max(moment - now, timedelta(0))


def check_endpoint_url(url: object) -> str:
    """An endpoint URL: https, or http to this machine's loopback (development and tests); no credentials."""
    if not isinstance(url, str) or not 0 < len(url) <= MAX_URL_LENGTH:
        raise ValidationFailed(f"url must be 1-{MAX_URL_LENGTH} characters", fields={"url": ["malformed"]})
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ValidationFailed("url must be an absolute https URL", fields={"url": ["not https"]})
    if parts.username or parts.password or parts.fragment:
        raise ValidationFailed("url must not carry credentials or a fragment", fields={"url": ["malformed"]})
    if parts.scheme == "http" and not _loopback(parts.hostname):
        raise ValidationFailed("url must use https (plain http only to this machine's loopback)",
                               fields={"url": ["not https"]})
    return url


def check_event_types(types: object, audience: Audience) -> tuple[str, ...]:
    """The subscribed event types, known and of the endpoint's audience, without repeats, sorted."""
    allowed = PARTNER_EVENT_TYPES if audience is Audience.PARTNER else MEMBER_EVENT_TYPES
    if not isinstance(types, (list, tuple)) or not types or not all(isinstance(name, str) for name in types):
        raise ValidationFailed("event_types must be a non-empty list of event type names",
                               fields={"event_types": ["malformed"]})
    unknown = sorted(set(types) - set(allowed))
    if unknown:
        raise ValidationFailed(f"unknown event type(s) for a {audience.value} endpoint: {', '.join(unknown)}; "
                               f"known: {', '.join(allowed)}", fields={"event_types": ["unknown"]})
    return tuple(sorted(set(types)))


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True, slots=True)
class DataField:
    """One field of an event's ``data``: its JSON type, its format (for text) and what it holds."""

    name: str
    type: str
    description: str
    format: str | None = None


def _text(name: str, description: str, form: str | None = None) -> DataField:
    return DataField(name, "string", description, form)


def _whole(name: str, description: str) -> DataField:
    return DataField(name, "integer", description)


_STATEMENT_ID = _whole("statement_id", "the statement's id (as in the partner API's statements)")
_CURRENCY = _text("currency", "ISO 4217 code of the amounts")
_MEMBER = _text("member_number", "the member's number")

# The ``data`` of each event type, as the emitters write it: amounts in integer minor units,
# points integers, moments ISO 8601 in UTC. The OpenAPI document's webhooks are built from it.
DATA_FIELDS: Mapping[str, tuple[DataField, ...]] = MappingProxyType({
    "statement.closed": (_STATEMENT_ID, _text("cycle_starts_at", "start of the cycle", "date-time"),
                         _text("cycle_ends_at", "end of the cycle (exclusive)", "date-time"),
                         _whole("net_minor", "the statement's net amount, minor units (negative: the hub owes)"),
                         _CURRENCY),
    "statement.paid": (_STATEMENT_ID, _text("paid_on", "the day the payment arrived", "date"),
                       _whole("amount_minor", "the payment, minor units"), _CURRENCY),
    "statement.overdue": (_STATEMENT_ID, _text("due_date", "the day payment was due", "date"),
                          _whole("outstanding_minor", "what is still unpaid, minor units"), _CURRENCY),
    "redemption.hold_expired": (_text("reference", "the redemption's reference"),
                                _whole("points", "the points released back to the member"),
                                _text("expired_at", "when the hold expired", "date-time")),
    "purchase.refunded": (_text("receipt_id", "the purchase's receipt id"), _text("refund_id", "the refund's id"),
                          _whole("points_clawed_back", "the points taken back from the member")),
    "key.expiring": (_text("key_id", "the signing key's id"),
                     _text("expires_at", "when the key stops being accepted", "date-time")),
    "grade.published": (_text("period", "the graded period, such as 2026-03"),
                        _text("grade", "the published grade, A to E")),
    "review_case.opened": (_whole("decision_id", "the risk decision that opened the case"),
                           _text("case", "what the case is about"),
                           _text("action", "what the risk controls did (flag, hold, block)")),
    "reward_order.placed": (_text("channel", "the partner code whose desk placed it, or back-office"),
                            _text("reference", "the order's reference within its channel"),
                            _text("reward", "the reward's code"), _whole("items", "how many items"),
                            _text("fulfil_by", "when the order must be fulfilled", "date-time")),
    "reward_order.cancelled": (_text("channel", "the partner code whose desk placed it, or back-office"),
                               _text("reference", "the order's reference within its channel"),
                               _text("reward", "the reward's code"),
                               _text("status", "cancelled or returned")),
    "member.points_expiring": (_MEMBER, _whole("points", "the points that expire"),
                               _text("expires_on", "the day they expire", "date")),
    "member.tier_changed": (_MEMBER, _text("from_tier", "the tier before"), _text("to_tier", "the tier now")),
    "member.points_earned": (_MEMBER, _whole("points", "the points earned"),
                             _text("partner", "the code of the partner where they were earned")),
    "member.reward_shipped": (_MEMBER, _text("reward", "the reward's code"),
                              _text("reference", "the order's reference")),
})
