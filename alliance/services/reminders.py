"""Expiry reminders: one outbox row per lot with points left that expires soon, sent as a member message.

Each reminder goes to the operator's member-messaging endpoint as a
``member.points_expiring`` event (``alliance.services.webhooks.emit``), in the
transaction that marks it sent (``sent_at``): a reminder is emitted once. A reminder
whose lot has expired by then is marked sent without a message (it would only mislead).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import and_, insert, select, update
from sqlalchemy.orm import Session

from alliance.domain.ledger import LotState
from alliance.models import Member, MemberNotification, PointLot
from alliance.services import webhooks

REMINDER_LEAD = timedelta(days=30)


def remind_expiring_points(session: Session, *, now: datetime, limit: int = 1000) -> int:
    """Write a reminder for each active lot expiring within 30 days and not reminded yet, then send the unsent."""
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
    send_reminders(session, now=now, limit=limit)
    return len(due)


def send_reminders(session: Session, *, now: datetime, limit: int = 1000) -> int:
    """Emit each unsent reminder as ``member.points_expiring`` and mark it sent; returns how many were emitted.

    The message names the member by number only (no name, phone, e-mail or card).
    """
    unsent = session.execute(
        select(MemberNotification.id, MemberNotification.points, MemberNotification.expires_at, Member.member_number)
        .join(Member, Member.id == MemberNotification.member_id)
        .where(MemberNotification.sent_at.is_(None), MemberNotification.kind == "expiry_reminder")
        .order_by(MemberNotification.id).limit(limit)
    ).all()
    emitted = 0
    for reminder in unsent:
        if reminder.expires_at > now:
            webhooks.emit(session, event_type="member.points_expiring", now=now, data={
                "member_number": reminder.member_number, "points": int(reminder.points),
                "expires_on": reminder.expires_at.date().isoformat()})
            emitted += 1
    if unsent:
        session.execute(update(MemberNotification).where(MemberNotification.id.in_([row.id for row in unsent]))
                        .values(sent_at=now))
    return emitted
