"""The pure schedule, driven by a fake clock and a fake network: no root, no sockets.

The fake network answers each probe like a chain of Linux routers would: the router at
the probe's TTL (or the destination, once the TTL reaches it) answers after its RTT,
unless it is silent or its ICMP rate limit (burst 6, then 1/s per source) drops it.
"""

from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass, field

import pytest
from traceroute_probe.events import Answer, AnswerKind, FlowFreed, ProbeId
from traceroute_probe.options import WaveOptions
from traceroute_probe.pacing import NS
from traceroute_probe.result import TargetError
from traceroute_probe.schedule import Schedule, TargetPlan

TARGET = "10.0.9.2"
START = 1_000 * NS
MS = 1_000_000


class FakeClock:
    def __init__(self, now: int = START) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


@dataclass
class Router:
    address: str | None  # None: silent
    rtt_ms: float
    rate_limited: bool = False  # Linux's per-source ICMP limit: burst 6, then 1/s
    tokens: float = 6.0
    last_ns: int = 0

    def allows(self, now: int) -> bool:
        if not self.rate_limited:
            return True
        if self.last_ns:
            self.tokens = min(6.0, self.tokens + (now - self.last_ns) / NS)
        self.last_ns = now
        if self.tokens < 1.0:
            return False
        self.tokens -= 1.0
        return True


@dataclass
class Sent:
    at: int
    probe: ProbeId


@dataclass
class FakeNetwork:
    """The schedule's Wire: records every send and queues the answer it gets, if any."""

    clock: FakeClock
    routers: list[Router]  # TTL 1..n-1: routers; TTL n and beyond: the destination
    destination_rtt_ms: float | None = 20.0  # None: a silent destination
    one_in_flight: bool = False
    sent: list[Sent] = field(default_factory=list)
    released: list[ProbeId] = field(default_factory=list)
    pending: list[tuple[int, int, Answer]] = field(default_factory=list)
    busy: dict[tuple[int, int], ProbeId] = field(default_factory=dict)

    @property
    def dest_ttl(self) -> int:
        return len(self.routers) + 1

    def transmit(self, probe: ProbeId) -> int:
        now = self.clock.now
        if self.one_in_flight:
            assert (probe.target, probe.flow) not in self.busy, "flow already carries a probe"
            self.busy[(probe.target, probe.flow)] = probe
        self.sent.append(Sent(now, probe))
        answer = self._answer(probe, now)
        if answer is not None:
            heapq.heappush(self.pending, (answer.rx_ns, len(self.sent), answer))
        return now

    def _answer(self, probe: ProbeId, now: int) -> Answer | None:
        if probe.ttl >= self.dest_ttl:
            if self.destination_rtt_ms is None:
                return None
            return Answer(probe, now + int(self.destination_rtt_ms * MS), TARGET, AnswerKind.REPLY)
        router = self.routers[probe.ttl - 1]
        if router.address is None or not router.allows(now):
            return None
        rx = now + int(router.rtt_ms * MS)
        return Answer(probe, rx, router.address, AnswerKind.TIME_EXCEEDED)

    def release(self, probe: ProbeId) -> None:
        assert self.busy.pop((probe.target, probe.flow)) == probe
        self.released.append(probe)

    def deliver(self, schedule: Schedule, until: int) -> bool:
        """Hand the schedule every answer that arrived by ``until`` (at its time)."""
        delivered = False
        while self.pending and self.pending[0][0] <= until:
            rx, _order, answer = heapq.heappop(self.pending)
            self.clock.now = max(self.clock.now, rx)
            key = (answer.probe.target, answer.probe.flow)
            if self.one_in_flight and self.busy.get(key) == answer.probe:
                del self.busy[key]
                schedule.on_event(FlowFreed(*key))
            schedule.on_event(answer)
            delivered = True
        return delivered

    def of(self, ttl: int, *, target: int = 0) -> list[Sent]:
        return [s for s in self.sent if s.probe.ttl == ttl and s.probe.target == target]


