"""Hostile packets: parsers never raise, matching never corrupts a result."""

from __future__ import annotations

import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from traceroute_probe import packets
from traceroute_probe.events import Event, ProbeId
from traceroute_probe.flows import derive_flows
from traceroute_probe.options import WaveOptions
from traceroute_probe.schedule import Probe, Schedule, TargetPlan
from traceroute_probe.sockets import Received
from traceroute_probe.transports import Destination, Endpoint, RunIdentity
from traceroute_probe.transports.icmp_ping import PingMatcher
from traceroute_probe.transports.icmp_raw import IcmpRawTransport
from traceroute_probe.transports.tcp_raw import TcpRawTransport

from .test_packets import _ipv4_header, _with_checksum

FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
TARGET = "10.0.9.2"


@FUZZ
@given(st.binary(max_size=700))
def test_parsers_never_raise(data: bytes) -> None:
    packets.parse_icmp4_packet(data)
    packets.parse_icmp4_message(data, "10.0.0.1")
    packets.parse_icmp6_message(data, "fd00::1")
    packets.parse_tcp4_packet(data)
    packets.parse_tcp_segment(data, "10.0.0.1", 4)
    packets.parse_ipv6_header(data)
    for proto in (1, 17, 58):
        for level, kind in ((0, 11), (41, 25), (1, 35)):
            packets.parse_error_queue(data, [(level, kind, data)], protocol=proto, destination=None)
    packets.parse_timestamp([(1, 35, data)])


@FUZZ
@given(
    st.lists(
        st.tuples(st.integers(0, 255), st.integers(0, 255), st.binary(max_size=40)), max_size=6
    ),
    st.binary(max_size=120),
)
def test_ipv6_extension_chains_are_bounded(
    chain: list[tuple[int, int, bytes]], tail: bytes
) -> None:
    body = b"".join(bytes([nh, ln]) + rest for nh, ln, rest in chain) + tail
    first = chain[0][0] if chain else 58
    header = struct.pack("!IHBB16s16s", 6 << 28, len(body), first, 1, b"\x00" * 16, b"\x00" * 16)
    packets.parse_ipv6_header(header + body)
    packets.parse_icmp6_message(struct.pack("!BBHI", 3, 0, 0, 0) + header + body, "fd00::1")


class _SentWave:
    """A schedule whose probes were 'sent' (TTL 1..5, first attempt of every flow, at
    1 ns) and the matchers of every transport for its target (no sockets: matching only)."""

    def __init__(self) -> None:
        opts = WaveOptions(protocol="icmp", max_hops=5, probes_per_hop=1, destination_probes=0)
        self.ids = RunIdentity.new()
        self.flows = derive_flows("fuzz", opts.flows, opts.dst_port)
        self.schedule = Schedule([TargetPlan(TARGET, 4, len(self.flows))], opts, start_ns=0)
        wire = _Wire()
        assert self.schedule.step(lambda: 1, wire) is not None
        assert len(wire.sent) == 5 * len(self.flows)
        destination = Destination(0, TARGET, 4)
        self.icmp_raw = IcmpRawTransport(self.ids, _NoWatcher())
        self.tcp_raw = TcpRawTransport(self.ids, _NoWatcher(), opts.dst_port)
        self.icmp_raw.carry(destination, self.flows)
        self.tcp_raw.carry(destination, self.flows, "10.0.0.1")
        self.ping = PingMatcher(destination, self.flows[0], self.ids)

    @property
    def sent(self) -> list[Probe]:
        cells = self.schedule.targets[0].cells.values()
        return [p for cell in cells for p in cell.probes.values()]

    def feed(self, events: list[Event]) -> None:
        for event in events:
            self.schedule.on_event(event)

    def shared_reply(self, reply: packets.Reply, rx_ns: int) -> None:
        self.feed(self.icmp_raw.match(reply, rx_ns))
        self.feed(self.tcp_raw.match(reply, rx_ns))


class _Wire:
    def __init__(self) -> None:
        self.sent: list[ProbeId] = []

    def transmit(self, probe: ProbeId) -> int:
        self.sent.append(probe)
        return 1

    def release(self, probe: ProbeId) -> None:
        raise AssertionError("no connect probes here")


class _NoWatcher:
    def watch(self, endpoint: Endpoint, *, writable: bool = False) -> None:
        raise AssertionError("matching only: no sockets")

    def unwatch(self, endpoint: Endpoint) -> None:
        raise AssertionError("matching only: no sockets")


def _time_exceeded_for(
    wave: _SentWave, flow: int, ttl: int, *, nonce: int | None = None, token: int | None = None
) -> bytes:
    f = wave.flows[flow]
    seq = packets.encode_sequence(ttl, 0, wave.ids.nonce if nonce is None else nonce)
    echo = packets.build_icmp_echo(
        family=4,
        ident=f.icmp_id,
        sequence=seq,
        run_token=wave.ids.token if token is None else token,
        flow_sum=f.flow_sum,
    )
    inner = _ipv4_header("10.0.0.1", TARGET, 1, len(echo)) + echo
    message = _with_checksum(struct.pack("!BBHI", 11, 0, 0, 0) + inner, 2)
    return _ipv4_header(f"10.0.{ttl}.1", "10.0.0.1", 1, len(message)) + message


@FUZZ
@given(st.lists(st.binary(max_size=300), max_size=20))
def test_random_packets_answer_nothing(blobs: list[bytes]) -> None:
    wave = _SentWave()
    for blob in blobs:
        for reply in (
            packets.parse_icmp4_packet(blob),
            packets.parse_icmp4_message(blob, TARGET),
            packets.parse_tcp4_packet(blob),
        ):
            if reply is not None:
                wave.shared_reply(reply, 2)
        wave.feed(wave.ping.match(Received(blob, [], TARGET, 2, False)))
        wave.feed(wave.ping.match(Received(blob, [(0, 11, blob)], None, 2, True)))
    assert not any(p.answered for p in wave.sent)
    assert wave.schedule.targets[0].dest_ttl is None


@FUZZ
@given(
    st.integers(0, 2),
    st.integers(1, 5),
    st.integers(0, 15),
    st.integers(0, 2**32 - 1),
    st.integers(1, 4),
)
def test_only_exact_matches_count_and_duplicates_do_not(
    flow: int, ttl: int, nonce: int, token: int, copies: int
) -> None:
    wave = _SentWave()
    forged = _time_exceeded_for(wave, flow, ttl, nonce=nonce, token=token)
    reply = packets.parse_icmp4_packet(forged)
    assert reply is not None
    wave.shared_reply(reply, 2)
    genuine = nonce == wave.ids.nonce and token == wave.ids.token
    assert sum(p.answered for p in wave.sent) == int(genuine)
    real = packets.parse_icmp4_packet(_time_exceeded_for(wave, flow, ttl))
    assert real is not None
    for _ in range(copies):
        wave.shared_reply(real, 3)
    answered = [p for p in wave.sent if p.answered]
    assert len(answered) == 1 and (answered[0].id.flow, answered[0].ttl) == (flow, ttl)
    assert answered[0].responder == f"10.0.{ttl}.1"
    _reached, _hop_count, hops = wave.schedule.hops(0)
    hop = hops[ttl - 1]
    assert hop.replies == 1 and hop.addresses == [f"10.0.{ttl}.1"]
