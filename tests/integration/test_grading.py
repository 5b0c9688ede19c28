"""Partner grading on a planted data set whose metrics and grades are worked out by hand below.

Six partners, four members, two months (September and October 2026, UTC). The grading
configuration is the shipped default (weights volume 25, active members 15, redemptions
10, complaint rate 20, median resolution 5, refund rate 10, days late 15; bands A >= 75,
B >= 50, C >= 25) with the minimum activity lowered to 3 transactions and 2 members so
the data set stays small enough to check on paper.

September (graded: alpha, charlie; the others have no activity):
  alpha   3 purchases 30.00 each (m1, m2, m2): volume 9000, 2 members, 0 redemptions,
          1 complaint opened (still open) -> 1000/3 = 333.3333 per 1,000, 1 refund -> 1/3
  charlie 3 purchases 100.00 each (m1, m2, m3): volume 30000, 3 members, nothing else
  With two graded partners each is compared with one other: better 1, equal 1/2, worse 0.
  No one has a closed complaint, so "median resolution" applies to nobody (total weight 95).
  charlie: 25*1 + 15*1 + 10*1/2 + 20*1 + 10*1 + 15*1/2 = 82.5 -> 100*82.5/95 = 86.8421 A
  alpha:   25*0 + 15*0 + 10*1/2 + 20*0 + 10*0 + 15*1/2 = 12.5 -> 100*12.5/95 = 13.1579 D

October (graded: alpha, bravo, charlie, delta; each compared with three others, so a
percentile is (worse + equal/2) / 3):
            volume  members  redemptions  complaints/1000  median h  refunds/tx  days late
  alpha      40000     3         1              0             -          0           0
  bravo      20000     3         0            250             2         1/4          0
  charlie    20000     2         1            500           2.5          0           5
  delta      10000     3         1              0             -          0           0
  percentiles:
  alpha        1      2/3       2/3            5/6             -         2/3         2/3
  bravo       1/2     2/3        0             1/3             1          0          2/3
  charlie     1/2      0        2/3             0              0         2/3          0
  delta        0      2/3       2/3            5/6             -         2/3         2/3
  (median resolution is compared only between bravo and charlie, the two with a value)
  alpha   (25 + 10 + 20/3 + 50/3 + 20/3 + 10) / 95 = 75/95 -> 78.9474 A
  bravo   12.5 + 10 + 0 + 20/3 + 5 + 0 + 10 = 44.1667 -> C
  charlie 12.5 + 0 + 20/3 + 0 + 0 + 20/3 + 0 = 25.8333 -> C (two bands below its A: alert)
  delta   (0 + 10 + 20/3 + 50/3 + 20/3 + 10) / 95 = 50/95 -> 52.6316 B
  echo has no activity and foxtrot 1 purchase: both "not graded", not D.
charlie's September statement (due 15 October) is paid 5 days late; alpha's is paid on
the due day. Complaint-rate alerts (threshold 5 per 1,000): alpha in September; bravo,
charlie and foxtrot in October.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import DBAPIError

from alliance.domain.errors import NotFound, ValidationFailed
from alliance.domain.grading import GradingConfig, Period
from alliance.extensions import HubState
from alliance.models import GradeAlert, GradeOverride, SettlementStatement
from alliance.services import complaints, grading, redemptions
from alliance.services.audit import run_audit
from alliance.services.member_verification import active_card_holder
from alliance.services.members import Enrolment
from alliance.services.purchases import PurchaseReport, refund_purchase, report_purchase
from settlement import finance
from settlement.closing import close_due_cycles
from tests.back_office_support import audit_entries
from tests.factories import make_member, make_partner

CONFIG = GradingConfig(min_transactions=3, min_active_members=2)
SEPTEMBER, OCTOBER = Period.parse("2026-09"), Period.parse("2026-10")
CREATED = datetime(2026, 8, 1, tzinfo=timezone.utc)


def at(month: int, day: int, hour: int = 12, minute: int = 0) -> datetime:
    return datetime(2026, month, day, hour, minute, tzinfo=timezone.utc)


@dataclass
class Planter:
    """Puts activity into the hub through the same services the API uses."""

    hub: HubState
    partners: dict[str, int]
    members: list[Enrolment]
    receipts: int = 0

    def purchase(self, partner: str, member: int, amount_minor: int, moment: datetime) -> str:
        self.receipts += 1
        receipt = f"r-{self.receipts}"
        with self.hub.unit_of_work() as uow:
            report_purchase(uow.session, partner_id=self.partners[partner], now=moment, expiry_months=24,
                            report=PurchaseReport(receipt_id=receipt, card_number=self.members[member].card_number,
                                                  amount_minor=amount_minor, currency="EUR", purchased_at=moment))
            uow.commit()
        return receipt

    def refund(self, partner: str, receipt: str, amount_minor: int, moment: datetime) -> None:
        with self.hub.unit_of_work() as uow:
            refund_purchase(uow.session, partner_id=self.partners[partner], receipt_id=receipt,
                            refund_id=f"refund-{receipt}", amount_minor=amount_minor, now=moment)
            uow.commit()

    def redeem(self, partner: str, member: int, points: int, moment: datetime) -> None:
        reference = f"redeem-{partner}-{moment:%m%d%H%M}"
        with self.hub.unit_of_work() as uow:
            holder = active_card_holder(uow.session, self.members[member].card_number)
            redemptions.authorize(uow.session, partner_id=self.partners[partner], holder=holder, reference=reference,
                                  points=points, ttl_s=900, terminal_id=None, now=moment)
            uow.commit()
        with self.hub.unit_of_work() as uow:
            redemptions.capture(uow.session, partner_id=self.partners[partner], reference=reference, points=points,
                                now=moment + timedelta(minutes=1))
            uow.commit()

    def complaint(self, partner: str, opened: datetime, closed: datetime | None = None) -> None:
        with self.hub.unit_of_work() as uow:
            complaint = complaints.file_complaint(
                uow.session, partner_code=partner, category="points_missing", description="points did not arrive",
                member_number=self.members[0].member_number, receipt_id=None, redemption_reference=None,
                now=opened, actor="test:cs")
            if closed is not None:
                complaints.transition(uow.session, complaint_id=complaint.id, status="investigating", note=None,
                                      now=opened, actor="test:cs")
                complaints.transition(uow.session, complaint_id=complaint.id, status="resolved", note="credited",
                                      now=closed, actor="test:cs")
            uow.commit()

    def pay_september_statement(self, partner: str, days_late: int) -> int:
        with self.hub.unit_of_work() as uow:
            statement = uow.session.scalars(
                select(SettlementStatement).where(SettlementStatement.partner_id == self.partners[partner])
                .order_by(SettlementStatement.id.desc())).first()
            assert statement is not None and statement.net_minor > 0
            assert statement.due_date.isoformat() == "2026-10-15"
            finance.mark_invoiced(uow.session, statement_id=statement.id, reference=f"inv-{partner}",
                                  actor="test:finance", now=at(10, 2))
            finance.record_payment(uow.session, statement_id=statement.id, amount_minor=statement.net_minor,
                                   paid_on=statement.due_date + timedelta(days=days_late), reference=f"pay-{partner}",
                                   actor="test:finance", now=at(10, 25))
            uow.commit()
            return statement.id


def plant(hub: HubState) -> Planter:
    codes = ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot")
    partners = {code: make_partner(hub, now=CREATED, code=code) for code in codes}
    planter = Planter(hub, partners, [make_member(hub, now=CREATED) for _ in range(4)])
    # September.
    for day, member in ((3, 0), (4, 1), (5, 2)):
        planter.purchase("charlie", member, 10_000, at(9, day))
    alpha_receipts = [planter.purchase("alpha", member, 3_000, at(9, 6 + index))
                      for index, member in enumerate((0, 1, 1))]
    planter.refund("alpha", alpha_receipts[0], 1_000, at(9, 12))
    planter.complaint("alpha", at(9, 20))
    return planter


def plant_october(planter: Planter) -> None:
    for day, member in ((1, 0), (2, 0), (3, 1), (4, 2)):
        planter.purchase("alpha", member, 10_000, at(10, day))
    planter.redeem("alpha", 0, 10, at(10, 5))
    bravo_receipts = [planter.purchase("bravo", member, 5_000, at(10, 6 + index))
                      for index, member in enumerate((0, 1, 2, 2))]
    planter.refund("bravo", bravo_receipts[0], 1_000, at(10, 12))
    planter.complaint("bravo", at(10, 10, 9), at(10, 10, 11))
    for day, member, amount in ((13, 0, 10_000), (14, 1, 5_000), (15, 1, 5_000)):
        planter.purchase("charlie", member, amount, at(10, day))
    planter.redeem("charlie", 0, 10, at(10, 16))
    planter.complaint("charlie", at(10, 11, 8), at(10, 11, 9))
    planter.complaint("charlie", at(10, 12, 8), at(10, 12, 12))
    for day, member in ((17, 0), (18, 1), (19, 2), (20, 2)):
        planter.purchase("delta", member, 2_500, at(10, day))
    planter.redeem("delta", 0, 10, at(10, 21))
    planter.purchase("foxtrot", 3, 5_000, at(10, 22))
    planter.complaint("foxtrot", at(10, 23))


def compute(hub: HubState, period: Period, now: datetime) -> grading.ComputedPeriod:
    with hub.unit_of_work() as uow:
        computed = grading.compute(uow.session, period=period, config=CONFIG, time_zone="UTC", now=now,
                                   actor="test:manager")
        uow.commit()
    return computed


def grades_of(hub: HubState, period: str) -> dict[str, dict]:  # type: ignore[type-arg]
    with hub.unit_of_work() as uow:
        _, views, total = grading.period_grades(uow.session, period=period, limit=200)
    assert total == len(views) == 6
    return {view["partner"]: view for view in views}


@pytest.fixture
def graded(hub: HubState) -> HubState:
    """Both months planted and graded, September's statements closed, paid and disputed."""
    planter = plant(hub)
    assert compute(hub, SEPTEMBER, at(10, 1, 6)) == grading.ComputedPeriod("2026-09", 2, 4, 1)
    close_due_cycles(hub.session_factory, now=at(10, 2), signer=hub.statement_signer)
    plant_october(planter)
    planter.pay_september_statement("alpha", days_late=0)
    charlie_statement = planter.pay_september_statement("charlie", days_late=5)
    with hub.unit_of_work() as uow:
        finance.open_dispute(uow.session, statement_id=charlie_statement, line_number=1, reason="points count",
                             actor="test:finance", now=at(10, 26))
        uow.commit()
    assert compute(hub, OCTOBER, at(11, 2)) == grading.ComputedPeriod("2026-10", 4, 2, 4)
    return hub