def run(schedule: Schedule, net: FakeNetwork, turns: int = 100_000) -> int:
    """The wave's loop with the fake clock: step, then wait for an answer or the wake
    time, whichever comes first; returns the time the run ended."""
    clock = net.clock
    for _ in range(turns):
        wake = schedule.step(clock, net)
        if wake is None:
            return clock.now
        next_answer = net.pending[0][0] if net.pending else None
        if next_answer is not None and next_answer <= wake:
            net.deliver(schedule, next_answer)
        else:
            clock.now = max(clock.now, wake)
    raise AssertionError("the run did not end")


def make(
    routers: list[Router],
    *,
    targets: int = 1,
    destination_rtt_ms: float | None = 20.0,
    one_in_flight: bool = False,
    **options: float,
) -> tuple[Schedule, FakeNetwork]:
    clock = FakeClock()
    # The trace's rules alone unless a test asks for end-to-end probes.
    options.setdefault("destination_probes", 0)
    opts = WaveOptions(**options)  # type: ignore[arg-type]
    plans = [TargetPlan(TARGET, 4, opts.flows, one_in_flight=one_in_flight) for _ in range(targets)]
    net = FakeNetwork(clock, routers, destination_rtt_ms, one_in_flight)
    return Schedule(plans, opts, START), net


def chain(*rtts_ms: float, silent: tuple[int, ...] = (), limited: bool = False) -> list[Router]:
    """Routers at TTL 1..n with these RTTs; ``silent`` TTLs never answer."""
    return [
        Router(None if ttl in silent else f"10.0.{ttl}.1", rtt, rate_limited=limited)
        for ttl, rtt in enumerate(rtts_ms, start=1)
    ]


# --- send order ------------------------------------------------------------------------


def test_first_attempts_of_every_ttl_go_before_second_ones_flow_major_per_ttl() -> None:
    schedule, net = make(chain(1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11), targets=2, max_hops=30)
    assert schedule.step(net.clock, net) is not None
    order = [(s.probe.attempt, s.probe.ttl, s.probe.flow, s.probe.target) for s in net.sent]
    # The initial window is 10 TTLs x 3 flows x 2 targets = 60 first attempts, more than
    # the packet burst (200 pps / 4 = 50): the burst goes to first attempts only.
    expected = [(0, ttl, flow, t) for ttl in range(1, 11) for flow in range(3) for t in range(2)]
    assert order == expected[:50]
    assert all(s.at == START for s in net.sent)
    run(schedule, net)
    attempts = [s.probe.attempt for s in net.sent]
    assert attempts[:60] == [0] * 60  # every first attempt went before any other
    # 3 flows x 2 targets fill one (unknown) router's burst of 6 per TTL: no second
    # attempt joins them at once.
    for ttl in range(1, 11):
        assert len([s for s in net.of(ttl) + net.of(ttl, target=1) if s.at == START]) <= 6


def test_second_attempts_of_the_first_wave_follow_in_ttl_order() -> None:
    schedule, net = make(chain(1, 2, 3), max_hops=4, pps=1000.0)
    schedule.step(net.clock, net)
    order = [(s.probe.attempt, s.probe.ttl, s.probe.flow) for s in net.sent]
    firsts = [(0, ttl, flow) for ttl in range(1, 5) for flow in range(3)]
    # Second attempts (2 per flow fit one router's burst of 6 with 3 flows) follow, but
    # the destination TTL 4 shares no router: every TTL gets its second wave.
    seconds = [(1, ttl, flow) for ttl in range(1, 5) for flow in range(3)]
    assert order == firsts + seconds


# --- pacing ------------------------------------------------------------------------------


