"""The tier policy as data: the seeded version, the three bases, the window, both downgrade rules,
scheduled versions (earn multiplier and recompute), refusals, audit, tier history, the API, the CLI
and the console page."""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest
from flask import Flask
from sqlalchemy import func, select, update

from alliance.domain.clock import add_months
from alliance.domain.earning import BUILT_IN_TIER_POLICY, TIER_MULTIPLIERS, TierLevel
from alliance.domain.errors import ValidationFailed
from alliance.extensions import HubState, hub_state
from alliance.models import AuditLogEntry, Member, MemberTierChange, TierPolicyVersion
from alliance.services import purchases, tier_policy
from tests.back_office_support import BackOffice, audit_count, run_cli
from tests.console_support import ConsoleClient, add_staff, audit_actions, signed_in, text_of
from tests.factories import make_member, make_partner

T0 = datetime(2026, 1, 15, 12, 0, tzinfo=timezone.utc)
PAGE = "/console/tier-policy"
SCHEDULE = "/console/tier-policy/versions"
API = "/back-office/v1/tier-policy"
LADDER = [TierLevel("standard", 0, Decimal("1")), TierLevel("silver", 100, Decimal("1.25"), 50),
          TierLevel("gold", 200, Decimal("1.5"), 100)]


def _partner(hub: HubState) -> int:
    return make_partner(hub, now=T0 - timedelta(days=800))


def _buy(hub: HubState, partner_id: int, card: str, amount_minor: int, at: datetime, receipt: str
         ) -> purchases.ReportedPurchase:
    with hub.unit_of_work() as uow:
        reported = purchases.report_purchase(
            uow.session, partner_id=partner_id, now=at + timedelta(minutes=1), expiry_months=24,
            report=purchases.PurchaseReport(receipt, card, amount_minor, "EUR", at))
        uow.commit()
    return reported


def _recompute(hub: HubState, at: datetime) -> int:
    with hub.unit_of_work() as uow:
        changed = tier_policy.recompute_tiers(uow.session, now=at, currency="EUR", minor_units_per_unit=100)
        uow.commit()
    return changed


def _tier(hub: HubState, member_id: int) -> str:
    with hub.unit_of_work() as uow:
        return uow.session.scalar(select(Member.tier).where(Member.id == member_id)) or ""


def _set_tier(hub: HubState, member_id: int, tier: str) -> None:
    with hub.unit_of_work() as uow:
        uow.session.execute(update(Member).where(Member.id == member_id).values(tier=tier))
        uow.commit()


def _schedule(hub: HubState, effective_from: datetime, *, basis: str = "spend", window_months: int | None = 12,
              downgrade: str = "to_earned", period_months: int | None = None,
              levels: list[TierLevel] | None = None) -> tier_policy.PolicyVersion:
    with hub.unit_of_work() as uow:
        made = tier_policy.propose_version(
            uow.session, basis=basis, window_months=window_months, downgrade=downgrade, period_months=period_months,
            levels=levels or LADDER, effective_from=effective_from, now=effective_from - timedelta(hours=1),
            actor="test:tiers")
        uow.commit()
    return made


def _version_count(hub: HubState) -> int:
    with hub.unit_of_work() as uow:
        return uow.session.scalar(select(func.count()).select_from(TierPolicyVersion)) or 0


def test_the_seeded_version_is_the_policy_that_was_in_code(app: Flask) -> None:
    hub = hub_state(app)
    with hub.unit_of_work() as uow:
        found = tier_policy.versions(uow.session, now=T0)
        schedule = tier_policy.read_schedule(uow.session)
    assert [(version.policy.version, version.status, version.created_by) for version in found] == [
        (1, "in_force", "migration:0022")]
    assert found[0].policy == BUILT_IN_TIER_POLICY
    assert {tier: schedule.multiplier(tier, T0) for tier in TIER_MULTIPLIERS} == dict(TIER_MULTIPLIERS)
    assert [(level.tier, level.threshold) for level in BUILT_IN_TIER_POLICY.levels] == [
        ("standard", 0), ("silver", 500), ("gold", 1_500), ("diamond", 3_000)]