def test_september_grades_as_worked_by_hand(graded: HubState) -> None:
    september = grades_of(graded, "2026-09")
    assert {code: (view["status"], view["grade"], view["score"]) for code, view in september.items()} == {
        "alpha": ("graded", "D", "13.1579"), "charlie": ("graded", "A", "86.8421"),
        "bravo": ("not_graded", None, None), "delta": ("not_graded", None, None),
        "echo": ("not_graded", None, None), "foxtrot": ("not_graded", None, None),
    }
    alpha = september["alpha"]["metrics"]
    assert (alpha["purchase_volume_minor"], alpha["active_members"], alpha["complaint_rate_per_1000"],
            alpha["refund_rate"], alpha["median_resolution_hours"]) == (9000, 2, "333.3333", "0.3333", None)
    assert september["bravo"]["not_graded_reason"] == "0 transactions in the period; grading needs at least 3"


def test_october_metrics_as_worked_by_hand(graded: HubState) -> None:
    october = grades_of(graded, "2026-10")
    expected = {
        # volume, purchases, members, points issued, redemptions, points redeemed, complaints, per 1,000,
        # median hours, refund rate, days late, disputes
        "alpha": (40_000, 4, 3, 400, 1, 10, 0, "0.0000", None, "0.0000", 0, 0),
        "bravo": (20_000, 4, 3, 200, 0, 0, 1, "250.0000", "2.0000", "0.2500", 0, 0),
        "charlie": (20_000, 3, 2, 200, 1, 10, 2, "500.0000", "2.5000", "0.0000", 5, 1),
        "delta": (10_000, 4, 3, 100, 1, 10, 0, "0.0000", None, "0.0000", 0, 0),
        "echo": (0, 0, 0, 0, 0, 0, 0, None, None, None, 0, 0),
        "foxtrot": (5_000, 1, 1, 50, 0, 0, 1, "1000.0000", None, "0.0000", 0, 0),
    }
    names = ("purchase_volume_minor", "purchase_count", "active_members", "points_issued", "redemption_count",
             "redemption_points", "complaint_count", "complaint_rate_per_1000", "median_resolution_hours",
             "refund_rate", "days_late", "disputes_opened")
    assert {code: tuple(view["metrics"][name] for name in names) for code, view in october.items()} == expected


