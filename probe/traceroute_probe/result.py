"""The result of a run: complete also when nothing answers; JSON and termination message."""

from __future__ import annotations

import errno
import ipaddress
import json
import math
import os
import zlib
from dataclasses import dataclass, field
from typing import Any

from .contract import (
    ERROR_TEXT_LIMIT,
    MAX_ERRORS,
    RESULT_FORMAT_VERSION,
    TERMINATION_MESSAGE_LIMIT,
    MessageKey,
    TargetKey,
)


def rtt_stats_ms(rtts_ms: list[float]) -> tuple[float, float, float, float] | None:
    """(min, avg, max, population stddev) of RTTs in ms, or None without samples."""
    if not rtts_ms:
        return None
    mean = _fmean(rtts_ms)
    # Two-pass population stddev: the statistics module would cost start-up (it imports
    # fractions, decimal and random) for a few samples.
    stddev = math.sqrt(math.fsum((x - mean) ** 2 for x in rtts_ms) / len(rtts_ms))
    return min(rtts_ms), mean, max(rtts_ms), stddev


def _fmean(values: list[float]) -> float:
    """statistics.fmean's definition."""
    return math.fsum(values) / len(values)


@dataclass
class FlowHop:
    """What one flow saw at one TTL."""

    flow: int
    ttl: int
    sent: int = 0
    rtts_ms: list[float] = field(default_factory=list)
    responders: dict[str, int] = field(default_factory=dict)  # address -> replies

    @property
    def replies(self) -> int:
        return len(self.rtts_ms)

    @property
    def loss_ratio(self) -> float:
        return 0.0 if self.sent == 0 else max(0.0, 1.0 - self.replies / self.sent)

    @property
    def main_responder(self) -> str | None:
        if not self.responders:
            return None
        return sorted(self.responders.items(), key=lambda item: (-item[1], item[0]))[0][0]


@dataclass
class Hop:
    ttl: int
    flows: list[FlowHop]
    rate_limited: bool = False

    @property
    def addresses(self) -> list[str]:
        return sort_addresses({a for f in self.flows for a in f.responders})

    @property
    def sent(self) -> int:
        return sum(f.sent for f in self.flows)

    @property
    def replies(self) -> int:
        return sum(f.replies for f in self.flows)

    @property
    def loss_ratio(self) -> float:
        sent = self.sent
        return 0.0 if sent == 0 else max(0.0, 1.0 - self.replies / sent)

    def rtts_ms(self) -> list[float]:
        return [r for f in self.flows for r in f.rtts_ms]


@dataclass
class TargetError:
    kind: str  # resolve | permission | socket | send | internal
    message: str


def errno_text(err: OSError) -> str:
    """``ENETUNREACH: Network is unreachable``: the errno's name and the kernel's message."""
    if not isinstance(err.errno, int):
        return str(err)
    name = errno.errorcode.get(err.errno, f"errno {err.errno}")
    return f"{name}: {os.strerror(err.errno)}"


@dataclass
class TargetResult:
    target: str
    address: str | None
    family: int | None
    protocol: str
    reached: bool = False
    hop_count: int = 0  # the longest flow's: hops_max
    hops: list[Hop] = field(default_factory=list)  # ttl 1..hop_count
    hops_min: int = 0  # the shortest flow's hop count (unequal ECMP branches)
    flow_hop_counts: list[int | None] = field(default_factory=list)  # per flow
    flows_served: int = 0  # flows measured at every TTL within the deadline
    destination_sent: int = 0  # dedicated end-to-end probes settled
    destination_rtts_ms: list[float] = field(default_factory=list)
    duration_seconds: float = 0.0
    error: TargetError | None = None
    expected_hops: int | None = None
    flow_ids: list[dict[str, int]] = field(default_factory=list)
    # Replies naming this target that failed a check, by reason (events.RejectReason).
    rejected_replies: dict[str, int] = field(default_factory=dict)

    @property
    def hops_max(self) -> int:
        return self.hop_count

    @property
    def warnings(self) -> list[str]:
        """What the result could not cover (not an error: what it shows is measured)."""
        flows = len(self.flow_ids)
        if self.error is None and flows and self.flows_served < flows:
            return [
                f"{self.flows_served} of {flows} flows served within the deadline: the "
                "routers' ICMP rate limits (burst 6, then 1/s per source) allow no more; "
                "the other flows' unmeasured TTLs are neither reply nor loss"
            ]
        return []

    @property
    def destination_loss_ratio(self) -> float:
        if not self.reached or self.destination_sent == 0:
            return 1.0
        return max(0.0, 1.0 - len(self.destination_rtts_ms) / self.destination_sent)

    @property
    def destination_rtt_ms(self) -> float | None:
        if not self.destination_rtts_ms:
            return None
        return _fmean(self.destination_rtts_ms)

    def path(self) -> list[list[str]]:
        """Per TTL 1..hop_count the sorted responders across flows ([] = silent)."""
        return [hop.addresses for hop in self.hops]

    @property
    def path_fingerprint(self) -> int:
        """uint32 identifying reachability, hop count and per-TTL responder sets."""
        canonical = "|".join(",".join(addrs) or "*" for addrs in self.path())
        return zlib.crc32(f"{int(self.reached)}:{self.hop_count}:{canonical}".encode())

    def to_json(self) -> dict[str, Any]:
        hops = []
        for hop in self.hops:
            rtts = hop.rtts_ms()
            hops.append(
                {
                    "ttl": hop.ttl,
                    "addresses": hop.addresses,
                    "sent": hop.sent,
                    "replies": hop.replies,
                    "loss_ratio": round(hop.loss_ratio, 4),
                    "rtt_ms": _stats_json(rtts),
                    "rate_limited": hop.rate_limited,
                    "flows": [
                        {
                            "flow": f.flow,
                            "addresses": sort_addresses(f.responders),
                            "sent": f.sent,
                            "replies": f.replies,
                            "loss_ratio": round(f.loss_ratio, 4),
                            "rtts_ms": [round(r, 3) for r in f.rtts_ms],
                        }
                        for f in hop.flows
                    ],
                }
            )
        doc: dict[str, Any] = {
            "target": self.target,
            "address": self.address,
            "family": self.family,
            "protocol": self.protocol,
            "reached": self.reached,
            "hop_count": self.hop_count,
            "hops_min": self.hops_min,
            "hops_max": self.hops_max,
            "flows_served": self.flows_served,
            "destination_probes": self.destination_sent,
            "duration_seconds": round(self.duration_seconds, 4),
            "destination_loss_ratio": round(self.destination_loss_ratio, 4),
            "destination_rtt_ms": _round(self.destination_rtt_ms),
            "path_fingerprint": self.path_fingerprint,
            "flows": self._flows_json(),
            "rejected_replies": dict(self.rejected_replies),
            "hops": hops,
        }
        if self.warnings:
            doc["warnings"] = self.warnings
        if self.expected_hops is not None:
            doc["expected_hops"] = self.expected_hops
        if self.error is not None:
            doc["error"] = {"kind": self.error.kind, "message": self.error.message}
        return doc

    def _flows_json(self) -> list[dict[str, int | None]]:
        """Each flow's identifiers and its own hop count (None: nothing answered)."""
        counts = [*self.flow_hop_counts, *[None] * (len(self.flow_ids) - len(self.flow_hop_counts))]
        return [{**ids, "hops": count} for ids, count in zip(self.flow_ids, counts, strict=False)]