def test_spend_basis_counts_purchases_less_refunds_inside_the_window_and_writes_history(app: Flask) -> None:
    hub = hub_state(app)
    shop = _partner(hub)
    early, late = make_member(hub, now=T0 - timedelta(days=700)), make_member(hub, now=T0 - timedelta(days=700))
    _buy(hub, shop, early.card_number, 60_000, T0 - timedelta(days=400), "old")  # outside 12 months at T0
    _buy(hub, shop, late.card_number, 50_000, T0 - timedelta(days=30), "new")
    assert _recompute(hub, T0) == 1
    assert (_tier(hub, early.member_id), _tier(hub, late.member_id)) == ("standard", "silver")
    with hub.unit_of_work() as uow:
        history = tier_policy.tier_history(uow.session, member_number=late.member_number)
        assert tier_policy.tier_history(uow.session, member_number=early.member_number) == []
    assert [(change.from_tier, change.to_tier, change.changed_at, change.policy_version) for change in history] == [
        ("standard", "silver", T0, 1)]
    assert history[0].reason == "qualified: 500 currency units spent over 12 months"
    # Eleven months on, the purchase leaves the window: straight down, as the built-in rule says.
    assert _recompute(hub, T0 + timedelta(days=340)) == 1
    assert _tier(hub, late.member_id) == "standard"
    assert _recompute(hub, T0 + timedelta(days=340)) == 0


def test_points_basis_counts_points_earned_less_those_refunds_took_back(app: Flask) -> None:
    hub = hub_state(app)
    shop = _partner(hub)
    _schedule(hub, T0, basis="points", window_months=6)
    member, other = make_member(hub, now=T0), make_member(hub, now=T0)
    at = T0 + timedelta(days=10)
    assert _buy(hub, shop, member.card_number, 25_000, at, "p-1").points_partner == 250
    _buy(hub, shop, other.card_number, 15_000, at, "p-2")
    with hub.unit_of_work() as uow:
        purchases.refund_purchase(uow.session, partner_id=shop, receipt_id="p-1", refund_id="r-1",
                                  amount_minor=10_000, now=at + timedelta(hours=1))
        uow.commit()
    assert _recompute(hub, at + timedelta(days=1)) == 2
    # 250 - 100 points = 150: silver (100), not gold (200); 150 points for the other: silver too.
    assert (_tier(hub, member.member_id), _tier(hub, other.member_id)) == ("silver", "silver")
    # Six months later the window is empty.
    _recompute(hub, add_months(at, 6) + timedelta(days=1))
    assert _tier(hub, member.member_id) == "standard"


def test_tenure_basis_counts_whole_months_since_enrolment(app: Flask) -> None:
    hub = hub_state(app)
    _schedule(hub, T0, basis="tenure", window_months=None,
              levels=[TierLevel("standard", 0, Decimal("1")), TierLevel("silver", 12, Decimal("1.1")),
                      TierLevel("diamond", 36, Decimal("2"))])
    veteran = make_member(hub, now=add_months(T0, -36))
    regular = make_member(hub, now=add_months(T0, -12))
    newcomer = make_member(hub, now=add_months(T0, -12) + timedelta(minutes=1))
    assert _recompute(hub, T0 + timedelta(seconds=30)) == 2
    assert [_tier(hub, member.member_id) for member in (veteran, regular, newcomer)] == [
        "diamond", "silver", "standard"]
    with hub.unit_of_work() as uow:
        change = tier_policy.tier_history(uow.session, member_number=veteran.member_number)[0]
    assert change.policy_version == 2 and change.reason == "qualified: 36 months of membership"


def test_one_step_downgrade_falls_one_tier_per_period_held(app: Flask) -> None:
    hub = hub_state(app)
    _schedule(hub, T0, downgrade="one_step", period_months=3,
              levels=[*LADDER, TierLevel("diamond", 300, Decimal("2"))])
    member = make_member(hub, now=T0 - timedelta(days=400))
    _set_tier(hub, member.member_id, "diamond")
    seen = []
    for months in (1, 2, 3, 4, 5, 6, 7, 9, 12):
        _recompute(hub, add_months(T0, months))
        seen.append(_tier(hub, member.member_id))
    # Held since enrolment (over a year) at the first run: one step at once, then one per 3 months.
    assert seen == ["gold", "gold", "gold", "silver", "silver", "silver", "standard", "standard", "standard"]
    with hub.unit_of_work() as uow:
        history = tier_policy.tier_history(uow.session, member_number=member.member_number)
    assert [(change.from_tier, change.to_tier) for change in reversed(history)] == [
        ("diamond", "gold"), ("gold", "silver"), ("silver", "standard")]
    assert all(change.reason.startswith("one step down after 3 months") for change in history)


