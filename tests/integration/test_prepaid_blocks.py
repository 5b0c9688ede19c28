"""Prepaid point blocks: money a partner pays ahead covers its issuance and pays its statements.

A partner on prepaid terms has a credit limit of 0: it issues through the signed API
while its blocks cover what it issued, is refused (409 ``credit_limit_reached``) once they
do not, with its redemptions still working, and issues again as soon as it buys another
block. Invoicing its closed statement pays it from the blocks (an ordinary ``paid`` event
that names the block); finance can also apply prepaid money to an invoiced statement by
hand. Every refusal leaves the books, the blocks and the audit log as they were.
"""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from sqlalchemy import func, select

from alliance.domain.errors import InvalidState, NotFound, ValidationFailed
from alliance.models import AuditLogEntry, PartnerCredit, StatementEvent
from alliance.models.credit import PartnerPrepaidBlock
from settlement import credit, finance
from tests.back_office_support import BackOffice, audit_count, run_cli
from tests.credit_support import PIN, PURCHASE_COST, close_today, credit_shop, earn
from tests.factories import make_partner
from tests.http_server import books, wall_clock_partner_time

REDEMPTIONS = "/partner/v1/redemptions"
A = "cli:finance-one"


@pytest.fixture
def shop(app):  # type: ignore[no-untyped-def]
    return credit_shop(app)


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _earn(shop, receipt_id: str):  # type: ignore[no-untyped-def]
    return earn(shop, receipt_id)


def _limit(shop, limit_minor: int) -> None:  # type: ignore[no-untyped-def]
    with shop.hub.unit_of_work() as uow:
        credit.request_limit_change(uow.session, partner_code="shop", limit_minor=limit_minor, reason="prepaid terms",
                                    actor=A, now=_now())
        uow.commit()


def _buy(shop, points: int, reference: str, *, code: str = "shop") -> credit.BlockBought:  # type: ignore[no-untyped-def]
    with shop.hub.unit_of_work() as uow:
        bought = credit.buy_block(uow.session, partner_code=code, points=points, reference=reference,
                                  paid_on=date.today(), actor=A, now=_now())
        uow.commit()
    return bought


def _refresh(shop) -> PartnerCredit:  # type: ignore[no-untyped-def]
    """What the refresh job does every minute, for this partner, now."""
    with shop.hub.unit_of_work() as uow:
        snapshot = credit.refresh(uow.session, partner_id=shop.partner.partner_id, now=_now())
        uow.commit()
        uow.session.expunge(snapshot)
    return snapshot


def _balance(shop) -> int:  # type: ignore[no-untyped-def]
    with shop.hub.unit_of_work() as uow:
        return credit.prepaid_balance(uow.session, partner_id=shop.partner.partner_id)


def _close_today(shop):  # type: ignore[no-untyped-def]
    return close_today(shop)


def _invoice(shop, statement_id: int, reference: str = "INV-1") -> finance.StatementStatus:  # type: ignore[no-untyped-def]
    with shop.hub.unit_of_work() as uow:
        status = finance.mark_invoiced(uow.session, statement_id=statement_id, reference=reference, actor=A,
                                       now=_now() + timedelta(days=2))
        uow.commit()
    return status


def _prepaid_events(shop) -> list[tuple[int, int | None, str]]:  # type: ignore[no-untyped-def]
    with shop.hub.unit_of_work() as uow:
        return [(int(amount or 0), block_id, reference) for amount, block_id, reference in uow.session.execute(
            select(StatementEvent.amount_minor, StatementEvent.prepaid_block_id, StatementEvent.reference)
            .where(StatementEvent.kind == "paid").order_by(StatementEvent.id))]


def _audit_actions(shop) -> list[str]:  # type: ignore[no-untyped-def]
    with shop.hub.unit_of_work() as uow:
        return list(uow.session.scalars(select(AuditLogEntry.action).order_by(AuditLogEntry.id)))


# ---------------------------------------------------------------- the issue's done-when


