"""The points liability report: hand-built figures, as-of reproducibility, and the tie-out to the ledger."""

from __future__ import annotations

import csv
import io
import itertools
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from fractions import Fraction
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from alliance.domain.errors import InsufficientPoints, ValidationFailed
from alliance.models import LotConsumption, Partner, PointLot, RedemptionHold
from alliance.services import ledger
from settlement.api import member_liability_points_by_kind, points_liability, render_liability_csv
from tests.factories import make_member, make_partner

PARIS = "Europe/Paris"


def run(hub, operation, **arguments):
    """Run one service call in its own committed unit of work."""
    with hub.unit_of_work() as uow:
        result = operation(uow.session, **arguments)
        uow.commit()
    return result


def report_at(hub, as_of, *, now=None, time_zone=PARIS):
    with hub.unit_of_work() as uow:
        return points_liability(uow.session, as_of=as_of, time_zone=time_zone, now=now or as_of)


def redeem(hub, *, member_id, partner_id, points, at, capture=True):
    hold = run(hub, ledger.authorize_hold, member_id=member_id, partner_id=partner_id, points=points, now=at,
               ttl_s=600)
    if capture:
        run(hub, ledger.capture_hold, hold_id=hold.hold_id, points=points, now=at + timedelta(seconds=1))
    return hold


def lines_by_issuer(report):
    return {line.issuer: (line.pending_points, line.available_points, line.held_points,
                          line.expected_to_expire_points, dict(line.value_minor)) for line in report.by_issuer}


@pytest.fixture
def scenario(hub, now):
    """Two issuers, a redeemer and hub-funded points for one member, built step by step (see the test)."""
    a = make_partner(hub, now=now - timedelta(days=400), code="alpha", redemption_price_per_point=Decimal("0.0080"))
    b = make_partner(hub, now=now - timedelta(days=400), code="beta", redemption_price_per_point=Decimal("0.0120"))
    r = make_partner(hub, now=now - timedelta(days=400), code="rho", redemption_price_per_point=Decimal("0.0100"))
    member = make_member(hub, now=now - timedelta(days=400)).member_id
    # History: 100 points of alpha expiring 100 days ago; 60 redeemed at rho, the other 40 expire.
    run(hub, ledger.earn, member_id=member, partner_id=a, points=100, now=now - timedelta(days=200),
        expires_at=now - timedelta(days=100))
    redeem(hub, member_id=member, partner_id=r, points=60, at=now - timedelta(days=150))
    assert run(hub, ledger.expire_due_lots, now=now - timedelta(days=100)) == 40
    # Outstanding: 200 of alpha (March 2027 in Paris), 50 hub-funded expiring 23:30 UTC on
    # 31 December 2026, which is January 2027 in Paris, and 80 of beta pending for two weeks.
    l1 = run(hub, ledger.earn, member_id=member, partner_id=a, points=200, now=now - timedelta(days=10),
             expires_at=datetime(2027, 3, 15, 12, tzinfo=UTC))
    run(hub, ledger.earn, member_id=member, partner_id=None, points=50, now=now - timedelta(days=10),
        expires_at=datetime(2026, 12, 31, 23, 30, tzinfo=UTC))
    run(hub, ledger.earn, member_id=member, partner_id=b, points=80, now=now - timedelta(days=5),
        expires_at=datetime(2027, 3, 20, 12, tzinfo=UTC), pending_until=now + timedelta(days=9))
    return {"a": a, "b": b, "r": r, "member": member, "l1": l1}


