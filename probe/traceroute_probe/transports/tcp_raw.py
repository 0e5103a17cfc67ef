"""TCP SYN probes through raw sockets (CAP_NET_RAW): per family one raw TCP socket (for
SYN-ACK / RST of the destination) and one raw ICMP socket (for the errors quoting our
SYNs), shared by every target; replies are routed by address and source port."""

from __future__ import annotations

from functools import partial

from .. import packets
from ..events import Event, ProbeId, RejectReason
from ..flows import Flow
from ..packets import IcmpError, TcpReply
from ..sockets import Received, open_icmp, open_raw, source_address
from .base import Destination, RawSocket, RunIdentity, Watcher, rejected
from .icmp_raw import parse_icmp


def parse_tcp(family: int, item: Received) -> packets.Reply | None:
    """What a raw TCP socket of ``family`` read (IPv4: with its IP header)."""
    if family == 4:
        return packets.parse_tcp4_packet(item.data)
    return packets.parse_tcp_segment(item.data, item.address or "", 6)


class TcpRawTransport:
    one_in_flight = False

    def __init__(self, ids: RunIdentity, watcher: Watcher, dst_port: int) -> None:
        self.ids = ids
        self.watcher = watcher
        self.dst_port = dst_port
        self.sockets: dict[tuple[str, int], RawSocket] = {}  # (tcp | icmp, family) -> socket
        self.targets: dict[int, tuple[Destination, list[Flow], str]] = {}  # with source
        self.routes: dict[tuple[str, int], tuple[int, int]] = {}  # (address, port) -> target, flow
        self.by_address: dict[str, int] = {}  # address -> target

    def _socket(self, kind: str, family: int) -> RawSocket:
        raw = self.sockets.get((kind, family))
        if raw is None:
            if kind == "tcp":
                raw = RawSocket(
                    open_raw(family, packets.IPPROTO_TCP),
                    partial(parse_tcp, family),
                    self.match,
                )
            else:
                raw = RawSocket(
                    open_icmp(family, raw=True), partial(parse_icmp, family), self.match
                )
            self.sockets[(kind, family)] = raw
            self.watcher.watch(raw)
        return raw

    def open(self, destination: Destination, flows: list[Flow]) -> None:
        self._socket("tcp", destination.family)
        self._socket("icmp", destination.family)
        self.carry(destination, flows, source_address(destination.address, destination.family))

    def carry(self, destination: Destination, flows: list[Flow], source: str) -> None:
        """Route what names ``destination`` and its flows' source ports to them."""
        self.targets[destination.index] = (destination, flows, source)
        self.by_address[destination.address] = destination.index
        for flow in flows:
            self.routes[(destination.address, flow.src_port)] = (destination.index, flow.index)

    def send(self, probe: ProbeId) -> int:
        destination, flows, source = self.targets[probe.target]
        flow = flows[probe.flow]
        sequence = self.ids.sequence(probe.ttl, probe.attempt)
        segment = packets.build_tcp_syn(
            src=source,
            dst=destination.address,
            sport=flow.src_port,
            dport=flow.dst_port,
            seq=(self.ids.tcp_nonce << 16) | sequence,
        )
        raw = self.sockets[("tcp", destination.family)]
        return raw.sock.send(segment, (destination.address, 0), probe.ttl)

    def match(self, reply: packets.Reply, rx_ns: int) -> list[Event]:
        if isinstance(reply, TcpReply):
            return self._match_answer(reply, rx_ns)
        if isinstance(reply, IcmpError):
            return self._match_error(reply, rx_ns)
        return []

    def _match_answer(self, reply: TcpReply, rx_ns: int) -> list[Event]:
        """The destination's SYN-ACK or RST: it acknowledges our sequence number + 1."""
        route = self.routes.get((reply.responder, reply.dport))
        if route is None or not reply.flags & (packets.TCP_RST | packets.TCP_SYN):
            return []  # not to one of our flows, or not an answer to a SYN
        if reply.sport != self.dst_port:
            return rejected(route[0], RejectReason.FLOW)
        seq = (reply.ack - 1) & 0xFFFFFFFF
        if seq >> 16 != self.ids.tcp_nonce:
            return rejected(route[0], RejectReason.SEQUENCE)
        return self.ids.answer(*route, seq & 0xFFFF, rx_ns, reply)

    def _match_error(self, reply: IcmpError, rx_ns: int) -> list[Event]:
        """An ICMP error quoting one of our SYNs (ports and sequence number)."""
        quote = reply.quote
        target = self.by_address.get(quote.dst or "")
        if target is None:
            return []  # foreign: not about one of our targets
        if quote.protocol != packets.IPPROTO_TCP:
            return rejected(target, RejectReason.PROTOCOL)
        route = self.routes.get((quote.dst or "", quote.sport or 0))
        if route is None or quote.dport != self.dst_port:
            return rejected(target, RejectReason.FLOW)
        if not reply.checksum_ok or not quote.checksums_ok:
            return rejected(target, RejectReason.CHECKSUM)
        if quote.sequence is None or quote.sequence >> 16 != self.ids.tcp_nonce:
            return rejected(target, RejectReason.SEQUENCE)
        return self.ids.answer(*route, quote.sequence & 0xFFFF, rx_ns, reply)

    def release(self, probe: ProbeId) -> None:
        pass

    def close(self) -> None:
        for raw in self.sockets.values():
            raw.sock.close()
