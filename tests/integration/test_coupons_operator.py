"""The operator's side of coupons: the back-office API (create, list, read, issue to a target, codes as JSON and CSV,
stop, every change audited, problem+json refusals) and the ``alliance coupons`` CLI."""

from __future__ import annotations

import csv
import io
from datetime import datetime, timedelta, timezone

from flask import Flask
from sqlalchemy import select, update

from alliance.api.back_office import coupon_routes
from alliance.extensions import hub_state
from alliance.models import AuditLogEntry, Member
from tests.back_office_support import BackOffice, run_cli
from tests.factories import make_member, make_partner, make_signing_partner
from tests.http_server import assert_audit_green, wall_clock_partner_time


def _with_coupon_routes(app: Flask) -> Flask:
    """The app with the coupon routes (registered here unless the app registers them already)."""
    if coupon_routes.coupon_blueprint.name not in app.blueprints:
        coupon_routes.init_app(app, app.extensions["alliance.api"])
    return app


def _coupon_actions(app: Flask) -> list[tuple[str, str]]:
    with hub_state(app).unit_of_work() as uow:
        return [(row.action, row.subject) for row in uow.session.scalars(
            select(AuditLogEntry).where(AuditLogEntry.action.startswith("coupon_series."))
            .order_by(AuditLogEntry.sequence))]


def test_partner_managers_create_issue_list_codes_and_stop_a_series_through_the_api(app):
    bo = BackOffice(_with_coupon_routes(app))
    hub = bo.hub
    created = wall_clock_partner_time()
    make_signing_partner(hub, now=created, code="shop")
    make_partner(hub, now=created, code="brand")
    old = datetime.now(timezone.utc) - timedelta(days=400)
    gold, silver, young = make_member(hub, now=old), make_member(hub, now=old), make_member(hub, now=created)
    with hub.unit_of_work() as uow:
        uow.session.execute(update(Member).where(Member.id.in_([gold.member_id, young.member_id]))
                            .values(tier="gold"))
        uow.commit()
    now = datetime.now(timezone.utc)
    series = {"code": "gold-double", "title": "Double points for gold", "funder": "brand", "kind": "multiplier",
              "multiplier": "2", "valid_from": now.isoformat(), "valid_until": (now + timedelta(days=30)).isoformat(),
              "uses_per_coupon": 3}

    made = bo.post("/coupon-series", series, role="partner_manager")
    assert made.status == 201, made.body
    assert (made.body["funder"], made.body["kind"], made.body["multiplier"], made.body["valid_at"]) == (
        "brand", "multiplier", "2", ["brand"])
    again = bo.post("/coupon-series", series, role="admin")
    assert (again.status, again.code) == (409, "coupon_series_exists")
    wrong = bo.post("/coupon-series", dict(series, code="bad", multiplier="1"), role="partner_manager")
    assert (wrong.status, wrong.code) == (422, "validation_failed")
    refused = bo.post("/coupon-series", dict(series, code="other"), role="finance")
    assert refused.status == 403

    # Gold members of at least a year: the gold member enrolled long ago, not the new one nor the silver one.
    issued = bo.post("/coupon-series/gold-double/issues", {"tiers": ["gold"], "min_tenure_months": 12},
                     role="partner_manager")
    assert issued.status == 201, issued.body
    assert (issued.body["issued"], issued.body["already_held"], issued.body["series"]["coupons_issued"]) == (1, 0, 1)
    # Again, with an explicit list: only the members without one get one.
    listed = bo.post("/coupon-series/gold-double/issues",
                     {"member_numbers": [gold.member_number, silver.member_number]}, role="admin")
    assert (listed.body["issued"], listed.body["already_held"]) == (1, 1)
    unknown = bo.post("/coupon-series/gold-double/issues", {"member_numbers": ["M-NOBODY"]}, role="admin")
    assert (unknown.status, unknown.code) == (422, "validation_failed")
    assert bo.post("/coupon-series/gold-double/issues", {}, role="admin").status == 422

    codes = bo.get("/coupon-series/gold-double/codes", role="partner_manager", query={"per_page": 1, "page": 2})
    assert codes.status == 200, codes.body
    assert (codes.body["total"], len(codes.body["coupons"])) == (2, 1)
    assert codes.body["coupons"][0]["member_number"] == silver.member_number
    as_csv = bo.client.get("/back-office/v1/coupon-series/gold-double/codes", query_string={"format": "csv"},
                           headers={"Authorization": f"Bearer {bo.token('partner_manager')}"})
    assert as_csv.status_code == 200 and as_csv.content_type.startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(as_csv.get_data(as_text=True))))
    assert sorted(row["member_number"] for row in rows) == sorted([gold.member_number, silver.member_number])
    assert all(len(row["code"]) == 10 for row in rows)
    assert len({row["code"] for row in rows}) == 2

    listing = bo.get("/coupon-series", role="admin", query={"funder": "brand"})
    assert [item["code"] for item in listing.body["series"]] == ["gold-double"]
    assert bo.post("/coupon-series/gold-double/stop", {"reason": ""}, role="admin").status == 422
    stopped = bo.post("/coupon-series/gold-double/stop", {"reason": "brand asked"}, role="admin")
    assert (stopped.status, stopped.body["status"], stopped.body["stopped_reason"]) == (200, "stopped", "brand asked")
    assert bo.post("/coupon-series/gold-double/stop", {"reason": "twice"}, role="admin").code == "invalid_state"
    assert bo.get("/coupon-series/nope", role="admin").status == 404
    shown = bo.get("/coupon-series/gold-double", role="partner_manager")
    assert (shown.body["coupons_issued"], shown.body["uses"], shown.body["points"]) == (2, 0, 0)
    assert _coupon_actions(app) == [("coupon_series.create", "coupon_series:gold-double"),
                                    ("coupon_series.issue", "coupon_series:gold-double"),
                                    ("coupon_series.issue", "coupon_series:gold-double"),
                                    ("coupon_series.stop", "coupon_series:gold-double")]
    assert_audit_green(hub)