def test_the_report_from_hand_built_activity(hub, now, scenario):
    member, b, r = scenario["member"], scenario["b"], scenario["r"]
    four_days_ago = now - timedelta(days=4)
    then = report_at(hub, four_days_ago)
    # Four days ago: nothing redeemed yet of the current lots. The look-back's redemptions
    # are 60 points at rho's 0.0100 EUR: one cent a point. Breakage history: 40 of 100 expired.
    assert then.breakage_rate == Fraction(2, 5)
    assert (then.expired_points, then.redeemed_points) == (40, 60)
    assert lines_by_issuer(then) == {
        "hub": (0, 50, 0, 20, {"EUR": 50}),
        "alpha": (0, 200, 0, 80, {"EUR": 200}),
        "beta": (80, 0, 0, 32, {"EUR": 80}),
    }
    assert [(line.expiry_month, line.outstanding_points) for line in then.by_expiry_month] == [
        ("2027-01", 50), ("2027-03", 280)]
    assert then.total.outstanding_points == then.ledger_points == 330
    assert then.ties_out

    # Then: 70 redeemed at beta (soonest expiry first: the 50 hub points, then 20 of alpha),
    # 30 of alpha's purchase clawed back, and 40 held for a redemption at rho not yet captured.
    redeem(hub, member_id=member, partner_id=b, points=70, at=now - timedelta(days=3))
    run(hub, ledger.clawback_earn, earn_transaction_id=scenario["l1"].transaction_id, points=30,
        now=now - timedelta(days=2))
    redeem(hub, member_id=member, partner_id=r, points=40, at=now - timedelta(hours=1), capture=False)

    report = report_at(hub, now)
    # Look-back redemptions: 60 × 0.0100 + 70 × 0.0120 = 1.44 EUR for 130 points, so a point
    # is worth 144/130 cents: alpha's 150 points 166.15… → 166 cents, beta's 80 88.61… → 89.
    assert lines_by_issuer(report) == {
        "alpha": (0, 110, 40, 60, {"EUR": 166}),
        "beta": (80, 0, 0, 32, {"EUR": 89}),
    }
    assert report.total.value_minor == {"EUR": 255}
    assert report.total.expected_to_expire_points == 92
    assert report.total.expected_to_redeem_points == 138
    assert [(line.expiry_month, line.outstanding_points) for line in report.by_expiry_month] == [("2027-03", 230)]
    assert report.total.outstanding_points == report.ledger_points == 230

    # A report for the past is recomputed from the journal: the later activity changes nothing.
    assert report_at(hub, four_days_ago, now=now) == then


def test_the_report_now_agrees_with_the_lots_and_open_holds(hub, now, scenario):
    redeem(hub, member_id=scenario["member"], partner_id=scenario["r"], points=25, at=now - timedelta(hours=2),
           capture=False)
    report = report_at(hub, now)
    with hub.unit_of_work() as uow:
        lots = uow.session.execute(select(PointLot.partner_id, PointLot.state, PointLot.points_remaining)).all()
        held = uow.session.scalars(select(RedemptionHold.points_held).where(RedemptionHold.status == "open")).all()
    pending = sum(points for _, state, points in lots if state == "pending")
    available = sum(points for _, state, points in lots if state == "active")
    assert (report.total.pending_points, report.total.available_points, report.total.held_points) == (
        pending, available, sum(held))
    by_kind = member_liability_points_by_kind_at(hub, now)
    assert (by_kind["member_pending"], by_kind["member_available"], by_kind["member_held"]) == (
        report.total.pending_points, report.total.available_points, report.total.held_points)


def member_liability_points_by_kind_at(hub, as_of):
    with hub.unit_of_work() as uow:
        return member_liability_points_by_kind(uow.session, as_of=as_of)


def test_a_future_or_naive_as_of_is_refused(hub, now):
    with hub.unit_of_work() as uow:
        with pytest.raises(ValidationFailed):
            points_liability(uow.session, as_of=now + timedelta(seconds=1), time_zone=PARIS, now=now)
        with pytest.raises(ValidationFailed):
            points_liability(uow.session, as_of=now.replace(tzinfo=None), time_zone=PARIS, now=now)


def test_an_empty_alliance_owes_nothing(hub, now):
    report = report_at(hub, now)
    assert report.cells == () and report.total.outstanding_points == 0 and report.ledger_points == 0
    assert report.total.value_minor == {} and report.breakage_rate == 0


def test_the_csv_has_one_row_per_issuer_month_cell_and_the_total(hub, now, scenario):
    rows = list(csv.DictReader(io.StringIO(render_liability_csv(report_at(hub, now)))))
    total = [row for row in rows if row["section"] == "total"]
    assert len(total) == 1 and total[0]["outstanding_points"] == "330" and total[0]["value_EUR"] == "3.30"
    assert {row["issuer"] for row in rows if row["section"] == "issuer"} == {"hub", "alpha", "beta"}
    assert [row["expiry_month"] for row in rows if row["section"] == "expiry_month"] == ["2027-01", "2027-03"]