def test_october_grades_scores_and_breakdown_as_worked_by_hand(graded: HubState) -> None:
    october = grades_of(graded, "2026-10")
    assert {code: (view["status"], view["computed_grade"], view["score"]) for code, view in october.items()} == {
        "alpha": ("graded", "A", "78.9474"), "bravo": ("graded", "C", "44.1667"),
        "charlie": ("graded", "C", "25.8333"), "delta": ("graded", "B", "52.6316"),
        "echo": ("not_graded", None, None), "foxtrot": ("not_graded", None, None),
    }
    assert october["echo"]["not_graded_reason"] == "0 transactions in the period; grading needs at least 3"
    assert october["foxtrot"]["not_graded_reason"] == "1 transactions in the period; grading needs at least 3"
    lines = {line["metric"]: line for line in october["alpha"]["breakdown"]}
    assert (lines["purchase_volume_minor"]["percentile"], lines["purchase_volume_minor"]["effective_weight"],
            lines["purchase_volume_minor"]["contribution"]) == ("1.0000", "26.32", "26.3158")
    assert (lines["complaint_rate_per_1000"]["percentile"], lines["complaint_rate_per_1000"]["contribution"]) == \
        ("0.8333", "17.5439")
    # No closed complaint: the metric is left out and its weight shared by the others.
    assert (lines["median_resolution_hours"]["value"], lines["median_resolution_hours"]["contribution"]) == (None, None)
    # A metric without weight is shown but adds nothing.
    assert (lines["points_issued"]["weight"], lines["points_issued"]["contribution"]) == (0, None)
    bravo = {line["metric"]: line for line in october["bravo"]["breakdown"]}
    # Ties share a rank: bravo and charlie have the same volume, three partners have 3 members.
    assert bravo["purchase_volume_minor"]["percentile"] == "0.5000"
    assert bravo["active_members"]["percentile"] == "0.6667"
    assert bravo["median_resolution_hours"]["contribution"] == "5.0000"
    assert sum(Decimal(line["contribution"]) for line in bravo.values() if line["contribution"]) == Decimal("44.1667")


