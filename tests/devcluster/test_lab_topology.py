"""Pure parts of the lab: topology checks, address plan, route plan, ground truth.

These need no namespaces; the slow tests in test_lab.py check the same plans
against real routers.
"""

from __future__ import annotations

import ipaddress

import pytest

from devcluster.lab import AmbiguousPathError, Lab, Topology, plan_interfaces


def test_chain_routes_send_everything_beyond_the_first_router_through_it() -> None:
    lab = Lab(Topology.chain(routers=3))
    probe_routes = lab.routes("probe", 4)
    # 4 links; the probe is on one, so 3 routed subnets, all via r1.
    assert len(probe_routes) == 3
    assert {r.nexthops for r in probe_routes.values()} == {
        ((lab.link_addr("r1", "probe"), lab.iface("probe", "r1")),)
    }
    assert [lab.node_of(a) for a in lab.truth("probe", "target")] == ["r1", "r2", "r3", "target"]
    assert [lab.node_of(a) for a in lab.truth("target", "probe", 6)] == ["r3", "r2", "r1", "probe"]


def test_addresses_are_unique_and_inside_the_lab_block() -> None:
    topo = Topology.ecmp(branches=3, branch_routers=2)
    ifaces = plan_interfaces(topo, block=42)
    v4 = [i.v4.ip for lst in ifaces.values() for i in lst]
    v6 = [i.v6.ip for lst in ifaces.values() for i in lst]
    assert len(set(v4)) == len(v4) == 2 * len(topo.links)
    assert len(set(v6)) == len(v6)
    assert all(a in ipaddress.ip_network("10.42.0.0/16") for a in v4)
    assert all(a in ipaddress.ip_network("fd00:2a::/32") for a in v6)
    # Interface names fit the kernel's 15 characters.
    assert all(len(i.name) <= 15 for lst in ifaces.values() for i in lst)


def test_diamond_paths_are_disjoint_and_use_path_switches_both_directions() -> None:
    lab = Lab(Topology.diamond(a_routers=2, b_routers=3))
    forward_a = [lab.node_of(a) for a in lab.truth("probe", "target")]
    back_a = [lab.node_of(a) for a in lab.truth("target", "probe")]
    lab.use_path("b")
    forward_b = [lab.node_of(a) for a in lab.truth("probe", "target")]
    back_b = [lab.node_of(a) for a in lab.truth("target", "probe")]

    assert forward_a == ["r1", "a1", "a2", "r2", "target"]
    assert back_a == ["r2", "a2", "a1", "r1", "probe"]
    assert forward_b == ["r1", "b1", "b2", "b3", "r2", "target"]
    assert back_b == ["r2", "b3", "b2", "b1", "r1", "probe"]
    assert lab.flip() == "a"


def test_ecmp_splits_only_on_r1_and_truth_lists_every_branch() -> None:
    lab = Lab(Topology.ecmp(branches=3))
    target_prefix = str(ipaddress.ip_interface(f"{lab.addr('target')}/24").network)
    assert len(lab.routes("r1", 4)[target_prefix].nexthops) == 3
    assert all(len(r.nexthops) == 1 for r in lab.routes("r2", 4).values())

    with pytest.raises(AmbiguousPathError):
        lab.truth("probe", "target")
    paths4 = lab.truth_paths("probe", "target", 4)
    paths6 = lab.truth_paths("probe", "target", 6)
    assert [lab.node_of(p[1]) for p in paths4] == ["b1", "b2", "b3"]
    # IPv4 answers from the interface of the route back (r2 returns via b1);
    # IPv6 from the interface the probe came in by.
    assert {p[2] for p in paths4} == {lab.link_addr("r2", "b1")}
    assert {p[2] for p in paths6} == {lab.link_addr("r2", b, 6) for b in ("b1", "b2", "b3")}


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda t: t.add_host("Probe"), "node name"),
        (lambda t: t.add_host("a").add_host("a"), "duplicate"),
        (lambda t: t.add_host("a").add_link("a", "zz"), "unknown node"),
        (
            lambda t: t.add_host("a").add_host("b").add_host("c").add_link("a", "b").validate(),
            "no link",
        ),
    ],
)
def test_topology_rejects_mistakes(build, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build(Topology())


def test_disconnected_topology_is_rejected() -> None:
    topo = Topology().add_host("a").add_host("b").add_host("c").add_host("d")
    topo.add_link("a", "b").add_link("c", "d")
    with pytest.raises(ValueError, match="not connected"):
        topo.validate()


def test_chain_takes_one_delay_per_link() -> None:
    topo = Topology.chain(routers=2, link_delay_ms=[1.0, 2.0, 3.0])
    assert [link.delay_ms for link in topo.links] == [1.0, 2.0, 3.0]
    with pytest.raises(ValueError, match="3 links"):
        Topology.chain(routers=2, link_delay_ms=[1.0, 2.0])
