"""A campaign budget in money: what the funders are charged for its awards at their issue prices, counted exactly.

The points are priced per award at the payer's issue price in force and the exact cost
(fractions of a minor unit) is added under the campaign's row lock; an award whose cost
would pass what is left is skipped whole. Refusals leave the database as it was.
"""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest
from sqlalchemy import func, select

from alliance.domain.errors import InvalidState, ValidationFailed
from alliance.extensions import HubState
from alliance.models import AuditLogEntry, Campaign, CampaignAward
from alliance.services import campaigns, purchases
from alliance.services.audit import run_audit
from tests.factories import make_member, make_partner

UTC = timezone.utc
ONBOARDED = datetime(2026, 10, 1, tzinfo=UTC)
NOW = datetime(2026, 11, 2, 10, 0, tzinfo=UTC)
ACTOR = "test:operator"


def _partners(hub: HubState) -> dict[str, int]:
    return {
        "shop": make_partner(hub, now=ONBOARDED, code="shop", settlement_cycle="daily", time_zone="UTC",
                             issue_price_per_point=Decimal("0.0100")),
        "alpha": make_partner(hub, now=ONBOARDED, code="alpha", settlement_cycle="daily", time_zone="UTC",
                              issue_price_per_point=Decimal("0.0125")),
        "bravo": make_partner(hub, now=ONBOARDED, code="bravo", settlement_cycle="daily", time_zone="UTC",
                              issue_price_per_point=Decimal("0.0133")),
    }


def _terms(**terms: object) -> dict[str, object]:
    values: dict[str, object] = {"code": "bravo", "name": "Money", "funded_by": "partner",
                                 "multiplier": Decimal("1"), "bonus_points": 40, "min_amount_minor": 0,
                                 "starts_at": NOW - timedelta(days=1), "ends_at": NOW + timedelta(days=10)}
    values.update(terms)
    return values


def _campaign(hub: HubState, **terms: object) -> int:
    with hub.unit_of_work() as uow:
        campaign_id = campaigns.add_campaign(uow.session, now=NOW - timedelta(days=2), actor=ACTOR, **_terms(**terms))
        uow.commit()
    return campaign_id


def _report(hub: HubState, partner_id: int, card_number: str, receipt: str,
            now: datetime = NOW) -> purchases.ReportedPurchase:
    report = purchases.PurchaseReport(receipt_id=receipt, card_number=card_number, amount_minor=10_000,
                                      currency="EUR", purchased_at=now - timedelta(minutes=5))
    with hub.unit_of_work() as uow:
        reported = purchases.report_purchase(uow.session, partner_id=partner_id, report=report, now=now,
                                             expiry_months=24)
        uow.commit()
    return reported


def _awarded_points(hub: HubState, campaign_id: int) -> list[int]:
    with hub.unit_of_work() as uow:
        return list(uow.session.scalars(select(CampaignAward.points).where(CampaignAward.campaign_id == campaign_id)
                                        .order_by(CampaignAward.purchase_id, CampaignAward.position)))


def _view(hub: HubState, campaign_id: int) -> dict[str, object]:
    with hub.unit_of_work() as uow:
        return campaigns.campaign_view(uow.session, campaign_id=campaign_id, now=NOW)


def _books(hub: HubState) -> tuple[object, ...]:
    """Everything a refused budget must leave as it was."""
    with hub.unit_of_work() as uow:
        session = uow.session
        return (session.execute(select(Campaign.id, Campaign.name, Campaign.budget_points, Campaign.budget_minor,
                                       Campaign.budget_currency, Campaign.budget_used_amount)
                                .order_by(Campaign.id)).all(),
                session.scalar(select(func.count()).select_from(AuditLogEntry)),
                session.scalar(select(func.count()).select_from(CampaignAward)))


def _audit_green(hub: HubState) -> None:
    with hub.unit_of_work() as uow:
        report = run_audit(uow.session)
    assert report.ok, report.first_failure


# ---------------------------------------------------------------- counting


def test_awards_stop_exactly_when_the_next_would_pass_the_money_budget_counted_exactly(hub):
    ids = _partners(hub)
    members = [make_member(hub, now=ONBOARDED) for _ in range(4)]
    # 40 points at bravo's 0.0133 EUR cost 53.2 cents each: 53.2, 106.4, and 159.6 would pass 107.
    capped = _campaign(hub, budget_minor=107, budget_currency="EUR")
    reported = [_report(hub, ids["bravo"], member.card_number, f"r-{index}") for index, member in enumerate(members)]

    assert [purchase.points_partner for purchase in reported] == [140, 140, 100, 100]  # the purchase still earns
    assert _awarded_points(hub, capped) == [40, 40]
    view = _view(hub, capped)
    # Exact, not rounded per award (53 + 53 would be 106).
    assert view["budget_used_amount"] == Decimal("106.4")
    assert (view["budget_minor"], view["budget_currency"], view["budget_used_minor"], view["budget_left_minor"]) == (
        107, "EUR", 106, 1)
    assert view["awarded"]["by_payer"][0]["value_minor"] == 106
    _audit_green(hub)


