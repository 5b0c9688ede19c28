"""``alliance seed-demo``: five months of activity through the real services, on both databases.

The demo seeds once per module and database (seeding plays a whole history); each test
reads what it needs and changes nothing.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timezone

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from alliance.extensions import hub_state
from alliance.models import (
    Adjustment,
    AuditLogEntry,
    BehaviourEvent,
    Campaign,
    CampaignAward,
    Complaint,
    CouponSeries,
    CouponUse,
    GoodwillRequest,
    GradeAlert,
    GradePeriod,
    JournalTransaction,
    Member,
    MemberTierChange,
    Partner,
    PointLot,
    Purchase,
    ReconciliationReport,
    RedemptionHold,
    Reward,
    RewardOrder,
    RewardVoucherCode,
    RiskDecision,
    SettlementRun,
    SettlementStatement,
    SettlementStatementLine,
    StatementEvent,
    StatementLineDispute,
    TierPolicyVersion,
)
from alliance.services import tier_policy
from alliance.services.demo import DEMO_STAFF_PASSWORD
from settlement.api import overdue_total
from tests.back_office_support import run_cli
from tests.console_support import ConsoleClient, text_of


@pytest.fixture
def seeded(app):  # type: ignore[no-untyped-def]
    """The app with the demo seeded, and what seeding printed."""
    result = run_cli(app, "seed-demo")
    assert result.exit_code == 0, result.output
    return app, result.output


def counts(app) -> dict[str, int]:  # type: ignore[no-untyped-def]
    """How many rows the demo's kinds of activity hold."""
    with hub_state(app).unit_of_work() as uow:
        return {model.__name__: uow.session.scalar(select(func.count()).select_from(model)) or 0
                for model in (AuditLogEntry, JournalTransaction, Member, Purchase, RedemptionHold, Complaint,
                              SettlementStatement, StatementEvent, GradePeriod, GradeAlert, ReconciliationReport,
                              Adjustment, StatementLineDispute)}


def test_the_demo_plays_months_of_activity_through_every_workflow(seeded):
    app, output = seeded
    found = counts(app)
    assert found["Member"] >= 40 and found["Purchase"] >= 500 and found["RedemptionHold"] >= 30
    assert "members" in output and "purchases" in output and "graded periods" in output
    today = datetime.now(timezone.utc).date()
    today_start = datetime.now(timezone.utc)
    with hub_state(app).unit_of_work() as uow:
        session = uow.session
        assert session.scalar(select(func.count()).select_from(GradePeriod)) >= 3
        # The risk controls held a scripted till's purchases and refused a card-testing till: a review queue.
        decided = Counter((operation, action) for operation, action in session.execute(
            select(RiskDecision.operation, RiskDecision.action)))
        assert decided[("earn", "hold")] == 4 and decided[("verification", "refuse")] == 2
        acknowledged = Counter(session.scalars(select(GradeAlert.acknowledged_at.is_not(None))))
        assert acknowledged[True] >= 1 and acknowledged[False] >= 1
        assert overdue_total(session, as_of=today) >= 1
        paid = dict(session.execute(select(StatementEvent.statement_id, func.sum(StatementEvent.amount_minor))
                                    .where(StatementEvent.kind == "paid").group_by(StatementEvent.statement_id)).all())
        nets = dict(session.execute(select(SettlementStatement.id, SettlementStatement.net_minor)).all())
        fully_paid = [statement for statement, amount in paid.items() if int(amount) == abs(nets[statement])]
        partly_paid = [statement for statement, amount in paid.items() if int(amount) < abs(nets[statement])]
        assert fully_paid and partly_paid
        discrepancies = list(session.scalars(select(ReconciliationReport.discrepancies)))
        assert 0 in discrepancies and any(number > 0 for number in discrepancies)
        states = set(session.scalars(select(Complaint.status).where(Complaint.purchase_id.is_not(None),
                                                                     Complaint.member_id.is_not(None))))
        assert len(states) >= 3, states
        adjustments = Counter(session.scalars(select(Adjustment.status)))
        assert adjustments["approved"] >= 1 and adjustments["pending"] >= 1
        assert session.scalar(select(func.count()).select_from(StatementLineDispute)) >= 1
        # Resolved complaints about missing points end in goodwill; one above the threshold awaits a second person.
        goodwill_states = Counter(session.scalars(select(GoodwillRequest.status)))
        assert goodwill_states["posted"] >= 1 and goodwill_states["pending"] == 1, goodwill_states
        # Members signed in through Café Aurora's app over the last fortnight, some at a streak's bonus.
        assert session.scalar(select(func.count()).select_from(BehaviourEvent)) >= 20
        # The operator has a joint campaign and the next tier policy version scheduled, both after the history.
        scheduled = session.scalars(select(Campaign).where(Campaign.starts_at > today_start)).all()
        assert [campaign.funded_by for campaign in scheduled] == ["joint"]
        assert session.scalar(select(func.count()).where(TierPolicyVersion.effective_from > today_start)) == 1
        assert session.scalar(select(func.max(TierPolicyVersion.version))) == 3
        # One hold is open at a till; the rest were captured, voided or expired (a reward order's hold is the
        # order's, checked with the rewards).
        assert session.scalar(select(func.count()).where(RedemptionHold.status == "open",
                                                         RedemptionHold.reference.not_like("reward:%"))) == 1
    check_campaigns_and_tiers_played(app, output)
    check_rewards_and_coupons_played(app, output)
    audited = run_cli(app, "audit")
    assert audited.exit_code == 0 and "audit passed" in audited.output, audited.output


