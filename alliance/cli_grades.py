"""``alliance grades …``: compute, read, explain, override and export partner grades; handle alerts."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import click
from flask import Flask

from alliance.cli_admin import MomentType, cli_actor
from alliance.domain.grading import GRADES, Period
from alliance.extensions import hub_state

if TYPE_CHECKING:
    from alliance.cli import WithApp
    from alliance.storage.unit_of_work import Session

PERIOD_HELP = "A month (2026-10) or a quarter (2026-Q4), in the alliance's time zone."


def register(main: click.Group, with_app: WithApp) -> None:
    """Add the ``grades`` group to the CLI."""

    @main.group()
    def grades() -> None:
        """Partner grades by volume, complaints and settlement behaviour."""

    @grades.command("compute")
    @click.option("--period", default=None, help=PERIOD_HELP + " Default: the last whole month.")
    @click.option("--now", "now", type=MomentType(), default=None,
                  help="Pretend it is this moment (ISO 8601 with offset); default: now.")
    @with_app
    def grades_compute(app: Flask, period: str | None, now: datetime | None) -> None:
        """Grade every partner for a period (again, if it was computed before; overrides stay)."""
        from alliance.services import grading

        state = hub_state(app)
        moment = now or datetime.now(timezone.utc)
        chosen = Period.parse(period) if period else Period.month_before(moment, state.settings.alliance_time_zone)
        with state.unit_of_work() as uow:
            computed = grading.compute(uow.session, period=chosen, config=state.settings.grading_config(),
                                       time_zone=state.settings.alliance_time_zone, now=moment, actor=cli_actor())
            uow.commit()
        click.echo(f"{computed.period}: {computed.graded} graded, {computed.not_graded} not graded, "
                   f"{computed.alerts_raised} alerts raised")

    @grades.command("show")
    @click.option("--period", required=True, help=PERIOD_HELP)
    @click.option("--grade", type=click.Choice(GRADES), default=None, help="Only partners with this grade.")
    @click.option("--json", "as_json", is_flag=True, help="Print the full grades, with breakdowns, as JSON.")
    @with_app
    def grades_show(app: Flask, period: str, grade: str | None, as_json: bool) -> None:
        """The period's grades, one line per partner."""
        from alliance.services import grading

        with hub_state(app).unit_of_work() as uow:
            summary, views, total = grading.period_grades(uow.session, period=period, grade=grade,
                                                          limit=grading.MAX_PAGE_SIZE)
            views = _all_pages(uow.session, period, grade, views, total)
        if as_json:
            click.echo(json.dumps({"summary": summary, "grades": views}, default=str, indent=2))
            return
        click.echo(f"{summary['period']}: {summary['graded']} graded, {summary['not_graded']} not graded "
                   f"(computed {summary['computed_at']:%Y-%m-%d %H:%M} UTC by {summary['computed_by']})")
        for view in views:
            click.echo(_line(view))

    @grades.command("partner")
    @click.argument("code")
    @with_app
    def grades_partner(app: Flask, code: str) -> None:
        """A partner's grades over time, newest first."""
        from alliance.services import grading

        with hub_state(app).unit_of_work() as uow:
            history = grading.partner_history(uow.session, code=code)
        if not history:
            click.echo(f"{code} has no grades yet")
        for view in history:
            click.echo(_line(view, with_period=True))

    @grades.command("explain")
    @click.argument("code")
    @click.option("--period", required=True, help=PERIOD_HELP)
    @with_app
    def grades_explain(app: Flask, code: str, period: str) -> None:
        """Why a partner got its grade: each metric, its weight, its contribution, what moved."""
        from alliance.services import grading

        with hub_state(app).unit_of_work() as uow:
            view = grading.partner_grade(uow.session, code=code, period=period)
        for text in explanation_lines(view):
            click.echo(text)

    @grades.command("override")
    @click.argument("code")
    @click.option("--period", required=True, help=PERIOD_HELP)
    @click.option("--grade", type=click.Choice(GRADES), required=True)
    @click.option("--reason", required=True, help="Why; recorded in the audit log.")
    @with_app
    def grades_override(app: Flask, code: str, period: str, grade: str, reason: str) -> None:
        """Set a partner's grade for a period by hand; the computed grade stays visible."""
        from alliance.services import grading

        with hub_state(app).unit_of_work() as uow:
            view = grading.override(uow.session, code=code, period=period, grade=grade, reason=reason,
                                    now=datetime.now(timezone.utc), actor=cli_actor())
            uow.commit()
        click.echo(f"{code} {period}: grade {view['grade']} (computed {view['computed_grade'] or 'not graded'})")

    @grades.command("export")
    @click.option("--period", required=True, help=PERIOD_HELP)
    @click.option("--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
                  help="Write the CSV here; default: standard output.")
    @with_app
    def grades_export(app: Flask, period: str, output: Path | None) -> None:
        """The period's grades and metrics as CSV."""
        from alliance.services import grading

        with hub_state(app).unit_of_work() as uow:
            document = grading.export_csv(uow.session, period=period)
        if output is None:
            click.echo(document, nl=False)
        else:
            output.write_text(document, newline="")
            click.echo(f"wrote {output}")

    @grades.command("alerts")
    @click.option("--all", "show_all", is_flag=True, help="Acknowledged alerts too.")
    @with_app
    def grades_alerts(app: Flask, show_all: bool) -> None:
        """Grade alerts for partner managers (unacknowledged ones by default)."""
        from alliance.services import grading

        with hub_state(app).unit_of_work() as uow:
            alerts, total = grading.list_alerts(uow.session, acknowledged=None if show_all else False,
                                                limit=grading.MAX_PAGE_SIZE)
        if not alerts:
            click.echo("no alerts")
        for alert in alerts:
            state = f"acknowledged by {alert['acknowledged_by']}" if alert["acknowledged_by"] else "open"
            click.echo(f"#{alert['id']} {alert['period']} {alert['partner']} {alert['kind']}: {alert['detail']} "
                       f"[{state}]")
        if total > len(alerts):
            click.echo(f"... and {total - len(alerts)} more")

    @grades.command("acknowledge")
    @click.argument("alert_id", type=click.IntRange(1))
    @with_app
    def grades_acknowledge(app: Flask, alert_id: int) -> None:
        """Mark a grade alert as handled."""
        from alliance.services import grading

        with hub_state(app).unit_of_work() as uow:
            alert = grading.acknowledge_alert(uow.session, alert_id=alert_id, now=datetime.now(timezone.utc),
                                              actor=cli_actor())
            uow.commit()
        click.echo(f"alert #{alert['id']} acknowledged by {alert['acknowledged_by']}")