def test_what_moved_since_last_period(graded: HubState) -> None:
    october = grades_of(graded, "2026-10")
    alpha = october["alpha"]["changes"]
    assert (alpha["previous_grade"], alpha["grade"], alpha["bands_dropped"]) == ("D", "A", -3)
    assert (alpha["previous_score"], alpha["score"], alpha["score_change"]) == ("13.1579", "78.9474", "65.7895")
    biggest = alpha["metrics"][0]
    assert (biggest["metric"], biggest["previous_value"], biggest["value"], biggest["contribution_change"]) == \
        ("purchase_volume_minor", 9000, 40000, "26.3158")
    charlie = october["charlie"]["changes"]
    assert (charlie["previous_grade"], charlie["grade"], charlie["bands_dropped"]) == ("A", "C", 2)
    assert october["bravo"]["changes"]["previous_grade"] is None
    with graded.unit_of_work() as uow:
        assert grading.partner_grade(uow.session, code="alpha", period="2026-09")["changes"] == {
            "previous_period": False}


def test_alerts_for_a_two_band_downgrade_and_high_complaint_rates(graded: HubState) -> None:
    with graded.unit_of_work() as uow:
        alerts, total = grading.list_alerts(uow.session)
    assert total == 5
    assert sorted((alert["period"], alert["partner"], alert["kind"]) for alert in alerts) == [
        ("2026-09", "alpha", "complaint_rate"), ("2026-10", "bravo", "complaint_rate"),
        ("2026-10", "charlie", "complaint_rate"), ("2026-10", "charlie", "downgrade"),
        ("2026-10", "foxtrot", "complaint_rate"),
    ]
    downgrade = next(alert for alert in alerts if alert["kind"] == "downgrade")
    assert downgrade["detail"] == "charlie fell from A to C (2 bands)"
    with graded.unit_of_work() as uow:
        acknowledged = grading.acknowledge_alert(uow.session, alert_id=downgrade["id"], now=at(11, 3),
                                                 actor="test:manager")
        uow.commit()
    assert acknowledged["acknowledged_by"] == "test:manager"
    with graded.unit_of_work() as uow:
        assert grading.list_alerts(uow.session)[1] == 4
        assert grading.list_alerts(uow.session, acknowledged=True)[1] == 1
        assert grading.list_alerts(uow.session, acknowledged=None, period="2026-09")[1] == 1


