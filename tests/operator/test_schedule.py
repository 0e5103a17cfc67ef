"""Longest gap between runs of a CronJob schedule (drives the stale alert)."""

from __future__ import annotations

import pytest
from traceroute_operator.schedule import ScheduleError, max_interval_seconds, min_interval_seconds

MIN = 60
HOUR = 3600
DAY = 86400


@pytest.mark.parametrize(
    ("schedule", "expected"),
    [
        ("* * * * *", MIN),
        ("*/5 * * * *", 5 * MIN),
        ("*/7 * * * *", 7 * MIN),  # 56 -> 0 of the next hour is only 4
        ("0,10 * * * *", 50 * MIN),
        ("15 */6 * * *", 6 * HOUR),
        ("0 9 * * 1-5", 3 * DAY),  # Friday 9:00 -> Monday 9:00
        ("0 9 * * MON-FRI", 3 * DAY),
        ("0 0 * jan,jul *", 184 * DAY - 30 * DAY),  # 31 Jan -> 1 Jul
        ("30 2 1 * *", 31 * DAY),
        ("0 0 29 2 *", (4 * 365 + 1) * DAY),
        # both day fields restricted: either matches (1st of month OR any Sunday)
        ("0 0 1 * 0", 7 * DAY),
        # as in robfig/cron: "*/1" is still a star (AND: the 1st only), "*/2" is a
        # restriction (OR: the 1st or Sun/Tue/Thu/Sat)
        ("0 0 1 * */1", 31 * DAY),
        ("0 0 1 * */2", 2 * DAY),
        ("5/20 * * * *", 20 * MIN),  # 5,25,45
        ("@hourly", HOUR),
        ("@daily", DAY),
        ("@weekly", 7 * DAY),
        ("@monthly", 31 * DAY),
        ("@yearly", 366 * DAY),
        ("@every 90s", 90),
        ("@every 1h30m", 90 * MIN),
        ("CRON_TZ=Europe/Berlin */10 * * * *", 10 * MIN),
        ("  */5   *  * * * ", 5 * MIN),
    ],
)
def test_longest_gap(schedule: str, expected: float) -> None:
    assert max_interval_seconds(schedule) == expected


@pytest.mark.parametrize(
    ("schedule", "message"),
    [
        ("", "empty"),
        ("* * * *", "5 fields"),
        ("61 * * * *", "out of range"),
        ("* * * * 7", "out of range"),
        ("*/0 * * * *", "bad step"),
        ("* * * foo *", "not a number"),
        ("0 0 30 2 *", "never fires"),
        ("@every soon", "duration"),
    ],
)
def test_bad_schedules_are_refused(schedule: str, message: str) -> None:
    with pytest.raises(ScheduleError, match=message):
        max_interval_seconds(schedule)


@pytest.mark.parametrize(
    ("schedule", "expected"),
    [
        ("* * * * *", MIN),
        ("*/7 * * * *", 4 * MIN),  # 56 -> 0 of the next hour
        ("0,10 * * * *", 10 * MIN),
        ("30 2 * * *", DAY),
        ("0 9 * * 1-5", DAY),
        ("0 23,1 * * *", 2 * HOUR),  # 23:00 -> 01:00 across midnight
        ("@every 90s", 90),
        ("@hourly", HOUR),
    ],
)
def test_shortest_gap(schedule: str, expected: float) -> None:
    assert min_interval_seconds(schedule) == expected
