"""Partner-manager pages and the complaints queue: lists with filters and pages, charts with the right
numbers, keys and terminals, complaint lifecycle actions; and who may see which page."""

from __future__ import annotations

import base64
import csv
import io
import re
from collections import Counter
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import select, update

from alliance.console.charts import Series, axis_maximum, bar_chart
from alliance.extensions import hub_state
from alliance.models import AuditLogEntry, Complaint, PartnerKey, Purchase, Terminal
from alliance.services import grading
from alliance.services.console_reports import month_labels
from alliance.services.partners import register_key
from tests.console_support import audit_actions, build_alliance, month_of, signed_in, text_of
from tests.factories import make_partner


@pytest.fixture
def manager(app):  # type: ignore[no-untyped-def]
    build_alliance(hub_state(app))
    return signed_in(app, "paco", "partner_manager")


def chart_values(page: str, chart_id: str) -> dict[str, int]:
    """month → value of one chart's bars or points, read from the SVG."""
    svg = re.search(rf'<svg[^>]*id="{chart_id}".*?</svg>', page, re.S).group(0)
    return {label: int(value) for label, value in re.findall(r'data-label="([^"]+)" data-value="(\d+)"', svg)}


def test_partner_list_filters_searches_and_pages(app):
    hub = hub_state(app)
    now = datetime(2026, 1, 1, tzinfo=timezone.utc)
    for number in range(1, 28):
        make_partner(hub, now=now, code=f"shop-{number:02d}", status="suspended" if number % 9 == 0 else "active")
    browser = signed_in(app, "paco", "partner_manager")
    first = text_of(browser.get("/console/partners", page_size=10))
    assert "1–10 of 27" in first and "shop-01" in first and "shop-11" not in first
    second = text_of(browser.get("/console/partners", page_size=10, page=2))
    assert "11–20 of 27" in second and "shop-11" in second and "shop-10" not in second
    third = browser.get("/console/partners", page_size=10, page=3)
    assert "21–27 of 27" in text_of(third) and 'rel="next"' not in third.get_data(as_text=True)
    suspended = text_of(browser.get("/console/partners", status="suspended"))
    assert "1–3 of 3" in suspended and all(code in suspended for code in ("shop-09", "shop-18", "shop-27"))
    searched = text_of(browser.get("/console/partners", q="SHOP-2"))
    assert "1–8 of 8" in searched and "shop-20" in searched and "shop-19" not in searched
    assert "No partner matches" in text_of(browser.get("/console/partners", q="nothing-like-it"))
    exported = list(csv.DictReader(io.StringIO(
        browser.get("/console/partners.csv", status="suspended").get_data(as_text=True))))
    assert [row["code"] for row in exported] == ["shop-09", "shop-18", "shop-27"]


def test_a_search_with_like_wildcards_matches_them_literally(app):
    hub = hub_state(app)
    make_partner(hub, now=datetime(2026, 1, 1, tzinfo=timezone.utc), code="plain")
    browser = signed_in(app, "paco", "partner_manager")
    assert "No partner matches" in text_of(browser.get("/console/partners", q="%"))
    assert "plain" in text_of(browser.get("/console/partners", q="lai"))


def test_partner_page_charts_carry_the_exact_monthly_counts(app, manager):
    hub = hub_state(app)
    page = manager.get("/console/partners/aurora", months=6).get_data(as_text=True)
    labels = month_labels(datetime.now(timezone.utc).date(), 6)
    assert "<title id=\"chart-volume-title\">Purchases per month</title>" in page
    assert "<desc id=\"chart-volume-desc\">" in page
    volume = chart_values(page, "chart-volume")
    assert list(volume) == labels
    with hub.unit_of_work() as uow:
        purchased = Counter(month_of(at) for at in uow.session.scalars(select(Purchase.purchased_at)))
        complained = Counter(month_of(at) for at in uow.session.scalars(select(Complaint.opened_at)))
    assert volume == {label: purchased.get(label, 0) for label in labels}
    assert sum(volume.values()) == 5
    assert chart_values(page, "chart-complaints") == {label: complained.get(label, 0) for label in labels}
    assert sum(chart_values(page, "chart-redemptions").values()) == 0  # aurora redeemed nothing
    fuel = manager.get("/console/partners/fuel", months=6).get_data(as_text=True)
    assert sum(chart_values(fuel, "chart-redemptions").values()) == 80
    assert sum(chart_values(fuel, "chart-volume").values()) == 0


