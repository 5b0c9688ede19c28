"""Partner grades through the back-office API and the CLI, on the hand-worked data set of test_grading.py.

The hub here runs with the minimum activity that data set uses (3 transactions, 2
members), set through the same ALLIANCE_GRADING_* settings an operator would use.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Iterator

import pytest
from flask import Flask
from sqlalchemy import func, select

from alliance.extensions import HubState, hub_state
from alliance.models import GradeOverride, GradePeriod
from settlement.closing import close_due_cycles
from tests.back_office_support import BackOffice, audit_count, hub_app, run_cli
from tests.integration.test_grading import at, plant, plant_october


@pytest.fixture
def grading_app(postgres_url: str, tmp_path: Path) -> Iterator[Flask]:
    app = hub_app(postgres_url, tmp_path / "instance", grading_min_transactions=3, grading_min_active_members=2)
    yield app
    hub_state(app).engine.dispose()


@pytest.fixture
def planted(grading_app: Flask) -> HubState:
    hub = hub_state(grading_app)
    planter = plant(hub)
    close_due_cycles(hub.session_factory, now=at(10, 2), signer=hub.statement_signer)
    plant_october(planter)
    planter.pay_september_statement("alpha", days_late=0)
    planter.pay_september_statement("charlie", days_late=5)
    return hub


def test_managers_compute_read_explain_and_export_grades(grading_app: Flask, planted: HubState) -> None:
    bo = BackOffice(grading_app)
    for period in ("2026-09", "2026-10"):
        reply = bo.post("/grades/computations", {"period": period}, role="partner_manager")
        assert reply.status == 200, reply.body
    assert reply.body == {"period": "2026-10", "graded": 4, "not_graded": 2, "alerts_raised": 4}

    listing = bo.get("/grades/2026-10", role="partner_manager", query={"limit": "2", "offset": "1"})
    assert listing.status == 200
    assert [grade["partner"] for grade in listing.body["grades"]] == ["bravo", "charlie"]
    assert (listing.body["total"], listing.body["summary"]["graded"]) == (6, 4)
    assert listing.body["summary"]["config"]["min_transactions"] == 3
    only_c = bo.get("/grades/2026-10", role="partner_manager", query={"grade": "C"}).body
    assert sorted(grade["partner"] for grade in only_c["grades"]) == ["bravo", "charlie"]

    alpha = bo.get("/partners/alpha/grades/2026-10", role="partner_manager").body
    assert (alpha["grade"], alpha["score"], alpha["changes"]["previous_grade"]) == ("A", "78.9474", "D")
    volume = next(line for line in alpha["breakdown"] if line["metric"] == "purchase_volume_minor")
    assert (volume["weight"], volume["percentile"], volume["contribution"]) == (25, "1.0000", "26.3158")

    export = bo.call("GET", "/grades/2026-10/export", role="partner_manager")
    assert export.status == 200 and export.headers["Content-Type"].startswith("text/csv")
    assert 'filename="grades-2026-10.csv"' in export.headers["Content-Disposition"]
    response = bo.client.get("/back-office/v1/grades/2026-10/export",
                             headers={"Authorization": f"Bearer {bo.token('partner_manager')}"})
    rows = list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))
    assert [(row["partner"], row["grade"]) for row in rows] == [
        ("alpha", "A"), ("bravo", "C"), ("charlie", "C"), ("delta", "B"), ("echo", ""), ("foxtrot", "")]


def test_override_needs_a_reason_and_keeps_the_computed_grade(grading_app: Flask, planted: HubState) -> None:
    bo = BackOffice(grading_app)
    for period in ("2026-09", "2026-10"):
        assert bo.post("/grades/computations", {"period": period}, role="partner_manager").status == 200
    entries = audit_count(planted)
    for body in ({"grade": "B"}, {"grade": "B", "reason": ""}, {"grade": "E", "reason": "x"},
                 {"grade": "B", "reason": "x", "computed_grade": "B"}):
        refused = bo.post("/partners/charlie/grades/2026-10/override", body, role="partner_manager")
        assert refused.status == 422 and refused.headers["Content-Type"] == "application/problem+json"
    assert bo.post("/partners/charlie/grades/2026-08/override", {"grade": "B", "reason": "x"},
                   role="partner_manager").status == 404
    assert bo.post("/partners/nobody/grades/2026-10/override", {"grade": "B", "reason": "x"},
                   role="partner_manager").status == 404
    with planted.unit_of_work() as uow:
        assert uow.session.scalar(select(func.count()).select_from(GradeOverride)) == 0
    assert audit_count(planted) == entries

    done = bo.post("/partners/charlie/grades/2026-10/override",
                   {"grade": "B", "reason": "late payment was our bank's fault"}, role="partner_manager")
    assert done.status == 201
    assert (done.body["grade"], done.body["computed_grade"], done.body["overridden"]) == ("B", "C", True)
    assert done.body["overrides"][0]["actor"] == bo.actor("partner_manager")
    assert audit_count(planted) == entries + 1
    history = bo.get("/partners/charlie/grades", role="partner_manager").body["grades"]
    assert [(grade["period"], grade["grade"], grade["computed_grade"]) for grade in history] == [
        ("2026-10", "B", "C"), ("2026-09", "A", "A")]


def test_alerts_are_listed_and_acknowledged_once(grading_app: Flask, planted: HubState) -> None:
    bo = BackOffice(grading_app)
    for period in ("2026-09", "2026-10"):
        bo.post("/grades/computations", {"period": period}, role="partner_manager")
    alerts = bo.get("/grade-alerts", role="partner_manager").body
    assert alerts["total"] == 5
    downgrade = next(alert for alert in alerts["alerts"] if alert["kind"] == "downgrade")
    assert (downgrade["partner"], downgrade["period"]) == ("charlie", "2026-10")
    first = bo.post(f"/grade-alerts/{downgrade['id']}/acknowledgement", role="partner_manager")
    assert first.status == 200 and first.body["acknowledged_by"] == bo.actor("partner_manager")
    assert bo.get("/grade-alerts", role="partner_manager").body["total"] == 4
    assert bo.get("/grade-alerts", role="partner_manager", query={"acknowledged": "yes"}).body["total"] == 1
    assert bo.get("/grade-alerts", role="partner_manager", query={"period": "2026-09"}).body["total"] == 1
    assert bo.post("/grade-alerts/999999/acknowledgement", role="partner_manager").status == 404


def test_bad_periods_and_unknown_grades_are_precise_problems(grading_app: Flask, planted: HubState) -> None:
    bo = BackOffice(grading_app)
    for body in ({"period": "2026-13"}, {"period": "October"}, {"period": "2026-10", "force": True}):
        reply = bo.post("/grades/computations", body, role="partner_manager")
        assert reply.status == 422 and reply.headers["Content-Type"] == "application/problem+json", body
    not_over = bo.post("/grades/computations", {"period": "2099-01"}, role="partner_manager")
    assert not_over.status == 422 and "has not ended" in not_over.body["detail"]
    missing = bo.get("/grades/2026-10", role="partner_manager")
    assert missing.status == 404 and "alliance grades compute --period 2026-10" in missing.body["detail"]
    assert bo.get("/grades/2026-1x", role="partner_manager").status == 422
    assert bo.get("/grades/2026-10", role="partner_manager", query={"limit": "201"}).status == 422
    assert bo.get("/grades/2026-10", role="customer_service").status == 403
    with planted.unit_of_work() as uow:
        assert uow.session.scalar(select(func.count()).select_from(GradePeriod)) == 0


def test_cli_computes_shows_explains_overrides_and_exports(grading_app: Flask, planted: HubState,
                                                           tmp_path: Path) -> None:
    september = run_cli(grading_app, "grades", "compute", "--period", "2026-09")
    assert september.exit_code == 0 and "2026-09: 2 graded, 4 not graded, 1 alerts raised" in september.output
    # Without --period: the last whole month before --now.
    october = run_cli(grading_app, "grades", "compute", "--now", "2026-11-02T00:00:00+00:00")
    assert october.exit_code == 0 and "2026-10: 4 graded, 2 not graded, 4 alerts raised" in october.output
    shown = run_cli(grading_app, "grades", "show", "--period", "2026-10").output
    assert "alpha" in shown and "A score 78.9474, was D" in shown
    assert "echo" in shown and "not graded: 0 transactions in the period" in shown
    explained = run_cli(grading_app, "grades", "explain", "charlie", "--period", "2026-10").output
    assert "Purchase volume" in explained and "since the previous period: grade A -> C" in explained
    assert "alert (downgrade): charlie fell from A to C (2 bands)" in explained
    overridden = run_cli(grading_app, "grades", "override", "charlie", "--period", "2026-10", "--grade", "B",
                         "--reason", "bank delay")
    assert overridden.exit_code == 0 and "charlie 2026-10: grade B (computed C)" in overridden.output
    refused = run_cli(grading_app, "grades", "override", "charlie", "--period", "2026-10", "--grade", "B",
                      "--reason", " ")
    assert refused.exit_code != 0 and "reason" in refused.output
    target = tmp_path / "grades.csv"
    assert run_cli(grading_app, "grades", "export", "--period", "2026-10", "--output", str(target)).exit_code == 0
    assert target.read_text().splitlines()[3].startswith("charlie,2026-10,graded,B,C,yes,25.8333")
    alerts = run_cli(grading_app, "grades", "alerts").output
    assert alerts.count("\n") == 5 and "charlie downgrade" in alerts
    assert "not ended" in run_cli(grading_app, "grades", "compute", "--period", "2099-01").output
    assert run_cli(grading_app, "grades", "compute", "--period", "2026-13").exit_code != 0
