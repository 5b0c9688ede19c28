"""Settlement cycles: when a partner's books close, in the partner's own time zone.

A cycle is the half-open interval ``[starts_at, ends_at)`` of UTC instants: an event
exactly at the cut-off belongs to the next cycle, so consecutive cycles tile time
with no gap and no overlap (the end of one is the start of the next).

Rules, in the order they apply:

1. A cycle ends at the cut-off, a wall-clock time in the partner's IANA zone, on the
   cycle's last day: every day (daily), the day before ``week_starts_on`` (weekly; 0
   is Monday, so by default the last day is Sunday), or the month's last day
   (monthly, 28 to 31 days).
2. A cut-off of 00:00 means the midnight that *ends* the last day (24:00), so a 00:00
   cut-off gives calendar days, weeks and months. Any other cut-off falls on the last
   day itself: with 18:00, a weekly cycle runs from Sunday 18:00 to Sunday 18:00.
3. Cycles are measured in real time, not wall-clock time: across the spring-forward
   night a daily cycle lasts 23 hours, across the fall-back night 25 hours.
4. A cut-off that falls in a spring-forward gap (02:30 on the night Europe/Paris skips
   from 02:00 to 03:00) resolves to the first valid instant after the gap, the moment
   of the transition itself (03:00 summer time). Every event before that instant
   happened before the wall clock read 02:30, and every event after it after, so this
   is the only reading that keeps the cut-off's meaning. (Python's ``fold=0`` would
   instead give 03:30, shifting the cut-off by the length of the gap.)
5. A cut-off that occurs twice on the fall-back night resolves to its first
   occurrence (``fold=0``), whatever ``fold`` the given time carries.
"""

from __future__ import annotations

from calendar import monthrange
from dataclasses import dataclass, replace
from datetime import date, datetime, time, timedelta, timezone
from enum import StrEnum
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from alliance.domain.errors import ValidationFailed

# Ten years of daily cycles: far more than any catch-up after downtime, and a bound on
# the work one call can be asked to do.
MAX_CYCLES_PER_CALL = 3660
MICROSECOND = timedelta(microseconds=1)
MIDNIGHT = time(0, 0)


class Frequency(StrEnum):
    """How often a partner's cycle closes."""

    DAILY = "daily"
    WEEKLY = "weekly"
    MONTHLY = "monthly"


@dataclass(frozen=True, slots=True)
class Cycle:
    """One settlement period of a partner: the UTC instants ``starts_at <= t < ends_at``."""

    partner_code: str
    frequency: Frequency
    starts_at: datetime
    ends_at: datetime

    def __post_init__(self) -> None:
        if self.starts_at.tzinfo is None or self.ends_at.tzinfo is None:
            raise ValidationFailed("cycle bounds must be timezone-aware", fields={"starts_at": ["naive datetime"]})
        if not self.starts_at < self.ends_at:
            raise ValidationFailed("a cycle must end after it starts", fields={"ends_at": ["not after starts_at"]})

    def contains(self, moment: datetime) -> bool:
        """Whether ``moment`` falls in this cycle (the start is in, the end is not)."""
        return self.starts_at <= moment < self.ends_at


@dataclass(frozen=True, slots=True)
class _Schedule:
    """A partner's validated cycle settings."""

    partner_code: str
    frequency: Frequency
    zone: ZoneInfo
    cutoff_local: time
    week_starts_on: int


def cycle_containing(
    moment: datetime,
    *,
    partner_code: str,
    frequency: Frequency | str,
    time_zone: str,
    cutoff_local: time,
    week_starts_on: int = 0,
) -> Cycle:
    """The cycle of this partner schedule that ``moment`` falls in."""
    schedule = _schedule(partner_code, frequency, time_zone, cutoff_local, week_starts_on)
    return _containing(_utc(moment, "moment"), schedule)


