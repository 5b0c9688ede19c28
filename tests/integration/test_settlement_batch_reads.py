"""A closing transaction of several cycles reads once what each cycle needs: the partners' locks (one
statement), their unapplied adjustments and the endpoints that hear of a statement. Each cycle must
still get what closing it alone would have given it."""

from __future__ import annotations

import json
import threading
import time
from datetime import timedelta

from sqlalchemy import select, text

from alliance.models import WebhookDelivery, WebhookEvent
from alliance.services import webhooks
from settlement import closing, finance
from settlement.closing import close_due_cycles
from settlement.locking import PARTNER_ID_LIMIT, SETTLEMENT_LOCK_NAMESPACE, lock_partners_settlement
from tests.factories import make_partner
from tests.integration.test_settlement_closing import (
    DAY_ONE,
    DAY_TWO,
    ONBOARDED_AT,
    signer,  # noqa: F401  (the module's statement key fixture)
)

REQUESTER, APPROVER = "client:requester", "client:approver"


def _run(hub, operation, **arguments):  # type: ignore[no-untyped-def]
    with hub.unit_of_work() as uow:
        result = operation(uow.session, **arguments)
        uow.commit()
    return result


def _approved(hub, partner: str, amount: int, reference: str, *, at):  # type: ignore[no-untyped-def]
    view = _run(hub, finance.request_adjustment, partner_code=partner, amount_minor=amount, reason="correction",
                reference=reference, actor=REQUESTER, now=at)
    return _run(hub, finance.decide_adjustment, adjustment_id=view.id, decision="approve", actor=APPROVER, now=at)


def _adjustment_lines(statement) -> list[tuple[str, int]]:  # type: ignore[no-untyped-def]
    return [(line["reference"], int(line["amount_minor"])) for line in json.loads(statement.document_json)["lines"]
            if line["line_kind"] == "adjustment"]


def _counting_batches(monkeypatch) -> list[int]:  # type: ignore[no-untyped-def]
    sizes: list[int] = []
    close_batch = closing._close_batch

    def counted(session_factory, batch, **arguments):  # type: ignore[no-untyped-def]
        sizes.append(len(batch))
        return close_batch(session_factory, batch, **arguments)

    monkeypatch.setattr(closing, "_close_batch", counted)
    return sizes


def test_each_cycle_of_a_transaction_applies_the_adjustments_approved_before_its_end_once(hub, signer,  # noqa: F811
                                                                                          monkeypatch):
    make_partner(hub, now=ONBOARDED_AT, code="shop", settlement_cycle="daily", time_zone="UTC")
    # Due: the onboarding day, DAY_ONE and DAY_TWO. The first transaction closes the first
    # alone, the second the other two together.
    _approved(hub, "shop", 100, "ADJ-ONBOARDING", at=ONBOARDED_AT + timedelta(hours=1))
    _approved(hub, "shop", 200, "ADJ-DAY-ONE-A", at=DAY_ONE + timedelta(hours=1))
    _approved(hub, "shop", -50, "ADJ-DAY-ONE-B", at=DAY_ONE + timedelta(hours=2))
    _approved(hub, "shop", 300, "ADJ-DAY-TWO", at=DAY_TWO + timedelta(hours=3))
    sizes = _counting_batches(monkeypatch)
    closed = close_due_cycles(hub.session_factory, now=DAY_TWO + timedelta(days=1, hours=1), signer=signer)
    # No transaction failed and was closed again cycle by cycle.
    assert sizes == [1, 2]
    assert [_adjustment_lines(statement) for statement in closed] == [
        [("ADJ-ONBOARDING", 100)], [("ADJ-DAY-ONE-A", 200), ("ADJ-DAY-ONE-B", -50)], [("ADJ-DAY-TWO", 300)]]
    assert [statement.closing_balance_minor for statement in closed] == [100, 250, 550]
    with hub.unit_of_work() as uow:
        applied = {view.reference: view.applied_run_id for view in finance.list_adjustments(uow.session)}
    assert applied == {"ADJ-ONBOARDING": closed[0].run_id, "ADJ-DAY-ONE-A": closed[1].run_id,
                       "ADJ-DAY-ONE-B": closed[1].run_id, "ADJ-DAY-TWO": closed[2].run_id}


