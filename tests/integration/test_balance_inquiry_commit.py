"""A balance inquiry whose PIN matched reads its balances and lets its commit skip the disk flush."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import text

from alliance.extensions import HubState
from alliance.services.accounts import inquired_balances, member_balances
from tests.factories import make_member


def test_the_inquiry_reads_the_balances_and_sets_its_transaction_to_skip_the_flush(hub: HubState,
                                                                                   now: datetime) -> None:
    member = make_member(hub, now=now)
    postgres = hub.engine.dialect.name == "postgresql"
    with hub.unit_of_work() as uow:
        if postgres:
            # The test cluster runs without synchronous commit; a durable hub's transaction starts like this.
            uow.session.execute(text("SET LOCAL synchronous_commit TO on"))
        assert inquired_balances(uow.session, member.member_id) == member_balances(uow.session, member.member_id)
        assert inquired_balances(uow.session, member.member_id) == {"available": 0, "pending": 0, "held": 0}
        if postgres:
            assert uow.session.scalar(text("SHOW synchronous_commit")) == "off"
        uow.commit()
