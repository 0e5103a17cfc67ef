"""The probe's termination message (contracts.md section 3), parsed defensively.

The message comes from a container: it may be empty, cut off, from another probe version,
or the log tail (terminationMessagePolicy FallbackToLogsOnError: a probe that failed before
writing its result, e.g. exit 2 on bad arguments). Anything that is not a well-formed v1
result raises ``ResultError`` with the reason (``log_lines`` then picks the probe's own
lines out of a log tail); a malformed *path* only makes that target's path unknown, it does
not discard the run.
"""

from __future__ import annotations

import ipaddress
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from traceroute_probe.contract import (
    LOG_PREFIX,
    MAX_TARGETS,
    RESULT_FORMAT_VERSION,
    MessageKey,
    TargetKey,
)

from .pathchange import Path

# The kubelet caps termination messages at 4096 bytes; anything far larger is not ours.
MAX_MESSAGE_BYTES = 64 * 1024
MAX_TTL = 255
MAX_LOG_LINES = 8


class ResultError(ValueError):
    """The termination message is not a probe result the operator can use."""


# Named *Report*, not *Result*: the probe's RunResult/TargetResult are what it measured
# (hops, flows, timings); these are the compact summary the operator reads back.
@dataclass(frozen=True)
class TargetReport:
    name: str
    address: str | None
    reached: bool
    hops: int  # the longest flow's hop count
    path: Path | None  # None: unknown (dropped to fit the message, or malformed)
    loss_ratio: float | None
    rtt_ms: float | None
    error: str | None
    hops_min: int | None = None  # the shortest flow's (unequal ECMP); None: equal to hops


@dataclass(frozen=True)
class RunReport:
    timestamp: float
    duration: float
    exit_code: int
    errors: tuple[str, ...]
    targets: tuple[TargetReport, ...]
    truncated: bool

    def target(self, name: str) -> TargetReport | None:
        for target in self.targets:
            if target.name == name:
                return target
        return None


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    result = float(value)
    return result if math.isfinite(result) else None


def _address(value: Any) -> str | None:
    if not isinstance(value, str) or len(value) > 64:
        return None
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        return None


def _path(raw: Any, hops: int) -> Path | None:
    if not isinstance(raw, list) or len(raw) > MAX_TTL:
        return None
    path: list[frozenset[str]] = []
    for hop in raw:
        if not isinstance(hop, list) or len(hop) > 64:
            return None
        addresses = [_address(a) for a in hop]
        if any(a is None for a in addresses):
            return None
        path.append(frozenset(a for a in addresses if a is not None))
    # p covers TTL 1..h; a length mismatch means we cannot trust which TTL is which
    if len(path) != hops:
        return None
    return tuple(path)


def _text(value: Any, limit: int = 1024) -> str | None:
    if not isinstance(value, str) or not value:
        return None
    return value[:limit]


def _target(raw: Any, index: int) -> TargetReport:
    if not isinstance(raw, Mapping):
        raise ResultError(f"{MessageKey.TARGETS}[{index}]: not an object")
    name = raw.get(TargetKey.NAME)
    if not isinstance(name, str) or not name or len(name) > 253:
        raise ResultError(f"{MessageKey.TARGETS}[{index}].{TargetKey.NAME}: missing target name")
    reached = raw.get(TargetKey.REACHED)
    if not isinstance(reached, bool):
        raise ResultError(f"{MessageKey.TARGETS}[{index}].{TargetKey.REACHED}: not a boolean")
    hops = raw.get(TargetKey.HOPS)
    if isinstance(hops, bool) or not isinstance(hops, int) or not 0 <= hops <= MAX_TTL:
        raise ResultError(f"{MessageKey.TARGETS}[{index}].{TargetKey.HOPS}: not a hop count")
    hops_min = raw.get(TargetKey.HOPS_MIN)
    if isinstance(hops_min, bool) or not isinstance(hops_min, int) or not 0 < hops_min < hops:
        hops_min = None  # absent (every flow the same length) or not a shorter hop count
    loss = _number(raw.get(TargetKey.LOSS))
    if loss is not None and not 0.0 <= loss <= 1.0:
        loss = None
    rtt = _number(raw.get(TargetKey.RTT))
    if rtt is not None and rtt < 0:
        rtt = None
    return TargetReport(
        name=name,
        address=_address(raw.get(TargetKey.ADDRESS)),
        reached=reached,
        hops=hops,
        path=_path(raw.get(TargetKey.PATH), hops),
        loss_ratio=loss,
        rtt_ms=rtt,
        error=_text(raw.get(TargetKey.ERROR)),
        hops_min=hops_min,
    )


def parse_termination_message(message: str | bytes | None) -> RunReport:
    """A RunReport from the termination message, or ResultError saying why not."""
    if message is None:
        raise ResultError("no termination message")
    if isinstance(message, bytes):
        if len(message) > MAX_MESSAGE_BYTES:
            raise ResultError(f"termination message too large ({len(message)} bytes)")
        message = message.decode("utf-8", errors="replace")
    if len(message) > MAX_MESSAGE_BYTES:
        raise ResultError(f"termination message too large ({len(message)} characters)")
    text = message.strip()
    if not text:
        raise ResultError("empty termination message")
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ResultError(f"termination message is not JSON ({exc.msg} at {exc.pos})") from None
    if not isinstance(doc, Mapping):
        raise ResultError("termination message is not a JSON object")
    if (version := doc.get(MessageKey.VERSION)) != RESULT_FORMAT_VERSION:
        raise ResultError(
            f"unsupported result version {version!r} (expected {RESULT_FORMAT_VERSION})"
        )
    timestamp = _number(doc.get(MessageKey.TIMESTAMP))
    if timestamp is None or timestamp <= 0:
        raise ResultError(f"{MessageKey.TIMESTAMP}: missing run timestamp")
    code = doc.get(MessageKey.EXIT_CODE)
    if isinstance(code, bool) or not isinstance(code, int):
        raise ResultError(f"{MessageKey.EXIT_CODE}: missing exit code")
    raw_targets = doc.get(MessageKey.TARGETS)
    if not isinstance(raw_targets, list) or len(raw_targets) > MAX_TARGETS:
        raise ResultError(f"{MessageKey.TARGETS}: missing target list")
    raw_errors = doc.get(MessageKey.ERRORS) or []
    errors = (
        tuple(e for e in (_text(x) for x in raw_errors[:70]) if e)
        if isinstance(raw_errors, list)
        else ()
    )
    return RunReport(
        timestamp=timestamp,
        duration=max(0.0, _number(doc.get(MessageKey.DURATION)) or 0.0),
        exit_code=code,
        errors=errors,
        targets=tuple(_target(t, i) for i, t in enumerate(raw_targets)),
        truncated=doc.get(MessageKey.TRUNCATED) is True,
    )


def log_lines(message: str | bytes | None) -> tuple[str, ...]:
    """The probe's own lines in a log tail (the kubelet's fallback message), oldest first.

    Empty for a message that looks like a result (a JSON object, even a broken one). A tail
    without a line of the probe (e.g. an interpreter that crashed before the probe ran)
    yields its last non-empty line, which says why.
    """
    if isinstance(message, bytes):
        message = message.decode("utf-8", errors="replace")
    if not message or len(message) > MAX_MESSAGE_BYTES:
        return ()
    text = message.strip()
    if not text or text.startswith("{"):
        return ()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    own = [line for line in lines if line.startswith(LOG_PREFIX)]
    return tuple(line[:1024] for line in (own[-MAX_LOG_LINES:] or lines[-1:]))
