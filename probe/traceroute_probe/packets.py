"""Probe packet building and defensive parsing of everything that comes back.

Every parser here takes untrusted bytes from the network and returns either a typed
value or ``None``; none of them raises on malformed input (the fuzz tests hold them to
that). Matching a reply to a probe happens in the transports; these functions only decode.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

IPPROTO_ICMP = 1
IPPROTO_TCP = 6
IPPROTO_UDP = 17
IPPROTO_ICMPV6 = 58

ICMP4_ECHO_REPLY = 0
ICMP4_DEST_UNREACH = 3
ICMP4_ECHO_REQUEST = 8
ICMP4_TIME_EXCEEDED = 11
ICMP4_PARAM_PROBLEM = 12
ICMP4_PORT_UNREACH_CODE = 3

ICMP6_DEST_UNREACH = 1
ICMP6_PACKET_TOO_BIG = 2
ICMP6_TIME_EXCEEDED = 3
ICMP6_PARAM_PROBLEM = 4
ICMP6_ECHO_REQUEST = 128
ICMP6_ECHO_REPLY = 129
ICMP6_PORT_UNREACH_CODE = 4

ICMP4_ERROR_TYPES = frozenset({ICMP4_DEST_UNREACH, ICMP4_TIME_EXCEEDED, ICMP4_PARAM_PROBLEM})
ICMP6_ERROR_TYPES = frozenset(
    {ICMP6_DEST_UNREACH, ICMP6_PACKET_TOO_BIG, ICMP6_TIME_EXCEEDED, ICMP6_PARAM_PROBLEM}
)

# IPv6 extension headers that may sit between the quoted IPv6 header and the transport.
_IPV6_EXTENSION_HEADERS = frozenset({0, 43, 60, 135, 139, 140})
_IPV6_FRAGMENT = 44
_IPV6_AH = 51
_IPV6_CHAINED = _IPV6_EXTENSION_HEADERS | {_IPV6_FRAGMENT, _IPV6_AH}

PAYLOAD_MAGIC = b"tR"
UDP_PAYLOAD_LEN = 8  # magic(2) + run token(4) + sequence(2)

TCP_SYN = 0x02
TCP_RST = 0x04


# --- sequence encoding -----------------------------------------------------------------

MAX_TTL = 255
MAX_ATTEMPTS = 16


def encode_sequence(ttl: int, attempt: int, nonce: int) -> int:
    """16-bit probe sequence: TTL in the high byte, attempt and a 4-bit run nonce below.

    The nonce rejects late replies to an earlier run that used the same (stable) flows.
    """
    if not 1 <= ttl <= MAX_TTL:
        raise ValueError(f"ttl out of range: {ttl}")
    if not 0 <= attempt < MAX_ATTEMPTS:
        raise ValueError(f"attempt out of range: {attempt}")
    return (ttl << 8) | (attempt << 4) | (nonce & 0x0F)


def decode_sequence(sequence: int) -> tuple[int, int, int]:
    """Inverse of :func:`encode_sequence`: (ttl, attempt, nonce)."""
    return (sequence >> 8) & 0xFF, (sequence >> 4) & 0x0F, sequence & 0x0F


# --- checksums ----------------------------------------------------------------------------


def ones_complement_sum(data: bytes) -> int:
    """RFC 1071 folded 16-bit one's complement sum (not inverted)."""
    if len(data) % 2:
        data += b"\x00"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def internet_checksum(data: bytes) -> int:
    return ~ones_complement_sum(data) & 0xFFFF


def checksum_ok(data: bytes) -> bool:
    """A message carrying its own Internet checksum sums to all ones."""
    return ones_complement_sum(data) == 0xFFFF


def transport_checksum_ok(protocol: int, src: str, dst: str, segment: bytes) -> bool:
    """The checksum of a complete ICMP, ICMPv6, TCP or UDP segment from ``src`` to ``dst``
    (all but ICMPv4 cover the pseudo-header; a UDP checksum 0 means none was sent)."""
    if protocol == IPPROTO_ICMP:
        return checksum_ok(segment)
    if protocol == IPPROTO_UDP and len(segment) >= 8 and segment[6:8] == b"\x00\x00":
        return True
    try:
        pseudo = _pseudo_header(src, dst, protocol, len(segment))
    except ValueError:
        return False
    return checksum_ok(pseudo + segment)