def cycles_between(
    start: datetime,
    end: datetime,
    *,
    partner_code: str,
    frequency: Frequency | str,
    time_zone: str,
    cutoff_local: time,
    week_starts_on: int = 0,
) -> list[Cycle]:
    """Every cycle that overlaps ``[start, end)``, oldest first."""
    schedule = _schedule(partner_code, frequency, time_zone, cutoff_local, week_starts_on)
    start_utc, end_utc = _utc(start, "start"), _utc(end, "end")
    if end_utc < start_utc:
        raise ValidationFailed("the range must not end before it starts", fields={"end": ["before start"]})
    cycles: list[Cycle] = []
    if end_utc == start_utc:
        return cycles
    cycle = _containing(start_utc, schedule)
    while cycle.starts_at < end_utc:
        if len(cycles) == MAX_CYCLES_PER_CALL:
            raise ValidationFailed(
                f"the range holds more than {MAX_CYCLES_PER_CALL} cycles", fields={"end": ["range too long"]}
            )
        cycles.append(cycle)
        cycle = _containing(cycle.ends_at, schedule)
    return cycles


def due_cycles(
    last_closed_end: datetime | None,
    now: datetime,
    first_activity_at: datetime | None,
    *,
    partner_code: str,
    frequency: Frequency | str,
    time_zone: str,
    cutoff_local: time,
    week_starts_on: int = 0,
    limit: int = MAX_CYCLES_PER_CALL,
) -> list[Cycle]:
    """Every cycle that has ended by ``now`` and is not closed yet, oldest first.

    Closing resumes where the last closed cycle ended, or else with the cycle holding
    the partner's first activity. If ``last_closed_end`` is not a boundary of the
    current schedule (the partner changed its cut-off), the first due cycle runs from
    it to the next boundary, so no instant is ever settled twice or skipped. At most
    ``limit`` cycles are returned; the next call picks up where these end.
    """
    schedule = _schedule(partner_code, frequency, time_zone, cutoff_local, week_starts_on)
    now_utc = _utc(now, "now")
    if not isinstance(limit, int) or isinstance(limit, bool) or not 0 < limit <= MAX_CYCLES_PER_CALL:
        raise ValidationFailed(f"limit must be between 1 and {MAX_CYCLES_PER_CALL}", fields={"limit": ["out of range"]})
    if last_closed_end is not None:
        resume_at = _utc(last_closed_end, "last_closed_end")
        cycle = replace(_containing(resume_at, schedule), starts_at=resume_at)
    elif first_activity_at is not None:
        cycle = _containing(_utc(first_activity_at, "first_activity_at"), schedule)
    else:
        return []
    due: list[Cycle] = []
    while cycle.ends_at <= now_utc and len(due) < limit:
        due.append(cycle)
        cycle = _containing(cycle.ends_at, schedule)
    return due


def _containing(moment_utc: datetime, schedule: _Schedule) -> Cycle:
    """The cycle holding an aware UTC instant."""
    local_day = moment_utc.astimezone(schedule.zone).date()
    # Start two days early: the cycle that ends on the moment's local date may already
    # be over (a cut-off earlier that day), and a 00:00 cut-off ends a day late.
    last_day = _last_day_on_or_after(local_day - timedelta(days=2), schedule)
    ends_at = _boundary(last_day, schedule)
    while ends_at <= moment_utc:
        last_day = _following_last_day(last_day, schedule)
        ends_at = _boundary(last_day, schedule)
    starts_at = _boundary(_preceding_last_day(last_day, schedule), schedule)
    assert starts_at <= moment_utc < ends_at, "a cycle must contain the moment it was computed for"
    return Cycle(schedule.partner_code, schedule.frequency, starts_at, ends_at)


def _last_day_on_or_after(day: date, schedule: _Schedule) -> date:
    """The first last-day-of-a-cycle on or after ``day``."""
    if schedule.frequency is Frequency.DAILY:
        return day
    if schedule.frequency is Frequency.WEEKLY:
        last_weekday = (schedule.week_starts_on + 6) % 7
        return day + timedelta(days=(last_weekday - day.weekday()) % 7)
    return day.replace(day=monthrange(day.year, day.month)[1])


def _following_last_day(last_day: date, schedule: _Schedule) -> date:
    """The last day of the cycle after the one ending on ``last_day``."""
    if schedule.frequency is Frequency.DAILY:
        return last_day + timedelta(days=1)
    if schedule.frequency is Frequency.WEEKLY:
        return last_day + timedelta(days=7)
    return _last_day_on_or_after(last_day + timedelta(days=1), schedule)