def test_a_prepaid_partner_issues_while_its_blocks_cover_it_is_refused_after_and_issues_again_once_it_buys(shop):
    _limit(shop, 0)
    # No credit and nothing prepaid: over at once.
    assert _refresh(shop).state == "over"
    assert _earn(shop, "r-0").body["code"] == "credit_limit_reached"

    bought = _buy(shop, 250, "RCPT-1")  # 250 points at 0.01 EUR: 2.50 EUR
    assert (bought.block.amount_minor, bought.block.price_per_point, bought.balance_minor) == \
        (250, Decimal("0.01"), 250)
    # Buying refreshed the snapshot in the same transaction: the partner may issue at once.
    assert (bought.credit.state, bought.credit.exposure_minor, bought.credit.prepaid_minor) == ("ok", 0, 250)

    assert _earn(shop, "r-1").status == 201
    assert (_refresh(shop).state, _refresh(shop).exposure_minor) == ("ok", 0)  # 123 of 250
    assert _earn(shop, "r-2").status == 201
    assert _refresh(shop).state == "ok"  # 246 of 250: covered
    assert _earn(shop, "r-3").status == 201  # issued between two refreshes, past the block
    snapshot = _refresh(shop)
    assert (snapshot.state, snapshot.exposure_minor) == ("over", 3 * PURCHASE_COST - 250)

    before = books(shop.hub)
    refused = _earn(shop, "r-4")
    assert (refused.status, refused.body["code"]) == (409, "credit_limit_reached")
    assert refused.headers["Content-Type"].startswith("application/problem+json")
    assert books(shop.hub) == before
    # Its redemptions keep working.
    hold = shop.client.post(REDEMPTIONS, {"reference": "red-1", "points": 50, "card_number": shop.member.card_number,
                                          "pin": PIN})
    assert hold.status == 201, hold.body
    assert shop.client.post(f"{REDEMPTIONS}/red-1/capture", {"points": 50}).status == 200

    # Another block, through the back office: the snapshot follows at once and the partner issues again.
    reply = BackOffice(shop.app).post("/partners/shop/credit/prepaid-blocks",
                                      {"points": 500, "reference": "RCPT-2", "paid_on": date.today().isoformat()},
                                      role="finance")
    assert reply.status == 201, reply.body
    assert (reply.body["block"]["amount_minor"], Decimal(reply.body["block"]["price_per_point"])) == \
        (500, Decimal("0.01"))
    assert reply.body["balance_minor"] == 750
    assert (reply.body["credit"]["state"], reply.body["credit"]["exposure_minor"],
            reply.body["credit"]["prepaid_minor"]) == ("ok", 0, 750)
    assert _earn(shop, "r-4").status == 201
    assert _refresh(shop).state == "ok"  # 4 x 123 = 492 of 750

    # Closing moves the issuance onto a statement; invoicing it pays it from the blocks, oldest first.
    closed = _close_today(shop)
    assert 0 < closed.net_minor <= 750
    status = _invoice(shop, closed.statement_id)
    assert (status.invoiced, status.paid, status.paid_minor, status.outstanding_minor) == \
        (True, True, closed.net_minor, 0)
    assert _balance(shop) == 750 - closed.net_minor
    blocks = [bought.block.id, reply.body["block"]["id"]]
    assert _prepaid_events(shop) == [(250, blocks[0], "RCPT-1"), (closed.net_minor - 250, blocks[1], "RCPT-2")]
    assert _audit_actions(shop)[-2:] == ["statement.invoiced", "partner_prepaid.applied"]
    # An ordinary paid statement for every report: not overdue, and its payments are the prepaid ones.
    with shop.hub.unit_of_work() as uow:
        assert finance.overdue(uow.session, as_of=status.due_date + timedelta(days=30)) == []
        assert finance.statement_status(uow.session, closed.statement_id).paid
    shown = BackOffice(shop.app).get("/partners/shop/credit/prepaid-blocks", role="admin")
    assert shown.status == 200
    assert shown.body["balance_minor"] == 750 - closed.net_minor
    assert [(block["reference"], block["applied_minor"], block["left_minor"]) for block in shown.body["blocks"]] == \
        [("RCPT-1", 250, 0), ("RCPT-2", closed.net_minor - 250, 750 - closed.net_minor)]
    snapshot = _refresh(shop)
    assert (snapshot.state, snapshot.exposure_minor) == ("ok", 0)


