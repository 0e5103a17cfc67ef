"""TCP without capabilities: every probe is a non-blocking connect() from the flow's fixed
source port with the probe's TTL. A router's Time Exceeded lands in that socket's error
queue; the destination's SYN-ACK completes the connect, its RST refuses it (both:
reached). The kernel allows one socket per 4-tuple, so a flow carries one probe at a
time; the socket is closed at its outcome (SO_LINGER 0: a RST, no TIME_WAIT)."""

from __future__ import annotations

import struct
from dataclasses import replace

from .. import packets
from ..events import Event, FlowFreed, ProbeId, Rejected, RejectReason
from ..flows import Flow
from ..packets import TcpReply
from ..sockets import (
    ProbeSocket,
    Received,
    connect_outcome,
    reserve_tcp_port,
    start_tcp_connect,
)
from .base import Destination, RunIdentity, Watcher, bind_free, rejected, rx_time, same_address


class _Connect:
    """One connect probe in flight."""

    def __init__(
        self,
        transport: TcpConnectTransport,
        sock: ProbeSocket,
        probe: ProbeId,
        destination: Destination,
        flow: Flow,
    ) -> None:
        self.transport = transport
        self.sock = sock
        self.probe = probe
        self.destination = destination
        self.flow = flow

    def fileno(self) -> int:
        return self.sock.fileno()

    def read(self) -> list[Event]:
        return self.transport.outcome(self)


class TcpConnectTransport:
    one_in_flight = True

    def __init__(self, ids: RunIdentity, watcher: Watcher) -> None:
        self.ids = ids
        self.watcher = watcher
        self.targets: dict[int, tuple[Destination, list[Flow]]] = {}
        self.connecting: dict[tuple[int, int], _Connect] = {}  # (target, flow) -> in flight

    def open(self, destination: Destination, flows: list[Flow]) -> None:
        """Connect probes need no socket up front; check each flow's source port now."""
        for i, flow in enumerate(flows):
            bound, _ = bind_free(flow, lambda f: reserve_tcp_port(destination.family, f.src_port))
            flows[i] = replace(flow, src_port=bound.src_port)
        self.targets[destination.index] = (destination, flows)

    def send(self, probe: ProbeId) -> int:
        destination, flows = self.targets[probe.target]
        flow = flows[probe.flow]
        sock, sent_ns = start_tcp_connect(
            destination.family, flow.src_port, destination.address, flow.dst_port, probe.ttl
        )
        connect = _Connect(self, sock, probe, destination, flow)
        self.connecting[(probe.target, probe.flow)] = connect
        self.watcher.watch(connect, writable=True)
        return sent_ns

    def outcome(self, connect: _Connect) -> list[Event]:
        """What the connect learned, once it learned something: the flow is free again,
        and the answer if there is one (a local failure: none, the probe settles silent)."""
        probe = connect.probe
        if self.connecting.get((probe.target, probe.flow)) is not connect:
            return []
        outcome = connect_outcome(connect.sock)
        if outcome.kind == "pending":
            return []
        self._end((probe.target, probe.flow))
        events: list[Event] = [FlowFreed(probe.target, probe.flow)]
        sequence = self.ids.sequence(probe.ttl, probe.attempt)
        flow = connect.flow
        if outcome.kind == "icmp":
            for item in outcome.errors:
                matched = self._match_error(connect, item, sequence)
                events += matched
                if any(not isinstance(event, Rejected) for event in matched):
                    break
        elif outcome.kind in ("connected", "refused"):
            answer = TcpReply(
                responder=connect.destination.address,
                family=connect.destination.family,
                sport=flow.dst_port,
                dport=flow.src_port,
                ack=0,
                flags=packets.TCP_RST if outcome.kind == "refused" else packets.TCP_SYN,
            )
            events += self.ids.answer(probe.target, probe.flow, sequence, outcome.rx_ns, answer)
        return events

    def _match_error(self, connect: _Connect, item: Received, sequence: int) -> list[Event]:
        """An error from the connect's error queue: the kernel matched its quote to this
        socket (4-tuple, sequence number in window); check what it reports all the same.
        A rejected one still ended the connect (the kernel aborts a SYN_SENT socket on an
        ICMP error): that probe settles silent."""
        probe, flow = connect.probe, connect.flow
        error = packets.parse_error_queue(
            item.data, item.ancdata, protocol=packets.IPPROTO_TCP, destination=item.address
        )
        if error is None:
            return []
        if not same_address(error.quote.dst, connect.destination.address):
            return rejected(probe.target, RejectReason.DESTINATION)
        # The kernel quotes from the TCP header on: the ports must be this flow's.
        if item.port != flow.dst_port or item.data[:4] != struct.pack(
            "!HH", flow.src_port, flow.dst_port
        ):
            return rejected(probe.target, RejectReason.FLOW)
        return self.ids.answer(probe.target, probe.flow, sequence, rx_time(item), error)

    def _end(self, key: tuple[int, int]) -> None:
        connect = self.connecting.pop(key, None)
        if connect is not None:
            self.watcher.unwatch(connect)
            connect.sock.close()

    def release(self, probe: ProbeId) -> None:
        connect = self.connecting.get((probe.target, probe.flow))
        if connect is not None and connect.probe == probe:
            self._end((probe.target, probe.flow))

    def close(self) -> None:
        for key in list(self.connecting):
            self._end(key)