def _preceding_last_day(last_day: date, schedule: _Schedule) -> date:
    """The last day of the cycle before the one ending on ``last_day``."""
    if schedule.frequency is Frequency.DAILY:
        return last_day - timedelta(days=1)
    if schedule.frequency is Frequency.WEEKLY:
        return last_day - timedelta(days=7)
    return last_day.replace(day=1) - timedelta(days=1)


def _boundary(last_day: date, schedule: _Schedule) -> datetime:
    """The UTC instant of the cut-off that ends the cycle whose last day is ``last_day``."""
    if schedule.cutoff_local == MIDNIGHT:
        wall_clock = datetime.combine(last_day + timedelta(days=1), MIDNIGHT)
    else:
        wall_clock = datetime.combine(last_day, schedule.cutoff_local)
    return _resolve_wall_clock(wall_clock, schedule.zone)


def _resolve_wall_clock(wall_clock: datetime, zone: ZoneInfo) -> datetime:
    """The UTC instant a naive local time names: first occurrence, or the end of a gap."""
    first_reading = wall_clock.replace(tzinfo=zone, fold=0).astimezone(timezone.utc)
    if first_reading.astimezone(zone).replace(tzinfo=None) == wall_clock:
        return first_reading
    # The wall-clock time does not exist. With fold=1 it is read with the offset after
    # the transition, which lands before the transition; fold=0 lands after it. The
    # transition lies between the two, and is found by bisection to the microsecond.
    before = wall_clock.replace(tzinfo=zone, fold=1).astimezone(timezone.utc)
    after = first_reading
    offset_after = after.astimezone(zone).utcoffset()
    while after - before > MICROSECOND:
        middle = before + ((after - before) // MICROSECOND // 2) * MICROSECOND
        if middle.astimezone(zone).utcoffset() == offset_after:
            after = middle
        else:
            before = middle
    return after


def _schedule(
    partner_code: str, frequency: Frequency | str, time_zone: str, cutoff_local: time, week_starts_on: int
) -> _Schedule:
    """Check a partner's cycle settings and resolve its time zone."""
    if not isinstance(partner_code, str) or not partner_code:
        raise ValidationFailed("partner_code must be a non-empty string", fields={"partner_code": ["missing"]})
    try:
        resolved_frequency = Frequency(frequency)
    except ValueError:
        raise ValidationFailed(
            f"frequency must be one of {', '.join(Frequency)}", fields={"frequency": ["unknown frequency"]}
        ) from None
    if not isinstance(cutoff_local, time) or cutoff_local.tzinfo is not None:
        raise ValidationFailed(
            "cutoff_local must be a naive wall-clock time", fields={"cutoff_local": ["not a naive time"]}
        )
    if not isinstance(week_starts_on, int) or isinstance(week_starts_on, bool) or not 0 <= week_starts_on <= 6:
        raise ValidationFailed(
            "week_starts_on must be 0 (Monday) to 6 (Sunday)", fields={"week_starts_on": ["out of range"]}
        )
    zone = zone_named(time_zone)
    return _Schedule(partner_code, resolved_frequency, zone, cutoff_local.replace(fold=0), week_starts_on)


def zone_named(time_zone: str) -> ZoneInfo:
    """The IANA zone named ``time_zone``, or ``ValidationFailed``."""
    if not isinstance(time_zone, str) or not time_zone:
        raise ValidationFailed("time_zone must be an IANA zone name", fields={"time_zone": ["missing"]})
    try:
        return ZoneInfo(time_zone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValidationFailed(f"unknown time zone {time_zone!r}", fields={"time_zone": ["unknown zone"]}) from None


def _utc(moment: datetime, field: str) -> datetime:
    """``moment`` in UTC; naive datetimes are refused because their instant is unknown."""
    if not isinstance(moment, datetime) or moment.tzinfo is None or moment.utcoffset() is None:
        raise ValidationFailed(
            f"{field} must be a timezone-aware datetime", fields={field: ["naive or not a datetime"]}
        )
    return moment.astimezone(timezone.utc)