def test_override_keeps_the_computed_grade_and_is_audited(graded: HubState) -> None:
    with graded.unit_of_work() as uow:
        view = grading.override(uow.session, code="charlie", period="2026-10", grade="B",
                                reason="late payment was our bank's fault", now=at(11, 3), actor="test:manager")
        uow.commit()
    assert (view["grade"], view["computed_grade"], view["overridden"]) == ("B", "C", True)
    assert view["overrides"][0]["reason"] == "late payment was our bank's fault"
    entry = audit_entries(graded)[-1]
    assert (entry.action, entry.subject, entry.actor) == ("grade.override", "partner:charlie:grade:2026-10",
                                                           "test:manager")
    assert entry.before == {"grade": "C", "computed_grade": "C"}
    assert entry.after["grade"] == "B"
    # Recomputing the period (late data) keeps the override and raises no alert twice.
    assert compute(graded, OCTOBER, at(11, 4)).alerts_raised == 0
    with graded.unit_of_work() as uow:
        again = grading.partner_grade(uow.session, code="charlie", period="2026-10")
        summary, only_b, total_b = grading.period_grades(uow.session, period="2026-10", grade="B")
    assert (again["grade"], again["computed_grade"], again["score"]) == ("B", "C", "25.8333")
    assert sorted(view["partner"] for view in only_b) == ["charlie", "delta"] and total_b == 2
    assert summary["computed_at"] == at(11, 4)
    with graded.unit_of_work() as uow:
        history = grading.partner_history(uow.session, code="charlie")
    assert [(view["period"], view["grade"]) for view in history] == [("2026-10", "B"), ("2026-09", "A")]
    with graded.unit_of_work() as uow:
        assert run_audit(uow.session).ok


def test_overrides_are_append_only_in_the_database(graded: HubState) -> None:
    with graded.unit_of_work() as uow:
        grading.override(uow.session, code="delta", period="2026-10", grade="A", reason="flagship store",
                         now=at(11, 3), actor="test:manager")
        uow.commit()
    for statement in ("UPDATE grade_overrides SET grade = 'D'", "DELETE FROM grade_overrides"):
        with graded.unit_of_work() as uow, pytest.raises(DBAPIError):
            uow.session.execute(text(statement))
    with graded.unit_of_work() as uow:
        assert uow.session.scalar(select(GradeOverride.grade)) == "A"


