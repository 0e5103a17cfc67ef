"""Raw ICMP sockets read every ICMP of the host, unverified: errors and echo replies that
name one of our targets are checked down to their checksums."""

from __future__ import annotations

import struct

import pytest
from traceroute_probe import packets
from traceroute_probe.events import Answer, Event, Rejected, RejectReason
from traceroute_probe.flows import derive_flows
from traceroute_probe.transports import Destination, RunIdentity
from traceroute_probe.transports.icmp_raw import IcmpRawTransport

from .forge import (
    SOURCE4,
    SOURCE6,
    echo,
    echo6,
    flip,
    ipv4,
    ipv6,
    time_exceeded4,
    time_exceeded6,
    with_checksum,
)

TARGET4, TARGET6 = "10.0.9.2", "fd00:9::2"
IDS = RunIdentity(0x0BADC0DE)
FLOWS = derive_flows("raw", 3, 0)


class _NoWatcher:
    def watch(self, endpoint: object, *, writable: bool = False) -> None:
        raise AssertionError("matching only")

    def unwatch(self, endpoint: object) -> None:
        raise AssertionError("matching only")


def _transport() -> IcmpRawTransport:
    transport = IcmpRawTransport(IDS, _NoWatcher())
    transport.carry(Destination(0, TARGET4, 4), list(FLOWS))
    transport.carry(Destination(1, TARGET6, 6), list(FLOWS))
    return transport


def _match4(packet: bytes) -> list[Event]:
    reply = packets.parse_icmp4_packet(packet)
    assert reply is not None
    return _transport().match(reply, 5)


def _quoted4(ttl: int = 3, flow: int = 1, dst: str = TARGET4) -> bytes:
    return ipv4(SOURCE4, dst, packets.IPPROTO_ICMP, echo(IDS, FLOWS[flow], ttl))


def test_a_genuine_time_exceeded_answers_its_probe() -> None:
    (answer,) = _match4(time_exceeded4("10.0.3.1", _quoted4()))
    assert isinstance(answer, Answer)
    assert (answer.probe.target, answer.probe.flow, answer.probe.ttl) == (0, 1, 3)


def test_an_rfc792_quote_is_not_verifiable_and_still_answers() -> None:
    quoted = _quoted4()[: 20 + 8]  # the total length still says 36: cut off
    (answer,) = _match4(time_exceeded4("10.0.3.1", quoted))
    assert isinstance(answer, Answer)


@pytest.mark.parametrize(
    "corrupt",
    [
        lambda p: flip(p, 30),  # the error's ICMP checksum no longer adds up (quote byte)
        lambda p: flip(p, 22),  # the error's own checksum field
    ],
)
def test_an_error_with_a_bad_icmp_checksum_is_rejected(corrupt: object) -> None:
    packet = corrupt(time_exceeded4("10.0.3.1", _quoted4()))  # type: ignore[operator]
    assert _match4(packet) == [Rejected(0, RejectReason.CHECKSUM)]


def test_a_quote_with_a_bad_ip_header_checksum_is_rejected() -> None:
    quoted = _quoted4()
    quoted = quoted[:8] + b"\x05" + quoted[9:]  # TTL changed, header checksum not
    assert _match4(time_exceeded4("10.0.3.1", quoted)) == [Rejected(0, RejectReason.CHECKSUM)]


def test_a_quote_of_an_echo_with_a_bad_checksum_is_rejected() -> None:
    quoted = ipv4(SOURCE4, TARGET4, packets.IPPROTO_ICMP, flip(echo(IDS, FLOWS[1], 3), 14))
    assert _match4(time_exceeded4("10.0.3.1", quoted)) == [Rejected(0, RejectReason.CHECKSUM)]


def test_foreign_errors_are_ignored_and_ours_of_the_wrong_kind_rejected() -> None:
    assert _match4(time_exceeded4("10.0.3.1", _quoted4(dst="10.0.77.7"))) == []
    udp = ipv4(SOURCE4, TARGET4, packets.IPPROTO_UDP, struct.pack("!HHHH", 1, 2, 8, 0))
    assert _match4(time_exceeded4("10.0.3.1", udp)) == [Rejected(0, RejectReason.PROTOCOL)]
    other_id = packets.build_icmp_echo(
        family=4,
        ident=FLOWS[0].icmp_id ^ 0x8000,
        sequence=IDS.sequence(3, 0),
        run_token=IDS.token,
        flow_sum=FLOWS[0].flow_sum,
    )
    quoted = ipv4(SOURCE4, TARGET4, packets.IPPROTO_ICMP, other_id)
    assert _match4(time_exceeded4("10.0.3.1", quoted)) == [Rejected(0, RejectReason.FLOW)]


def test_echo_replies_are_checked_for_their_checksum() -> None:
    request = echo(IDS, FLOWS[2], 5)
    reply = with_checksum(bytes([packets.ICMP4_ECHO_REPLY]) + request[1:], 2)
    (answer,) = _match4(ipv4(TARGET4, SOURCE4, packets.IPPROTO_ICMP, reply))
    assert isinstance(answer, Answer) and answer.probe.ttl == 5
    bad = ipv4(TARGET4, SOURCE4, packets.IPPROTO_ICMP, flip(reply, 10))
    assert _match4(bad) == [Rejected(0, RejectReason.CHECKSUM)]


def test_ipv6_quotes_are_verified_with_the_pseudo_header() -> None:
    transport = _transport()
    good = ipv6(SOURCE6, TARGET6, packets.IPPROTO_ICMPV6, echo6(IDS, FLOWS[0], 2, TARGET6))
    reply = packets.parse_icmp6_message(time_exceeded6(good), "fd00:2::1")
    assert reply is not None
    (answer,) = transport.match(reply, 5)
    assert isinstance(answer, Answer) and answer.probe.target == 1
    bad = packets.parse_icmp6_message(time_exceeded6(flip(good, 50)), "fd00:2::1")
    assert bad is not None
    assert transport.match(bad, 5) == [Rejected(1, RejectReason.CHECKSUM)]
