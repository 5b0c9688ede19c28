"""The pattern rules read and changed by an operator: ``GET /risk/patterns`` and ``PATCH /risk/patterns/<name>`` for
the risk role and administrators, ``alliance risk patterns show|set`` from the command line. A change is audited
with before, after and reason, and the next signed purchase is decided by it; every refusal is precise and leaves
the stored rule as it was."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy import select

from alliance.domain.risk_patterns import ACTIONS, MAX_TERM, PATTERNS, TERMS, Pattern
from alliance.extensions import hub_state
from alliance.models import AuditLogEntry, RiskDecision, RiskPatternRule
from tests.back_office_support import BackOffice, audit_count, run_cli
from tests.factories import make_member_with_pin, make_signing_partner, set_risk_policy
from tests.http_server import (
    assert_audit_green,
    assert_books_unchanged,
    books,
    purchase_payload,
    wall_clock_partner_time,
)
from tests.partner_client import SignedTestClient

UTC = timezone.utc
PIN = "2468"
PURCHASES = "/partner/v1/purchases"


@pytest.fixture
def capped(app):  # type: ignore[no-untyped-def]
    """A partner capping each purchase at 500 points (1 point a euro), its key bound to its till, under a policy
    without velocity limits (only the patterns decide), and a back-office caller holding tokens already."""
    hub = hub_state(app)
    created = wall_clock_partner_time()
    set_risk_policy(hub)
    partner = make_signing_partner(hub, now=created, code="capped", bind_key_to_terminal=True,
                                   per_purchase_cap_points=500)
    bo = BackOffice(app)
    for role in ("risk", "admin", "customer_service", "finance"):
        bo.token(role)
    return SimpleNamespace(app=app, hub=hub, created=created, client=SignedTestClient(app, partner), bo=bo)


def member(world):  # type: ignore[no-untyped-def]
    return make_member_with_pin(world.hub, now=world.created, pin=PIN)


def split(world, card, receipt: str):  # type: ignore[no-untyped-def]
    """Two purchases of one card at the till, 400 then 300 points: together past the cap of 500."""
    first = world.client.post(PURCHASES, purchase_payload(f"{receipt}-1", card.card_number, 40_000))
    assert first.status == 201, first.body
    return world.client.post(PURCHASES, purchase_payload(f"{receipt}-2", card.card_number, 30_000))


def stored(hub) -> list[tuple[Any, ...]]:  # type: ignore[no-untyped-def]
    with hub.unit_of_work() as uow:
        return [tuple(row) for row in uow.session.execute(select(
            RiskPatternRule.name, RiskPatternRule.terms, RiskPatternRule.action, RiskPatternRule.enabled,
            RiskPatternRule.updated_by).order_by(RiskPatternRule.name))]


def state(hub) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    return {"rules": stored(hub), "audit": audit_count(hub)}


def audit_entries(hub, name: str) -> list[AuditLogEntry]:  # type: ignore[no-untyped-def]
    with hub.unit_of_work() as uow:
        return list(uow.session.scalars(select(AuditLogEntry).where(
            AuditLogEntry.subject == f"risk-pattern:{name}").order_by(AuditLogEntry.sequence)))


def kept(hub) -> list[tuple[str, str | None, str]]:  # type: ignore[no-untyped-def]
    with hub.unit_of_work() as uow:
        return [(decision.action, decision.reference, decision.evidence[0]["pattern"])
                for decision in uow.session.scalars(select(RiskDecision).order_by(RiskDecision.id))]


# -- the back-office API ------------------------------------------------------------------

def test_every_pattern_is_read_with_what_it_accepts_and_no_change_yet(capped):
    for role in ("risk", "admin"):
        reply = capped.bo.get("/risk/patterns", role=role)
        assert reply.status == 200, reply.body
        patterns = reply.body["patterns"]
        assert [row["name"] for row in patterns] == [pattern.value for pattern in Pattern]
        by_name = {row["name"]: row for row in patterns}
        assert by_name["split-purchase"] == {
            "name": "split-purchase", "terms": {"window_minutes": 10}, "action": "hold", "enabled": True,
            "term_minimums": {"window_minutes": 1}, "term_maximum": MAX_TERM, "actions": ["flag", "hold", "refuse"],
            "default_terms": {"window_minutes": 10}, "default_action": "hold", "updated_by": None,
            "updated_at": None}
        assert by_name["quick-burn"]["actions"] == ["flag", "refuse"]
        assert by_name["amount-outlier"]["term_minimums"]["stddevs"] == 0
        for row in patterns:
            pattern = Pattern(row["name"])
            assert row["terms"] == dict(PATTERNS[pattern].terms) == row["default_terms"]
            assert row["action"] == PATTERNS[pattern].action.word == row["default_action"]
            assert row["term_minimums"] == dict(TERMS[pattern])
            assert row["actions"] == sorted(action.word for action in ACTIONS[pattern])


def test_a_term_changed_through_the_api_is_stored_audited_with_its_reason_and_read_back(capped):
    changed = capped.bo.patch("/risk/patterns/quick-burn", {"terms": {"cards": 4},
                                                             "reason": "three cards fired on a family"},
                              role="risk")
    assert changed.status == 200, changed.body
    assert changed.body["terms"] == {"earned_within_minutes": 30, "cards": 4, "window_minutes": 1440}
    assert (changed.body["action"], changed.body["enabled"]) == ("flag", True)
    assert changed.body["updated_by"] == capped.bo.actor("risk")
    assert datetime.fromisoformat(changed.body["updated_at"]) <= datetime.now(UTC)
    assert stored(capped.hub) == [("quick-burn", {"earned_within_minutes": 30, "cards": 4, "window_minutes": 1440},
                                   "flag", True, capped.bo.actor("risk"))]
    (entry,) = audit_entries(capped.hub, "quick-burn")
    assert (entry.action, entry.actor) == ("risk.pattern.set", capped.bo.actor("risk"))
    assert entry.before == {"name": "quick-burn", "terms": {"earned_within_minutes": 30, "cards": 3,
                                                            "window_minutes": 1440}, "action": "flag",
                            "enabled": True}
    assert entry.after == {"name": "quick-burn", "terms": {"earned_within_minutes": 30, "cards": 4,
                                                           "window_minutes": 1440}, "action": "flag",
                           "enabled": True, "reason": "three cards fired on a family"}
    read = {row["name"]: row for row in capped.bo.get("/risk/patterns", role="admin").body["patterns"]}
    assert read["quick-burn"] == changed.body
    assert read["quick-burn"]["default_terms"]["cards"] == 3
    # A second change keeps the first one's terms it does not name.
    again = capped.bo.patch("/risk/patterns/quick-burn", {"action": "refuse", "reason": "a ring at two shops"},
                            role="admin")
    assert again.status == 200, again.body
    assert (again.body["terms"]["cards"], again.body["action"]) == (4, "refuse")
    assert again.body["updated_by"] == capped.bo.actor("admin")
    assert [entry.after["reason"] for entry in audit_entries(capped.hub, "quick-burn")] == [
        "three cards fired on a family", "a ring at two shops"]
    assert_audit_green(capped.hub)


def test_a_change_through_the_api_decides_the_next_signed_purchase(capped):
    # The built-in rule holds a split purchase (and this process now holds its copy of the rules).
    held = split(capped, member(capped), "before")
    assert held.status == 201 and held.body["points"]["state"] == "held_for_review"
    switched_off = capped.bo.patch("/risk/patterns/split-purchase", {"enabled": False, "reason": "cap review"},
                                   role="risk")
    assert switched_off.status == 200 and switched_off.body["enabled"] is False
    passed = split(capped, member(capped), "off")
    assert passed.status == 201 and passed.body["points"]["state"] == "active"
    refusing = capped.bo.patch("/risk/patterns/split-purchase", {"enabled": True, "action": "refuse",
                                                                 "reason": "splits are fraud here"}, role="risk")
    assert refusing.status == 200 and (refusing.body["enabled"], refusing.body["action"]) == (True, "refuse")
    card = member(capped)
    first = capped.client.post(PURCHASES, purchase_payload("refuse-1", card.card_number, 40_000))
    assert first.status == 201
    before = books(capped.hub)
    refused = capped.client.post(PURCHASES, purchase_payload("refuse-2", card.card_number, 30_000))
    assert (refused.status, refused.body["code"]) == (403, "declined")
    assert_books_unchanged(capped.hub, before)
    assert kept(capped.hub) == [("hold", "before-2", "split-purchase"), ("refuse", "refuse-2", "split-purchase")]
    assert_audit_green(capped.hub)


@pytest.mark.parametrize(("name", "body", "status", "field"), [
    ("no-such-pattern", {"enabled": False, "reason": "why"}, 404, None),
    ("split-purchase", {"terms": {"minutes": 5}, "reason": "why"}, 422, "terms"),
    ("split-purchase", {"terms": {"window_minutes": 0}, "reason": "why"}, 422, "terms.window_minutes"),
    ("split-purchase", {"terms": {"window_minutes": 2.5}, "reason": "why"}, 422, "terms.window_minutes"),
    ("split-purchase", {"terms": {"window_minutes": MAX_TERM + 1}, "reason": "why"}, 422, "terms.window_minutes"),
    ("split-purchase", {"terms": {"window_minutes": True}, "reason": "why"}, 422, "terms.window_minutes"),
    ("split-purchase", {"terms": [5], "reason": "why"}, 422, "terms"),
    ("quick-burn", {"action": "hold", "reason": "why"}, 422, "action"),
    ("split-purchase", {"action": "block", "reason": "why"}, 422, "action"),
    ("split-purchase", {"enabled": False}, 422, "reason"),
    ("split-purchase", {"enabled": False, "reason": ""}, 422, "reason"),
    ("split-purchase", {"enabled": False, "reason": "   "}, 422, "reason"),
    ("split-purchase", {"enabled": False, "reason": "x" * 501}, 422, "reason"),
    ("split-purchase", {"reason": "nothing named"}, 422, "terms"),
    ("split-purchase", {"enabled": False, "reason": "why", "name": "quick-burn"}, 422, "name"),
])
def test_a_refused_change_is_a_precise_problem_and_changes_nothing(capped, name, body, status, field):
    capped.bo.patch("/risk/patterns/split-purchase", {"terms": {"window_minutes": 20}, "reason": "first"},
                    role="risk")
    before = state(capped.hub)
    refused = capped.bo.patch(f"/risk/patterns/{name}", body, role="risk")
    assert refused.status == status, refused.body
    assert refused.headers["Content-Type"].startswith("application/problem+json")
    if field is None:
        assert refused.code == "not_found" and "split-purchase" in refused.body["detail"]
    else:
        assert refused.code == "validation_failed"
        assert field in refused.body["errors"], refused.body
    assert state(capped.hub) == before


@pytest.mark.parametrize("role", ["customer_service", "finance", "partner_manager"])
def test_other_roles_may_neither_read_nor_change_the_pattern_rules(capped, role):
    before = state(capped.hub)
    read = capped.bo.get("/risk/patterns", role=role)
    changed = capped.bo.patch("/risk/patterns/split-purchase", {"enabled": False, "reason": "why"}, role=role)
    assert (read.status, read.code) == (403, "role_refused")
    assert (changed.status, changed.code) == (403, "role_refused")
    unauthenticated = capped.bo.call("PATCH", "/risk/patterns/split-purchase", json={"enabled": False,
                                                                                      "reason": "why"})
    assert (unauthenticated.status, unauthenticated.code) == (401, "not_authenticated")
    assert state(capped.hub) == before


# -- the command line ---------------------------------------------------------------------

def test_the_rules_are_shown_and_a_term_set_from_the_command_line(capped):
    shown = run_cli(capped.app, "risk", "patterns", "show")
    assert shown.exit_code == 0, shown.output
    lines = shown.output.splitlines()
    assert lines[4] == "split-purchase\ton\thold\twindow_minutes=10\tbuilt-in"
    assert lines[5] == "  accepts window_minutes >= 1; actions flag, hold, refuse"
    changed = run_cli(capped.app, "risk", "patterns", "set", "amount-outlier", "--term", "min_purchases=50",
                      "--term", "factor=4", "--action", "hold", "--reason", "a young partner", "--as", "rita")
    assert changed.exit_code == 0, changed.output
    assert changed.output.splitlines()[0] == "pattern amount-outlier changed by cli:rita"
    assert changed.output.splitlines()[1].startswith(
        "amount-outlier\ton\thold\tfactor=4 stddevs=3 min_purchases=50 profile_days=90\tchanged by cli:rita at ")
    as_json = {row["name"]: row for row in json.loads(
        run_cli(capped.app, "risk", "patterns", "show", "--json").output)["patterns"]}
    assert as_json["amount-outlier"]["terms"] == {"factor": 4, "stddevs": 3, "min_purchases": 50,
                                                  "profile_days": 90}
    assert (as_json["amount-outlier"]["action"], as_json["amount-outlier"]["updated_by"]) == ("hold", "cli:rita")
    assert as_json["split-purchase"]["updated_by"] is None
    (entry,) = audit_entries(capped.hub, "amount-outlier")
    assert (entry.action, entry.actor, entry.after["reason"]) == ("risk.pattern.set", "cli:rita", "a young partner")
    assert (entry.before["terms"]["min_purchases"], entry.after["terms"]["min_purchases"]) == (200, 50)
    assert_audit_green(capped.hub)


def test_a_change_from_the_command_line_decides_the_next_signed_purchase(capped):
    held = split(capped, member(capped), "before")
    assert held.status == 201 and held.body["points"]["state"] == "held_for_review"
    switched_off = run_cli(capped.app, "risk", "patterns", "set", "split-purchase", "--disable", "--reason",
                           "cap review")
    assert switched_off.exit_code == 0, switched_off.output
    assert "split-purchase\toff\thold" in switched_off.output
    passed = split(capped, member(capped), "off")
    assert passed.status == 201 and passed.body["points"]["state"] == "active"
    flagging = run_cli(capped.app, "risk", "patterns", "set", "split-purchase", "--enable", "--action", "flag",
                       "--reason", "flag only")
    assert flagging.exit_code == 0, flagging.output
    flagged = split(capped, member(capped), "flag")
    assert flagged.status == 201 and flagged.body["points"]["state"] == "active"
    assert kept(capped.hub) == [("hold", "before-2", "split-purchase"), ("flag", "flag-2", "split-purchase")]


@pytest.mark.parametrize(("arguments", "exit_code", "message"), [
    (["no-such-pattern", "--disable", "--reason", "why"], 1, "no pattern 'no-such-pattern'"),
    (["split-purchase", "--term", "minutes=5", "--reason", "why"], 1, "split-purchase has only window_minutes"),
    (["split-purchase", "--term", "window_minutes=0", "--reason", "why"], 1, "a whole number from 1"),
    (["split-purchase", "--term", "window_minutes=ten", "--reason", "why"], 2, "write key=value"),
    (["split-purchase", "--term", "window_minutes", "--reason", "why"], 2, "write key=value"),
    (["split-purchase", "--term", "window_minutes=5", "--term", "window_minutes=6", "--reason", "why"], 2,
     "named twice"),
    (["quick-burn", "--action", "hold", "--reason", "why"], 1, "action: flag or refuse"),
    (["split-purchase", "--action", "block", "--reason", "why"], 2, "block"),
    (["split-purchase", "--disable"], 2, "--reason"),
    (["split-purchase", "--disable", "--reason", "  "], 1, "say why"),
    (["split-purchase", "--reason", "nothing named"], 1, "name what changes"),
    (["split-purchase", "--disable", "--reason", "why", "--as", "rita smith"], 2, "--as"),
])
def test_a_refused_change_from_the_command_line_exits_non_zero_and_changes_nothing(capped, arguments, exit_code,
                                                                                      message):
    assert run_cli(capped.app, "risk", "patterns", "set", "split-purchase", "--term", "window_minutes=20",
                   "--reason", "first").exit_code == 0
    before = state(capped.hub)
    refused = run_cli(capped.app, "risk", "patterns", "set", *arguments)
    assert refused.exit_code == exit_code, refused.output
    assert message in refused.output
    assert state(capped.hub) == before
