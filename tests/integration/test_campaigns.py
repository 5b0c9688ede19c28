"""Campaigns an operator runs: joint funding split exactly, targeting, budgets, changes, stopping early.

The pipeline is the one purchase pipeline (single reports and batches); what a campaign
gave is recorded per funder in ``campaign_awards`` and posted from each funder's
points-issued account at its issue price, so settlement bills each funder its share.
"""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import func, select

from alliance.domain.earning import split_by_shares
from alliance.domain.errors import InvalidState, NotFound, ValidationFailed
from alliance.extensions import HubState
from alliance.models import (
    AuditLogEntry,
    Campaign,
    CampaignAward,
    JournalTransaction,
    Member,
    SettlementStatement,
    SettlementStatementLine,
)
from alliance.services import campaigns, purchases
from alliance.services.audit import run_audit
from tests.factories import make_member, make_partner

UTC = timezone.utc
ONBOARDED = datetime(2026, 10, 1, tzinfo=UTC)
NOW = datetime(2026, 11, 2, 10, 0, tzinfo=UTC)
ACTOR = "test:operator"


# ---------------------------------------------------------------- the split, exact to the point


def test_a_split_goes_by_largest_remainder_with_ties_to_the_first_named():
    assert split_by_shares(101, [5000, 5000]) == (51, 50)  # a tie: the first named gets the odd point
    assert split_by_shares(100, [3333, 3333, 3334]) == (33, 33, 34)
    assert split_by_shares(10, [3333, 3333, 3334]) == (3, 3, 4)  # remainders .333 .333 .334: the third wins
    assert split_by_shares(2, [3333, 3333, 3334]) == (1, 0, 1)  # .6666 .6666 .6668: third, then first named
    assert split_by_shares(0, [2500, 7500]) == (0, 0)
    with pytest.raises(ValidationFailed):
        split_by_shares(10, [5000, 4999])


@given(points=st.integers(0, 10**9), cuts=st.lists(st.integers(1, 9_999), min_size=1, max_size=6, unique=True))
def test_every_split_adds_up_and_no_share_is_off_by_a_point_or_more(points, cuts):
    bounds = [0, *sorted(cuts), 10_000]
    shares = [later - earlier for earlier, later in zip(bounds, bounds[1:], strict=False) if later > earlier]
    parts = split_by_shares(points, shares)
    assert sum(parts) == points
    for part, share in zip(parts, shares, strict=True):
        assert abs(Decimal(part) - Decimal(points) * share / 10_000) < 1


# ---------------------------------------------------------------- helpers


def _partners(hub: HubState) -> dict[str, int]:
    return {
        "shop": make_partner(hub, now=ONBOARDED, code="shop", settlement_cycle="daily", time_zone="UTC",
                             issue_price_per_point=Decimal("0.0100")),
        "alpha": make_partner(hub, now=ONBOARDED, code="alpha", settlement_cycle="daily", time_zone="UTC",
                              issue_price_per_point=Decimal("0.0125")),
        "bravo": make_partner(hub, now=ONBOARDED, code="bravo", settlement_cycle="daily", time_zone="UTC",
                              issue_price_per_point=Decimal("0.0133")),
    }


def _campaign(hub: HubState, **terms: object) -> int:
    values: dict[str, object] = {"code": "shop", "name": "Autumn", "funded_by": "hub", "multiplier": Decimal("1"),
                                 "bonus_points": 0, "min_amount_minor": 0, "starts_at": NOW - timedelta(days=1),
                                 "ends_at": NOW + timedelta(days=10)}
    values.update(terms)
    with hub.unit_of_work() as uow:
        campaign_id = campaigns.add_campaign(uow.session, now=NOW - timedelta(days=2), actor=ACTOR, **values)
        uow.commit()
    return campaign_id


def _report(hub: HubState, partner_id: int, card_number: str, receipt: str, amount_minor: int = 10_000,
            now: datetime = NOW) -> purchases.ReportedPurchase:
    report = purchases.PurchaseReport(receipt_id=receipt, card_number=card_number, amount_minor=amount_minor,
                                      currency="EUR", purchased_at=now - timedelta(minutes=5))
    with hub.unit_of_work() as uow:
        reported = purchases.report_purchase(uow.session, partner_id=partner_id, report=report, now=now,
                                             expiry_months=24)
        uow.commit()
    return reported


