"""``alliance risk …``: the policy shown and set, decisions with their evidence, the queue's cases and reviews
(four eyes above the threshold, operators named by ``--as``); refusals exit non-zero with a clear message and
change nothing."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy import func, select

from alliance import cli_risk
from alliance.domain.risk import DEFAULT_POLICY
from alliance.extensions import hub_state
from alliance.models import AuditLogEntry, RiskDecision, RiskPolicyVersion
from alliance.services import risk
from tests.back_office_support import audit_count, other_hub, run_cli
from tests.factories import make_member_with_pin, make_signing_partner, set_risk_policy
from tests.http_server import (
    assert_audit_green,
    balances,
    books,
    fund_member,
    purchase_payload,
    wall_clock_partner_time,
)
from tests.partner_client import SignedTestClient

UTC = timezone.utc
PIN = "2468"
HOLD_THE_FOURTH = {"limits": [
    {"name": "card-hour", "scope": "card", "measure": "earn", "window_minutes": 60, "max_count": 3,
     "action": "hold"}]}


@pytest.fixture
def held(app):  # type: ignore[no-untyped-def]
    """A member's fourth purchase at a till in an hour, held for review (100 points pending)."""
    hub = hub_state(app)
    created = wall_clock_partner_time()
    shop = make_signing_partner(hub, now=created, code="shop", bind_key_to_terminal=True)
    member = make_member_with_pin(hub, now=created, pin=PIN)
    fund_member(hub, member_id=member.member_id, partner_id=shop.partner_id, points=3_000)
    set_risk_policy(hub, HOLD_THE_FOURTH)
    client = SignedTestClient(app, shop)
    for index in range(4):
        reply = client.post("/partner/v1/purchases", purchase_payload(f"h-{index}", member.card_number, 10_000))
        assert reply.status == 201
    with hub.unit_of_work() as uow:
        (decision,) = uow.session.scalars(select(RiskDecision)).all()
    return SimpleNamespace(app=app, hub=hub, member=member, decision=decision)


def state(hub) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    with hub.unit_of_work() as uow:
        reviews = uow.session.execute(select(RiskDecision.id, RiskDecision.review_status,
                                             RiskDecision.proposed_by).order_by(RiskDecision.id)).all()
        versions = uow.session.scalar(select(func.count()).select_from(RiskPolicyVersion))
    return {"books": books(hub), "reviews": reviews, "versions": versions, "audit": audit_count(hub)}


def audited(hub, subject: str) -> list[tuple[str, str]]:  # type: ignore[no-untyped-def]
    with hub.unit_of_work() as uow:
        return [tuple(row) for row in uow.session.execute(select(AuditLogEntry.action, AuditLogEntry.actor).where(
            AuditLogEntry.subject == subject).order_by(AuditLogEntry.sequence))]


def test_the_commands_offer_what_the_service_accepts():
    assert cli_risk.REVIEW_STATUSES == risk.REVIEW_STATUSES
    assert cli_risk.REVIEW_ACTIONS == tuple(risk.REVIEW_ACTIONS)
    assert cli_risk.GROUPINGS == risk.GROUPINGS


def test_the_policy_is_shown_and_a_version_set_from_a_file(app, tmp_path):
    hub = hub_state(app)
    shown = run_cli(app, "risk", "policy", "show")
    assert shown.exit_code == 0
    assert shown.output.startswith("in force: the built-in default policy")
    assert "card-earns-hour\tcard earn over 60 min\tmax_count 20\thold" in shown.output
    document = DEFAULT_POLICY.as_data()
    document["partners"] = {"shop": {"card-earns-hour": {"max_count": 40}}}
    make_signing_partner(hub, now=wall_clock_partner_time(), code="shop")
    path = tmp_path / "policy.json"
    path.write_text(json.dumps(document), encoding="utf-8")
    starts = (datetime.now(UTC) + timedelta(hours=2)).replace(microsecond=0)
    stored = run_cli(app, "risk", "policy", "set", "--file", str(path), "--effective-from", starts.isoformat(),
                     "--reason", "the shop's tills are busy")
    assert stored.exit_code == 0, stored.output
    assert stored.output.strip() == f"risk policy version 1 stored, in force from {starts.isoformat()}"
    shown = run_cli(app, "risk", "policy", "show")
    assert "version 1\tscheduled\tfrom " + starts.isoformat() in shown.output
    assert "the shop's tills are busy" in shown.output
    as_json = json.loads(run_cli(app, "risk", "policy", "show", "--json").output)
    assert as_json["version"] is None and as_json["versions"][0]["policy"]["partners"] == document["partners"]
    with hub.unit_of_work() as uow:
        actions = uow.session.scalars(select(AuditLogEntry.action).where(
            AuditLogEntry.subject == "risk-policy:1")).all()
    assert actions == ["risk.policy.set"]
    assert_audit_green(hub)


def test_a_bad_policy_file_is_refused_and_nothing_is_stored(app, tmp_path):
    hub = hub_state(app)
    starts = (datetime.now(UTC) + timedelta(hours=2)).isoformat()
    before = state(hub)
    not_json = tmp_path / "broken.json"
    not_json.write_text("{limits: ", encoding="utf-8")
    refused = run_cli(app, "risk", "policy", "set", "--file", str(not_json), "--effective-from", starts,
                      "--reason", "x")
    assert refused.exit_code == 2 and "is not JSON" in refused.output
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"limits": [{"name": "x"}]}), encoding="utf-8")
    refused = run_cli(app, "risk", "policy", "set", "--file", str(bad), "--effective-from", starts, "--reason", "x")
    assert refused.exit_code == 1 and "limits" in refused.output
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"limits": []}), encoding="utf-8")
    too_soon = run_cli(app, "risk", "policy", "set", "--file", str(good), "--effective-from",
                       datetime.now(UTC).isoformat(), "--reason", "now")
    assert too_soon.exit_code == 1 and "60 seconds" in too_soon.output
    assert state(hub) == before