def test_finance_applies_a_block_bought_after_the_invoice_by_hand_and_the_refusals_say_why(shop):
    assert _earn(shop, "r-1").status == 201
    assert _earn(shop, "r-2").status == 201
    closed = _close_today(shop)
    assert closed.net_minor == 2 * PURCHASE_COST
    bo = BackOffice(shop.app)
    path = f"/settlement/statements/{closed.statement_id}/prepaid-payments"
    not_invoiced = bo.post(path, role="finance")
    assert (not_invoiced.status, not_invoiced.code) == (409, "not_invoiced")
    status = _invoice(shop, closed.statement_id)
    assert (status.paid_minor, status.outstanding_minor) == (0, closed.net_minor), "nothing prepaid, nothing paid"
    nothing_left = bo.post(path, role="finance")
    assert (nothing_left.status, nothing_left.code) == (409, "no_prepaid_balance")
    assert _prepaid_events(shop) == []

    _buy(shop, 100, "RCPT-1")
    applied = bo.post(path, role="finance")
    assert applied.status == 201, applied.body
    assert (applied.body["applied_minor"], applied.body["paid_minor"], applied.body["outstanding_minor"],
            applied.body["paid"], applied.body["balance_minor"]) == (100, 100, closed.net_minor - 100, False, 0)
    assert _audit_actions(shop)[-1] == "partner_prepaid.applied"
    # The rest paid by transfer; a block bought later finds nothing owed on this statement.
    with shop.hub.unit_of_work() as uow:
        finance.record_payment(uow.session, statement_id=closed.statement_id, amount_minor=closed.net_minor - 100,
                               paid_on=date.today(), reference="PAY-1", actor=A, now=_now())
        uow.commit()
    _buy(shop, 100, "RCPT-2")
    paid_already = bo.post(path, role="finance")
    assert (paid_already.status, paid_already.code) == (409, "nothing_owed")
    assert _balance(shop) == 100
    assert bo.post("/settlement/statements/999999/prepaid-payments", role="finance").status == 404
    for role in ("partner_manager", "customer_service"):
        assert bo.post(path, role=role).status == 403
    assert _prepaid_events(shop) == [(100, _block_id(shop, "RCPT-1"), "RCPT-1"), (closed.net_minor - 100, None,
                                                                                    "PAY-1")]


def _block_id(shop, reference: str) -> int:  # type: ignore[no-untyped-def]
    with shop.hub.unit_of_work() as uow:
        return uow.session.scalars(select(PartnerPrepaidBlock.id).where(PartnerPrepaidBlock.reference == reference)
                                   ).one()


# ---------------------------------------------------------------- refusals change nothing


def _state(shop) -> tuple[int, int, object]:  # type: ignore[no-untyped-def]
    with shop.hub.unit_of_work() as uow:
        blocks = uow.session.scalar(select(func.count()).select_from(PartnerPrepaidBlock)) or 0
        snapshot = uow.session.get(PartnerCredit, shop.partner.partner_id)
        seen = None if snapshot is None else (snapshot.exposure_minor, snapshot.state)
    return blocks, audit_count(shop.hub), seen


