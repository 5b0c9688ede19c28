"""How the console writes what a person reads: times in the viewer's zone, numbers, points.

Every template writes a moment with ``moment`` (macros.html), a count with ``number``
and a points figure with ``points``, so that no page shows ``2026-03-01T00:00:00+00:00``,
``1234567`` or a bare figure whose unit the reader must guess. Money has its own filter
(``money``, in blueprint.py) because it needs the currency.

A moment is shown in the viewer's zone: the one they chose on the preferences page, or
else the alliance's (``ALLIANCE_ALLIANCE_TIME_ZONE``). The zone is named on the page
footer and in each moment's tooltip; the short name (CET, EST) beside the time tells
summer from winter time.
"""

from __future__ import annotations

from datetime import date, datetime, timezone
from zoneinfo import ZoneInfo

from flask import g

from alliance.extensions import hub_state


def viewer_zone_name() -> str:
    """The IANA name of the zone the signed-in user reads times in."""
    identity = g.get("staff")
    chosen = getattr(identity, "time_zone", None)
    return chosen or hub_state().settings.alliance_time_zone


def viewer_zone() -> ZoneInfo:
    """The zone the signed-in user reads times in."""
    return ZoneInfo(viewer_zone_name())


def local(value: datetime) -> datetime:
    """``value`` (naive means UTC, as the database keeps it) in the viewer's zone."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.astimezone(viewer_zone())


def local_text(value: datetime | None, *, with_seconds: bool = False) -> str:
    """``2026-12-06 14:05 CET``: a moment in the viewer's zone, with the zone's short name."""
    if value is None:
        return ""
    shown = local(value)
    return shown.strftime("%Y-%m-%d %H:%M:%S %Z" if with_seconds else "%Y-%m-%d %H:%M %Z")


def local_date(value: datetime | None) -> date | None:
    """The calendar day a moment falls on for the viewer."""
    return local(value).date() if value is not None else None


def number(value: int | None) -> str:
    """A whole number with thousands separators (``1,234,567``); nothing for None."""
    return "" if value is None else f"{value:,}"


def points(value: int | None) -> str:
    """A points figure with its unit: ``1,234 points``, ``1 point``, ``-50 points``."""
    if value is None:
        return ""
    return f"{value:,} point{'' if abs(value) == 1 else 's'}"


def day(value: date | datetime | None) -> str:
    """A calendar day as ``Mon 7 Dec 2026`` (a datetime is first taken to the viewer's zone)."""
    if value is None:
        return ""
    if isinstance(value, datetime):
        value = local(value).date()
    return f"{value:%a} {value.day} {value:%b %Y}"
