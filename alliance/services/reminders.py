"""Expiry reminders: one outbox row per lot with points left that expires soon."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import and_, insert, select
from sqlalchemy.orm import Session

from alliance.domain.ledger import LotState
from alliance.models import Member, MemberNotification, PointLot

REMINDER_LEAD = timedelta(days=30)


def remind_expiring_points(session: Session, *, now: datetime, limit: int = 1000) -> int:
    """Write a reminder for each active lot expiring within 30 days and not reminded yet."""
    reminded = select(MemberNotification.id).where(
        and_(MemberNotification.kind == "expiry_reminder", MemberNotification.lot_id == PointLot.id)).exists()
    due = session.execute(
        select(PointLot.id, PointLot.member_id, PointLot.points_remaining, PointLot.expires_at)
        .join(Member, Member.id == PointLot.member_id)
        .where(PointLot.state == LotState.ACTIVE.value, PointLot.points_remaining > 0, Member.status == "active",
               PointLot.expires_at > now, PointLot.expires_at <= now + REMINDER_LEAD, ~reminded)
        .order_by(PointLot.expires_at, PointLot.id).limit(limit)
    ).all()
    if due:
        session.execute(insert(MemberNotification), [
            {"member_id": lot.member_id, "kind": "expiry_reminder", "lot_id": lot.id, "points": lot.points_remaining,
             "expires_at": lot.expires_at, "created_at": now} for lot in due
        ])
    return len(due)
