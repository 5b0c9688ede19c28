"""Webhooks: partners' endpoints, the outbox of events, and each delivery with its attempts.

An event is written in the transaction of the change that caused it, together with one
delivery per endpoint subscribed to its type (``alliance.services.webhooks.emit``); the
delivery process (``alliance webhooks deliver``) takes due deliveries under a lease, sends
them signed, and records every attempt. Nothing here is updated but the delivery's state
and the endpoint's failure streak; attempts are appended.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import CheckConstraint, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from alliance.models.base import Base, IdType, UTCDateTime


class WebhookEndpoint(Base):
    """A partner's URL that receives the event types it chose, signed by the hub."""

    __tablename__ = "webhook_endpoints"
    __table_args__ = (
        CheckConstraint("audience IN ('partner', 'member')", name="audience"),
        CheckConstraint("status IN ('active', 'disabled')", name="status"),
        CheckConstraint("(status = 'disabled') = (disabled_at IS NOT NULL)", name="disabled_when_disabled"),
        UniqueConstraint("partner_id", "url"),
    )

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    partner_id: Mapped[int] = mapped_column(ForeignKey("partners.id"), index=True)
    # ``partner``: events about the partner; ``member``: the operator's member-messaging endpoint.
    audience: Mapped[str] = mapped_column(String(10))
    url: Mapped[str] = mapped_column(Text)
    # The subscribed event types, comma-separated and sorted.
    event_types: Mapped[str] = mapped_column(Text)
    description: Mapped[str | None] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(10))
    created_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    disabled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    disabled_reason: Mapped[str | None] = mapped_column(Text)
    # When the current run of failures began (None after a success): sustained failure disables the endpoint.
    failing_since: Mapped[datetime | None] = mapped_column(UTCDateTime)


class WebhookEvent(Base):
    """One event in the outbox: a stable id, a type, when it happened and its payload."""

    __tablename__ = "webhook_events"
    __table_args__ = (Index("ix_webhook_events_partner_created", "partner_id", "created_at"),)

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    event_id: Mapped[str] = mapped_column(String(30), unique=True)
    type: Mapped[str] = mapped_column(String(60))
    # The partner the event is about (partner events), or None for member messages.
    partner_id: Mapped[int | None] = mapped_column(ForeignKey("partners.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # The event's ``data`` as canonical JSON text.
    payload: Mapped[str] = mapped_column(Text)


class WebhookDelivery(Base):
    """One event for one endpoint: pending until delivered, given up, or cancelled with its endpoint."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        UniqueConstraint("event_id", "endpoint_id"),
        CheckConstraint("status IN ('pending', 'delivered', 'failed', 'cancelled')", name="status"),
        CheckConstraint("attempts >= 0", name="attempts"),
        Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),
        Index("ix_webhook_deliveries_endpoint", "endpoint_id", "id"),
    )

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    event_id: Mapped[int] = mapped_column(ForeignKey("webhook_events.id"))
    endpoint_id: Mapped[int] = mapped_column(ForeignKey("webhook_endpoints.id"))
    status: Mapped[str] = mapped_column(String(10))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # A delivery process that took it holds it until then; after that another may take it.
    leased_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    leased_by: Mapped[str | None] = mapped_column(String(100))
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(String(300))


class WebhookAttempt(Base):
    """One try to deliver: when, how long it took, what came back."""

    __tablename__ = "webhook_attempts"
    __table_args__ = (
        CheckConstraint("outcome IN ('delivered', 'failed', 'gone')", name="outcome"),
        CheckConstraint("duration_ms >= 0", name="duration"),
        Index("ix_webhook_attempts_delivery", "delivery_id", "id"),
    )

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    delivery_id: Mapped[int] = mapped_column(ForeignKey("webhook_deliveries.id"))
    attempted_at: Mapped[datetime] = mapped_column(UTCDateTime)
    duration_ms: Mapped[int] = mapped_column(Integer)
    status_code: Mapped[int | None] = mapped_column(Integer)
    outcome: Mapped[str] = mapped_column(String(10))
    error: Mapped[str | None] = mapped_column(String(300))
