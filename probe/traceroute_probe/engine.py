"""The paced wave: all TTLs and a few fixed Paris flows of every target at once.

Scheduling rules (see DESIGN.md "The probe"):
- every (flow, TTL) of the first ``initial_window`` TTLs gets as many attempts at once as
  fit in one router's ICMP burst when all flows reach the same router (Linux: 6, so 2
  attempts for 3 flows); the window widens as replies come back and never goes past
  the destination once it answered. First attempts of all TTLs are sent before second
  ones, under one token bucket for the whole run (``pps``, burst ``pps/4``);
- completion waits for the first attempt of every (flow, TTL) and for one retry of a
  silent one; later attempts only add samples if they are back before the end
  (probes still in flight at the end count neither as reply nor as loss);
- more samples (up to ``probes_per_hop``) go to a responder only while its modelled
  token bucket (burst 6, 1/s per source, fed by every probe attributed to it, across
  targets) has a token, so that pacing, not the router, decides: no false loss;
- a silent probe is settled once a later TTL answered and ``settle_factor`` times that
  RTT passed (or, with no later answer, a multiple of the largest RTT seen);
- the run finishes as soon as the destination answered every flow and all lower TTLs
  are settled; without the destination, ``gap_limit`` silent TTLs after the last
  responder end it; a hard deadline ends everything. The result is always complete.

TCP without raw sockets ("connect" probes): every probe is a non-blocking connect() from
the flow's fixed source port with the probe's TTL; the router's Time Exceeded arrives on
that socket's error queue, the destination's SYN-ACK or RST completes or refuses the
connect. The kernel allows one socket per 4-tuple, so a flow has one probe in flight at a
time (flows and targets still run in parallel); the socket is closed at its outcome.
"""

from __future__ import annotations

import errno
import heapq
import os
import selectors
import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from typing import TypeVar

from . import packets
from .flows import Flow, derive_flows
from .packets import EchoReply, IcmpError, TcpReply
from .result import FlowHop, Hop, TargetError, TargetResult
from .sockets import (
    ProbeSocket,
    Received,
    SocketOpenError,
    bind_ping_ident,
    connect_outcome,
    open_icmp,
    open_raw,
    open_udp,
    ping_ident,
    reserve_tcp_port,
    source_address,
    start_tcp_connect,
)

PROTOCOLS = ("icmp", "udp", "tcp")
DEFAULT_PORTS = {"icmp": 0, "udp": 33434, "tcp": 443}
_NS = 1_000_000_000
_BIND_ATTEMPTS = 8
_Bound = TypeVar("_Bound")


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
    ratelimit_interval: float = 1.0

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


@dataclass
class _Probe:
    target: _TargetState
    flow: int
    ttl: int
    attempt: int
    awaited: bool  # completion waits for it (first attempts and retries), others not
    sent_ns: int = 0
    settled: bool = False
    answered: bool = False
    rtt: float = 0.0
    responder: str = ""
    budget_key: str | None = None


@dataclass
class _Cell:
    """One (flow, TTL) of one target."""

    probes: dict[int, _Probe] = field(default_factory=dict)  # attempt -> probe
    next_attempt: int = 0
    queued_awaited: int = 0
    queued: int = 0
    first_wave_released: int = 0
    retried: bool = False
    waiting_retry: bool = False
    responder: str | None = None

    @property
    def answered(self) -> bool:
        return any(p.answered for p in self.probes.values())

    @property
    def awaited_settled(self) -> bool:
        return self.queued_awaited == 0 and all(
            p.settled for p in self.probes.values() if p.awaited
        )


class _TokenModel:
    """Token bucket per responder, fed with the send times of probes attributed to it."""

    def __init__(self, burst: int, interval: float) -> None:
        self.burst = float(burst)
        self.interval_ns = interval * _NS
        self.sends: dict[str, list[int]] = {}

    def add(self, key: str, sent_ns: int) -> None:
        self.sends.setdefault(key, []).append(sent_ns)

    def move(self, old: str | None, new: str | None, sent_ns: int) -> None:
        if old is not None:
            sends = self.sends.get(old)
            if sends and sent_ns in sends:
                sends.remove(sent_ns)
        if new is not None:
            self.add(new, sent_ns)

    def available_at(self, key: str, now_ns: int, planned: int = 0) -> int:
        """Earliest time (ns) at which one more probe to ``key`` stays within budget,
        counting ``planned`` probes released but not sent yet as sent now."""
        tokens = self.burst
        last: int | None = None
        for t in sorted([*self.sends.get(key, ()), *([now_ns] * planned)]):
            if last is not None:
                tokens = min(self.burst, tokens + (t - last) / self.interval_ns)
            tokens -= 1.0  # the router may have dropped it: tokens can go below zero
            last = t
        if last is None:
            return now_ns
        tokens_now = min(self.burst, tokens + (now_ns - last) / self.interval_ns)
        if tokens_now >= 1.0:
            return now_ns
        return now_ns + int((1.0 - tokens_now) * self.interval_ns) + 1