def _all_pages(session: Session, period: str, grade: str | None, first: list[dict[str, object]],
               total: int) -> list[dict[str, object]]:
    from alliance.services import grading

    views = list(first)
    while len(views) < total:
        views += grading.period_grades(session, period=period, grade=grade, limit=grading.MAX_PAGE_SIZE,
                                       offset=len(views))[1]
    return views


def _line(view: Mapping[str, Any], *, with_period: bool = False) -> str:
    head = f"{view['period']} " if with_period else ""
    if view["status"] == "not_graded" and not view["overridden"]:
        return f"{head}{view['partner']:<20} not graded: {view['not_graded_reason']}"
    grade = view["grade"]
    if view["overridden"]:
        grade = f"{grade} (override; computed {view['computed_grade'] or 'not graded'})"
    score = f" score {view['score']}" if view["score"] is not None else ""
    trend = ""
    changes = view["changes"]
    if changes.get("previous_period") and changes.get("previous_grade"):
        trend = f", was {changes['previous_grade']}"
    return f"{head}{view['partner']:<20} {grade}{score}{trend}"


def explanation_lines(view: Mapping[str, Any]) -> list[str]:
    """A grade's explanation as text lines (the CLI's ``explain``; the console shows the same table)."""
    lines = [_line(view, with_period=True)]
    if view["status"] == "graded":
        lines.append(f"{'metric':<40} {'value':>14} {'weight':>7} {'share %':>8} {'percentile':>10} {'points':>8}")
        for item in view["breakdown"]:
            if item["contribution"] is None and not item["weight"]:
                continue
            lines.append(f"{item['label']:<40} {_text(item['value']):>14} {item['weight']:>7} "
                         f"{_text(item['effective_weight']):>8} {_text(item['percentile']):>10} "
                         f"{_text(item['contribution']):>8}")
    changes = view["changes"]
    if changes.get("previous_period"):
        lines.append(f"since the previous period: grade {changes['previous_grade'] or 'not graded'} -> "
                     f"{view['computed_grade'] or 'not graded'}, score change {_text(changes['score_change'])}")
        for move in changes["metrics"][:3]:
            if move["contribution_change"] not in (None, "0.0000"):
                lines.append(f"  {move['metric']}: {_text(move['previous_value'])} -> {_text(move['value'])} "
                             f"({_text(move['contribution_change'])} points)")
    else:
        lines.append("no grade for the previous period")
    for override in view["overrides"]:
        lines.append(f"override to {override['grade']} by {override['actor']} at {override['at']}: "
                     f"{override['reason']}")
    for alert in view["alerts"]:
        lines.append(f"alert ({alert['kind']}): {alert['detail']}")
    return lines


def _text(value: object) -> str:
    return "-" if value is None else str(value)
