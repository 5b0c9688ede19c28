"""Webhooks: partners' endpoints, the outbox, leasing due deliveries and recording each attempt.

**Endpoints.** A partner registers URLs and the event types each receives (the back
office for it, or the partner itself through the signed API). The operator's
member-messaging endpoint has the ``member`` audience and receives member messages.

**The outbox.** ``emit`` writes an event (a stable id ``evt_…``, its type, its moment and
its data) in the caller's transaction, with one delivery per active endpoint subscribed
to the type: if the change rolls back, so does the event, and a committed change always
has its event.

**Delivery.** The delivery process (``alliance.services.webhook_delivery``) leases due
deliveries (``lease_due``: ``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so several processes
on several hosts share the work without taking the same one), sends each signed, and
records the attempt (``record_attempt``): delivered on a 2xx, the endpoint disabled on
``410 Gone``, otherwise tried again on the schedule of ``alliance.domain.webhooks``
(honouring ``Retry-After``) until the retry period ends. A process killed mid-batch leaves
its leases to expire and the deliveries are sent again: at least once, never lost.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Mapping, Sequence

from sqlalchemy import func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from alliance.domain import webhooks as rules
from alliance.domain.errors import Conflict, InvalidState, NotFound, ValidationFailed
from alliance.models import Partner, WebhookAttempt, WebhookDelivery, WebhookEndpoint, WebhookEvent
from alliance.services import audit_log

EVENT_ID_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"
MAX_ENDPOINTS_PER_PARTNER = 10
MAX_ERROR_LENGTH = 300
GONE = 410


@dataclass(frozen=True, slots=True)
class EndpointView:
    """An endpoint as its partner and the back office see it."""

    id: int
    partner: str
    audience: str
    url: str
    event_types: tuple[str, ...]
    description: str | None
    status: str
    created_by: str
    created_at: datetime
    disabled_at: datetime | None
    disabled_reason: str | None
    failing_since: datetime | None


@dataclass(frozen=True, slots=True)
class DueDelivery:
    """A leased delivery: what to send, where, and how many tries came before."""

    delivery_id: int
    endpoint_id: int
    url: str
    event_id: str
    event_type: str
    event_created_at: datetime
    attempts: int
    body: bytes


@dataclass(frozen=True, slots=True)
class AttemptView:
    """One try of one delivery, for the delivery log."""

    attempted_at: datetime
    duration_ms: int
    status_code: int | None
    outcome: str
    error: str | None


@dataclass(frozen=True, slots=True)
class DeliveryView:
    """A delivery with its attempts, newest first in the log."""

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
    tries: tuple[AttemptView, ...]


# --- endpoints ---------------------------------------------------------------------


def register_endpoint(
    session: Session, *, partner: str, url: str, event_types: Sequence[str], actor: str, now: datetime,
    audience: str = rules.Audience.PARTNER.value, description: str | None = None,
) -> EndpointView:
    """Add an endpoint for a partner; it receives events of the chosen types from now on."""
    partner_row = _partner(session, partner)
    kind = _audience(audience)
    rules.check_endpoint_url(url)
    types = rules.check_event_types(list(event_types), kind)
    _check_description(description)
    count = session.scalar(select(func.count()).select_from(WebhookEndpoint)
                           .where(WebhookEndpoint.partner_id == partner_row.id)) or 0
    if count >= MAX_ENDPOINTS_PER_PARTNER:
        raise Conflict(f"partner {partner} already has {MAX_ENDPOINTS_PER_PARTNER} endpoints")
    try:
        with session.begin_nested():
            endpoint_id = session.execute(insert(WebhookEndpoint).values(
                partner_id=partner_row.id, audience=kind.value, url=url, event_types=",".join(types),
                description=description, status="active", created_by=actor, created_at=now,
            ).returning(WebhookEndpoint.id)).scalar_one()
    except IntegrityError as error:
        raise Conflict(f"partner {partner} already has an endpoint at {url}") from error
    audit_log.append(session, actor=actor, action="webhook.endpoint.register",
                     subject=f"webhook-endpoint:{endpoint_id}", now=now,
                     after={"partner": partner, "audience": kind.value, "url": url, "event_types": list(types)})
    return endpoint_view(session, endpoint_id)


def change_endpoint(
    session: Session, *, endpoint_id: int, actor: str, now: datetime, partner_id: int | None = None,
    url: str | None = None, event_types: Sequence[str] | None = None, description: str | None = None,
) -> EndpointView:
    """Change an endpoint's URL, event types or description; deliveries already made keep theirs."""
    endpoint = _lock_endpoint(session, endpoint_id, partner_id)
    values: dict[str, object] = {}
    if url is not None:
        values["url"] = rules.check_endpoint_url(url)
    if event_types is not None:
        values["event_types"] = ",".join(rules.check_event_types(list(event_types), rules.Audience(endpoint.audience)))
    if description is not None:
        _check_description(description)
        values["description"] = description
    if not values:
        raise ValidationFailed("nothing to change: give url, event_types or description", fields={"url": ["missing"]})
    before = {name: getattr(endpoint, name) for name in values}
    try:
        with session.begin_nested():
            session.execute(update(WebhookEndpoint).where(WebhookEndpoint.id == endpoint_id).values(**values))
    except IntegrityError as error:
        raise Conflict(f"the partner already has an endpoint at {url}") from error
    audit_log.append(session, actor=actor, action="webhook.endpoint.change", subject=f"webhook-endpoint:{endpoint_id}",
                     now=now, before=before, after=values)
    return endpoint_view(session, endpoint_id)


