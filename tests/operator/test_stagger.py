"""The H schedule form and the start delay: deterministic, spread, and plain cron after."""

from __future__ import annotations

import collections

import pytest
from traceroute_operator.schedule import ScheduleError, max_interval_seconds, min_interval_seconds
from traceroute_operator.stagger import (
    MAX_START_DELAY_SECONDS,
    has_hash,
    identity,
    resolve_schedule,
    start_delay_seconds,
)

NAMES = [identity(f"ns-{i % 7}", f"probe-{i}") for i in range(3000)]


def _minute_offset(resolved: str) -> int:
    minute = resolved.split(" ", maxsplit=1)[0]
    start, _, rest = minute.partition("-")
    assert rest == "59/5", resolved
    return int(start)


def test_h_every_5_becomes_a_plain_offset_step_with_the_same_gaps() -> None:
    resolved = resolve_schedule("H/5 * * * *", identity("net", "edge"))
    assert resolved.endswith(" * * * *")
    assert 0 <= _minute_offset(resolved) <= 4
    assert max_interval_seconds(resolved) == min_interval_seconds(resolved) == 300


def test_same_identity_same_schedule_and_not_the_uid() -> None:
    # a pure function of namespace/name: re-creating the probe (new uid) keeps its minute
    first = resolve_schedule("H H * * *", identity("net", "edge"))
    assert first == resolve_schedule("H H * * *", identity("net", "edge"))
    assert len({resolve_schedule("H H * * *", n) for n in NAMES[:50]}) > 40


def test_h_every_5_spreads_near_uniformly_over_the_five_minutes() -> None:
    counts = collections.Counter(_minute_offset(resolve_schedule("H/5 * * * *", n)) for n in NAMES)
    assert set(counts) == {0, 1, 2, 3, 4}
    expected = len(NAMES) / 5
    # chi-square with 4 degrees of freedom: 18.5 is p = 0.001
    chi2 = sum((c - expected) ** 2 / expected for c in counts.values())
    assert chi2 < 18.5, counts


def test_h_hourly_spreads_over_all_sixty_minutes() -> None:
    minutes = collections.Counter(int(resolve_schedule("H * * * *", n).split()[0]) for n in NAMES)
    assert set(minutes) == set(range(60))
    assert max(minutes.values()) < 3 * len(NAMES) / 60


def test_fields_hash_independently() -> None:
    pairs = {tuple(resolve_schedule("H H * * *", n).split()[:2]) for n in NAMES[:500]}
    # minute and hour are not tied: far more pairs than the 60 a shared hash would give
    assert len(pairs) > 300


@pytest.mark.parametrize(
    ("schedule", "pattern"),
    [
        ("H(0-29)/10 * * * *", ("-29/10", range(0, 10))),
        ("0 H(1-5) * * *", ("", range(1, 6))),
        ("H * H * *", ("", range(0, 60))),
    ],
)
def test_ranges_bound_the_value(schedule: str, pattern: tuple[str, range]) -> None:
    suffix, allowed = pattern
    index = 1 if schedule.startswith("0 ") else 0
    for name in NAMES[:200]:
        field = resolve_schedule(schedule, name).split()[index]
        assert field.endswith(suffix)
        assert int(field.split("-")[0]) in allowed


def test_day_of_month_stays_in_every_month() -> None:
    days = {int(resolve_schedule("0 0 H * *", n).split()[2]) for n in NAMES}
    assert days == set(range(1, 29))


@pytest.mark.parametrize(
    "schedule",
    ["*/5 * * * *", "0 9 * * THU", "CRON_TZ=Asia/Ho_Chi_Minh 0 * * * *", "@hourly"],
)
def test_schedules_without_h_are_unchanged(schedule: str) -> None:
    assert not has_hash(schedule)
    assert resolve_schedule(schedule, identity("a", "b")) == schedule
    assert start_delay_seconds(schedule, identity("a", "b"), 10) == 0


def test_time_zone_prefix_is_kept() -> None:
    resolved = resolve_schedule("CRON_TZ=Europe/Berlin H 3 * * *", identity("a", "b"))
    assert resolved.startswith("CRON_TZ=Europe/Berlin ")
    assert max_interval_seconds(resolved) == 86400


@pytest.mark.parametrize(
    ("schedule", "message"),
    [
        ("H(5-70) * * * *", "out of range"),
        ("H/0 * * * *", "bad step"),
        ("Hx * * * *", "is not H"),
        ("H * * *", "five fields"),
    ],
)
def test_bad_h_forms_are_refused(schedule: str, message: str) -> None:
    with pytest.raises(ScheduleError, match=message):
        resolve_schedule(schedule, identity("a", "b"))


def test_start_delay_is_stable_spread_and_bounded_by_the_gap() -> None:
    delays = [start_delay_seconds("H/5 * * * *", n, 10) for n in NAMES]
    assert delays == [start_delay_seconds("H/5 * * * *", n, 10) for n in NAMES]
    assert set(delays) == set(range(MAX_START_DELAY_SECONDS + 1))
    # a run every minute with a 10 s deadline: at most (60 - 10) / 2 s of delay
    minutely = {start_delay_seconds("H/1 * * * *", n, 10) for n in NAMES}
    assert max(minutely) == 25
    # the run's deadline fills the whole minute: no room for a delay
    assert {start_delay_seconds("H/1 * * * *", n, 60) for n in NAMES[:50]} == {0}