def test_the_cli_creates_issues_lists_shows_codes_and_stops_a_series(app, tmp_path):
    hub = hub_state(app)
    created = wall_clock_partner_time()
    make_partner(hub, now=created, code="brand")
    members = [make_member(hub, now=created) for _ in range(2)]
    now = datetime.now(timezone.utc)
    made = run_cli(app, "coupons", "create", "welcome", "--title", "Welcome", "--funder", "hub", "--kind", "bonus",
                   "--bonus-points", "100", "--valid-from", now.isoformat(),
                   "--valid-until", (now + timedelta(days=7)).isoformat())
    assert made.exit_code == 0, made.output
    assert "welcome\tactive\tbonus\t+100 points\tfunded by hub" in made.output
    wrong = run_cli(app, "coupons", "create", "bad", "--title", "Bad", "--funder", "brand", "--kind", "bonus",
                    "--valid-from", now.isoformat(), "--valid-until", now.isoformat())
    assert wrong.exit_code != 0 and "bonus_points" in wrong.output
    listed_members = tmp_path / "members.txt"
    listed_members.write_text("\n".join(member.member_number for member in members) + "\n")
    issued = run_cli(app, "coupons", "issue", "welcome", "--members-file", str(listed_members))
    assert issued.exit_code == 0 and "issued 2 coupon(s) of welcome; 0 member(s)" in issued.output, issued.output
    codes = run_cli(app, "coupons", "codes", "welcome", "--format", "csv")
    assert codes.exit_code == 0 and codes.output.splitlines()[0] == "member_number,code,uses,uses_allowed,issued_at"
    assert len(codes.output.splitlines()) == 3
    shown = run_cli(app, "coupons", "show", "welcome")
    assert "2 issued, 0 used" in shown.output and "at *" in shown.output
    stopped = run_cli(app, "coupons", "stop", "welcome", "--reason", "typo in the title")
    assert stopped.exit_code == 0, stopped.output
    assert "welcome\tstopped" in run_cli(app, "coupons", "list").output
    again = run_cli(app, "coupons", "issue", "welcome", "--tier", "gold")
    assert again.exit_code != 0 and "was stopped" in again.output
    assert [action for action, _ in _coupon_actions(app)] == ["coupon_series.create", "coupon_series.issue",
                                                              "coupon_series.stop"]