def disable_endpoint(session: Session, *, endpoint_id: int, reason: str, actor: str, now: datetime,
                     partner_id: int | None = None) -> EndpointView:
    """Stop delivering to an endpoint; its pending deliveries are cancelled (they can be redelivered later)."""
    reason = (reason or "").strip()
    if not 0 < len(reason) <= 500:
        raise ValidationFailed("a reason of 1-500 characters is required", fields={"reason": ["missing"]})
    endpoint = _lock_endpoint(session, endpoint_id, partner_id)
    if endpoint.status == "disabled":
        raise InvalidState(f"endpoint {endpoint_id} is already disabled")
    _disable(session, endpoint_id, reason=reason, now=now)
    audit_log.append(session, actor=actor, action="webhook.endpoint.disable", subject=f"webhook-endpoint:{endpoint_id}",
                     now=now, before={"status": "active"}, after={"status": "disabled", "reason": reason})
    return endpoint_view(session, endpoint_id)


def enable_endpoint(session: Session, *, endpoint_id: int, actor: str, now: datetime,
                    partner_id: int | None = None) -> EndpointView:
    """Deliver to a disabled endpoint again, from new events on (earlier ones by redelivery)."""
    endpoint = _lock_endpoint(session, endpoint_id, partner_id)
    if endpoint.status == "active":
        raise InvalidState(f"endpoint {endpoint_id} is already active")
    session.execute(update(WebhookEndpoint).where(WebhookEndpoint.id == endpoint_id).values(
        status="active", disabled_at=None, disabled_reason=None, failing_since=None))
    audit_log.append(session, actor=actor, action="webhook.endpoint.enable", subject=f"webhook-endpoint:{endpoint_id}",
                     now=now, before={"status": "disabled"}, after={"status": "active"})
    return endpoint_view(session, endpoint_id)


def endpoint_view(session: Session, endpoint_id: int, *, partner_id: int | None = None) -> EndpointView:
    """One endpoint; a partner sees only its own."""
    views = _endpoint_views(session, [WebhookEndpoint.id == endpoint_id])
    if not views or (partner_id is not None and _partner_id_of(session, views[0].partner) != partner_id):
        raise NotFound(f"no webhook endpoint {endpoint_id}")
    return views[0]


