"""Settlement cycles: cut-offs in partners' zones, across DST, tiling time exactly."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from alliance.domain.errors import ValidationFailed
from settlement.cycles import Cycle, Frequency, cycle_containing, cycles_between, due_cycles

HOUR = timedelta(hours=1)
KOLKATA = "Asia/Kolkata"
DAY = timedelta(days=1)


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=timezone.utc)


def schedule(time_zone: str, frequency: str = "daily", cutoff: time = time(0), week_starts_on: int = 0) -> dict:
    return {
        "partner_code": "cafe",
        "frequency": frequency,
        "time_zone": time_zone,
        "cutoff_local": cutoff,
        "week_starts_on": week_starts_on,
    }


# Daily cycles with a 00:00 cut-off are the local calendar day. Offsets:
# Paris CET +1 / CEST +2 (spring 29 Mar 2026, fall 25 Oct 2026);
# New York EST −5 / EDT −4 (spring 8 Mar 2026, fall 1 Nov 2026);
# Sydney AEST +10 / AEDT +11 (DST ends 5 Apr 2026, starts 4 Oct 2026: southern seasons);
# Kolkata IST +5:30 all year.
@pytest.mark.parametrize(
    ("time_zone", "moment", "starts_at", "ends_at", "hours"),
    [
        # 29 Mar 00:00 CET = 28 Mar 23:00Z; 30 Mar 00:00 CEST = 29 Mar 22:00Z: 23 h.
        ("Europe/Paris", utc(2026, 3, 29, 12), utc(2026, 3, 28, 23), utc(2026, 3, 29, 22), 23),
        # 25 Oct 00:00 CEST = 24 Oct 22:00Z; 26 Oct 00:00 CET = 25 Oct 23:00Z: 25 h.
        ("Europe/Paris", utc(2026, 10, 25, 12), utc(2026, 10, 24, 22), utc(2026, 10, 25, 23), 25),
        # 8 Mar 00:00 EST = 05:00Z; 9 Mar 00:00 EDT = 04:00Z: 23 h.
        ("America/New_York", utc(2026, 3, 8, 12), utc(2026, 3, 8, 5), utc(2026, 3, 9, 4), 23),
        # 1 Nov 00:00 EDT = 04:00Z; 2 Nov 00:00 EST = 05:00Z: 25 h.
        ("America/New_York", utc(2026, 11, 1, 12), utc(2026, 11, 1, 4), utc(2026, 11, 2, 5), 25),
        # 5 Apr 00:00 AEDT = 4 Apr 13:00Z; 6 Apr 00:00 AEST = 5 Apr 14:00Z: 25 h (autumn there).
        ("Australia/Sydney", utc(2026, 4, 5, 0), utc(2026, 4, 4, 13), utc(2026, 4, 5, 14), 25),
        # 4 Oct 00:00 AEST = 3 Oct 14:00Z; 5 Oct 00:00 AEDT = 4 Oct 13:00Z: 23 h (spring there).
        ("Australia/Sydney", utc(2026, 10, 4, 3), utc(2026, 10, 3, 14), utc(2026, 10, 4, 13), 23),
        # No DST: 29 Mar 00:00 IST = 28 Mar 18:30Z, always 24 h.
        ("Asia/Kolkata", utc(2026, 3, 29, 12), utc(2026, 3, 28, 18, 30), utc(2026, 3, 29, 18, 30), 24),
    ],
    ids=["paris-spring", "paris-fall", "new-york-spring", "new-york-fall", "sydney-dst-ends",
         "sydney-dst-starts", "kolkata"],
)
def test_a_daily_cycle_lasts_23_or_25_hours_across_dst_transitions(time_zone, moment, starts_at, ends_at, hours):
    cycle = cycle_containing(moment, **schedule(time_zone))
    assert cycle == Cycle("cafe", Frequency.DAILY, starts_at, ends_at)
    assert cycle.ends_at - cycle.starts_at == hours * HOUR


@pytest.mark.parametrize(
    ("time_zone", "cutoff", "moment", "starts_at", "ends_at"),
    [
        # 02:30 on 29 Mar does not exist in Paris (02:00 CET jumps to 03:00 CEST at 01:00Z):
        # the cut-off is the end of the gap, 01:00Z. Day before: 02:30 CET = 01:30Z. 23.5 h.
        ("Europe/Paris", time(2, 30), utc(2026, 3, 29, 0), utc(2026, 3, 28, 1, 30), utc(2026, 3, 29, 1)),
        # The next cycle starts there and ends 30 Mar 02:30 CEST = 00:30Z: also 23.5 h.
        ("Europe/Paris", time(2, 30), utc(2026, 3, 29, 1), utc(2026, 3, 29, 1), utc(2026, 3, 30, 0, 30)),
        # 02:30 occurs twice on 25 Oct; the first is 02:30 CEST = 00:30Z. Before: 24 h.
        ("Europe/Paris", time(2, 30), utc(2026, 10, 24, 12), utc(2026, 10, 24, 0, 30), utc(2026, 10, 25, 0, 30)),
        # After: to 26 Oct 02:30 CET = 01:30Z, 25 h. The second 02:30 (01:30Z) is not a boundary.
        ("Europe/Paris", time(2, 30), utc(2026, 10, 25, 1, 30), utc(2026, 10, 25, 0, 30), utc(2026, 10, 26, 1, 30)),
        # New York skips 02:00-03:00 EST on 8 Mar at 07:00Z; 7 Mar 02:30 EST = 07:30Z.
        ("America/New_York", time(2, 30), utc(2026, 3, 8, 0), utc(2026, 3, 7, 7, 30), utc(2026, 3, 8, 7)),
        # 01:30 happens twice on 1 Nov; first is 01:30 EDT = 05:30Z; next day 01:30 EST = 06:30Z.
        ("America/New_York", time(1, 30), utc(2026, 11, 1, 6), utc(2026, 11, 1, 5, 30), utc(2026, 11, 2, 6, 30)),
        # Sydney repeats 02:00-03:00 on 5 Apr; first 02:30 is AEDT (+11) = 4 Apr 15:30Z.
        ("Australia/Sydney", time(2, 30), utc(2026, 4, 4, 12), utc(2026, 4, 3, 15, 30), utc(2026, 4, 4, 15, 30)),
        # Sydney skips 02:00-03:00 AEST on 4 Oct at 3 Oct 16:00Z; 3 Oct 02:30 AEST = 2 Oct 16:30Z.
        ("Australia/Sydney", time(2, 30), utc(2026, 10, 3, 12), utc(2026, 10, 2, 16, 30), utc(2026, 10, 3, 16)),
    ],
    ids=["paris-gap-before", "paris-gap-after", "paris-repeat-before", "paris-repeat-after",
         "new-york-gap", "new-york-repeat", "sydney-repeat", "sydney-gap"],
)
def test_a_cutoff_in_a_gap_or_a_repeated_hour_resolves_deterministically(time_zone, cutoff, moment, starts_at, ends_at):
    cycle = cycle_containing(moment, **schedule(time_zone, cutoff=cutoff))
    assert (cycle.starts_at, cycle.ends_at) == (starts_at, ends_at)


@pytest.mark.parametrize(
    ("time_zone", "frequency", "cutoff", "week_starts_on", "moment", "starts_at", "ends_at"),
    [
        # Weeks from Monday: Mon 23 Mar 00:00 CET = 22 Mar 23:00Z to Mon 30 Mar 00:00 CEST =
        # 29 Mar 22:00Z, 7 × 24 − 1 = 167 h.
        ("Europe/Paris", "weekly", time(0), 0, utc(2026, 3, 25, 12), utc(2026, 3, 22, 23), utc(2026, 3, 29, 22)),
        # Weeks from Sunday end on Saturday at 18:00 IST = 12:30Z.
        (KOLKATA, "weekly", time(18), 6, utc(2026, 3, 25, 12), utc(2026, 3, 21, 12, 30), utc(2026, 3, 28, 12, 30)),
        # Half an hour after that cut-off is the next week.
        (KOLKATA, "weekly", time(18), 6, utc(2026, 3, 28, 13), utc(2026, 3, 28, 12, 30), utc(2026, 4, 4, 12, 30)),
        # Exactly at the cut-off is the next week too: the end of a cycle is not in it.
        (KOLKATA, "weekly", time(18), 6, utc(2026, 3, 28, 12, 30), utc(2026, 3, 28, 12, 30), utc(2026, 4, 4, 12, 30)),
        # Leap February: 1 Feb 00:00 IST = 31 Jan 18:30Z to 1 Mar 00:00 IST = 29 Feb 18:30Z, 29 days.
        ("Asia/Kolkata", "monthly", time(0), 0, utc(2028, 2, 15), utc(2028, 1, 31, 18, 30), utc(2028, 2, 29, 18, 30)),
        # Common February: 28 days.
        ("Asia/Kolkata", "monthly", time(0), 0, utc(2027, 2, 15), utc(2027, 1, 31, 18, 30), utc(2027, 2, 28, 18, 30)),
        # An 18:00 cut-off ends February on the 29th at 18:00 CET = 17:00Z...
        ("Europe/Paris", "monthly", time(18), 0, utc(2028, 2, 29, 16), utc(2028, 1, 31, 17), utc(2028, 2, 29, 17)),
        # ...so 29 Feb 18:30 local is already in March's cycle, which ends 31 Mar 18:00 CEST = 16:00Z.
        ("Europe/Paris", "monthly", time(18), 0, utc(2028, 2, 29, 17, 30), utc(2028, 2, 29, 17), utc(2028, 3, 31, 16)),
        # March in New York: 1 Mar 00:00 EST = 05:00Z to 1 Apr 00:00 EDT = 04:00Z, 31 days less an hour.
        ("America/New_York", "monthly", time(0), 0, utc(2026, 3, 20), utc(2026, 3, 1, 5), utc(2026, 4, 1, 4)),
        # October in Sydney (DST starts): 30 Sep 14:00Z to 31 Oct 13:00Z, 31 days less an hour.
        ("Australia/Sydney", "monthly", time(0), 0, utc(2026, 10, 15), utc(2026, 9, 30, 14), utc(2026, 10, 31, 13)),
        # A 30-day month.
        (KOLKATA, "monthly", time(0), 0, utc(2026, 4, 30, 18, 29), utc(2026, 3, 31, 18, 30), utc(2026, 4, 30, 18, 30)),
    ],
    ids=["weekly-paris-spring", "weekly-sunday-start", "weekly-after-cutoff", "weekly-at-cutoff",
         "monthly-leap-february", "monthly-common-february", "monthly-cutoff-on-29th", "monthly-after-29th-cutoff",
         "monthly-new-york-march", "monthly-sydney-october", "monthly-30-days"],
)
def test_weekly_and_monthly_cycles_end_on_their_last_day(
    time_zone, frequency, cutoff, week_starts_on, moment, starts_at, ends_at
):
    cycle = cycle_containing(moment, **schedule(time_zone, frequency, cutoff, week_starts_on))
    assert (cycle.starts_at, cycle.ends_at) == (starts_at, ends_at)
    assert cycle.frequency == Frequency(frequency)


@pytest.mark.parametrize("time_zone", ["Europe/Paris", "America/New_York", "Australia/Sydney", "Asia/Kolkata"])
@pytest.mark.parametrize(
    ("frequency", "cutoff"),
    [("daily", time(0)), ("daily", time(2, 30)), ("weekly", time(18)), ("monthly", time(0)), ("monthly", time(1, 30))],
)
def test_consecutive_cycles_tile_a_year_exactly(time_zone, frequency, cutoff):
    start, end = utc(2026, 1, 1), utc(2027, 1, 1)
    cycles = cycles_between(start, end, **schedule(time_zone, frequency, cutoff))
    assert cycles[0].starts_at <= start < cycles[0].ends_at
    assert cycles[-1].starts_at < end <= cycles[-1].ends_at
    # Consecutive cycles: cycles[1:] is one shorter.
    assert all(earlier.ends_at == later.starts_at for earlier, later in zip(cycles, cycles[1:], strict=False))
    zone = ZoneInfo(time_zone)
    for cycle in cycles:
        local_end = cycle.ends_at.astimezone(zone)
        # Every cut-off lands on the wall clock asked for, except inside a spring-forward
        # gap, where it lands on the first instant after the gap (a whole hour there).
        assert local_end.time() == cutoff or (local_end.minute, local_end.second) == (0, 0)
    if frequency == "daily":
        half_hour = timedelta(minutes=30)
        durations = {cycle.ends_at - cycle.starts_at for cycle in cycles}
        assert durations <= {23 * HOUR, 23 * HOUR + half_hour, 24 * HOUR, 25 * HOUR}


def test_cycles_between_lists_every_overlapping_cycle_oldest_first():
    cycles = cycles_between(utc(2026, 3, 28, 12), utc(2026, 3, 30, 12), **schedule("Europe/Paris"))
    # 28 Mar, 29 Mar (23 h) and 30 Mar local days: three cycles touch the range.
    assert [(cycle.starts_at, cycle.ends_at) for cycle in cycles] == [
        (utc(2026, 3, 27, 23), utc(2026, 3, 28, 23)),
        (utc(2026, 3, 28, 23), utc(2026, 3, 29, 22)),
        (utc(2026, 3, 29, 22), utc(2026, 3, 30, 22)),
    ]
    assert cycles_between(utc(2026, 3, 28), utc(2026, 3, 28), **schedule("Europe/Paris")) == []


def test_cycle_contains_its_start_but_not_its_end():
    cycle = Cycle("cafe", Frequency.DAILY, utc(2026, 3, 28, 23), utc(2026, 3, 29, 22))
    assert cycle.contains(utc(2026, 3, 28, 23))
    assert not cycle.contains(utc(2026, 3, 29, 22))
    assert cycle_containing(utc(2026, 3, 29, 22), **schedule("Europe/Paris")).starts_at == utc(2026, 3, 29, 22)


@pytest.mark.parametrize(
    ("last_closed_end", "now", "first_activity_at", "expected_bounds"),
    [
        # Down from 28 Mar to 31 Mar 10:00Z: 28, 29 (23 h) and 30 Mar are due, oldest first;
        # 31 Mar has not ended.
        (utc(2026, 3, 27, 23), utc(2026, 3, 31, 10), None,
         [(utc(2026, 3, 27, 23), utc(2026, 3, 28, 23)), (utc(2026, 3, 28, 23), utc(2026, 3, 29, 22)),
          (utc(2026, 3, 29, 22), utc(2026, 3, 30, 22))]),
        # Nothing closed yet: start with the cycle of the first activity.
        (None, utc(2026, 3, 31, 10), utc(2026, 3, 30, 10), [(utc(2026, 3, 29, 22), utc(2026, 3, 30, 22))]),
        # A cycle ending exactly now is due.
        (utc(2026, 3, 29, 22), utc(2026, 3, 30, 22), None, [(utc(2026, 3, 29, 22), utc(2026, 3, 30, 22))]),
        # Nothing has ended since the last close.
        (utc(2026, 3, 30, 22), utc(2026, 3, 31, 10), None, []),
        # No activity and nothing closed: nothing to settle.
        (None, utc(2026, 3, 31, 10), None, []),
        # The last close was at an old 18:00 cut-off (17:00Z): a bridge cycle to the next midnight.
        (utc(2026, 3, 27, 17), utc(2026, 3, 28, 23), None,
         [(utc(2026, 3, 27, 17), utc(2026, 3, 27, 23)), (utc(2026, 3, 27, 23), utc(2026, 3, 28, 23))]),
    ],
    ids=["after-downtime", "first-activity", "ends-exactly-now", "nothing-due", "no-activity", "schedule-changed"],
)
def test_due_cycles_lists_every_overdue_cycle_oldest_first(last_closed_end, now, first_activity_at, expected_bounds):
    cycles = due_cycles(last_closed_end, now, first_activity_at, **schedule("Europe/Paris"))
    assert [(cycle.starts_at, cycle.ends_at) for cycle in cycles] == expected_bounds


def test_due_cycles_hands_out_at_most_the_limit_and_resumes_where_it_stopped():
    arguments = schedule("Asia/Kolkata")
    first = due_cycles(utc(2026, 1, 1, 18, 30), utc(2026, 1, 11, 18, 30), None, limit=4, **arguments)
    assert len(first) == 4
    rest = due_cycles(first[-1].ends_at, utc(2026, 1, 11, 18, 30), None, **arguments)
    assert len(rest) == 6
    assert rest[0].starts_at == first[-1].ends_at


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"time_zone": "Mars/Olympus_Mons"}, "time_zone"),
        ({"time_zone": ""}, "time_zone"),
        ({"frequency": "hourly"}, "frequency"),
        ({"cutoff_local": time(0, tzinfo=timezone.utc)}, "cutoff_local"),
        ({"cutoff_local": "00:00"}, "cutoff_local"),
        ({"week_starts_on": 7}, "week_starts_on"),
        ({"week_starts_on": True}, "week_starts_on"),
        ({"partner_code": ""}, "partner_code"),
    ],
)
def test_cycle_settings_are_checked(overrides, field):
    with pytest.raises(ValidationFailed) as caught:
        cycle_containing(utc(2026, 3, 1), **{**schedule("Europe/Paris"), **overrides})
    assert field in caught.value.fields


def test_moments_must_be_timezone_aware_and_ranges_forward():
    with pytest.raises(ValidationFailed, match="timezone-aware"):
        cycle_containing(datetime(2026, 3, 1), **schedule("Europe/Paris"))
    with pytest.raises(ValidationFailed, match="before it starts"):
        cycles_between(utc(2026, 3, 2), utc(2026, 3, 1), **schedule("Europe/Paris"))
    with pytest.raises(ValidationFailed, match="more than"):
        cycles_between(utc(2000, 1, 1), utc(2020, 1, 1), **schedule("Europe/Paris"))
    with pytest.raises(ValidationFailed, match="limit"):
        due_cycles(None, utc(2026, 3, 2), utc(2026, 3, 1), limit=0, **schedule("Europe/Paris"))


def test_a_cycle_must_be_aware_and_end_after_it_starts():
    with pytest.raises(ValidationFailed):
        Cycle("cafe", Frequency.DAILY, datetime(2026, 3, 1), datetime(2026, 3, 2))
    with pytest.raises(ValidationFailed):
        Cycle("cafe", Frequency.DAILY, utc(2026, 3, 2), utc(2026, 3, 2))


def test_a_midnight_cutoff_gives_calendar_periods():
    cycle = cycle_containing(utc(2026, 6, 15, 12), **schedule("Asia/Kolkata", "monthly"))
    zone = ZoneInfo("Asia/Kolkata")
    assert cycle.starts_at.astimezone(zone).date() == date(2026, 6, 1)
    assert cycle.ends_at.astimezone(zone).date() == date(2026, 7, 1)
    assert cycle.ends_at - cycle.starts_at == 30 * DAY