def _ones_sub(a: int, b: int) -> int:
    total = a + (~b & 0xFFFF)
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def icmp_echo_payload(
    *, echo_type: int, ident: int, sequence: int, run_token: int, flow_sum: int
) -> bytes:
    """Payload that makes the one's complement sum of the whole echo request equal
    ``flow_sum`` whatever the sequence is, so the ICMP checksum stays constant per flow.

    The kernel (ping sockets) or we (raw sockets) compute the checksum over
    type/code, identifier, sequence and payload; the last payload word compensates the
    sequence. ``flow_sum`` must be in 1..0xfffe (one's complement has two zeros).
    """
    if not 1 <= flow_sum <= 0xFFFE:
        raise ValueError("flow_sum must be in 1..0xfffe")
    head = struct.pack("!BBHHH", echo_type, 0, 0, ident, sequence)
    fixed = PAYLOAD_MAGIC + struct.pack("!I", run_token & 0xFFFFFFFF)
    partial = ones_complement_sum(head + fixed)
    compensation = _ones_sub(flow_sum, partial)
    return fixed + struct.pack("!H", compensation)


def build_icmp_echo(
    *, family: int, ident: int, sequence: int, run_token: int, flow_sum: int
) -> bytes:
    """A complete echo request (header + payload) with its checksum filled in.

    For ICMPv6 the kernel recomputes the checksum (it includes the pseudo-header); the
    pseudo-header is constant per flow, so the sent checksum is constant per flow too.
    """
    echo_type = ICMP4_ECHO_REQUEST if family == 4 else ICMP6_ECHO_REQUEST
    payload = icmp_echo_payload(
        echo_type=echo_type,
        ident=ident,
        sequence=sequence,
        run_token=run_token,
        flow_sum=flow_sum,
    )
    checksum = ~flow_sum & 0xFFFF
    return struct.pack("!BBHHH", echo_type, 0, checksum, ident, sequence) + payload


def udp_payload(*, sequence: int, run_token: int) -> bytes:
    return PAYLOAD_MAGIC + struct.pack("!IH", run_token & 0xFFFFFFFF, sequence)


def _pseudo_header(src: str, dst: str, proto: int, length: int) -> bytes:
    s = ipaddress.ip_address(src).packed
    d = ipaddress.ip_address(dst).packed
    if len(s) == 4:
        return s + d + struct.pack("!BBH", 0, proto, length)
    return s + d + struct.pack("!IxxxB", length, proto)


def build_tcp_syn(*, src: str, dst: str, sport: int, dport: int, seq: int) -> bytes:
    """A TCP SYN (with an MSS option, as real stacks send) including its checksum."""
    options = struct.pack("!BBH", 2, 4, 1460)
    offset_words = (20 + len(options)) // 4
    header = struct.pack(
        "!HHIIBBHHH", sport, dport, seq & 0xFFFFFFFF, 0, offset_words << 4, TCP_SYN, 64240, 0, 0
    )
    segment = header + options
    checksum = internet_checksum(_pseudo_header(src, dst, IPPROTO_TCP, len(segment)) + segment)
    return segment[:16] + struct.pack("!H", checksum) + segment[18:]


# --- parsed values -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class QuotedProbe:
    """The start of our own probe as quoted inside an ICMP error."""

    protocol: int
    src: str | None  # None when the quote came without an IP header (error queue)
    dst: str | None
    ident: int | None = None  # ICMP identifier
    sequence: int | None = None  # ICMP sequence, or TCP sequence number
    sport: int | None = None
    dport: int | None = None
    payload: bytes = b""
    checksum: int | None = None  # the quoted transport header's checksum field
    # Every checksum the quote lets us verify is right: the quoted IPv4 header's, and
    # the quoted transport segment's when it is quoted whole (True: nothing to verify).
    checksums_ok: bool = True


