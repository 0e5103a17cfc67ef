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
- every probe (first attempts too) goes to a responder only while its modelled token
  bucket (burst 6, 1/s per source, fed by every probe attributed to it, across flows and
  targets) has a token, so that pacing, not the router, decides: no false loss. An
  unknown responder is modelled as one Linux router per TTL;
- the buckets may be empty at the start (another run just spent them): a silent
  (flow, TTL) gets a refill retry once the router's bucket has refilled (at least
  ``ratelimit_interval`` after the silence; for an unknown router one flow tries first,
  the others follow only if it answered). What the deadline leaves unmeasured is
  reported as not served (no probes, no loss), never as loss;
- each flow has its own destination TTL (ECMP branches may differ in length): a flow is
  traced up to its own destination, so hop counts are per flow;
- ``destination_probes`` dedicated end-to-end probes per target (at TTL 255, spaced,
  paced like the rest) measure the destination's loss apart from the trace;
- a silent probe is settled once a later TTL answered and ``settle_factor`` times that
  RTT passed (or, with no later answer, a multiple of the largest RTT seen);
- the run finishes as soon as the destination answered every flow, all lower TTLs
  are settled and the end-to-end probes are back or settled; without the destination,
  ``gap_limit`` silent TTLs after the last responder end it; a hard deadline ends
  everything. The result is always complete.

Connect probes (TCP without raw sockets) hold their flow: one probe in flight per flow,
a first wave of one attempt, retries after higher TTLs, nothing past the gap limit.
"""

from __future__ import annotations

import enum
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
    refill: bool = False  # a retry after the router's bucket refilled

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
    refills: int = 0  # refill retries sent
    refill_attempts: set[int] = field(default_factory=set)
    final: bool = False  # silent after every retry: a real silence
    unserved: bool = False  # the deadline leaves no token for it: not measured
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


E2E_TTL = packets.MAX_TTL  # the dedicated end-to-end probes: above any traced TTL
REFILL_RETRIES = 2  # per (flow, TTL) towards a known router; one towards an unknown one


class TargetState:
    """Progress of one target: its cells and what the answers told about its path."""

    def __init__(self, index: int, plan: TargetPlan, opts: WaveOptions, start_ns: int) -> None:
        self.index = index
        self.address = plan.address
        self.family = plan.family
        self.flows = plan.flows
        self.one_in_flight = plan.one_in_flight
        self.opts = opts
        self.cells: dict[tuple[int, int], Cell] = {}
        self.flow_dest: dict[int, int] = {}  # flow -> TTL at which the destination answered
        self.flow_terminal: dict[int, int] = {}  # flow -> TTL of an unreachable from a router
        self.highest_answered = 0
        self.window_top = min(opts.max_hops, opts.initial_window)
        self.rtt_by_ttl: dict[int, float] = {}  # largest RTT (s) seen per TTL
        self.error: TargetError | None = plan.error
        self.complete = plan.error is not None
        # Refused before any probe (e.g. connect() of a UDP socket: no route): it ended at
        # the start, not when the other targets' run ends.
        self.finished_ns = start_ns if self.complete else 0
        self.in_flight: dict[int, ProbeId] = {}  # flow -> its probe (one_in_flight only)
        self.e2e: dict[int, Probe] = {}  # end-to-end probes by index
        self.e2e_done = opts.destination_probes <= 0  # none left to send

    def cell(self, flow: int, ttl: int) -> Cell:
        key = (flow, ttl)
        cell = self.cells.get(key)
        if cell is None:
            cell = self.cells[key] = Cell()
        return cell

    @property
    def dest_ttl(self) -> int | None:
        """The lowest destination TTL of any flow (None: not reached yet)."""
        return min(self.flow_dest.values(), default=None)

    def release_limit(self, flow: int) -> int:
        """Highest TTL the flow may be probed at: the window, never past its destination."""
        limit = min(self.opts.max_hops, self.window_top)
        for ends in (self.flow_dest, self.flow_terminal):
            if flow in ends:
                limit = min(limit, ends[flow])
        return max(limit, 1)

    def decision_limit(self, flow: int) -> int:
        """Highest TTL of the flow whose outcome the run waits for (gap limit without
        its destination)."""
        limit = self.release_limit(flow)
        if flow not in self.flow_dest and flow not in self.flow_terminal:
            limit = min(limit, self.highest_answered + self.opts.gap_limit)
        return max(limit, 1)

    def max_rtt(self) -> float | None:
        return max(self.rtt_by_ttl.values()) if self.rtt_by_ttl else None

    def later_rtt(self, ttl: int) -> float | None:
        """Largest RTT of the nearest TTL above ``ttl`` that answered."""
        later = [t for t in self.rtt_by_ttl if t > ttl]
        return self.rtt_by_ttl[min(later)] if later else None

    def flow_hops(self, flow: int) -> int | None:
        """The flow's hop count: its destination TTL, else its highest answered TTL."""
        if flow in self.flow_dest:
            return self.flow_dest[flow]
        answered = [ttl for (f, ttl), cell in self.cells.items() if f == flow and cell.answered]
        return max(answered, default=None)

    def measured(self, flow: int, ttl: int) -> bool:
        """The (flow, TTL) has a result: an answer, or a silence after every retry."""
        cell = self.cells.get((flow, ttl))
        return cell is not None and (cell.answered or (cell.final and not cell.unserved))

    def served(self, flow: int) -> bool:
        """Every TTL of the flow up to its hop count (or gap limit) was measured."""
        top = self.decision_limit(flow)
        return all(self.measured(flow, ttl) for ttl in range(1, top + 1))


