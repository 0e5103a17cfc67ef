"""The schedule of a wave: what to send when, what is settled, when the run is over.

Pure: no sockets, no clock of its own. The loop (``wave.py``) calls :meth:`Schedule.step`
with a clock and a :class:`Wire` that puts probes on the network, and feeds it the
:mod:`events` the transports matched. Tests drive it with a fake clock and fake replies.

Rules (see docs/probe.md "Fast completion" and "No false loss"):
- every (flow, TTL) of the first ``initial_window`` TTLs gets as many attempts at once as
  fit in one router's ICMP burst when all flows reach the same router (Linux: 6, so 2
  attempts for 3 flows); the window widens as replies come back and never goes past
  the destination once it answered. First attempts of all TTLs are sent before second
  ones, per TTL one flow of every target before the next flow, under one token bucket
  for the whole run (``pps``, burst ``pps/4``);
- completion waits for the first attempt of every (flow, TTL) and for one retry of a
  silent one; later attempts only add samples if they are back before the end
  (probes still in flight at the end count neither as reply nor as loss);
- more samples (up to ``probes_per_hop``) go to a responder only while its modelled
  token bucket (burst 6, 1/s per source, fed by every probe attributed to it, across
  targets) has a token, so that pacing, not the router, decides: no false loss;
- a silent probe is settled once a later TTL answered and ``settle_factor`` times that
  RTT passed (or, with no later answer, a multiple of the largest RTT seen);
- the run finishes as soon as the destination answered every flow and all lower TTLs
  are settled; without the destination, ``gap_limit`` silent TTLs after the last
  responder end it; a hard deadline ends everything. The result is always complete.

Connect probes (TCP without raw sockets) hold their flow: one probe in flight per flow,
a first wave of one attempt, retries after higher TTLs, nothing past the gap limit.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

from . import packets
from .events import Answer, AnswerKind, Event, FlowFreed, ProbeId
from .options import WaveOptions
from .pacing import NS, PacketBucket, ReleasePlan, TokenModel
from .result import FlowHop, Hop, TargetError, errno_text

Clock = Callable[[], int]  # ns since the epoch, the time base of send and receive times


class Wire(Protocol):
    """Where the schedule's probes go: the transports, or a fake in tests."""

    def transmit(self, probe: ProbeId) -> int:
        """Send ``probe``; its send time (ns). Raises OSError when it cannot be sent."""
        ...

    def release(self, probe: ProbeId) -> None:
        """The schedule stopped waiting for ``probe`` (a connect probe frees its flow)."""
        ...


@dataclass(frozen=True)
class TargetPlan:
    """What the schedule needs of a target once its transport is open."""

    address: str
    family: int
    flows: int
    error: TargetError | None = None  # not traced at all (resolve, permission, socket)
    one_in_flight: bool = False  # connect probes: one probe per flow at a time


@dataclass
class Probe:
    id: ProbeId
    awaited: bool  # completion waits for it (first attempts and retries), others not
    sent_ns: int = 0
    settled: bool = False
    answered: bool = False
    rtt: float = 0.0
    responder: str = ""
    budget_key: str | None = None

    @property
    def ttl(self) -> int:
        return self.id.ttl


@dataclass
class Cell:
    """One (flow, TTL) of one target."""

    probes: dict[int, Probe] = field(default_factory=dict)  # attempt -> probe
    next_attempt: int = 0
    queued_awaited: int = 0
    queued: int = 0
    first_wave_released: int = 0
    retried: bool = False
    waiting_retry: bool = False
    responder: str | None = None

    @property
    def answered(self) -> bool:
        return any(p.answered for p in self.probes.values())

    @property
    def awaited_settled(self) -> bool:
        return self.queued_awaited == 0 and all(
            p.settled for p in self.probes.values() if p.awaited
        )


