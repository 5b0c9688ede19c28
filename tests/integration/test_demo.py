"""``alliance seed-demo``: five months of activity through the real services, on both databases.

The demo seeds once per module and database (seeding plays a whole history); each test
reads what it needs and changes nothing.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timezone

import pytest
from sqlalchemy import func, select

from alliance.extensions import hub_state
from alliance.models import (
    Adjustment,
    AuditLogEntry,
    BehaviourEvent,
    Campaign,
    Complaint,
    GoodwillRequest,
    GradeAlert,
    GradePeriod,
    JournalTransaction,
    Member,
    Purchase,
    ReconciliationReport,
    RedemptionHold,
    SettlementStatement,
    StatementEvent,
    StatementLineDispute,
    TierPolicyVersion,
)
from alliance.services.demo import DEMO_STAFF_PASSWORD
from settlement.api import overdue_total
from tests.back_office_support import run_cli
from tests.console_support import ConsoleClient, text_of


@pytest.fixture
def seeded(app):  # type: ignore[no-untyped-def]
    """The app with the demo seeded, and what seeding printed."""
    result = run_cli(app, "seed-demo")
    assert result.exit_code == 0, result.output
    return app, result.output


def counts(app) -> dict[str, int]:  # type: ignore[no-untyped-def]
    """How many rows the demo's kinds of activity hold."""
    with hub_state(app).unit_of_work() as uow:
        return {model.__name__: uow.session.scalar(select(func.count()).select_from(model)) or 0
                for model in (AuditLogEntry, JournalTransaction, Member, Purchase, RedemptionHold, Complaint,
                              SettlementStatement, StatementEvent, GradePeriod, GradeAlert, ReconciliationReport,
                              Adjustment, StatementLineDispute)}


def test_the_demo_plays_months_of_activity_through_every_workflow(seeded):
    app, output = seeded
    found = counts(app)
    assert found["Member"] >= 40 and found["Purchase"] >= 500 and found["RedemptionHold"] >= 30
    assert "members" in output and "purchases" in output and "graded periods" in output
    today = datetime.now(timezone.utc).date()
    today_start = datetime.now(timezone.utc)
    with hub_state(app).unit_of_work() as uow:
        session = uow.session
        assert session.scalar(select(func.count()).select_from(GradePeriod)) >= 3
        acknowledged = Counter(session.scalars(select(GradeAlert.acknowledged_at.is_not(None))))
        assert acknowledged[True] >= 1 and acknowledged[False] >= 1
        assert overdue_total(session, as_of=today) >= 1
        paid = dict(session.execute(select(StatementEvent.statement_id, func.sum(StatementEvent.amount_minor))
                                    .where(StatementEvent.kind == "paid").group_by(StatementEvent.statement_id)).all())
        nets = dict(session.execute(select(SettlementStatement.id, SettlementStatement.net_minor)).all())
        fully_paid = [statement for statement, amount in paid.items() if int(amount) == abs(nets[statement])]
        partly_paid = [statement for statement, amount in paid.items() if int(amount) < abs(nets[statement])]
        assert fully_paid and partly_paid
        discrepancies = list(session.scalars(select(ReconciliationReport.discrepancies)))
        assert 0 in discrepancies and any(number > 0 for number in discrepancies)
        states = set(session.scalars(select(Complaint.status).where(Complaint.purchase_id.is_not(None),
                                                                     Complaint.member_id.is_not(None))))
        assert len(states) >= 3, states
        adjustments = Counter(session.scalars(select(Adjustment.status)))
        assert adjustments["approved"] >= 1 and adjustments["pending"] >= 1
        assert session.scalar(select(func.count()).select_from(StatementLineDispute)) >= 1
        # Resolved complaints about missing points end in goodwill; one above the threshold awaits a second person.
        goodwill_states = Counter(session.scalars(select(GoodwillRequest.status)))
        assert goodwill_states["posted"] >= 1 and goodwill_states["pending"] == 1, goodwill_states
        # Members signed in through Café Aurora's app over the last fortnight, some at a streak's bonus.
        assert session.scalar(select(func.count()).select_from(BehaviourEvent)) >= 20
        # The operator has a joint campaign and the next tier policy version scheduled, both after the history.
        scheduled = session.scalars(select(Campaign)).all()
        assert [(campaign.funded_by, campaign.starts_at > today_start) for campaign in scheduled] == [("joint", True)]
        assert session.scalar(select(func.count()).select_from(TierPolicyVersion)) == 2
        # One hold is open at a till; the rest were captured, voided or expired.
        assert session.scalar(select(func.count()).where(RedemptionHold.status == "open")) == 1
    audited = run_cli(app, "audit")
    assert audited.exit_code == 0 and "audit passed" in audited.output, audited.output


PAGES = (
    ("demo-finance", "/console/finance/cycles", "No closed cycles yet"),
    ("demo-finance", "/console/finance/position", "No closed statements in"),
    ("demo-finance", "/console/finance/reconciliations", "No reconciliation yet"),
    ("demo-finance", "/console/finance/approvals", "No adjustments yet"),
    ("demo-manager", "/console/partners", "No partners yet"),
    ("demo-manager", "/console/grades", "has not been graded yet"),
    ("demo-finance", "/console/finance/liability", "No points were outstanding"),
    ("demo-manager", "/console/grade-alerts", "No acknowledged alerts"),
    ("demo-service", "/console/complaints", "No complaints yet"),
    ("demo-service", "/console/goodwill", "No goodwill credit or correction waits for approval"),
    ("demo-admin", "/console/admin/staff", "No console logins yet"),
    ("demo-admin", "/console/admin/audit", "The audit trail is empty"),
)


def test_seeding_again_changes_nothing_and_each_roles_main_pages_show_the_demo_data(seeded):
    app, _ = seeded
    before = counts(app)
    again = run_cli(app, "seed-demo")
    assert again.exit_code == 0 and "already present" in again.output
    assert counts(app) == before
    browsers: dict[str, ConsoleClient] = {}
    for username, path, empty in PAGES:
        if username not in browsers:
            browsers[username] = ConsoleClient(app)
            assert browsers[username].login(username, DEMO_STAFF_PASSWORD).status_code == 303
        response = browsers[username].get(path)
        assert response.status_code == 200, path
        page = text_of(response)
        assert empty not in page, path
        assert "No open disputes" not in page and "No open alerts" not in page, path
