"""The console in a real browser: sign in and out, a finance flow to a paid statement, a manager resolving a
complaint, a manager grading a month and overriding a grade with a reason, and a role refused the finance pages."""

from __future__ import annotations

import re

from playwright.sync_api import expect
from sqlalchemy import select

from alliance.domain.money import major_units_text
from tests.console_support import PASSWORD

LOGIN_TIMEOUT_MS = 15_000


def menu(page, name: str):  # type: ignore[no-untyped-def]
    """A link of the main navigation bar."""
    return page.get_by_role("navigation", name="Main").get_by_role("link", name=name, exact=True)


def sign_in(page, base_url: str, username: str) -> None:  # type: ignore[no-untyped-def]
    page.goto(f"{base_url}/console/login")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_test_id("signed-in-user")).to_contain_text(f"({username})", timeout=LOGIN_TIMEOUT_MS)


def test_login_and_logout(page, shots, console_hub):
    base_url, _ = console_hub
    page.goto(f"{base_url}/console/")
    expect(page).to_have_url(re.compile(r"/console/login\?next=/console/"))
    shots.take("login-form")
    page.get_by_label("Username").fill("fiona")
    page.get_by_label("Password").fill("wrong password here")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_contain_text("unknown username or wrong password")
    shots.take("wrong-password")
    sign_in(page, base_url, "fiona")
    expect(page.get_by_role("heading", name="Welcome, Fiona Finance")).to_be_visible()
    expect(page.get_by_role("navigation", name="Main").get_by_role("link", name="Cycles")).to_be_visible()
    shots.take("signed-in")
    page.get_by_role("button", name="Log out").click()
    expect(page.get_by_role("status")).to_contain_text("You are signed out")
    shots.take("signed-out")
    page.goto(f"{base_url}/console/finance/cycles")
    expect(page).to_have_url(re.compile(r"/console/login"))


def test_finance_closes_a_cycle_opens_the_statement_and_marks_it_paid(page, shots, console_hub, pg_app):
    from alliance.extensions import hub_state
    from alliance.models import Partner, SettlementStatement

    base_url, _ = console_hub
    sign_in(page, base_url, "fiona")
    menu(page, "Cycles").click()
    expect(page.get_by_text("No closed cycles yet")).to_be_visible()
    shots.take("cycles-before-closing")
    page.get_by_role("button", name="Close due cycles").click()
    expect(page.get_by_role("status")).to_contain_text("cycles closed into signed statements")
    shots.take("cycles-closed")
    with hub_state(pg_app).unit_of_work() as uow:
        statement_id, net_minor = uow.session.execute(
            select(SettlementStatement.id, SettlementStatement.net_minor)
            .join(Partner, Partner.id == SettlementStatement.partner_id)
            .where(Partner.code == "aurora", SettlementStatement.net_minor > 0)
            .order_by(SettlementStatement.id)).first()
    page.get_by_role("link", name=f"Statement #{statement_id}", exact=True).click()
    expect(page.get_by_role("heading", name=re.compile(f"Statement #{statement_id}"))).to_be_visible()
    expect(page.get_by_test_id("signature-json")).to_contain_text("valid")
    expect(page.get_by_test_id("signature-csv")).to_contain_text("verified with the hub's statement key")
    expect(page.get_by_test_id("payment-status")).to_contain_text("not invoiced")
    shots.take("statement")
    page.get_by_label("Invoice reference").fill("INV-2026-11-AURORA")
    page.get_by_role("button", name="Mark invoiced").click()
    expect(page.get_by_role("status")).to_contain_text(f"Statement {statement_id} marked invoiced")
    shots.take("invoiced")
    expect(page.get_by_label("Amount in EUR")).to_have_value(major_units_text(net_minor, "EUR"))
    page.get_by_label("Payment reference").fill("BANK-TRANSFER-1")
    page.get_by_role("button", name="Record payment").click()
    expect(page.get_by_role("status")).to_contain_text("0.00 EUR outstanding")
    expect(page.get_by_test_id("payment-status")).to_contain_text("paid")
    shots.take("paid")
    menu(page, "Cycles").click()
    page.get_by_label("State").select_option("paid")
    page.get_by_role("button", name="Filter").click()
    expect(page.get_by_role("link", name=f"Statement #{statement_id}", exact=True)).to_be_visible()
    shots.take("paid-filter")