def test_to_earned_downgrade_goes_straight_to_the_level_earned(app: Flask) -> None:
    hub = hub_state(app)
    shop = _partner(hub)
    _schedule(hub, T0, levels=[*LADDER, TierLevel("diamond", 300, Decimal("2"))])
    member = make_member(hub, now=T0)
    _buy(hub, shop, member.card_number, 30_000, T0 + timedelta(days=1), "big")
    _recompute(hub, T0 + timedelta(days=2))
    assert _tier(hub, member.member_id) == "diamond"
    _buy(hub, shop, member.card_number, 15_000, add_months(T0, 12), "mid")
    _recompute(hub, add_months(T0, 12) + timedelta(days=2))
    # The first purchase has left the window; 150 EUR reaches silver: down two tiers at once.
    assert _tier(hub, member.member_id) == "silver"


def test_a_scheduled_version_applies_to_earns_and_recomputes_from_its_moment_only(app: Flask) -> None:
    hub = hub_state(app)
    shop = _partner(hub)
    member = make_member(hub, now=T0 - timedelta(days=30))
    _set_tier(hub, member.member_id, "gold")
    start = T0 + timedelta(hours=1)
    _schedule(hub, start, levels=[TierLevel("standard", 0, Decimal("1")), TierLevel("gold", 100, Decimal("3"))])
    before = _buy(hub, shop, member.card_number, 10_000, start - timedelta(seconds=1), "before")
    after = _buy(hub, shop, member.card_number, 10_000, start, "after")
    assert (before.breakdown["tier_multiplier"], before.points_partner) == ("1.5", 150)
    assert (after.breakdown["tier_multiplier"], after.points_partner) == ("3", 300)
    # A recompute before the moment applies version 1 (200 EUR < 500: standard); after it, version 2 (gold).
    with hub.unit_of_work() as uow:
        tier_policy.recompute_tiers(uow.session, now=start - timedelta(seconds=1), currency="EUR",
                                    minor_units_per_unit=100)
        assert uow.session.scalar(select(Member.tier).where(Member.id == member.member_id)) == "standard"
        # Not committed: the unit of work rolls back.
    _recompute(hub, start + timedelta(seconds=1))
    assert _tier(hub, member.member_id) == "gold"
    with hub.unit_of_work() as uow:
        assert uow.session.scalar(select(func.count()).select_from(MemberTierChange)) == 0


def test_the_earn_reads_the_schedule_from_the_process_cache_without_a_round_trip(app: Flask) -> None:
    hub = hub_state(app)
    with hub.unit_of_work() as uow:
        first = tier_policy.cached_schedule(uow.session)
        # A version written behind the cache's back (another process) is not read again within the interval...
        uow.session.execute(TierPolicyVersion.__table__.insert().values(
            version=9, effective_from=T0, basis="spend", window_months=12, downgrade="to_earned",
            tiers=[level.as_stored() for level in LADDER], created_by="elsewhere", created_at=T0))
        assert tier_policy.cached_schedule(uow.session) is first
        # ...and is read once the copy is older than the interval.
        tier_policy.forget_cached_schedule(uow.session)
        assert [policy.version for policy in tier_policy.cached_schedule(uow.session).versions] == [1, 9]
        tier_policy.forget_cached_schedule(uow.session)  # the row is rolled back with the unit of work
    assert tier_policy.MIN_LEAD == timedelta(seconds=2 * tier_policy.RELOAD_INTERVAL_S)


