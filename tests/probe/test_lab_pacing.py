"""Pacing against real Linux routers with the kernel's DEFAULT ICMP rate limits.

Nothing here lifts ``icmp_ratelimit``/``icmp_msgs_burst``: the routers keep the per-source
bucket Linux ships (6 errors, then one per second) and runs follow each other within a
second, as they do when several probes, flows or nodes share routers. The probe must
show no false ``*``, no false destination loss, and say which flows it could not serve.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import pytest

from devcluster.lab import Lab, Topology
from tests.fixtures.lab import require_root
from tests.probe.test_lab import NOBODY, path_of, trace

# known failures since the pacing and the reply-check work met at the merge (issue 15)
MERGE_GAP = (
    "UDP/TCP runs and send errors now also wait for the end-to-end destination probes "
    "and the routers' refill retries"
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def chain() -> Iterator[Lab]:
    require_root()
    with Lab(Topology.chain(routers=4)) as lab:
        yield lab


def _check_no_false_silence(doc: dict[str, Any], truth: list[str]) -> None:
    """Every hop shows its router; every flow that probed a TTL has its answer there;
    the destination lost nothing."""
    assert doc["reached"] is True and doc["hop_count"] == len(truth), doc
    assert path_of(doc) == [[hop] for hop in truth]
    for hop in doc["hops"]:
        for flow in hop["flows"]:
            if flow["sent"]:
                assert flow["replies"] > 0, (hop["ttl"], flow)
    assert doc["destination_loss_ratio"] == 0.0
    assert doc["destination_probes"] > 0
    served, flows = doc["flows_served"], len(doc["flows"])
    assert 1 <= served <= flows
    assert ("warnings" in doc) == (served < flows)


@pytest.mark.parametrize("flows", [1, 3, 6, 7, 10, 16])
def test_back_to_back_runs_with_default_rate_limits(chain: Lab, flows: int) -> None:
    """Two runs within a second (the second finds the buckets the first spent)."""
    truth = chain.truth("probe", "target")
    docs = []
    for run in range(2):
        seed = f"pacing-{flows}-{run}"
        proc, doc = trace(
            chain, "--flows", str(flows), "--flow-seed", seed, chain.addr("target"), user=NOBODY
        )
        assert proc.returncode == 0, proc.stderr
        docs.append(doc)
    for doc in docs:
        _check_no_false_silence(doc, truth)
    # Flows up to one router's burst are served on fresh buckets.
    if flows <= 6:
        assert docs[0]["flows_served"] == flows


@pytest.mark.parametrize("protocol", ["udp", "tcp"])
def test_back_to_back_runs_other_protocols(chain: Lab, protocol: str) -> None:
    """UDP's port unreachable is rate limited at the destination too; TCP's RST is not."""
    truth = chain.truth("probe", "target")
    user = NOBODY if protocol == "udp" else None
    for run in range(2):
        proc, doc = trace(
            chain,
            "--protocol",
            protocol,
            "--flow-seed",
            f"p-{run}",
            chain.addr("target"),
            user=user,
        )
        assert proc.returncode == 0, proc.stderr
        _check_no_false_silence(doc, truth)


def unequal_ecmp() -> Topology:
    """``probe -- r1 == {a1 | b1 b2 b3} == r2 -- target``: r1 splits flows over a
    2-router and a 4-router branch of equal cost (the short one's links cost 2)."""
    topo = Topology(multipath={"r1"})
    topo.add_host("probe").add_router("r1")
    for name in ("a1", "b1", "b2", "b3", "r2"):
        topo.add_router(name)
    topo.add_host("target")
    topo.add_link("probe", "r1")
    for a, b in itertools.pairwise(["r1", "a1", "r2"]):
        topo.add_link(a, b, cost=2)
    for a, b in itertools.pairwise(["r1", "b1", "b2", "b3", "r2"]):
        topo.add_link(a, b)
    topo.add_link("r2", "target")
    topo.validate()
    return topo


@pytest.mark.xfail(
    reason=MERGE_GAP,
    strict=False,
)
def test_unequal_ecmp_hop_range_does_not_depend_on_the_flow_seed() -> None:
    """Branches of 4 and 6 hops: every seed's flows see both, so hops_min/hops_max are
    4/6 whatever the probe is named; each flow's own hop count is one of them."""
    require_root()
    with Lab(unequal_ecmp()) as lab:
        target = lab.addr("target")
        lengths = sorted({len(p) for p in lab.truth_paths("probe", "target")})
        assert lengths == [4, 6]
        for i in range(8):
            proc, doc = trace(
                lab, "--protocol", "tcp", "--flows", "8", "--flow-seed", f"s{i}", target
            )
            assert proc.returncode == 0, proc.stderr
            assert (doc["hops_min"], doc["hops_max"], doc["hop_count"]) == (4, 6, 6), doc
            assert {f["hops"] for f in doc["flows"]} <= {4, 6}
            assert doc["destination_loss_ratio"] == 0.0
            for hop in doc["hops"]:
                assert hop["addresses"], hop  # no false silence on either branch
