"""``alliance risk …``: the velocity policy and its versions, the pattern rules, the decisions kept with their
evidence, the review queue's cases and reviewing a decision (docs/risk.md)."""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from flask import Flask

from alliance.cli_admin import MomentType, cli_actor
from alliance.extensions import hub_state

if TYPE_CHECKING:
    from alliance.cli import WithApp
    from alliance.services.risk import DecisionView
    from alliance.services.risk_patterns import RuleView

OPERATOR_NAME = re.compile(r"^[A-Za-z0-9._@-]{1,64}\Z")
TERM = re.compile(r"^([a-z_]{1,40})=(-?[0-9]{1,19})\Z")
REVIEW_STATUSES = ("open", "released", "reversed", "dismissed", "confirmed")
REVIEW_ACTIONS = ("release", "reverse", "dismiss", "confirm")
GROUPINGS = ("member", "terminal", "partner")


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _actor(as_user: str | None) -> str:
    """``cli:<user>``: the operator named by ``--as``, else the account running the command."""
    if as_user is None:
        return cli_actor()
    if not OPERATOR_NAME.match(as_user):
        raise click.BadParameter("1 to 64 letters, digits, dots, dashes, underscores or @", param_hint="--as")
    return f"cli:{as_user}"


def _limit_line(limit: dict[str, Any]) -> str:
    """One limit of a policy document as a line a person reads."""
    caps = ", ".join(f"{name} {limit[name]}" for name in ("max_count", "max_points") if limit.get(name) is not None)
    off = "" if limit.get("enabled", True) else "\t(switched off)"
    return (f"  {limit['name']}\t{limit['scope']} {limit['measure']} over {limit['window_minutes']} min\t"
            f"{caps or 'no cap'}\t{limit['action']}{off}")


def _evidence_text(evidence: list[dict[str, Any]]) -> str:
    """The limits a decision passed, each with the figures it saw."""
    return "; ".join(f"{item.get('limit')} saw {item.get('count')} / {item.get('points')} points"
                     for item in evidence) or "no limit (a pattern rule)"


def _terms(raw: tuple[str, ...]) -> dict[str, int]:
    """``--term key=value`` options as terms by name; a malformed or repeated one is refused."""
    terms: dict[str, int] = {}
    for item in raw:
        found = TERM.match(item)
        if found is None:
            raise click.BadParameter(f"{item!r}: write key=value, the value a whole number (such as cards=4)",
                                     param_hint="--term")
        if found.group(1) in terms:
            raise click.BadParameter(f"{found.group(1)} is named twice", param_hint="--term")
        terms[found.group(1)] = int(found.group(2))
    return terms


def _pattern_lines(view: RuleView) -> list[str]:
    """A pattern's rule in force and what it accepts, as lines a person reads."""
    rule = view.rule
    terms = " ".join(f"{key}={value}" for key, value in rule.terms.items())
    changed = (f"changed by {view.updated_by} at {view.updated_at.isoformat()}" if view.updated_at is not None
               else "built-in")
    accepts = ", ".join(f"{key} >= {minimum}" for key, minimum in view.term_minimums.items())
    return [f"{rule.name.value}\t{'on' if rule.enabled else 'off'}\t{rule.action.word}\t{terms}\t{changed}",
            f"  accepts {accepts}; actions {', '.join(view.actions)}"]


def _decision_line(view: DecisionView) -> str:
    """One decision as a tab-separated line: id, reference, when, what, where, who, points, status, evidence."""
    where = view.partner_code or "-"
    if view.terminal_code:
        where += f"/{view.terminal_code}"
    status = view.review_status
    if view.reviewed_by:
        status += f" by {view.reviewed_by}"
    elif view.proposed_action:
        status += f" ({view.proposed_action} proposed by {view.proposed_by})"
    return (f"{view.decision_id}\t{view.token}\t{view.decided_at.isoformat()}\t{view.operation} {view.action}\t"
            f"{where}\tmember {view.member_number or '-'}\t{view.points} points\t{status}\t"
            f"{_evidence_text(view.evidence)}")