def test_a_joint_money_budget_counts_each_funder_at_its_own_issue_price(hub):
    ids = _partners(hub)
    members = [make_member(hub, now=ONBOARDED) for _ in range(3)]
    # 10 points split 5/5: alpha 5 x 1.25 + bravo 5 x 1.33 = 12.90 cents an award; a third would pass 30.
    joint = _campaign(hub, code="shop", funded_by="joint", bonus_points=10, funders=[("alpha", 5000), ("bravo", 5000)],
                      budget_minor=30, budget_currency="EUR")
    for index, member in enumerate(members):
        _report(hub, ids["shop"], member.card_number, f"j-{index}")
    assert _awarded_points(hub, joint) == [5, 5, 5, 5]
    assert _view(hub, joint)["budget_used_amount"] == Decimal("25.8")
    _audit_green(hub)


def test_a_batch_shares_the_money_budget_between_its_items(hub):
    ids = _partners(hub)
    members = [make_member(hub, now=ONBOARDED) for _ in range(4)]
    capped = _campaign(hub, budget_minor=107, budget_currency="EUR")
    items = [purchases.BatchItem(receipt_id=f"b-{index}", card_number=member.card_number, amount_minor=10_000,
                                 currency="EUR", purchased_at=NOW - timedelta(minutes=5))
             for index, member in enumerate(members)]
    with hub.unit_of_work() as uow:
        outcomes = purchases.report_purchases(uow.session, partner_id=ids["bravo"], items=items,
                                              resolve_terminal=lambda code: None, now=NOW, expiry_months=24)
        uow.commit()
    assert [outcome.purchase.points_partner for outcome in outcomes if outcome.purchase] == [140, 140, 100, 100]
    assert _view(hub, capped)["budget_used_amount"] == Decimal("106.4")


