"""Packet building and parsing (pure functions)."""

from __future__ import annotations

import ipaddress
import socket
import struct

import pytest
from traceroute_probe import packets
from traceroute_probe.flows import derive_flows


def _ipv4_header(src: str, dst: str, proto: int, payload_len: int, options: bytes = b"") -> bytes:
    ihl = (20 + len(options)) // 4
    header = struct.pack(
        "!BBHHHBBH4s4s",
        (4 << 4) | ihl,
        0,
        ihl * 4 + payload_len,
        0x1234,
        0,
        1,
        proto,
        0,
        ipaddress.IPv4Address(src).packed,
        ipaddress.IPv4Address(dst).packed,
    )
    return _with_checksum(header + options, 10)


def _with_checksum(data: bytes, offset: int) -> bytes:
    """``data`` with its Internet checksum at ``offset`` (as a sender fills it in)."""
    cleared = data[:offset] + b"\x00\x00" + data[offset + 2 :]
    checksum = packets.internet_checksum(cleared)
    return cleared[:offset] + struct.pack("!H", checksum) + cleared[offset + 2 :]


def _ipv6_header(src: str, dst: str, next_header: int, payload_len: int) -> bytes:
    return struct.pack(
        "!IHBB16s16s",
        6 << 28,
        payload_len,
        next_header,
        1,
        ipaddress.IPv6Address(src).packed,
        ipaddress.IPv6Address(dst).packed,
    )


def test_sequence_round_trip_keeps_ttl_attempt_and_nonce() -> None:
    for ttl in (1, 2, 30, 64, 255):
        for attempt in (0, 1, 15):
            seq = packets.encode_sequence(ttl, attempt, 0xB)
            assert packets.decode_sequence(seq) == (ttl, attempt, 0xB)
    with pytest.raises(ValueError):
        packets.encode_sequence(0, 0, 0)
    with pytest.raises(ValueError):
        packets.encode_sequence(1, 16, 0)


@pytest.mark.parametrize("family", [4, 6])
def test_echo_checksum_is_constant_per_flow_and_valid(family: int) -> None:
    flow = derive_flows("probe-a/example.org", 3, 0)[1]
    checksums = set()
    for ttl in range(1, 31):
        for attempt in range(4):
            seq = packets.encode_sequence(ttl, attempt, 7)
            packet = packets.build_icmp_echo(
                family=family,
                ident=flow.icmp_id,
                sequence=seq,
                run_token=0xDEADBEEF,
                flow_sum=flow.flow_sum,
            )
            checksums.add(struct.unpack_from("!H", packet, 2)[0])
            if family == 4:
                # the packet as sent verifies: one's complement sum over it is 0xffff
                assert packets.internet_checksum(packet) == 0
            assert struct.unpack_from("!HH", packet, 4) == (flow.icmp_id, seq)
    assert len(checksums) == 1


def test_echo_checksum_matches_what_the_kernel_would_compute() -> None:
    """Ping sockets compute the checksum themselves over the same bytes."""
    seq = packets.encode_sequence(5, 1, 3)
    payload = packets.icmp_echo_payload(
        echo_type=8, ident=4242, sequence=seq, run_token=99, flow_sum=0x1234
    )
    unchecked = struct.pack("!BBHHH", 8, 0, 0, 4242, seq) + payload
    assert packets.internet_checksum(unchecked) == ~0x1234 & 0xFFFF


def test_tcp_syn_checksum_verifies_with_pseudo_header() -> None:
    for src, dst in (("10.0.0.1", "10.0.9.2"), ("fd00::1", "fd00:9::2")):
        seg = packets.build_tcp_syn(src=src, dst=dst, sport=20001, dport=443, seq=0xABCD0102)
        pseudo = packets._pseudo_header(src, dst, packets.IPPROTO_TCP, len(seg))
        assert packets.internet_checksum(pseudo + seg) == 0
        reply = packets.parse_tcp_segment(seg, dst, 4)
        assert reply is not None and reply.flags == packets.TCP_SYN


def _time_exceeded_v4(
    quoted_transport: bytes, *, options: bytes = b"", rfc4884: bool = False
) -> bytes:
    inner = _ipv4_header(
        "10.0.0.1", "10.0.9.2", packets.IPPROTO_ICMP, len(quoted_transport), options
    )
    quote = inner + quoted_transport
    length_byte = 0
    extension = b""
    if rfc4884:
        quote = quote.ljust(128, b"\x00")
        length_byte = len(quote) // 4
        extension = bytes.fromhex("20000000") + bytes.fromhex("00080101") + b"\x00\x01\x41\x01"
    message = struct.pack("!BBHBBH", 11, 0, 0, 0, length_byte, 0) + quote + extension
    message = _with_checksum(message, 2)
    outer = _ipv4_header("10.0.3.1", "10.0.0.1", packets.IPPROTO_ICMP, len(message))
    return outer + message


def _our_echo(seq: int) -> bytes:
    return packets.build_icmp_echo(family=4, ident=777, sequence=seq, run_token=5, flow_sum=100)


@pytest.mark.parametrize("options", [b"", b"\x01\x01\x01\x00", b"\x07\x07\x04" + b"\x00" * 5])
@pytest.mark.parametrize("rfc4884", [False, True])
def test_time_exceeded_v4_with_options_and_extensions(options: bytes, rfc4884: bool) -> None:
    seq = packets.encode_sequence(3, 0, 5)
    reply = packets.parse_icmp4_packet(
        _time_exceeded_v4(_our_echo(seq), options=options, rfc4884=rfc4884)
    )
    assert isinstance(reply, packets.IcmpError)
    assert reply.responder == "10.0.3.1" and reply.is_time_exceeded
    assert (
        reply.quote.dst == "10.0.9.2" and reply.quote.ident == 777 and reply.quote.sequence == seq
    )
    assert reply.quote.payload[:2] == packets.PAYLOAD_MAGIC


