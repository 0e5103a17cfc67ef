"""ICMP echo through "ping" datagram sockets (no capability): one socket per flow, bound
to the flow's identifier; Time Exceeded / Unreachable come from its error queue."""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import partial

from .. import packets
from ..events import Event, ProbeId
from ..flows import Flow
from ..packets import EchoReply
from ..sockets import ProbeSocket, Received, bind_ping_ident, open_icmp, ping_ident
from .base import Destination, FlowSocket, RunIdentity, Watcher, bind_free, rx_time


@dataclass(frozen=True)
class PingMatcher:
    """What one flow's ping socket read, matched: errors quoting this flow's echo
    requests (error queue), echo replies of the destination (data)."""

    destination: Destination
    flow: Flow
    ids: RunIdentity

    def match(self, item: Received) -> list[Event]:
        destination = self.destination
        family = destination.family
        if item.from_error_queue:
            error = packets.parse_error_queue(
                item.data,
                item.ancdata,
                protocol=packets.IPPROTO_ICMP if family == 4 else packets.IPPROTO_ICMPV6,
                destination=destination.address,
            )
            if (
                error is None
                or error.quote.ident != self.flow.icmp_id
                or not self.ids.payload_ok(error.quote.payload)
                or error.quote.sequence is None
            ):
                return []
            return self._answer(error.quote.sequence, rx_time(item), error)
        message = (
            packets.parse_icmp4_message(item.data, item.address or "")
            if family == 4
            else packets.parse_icmp6_message(item.data, item.address or "")
        )
        if (
            isinstance(message, EchoReply)
            and message.responder == destination.address
            and self.ids.payload_ok(message.payload)
        ):
            return self._answer(message.sequence, rx_time(item), message)
        return []

    def _answer(self, sequence: int, rx_ns: int, reply: packets.Reply) -> list[Event]:
        return self.ids.answer(self.destination.index, self.flow.index, sequence, rx_ns, reply)


def _bind_ping_flow(sock: ProbeSocket, flow: Flow) -> None:
    bind_ping_ident(sock, flow.icmp_id)


class IcmpPingTransport:
    one_in_flight = False

    def __init__(self, ids: RunIdentity, watcher: Watcher) -> None:
        self.ids = ids
        self.watcher = watcher
        # (target, flow) -> the flow's socket and what it is matched against
        self.sockets: dict[tuple[int, int], tuple[FlowSocket, PingMatcher]] = {}

    def open(self, destination: Destination, flows: list[Flow]) -> None:
        for i, flow in enumerate(flows):
            sock = open_icmp(destination.family, raw=False)
            try:
                bind_free(flow, partial(_bind_ping_flow, sock))
            except OSError:
                sock.close()
                raise
            sock.enable_recverr()
            # The identifier that bound (an alternative when the flow's own was taken).
            flows[i] = replace(flow, icmp_id=ping_ident(sock))
            matcher = PingMatcher(destination, flows[i], self.ids)
            endpoint = FlowSocket(sock, matcher.match)
            self.sockets[(destination.index, flow.index)] = (endpoint, matcher)
            self.watcher.watch(endpoint)

    def send(self, probe: ProbeId) -> int:
        endpoint, matcher = self.sockets[(probe.target, probe.flow)]
        flow = matcher.flow
        packet = packets.build_icmp_echo(
            family=matcher.destination.family,
            ident=flow.icmp_id,
            sequence=self.ids.sequence(probe.ttl, probe.attempt),
            run_token=self.ids.token,
            flow_sum=flow.flow_sum,
        )
        return endpoint.sock.send(packet, (matcher.destination.address, 0), probe.ttl)

    def release(self, probe: ProbeId) -> None:
        pass

    def close(self) -> None:
        for endpoint, _matcher in self.sockets.values():
            endpoint.sock.close()
