"""The console's coupon pages for partner managers: the series listed, sorted and filtered; a series' page with its
terms in words, uses and points, its coupons a page at a time and every code as CSV; creating a series of each kind,
issuing it to a target and stopping it, every refusal shown and nothing changed, every change audited."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select, update

from alliance.extensions import HubState, hub_state
from alliance.models import AuditLogEntry, Coupon, CouponSeries, Member
from alliance.services.purchases import PurchaseReport, report_purchase
from tests.console_support import ConsoleClient, audit_actions, signed_in, text_of
from tests.factories import make_member, make_partner
from tests.http_server import assert_audit_green


def _local(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M+00:00")


def _counts(hub: HubState) -> tuple[int, int, int]:
    """Series, coupons and audit entries: what a coupon form could add."""
    with hub.unit_of_work() as uow:
        return tuple(uow.session.scalar(select(func.count()).select_from(model)) or 0  # type: ignore[return-value]
                     for model in (CouponSeries, Coupon, AuditLogEntry))


def _series_form(code: str, **fields: object) -> dict[str, object]:
    now = datetime.now(UTC)
    form: dict[str, object] = {"code": code, "title": f"Title of {code}", "funder": "brand", "kind": "bonus",
                               "bonus_points": "50", "valid_from": _local(now - timedelta(hours=1)),
                               "valid_until": _local(now + timedelta(days=30)), "uses_per_coupon": "1"}
    return form | fields


def _flashed(browser: ConsoleClient, response) -> str:  # type: ignore[no-untyped-def]
    assert response.status_code == 303, response.get_data(as_text=True)
    return text_of(browser.client.get(response.headers["Location"]))


def test_only_partner_managers_and_admins_open_the_coupon_pages(app):
    hub = hub_state(app)
    make_partner(hub, now=datetime.now(UTC) - timedelta(days=1), code="brand")
    manager = signed_in(app, "petra", "partner_manager")
    assert "No coupon series yet" in text_of(manager.get("/console/coupons"))
    assert manager.post("/console/coupons", _series_form("welcome")).status_code == 303
    admin = signed_in(app, "ada", "admin")
    assert "welcome" in text_of(admin.get("/console/coupons"))
    assert admin.get("/console/coupons/welcome").status_code == 200
    before = _counts(hub)
    for role in ("finance", "customer_service", "risk"):
        other = signed_in(app, f"other-{role}", role)
        for path in ("/console/coupons", "/console/coupons/welcome", "/console/coupons/welcome/codes.csv"):
            assert other.get(path).status_code == 403, (role, path)
        assert other.post("/console/coupons", _series_form("sneaky")).status_code == 403
        assert other.post("/console/coupons/welcome/issues", {"tier": "gold"}).status_code == 403
        assert other.post("/console/coupons/welcome/stop", {"reason": "r", "confirm": "yes"}).status_code == 403
    anonymous = ConsoleClient(app).get("/console/coupons")
    assert anonymous.status_code in (302, 303) and "/console/login" in anonymous.headers["Location"]
    assert manager.get("/console/coupons/nothing-here").status_code == 404
    assert _counts(hub)[:2] == before[:2]


def test_a_partner_manager_creates_series_of_each_kind_and_refusals_create_nothing(app):
    hub = hub_state(app)
    created = datetime.now(UTC) - timedelta(days=1)
    make_partner(hub, now=created, code="brand")
    make_partner(hub, now=created, code="shop")
    make_partner(hub, now=created, code="pounds", currency="GBP")
    manager = signed_in(app, "petra", "partner_manager")

    bonus = manager.post("/console/coupons", _series_form("brand-fifty"))
    assert "Coupon series brand-fifty is created" in _flashed(manager, bonus)
    multiplier = manager.post("/console/coupons", _series_form(
        "hub-half", funder="hub", kind="multiplier", bonus_points="", multiplier="1.5", uses_per_coupon="3"))
    assert "is created" in _flashed(manager, multiplier)
    amount_off = manager.post("/console/coupons", _series_form(
        "shop-five", funder="shop", kind="amount_off", bonus_points="", amount_off="5.00", currency="eur",
        points_cost="400", valid_at="shop, brand"))
    assert "is created" in _flashed(manager, amount_off)

    listed = text_of(manager.get("/console/coupons"))
    assert "50 bonus points at brand" in listed
    assert "×1.5 on the next purchase at every partner" in listed
    assert "5.00 EUR off for 400 points at brand, shop" in listed
    page = text_of(manager.get("/console/coupons/shop-five"))
    assert "5.00 EUR off for 400 points" in page and "at brand, shop" in page
    assert "Uses per coupon 1 (single use)" in page
    assert "Uses per coupon 3 Coupons issued" in text_of(manager.get("/console/coupons/hub-half"))

    before = _counts(hub)
    refusals = {
        # The service's refusals: flashed on the list, nothing written.
        "a coupon series 'brand-fifty' exists already": _series_form("brand-fifty"),
        "a multiplier coupon multiplies by more than 1": _series_form(
            "low", kind="multiplier", bonus_points="", multiplier="1"),
        "a bonus coupon takes exactly bonus_points": _series_form("both", multiplier="2"),
        "coupon takes exactly amount_off_minor, points_cost": _series_form(
            "no-cur", kind="amount_off", bonus_points="", points_cost="100"),
        "partners pounds do not sell in EUR": _series_form(
            "mixed", funder="hub", kind="amount_off", bonus_points="", amount_off="1", currency="EUR",
            points_cost="100", valid_at="pounds"),
        "no partner 'nobody'": _series_form("ghost", funder="nobody"),
        "a series ends after it starts": _series_form(
            "backwards", valid_until=_local(datetime.now(UTC) - timedelta(days=2))),
        "a series code is 1-64 lower-case letters": _series_form("Upper Case"),
    }
    for detail, form in refusals.items():
        shown = _flashed(manager, manager.post("/console/coupons", form))
        assert detail in shown, detail
    # Form input the console itself cannot read: a 400 page saying why.
    unreadable = {
        "Choose the kind": _series_form("odd", kind="gift"),
        "multiplier must be a number": _series_form("odd", kind="multiplier", bonus_points="", multiplier="lots"),
        "Give the currency": _series_form("odd", kind="amount_off", bonus_points="", amount_off="5", points_cost="1"),
        "valid from must be a date and time": _series_form("odd", valid_from="tomorrow"),
    }
    for detail, form in unreadable.items():
        response = manager.post("/console/coupons", form)
        assert response.status_code == 400 and detail in text_of(response), detail
    assert manager.post("/console/coupons", _series_form("no-token"), csrf=None).status_code in (400, 403)
    assert _counts(hub) == before
    assert [action for _, action, _ in audit_actions(hub) if action.startswith("coupon_series.")] == [
        "coupon_series.create"] * 3
    assert_audit_green(hub)


def test_the_list_sorts_and_filters_by_status_and_funder(app):
    hub = hub_state(app)
    created = datetime.now(UTC) - timedelta(days=1)
    make_partner(hub, now=created, code="brand")
    make_partner(hub, now=created, code="shop")
    manager = signed_in(app, "petra", "partner_manager")
    later = datetime.now(UTC) + timedelta(days=90)
    for form in (_series_form("bravo", funder="shop"), _series_form("alpha", valid_until=_local(later)),
                 _series_form("charlie", funder="hub", kind="multiplier", bonus_points="", multiplier="2")):
        assert manager.post("/console/coupons", form).status_code == 303
    assert manager.post("/console/coupons/bravo/stop", {"reason": "shop withdrew", "confirm": "yes"}).status_code == 303

    def order(**query: str) -> list[str]:
        """The series codes linked on the list, in the order shown."""
        html = manager.get("/console/coupons", **query).get_data(as_text=True)
        shown = [code for code in ("alpha", "bravo", "charlie") if f">{code}</a>" in html]
        return sorted(shown, key=lambda code: html.index(f">{code}</a>"))

    assert order() == ["charlie", "alpha", "bravo"]  # newest first
    assert order(sort="code", order="asc") == ["alpha", "bravo", "charlie"]
    assert order(sort="code", order="desc") == ["charlie", "bravo", "alpha"]
    assert order(sort="funder") == ["alpha", "charlie", "bravo"]  # brand, hub, shop
    assert order(sort="kind") == ["alpha", "bravo", "charlie"]
    assert order(sort="valid_until", order="desc")[0] == "alpha"
    assert order(sort="status", order="desc")[0] == "bravo"
    assert 'aria-sort="ascending"' in manager.get("/console/coupons", sort="code").get_data(as_text=True)
    assert order(status="stopped") == ["bravo"]
    assert order(status="active", sort="code") == ["alpha", "charlie"]
    assert order(funder="hub") == ["charlie"]
    assert order(funder="brand") == ["alpha"]
    assert "No coupon series matches" in text_of(manager.get("/console/coupons", funder="shop", status="active"))
    for query in ({"status": "paused"}, {"funder": "nobody"}, {"sort": "title"}, {"order": "sideways"}):
        assert manager.get("/console/coupons", **query).status_code == 400, query


def test_issuing_to_a_target_says_how_many_and_refusals_issue_nothing(app):
    hub = hub_state(app)
    created = datetime.now(UTC) - timedelta(days=1)
    make_partner(hub, now=created, code="brand")
    old = datetime.now(UTC) - timedelta(days=400)
    gold, silver, young = make_member(hub, now=old), make_member(hub, now=old), make_member(hub, now=created)
    with hub.unit_of_work() as uow:
        uow.session.execute(update(Member).where(Member.id.in_([gold.member_id, young.member_id]))
                            .values(tier="gold"))
        uow.commit()
    manager = signed_in(app, "petra", "partner_manager")
    assert manager.post("/console/coupons", _series_form("gold-fifty")).status_code == 303
    assert "No coupon of this series has been issued yet" in text_of(manager.get("/console/coupons/gold-fifty"))

    first = manager.post("/console/coupons/gold-fifty/issues", {"tier": "gold", "min_tenure_months": "12"})
    assert "Issued 1 coupon of gold-fifty; 0 members of the target already had one." in _flashed(manager, first)
    again = manager.post("/console/coupons/gold-fifty/issues",
                         {"member_numbers": f"{gold.member_number}\n{silver.member_number}\n"})
    assert "Issued 1 coupon of gold-fifty; 1 member of the target already had one." in _flashed(manager, again)
    page = text_of(manager.get("/console/coupons/gold-fifty"))
    assert "Coupons issued 2" in page and gold.member_number in page and silver.member_number in page
    assert young.member_number not in page

    before = _counts(hub)
    refusals = {
        "name a target": {},
        "no members M-NOBODY": {"member_numbers": "M-NOBODY"},
        "tenure is a whole number of months": {"min_tenure_months": "-1"},
    }
    for detail, form in refusals.items():
        assert detail in _flashed(manager, manager.post("/console/coupons/gold-fifty/issues", form)), detail
    assert manager.post("/console/coupons/gold-fifty/issues", {"tier": "platinum"}).status_code == 400
    assert manager.post("/console/coupons/gold-fifty/issues", {"min_tenure_months": "a year"}).status_code == 400
    assert manager.post("/console/coupons/nothing/issues", {"tier": "gold"}).status_code == 303
    assert _counts(hub) == before


def test_a_series_page_shows_uses_and_points_pages_its_coupons_and_downloads_every_code(app):
    hub = hub_state(app)
    created = datetime.now(UTC) - timedelta(days=1)
    brand = make_partner(hub, now=created, code="brand")
    members = [make_member(hub, now=created) for _ in range(12)]
    manager = signed_in(app, "petra", "partner_manager")
    assert manager.post("/console/coupons", _series_form("brand-fifty", uses_per_coupon="2")).status_code == 303
    numbers = "\n".join(member.member_number for member in members)
    assert manager.post("/console/coupons/brand-fifty/issues", {"member_numbers": numbers}).status_code == 303
    with hub.unit_of_work() as uow:
        first_code = uow.session.scalars(select(Coupon.code).order_by(Coupon.id)).first()
        now = datetime.now(UTC)
        report_purchase(uow.session, partner_id=brand, now=now, expiry_months=24, report=PurchaseReport(
            receipt_id="R-coupon", card_number=members[0].card_number, amount_minor=2_000, currency="EUR",
            purchased_at=now, coupon_code=first_code))
        uow.commit()

    page = text_of(manager.get("/console/coupons/brand-fifty"))
    assert "50 bonus points" in page and "Uses 1" in page and "Points awarded so far 50 points" in page
    assert "Charged to brand 50 points at 0.01 EUR a point" in page
    assert "1–12 of 12" in page and "1 of 2" in page
    paged = manager.get("/console/coupons/brand-fifty", page_size="10", page="2")
    assert "11–12 of 12" in text_of(paged) and 'rel="prev"' in paged.get_data(as_text=True)
    assert "page_size=10" in paged.get_data(as_text=True)
    assert manager.get("/console/coupons/brand-fifty", page_size="7").status_code == 400

    download = manager.get("/console/coupons/brand-fifty/codes.csv")
    assert download.status_code == 200 and download.content_type.startswith("text/csv")
    assert 'filename="coupons-brand-fifty.csv"' in download.headers["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(download.get_data(as_text=True))))
    assert [row["member_number"] for row in rows] == [member.member_number for member in members]
    assert rows[0]["code"] == first_code and rows[0]["uses"] == "1" and rows[0]["uses_allowed"] == "2"
    assert len({row["code"] for row in rows}) == 12 and all(len(row["code"]) == 10 for row in rows)
    assert manager.get("/console/coupons/nothing/codes.csv").status_code == 404


def test_stopping_asks_for_a_reason_and_a_ticked_box_and_is_audited(app):
    hub = hub_state(app)
    make_partner(hub, now=datetime.now(UTC) - timedelta(days=1), code="brand")
    manager = signed_in(app, "petra", "partner_manager")
    assert manager.post("/console/coupons", _series_form("brand-fifty")).status_code == 303
    before = _counts(hub)
    assert manager.post("/console/coupons/brand-fifty/stop", {"reason": "no box ticked"}).status_code == 400
    assert manager.post("/console/coupons/brand-fifty/stop", {"confirm": "yes", "reason": " "}).status_code == 400
    assert manager.post("/console/coupons/brand-fifty/stop", {"reason": "r", "confirm": "yes"},
                        csrf=None).status_code in (400, 403)
    assert _counts(hub) == before

    stopped = manager.post("/console/coupons/brand-fifty/stop", {"reason": "brand asked", "confirm": "yes"})
    page = _flashed(manager, stopped)
    assert "Coupon series brand-fifty is stopped" in page and "stopped" in page and "brand asked" in page
    assert "Issue the coupons" not in page and "Stop the series" not in page
    before = _counts(hub)
    issue = manager.post("/console/coupons/brand-fifty/issues", {"tier": "gold"})
    assert "was stopped; it issues no more coupons" in _flashed(manager, issue)
    twice = manager.post("/console/coupons/brand-fifty/stop", {"reason": "again", "confirm": "yes"})
    assert "has already been stopped" in _flashed(manager, twice)
    assert _counts(hub) == before
    with hub.unit_of_work() as uow:
        stored = uow.session.scalars(select(CouponSeries)).one()
        assert (stored.status, stored.stopped_reason, stored.stopped_by) == ("stopped", "brand asked", "console:petra")
    assert [entry for entry in audit_actions(hub) if entry[1].startswith("coupon_series.")] == [
        ("console:petra", "coupon_series.create", "coupon_series:brand-fifty"),
        ("console:petra", "coupon_series.stop", "coupon_series:brand-fifty")]
    assert_audit_green(hub)
