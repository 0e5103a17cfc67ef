"""ECMP-aware path-change detection.

A path is, per TTL, the set of addresses that answered across the run's fixed flows.
Two paths differ only when

- the destination was reached in one run and not in the other, or
- both runs reached the destination and their hop ranges are disjoint, or
- at some TTL both runs have responders and the two sets are disjoint.

A run's hop range is its flows' shortest to longest hop count: under ECMP with branches
of unequal length the flows of one run may see both (range 4-6), another flow set only
one (4 or 6). Like address sets, overlapping ranges are alternatives, not a change, and
the baseline accumulates them; the path covers TTL 1..the longest.

A silent TTL (empty set) is a wildcard: rate limiting or a router that drops Time
Exceeded is not a route change. Overlapping sets at one TTL are ECMP alternatives, not a
change; the accepted path ("baseline") accumulates them. When neither run reached the
destination the hop count is the highest TTL that answered, which silent tails make
noisy, so it is not compared; the TTLs still are.

A difference must persist for ``confirm_runs`` consecutive runs (the same new path each
time) before it counts; a single odd run followed by the old path is no change. A run that
fits both the old and the pending new path (silent where they differ) is no evidence
either way and leaves the pending change as it is.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

Path = tuple[frozenset[str], ...]

# A baseline TTL accumulating more alternatives than this stops learning (a load
# balancer spraying over dozens of addresses would otherwise grow status without bound).
MAX_ADDRESSES_PER_TTL = 16


@dataclass(frozen=True)
class Trace:
    path: Path
    hops: int  # the longest flow's hop count (the path covers TTL 1..hops)
    reached: bool
    hops_min: int | None = None  # the shortest flow's; None: equal to hops

    @property
    def low(self) -> int:
        return self.hops if self.hops_min is None else min(self.hops_min, self.hops)

    def to_status(self) -> dict[str, Any]:
        status: dict[str, Any] = {
            "path": [sorted(hop) for hop in self.path],
            "hops": self.hops,
            "reached": self.reached,
        }
        if self.low != self.hops:
            status["hopsMin"] = self.low
        return status

    @classmethod
    def from_status(cls, raw: Any) -> Trace | None:
        if not isinstance(raw, Mapping):
            return None
        path = raw.get("path")
        hops = raw.get("hops")
        reached = raw.get("reached")
        if not isinstance(path, list) or not isinstance(hops, int) or not isinstance(reached, bool):
            return None
        hops_sets = []
        for hop in path:
            if not isinstance(hop, list) or not all(isinstance(a, str) for a in hop):
                return None
            hops_sets.append(frozenset(hop))
        low = raw.get("hopsMin")
        low = low if isinstance(low, int) and not isinstance(low, bool) and low <= hops else None
        return cls(tuple(hops_sets), hops, reached, low)


@dataclass(frozen=True)
class PathChange:
    target: str
    before: Trace
    after: Trace
    lines: tuple[str, ...]

    def describe(self) -> str:
        return "; ".join(self.lines)


@dataclass(frozen=True)
class DetectionState:
    baseline: Trace | None = None
    candidate: Trace | None = None
    candidate_runs: int = 0

    def to_status(self) -> dict[str, Any]:
        status: dict[str, Any] = {"candidateRuns": self.candidate_runs}
        if self.baseline is not None:
            status["baseline"] = self.baseline.to_status()
        if self.candidate is not None:
            status["candidate"] = self.candidate.to_status()
        return status

    @classmethod
    def from_status(cls, raw: Any) -> DetectionState:
        if not isinstance(raw, Mapping):
            return cls()
        baseline = Trace.from_status(raw.get("baseline"))
        candidate = Trace.from_status(raw.get("candidate"))
        runs = raw.get("candidateRuns")
        runs = runs if isinstance(runs, int) and runs >= 0 and candidate is not None else 0
        return cls(baseline, candidate if baseline is not None else None, runs)


def _show(addresses: frozenset[str]) -> str:
    return ",".join(sorted(addresses)) if addresses else "*"


def _range(trace: Trace) -> str:
    return str(trace.hops) if trace.low == trace.hops else f"{trace.low}-{trace.hops}"


def differences(before: Trace, after: Trace) -> list[str]:
    """Readable differences that make ``after`` a different path; empty = same path."""
    lines: list[str] = []
    if before.reached != after.reached:
        lines.append(
            f"reached: {'yes' if before.reached else 'no'} -> {'yes' if after.reached else 'no'}"
        )
    elif before.reached and (after.hops < before.low or before.hops < after.low):
        lines.append(f"hops: {_range(before)} -> {_range(after)}")
    for ttl, (old, new) in enumerate(zip(before.path, after.path, strict=False), start=1):
        if old and new and old.isdisjoint(new):
            lines.append(f"ttl {ttl}: {_show(old)} -> {_show(new)}")
    return lines


def merge(base: Trace, observed: Trace) -> Trace:
    """The accepted path after a run that did not differ from it.

    Silent TTLs keep what the baseline knew; overlapping TTLs learn the ECMP alternatives,
    overlapping hop ranges the branch lengths.
    """
    if observed.reached and base.reached:
        hops, low = max(base.hops, observed.hops), min(base.low, observed.low)
    elif observed.reached:
        hops, low = observed.hops, observed.low
    else:
        hops, low = max(base.hops, observed.hops), None
    length = hops if observed.reached else max(len(base.path), len(observed.path))
    merged: list[frozenset[str]] = []
    for index in range(length):
        old = base.path[index] if index < len(base.path) else frozenset()
        new = observed.path[index] if index < len(observed.path) else frozenset()
        if not new:
            merged.append(old)
        elif not old:
            merged.append(new)
        else:
            union = old | new
            merged.append(union if len(union) <= MAX_ADDRESSES_PER_TTL else new)
    return Trace(tuple(merged), hops, observed.reached, None if low == hops else low)


def observe(
    state: DetectionState, observed: Trace, confirm_runs: int, target: str = ""
) -> tuple[DetectionState, PathChange | None]:
    """Feed one run's trace; returns the new state and the change it confirmed, if any."""
    confirm_runs = max(1, confirm_runs)
    if state.baseline is None:
        return DetectionState(baseline=observed), None
    if not differences(state.baseline, observed):
        if state.candidate is not None and not differences(state.candidate, observed):
            # silent exactly where the two differ (e.g. rate-limited routers): evidence for
            # neither, so the pending change neither advances nor resets
            return state, None
        return DetectionState(baseline=merge(state.baseline, observed)), None
    if state.candidate is not None and not differences(state.candidate, observed):
        candidate = merge(state.candidate, observed)
        runs = state.candidate_runs + 1
    else:
        candidate, runs = observed, 1
    if runs >= confirm_runs:
        lines = tuple(differences(state.baseline, candidate))
        if not lines:
            # learned alternatives made the candidate overlap the baseline after all
            return DetectionState(baseline=merge(state.baseline, candidate)), None
        change = PathChange(target, state.baseline, candidate, lines)
        return DetectionState(baseline=candidate), change
    return DetectionState(state.baseline, candidate, runs), None


def trace_from_path(
    path: Sequence[Sequence[str]], hops: int, reached: bool, hops_min: int | None = None
) -> Trace:
    low = None if hops_min is None or hops_min >= hops else hops_min
    return Trace(tuple(frozenset(hop) for hop in path), hops, reached, low)
