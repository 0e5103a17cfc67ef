"""Stable Paris flows: the same seed gives the same flow identifiers on every run.

A flow is what a per-flow load balancer hashes: for ICMP the identifier and checksum
(held constant through the payload), for UDP/TCP the source and destination ports.
Deriving them from the probe's name keeps the per-flow paths comparable between runs.
"""

from __future__ import annotations

from dataclasses import dataclass

try:  # CPython's built-in BLAKE2, what hashlib.blake2b is: hashlib would load OpenSSL too
    from _blake2 import blake2b
except ImportError:  # pragma: no cover (other interpreters)
    from hashlib import blake2b

# Source ports are taken from a range that local ephemeral ports (32768-60999 by default)
# rarely reach in a probe pod, and away from the traceroute destination ports.
SOURCE_PORT_BASE = 20000
SOURCE_PORT_SPAN = 10000


@dataclass(frozen=True, slots=True)
class Flow:
    index: int
    icmp_id: int  # ICMP identifier (ping sockets bind to it)
    flow_sum: int  # constant one's complement sum of the echo request, 1..0xfffe
    src_port: int  # UDP/TCP source port
    dst_port: int  # UDP/TCP destination port

    def with_alternative(self, attempt: int) -> Flow:
        """Another identifier/port derived from this one, when the first is taken."""
        icmp_id, src_port = _ident_and_port(_digest(f"{self.icmp_id}:{self.src_port}:{attempt}", 0))
        return Flow(
            index=self.index,
            icmp_id=icmp_id,
            flow_sum=self.flow_sum,
            src_port=src_port,
            dst_port=self.dst_port,
        )


def _digest(seed: str, index: int) -> int:
    raw = blake2b(f"{seed}\x00{index}".encode(), digest_size=8).digest()
    return int.from_bytes(raw, "big")


def _ident_and_port(digest: int) -> tuple[int, int]:
    """ICMP identifier (1..0xfffe) and source port of a flow, from its digest."""
    return 1 + digest % 0xFFFE, SOURCE_PORT_BASE + (digest >> 16) % SOURCE_PORT_SPAN


def derive_flows(seed: str, count: int, dst_port: int) -> list[Flow]:
    """``count`` distinct flows from ``seed`` (deterministic across runs and hosts)."""
    flows: list[Flow] = []
    used_ids: set[int] = set()
    used_ports: set[int] = set()
    salt = 0
    while len(flows) < count:
        digest = _digest(seed, len(flows) + salt * 1000)
        icmp_id, src_port = _ident_and_port(digest)
        flow_sum = 1 + (digest >> 32) % 0xFFFE
        if icmp_id in used_ids or src_port in used_ports:
            salt += 1  # bounded in practice: collisions among a handful of flows are rare
            continue
        used_ids.add(icmp_id)
        used_ports.add(src_port)
        flows.append(Flow(len(flows), icmp_id, flow_sum, src_port, dst_port))
    return flows
