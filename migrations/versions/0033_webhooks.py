"""Webhooks: partners' endpoints, the outbox of events, deliveries and their attempts.

Why: nothing left the hub by itself; partners polled for statements and could not learn
that a hold expired or a reward waits for them. ``webhook_endpoints`` holds each
partner's URLs and the event types it chose (or the operator's member-messaging
endpoint), ``webhook_events`` the outbox written in the transaction of each change,
``webhook_deliveries`` one row per event and endpoint with its state, lease and next
attempt, and ``webhook_attempts`` the delivery log of every try.

Revision ID: 0033
Revises: 0032
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

from alliance.models.base import UTCDateTime

revision = "0033"
down_revision = "0032"
branch_labels = None
depends_on = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "webhook_endpoints",
        sa.Column("id", ID, nullable=False),
        sa.Column("partner_id", ID, nullable=False),
        sa.Column("audience", sa.String(length=10), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("event_types", sa.Text(), nullable=False),
        sa.Column("description", sa.String(length=200), nullable=True),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("created_by", sa.String(length=200), nullable=False),
        sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("disabled_at", UTCDateTime(timezone=True), nullable=True),
        sa.Column("disabled_reason", sa.Text(), nullable=True),
        sa.Column("failing_since", UTCDateTime(timezone=True), nullable=True),
        sa.CheckConstraint("audience IN ('partner', 'member')", name=op.f("ck_webhook_endpoints_audience")),
        sa.CheckConstraint("status IN ('active', 'disabled')", name=op.f("ck_webhook_endpoints_status")),
        sa.CheckConstraint("(status = 'disabled') = (disabled_at IS NOT NULL)",
                           name=op.f("ck_webhook_endpoints_disabled_when_disabled")),
        sa.ForeignKeyConstraint(["partner_id"], ["partners.id"],
                                name=op.f("fk_webhook_endpoints_partner_id_partners")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_endpoints")),
        sa.UniqueConstraint("partner_id", "url", name=op.f("uq_webhook_endpoints_partner_id_url")),
    )
    op.create_index(op.f("ix_webhook_endpoints_partner_id"), "webhook_endpoints", ["partner_id"])
    op.create_table(
        "webhook_events",
        sa.Column("id", ID, nullable=False),
        sa.Column("event_id", sa.String(length=30), nullable=False),
        sa.Column("type", sa.String(length=60), nullable=False),
        sa.Column("partner_id", ID, nullable=True),
        sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(["partner_id"], ["partners.id"], name=op.f("fk_webhook_events_partner_id_partners")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_events")),
        sa.UniqueConstraint("event_id", name=op.f("uq_webhook_events_event_id")),
    )
    op.create_index("ix_webhook_events_partner_created", "webhook_events", ["partner_id", "created_at"])
    op.create_table(
        "webhook_deliveries",
        sa.Column("id", ID, nullable=False),
        sa.Column("event_id", ID, nullable=False),
        sa.Column("endpoint_id", ID, nullable=False),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", UTCDateTime(timezone=True), nullable=True),
        sa.Column("leased_until", UTCDateTime(timezone=True), nullable=True),
        sa.Column("leased_by", sa.String(length=100), nullable=True),
        sa.Column("delivered_at", UTCDateTime(timezone=True), nullable=True),
        sa.Column("last_status_code", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.String(length=300), nullable=True),
        sa.CheckConstraint("status IN ('pending', 'delivered', 'failed', 'cancelled')",
                           name=op.f("ck_webhook_deliveries_status")),
        sa.CheckConstraint("attempts >= 0", name=op.f("ck_webhook_deliveries_attempts")),
        sa.ForeignKeyConstraint(["event_id"], ["webhook_events.id"],
                                name=op.f("fk_webhook_deliveries_event_id_webhook_events")),
        sa.ForeignKeyConstraint(["endpoint_id"], ["webhook_endpoints.id"],
                                name=op.f("fk_webhook_deliveries_endpoint_id_webhook_endpoints")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_deliveries")),
        sa.UniqueConstraint("event_id", "endpoint_id", name=op.f("uq_webhook_deliveries_event_id_endpoint_id")),
    )
    op.create_index("ix_webhook_deliveries_due", "webhook_deliveries", ["status", "next_attempt_at"])
    op.create_index("ix_webhook_deliveries_endpoint", "webhook_deliveries", ["endpoint_id", "id"])
    op.create_table(
        "webhook_attempts",
        sa.Column("id", ID, nullable=False),
        sa.Column("delivery_id", ID, nullable=False),
        sa.Column("attempted_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("duration_ms", sa.Integer(), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("outcome", sa.String(length=10), nullable=False),
        sa.Column("error", sa.String(length=300), nullable=True),
        sa.CheckConstraint("outcome IN ('delivered', 'failed', 'gone')", name=op.f("ck_webhook_attempts_outcome")),
        sa.CheckConstraint("duration_ms >= 0", name=op.f("ck_webhook_attempts_duration")),
        sa.ForeignKeyConstraint(["delivery_id"], ["webhook_deliveries.id"],
                                name=op.f("fk_webhook_attempts_delivery_id_webhook_deliveries")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_attempts")),
    )
    op.create_index("ix_webhook_attempts_delivery", "webhook_attempts", ["delivery_id", "id"])


def downgrade() -> None:
    op.drop_table("webhook_attempts")
    op.drop_table("webhook_deliveries")
    op.drop_table("webhook_events")
    op.drop_table("webhook_endpoints")