def _batch(hub: HubState, partner_id: int, cards: list[str], prefix: str) -> list[purchases.BatchOutcome]:
    items = [purchases.BatchItem(receipt_id=f"{prefix}-{index}", card_number=card, amount_minor=10_000,
                                 currency="EUR", purchased_at=NOW - timedelta(minutes=5))
             for index, card in enumerate(cards)]
    with hub.unit_of_work() as uow:
        outcomes = purchases.report_purchases(uow.session, partner_id=partner_id, items=items,
                                              resolve_terminal=lambda code: None, now=NOW, expiry_months=24)
        uow.commit()
    return outcomes


def _awards(hub: HubState, campaign_id: int) -> list[tuple[int | None, int]]:
    with hub.unit_of_work() as uow:
        return [tuple(row) for row in uow.session.execute(
            select(CampaignAward.funder_partner_id, CampaignAward.points)
            .where(CampaignAward.campaign_id == campaign_id)
            .order_by(CampaignAward.purchase_id, CampaignAward.position))]


def _audit_green(hub: HubState) -> None:
    with hub.unit_of_work() as uow:
        report = run_audit(uow.session)
    assert report.ok, report.first_failure


# ---------------------------------------------------------------- joint funding


def test_a_joint_campaign_charges_each_funder_exactly_its_share_at_its_own_issue_price(hub):
    ids = _partners(hub)
    member = make_member(hub, now=ONBOARDED)
    joint = _campaign(hub, name="Joint autumn", funded_by="joint", bonus_points=101,
                      funders=[("alpha", 5000), ("bravo", 5000)])

    reported = _report(hub, ids["shop"], member.card_number, "r-1")

    # 100 rule points paid by the shop; 101 bonus points split 51 / 50, the odd point to alpha (named first).
    assert (reported.points_partner, reported.points_hub) == (100, 101)
    line = reported.breakdown["campaigns"][0]
    assert line["paid_by"] == [{"partner_id": ids["alpha"], "points": 51}, {"partner_id": ids["bravo"], "points": 50}]
    assert reported.breakdown["joint_points"] == 101 and reported.breakdown["points_total"] == 201
    assert _awards(hub, joint) == [(ids["alpha"], 51), (ids["bravo"], 50)]
    with hub.unit_of_work() as uow:
        earns = {row.partner_id: (row.price_per_point, row.memo) for row in uow.session.execute(
            select(JournalTransaction.partner_id, JournalTransaction.price_per_point, JournalTransaction.memo)
            .where(JournalTransaction.member_id == member.member_id))}
        view = campaigns.campaign_view(uow.session, campaign_id=joint, now=NOW)
    assert earns[ids["alpha"]] == (Decimal("0.0125"), f"campaign {joint} share, receipt r-1")
    assert earns[ids["bravo"]] == (Decimal("0.0133"), f"campaign {joint} share, receipt r-1")
    assert view["awarded"] == {"points": 101, "awards": 1, "by_payer": [
        {"payer": "alpha", "points": 51, "currency": "EUR", "value_minor": 64},  # 51 × 1.25 = 63.75
        {"payer": "bravo", "points": 50, "currency": "EUR", "value_minor": 66},  # 50 × 1.33 = 66.5 → 66 (even)
    ]}
    assert view["funders"] == [{"partner": "alpha", "share_bp": 5000}, {"partner": "bravo", "share_bp": 5000}]
    _audit_green(hub)


