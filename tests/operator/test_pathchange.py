"""ECMP-aware path-change rules: a table of cases and properties over generated paths."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from traceroute_operator.pathchange import (
    MAX_ADDRESSES_PER_TTL,
    DetectionState,
    Trace,
    differences,
    merge,
    observe,
    trace_from_path,
)


def t(*hops: str, reached: bool = True, hop_count: int | None = None) -> Trace:
    """t("10.0.1.1", "", "10.0.3.1|10.0.3.2") -> one TTL per argument, '' silent, '|' ECMP."""
    path = [h.split("|") if h else [] for h in hops]
    return trace_from_path(path, hop_count if hop_count is not None else len(path), reached)


BASE = t("10.0.1.1", "10.0.2.1", "10.1.3.2", "10.0.4.1", "10.0.5.2")


@pytest.mark.parametrize(
    ("after", "expected"),
    [
        (BASE, []),
        # a silent hop is a wildcard
        (t("10.0.1.1", "", "10.1.3.2", "", "10.0.5.2"), []),
        (t("", "", "", "", "10.0.5.2"), []),
        # ECMP: overlapping sets at a TTL are alternatives, not a change
        (t("10.0.1.1", "10.0.2.1|10.0.2.9", "10.1.3.2", "10.0.4.1", "10.0.5.2"), []),
        # disjoint responders at a TTL: a change, readable
        (
            t("10.0.1.1", "10.0.2.1", "10.2.3.2", "10.0.4.1", "10.0.5.2"),
            ["ttl 3: 10.1.3.2 -> 10.2.3.2"],
        ),
        (
            t("10.0.1.1", "10.0.2.1", "10.2.3.2|10.2.3.3", "10.0.4.1", "10.0.5.2"),
            ["ttl 3: 10.1.3.2 -> 10.2.3.2,10.2.3.3"],
        ),
        # hop count change while reached
        (
            t("10.0.1.1", "10.0.2.1", "10.1.3.2", "10.0.4.1", "10.0.4.9", "10.0.5.2"),
            ["hops: 5 -> 6", "ttl 5: 10.0.5.2 -> 10.0.4.9"],
        ),
        # reachability change
        (
            t("10.0.1.1", "10.0.2.1", "10.1.3.2", "", "", reached=False, hop_count=3),
            ["reached: yes -> no"],
        ),
    ],
)
def test_differences_table(after: Trace, expected: list[str]) -> None:
    assert differences(BASE, after) == expected


def test_unreached_both_ignores_noisy_hop_count() -> None:
    before = t("10.0.1.1", "10.0.2.1", "10.0.3.1", reached=False)
    after = t("10.0.1.1", "10.0.2.1", reached=False)  # the tail went silent
    assert differences(before, after) == []


def test_merge_learns_ecmp_and_keeps_silent_knowledge() -> None:
    merged = merge(BASE, t("10.0.1.1", "10.0.2.9|10.0.2.1", "", "10.0.4.1", "10.0.5.2"))
    assert merged.path[1] == frozenset({"10.0.2.1", "10.0.2.9"})
    assert merged.path[2] == frozenset({"10.1.3.2"})  # silent now, known before
    # the learned alternative alone is no change later
    assert differences(merged, t("10.0.1.1", "10.0.2.9", "10.1.3.2", "10.0.4.1", "10.0.5.2")) == []


def test_merge_caps_learned_alternatives() -> None:
    wide = t("|".join(f"10.9.0.{i}" for i in range(MAX_ADDRESSES_PER_TTL)))
    merged = merge(wide, t(f"10.9.0.0|10.9.1.{1}"))
    assert len(merged.path[0]) <= MAX_ADDRESSES_PER_TTL


def feed(runs: list[Trace], confirm: int) -> list[tuple[int, str]]:
    state = DetectionState()
    changes = []
    for index, run in enumerate(runs):
        state, change = observe(state, run, confirm, "target")
        if change is not None:
            changes.append((index, change.describe()))
    return changes


FLIPPED = t("10.0.1.1", "10.0.2.1", "10.2.3.2", "10.0.4.1", "10.0.5.2")


@pytest.mark.parametrize(
    ("runs", "confirm", "expected"),
    [
        ([BASE, BASE, BASE], 2, []),
        # a route flip confirmed on the second run that sees it
        ([BASE, FLIPPED, FLIPPED, FLIPPED], 2, [(2, "ttl 3: 10.1.3.2 -> 10.2.3.2")]),
        # confirmRuns 1: at once
        ([BASE, FLIPPED], 1, [(1, "ttl 3: 10.1.3.2 -> 10.2.3.2")]),
        # a one-run flicker back to the old path is no change
        ([BASE, FLIPPED, BASE, FLIPPED, BASE], 2, []),
        # flip and flip back, each confirmed: two changes
        (
            [BASE, FLIPPED, FLIPPED, BASE, BASE],
            2,
            [(2, "ttl 3: 10.1.3.2 -> 10.2.3.2"), (4, "ttl 3: 10.2.3.2 -> 10.1.3.2")],
        ),
        # a silent hop flickering never counts
        ([BASE, t("10.0.1.1", "", "10.1.3.2", "10.0.4.1", "10.0.5.2"), BASE, BASE], 1, []),
        # a run silent exactly where old and new differ is no evidence: still pending
        (
            [BASE, FLIPPED, t("10.0.1.1", "10.0.2.1", "", "10.0.4.1", "10.0.5.2"), FLIPPED],
            2,
            [(3, "ttl 3: 10.1.3.2 -> 10.2.3.2")],
        ),
        ([BASE, FLIPPED, t("", "", "", "", "10.0.5.2"), BASE, FLIPPED], 2, []),
        # confirmRuns 3 needs three consecutive sightings
        ([BASE, FLIPPED, FLIPPED, BASE, FLIPPED, FLIPPED], 3, []),
        ([BASE, FLIPPED, FLIPPED, FLIPPED], 3, [(3, "ttl 3: 10.1.3.2 -> 10.2.3.2")]),
    ],
)
def test_confirmation_table(
    runs: list[Trace], confirm: int, expected: list[tuple[int, str]]
) -> None:
    assert feed(runs, confirm) == expected


def test_state_survives_a_status_round_trip() -> None:
    state, _ = observe(DetectionState(), BASE, 2)
    state, _ = observe(state, FLIPPED, 2)
    restored = DetectionState.from_status(state.to_status())
    assert restored == state
    _, change = observe(restored, FLIPPED, 2, "x")
    assert change is not None and change.lines == ("ttl 3: 10.1.3.2 -> 10.2.3.2",)


def test_garbage_state_starts_over() -> None:
    assert DetectionState.from_status({"baseline": {"path": "nope"}}) == DetectionState()
    assert DetectionState.from_status(None) == DetectionState()


# --- properties ------------------------------------------------------------------------------

ADDRESSES = st.sampled_from([f"10.{a}.{b}.1" for a in range(3) for b in range(6)])
HOP = st.frozensets(ADDRESSES, min_size=1, max_size=3)


@st.composite
def traces(draw: st.DrawFn) -> Trace:
    path = tuple(draw(st.lists(HOP, min_size=1, max_size=8)))
    return Trace(path, len(path), draw(st.booleans()))


@st.composite
def silenced(draw: st.DrawFn, trace: Trace) -> Trace:
    mask = draw(st.lists(st.booleans(), min_size=len(trace.path), max_size=len(trace.path)))
    return Trace(
        tuple(frozenset() if m else h for h, m in zip(trace.path, mask, strict=True)),
        trace.hops,
        trace.reached,
    )


@given(traces(), st.integers(1, 4), st.integers(1, 6))
@settings(max_examples=150, deadline=None)
def test_repeating_a_path_never_changes(trace: Trace, confirm: int, repeats: int) -> None:
    assert feed([trace] * repeats, confirm) == []


@given(st.data(), traces(), st.integers(1, 3))
@settings(max_examples=150, deadline=None)
def test_silent_hops_never_change(data: st.DataObject, trace: Trace, confirm: int) -> None:
    runs = [trace] + [data.draw(silenced(trace)) for _ in range(4)] + [trace]
    assert feed(runs, confirm) == []


@given(st.data(), traces(), st.integers(1, 3))
@settings(max_examples=150, deadline=None)
def test_overlapping_ecmp_sets_never_change(
    data: st.DataObject, trace: Trace, confirm: int
) -> None:
    # every run keeps at least one address of each TTL and may add others
    runs = [trace]
    for _ in range(4):
        path = tuple(
            frozenset({data.draw(st.sampled_from(sorted(h)))})
            | data.draw(st.frozensets(ADDRESSES, max_size=2))
            for h in trace.path
        )
        runs.append(Trace(path, trace.hops, trace.reached))
    assert feed(runs, confirm) == []


@given(traces(), st.integers(0, 7), st.integers(1, 4))
@settings(max_examples=150, deadline=None)
def test_a_persistent_disjoint_hop_is_one_change_after_confirm_runs(
    trace: Trace, ttl_index: int, confirm: int
) -> None:
    index = ttl_index % len(trace.path)
    moved = tuple(frozenset({"192.0.2.77"}) if i == index else h for i, h in enumerate(trace.path))
    after = Trace(moved, trace.hops, trace.reached)
    changes = feed([trace] + [after] * (confirm + 2), confirm)
    assert len(changes) == 1
    run_index, text = changes[0]
    assert run_index == confirm  # the confirm-th run that saw it
    assert f"ttl {index + 1}: " in text and "192.0.2.77" in text


@given(traces(), traces())
@settings(max_examples=200, deadline=None)
def test_difference_is_symmetric(a: Trace, b: Trace) -> None:
    assert bool(differences(a, b)) == bool(differences(b, a))


@given(traces(), traces())
@settings(max_examples=200, deadline=None)
def test_merge_is_never_a_change_from_either_side_when_same(a: Trace, b: Trace) -> None:
    if not differences(a, b):
        merged = merge(a, b)
        assert not differences(merged, b)
        assert all(len(h) <= MAX_ADDRESSES_PER_TTL for h in merged.path)


# --- unequal ECMP: hop ranges ----------------------------------------------------------------

SHORT = t("10.0.1.1", "10.1.2.1", "10.0.9.9")  # the 3-hop branch
LONG = t("10.0.1.1", "10.2.2.1", "10.2.3.1", "10.2.4.1", "10.0.9.9")  # the 5-hop branch
# Both branches in one run: TTL 2 sees both routers, TTL 3 the long branch's router and
# the destination (the short branch's flows end there), TTL 4-5 the long branch only.
BOTH = trace_from_path(
    [["10.0.1.1"], ["10.1.2.1", "10.2.2.1"], ["10.0.9.9", "10.2.3.1"], ["10.2.4.1"], ["10.0.9.9"]],
    5,
    True,
    hops_min=3,
)


def test_a_flow_set_that_sees_both_branches_is_no_change() -> None:
    """Flows on both branches (hops 3-5) against one branch (3 or 5): the ranges overlap,
    the path sets overlap: alternatives, not a change, in either order."""
    for before, after in [(BOTH, SHORT), (BOTH, LONG), (SHORT, BOTH), (LONG, BOTH)]:
        assert differences(before, after) == [], (before, after)
    assert feed([BOTH, SHORT, LONG, BOTH, SHORT], 1) == []


def test_the_baseline_learns_the_hop_range() -> None:
    merged = merge(SHORT, BOTH)
    assert (merged.low, merged.hops) == (3, 5) and len(merged.path) == 5
    merged = merge(BOTH, SHORT)
    assert (merged.low, merged.hops) == (3, 5)  # a short-only run forgets nothing


def test_a_disjoint_hop_range_is_a_change() -> None:
    longer = trace_from_path([sorted(h) for h in BOTH.path] + [["10.0.9.9"]], 6, True, hops_min=6)
    assert differences(BOTH, longer)[0] == "hops: 3-5 -> 6"


def test_the_hop_range_survives_a_status_round_trip() -> None:
    state, _ = observe(DetectionState(), BOTH, 2)
    assert state.to_status()["baseline"]["hopsMin"] == 3
    assert DetectionState.from_status(state.to_status()) == state
