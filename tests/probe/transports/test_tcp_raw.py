"""Raw TCP: ICMP errors quoting our SYNs are checked on the quoted ports, sequence number
and checksums; answers of the destination on ports and the acknowledged nonce."""

from __future__ import annotations

import struct

from traceroute_probe import packets
from traceroute_probe.events import Answer, Event, Rejected, RejectReason
from traceroute_probe.flows import derive_flows
from traceroute_probe.transports import Destination, RunIdentity
from traceroute_probe.transports.tcp_raw import TcpRawTransport

from .forge import SOURCE4, flip, ipv4, time_exceeded4, with_checksum

TARGET = "10.0.9.2"
IDS = RunIdentity(0x12345678)
FLOWS = derive_flows("tcp", 2, 443)


class _NoWatcher:
    def watch(self, endpoint: object, *, writable: bool = False) -> None:
        raise AssertionError("matching only")

    def unwatch(self, endpoint: object) -> None:
        raise AssertionError("matching only")


def _transport() -> TcpRawTransport:
    transport = TcpRawTransport(IDS, _NoWatcher(), 443)
    transport.carry(Destination(0, TARGET, 4), list(FLOWS), SOURCE4)
    return transport


def _syn(ttl: int, *, sport: int | None = None, dport: int = 443) -> bytes:
    return packets.build_tcp_syn(
        src=SOURCE4,
        dst=TARGET,
        sport=FLOWS[1].src_port if sport is None else sport,
        dport=dport,
        seq=(IDS.tcp_nonce << 16) | IDS.sequence(ttl, 0),
    )


def _match(packet: bytes) -> list[Event]:
    reply = packets.parse_icmp4_packet(packet) or packets.parse_tcp4_packet(packet)
    assert reply is not None
    return _transport().match(reply, 5)


def _error(segment: bytes) -> bytes:
    return time_exceeded4("10.0.2.1", ipv4(SOURCE4, TARGET, packets.IPPROTO_TCP, segment))


def test_a_genuine_error_answers_its_probe() -> None:
    (answer,) = _match(_error(_syn(2)))
    assert isinstance(answer, Answer) and (answer.probe.flow, answer.probe.ttl) == (1, 2)


def test_errors_quoting_other_ports_or_a_bad_segment_are_rejected() -> None:
    assert _match(_error(_syn(2, sport=FLOWS[1].src_port + 1))) == [Rejected(0, RejectReason.FLOW)]
    assert _match(_error(_syn(2, dport=80))) == [Rejected(0, RejectReason.FLOW)]
    assert _match(_error(flip(_syn(2), 17))) == [Rejected(0, RejectReason.CHECKSUM)]
    assert _match(flip(_error(_syn(2)), 23)) == [Rejected(0, RejectReason.CHECKSUM)]


def test_a_reset_acknowledging_another_runs_nonce_is_rejected() -> None:
    def reset(ack: int) -> bytes:
        segment = struct.pack(
            "!HHIIBBHHH", 443, FLOWS[0].src_port, 0, ack, 5 << 4, packets.TCP_RST, 0, 0, 0
        )
        return ipv4(TARGET, SOURCE4, packets.IPPROTO_TCP, with_checksum(segment, 16))

    ours = (IDS.tcp_nonce << 16) | IDS.sequence(4, 0)
    (answer,) = _match(reset(ours + 1))
    assert isinstance(answer, Answer) and answer.probe.ttl == 4
    assert _match(reset(((IDS.tcp_nonce ^ 1) << 16) + 1)) == [Rejected(0, RejectReason.SEQUENCE)]