def endpoints(session: Session, *, partner: str | None = None, status: str | None = None) -> list[EndpointView]:
    """Endpoints by partner and id."""
    conditions = []
    if partner is not None:
        conditions.append(WebhookEndpoint.partner_id == _partner(session, partner).id)
    if status is not None:
        conditions.append(WebhookEndpoint.status == status)
    return _endpoint_views(session, conditions)


# --- the outbox --------------------------------------------------------------------


def emit(session: Session, *, event_type: str, data: Mapping[str, Any], now: datetime,
         partner_id: int | None = None, receivers: Sequence[int] | None = None) -> str | None:
    """Write an event and its deliveries in the caller's transaction; its id, or None when nobody subscribed.

    A partner event goes to the partner's active endpoints subscribed to its type; a
    member message to every active member-messaging endpoint subscribed to it. An event
    nobody receives is not kept. ``receivers`` may name those endpoints, read beforehand
    in the same transaction by ``partner_receivers`` for many events at once.
    """
    kind = _kind(event_type)
    if kind.audience is rules.Audience.PARTNER and partner_id is None:
        raise ValueError("a partner event names its partner")
    if receivers is None:
        found = _receivers(session, kind, event_type,
                           [partner_id] if kind.audience is rules.Audience.PARTNER and partner_id is not None else None)
        receivers = [endpoint_id for endpoints in found.values() for endpoint_id in endpoints]
    if not receivers:
        return None
    event_id = new_event_id()
    event_row = session.execute(insert(WebhookEvent).values(
        event_id=event_id, type=event_type, partner_id=partner_id, created_at=now,
        payload=json.dumps(data, sort_keys=True, separators=(",", ":"), default=str),
    ).returning(WebhookEvent.id)).scalar_one()
    session.execute(insert(WebhookDelivery), [
        {"event_id": event_row, "endpoint_id": endpoint_id, "status": "pending", "attempts": 0,
         "next_attempt_at": now} for endpoint_id in sorted(receivers)])
    return event_id


def partner_receivers(session: Session, *, event_type: str, partner_ids: Sequence[int]) -> dict[int, list[int]]:
    """Per partner, the endpoints a partner event of this type goes to (``emit``'s ``receivers``), in one read.

    A partner nobody subscribed for is absent.
    """
    kind = _kind(event_type)
    if kind.audience is not rules.Audience.PARTNER:
        raise ValueError(f"{event_type!r} is not a partner event")
    if not partner_ids:
        return {}
    # Only the partners asked for are found, so every key names one.
    found = _receivers(session, kind, event_type, partner_ids)
    return {partner_id: endpoints for partner_id, endpoints in found.items() if partner_id is not None}


def _kind(event_type: str) -> rules.EventType:
    kind = rules.EVENT_TYPES.get(event_type)
    if kind is None:
        raise ValueError(f"unknown event type {event_type!r}")
    return kind


def _receivers(session: Session, kind: rules.EventType, event_type: str,
               partner_ids: Sequence[int] | None) -> dict[int | None, list[int]]:
    """The active endpoints of the event's audience subscribed to its type, by partner (of ``partner_ids`` if given)."""
    query = select(WebhookEndpoint.partner_id, WebhookEndpoint.id, WebhookEndpoint.event_types).where(
        WebhookEndpoint.status == "active", WebhookEndpoint.audience == kind.audience.value)
    if partner_ids is not None:
        query = query.where(WebhookEndpoint.partner_id.in_(list(partner_ids)))
    found: dict[int | None, list[int]] = {}
    for partner_id, endpoint_id, types in session.execute(query):
        if event_type in types.split(","):
            found.setdefault(partner_id, []).append(endpoint_id)
    return found


def new_event_id() -> str:
    """``evt_`` and 26 random lower-case letters and digits (about 134 bits)."""
    return "evt_" + "".join(secrets.choice(EVENT_ID_ALPHABET) for _ in range(26))


