"""Pure parts of the cluster with real nodes: the lab topology its nodes sit in."""

from __future__ import annotations

import pytest

from devcluster.cluster import node_topology
from devcluster.lab import Lab


def hops(lab: Lab, node: str) -> list[str]:
    return [lab.node_of(a) for a in lab.truth(node, "target")]


def test_each_node_has_its_own_first_hop_and_all_meet_at_rcore() -> None:
    lab = Lab(node_topology(2))
    assert hops(lab, "node1") == ["r1", "rcore", "target"]
    assert hops(lab, "node2") == ["r2", "rcore", "target"]
    assert lab.topology.paths == ()


def test_branches_give_every_node_a_route_to_flip() -> None:
    lab = Lab(node_topology(2, branches=(2, 3), link_delay_ms=3.0))
    assert hops(lab, "node1") == ["r1", "rcore", "a1", "a2", "rjoin", "target"]
    assert hops(lab, "node2") == ["r2", "rcore", "a1", "a2", "rjoin", "target"]
    # both directions follow the active path
    assert [lab.node_of(a) for a in lab.truth("target", "node1")] == [
        "rjoin", "a2", "a1", "rcore", "r1", "node1"
    ]  # fmt: skip
    lab.use_path("b")
    assert hops(lab, "node1") == ["r1", "rcore", "b1", "b2", "b3", "rjoin", "target"]
    assert hops(lab, "node2") == ["r2", "rcore", "b1", "b2", "b3", "rjoin", "target"]
    # a node's own link is bridged to its pods: a delay link (TUN) cannot be
    delays = {(link.a, link.b): link.delay_ms for link in lab.topology.links}
    assert delays.pop(("node1", "r1")) == delays.pop(("node2", "r2")) == 0.0
    assert set(delays.values()) == {3.0}


@pytest.mark.parametrize("count", [0, 9])
def test_node_count_is_bounded(count: int) -> None:
    with pytest.raises(ValueError, match="1 to 8 nodes"):
        node_topology(count)


def test_a_branch_needs_a_router() -> None:
    with pytest.raises(ValueError, match="at least one router"):
        node_topology(2, branches=(0, 2))
