"""A partner manager runs a coupon series in a real browser: creates it (a multiplier of 1 is refused in words and
nothing is created), issues it to members listed one a line and reads how many got one, opens it and sees its
coupons, stops it with a confirmed reason and sees it stopped. Every step is scanned by axe-core and tried at 390 px
wide.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from playwright.sync_api import expect
from sqlalchemy import func, select

from alliance.extensions import hub_state
from alliance.models import Coupon, CouponSeries, Member
from tests.browser.test_console_flows import menu, sign_in

CODE = "aurora-half-more"
TITLE = "Half as many points again at Aurora"
STOP_REASON = "Aurora ends the offer early: stock of the promoted range ran out."


def _count(pg_app, model) -> int:  # type: ignore[no-untyped-def]
    with hub_state(pg_app).unit_of_work() as uow:
        return uow.session.scalar(select(func.count()).select_from(model)) or 0


def _fill_series(page, multiplier: str) -> None:  # type: ignore[no-untyped-def]
    """Fill the create form with a multiplier series funded by aurora, valid for thirty days from yesterday."""
    form = page.locator("form", has=page.get_by_role("button", name="Create the series"))
    starts = (datetime.now(timezone.utc) - timedelta(days=1)).replace(second=0, microsecond=0)
    form.locator("input[name=code]").fill(CODE)
    form.get_by_label("Title", exact=False).fill(TITLE)
    form.get_by_label("Funded by").select_option("aurora")
    form.get_by_label("Kind").select_option("multiplier")
    form.get_by_label("Multiplier on the purchase's base points", exact=False).fill(multiplier)
    form.get_by_label("Valid from", exact=False).fill(starts.strftime("%Y-%m-%dT%H:%M"))
    form.get_by_label("Valid until", exact=False).fill((starts + timedelta(days=30)).strftime("%Y-%m-%dT%H:%M"))
    form.get_by_label("Uses per coupon", exact=False).fill("2")


def test_a_partner_manager_creates_issues_opens_and_stops_a_coupon_series(page, shots, console_hub, pg_app):
    base_url, _ = console_hub
    with hub_state(pg_app).unit_of_work() as uow:
        members = list(uow.session.scalars(select(Member.member_number).order_by(Member.id)))
    assert len(members) == 2
    sign_in(page, base_url, "paco")
    menu(page, "Coupons").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("Coupons")
    expect(page.get_by_text("No coupon series yet")).to_be_visible()
    shots.check("coupons")

    # A multiplier of 1 gives nothing: refused, said in words, and nothing created.
    _fill_series(page, "1")
    page.get_by_role("button", name="Create the series").click()
    expect(page.get_by_role("alert")).to_contain_text("a multiplier coupon multiplies by more than 1")
    expect(page.get_by_role("link", name=CODE)).to_have_count(0)
    assert _count(pg_app, CouponSeries) == 0
    shots.check("multiplier-refused")

    # With 1.5: created and listed, its terms in words.
    _fill_series(page, "1.5")
    page.get_by_role("button", name="Create the series").click()
    expect(page.get_by_role("status")).to_contain_text(f"Coupon series {CODE} is created")
    row = page.locator("tbody tr", has_text=CODE)
    expect(row).to_have_count(1)
    expect(row.locator("td[data-label=Gives]")).to_contain_text("×1.5 on the next purchase at aurora")
    expect(row.locator("td[data-label=Status]")).to_have_text("active")
    shots.check("created")

    # Opened and issued to both members, listed one a line.
    row.get_by_role("link", name=CODE).click()
    expect(page.get_by_role("heading", level=1)).to_contain_text(TITLE)
    expect(page.get_by_text("No coupon of this series has been issued yet")).to_be_visible()
    page.get_by_label("Only these members", exact=False).fill("\n".join(members))
    shots.check("issue-form")
    page.get_by_role("button", name="Issue the coupons").click()
    expect(page.get_by_role("status")).to_contain_text(
        f"Issued 2 coupons of {CODE}; 0 members of the target already had one.")
    coupons = page.locator("table", has=page.get_by_text(f"Coupons of {CODE}")).locator("tbody tr")
    expect(coupons).to_have_count(2)
    expect(coupons.first.locator("td[data-label=Uses]")).to_have_text("0 of 2")
    expect(page.locator("dd").filter(has_text="×1.5")).to_have_count(1)
    expect(page.get_by_role("link", name="Download every code as CSV")).to_be_visible()
    assert _count(pg_app, Coupon) == 2
    shots.check("issued")

    # Stopped with the confirmation ticked and the reason given.
    stop = page.locator("details.confirm").first
    stop.locator("summary").click()
    stop.get_by_label("Reason (kept in the audit trail)").fill(STOP_REASON)
    stop.get_by_role("checkbox").check()
    shots.check("stop-confirmation")
    stop.get_by_role("button", name="Stop the series").click()
    expect(page.get_by_role("status")).to_contain_text(f"Coupon series {CODE} is stopped")
    expect(page.locator("dd").filter(has_text=STOP_REASON)).to_contain_text("stopped")
    expect(page.get_by_role("button", name="Issue the coupons")).to_have_count(0)
    shots.check("stopped")

    page.get_by_role("link", name="All coupon series").click()
    expect(page.locator("tbody tr", has_text=CODE).locator("td[data-label=Status]")).to_have_text("stopped")
    shots.check("listed-stopped")
    with hub_state(pg_app).unit_of_work() as uow:
        stored = uow.session.scalars(select(CouponSeries).where(CouponSeries.code == CODE)).one()
        assert (stored.status, stored.stopped_reason, stored.stopped_by) == ("stopped", STOP_REASON, "console:paco")
