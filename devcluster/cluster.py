"""A whole local cluster with real nodes, for the tests and the demo.

    with DevCluster(images=("traceroute-probe",)) as dev:
        dev.nodes[0].name, dev.image("traceroute-probe"), dev.pull_secret("regcred")

The control plane (serving nodes), kube-scheduler, a network lab with one lab host per node
(each linked to its own router, all routers leading to `target`), one Node per lab host, a
private registry holding the images of this checkout, and a Pushgateway on the cluster
network that pods may reach. Stopped in reverse order; every part cleans up after a crash.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from devcluster.controlplane import ControlPlane
from devcluster.images import BuiltImages, build_images, push
from devcluster.lab import Lab, Topology
from devcluster.nodes import Node
from devcluster.promstack import Pushgateway
from devcluster.registry import Registry
from devcluster.scheduler import Scheduler

TARGET = "target"
CORE_ROUTER = "rcore"
JOIN_ROUTER = "rjoin"


def node_topology(
    count: int = 2, *, branches: tuple[int, int] | None = None, link_delay_ms: float = 0.0
) -> Topology:
    """`nodeN -- rN -- rcore -- target` for N in 1..count: each node's pods have their own
    first hop (rN), and every trace meets at rcore.

    `branches=(a, b)`: two routes from rcore to the target instead of one link, `a` and `b`
    routers long (`rcore -- a1..aA -- rjoin -- target`, `rcore -- b1..bB -- rjoin`); path
    "a" is active, `Lab.use_path("b")` flips every node's route (the demo's story).
    `link_delay_ms`: on every link between routers and to the target."""
    if not 1 <= count <= 8:
        raise ValueError("1 to 8 nodes")
    topo = Topology(paths=("a", "b"), default_path="a") if branches else Topology()
    for n in range(1, count + 1):
        topo.add_host(f"node{n}").add_router(f"r{n}")
    topo.add_router(CORE_ROUTER).add_host(TARGET)
    for n in range(1, count + 1):
        # never delayed: a delay link is a TUN pair, and the node bridges this link to its pods
        topo.add_link(f"node{n}", f"r{n}")
        topo.add_link(f"r{n}", CORE_ROUTER, delay_ms=link_delay_ms)
    if branches is None:
        topo.add_link(CORE_ROUTER, TARGET, delay_ms=link_delay_ms)
    else:
        _add_branches(topo, branches, link_delay_ms)
    topo.validate()
    return topo


def _add_branches(topo: Topology, lengths: tuple[int, int], link_delay_ms: float) -> None:
    if min(lengths) < 1:
        raise ValueError("each branch needs at least one router")
    topo.add_router(JOIN_ROUTER)
    for group, length in zip(("a", "b"), lengths, strict=True):
        members = [f"{group}{i}" for i in range(1, length + 1)]
        for name in members:
            topo.add_router(name)
        hops = [CORE_ROUTER, *members, JOIN_ROUTER]
        for a, b in itertools.pairwise(hops):
            topo.add_link(a, b, delay_ms=link_delay_ms, path=group)
    topo.add_link(JOIN_ROUTER, TARGET, delay_ms=link_delay_ms)


class DevCluster:
    def __init__(
        self, *, node_count: int = 2, images: Sequence[str] = (), topology: Topology | None = None
    ) -> None:
        """`topology`: a `node_topology(node_count, ...)` (default: the plain one)."""
        self.node_count = node_count
        self.topology = topology or node_topology(node_count)
        self.image_names = tuple(images)
        self.control_plane: ControlPlane | None = None
        self.scheduler: Scheduler | None = None
        self.lab: Lab | None = None
        self.registry: Registry | None = None
        self.pushgateway: Pushgateway | None = None
        self.nodes: list[Node] = []
        self.built: BuiltImages | None = None
        self.pushed: dict[str, str] = {}
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> DevCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> DevCluster:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        stack = self._stack
        # images first: the slowest part when cold, and nothing else waits on it then
        if self.image_names:
            self.built = build_images()
        self.control_plane = stack.enter_context(ControlPlane(serve_nodes=True))
        self.scheduler = stack.enter_context(Scheduler(self.control_plane))
        self.registry = stack.enter_context(Registry())
        self.pushgateway = stack.enter_context(Pushgateway())
        for name in self.image_names:
            assert self.built is not None
            self.pushed[name] = push(self.built, name, self.registry)
        self.lab = stack.enter_context(Lab(self.topology))
        services = [(self.pushgateway.host, self.pushgateway.port)]
        for n in range(1, self.node_count + 1):
            node = Node(
                self.control_plane,
                self.lab,
                f"node{n}",
                router=f"r{n}",
                registries=[self.registry.trust],
                services=services,
            )
            self.nodes.append(stack.enter_context(node))

    def stop(self) -> None:
        self.nodes.clear()
        self._stack.close()

    @property
    def kubeconfig(self) -> Path:
        assert self.control_plane is not None
        return self.control_plane.kubeconfig

    def image(self, name: str) -> str:
        """The registry reference of a pushed image."""
        return self.pushed[name]

    def pull_secret(self, name: str) -> dict[str, Any]:
        assert self.registry is not None
        return self.registry.pull_secret(name)

    def trace_truth(self, node: Node) -> list[str]:
        """The hops a trace from a pod on `node` to the target shows (IPv4): the pods share
        the node's lab link, so their path is the node's."""
        assert self.lab is not None
        return self.lab.truth(node.lab_node, TARGET, 4)

    def target_address(self) -> str:
        assert self.lab is not None
        return self.lab.addr(TARGET, 4)
