"""UDP sockets: the kernel matches an error to the connected socket by the quoted
4-tuple; the matcher checks again what the error queue reports, and the payload."""

from __future__ import annotations

from traceroute_probe import packets
from traceroute_probe.events import Answer, Rejected, RejectReason
from traceroute_probe.flows import derive_flows
from traceroute_probe.transports import Destination, RunIdentity
from traceroute_probe.transports.udp import UdpMatcher

from .forge import error_queue, flip

TARGET = "10.0.9.2"
IDS = RunIdentity(0x00C0FFEE)
FLOW = derive_flows("udp", 1, 33434)[0]
MATCHER = UdpMatcher(Destination(2, TARGET, 4), FLOW, IDS)


def _payload(ttl: int) -> bytes:
    return packets.udp_payload(sequence=IDS.sequence(ttl, 0), run_token=IDS.token)


def test_a_genuine_error_answers_its_probe() -> None:
    item = error_queue(_payload(3), offender="10.0.3.1", original=TARGET, port=33434)
    (answer,) = MATCHER.match(item)
    assert isinstance(answer, Answer) and (answer.probe.target, answer.probe.ttl) == (2, 3)


def test_what_the_error_queue_reports_must_be_the_flows() -> None:
    other = error_queue(_payload(3), offender="10.0.3.1", original="10.0.7.7", port=33434)
    assert MATCHER.match(other) == [Rejected(2, RejectReason.DESTINATION)]
    port = error_queue(_payload(3), offender="10.0.3.1", original=TARGET, port=33435)
    assert MATCHER.match(port) == [Rejected(2, RejectReason.FLOW)]
    token = error_queue(flip(_payload(3), 3), offender="10.0.3.1", original=TARGET, port=33434)
    assert MATCHER.match(token) == [Rejected(2, RejectReason.TOKEN)]
    short = error_queue(b"", offender="10.0.3.1", original=TARGET, port=33434)
    assert MATCHER.match(short) == [Rejected(2, RejectReason.SEQUENCE)]
