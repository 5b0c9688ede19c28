"""Rows of the back office: OAuth 2 clients and tokens, the audit log, member profiles
(personal data, encrypted), complaints and member-to-member transfers."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    ForeignKey,
    Index,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from alliance.models.base import Base, IdType, UTCDateTime


class OAuthClient(Base):
    """A back-office system or staff tool allowed to obtain tokens for its roles, held by one person."""

    __tablename__ = "oauth_clients"
    __table_args__ = (CheckConstraint("status IN ('active', 'revoked')", name="status"),)

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    client_id: Mapped[str] = mapped_column(String(64), unique=True)
    # Only a slow hash of the secret is kept; the secret is shown once, at creation.
    client_secret_hash: Mapped[str] = mapped_column(String(200))
    name: Mapped[str] = mapped_column(String(200))
    roles: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(10))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # The person answerable for what the client does: four-eyes rules compare people, so
    # one person's client and console login count as one pair of eyes. Never changed.
    person_id: Mapped[int] = mapped_column(ForeignKey("staff_people.id"))


class OAuthToken(Base):
    """An issued bearer token, kept as a hash so a database leak yields no usable token."""

    __tablename__ = "oauth_tokens"
    __table_args__ = (Index("ix_oauth_tokens_expires_at", "expires_at"),)

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    client_id: Mapped[int] = mapped_column(ForeignKey("oauth_clients.id"), index=True)
    access_token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    scope: Mapped[str] = mapped_column(String(200))
    issued_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class AuditLogEntry(Base):
    """One back-office change; each entry's hash covers the previous one. Append-only."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    sequence: Mapped[int] = mapped_column(BigInteger, unique=True)
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime)
    actor: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(100))
    subject: Mapped[str] = mapped_column(String(200))
    before: Mapped[dict | None] = mapped_column(JSON)
    after: Mapped[dict | None] = mapped_column(JSON)
    previous_hash: Mapped[str] = mapped_column(String(64))
    entry_hash: Mapped[str] = mapped_column(String(64))


class MemberProfile(Base):
    """A member's personal data, encrypted under the PII key ring, with keyed lookup hashes."""

    __tablename__ = "member_profiles"
    __table_args__ = (
        CheckConstraint("birthday IS NULL OR (birthday BETWEEN 101 AND 1231 AND birthday % 100 BETWEEN 1 AND 31)",
                        name="birthday"),
    )

    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"), primary_key=True)
    name_encrypted: Mapped[str | None] = mapped_column(Text)
    phone_encrypted: Mapped[str | None] = mapped_column(Text)
    email_encrypted: Mapped[str | None] = mapped_column(Text)
    phone_lookup: Mapped[str | None] = mapped_column(String(64), index=True)
    email_lookup: Mapped[str | None] = mapped_column(String(64), index=True)
    # The full birth date is encrypted like the rest; the month and day (MMDD, 1231 for
    # 31 December) are kept in clear so the birthday job finds today's birthdays without
    # decrypting every profile. A month and day alone do not identify a person.
    birth_date_encrypted: Mapped[str | None] = mapped_column(Text)
    birthday: Mapped[int | None] = mapped_column(SmallInteger, index=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    erased_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Complaint(Base):
    """A complaint against a partner, taken by customer service, with its lifecycle."""

    __tablename__ = "complaints"
    __table_args__ = (
        CheckConstraint("status IN ('open', 'investigating', 'resolved', 'rejected')", name="status"),
        CheckConstraint(
            "category IN ('points_missing', 'wrong_points', 'redemption_refused', 'redemption_error', "
            "'staff_conduct', 'product_or_service', 'other')",
            name="category",
        ),
        Index("ix_complaints_partner_opened", "partner_id", "opened_at"),
    )

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    partner_id: Mapped[int] = mapped_column(ForeignKey("partners.id"))
    member_id: Mapped[int | None] = mapped_column(ForeignKey("members.id"))
    purchase_id: Mapped[int | None] = mapped_column(ForeignKey("purchases.id"))
    hold_id: Mapped[int | None] = mapped_column(ForeignKey("redemption_holds.id"))
    category: Mapped[str] = mapped_column(String(30))
    description: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(15))
    opened_by: Mapped[str] = mapped_column(String(200))
    opened_at: Mapped[datetime] = mapped_column(UTCDateTime)
    investigating_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    resolution_note: Mapped[str | None] = mapped_column(Text)


class MemberTransfer(Base):
    """Points moved from one member to another, within the transfer limits."""

    __tablename__ = "member_transfers"
    __table_args__ = (
        CheckConstraint("points > 0", name="points_positive"),
        CheckConstraint("from_member_id <> to_member_id", name="different_members"),
        Index("ix_member_transfers_from_created", "from_member_id", "created_at"),
    )

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    from_member_id: Mapped[int] = mapped_column(ForeignKey("members.id"))
    to_member_id: Mapped[int] = mapped_column(ForeignKey("members.id"))
    points: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    created_by: Mapped[str] = mapped_column(String(200))


class JobLease(Base):
    """Which scheduler process may run a job now; a lease row makes each job exclusive."""

    __tablename__ = "job_leases"

    job_name: Mapped[str] = mapped_column(String(60), primary_key=True)
    holder: Mapped[str | None] = mapped_column(String(120))
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_outcome: Mapped[str | None] = mapped_column(String(200))
    last_succeeded_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class MemberNotification(Base):
    """A message owed to a member (an expiry reminder), in an outbox the member app delivers from."""

    __tablename__ = "member_notifications"
    __table_args__ = (
        UniqueConstraint("kind", "lot_id"),
        CheckConstraint("kind IN ('expiry_reminder')", name="kind"),
        Index("ix_member_notifications_unsent", "id", postgresql_where=text("sent_at IS NULL"),
              sqlite_where=text("sent_at IS NULL")),
    )

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"), index=True)
    kind: Mapped[str] = mapped_column(String(20))
    lot_id: Mapped[int] = mapped_column(ForeignKey("point_lots.id"))
    points: Mapped[int] = mapped_column(BigInteger)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # When it went to the member-messaging webhook outbox (``member.points_expiring``); None until then.
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
