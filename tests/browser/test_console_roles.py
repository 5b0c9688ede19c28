"""Each role's day in a real browser, every page scanned by axe-core and tried at 390 px wide.

Finance: cycles with the overdue ones, a statement, the position with a cycle chosen, the
reconciliation reports and the approvals. (Partner managers, customer service and the
administrator have their own walks below as their pages land.)
"""

from __future__ import annotations

import re

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
    menu(page, "Points liability").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("liability", ignore_case=True)
    shots.check("liability")
    page.get_by_role("link", name="change").click()
    page.get_by_label("Time zone").select_option("Europe/Paris")
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_test_id("viewer-zone")).to_have_text("Europe/Paris")
    shots.check("preferences")


def _new_member(pg_app) -> tuple[str, str]:  # type: ignore[no-untyped-def]
    """A member with a card and PIN, as a desk would have enrolled them; (member number, card number)."""
    from datetime import datetime, timezone

    from alliance.extensions import hub_state
    from alliance.services.member_verification import set_pin
    from alliance.services.members import enrol_member

    with hub_state(pg_app).unit_of_work() as uow:
        enrolment = enrol_member(uow.session, now=datetime.now(timezone.utc))
        set_pin(uow.session, card_number=enrolment.card_number, pin="2468")
        uow.commit()
    return enrolment.member_number, enrolment.card_number


def test_customer_service_finds_a_member_and_does_the_desk_work(page, shots, console_hub, pg_app):
    base_url, _ = console_hub
    member_number, card_number = _new_member(pg_app)
    sign_in(page, base_url, "cass")
    menu(page, "Members").click()
    shots.check("search")
    page.get_by_label("Card number").fill(card_number)
    page.get_by_role("button", name="Search").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text(member_number)
    assert card_number not in page.url
    shots.check("member")
    page.locator("summary", has_text="Reset PIN").first.click()
    page.get_by_label("New PIN (4 to 12 digits)").fill("5831")
    page.get_by_label("The new PIN again").fill("5831")
    page.get_by_role("button", name="Set PIN and unlock").click()
    expect(page.get_by_role("status")).to_be_visible()
    page.get_by_role("button", name="Issue a one-time redemption code").click()
    expect(page.get_by_test_id("redemption-code")).to_be_visible()
    shots.check("one-time-code")
    page.get_by_role("link", name=f"Back to member {member_number}").click()
    form = page.locator("details", has=page.locator("summary", has_text="File a complaint"))
    if form.get_attribute("open") is None:
        form.locator("summary").click()
    page.get_by_label("Partner (not needed", exact=False).select_option("aurora")
    page.get_by_label("What happened").fill("The till did not print the points on the receipt.")
    page.get_by_role("button", name="File the complaint").click()
    expect(page.get_by_role("status")).to_be_visible()
    shots.check("complaint-filed")
    # A goodwill credit for that complaint, funded by the hub, below the four-eyes threshold: posted at once.
    page.get_by_label("Goodwill credit (give points)").check()
    page.get_by_label("Points", exact=True).fill("150")
    page.get_by_label("Reason", exact=True).fill("Sorry for the missing points on the receipt.")
    page.get_by_label("The member's complaint it answers", exact=False).select_option(index=1)
    page.get_by_role("button", name="Credit or correct the points").click()
    expect(page.get_by_role("status")).to_contain_text("150")
    shots.check("goodwill-posted")
    menu(page, "Complaints").click()
    expect(page.get_by_text("The till did not print the points")).to_be_visible()
    expect(page.get_by_text("Cass Service (customer service)").first).to_be_visible()
    shots.check("complaints")


def test_the_administrator_adds_a_login_and_verifies_the_audit_trail(page, shots, console_hub):
    base_url, _ = console_hub
    sign_in(page, base_url, "ada")
    menu(page, "Staff").click()
    shots.check("staff")
    page.get_by_label("Username").fill("gus")
    page.get_by_label("Display name").fill("Gus Ledger")
    page.locator("select[name=person]").select_option(label="A new person (below)")
    page.get_by_label("Handle").fill("gus")
    page.get_by_label("Full name").fill("Gus Ledger")
    page.get_by_role("checkbox", name=re.compile(r"^Finance")).check()
    page.get_by_role("button", name="Add login").click()
    expect(page.get_by_text("shown once", exact=False).first).to_be_visible()
    assert "password" not in page.url
    shots.check("login-added")
    menu(page, "Audit trail").click()
    page.get_by_role("button", name="Verify now").click()
    expect(page.get_by_text("Verified through sequence", exact=False)).to_be_visible()
    shots.check("audit-verified")


def test_a_partner_manager_reviews_the_portfolio_alerts_and_revokes_a_key_with_a_reason(page, shots, console_hub):
    base_url, _ = console_hub
    sign_in(page, base_url, "paco")
    menu(page, "Grades").click()
    page.get_by_role("button", name="Compute grades").click()
    expect(page.get_by_role("status")).to_contain_text("graded")
    shots.check("grades")
    menu(page, "Partners").click()
    shots.check("portfolio")
    menu(page, "Alerts").click()
    shots.check("alerts")
    menu(page, "Campaigns").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("Campaigns")
    shots.check("campaigns")
    menu(page, "Tier policy").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("Tier policy")
    shots.check("tier-policy")
    menu(page, "Behaviour rules").click()
    shots.check("behaviour-rules")
    menu(page, "Partners").click()
    page.get_by_role("link", name="aurora").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("aurora")
    shots.check("partner")
    revoke = page.locator("details.confirm").first
    revoke.locator("summary").click()
    revoke.get_by_label("Reason (kept in the audit trail)").fill("The till was sold with its key on it.")
    revoke.get_by_role("checkbox").check()
    revoke.get_by_role("button", name="Revoke key").click()
    expect(page.get_by_role("status")).to_contain_text("revoked")
    shots.check("key-revoked")


def test_the_console_can_be_worked_from_the_keyboard(page, shots, console_hub):
    base_url, _ = console_hub
    sign_in(page, base_url, "fiona")
    page.goto(f"{base_url}/console/finance/cycles")
    page.keyboard.press("Tab")
    skip = page.get_by_role("link", name="Skip to the page's content")
    expect(skip).to_be_focused()
    expect(skip).to_be_visible()
    page.keyboard.press("Enter")
    # From the main content, Tab reaches the page's first control: the closing button.
    page.keyboard.press("Tab")
    expect(page.get_by_role("button", name="Close due cycles")).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.get_by_role("status")).to_contain_text("closed into signed statements")
    # A sortable header is a link reached with Tab and followed with Enter.
    sort_link = page.locator("th a.sort", has_text="Due")
    sort_link.focus()
    page.keyboard.press("Enter")
    expect(page.locator("th[aria-sort=ascending]")).to_contain_text("Due")
    shots.take("sorted-from-the-keyboard")
