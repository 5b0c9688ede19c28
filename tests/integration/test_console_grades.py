"""Grades in the web console, on the hand-worked data set of test_grading.py: the partner list's grade
and trend, a period's grades with filters, pages and CSV, a grade's explanation, overrides with a
reason, alerts, computing a period, and who may see it."""

from __future__ import annotations

import csv
import io
import re
from datetime import datetime, timezone

import pytest
from flask import Flask
from sqlalchemy import func, select

from alliance.domain.grading import Period
from alliance.extensions import HubState, hub_state
from alliance.models import GradeAlert, GradeOverride
from alliance.services import grading
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
    assert "grade-A" in alpha_row and "D → A ↑ up" in alpha_row
    charlie_row = listing[listing.index(">charlie<"):listing.index(">delta<")]
    assert "grade-C" in charlie_row and "A → C ↓ down" in charlie_row
    # charlie's downgrade and complaint-rate alerts are open; its September statement was paid.
    assert re.search(r'data-label="Open alerts"><a [^>]*>2<', charlie_row)
    assert "0.00 EUR" in charlie_row
    echo_row = listing[listing.index(">echo<"):listing.index(">foxtrot<")]
    assert "not graded" in echo_row and "– → –" in echo_row
    page = text_of(browser.get("/console/partners/charlie"))
    assert "2026-10 C C 25.8" in page and "2026-09 A A 86.8" in page and "Trend: A → C ↓ down" in page
    assert "charlie fell from A to C (2 bands)" in page


def test_the_portfolio_sorts_by_grade_alerts_and_money_owed(app: Flask, graded: HubState) -> None:
    browser = signed_in(app, "paco", "partner_manager")

    def order(**query: str) -> list[str]:
        page = browser.get("/console/partners", **query).get_data(as_text=True)
        return re.findall(r'<th scope="row"><a href="/console/partners/([a-z]+)"', page)

    assert order() == ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot"]
    # Best grade first; the not graded after D.
    assert order(sort="grade")[:4] == ["alpha", "delta", "bravo", "charlie"]
    assert order(sort="grade")[4:] == ["echo", "foxtrot"]
    assert order(sort="alerts", order="desc")[0] == "charlie"
    assert order(sort="code", order="desc")[0] == "foxtrot"
    page = browser.get("/console/partners", sort="grade").get_data(as_text=True)
    assert 'aria-sort="ascending"' in page and "<caption>" in page
    assert browser.get("/console/partners", sort="colour").status_code == 400


def test_grades_page_filters_pages_and_exports(app: Flask, graded: HubState) -> None:
    browser = signed_in(app, "paco", "partner_manager")
    page = text_of(browser.get("/console/grades"))
    assert "Partner grades 2026-10" in page and "4 graded, 2 not graded" in page
    assert "charlie fell from A to C (2 bands)" in page and "Alerts (5 open)" in page
    only_c = text_of(browser.get("/console/grades", period="2026-10", grade="C")).split("Previous Status")[1]
    assert "bravo" in only_c and "charlie" in only_c and "alpha" not in only_c
    september = text_of(browser.get("/console/grades", period="2026-09", status="graded", page_size=10))
    assert "1–2 of 2" in september and "86.8" in september and "86.8421" not in september
    by_score = browser.get("/console/grades", period="2026-10", sort="score", order="desc").get_data(
        as_text=True).split('<table class="grades">')[1]
    assert re.findall(r'<th scope="row"><a href="/console/partners/([a-z]+)/grades', by_score) == [
        "alpha", "delta", "bravo", "charlie", "echo", "foxtrot"]
    assert browser.get("/console/grades", sort="colour").status_code == 400
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
    assert "Sales through the alliance The amount of the purchases the partner reported in the period, in its " \
           "currency. (more is better) 400.00 EUR 100 25 (26.3% of the grade) 26.3" in detail
    assert "Complaint rate Complaints for every 1,000 purchases and redemptions. (less is better) " \
           "0 per 1,000 transactions 83.3 20 (21% of the grade) 17.5" in detail
    assert "Refunds" in detail and "0%" in detail
    assert "Score 78.9 of 100" in detail and "Previous period D, score 13.2 (65.8 points since)" in detail
    assert "Computed A: a score of 78.9 out of 100, at least the 75 an A needs." in detail
    # What moved: plain names, money in the currency, no internal metric names or four decimals.
    assert "Sales through the alliance 90.00 EUR 400.00 EUR +26.3" in detail
    for internal in ("purchase_volume_minor", "minor units", "0.0000", "26.3158", "complaint_rate_per_1000"):
        assert internal not in detail, internal
    charlie = text_of(browser.get("/console/partners/charlie/grades/2026-10"))
    assert "Paying on time" in charlie and "5 days" in charlie
    assert "Computed C: a score of 25.8 out of 100, at least the 25 a C needs and below the 50 of a B." in charlie
    echo = text_of(browser.get("/console/partners/echo/grades/2026-10"))
    assert "Not graded: 0 transactions in the period; grading needs at least 3." in echo
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
    page = text_of(browser.client.get(done.headers["Location"]))
    assert "charlie's grade for 2026-10 is now B" in page
    assert "Computed C (score 25.8 of 100)" in page and "the late payment was our bank's delay" in page
    assert "Overridden to B by console:paco: the late payment was our bank's delay" in page
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