@dataclass(frozen=True, slots=True)
class IcmpError:
    responder: str
    family: int
    icmp_type: int
    icmp_code: int
    quote: QuotedProbe
    # The ICMP checksum of the error itself (True where the kernel verified it: error
    # queues, ICMPv6 raw sockets).
    checksum_ok: bool = True

    @property
    def is_time_exceeded(self) -> bool:
        return self.icmp_type == (ICMP4_TIME_EXCEEDED if self.family == 4 else ICMP6_TIME_EXCEEDED)

    @property
    def is_port_unreachable(self) -> bool:
        if self.family == 4:
            unreach, port_code = ICMP4_DEST_UNREACH, ICMP4_PORT_UNREACH_CODE
        else:
            unreach, port_code = ICMP6_DEST_UNREACH, ICMP6_PORT_UNREACH_CODE
        return self.icmp_type == unreach and self.icmp_code == port_code

    @property
    def is_unreachable(self) -> bool:
        return self.icmp_type == (ICMP4_DEST_UNREACH if self.family == 4 else ICMP6_DEST_UNREACH)


@dataclass(frozen=True, slots=True)
class EchoReply:
    responder: str
    family: int
    ident: int
    sequence: int
    payload: bytes
    checksum_ok: bool = True  # as IcmpError.checksum_ok


@dataclass(frozen=True, slots=True)
class TcpReply:
    responder: str
    family: int
    sport: int  # the responder's port (our destination port)
    dport: int  # our source port
    ack: int
    flags: int
    # No checksum here: a destination on this host (a pod beside the probe) sends its
    # SYN-ACK through veth with the checksum left for a NIC to fill (CHECKSUM_PARTIAL), so a
    # raw socket would see a bad one on a genuine answer. ICMP is always checksummed whole.


Reply = IcmpError | EchoReply | TcpReply


# --- parsers ---------------------------------------------------------------------------------


def _ip4(raw: bytes) -> str:
    return str(ipaddress.IPv4Address(raw))


def _ip6(raw: bytes) -> str:
    return str(ipaddress.IPv6Address(raw))


def parse_ipv4_header(packet: bytes) -> tuple[int, int, str, str, bytes] | None:
    """(header length, protocol, src, dst, rest) of an IPv4 packet; options skipped."""
    if len(packet) < 20 or packet[0] >> 4 != 4:
        return None
    ihl = (packet[0] & 0x0F) * 4
    if ihl < 20 or len(packet) < ihl:
        return None
    total_length = struct.unpack_from("!H", packet, 2)[0]
    # Quotes are often truncated (total length > what we got); never read past either.
    end = min(len(packet), total_length) if total_length >= ihl else len(packet)
    return ihl, packet[9], _ip4(packet[12:16]), _ip4(packet[16:20]), packet[ihl:end]


def _quote4_checksums_ok(packet: bytes, ihl: int, protocol: int, src: str, dst: str) -> bool:
    """The quoted IPv4 header's checksum, and its transport segment's if quoted whole."""
    if not checksum_ok(packet[:ihl]):
        return False
    total_length = struct.unpack_from("!H", packet, 2)[0]
    if total_length < ihl or total_length > len(packet):
        return True  # cut off: the transport checksum cannot be verified
    return transport_checksum_ok(protocol, src, dst, packet[ihl:total_length])


def _quote6_checksums_ok(packet: bytes, protocol: int, src: str, dst: str, data: bytes) -> bool:
    """The quoted transport segment's checksum when the quoted IPv6 packet is whole
    (``data``: the rest of ``packet`` from the transport header on)."""
    start, end = len(packet) - len(data), 40 + struct.unpack_from("!H", packet, 4)[0]
    if end > len(packet) or end < start:
        return True  # cut off: cannot be verified
    return transport_checksum_ok(protocol, src, dst, packet[start:end])


def parse_ipv6_header(packet: bytes) -> tuple[int, str, str, bytes] | None:
    """(upper-layer protocol, src, dst, upper-layer bytes), walking extension headers."""
    if len(packet) < 40 or packet[0] >> 4 != 6:
        return None
    next_header = packet[6]
    src, dst = _ip6(packet[8:24]), _ip6(packet[24:40])
    offset = 40
    for _ in range(8):  # bounded: hostile chains must not loop
        if next_header not in _IPV6_CHAINED:
            return next_header, src, dst, packet[offset:]
        step = _ipv6_extension(next_header, packet, offset)
        if step is None:
            return None
        next_header, length = step
        offset += length
        if offset > len(packet):
            return None
    return None


