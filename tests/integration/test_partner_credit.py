"""Partners' credit exposure: the arithmetic, the snapshot, limits with four eyes, and refusing issuance past it.

A partner past its credit limit cannot issue through the signed API (single and batch)
until it pays (``record_payment`` refreshes its snapshot) or a second person approves a
higher limit, while its redemptions keep working.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from sqlalchemy import func, select

from alliance.domain.credit import CreditLimitReached
from alliance.domain.errors import InvalidState, NotFound, ValidationFailed
from alliance.models import PartnerCredit, PartnerCreditAlert, PartnerCreditLimitChange
from alliance.scheduler import hub_jobs
from alliance.services.jobs import run_exclusively
from settlement import credit, finance
from tests.back_office_support import BackOffice, audit_count, run_cli
from tests.credit_support import PIN, PURCHASE_COST, PURCHASE_MINOR, PURCHASES, close_today, credit_shop, earn
from tests.http_server import purchase_payload, wall_clock_partner_time

BATCH = "/partner/v1/purchases/batch"
REDEMPTIONS = "/partner/v1/redemptions"
A, B = "cli:requester", "cli:approver"
# 123.45 EUR at 1 point per EUR, issued at 0.01 EUR a point: 123 points, 1.23 EUR, 123 cents.


# ---------------------------------------------------------------- the arithmetic


def test_closed_statements_count_what_is_unpaid_of_a_positive_net_only():
    # Unpaid 500, partly paid 300 of 1000, fully paid, a credit to the partner (net < 0).
    exposure = credit.exposure_of([(500, 0), (1000, 300), (250, 250), (-400, 0)], [], 100)
    assert (exposure.closed_minor, exposure.open_minor, exposure.total_minor) == (1200, 0, 1200)


def test_open_issuance_minus_take_backs_at_their_recorded_prices_is_rounded_up():
    # 1000 points at 0.0100 EUR (1000 cents), 7 points at 0.0033 EUR (2.31 cents), 200 taken back at 0.0100 (200).
    exposure = credit.exposure_of([], [(1000, Decimal("0.0100")), (7, Decimal("0.0033")),
                                       (-200, Decimal("0.0100"))], 100)
    # 802.31 cents, rounded up: the hub never under-counts.
    assert exposure.open_minor == 803
    # A single point at a third of a cent is a whole cent; more taken back than issued counts nothing.
    assert credit.exposure_of([], [(1, Decimal("0.00333333"))], 100).open_minor == 1
    assert credit.exposure_of([(100, 0)], [(-50, Decimal("0.01"))], 100).total_minor == 100
    # Yen have no minor unit: 3 points at 0.5 JPY are 1.5 JPY, counted as 2.
    assert credit.exposure_of([], [(3, Decimal("0.5"))], 1).open_minor == 2


def test_the_prepaid_balance_is_taken_off_and_the_exposure_never_counts_below_zero():
    # 300 unpaid on a closed statement, 200.5 cents issued (201), 450 prepaid: 51 uncovered.
    exposure = credit.exposure_of([(300, 0)], [(20_050, Decimal("0.0001"))], 100, 450)
    assert (exposure.closed_minor, exposure.open_minor, exposure.prepaid_minor) == (300, 201, 450)
    assert (exposure.uncovered_minor, exposure.total_minor) == (51, 51)
    # More prepaid than owed: nothing exposed, and the money left over shows as a negative uncovered figure.
    covered = credit.exposure_of([(300, 0)], [(100, Decimal("0.01"))], 100, 1_000)
    assert (covered.uncovered_minor, covered.total_minor) == (-600, 0)
    # Without a prepaid balance the exposure is what it always was.
    assert credit.exposure_of([(300, 0)], [], 100) == credit.Exposure(closed_minor=300, open_minor=0)


def test_a_limit_of_zero_is_ok_while_prepaid_money_is_left_and_over_once_it_is_used_up():
    assert credit.credit_state(-1, 0, 0) == "ok"
    assert credit.credit_state(0, 0, 0) == "over"
    assert credit.credit_state(-600, 100, 80) == "ok"


def test_a_block_costs_its_points_at_the_price_exactly_rounded_up_to_a_minor_unit():
    assert credit.block_amount(1_000, Decimal("0.01"), 100) == 1_000
    assert credit.block_amount(1_000, Decimal("0.00333333"), 100) == 334  # 333.333 cents
    assert credit.block_amount(3, Decimal("0.5"), 1) == 2  # 1.5 JPY
    assert credit.block_amount(7, Decimal("0.125"), 1000) == 875  # KWD: exact, no rounding


@pytest.mark.parametrize(("exposure", "limit", "state"), [
    (0, None, "ok"), (10**9, None, "ok"), (79, 100, "ok"), (80, 100, "warning"), (99, 100, "warning"),
    (100, 100, "over"), (0, 0, "over"),
])
def test_the_state_is_warning_from_the_warning_line_and_over_at_the_limit(exposure, limit, state):
    warning = None if limit is None else credit.warning_line(limit, 80)
    assert credit.credit_state(exposure, limit, warning) == state


def test_the_warning_line_is_rounded_up():
    assert credit.warning_line(101, 80) == 81  # 80.8
    assert credit.warning_line(100, 80) == 80


# ---------------------------------------------------------------- through the signed API


@pytest.fixture
def shop(app):  # type: ignore[no-untyped-def]
    return credit_shop(app)


def _earn(shop, receipt_id: str):  # type: ignore[no-untyped-def]
    return earn(shop, receipt_id)


def _set_limit(shop, limit_minor: int | None, *, actor: str = A):  # type: ignore[no-untyped-def]
    with shop.hub.unit_of_work() as uow:
        view = credit.request_limit_change(uow.session, partner_code="shop", limit_minor=limit_minor,
                                           reason="credit review", actor=actor, now=datetime.now(timezone.utc))
        uow.commit()
    return view


def _snapshot(shop) -> PartnerCredit:  # type: ignore[no-untyped-def]
    with shop.hub.unit_of_work() as uow:
        snapshot = uow.session.get_one(PartnerCredit, shop.partner.partner_id)
        uow.session.expunge(snapshot)
        return snapshot


def _alerts(shop) -> list[str]:  # type: ignore[no-untyped-def]
    with shop.hub.unit_of_work() as uow:
        return list(uow.session.scalars(select(PartnerCreditAlert.state).order_by(PartnerCreditAlert.id)))


def _exposure(shop) -> credit.Exposure:  # type: ignore[no-untyped-def]
    with shop.hub.unit_of_work() as uow:
        return credit.partner_exposure(uow.session, partner_id=shop.partner.partner_id)


def _close_today(shop):  # type: ignore[no-untyped-def]
    return close_today(shop)


def _pay(shop, statement_id: int, amount_minor: int, reference: str) -> None:  # type: ignore[no-untyped-def]
    with shop.hub.unit_of_work() as uow:
        finance.record_payment(uow.session, statement_id=statement_id, amount_minor=amount_minor,
                               paid_on=date.today(), reference=reference, actor=A,
                               now=datetime.now(timezone.utc) + timedelta(days=2))
        uow.commit()


def test_the_exposure_follows_open_issuance_take_backs_the_closing_and_payments(shop):
    assert _earn(shop, "r-1").status == 201
    assert _earn(shop, "r-2").status == 201
    assert _exposure(shop) == credit.Exposure(closed_minor=0, open_minor=2 * PURCHASE_COST)
    # A full refund takes the purchase's points back at the price they were issued at.
    refund = shop.client.post(f"{PURCHASES}/r-2/refunds", {"refund_id": "rf-1", "amount_minor": PURCHASE_MINOR})
    assert refund.status == 201, refund.body
    assert _exposure(shop) == credit.Exposure(closed_minor=0, open_minor=PURCHASE_COST)

    closed = _close_today(shop)
    assert closed.net_minor == PURCHASE_COST
    assert _exposure(shop) == credit.Exposure(closed_minor=PURCHASE_COST, open_minor=0)
    with shop.hub.unit_of_work() as uow:
        finance.mark_invoiced(uow.session, statement_id=closed.statement_id, reference="INV-1", actor=A,
                              now=datetime.now(timezone.utc))
        uow.commit()
    _pay(shop, closed.statement_id, 100, "PAY-1")
    assert _exposure(shop).total_minor == PURCHASE_COST - 100
    _pay(shop, closed.statement_id, PURCHASE_COST - 100, "PAY-2")
    assert _exposure(shop).total_minor == 0


def test_past_its_limit_a_partner_cannot_issue_until_a_second_person_raises_it_and_redemptions_still_work(shop):
    assert _earn(shop, "r-1").status == 201
    _set_limit(shop, 100)  # a first limit applies at once
    snapshot = _snapshot(shop)
    assert (snapshot.limit_minor, snapshot.exposure_minor, snapshot.state) == (100, PURCHASE_COST, "over")
    assert _alerts(shop) == ["over"]

    refused = _earn(shop, "r-2")
    assert (refused.status, refused.body["code"]) == (409, "credit_limit_reached")
    assert refused.headers["Content-Type"].startswith("application/problem+json")
    assert "credit limit" in refused.body["detail"] and "pays" in refused.body["detail"]
    assert not any(character.isdigit() for character in refused.body["detail"]), "no figures at the till"
    batch = shop.client.post(BATCH, {"purchases": [purchase_payload(f"b-{index}", shop.member.card_number)
                                                   for index in range(2)]})
    assert batch.status == 200 and (batch.body["applied"], batch.body["rejected"]) == (0, 2)
    assert {result["problem"]["code"] for result in batch.body["results"]} == {"credit_limit_reached"}

    # Redemptions at the partner keep working.
    hold = shop.client.post(REDEMPTIONS, {"reference": "red-1", "points": 50, "card_number": shop.member.card_number,
                                          "pin": PIN})
    assert hold.status == 201, hold.body
    assert shop.client.post(f"{REDEMPTIONS}/red-1/capture", {"points": 50}).status == 200
    refunded = shop.client.post(f"{REDEMPTIONS}/red-1/refunds", {"refund_id": "rr-1", "points": 10})
    assert (refunded.status, refunded.body["points_refunded"]) == (200, 10)

    # A raise waits for a second person; the one who asked cannot approve it.
    raise_ = _set_limit(shop, 10_000)
    assert raise_.status == "pending" and _snapshot(shop).limit_minor == 100
    with shop.hub.unit_of_work() as uow, pytest.raises(credit.SameApprover):
        credit.decide_limit_change(uow.session, change_id=raise_.id, decision="approve", actor=A,
                                   now=datetime.now(timezone.utc))
    assert _earn(shop, "r-3").body["code"] == "credit_limit_reached"
    with shop.hub.unit_of_work() as uow:
        decided = credit.decide_limit_change(uow.session, change_id=raise_.id, decision="approve", actor=B,
                                             now=datetime.now(timezone.utc))
        uow.commit()
    assert (decided.status, decided.decided_by) == ("approved", B)
    assert _snapshot(shop).state == "ok"
    assert _earn(shop, "r-3").status == 201


def test_a_payment_refreshes_the_snapshot_and_lets_the_partner_issue_again(shop):
    assert _earn(shop, "r-1").status == 201
    closed = _close_today(shop)
    _set_limit(shop, PURCHASE_COST)
    assert _snapshot(shop).state == "over"
    assert _earn(shop, "r-2").body["code"] == "credit_limit_reached"
    with shop.hub.unit_of_work() as uow:
        finance.mark_invoiced(uow.session, statement_id=closed.statement_id, reference="INV-1", actor=A,
                              now=datetime.now(timezone.utc))
        uow.commit()
    _pay(shop, closed.statement_id, PURCHASE_COST, "PAY-1")
    snapshot = _snapshot(shop)
    assert (snapshot.exposure_minor, snapshot.state) == (0, "ok")
    assert _earn(shop, "r-2").status == 201


def test_entering_the_warning_band_alerts_once_and_the_job_keeps_the_snapshot_fresh(shop):
    _set_limit(shop, 150)
    assert _snapshot(shop).state == "ok" and _alerts(shop) == []
    assert _earn(shop, "r-1").status == 201  # 123 of 150: past the warning line (120)
    assert _snapshot(shop).exposure_minor == 0, "the request path never writes the snapshot"
    job = {job.name: job for job in hub_jobs(shop.hub)}["refresh-credit-exposure"]
    assert job.interval_s == 60
    for _ in range(3):
        assert run_exclusively(shop.hub.session_factory, job, holder="test", now=datetime.now(timezone.utc)) == 1
    snapshot = _snapshot(shop)
    assert (snapshot.exposure_minor, snapshot.state, snapshot.warning_minor) == (PURCHASE_COST, "warning", 120)
    assert snapshot.warned_at is not None
    assert _alerts(shop) == ["warning"]
    # Lowering the limit applies at once and passes it: one more alert, for over.
    assert _set_limit(shop, 120).status == "approved"
    assert _alerts(shop) == ["warning", "over"]
    result = run_cli(shop.app, "jobs", "refresh-credit-exposure")
    assert result.exit_code == 0 and "refresh-credit-exposure: 1 partners refreshed" in result.output
    assert _alerts(shop) == ["warning", "over"]


def _changes_and_audit(shop) -> tuple[int, int, object]:  # type: ignore[no-untyped-def]
    with shop.hub.unit_of_work() as uow:
        changes = uow.session.scalar(select(func.count()).select_from(PartnerCreditLimitChange))
        snapshot = uow.session.get(PartnerCredit, shop.partner.partner_id)
        seen = None if snapshot is None else (snapshot.limit_minor, snapshot.state)
    return changes or 0, audit_count(shop.hub), seen


@pytest.mark.parametrize(("limit_minor", "reason", "error"), [
    (-1, "review", ValidationFailed), (True, "review", ValidationFailed), ("100", "review", ValidationFailed),
    (10**19, "review", ValidationFailed), (100, "", ValidationFailed), (100, " ", ValidationFailed),
    (100, "x" * 501, ValidationFailed), (None, "remove", InvalidState),
])
def test_a_refused_limit_change_leaves_everything_unchanged(shop, limit_minor, reason, error):
    before = _changes_and_audit(shop)
    with shop.hub.unit_of_work() as uow, pytest.raises(error):
        credit.request_limit_change(uow.session, partner_code="shop", limit_minor=limit_minor, reason=reason,
                                    actor=A, now=datetime.now(timezone.utc))
    with shop.hub.unit_of_work() as uow, pytest.raises(NotFound):
        credit.request_limit_change(uow.session, partner_code="nobody", limit_minor=100, reason="review", actor=A,
                                    now=datetime.now(timezone.utc))
    assert _changes_and_audit(shop) == before


def test_a_second_raise_waits_for_the_first_and_a_decision_is_final(shop):
    _set_limit(shop, 100)
    pending = _set_limit(shop, 200)
    with shop.hub.unit_of_work() as uow, pytest.raises(credit.ChangePending):
        credit.request_limit_change(uow.session, partner_code="shop", limit_minor=None, reason="remove", actor=A,
                                    now=datetime.now(timezone.utc))
    with shop.hub.unit_of_work() as uow:
        rejected = credit.decide_limit_change(uow.session, change_id=pending.id, decision="reject", actor=B,
                                              now=datetime.now(timezone.utc))
        uow.commit()
    assert rejected.status == "rejected" and _snapshot(shop).limit_minor == 100
    with shop.hub.unit_of_work() as uow, pytest.raises(credit.AlreadyDecided):
        credit.decide_limit_change(uow.session, change_id=pending.id, decision="approve", actor=B,
                                   now=datetime.now(timezone.utc))
    # Removing the limit waits too; approved, the partner has none and is ok.
    removal = _set_limit(shop, None)
    assert removal.status == "pending"
    with shop.hub.unit_of_work() as uow:
        credit.decide_limit_change(uow.session, change_id=removal.id, decision="approve", actor=B,
                                   now=datetime.now(timezone.utc))
        uow.commit()
    snapshot = _snapshot(shop)
    assert (snapshot.limit_minor, snapshot.warning_minor, snapshot.state) == (None, None, "ok")


# ---------------------------------------------------------------- back office and CLI


def test_the_back_office_sets_a_limit_a_second_client_approves_a_raise_and_other_roles_are_refused(shop):
    bo = BackOffice(shop.app)
    assert _earn(shop, "r-1").status == 201
    before = _changes_and_audit(shop)
    for role in ("partner_manager", "customer_service"):
        refused = bo.post("/partners/shop/credit/limit-changes", {"limit_minor": 100, "reason": "review"}, role=role)
        assert (refused.status, refused.code) == (403, "role_refused")
        assert bo.get("/partners/shop/credit", role=role).status == 403
    bad = bo.post("/partners/shop/credit/limit-changes", {"limit_minor": -5, "reason": "review"}, role="finance")
    assert bad.status == 422
    assert _changes_and_audit(shop) == before

    shown = bo.get("/partners/shop/credit", role="finance")
    assert shown.status == 200
    assert (shown.body["limit_minor"], shown.body["exposure_minor"], shown.body["state"]) == \
        (None, PURCHASE_COST, "ok")
    first = bo.post("/partners/shop/credit/limit-changes", {"limit_minor": 100, "reason": "review"}, role="finance")
    assert first.status == 201 and first.body["status"] == "approved"
    raised = bo.post("/partners/shop/credit/limit-changes", {"limit_minor": 500, "reason": "paid"}, role="finance")
    assert raised.body["status"] == "pending"
    shown = bo.get("/partners/shop/credit", role="admin")
    assert (shown.body["state"], shown.body["limit_minor"]) == ("over", 100)
    assert [change["id"] for change in shown.body["pending_changes"]] == [raised.body["id"]]
    path = f"/partners/shop/credit/limit-changes/{raised.body['id']}/decision"
    same = bo.post(path, {"decision": "approve"}, role="finance")
    assert (same.status, same.code) == (409, "same_approver")
    assert bo.post(f"/partners/nobody/credit/limit-changes/{raised.body['id']}/decision", {"decision": "approve"},
                   role="admin").status == 404
    approved = bo.post(path, {"decision": "approve"}, role="admin")
    assert approved.status == 200 and approved.body["status"] == "approved"
    assert bo.get("/partners/shop/credit", role="finance").body["state"] == "ok"


def test_the_cli_shows_sets_and_decides_a_limit(shop):
    set_ = run_cli(shop.app, "finance", "credit", "set-limit", "shop", "--limit-minor", "500", "--reason", "review")
    assert set_.exit_code == 0 and "limit 500\tapproved" in set_.output
    raised = run_cli(shop.app, "finance", "credit", "set-limit", "shop", "--limit-minor", "900", "--reason", "paid")
    assert "pending" in raised.output
    shown = run_cli(shop.app, "finance", "credit", "show", "shop")
    assert "limit 500 EUR" in shown.output and "state ok" in shown.output and "limit 900\tpending" in shown.output
    change_id = raised.output.split()[1]
    # The same operator cannot approve their own raise.
    same = run_cli(shop.app, "finance", "credit", "decide", change_id, "approve")
    assert same.exit_code != 0 and "another person" in same.output
    with shop.hub.unit_of_work() as uow:
        assert uow.session.get_one(PartnerCreditLimitChange, int(change_id)).status == "pending"


# ---------------------------------------------------------------- other issuance: events, goodwill, joint campaigns


def _over_limit(hub, code: str) -> None:  # type: ignore[no-untyped-def]
    """A limit of 0 on ``code``: no credit at all, so it is over at once."""
    with hub.unit_of_work() as uow:
        credit.request_limit_change(uow.session, partner_code=code, limit_minor=0, reason="no credit", actor=A,
                                    now=datetime.now(timezone.utc))
        uow.commit()


def test_behaviour_events_funded_by_a_partner_over_its_limit_are_refused_and_nothing_is_stored(shop):
    from alliance.models import BehaviourEvent
    from alliance.services import behaviour_points

    with shop.hub.unit_of_work() as uow:
        for event_type, funded_by in (("survey", "reporter"), ("sign_in", "hub")):
            behaviour_points.set_rule(uow.session, event_type=event_type, points=5, funded_by=funded_by,
                                      now=datetime.now(timezone.utc) - timedelta(days=10), actor="test")
        uow.commit()
    _over_limit(shop.hub, "shop")
    occurred_at = (datetime.now(timezone.utc) - timedelta(minutes=1)).isoformat()
    survey = {"event_id": "ev-1", "event_type": "survey", "card_number": shop.member.card_number,
              "occurred_at": occurred_at}
    refused = shop.client.post("/partner/v1/events", survey)
    assert (refused.status, refused.body["code"]) == (409, "credit_limit_reached")
    with shop.hub.unit_of_work() as uow:
        assert uow.session.scalar(select(func.count()).select_from(BehaviourEvent)) == 0
    # The hub funds sign-ins: the partner's credit does not matter.
    sign_in = shop.client.post("/partner/v1/events", dict(survey, event_id="ev-2", event_type="sign_in"))
    assert sign_in.status == 201 and sign_in.body["points_awarded"] == 5


def test_a_goodwill_credit_charged_to_a_partner_over_its_limit_is_refused_and_a_hub_funded_one_is_not(shop):
    from alliance.models import GoodwillRequest
    from alliance.services import complaints, goodwill

    policy = goodwill.GoodwillPolicy(approval_threshold_points=1_000, expiry_months=24)
    now = datetime.now(timezone.utc)
    with shop.hub.unit_of_work() as uow:
        complaint = complaints.file_for_member(
            uow.session, member_number=shop.member.member_number, partner_code="shop", category="points_missing",
            description="points never came", purchase_id=None, redemption_reference=None, now=now, actor=A)
        uow.commit()
    _over_limit(shop.hub, "shop")
    arguments = {"member_number": shop.member.member_number, "direction": "credit", "points": 200,
                 "reason": "sorry", "complaint_id": complaint.id, "policy": policy, "actor": A}
    with shop.hub.unit_of_work() as uow, pytest.raises(CreditLimitReached):
        goodwill.request_goodwill(uow.session, now=now, funded_by="shop", **arguments)  # type: ignore[arg-type]
    with shop.hub.unit_of_work() as uow:
        assert uow.session.scalar(select(func.count()).select_from(GoodwillRequest)) == 0
        posted = goodwill.request_goodwill(uow.session, now=now, funded_by="hub", **arguments)  # type: ignore[arg-type]
        uow.commit()
    assert posted.status == "posted"


def test_a_joint_campaign_skips_its_award_when_a_funder_is_over_its_limit_and_the_purchase_still_earns(shop):
    from alliance.models import CampaignAward
    from alliance.services import campaigns
    from tests.factories import make_partner

    now = datetime.now(timezone.utc)
    for code in ("alpha", "bravo"):
        make_partner(shop.hub, now=wall_clock_partner_time(), code=code)
    with shop.hub.unit_of_work() as uow:
        campaigns.add_campaign(uow.session, now=now - timedelta(hours=2), actor=A, code="shop", name="Joint",
                               funded_by="joint", multiplier=Decimal("1"), bonus_points=10, min_amount_minor=0,
                               starts_at=now - timedelta(hours=1), ends_at=now + timedelta(days=1),
                               funders=[("alpha", 5000), ("bravo", 5000)])
        uow.commit()
    assert _earn(shop, "r-1").body["points"]["total"] == PURCHASE_COST + 10
    _over_limit(shop.hub, "bravo")
    skipped = _earn(shop, "r-2")
    assert skipped.status == 201, skipped.body
    assert skipped.body["points"]["total"] == PURCHASE_COST and skipped.body["breakdown"]["campaigns"] == []
    with shop.hub.unit_of_work() as uow:
        assert uow.session.scalar(select(func.count()).select_from(CampaignAward)) == 2  # only r-1's two shares


# ---------------------------------------------------------------- the console


def test_the_console_shows_limits_exposure_and_alerts_to_finance_and_partner_managers_only(shop):
    from tests.console_support import signed_in, text_of

    assert _earn(shop, "r-1").status == 201
    _set_limit(shop, 100)  # over at once: one alert
    _set_limit(shop, 5_000)  # a raise, waiting
    for username, role in (("fiona", "finance"), ("pam", "partner_manager")):
        browser = signed_in(shop.app, username, role)
        listing = browser.get("/console/credit")
        assert listing.status_code == 200
        page = text_of(listing)
        assert "Partners with a limit" in page and "shop" in page and "at its limit: issuing refused" in page
        assert "reached its limit" in page
        html = listing.get_data(as_text=True)
        assert "<caption>" in html and 'scope="row"' in html and 'data-label="Exposure"' in html
        detail = browser.get("/console/partners/shop/credit")
        assert detail.status_code == 200
        text = text_of(detail)
        assert "Waiting for a second person" in text and "credit review" in text and "reached its limit" in text
    refused = signed_in(shop.app, "cass", "customer_service").get("/console/credit")
    assert refused.status_code == 403


def test_the_warning_percent_setting_is_a_whole_number_from_1_to_100():
    from alliance.config import Settings
    from alliance.domain.errors import ConfigurationError

    assert Settings().credit_warning_percent == 80
    assert Settings.from_env({"ALLIANCE_CREDIT_WARNING_PERCENT": "90"}).credit_warning_percent == 90
    for value in ("0", "101"):
        with pytest.raises(ConfigurationError):
            Settings.from_env({"ALLIANCE_CREDIT_WARNING_PERCENT": value})
