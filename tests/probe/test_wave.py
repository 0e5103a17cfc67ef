"""The loop's feeding of the schedule: rejected replies and answers to probes never sent
are counted per target and reason, and never reach the schedule."""

from __future__ import annotations

from collections import Counter

from traceroute_probe.events import Answer, AnswerKind, Event, ProbeId, Rejected, RejectReason
from traceroute_probe.options import WaveOptions
from traceroute_probe.schedule import Schedule, TargetPlan
from traceroute_probe.wave import _feed


class _Wire:
    def transmit(self, probe: ProbeId) -> int:
        return 1

    def release(self, probe: ProbeId) -> None:
        pass


def test_rejections_are_counted_and_change_nothing() -> None:
    opts = WaveOptions(max_hops=3, probes_per_hop=1)
    plans = [TargetPlan("10.0.9.2", 4, opts.flows), TargetPlan("10.0.9.3", 4, opts.flows)]
    schedule = Schedule(plans, opts, start_ns=0)
    assert schedule.step(lambda: 1, _Wire()) is not None
    rejected: list[Counter[str]] = [Counter(), Counter()]
    never_sent = Answer(ProbeId(1, 0, 3, 9), 2, "10.0.66.6", AnswerKind.TIME_EXCEEDED)
    events: list[Event] = [
        Rejected(0, RejectReason.CHECKSUM),
        Rejected(0, RejectReason.CHECKSUM),
        Rejected(1, RejectReason.DESTINATION),
        never_sent,
    ]
    _feed(schedule, events, rejected)
    assert rejected == [Counter(checksum=2), Counter(destination=1, sequence=1)]
    assert all(not cell.answered for t in schedule.targets for cell in t.cells.values())
    genuine = Answer(ProbeId(1, 0, 3, 0), 2, "10.0.3.1", AnswerKind.TIME_EXCEEDED)
    _feed(schedule, [genuine], rejected)
    assert schedule.targets[1].cells[(0, 3)].answered
    assert rejected[1] == Counter(destination=1, sequence=1)