def test_each_funders_statement_carries_its_share_at_its_issue_price_after_closing(hub):
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from settlement.closing import close_due_cycles
    from settlement.keys import StatementSigner, statement_key_id

    ids = _partners(hub)
    member = make_member(hub, now=ONBOARDED)
    _campaign(hub, name="Joint", funded_by="joint", bonus_points=10, funders=[("alpha", 3333), ("bravo", 6667)])
    _report(hub, ids["shop"], member.card_number, "r-1")  # 10 → 3.333 / 6.667: alpha 3, bravo 7
    key = Ed25519PrivateKey.generate()
    signer = StatementSigner(signing_key=key, key_id=statement_key_id(key.public_key()), payment_terms_days=14)
    close_due_cycles(hub.session_factory, now=NOW + timedelta(days=1), signer=signer)
    with hub.unit_of_work() as uow:
        lines = {tuple(row) for row in uow.session.execute(
            select(SettlementStatement.partner_id, SettlementStatementLine.line_kind,
                   SettlementStatementLine.price_per_point, SettlementStatementLine.points)
            .join(SettlementStatement, SettlementStatement.id == SettlementStatementLine.statement_id)
            .where(SettlementStatementLine.points.is_not(None)))}
    # The funders' shares on a line of their own; the reporting partner's points on its issuance line.
    assert lines == {(ids["alpha"], "campaign_points_issued", Decimal("0.0125"), 3),
                     (ids["bravo"], "campaign_points_issued", Decimal("0.0133"), 7),
                     (ids["shop"], "points_issued", Decimal("0.0100"), 100)}
    _audit_green(hub)


def test_a_refund_claws_back_each_joint_share_from_its_own_earn(hub):
    ids = _partners(hub)
    member = make_member(hub, now=ONBOARDED)
    _campaign(hub, name="Joint", funded_by="joint", bonus_points=11, funders=[("alpha", 5000), ("bravo", 5000)])
    _report(hub, ids["shop"], member.card_number, "r-1")
    with hub.unit_of_work() as uow:
        outcome = purchases.refund_purchase(uow.session, partner_id=ids["shop"], receipt_id="r-1", refund_id="f-1",
                                            amount_minor=10_000, now=NOW + timedelta(minutes=1))
        uow.commit()
    assert outcome.refund.points_recovered == 111 and outcome.refund.points_unrecovered == 0
    _audit_green(hub)


def test_joint_campaign_refusals_leave_the_books_unchanged(hub):
    _partners(hub)
    with hub.unit_of_work() as uow:
        before = uow.session.scalar(select(func.count()).select_from(Campaign))
    for terms in ({"funders": [("alpha", 5000), ("bravo", 4000)]},  # shares not summing to the whole
                  {"funders": [("alpha", 10000)]},  # one funder is not joint
                  {"funders": []},  # none
                  {"funders": [("alpha", 5000), ("ghost", 5000)]}):  # an unknown partner
        with pytest.raises((ValidationFailed, NotFound)):
            _campaign(hub, funded_by="joint", bonus_points=5, **terms)
    with pytest.raises(ValidationFailed):
        _campaign(hub, funded_by="hub", bonus_points=5, funders=[("alpha", 5000), ("bravo", 5000)])
    with hub.unit_of_work() as uow:
        assert uow.session.scalar(select(func.count()).select_from(Campaign)) == before


# ---------------------------------------------------------------- targeting


def test_targeting_by_tier_tenure_and_segment(hub):
    ids = _partners(hub)
    veteran = make_member(hub, now=ONBOARDED - timedelta(days=400))
    newcomer = make_member(hub, now=NOW - timedelta(days=3))
    with hub.unit_of_work() as uow:
        uow.session.get_one(Member, veteran.member_id).tier = "gold"
        uow.commit()
    gold = _campaign(hub, name="Gold only", bonus_points=5, target_tiers=["gold", "diamond"])
    loyal = _campaign(hub, name="A year with us", bonus_points=7, min_tenure_months=12)
    listed = _campaign(hub, name="Listed", bonus_points=11, segment_name="win-back",
                       segment_members=[newcomer.member_number])

    veteran_earn = _report(hub, ids["shop"], veteran.card_number, "v-1")
    newcomer_earn = _report(hub, ids["shop"], newcomer.card_number, "n-1")

    assert sorted(line["name"] for line in veteran_earn.breakdown["campaigns"]) == ["A year with us", "Gold only"]
    assert [line["name"] for line in newcomer_earn.breakdown["campaigns"]] == ["Listed"]
    assert _awards(hub, gold) == [(None, 5)] and _awards(hub, loyal) == [(None, 7)]
    assert _awards(hub, listed) == [(None, 11)]
    # The batch path targets the same way.
    outcomes = _batch(hub, ids["shop"], [veteran.card_number, newcomer.card_number], "b")
    assert [sorted(line["name"] for line in outcome.purchase.breakdown["campaigns"]) for outcome in outcomes] == [
        ["A year with us", "Gold only"], ["Listed"]]
    with pytest.raises(ValidationFailed):
        _campaign(hub, name="Nobody", bonus_points=1, target_tiers=["platinum"])
    with pytest.raises(ValidationFailed):
        _campaign(hub, name="Ghosts", bonus_points=1, segment_name="x", segment_members=["00000000000000ff"])


