from tests.factories import make_member, make_partner
from alliance.services import ledger
from alliance.services.accounts import member_balances
from datetime import timedelta


def test_earn_credits_available_points(hub, now):
    partner_id = make_partner(hub, now=now)
    member = make_member(hub, now=now)
    with hub.unit_of_work() as uow:
        ledger.earn(uow.session, member_id=member.member_id, partner_id=partner_id, points=100, now=now,
                    expires_at=now + timedelta(days=700))
        uow.commit()
    with hub.unit_of_work() as uow:
        assert member_balances(uow.session, member.member_id) == {"available": 100, "pending": 0, "held": 0}