def check_campaigns_and_tiers_played(app, output: str) -> None:  # type: ignore[no-untyped-def]
    """Campaigns ran inside the history (one joint, one out of budget, one stopped by the operator), and tier
    policy version 2, proposed during it, moved members at the nightly tiers job."""
    for kind in ("campaign awards", "campaigns stopped", "campaign budgets spent", "tier changes"):
        assert kind in output, kind
    now = datetime.now(timezone.utc)
    with hub_state(app).unit_of_work() as uow:
        session = uow.session
        played = session.scalars(select(Campaign).where(Campaign.starts_at < now).order_by(Campaign.id)).all()
        awards = session.execute(select(CampaignAward.campaign_id, CampaignAward.funder_partner_id,
                                        func.count(), func.sum(CampaignAward.points))
                                 .group_by(CampaignAward.campaign_id, CampaignAward.funder_partner_id)).all()
        awarded = {campaign_id for campaign_id, *_ in awards}
        assert len(awarded) >= 2 and awarded <= {campaign.id for campaign in played}, awards
        # The joint campaign awarded on purchases the history played, each award split into a row per funder.
        joint = [campaign for campaign in played if campaign.funded_by == "joint"]
        assert len(joint) == 1 and joint[0].target_tiers
        funders = {funder: int(points) for campaign_id, funder, _, points in awards if campaign_id == joint[0].id}
        assert len(funders) == 2 and all(points > 0 for points in funders.values()), funders
        # Its budget ran out before its end: every point of it was given, and later purchases got none.
        assert joint[0].budget_points is not None and joint[0].budget_used_points == joint[0].budget_points
        assert sum(funders.values()) == joint[0].budget_points
        last_award = session.scalar(select(func.max(CampaignAward.awarded_at))
                                    .where(CampaignAward.campaign_id == joint[0].id))
        assert last_award is not None and last_award < joint[0].ends_at and joint[0].stopped_at is None
        # The operator stopped one campaign early, saying why, and it gave nothing after.
        stopped = [campaign for campaign in played if campaign.stopped_at is not None]
        assert len(stopped) == 1 and stopped[0].stop_reason and stopped[0].stopped_at < stopped[0].ends_at
        after_stop = session.scalar(select(func.count()).where(CampaignAward.campaign_id == stopped[0].id,
                                                               CampaignAward.awarded_at >= stopped[0].stopped_at))
        assert after_stop == 0
        # Tier policy version 2 took effect inside the history, and the nightly tiers job moved members under it.
        version_2 = session.scalar(select(TierPolicyVersion).where(TierPolicyVersion.version == 2))
        assert version_2 is not None and version_2.effective_from < now
        moved = session.execute(select(MemberTierChange.member_id, MemberTierChange.reason)
                                .where(MemberTierChange.policy_version_id == version_2.id)).all()
        assert moved and all(reason for _, reason in moved)
        member_number = session.scalar(select(Member.member_number).where(Member.id == moved[0][0]))
        assert member_number is not None
        check_joint_shares_settled(session, joint[0].id)
        history = tier_policy.tier_history(session, member_number=member_number)
        assert any(change.policy_version == 2 and change.reason for change in history), history