@pytest.mark.parametrize(("change", "field"), [
    ({"levels": [TierLevel("standard", 0, Decimal("1")), TierLevel("gold", 100, Decimal("1.5")),
                 TierLevel("diamond", 100, Decimal("2"))]}, "tiers"),
    ({"levels": [TierLevel("standard", 0, Decimal("1")), TierLevel("gold", 100, Decimal("0.9"))]}, "tiers"),
    ({"levels": [TierLevel("standard", 0, Decimal("1")), TierLevel("gold", 100, Decimal("1.00001"))]}, "tiers"),
    ({"levels": [TierLevel("gold", 0, Decimal("1"))]}, "tiers"),
    ({"levels": [TierLevel("standard", 0, Decimal("1")), TierLevel("bronze", 10, Decimal("1"))]}, "tiers"),
    ({"levels": [TierLevel("standard", 0, Decimal("1")), TierLevel("gold", 10, Decimal("1.5")),
                 TierLevel("silver", 20, Decimal("1.2"))]}, "tiers"),
    ({"effective_from": T0 + timedelta(seconds=59)}, "effective_from"),
    ({"basis": "tenure"}, "window_months"),
    ({"downgrade": "one_step"}, "period_months"),
    ({"period_months": 3}, "period_months"),
])
def test_a_policy_breaking_a_rule_is_refused_and_nothing_is_written(app: Flask, change: dict, field: str) -> None:
    hub = hub_state(app)
    arguments = {"basis": "spend", "window_months": 12, "downgrade": "to_earned", "period_months": None,
                 "levels": LADDER, "effective_from": T0 + timedelta(minutes=5), **change}
    entries = audit_count(hub)
    with hub.unit_of_work() as uow, pytest.raises(ValidationFailed) as refused:
        tier_policy.propose_version(uow.session, now=T0, actor="test:tiers", **arguments)
    assert field in refused.value.fields
    assert (_version_count(hub), audit_count(hub)) == (1, entries)


def test_scheduling_is_audited_and_two_versions_cannot_share_a_moment(app: Flask) -> None:
    hub = hub_state(app)
    made = _schedule(hub, T0)
    assert (made.policy.version, made.status) == (2, "scheduled")
    with hub.unit_of_work() as uow:
        entry = uow.session.scalars(select(AuditLogEntry).where(AuditLogEntry.action == "tier_policy.schedule")).one()
    assert (entry.actor, entry.subject) == ("test:tiers", "tier_policy:2")
    assert entry.after is not None and entry.after["tiers"][1] == {
        "tier": "silver", "threshold": 100, "multiplier": "1.25", "birthday_bonus_points": 50}
    with pytest.raises(ValidationFailed, match="another version starts at this moment"):
        _schedule(hub, T0)


def _api_policy(effective_from: datetime, **change: object) -> dict[str, object]:
    return {"effective_from": effective_from.isoformat(), "basis": "spend", "window_months": 12,
            "downgrade": "one_step", "period_months": 6,
            "tiers": [{"tier": "standard", "threshold": 0, "multiplier": "1"},
                      {"tier": "silver", "threshold": 400, "multiplier": "1.2", "birthday_bonus_points": 25}],
            **change}


def test_back_office_api_lists_schedules_and_refuses_as_problem_json(app: Flask) -> None:
    bo = BackOffice(app)
    soon = datetime.now(timezone.utc) + timedelta(days=1)
    made = bo.post("/tier-policy", _api_policy(soon), role="partner_manager")
    assert made.status == 201, made.body
    assert (made.body["version"], made.body["status"], made.body["tiers"][1]["multiplier"]) == (2, "scheduled", "1.2")
    listed = bo.get("/tier-policy", role="customer_service")
    assert listed.status == 200
    assert listed.body["in_force"]["version"] == 1 and listed.body["in_force"]["tiers"][3]["multiplier"] == "2"
    assert [version["version"] for version in listed.body["scheduled"]] == [2]
    assert [version["version"] for version in listed.body["versions"]] == [2, 1]
    entries = audit_count(bo.hub)
    for body in (_api_policy(soon + timedelta(days=1), tiers=[{"tier": "standard", "threshold": 0, "multiplier": "1"},
                                                               {"tier": "gold", "threshold": 0, "multiplier": "2"}]),
                 _api_policy(soon + timedelta(days=1), tiers=[{"tier": "standard", "threshold": 0,
                                                               "multiplier": "0.5"}]),
                 _api_policy(datetime.now(timezone.utc) + timedelta(seconds=5)),
                 _api_policy(soon + timedelta(days=1), multiplier_everywhere="2")):
        refused = bo.post("/tier-policy", body, role="admin")
        assert refused.status == 422, refused.body
        assert refused.headers["Content-Type"].startswith("application/problem+json")
        assert refused.body["code"] == "validation_failed"
    assert (_version_count(bo.hub), audit_count(bo.hub)) == (2, entries)
    assert bo.post("/tier-policy", _api_policy(soon + timedelta(days=2)), role="finance").status == 403
    assert bo.post("/tier-policy", _api_policy(soon + timedelta(days=2)), role="customer_service").status == 403