def test_charts_label_their_axes_and_scale_to_a_round_top():
    svg = bar_chart(Series("Purchases", "Purchases per month", ["2026-01", "2026-02"], [3, 17], "purchases"),
                    chart_id="c")
    assert axis_maximum(17) == 20 and axis_maximum(0) == 4 and axis_maximum(4001) == 8000
    assert 'role="img"' in svg and "<title id=\"c-title\">Purchases</title>" in svg
    assert re.findall(r'class="tick"[^>]*>([\d,]+)<', svg) == ["0", "5", "10", "15", "20"]
    assert re.findall(r'class="label"[^>]*>([^<]+)<', svg) == ["2026-01", "2026-02"]
    with pytest.raises(ValueError):
        Series("x", "y", ["a"], [1.5], "")  # type: ignore[list-item]


def test_keys_and_terminals_can_be_revoked_and_added_with_an_audit_entry(app, manager):
    hub = hub_state(app)
    page = text_of(manager.get("/console/partners/aurora"))
    assert "aurora-key-1" in page and "till-1" in page
    revoke = "/console/partners/aurora/keys/aurora-key-1/revocation"
    before = audit_actions(hub)
    assert "Revoke key…" in page and "this cannot be undone" in page
    # Refusals: no confirmation, no reason, no CSRF token; nothing changes and nothing is audited.
    assert manager.post(revoke, {"reason": "leaked"}).status_code == 400
    assert manager.post(revoke, {"confirm": "yes", "reason": "  "}).status_code == 400
    assert manager.post(revoke, {"confirm": "yes", "reason": "leaked"}, csrf=None).status_code == 400
    with hub.unit_of_work() as uow:
        assert uow.session.scalar(select(PartnerKey.status).where(PartnerKey.key_id == "aurora-key-1")) == "active"
    assert audit_actions(hub) == before
    assert manager.post(revoke, {"confirm": "yes", "reason": "the till was stolen"}).status_code == 303
    manager.post("/console/partners/aurora/terminals", {"terminal_code": "till-2"})
    public = Ed25519PrivateKey.generate().public_key().public_bytes(serialization.Encoding.Raw,
                                                                     serialization.PublicFormat.Raw)
    manager.post("/console/partners/aurora/keys", {"key_id": "aurora-till-2", "terminal": "till-2",
                                                   "public_key": base64.b64encode(public).decode()})
    with hub.unit_of_work() as uow:
        keys = dict(uow.session.execute(select(PartnerKey.key_id, PartnerKey.status)).all())
        terminals = set(uow.session.scalars(select(Terminal.code).where(Terminal.partner_id == 1)))
    assert keys["aurora-key-1"] == "revoked" and keys["aurora-till-2"] == "active"
    assert "till-2" in terminals
    assert [action for actor, action, subject in audit_actions(hub) if subject == "partner:aurora"] == \
        ["partner.key.revoke", "partner.terminal.add", "partner.key.register"]
    with hub.unit_of_work() as uow:
        entry = uow.session.scalars(select(AuditLogEntry).where(AuditLogEntry.action == "partner.key.revoke")).one()
    assert entry.actor == "console:paco" and entry.after["reason"] == "the till was stolen"
    again = manager.post(revoke, {"confirm": "yes", "reason": "again"})
    assert again.status_code == 303
    assert "already revoked" in text_of(manager.get("/console/partners/aurora"))
    bad_key = manager.post("/console/partners/aurora/keys", {"key_id": "k", "public_key": "not base64!"})
    assert bad_key.status_code == 400


def _public_key_text() -> str:
    public = Ed25519PrivateKey.generate().public_key().public_bytes(serialization.Encoding.Raw,
                                                                     serialization.PublicFormat.Raw)
    return base64.b64encode(public).decode()