# The property: on random activity, the report's totals equal the ledger's, by issuer and in all.

EXAMPLE_NUMBERS = itertools.count()
operation_strategy = st.tuples(
    st.sampled_from(["earn", "earn", "earn_pending", "redeem", "hold", "clawback", "activate", "expire"]),
    st.integers(min_value=0, max_value=2),  # issuer (2 = hub-funded)
    st.integers(min_value=0, max_value=1),  # member
    st.integers(min_value=1, max_value=300),  # points
    st.integers(min_value=1, max_value=60),  # expiry in days after the operation
)


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(operations=st.lists(operation_strategy, min_size=1, max_size=16),
       prices=st.lists(st.decimals(min_value=Decimal("0.0001"), max_value=Decimal("0.05"), places=4),
                       min_size=2, max_size=2))
def test_for_random_activity_the_report_ties_out_to_the_ledger(pg_hub, operations, prices):
    hub = pg_hub
    example = next(EXAMPLE_NUMBERS)
    start = datetime(2027, 1, 1, tzinfo=UTC) + timedelta(days=400 * example)
    partners = [make_partner(hub, now=start, code=f"l{example}-{index}", redemption_price_per_point=prices[index],
                             currency=("EUR", "JPY")[index]) for index in range(2)]
    members = [make_member(hub, now=start).member_id for _ in range(2)]
    earns: list[int] = []
    snapshots = []
    at = start
    for kind, issuer_index, member_index, points, expiry_days in operations:
        at += timedelta(days=3)
        member = members[member_index]
        issuer = partners[issuer_index] if issuer_index < 2 else None
        try:
            if kind in ("earn", "earn_pending"):
                result = run(hub, ledger.earn, member_id=member, partner_id=issuer, points=points, now=at,
                             expires_at=at + timedelta(days=expiry_days),
                             pending_until=at + timedelta(days=4) if kind == "earn_pending" else None)
                earns.append(result.transaction_id)
            elif kind in ("redeem", "hold"):
                redeem(hub, member_id=member, partner_id=partners[issuer_index % 2], points=points, at=at,
                       capture=kind == "redeem")
            elif kind == "clawback" and earns:
                run(hub, ledger.clawback_earn, earn_transaction_id=earns[points % len(earns)], points=1, now=at)
            elif kind == "activate":
                run(hub, ledger.activate_due_lots, now=at)
            elif kind == "expire":
                run(hub, ledger.expire_due_lots, now=at)
        except (InsufficientPoints, ValidationFailed):
            pass
        # What the stored lots and open holds say right now, by issuer: the report for this
        # moment, recomputed from the journal after everything else, must say the same.
        with hub.unit_of_work() as uow:
            snapshots.append((at + timedelta(seconds=2), issuer_points_from_lots(uow.session)))
    now = at + timedelta(seconds=5)
    for as_of, issuers_then in snapshots:
        report = report_at(hub, as_of, now=now, time_zone="UTC")
        by_kind = member_liability_points_by_kind_at(hub, as_of)
        assert report.total.outstanding_points == report.ledger_points == sum(by_kind.values())
        assert (report.total.pending_points, report.total.available_points, report.total.held_points) == (
            by_kind["member_pending"], by_kind["member_available"], by_kind["member_held"])
        assert {line.issuer: line.outstanding_points for line in report.by_issuer} == issuers_then
        assert sum(line.outstanding_points for line in report.by_expiry_month) == report.ledger_points
        for currency in report.currencies:
            for lines in (report.cells, report.by_issuer, report.by_expiry_month):
                assert sum(line.value_minor.get(currency, 0) for line in lines) == report.total.value_minor[currency]
        assert sum(line.expected_to_expire_points for line in report.cells) == report.total.expected_to_expire_points
        for cell in report.cells:
            assert cell.expected_to_expire_points == round(cell.outstanding_points * report.breakage_rate)


