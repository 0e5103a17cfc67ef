"""The options of one wave and the targets it traces (parsed by the CLI, typed here)."""

from __future__ import annotations

from dataclasses import dataclass

from .result import TargetError

PROTOCOLS = ("icmp", "udp", "tcp")
DEFAULT_PORTS = {"icmp": 0, "udp": 33434, "tcp": 443}


@dataclass(frozen=True)
class WaveOptions:
    protocol: str = "icmp"
    port: int | None = None
    max_hops: int = 30
    flows: int = 3
    probes_per_hop: int = 3
    timeout: float = 10.0  # hard deadline for the whole run, seconds
    pps: float = 200.0  # packets per second for the whole run (token bucket)
    socket_mode: str = "auto"  # auto | raw | dgram
    initial_window: int = 10  # TTLs released before any reply
    gap_limit: int = 5  # silent TTLs after the last responder before giving up
    settle_factor: float = 1.5
    settle_floor: float = 0.010
    no_later_factor: float = 3.0
    no_later_floor: float = 0.3
    nothing_seen_wait: float = 1.0
    ratelimit_burst: int = 6
    ratelimit_interval: float = 1.0  # net.ipv4.icmp_ratelimit (Linux default 1000 ms)
    destination_probes: int = 10  # dedicated end-to-end probes per target (loss)
    destination_interval: float = 0.002  # seconds between a target's end-to-end probes

    @property
    def dst_port(self) -> int:
        return self.port if self.port is not None else DEFAULT_PORTS[self.protocol]


@dataclass
class TargetSpec:
    name: str
    address: str | None
    family: int | None
    seed: str
    error: TargetError | None = None
    expected_hops: int | None = None