class TargetState:
    """Progress of one target: its cells and what the answers told about its path."""

    def __init__(self, index: int, plan: TargetPlan, opts: WaveOptions) -> None:
        self.index = index
        self.address = plan.address
        self.family = plan.family
        self.flows = plan.flows
        self.one_in_flight = plan.one_in_flight
        self.opts = opts
        self.cells: dict[tuple[int, int], Cell] = {}
        self.dest_ttl: int | None = None
        self.terminal_ttl: int | None = None
        self.highest_answered = 0
        self.window_top = min(opts.max_hops, opts.initial_window)
        self.rtt_by_ttl: dict[int, float] = {}  # largest RTT (s) seen per TTL
        self.error: TargetError | None = plan.error
        self.complete = plan.error is not None
        self.finished_ns = 0
        self.in_flight: dict[int, ProbeId] = {}  # flow -> its probe (one_in_flight only)

    def cell(self, flow: int, ttl: int) -> Cell:
        key = (flow, ttl)
        cell = self.cells.get(key)
        if cell is None:
            cell = self.cells[key] = Cell()
        return cell

    @property
    def release_limit(self) -> int:
        """Highest TTL that may be probed now: the window, never past the destination."""
        limit = min(self.opts.max_hops, self.window_top)
        if self.dest_ttl is not None:
            limit = min(limit, self.dest_ttl)
        if self.terminal_ttl is not None:
            limit = min(limit, self.terminal_ttl)
        return max(limit, 1)

    @property
    def decision_limit(self) -> int:
        """Highest TTL whose outcome the run waits for (gap limit without destination)."""
        limit = self.release_limit
        if self.dest_ttl is None and self.terminal_ttl is None:
            limit = min(limit, self.highest_answered + self.opts.gap_limit)
        return max(limit, 1)

    def max_rtt(self) -> float | None:
        return max(self.rtt_by_ttl.values()) if self.rtt_by_ttl else None

    def later_rtt(self, ttl: int) -> float | None:
        """Largest RTT of the nearest TTL above ``ttl`` that answered."""
        later = [t for t in self.rtt_by_ttl if t > ttl]
        return self.rtt_by_ttl[min(later)] if later else None


class _Queued(NamedTuple):
    """A released probe waiting for the packet budget; the heap orders by these fields:
    first attempts and low TTLs first, per TTL one flow of every target before the next
    flow (first hops are usually shared)."""

    order: int
    ttl: int
    flow: int
    target: int
    attempt: int
    awaited: bool


