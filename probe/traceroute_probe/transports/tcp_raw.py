"""TCP SYN probes through raw sockets (CAP_NET_RAW): per family one raw TCP socket (for
SYN-ACK / RST of the destination) and one raw ICMP socket (for the errors quoting our
SYNs), shared by every target; replies are routed by address and source port."""

from __future__ import annotations

from functools import partial

from .. import packets
from ..events import Event, ProbeId
from ..flows import Flow
from ..packets import IcmpError, TcpReply
from ..sockets import Received, open_icmp, open_raw, source_address
from .base import Destination, RawSocket, RunIdentity, Watcher
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

    def _socket(self, kind: str, family: int) -> RawSocket:
        raw = self.sockets.get((kind, family))
        if raw is None:
            if kind == "tcp":
                raw = RawSocket(
                    open_raw(family, packets.IPPROTO_TCP), partial(parse_tcp, family), self.match
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
        source = source_address(destination.address, destination.family)
        self.targets[destination.index] = (destination, flows, source)
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
        if route is None or reply.sport != self.dst_port:
            return []
        if not reply.flags & (packets.TCP_RST | packets.TCP_SYN):
            return []
        seq = (reply.ack - 1) & 0xFFFFFFFF
        if seq >> 16 != self.ids.tcp_nonce:
            return []
        return self.ids.answer(*route, seq & 0xFFFF, rx_ns, reply)

    def _match_error(self, reply: IcmpError, rx_ns: int) -> list[Event]:
        """An ICMP error quoting one of our SYNs (ports and sequence number)."""
        quote = reply.quote
        if (
            quote.dst is None
            or quote.protocol != packets.IPPROTO_TCP
            or quote.sport is None
            or quote.sequence is None
            or quote.dport != self.dst_port
        ):
            return []
        route = self.routes.get((quote.dst, quote.sport))
        if route is None or quote.sequence >> 16 != self.ids.tcp_nonce:
            return []
        return self.ids.answer(*route, quote.sequence & 0xFFFF, rx_ns, reply)

    def release(self, probe: ProbeId) -> None:
        pass

    def close(self) -> None:
        for raw in self.sockets.values():
            raw.sock.close()