def test_under_concurrency_the_money_budget_is_never_exceeded(pg_hub):
    hub = pg_hub
    ids = _partners(hub)
    members = [make_member(hub, now=ONBOARDED) for _ in range(12)]
    # 100 points at 0.0133 EUR: 133 cents an award; 5 fit in 700 (665), a sixth would pass.
    capped = _campaign(hub, name="Rush", bonus_points=100, budget_minor=700, budget_currency="EUR")
    start = threading.Barrier(len(members))
    errors: list[BaseException] = []

    def report(index: int) -> None:
        try:
            start.wait()
            _report(hub, ids["bravo"], members[index].card_number, f"c-{index}")
        except BaseException as error:  # noqa: BLE001 - reported to the test below
            errors.append(error)

    threads = [threading.Thread(target=report, args=(index,)) for index in range(len(members))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert _awarded_points(hub, capped) == [100] * 5
    with hub.unit_of_work() as uow:
        assert uow.session.get_one(Campaign, capped).budget_used_amount == Decimal("665")
    _audit_green(hub)


# ---------------------------------------------------------------- setting, changing, refusing


def test_a_money_budget_is_set_read_changed_before_the_start_and_audited(hub):
    _partners(hub)
    later = _campaign(hub, starts_at=NOW + timedelta(days=1), budget_minor=50_000, budget_currency="EUR")
    view = _view(hub, later)
    assert (view["budget_minor"], view["budget_currency"], view["budget_used_amount"], view["budget_points"]) == (
        50_000, "EUR", Decimal(0), None)
    with hub.unit_of_work() as uow:
        campaigns.change_campaign(uow.session, campaign_id=later, changes={"budget_minor": 75_000}, now=NOW,
                                  actor=ACTOR)
        uow.commit()
    assert _view(hub, later)["budget_minor"] == 75_000
    with hub.unit_of_work() as uow:  # from money to points: the money budget is removed in the same change
        campaigns.change_campaign(uow.session, campaign_id=later, now=NOW, actor=ACTOR,
                                  changes={"budget_minor": None, "budget_currency": None, "budget_points": 900})
        uow.commit()
    assert (_view(hub, later)["budget_minor"], _view(hub, later)["budget_points"]) == (None, 900)
    with hub.unit_of_work() as uow:
        entries = uow.session.scalars(select(AuditLogEntry).where(AuditLogEntry.subject == f"campaign:{later}")
                                      .order_by(AuditLogEntry.id)).all()
    assert [entry.action for entry in entries] == ["campaign.create", "campaign.change", "campaign.change"]
    assert entries[0].after["budget_currency"] == "EUR" and entries[0].after["budget_used_amount"] == "0.00000000"
    assert entries[1].before["budget_minor"] == 50_000 and entries[1].after["budget_minor"] == 75_000
    assert entries[2].after["budget_currency"] is None and entries[2].after["budget_points"] == 900


@pytest.mark.parametrize(("terms", "words"), [
    ({"code": "shop", "funded_by": "hub"}, "give it a budget in points instead"),
    ({"budget_points": 500}, "a budget in points or a budget in money, not both"),
    ({"budget_minor": 0}, "at least one"),
    ({"budget_minor": -5}, "at least one"),
    ({"budget_minor": 10**12}, "at most"),
    ({"budget_currency": None}, "both its amount and its currency"),
    ({"budget_currency": "eur"}, "three-letter"),
    ({"budget_currency": "USD"}, "funder bravo is charged in EUR"),
])
def test_money_budget_refusals_leave_the_database_unchanged(hub, terms, words):
    _partners(hub)
    before = _books(hub)
    with hub.unit_of_work() as uow, pytest.raises(ValidationFailed, match=words):
        campaigns.add_campaign(uow.session, now=NOW, actor=ACTOR,
                               **_terms(**{"budget_minor": 10_000, "budget_currency": "EUR", **terms}))
    assert _books(hub) == before


def test_a_joint_money_budget_is_refused_when_a_funder_pays_in_another_currency(hub):
    _partners(hub)
    make_partner(hub, now=ONBOARDED, code="dollar", currency="USD", time_zone="UTC",
                 issue_price_per_point=Decimal("0.0100"))
    before = _books(hub)
    with hub.unit_of_work() as uow, pytest.raises(ValidationFailed, match="funder dollar is charged in USD"):
        campaigns.add_campaign(uow.session, now=NOW, actor=ACTOR, **_terms(
            code="shop", funded_by="joint", funders=[("alpha", 5000), ("dollar", 5000)], budget_minor=10_000,
            budget_currency="EUR"))
    assert _books(hub) == before


def test_a_money_budget_cannot_change_once_the_campaign_runs(hub):
    _partners(hub)
    running = _campaign(hub, budget_minor=10_000, budget_currency="EUR")
    before = _books(hub)
    with hub.unit_of_work() as uow, pytest.raises(InvalidState, match="only a campaign that has not started"):
        campaigns.change_campaign(uow.session, campaign_id=running, changes={"budget_minor": 20_000}, now=NOW,
                                  actor=ACTOR)
    assert _books(hub) == before


# ---------------------------------------------------------------- the API, the CLI and the console


def test_the_api_sets_and_reads_a_money_budget_and_the_signed_earn_spends_it(app):
    from tests.back_office_support import BackOffice
    from tests.factories import make_signing_partner
    from tests.http_server import purchase_payload, wall_clock_partner_time
    from tests.partner_client import SignedTestClient

    bo = BackOffice(app)
    shop = make_signing_partner(bo.hub, now=wall_clock_partner_time(), code="shop",
                                issue_price_per_point=Decimal("0.0133"))
    _, card = bo.enrol(name="Money Hunter")
    starts = datetime.now(UTC) - timedelta(days=1)
    window = {"starts_at": starts.isoformat(), "ends_at": (starts + timedelta(days=10)).isoformat()}
    hub_money = bo.post("/campaigns", {"name": "Hub money", "funded_by": "hub", "bonus_points": 9,
                                       "budget_minor": 500, "budget_currency": "EUR", **window},
                        role="partner_manager")
    assert hub_money.status == 422 and "budget in points instead" in str(hub_money.body)
    made = bo.post("/campaigns", {"name": "Money week", "funded_by": "partner", "partner": "shop",
                                  "bonus_points": 40, "budget_minor": 107, "budget_currency": "EUR", **window},
                   role="partner_manager")
    assert made.status == 201, made.body
    client = SignedTestClient(bo.app, shop)
    totals = [client.post("/partner/v1/purchases", purchase_payload(f"m-{index}", card, 5_000)).body["points"]["total"]
              for index in range(3)]
    assert totals == [90, 90, 50]  # 50 rule points; 40 bonus twice (53.2 cents each), the third would pass 107
    read = bo.get(f"/campaigns/{made.body['id']}", role="partner_manager")
    assert read.status == 200, read.body
    assert (read.body["budget_minor"], read.body["budget_currency"], read.body["budget_used_amount"],
            read.body["budget_used_minor"], read.body["budget_left_minor"]) == (107, "EUR", "106.40000000", 106, 1)


def test_the_cli_creates_a_money_budget_and_refuses_too_many_decimals(app, hub):
    from tests.back_office_support import run_cli

    _partners(hub)
    starts = datetime.now(UTC) - timedelta(days=1)
    window = ["--starts-at", starts.isoformat(), "--ends-at", (starts + timedelta(days=10)).isoformat()]
    before = _books(hub)
    bad = run_cli(app, "campaigns", "create", "--name", "Bad", "--funded-by", "partner", "--partner", "bravo",
                  "--budget-money", "500.001", "--budget-currency", "EUR", *window)
    assert bad.exit_code != 0 and "more decimals than EUR" in bad.output
    alone = run_cli(app, "campaigns", "create", "--name", "Bad", "--funded-by", "partner", "--partner", "bravo",
                    "--budget-money", "500.00", *window)
    assert alone.exit_code != 0 and "--budget-currency" in alone.output
    assert _books(hub) == before
    made = run_cli(app, "campaigns", "create", "--name", "Money CLI", "--funded-by", "partner", "--partner", "bravo",
                   "--bonus-points", "5", "--budget-money", "500.00", "--budget-currency", "EUR", *window)
    assert made.exit_code == 0, made.output
    listed = run_cli(app, "campaigns", "list", "--status", "running")
    assert "budget 0.00/500.00 EUR (500.00 left)" in listed.output, listed.output


def test_the_console_form_sets_changes_and_shows_a_money_budget(app):
    from alliance.extensions import hub_state
    from tests.console_support import signed_in, text_of

    hub = hub_state(app)
    manager = signed_in(app, "petra", "partner_manager")
    ids = _partners(hub)
    member = make_member(hub, now=ONBOARDED)
    now = datetime.now(UTC)
    stamp = "%Y-%m-%dT%H:%M+00:00"
    form = {"partner": "bravo", "funded_by": "partner", "name": "Console money", "bonus_points": "40",
            "starts_at": (now - timedelta(hours=1)).strftime(stamp),
            "ends_at": (now + timedelta(days=3)).strftime(stamp),
            "budget_money": "1,000.00", "budget_currency": "eur"}
    before = _books(hub)
    assert manager.post("/console/campaigns", {**form, "budget_money": "10.005"}).status_code == 400
    assert manager.post("/console/campaigns", {**form, "budget_currency": ""}).status_code == 400
    assert _books(hub) == before
    made = manager.post("/console/campaigns", form)
    assert made.status_code == 303, made.get_data(as_text=True)
    with hub.unit_of_work() as uow:
        campaign = uow.session.scalars(select(Campaign).where(Campaign.name == "Console money")).one()
        assert (campaign.budget_minor, campaign.budget_currency) == (100_000, "EUR")
    _report(hub, ids["bravo"], member.card_number, "c-1", now=now)
    page = text_of(manager.get("/console/campaigns"))
    assert "0.53 EUR of 1,000.00 EUR (999.47 EUR left)" in page, page
    detail = text_of(manager.get(f"/console/campaigns/{campaign.id}"))
    assert "0.53 EUR of 1,000.00 EUR spent, 999.47 EUR left" in detail

    later = manager.post("/console/campaigns", {**form, "name": "Later money",
                                                "starts_at": (now + timedelta(days=2)).strftime(stamp),
                                                "ends_at": (now + timedelta(days=4)).strftime(stamp)})
    assert later.status_code == 303
    with hub.unit_of_work() as uow:
        later_id = uow.session.scalar(select(Campaign.id).where(Campaign.name == "Later money"))
    form_page = manager.get(f"/console/campaigns/{later_id}").get_data(as_text=True)
    assert 'name="budget_money"' in form_page and 'value="1000.00"' in form_page
    changed = manager.post(f"/console/campaigns/{later_id}/change", {
        "name": "Later money", "bonus_points": "40", "starts_at": (now + timedelta(days=2)).strftime(stamp),
        "ends_at": (now + timedelta(days=4)).strftime(stamp), "budget_money": "250.50", "budget_currency": "EUR"})
    assert changed.status_code == 303
    with hub.unit_of_work() as uow:
        assert uow.session.get_one(Campaign, later_id).budget_minor == 25_050