class _Stage(enum.Enum):
    """The passes of one release: what may take a router's tokens first."""

    FIRST = 1  # first attempts
    NEEDED = 2  # the rest of the first wave, retries, end-to-end probes
    EXTRA = 3  # extra samples of answered cells


class _Queued(NamedTuple):
    """A released probe waiting for the packet budget; the heap orders by these fields:
    first attempts and low TTLs first, per TTL one flow of every target before the next
    flow (first hops are usually shared). TTL 0: an end-to-end probe (sent at E2E_TTL)."""

    order: int
    ttl: int
    flow: int
    target: int
    attempt: int
    awaited: bool


class Schedule:
    def __init__(self, plans: Sequence[TargetPlan], opts: WaveOptions, start_ns: int) -> None:
        self.opts = opts
        self.targets = [TargetState(i, plan, opts, start_ns) for i, plan in enumerate(plans)]
        self.start_ns = start_ns
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
        """Whether ``probe_id`` went out (a traced or an end-to-end probe): an answer to any
        other probe is not one."""
        _, probe = self._probe_of(probe_id)
        return probe is not None and probe.sent_ns != 0

    # --- sending -------------------------------------------------------------------------

    def _destination_key(self, target: TargetState) -> str | None:
        """Echo replies and TCP answers are not rate limited; port unreachable is."""
        return target.address if self.opts.protocol == "udp" else None

    def _budget_key(self, target: TargetState, flow: int, ttl: int) -> str | None:
        """The responder a probe most likely reaches, for the rate-limit model.

        Known: this flow's, another flow's, or (first hops are usually shared) another
        target's responder at this TTL. Unknown: one shared "?" bucket per TTL, as if a
        single router answered it. None: answers that are not rate limited.
        """
        if ttl == E2E_TTL or ttl >= target.flow_dest.get(flow, E2E_TTL + 1):
            return self._destination_key(target)
        cell = target.cells.get((flow, ttl))
        if cell is not None and cell.responder is not None:
            return cell.responder
        for f in range(target.flows):
            other = target.cells.get((f, ttl))
            if other is not None and other.responder is not None:
                return other.responder
        shared = self.ttl_responders.get((target.family, ttl))
        if shared is not None:
            return shared
        dest = target.dest_ttl
        if dest is not None and ttl >= dest and self.opts.protocol == "udp":
            return target.address  # most likely the destination's port unreachable
        return f"?{target.family}/{ttl}"

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
        """Queue every probe that may go now; returns the earliest token wait, if any.

        Tokens go TTL by TTL, flow 0 of every target before flow 1 of any: targets behind
        the same routers each get a flow through before a second flow of one of them."""
        earliest: int | None = None
        plan = ReleasePlan(self.tokens, now_ns)
        live = [t for t in self.targets if not t.complete]
        # First attempts of every target before any second; retries before extra samples.
        for stage in (_Stage.FIRST, _Stage.NEEDED, _Stage.EXTRA):
            if stage is _Stage.EXTRA and self._needed_waits(live):
                # An unknown router may be a known one at another TTL (r2 on the short
                # and the long branch): extra samples must not take its refill token.
                break
            cells = heapq.merge(
                *([(ttl, flow, t.index) for ttl, flow in self._cells_to_release(t)] for t in live)
            )
            waits = [
                self._release_cell(self.targets[index], flow, ttl, stage, plan)
                for ttl, flow, index in cells
            ]
            if stage is _Stage.NEEDED:
                waits += [self._release_e2e(t, plan) for t in live]
            earliest = min([w for w in waits if w is not None], default=earliest)
        return earliest

    @staticmethod
    def _needed_waits(targets: Sequence[TargetState]) -> bool:
        """Some first attempt or retry waits for a router's token."""
        return any(cell.waiting_retry for t in targets for cell in t.cells.values())

    @staticmethod
    def _cells_to_release(target: TargetState) -> list[tuple[int, int]]:
        """(TTL, flow) pairs that may be probed now, TTL-major, flows in order."""
        # Connect probes hold their flow: none past the gap limit, where the run would
        # not wait for them anyway.
        tops = [
            target.decision_limit(f) if target.one_in_flight else target.release_limit(f)
            for f in range(target.flows)
        ]
        return [
            (ttl, flow)
            for ttl in range(1, max(tops, default=0) + 1)
            for flow in range(target.flows)
            if ttl <= tops[flow]
        ]

    def _release_cell(
        self, target: TargetState, flow: int, ttl: int, stage: _Stage, plan: ReleasePlan
    ) -> int | None:
        cell = target.cell(flow, ttl)
        if cell.unserved or (stage is _Stage.EXTRA and not cell.answered):
            return None
        if cell.first_wave_released < self._first_wave(target):
            if stage is _Stage.EXTRA:
                return None
            return self._release_first_wave(target, flow, ttl, stage is _Stage.FIRST, plan)
        if stage is _Stage.FIRST or cell.queued or not cell.awaited_settled:
            return None
        if stage is _Stage.EXTRA:
            self._release_extra(target, flow, ttl, plan)
            return None
        return None if cell.answered else self._release_retry(target, flow, ttl, plan)

    def _release_first_wave(
        self, target: TargetState, flow: int, ttl: int, first_pass: bool, plan: ReleasePlan
    ) -> int | None:
        """The first attempts of a (flow, TTL): the first one in the first pass, the
        others in the second, each only while the responder's modelled burst allows;
        returns when the first one may go, if it must wait."""
        cell = target.cell(flow, ttl)
        first = cell.first_wave_released == 0
        if first != first_pass:
            return None
        key = self._budget_key(target, flow, ttl)
        if not plan.fits(key):
            if not first:
                # Would exceed the router's burst: leave it to the extras.
                cell.first_wave_released = self._first_wave(target)
                return None
            return self._wait_or_give_up(cell, plan.ready_at(key) if key else plan.now_ns)
        cell.waiting_retry = False
        plan.plan(key)
        # Only the first attempt is waited for; the others add samples when they are back
        # before the run ends.
        cell.first_wave_released += 1
        self._queue(target, flow, ttl, awaited=first, retry=False)
        return None

    def _wait_or_give_up(self, cell: Cell, ready_ns: int) -> int | None:
        """A probe waits for a token; one the deadline leaves no time for is not served."""
        if ready_ns >= self.deadline_ns:
            cell.unserved = True
            cell.final = True
            cell.waiting_retry = False
            return None
        cell.waiting_retry = True
        return ready_ns

    def _release_retry(
        self, target: TargetState, flow: int, ttl: int, plan: ReleasePlan
    ) -> int | None:
        """Retries of a silent (flow, TTL): at an unknown router one as soon as it
        settled (a lost packet), then refill retries once the router's bucket has a
        token again (a bucket another run spent); returns when the next one may go."""
        cell = target.cell(flow, ttl)
        if cell.final:
            return None
        if ttl > target.decision_limit(flow):
            cell.final = True
            return None
        key = self._budget_key(target, flow, ttl)
        known = key is not None and not key.startswith("?")
        refill = known or cell.retried
        ready = plan.now_ns
        if refill:
            gate = self._refill_gate(target, flow, ttl, known)
            if gate is not True:
                cell.waiting_retry = gate is None
                return None
            ready = self._refill_at(cell, key, plan)
        if ready > plan.now_ns:
            return self._wait_or_give_up(cell, ready)
        plan.plan(key)
        cell.waiting_retry = False
        cell.retried = True
        if refill:
            cell.refills += 1
            cell.refill_attempts.add(cell.next_attempt)
        self._queue(target, flow, ttl, awaited=True, retry=True)
        return None

    def _refill_gate(self, target: TargetState, flow: int, ttl: int, known: bool) -> bool | None:
        """Whether a silent cell gets (another) refill retry: True go, False never (the
        cell is final), None not yet (another flow finds out first)."""
        cell = target.cell(flow, ttl)
        # An unknown router in a hole (the flow answered further on) may be a known one
        # seen at another TTL (the merge point of ECMP branches of unequal length), whose
        # refill token another retry may have taken: it gets a second refill retry too.
        hole = target.flow_hops(flow) is not None and ttl < (target.flow_hops(flow) or 0)
        if cell.refills >= (REFILL_RETRIES if known or hole else 1):
            cell.final = True
            return False
        if known:
            return True
        # One flow finds out whether an unknown router is silent or was spent: if its
        # refill retry stays silent, so is the TTL for every flow; if it answers, the
        # router is known and the others follow at its pace.
        pioneer = min(
            (f for f in range(target.flows) if not target.cell(f, ttl).answered), default=flow
        )
        if pioneer == flow:
            return True
        scout = target.cell(pioneer, ttl)
        if scout.final:
            cell.final = True
            cell.unserved = scout.unserved  # the deadline left the question open
            return False
        return None

    def _refill_at(self, cell: Cell, key: str | None, plan: ReleasePlan) -> int:
        """When a refill retry may go: the model's next token, and never before one
        refill interval after the cell's last silent probe."""
        last_sent = max((p.sent_ns for p in cell.probes.values()), default=plan.now_ns)
        ready = last_sent + int(self.opts.ratelimit_interval * NS)
        if key is not None:
            ready = max(ready, plan.ready_at(key))
        return ready

    def _release_extra(self, target: TargetState, flow: int, ttl: int, plan: ReleasePlan) -> None:
        """Extra samples: only while the run goes on anyway, never waited for."""
        if len(target.cell(flow, ttl).probes) >= self.opts.probes_per_hop:
            return
        key = self._budget_key(target, flow, ttl)
        if not plan.fits(key):
            return
        plan.plan(key)
        self._queue(target, flow, ttl, awaited=False, retry=False)

    def _release_e2e(self, target: TargetState, plan: ReleasePlan) -> int | None:
        """The next end-to-end probe of the target, spaced ``destination_interval`` apart
        and, for UDP (port unreachable is rate limited), only after the trace and within
        the destination's modelled bucket; returns when the next one may go."""
        if target.e2e_done:
            return None
        index = len(target.e2e)
        ready = self._e2e_ready(target, index, plan)
        if ready is None or ready > plan.now_ns:
            return ready
        key = self._destination_key(target)
        plan.plan(key)
        flow, attempt = index % target.flows, index // target.flows
        if attempt >= packets.MAX_ATTEMPTS:
            target.e2e_done = True
            return None
        target.e2e[index] = Probe(ProbeId(target.index, flow, E2E_TTL, attempt), awaited=True)
        target.e2e_done = index + 1 >= self.opts.destination_probes
        # Sort key TTL 0: before the trace's probes, so that they are back with the trace.
        heapq.heappush(self.queue, _Queued(0, 0, flow, target.index, attempt, True))
        return None

    def _e2e_ready(self, target: TargetState, index: int, plan: ReleasePlan) -> int | None:
        """When end-to-end probe ``index`` may go (None: not now, nothing to wait for)."""
        key = self._destination_key(target)
        if key is not None:
            if not self._trace_done(target):
                return None
            if not plan.fits(key):
                ready = plan.ready_at(key)
                if target.e2e or ready >= self.deadline_ns:
                    target.e2e_done = True  # what fitted: no waiting for more
                    return None
                return ready
        if not index:
            return plan.now_ns
        last = target.e2e[index - 1].sent_ns
        if not last:
            return None  # the previous one waits for the packet budget
        return max(plan.now_ns, last + int(self.opts.destination_interval * NS))

    def _send_ready(self, now_ns: int, wire: Wire) -> bool:
        """Send what the packet budget allows; True if a sendable probe waits for tokens."""
        self.packets.refill(now_ns)
        busy_flow: list[_Queued] = []
        while self.queue and self.packets.has_token:
            entry = heapq.heappop(self.queue)
            target = self.targets[entry.target]
            if entry.flow in target.in_flight and not target.complete:
                busy_flow.append(entry)  # one connect probe per flow at a time
                continue
            if entry.ttl == 0:
                self._send_e2e(target, entry, wire, now_ns)
                continue
            cell = target.cell(entry.flow, entry.ttl)
            cell.queued -= 1
            if entry.awaited:
                cell.queued_awaited -= 1
            if not target.complete and entry.ttl <= target.release_limit(entry.flow):
                self._send(target, cell, entry, wire, now_ns)
        waits_for_tokens = len(self.queue) > 0
        for entry in busy_flow:
            heapq.heappush(self.queue, entry)
        return waits_for_tokens

    def _transmit(self, target: TargetState, probe: Probe, wire: Wire, now_ns: int) -> bool:
        """Put ``probe`` on the wire; a send error ends the target."""
        try:
            probe.sent_ns = wire.transmit(probe.id)
        except OSError as err:
            # The kernel refused this target's probe (no route, a local firewall, a bad
            # scope): it ends now, with the kernel's error; the other targets go on.
            target.error = TargetError("send", errno_text(err))
            target.complete = True
            target.finished_ns = now_ns
            return False
        self.packets.take()
        self.sent_total += 1
        if probe.budget_key is not None:
            self.tokens.add(probe.budget_key, probe.sent_ns)
        self.outstanding[probe.id] = probe
        if target.one_in_flight:
            target.in_flight[probe.id.flow] = probe.id
        return True

    def _send_e2e(self, target: TargetState, entry: _Queued, wire: Wire, now_ns: int) -> None:
        probe = target.e2e[entry.attempt * target.flows + entry.flow]
        if target.complete:
            del target.e2e[entry.attempt * target.flows + entry.flow]
            return
        probe.budget_key = self._destination_key(target)
        self._transmit(target, probe, wire, now_ns)

    def _send(
        self, target: TargetState, cell: Cell, entry: _Queued, wire: Wire, now_ns: int
    ) -> None:
        probe_id = ProbeId(target.index, entry.flow, entry.ttl, entry.attempt)
        probe = Probe(probe_id, awaited=entry.awaited, refill=entry.attempt in cell.refill_attempts)
        probe.budget_key = self._budget_key(target, entry.flow, entry.ttl)
        if self._transmit(target, probe, wire, now_ns):
            cell.probes[entry.attempt] = probe

    # --- answers -------------------------------------------------------------------------

    def _probe_of(self, probe_id: ProbeId) -> tuple[Cell | None, Probe | None]:
        target = self.targets[probe_id.target]
        if probe_id.ttl == E2E_TTL:
            return None, target.e2e.get(probe_id.attempt * target.flows + probe_id.flow)
        cell = target.cells.get((probe_id.flow, probe_id.ttl))
        return cell, cell.probes.get(probe_id.attempt) if cell is not None else None

    def on_answer(self, answer: Answer) -> None:
        probe_id = answer.probe
        target = self.targets[probe_id.target]
        cell, probe = self._probe_of(probe_id)
        if probe is None or probe.answered or not probe.sent_ns:
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
        # Only ICMP errors spend a router's rate-limit tokens.
        spent_on = responder if answer.kind.is_icmp_error else None
        if probe.budget_key != spent_on:
            self.tokens.move(probe.budget_key, spent_on, probe.sent_ns)
            probe.budget_key = spent_on
        if probe.refill and spent_on is not None:
            # The first answer after the bucket ran dry: it took the only token.
            self.tokens.mark_empty(spent_on, probe.sent_ns + 1)
        if cell is not None:
            self._learn(target, cell, probe_id, answer)

    def _learn(self, target: TargetState, cell: Cell, probe_id: ProbeId, answer: Answer) -> None:
        """What a trace probe's answer tells about the flow's path."""
        ttl, flow, responder = probe_id.ttl, probe_id.flow, answer.responder
        reached = responder == target.address and answer.kind is not AnswerKind.TIME_EXCEEDED
        if not reached:
            cell.responder = responder
            if (target.family, ttl) not in self.ttl_responders:
                self.ttl_responders[(target.family, ttl)] = responder
                self._attribute(f"?{target.family}/{ttl}", responder)
        rtt = cell.probes[probe_id.attempt].rtt
        target.rtt_by_ttl[ttl] = max(rtt, target.rtt_by_ttl.get(ttl, 0.0))
        if reached:
            target.flow_dest[flow] = min(ttl, target.flow_dest.get(flow, ttl))
        elif answer.kind is AnswerKind.UNREACHABLE:
            # Unreachable from a router (!N, !H, !X): the flow's path ends there.
            target.flow_terminal[flow] = min(ttl, target.flow_terminal.get(flow, ttl))
        target.highest_answered = max(target.highest_answered, ttl)
        target.window_top = max(target.window_top, ttl + self.opts.initial_window)

    def _attribute(self, unknown: str, responder: str) -> None:
        """Probes in flight to an unknown router at a TTL most likely reached the one
        that has just answered there: the model counts them against its bucket."""
        for probe in self.outstanding.values():
            if probe.budget_key == unknown:
                self.tokens.move(unknown, responder, probe.sent_ns)
                probe.budget_key = responder

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
            beyond = key.ttl != E2E_TTL and probe.ttl > target.release_limit(key.flow)
            if target.complete or beyond:
                # Beyond the destination or the run is over: neither reply nor loss.
                del self.outstanding[key]
                self._free_flow(target, key, wire)
                continue
            due = probe.sent_ns + int(self._wait_for(probe) * NS)
            if due <= now_ns:
                probe.settled = True
                del self.outstanding[key]
                self._free_flow(target, key, wire)
                self._silence(probe)
            else:
                nearest = due if nearest is None else min(nearest, due)
        return nearest

    def _silence(self, probe: Probe) -> None:
        """A probe settled silent: it spent no token (Linux spends none on a drop, and a
        silent router has none). At a known router the bucket was empty, so the model
        waits for its refill; an unknown one may be silent or spent (see _refill_at)."""
        key = probe.budget_key
        if key is None:
            return
        self.tokens.move(key, None, probe.sent_ns)
        probe.budget_key = None
        if not key.startswith("?"):
            self.tokens.mark_empty(key, probe.sent_ns)

    @staticmethod
    def _free_flow(target: TargetState, probe_id: ProbeId, wire: Wire) -> None:
        """A settled connect probe frees its flow for the next one."""
        if target.in_flight.get(probe_id.flow) == probe_id:
            del target.in_flight[probe_id.flow]
            wire.release(probe_id)

    def _trace_done(self, target: TargetState) -> bool:
        first_wave = self._first_wave(target)
        return all(
            self._cell_done(target, flow, ttl, first_wave)
            for flow in range(target.flows)
            for ttl in range(1, target.decision_limit(flow) + 1)
        )

    def _check_complete(self, now_ns: int) -> None:
        for target in self.targets:
            if target.complete:
                continue
            e2e_settled = target.e2e_done and all(p.settled for p in target.e2e.values())
            if e2e_settled and self._trace_done(target):
                target.complete = True
                target.finished_ns = now_ns

    @staticmethod
    def _cell_done(target: TargetState, flow: int, ttl: int, first_wave: int) -> bool:
        cell = target.cells.get((flow, ttl))
        if cell is None:
            return False
        if cell.unserved or (ttl == target.flow_dest.get(flow) and cell.answered):
            # The destination answered this flow: finish now; its probes still in flight
            # count neither as replies nor as loss.
            return True
        return not (
            cell.first_wave_released < first_wave
            or not cell.awaited_settled
            or cell.waiting_retry
            or (not cell.answered and not cell.final)
        )

    # --- the result ------------------------------------------------------------------------

    def hops(self, index: int) -> tuple[bool, int, list[Hop]]:
        """(reached, hop count, hops 1..hop count) of one target; only settled probes
        count: one still in flight when the run ended is neither reply nor loss. The
        hop count is the longest flow's (see :meth:`outcome`)."""
        outcome = self.outcome(index)
        return outcome.reached, outcome.hop_count, outcome.hops

    def outcome(self, index: int) -> TraceOutcome:
        target = self.targets[index]
        per_flow = [target.flow_hops(f) for f in range(target.flows)]
        reached = bool(target.flow_dest)
        counted = (
            [target.flow_dest[f] for f in sorted(target.flow_dest)]
            if reached
            else [h for h in per_flow if h is not None]
        )
        hop_count = max(counted, default=0)
        hops: list[Hop] = []
        for ttl in range(1, hop_count + 1):
            flows = [
                self._flow_hop(target, flow, ttl, per_flow[flow]) for flow in range(target.flows)
            ]
            hop = Hop(ttl=ttl, flows=flows)
            hop.rate_limited = bool(0 < hop.replies < hop.sent and ttl < hop_count)
            hops.append(hop)
        e2e = [p for p in target.e2e.values() if p.settled]
        return TraceOutcome(
            reached=reached,
            hop_count=hop_count,
            hops_min=min(counted, default=0),
            flow_hops=per_flow,
            hops=hops,
            flows_served=sum(1 for f in range(target.flows) if target.served(f)),
            e2e_sent=len(e2e),
            e2e_rtts_ms=[
                p.rtt * 1000.0 for p in e2e if p.answered and p.responder == target.address
            ],
        )

    @staticmethod
    def _flow_hop(target: TargetState, flow: int, ttl: int, flow_hops: int | None) -> FlowHop:
        """What the flow saw at ``ttl``: nothing past its own destination, and nothing
        for a silence the deadline left unmeasured (probes presumed lost to a router's
        empty bucket are not loss)."""
        cell = target.cells.get((flow, ttl))
        flow_hop = FlowHop(flow=flow, ttl=ttl)
        if cell is None or (flow in target.flow_dest and ttl > (flow_hops or 0)):
            return flow_hop
        if not cell.answered and not target.measured(flow, ttl):
            return flow_hop
        for probe in sorted(cell.probes.values(), key=lambda p: p.id.attempt):
            if not probe.settled:
                continue
            flow_hop.sent += 1
            if probe.answered:
                flow_hop.rtts_ms.append(probe.rtt * 1000.0)
                flow_hop.responders[probe.responder] = (
                    flow_hop.responders.get(probe.responder, 0) + 1
                )
        return flow_hop


@dataclass(frozen=True)
class TraceOutcome:
    """What the schedule measured of one target."""

    reached: bool
    hop_count: int  # the longest flow's hop count: hops cover TTL 1..hop_count
    hops_min: int  # the shortest reached flow's hop count (equal without unequal ECMP)
    flow_hops: list[int | None]  # per flow: destination TTL, else highest answered TTL
    hops: list[Hop]
    flows_served: int  # flows whose every TTL was measured within the deadline
    e2e_sent: int  # end-to-end probes settled (answered or timed out)
    e2e_rtts_ms: list[float]  # their answers from the destination