def check_joint_shares_settled(session: Session, campaign_id: int) -> None:
    """Each funder's closed statement for the cycle of an award charges the funder for its share's points."""
    shares: Counter[tuple[int, int]] = Counter()
    for funder, awarded_at, points in session.execute(
            select(CampaignAward.funder_partner_id, CampaignAward.awarded_at, CampaignAward.points)
            .where(CampaignAward.campaign_id == campaign_id)):
        statement_id = session.scalar(
            select(SettlementStatement.id).join(SettlementRun, SettlementRun.id == SettlementStatement.run_id)
            .where(SettlementRun.partner_id == funder, SettlementRun.cycle_starts_at <= awarded_at,
                   SettlementRun.cycle_ends_at > awarded_at))
        assert statement_id is not None, (funder, awarded_at)
        shares[(funder, statement_id)] += points
    assert {funder for funder, _ in shares} == set(session.scalars(
        select(Partner.id).where(Partner.code.in_(("cafe-aurora", "fuel-stop")))))
    for (_, statement_id), points in shares.items():
        charged = session.scalar(
            select(func.sum(SettlementStatementLine.points))
            .where(SettlementStatementLine.statement_id == statement_id,
                   SettlementStatementLine.line_kind == "campaign_points_issued"))
        # Exactly the shares, on their own line: no other campaign of the demo is joint.
        assert charged == points, (statement_id, charged, points)


def check_rewards_and_coupons_played(app, output: str) -> None:  # type: ignore[no-untyped-def]
    """A catalog listed by two people; orders fulfilled, failed, returned, expired and waiting, paid with points
    earned at other partners; vouchers from the pool; bill credit the operator confirmed; coupons used at tills;
    and the suppliers' and the coupon funder's closed statements carrying their lines."""
    for kind in ("rewards listed", "voucher orders", "bill credit orders", "reward orders returned",
                 "reward orders expired", "coupons used at tills", "coupon points"):
        assert kind in output, kind
    with hub_state(app).unit_of_work() as uow:
        session = uow.session
        partner_of = dict(session.execute(select(Partner.id, Partner.code)).all())
        catalog = session.scalars(select(Reward).order_by(Reward.code)).all()
        assert {(partner_of[reward.supplier_partner_id], reward.kind) for reward in catalog} == {
            ("cafe-aurora", "goods"), ("book-nook", "voucher"), ("nova-mobile", "bill_credit")}
        assert all(reward.status == "listed" and reward.approved_by and reward.approved_by != reward.proposed_by
                   for reward in catalog)
        kind_of = {reward.id: reward.kind for reward in catalog}
        orders = session.scalars(select(RewardOrder).order_by(RewardOrder.id)).all()
        ended = Counter((kind_of[order.reward_id], order.status) for order in orders)
        assert ended[("goods", "fulfilled")] >= 3 and ended[("goods", "failed")] == 1, ended
        assert ended[("goods", "returned")] == 1 and ended[("goods", "expired")] == 1, ended
        assert ended[("voucher", "fulfilled")] >= 3 and ended[("bill_credit", "fulfilled")] >= 3, ended
        assert ended[("bill_credit", "failed")] == 1 and ended[("bill_credit", "placed")] == 1, ended
        # Each voucher item took one code from the uploaded pool, which still holds the rest.
        vouchers = [order for order in orders if kind_of[order.reward_id] == "voucher"]
        taken = Counter(session.scalars(select(RewardVoucherCode.order_id)))
        assert all(taken[order.id] == order.items for order in vouchers) and taken[None] > 0, taken
        # The operator's file named the bill each credit went on; the operator issues no points of its own, so
        # every bill credit was paid with points earned at the other partners.
        operator = next(partner_id for partner_id, code in partner_of.items() if code == "nova-mobile")
        assert all((order.fulfilment_note or "").startswith("bill ") for order in orders
                   if kind_of[order.reward_id] == "bill_credit" and order.status == "fulfilled")
        assert session.scalar(select(func.count()).where(PointLot.partner_id == operator)) == 0
        # Suppliers are reimbursed per item on the statements of the cycles their orders were fulfilled in.
        for kind, orders_of in (("rewards_supplied", orders),
                                ("rewards_returned", [order for order in orders if order.status == "returned"])):
            expected: Counter[int] = Counter()
            for order in orders_of:
                moment = order.fulfilled_at if kind == "rewards_supplied" else order.closed_at
                if moment is None:
                    continue
                statement_id = statement_covering(session, order.supplier_partner_id, moment)
                if statement_id is not None:
                    expected[statement_id] += order.amount_minor
            lines = Counter({statement_id: int(amount) for statement_id, amount in session.execute(
                select(SettlementStatementLine.statement_id, func.sum(SettlementStatementLine.amount_minor))
                .where(SettlementStatementLine.line_kind == kind)
                .group_by(SettlementStatementLine.statement_id))})
            assert lines and {statement: abs(amount) for statement, amount in lines.items()} == dict(expected), kind
        # Coupons of both series were used with purchases at tills; FuelStop's closed daily statements charge it
        # for exactly the points its coupons added, on their own line (the hub's series is its marketing cost).
        series = dict(session.execute(select(CouponSeries.id, CouponSeries.funder_partner_id)).all())
        uses = session.execute(select(CouponUse.series_id, CouponUse.purchase_id, CouponUse.points,
                                      CouponUse.used_at)).all()
        assert {series_id for series_id, *_ in uses} == set(series) and all(use.purchase_id for use in uses)
        charged: Counter[int] = Counter()
        for series_id, _, points, used_at in uses:
            funder = series[series_id]
            if funder is not None:
                assert partner_of[funder] == "fuel-stop"
                statement_id = statement_covering(session, funder, used_at)
                assert statement_id is not None, used_at
                charged[statement_id] += points
        coupon_lines = dict(session.execute(
            select(SettlementStatementLine.statement_id, func.sum(SettlementStatementLine.points))
            .where(SettlementStatementLine.line_kind == "coupon_points_issued")
            .group_by(SettlementStatementLine.statement_id)).all())
        assert charged and {statement: int(points) for statement, points in coupon_lines.items()} == dict(charged)