def test_statement_events_go_to_each_partners_subscribed_endpoints_as_one_emit_per_statement_would(
        hub, signer, monkeypatch):  # noqa: F811
    partners = {code: make_partner(hub, now=ONBOARDED_AT, code=code, settlement_cycle="daily", time_zone="UTC")
                for code in ("shop-a", "shop-b", "shop-c", "shop-d")}

    def endpoint(partner: str, url: str, types: list[str]) -> int:
        return int(_run(hub, webhooks.register_endpoint, partner=partner, url=url, event_types=types,
                        actor="console:pam", now=ONBOARDED_AT).id)

    second = endpoint("shop-a", "https://a.example/second", ["statement.closed"])
    first = endpoint("shop-a", "https://a.example/first", ["reward_order.placed", "statement.closed"])
    endpoint("shop-b", "https://b.example/hooks", ["reward_order.placed"])
    disabled = endpoint("shop-c", "https://c.example/hooks", ["statement.closed"])
    _run(hub, webhooks.disable_endpoint, endpoint_id=disabled, reason="paused", actor="console:pam",
         now=ONBOARDED_AT)
    sizes = _counting_batches(monkeypatch)
    closed = close_due_cycles(hub.session_factory, now=DAY_TWO + timedelta(hours=1), signer=signer)
    assert sizes == [1, 2, 4, 1] and len(closed) == 8
    with hub.session_factory() as session:
        events = session.execute(select(WebhookEvent.id, WebhookEvent.type, WebhookEvent.partner_id,
                                        WebhookEvent.payload).order_by(WebhookEvent.id)).all()
        deliveries = session.execute(select(WebhookDelivery.event_id, WebhookDelivery.endpoint_id,
                                            WebhookDelivery.status).order_by(WebhookDelivery.id)).all()
    # Only shop-a hears, of each of its statements in the order they closed, on both its endpoints.
    shop_a = [statement for statement in closed if statement.partner_id == partners["shop-a"]]
    assert [(kind, partner_id, json.loads(payload)) for _, kind, partner_id, payload in events] == [
        ("statement.closed", partners["shop-a"],
         {"statement_id": statement.statement_id, "cycle_starts_at": statement.cycle_starts_at.isoformat(),
          "cycle_ends_at": statement.cycle_ends_at.isoformat(), "net_minor": statement.net_minor,
          "currency": "EUR"})
        for statement in shop_a]
    assert deliveries == [(event_id, endpoint_id, "pending") for event_id, *_ in events
                          for endpoint_id in sorted([first, second])]


def test_one_statement_takes_the_locks_one_by_one_in_the_order_given(pg_hub):
    partner_ids = [make_partner(pg_hub, now=ONBOARDED_AT, code=f"shop-{number}") for number in range(3)]
    keys = [SETTLEMENT_LOCK_NAMESPACE * PARTNER_ID_LIMIT + partner_id for partner_id in partner_ids]
    with pg_hub.engine.connect() as holder, pg_hub.engine.connect() as observer:
        # Another transaction holds the middle partner's lock.
        holder.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": keys[1]})
        taken = threading.Event()

        def close() -> None:
            with pg_hub.session_factory() as session:
                lock_partners_settlement(session, partner_ids)
                taken.set()
                session.commit()

        closer = threading.Thread(target=close)
        closer.start()
        try:
            held: dict[int, bool] = {}
            for _ in range(200):
                held = {int(key): granted for key, granted in observer.execute(text(
                    "SELECT (classid::bigint << 32) | objid::bigint, granted FROM pg_locks"
                    " WHERE locktype = 'advisory' AND pid <> pg_backend_pid() AND pid <> :holder"),
                    {"holder": holder.execute(text("SELECT pg_backend_pid()")).scalar_one()})}
                observer.rollback()
                if keys[1] in held:
                    break
                time.sleep(0.02)
            # The first is held, the second waited for, the third not yet asked for.
            assert held == {keys[0]: True, keys[1]: False}
            assert not taken.is_set()
        finally:
            holder.rollback()
            closer.join(timeout=10)
    assert taken.is_set()