def _ipv6_extension(header: int, packet: bytes, offset: int) -> tuple[int, int] | None:
    """(next header, length) of the extension header at ``offset``, or None when it is
    cut off or a later fragment (only the first fragment carries the transport header)."""
    if header == _IPV6_FRAGMENT:
        if len(packet) < offset + 8 or struct.unpack_from("!H", packet, offset + 2)[0] & 0xFFF8:
            return None
        return packet[offset], 8
    if len(packet) < offset + 2:
        return None
    if header == _IPV6_AH:
        return packet[offset], (packet[offset + 1] + 2) * 4
    return packet[offset], (packet[offset + 1] + 1) * 8


def _transport_quote(
    protocol: int, src: str | None, dst: str | None, data: bytes, checksums_ok: bool = True
) -> QuotedProbe:
    """Decode what is left of our transport header inside an ICMP error quote."""
    if protocol in (IPPROTO_ICMP, IPPROTO_ICMPV6) and len(data) >= 8:
        checksum, ident, sequence = struct.unpack_from("!HHH", data, 2)
        return QuotedProbe(
            protocol, src, dst, ident, sequence, None, None, data[8:], checksum, checksums_ok
        )
    if protocol == IPPROTO_UDP and len(data) >= 8:
        sport, dport, _length, checksum = struct.unpack_from("!HHHH", data, 0)
        return QuotedProbe(
            protocol, src, dst, None, None, sport, dport, data[8:], checksum, checksums_ok
        )
    if protocol == IPPROTO_TCP and len(data) >= 8:
        sport, dport, seq = struct.unpack_from("!HHI", data, 0)
        checksum = struct.unpack_from("!H", data, 16)[0] if len(data) >= 18 else None
        return QuotedProbe(protocol, src, dst, None, seq, sport, dport, b"", checksum, checksums_ok)
    return QuotedProbe(protocol, src, dst, checksums_ok=checksums_ok)


def _rfc4884_quote(body: bytes, length_words: int, word: int) -> bytes:
    """The original-datagram part of an ICMP error body (RFC 4884 extensions cut off)."""
    if length_words and length_words * word <= len(body):
        return body[: length_words * word]
    return body


def parse_icmp4_message(message: bytes, responder: str) -> IcmpError | EchoReply | None:
    """An ICMPv4 message (no IP header) from ``responder``."""
    if len(message) < 8:
        return None
    icmp_type, icmp_code = message[0], message[1]
    if icmp_type == ICMP4_ECHO_REPLY:
        ident, sequence = struct.unpack_from("!HH", message, 4)
        return EchoReply(responder, 4, ident, sequence, message[8:], checksum_ok(message))
    if icmp_type not in ICMP4_ERROR_TYPES:
        return None
    body = _rfc4884_quote(message[8:], message[5], 4)
    inner = parse_ipv4_header(body)
    if inner is None:
        return None
    ihl, protocol, src, dst, transport = inner
    quote_ok = _quote4_checksums_ok(body, ihl, protocol, src, dst)
    return IcmpError(
        responder,
        4,
        icmp_type,
        icmp_code,
        _transport_quote(protocol, src, dst, transport, quote_ok),
        checksum_ok(message),
    )


def parse_icmp4_packet(packet: bytes) -> IcmpError | EchoReply | None:
    """What a raw IPv4 ICMP socket returns: IP header + ICMP message."""
    outer = parse_ipv4_header(packet)
    if outer is None or outer[1] != IPPROTO_ICMP:
        return None
    return parse_icmp4_message(outer[4], outer[2])


def parse_icmp6_message(message: bytes, responder: str) -> IcmpError | EchoReply | None:
    """What a raw ICMPv6 socket returns (the kernel strips the IPv6 header)."""
    if len(message) < 8:
        return None
    icmp_type, icmp_code = message[0], message[1]
    if icmp_type == ICMP6_ECHO_REPLY:
        ident, sequence = struct.unpack_from("!HH", message, 4)
        return EchoReply(responder, 6, ident, sequence, message[8:])
    if icmp_type not in ICMP6_ERROR_TYPES:
        return None
    length_words = message[4] if icmp_type in (ICMP6_DEST_UNREACH, ICMP6_TIME_EXCEEDED) else 0
    body = _rfc4884_quote(message[8:], length_words, 8)
    inner = parse_ipv6_header(body)
    if inner is None:
        return None
    protocol, src, dst, transport = inner
    quote_ok = _quote6_checksums_ok(body, protocol, src, dst, transport)
    # The outer ICMPv6 checksum covers a pseudo-header with our own address: the kernel
    # verifies it for ICMPv6 sockets (RFC 3542), ours or raw.
    return IcmpError(
        responder,
        6,
        icmp_type,
        icmp_code,
        _transport_quote(protocol, src, dst, transport, quote_ok),
    )