def test_a_partner_manager_resolves_a_complaint(page, shots, console_hub):
    base_url, made = console_hub
    complaint_id = made.complaints[0][2]
    sign_in(page, base_url, "paco")
    menu(page, "Partners").click()
    page.get_by_role("link", name="aurora").click()
    expect(page.locator("#chart-volume title").first).to_have_text("Purchases per month")
    shots.take("partner-page")
    menu(page, "Complaints").click()
    row = page.locator(f"#complaint-{complaint_id}")
    row.get_by_role("button", name="Investigate").click()
    expect(page.get_by_role("status")).to_contain_text(f"Complaint {complaint_id} is now investigating")
    shots.take("investigating")
    row = page.locator(f"#complaint-{complaint_id}")
    row.get_by_label("Resolution note").fill("Points credited by hand after checking the receipt.")
    row.get_by_role("button", name="Resolve").click()
    expect(page.get_by_role("status")).to_contain_text(f"Complaint {complaint_id} is now resolved")
    expect(page.locator(f"#complaint-{complaint_id}")).to_contain_text("Points credited by hand")
    shots.take("resolved")


def test_customer_service_is_refused_the_finance_pages(page, shots, console_hub):
    base_url, _ = console_hub
    sign_in(page, base_url, "cass")
    navigation = page.get_by_role("navigation", name="Main")
    expect(navigation.get_by_role("link", name="Complaints")).to_be_visible()
    expect(navigation.get_by_role("link", name="Cycles")).to_have_count(0)
    shots.take("customer-service-nav")
    response = page.goto(f"{base_url}/console/finance/cycles")
    assert response is not None and response.status == 403
    expect(page.get_by_role("heading", name="403 — Forbidden")).to_be_visible()
    expect(page.get_by_text("This page needs the role finance or admin")).to_be_visible()
    shots.take("finance-refused")


def test_a_partner_manager_grades_a_month_and_overrides_a_grade_with_a_reason(page, shots, console_hub):
    base_url, _ = console_hub
    sign_in(page, base_url, "paco")
    menu(page, "Grades").click()
    expect(page.get_by_text("No period has been graded yet")).to_be_visible()
    period = page.get_by_label("Compute period").input_value()
    page.get_by_role("button", name="Compute grades").click()
    # Both partners have too few transactions to be graded; complaint-rate alerts depend on the dates.
    expect(page.get_by_role("status")).to_contain_text(
        re.compile(rf"{period}: 0 graded, 2 not graded, \d alerts raised"))
    shots.take("computed")
    menu(page, "Partners").click()
    page.get_by_role("link", name="aurora").click()
    grade_card = page.get_by_role("region", name="Grade")
    expect(grade_card).to_contain_text("not graded")
    grade_card.get_by_text(f"Override the {period} grade").click()
    grade_card.get_by_label("New grade").select_option("B")
    grade_card.get_by_label("Reason (required, kept in the audit log)").fill(
        "Launch quarter: too few transactions to grade, but a flagship partner.")
    shots.take("override-form")
    grade_card.get_by_role("button", name="Override grade").click()
    expect(page.get_by_role("status")).to_contain_text(f"aurora's grade for {period} is now B")
    expect(page.get_by_role("region", name="Grade")).to_contain_text("override (computed not graded)")
    shots.take("overridden")
    page.get_by_role("link", name=period).first.click()
    expect(page.get_by_test_id("effective-grade")).to_have_text("B")
    expect(page.get_by_text("Launch quarter: too few transactions")).to_be_visible()
    shots.take("grade-explained")