@pytest.mark.parametrize(("points", "reference", "paid_on", "error"), [
    (0, "RCPT-9", "today", ValidationFailed), (-5, "RCPT-9", "today", ValidationFailed),
    (True, "RCPT-9", "today", ValidationFailed), ("100", "RCPT-9", "today", ValidationFailed),
    (credit.MAX_BLOCK_POINTS + 1, "RCPT-9", "today", ValidationFailed),
    (100, "", "today", ValidationFailed), (100, "-lead", "today", ValidationFailed),
    (100, "x" * 65, "today", ValidationFailed), (100, "RCPT-9", "next week", ValidationFailed),
    (100, "RCPT-1", "today", credit.DuplicatePrepaidReference),
])
def test_a_refused_block_leaves_everything_unchanged(shop, points, reference, paid_on, error):
    _limit(shop, 0)
    _buy(shop, 100, "RCPT-1")
    before = _state(shop)
    day = date.today() + timedelta(days=7) if paid_on == "next week" else date.today()
    with shop.hub.unit_of_work() as uow, pytest.raises(error):
        credit.buy_block(uow.session, partner_code="shop", points=points, reference=reference, paid_on=day, actor=A,
                         now=_now())
    with shop.hub.unit_of_work() as uow, pytest.raises(NotFound):
        credit.buy_block(uow.session, partner_code="nobody", points=100, reference="RCPT-9", paid_on=date.today(),
                         actor=A, now=_now())
    assert _state(shop) == before


def test_the_back_office_refuses_blocks_with_precise_problems_and_changes_nothing(shop):
    bo = BackOffice(shop.app)
    _buy(shop, 100, "RCPT-1")
    before = _state(shop)
    today = date.today().isoformat()
    unknown = bo.post("/partners/nobody/credit/prepaid-blocks", {"points": 100, "reference": "R-2", "paid_on": today},
                      role="finance")
    assert (unknown.status, unknown.code) == (404, "not_found")
    for points in (0, -1, "100", 1.5, credit.MAX_BLOCK_POINTS + 1):
        bad = bo.post("/partners/shop/credit/prepaid-blocks", {"points": points, "reference": "R-2", "paid_on": today},
                      role="finance")
        assert bad.status == 422, (points, bad.body)
    duplicate = bo.post("/partners/shop/credit/prepaid-blocks", {"points": 5, "reference": "RCPT-1", "paid_on": today},
                        role="admin")
    assert (duplicate.status, duplicate.code) == (409, "duplicate_reference")
    for role in ("partner_manager", "customer_service"):
        refused = bo.post("/partners/shop/credit/prepaid-blocks", {"points": 5, "reference": "R-3", "paid_on": today},
                          role=role)
        assert (refused.status, refused.code) == (403, "role_refused")
        assert bo.get("/partners/shop/credit/prepaid-blocks", role=role).status == 403
    assert bo.get("/partners/nobody/credit/prepaid-blocks", role="finance").status == 404
    assert _state(shop) == before


def test_a_partner_without_an_issue_price_in_force_cannot_buy_a_block(shop):
    before = _state(shop)
    with shop.hub.unit_of_work() as uow, pytest.raises(InvalidState, match="no issue price"):
        credit.buy_block(uow.session, partner_code="shop", points=100, reference="RCPT-1", paid_on=date(2000, 1, 1),
                         actor=A, now=datetime(2000, 1, 1, tzinfo=timezone.utc))
    assert _state(shop) == before


# ---------------------------------------------------------------- exact arithmetic


def test_a_price_finer_than_the_currency_is_charged_exactly_and_rounded_up(shop):
    make_partner(shop.hub, now=wall_clock_partner_time(), code="thirds", issue_price_per_point=Decimal("0.00333333"))
    bought = _buy(shop, 1_000, "RCPT-1", code="thirds")
    # 1000 x 0.00333333 EUR = 3.33333 EUR = 333.333 cents: the partner pays 334.
    assert (bought.block.price_per_point, bought.block.amount_minor) == (Decimal("0.00333333"), 334)
    assert _buy(shop, 3, "RCPT-2", code="thirds").block.amount_minor == 1  # 0.999999 cents
    assert _buy(shop, 300_000_000, "RCPT-3", code="thirds").block.amount_minor == 99_999_900  # exact: no rounding
    with shop.hub.unit_of_work() as uow:
        partner_id = uow.session.scalars(select(PartnerPrepaidBlock.partner_id)
                                         .where(PartnerPrepaidBlock.reference == "RCPT-1")).one()
        assert credit.prepaid_balance(uow.session, partner_id=partner_id) == 334 + 1 + 99_999_900


