"""The console over ``alliance seed-demo``'s five months, in a real browser, as each demo login.

Each role opens its pages on the demo's data (overdue statements, a reconciliation with
differences, alerts with history, complaints about purchases, the audit trail), every page
scanned by axe-core and tried at 390 px wide, so that what ``make demo`` shows a newcomer
is what these tests checked.
"""

from __future__ import annotations

from typing import Iterator

import pytest
from playwright.sync_api import expect

from alliance.services.demo import DEMO_STAFF_PASSWORD
from tests.back_office_support import run_cli
from tests.browser.test_console_flows import LOGIN_TIMEOUT_MS, menu
from tests.http_server import serve


@pytest.fixture
def demo_hub(pg_app) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """A hub on PostgreSQL seeded by ``alliance seed-demo``, served on a real socket."""
    seeded = run_cli(pg_app, "seed-demo")
    assert seeded.exit_code == 0, seeded.output
    with serve(pg_app) as base_url:
        yield base_url


def demo_sign_in(page, base_url: str, username: str) -> None:  # type: ignore[no-untyped-def]
    page.goto(f"{base_url}/console/login")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(DEMO_STAFF_PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_test_id("signed-in-user")).to_contain_text(f"({username})", timeout=LOGIN_TIMEOUT_MS)


def test_each_demo_login_finds_its_day_in_the_demo(page, shots, demo_hub):
    base_url = demo_hub
    demo_sign_in(page, base_url, "demo-finance")
    menu(page, "Cycles").click()
    page.get_by_label("State").select_option("overdue")
    page.get_by_role("button", name="Filter").click()
    expect(page.get_by_test_id("overdue").first).to_be_visible()
    shots.check("finance-overdue")
    page.get_by_role("link", name="Statement #", exact=False).first.click()
    shots.check("finance-statement")
    menu(page, "Net position").click()
    expect(page.get_by_text("Still to pay").first).to_be_visible()
    shots.check("finance-position")
    menu(page, "Reconciliation").click()
    page.get_by_label("only with discrepancies", exact=False).check()
    page.get_by_role("button", name="Filter").click()
    page.get_by_role("link", name="Report #", exact=False).first.click()
    expect(page.get_by_text("not in the file", exact=False).or_(page.get_by_text("not at the hub", exact=False))
           .first).to_be_visible()
    shots.check("finance-reconciliation")
    menu(page, "Approvals").click()
    shots.check("finance-approvals")
    page.get_by_role("button", name="Log out").click()

    demo_sign_in(page, base_url, "demo-manager")
    menu(page, "Partners").click()
    shots.check("manager-portfolio")
    page.get_by_role("link", name="book-nook").first.click()
    shots.check("manager-partner")
    menu(page, "Grades").click()
    shots.check("manager-grades")
    menu(page, "Alerts").click()
    shots.check("manager-alerts")
    page.get_by_role("button", name="Log out").click()

    demo_sign_in(page, base_url, "demo-service")
    menu(page, "Complaints").click()
    shots.check("service-complaints")
    page.locator("td[data-label=Member] a").first.click()
    expect(page.get_by_role("heading", name="History")).to_be_visible()
    shots.check("service-member")
    page.get_by_role("button", name="Log out").click()

    demo_sign_in(page, base_url, "demo-admin")
    menu(page, "Staff").click()
    shots.check("admin-staff")
    menu(page, "Audit trail").click()
    page.get_by_role("button", name="Verify now").click()
    expect(page.get_by_text("Verified through sequence", exact=False)).to_be_visible()
    shots.check("admin-audit")