def test_override_refuses_bad_input_and_changes_nothing(graded: HubState) -> None:
    cases = [
        (dict(code="charlie", period="2026-10", grade="E", reason="x"), ValidationFailed),
        (dict(code="charlie", period="2026-10", grade="B", reason="   "), ValidationFailed),
        (dict(code="charlie", period="2026-13", grade="B", reason="x"), ValidationFailed),
        (dict(code="charlie", period="2026-08", grade="B", reason="x"), NotFound),
        (dict(code="nobody", period="2026-10", grade="B", reason="x"), NotFound),
    ]
    before = len(audit_entries(graded))
    for arguments, error in cases:
        with graded.unit_of_work() as uow, pytest.raises(error):
            grading.override(uow.session, now=at(11, 3), actor="test:manager", **arguments)
    with graded.unit_of_work() as uow:
        assert uow.session.scalar(select(func.count()).select_from(GradeOverride)) == 0
    assert len(audit_entries(graded)) == before


def test_a_period_is_graded_only_after_it_ends(hub: HubState) -> None:
    with hub.unit_of_work() as uow, pytest.raises(ValidationFailed, match="has not ended"):
        grading.compute(uow.session, period=Period.parse("2026-11"), config=CONFIG, time_zone="UTC",
                        now=at(11, 30, 23, 59), actor="test")


def test_csv_export_has_one_row_per_partner_with_exact_metrics(graded: HubState) -> None:
    with graded.unit_of_work() as uow:
        document = grading.export_csv(uow.session, period="2026-10")
    rows = list(csv.DictReader(io.StringIO(document)))
    assert [row["partner"] for row in rows] == ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot"]
    charlie = rows[2]
    assert (charlie["grade"], charlie["score"], charlie["days_late"], charlie["median_resolution_hours"],
            charlie["overridden"]) == ("C", "25.8333", "5", "2.5000", "no")
    assert rows[4]["status"] == "not_graded" and rows[4]["grade"] == ""


def test_scheduler_job_grades_last_month_once(graded: HubState) -> None:
    job = grading.grading_job(CONFIG, "UTC")
    with graded.unit_of_work() as uow:
        # November 2026 is not over on 30 November, so October is the month before: already done.
        assert job.run(uow.session, now=at(11, 30), limit=1000) == 0
    with graded.unit_of_work() as uow:
        assert job.run(uow.session, now=datetime(2026, 12, 1, 3, tzinfo=timezone.utc), limit=1000) == 6
        uow.commit()
    with graded.unit_of_work() as uow:
        assert job.run(uow.session, now=datetime(2026, 12, 1, 4, tzinfo=timezone.utc), limit=1000) == 0
    november = grades_of(graded, "2026-11")
    # No activity in November: nobody is graded, and a grade never turns into a D for want of data.
    assert {view["status"] for view in november.values()} == {"not_graded"}


def test_alert_acknowledgement_is_once_and_unknown_alerts_are_404(graded: HubState) -> None:
    with graded.unit_of_work() as uow:
        alert_id = uow.session.scalar(select(GradeAlert.id).order_by(GradeAlert.id))
        grading.acknowledge_alert(uow.session, alert_id=alert_id, now=at(11, 3), actor="first")
        uow.commit()
    with graded.unit_of_work() as uow:
        assert grading.acknowledge_alert(uow.session, alert_id=alert_id, now=at(11, 4),
                                         actor="second")["acknowledged_by"] == "first"
        with pytest.raises(NotFound):
            grading.acknowledge_alert(uow.session, alert_id=999_999, now=at(11, 4), actor="second")