def test_back_office_api_shows_a_members_tier_history(app: Flask) -> None:
    bo = BackOffice(app)
    member = make_member(bo.hub, now=T0 - timedelta(days=30))
    _set_tier(bo.hub, member.member_id, "gold")
    _recompute(bo.hub, T0)
    reply = bo.get(f"/members/{member.member_number}/tier-history", role="customer_service")
    assert reply.status == 200
    assert reply.body["changes"] == [{"from_tier": "gold", "to_tier": "standard", "changed_at": T0.isoformat(),
                                      "policy_version": 1,
                                      "reason": "down to the level earned: 0 currency units spent over 12 months"}]
    missing = bo.get("/members/0000000000000000/tier-history", role="admin")
    assert (missing.status, missing.body["code"]) == (404, "not_found")


def test_cli_shows_the_policy_and_schedules_a_version_from_a_file(app: Flask, tmp_path: Path) -> None:
    hub = hub_state(app)
    shown = run_cli(app, "tiers", "show")
    assert shown.exit_code == 0, shown.output
    assert "version 1 (in force) from 1970-01-01T00:00:00+00:00: spend in EUR over 12 months" in shown.output
    assert "  gold: from 1500.00 EUR, multiplier 1.5, birthday bonus 0 points" in shown.output
    policy = tmp_path / "tiers.json"
    policy.write_text(json.dumps({"basis": "tenure", "downgrade": "to_earned", "tiers": [
        {"tier": "standard", "threshold": 0, "multiplier": "1"},
        {"tier": "diamond", "threshold": 24, "multiplier": "1.75", "birthday_bonus_points": 500}]}))
    effective = (datetime.now(timezone.utc) + timedelta(hours=2)).replace(microsecond=0)
    made = run_cli(app, "tiers", "set", "--from", str(policy), "--effective", effective.isoformat())
    assert made.exit_code == 0, made.output
    assert f"tier policy version 2 scheduled from {effective.isoformat()}" in made.output
    assert "  diamond: from 24 months, multiplier 1.75, birthday bonus 500 points" in made.output
    with hub.unit_of_work() as uow:
        entry = uow.session.scalars(select(AuditLogEntry).where(AuditLogEntry.action == "tier_policy.schedule")).one()
    assert entry.actor.startswith("cli:")
    policy.write_text(json.dumps({"basis": "tenure", "downgrade": "to_earned", "tiers": [
        {"tier": "standard", "threshold": 0, "multiplier": "0.5"}]}))
    refused = run_cli(app, "tiers", "set", "--from", str(policy), "--effective",
                      (effective + timedelta(days=1)).isoformat())
    assert refused.exit_code != 0 and "must be at least 1" in refused.output
    policy.write_text("not json")
    assert run_cli(app, "tiers", "set", "--from", str(policy), "--effective", effective.isoformat()).exit_code == 2
    assert _version_count(hub) == 2
    assert "version 1 (superseded)" not in run_cli(app, "tiers", "show").output


def _tier_actions(hub: HubState) -> list[tuple[str, str, str]]:
    return [entry for entry in audit_actions(hub) if entry[1].startswith("tier_policy.")]


def _form(effective: datetime, **change: str) -> dict[str, object]:
    return {"effective_from": effective.strftime("%Y-%m-%dT%H:%M"), "basis": "spend", "window_months": "12",
            "downgrade": "to_earned", "period_months": "", "standard_multiplier": "1", "standard_birthday_bonus": "0",
            "silver_threshold": "750", "silver_multiplier": "1.3", "silver_birthday_bonus": "40",
            "gold_threshold": "", "gold_multiplier": "1", "diamond_threshold": "2,000", "diamond_multiplier": "2.5",
            **change}


