"""Spread probes over their period: the ``H`` schedule form and the sub-minute start delay.

A schedule field written ``H`` (as in Jenkins) stands for one value picked by a hash of the
probe's identity, so that a thousand ``H/5 * * * *`` probes do not all start in the same
minute. The identity is ``namespace/name``, not the uid: re-creating a probe keeps its
minute, and the result is the same in the operator and in ``render``. Forms, per field:

- ``H``: one value of the field's range (``H * * * *`` runs once an hour at minute m);
- ``H/n``: every n starting at an offset below n (``H/5`` -> ``3-59/5``);
- ``H(a-b)``: one value in a..b; ``H(a-b)/n``: every n in a..b from an offset below n.

Day-of-month values stay in 1..28 so that every month has them. Each field hashes with its
own position, so ``H H * * *`` does not tie the hour to the minute. The result is a plain
Kubernetes cron expression; a schedule without ``H`` is returned unchanged.

The start delay spreads the runs of one minute over its seconds: the probe sleeps this long
before its first packet (contract flag ``--start-delay-seconds``). Only probes with an ``H``
schedule get one: an explicit schedule keeps its exact start.
"""

from __future__ import annotations

import hashlib
import re

from .schedule import ScheduleError, min_interval_seconds

MAX_START_DELAY_SECONDS = 50
# (lowest, highest) value an H may take per field: minute hour day-of-month month weekday
_H_RANGES = ((0, 59), (0, 23), (1, 28), (1, 12), (0, 6))
_H_ITEM = re.compile(r"^H(?:\((\d+)-(\d+)\))?(?:/(\d+))?$")


def identity(namespace: str, name: str) -> str:
    """What the spread is derived from: stable across re-creation of the probe."""
    return f"{namespace}/{name}"


def _hash(identity_text: str, salt: str) -> int:
    digest = hashlib.sha256(f"{salt}\0{identity_text}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


def _split_zone(schedule: str) -> tuple[str, str]:
    text = " ".join(schedule.split())
    if text.startswith(("CRON_TZ=", "TZ=")):
        zone, _, text = text.partition(" ")
        return zone + " ", text
    return "", text


def has_hash(schedule: str) -> bool:
    """Some field item starts with ``H`` (no month or weekday name does)."""
    _, text = _split_zone(schedule)
    return any(item.startswith("H") for field in text.split(" ") for item in field.split(","))


def resolve_schedule(schedule: str, identity_text: str) -> str:
    """``schedule`` with every ``H`` replaced by the probe's own value (pure)."""
    prefix, text = _split_zone(schedule)
    if not has_hash(text):
        return prefix + text
    fields = text.split(" ")
    if len(fields) != 5:
        raise ScheduleError(f"schedule {schedule!r}: H needs five fields, got {len(fields)}")
    resolved = [
        ",".join(_resolve_item(item, index, identity_text, schedule) for item in field.split(","))
        for index, field in enumerate(fields)
    ]
    return prefix + " ".join(resolved)


def _resolve_item(item: str, index: int, identity_text: str, schedule: str) -> str:
    if not item.startswith("H"):
        return item
    match = _H_ITEM.match(item)
    if match is None:
        raise ScheduleError(f"schedule {schedule!r}: {item!r} is not H, H/n, H(a-b) or H(a-b)/n")
    low, high = _H_RANGES[index]
    if match.group(1) is not None:
        first, last = int(match.group(1)), int(match.group(2))
        if not low <= first <= last <= high:
            raise ScheduleError(f"schedule {schedule!r}: {item!r} out of range {low}-{high}")
        low, high = first, last
    value = _hash(identity_text, f"field{index}:{item}")
    if match.group(3) is None:
        return str(low + value % (high - low + 1))
    step = int(match.group(3))
    if step == 0:
        raise ScheduleError(f"schedule {schedule!r}: bad step in {item!r}")
    offset = value % min(step, high - low + 1)
    return f"{low + offset}-{high}/{step}"


def start_delay_seconds(
    schedule: str,
    identity_text: str,
    run_timeout_seconds: int,
    max_delay: int = MAX_START_DELAY_SECONDS,
) -> int:
    """Seconds the probe waits before it starts: 0 without ``H``, else 0..max_delay (at
    most 50) from the hash.

    Bounded so that the delayed run still ends well before the next one starts: at most
    half of what the shortest gap of the schedule leaves after the run's own deadline.
    """
    if not has_hash(schedule):
        return 0
    gap = min_interval_seconds(resolve_schedule(schedule, identity_text))
    room = int(max(0.0, gap - run_timeout_seconds) // 2)
    bound = min(max_delay, MAX_START_DELAY_SECONDS, room)
    return _hash(identity_text, "start-delay") % (bound + 1)
