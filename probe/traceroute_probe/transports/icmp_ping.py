"""ICMP echo through "ping" datagram sockets (no capability): one socket per flow, bound
to the flow's identifier; Time Exceeded / Unreachable come from its error queue."""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import partial

from .. import packets
from ..events import Event, ProbeId, RejectReason
from ..flows import Flow
from ..packets import EchoReply
from ..sockets import ProbeSocket, Received, bind_ping_ident, open_icmp, ping_ident
from .base import (
    Destination,
    FlowSocket,
    RunIdentity,
    Watcher,
    bind_free,
    first_failed,
    rejected,
    rx_time,
    same_address,
)


@dataclass(frozen=True)
class PingMatcher:
    """What one flow's ping socket read, matched: errors quoting this flow's echo
    requests to this destination (error queue), echo replies of the destination (data).

    The kernel hands a ping socket every error quoting its identifier, whatever the
    quoted destination: the original destination it reports (``msg_name`` of the error
    queue read) must be this target's."""

    destination: Destination
    flow: Flow
    ids: RunIdentity

    def match(self, item: Received) -> list[Event]:
        if item.from_error_queue:
            return self._match_error(item)
        family = self.destination.family
        message = (
            packets.parse_icmp4_message(item.data, item.address or "")
            if family == 4
            else packets.parse_icmp6_message(item.data, item.address or "")
        )
        if not isinstance(message, EchoReply):
            return []
        problem = first_failed(
            (same_address(message.responder, self.destination.address), RejectReason.DESTINATION),
            (message.ident == self.flow.icmp_id, RejectReason.FLOW),
            (message.checksum_ok, RejectReason.CHECKSUM),
            (self.ids.payload_ok(message.payload), RejectReason.TOKEN),
        )
        if problem is not None:
            return rejected(self.destination.index, problem)
        return self._answer(message.sequence, rx_time(item), message)

    def _match_error(self, item: Received) -> list[Event]:
        family = self.destination.family
        error = packets.parse_error_queue(
            item.data,
            item.ancdata,
            protocol=packets.IPPROTO_ICMP if family == 4 else packets.IPPROTO_ICMPV6,
            destination=item.address,
        )
        if error is None:
            return []  # a local error (no reply), or nothing we can read
        target = self.destination.index
        if not same_address(error.quote.dst, self.destination.address):
            return rejected(target, RejectReason.DESTINATION)
        problem = self.ids.echo_quote_problem(error.quote, self.flow)
        if problem is not None or error.quote.sequence is None:
            return rejected(target, problem or RejectReason.SEQUENCE)
        return self._answer(error.quote.sequence, rx_time(item), error)

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