@dataclass
class RunResult:
    started: float  # epoch seconds
    duration_seconds: float
    targets: list[TargetResult]
    errors: list[str] = field(default_factory=list)
    exit_code: int = 0


def sort_addresses(addresses: Any) -> list[str]:
    """Numeric order (IPv4 before IPv6), so "10.0.2.1" < "10.0.10.1"."""

    def key(text: str) -> tuple[int, int, str]:
        try:
            ip = ipaddress.ip_address(text)
        except ValueError:
            return (9, 0, text)
        return (ip.version, int(ip), text)

    return sorted(set(addresses), key=key)


def _round(value: float | None, digits: int = 3) -> float | None:
    if value is None or math.isnan(value):
        return None
    return round(value, digits)


def _stats_json(rtts: list[float]) -> dict[str, float] | None:
    stats = rtt_stats_ms(rtts)
    if stats is None:
        return None
    return {
        name: round(value, 3)
        for name, value in zip(("min", "avg", "max", "stddev"), stats, strict=True)
    }


def _short(text: str) -> str:
    return text if len(text) <= ERROR_TEXT_LIMIT else text[: ERROR_TEXT_LIMIT - 3] + "..."


def termination_message(run: RunResult) -> str:
    """The compact result (docs/contracts.md section 3), degraded to stay within
    ``TERMINATION_MESSAGE_LIMIT`` bytes.

    Degradation order: drop ``rtt``; null ``p`` from the last target backwards; drop the
    per-target ``e`` texts; finally drop targets from the end. ``trunc`` says it happened.
    """
    entries: list[dict[str, Any]] = []
    for t in run.targets:
        entry: dict[str, Any] = {
            TargetKey.NAME: t.target,
            TargetKey.ADDRESS: t.address,
            TargetKey.REACHED: t.reached,
            TargetKey.HOPS: t.hop_count,
            TargetKey.PATH: t.path(),
            TargetKey.LOSS: round(t.destination_loss_ratio, 4),
            TargetKey.RTT: _round(t.destination_rtt_ms),
        }
        if t.hops_min and t.hops_min != t.hop_count:
            entry[TargetKey.HOPS_MIN] = t.hops_min
        if t.error is not None:
            entry[TargetKey.ERROR] = _short(f"{t.error.kind}: {t.error.message}")
        rejected = sum(t.rejected_replies.values())
        if rejected:
            entry[TargetKey.REJECTED] = rejected
        entries.append(entry)
    doc: dict[str, Any] = {
        MessageKey.VERSION: RESULT_FORMAT_VERSION,
        MessageKey.TIMESTAMP: round(run.started, 3),
        MessageKey.DURATION: round(run.duration_seconds, 3),
        MessageKey.EXIT_CODE: run.exit_code,
        MessageKey.ERRORS: [_short(e) for e in run.errors][:MAX_ERRORS],
        MessageKey.TARGETS: entries,
        MessageKey.TRUNCATED: False,
    }

    def encoded() -> str:
        return json.dumps(doc, separators=(",", ":"), ensure_ascii=True)

    text = encoded()
    if len(text) <= TERMINATION_MESSAGE_LIMIT:
        return text
    for entry in entries:
        entry.pop(TargetKey.RTT, None)
    doc[MessageKey.TRUNCATED] = True
    text = encoded()
    for entry in reversed(entries):
        if len(text) <= TERMINATION_MESSAGE_LIMIT:
            return text
        entry[TargetKey.PATH] = None
        text = encoded()
    for entry in entries:
        if len(text) <= TERMINATION_MESSAGE_LIMIT:
            return text
        entry.pop(TargetKey.ERROR, None)
        text = encoded()
    while len(text) > TERMINATION_MESSAGE_LIMIT and entries:
        entries.pop()
        text = encoded()
    if len(text) > TERMINATION_MESSAGE_LIMIT:
        doc[MessageKey.ERRORS] = []
        text = encoded()
    return text