def test_console_page_shows_the_policy_in_words_and_schedules_a_version(app: Flask) -> None:
    hub = hub_state(app)
    browser = signed_in(app, "paco", "partner_manager")
    empty = text_of(browser.get(PAGE))
    assert "In force: version 1" in empty and "No change of the tier policy is scheduled." in empty
    assert "1,500.00 EUR spent" in empty and "× 1.25" in empty
    assert "straight down to the tier earned" in empty
    effective = datetime.now(timezone.utc) + timedelta(days=3)
    done = browser.post(SCHEDULE, _form(effective))
    assert done.status_code == 303 and done.headers["Location"].endswith(PAGE)
    page = text_of(browser.client.get(done.headers["Location"]))
    assert "Tier policy version 2 is scheduled" in page
    assert "Version 2, from" in page and "750.00 EUR spent" in page and "2,000.00 EUR spent" in page
    assert "× 2.5" in page and "40 points" in page
    assert _tier_actions(hub) == [("console:paco", "tier_policy.schedule", "tier_policy:2")]
    with hub.unit_of_work() as uow:
        stored = tier_policy.versions(uow.session, now=datetime.now(timezone.utc))[0].policy
    assert [(level.tier, level.threshold, level.multiplier) for level in stored.levels] == [
        ("standard", 0, Decimal("1")), ("silver", 750, Decimal("1.3")), ("diamond", 2_000, Decimal("2.5"))]
    html = browser.get(PAGE).get_data(as_text=True)
    for table in re.findall(r"<table.*?</table>", html, re.S):
        assert "<caption" in table
        assert not re.search(r"<th(?=[ >])(?![^>]*scope=)[^>]*>", table)
        assert not re.search(r"<td(?![^>]*data-label=)[^>]*>", table)


def test_console_refusals_change_nothing(app: Flask) -> None:
    hub = hub_state(app)
    browser = signed_in(app, "ada", "admin")
    later = datetime.now(timezone.utc) + timedelta(days=3)
    refused = browser.post(SCHEDULE, _form(later, silver_multiplier="0.9"))
    assert refused.status_code == 303
    assert "the multiplier must be at least 1" in text_of(browser.client.get(refused.headers["Location"]))
    too_soon = browser.post(SCHEDULE, _form(datetime.now(timezone.utc) - timedelta(days=1)))
    assert "seconds from now" in text_of(browser.client.get(too_soon.headers["Location"]))
    assert browser.post(SCHEDULE, _form(later, silver_threshold="750.50")).status_code == 400
    assert browser.post(SCHEDULE, _form(later, silver_multiplier="lots")).status_code == 400
    assert browser.post(SCHEDULE, _form(later, basis="moon")).status_code == 400
    assert browser.post(SCHEDULE, _form(later, effective_from="next week")).status_code == 400
    assert browser.post(SCHEDULE, _form(later), csrf=None).status_code == 400
    assert (_version_count(hub), _tier_actions(hub)) == (1, [])


def test_console_page_is_for_partner_managers_and_admins(app: Flask) -> None:
    hub = hub_state(app)
    anonymous = ConsoleClient(app)
    assert "/console/login" in anonymous.get(PAGE).headers.get("Location", "")
    for role, status in (("customer_service", 403), ("finance", 403), ("admin", 200), ("partner_manager", 200)):
        browser = signed_in(app, f"user-{role}".replace("_", "-"), role)
        assert browser.get(PAGE).status_code == status, role
        assert "Tier policy" in text_of(browser.get("/console/")) or status == 403
    add_staff(hub, "cs-two", "customer_service")
    service = ConsoleClient(app)
    service.login("cs-two")
    later = datetime.now(timezone.utc) + timedelta(days=3)
    assert service.post(SCHEDULE, _form(later)).status_code == 403
    assert _version_count(hub) == 1


def test_console_versions_sort_by_version_and_moment(app: Flask) -> None:
    hub = hub_state(app)
    now = datetime.now(timezone.utc)
    _schedule(hub, now + timedelta(days=10))
    _schedule(hub, now + timedelta(days=5))
    browser = signed_in(app, "paco", "partner_manager")

    def order(**query: str) -> list[str]:
        html = browser.get(PAGE, **query).get_data(as_text=True)
        table = re.findall(r"<table.*?</table>", html, re.S)[-1]
        return re.findall(r'<th scope="row" data-label="Version" class="num">(\d+)</th>', table)

    assert order() == ["2", "3", "1"]  # by moment, latest first
    assert order(sort="version") == ["1", "2", "3"]
    assert order(sort="version", order="desc") == ["3", "2", "1"]
    assert browser.get(PAGE, sort="colour").status_code == 400