class Schedule:
    def __init__(self, plans: Sequence[TargetPlan], opts: WaveOptions, start_ns: int) -> None:
        self.opts = opts
        self.targets = [TargetState(i, plan, opts) for i, plan in enumerate(plans)]
        self.deadline_ns = start_ns + int(opts.timeout * NS)
        self.outstanding: dict[ProbeId, Probe] = {}
        self.queue: list[_Queued] = []
        self.tokens = TokenModel(opts.ratelimit_burst, opts.ratelimit_interval)
        self.packets = PacketBucket(opts.pps)
        self.sent_total = 0
        self.ttl_responders: dict[tuple[int, int], str] = {}  # (family, ttl) -> router

    @property
    def done(self) -> bool:
        return all(t.complete for t in self.targets)

    # --- one turn of the loop ------------------------------------------------------------

    def step(self, clock: Clock, wire: Wire) -> int | None:
        """Settle, release, check completion and send what the budget allows; returns
        the time (ns) to wait for answers until, or None when the run is over."""
        now_ns = clock()
        if now_ns >= self.deadline_ns:
            return None
        settle_at = self._settle(now_ns, wire)
        token_wait = self._release(now_ns)
        self._check_complete(now_ns)
        if self.done:
            return None
        sent_before = self.sent_total
        waits_for_tokens = self._send_ready(now_ns, wire)
        if self.done:  # the last targets ended on a send error
            return None
        if self.sent_total != sent_before:
            # Probes just sent settle later than those known before the send.
            settle_at = self._settle(clock(), wire)
        wake = self.deadline_ns
        for candidate in (token_wait, settle_at):
            if candidate is not None:
                wake = min(wake, candidate)
        if waits_for_tokens:
            wake = min(wake, self.packets.next_token_at(now_ns))
        return wake

    def on_event(self, event: Event) -> None:
        if isinstance(event, FlowFreed):
            self.targets[event.target].in_flight.pop(event.flow, None)
        elif isinstance(event, Answer):
            self.on_answer(event)
        # Rejected replies are counted by the loop and never touch the schedule.

    def was_sent(self, probe_id: ProbeId) -> bool:
        """Whether ``probe_id`` went out: an answer to any other probe is not one."""
        cell = self.targets[probe_id.target].cells.get((probe_id.flow, probe_id.ttl))
        return cell is not None and probe_id.attempt in cell.probes

    # --- sending -------------------------------------------------------------------------

    def _budget_key(self, target: TargetState, flow: int, ttl: int) -> str | None:
        """The responder a probe most likely reaches, for the rate-limit model.

        Known: this flow's, another flow's, or (first hops are usually shared) another
        target's responder at this TTL. Unknown: one shared "?" bucket per TTL, as if a
        single router answered it. None: answers that are not rate limited.
        """
        if target.dest_ttl is not None and ttl >= target.dest_ttl:
            # Echo replies and TCP answers are not rate limited; port unreachable is.
            return target.address if self.opts.protocol == "udp" else None
        cell = target.cells.get((flow, ttl))
        if cell is not None and cell.responder is not None:
            return cell.responder
        for f in range(target.flows):
            other = target.cells.get((f, ttl))
            if other is not None and other.responder is not None:
                return other.responder
        shared = self.ttl_responders.get((target.family, ttl))
        return shared if shared is not None else f"?{target.family}/{ttl}"

    def _first_wave(self, target: TargetState) -> int:
        """Attempts per (flow, TTL) sent before anything is known about the responder:
        as many as fit in one router's burst when every flow hits the same router.
        Connect probes: one, since a second one would hold the flow as long as a silence."""
        opts = self.opts
        if target.one_in_flight:
            return 1
        return max(1, min(opts.probes_per_hop, opts.ratelimit_burst // max(1, opts.flows)))

    def _queue(
        self, target: TargetState, flow: int, ttl: int, *, awaited: bool, retry: bool
    ) -> None:
        cell = target.cell(flow, ttl)
        attempt = cell.next_attempt
        if attempt >= packets.MAX_ATTEMPTS:
            return
        cell.next_attempt += 1
        cell.queued += 1
        if awaited:
            cell.queued_awaited += 1
        # First attempts of every TTL go before second attempts: the path (and the
        # destination) is found at the earliest; retries of silences count as first.
        order = attempt if not retry else 0
        if retry and target.one_in_flight:
            # The flow is blocked while the retry waits: let higher TTLs go first, so that
            # their answers settle the retry early (1.5x the later hop's RTT).
            order = 1
        heapq.heappush(self.queue, _Queued(order, ttl, flow, target.index, attempt, awaited))

    def _release(self, now_ns: int) -> int | None:
        """Queue every probe that may go now; returns the earliest token wait, if any."""
        earliest: int | None = None
        plan = ReleasePlan(self.tokens, now_ns)
        for first_pass in (True, False):  # first attempts of every target before any second
            for target in self.targets:
                if target.complete:
                    continue
                first_wave = self._first_wave(target)
                decision_limit = target.decision_limit
                # Connect probes hold their flow: none past the gap limit, where the run
                # would not wait for them anyway.
                top = decision_limit if target.one_in_flight else target.release_limit
                for ttl in range(1, top + 1):
                    for flow in range(target.flows):
                        cell = target.cell(flow, ttl)
                        if cell.first_wave_released < first_wave:
                            self._release_first_wave(target, flow, ttl, first_pass, plan)
                            continue
                        if first_pass or cell.queued or not cell.awaited_settled:
                            continue
                        if cell.answered:
                            self._release_extra(target, flow, ttl, plan)
                            continue
                        ready = self._release_retry(target, flow, ttl, decision_limit, plan)
                        if ready is not None:
                            earliest = ready if earliest is None else min(earliest, ready)
        return earliest

    def _release_first_wave(
        self, target: TargetState, flow: int, ttl: int, first_pass: bool, plan: ReleasePlan
    ) -> None:
        """The first attempts of a (flow, TTL): the first one in the first pass, the
        others in the second, as long as the responder's burst allows."""
        cell = target.cell(flow, ttl)
        first = cell.first_wave_released == 0
        if first != first_pass:
            return
        key = self._budget_key(target, flow, ttl)
        if not first and not plan.fits(key):
            # Would exceed the router's burst: leave it to the extras.
            cell.first_wave_released = self._first_wave(target)
            return
        plan.plan(key)
        # Only the first attempt is waited for; the others add samples when they are back
        # before the run ends.
        cell.first_wave_released += 1
        self._queue(target, flow, ttl, awaited=first, retry=False)

    def _release_retry(
        self, target: TargetState, flow: int, ttl: int, decision_limit: int, plan: ReleasePlan
    ) -> int | None:
        """One retry of a silent (flow, TTL); returns when the budget allows it, if later."""
        cell = target.cell(flow, ttl)
        if cell.retried or ttl > decision_limit:
            return None
        key = self._budget_key(target, flow, ttl)
        if key is not None and not key.startswith("?"):
            # A known router that answered others: the silence is likely its rate limit.
            # Retry only if this target has no answer at this TTL yet, with one flow,
            # within budget.
            flows = range(target.flows)
            if any(target.cell(f, ttl).answered for f in flows):
                cell.retried = True  # a sample lost to the limit
                return None
            pending = [f for f in flows if not target.cell(f, ttl).retried]
            if flow != min(pending, default=flow):
                cell.retried = True  # one flow retries for the TTL
                return None
            ready = plan.ready_at(key)
            if ready > plan.now_ns:
                cell.waiting_retry = True
                return ready
        plan.plan(key)
        cell.waiting_retry = False
        cell.retried = True
        self._queue(target, flow, ttl, awaited=True, retry=True)
        return None

    def _release_extra(self, target: TargetState, flow: int, ttl: int, plan: ReleasePlan) -> None:
        """Extra samples: only while the run goes on anyway, never waited for."""
        if len(target.cell(flow, ttl).probes) >= self.opts.probes_per_hop:
            return
        key = self._budget_key(target, flow, ttl)
        if not plan.fits(key):
            return
        plan.plan(key)
        self._queue(target, flow, ttl, awaited=False, retry=False)

    def _send_ready(self, now_ns: int, wire: Wire) -> bool:
        """Send what the packet budget allows; True if a sendable probe waits for tokens."""
        self.packets.refill(now_ns)
        busy_flow: list[_Queued] = []
        while self.queue and self.packets.has_token:
            entry = heapq.heappop(self.queue)
            target = self.targets[entry.target]
            cell = target.cell(entry.flow, entry.ttl)
            live = not target.complete and entry.ttl <= target.release_limit
            if live and entry.flow in target.in_flight:
                busy_flow.append(entry)  # one connect probe per flow at a time
                continue
            cell.queued -= 1
            if entry.awaited:
                cell.queued_awaited -= 1
            if live:
                self._send(target, cell, entry, wire, now_ns)
        waits_for_tokens = len(self.queue) > 0
        for entry in busy_flow:
            heapq.heappush(self.queue, entry)
        return waits_for_tokens

    def _send(
        self, target: TargetState, cell: Cell, entry: _Queued, wire: Wire, now_ns: int
    ) -> None:
        probe_id = ProbeId(target.index, entry.flow, entry.ttl, entry.attempt)
        probe = Probe(probe_id, awaited=entry.awaited)
        try:
            probe.sent_ns = wire.transmit(probe_id)
        except OSError as err:
            # The kernel refused this target's probe (no route, a local firewall, a bad
            # scope): it ends now, with the kernel's error; the other targets go on.
            target.error = TargetError("send", errno_text(err))
            target.complete = True
            target.finished_ns = now_ns
            return
        self.packets.take()
        self.sent_total += 1
        probe.budget_key = self._budget_key(target, entry.flow, entry.ttl)
        if probe.budget_key is not None:
            self.tokens.add(probe.budget_key, probe.sent_ns)
        cell.probes[entry.attempt] = probe
        self.outstanding[probe_id] = probe
        if target.one_in_flight:
            target.in_flight[entry.flow] = probe_id

    # --- answers -------------------------------------------------------------------------

    def on_answer(self, answer: Answer) -> None:
        probe_id = answer.probe
        target = self.targets[probe_id.target]
        ttl = probe_id.ttl
        cell = target.cells.get((probe_id.flow, ttl))
        probe = cell.probes.get(probe_id.attempt) if cell is not None else None
        if cell is None or probe is None or probe.answered:
            return  # not ours, or a duplicate
        rtt = max(0.0, (answer.rx_ns - probe.sent_ns) / NS)
        if rtt > self.opts.timeout:
            return
        responder = answer.responder
        probe.answered = True
        probe.rtt = rtt
        probe.responder = responder
        if not probe.settled:
            probe.settled = True
            self.outstanding.pop(probe_id, None)
        reached = responder == target.address and answer.kind is not AnswerKind.TIME_EXCEEDED
        if not reached:
            cell.responder = responder
            self.ttl_responders.setdefault((target.family, ttl), responder)
        # Only ICMP errors spend a router's rate-limit tokens.
        spent_on = responder if answer.kind.is_icmp_error else None
        if probe.budget_key != spent_on:
            self.tokens.move(probe.budget_key, spent_on, probe.sent_ns)
            probe.budget_key = spent_on
        target.rtt_by_ttl[ttl] = max(rtt, target.rtt_by_ttl.get(ttl, 0.0))
        if reached:
            if target.dest_ttl is None or ttl < target.dest_ttl:
                target.dest_ttl = ttl
        elif answer.kind is AnswerKind.UNREACHABLE and (
            target.terminal_ttl is None or ttl < target.terminal_ttl
        ):
            # Unreachable from a router (!N, !H, !X): the path ends there.
            target.terminal_ttl = ttl
        target.highest_answered = max(target.highest_answered, ttl)
        target.window_top = max(target.window_top, ttl + self.opts.initial_window)

    # --- settling and completion -----------------------------------------------------------

    def _wait_for(self, probe: Probe) -> float:
        target = self.targets[probe.id.target]
        opts = self.opts
        later = target.later_rtt(probe.ttl)
        if later is not None:
            return opts.settle_factor * later + opts.settle_floor
        seen = target.max_rtt()
        if seen is None:
            return opts.nothing_seen_wait
        return max(opts.no_later_floor, opts.no_later_factor * seen)

    def _settle(self, now_ns: int, wire: Wire) -> int | None:
        """Mark silent probes; returns the next time one could settle."""
        nearest: int | None = None
        for key, probe in list(self.outstanding.items()):
            target = self.targets[key.target]
            if target.complete or probe.ttl > target.release_limit:
                # Beyond the destination or the run is over: neither reply nor loss.
                del self.outstanding[key]
                self._free_flow(target, key, wire)
                continue
            due = probe.sent_ns + int(self._wait_for(probe) * NS)
            if due <= now_ns:
                probe.settled = True
                del self.outstanding[key]
                self._free_flow(target, key, wire)
            else:
                nearest = due if nearest is None else min(nearest, due)
        return nearest

    @staticmethod
    def _free_flow(target: TargetState, probe_id: ProbeId, wire: Wire) -> None:
        """A settled connect probe frees its flow for the next one."""
        if target.in_flight.get(probe_id.flow) == probe_id:
            del target.in_flight[probe_id.flow]
            wire.release(probe_id)

    def _check_complete(self, now_ns: int) -> None:
        for target in self.targets:
            if target.complete:
                continue
            first_wave = self._first_wave(target)
            cells = (
                (flow, ttl)
                for ttl in range(1, target.decision_limit + 1)
                for flow in range(target.flows)
            )
            if all(self._cell_done(target, flow, ttl, first_wave) for flow, ttl in cells):
                target.complete = True
                target.finished_ns = now_ns

    @staticmethod
    def _cell_done(target: TargetState, flow: int, ttl: int, first_wave: int) -> bool:
        cell = target.cells.get((flow, ttl))
        if cell is None:
            return False
        if ttl == target.dest_ttl and cell.answered:
            # The destination answered this flow: finish now; its probes still in flight
            # count neither as replies nor as loss.
            return True
        return not (
            cell.first_wave_released < first_wave
            or not cell.awaited_settled
            or cell.waiting_retry
            or (not cell.answered and not cell.retried)
        )

    # --- the result ------------------------------------------------------------------------

    def hops(self, index: int) -> tuple[bool, int, list[Hop]]:
        """(reached, hop count, hops 1..hop count) of one target; only settled probes
        count: one still in flight when the run ended is neither reply nor loss."""
        target = self.targets[index]
        if target.dest_ttl is not None:
            reached, hop_count = True, target.dest_ttl
        else:
            answered = [ttl for (_flow, ttl), cell in target.cells.items() if cell.answered]
            reached, hop_count = False, max(answered, default=0)
        hops: list[Hop] = []
        for ttl in range(1, hop_count + 1):
            flows = [self._flow_hop(target, flow, ttl) for flow in range(target.flows)]
            hop = Hop(ttl=ttl, flows=flows)
            hop.rate_limited = bool(0 < hop.replies < hop.sent and ttl < hop_count)
            hops.append(hop)
        return reached, hop_count, hops

    @staticmethod
    def _flow_hop(target: TargetState, flow: int, ttl: int) -> FlowHop:
        cell = target.cells.get((flow, ttl))
        flow_hop = FlowHop(flow=flow, ttl=ttl)
        for probe in sorted(cell.probes.values(), key=lambda p: p.id.attempt) if cell else []:
            if not probe.settled:
                continue
            flow_hop.sent += 1
            if probe.answered:
                flow_hop.rtts_ms.append(probe.rtt * 1000.0)
                flow_hop.responders[probe.responder] = (
                    flow_hop.responders.get(probe.responder, 0) + 1
                )
        return flow_hop
