"""Replies as routers (and forgers) send them, for the matchers: raw packets with their
checksums filled in, and error-queue messages as the kernel hands them to a socket."""

from __future__ import annotations

import ipaddress
import socket
import struct

from traceroute_probe import packets
from traceroute_probe.flows import Flow
from traceroute_probe.sockets import Received
from traceroute_probe.transports import RunIdentity

SOURCE4, SOURCE6 = "10.0.0.1", "fd00::1"


def with_checksum(data: bytes, offset: int, pseudo: bytes = b"") -> bytes:
    cleared = data[:offset] + b"\x00\x00" + data[offset + 2 :]
    checksum = packets.internet_checksum(pseudo + cleared)
    return cleared[:offset] + struct.pack("!H", checksum) + cleared[offset + 2 :]


def ipv4(src: str, dst: str, protocol: int, payload: bytes) -> bytes:
    header = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,
        0,
        20 + len(payload),
        0x1234,
        0,
        1,
        protocol,
        0,
        ipaddress.IPv4Address(src).packed,
        ipaddress.IPv4Address(dst).packed,
    )
    return with_checksum(header, 10) + payload


def ipv6(src: str, dst: str, next_header: int, payload: bytes) -> bytes:
    return (
        struct.pack(
            "!IHBB16s16s",
            6 << 28,
            len(payload),
            next_header,
            1,
            ipaddress.IPv6Address(src).packed,
            ipaddress.IPv6Address(dst).packed,
        )
        + payload
    )


def echo(ids: RunIdentity, flow: Flow, ttl: int, family: int = 4, attempt: int = 0) -> bytes:
    """The echo request of (flow, ttl) as built (IPv4: as it left; IPv6: see echo6)."""
    return packets.build_icmp_echo(
        family=family,
        ident=flow.icmp_id,
        sequence=ids.sequence(ttl, attempt),
        run_token=ids.token,
        flow_sum=flow.flow_sum,
    )


def pseudo6(src: str, dst: str, protocol: int, length: int) -> bytes:
    return (
        ipaddress.IPv6Address(src).packed
        + ipaddress.IPv6Address(dst).packed
        + struct.pack("!IxxxB", length, protocol)
    )


def echo6(ids: RunIdentity, flow: Flow, ttl: int, dst: str) -> bytes:
    """The ICMPv6 echo request as it left: the kernel fills the checksum (pseudo-header)."""
    packet = echo(ids, flow, ttl, family=6)
    return with_checksum(packet, 2, pseudo6(SOURCE6, dst, packets.IPPROTO_ICMPV6, len(packet)))


def time_exceeded4(responder: str, quoted: bytes, *, icmp_type: int = 11) -> bytes:
    """A router's ICMPv4 error quoting ``quoted`` (an IPv4 packet), as a raw socket reads it."""
    message = with_checksum(struct.pack("!BBHI", icmp_type, 0, 0, 0) + quoted, 2)
    return ipv4(responder, SOURCE4, packets.IPPROTO_ICMP, message)


def time_exceeded6(quoted: bytes) -> bytes:
    """An ICMPv6 Time Exceeded as a raw ICMPv6 socket reads it (no IPv6 header; the
    kernel verified its checksum)."""
    return struct.pack("!BBHI", 3, 0, 0, 0) + quoted


def flip(data: bytes, offset: int) -> bytes:
    """One bit of ``data`` changed: what a corrupting link or a careless forger sends."""
    return data[:offset] + bytes([data[offset] ^ 0x01]) + data[offset + 1 :]


def error_queue(
    data: bytes,
    *,
    offender: str,
    original: str,
    port: int = 0,
    icmp_type: int = 11,
    family: int = 4,
) -> Received:
    """One MSG_ERRQUEUE read: the quote from the transport header (ping, TCP) or the
    payload (UDP) on, the offender in the extended error, the original destination in
    msg_name."""
    if family == 4:
        sockaddr = struct.pack("=HH4s8x", socket.AF_INET, 0, ipaddress.IPv4Address(offender).packed)
        ee = struct.pack("=IBBBBII", 113, packets.SO_EE_ORIGIN_ICMP, icmp_type, 0, 0, 0, 0)
        level, kind = packets.SOL_IP, packets.IP_RECVERR
    else:
        sockaddr = struct.pack(
            "=HHI16sI", socket.AF_INET6, 0, 0, ipaddress.IPv6Address(offender).packed, 0
        )
        ee = struct.pack("=IBBBBII", 113, packets.SO_EE_ORIGIN_ICMP6, icmp_type, 0, 0, 0, 0)
        level, kind = packets.SOL_IPV6, packets.IPV6_RECVERR
    return Received(data, [(level, kind, ee + sockaddr)], original, 5, True, port)