def test_decisions_and_cases_are_listed_with_their_evidence(held):
    listed = run_cli(held.app, "risk", "decisions", "--status", "open")
    assert listed.exit_code == 0
    (line,) = listed.output.splitlines()
    fields = line.split("\t")
    assert fields[:2] == [str(held.decision.id), held.decision.token]
    assert fields[3:8] == ["earn hold", "shop/till-1", f"member {held.member.member_number}", "100 points", "open"]
    assert fields[8] == "card-hour saw 4 / 400 points"
    by_token = run_cli(held.app, "risk", "decisions", "--token", held.decision.token.lower())
    assert by_token.output.split("\t")[0] == str(held.decision.id)
    assert run_cli(held.app, "risk", "decisions", "--member", held.member.member_number).output == listed.output
    nothing = run_cli(held.app, "risk", "decisions", "--partner", "other")
    assert nothing.exit_code == 0 and "no decisions" in nothing.output
    assert run_cli(held.app, "risk", "decisions", "--status", "closed").exit_code == 2
    for by, subject in (("member", held.member.member_number), ("terminal", "shop/till-1"), ("partner", "shop")):
        cases = run_cli(held.app, "risk", "cases", "--by", by)
        assert cases.exit_code == 0
        assert cases.output.startswith(f"{subject}\t1 decisions\t100 points\t1 hold\t")
        assert cases.output.rstrip().endswith(f"decisions {held.decision.id}")
    assert run_cli(held.app, "risk", "cases", "--by", "card").exit_code == 2


def test_a_review_releases_a_hold_and_a_second_review_is_refused(held):
    released = run_cli(held.app, "risk", "review", str(held.decision.id), "--action", "release", "--note",
                       "the till's journal shows four real sales", "--as", "rita")
    assert released.exit_code == 0, released.output
    assert released.output.strip() == (f"decision {held.decision.id}: released by cli:rita\treleased 100\t"
                                       "reversed 0\tunrecovered 0")
    assert balances(held.hub, held.member.member_id)["pending"] == 0
    assert audited(held.hub, f"risk-decision:{held.decision.id}") == [("risk.review.release", "cli:rita")]
    before = state(held.hub)
    again = run_cli(held.app, "risk", "review", str(held.decision.id), "--action", "reverse", "--note", "no")
    assert again.exit_code == 1 and "already released by cli:rita" in again.output
    assert state(held.hub) == before
    assert_audit_green(held.hub)


@pytest.mark.parametrize(("arguments", "exit_code", "message"), [
    (["--action", "dismiss", "--note", "fine"], 1, "released or reversed"),
    (["--action", "pardon", "--note", "fine"], 2, "pardon"),
    (["--action", "release", "--note", "   "], 1, "say what the review found"),
    (["--action", "release", "--note", "fine", "--as", "rita smith"], 2, "--as"),
    (["--action", "release"], 2, "--note"),
])
def test_a_wrong_review_is_refused_with_a_clear_message_and_changes_nothing(held, arguments, exit_code, message):
    before = state(held.hub)
    refused = run_cli(held.app, "risk", "review", str(held.decision.id), *arguments)
    assert refused.exit_code == exit_code and message in refused.output
    assert state(held.hub) == before


def test_an_unknown_decision_is_refused(held):
    before = state(held.hub)
    refused = run_cli(held.app, "risk", "review", "999999", "--action", "release", "--note", "fine")
    assert refused.exit_code == 1 and "no risk decision 999999" in refused.output
    assert state(held.hub) == before


def test_with_a_threshold_of_zero_one_operator_proposes_and_another_releases(held, tmp_path):
    decision = str(held.decision.id)
    with other_hub(held.hub, tmp_path / "strict", risk_approval_threshold_points=0) as strict_app:
        proposed = run_cli(strict_app, "risk", "review", decision, "--action", "release", "--note", "ok",
                           "--as", "rita")
        assert proposed.exit_code == 0 and "release proposed by cli:rita; another person" in proposed.output
        assert balances(held.hub, held.member.member_id)["pending"] == 100
        shown = run_cli(strict_app, "risk", "decisions", "--token", held.decision.token)
        assert "open (release proposed by cli:rita)" in shown.output
        before = state(held.hub)
        same = run_cli(strict_app, "risk", "review", decision, "--action", "release", "--note", "ok",
                       "--as", "rita")
        assert same.exit_code == 1 and "another person must approve it" in same.output
        assert state(held.hub) == before
        done = run_cli(strict_app, "risk", "review", decision, "--action", "release", "--note", "ok", "--as", "ravi")
        assert done.exit_code == 0 and "released by cli:ravi\treleased 100" in done.output
    assert balances(held.hub, held.member.member_id)["pending"] == 0
    assert audited(held.hub, f"risk-decision:{held.decision.id}") == [
        ("risk.review.propose_release", "cli:rita"), ("risk.review.release", "cli:ravi")]
    assert_audit_green(held.hub)
