"""Hostile packets: parsers never raise, matching never corrupts a result."""

from __future__ import annotations

import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from traceroute_probe import packets
from traceroute_probe.engine import TargetSpec, WaveOptions, _Probe, _Wave
from traceroute_probe.sockets import Received

from .test_packets import _ipv4_header

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


def _wave_with_sent_probes(protocol: str = "icmp") -> tuple[_Wave, list[_Probe]]:
    """A wave whose probes were 'sent' (no sockets: matching only)."""
    wave = _Wave([TargetSpec(TARGET, TARGET, 4, "fuzz")], WaveOptions(protocol=protocol))
    target = wave.targets[0]
    for f in target.flows:
        wave.routes[("icmp", TARGET, f.icmp_id)] = (target, f.index)
        wave.routes[("tcp", TARGET, f.src_port)] = (target, f.index)
    sent: list[_Probe] = []
    for ttl in range(1, 6):
        for flow in range(len(target.flows)):
            probe = _Probe(target, flow, ttl, 0, awaited=True, sent_ns=1)
            target.cell(flow, ttl).probes[0] = probe
            wave.outstanding[(0, flow, ttl, 0)] = probe
            sent.append(probe)
    return wave, sent


def _time_exceeded_for(
    wave: _Wave, flow: int, ttl: int, *, nonce: int | None = None, token: int | None = None
) -> bytes:
    target = wave.targets[0]
    f = target.flows[flow]
    seq = packets.encode_sequence(ttl, 0, wave.nonce if nonce is None else nonce)
    echo = packets.build_icmp_echo(
        family=4,
        ident=f.icmp_id,
        sequence=seq,
        run_token=wave.run_token if token is None else token,
        flow_sum=f.flow_sum,
    )
    inner = _ipv4_header("10.0.0.1", TARGET, 1, len(echo)) + echo
    message = struct.pack("!BBHI", 11, 0, 0, 0) + inner
    return _ipv4_header(f"10.0.{ttl}.1", "10.0.0.1", 1, len(message)) + message


@FUZZ
@given(st.lists(st.binary(max_size=300), max_size=20))
def test_random_packets_answer_nothing(blobs: list[bytes]) -> None:
    wave, sent = _wave_with_sent_probes()
    for blob in blobs:
        for reply in (
            packets.parse_icmp4_packet(blob),
            packets.parse_icmp4_message(blob, TARGET),
            packets.parse_tcp4_packet(blob),
        ):
            if reply is not None:
                wave._on_shared_reply(reply, 2)
        wave._on_flow_packet(wave.targets[0], 0, Received(blob, [], TARGET, 2, False))
        wave._on_flow_packet(wave.targets[0], 0, Received(blob, [(0, 11, blob)], None, 2, True))
    assert not any(p.answered for p in sent)
    assert wave.targets[0].dest_ttl is None


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
    wave, sent = _wave_with_sent_probes()
    forged = _time_exceeded_for(wave, flow, ttl, nonce=nonce, token=token)
    reply = packets.parse_icmp4_packet(forged)
    assert reply is not None
    wave._on_shared_reply(reply, 2)
    genuine = nonce == wave.nonce and token == wave.run_token
    assert sum(p.answered for p in sent) == int(genuine)
    real = packets.parse_icmp4_packet(_time_exceeded_for(wave, flow, ttl))
    assert real is not None
    for _ in range(copies):
        wave._on_shared_reply(real, 3)
    answered = [p for p in sent if p.answered]
    assert len(answered) == 1 and (answered[0].flow, answered[0].ttl) == (flow, ttl)
    assert answered[0].responder == f"10.0.{ttl}.1"
    result = wave._result(wave.targets[0], 0, 10)
    hop = result.hops[ttl - 1]
    assert hop.replies == 1 and hop.addresses == [f"10.0.{ttl}.1"]