# ---------------------------------------------------------------- budgets


def test_a_budget_is_never_exceeded_an_award_that_would_pass_it_is_skipped(hub):
    ids = _partners(hub)
    members = [make_member(hub, now=ONBOARDED) for _ in range(4)]
    capped = _campaign(hub, name="Capped", bonus_points=40, budget_points=100)

    first = _report(hub, ids["shop"], members[0].card_number, "r-1")
    second = _report(hub, ids["shop"], members[1].card_number, "r-2")
    third = _report(hub, ids["shop"], members[2].card_number, "r-3")  # 80 used: 40 more would pass 100

    assert [first.points_hub, second.points_hub, third.points_hub] == [40, 40, 0]
    assert third.points_partner == 100  # the purchase itself still earns
    outcomes = _batch(hub, ids["shop"], [members[3].card_number], "b")  # the batch path skips it too
    assert outcomes[0].purchase is not None and outcomes[0].purchase.points_hub == 0
    with hub.unit_of_work() as uow:
        view = campaigns.campaign_view(uow.session, campaign_id=capped, now=NOW)
    assert (view["budget_points"], view["budget_used_points"], view["awarded"]["points"]) == (100, 80, 80)
    _audit_green(hub)


def test_a_batch_shares_the_budget_between_its_items(hub):
    ids = _partners(hub)
    members = [make_member(hub, now=ONBOARDED) for _ in range(5)]
    capped = _campaign(hub, name="Capped", bonus_points=30, budget_points=100)
    outcomes = _batch(hub, ids["shop"], [member.card_number for member in members], "b")
    assert [outcome.purchase.points_hub for outcome in outcomes if outcome.purchase] == [30, 30, 30, 0, 0]
    assert sum(points for _, points in _awards(hub, capped)) == 90


