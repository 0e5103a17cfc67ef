"""The loop's feeding of the schedule: rejected replies and answers to probes never sent
are counted per target and reason, and never reach the schedule."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import pytest
from traceroute_probe import wave
from traceroute_probe.events import Answer, AnswerKind, Event, ProbeId, Rejected, RejectReason
from traceroute_probe.options import TargetSpec, WaveOptions
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


class _FakeTransport:
    one_in_flight = False

    def open(self, destination: object, flows: object) -> None:
        pass

    def send(self, probe: ProbeId) -> int:
        return time.time_ns()

    def release(self, probe: ProbeId) -> None:
        pass

    def close(self) -> None:
        pass


class _FakePool:
    def __init__(self, *args: object) -> None:
        pass

    def open(self, destination: object, flows: object) -> _FakeTransport:
        return _FakeTransport()

    def close(self) -> None:
        pass


def test_an_internal_error_keeps_what_was_measured(monkeypatch: pytest.MonkeyPatch) -> None:
    """A bug in the loop ends the run; the hop answered before it is still the result."""
    real_step = Schedule.step
    turns = []

    def step(self: Schedule, clock: Any, wire: Any) -> int | None:
        turns.append(1)
        if len(turns) == 2:
            for flow in range(self.targets[0].flows):
                probe = ProbeId(0, flow, 1, 0)
                self.on_event(Answer(probe, time.time_ns(), "10.0.1.1", AnswerKind.TIME_EXCEEDED))
        if len(turns) == 3:
            raise RuntimeError("boom")
        return real_step(self, clock, wire)

    monkeypatch.setattr(wave, "TransportPool", _FakePool)
    monkeypatch.setattr(Schedule, "step", step)
    spec = TargetSpec(name="t", address="10.0.9.2", family=4, seed="s")
    (result,) = wave.run_wave([spec], WaveOptions(timeout=5.0))
    assert result.error is not None and result.error.kind == "internal"
    assert result.error.message == "RuntimeError: boom"
    assert result.hops and result.hops[0].addresses == ["10.0.1.1"]