def event_body(event_id: str, event_type: str, created_at: datetime, payload: str) -> bytes:
    """The delivered JSON: the event's id, type, creation time and data, in a fixed order."""
    created = created_at.isoformat().replace("+00:00", "Z")
    return (f'{{"id":{json.dumps(event_id)},"type":{json.dumps(event_type)},"created":{json.dumps(created)},'
            f'"data":{payload}}}').encode("utf-8")


# --- delivery ----------------------------------------------------------------------


def lease_due(session: Session, *, now: datetime, holder: str, limit: int, lease: timedelta) -> list[DueDelivery]:
    """Take up to ``limit`` due deliveries for ``holder`` until ``now + lease``; others skip them meanwhile."""
    rows = session.execute(
        select(WebhookDelivery.id)
        .where(WebhookDelivery.status == "pending", WebhookDelivery.next_attempt_at <= now,
               (WebhookDelivery.leased_until.is_(None)) | (WebhookDelivery.leased_until <= now))
        .order_by(WebhookDelivery.next_attempt_at, WebhookDelivery.id)
        .limit(limit).with_for_update(skip_locked=True)
    ).scalars().all()
    if not rows:
        return []
    session.execute(update(WebhookDelivery).where(WebhookDelivery.id.in_(rows)).values(
        leased_until=now + lease, leased_by=holder))
    found = session.execute(
        select(WebhookDelivery.id, WebhookDelivery.endpoint_id, WebhookEndpoint.url, WebhookEvent.event_id,
               WebhookEvent.type, WebhookEvent.created_at, WebhookDelivery.attempts, WebhookEvent.payload)
        .join(WebhookEndpoint, WebhookEndpoint.id == WebhookDelivery.endpoint_id)
        .join(WebhookEvent, WebhookEvent.id == WebhookDelivery.event_id)
        .where(WebhookDelivery.id.in_(rows)).order_by(WebhookDelivery.next_attempt_at, WebhookDelivery.id)
    ).all()
    return [DueDelivery(delivery_id=row.id, endpoint_id=row.endpoint_id, url=row.url, event_id=row.event_id,
                        event_type=row.type, event_created_at=row.created_at, attempts=row.attempts,
                        body=event_body(row.event_id, row.type, row.created_at, row.payload))
            for row in found]


def record_attempt(
    session: Session, *, delivery_id: int, now: datetime, duration_ms: int, status_code: int | None,
    error: str | None = None, retry_after: timedelta | None = None, rng: Any = None,
) -> str:
    """Record one try and what follows from it; the outcome (``delivered``, ``failed`` or ``gone``)."""
    delivery = session.execute(select(WebhookDelivery).where(WebhookDelivery.id == delivery_id).with_for_update()
                               .execution_options(populate_existing=True)).scalar_one()
    outcome = ("delivered" if status_code is not None and 200 <= status_code < 300
               else "gone" if status_code == GONE else "failed")
    session.execute(insert(WebhookAttempt).values(
        delivery_id=delivery_id, attempted_at=now, duration_ms=max(0, duration_ms), status_code=status_code,
        outcome=outcome, error=_short(error)))
    if delivery.status != "pending":
        # Delivered or given up meanwhile by another process whose lease this one outlived: only the log grows.
        return outcome
    attempts = delivery.attempts + 1
    common = {"attempts": attempts, "leased_until": None, "leased_by": None, "last_status_code": status_code,
              "last_error": _short(error)}
    if outcome == "delivered":
        session.execute(update(WebhookDelivery).where(WebhookDelivery.id == delivery_id).values(
            status="delivered", delivered_at=now, next_attempt_at=None, **common))
        session.execute(update(WebhookEndpoint).where(WebhookEndpoint.id == delivery.endpoint_id)
                        .values(failing_since=None))
        return outcome
    if outcome == "gone":
        session.execute(update(WebhookDelivery).where(WebhookDelivery.id == delivery_id).values(
            status="cancelled", next_attempt_at=None, **common))
        _disable_by_receiver(session, delivery.endpoint_id, reason="the endpoint answered 410 Gone", now=now)
        return outcome
    created_at = session.scalar(select(WebhookEvent.created_at).where(WebhookEvent.id == delivery.event_id))
    assert created_at is not None
    following = rules.next_attempt_at(failed_attempts=attempts, now=now, event_created_at=created_at,
                                      retry_after=retry_after, rng=rng)
    session.execute(update(WebhookDelivery).where(WebhookDelivery.id == delivery_id).values(
        status="pending" if following is not None else "failed", next_attempt_at=following, **common))
    failing_since = session.scalar(select(WebhookEndpoint.failing_since)
                                   .where(WebhookEndpoint.id == delivery.endpoint_id).with_for_update())
    if failing_since is None:
        session.execute(update(WebhookEndpoint).where(WebhookEndpoint.id == delivery.endpoint_id)
                        .values(failing_since=now))
    elif now - failing_since >= rules.DISABLE_AFTER:
        _disable_by_receiver(session, delivery.endpoint_id, now=now,
                             reason=f"every delivery failed since {failing_since.isoformat()}")
    return outcome