def issuer_points_from_lots(session):
    """Outstanding points by issuer code from the stored lot remainders and the open holds' lot consumptions."""
    held = (
        select(LotConsumption.lot_id, func.sum(LotConsumption.points).label("points"))
        .join(RedemptionHold, RedemptionHold.id == LotConsumption.hold_id)
        .where(RedemptionHold.status == "open")
        .group_by(LotConsumption.lot_id)
        .subquery()
    )
    rows = session.execute(
        select(Partner.code, PointLot.points_remaining, held.c.points)
        .select_from(PointLot)
        .outerjoin(Partner, Partner.id == PointLot.partner_id)
        .outerjoin(held, held.c.lot_id == PointLot.id)
    ).all()
    totals: dict[str, int] = {}
    for code, remaining, on_hold in rows:
        points = int(remaining) + int(on_hold or 0)
        if points:
            totals[code or "hub"] = totals.get(code or "hub", 0) + points
    return totals


# The back-office API.


@pytest.fixture
def back_office(app):
    from tests.back_office_support import BackOffice
    return BackOffice(app)


def test_finance_reads_the_liability_as_json_and_as_csv(hub, now, scenario, back_office):
    reply = back_office.get("/liability", role="finance")
    assert reply.status == 200, reply.body
    assert reply.body["total"]["outstanding_points"] == reply.body["ledger_points"] == 330
    assert reply.body["ties_out"] is True
    assert reply.body["breakage_rate"] == "2/5"
    assert {line["issuer"]: line["outstanding_points"] for line in reply.body["by_issuer"]} == {
        "hub": 50, "alpha": 200, "beta": 80}
    assert reply.body["total"]["value_minor"] == {"EUR": 330}

    # A past date is the end of that day in the alliance's time zone, recomputed from the journal.
    zone = hub.settings.alliance_time_zone
    day = (now - timedelta(days=7)).date()
    past = back_office.get("/liability", role="finance", query={"as_of": day.isoformat()})
    assert past.status == 200
    end_of_day = datetime.combine(day + timedelta(days=1), datetime.min.time(), tzinfo=ZoneInfo(zone)) - timedelta(
        microseconds=1)
    expected = report_at(hub, end_of_day, now=datetime.now(UTC), time_zone=zone)
    assert past.body["total"]["outstanding_points"] == expected.total.outstanding_points == 250
    assert past.body["as_of"] == end_of_day.astimezone(UTC).isoformat()

    response = back_office.client.get("/back-office/v1/liability?format=csv&as_of=2026-10-27T00:00:00Z",
                                      headers={"Authorization": f"Bearer {back_office.token('finance')}"})
    assert response.status_code == 200 and response.content_type.startswith("text/csv")
    assert 'filename="points-liability-' in response.headers["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))
    assert [row["outstanding_points"] for row in rows if row["section"] == "total"] == ["250"]


@pytest.mark.parametrize("as_of", ["yesterday", "2026-13-01", "2999-01-01", "2999-01-01T00:00:00Z",
                                   "2026-10-01T00:00:00"])
def test_a_malformed_or_future_as_of_is_a_problem(back_office, as_of):
    reply = back_office.get("/liability", role="finance", query={"as_of": as_of})
    assert reply.status == 422
    assert reply.headers["Content-Type"].startswith("application/problem+json")
    assert reply.code == "validation_failed"


def test_only_finance_reads_the_liability(back_office):
    assert back_office.get("/liability", role="customer_service").status == 403
    assert back_office.call("GET", "/liability").status == 401
    assert back_office.get("/liability", role="finance", query={"format": "xml"}).status == 422


# The command line.


def test_the_cli_prints_the_report_and_writes_the_csv(app, scenario, tmp_path):
    from tests.back_office_support import run_cli

    out = tmp_path / "liability.csv"
    result = run_cli(app, "finance", "liability", "--as-of", "2026-10-27T00:00:00+00:00", "--csv", str(out))
    assert result.exit_code == 0, result.output
    assert "issuer hub\tpending 0\tavailable 50\theld 0\toutstanding 50\texpected to expire 20\tvalue 0.50 EUR" \
        in result.output
    assert "total\tpending 0\tavailable 250\theld 0\toutstanding 250" in result.output
    assert "members' accounts hold 250 points; ties out" in result.output
    assert "(rate 2/5)" in result.output
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert [row["outstanding_points"] for row in rows if row["section"] == "total"] == ["250"]


@pytest.mark.parametrize("as_of", ["yesterday", "2999-01-01"])
def test_the_cli_refuses_a_malformed_or_future_date(app, as_of):
    from click.testing import CliRunner

    from alliance.cli import main

    with app.app_context():
        result = CliRunner().invoke(main, ["finance", "liability", "--as-of", as_of])
    assert result.exit_code == 2 if as_of == "yesterday" else result.exit_code == 1
    assert ("--as-of" if as_of == "yesterday" else "is in the future") in result.output


# The console page.

LIABILITY_PAGE = "/console/finance/liability"


def test_the_console_page_shows_the_report_by_issuer_and_month(app, scenario):
    from tests.console_support import signed_in, text_of

    finance = signed_in(app, "fiona", "finance")
    response = finance.get(LIABILITY_PAGE, as_of="2026-10-27")
    assert response.status_code == 200
    shown = text_of(response)
    html = response.get_data(as_text=True)
    assert "330 points" not in shown and "250 points" in shown  # beta's points were earned on 28 October
    assert "the report ties out to the ledger" in shown
    assert "Alpha (alpha)" in shown and "The hub (hub-funded points)" in shown
    assert "2.50 EUR" in shown and "0.50 EUR" in shown
    assert "December 2026" in shown and "March 2027" in shown  # the test hub keeps its months in UTC
    assert "40.00% of the outstanding points are expected to expire" in shown
    assert html.count("<caption>") == 2 and 'scope="row"' in html and 'data-label="Value when redeemed"' in html
    # Today's report is as of now: beta's pending points are in it.
    assert "330 points" in text_of(finance.get(LIABILITY_PAGE))


def test_the_console_page_sorts_issuers_and_downloads_csv(app, scenario):
    from tests.console_support import signed_in

    finance = signed_in(app, "fiona", "finance")
    html = finance.get(LIABILITY_PAGE, as_of="2026-10-27", sort="outstanding", order="desc").get_data(as_text=True)
    assert html.index("Alpha (alpha)") < html.index("The hub (hub-funded points)")
    assert 'aria-sort="descending"' in html
    html = finance.get(LIABILITY_PAGE, as_of="2026-10-27", sort="outstanding", order="asc").get_data(as_text=True)
    assert html.index("The hub (hub-funded points)") < html.index("Alpha (alpha)")
    assert finance.get(LIABILITY_PAGE, sort="nonsense").status_code == 400

    download = finance.get("/console/finance/liability.csv", as_of="2026-10-27")
    assert download.status_code == 200 and download.content_type.startswith("text/csv")
    assert 'filename="points-liability-2026-10-27.csv"' in download.headers["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(download.get_data(as_text=True))))
    assert [(row["outstanding_points"], row["value_EUR"]) for row in rows if row["section"] == "total"] == [
        ("250", "2.50")]


def test_the_console_page_when_nothing_is_owed_and_for_bad_dates(app):
    from tests.console_support import signed_in, text_of

    finance = signed_in(app, "fiona", "finance")
    shown = text_of(finance.get(LIABILITY_PAGE))
    assert "No points were outstanding at that moment" in shown and "not valued" in shown
    assert finance.get(LIABILITY_PAGE, as_of="not-a-date").status_code == 400
    future = finance.get(LIABILITY_PAGE, as_of="2999-01-01")
    assert future.status_code == 400 and "in the future" in text_of(future)
    assert finance.get("/console/finance/liability.csv", as_of="2999-01-01").status_code == 400


def test_the_console_page_is_for_finance_only(app):
    from tests.console_support import ConsoleClient, signed_in

    assert signed_in(app, "cora", "customer_service").get(LIABILITY_PAGE).status_code == 403
    assert signed_in(app, "pam", "partner_manager").get("/console/finance/liability.csv").status_code == 403
    anonymous = ConsoleClient(app).get(LIABILITY_PAGE)
    assert anonymous.status_code in (302, 303) and "/console/login" in anonymous.headers["Location"]
    start = signed_in(app, "fiona", "finance").get("/console/").get_data(as_text=True)
    assert "Points liability" in start


def test_the_earliest_as_of_owes_nothing(back_office):
    # The look-back then starts before the calendar does: the earliest moment there is stands in.
    for as_of in ("0001-01-02", "0001-01-01T00:00:00+00:00"):
        reply = back_office.get("/liability", role="finance", query={"as_of": as_of})
        assert reply.status == 200, reply.body
        assert reply.body["total"]["outstanding_points"] == 0 and reply.body["ties_out"] is True
