"""The paced wave: all TTLs and a few fixed Paris flows of every target at once.

The loop ties four parts: the clock, a selector over the transports' sockets, the pure
:mod:`schedule` (what to send when, what is settled, when the run is over) and the
:mod:`transports` (how a probe goes out and how a reply is matched to it).
"""

from __future__ import annotations

import selectors
import time
from collections import Counter
from collections.abc import Sequence
from typing import cast

from .events import Answer, Event, ProbeId, Rejected, RejectReason
from .flows import Flow, derive_flows
from .options import PROTOCOLS, TargetSpec, WaveOptions
from .pacing import NS
from .result import TargetError, TargetResult
from .schedule import Schedule, TargetPlan
from .sockets import SendError, SocketOpenError
from .transports import Destination, Endpoint, RunIdentity, Transport, TransportPool

_MAX_TURNS = 10_000_000  # bounded; the deadline ends the loop long before


class _Selector:
    """The transports' sockets, waited on together (a transports.Watcher)."""

    def __init__(self) -> None:
        self._selector = selectors.DefaultSelector()

    def watch(self, endpoint: Endpoint, *, writable: bool = False) -> None:
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if writable else 0)
        self._selector.register(endpoint, events, endpoint)

    def unwatch(self, endpoint: Endpoint) -> None:
        self._selector.unregister(endpoint)

    def ready(self, timeout: float) -> list[Endpoint]:
        return [cast(Endpoint, key.data) for key, _mask in self._selector.select(timeout)]

    def close(self) -> None:
        self._selector.close()


class _Wire:
    """The schedule's wire: every probe goes through its target's transport."""

    def __init__(self, carriers: Sequence[Transport | None]) -> None:
        self.carriers = carriers

    def _carrier(self, target: int) -> Transport:
        carrier = self.carriers[target]
        if carrier is None:  # the schedule never sends for a target it did not open
            raise RuntimeError(f"target {target} has no transport")
        return carrier

    def transmit(self, probe: ProbeId) -> int:
        return self._carrier(probe.target).send(probe)

    def release(self, probe: ProbeId) -> None:
        self._carrier(probe.target).release(probe)


def _open(
    specs: Sequence[TargetSpec], flows: list[list[Flow]], pool: TransportPool
) -> tuple[list[Transport | None], list[TargetPlan]]:
    """Open every target's transport; a target that cannot be opened gets its error."""
    carriers: list[Transport | None] = []
    plans: list[TargetPlan] = []
    for index, spec in enumerate(specs):
        address, family = spec.address or "", spec.family or 4
        error, carrier = spec.error, None
        if error is None:
            try:
                carrier = pool.open(Destination(index, address, family), flows[index])
            except SocketOpenError as err:
                error = TargetError(err.kind, str(err))
            except SendError as err:  # the route lookup while opening: no way there
                error = TargetError("send", str(err))
            except OSError as err:
                error = TargetError("socket", f"cannot open socket: {err.strerror or err}")
        carriers.append(carrier)
        one_in_flight = carrier is not None and carrier.one_in_flight
        plans.append(TargetPlan(address, family, len(flows[index]), error, one_in_flight))
    return carriers, plans


def _flow_id(protocol: str, flow: Flow) -> dict[str, int]:
    if protocol == "icmp":
        return {"flow": flow.index, "icmp_id": flow.icmp_id, "checksum": ~flow.flow_sum & 0xFFFF}
    return {"flow": flow.index, "src_port": flow.src_port, "dst_port": flow.dst_port}


def _result(
    schedule: Schedule,
    index: int,
    spec: TargetSpec,
    flows: list[Flow],
    *,
    start_ns: int,
    end_ns: int,
) -> TargetResult:
    state = schedule.targets[index]
    protocol = schedule.opts.protocol
    outcome = schedule.outcome(index)
    hops = outcome.hops
    if outcome.e2e_sent:
        destination_sent, destination_rtts = outcome.e2e_sent, outcome.e2e_rtts_ms
    else:
        # No end-to-end probe settled (none asked for, or no token for UDP's): the
        # trace's probes at the destination TTL stand in.
        destination = hops[-1] if outcome.reached and hops else None
        destination_sent = destination.sent if destination else 0
        destination_rtts = destination.rtts_ms() if destination else []
    finished = state.finished_ns or end_ns
    return TargetResult(
        target=spec.name,
        address=spec.address,
        family=spec.family,
        protocol=protocol,
        reached=outcome.reached,
        hop_count=outcome.hop_count,
        hops_min=outcome.hops_min,
        flow_hop_counts=outcome.flow_hops if spec.address else [],
        flows_served=outcome.flows_served if spec.address else 0,
        hops=hops,
        destination_sent=destination_sent,
        destination_rtts_ms=destination_rtts,
        duration_seconds=max(0.0, (finished - start_ns) / NS),
        error=state.error,
        expected_hops=spec.expected_hops,
        flow_ids=[_flow_id(protocol, f) for f in flows] if spec.address else [],
    )


def _run(
    specs: Sequence[TargetSpec],
    opts: WaveOptions,
    flows: list[list[Flow]],
    pool: TransportPool,
    selector: _Selector,
) -> list[TargetResult]:
    start_ns = time.time_ns()
    carriers, plans = _open(specs, flows, pool)
    schedule = Schedule(plans, opts, start_ns)
    wire = _Wire(carriers)
    rejected: list[Counter[str]] = [Counter() for _ in specs]
    failure: TargetError | None = None
    try:
        for _ in range(_MAX_TURNS):
            wake_ns = schedule.step(time.time_ns, wire)
            if wake_ns is None:
                break
            for endpoint in selector.ready(max(0.0, (wake_ns - time.time_ns()) / NS)):
                _feed(schedule, endpoint.read(), rejected)
    except Exception as err:  # a bug: the run ends, what it measured is still the result
        failure = TargetError("internal", f"{type(err).__name__}: {err}")
    end_ns = time.time_ns()
    results = [
        _result(schedule, i, spec, flows[i], start_ns=start_ns, end_ns=end_ns)
        for i, spec in enumerate(specs)
    ]
    for index, (result, counts) in enumerate(zip(results, rejected, strict=True)):
        result.rejected_replies = dict(sorted(counts.items()))
        if failure is not None and result.error is None and not schedule.targets[index].complete:
            result.error = failure
    return results


def _feed(schedule: Schedule, events: list[Event], rejected: list[Counter[str]]) -> None:
    """Hand the schedule what the transports matched; count what failed a check (an
    answer to a probe never sent included): it never changes a result."""
    for event in events:
        if isinstance(event, Rejected):
            rejected[event.target][event.reason.value] += 1
        elif isinstance(event, Answer) and not schedule.was_sent(event.probe):
            rejected[event.probe.target][RejectReason.SEQUENCE.value] += 1
        else:
            schedule.on_event(event)


def run_wave(
    targets: Sequence[TargetSpec], options: WaveOptions | None = None
) -> list[TargetResult]:
    """Trace every target concurrently under one packet-rate cap; one result per target."""
    opts = options or WaveOptions()
    if opts.protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {opts.protocol!r}")
    ids = RunIdentity.new()
    flows = [derive_flows(spec.seed, opts.flows, opts.dst_port) for spec in targets]
    selector = _Selector()
    pool = TransportPool(opts, ids, selector)
    try:
        return _run(targets, opts, flows, pool, selector)
    finally:
        pool.close()
        selector.close()


__all__ = ["PROTOCOLS", "TargetSpec", "WaveOptions", "run_wave"]