class _TargetState:
    def __init__(self, index: int, spec: TargetSpec, flows: list[Flow], opts: WaveOptions) -> None:
        self.index = index
        self.spec = spec
        self.address = spec.address or ""
        self.family = spec.family or 4
        self.flows = flows
        self.opts = opts
        self.cells: dict[tuple[int, int], _Cell] = {}
        self.dest_ttl: int | None = None
        self.terminal_ttl: int | None = None
        self.highest_answered = 0
        self.window_top = min(opts.max_hops, opts.initial_window)
        self.rtt_by_ttl: dict[int, float] = {}  # largest RTT (s) seen per TTL
        self.error: TargetError | None = spec.error
        self.complete = spec.error is not None
        self.finished_ns = 0
        self.sockets: dict[int, ProbeSocket] = {}  # flow index -> per-flow socket
        self.source: str | None = None
        self.tcp_connect = False  # TCP through connect() instead of raw sockets
        # flow index -> the connect probe in flight on it (at most one per flow)
        self.connecting: dict[int, tuple[ProbeSocket, _Probe]] = {}

    def cell(self, flow: int, ttl: int) -> _Cell:
        key = (flow, ttl)
        cell = self.cells.get(key)
        if cell is None:
            cell = self.cells[key] = _Cell()
        return cell

    @property
    def release_limit(self) -> int:
        """Highest TTL that may be probed now: the window, never past the destination."""
        limit = min(self.opts.max_hops, self.window_top)
        if self.dest_ttl is not None:
            limit = min(limit, self.dest_ttl)
        if self.terminal_ttl is not None:
            limit = min(limit, self.terminal_ttl)
        return max(limit, 1)

    @property
    def decision_limit(self) -> int:
        """Highest TTL whose outcome the run waits for (gap limit without destination)."""
        limit = self.release_limit
        if self.dest_ttl is None and self.terminal_ttl is None:
            limit = min(limit, self.highest_answered + self.opts.gap_limit)
        return max(limit, 1)

    def max_rtt(self) -> float | None:
        return max(self.rtt_by_ttl.values()) if self.rtt_by_ttl else None

    def later_rtt(self, ttl: int) -> float | None:
        """Largest RTT of the nearest TTL above ``ttl`` that answered."""
        later = [t for t in self.rtt_by_ttl if t > ttl]
        return self.rtt_by_ttl[min(later)] if later else None


