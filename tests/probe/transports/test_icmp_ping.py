"""Ping sockets: errors from the error queue are checked against the original destination
the kernel reports, the flow's identifier and checksum, the run token and nonce."""

from __future__ import annotations

import pytest
from traceroute_probe import packets
from traceroute_probe.events import Answer, AnswerKind, Event, Rejected, RejectReason
from traceroute_probe.flows import derive_flows
from traceroute_probe.sockets import Received
from traceroute_probe.transports import Destination, RunIdentity
from traceroute_probe.transports.icmp_ping import PingMatcher

from .forge import echo, echo6, error_queue, flip, with_checksum

TARGET4, TARGET6 = "10.0.9.2", "fd00:9::2"
IDS = RunIdentity(0x5EED1234)
FLOW = derive_flows("ping", 2, 0)[1]


def _matcher(family: int = 4) -> PingMatcher:
    return PingMatcher(Destination(3, TARGET4 if family == 4 else TARGET6, family), FLOW, IDS)


def _only(events: list[Event]) -> Event:
    assert len(events) == 1, events
    return events[0]


@pytest.mark.parametrize("family", [4, 6])
def test_a_router_error_quoting_our_probe_to_the_target_is_the_answer(family: int) -> None:
    target = TARGET4 if family == 4 else TARGET6
    quote = echo(IDS, FLOW, 4) if family == 4 else echo6(IDS, FLOW, 4, target)
    offender = "10.0.4.1" if family == 4 else "fd00:4::1"
    item = error_queue(
        quote, offender=offender, original=target, family=family, icmp_type=11 if family == 4 else 3
    )
    answer = _only(_matcher(family).match(item))
    assert isinstance(answer, Answer)
    assert (answer.probe.target, answer.probe.flow, answer.probe.ttl) == (3, 1, 4)
    assert answer.responder == offender and answer.kind is AnswerKind.TIME_EXCEEDED


@pytest.mark.parametrize("family", [4, 6])
def test_a_copy_of_our_probe_quoting_another_destination_is_rejected(family: int) -> None:
    """The kernel hands a ping socket every error with its identifier; a forger copies
    identifier, sequence and payload but quotes a packet to another address."""
    other = "10.0.77.7" if family == 4 else "fd00:77::7"
    quote = echo(IDS, FLOW, 4) if family == 4 else echo6(IDS, FLOW, 4, other)
    item = error_queue(
        quote, offender="10.0.66.6" if family == 4 else "fd00:66::6", original=other, family=family
    )
    assert _matcher(family).match(item) == [Rejected(3, RejectReason.DESTINATION)]


@pytest.mark.parametrize(
    ("quote", "reason"),
    [
        (flip(echo(IDS, FLOW, 4), 2), RejectReason.CHECKSUM),  # not the flow's checksum
        (flip(echo(IDS, FLOW, 4), 9), RejectReason.TOKEN),  # not this run's token
        (
            packets.build_icmp_echo(
                family=4,
                ident=FLOW.icmp_id,
                sequence=packets.encode_sequence(4, 0, IDS.nonce ^ 1),
                run_token=IDS.token,
                flow_sum=FLOW.flow_sum,
            ),
            RejectReason.SEQUENCE,  # another run's nonce
        ),
        (
            packets.build_icmp_echo(
                family=4,
                ident=FLOW.icmp_id ^ 1,
                sequence=IDS.sequence(4, 0),
                run_token=IDS.token,
                flow_sum=FLOW.flow_sum,
            ),
            RejectReason.FLOW,
        ),
    ],
)
def test_a_quote_that_is_not_exactly_our_probe_is_rejected(
    quote: bytes, reason: RejectReason
) -> None:
    item = error_queue(quote, offender="10.0.4.1", original=TARGET4)
    assert _matcher().match(item) == [Rejected(3, reason)]


def test_an_rfc792_quote_of_eight_bytes_still_answers() -> None:
    item = error_queue(echo(IDS, FLOW, 2)[:8], offender="10.0.2.1", original=TARGET4)
    assert isinstance(_only(_matcher().match(item)), Answer)


def _echo_reply(ttl: int, *, corrupt: bool = False) -> bytes:
    request = echo(IDS, FLOW, ttl)
    reply = with_checksum(bytes([packets.ICMP4_ECHO_REPLY]) + request[1:], 2)
    return flip(reply, 12) if corrupt else reply


def test_echo_replies_come_from_the_target_with_our_token() -> None:
    matcher = _matcher()
    answer = _only(matcher.match(Received(_echo_reply(6), [], TARGET4, 5, False)))
    assert isinstance(answer, Answer) and answer.kind is AnswerKind.REPLY
    assert matcher.match(Received(_echo_reply(6), [], "10.0.66.6", 5, False)) == [
        Rejected(3, RejectReason.DESTINATION)
    ]
    assert matcher.match(Received(_echo_reply(6, corrupt=True), [], TARGET4, 5, False)) == [
        Rejected(3, RejectReason.CHECKSUM)
    ]
