"""The SDK's behaviour event call over real HTTP against a hub on PostgreSQL: signed, idempotent, retried once
when the reply is lost, counted once by its event id, with the hub's refusals as the SDK's errors."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import func, select

from alliance.extensions import HubState, hub_state
from alliance.models import BehaviourEvent
from alliance.services import behaviour_points
from partners_sdk import AllianceClient, ConflictError, Event, HttpClientTransport, InvalidRequestError, NotFoundError
from partners_sdk.transport import Reply
from tests.sdk_support import available_points, make_shop, serve_in_thread

pytestmark = pytest.mark.postgresql


def _rule(hub: HubState) -> None:
    with hub.unit_of_work() as uow:
        behaviour_points.set_rule(uow.session, event_type="survey", points=40,
                                  now=datetime.now(timezone.utc) - timedelta(days=1), actor="test")
        behaviour_points.set_rule(uow.session, event_type="recharge", points=1, per_amount_minor=100, currency="EUR",
                                  funded_by="reporter", now=datetime.now(timezone.utc) - timedelta(days=1),
                                  actor="test")
        uow.commit()


def _events(hub: HubState) -> int:
    with hub.unit_of_work() as uow:
        return uow.session.scalar(select(func.count()).select_from(BehaviourEvent)) or 0


class LosesFirstReply:
    """Delivers every request, but loses the first reply (the hub acted; the till never heard)."""

    def __init__(self) -> None:
        self.inner = HttpClientTransport()
        self.idempotency_keys: list[str] = []

    def send(self, method: str, url: str, headers: Mapping[str, str], body: bytes | None, timeout_s: float) -> Reply:
        reply = self.inner.send(method, url, headers, body, timeout_s)
        self.idempotency_keys.append(dict(headers).get("Idempotency-Key", ""))
        if len(self.idempotency_keys) == 1:
            raise OSError("connection reset after the request was sent")
        return reply


def test_the_sdk_reports_events_once_each_retrying_a_lost_reply_under_the_same_key(pg_app):
    hub = hub_state(pg_app)
    shop = make_shop(hub)
    _rule(hub)
    transport = LosesFirstReply()
    with serve_in_thread(pg_app) as base_url:
        client = AllianceClient(base_url, shop.partner.key_id, shop.partner.private_key, timeout_s=10,
                                transport=transport, max_retries=2, sleep=lambda seconds: None)
        survey = client.report_event(event_id="sv-1", event_type="survey", card_number=shop.card_number)
        assert isinstance(survey, Event)
        assert (survey.status, survey.points_awarded, survey.already_reported) == ("awarded", 40, False)
        # The lost reply was retried under the same idempotency key; the hub counted the event once.
        assert len(transport.idempotency_keys) == 2 and len(set(transport.idempotency_keys)) == 1
        again = client.report_event(event_id="sv-1", event_type="survey", card_number=shop.card_number,
                                    occurred_at=survey.occurred_at)
        assert (again.already_reported, again.points_awarded) == (True, 40)
        recharge = client.report_event(event_id="rc-1", event_type="recharge", card_number=shop.card_number,
                                       amount_minor=1_550, currency="EUR")
        assert recharge.points_awarded == 15 and recharge.awards[0].funded_by == "shop"
        with pytest.raises(ConflictError) as conflict:
            client.report_event(event_id="sv-1", event_type="recharge", card_number=shop.card_number,
                                amount_minor=100, currency="EUR")
        assert conflict.value.code == "event_already_reported"
        with pytest.raises(NotFoundError):
            client.report_event(event_id="sv-2", event_type="survey", card_number="6390000000000000")
        with pytest.raises(InvalidRequestError):
            client.report_event(event_id="sv-3", event_type="birthday", card_number=shop.card_number)
        with pytest.raises(InvalidRequestError):
            client.report_event(event_id="sv-4", event_type="survey")
    assert _events(hub) == 2
    assert available_points(hub, shop.member_id) == 55
