"""What every console page shares: the navigation each role sees, the viewer's time zone, sortable columns."""

from __future__ import annotations

import re

from markupsafe import escape

from alliance.console.blueprint import NAVIGATION
from alliance.extensions import hub_state
from tests.console_support import audit_actions, build_alliance, signed_in, text_of

CYCLES = "/console/finance/cycles"


def _nav_labels(page_html: str) -> list[str]:
    nav = re.search(r'<nav aria-label="Main">(.*?)</nav>', page_html, re.S)
    assert nav, "the page has no main navigation"
    return re.findall(r">([^<>]+)</a>", nav.group(1))


def test_each_role_sees_only_the_pages_it_may_open_in_the_nav_and_on_the_start_page(app):
    finance = signed_in(app, "fiona", "finance")
    service = signed_in(app, "cass", "customer_service")
    for browser, role in ((finance, "finance"), (service, "customer_service")):
        page = browser.get("/console/").get_data(as_text=True)
        expected = [item.label for item in NAVIGATION if role in item.roles]
        assert _nav_labels(page) == expected
        for item in NAVIGATION:
            assert (f">{escape(item.label)}</a> — {escape(item.summary)}" in page) == (role in item.roles)
    assert "Cycles" in _nav_labels(finance.get(CYCLES).get_data(as_text=True))
    assert 'aria-current="page">Cycles<' in finance.get(CYCLES).get_data(as_text=True)


def test_every_page_names_the_time_zone_and_a_user_can_choose_their_own(app):
    hub = hub_state(app)
    build_alliance(hub)
    finance = signed_in(app, "fiona", "finance")
    finance.post("/console/finance/closings")
    before = text_of(finance.get(CYCLES, page_size=100))
    assert "Times are shown in UTC" in before
    times_utc = re.findall(r"\d{4}-\d\d-\d\d \d\d:\d\d UTC", before)
    assert times_utc

    saved = finance.post("/console/preferences", {"time_zone": "Asia/Tokyo"})
    assert saved.status_code == 303
    after = text_of(finance.get(CYCLES, page_size=100))
    assert "Times are shown in Asia/Tokyo" in after
    # Midnight UTC is nine in the morning in Tokyo (no summer time there), named JST.
    assert "UTC" not in re.sub(r"Times are shown in \S+", "", after)
    assert len(re.findall(r"\d{4}-\d\d-\d\d 09:00 JST", after)) == sum(
        1 for found in times_utc if found.endswith("00:00 UTC"))
    assert ("console:fiona", "staff.set_time_zone", "staff:fiona") in audit_actions(hub)

    back = finance.post("/console/preferences", {"time_zone": "alliance"})
    assert back.status_code == 303
    assert "Times are shown in UTC" in text_of(finance.get(CYCLES))


def test_an_unknown_time_zone_is_refused_and_nothing_changes(app):
    hub = hub_state(app)
    finance = signed_in(app, "fiona", "finance")
    refused = finance.post("/console/preferences", {"time_zone": "Mars/Olympus_Mons"})
    assert refused.status_code == 303
    page = text_of(finance.get("/console/preferences"))
    assert "is not an IANA time zone" in page and "Times are shown in UTC" in page
    assert not [entry for entry in audit_actions(hub) if entry[1] == "staff.set_time_zone"]
    assert signed_in(app, "other", "finance").post("/console/preferences", {"time_zone": "Europe/Paris"},
                                                   csrf=None).status_code == 400


def test_sortable_columns_order_the_closed_cycles_and_mark_the_sorted_header(app):
    build_alliance(hub_state(app))
    finance = signed_in(app, "fiona", "finance")
    finance.post("/console/finance/closings")
    page = finance.get(CYCLES, sort="statement", order="asc", page_size=100).get_data(as_text=True)
    ids = [int(found) for found in re.findall(r">Statement #(\d+)</a>", page)]
    assert ids == sorted(ids) and len(ids) > 2
    assert re.search(r'<th scope="col" aria-sort="ascending"><a class="sort" href="[^"]*sort=statement&amp;order=desc',
                     page)
    descending = finance.get(CYCLES, sort="statement", order="desc", page_size=100).get_data(as_text=True)
    assert [int(found) for found in re.findall(r">Statement #(\d+)</a>", descending)] == ids[::-1]
    by_due = finance.get(CYCLES, sort="due", page_size=100, partner="aurora").get_data(as_text=True)
    assert 'aria-sort="ascending"' in by_due and "sort=due" in by_due and "partner=aurora" in by_due
    assert finance.get(CYCLES, sort="net", order="sideways").status_code == 400
    assert finance.get(CYCLES, sort="password_hash").status_code == 400


def test_every_table_has_a_caption_and_scoped_headers(app):
    build_alliance(hub_state(app))
    finance = signed_in(app, "fiona", "finance")
    finance.post("/console/finance/closings")
    for path in (CYCLES, "/console/finance/position", "/console/finance/reconciliations",
                 "/console/finance/approvals"):
        page = finance.get(path).get_data(as_text=True)
        for table in re.findall(r"<table.*?</table>", page, re.S):
            assert "<caption" in table, f"a table on {path} has no caption"
            assert not re.search(r"<th(?=[ >])(?![^>]*scope=)[^>]*>", table), f"a header cell on {path} has no scope"
