"""What the transports tell the schedule, typed: a probe's identity, a matched answer,
a flow that may carry its next probe. The schedule never sees a packet or a socket."""

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


Event = Answer | FlowFreed
