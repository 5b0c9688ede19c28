"""Members are reminded, once per lot, before their points expire."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from alliance.models import MemberNotification
from alliance.services import ledger
from alliance.services.reminders import remind_expiring_points
from tests.factories import make_member, make_partner


def test_each_lot_expiring_within_30_days_gets_one_reminder(hub, now):
    partner_id = make_partner(hub, now=now)
    member_id = make_member(hub, now=now).member_id
    with hub.unit_of_work() as uow:
        soon = ledger.earn(uow.session, member_id=member_id, partner_id=partner_id, points=70, now=now,
                           expires_at=now + timedelta(days=20))
        ledger.earn(uow.session, member_id=member_id, partner_id=partner_id, points=30, now=now,
                    expires_at=now + timedelta(days=200))
        uow.commit()
    for _ in range(2):
        with hub.unit_of_work() as uow:
            written = remind_expiring_points(uow.session, now=now)
            uow.commit()
    assert written == 0
    with hub.unit_of_work() as uow:
        reminders = uow.session.execute(select(MemberNotification.lot_id, MemberNotification.points)).all()
    assert reminders == [(soon.lot_id, 70)]
    with hub.unit_of_work() as uow:
        # 190 days on, the second lot comes within the lead time; the first has expired.
        assert remind_expiring_points(uow.session, now=now + timedelta(days=190)) == 1
        uow.commit()
