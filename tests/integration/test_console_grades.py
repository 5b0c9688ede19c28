"""Grades in the web console, on the hand-worked data set of test_grading.py: the partner list's grade
and trend, a period's grades with filters, pages and CSV, a grade's explanation, overrides with a
reason, alerts, computing a period, and who may see it."""

from __future__ import annotations

import csv
import io

import pytest
from flask import Flask
from sqlalchemy import func, select

from alliance.extensions import HubState, hub_state
from alliance.models import GradeAlert, GradeOverride
from settlement.closing import close_due_cycles
from tests.console_support import audit_actions, signed_in, text_of
from tests.integration.test_grading import OCTOBER, SEPTEMBER, at, compute, plant, plant_october


@pytest.fixture
def graded(app: Flask) -> HubState:
    hub = hub_state(app)
    planter = plant(hub)
    compute(hub, SEPTEMBER, at(10, 1, 6))
    close_due_cycles(hub.session_factory, now=at(10, 2), signer=hub.statement_signer)
    plant_october(planter)
    planter.pay_september_statement("alpha", days_late=0)
    planter.pay_september_statement("charlie", days_late=5)
    compute(hub, OCTOBER, at(11, 2))
    return hub


def test_partner_list_and_page_show_the_grade_trend_and_history(app: Flask, graded: HubState) -> None:
    browser = signed_in(app, "paco", "partner_manager")
    listing = browser.get("/console/partners").get_data(as_text=True)
    alpha_row = listing[listing.index(">alpha<"):listing.index(">bravo<")]
    assert "grade-A" in alpha_row and "▲ up" in alpha_row
    charlie_row = listing[listing.index(">charlie<"):listing.index(">delta<")]
    assert "grade-C" in charlie_row and "▼ down" in charlie_row
    echo_row = listing[listing.index(">echo<"):listing.index(">foxtrot<")]
    assert "not graded" in echo_row
    page = text_of(browser.get("/console/partners/charlie"))
    assert "2026-10 C C 25.8333" in page and "2026-09 A A 86.8421" in page


def test_grades_page_filters_pages_and_exports(app: Flask, graded: HubState) -> None:
    browser = signed_in(app, "paco", "partner_manager")
    page = text_of(browser.get("/console/grades"))
    assert "Partner grades 2026-10" in page and "4 graded, 2 not graded" in page
    assert "charlie fell from A to C (2 bands)" in page and "Alerts (5 open)" in page
    only_c = text_of(browser.get("/console/grades", period="2026-10", grade="C")).split("Previous Status")[1]
    assert "bravo" in only_c and "charlie" in only_c and "alpha" not in only_c
    september = text_of(browser.get("/console/grades", period="2026-09", status="graded", page_size=10))
    assert "1–2 of 2" in september and "86.8421" in september
    second = text_of(browser.get("/console/grades", period="2026-10", page_size=10, page=1))
    assert "1–6 of 6" in second
    rows = list(csv.DictReader(io.StringIO(browser.get("/console/grades/2026-10.csv").get_data(as_text=True))))
    assert [(row["partner"], row["grade"], row["score"]) for row in rows][:4] == [
        ("alpha", "A", "78.9474"), ("bravo", "C", "44.1667"), ("charlie", "C", "25.8333"), ("delta", "B", "52.6316")]
    assert browser.get("/console/grades", grade="E").status_code == 400
    assert browser.get("/console/grades", period="2026-13").status_code == 400
    assert "2026-08 has not been graded yet" in text_of(browser.get("/console/grades", period="2026-08"))


def test_grade_page_explains_and_override_needs_a_reason(app: Flask, graded: HubState) -> None:
    browser = signed_in(app, "paco", "partner_manager")
    detail = text_of(browser.get("/console/partners/alpha/grades/2026-10"))
    assert "Purchase volume 40000 minor units higher 25 26.32 1.0000 26.3158" in detail
    assert "Score 78.9474" in detail and "Previous period D, score 65.7895" in detail
    assert browser.get("/console/partners/alpha/grades/2026-08").status_code == 404

    before = audit_actions(graded)
    refused = browser.post("/console/partners/charlie/grades/2026-10/override", {"grade": "B", "reason": " "})
    assert refused.status_code == 400
    no_csrf = browser.post("/console/partners/charlie/grades/2026-10/override",
                           {"grade": "B", "reason": "bank delay"}, csrf=None)
    assert no_csrf.status_code == 400
    assert browser.post("/console/partners/charlie/grades/2026-10/override",
                        {"grade": "E", "reason": "bank delay"}).status_code == 400
    with graded.unit_of_work() as uow:
        assert uow.session.scalar(select(func.count()).select_from(GradeOverride)) == 0
    assert audit_actions(graded) == before

    done = browser.post("/console/partners/charlie/grades/2026-10/override",
                        {"grade": "B", "reason": "the late payment was our bank's delay"})
    assert done.status_code == 303
    page = text_of(browser.get(done.headers["Location"]))
    assert "charlie's grade for 2026-10 is now B" in page
    assert "Computed C (score 25.8333 of 100)" in page and "the late payment was our bank's delay" in page
    assert audit_actions(graded)[-1] == ("console:paco", "grade.override", "partner:charlie:grade:2026-10")


def test_alerts_are_acknowledged_and_periods_computed_from_the_console(app: Flask, graded: HubState) -> None:
    browser = signed_in(app, "paco", "partner_manager")
    with graded.unit_of_work() as uow:
        alert_id = uow.session.scalar(select(GradeAlert.id).where(GradeAlert.kind == "downgrade"))
    acknowledged = browser.post(f"/console/grade-alerts/{alert_id}/acknowledgement")
    assert acknowledged.status_code == 303
    assert "Alerts (4 open)" in text_of(browser.get("/console/grades"))
    computed = browser.post("/console/grades/computations", {"period": "2026-08"})
    assert computed.status_code == 303
    assert "2026-08: 0 graded, 6 not graded, 0 alerts raised." in text_of(
        browser.client.get(computed.headers["Location"]))
    not_over = browser.post("/console/grades/computations", {"period": "2099-01"})
    assert "has not ended yet" in text_of(browser.client.get(not_over.headers["Location"]))
    assert browser.post("/console/grades/computations", {"period": "August"}).status_code == 400


def test_only_partner_managers_and_admins_see_grades(app: Flask, graded: HubState) -> None:
    for role, status in (("customer_service", 403), ("finance", 403), ("admin", 200)):
        browser = signed_in(app, f"user-{role}".replace("_", "-"), role)
        assert browser.get("/console/grades").status_code == status, role
        assert browser.get("/console/partners/alpha/grades/2026-10").status_code == status, role
    refused = signed_in(app, "cs-two", "customer_service")
    assert refused.post("/console/partners/charlie/grades/2026-10/override",
                        {"grade": "B", "reason": "x"}).status_code == 403


def test_a_query_argument_named_like_url_fors_options_does_not_reach_them(app: Flask, graded: HubState) -> None:
    # ?_external=1 or ?_anchor=... on the page an action came from must not turn the way
    # back into an absolute address or add a fragment: only the list's own filters go back.
    browser = signed_in(app, "paco", "partner_manager")
    with graded.unit_of_work() as uow:
        alert_id = uow.session.scalar(select(GradeAlert.id).where(GradeAlert.kind == "downgrade"))
    acknowledged = browser.post(f"/console/grade-alerts/{alert_id}/acknowledgement"
                                "?grade=B&_external=1&_scheme=javascript&_anchor=x")
    assert acknowledged.status_code == 303
    assert acknowledged.headers["Location"] == "/console/grades?grade=B"
