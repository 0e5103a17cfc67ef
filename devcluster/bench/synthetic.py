"""A synthetic probe run of the size issue 13 measured: the input of the series budget
test and of the scale benchmark, so both count the same exposition.

One target 15 hops away, 3 Paris flows, 3 probes per hop and flow, every probe answered;
the flows take three different routers at TTLs 5-7 (ECMP), as on many real paths.
"""

from __future__ import annotations

from traceroute_probe.result import FlowHop, Hop, RunResult, TargetResult

HOPS = 15
FLOWS = 3
PROBES_PER_HOP = 3
ECMP_TTLS = range(5, 8)
TARGET = "10.99.15.1"


def _responder(ttl: int, flow: int, hops: int) -> str:
    if ttl == hops:
        return TARGET
    return f"10.99.{ttl}.{flow + 1 if ttl in ECMP_TTLS else 1}"


def synthetic_target(
    name: str = TARGET,
    *,
    hops: int = HOPS,
    flows: int = FLOWS,
    probes_per_hop: int = PROBES_PER_HOP,
) -> TargetResult:
    target = TargetResult(target=name, address=TARGET, family=4, protocol="icmp")
    for ttl in range(1, hops + 1):
        flow_hops = []
        for flow in range(flows):
            rtts = [ttl * 1.5 + flow * 0.1 + probe * 0.05 for probe in range(probes_per_hop)]
            responder = _responder(ttl, flow, hops)
            flow_hops.append(
                FlowHop(
                    flow=flow,
                    ttl=ttl,
                    sent=probes_per_hop,
                    rtts_ms=rtts,
                    responders={responder: probes_per_hop},
                )
            )
        target.hops.append(Hop(ttl=ttl, flows=flow_hops))
    target.reached = True
    target.hop_count = hops
    target.expected_hops = hops
    target.destination_sent = flows * probes_per_hop
    target.destination_rtts_ms = list(target.hops[-1].rtts_ms())
    target.duration_seconds = 2.5
    return target


def synthetic_run(started: float = 1_764_000_000.0) -> RunResult:
    """The run the probe would report for one such target."""
    return RunResult(started=started, duration_seconds=2.6, targets=[synthetic_target()])