def test_packet_rate_paces_after_the_burst() -> None:
    schedule, net = make(chain(*[5.0] * 15), pps=100.0, max_hops=20)
    wake = schedule.step(net.clock, net)
    assert len(net.sent) == 25  # burst: 100 pps / 4
    assert wake == START + NS // 100 + 1  # the next token
    run(schedule, net)
    times = [s.at for s in net.sent]
    for i in range(25, len(times)):
        # Never faster than the rate once the burst is spent: n sends need n-25 tokens.
        assert times[i] - START >= (i - 25 + 1) * (NS // 100) - 1


def test_targets_behind_a_rate_limited_router_share_its_tokens() -> None:
    """Ten targets behind the same rate-limited routers want 30 answers per TTL: only a
    burst of 6 goes at once, then one per modelled token (1/s), flow 0 of every target
    before flow 1 of any. Nothing is lost, every hop of every target shows its router,
    and the flows the deadline leaves no token for are reported as not served."""
    schedule, net = make(chain(1, 2, 3, limited=True), targets=10, pps=1000.0)
    end = run(schedule, net)
    assert schedule.done and end - START < 10 * NS
    for ttl in (1, 2, 3):
        sent = [s for t in range(10) for s in net.of(ttl, target=t)]
        assert len([s for s in sent if s.at == START]) == 6
        later = sorted(s.at for s in sent if s.at > START)
        assert later and all(b - a >= NS - MS for a, b in itertools.pairwise(later))
        assert min(later) >= START + NS - MS  # the burst was spent by the first attempts
    served = []
    for target in range(10):
        outcome = schedule.outcome(target)
        assert outcome.reached and outcome.hop_count == 4
        for hop in outcome.hops[:3]:
            assert hop.addresses == [f"10.0.{hop.ttl}.1"], (target, hop)
            assert hop.replies == hop.sent > 0 and not hop.rate_limited  # no false loss
        assert outcome.hops[3].replies == outcome.hops[3].sent
        served.append(outcome.flows_served)
    assert all(1 <= n < 3 for n in served) and sum(served) == 15  # 6 + 9 tokens


def test_extra_samples_go_only_when_the_router_model_has_a_token() -> None:
    """probes_per_hop 3 with 3 flows: the first wave (2 x 3 = 6) spends a router's burst;
    third samples go only once the model has a token again (1/s): the fake routers drop
    whatever exceeds their bucket, and none of the probes to them is lost.
    (A slow TTL 3 and destination keep the run going for more than a second.)"""
    schedule, net = make(chain(1, 2, 600, limited=True), destination_rtt_ms=1500.0)
    run(schedule, net)
    assert schedule.done
    _reached, _count, hops = schedule.hops(0)
    for ttl in (1, 2):
        burst = [s for s in net.of(ttl) if s.at == START]
        assert sorted(s.probe.attempt for s in burst) == [0, 0, 0, 1, 1, 1]
        extras = [s for s in net.of(ttl) if s.probe.attempt == 2]
        assert extras and all(s.at >= START + NS for s in extras)
        hop = hops[ttl - 1]
        assert hop.sent == len(net.of(ttl)) == hop.replies


# --- settle rules ------------------------------------------------------------------------


def test_a_silent_hop_settles_after_one_and_a_half_rtt_of_the_next_hop() -> None:
    schedule, net = make(chain(2, 4, 40, silent=(2,)), destination_rtt_ms=50.0)
    run(schedule, net)
    first = net.of(2)[0]
    retry = [s for s in net.of(2) if s.probe.attempt == 2]
    assert retry, "the silent TTL is retried"
    later = 40 * MS / NS  # TTL 3 answered with 40 ms
    due = first.at + int((1.5 * later + 0.010) * NS)
    assert retry[0].at == due
    # An unknown silent router may be silent or spent by another run: flow 0 tries again
    # after one refill interval, and (a hole: later TTLs answer) once more after another;
    # it stays silent, so the others do not.
    refill = [s for s in net.of(2) if s.probe.attempt >= 3]
    assert [(s.probe.flow, s.probe.attempt) for s in refill] == [(0, 3), (0, 4)]
    assert refill[0].at >= retry[0].at + NS and refill[1].at >= refill[0].at + NS
    _reached, _count, hops = schedule.hops(0)
    # 2 first wave + 1 retry per flow, + the refill retries: a real silence, measured.
    assert hops[1].addresses == [] and hops[1].sent == 11
    assert schedule.outcome(0).flows_served == 3


def test_without_a_later_answer_the_wait_is_a_multiple_of_the_largest_rtt() -> None:
    # Everything beyond TTL 1 is silent: no later hop bounds the wait.
    schedule, net = make(chain(100, silent=()), destination_rtt_ms=None, max_hops=3)
    run(schedule, net)
    first = net.of(2)[0]
    retry = next(s for s in net.of(2) if s.probe.attempt == 2)
    assert retry.at - first.at == int(max(0.3, 3.0 * 0.100) * NS)


def test_with_nothing_seen_a_probe_waits_one_second() -> None:
    schedule, net = make([], destination_rtt_ms=None, max_hops=1)
    end = run(schedule, net)
    retry = next(s for s in net.of(1) if s.probe.attempt == 2)
    assert retry.at - START == NS
    refill = next(s for s in net.of(1) if s.probe.attempt == 3)
    assert refill.at == retry.at + NS  # one refill interval after the last silence
    assert end == START + 3 * NS  # the refill retry settled one second later: over
    assert schedule.done


def test_the_gap_limit_ends_a_run_without_the_destination() -> None:
    routers = chain(1, 2, 3, *[1.0] * 20, silent=tuple(range(4, 24)))
    schedule, net = make(routers, destination_rtt_ms=None, max_hops=30)
    end = run(schedule, net)
    assert schedule.done and end - START < 10 * NS
    reached, hop_count, _hops = schedule.hops(0)
    assert not reached and hop_count == 3
    silent = {ttl for ttl, router in enumerate(routers, start=1) if router.address is None}
    retried = {s.probe.ttl for s in net.sent if s.probe.attempt >= 2 and s.probe.ttl in silent}
    assert retried == set(range(4, 9))  # 5 silent TTLs after the last responder, no more


def test_connect_probes_hold_their_flow_and_stop_at_the_gap_limit() -> None:
    routers = chain(1, 2, 3, *[1.0] * 20, silent=tuple(range(4, 24)))
    schedule, net = make(routers, destination_rtt_ms=None, one_in_flight=True)
    run(schedule, net)  # FakeNetwork asserts one probe per flow at a time
    assert schedule.done
    assert max(s.probe.ttl for s in net.sent) == 8  # 3 + gap limit 5
    silent = [p for p in net.released if p.ttl > 3]
    assert silent and all(p.ttl <= 8 for p in silent)  # settled silences freed their flow
    reached, hop_count, _ = schedule.hops(0)
    assert not reached and hop_count == 3


# --- retry ---------------------------------------------------------------------------------


def test_a_silent_ttl_is_retried_once_per_flow() -> None:
    schedule, net = make(chain(1, 2, silent=(2,)))
    run(schedule, net)
    for flow in range(3):
        attempts = sorted(s.probe.attempt for s in net.of(2) if s.probe.flow == flow)
        # two first-wave attempts, one retry; flow 0 also the two refill retries of a hole
        assert attempts == ([0, 1, 2, 3, 4] if flow == 0 else [0, 1, 2])
    assert schedule.done


def test_a_known_router_that_drops_is_retried_once_its_bucket_refilled() -> None:
    """A router that answered some flows and not others has an empty bucket (another run
    spent it): the silent flow is retried once the modelled bucket refilled (1 s), before
    any extra sample, and answers; no flow shows a false silence."""
    routers = chain(1, 2)
    routers[0].rate_limited = True
    routers[0].tokens = 2.0  # two answers left: only 2 of the 6 first-wave probes answer
    schedule, net = make(routers)
    run(schedule, net)
    later = [s for s in net.of(1) if s.probe.attempt >= 2]
    assert [(s.probe.flow, s.probe.attempt) for s in later] == [(2, 2)]
    assert later[0].at >= START + NS
    _reached, _count, hops = schedule.hops(0)
    assert all(f.replies >= 1 for f in hops[0].flows)
    assert hops[0].replies == 3 and hops[0].sent == 7
    assert hops[0].rate_limited  # lost probes while a later hop answered


# --- deadline and completion -----------------------------------------------------------


def test_the_deadline_ends_everything_and_probes_in_flight_count_for_nothing() -> None:
    routers = chain(400, 1, 400, silent=(2,))
    schedule, net = make(
        routers, destination_rtt_ms=None, timeout=1.0, max_hops=3, probes_per_hop=2
    )
    end = run(schedule, net)
    assert end == START + NS
    assert not schedule.done
    # TTL 2 settled silent after 1.5 x 400 ms + 10 ms and was retried; the retries
    # would settle at 1.22 s, after the deadline: neither reply nor loss.
    retries = [s for s in net.of(2) if s.probe.attempt == 2]
    assert [s.at - START for s in retries] == [610 * MS] * 3
    _reached, hop_count, hops = schedule.hops(0)
    assert hop_count == 3
    # Whether TTL 2 is silent or a spent bucket needed a refill retry the deadline left
    # no time for: not measured (no loss), and the flows are not served.
    assert [(hop.sent, hop.replies) for hop in hops] == [(6, 6), (0, 0), (6, 6)]
    assert schedule.outcome(0).flows_served == 0


def test_the_run_ends_when_the_destination_answered_every_flow() -> None:
    schedule, net = make(chain(1, 2, 3, 4), destination_rtt_ms=20.0, probes_per_hop=3)
    end = run(schedule, net)
    assert schedule.done
    dest_answers = [
        s.at + 20 * MS for s in net.of(5) if s.probe.attempt == 0
    ]  # first attempts of each flow
    assert end == max(dest_answers)
    assert schedule.targets[0].finished_ns == end
    reached, hop_count, hops = schedule.hops(0)
    assert reached and hop_count == 5 and len(hops) == 5
    # Probes past the destination (TTL 6..10) and samples in flight count for nothing.
    assert all(hop.replies == hop.sent for hop in hops)


def test_the_window_never_goes_past_the_destination_once_it_answered() -> None:
    schedule, net = make(chain(1, 2), destination_rtt_ms=5.0, max_hops=30, pps=50.0)
    run(schedule, net)
    first_answer = min(s.at for s in net.of(3)) + 5 * MS
    assert not [s for s in net.sent if s.probe.ttl > 3 and s.at > first_answer]


@pytest.mark.parametrize("timeout", [0.2, 3.0])
def test_every_run_ends_by_its_deadline(timeout: float) -> None:
    schedule, net = make(chain(1, 2, silent=(1, 2)), destination_rtt_ms=None, timeout=timeout)
    end = run(schedule, net)
    assert end <= START + int(timeout * NS)


def test_a_send_error_fails_only_that_target() -> None:
    class Failing(FakeNetwork):
        def transmit(self, probe: ProbeId) -> int:
            if probe.target == 1:
                raise OSError(101, "Network is unreachable")
            return super().transmit(probe)

    clock = FakeClock()
    opts = WaveOptions()
    schedule = Schedule([TargetPlan(TARGET, 4, 3), TargetPlan(TARGET, 4, 3)], opts, START)
    net = Failing(clock, chain(1, 2))
    run(schedule, net)
    assert schedule.done
    error = schedule.targets[1].error
    assert error is not None and error.kind == "send"
    assert error.message == "ENETUNREACH: Network is unreachable"  # the kernel's own error
    assert schedule.targets[1].finished_ns == START  # ended at its first probe
    assert schedule.hops(0)[0] and not schedule.hops(1)[0]


def test_a_send_error_of_the_only_target_ends_the_run_at_once() -> None:
    class Failing(FakeNetwork):
        def transmit(self, probe: ProbeId) -> int:
            raise OSError(13, "Permission denied")

    clock = FakeClock()
    schedule = Schedule([TargetPlan(TARGET, 4, 3)], WaveOptions(timeout=10.0), START)
    net = Failing(clock, chain(1, 2))
    assert schedule.step(clock, net) is None  # no wait for the deadline
    error = schedule.targets[0].error
    assert error is not None and (error.kind, error.message) == (
        "send",
        "EACCES: Permission denied",
    )


def test_a_target_refused_when_its_socket_opened_ends_at_the_start() -> None:
    """A UDP socket's connect() fails on a route to nowhere: the target has its error
    before any probe and must not last as long as the other targets' run."""
    clock = FakeClock()
    refused = TargetPlan(TARGET, 4, 3, error=TargetError("send", "EHOSTUNREACH: No route"))
    opts = WaveOptions(destination_probes=10)
    schedule = Schedule([refused, TargetPlan(TARGET, 4, 3)], opts, START)
    end = run(schedule, FakeNetwork(clock, chain(1, 2)))
    assert end > START
    assert schedule.targets[0].finished_ns == START


# --- end-to-end probes and per-flow hop counts ---------------------------------------------


def test_end_to_end_probes_measure_the_destination_apart_from_the_trace() -> None:
    """Ten probes at TTL 255, spaced 2 ms, go with the first wave; the run waits for
    them; a destination that answers loses none of them."""
    schedule, net = make(chain(1, 2, 3), destination_probes=10)
    run(schedule, net)
    e2e = [s for s in net.sent if s.probe.ttl == 255]
    assert len(e2e) == 10
    assert all(b.at - a.at >= 2 * MS for a, b in itertools.pairwise(e2e))
    outcome = schedule.outcome(0)
    assert outcome.e2e_sent == 10 and len(outcome.e2e_rtts_ms) == 10
    assert all(abs(rtt - 20.0) < 1e-6 for rtt in outcome.e2e_rtts_ms)
    assert all(hop.ttl <= 4 for hop in outcome.hops)  # TTL 255 is no hop of the trace


def test_a_destination_that_drops_end_to_end_probes_shows_their_loss() -> None:
    class Lossy(FakeNetwork):
        def _answer(self, probe: ProbeId, now: int) -> Answer | None:
            if probe.ttl == 255 and probe.flow == 0:
                return None  # every third end-to-end probe is lost
            return super()._answer(probe, now)

    clock = FakeClock()
    opts = WaveOptions(destination_probes=9)
    schedule = Schedule([TargetPlan(TARGET, 4, 3)], opts, START)
    run(schedule, Lossy(clock, chain(1, 2)))
    outcome = schedule.outcome(0)
    assert outcome.e2e_sent == 9 and len(outcome.e2e_rtts_ms) == 6
    assert outcome.reached and all(hop.replies == hop.sent for hop in outcome.hops)


def test_sixteen_flows_on_depleted_routers_show_no_false_silence() -> None:
    """A run right after another one: every router's bucket is empty at the start. The
    refill retries find every hop; flows the deadline leaves no token for are counted
    as not served and show no loss."""
    routers = chain(1, 2, 3, limited=True)
    for router in routers:
        router.tokens = 0.0
    schedule, net = make(routers, flows=16)
    end = run(schedule, net)
    assert end - START <= 10 * NS
    outcome = schedule.outcome(0)
    assert outcome.reached and outcome.flow_hops == [4] * 16
    for hop in outcome.hops[:3]:
        assert hop.addresses == [f"10.0.{hop.ttl}.1"]
        assert all(f.replies > 0 for f in hop.flows if f.sent), hop
    assert 1 <= outcome.flows_served < 16
