"""Each role's day in a real browser, every page scanned by axe-core and tried at 390 px wide.

Finance: cycles with the overdue ones, a statement, the position with a cycle chosen, the
reconciliation reports and the approvals. (Partner managers, customer service and the
administrator have their own walks below as their pages land.)
"""

from __future__ import annotations

from playwright.sync_api import expect

from tests.browser.test_console_flows import menu, sign_in


def test_finance_walks_the_day_and_every_page_is_accessible_on_a_phone(page, shots, console_hub):
    base_url, _ = console_hub
    sign_in(page, base_url, "fiona")
    shots.check("start")
    menu(page, "Cycles").click()
    page.get_by_role("button", name="Close due cycles").click()
    expect(page.get_by_role("status")).to_contain_text("closed into signed statements")
    shots.check("cycles")
    page.get_by_role("link", name="Due").click()
    expect(page.locator("th[aria-sort=ascending]")).to_contain_text("Due")
    page.get_by_role("link", name="Statement #", exact=False).first.click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("Statement")
    shots.check("statement")
    menu(page, "Net position").click()
    picker = page.get_by_label("Cycle end", exact=False)
    expect(picker).to_be_visible()
    shots.check("position")
    menu(page, "Reconciliation").click()
    shots.check("reconciliations")
    menu(page, "Approvals").click()
    shots.check("approvals")
    page.get_by_role("link", name="change").click()
    page.get_by_label("Time zone").select_option("Europe/Paris")
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_test_id("viewer-zone")).to_have_text("Europe/Paris")
    shots.check("preferences")