def parse_tcp_segment(segment: bytes, responder: str, family: int) -> TcpReply | None:
    if len(segment) < 20:
        return None
    sport, dport, _seq, ack, _offset, flags = struct.unpack_from("!HHIIBB", segment, 0)
    return TcpReply(responder, family, sport, dport, ack, flags)


def parse_tcp4_packet(packet: bytes) -> TcpReply | None:
    """What a raw IPv4 TCP socket returns: IP header + TCP segment."""
    outer = parse_ipv4_header(packet)
    if outer is None or outer[1] != IPPROTO_TCP:
        return None
    return parse_tcp_segment(outer[4], outer[2], 4)


# --- error queue (IP_RECVERR / IPV6_RECVERR) ----------------------------------------------

SOL_IP = 0
SOL_IPV6 = 41
SOL_SOCKET = 1
IP_RECVERR = 11
IPV6_RECVERR = 25
SO_TIMESTAMPNS = 35
SO_EE_ORIGIN_ICMP = 2
SO_EE_ORIGIN_ICMP6 = 3
_SOCK_EXTENDED_ERR = struct.Struct("=IBBBBII")
_AF_INET = 2
_AF_INET6 = 10


def _sockaddr_address(raw: bytes) -> str | None:
    if len(raw) < 2:
        return None
    family = struct.unpack_from("=H", raw, 0)[0]
    if family == _AF_INET and len(raw) >= 8:
        return _ip4(raw[4:8])
    if family == _AF_INET6 and len(raw) >= 24:
        return _ip6(raw[8:24])
    return None


def parse_timestamp(ancdata: list[tuple[int, int, bytes]]) -> int | None:
    """Kernel receive time (ns since the epoch) from an SCM_TIMESTAMPNS control message."""
    for level, kind, data in ancdata:
        if level == SOL_SOCKET and kind == SO_TIMESTAMPNS and len(data) >= 16:
            seconds, nanoseconds = struct.unpack_from("=qq", data, 0)
            return int(seconds) * 1_000_000_000 + int(nanoseconds)
    return None


def parse_error_queue(
    data: bytes,
    ancdata: list[tuple[int, int, bytes]],
    *,
    protocol: int,
    destination: str | None,
) -> IcmpError | None:
    """One message read with MSG_ERRQUEUE from a ping or UDP datagram socket.

    ``data`` is the quote as the kernel hands it over: from the ICMP header for ping
    sockets, from the UDP payload for UDP sockets. The responder is the offender address
    of the extended error; errors of local origin (e.g. EMSGSIZE) are not replies.
    """
    for level, kind, raw in ancdata:
        if (level, kind) not in ((SOL_IP, IP_RECVERR), (SOL_IPV6, IPV6_RECVERR)):
            continue
        if len(raw) < _SOCK_EXTENDED_ERR.size:
            return None
        _errno, origin, icmp_type, icmp_code, _pad, _info, _data = _SOCK_EXTENDED_ERR.unpack_from(
            raw, 0
        )
        if origin not in (SO_EE_ORIGIN_ICMP, SO_EE_ORIGIN_ICMP6):
            return None
        responder = _sockaddr_address(raw[_SOCK_EXTENDED_ERR.size :])
        if responder is None:
            return None
        family = 4 if origin == SO_EE_ORIGIN_ICMP else 6
        if protocol in (IPPROTO_ICMP, IPPROTO_ICMPV6):
            quote = _transport_quote(protocol, None, destination, data)
        else:
            # UDP: the kernel strips the UDP header and hands over the payload only.
            quote = QuotedProbe(protocol, None, destination, payload=data)
        return IcmpError(responder, family, icmp_type, icmp_code, quote)
    return None