def test_alerts_page_keeps_the_history_of_acknowledged_alerts(app: Flask, graded: HubState) -> None:
    browser = signed_in(app, "paco", "partner_manager")
    page = text_of(browser.get("/console/grade-alerts"))
    assert "Open (5)" in page and "Acknowledged" not in page.split("Filter", 1)[1]
    with graded.unit_of_work() as uow:
        alert_id = uow.session.scalar(select(GradeAlert.id).where(GradeAlert.kind == "downgrade"))
    done = browser.post(f"/console/grade-alerts/{alert_id}/acknowledgement?state=all&partner=charlie",
                        {"back": "alerts"})
    assert done.status_code == 303
    assert done.headers["Location"] == "/console/grade-alerts?state=all&partner=charlie"
    assert audit_actions(graded)[-1] == ("console:paco", "grade_alert.acknowledge", f"grade_alert:{alert_id}")
    words = text_of(browser.client.get(done.headers["Location"]))
    history = browser.client.get(done.headers["Location"]).get_data(as_text=True)
    assert f"Alert {alert_id} acknowledged." in words
    assert "Open (1)" in words and "Acknowledged (1)" in words
    acknowledged = history.split('id="history-heading"')[1]
    assert "charlie fell from A to C (2 bands)" in acknowledged and ">paco<" in acknowledged
    assert "<caption>" in acknowledged and 'data-label="Acknowledged"' in acknowledged
    # Filters: by period and kind, and a partner that does not exist is a 400.
    september = text_of(browser.get("/console/grade-alerts", period="2026-09", state="all"))
    assert "Open (1)" in september and "alpha had" in september and "charlie" not in september.split("Filter")[1]
    only_downgrades = text_of(browser.get("/console/grade-alerts", kind="downgrade", state="acknowledged"))
    assert "Acknowledged (1)" in only_downgrades and "Open (" not in only_downgrades
    assert browser.get("/console/grade-alerts", partner="nobody").status_code == 400
    assert browser.get("/console/grade-alerts", kind="other").status_code == 400
    assert browser.get("/console/grade-alerts", sort="colour").status_code == 400
    # Sorting: by partner, either way.
    by_partner = browser.get("/console/grade-alerts", sort="partner", order="asc").get_data(as_text=True)
    assert re.findall(r'<th scope="row"><a href="/console/partners/([a-z]+)"', by_partner) == [
        "alpha", "bravo", "charlie", "foxtrot"]
    assert 'aria-sort="ascending"' in by_partner
    by_partner_desc = browser.get("/console/grade-alerts", sort="partner", order="desc").get_data(as_text=True)
    assert re.findall(r'<th scope="row"><a href="/console/partners/([a-z]+)"', by_partner_desc)[0] == "foxtrot"


def test_alerts_page_refusals_change_nothing(app: Flask, graded: HubState) -> None:
    browser = signed_in(app, "paco", "partner_manager")
    with graded.unit_of_work() as uow:
        alert_id = uow.session.scalar(select(GradeAlert.id).where(GradeAlert.kind == "downgrade"))
    before = audit_actions(graded)
    assert browser.post(f"/console/grade-alerts/{alert_id}/acknowledgement", {"back": "alerts"},
                        csrf=None).status_code == 400
    service = signed_in(app, "cass", "customer_service")
    assert service.post(f"/console/grade-alerts/{alert_id}/acknowledgement").status_code == 403
    assert service.get("/console/grade-alerts").status_code == 403
    anonymous = app.test_client().get("/console/grade-alerts")
    assert anonymous.status_code in (302, 303) and "/console/login" in anonymous.headers["Location"]
    missing = browser.post("/console/grade-alerts/999999/acknowledgement", {"back": "alerts"})
    assert missing.status_code == 303 and "no grade alert 999999" in text_of(browser.get("/console/grade-alerts"))
    with graded.unit_of_work() as uow:
        assert uow.session.scalar(select(func.count()).select_from(GradeAlert)
                                  .where(GradeAlert.acknowledged_at.is_not(None))) == 0
    assert audit_actions(graded)[len(before):] == [("console:cass", "staff.login", "staff:cass")]


def test_alerts_page_with_nothing_graded_says_so(app: Flask) -> None:
    browser = signed_in(app, "paco", "partner_manager")
    page = text_of(browser.get("/console/grade-alerts", state="all"))
    assert "No open alerts." in page and "No acknowledged alerts yet." in page
    assert "No partners yet" in text_of(browser.get("/console/partners"))


def test_three_graded_periods_show_the_trend_over_all_three(app: Flask, graded: HubState) -> None:
    # November graded too (nobody active then): the trend covers September to November.
    compute(graded, Period.parse("2026-11"), datetime(2026, 12, 1, 3, tzinfo=timezone.utc))
    with graded.unit_of_work() as uow:
        grading.override(uow.session, code="alpha", period="2026-11", grade="A", reason="closed for works",
                         now=datetime(2026, 12, 1, 4, tzinfo=timezone.utc), actor="test:manager")
        uow.commit()
    browser = signed_in(app, "paco", "partner_manager")
    listing = browser.get("/console/partners").get_data(as_text=True)
    alpha_row = listing[listing.index(">alpha<"):listing.index(">bravo<")]
    assert "D → A → A = same" in alpha_row and "2026-09, 2026-10, 2026-11" in alpha_row
    charlie_row = listing[listing.index(">charlie<"):listing.index(">delta<")]
    assert "A → C → –" in charlie_row and "not graded" in charlie_row
    page = text_of(browser.get("/console/partners/alpha"))
    assert "Trend: D → A → A = same" in page
    assert "2026-11 A override not graded" in page and "2026-10 A A 78.9" in page and "2026-09 D D 13.2" in page
    assert "Open (5)" in text_of(browser.get("/console/grade-alerts"))