def statement_covering(session: Session, partner_id: int, moment: datetime) -> int | None:
    """The partner's closed statement whose cycle holds ``moment``, if that cycle has closed."""
    return session.scalar(
        select(SettlementStatement.id).join(SettlementRun, SettlementRun.id == SettlementStatement.run_id)
        .where(SettlementRun.partner_id == partner_id, SettlementRun.cycle_starts_at <= moment,
               SettlementRun.cycle_ends_at > moment))


PAGES = (
    ("demo-finance", "/console/finance/cycles", "No closed cycles yet"),
    ("demo-finance", "/console/finance/position", "No closed statements in"),
    ("demo-finance", "/console/finance/reconciliations", "No reconciliation yet"),
    ("demo-finance", "/console/finance/approvals", "No adjustments yet"),
    ("demo-manager", "/console/partners", "No partners yet"),
    ("demo-manager", "/console/grades", "has not been graded yet"),
    ("demo-finance", "/console/finance/liability", "No points were outstanding"),
    ("demo-manager", "/console/grade-alerts", "No acknowledged alerts"),
    ("demo-manager", "/console/rewards", "The catalog is empty"),
    ("demo-manager", "/console/rewards/aurora-mug", "No member has ordered aurora-mug yet"),
    ("demo-manager", "/console/coupons", "No coupon series yet"),
    ("demo-service", "/console/complaints", "No complaints yet"),
    ("demo-service", "/console/goodwill", "No goodwill credit or correction waits for approval"),
    ("demo-admin", "/console/admin/staff", "No console logins yet"),
    ("demo-admin", "/console/admin/audit", "The audit trail is empty"),
    ("demo-risk", "/console/risk", "No decision waits for a review"),
)


def test_seeding_again_changes_nothing_and_each_roles_main_pages_show_the_demo_data(seeded):
    app, _ = seeded
    before = counts(app)
    again = run_cli(app, "seed-demo")
    assert again.exit_code == 0 and "already present" in again.output
    assert counts(app) == before
    browsers: dict[str, ConsoleClient] = {}
    for username, path, empty in PAGES:
        if username not in browsers:
            browsers[username] = ConsoleClient(app)
            assert browsers[username].login(username, DEMO_STAFF_PASSWORD).status_code == 303
        response = browsers[username].get(path)
        assert response.status_code == 200, path
        page = text_of(response)
        assert empty not in page, path
        assert "No open disputes" not in page and "No open alerts" not in page, path