def redeliver(session: Session, *, event_id: str, actor: str, now: datetime, endpoint_id: int | None = None,
              partner_id: int | None = None) -> int:
    """Send an event again to its endpoints (or one of them), whatever became of it; how many deliveries."""
    event = session.scalar(select(WebhookEvent).where(WebhookEvent.event_id == event_id))
    if event is None or (partner_id is not None and event.partner_id != partner_id):
        raise NotFound(f"no event {event_id!r}")
    query = (select(WebhookDelivery.id).join(WebhookEndpoint, WebhookEndpoint.id == WebhookDelivery.endpoint_id)
             .where(WebhookDelivery.event_id == event.id, WebhookEndpoint.status == "active"))
    if endpoint_id is not None:
        query = query.where(WebhookDelivery.endpoint_id == endpoint_id)
    ids = session.scalars(query).all()
    if not ids:
        raise InvalidState(f"event {event_id} has no delivery to an active endpoint to send again")
    session.execute(update(WebhookDelivery).where(WebhookDelivery.id.in_(ids)).values(
        status="pending", next_attempt_at=now, leased_until=None, leased_by=None))
    audit_log.append(session, actor=actor, action="webhook.redeliver", subject=f"webhook-event:{event_id}", now=now,
                     after={"deliveries": len(ids), "endpoint": endpoint_id})
    return len(ids)


def delivery_log(session: Session, *, endpoint_id: int, partner_id: int | None = None, limit: int = 50,
                 offset: int = 0) -> list[DeliveryView]:
    """An endpoint's deliveries, newest first, each with its attempts."""
    endpoint_view(session, endpoint_id, partner_id=partner_id)
    rows = session.execute(
        select(WebhookDelivery, WebhookEvent.event_id, WebhookEvent.type, WebhookEvent.created_at)
        .join(WebhookEvent, WebhookEvent.id == WebhookDelivery.event_id)
        .where(WebhookDelivery.endpoint_id == endpoint_id)
        .order_by(WebhookDelivery.id.desc()).limit(limit).offset(offset)).all()
    attempts: dict[int, list[AttemptView]] = {}
    if rows:
        for attempt in session.scalars(select(WebhookAttempt).where(
                WebhookAttempt.delivery_id.in_([delivery.id for delivery, *_ in rows]))
                .order_by(WebhookAttempt.id.desc())):
            attempts.setdefault(attempt.delivery_id, []).append(AttemptView(
                attempted_at=attempt.attempted_at, duration_ms=attempt.duration_ms,
                status_code=attempt.status_code, outcome=attempt.outcome, error=attempt.error))
    return [DeliveryView(id=delivery.id, event_id=event_id, event_type=event_type, event_created_at=created_at,
                         status=delivery.status, attempts=delivery.attempts, next_attempt_at=delivery.next_attempt_at,
                         delivered_at=delivery.delivered_at, last_status_code=delivery.last_status_code,
                         last_error=delivery.last_error, tries=tuple(attempts.get(delivery.id, ())))
            for delivery, event_id, event_type, created_at in rows]