def test_under_concurrency_the_budget_is_never_exceeded(pg_hub):
    hub = pg_hub
    ids = _partners(hub)
    members = [make_member(hub, now=ONBOARDED) for _ in range(12)]
    capped = _campaign(hub, name="Rush", bonus_points=100, budget_points=500)
    start = threading.Barrier(len(members))
    errors: list[BaseException] = []

    def report(index: int) -> None:
        try:
            start.wait()
            _report(hub, ids["shop"], members[index].card_number, f"c-{index}")
        except BaseException as error:  # noqa: BLE001 - reported to the test below
            errors.append(error)

    threads = [threading.Thread(target=report, args=(index,)) for index in range(len(members))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    awards = _awards(hub, capped)
    assert len(awards) == 5 and sum(points for _, points in awards) == 500
    with hub.unit_of_work() as uow:
        assert uow.session.get_one(Campaign, capped).budget_used_points == 500
    _audit_green(hub)


# ---------------------------------------------------------------- changing and stopping


def test_a_campaign_changes_before_it_starts_and_not_after(hub):
    ids = _partners(hub)
    later = _campaign(hub, name="Later", bonus_points=5, starts_at=NOW + timedelta(days=1),
                      ends_at=NOW + timedelta(days=5))
    running = _campaign(hub, name="Now", bonus_points=5)
    with hub.unit_of_work() as uow:
        campaigns.change_campaign(uow.session, campaign_id=later, now=NOW, actor=ACTOR,
                                  changes={"bonus_points": 9, "budget_points": 50, "target_tiers": ["gold"]},
                                  funders=None)
        uow.commit()
    with hub.unit_of_work() as uow:
        view = campaigns.campaign_view(uow.session, campaign_id=later, now=NOW)
        before = campaigns.campaign_view(uow.session, campaign_id=running, now=NOW)
        with pytest.raises(InvalidState):
            campaigns.change_campaign(uow.session, campaign_id=running, now=NOW, actor=ACTOR,
                                      changes={"bonus_points": 500})
        with pytest.raises(ValidationFailed):
            campaigns.change_campaign(uow.session, campaign_id=later, now=NOW, actor=ACTOR,
                                      changes={"starts_at": NOW - timedelta(hours=1)})
    assert (view["status"], view["bonus_points"], view["budget_points"], view["target_tiers"]) == (
        "scheduled", 9, 50, ["gold"])
    with hub.unit_of_work() as uow:
        assert campaigns.campaign_view(uow.session, campaign_id=running, now=NOW) == before
        entry = uow.session.scalars(select(AuditLogEntry).where(AuditLogEntry.action == "campaign.change")).one()
    assert entry.subject == f"campaign:{later}"
    assert ids


def test_a_stopped_campaign_awards_nothing_from_then_on(hub):
    ids = _partners(hub)
    member = make_member(hub, now=ONBOARDED)
    bonus = _campaign(hub, name="Bonus", bonus_points=25)
    assert _report(hub, ids["shop"], member.card_number, "r-1").points_hub == 25
    with hub.unit_of_work() as uow:
        with pytest.raises(ValidationFailed):
            campaigns.stop_campaign(uow.session, campaign_id=bonus, reason=" ", now=NOW, actor=ACTOR)
        campaigns.stop_campaign(uow.session, campaign_id=bonus, reason="partner asked", now=NOW, actor=ACTOR)
        uow.commit()
    assert _report(hub, ids["shop"], member.card_number, "r-2", now=NOW + timedelta(minutes=1)).points_hub == 0
    assert _batch(hub, ids["shop"], [member.card_number], "b")[0].purchase.points_hub == 0
    with hub.unit_of_work() as uow:
        with pytest.raises(InvalidState):
            campaigns.stop_campaign(uow.session, campaign_id=bonus, reason="again", now=NOW, actor=ACTOR)
        view = campaigns.campaign_view(uow.session, campaign_id=bonus, now=NOW)
        entry = uow.session.scalars(select(AuditLogEntry).where(AuditLogEntry.action == "campaign.stop")).one()
        listed = campaigns.list_campaigns(uow.session, now=NOW, status="stopped")
        running = campaigns.list_campaigns(uow.session, now=NOW, status="running")
    assert (view["status"], view["stop_reason"], view["awarded"]["points"]) == ("stopped", "partner asked", 25)
    assert entry.after["reason"] == "partner asked"
    assert [row["id"] for row in listed] == [bonus] and running == []


def test_campaigns_are_listed_by_status_and_partner(hub):
    _partners(hub)
    scheduled = _campaign(hub, name="Soon", bonus_points=1, starts_at=NOW + timedelta(days=1),
                          ends_at=NOW + timedelta(days=2))
    ended = _campaign(hub, name="Over", bonus_points=1, starts_at=NOW - timedelta(days=5),
                      ends_at=NOW - timedelta(days=1))
    joint = _campaign(hub, code=None, name="Joint", funded_by="joint", bonus_points=2,
                      funders=[("alpha", 2500), ("bravo", 7500)])
    with hub.unit_of_work() as uow:
        def ids_of(**query: object) -> list[int]:
            return [row["id"] for row in campaigns.list_campaigns(uow.session, now=NOW, **query)]
        assert ids_of(status="scheduled") == [scheduled]
        assert ids_of(status="ended") == [ended]
        assert ids_of(status="running") == [joint]
        assert ids_of(partner_code="bravo") == [joint]
        assert ids_of(partner_code="shop") == [ended, scheduled]
        with pytest.raises(ValidationFailed):
            ids_of(status="paused")


# ---------------------------------------------------------------- the back-office API and the CLI


def _window(days_from_now: float = -1, length_days: float = 10) -> dict[str, str]:
    starts = datetime.now(UTC) + timedelta(days=days_from_now)
    return {"starts_at": starts.isoformat(), "ends_at": (starts + timedelta(days=length_days)).isoformat()}


def _books(hub: HubState) -> tuple[object, ...]:
    """Everything a refused campaign change must leave as it was."""
    with hub.unit_of_work() as uow:
        session = uow.session
        return (session.execute(select(Campaign.id, Campaign.name, Campaign.bonus_points, Campaign.stopped_at,
                                       Campaign.budget_points).order_by(Campaign.id)).all(),
                session.scalar(select(func.count()).select_from(AuditLogEntry)),
                session.scalar(select(func.count()).select_from(CampaignAward)))


def test_the_api_creates_lists_reads_changes_and_stops_campaigns_with_problem_json_refusals(app):
    from tests.back_office_support import BackOffice
    from tests.factories import make_signing_partner
    from tests.http_server import purchase_payload, wall_clock_partner_time
    from tests.partner_client import SignedTestClient

    bo = BackOffice(app)
    shop = make_signing_partner(bo.hub, now=wall_clock_partner_time(), code="shop")
    make_signing_partner(bo.hub, now=wall_clock_partner_time(), code="alpha", issue_price_per_point=Decimal("0.0125"))
    member_number, card = bo.enrol(name="Joint Hunter")
    joint = bo.post("/campaigns", {"name": "Joint week", "funded_by": "joint", "partner": "shop", "bonus_points": 9,
                                   "funders": [{"partner": "shop", "share_bp": 5000},
                                               {"partner": "alpha", "share_bp": 5000}],
                                   "budget_points": 1000, "target_tiers": ["standard"], "min_tenure_months": 0,
                                   "segment": {"name": "friends", "members": [member_number]}, **_window()},
                    role="partner_manager")
    assert joint.status == 201, joint.body
    later = bo.post("/campaigns", {"name": "Later", "funded_by": "hub", "bonus_points": 3, **_window(2)},
                    role="partner_manager")
    assert later.status == 201, later.body

    earned = SignedTestClient(bo.app, shop).post("/partner/v1/purchases", purchase_payload("j-1", card, 5_000))
    assert earned.status == 201, earned.body
    assert earned.body["points"]["total"] == 59  # 50 rule points and 9 joint: shop 5 (named first), alpha 4
    line = earned.body["breakdown"]["campaigns"][0]
    assert (line["campaign_id"], line["funded_by"], [share["points"] for share in line["paid_by"]]) == (
        joint.body["id"], "joint", [5, 4])

    one = bo.get(f"/campaigns/{joint.body['id']}", role="partner_manager")
    assert one.status == 200, one.body
    assert one.body["status"] == "running" and one.body["segment"] == {"name": "friends", "members": 1}
    assert one.body["awarded"]["points"] == 9 and one.body["budget_used_points"] == 9
    assert [payer["payer"] for payer in one.body["awarded"]["by_payer"]] == ["alpha", "shop"]
    listed = bo.get("/campaigns", role="partner_manager", query={"status": "scheduled"})
    assert [row["id"] for row in listed.body["campaigns"]] == [later.body["id"]]
    assert bo.get("/campaigns", role="partner_manager", query={"partner": "alpha"}).body["campaigns"][0]["id"] == \
        joint.body["id"]

    changed = bo.patch(f"/campaigns/{later.body['id']}", {"bonus_points": 4, "budget_points": 40},
                       role="partner_manager")
    assert changed.status == 200, changed.body
    assert (changed.body["bonus_points"], changed.body["budget_points"]) == (4, 40)

    before = _books(bo.hub)
    refusals = [
        bo.patch(f"/campaigns/{joint.body['id']}", {"bonus_points": 90}, role="partner_manager"),  # running
        bo.patch(f"/campaigns/{later.body['id']}", {"colour": "red"}, role="partner_manager"),
        bo.patch("/campaigns/999999", {"bonus_points": 1}, role="partner_manager"),
        bo.post(f"/campaigns/{joint.body['id']}/stop", {}, role="partner_manager"),  # no reason
        bo.post(f"/campaigns/{joint.body['id']}/stop", {"reason": "x"}, role="customer_service"),
        bo.post("/campaigns", {"name": "Split badly", "funded_by": "joint", "bonus_points": 1,
                               "funders": [{"partner": "shop", "share_bp": 5000},
                                           {"partner": "alpha", "share_bp": 4000}], **_window()},
                role="partner_manager"),
        bo.get("/campaigns", role="partner_manager", query={"status": "paused"}),
    ]
    assert [(reply.status, reply.body["code"]) for reply in refusals] == [
        (409, "invalid_state"), (422, "validation_failed"), (404, "not_found"), (422, "validation_failed"),
        (403, "role_refused"), (422, "validation_failed"), (422, "validation_failed")]
    assert all(reply.headers["Content-Type"].startswith("application/problem+json") for reply in refusals)
    assert _books(bo.hub) == before

    stopped = bo.post(f"/campaigns/{joint.body['id']}/stop", {"reason": "budget moved"}, role="partner_manager")
    assert stopped.status == 200 and stopped.body["status"] == "stopped", stopped.body
    again = bo.post(f"/campaigns/{joint.body['id']}/stop", {"reason": "again"}, role="partner_manager")
    assert (again.status, again.body["code"]) == (409, "invalid_state")
    after_stop = SignedTestClient(bo.app, shop).post("/partner/v1/purchases", purchase_payload("j-2", card, 5_000))
    assert after_stop.body["points"]["total"] == 50 and after_stop.body["breakdown"]["campaigns"] == []
    _audit_green(bo.hub)


def test_the_cli_creates_a_joint_campaign_lists_shows_and_stops_it(app, hub, tmp_path):
    from tests.back_office_support import run_cli

    _partners(hub)
    member = make_member(hub, now=ONBOARDED)
    segment = tmp_path / "segment.txt"
    segment.write_text(f"{member.member_number}\n\n")
    window = _window()
    made = run_cli(app, "campaigns", "create", "--name", "Joint CLI", "--funded-by", "joint", "--bonus-points", "7",
                   "--funder", "alpha:6000", "--funder", "bravo:4000", "--budget-points", "700", "--tier", "standard",
                   "--min-tenure-months", "1", "--segment-name", "cli-list", "--segment-file", str(segment),
                   "--starts-at", window["starts_at"], "--ends-at", window["ends_at"])
    assert made.exit_code == 0, made.output
    assert "funded jointly by alpha:6000, bravo:4000" in made.output
    bad = run_cli(app, "campaigns", "create", "--name", "Bad", "--funded-by", "joint", "--funder", "alpha",
                  "--starts-at", window["starts_at"], "--ends-at", window["ends_at"])
    assert bad.exit_code != 0 and "PARTNER:BASIS_POINTS" in bad.output
    with hub.unit_of_work() as uow:
        campaign_id = uow.session.scalar(select(Campaign.id).where(Campaign.name == "Joint CLI"))

    listed = run_cli(app, "campaigns", "list", "--status", "running")
    assert listed.exit_code == 0, listed.output
    assert "Joint CLI  [joint (alpha 60%, bravo 40%)]" in listed.output and "budget 0/700 points" in listed.output
    shown = run_cli(app, "campaigns", "show", str(campaign_id))
    assert shown.exit_code == 0 and '"segment": {' in shown.output and '"min_tenure_months": 1' in shown.output
    stopped = run_cli(app, "campaigns", "stop", str(campaign_id), "--reason", "ran out of stock")
    assert stopped.exit_code == 0, stopped.output
    assert run_cli(app, "campaigns", "list", "--status", "running").output.strip() == "no campaigns"
    again = run_cli(app, "campaigns", "stop", str(campaign_id), "--reason", "again")
    assert again.exit_code == 1 and "already been stopped" in again.output


# ---------------------------------------------------------------- the console


def _local(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M+00:00")


def test_the_console_lists_creates_changes_and_stops_campaigns_for_partner_managers(app):
    from alliance.extensions import hub_state
    from tests.console_support import ConsoleClient, audit_actions, signed_in, text_of

    hub = hub_state(app)
    manager = signed_in(app, "petra", "partner_manager")
    assert "No campaign yet" in text_of(manager.get("/console/campaigns"))
    assert signed_in(app, "carl", "customer_service").get("/console/campaigns").status_code == 403
    anonymous = ConsoleClient(app).get("/console/campaigns")
    assert anonymous.status_code in (302, 303) and "/console/login" in anonymous.headers["Location"]

    ids = _partners(hub)
    member = make_member(hub, now=ONBOARDED)
    now = datetime.now(UTC)
    made = manager.post("/console/campaigns", {
        "partner": "shop", "funded_by": "joint", "funders": "alpha 60%\nbravo 40%", "name": "Joint console",
        "bonus_points": "10", "starts_at": _local(now - timedelta(hours=1)), "ends_at": _local(now + timedelta(days=3)),
        "budget_points": "500", "tier": ["standard", "gold"], "segment_name": "", "segment_members": ""})
    assert made.status_code == 303, made.get_data(as_text=True)
    later = manager.post("/console/campaigns", {
        "partner": "", "funded_by": "hub", "name": "A later one", "bonus_points": "3",
        "starts_at": _local(now + timedelta(days=2)), "ends_at": _local(now + timedelta(days=4))})
    assert later.status_code == 303
    with hub.unit_of_work() as uow:
        joint_id, later_id = uow.session.scalars(select(Campaign.id).order_by(Campaign.id)).all()
    _report(hub, ids["shop"], member.card_number, "c-1", now=now)

    page = text_of(manager.get("/console/campaigns"))
    assert "Joint console" in page and "alpha 60%, bravo 40%" in page and "10 of 500 points" in page
    by_name = manager.get("/console/campaigns", sort="name", order="asc").get_data(as_text=True)
    assert by_name.index("A later one") < by_name.index("Joint console")
    assert 'aria-sort="ascending"' in by_name
    detail = text_of(manager.get(f"/console/campaigns/{joint_id}"))
    assert "6 points" in detail and "4 points" in detail and member.member_number in detail
    assert "A running campaign cannot be changed" in detail

    changed = manager.post(f"/console/campaigns/{later_id}/change", {
        "name": "A later one", "multiplier": "1", "bonus_points": "8", "min_amount_minor": "0",
        "starts_at": _local(now + timedelta(days=2)), "ends_at": _local(now + timedelta(days=5))})
    assert changed.status_code == 303
    refused = manager.post(f"/console/campaigns/{joint_id}/change", {
        "name": "Joint console", "bonus_points": "99", "starts_at": _local(now + timedelta(days=1)),
        "ends_at": _local(now + timedelta(days=5))})
    assert refused.status_code == 303
    assert "only a campaign that has not started can change" in text_of(manager.client.get(refused.headers["Location"]))

    before = _books(hub)
    assert manager.post(f"/console/campaigns/{joint_id}/stop", {"reason": "no box ticked"}).status_code == 400
    assert manager.post(f"/console/campaigns/{joint_id}/stop", {"reason": "r", "confirm": "yes"},
                        csrf=None).status_code in (400, 403)
    assert manager.post("/console/campaigns", {"funded_by": "joint", "funders": "alpha sixty", "name": "x",
                                               "starts_at": _local(now), "ends_at": _local(now)}).status_code == 400
    assert _books(hub) == before
    stopped = manager.post(f"/console/campaigns/{joint_id}/stop", {"reason": "stock ran out", "confirm": "yes"})
    assert stopped.status_code == 303
    assert "stopped" in text_of(manager.client.get(stopped.headers["Location"]))
    with hub.unit_of_work() as uow:
        assert uow.session.get_one(Campaign, later_id).bonus_points == 8
        assert uow.session.get_one(Campaign, joint_id).stop_reason == "stock ran out"
    assert [(actor, action) for actor, action, _ in audit_actions(hub) if action.startswith("campaign.")] == [
        ("console:petra", "campaign.create"), ("console:petra", "campaign.create"),
        ("console:petra", "campaign.change"), ("console:petra", "campaign.stop")]
    assert "No campaign is running" in text_of(manager.get("/console/campaigns", status="running"))
