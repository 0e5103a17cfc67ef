"""What the transports tell the schedule, typed: a probe's identity, a matched answer,
a flow that may carry its next probe, a reply that failed a check. The schedule never
sees a packet or a socket."""

from __future__ import annotations

import enum
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ProbeId:
    """One probe: the attempt-th probe of one flow of one target at one TTL."""

    target: int  # index into the wave's targets
    flow: int
    ttl: int
    attempt: int


class AnswerKind(enum.Enum):
    REPLY = "reply"  # echo reply, SYN-ACK or RST: the destination itself, not rate limited
    TIME_EXCEEDED = "time-exceeded"
    UNREACHABLE = "unreachable"  # !N, !H, !X from a router; port unreachable from the target
    OTHER_ERROR = "other-error"  # another ICMP error (parameter problem, packet too big)

    @property
    def is_icmp_error(self) -> bool:
        """ICMP errors spend a router's rate-limit tokens; replies do not."""
        return self is not AnswerKind.REPLY


@dataclass(frozen=True, slots=True)
class Answer:
    """A reply matched to the probe it answers (identifiers, nonce and run token checked)."""

    probe: ProbeId
    rx_ns: int  # receive time, ns since the epoch (the kernel's timestamp when it gave one)
    responder: str
    kind: AnswerKind


@dataclass(frozen=True, slots=True)
class FlowFreed:
    """The flow's probe in flight has its outcome (connect probes: one per flow at a time)."""

    target: int
    flow: int


class RejectReason(enum.Enum):
    """Why a reply that named one of our targets was not taken (a bounded label set)."""

    CHECKSUM = "checksum"  # a bad ICMP/TCP checksum: of the reply, the quoted header or segment
    DESTINATION = "destination"  # the original destination is not the target (or not from it)
    PROTOCOL = "protocol"  # the quoted packet is not of the probe's protocol
    FLOW = "flow"  # identifier or ports are not the flow's
    TOKEN = "token"  # the quoted payload lacks this run's token
    SEQUENCE = "sequence"  # no sequence, another run's nonce, or a probe never sent


@dataclass(frozen=True, slots=True)
class Rejected:
    """A reply for ``target`` that failed a check: counted, never an answer."""

    target: int
    reason: RejectReason


Event = Answer | FlowFreed | Rejected