def test_time_exceeded_v4_rfc792_eight_byte_quote() -> None:
    seq = packets.encode_sequence(2, 1, 5)
    reply = packets.parse_icmp4_packet(_time_exceeded_v4(_our_echo(seq)[:8]))
    assert isinstance(reply, packets.IcmpError)
    assert reply.quote.sequence == seq and reply.quote.payload == b""


def test_time_exceeded_v6_walks_extension_headers() -> None:
    seq = packets.encode_sequence(4, 2, 1)
    echo = packets.build_icmp_echo(family=6, ident=31, sequence=seq, run_token=5, flow_sum=77)
    hop_by_hop = bytes([60, 0]) + b"\x01\x04\x00\x00\x00\x00"  # -> destination options
    dest_opts = bytes([44, 0]) + b"\x01\x04\x00\x00\x00\x00"  # -> fragment
    fragment = bytes([58, 0]) + struct.pack("!HI", 0x0001, 99)  # offset 0, more fragments
    body = hop_by_hop + dest_opts + fragment + echo
    inner = _ipv6_header("fd00::1", "fd00:9::2", 0, len(body)) + body
    message = struct.pack("!BBHI", 3, 0, 0, 0) + inner
    reply = packets.parse_icmp6_message(message, "fd00:3::1")
    assert isinstance(reply, packets.IcmpError) and reply.is_time_exceeded
    assert reply.quote.protocol == packets.IPPROTO_ICMPV6
    assert (reply.quote.dst, reply.quote.ident, reply.quote.sequence) == ("fd00:9::2", 31, seq)


def test_non_first_fragment_is_not_a_quote_of_ours() -> None:
    fragment = bytes([58, 0]) + struct.pack("!HI", 0x0008, 99)  # offset 1
    inner = _ipv6_header("fd00::1", "fd00:9::2", 44, 16) + fragment + b"\x80\x00" + b"\x00" * 6
    assert packets.parse_icmp6_message(struct.pack("!BBHI", 3, 0, 0, 0) + inner, "fd00::9") is None


def test_udp_and_tcp_quotes() -> None:
    udp = struct.pack("!HHHH", 20001, 33434, 16, 0) + packets.udp_payload(
        sequence=0x0310, run_token=1
    )
    inner = _ipv4_header("10.0.0.1", "10.0.9.2", packets.IPPROTO_UDP, len(udp)) + udp
    message = struct.pack("!BBHI", 3, 3, 0, 0) + inner
    reply = packets.parse_icmp4_message(message, "10.0.9.2")
    assert isinstance(reply, packets.IcmpError) and reply.is_port_unreachable
    assert (reply.quote.sport, reply.quote.dport) == (20001, 33434)
    tcp = packets.build_tcp_syn(
        src="10.0.0.1", dst="10.0.9.2", sport=20002, dport=443, seq=0x00010203
    )
    inner = _ipv4_header("10.0.0.1", "10.0.9.2", packets.IPPROTO_TCP, 8) + tcp[:8]
    reply = packets.parse_icmp4_message(struct.pack("!BBHI", 11, 0, 0, 0) + inner, "10.0.1.1")
    assert isinstance(reply, packets.IcmpError)
    assert (reply.quote.sport, reply.quote.sequence) == (20002, 0x00010203)


def test_error_queue_message_gives_offender_and_type() -> None:
    offender = struct.pack("=HH4s8x", socket.AF_INET, 0, ipaddress.IPv4Address("10.0.2.1").packed)
    ee = struct.pack("=IBBBBII", 113, packets.SO_EE_ORIGIN_ICMP, 11, 0, 0, 0, 0) + offender
    seq = packets.encode_sequence(2, 0, 3)
    data = _our_echo(seq)
    anc = [(packets.SOL_IP, packets.IP_RECVERR, ee)]
    err = packets.parse_error_queue(
        data, anc, protocol=packets.IPPROTO_ICMP, destination="10.0.9.2"
    )
    assert err is not None and err.responder == "10.0.2.1" and err.is_time_exceeded
    assert err.quote.sequence == seq and err.quote.ident == 777
    local = struct.pack("=IBBBBII", 90, 1, 0, 0, 0, 1400, 0) + offender  # SO_EE_ORIGIN_LOCAL
    assert packets.parse_error_queue(data, [(0, 11, local)], protocol=1, destination=None) is None
    offender6 = struct.pack(
        "=HHI16sI", socket.AF_INET6, 0, 0, ipaddress.IPv6Address("fd00::7").packed, 0
    )
    ee6 = struct.pack("=IBBBBII", 113, packets.SO_EE_ORIGIN_ICMP6, 3, 0, 0, 0, 0) + offender6
    err6 = packets.parse_error_queue(data, [(41, 25, ee6)], protocol=58, destination="fd00::9")
    assert err6 is not None and err6.responder == "fd00::7" and err6.is_time_exceeded


def test_timestamp_control_message() -> None:
    anc = [(packets.SOL_SOCKET, packets.SO_TIMESTAMPNS, struct.pack("=qq", 1700000000, 5))]
    assert packets.parse_timestamp(anc) == 1700000000 * 1_000_000_000 + 5
    assert packets.parse_timestamp([]) is None