# ---------------------------------------------------------------- CLI and console


def test_the_cli_records_a_block_as_the_named_operator_and_lists_the_blocks(shop):
    bought = run_cli(shop.app, "finance", "credit", "buy-block", "shop", "--points", "400", "--reference", "RCPT-1",
                     "--paid-on", date.today().isoformat(), "--as", "fiona")
    assert bought.exit_code == 0, bought.output
    assert "400 points at 0.01" in bought.output and "prepaid balance 400 EUR" in bought.output
    with shop.hub.unit_of_work() as uow:
        assert uow.session.scalars(select(PartnerPrepaidBlock.recorded_by)).one() == "cli:fiona"
    duplicate = run_cli(shop.app, "finance", "credit", "buy-block", "shop", "--points", "1", "--reference", "RCPT-1",
                        "--paid-on", date.today().isoformat())
    assert duplicate.exit_code != 0 and "RCPT-1" in duplicate.output
    listed = run_cli(shop.app, "finance", "credit", "blocks", "shop")
    assert listed.exit_code == 0 and "RCPT-1" in listed.output and "left 400" in listed.output
    assert "prepaid balance 400 EUR\t1 blocks" in listed.output
    assert "prepaid 400 EUR" in run_cli(shop.app, "finance", "credit", "show", "shop").output


def test_the_console_shows_the_blocks_and_finance_records_one_with_its_csrf_token(shop):
    from tests.console_support import signed_in, text_of

    _buy(shop, 250, "RCPT-1")
    fiona = signed_in(shop.app, "fiona", "finance")
    page = text_of(fiona.get("/console/partners/shop/credit"))
    assert "Prepaid balance 2.50 EUR" in page and "RCPT-1" in page and "Record a block" in page
    forged = fiona.post("/console/partners/shop/credit/prepaid-blocks",
                        {"points": "100", "reference": "RCPT-2", "paid_on": date.today().isoformat()}, csrf=None)
    assert forged.status_code in (400, 403)
    posted = fiona.post("/console/partners/shop/credit/prepaid-blocks",
                        {"points": "100", "reference": "RCPT-2", "paid_on": date.today().isoformat()})
    assert posted.status_code == 303
    page = text_of(fiona.get("/console/partners/shop/credit"))
    assert "Block RCPT-2 recorded" in page and "Prepaid balance 3.50 EUR" in page
    assert _audit_actions(shop)[-1] == "partner_prepaid.bought"
    pam = signed_in(shop.app, "pam", "partner_manager")
    seen = text_of(pam.get("/console/partners/shop/credit"))
    assert "RCPT-2" in seen and "Record a block" not in seen
    assert pam.post("/console/partners/shop/credit/prepaid-blocks",
                    {"points": "1", "reference": "RCPT-3", "paid_on": date.today().isoformat()}).status_code == 403
    assert _balance(shop) == 350


def test_a_statement_paid_in_full_by_hand_from_a_block_is_announced_to_the_partner(shop):
    from alliance.models import WebhookEvent
    from alliance.services import webhooks

    with shop.hub.unit_of_work() as uow:
        webhooks.register_endpoint(uow.session, partner="shop", url="https://shop.example/hooks",
                                   event_types=["statement.paid"], actor=A, now=_now())
        uow.commit()
    assert _earn(shop, "r-1").status == 201
    closed = _close_today(shop)
    _invoice(shop, closed.statement_id)
    _buy(shop, 1_000, "RCPT-1")
    applied = BackOffice(shop.app).post(f"/settlement/statements/{closed.statement_id}/prepaid-payments",
                                        role="finance")
    assert applied.status == 201 and applied.body["paid"] is True, applied.body
    with shop.hub.unit_of_work() as uow:
        events = [(event.type, json.loads(event.payload)) for event in uow.session.scalars(select(WebhookEvent))]
    assert events == [("statement.paid", {"statement_id": closed.statement_id, "paid_on": date.today().isoformat(),
                                          "amount_minor": closed.net_minor, "currency": "EUR"})]