def test_user_text_in_a_confirmation_is_shown_as_written_never_run_as_a_format_template(app, manager):
    hub = hub_state(app)
    # A key registered before key ids had a character set (register_key still takes any
    # printable text): revoking it must neither fail after the commit nor evaluate it.
    template = "old{result.__class__.__mro__}"
    with hub.unit_of_work() as uow:
        register_key(uow.session, partner_id=1, key_id=template, public_key=bytes(range(1, 33)),
                     now=datetime.now(timezone.utc))
        uow.commit()
    revoked = manager.post(f"/console/partners/aurora/keys/{template}/revocation",
                           {"confirm": "yes", "reason": "rotated"})
    assert revoked.status_code == 303
    page = text_of(manager.get("/console/partners/aurora"))
    assert f"Key {template} revoked." in page and "class 'object'" not in page
    with hub.unit_of_work() as uow:
        assert uow.session.scalar(select(PartnerKey.status).where(PartnerKey.key_id == template)) == "revoked"


@pytest.mark.parametrize("key_id", ["k{0}", "k{result.__class__}", "has space", 'quote"d', "-leading-dash", "é"])
def test_a_key_id_outside_its_character_set_is_a_form_error_and_nothing_is_saved(app, manager, key_id):
    hub = hub_state(app)
    refused = manager.post("/console/partners/aurora/keys", {"key_id": key_id, "public_key": _public_key_text()})
    assert refused.status_code == 303
    page = text_of(manager.get("/console/partners/aurora"))
    assert "Invalid input: a key id has 1-100 characters: letters A-Z and a-z, digits" in page
    with hub.unit_of_work() as uow:
        assert uow.session.scalar(select(PartnerKey.id).where(PartnerKey.key_id == key_id)) is None
    bad_terminal = manager.post("/console/partners/aurora/terminals", {"terminal_code": "Till{0}"})
    assert bad_terminal.status_code == 303
    assert "Invalid input: a terminal code has 2-40 characters" in text_of(manager.get("/console/partners/aurora"))


def test_complaints_queue_moves_a_complaint_through_its_lifecycle(app, manager):
    hub = hub_state(app)
    queue = text_of(manager.get("/console/complaints", status="open"))
    assert "1–3 of 3" in queue
    with hub.unit_of_work() as uow:
        complaint_id = uow.session.scalars(select(Complaint.id).order_by(Complaint.id)).first()
    path = f"/console/complaints/{complaint_id}/transitions"
    assert manager.post(path, {"status": "resolved", "note": "too early"}).status_code == 303
    assert "cannot become resolved" in text_of(manager.get("/console/complaints"))
    manager.post(path, {"status": "investigating"})
    no_note = manager.post(path, {"status": "resolved"})
    assert no_note.status_code == 303
    assert "needs a resolution note" in text_of(manager.get("/console/complaints"))
    manager.post(path, {"status": "resolved", "note": "points credited by hand"})
    resolved = text_of(manager.get("/console/complaints", status="resolved"))
    assert "1–1 of 1" in resolved and "points credited by hand" in resolved
    assert [action for _, action, subject in audit_actions(hub) if subject == f"complaint:{complaint_id}"] == \
        ["complaint.transition", "complaint.transition"]
    assert "1–2 of 2" in text_of(manager.get("/console/complaints", status="open", partner="aurora", page_size=10))


def test_customer_service_works_the_complaints_queue_too(app):
    build_alliance(hub_state(app))
    service = signed_in(app, "cass", "customer_service")
    assert service.get("/console/complaints").status_code == 200


FINANCE_PAGES = ["/console/finance/cycles", "/console/finance/position", "/console/finance/reconciliations",
                 "/console/finance/approvals", "/console/finance/cycles.csv", "/console/finance/adjustments.csv"]
MANAGER_PAGES = ["/console/partners", "/console/partners/aurora", "/console/partners.csv", "/console/grade-alerts"]
COMPLAINT_PAGES = ["/console/complaints"]


@pytest.mark.parametrize(("role", "allowed"), [
    ("finance", FINANCE_PAGES),
    ("partner_manager", MANAGER_PAGES + COMPLAINT_PAGES),
    ("customer_service", COMPLAINT_PAGES),
    ("admin", FINANCE_PAGES + MANAGER_PAGES + COMPLAINT_PAGES),
])
def test_each_role_sees_its_pages_and_gets_a_clear_403_for_the_others(app, role, allowed):
    build_alliance(hub_state(app))
    browser = signed_in(app, f"user-{role.replace('_', '-')}", role)
    for path in FINANCE_PAGES + MANAGER_PAGES + COMPLAINT_PAGES:
        response = browser.get(path)
        if path in allowed:
            assert response.status_code == 200, path
        else:
            assert response.status_code == 403, path
            assert "text/html" in response.content_type and "This page needs the role" in text_of(response)