def register(main: click.Group, with_app: WithApp) -> None:
    """Add the ``risk`` group to the CLI."""

    @main.group("risk")
    def risk_group() -> None:
        """Risk controls: the velocity policy, decisions and their evidence, the review queue, reviews."""

    @risk_group.group("policy")
    def policy_group() -> None:
        """The velocity policy: show the one in force and every version, store a new version."""

    @policy_group.command("show")
    @click.option("--json", "as_json", is_flag=True, help="Print the policy in force and every version as JSON.")
    @with_app
    def policy_show(app: Flask, as_json: bool) -> None:
        """The policy in force (its limits) and every stored version with its status."""
        from alliance.services import risk

        now = _now()
        with hub_state(app).unit_of_work() as uow:
            version, policy = risk.policy_in_force(uow.session, at=now)
            stored = risk.versions(uow.session, now=now)
        document = policy.as_data()
        if as_json:
            click.echo(json.dumps({"version": version, "policy": document, "versions": stored}, default=str,
                                  indent=2))
            return
        click.echo("in force: " + ("the built-in default policy" if version is None else f"version {version}"))
        for limit in document.get("limits", []):
            click.echo(_limit_line(limit))
        for name in ("partners", "tiers"):
            for who, overrides in sorted((document.get(name) or {}).items()):
                click.echo(f"  override for {name[:-1]} {who}: {json.dumps(overrides, sort_keys=True)}")
        for row in stored:
            click.echo(f"version {row['version']}\t{row['status']}\tfrom {row['effective_from'].isoformat()}\t"
                       f"set by {row['created_by']}\t{row['reason']}")

    @policy_group.command("set")
    @click.option("--file", "path", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
                  help="The policy document, JSON (docs/risk.md, \"The policy\").")
    @click.option("--effective-from", required=True, type=MomentType(),
                  help="When it takes effect (ISO 8601 with offset): at least 60 seconds ahead.")
    @click.option("--reason", required=True, help="Why (kept with the version and in the audit log).")
    @with_app
    def policy_set(app: Flask, path: Path, effective_from: datetime, reason: str) -> None:
        """Store a new version of the policy, in force from --effective-from."""
        from alliance.services import risk

        try:
            document = json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as error:
            raise click.BadParameter(f"{path} is not JSON: {error}", param_hint="--file") from None
        with hub_state(app).unit_of_work() as uow:
            version = risk.set_policy(uow.session, document=document, effective_from=effective_from, reason=reason,
                                      now=_now(), actor=cli_actor())
            uow.commit()
        click.echo(f"risk policy version {version} stored, in force from {effective_from.isoformat()}")

    @risk_group.group("patterns")
    def patterns_group() -> None:
        """The pattern rules: show every pattern's terms, action and switch; change one."""

    @patterns_group.command("show")
    @click.option("--json", "as_json", is_flag=True, help="Print every pattern's rule and what it accepts as JSON.")
    @with_app
    def patterns_show(app: Flask, as_json: bool) -> None:
        """Every pattern's rule in force, the terms and actions it accepts, and who changed it last."""
        from alliance.services import risk_patterns

        with hub_state(app).unit_of_work() as uow:
            views = risk_patterns.rule_views(uow.session)
        if as_json:
            click.echo(json.dumps({"patterns": [view.as_data() for view in views]}, default=str, indent=2))
            return
        for view in views:
            for line in _pattern_lines(view):
                click.echo(line)

    @patterns_group.command("set")
    @click.argument("name")
    @click.option("--term", "raw_terms", multiple=True, metavar="KEY=VALUE",
                  help="A term to change (repeatable), such as cards=4; the others keep their value.")
    @click.option("--action", default=None, type=click.Choice(("flag", "hold", "refuse")),
                  help="The action, among those that fit where the pattern runs.")
    @click.option("--enable/--disable", "enabled", default=None, help="Switch the pattern on or off.")
    @click.option("--reason", required=True, help="Why (kept in the audit log).")
    @click.option("--as", "as_user", default=None,
                  help="The operator making the change, recorded as cli:<name> (default: the account running the "
                       "command).")
    @with_app
    def patterns_set(app: Flask, name: str, raw_terms: tuple[str, ...], action: str | None, enabled: bool | None,
                     reason: str, as_user: str | None) -> None:
        """Change a pattern's terms, action or switch; every hub process applies it within 30 seconds."""
        from alliance.services import risk_patterns

        terms = _terms(raw_terms)
        actor = _actor(as_user)
        with hub_state(app).unit_of_work() as uow:
            view = risk_patterns.change_rule(uow.session, name=name, terms=terms, action=action, enabled=enabled,
                                             reason=reason, now=_now(), actor=actor)
            uow.commit()
        click.echo(f"pattern {name} changed by {actor}")
        for line in _pattern_lines(view):
            click.echo(line)

    @risk_group.command("decisions")
    @click.option("--status", type=click.Choice(REVIEW_STATUSES), default=None,
                  help="Only decisions in this review status (default: every status).")
    @click.option("--member", "member_number", default=None, help="Only this member's decisions.")
    @click.option("--partner", "partner_code", default=None, help="Only this partner's decisions.")
    @click.option("--token", default=None, help="The decision's reference (R and twelve hex digits).")
    @click.option("--limit", type=click.IntRange(1, 5_000), default=200, show_default=True)
    @with_app
    def decisions(app: Flask, status: str | None, member_number: str | None, partner_code: str | None,
                  token: str | None, limit: int) -> None:
        """Decisions newest first, one line each, with the limits they passed and the figures seen."""
        from alliance.services import risk

        with hub_state(app).unit_of_work() as uow:
            found = risk.decisions(uow.session, status=status, member_number=member_number,
                                   partner_code=partner_code, token=token, limit=limit)
        for view in found:
            click.echo(_decision_line(view))
        if not found:
            click.echo("no decisions", err=True)

    @risk_group.command("cases")
    @click.option("--by", type=click.Choice(GROUPINGS), default="member", show_default=True)
    @with_app
    def cases(app: Flask, by: str) -> None:
        """The review queue: open decisions grouped by member, terminal or partner, most decisions first."""
        from alliance.services import risk

        with hub_state(app).unit_of_work() as uow:
            found = risk.cases(uow.session, by=by)
        for case in found:
            actions = ", ".join(f"{count} {action}" for action, count in sorted(case["actions"].items()))
            click.echo(f"{case['subject']}\t{case['decisions']} decisions\t{case['points']} points\t{actions}\t"
                       f"latest {case['latest'].isoformat()}\tdecisions {' '.join(map(str, case['decision_ids']))}")
        if not found:
            click.echo("no open decisions", err=True)

    @risk_group.command("review")
    @click.argument("decision_id", type=click.IntRange(1))
    @click.option("--action", required=True, type=click.Choice(REVIEW_ACTIONS),
                  help="release or reverse a hold; dismiss or confirm a flag or a refusal.")
    @click.option("--note", required=True, help="What the review found (kept in the audit log).")
    @click.option("--as", "as_user", default=None,
                  help="The operator reviewing, recorded as cli:<name> (default: the account running the command).")
    @with_app
    def review(app: Flask, decision_id: int, action: str, note: str, as_user: str | None) -> None:
        """Review an open decision; above the approval threshold a release or reversal waits for a second person."""
        from alliance.services import risk

        state = hub_state(app)
        actor = _actor(as_user)
        with state.unit_of_work() as uow:
            outcome = risk.review(uow.session, decision_id=decision_id, action=action, note=note, now=_now(),
                                  actor=actor, approval_threshold_points=state.settings.risk_approval_threshold_points)
            uow.commit()
        if outcome.status == "proposed":
            click.echo(f"decision {decision_id}: {action} proposed by {actor}; another person must review it the "
                       f"same way: alliance risk review {decision_id} --action {action} --note ...")
            return
        click.echo(f"decision {decision_id}: {outcome.status} by {actor}\treleased {outcome.points_released}\t"
                   f"reversed {outcome.points_reversed}\tunrecovered {outcome.points_unrecovered}")