class _Wave:
    def __init__(self, specs: Sequence[TargetSpec], opts: WaveOptions) -> None:
        if opts.protocol not in PROTOCOLS:
            raise ValueError(f"unknown protocol {opts.protocol!r}")
        self.opts = opts
        self.run_token = int.from_bytes(os.urandom(4), "big")
        # ICMP and UDP probe payloads start with it; every reply's quote is checked for it.
        self.payload_marker = packets.PAYLOAD_MAGIC + self.run_token.to_bytes(4, "big")
        self.nonce = self.run_token & 0x0F
        self.tcp_nonce = (self.run_token >> 8) & 0xFFFF
        self.targets = [
            _TargetState(i, spec, derive_flows(spec.seed, opts.flows, opts.dst_port), opts)
            for i, spec in enumerate(specs)
        ]
        self.selector = selectors.DefaultSelector()
        self.shared: dict[tuple[str, int], ProbeSocket] = {}  # (kind, family) -> socket
        self.routes: dict[tuple[object, ...], tuple[_TargetState, int]] = {}
        self.outstanding: dict[tuple[int, int, int, int], _Probe] = {}
        # order, ttl, flow, target, attempt, awaited: first attempts and low TTLs
        # first; per TTL one flow of every target before the next flow (shared first hops)
        self.queue: list[tuple[int, int, int, int, int, int]] = []
        self.tokens = _TokenModel(opts.ratelimit_burst, opts.ratelimit_interval)
        self.pps_tokens = max(1.0, opts.pps / 4.0)
        self.pps_burst = self.pps_tokens
        self.pps_last_ns = 0
        self.sent_total = 0
        self.ttl_responders: dict[tuple[int, int], str] = {}  # (family, ttl) -> router

    # --- sockets ---------------------------------------------------------------------------

    def _register(self, probe_socket: ProbeSocket, data: tuple[object, ...]) -> None:
        self.selector.register(probe_socket.sock, selectors.EVENT_READ, data)

    def _shared(self, kind: str, family: int) -> ProbeSocket:
        key = (kind, family)
        sock = self.shared.get(key)
        if sock is None:
            if kind == "icmp-raw":
                sock = open_icmp(family, raw=True)
            else:  # tcp-raw
                sock = open_raw(family, packets.IPPROTO_TCP)
            self.shared[key] = sock
            self._register(sock, ("shared", kind, family))
        return sock

    def _open(self) -> None:
        for target in self.targets:
            if target.complete:
                continue
            try:
                self._open_target(target)
            except SocketOpenError as err:
                target.error = TargetError(err.kind, str(err))
                target.complete = True
            except OSError as err:
                target.error = TargetError("socket", f"cannot open socket: {err.strerror or err}")
                target.complete = True

    def _open_target(self, target: _TargetState) -> None:
        opts = self.opts
        family = target.family
        if opts.protocol == "icmp":
            use_raw = opts.socket_mode == "raw"
            if opts.socket_mode == "auto":
                try:
                    self._shared("icmp-raw", family)
                    use_raw = True
                except SocketOpenError as err:
                    if err.kind != "permission":
                        raise
            if use_raw:
                self._shared("icmp-raw", family)
                for flow in target.flows:
                    self.routes[("icmp", target.address, flow.icmp_id)] = (target, flow.index)
                return
            for i, flow in enumerate(target.flows):
                sock = open_icmp(family, raw=False)
                try:
                    _bind_free(flow, partial(_bind_ping_flow, sock))
                except OSError:
                    sock.close()
                    raise
                sock.enable_recverr()
                target.flows[i] = replace(flow, icmp_id=ping_ident(sock))
                target.sockets[flow.index] = sock
                self._register(sock, ("flow", target.index, flow.index))
        elif opts.protocol == "udp":
            if opts.socket_mode == "raw":
                raise SocketOpenError("socket", "udp probing uses datagram sockets only")
            for i, flow in enumerate(target.flows):
                bound, sock = _bind_free(
                    flow, lambda f: open_udp(family, f.src_port, target.address, f.dst_port)
                )
                sock.enable_recverr()
                target.flows[i] = replace(flow, src_port=bound.src_port)
                target.sockets[flow.index] = sock
                self._register(sock, ("flow", target.index, flow.index))
        else:  # tcp
            use_raw = opts.socket_mode != "dgram"
            if use_raw:
                try:
                    self._shared("tcp-raw", family)
                    self._shared("icmp-raw", family)
                except SocketOpenError as err:
                    if opts.socket_mode == "raw" or err.kind != "permission":
                        raise SocketOpenError(
                            err.kind,
                            "tcp SYN probing with --socket raw needs raw sockets (CAP_NET_RAW); "
                            "--socket auto or dgram probes with connect() instead",
                        ) from err
                    use_raw = False
            if not use_raw:
                self._open_tcp_connect(target)
                return
            target.source = source_address(target.address, family)
            for flow in target.flows:
                self.routes[("tcp", target.address, flow.src_port)] = (target, flow.index)

    def _open_tcp_connect(self, target: _TargetState) -> None:
        """Connect probes need no socket up front; check each flow's source port now."""
        for i, flow in enumerate(target.flows):
            bound, _ = _bind_free(flow, lambda f: reserve_tcp_port(target.family, f.src_port))
            target.flows[i] = replace(flow, src_port=bound.src_port)
        target.tcp_connect = True

    def _end_connect(self, target: _TargetState, flow: int) -> None:
        entry = target.connecting.pop(flow, None)
        if entry is not None:
            self.selector.unregister(entry[0].sock)
            entry[0].close()

    def close(self) -> None:
        for target in self.targets:
            for flow in list(target.connecting):
                self._end_connect(target, flow)
            for sock in target.sockets.values():
                sock.close()
        for sock in self.shared.values():
            sock.close()
        self.selector.close()

    # --- sending ---------------------------------------------------------------------------

    def _sequence(self, ttl: int, attempt: int) -> int:
        return packets.encode_sequence(ttl, attempt, self.nonce)

    def _budget_key(self, target: _TargetState, flow: int, ttl: int) -> str | None:
        """The responder a probe most likely reaches, for the rate-limit model.

        Known: this flow's, another flow's, or (first hops are usually shared) another
        target's responder at this TTL. Unknown: one shared "?" bucket per TTL, as if a
        single router answered it. None: answers that are not rate limited.
        """
        if target.dest_ttl is not None and ttl >= target.dest_ttl:
            # Echo replies and TCP answers are not rate limited; port unreachable is.
            return target.address if self.opts.protocol == "udp" else None
        cell = target.cells.get((flow, ttl))
        if cell is not None and cell.responder is not None:
            return cell.responder
        for f in range(len(target.flows)):
            other = target.cells.get((f, ttl))
            if other is not None and other.responder is not None:
                return other.responder
        shared = self.ttl_responders.get((target.family, ttl))
        return shared if shared is not None else f"?{target.family}/{ttl}"

    def _first_wave(self, target: _TargetState) -> int:
        """Attempts per (flow, TTL) sent before anything is known about the responder:
        as many as fit in one router's burst when every flow hits the same router.
        Connect probes: one, since a second one would hold the flow as long as a silence."""
        opts = self.opts
        if target.tcp_connect:
            return 1
        return max(1, min(opts.probes_per_hop, opts.ratelimit_burst // max(1, opts.flows)))

    def _queue(
        self, target: _TargetState, flow: int, ttl: int, *, awaited: bool, retry: bool
    ) -> None:
        cell = target.cell(flow, ttl)
        attempt = cell.next_attempt
        if attempt >= packets.MAX_ATTEMPTS:
            return
        cell.next_attempt += 1
        cell.queued += 1
        if awaited:
            cell.queued_awaited += 1
        # First attempts of every TTL go before second attempts: the path (and the
        # destination) is found at the earliest; retries of silences count as first.
        order = attempt if not retry else 0
        if retry and target.tcp_connect:
            # The flow is blocked while the retry waits: let higher TTLs go first, so that
            # their answers settle the retry early (1.5x the later hop's RTT).
            order = 1
        heapq.heappush(
            self.queue,
            (order, ttl, flow, target.index, attempt, int(awaited)),
        )

    def _release(self, now_ns: int) -> int | None:
        """Queue every probe that may go now; returns the earliest token wait, if any."""
        earliest: int | None = None
        per_hop = self.opts.probes_per_hop
        planned: dict[str | None, int] = {}

        def fits(key: str | None) -> bool:
            return (
                key is None or self.tokens.available_at(key, now_ns, planned.get(key, 0)) <= now_ns
            )

        def plan(key: str | None) -> None:
            planned[key] = planned.get(key, 0) + 1

        for attempt_pass in (0, 1):  # first attempts of every target before any second one
            for target in self.targets:
                if target.complete:
                    continue
                first_wave = self._first_wave(target)
                release_limit = target.release_limit
                decision_limit = target.decision_limit
                # Connect probes hold their flow: none past the gap limit, where the run
                # would not wait for them anyway.
                top = decision_limit if target.tcp_connect else release_limit
                for ttl in range(1, top + 1):
                    for flow in range(len(target.flows)):
                        cell = target.cell(flow, ttl)
                        if cell.first_wave_released < first_wave:
                            first = cell.first_wave_released == 0
                            if first != (attempt_pass == 0):
                                continue
                            key = self._budget_key(target, flow, ttl)
                            if not first and not fits(key):
                                # Would exceed the router's burst: leave it to the extras.
                                cell.first_wave_released = first_wave
                                continue
                            plan(key)
                            # Only the first attempt is waited for; the others add samples
                            # when they are back before the run ends.
                            cell.first_wave_released += 1
                            self._queue(target, flow, ttl, awaited=first, retry=False)
                            continue
                        if attempt_pass == 0 or cell.queued or not cell.awaited_settled:
                            continue
                        if not cell.answered:
                            if cell.retried or ttl > decision_limit:
                                continue
                            key = self._budget_key(target, flow, ttl)
                            if key is not None and not key.startswith("?"):
                                # A known router that answered others: the silence is
                                # likely its rate limit. Retry only if this target has no
                                # answer at this TTL yet, with one flow, within budget.
                                flows = range(len(target.flows))
                                if any(target.cell(f, ttl).answered for f in flows):
                                    cell.retried = True  # a sample lost to the limit
                                    continue
                                pending = [f for f in flows if not target.cell(f, ttl).retried]
                                if flow != min(pending, default=flow):
                                    cell.retried = True  # one flow retries for the TTL
                                    continue
                                ready = self.tokens.available_at(key, now_ns, planned.get(key, 0))
                                if ready > now_ns:
                                    cell.waiting_retry = True
                                    earliest = ready if earliest is None else min(earliest, ready)
                                    continue
                            plan(key)
                            cell.waiting_retry = False
                            cell.retried = True
                            self._queue(target, flow, ttl, awaited=True, retry=True)
                            continue
                        # Extra samples: only while the run goes on anyway, never waited for.
                        if len(cell.probes) >= per_hop:
                            continue
                        key = self._budget_key(target, flow, ttl)
                        if not fits(key):
                            continue
                        plan(key)
                        self._queue(target, flow, ttl, awaited=False, retry=False)
        return earliest

    def _send_ready(self, now_ns: int) -> bool:
        """Send what the packet budget allows; True if a sendable probe waits for tokens."""
        rate = self.opts.pps
        if self.pps_last_ns:
            self.pps_tokens = min(
                self.pps_burst, self.pps_tokens + (now_ns - self.pps_last_ns) / _NS * rate
            )
        self.pps_last_ns = now_ns
        busy_flow: list[tuple[int, int, int, int, int, int]] = []
        while self.queue and self.pps_tokens >= 1.0:
            entry = heapq.heappop(self.queue)
            _order, ttl, flow, target_index, attempt, awaited = entry
            target = self.targets[target_index]
            cell = target.cell(flow, ttl)
            live = not target.complete and ttl <= target.release_limit
            if live and flow in target.connecting:
                busy_flow.append(entry)  # one connect probe per flow at a time
                continue
            cell.queued -= 1
            if awaited:
                cell.queued_awaited -= 1
            if not live:
                continue
            probe = _Probe(target, flow, ttl, attempt, awaited=bool(awaited))
            try:
                if target.tcp_connect:
                    probe.sent_ns = self._start_connect(target, probe)
                else:
                    probe.sent_ns = self._transmit(target, flow, ttl, self._sequence(ttl, attempt))
            except OSError as err:
                target.error = TargetError("socket", f"send: {err.strerror or err}")
                target.complete = True
                continue
            self.pps_tokens -= 1.0
            self.sent_total += 1
            probe.budget_key = self._budget_key(target, flow, ttl)
            if probe.budget_key is not None:
                self.tokens.add(probe.budget_key, probe.sent_ns)
            cell.probes[attempt] = probe
            self.outstanding[(target_index, flow, ttl, attempt)] = probe
        waits_for_tokens = len(self.queue) > 0
        for entry in busy_flow:
            heapq.heappush(self.queue, entry)
        return waits_for_tokens

    def _start_connect(self, target: _TargetState, probe: _Probe) -> int:
        flow = target.flows[probe.flow]
        sock, sent_ns = start_tcp_connect(
            target.family, flow.src_port, target.address, flow.dst_port, probe.ttl
        )
        target.connecting[probe.flow] = (sock, probe)
        self.selector.register(
            sock.sock,
            selectors.EVENT_READ | selectors.EVENT_WRITE,
            ("connect", target.index, probe.flow),
        )
        return sent_ns

    def _transmit(self, target: _TargetState, flow_index: int, ttl: int, sequence: int) -> int:
        flow = target.flows[flow_index]
        family = target.family
        if self.opts.protocol == "icmp":
            packet = packets.build_icmp_echo(
                family=family,
                ident=flow.icmp_id,
                sequence=sequence,
                run_token=self.run_token,
                flow_sum=flow.flow_sum,
            )
            sock = target.sockets.get(flow_index) or self.shared[("icmp-raw", family)]
            return sock.send(packet, (target.address, 0), ttl)
        if self.opts.protocol == "udp":
            payload = packets.udp_payload(sequence=sequence, run_token=self.run_token)
            return target.sockets[flow_index].send(payload, None, ttl)
        segment = packets.build_tcp_syn(
            src=target.source or "",
            dst=target.address,
            sport=flow.src_port,
            dport=flow.dst_port,
            seq=(self.tcp_nonce << 16) | sequence,
        )
        return self.shared[("tcp-raw", family)].send(segment, (target.address, 0), ttl)

    # --- receiving -------------------------------------------------------------------------

    def _drain(self, data: tuple[object, ...], probe_socket: ProbeSocket | None) -> None:
        if data[0] == "connect" or probe_socket is None:
            self._on_connect_event(self.targets[int(str(data[1]))], int(str(data[2])))
            return
        if data[0] == "flow":
            target = self.targets[int(str(data[1]))]
            flow = int(str(data[2]))
            for item in probe_socket.drain(error_queue=True):
                self._on_flow_packet(target, flow, item)
            return
        kind, family = str(data[1]), int(str(data[2]))
        for item in probe_socket.drain(error_queue=False):
            reply: packets.Reply | None
            if kind == "icmp-raw":
                if family == 4:
                    reply = packets.parse_icmp4_packet(item.data)
                else:
                    reply = packets.parse_icmp6_message(item.data, item.address or "")
            elif family == 4:
                reply = packets.parse_tcp4_packet(item.data)
            else:
                reply = packets.parse_tcp_segment(item.data, item.address or "", 6)
            if reply is not None:
                self._on_shared_reply(reply, _rx_time(item))

    def _on_flow_packet(self, target: _TargetState, flow: int, item: Received) -> None:
        rx_ns = _rx_time(item)
        protocol = self.opts.protocol
        if item.from_error_queue:
            ip_proto = (
                packets.IPPROTO_UDP
                if protocol == "udp"
                else (packets.IPPROTO_ICMP if target.family == 4 else packets.IPPROTO_ICMPV6)
            )
            error = packets.parse_error_queue(
                item.data, item.ancdata, protocol=ip_proto, destination=target.address
            )
            if error is None:
                return
            if protocol == "udp":
                sequence = self._udp_sequence(error.quote.payload)
            else:
                if error.quote.ident != target.flows[flow].icmp_id:
                    return
                if not self._payload_ok(error.quote.payload):
                    return
                sequence = error.quote.sequence
            if sequence is not None:
                self._record(target, flow, sequence, rx_ns, error)
            return
        if protocol == "icmp":
            message = (
                packets.parse_icmp4_message(item.data, item.address or "")
                if target.family == 4
                else packets.parse_icmp6_message(item.data, item.address or "")
            )
            if (
                isinstance(message, EchoReply)
                and message.responder == target.address
                and self._payload_ok(message.payload)
            ):
                self._record(target, flow, message.sequence, rx_ns, message)

    def _on_connect_event(self, target: _TargetState, flow: int) -> None:
        entry = target.connecting.get(flow)
        if entry is None:
            return
        probe_socket, probe = entry
        outcome = connect_outcome(probe_socket)
        if outcome.kind == "pending":
            return
        self._end_connect(target, flow)
        sequence = self._sequence(probe.ttl, probe.attempt)
        flow_ids = target.flows[flow]
        if outcome.kind == "icmp":
            for item in outcome.errors:
                error = packets.parse_error_queue(
                    item.data,
                    item.ancdata,
                    protocol=packets.IPPROTO_TCP,
                    destination=target.address,
                )
                # The kernel quotes from the TCP header on: the ports must be this flow's.
                if error is None or item.data[:4] != struct.pack(
                    "!HH", flow_ids.src_port, flow_ids.dst_port
                ):
                    continue
                self._record(target, flow, sequence, _rx_time(item), error)
                return
        elif outcome.kind in ("connected", "refused"):
            answer = TcpReply(
                responder=target.address,
                family=target.family,
                sport=flow_ids.dst_port,
                dport=flow_ids.src_port,
                ack=0,
                flags=packets.TCP_RST if outcome.kind == "refused" else packets.TCP_SYN,
            )
            self._record(target, flow, sequence, outcome.rx_ns, answer)
        # "failed" (a local error): no answer will come; the probe settles as silent.

    def _payload_ok(self, payload: bytes) -> bool:
        """A quote long enough to hold our marker must carry this run's marker."""
        if len(payload) < 6:
            return True  # RFC 792 routers quote 8 bytes only: the sequence decides
        return payload[:6] == self.payload_marker

    def _udp_sequence(self, payload: bytes) -> int | None:
        if len(payload) < packets.UDP_PAYLOAD_LEN or not self._payload_ok(payload):
            return None
        return int.from_bytes(payload[6:8], "big")

    def _on_shared_reply(self, reply: packets.Reply, rx_ns: int) -> None:
        if isinstance(reply, EchoReply):
            route = self.routes.get(("icmp", reply.responder, reply.ident))
            if route is None or not self._payload_ok(reply.payload):
                return
            self._record(route[0], route[1], reply.sequence, rx_ns, reply)
            return
        if isinstance(reply, TcpReply):
            route = self.routes.get(("tcp", reply.responder, reply.dport))
            if route is None or reply.sport != self.opts.dst_port:
                return
            if not reply.flags & (packets.TCP_RST | packets.TCP_SYN):
                return
            seq = (reply.ack - 1) & 0xFFFFFFFF
            if seq >> 16 != self.tcp_nonce:
                return
            self._record(route[0], route[1], seq & 0xFFFF, rx_ns, reply)
            return
        quote = reply.quote
        if quote.dst is None:
            return
        if quote.protocol in (packets.IPPROTO_ICMP, packets.IPPROTO_ICMPV6):
            if self.opts.protocol != "icmp" or quote.ident is None or quote.sequence is None:
                return
            route = self.routes.get(("icmp", quote.dst, quote.ident))
            if route is None or not self._payload_ok(quote.payload):
                return
            self._record(route[0], route[1], quote.sequence, rx_ns, reply)
        elif quote.protocol == packets.IPPROTO_TCP and self.opts.protocol == "tcp":
            if quote.sport is None or quote.sequence is None or quote.dport != self.opts.dst_port:
                return
            route = self.routes.get(("tcp", quote.dst, quote.sport))
            if route is None or quote.sequence >> 16 != self.tcp_nonce:
                return
            self._record(route[0], route[1], quote.sequence & 0xFFFF, rx_ns, reply)

    def _record(
        self,
        target: _TargetState,
        flow: int,
        sequence: int,
        rx_ns: int,
        reply: packets.Reply,
    ) -> None:
        responder = reply.responder
        ttl, attempt, nonce = packets.decode_sequence(sequence)
        if nonce != self.nonce:
            return
        cell = target.cells.get((flow, ttl))
        probe = cell.probes.get(attempt) if cell is not None else None
        if cell is None or probe is None or probe.answered:
            return  # not ours, or a duplicate
        rtt = max(0.0, (rx_ns - probe.sent_ns) / _NS)
        if rtt > self.opts.timeout:
            return
        probe.answered = True
        probe.rtt = rtt
        probe.responder = responder
        if not probe.settled:
            probe.settled = True
            self.outstanding.pop((target.index, flow, ttl, attempt), None)
        reached = responder == target.address and not (
            isinstance(reply, IcmpError) and reply.is_time_exceeded
        )
        if not reached:
            cell.responder = responder
            self.ttl_responders.setdefault((target.family, ttl), responder)
        # Only ICMP errors spend a router's rate-limit tokens.
        spent_on = responder if isinstance(reply, IcmpError) else None
        if probe.budget_key != spent_on:
            self.tokens.move(probe.budget_key, spent_on, probe.sent_ns)
            probe.budget_key = spent_on
        target.rtt_by_ttl[ttl] = max(rtt, target.rtt_by_ttl.get(ttl, 0.0))
        if reached:
            if target.dest_ttl is None or ttl < target.dest_ttl:
                target.dest_ttl = ttl
        elif (
            isinstance(reply, IcmpError)
            and reply.is_unreachable
            and (target.terminal_ttl is None or ttl < target.terminal_ttl)
        ):
            # Unreachable from a router (!N, !H, !X): the path ends there.
            target.terminal_ttl = ttl
        target.highest_answered = max(target.highest_answered, ttl)
        target.window_top = max(target.window_top, ttl + self.opts.initial_window)

    # --- settling and completion -------------------------------------------------------------

    def _wait_for(self, probe: _Probe) -> float:
        target = probe.target
        opts = self.opts
        later = target.later_rtt(probe.ttl)
        if later is not None:
            return opts.settle_factor * later + opts.settle_floor
        seen = target.max_rtt()
        if seen is None:
            return opts.nothing_seen_wait
        return max(opts.no_later_floor, opts.no_later_factor * seen)

    def _settle(self, now_ns: int) -> int | None:
        """Mark silent probes; returns the next time one could settle."""
        nearest: int | None = None
        for key, probe in list(self.outstanding.items()):
            target = probe.target
            if target.complete or probe.ttl > target.release_limit:
                # Beyond the destination or the run is over: neither reply nor loss.
                del self.outstanding[key]
                self._end_connect_of(probe)
                continue
            due = probe.sent_ns + int(self._wait_for(probe) * _NS)
            if due <= now_ns:
                probe.settled = True
                del self.outstanding[key]
                self._end_connect_of(probe)
            else:
                nearest = due if nearest is None else min(nearest, due)
        return nearest

    def _end_connect_of(self, probe: _Probe) -> None:
        """A settled connect probe frees its flow for the next one."""
        entry = probe.target.connecting.get(probe.flow)
        if entry is not None and entry[1] is probe:
            self._end_connect(probe.target, probe.flow)

    def _check_complete(self, now_ns: int) -> None:
        for target in self.targets:
            if target.complete:
                continue
            first_wave = self._first_wave(target)
            limit = target.decision_limit
            busy = False
            for ttl in range(1, limit + 1):
                for flow in range(len(target.flows)):
                    cell = target.cells.get((flow, ttl))
                    if ttl == target.dest_ttl and cell is not None and cell.answered:
                        # The destination answered this flow: finish now; its probes still
                        # in flight count neither as replies nor as loss.
                        continue
                    if (
                        cell is None
                        or cell.first_wave_released < first_wave
                        or not cell.awaited_settled
                        or cell.waiting_retry
                        or (not cell.answered and not cell.retried)
                    ):
                        busy = True
                        break
                if busy:
                    break
            if not busy:
                target.complete = True
                target.finished_ns = now_ns

    # --- main loop -----------------------------------------------------------------------

    def run(self) -> list[TargetResult]:
        start_ns = time.time_ns()
        deadline_ns = start_ns + int(self.opts.timeout * _NS)
        try:
            self._open()
            for _ in range(10_000_000):  # bounded; the deadline ends it long before
                now_ns = time.time_ns()
                if now_ns >= deadline_ns:
                    break
                settle_at = self._settle(now_ns)
                token_wait = self._release(now_ns)
                self._check_complete(now_ns)
                if all(t.complete for t in self.targets):
                    break
                sent_before = self.sent_total
                waits_for_tokens = self._send_ready(now_ns)
                if self.sent_total != sent_before:
                    # Probes just sent settle later than those known before the send.
                    settle_at = self._settle(time.time_ns())
                wake = deadline_ns
                for candidate in (token_wait, settle_at):
                    if candidate is not None:
                        wake = min(wake, candidate)
                if waits_for_tokens:
                    missing = max(0.0, 1.0 - self.pps_tokens) / self.opts.pps
                    wake = min(wake, now_ns + int(missing * _NS) + 1)
                timeout = max(0.0, (wake - time.time_ns()) / _NS)
                for key, _mask in self.selector.select(timeout):
                    self._drain(key.data, _socket_of(self, key.data))
            end_ns = time.time_ns()
            return [self._result(t, start_ns, end_ns) for t in self.targets]
        finally:
            self.close()

    def _result(self, target: _TargetState, start_ns: int, end_ns: int) -> TargetResult:
        spec = target.spec
        result = TargetResult(
            target=spec.name,
            address=spec.address,
            family=spec.family,
            protocol=self.opts.protocol,
            error=target.error,
            expected_hops=spec.expected_hops,
            flow_ids=[self._flow_id(f) for f in target.flows] if spec.address else [],
        )
        finished = target.finished_ns or end_ns
        result.duration_seconds = max(0.0, (finished - start_ns) / _NS)
        if target.dest_ttl is not None:
            result.reached = True
            result.hop_count = target.dest_ttl
        else:
            answered = [ttl for (_flow, ttl), cell in target.cells.items() if cell.answered]
            result.hop_count = max(answered, default=0)
        hops: list[Hop] = []
        for ttl in range(1, result.hop_count + 1):
            flows: list[FlowHop] = []
            for flow in range(len(target.flows)):
                cell = target.cells.get((flow, ttl))
                flow_hop = FlowHop(flow=flow, ttl=ttl)
                for probe in sorted(cell.probes.values(), key=lambda p: p.attempt) if cell else []:
                    if not probe.settled:
                        continue  # still in flight when the run ended: neither reply nor loss
                    flow_hop.sent += 1
                    if probe.answered:
                        flow_hop.rtts_ms.append(probe.rtt * 1000.0)
                        flow_hop.responders[probe.responder] = (
                            flow_hop.responders.get(probe.responder, 0) + 1
                        )
                flows.append(flow_hop)
            hop = Hop(ttl=ttl, flows=flows)
            hop.rate_limited = bool(0 < hop.replies < hop.sent and ttl < result.hop_count)
            hops.append(hop)
        if result.reached and hops:
            result.destination_sent = hops[-1].sent
            result.destination_rtts_ms = hops[-1].rtts_ms()
        result.hops = hops
        return result

    def _flow_id(self, flow: Flow) -> dict[str, int]:
        if self.opts.protocol == "icmp":
            return {
                "flow": flow.index,
                "icmp_id": flow.icmp_id,
                "checksum": ~flow.flow_sum & 0xFFFF,
            }
        return {"flow": flow.index, "src_port": flow.src_port, "dst_port": flow.dst_port}


def _bind_free(flow: Flow, bind: Callable[[Flow], _Bound]) -> tuple[Flow, _Bound]:
    """``bind(flow)``, retried with the flow's alternatives while its identifier or port is
    taken (EADDRINUSE), at most ``_BIND_ATTEMPTS`` times; the flow that bound and the result."""
    candidate = flow
    for attempt in range(_BIND_ATTEMPTS - 1):
        try:
            return candidate, bind(candidate)
        except OSError as err:
            if err.errno != errno.EADDRINUSE:
                raise
        candidate = candidate.with_alternative(attempt)
    return candidate, bind(candidate)


def _bind_ping_flow(probe_socket: ProbeSocket, flow: Flow) -> None:
    bind_ping_ident(probe_socket, flow.icmp_id)


def _rx_time(item: Received) -> int:
    return packets.parse_timestamp(item.ancdata) or item.rx_ns


def _socket_of(wave: _Wave, data: tuple[object, ...]) -> ProbeSocket | None:
    if data[0] == "connect":
        return None  # the connect probe in flight on the flow, looked up by its handler
    if data[0] == "flow":
        return wave.targets[int(str(data[1]))].sockets[int(str(data[2]))]
    return wave.shared[(str(data[1]), int(str(data[2])))]


def run_wave(
    targets: Sequence[TargetSpec], options: WaveOptions | None = None
) -> list[TargetResult]:
    """Trace every target concurrently under one packet-rate cap; one result per target."""
    return _Wave(targets, options or WaveOptions()).run()


__all__ = ["PROTOCOLS", "TargetSpec", "WaveOptions", "run_wave"]