def pending_count(session: Session) -> int:
    """Deliveries waiting to be sent (for metrics and health)."""
    return session.scalar(select(func.count()).select_from(WebhookDelivery)
                          .where(WebhookDelivery.status == "pending")) or 0


# --- inside ------------------------------------------------------------------------


def _disable(session: Session, endpoint_id: int, *, reason: str, now: datetime) -> None:
    session.execute(update(WebhookEndpoint).where(WebhookEndpoint.id == endpoint_id).values(
        status="disabled", disabled_at=now, disabled_reason=reason))
    session.execute(update(WebhookDelivery).where(WebhookDelivery.endpoint_id == endpoint_id,
                                                  WebhookDelivery.status == "pending")
                    .values(status="cancelled", next_attempt_at=None, leased_until=None, leased_by=None))


def _disable_by_receiver(session: Session, endpoint_id: int, *, reason: str, now: datetime) -> None:
    """The hub disables an endpoint the receiver gave up on; the audit log tells the partner's managers."""
    status = session.scalar(select(WebhookEndpoint.status).where(WebhookEndpoint.id == endpoint_id))
    if status != "active":
        return
    _disable(session, endpoint_id, reason=reason, now=now)
    audit_log.append(session, actor="hub:webhooks", action="webhook.endpoint.disable",
                     subject=f"webhook-endpoint:{endpoint_id}", now=now, before={"status": "active"},
                     after={"status": "disabled", "reason": reason})


def _lock_endpoint(session: Session, endpoint_id: int, partner_id: int | None) -> WebhookEndpoint:
    endpoint = session.execute(select(WebhookEndpoint).where(WebhookEndpoint.id == endpoint_id).with_for_update()
                               .execution_options(populate_existing=True)).scalar_one_or_none()
    if endpoint is None or (partner_id is not None and endpoint.partner_id != partner_id):
        raise NotFound(f"no webhook endpoint {endpoint_id}")
    return endpoint


def _endpoint_views(session: Session, conditions: list[Any]) -> list[EndpointView]:
    rows = session.execute(select(WebhookEndpoint, Partner.code).join(Partner, Partner.id == WebhookEndpoint.partner_id)
                           .where(*conditions).order_by(Partner.code, WebhookEndpoint.id)).all()
    return [EndpointView(id=endpoint.id, partner=code, audience=endpoint.audience, url=endpoint.url,
                         event_types=tuple(endpoint.event_types.split(",")), description=endpoint.description,
                         status=endpoint.status, created_by=endpoint.created_by, created_at=endpoint.created_at,
                         disabled_at=endpoint.disabled_at, disabled_reason=endpoint.disabled_reason,
                         failing_since=endpoint.failing_since)
            for endpoint, code in rows]


def _partner(session: Session, code: str) -> Partner:
    partner = session.scalar(select(Partner).where(Partner.code == code))
    if partner is None:
        raise NotFound(f"no partner {code!r}")
    return partner


def _partner_id_of(session: Session, code: str) -> int | None:
    return session.scalar(select(Partner.id).where(Partner.code == code))


def _audience(value: str) -> rules.Audience:
    try:
        return rules.Audience(value)
    except ValueError:
        raise ValidationFailed("audience must be partner or member", fields={"audience": ["unknown"]}) from None


def _check_description(description: str | None) -> None:
    if description is not None and len(description) > 200:
        raise ValidationFailed("description is at most 200 characters", fields={"description": ["too long"]})


def _short(text: str | None) -> str | None:
    return None if text is None else text[:MAX_ERROR_LENGTH]
