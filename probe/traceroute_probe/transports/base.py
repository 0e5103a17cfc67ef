"""What every transport shares: the run's identity on the wire, the protocol a
transport offers the loop, and the helpers to bind a flow and time a reply."""

from __future__ import annotations

import errno
import ipaddress
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar

from .. import packets
from ..events import Answer, AnswerKind, Event, ProbeId, Rejected, RejectReason
from ..flows import Flow
from ..sockets import ProbeSocket, Received

_BIND_ATTEMPTS = 8
_Bound = TypeVar("_Bound")


class RunIdentity:
    """What marks this run's probes: a random 32-bit token in every ICMP and UDP payload
    (checked in every quote), a 4-bit nonce in every sequence and a 16-bit one in the
    TCP sequence number, so that late replies to an earlier run are rejected."""

    __slots__ = ("marker", "nonce", "tcp_nonce", "token")

    def __init__(self, token: int) -> None:
        self.token = token
        self.marker = packets.PAYLOAD_MAGIC + token.to_bytes(4, "big")
        self.nonce = token & 0x0F
        self.tcp_nonce = (token >> 8) & 0xFFFF

    @classmethod
    def new(cls) -> RunIdentity:
        return cls(int.from_bytes(os.urandom(4), "big"))

    def sequence(self, ttl: int, attempt: int) -> int:
        return packets.encode_sequence(ttl, attempt, self.nonce)

    def payload_ok(self, payload: bytes) -> bool:
        """A quote long enough to hold our marker must carry this run's marker."""
        if len(payload) < 6:
            return True  # RFC 792 routers quote 8 bytes only: the sequence decides
        return payload[:6] == self.marker

    def udp_sequence(self, payload: bytes) -> int | None:
        if len(payload) < packets.UDP_PAYLOAD_LEN or not self.payload_ok(payload):
            return None
        return int.from_bytes(payload[6:8], "big")

    def answer(
        self, target: int, flow: int, sequence: int, rx_ns: int, reply: packets.Reply
    ) -> list[Event]:
        """The answer ``reply`` gives to probe ``sequence`` of the flow, if it is this run's."""
        ttl, attempt, nonce = packets.decode_sequence(sequence)
        if nonce != self.nonce:
            return [Rejected(target, RejectReason.SEQUENCE)]
        probe = ProbeId(target, flow, ttl, attempt)
        return [Answer(probe, rx_ns, reply.responder, answer_kind(reply))]

    def echo_quote_problem(self, quote: packets.QuotedProbe, flow: Flow) -> RejectReason | None:
        """What is wrong with a quote of one of ``flow``'s echo requests, if anything: the
        identifier, the checksums (IPv4: the flow's constant one, exactly), the run token.
        The sequence's nonce is checked by :meth:`answer`."""
        if quote.protocol not in (packets.IPPROTO_ICMP, packets.IPPROTO_ICMPV6):
            return RejectReason.PROTOCOL
        if quote.ident != flow.icmp_id:
            return RejectReason.FLOW
        if not quote.checksums_ok or (
            quote.protocol == packets.IPPROTO_ICMP and quote.checksum != ~flow.flow_sum & 0xFFFF
        ):
            return RejectReason.CHECKSUM
        if not self.payload_ok(quote.payload):
            return RejectReason.TOKEN
        if quote.sequence is None:
            return RejectReason.SEQUENCE
        return None


def same_address(a: str | None, b: str | None) -> bool:
    """Equal IP addresses, however written (an IPv6 zone left aside)."""
    if a is None or b is None:
        return False
    try:
        return ipaddress.ip_address(a.split("%")[0]) == ipaddress.ip_address(b.split("%")[0])
    except ValueError:
        return False


def rejected(target: int, reason: RejectReason) -> list[Event]:
    return [Rejected(target, reason)]


def first_failed(*checks: tuple[bool, RejectReason]) -> RejectReason | None:
    """The reason of the first check that failed, in the order given."""
    return next((reason for passed, reason in checks if not passed), None)


def answer_kind(reply: packets.Reply) -> AnswerKind:
    if not isinstance(reply, packets.IcmpError):
        return AnswerKind.REPLY
    if reply.is_time_exceeded:
        return AnswerKind.TIME_EXCEEDED
    if reply.is_unreachable:
        return AnswerKind.UNREACHABLE
    return AnswerKind.OTHER_ERROR


@dataclass(frozen=True)
class Destination:
    """A target as a transport sees it."""

    index: int  # index into the wave's targets: answers name it
    address: str
    family: int


class Endpoint(Protocol):
    """One socket the loop waits on; ``read`` drains it into matched events."""

    def fileno(self) -> int: ...

    def read(self) -> list[Event]: ...


class Watcher(Protocol):
    """The loop's selector, as the transports register their sockets with it."""

    def watch(self, endpoint: Endpoint, *, writable: bool = False) -> None: ...

    def unwatch(self, endpoint: Endpoint) -> None: ...


class Transport(Protocol):
    """One kind of probing (ICMP ping/raw, UDP, TCP connect/raw) for the targets it carries."""

    one_in_flight: bool  # a flow carries one probe at a time (connect probes)

    def open(self, destination: Destination, flows: list[Flow]) -> None:
        """Carry ``destination``: open what it needs, rebinding ``flows`` in place when an
        identifier or port is taken. Raises SocketOpenError or OSError."""
        ...

    def send(self, probe: ProbeId) -> int:
        """Put ``probe`` on the wire; its send time (ns). Raises OSError."""
        ...

    def release(self, probe: ProbeId) -> None:
        """The schedule stopped waiting for ``probe``."""
        ...

    def close(self) -> None: ...


class FlowSocket:
    """The socket of one flow of one target (ping and UDP sockets): its error queue
    first, then its data; ``match`` turns what it read into events."""

    def __init__(self, sock: ProbeSocket, match: Callable[[Received], list[Event]]) -> None:
        self.sock = sock
        self.match = match

    def fileno(self) -> int:
        return self.sock.fileno()

    def read(self) -> list[Event]:
        events: list[Event] = []
        for item in self.sock.drain(error_queue=True):
            events.extend(self.match(item))
        return events


class RawSocket:
    """A raw socket shared by every target of one family: ``parse`` decodes what it
    reads, ``match`` routes a reply to its target and flow."""

    def __init__(
        self,
        sock: ProbeSocket,
        parse: Callable[[Received], packets.Reply | None],
        match: Callable[[packets.Reply, int], list[Event]],
    ) -> None:
        self.sock = sock
        self.parse = parse
        self.match = match

    def fileno(self) -> int:
        return self.sock.fileno()

    def read(self) -> list[Event]:
        events: list[Event] = []
        for item in self.sock.drain(error_queue=False):
            reply = self.parse(item)
            if reply is not None:
                events.extend(self.match(reply, rx_time(item)))
        return events


def bind_free(flow: Flow, bind: Callable[[Flow], _Bound]) -> tuple[Flow, _Bound]:
    """``bind(flow)``, retried with the flow's alternatives while its identifier or port is
    taken (EADDRINUSE), at most ``_BIND_ATTEMPTS`` times; the flow that bound and the result."""
    candidate = flow
    for attempt in range(_BIND_ATTEMPTS - 1):
        try:
            return candidate, bind(candidate)
        except OSError as err:
            if err.errno != errno.EADDRINUSE:
                raise
        candidate = candidate.with_alternative(attempt)
    return candidate, bind(candidate)


def rx_time(item: Received) -> int:
    """The kernel's receive timestamp, else the time the loop read it."""
    return packets.parse_timestamp(item.ancdata) or item.rx_ns
