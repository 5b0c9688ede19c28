"""A partner manager runs a joint campaign in a real browser: adds it (funders and shares, tiers, budget), sees
it scheduled, changes a term before the start, stops it with a confirmed reason and sees it stopped; shares that
do not add up to 100% are refused with a readable message and nothing created. Every step is scanned by
axe-core and tried at 390 px wide.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from playwright.sync_api import expect
from sqlalchemy import func, select

from alliance.extensions import hub_state
from alliance.models import Campaign
from tests.browser.test_console_flows import menu, sign_in

NAME = "Spring fill-up: bonus points on 20 EUR or more"
STOP_REASON = "FuelStop withdrew its share after the price change."


def _campaign_count(pg_app) -> int:  # type: ignore[no-untyped-def]
    with hub_state(pg_app).unit_of_work() as uow:
        return uow.session.scalar(select(func.count()).select_from(Campaign)) or 0


def _fill_joint_campaign(page, funders: str) -> None:  # type: ignore[no-untyped-def]
    """Fill the create form with a joint campaign at every partner, for silver and gold members, with a budget."""
    form = page.locator("form", has=page.get_by_role("button", name="Create the campaign"))
    starts = (datetime.now(timezone.utc) + timedelta(days=10)).replace(hour=0, minute=0)
    form.locator("select[name=partner]").select_option("")
    form.locator("select[name=funded_by]").select_option("joint")
    form.get_by_label("Joint funders", exact=False).fill(funders)
    form.locator("input[name=name]").fill(NAME)
    form.locator("input[name=bonus_points]").fill("40")
    form.locator("input[name=min_amount_minor]").fill("2000")
    form.locator("input[name=starts_at]").fill(starts.strftime("%Y-%m-%dT%H:%M"))
    form.locator("input[name=ends_at]").fill((starts + timedelta(days=30)).strftime("%Y-%m-%dT%H:%M"))
    form.locator("input[name=budget_points]").fill("1000")
    form.get_by_role("checkbox", name="silver").check()
    form.get_by_role("checkbox", name="gold").check()


def test_a_partner_manager_adds_changes_and_stops_a_joint_campaign(page, shots, console_hub, pg_app):
    base_url, _ = console_hub
    before = _campaign_count(pg_app)
    sign_in(page, base_url, "paco")
    menu(page, "Campaigns").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("Campaigns")
    shots.check("campaigns")

    # Shares of 60% and 30%: refused, said in words, and nothing created.
    _fill_joint_campaign(page, "aurora 60%\nfuel 30%")
    page.get_by_role("button", name="Create the campaign").click()
    expect(page.get_by_role("alert")).to_contain_text("10,000 basis points (100%); these add up to 9,000 (90%)")
    expect(page.get_by_role("cell", name=NAME, exact=False)).to_have_count(0)
    assert _campaign_count(pg_app) == before
    shots.check("shares-refused")

    # The same campaign with shares adding up to 100%: created and listed as scheduled, with its payers.
    _fill_joint_campaign(page, "aurora 60%\nfuel 40%")
    page.get_by_role("button", name="Create the campaign").click()
    expect(page.get_by_role("status")).to_contain_text("is created")
    assert _campaign_count(pg_app) == before + 1
    row = page.locator("tbody tr", has_text=NAME)
    expect(row).to_have_count(1)
    expect(row.locator("td[data-label=Status]")).to_have_text("scheduled")
    expect(row.locator("td[data-label='Paid by']")).to_have_text("aurora 60%, fuel 40%")
    expect(row.locator("td[data-label='Budget used']")).to_contain_text("0 of 1,000")
    shots.check("created")

    # Before it starts, the bonus changes from 40 to 60 points a purchase.
    row.get_by_role("link").first.click()
    expect(page.get_by_role("heading", level=1)).to_contain_text(NAME)
    expect(page.locator("dd").filter(has_text="tiers silver, gold")).to_have_count(1)
    change_form = page.locator("form", has=page.get_by_role("button", name="Save the changes"))
    change_form.locator("input[name=bonus_points]").fill("60")
    change_form.get_by_role("button", name="Save the changes").click()
    expect(page.get_by_role("status")).to_contain_text("is changed")
    expect(page.locator("dd").filter(has_text="a purchase")).to_contain_text("60")
    shots.check("changed")

    # Stopped early, with the confirmation ticked and the reason given.
    stop = page.locator("details.confirm").first
    stop.locator("summary").click()
    stop.get_by_label("Reason (kept in the audit trail)").fill(STOP_REASON)
    stop.get_by_role("checkbox").check()
    shots.check("stop-confirmation")
    stop.get_by_role("button", name="Stop the campaign").click()
    expect(page.get_by_role("status")).to_contain_text("is stopped")
    expect(page.locator("dd").filter(has_text=STOP_REASON)).to_contain_text("stopped")
    expect(page.get_by_role("button", name="Save the changes")).to_have_count(0)
    shots.check("stopped")

    page.get_by_role("link", name="All campaigns").click()
    row = page.locator("tbody tr", has_text=NAME)
    expect(row.locator("td[data-label=Status]")).to_have_text("stopped")
    shots.check("listed-stopped")
    with hub_state(pg_app).unit_of_work() as uow:
        stored = uow.session.scalars(select(Campaign).where(Campaign.name == NAME)).one()
        assert stored.bonus_points == 60 and stored.stop_reason == STOP_REASON and stored.stopped_at is not None