def test_latest_grades_give_each_partner_its_newest_grade_and_trend(graded: HubState) -> None:
    with graded.unit_of_work() as uow:
        grading.override(uow.session, code="delta", period="2026-09", grade="A", reason="launch month",
                         now=at(11, 3), actor="test:manager")
        uow.commit()
    with graded.unit_of_work() as uow:
        latest = grading.latest_grades(uow.session)
    assert {code: (view["period"], view["grade"], view["previous_grade"], view["trend"])
            for code, view in latest.items()} == {
        "alpha": ("2026-10", "A", "D", "up"), "bravo": ("2026-10", "C", None, None),
        "charlie": ("2026-10", "C", "A", "down"), "delta": ("2026-10", "B", "A", "down"),
        "echo": ("2026-10", None, None, None), "foxtrot": ("2026-10", None, None, None),
    }


def _days_late(hub: HubState, period: str) -> dict[str, int]:
    with hub.unit_of_work() as uow:
        _, views, _ = grading.period_grades(uow.session, period=period, limit=200)
    return {view["partner"]: view["metrics"]["days_late"] for view in views}


def test_an_unpaid_overdue_statement_is_late_up_to_the_grading_day(hub: HubState) -> None:
    """alpha's and charlie's September statements fall due on 15 October and stay unpaid.

    Graded on 2 November, October counts them 18 days late (15 October to 2 November),
    not 0; graded again on 1 December, November still counts them, 47 days late; once
    paid (on 20 October, as recorded late), a later period no longer counts them.
    """
    planter = plant(hub)
    compute(hub, SEPTEMBER, at(10, 1, 6))
    close_due_cycles(hub.session_factory, now=at(10, 2), signer=hub.statement_signer)
    plant_october(planter)
    compute(hub, OCTOBER, at(11, 2))
    october = _days_late(hub, "2026-10")
    assert (october["alpha"], october["charlie"], october["bravo"]) == (18, 18, 0)
    november = Period.parse("2026-11")
    compute(hub, november, datetime(2026, 12, 1, 3, tzinfo=timezone.utc))
    assert _days_late(hub, "2026-11")["alpha"] == 47
    planter.pay_september_statement("alpha", days_late=5)
    compute(hub, november, datetime(2026, 12, 1, 4, tzinfo=timezone.utc))
    compute(hub, OCTOBER, at(11, 3))
    # Paid on 20 October: 5 days late in October, nothing left over for November.
    assert (_days_late(hub, "2026-11")["alpha"], _days_late(hub, "2026-10")["alpha"]) == (0, 5)
    assert _days_late(hub, "2026-11")["charlie"] == 47


def test_confirmed_fraud_counts_against_the_partner_it_happened_at(hub: HubState) -> None:
    from alliance.domain.risk import Action
    from alliance.services import risk

    planter = plant(hub)
    plant_october(planter)
    with hub.unit_of_work() as uow:
        made = {}
        for code, moment in (("delta", at(10, 21, 13)), ("bravo", at(10, 9)), ("delta", at(9, 30))):
            decided = risk.record(uow.session, operation="redeem", action=Action.FLAG, now=moment, points=10,
                                  subject=risk.Subject(partner_id=planter.partners[code]), reference=None,
                                  evidence=[{"limit": "test", "count": 2}])
            made[(code, moment.month)] = risk.keep(uow.session, decided)
        uow.commit()
    for (code, month), action in ((("delta", 10), "confirm"), (("bravo", 10), "dismiss"), (("delta", 9), "confirm")):
        with hub.unit_of_work() as uow:
            risk.review(uow.session, decision_id=made[(code, month)], action=action, note="looked at the till",
                        now=at(11, 1), actor="test:risk", approval_threshold_points=0)
            uow.commit()
    compute(hub, OCTOBER, at(11, 2))
    october = grades_of(hub, "2026-10")
    # Delta: one confirmed case in October (September's is another period) over 4 purchases and 1 redemption.
    assert (october["delta"]["metrics"]["confirmed_fraud_count"],
            october["delta"]["metrics"]["confirmed_fraud_per_1000"]) == (1, "200.0000")
    # Bravo's case was a false alarm; Echo had no transactions, so it has no rate.
    assert october["bravo"]["metrics"]["confirmed_fraud_count"] == 0
    assert october["echo"]["metrics"]["confirmed_fraud_per_1000"] is None
