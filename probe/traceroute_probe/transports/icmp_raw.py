"""ICMP echo through raw sockets (CAP_NET_RAW): one socket per family shared by every
target; echo replies and the errors quoting our echo requests are routed to their target
and flow by address and identifier."""

from __future__ import annotations

from functools import partial

from .. import packets
from ..events import Event, ProbeId
from ..flows import Flow
from ..packets import EchoReply, IcmpError
from ..sockets import Received, open_icmp
from .base import Destination, RawSocket, RunIdentity, Watcher


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

    def _socket(self, family: int) -> RawSocket:
        raw = self.sockets.get(family)
        if raw is None:
            raw = RawSocket(open_icmp(family, raw=True), partial(parse_icmp, family), self.match)
            self.sockets[family] = raw
            self.watcher.watch(raw)
        return raw

    def open(self, destination: Destination, flows: list[Flow]) -> None:
        self._socket(destination.family)
        self.targets[destination.index] = (destination, flows)
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
        if isinstance(reply, EchoReply):
            route = self.routes.get((reply.responder, reply.ident))
            if route is None or not self.ids.payload_ok(reply.payload):
                return []
            return self.ids.answer(*route, reply.sequence, rx_ns, reply)
        if not isinstance(reply, IcmpError):
            return []
        quote = reply.quote
        if (
            quote.dst is None
            or quote.protocol not in (packets.IPPROTO_ICMP, packets.IPPROTO_ICMPV6)
            or quote.ident is None
            or quote.sequence is None
        ):
            return []
        route = self.routes.get((quote.dst, quote.ident))
        if route is None or not self.ids.payload_ok(quote.payload):
            return []
        return self.ids.answer(*route, quote.sequence, rx_ns, reply)

    def release(self, probe: ProbeId) -> None:
        pass

    def close(self) -> None:
        for raw in self.sockets.values():
            raw.sock.close()