def test_a_refused_role_cannot_post_either(app):
    hub = hub_state(app)
    build_alliance(hub)
    service = signed_in(app, "cass", "customer_service")
    before = audit_actions(hub)
    assert service.post("/console/finance/closings").status_code == 403
    assert service.post("/console/partners/aurora/keys/aurora-key-1/revocation",
                        {"confirm": "yes", "reason": "x"}).status_code == 403
    assert audit_actions(hub) == before


def test_partner_pages_with_nothing_yet_say_what_to_do(app):
    browser = signed_in(app, "ada", "admin")
    assert "No partners yet" in text_of(browser.get("/console/partners"))
    assert "No complaints yet" in text_of(browser.get("/console/complaints"))
    missing = browser.get("/console/partners/nobody")
    assert missing.status_code == 404 and "no partner 'nobody'" in text_of(missing)


def test_unknown_console_addresses_are_html_404s_and_the_api_keeps_problem_json(app):
    browser = signed_in(app, "ada", "admin")
    page = browser.get("/console/no/such/page")
    assert page.status_code == 404 and "text/html" in page.content_type
    api = browser.client.get("/back-office/v1/no-such-route")
    assert api.status_code == 404 and api.content_type == "application/problem+json"


def test_an_unexpected_error_is_an_html_500_without_internals(app, monkeypatch):
    browser = signed_in(app, "ada", "admin")

    def broken(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise RuntimeError("secret internals")

    monkeypatch.setattr("alliance.services.console_reports.partners_page", broken)
    response = browser.get("/console/partners")
    assert response.status_code == 500 and "text/html" in response.content_type
    assert "secret internals" not in response.get_data(as_text=True) and "Quote request" in text_of(response)


def test_charts_count_what_grades_count_by_reporting_date(app, manager):
    hub = hub_state(app)
    zone = hub.settings.alliance_time_zone
    with hub.unit_of_work() as uow:
        # A purchase reported now but made two months earlier counts in the month it was reported.
        newest = uow.session.scalars(select(Purchase).order_by(Purchase.reported_at.desc())).first()
        uow.session.execute(update(Purchase).where(Purchase.id == newest.id)
                            .values(purchased_at=newest.reported_at - timedelta(days=62)))
        uow.commit()
    page = manager.get("/console/partners/aurora", months=6).get_data(as_text=True)
    assert "by the day the partner reported them, as grades count them" in page
    assert f"months in {zone}" in page
    months = grading.recent_months(datetime.now(timezone.utc), zone, 6)
    charts = {chart: chart_values(page, chart) for chart in ("chart-volume", "chart-points", "chart-complaints")}
    with hub.unit_of_work() as uow:
        for month in months[:-1]:
            measured = {metrics.partner_code: metrics.values
                        for metrics in grading.measure(uow.session, month, time_zone=zone)}.get("aurora")
            counts = (0, 0, 0) if measured is None else (
                measured["purchase_count"], measured["points_issued"], measured["complaint_count"])
            assert (charts["chart-volume"][month.label], charts["chart-points"][month.label],
                    charts["chart-complaints"][month.label]) == counts, month.label
        reported_month = f"{newest.reported_at.astimezone(ZoneInfo(zone)):%Y-%m}"
    assert charts["chart-volume"][reported_month] >= 1
    # Points issued are the points the partner pays for, as in its grade.
    with hub.unit_of_work() as uow:
        assert sum(charts["chart-points"].values()) == sum(uow.session.scalars(select(Purchase.points_partner)))
    fuel = manager.get("/console/partners/fuel", months=6).get_data(as_text=True)
    assert sum(chart_values(fuel, "chart-redemptions").values()) == 80
    assert "Points redeemed per month, by the day each redemption was captured" in fuel


def test_partner_page_tables_have_captions_scopes_and_labels(app, manager):
    page = manager.get("/console/partners/aurora").get_data(as_text=True)
    assert page.count("<caption>") >= 3
    assert "<th>" not in page and "<td>" not in page
    assert 'data-label="Purchase volume"' in page and 'scope="row"' in page
    listing = manager.get("/console/partners").get_data(as_text=True)
    assert "<caption>Your portfolio" in listing and "<td>" not in listing and "<th>" not in listing
