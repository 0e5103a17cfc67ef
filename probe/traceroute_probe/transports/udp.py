"""UDP through datagram sockets (no capability): one connected socket per flow from the
flow's source port; Time Exceeded / Port Unreachable come from its error queue."""

from __future__ import annotations

from dataclasses import dataclass, replace

from .. import packets
from ..events import Event, ProbeId, RejectReason
from ..flows import Flow
from ..sockets import Received, SocketOpenError, open_udp
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
class UdpMatcher:
    """What one flow's UDP socket read, matched: only its error queue tells anything
    (the sequence is in the quoted payload); data from the destination is ignored."""

    destination: Destination
    flow: Flow
    ids: RunIdentity

    def match(self, item: Received) -> list[Event]:
        if not item.from_error_queue:
            return []
        error = packets.parse_error_queue(
            item.data,
            item.ancdata,
            protocol=packets.IPPROTO_UDP,
            destination=item.address,
        )
        if error is None:
            return []  # a local error (no reply), or nothing we can read
        target = self.destination.index
        payload = error.quote.payload
        sequence = self.ids.udp_sequence(payload)
        # The kernel matched the quote to this connected socket; check what it reports.
        problem = first_failed(
            (same_address(error.quote.dst, self.destination.address), RejectReason.DESTINATION),
            (item.port == self.flow.dst_port, RejectReason.FLOW),
            (len(payload) < 6 or self.ids.payload_ok(payload), RejectReason.TOKEN),
            (sequence is not None, RejectReason.SEQUENCE),  # an 8-byte quote: no payload
        )
        if problem is not None or sequence is None:
            return rejected(target, problem or RejectReason.SEQUENCE)
        return self.ids.answer(target, self.flow.index, sequence, rx_time(item), error)


class UdpTransport:
    one_in_flight = False

    def __init__(self, ids: RunIdentity, watcher: Watcher, socket_mode: str) -> None:
        self.ids = ids
        self.watcher = watcher
        self.socket_mode = socket_mode
        self.sockets: dict[tuple[int, int], FlowSocket] = {}  # (target, flow) -> socket

    def open(self, destination: Destination, flows: list[Flow]) -> None:
        if self.socket_mode == "raw":
            raise SocketOpenError("socket", "udp probing uses datagram sockets only")
        for i, flow in enumerate(flows):
            bound, sock = bind_free(
                flow,
                lambda f: open_udp(destination.family, f.src_port, destination.address, f.dst_port),
            )
            sock.enable_recverr()
            flows[i] = replace(flow, src_port=bound.src_port)
            endpoint = FlowSocket(sock, UdpMatcher(destination, flows[i], self.ids).match)
            self.sockets[(destination.index, flow.index)] = endpoint
            self.watcher.watch(endpoint)

    def send(self, probe: ProbeId) -> int:
        sequence = self.ids.sequence(probe.ttl, probe.attempt)
        payload = packets.udp_payload(sequence=sequence, run_token=self.ids.token)
        return self.sockets[(probe.target, probe.flow)].sock.send(payload, None, probe.ttl)

    def release(self, probe: ProbeId) -> None:
        pass

    def close(self) -> None:
        for endpoint in self.sockets.values():
            endpoint.sock.close()
