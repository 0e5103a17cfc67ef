"""The longest (and shortest) gap between two runs of a Kubernetes CronJob schedule.

The stale alert must not fire between two normal runs, so it needs the longest
gap a schedule has (``0 9 * * 1-5`` runs every day but has a 72 h weekend gap),
not the shortest. Parsing follows the cron dialect of Kubernetes CronJobs
(robfig/cron ``ParseStandard``): five fields, names for months and weekdays,
``*``/``?``, ranges, steps, lists, the ``@hourly``-style descriptors and
``@every <duration>``; day-of-month and day-of-week are ORed when both are
restricted. The shortest gap bounds the probe's start delay (stagger.py).
"""

from __future__ import annotations

import datetime as dt
import functools
import itertools
import re
from dataclasses import dataclass

_DESCRIPTORS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_MONTHS = {
    m: i
    for i, m in enumerate(
        ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"], 1
    )
}
_WEEKDAYS = {d: i for i, d in enumerate(["sun", "mon", "tue", "wed", "thu", "fri", "sat"])}
_GO_DURATION_PART = re.compile(r"([0-9]*\.?[0-9]+)(ns|us|µs|ms|s|m|h)")
_GO_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}

# Eight years from a leap year hold two 29 Februaries: enough to see the longest
# gap of any schedule that fires at all.
_SCAN_START = dt.date(2024, 1, 1)
_SCAN_DAYS = 8 * 366


class ScheduleError(ValueError):
    """The schedule is not a cron expression Kubernetes would accept, or never fires."""


@dataclass(frozen=True)
class _Field:
    values: frozenset[int]
    star: bool  # "*" or "?" without a step: matters for the day-of-month/week rule


def max_interval_seconds(schedule: str) -> float:
    """The longest time between two consecutive runs of ``schedule``, in seconds."""
    return _gaps(schedule)[1]


def min_interval_seconds(schedule: str) -> float:
    """The shortest time between two consecutive runs of ``schedule``, in seconds."""
    return _gaps(schedule)[0]


# Many probes share a schedule and the operator rebuilds rules on every reconcile.
@functools.lru_cache(maxsize=4096)
def _gaps(schedule: str) -> tuple[float, float]:
    """(shortest, longest) time between two consecutive runs, in seconds."""
    text = " ".join(schedule.split())
    # A time zone changes when runs happen, not how far apart they are (DST aside).
    if text.startswith(("CRON_TZ=", "TZ=")):
        _, _, text = text.partition(" ")
    if not text:
        raise ScheduleError(f"empty schedule {schedule!r}")
    lowered = text.lower()
    if lowered.startswith("@every"):
        every = _parse_go_duration(text[len("@every") :].strip(), schedule)
        return every, every
    text = _DESCRIPTORS.get(lowered, text)
    parts = text.split(" ")
    if len(parts) != 5:
        raise ScheduleError(f"schedule {schedule!r}: expected 5 fields, got {len(parts)}")
    minute = _parse_field(parts[0], 0, 59, {}, schedule)
    hour = _parse_field(parts[1], 0, 23, {}, schedule)
    dom = _parse_field(parts[2], 1, 31, {}, schedule)
    month = _parse_field(parts[3], 1, 12, _MONTHS, schedule)
    dow = _parse_field(parts[4], 0, 6, _WEEKDAYS, schedule)

    times_of_day = sorted(h * 60 + m for h in hour.values for m in minute.values)
    longest_minutes = 0
    shortest_minutes = 1440
    if len(times_of_day) > 1:
        within_day = [b - a for a, b in itertools.pairwise(times_of_day)]
        longest_minutes, shortest_minutes = max(within_day), min(within_day)

    previous_day: int | None = None
    day_gap = 0
    shortest_day_gap = _SCAN_DAYS
    for offset in range(_SCAN_DAYS):
        day = _SCAN_START + dt.timedelta(days=offset)
        if not _day_matches(day, dom, month, dow):
            continue
        if previous_day is not None:
            day_gap = max(day_gap, offset - previous_day)
            shortest_day_gap = min(shortest_day_gap, offset - previous_day)
        previous_day = offset
    if previous_day is None:
        raise ScheduleError(f"schedule {schedule!r} never fires")
    if day_gap == 0:
        # Fires on one day only in eight years: call it eight years.
        day_gap = _SCAN_DAYS
    across_days = day_gap * 1440 - times_of_day[-1] + times_of_day[0]
    shortest_across = shortest_day_gap * 1440 - times_of_day[-1] + times_of_day[0]
    return (
        float(min(shortest_minutes, shortest_across) * 60),
        float(max(longest_minutes, across_days) * 60),
    )


def _day_matches(day: dt.date, dom: _Field, month: _Field, dow: _Field) -> bool:
    if day.month not in month.values:
        return False
    dom_ok = day.day in dom.values
    dow_ok = (day.isoweekday() % 7) in dow.values
    if dom.star or dow.star:
        return dom_ok and dow_ok
    return dom_ok or dow_ok


def _parse_field(text: str, low: int, high: int, names: dict[str, int], schedule: str) -> _Field:
    values: set[int] = set()
    star = False
    for item in text.split(","):
        range_part, slash, step_text = item.partition("/")
        step = 1
        if slash:
            if not step_text.isdigit() or int(step_text) == 0:
                raise ScheduleError(f"schedule {schedule!r}: bad step in {item!r}")
            step = int(step_text)
        if range_part in ("*", "?"):
            start, end = low, high
            star = star or step == 1
        else:
            first, dash, last = range_part.partition("-")
            start = _parse_value(first, names, schedule)
            # "N/step" means from N to the end of the range, as in robfig/cron.
            end = _parse_value(last, names, schedule) if dash else (high if slash else start)
        if not (low <= start <= end <= high):
            raise ScheduleError(f"schedule {schedule!r}: {item!r} out of range {low}-{high}")
        values.update(range(start, end + 1, step))
    return _Field(frozenset(values), star)


def _parse_value(text: str, names: dict[str, int], schedule: str) -> int:
    lowered = text.lower()
    if lowered in names:
        return names[lowered]
    if not text.isdigit():
        raise ScheduleError(f"schedule {schedule!r}: {text!r} is not a number")
    return int(text)


def _parse_go_duration(text: str, schedule: str) -> float:
    if not text or _GO_DURATION_PART.sub("", text) != "":
        raise ScheduleError(f"schedule {schedule!r}: {text!r} is not a duration like 5m or 1h30m")
    seconds = sum(float(n) * _GO_UNITS[u] for n, u in _GO_DURATION_PART.findall(text))
    # robfig/cron rounds @every below one second up to one second.
    return max(seconds, 1.0)
