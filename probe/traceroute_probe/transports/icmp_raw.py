"""ICMP echo through raw sockets (CAP_NET_RAW): one socket per family shared by every
target; echo replies and the errors quoting our echo requests are routed to their target
and flow by address and identifier."""

from __future__ import annotations

from functools import partial

from .. import packets
from ..events import Event, ProbeId, RejectReason
from ..flows import Flow
from ..packets import EchoReply, IcmpError
from ..sockets import Received, open_icmp
from .base import Destination, RawSocket, RunIdentity, Watcher, rejected


def parse_icmp(family: int, item: Received) -> packets.Reply | None:
    """What a raw ICMP socket of ``family`` read (IPv4: with its IP header)."""
    if family == 4:
        return packets.parse_icmp4_packet(item.data)
    return packets.parse_icmp6_message(item.data, item.address or "")


class IcmpRawTransport:
    one_in_flight = False

    def __init__(self, ids: RunIdentity, watcher: Watcher) -> None:
        self.ids = ids
        self.watcher = watcher
        self.sockets: dict[int, RawSocket] = {}  # family -> socket
        self.targets: dict[int, tuple[Destination, list[Flow]]] = {}
        self.routes: dict[tuple[str, int], tuple[int, int]] = {}  # (address, id) -> target, flow
        self.by_address: dict[str, int] = {}  # address -> target

    def _socket(self, family: int) -> RawSocket:
        raw = self.sockets.get(family)
        if raw is None:
            raw = RawSocket(open_icmp(family, raw=True), partial(parse_icmp, family), self.match)
            self.sockets[family] = raw
            self.watcher.watch(raw)
        return raw

    def open(self, destination: Destination, flows: list[Flow]) -> None:
        self._socket(destination.family)
        self.carry(destination, flows)

    def carry(self, destination: Destination, flows: list[Flow]) -> None:
        """Route what names ``destination`` and its flows' identifiers to them."""
        self.targets[destination.index] = (destination, flows)
        self.by_address[destination.address] = destination.index
        for flow in flows:
            self.routes[(destination.address, flow.icmp_id)] = (destination.index, flow.index)

    def send(self, probe: ProbeId) -> int:
        destination, flows = self.targets[probe.target]
        flow = flows[probe.flow]
        packet = packets.build_icmp_echo(
            family=destination.family,
            ident=flow.icmp_id,
            sequence=self.ids.sequence(probe.ttl, probe.attempt),
            run_token=self.ids.token,
            flow_sum=flow.flow_sum,
        )
        raw = self.sockets[destination.family]
        return raw.sock.send(packet, (destination.address, 0), probe.ttl)

    def match(self, reply: packets.Reply, rx_ns: int) -> list[Event]:
        """A raw socket reads all ICMP of the host: what does not name one of our targets
        is foreign and ignored; what names one but fails a check is rejected."""
        if isinstance(reply, EchoReply):
            return self._match_echo(reply, rx_ns)
        if isinstance(reply, IcmpError):
            return self._match_error(reply, rx_ns)
        return []

    def _match_echo(self, reply: EchoReply, rx_ns: int) -> list[Event]:
        route = self.routes.get((reply.responder, reply.ident))
        if route is None:
            return []
        if not reply.checksum_ok:
            return rejected(route[0], RejectReason.CHECKSUM)
        if not self.ids.payload_ok(reply.payload):
            return rejected(route[0], RejectReason.TOKEN)
        return self.ids.answer(*route, reply.sequence, rx_ns, reply)

    def _match_error(self, reply: IcmpError, rx_ns: int) -> list[Event]:
        quote = reply.quote
        target = self.by_address.get(quote.dst or "")
        if target is None:
            return []
        route = self.routes.get((quote.dst or "", quote.ident or 0))
        if quote.protocol not in (packets.IPPROTO_ICMP, packets.IPPROTO_ICMPV6):
            return rejected(target, RejectReason.PROTOCOL)
        if route is None:
            return rejected(target, RejectReason.FLOW)
        if not reply.checksum_ok:
            return rejected(target, RejectReason.CHECKSUM)
        _destination, flows = self.targets[route[0]]
        problem = self.ids.echo_quote_problem(quote, flows[route[1]])
        if problem is not None or quote.sequence is None:
            return rejected(target, problem or RejectReason.SEQUENCE)
        return self.ids.answer(*route, quote.sequence, rx_ns, reply)

    def release(self, probe: ProbeId) -> None:
        pass

    def close(self) -> None:
        for raw in self.sockets.values():
            raw.sock.close()
