"""A network lab on Linux network namespaces: hosts, routers, links, routes, knobs.

Declare a :class:`Topology` (or take a preset), start a :class:`Lab` from it::

    topo = Topology.chain(routers=4, link_delay_ms=5.0)
    with Lab(topo) as lab:
        lab.run("probe", ["traceroute", "-n", lab.addr("target")])
        lab.truth("probe", "target", family=4)

Every node is a network namespace named ``trop-<pid>-<n>-<node>``; links are
veth pairs, or TUN pairs joined by the user-space relay of ``delaylink.py``
when they carry a one-way delay. Every link gets an IPv4 /24 and an IPv6 /64
from the lab's block (``10.<k>.0.0/16`` and ``fd00:<k>::/32``); static routes
are computed from the topology (shortest path by link cost), so every node
reaches every address of the lab and nothing else. Lab traffic cannot leave
the lab: no namespace has a route or a link to the outside, except the
cluster network (:meth:`Lab.attach_cluster_network`), a root-namespace bridge
that only carries :data:`CLUSTER_SUBNET`.

Teardown always runs: on ``__exit__``, at interpreter exit, on SIGTERM; and
:func:`cleanup_all` removes what a killed process left behind.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import fcntl
import heapq
import ipaddress
import itertools
import json
import os
import random
import re
import signal
import subprocess
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from devcluster.delaylink import DelayLinkSpec, DelayRelay

Family = Literal[4, 6]
Role = Literal["host", "router"]

NAME_PREFIX = "trop-"
CLUSTER_BRIDGE = "tropbr0"
CLUSTER_SUBNET = "100.127.0.0/16"
CLUSTER_GATEWAY = "100.127.0.1"
CLUSTER_PREFIXLEN = 16
CLUSTER_IFACE = "cluster0"
# Root-side veth ends of cluster attachments are named tpc<host number>: the
# kernel refuses a duplicate name, which makes address allocation atomic
# across concurrent labs.
CLUSTER_VETH_PREFIX = "tpc"
LOCK_PATH = "/run/lock/trop-lab.lock"
# Cost added to links of an inactive path group (see Topology.diamond).
INACTIVE_PATH_COST = 1000
SILENCE_TABLE = "trop_silence"
# fib_multipath_hash_fields: source IP, destination IP, IP protocol, source
# port, destination port (flow label and inner headers left out).
MULTIPATH_HASH_FIELDS = "0x0037"
MULTIPATH_HASH_SEED = "20250101"
# Hop limit for truth(): longer means a routing loop, which is a bug here.
MAX_TRUTH_HOPS = 64
CMD_TIMEOUT_S = 30.0
LINK_READY_TIMEOUT_S = 10.0

_NETNS_NAME = re.compile(r"^trop-(\d+)-(\d+)-")
_NODE_NAME = re.compile(r"^[a-z][a-z0-9]{0,9}$")


class LabError(RuntimeError):
    """A lab command failed or the lab was used wrongly."""


class AmbiguousPathError(LabError):
    """truth() was asked for one path where ECMP makes several possible."""


# --- topology -----------------------------------------------------------------


@dataclass(frozen=True)
class Node:
    name: str
    role: Role


@dataclass(frozen=True)
class Link:
    """A point-to-point link. ``path`` puts it in a path group (see diamond)."""

    a: str
    b: str
    delay_ms: float = 0.0
    cost: int = 1
    path: str | None = None


@dataclass
class Topology:
    """Nodes and links. Routers forward; hosts only send and answer."""

    nodes: dict[str, Node] = field(default_factory=dict)
    links: list[Link] = field(default_factory=list)
    # Nodes that install every equal-cost next hop (an ECMP route); elsewhere a
    # tie goes to the link declared first, so return paths are deterministic.
    multipath: set[str] = field(default_factory=set)
    # Path groups (diamond): the active one routes, the others cost extra.
    paths: tuple[str, ...] = ()
    default_path: str | None = None

    def add_host(self, name: str) -> Topology:
        return self._add_node(Node(name, "host"))

    def add_router(self, name: str) -> Topology:
        return self._add_node(Node(name, "router"))

    def _add_node(self, node: Node) -> Topology:
        if not _NODE_NAME.match(node.name):
            raise ValueError(f"node name {node.name!r}: 1-10 chars of [a-z0-9], letter first")
        if node.name in self.nodes:
            raise ValueError(f"duplicate node {node.name!r}")
        self.nodes[node.name] = node
        return self

    def add_link(
        self, a: str, b: str, *, delay_ms: float = 0.0, cost: int = 1, path: str | None = None
    ) -> Topology:
        for end in (a, b):
            if end not in self.nodes:
                raise ValueError(f"link {a}-{b}: unknown node {end!r}")
        if a == b:
            raise ValueError(f"link {a}-{b}: a node cannot link to itself")
        if delay_ms < 0 or cost < 1:
            raise ValueError(f"link {a}-{b}: delay_ms must be >= 0 and cost >= 1")
        if len(self.links) >= 254:
            raise ValueError("at most 254 links per lab")
        self.links.append(Link(a, b, float(delay_ms), cost, path))
        return self

    def neighbors(self, name: str) -> list[tuple[int, str]]:
        """(link index, peer) for each link of ``name``, in declaration order."""
        out = []
        for index, link in enumerate(self.links):
            if link.a == name:
                out.append((index, link.b))
            elif link.b == name:
                out.append((index, link.a))
        return out

    def validate(self) -> None:
        if not self.nodes:
            raise ValueError("empty topology")
        for name in self.nodes:
            if not self.neighbors(name):
                raise ValueError(f"node {name!r} has no link")
        seen = {next(iter(self.nodes))}
        frontier = list(seen)
        while frontier:
            for _, peer in self.neighbors(frontier.pop()):
                if peer not in seen:
                    seen.add(peer)
                    frontier.append(peer)
        if seen != set(self.nodes):
            raise ValueError(f"topology is not connected: {sorted(set(self.nodes) - seen)}")
        groups = {link.path for link in self.links if link.path is not None}
        if groups != set(self.paths):
            raise ValueError(f"path groups of links {groups} != declared paths {self.paths}")
        if self.paths and self.default_path not in self.paths:
            raise ValueError("default_path must be one of paths")
        for name in self.multipath:
            if name not in self.nodes:
                raise ValueError(f"multipath node {name!r} does not exist")

    # --- presets ----------------------------------------------------------

    @classmethod
    def chain(
        cls,
        routers: int = 4,
        link_delay_ms: float | Sequence[float] = 0.0,
        *,
        src: str = "probe",
        dst: str = "target",
    ) -> Topology:
        """``src -- r1 -- ... -- rN -- dst``; ``link_delay_ms`` per link (N+1 links)."""
        if routers < 0:
            raise ValueError("routers must be >= 0")
        names = [src, *(f"r{i}" for i in range(1, routers + 1)), dst]
        delays = _per_link(link_delay_ms, len(names) - 1)
        topo = cls()
        topo.add_host(src)
        for name in names[1:-1]:
            topo.add_router(name)
        topo.add_host(dst)
        for (a, b), delay in zip(itertools.pairwise(names), delays, strict=True):
            topo.add_link(a, b, delay_ms=delay)
        topo.validate()
        return topo

    @classmethod
    def diamond(
        cls,
        a_routers: int = 2,
        b_routers: int = 3,
        link_delay_ms: float = 0.0,
        *,
        src: str = "probe",
        dst: str = "target",
    ) -> Topology:
        """Two disjoint paths between ``r1`` and ``r2``; ``Lab.use_path`` picks one.

        ``src -- r1 -- a1..aN -- r2 -- dst`` and ``r1 -- b1..bM -- r2``. Path
        "a" is active at start. Both directions follow the active path.
        Different lengths (default 2 and 3) make a flip change the hop count.
        """
        if a_routers < 1 or b_routers < 1:
            raise ValueError("each path needs at least one router")
        topo = cls(paths=("a", "b"), default_path="a")
        topo.add_host(src).add_router("r1")
        branches = {"a": [f"a{i}" for i in range(1, a_routers + 1)]}
        branches["b"] = [f"b{i}" for i in range(1, b_routers + 1)]
        for name in branches["a"] + branches["b"]:
            topo.add_router(name)
        topo.add_router("r2").add_host(dst)
        topo.add_link(src, "r1", delay_ms=link_delay_ms)
        for group, members in branches.items():
            hops = ["r1", *members, "r2"]
            for a, b in itertools.pairwise(hops):
                topo.add_link(a, b, delay_ms=link_delay_ms, path=group)
        topo.add_link("r2", dst, delay_ms=link_delay_ms)
        topo.validate()
        return topo

    @classmethod
    def ecmp(
        cls,
        branches: int = 2,
        branch_routers: int = 1,
        link_delay_ms: float = 0.0,
        *,
        src: str = "probe",
        dst: str = "target",
    ) -> Topology:
        """``src -- r1 == {branch 1..K} == r2 -- dst`` with an ECMP route on ``r1``.

        Branch k has routers ``b<k>`` (one router per branch) or ``b<k>x<i>``.
        ``r1`` hashes flows over the branches on L4 (ports included); return
        traffic takes branch 1, so each hop's responder address is fixed.
        """
        if branches < 2 or branch_routers < 1:
            raise ValueError("ecmp needs >= 2 branches of >= 1 router")
        topo = cls(multipath={"r1"})
        topo.add_host(src).add_router("r1")
        members: list[list[str]] = []
        for k in range(1, branches + 1):
            if branch_routers == 1:
                members.append([f"b{k}"])
            else:
                members.append([f"b{k}x{i}" for i in range(1, branch_routers + 1)])
        for name in itertools.chain.from_iterable(members):
            topo.add_router(name)
        topo.add_router("r2").add_host(dst)
        topo.add_link(src, "r1", delay_ms=link_delay_ms)
        for branch in members:
            for a, b in itertools.pairwise(["r1", *branch, "r2"]):
                topo.add_link(a, b, delay_ms=link_delay_ms)
        topo.add_link("r2", dst, delay_ms=link_delay_ms)
        topo.validate()
        return topo


def _per_link(delay: float | Sequence[float], count: int) -> list[float]:
    if isinstance(delay, int | float):
        return [float(delay)] * count
    delays = [float(d) for d in delay]
    if len(delays) != count:
        raise ValueError(f"link_delay_ms has {len(delays)} values for {count} links")
    return delays


# --- addressing and routing (pure) --------------------------------------------


@dataclass(frozen=True)
class Iface:
    node: str
    name: str
    link: int
    peer: str
    v4: ipaddress.IPv4Interface
    v6: ipaddress.IPv6Interface

    def address(self, family: Family) -> str:
        return str(self.v4.ip if family == 4 else self.v6.ip)


@dataclass(frozen=True)
class Route:
    prefix: str
    # (gateway address, outgoing interface) per next hop; several = ECMP.
    nexthops: tuple[tuple[str, str], ...]

    def ip_args(self) -> list[str]:
        if len(self.nexthops) == 1:
            via, dev = self.nexthops[0]
            return [self.prefix, "via", via, "dev", dev, "proto", "static"]
        args = [self.prefix, "proto", "static"]
        for via, dev in self.nexthops:
            args += ["nexthop", "via", via, "dev", dev]
        return args


def plan_interfaces(topo: Topology, block: int) -> dict[str, list[Iface]]:
    """Interfaces of every node: link i gets 10.<block>.<i+1>.0/24, fd00:<block>:<i+1>::/64."""
    ifaces: dict[str, list[Iface]] = {name: [] for name in topo.nodes}
    for index, link in enumerate(topo.links):
        for end, peer, host in ((link.a, link.b, 1), (link.b, link.a, 2)):
            v4 = ipaddress.IPv4Interface(f"10.{block}.{index + 1}.{host}/24")
            v6 = ipaddress.IPv6Interface(f"fd00:{block:x}:{index + 1:x}::{host}/64")
            ifaces[end].append(Iface(end, "", index, peer, v4, v6))
    named: dict[str, list[Iface]] = {}
    for node, lst in ifaces.items():
        peers = [i.peer for i in lst]
        named[node] = []
        for pos, iface in enumerate(lst):
            # "to-<peer>" reads well in `ip addr`; parallel links fall back to ethN.
            name = f"to-{iface.peer}" if peers.count(iface.peer) == 1 else f"eth{pos}"
            named[node].append(Iface(node, name, iface.link, iface.peer, iface.v4, iface.v6))
    return named


def link_costs(topo: Topology, active_path: str | None) -> list[int]:
    return [
        link.cost
        if link.path is None or link.path == active_path
        else link.cost + INACTIVE_PATH_COST
        for link in topo.links
    ]


def _distances(topo: Topology, costs: list[int], origin: str) -> dict[str, int]:
    dist = {origin: 0}
    heap = [(0, origin)]
    while heap:
        d, node = heapq.heappop(heap)
        if d > dist[node]:
            continue
        for index, peer in topo.neighbors(node):
            nd = d + costs[index]
            if nd < dist.get(peer, 1 << 62):
                dist[peer] = nd
                heapq.heappush(heap, (nd, peer))
    return dist


def plan_routes(
    topo: Topology, ifaces: Mapping[str, list[Iface]], active_path: str | None, family: Family
) -> dict[str, dict[str, Route]]:
    """Static routes per node: prefix -> Route, for every link subnet not on the node."""
    costs = link_costs(topo, active_path)
    dist = {name: _distances(topo, costs, name) for name in topo.nodes}
    tables: dict[str, dict[str, Route]] = {}
    for node in topo.nodes:
        own_links = {i.link for i in ifaces[node]}
        table: dict[str, Route] = {}
        for index, link in enumerate(topo.links):
            if index in own_links:
                continue

            def to_subnet(n: str, link: Link = link) -> int:
                return min(dist[n][link.a], dist[n][link.b])

            best = to_subnet(node)
            candidates = [
                iface for iface in ifaces[node] if costs[iface.link] + to_subnet(iface.peer) == best
            ]
            if node not in topo.multipath:
                candidates = candidates[:1]
            nexthops = []
            for iface in candidates:
                peer_iface = next(p for p in ifaces[iface.peer] if p.link == iface.link)
                nexthops.append((peer_iface.address(family), iface.name))
            net = next(i for i in ifaces[link.a] if i.link == index)
            prefix = str((net.v4 if family == 4 else net.v6).network)
            table[prefix] = Route(prefix, tuple(nexthops))
        tables[node] = table
    return tables


# --- running commands -----------------------------------------------------------


def _cmd(argv: Sequence[str], *, input_text: str | None = None, check: bool = True) -> str:
    proc = subprocess.run(
        list(argv),
        input=input_text,
        capture_output=True,
        text=True,
        timeout=CMD_TIMEOUT_S,
        check=False,
    )
    if check and proc.returncode != 0:
        raise LabError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout


def _privilege_drop(user: int | None, group: int | None) -> list[str]:
    """setpriv prefix that runs a command as ``user`` with no capabilities at all."""
    if user is None:
        if group is not None:
            raise ValueError("group needs user")
        return []
    gid = user if group is None else group
    return [
        "setpriv",
        f"--reuid={user}",
        f"--regid={gid}",
        "--clear-groups",
        "--inh-caps=-all",
        "--ambient-caps=-all",
        "--bounding-set=-all",
        "--no-new-privs",
        "--",
    ]


@contextlib.contextmanager
def _global_lock() -> Iterator[None]:
    """Serialises changes to shared root-namespace state (the cluster bridge)."""
    os.makedirs(os.path.dirname(LOCK_PATH), exist_ok=True)
    with open(LOCK_PATH, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_cluster_bridge() -> None:
    """Create the root-namespace bridge :data:`CLUSTER_BRIDGE` with :data:`CLUSTER_GATEWAY`.

    Idempotent. Services that lab "pods" must reach (the Pushgateway) bind to
    CLUSTER_GATEWAY, so call this before starting them.
    """
    with _global_lock():
        _ensure_bridge_locked()


def _ensure_bridge_locked() -> None:
    if not os.path.exists(f"/sys/class/net/{CLUSTER_BRIDGE}"):
        _cmd(["ip", "link", "add", CLUSTER_BRIDGE, "type", "bridge"])
    _cmd(["ip", "addr", "replace", f"{CLUSTER_GATEWAY}/{CLUSTER_PREFIXLEN}", "dev", CLUSTER_BRIDGE])
    _cmd(["ip", "link", "set", CLUSTER_BRIDGE, "up"])


# --- the lab --------------------------------------------------------------------

_counter = itertools.count()
_live_labs: dict[int, Lab] = {}
_live_lock = threading.Lock()
_hooks_installed = False


def _stop_live_labs() -> None:
    with _live_lock:
        labs = list(_live_labs.values())
    for lab in labs:
        with contextlib.suppress(Exception):
            lab.stop()


def _install_exit_hooks() -> None:
    global _hooks_installed  # noqa: PLW0603
    if _hooks_installed:
        return
    _hooks_installed = True
    atexit.register(_stop_live_labs)
    # SIGTERM normally kills without unwinding; turn it into SystemExit so
    # context managers and atexit tear the labs down. Never replace a handler
    # someone else installed.
    if (
        threading.current_thread() is threading.main_thread()
        and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    ):
        signal.signal(signal.SIGTERM, _exit_on_sigterm)


def _exit_on_sigterm(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


class Lab:
    """A started topology. Use as a context manager; see the module docstring."""

    def __init__(self, topology: Topology) -> None:
        topology.validate()
        self.topology = topology
        self.prefix = f"{NAME_PREFIX}{os.getpid()}-{next(_counter)}-"
        # Labs are isolated from each other, so equal blocks would still work;
        # distinct ones keep results of concurrent labs tellable apart.
        self.block = 1 + (os.getpid() * 7 + int(self.prefix.split("-")[2])) % 254
        self.ifaces = plan_interfaces(topology, self.block)
        self.active_path = topology.default_path
        # Planned up front (pure), so truth() and routes() work before start().
        self._routes: dict[Family, dict[str, dict[str, Route]]] = {
            4: plan_routes(topology, self.ifaces, self.active_path, 4),
            6: plan_routes(topology, self.ifaces, self.active_path, 6),
        }
        self._relay: DelayRelay | None = None
        self._procs: list[subprocess.Popen[Any]] = []
        self._cluster_addrs: dict[str, str] = {}
        self._started = False

    # --- lifecycle ---

    def __enter__(self) -> Lab:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> Lab:
        if self._started:
            raise LabError("lab already started")
        _install_exit_hooks()
        self._started = True
        with _live_lock:
            _live_labs[id(self)] = self
        try:
            self._build()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Remove everything of this lab. Idempotent; never raises for leftovers."""
        with _live_lock:
            _live_labs.pop(id(self), None)
        for proc in self._procs:
            _terminate(proc)
        self._procs.clear()
        if self._relay is not None:
            self._relay.stop()
            self._relay = None
        for node in self.topology.nodes:
            _cmd(["ip", "netns", "del", self.netns(node)], check=False)
        self._started = False

    def _build(self) -> None:
        topo = self.topology
        for node in topo.nodes:
            _cmd(["ip", "netns", "add", self.netns(node)])
        for name, spec in topo.nodes.items():
            self._sysctl(name, _node_sysctls(spec.role))
        delay_specs = []
        for index, link in enumerate(topo.links):
            ia, ib = self._link_ifaces(index)
            if link.delay_ms > 0:
                delay_specs.append(
                    DelayLinkSpec(
                        self.netns(link.a), ia.name, self.netns(link.b), ib.name, link.delay_ms
                    )
                )
            else:
                _cmd(
                    [
                        *("ip", "-n", self.netns(link.a), "link", "add", ia.name, "type", "veth"),
                        *("peer", "name", ib.name, "netns", self.netns(link.b)),
                    ]
                )
        if delay_specs:
            self._relay = DelayRelay(delay_specs, tag=self.prefix)
            self._relay.start()
        for node in topo.nodes:
            lines = ["link set dev lo up"]
            for iface in self.ifaces[node]:
                # Up before addressing: a nodad IPv6 address added to a down
                # device stays unresolvable by NDP for about a second after up.
                lines.append(f"link set dev {iface.name} up")
                lines.append(f"addr add {iface.v4} dev {iface.name}")
                lines.append(f"addr add {iface.v6} dev {iface.name} nodad")
            for family in (4, 6):
                for route in self._routes[family][node].values():
                    lines.append("route replace " + " ".join(route.ip_args()))
            self._batch(node, lines)
        self._wait_links_ready()

    def _wait_links_ready(self) -> None:
        """Wait until every lab interface can carry packets.

        A new interface drops everything (``noop`` qdisc) until the kernel's
        link watcher activates it, up to a second after it came up; a probe
        sent earlier would see a phantom loss.
        """
        deadline = time.monotonic() + LINK_READY_TIMEOUT_S
        pending = set(self.topology.nodes)
        while pending:
            for node in sorted(pending):
                links = json.loads(_cmd(["ip", "-n", self.netns(node), "-j", "link", "show"]))
                if all(
                    "LOWER_UP" in link.get("flags", []) and link.get("qdisc") != "noop"
                    for link in links
                    if link.get("ifname") != "lo"
                ):
                    pending.discard(node)
            if not pending:
                return
            if time.monotonic() > deadline:
                raise LabError(f"links of {sorted(pending)} not ready")
            time.sleep(0.05)

    def _link_ifaces(self, index: int) -> tuple[Iface, Iface]:
        link = self.topology.links[index]
        ia = next(i for i in self.ifaces[link.a] if i.link == index)
        ib = next(i for i in self.ifaces[link.b] if i.link == index)
        return ia, ib

    def _batch(self, node: str, lines: Sequence[str]) -> None:
        _cmd(["ip", "-n", self.netns(node), "-batch", "-"], input_text="\n".join(lines) + "\n")

    def _sysctl(self, node: str, settings: Mapping[str, str]) -> None:
        _cmd(
            ["ip", "netns", "exec", self.netns(node), "sysctl", "-q", "-w"]
            + [f"{key}={value}" for key, value in settings.items()]
        )

    def _check_node(self, node: str) -> Node:
        try:
            return self.topology.nodes[node]
        except KeyError:
            raise LabError(f"no node {node!r} in this lab") from None

    # --- naming and addressing ---

    def netns(self, node: str) -> str:
        """Network namespace name of ``node``."""
        self._check_node(node)
        return f"{self.prefix}{node}"

    def addr(self, node: str, family: Family = 4) -> str:
        """The node's primary address: the one on its first link."""
        self._check_node(node)
        return self.ifaces[node][0].address(family)

    def addrs(self, node: str, family: Family = 4) -> list[str]:
        self._check_node(node)
        return [i.address(family) for i in self.ifaces[node]]

    def link_addr(self, node: str, peer: str, family: Family = 4) -> str:
        """Address of ``node`` on its link to ``peer``."""
        return self._iface_to(node, peer).address(family)

    def iface(self, node: str, peer: str) -> str:
        """Interface name of ``node`` on its link to ``peer``."""
        return self._iface_to(node, peer).name

    def _iface_to(self, node: str, peer: str) -> Iface:
        self._check_node(node)
        for iface in self.ifaces[node]:
            if iface.peer == peer:
                return iface
        raise LabError(f"{node} has no link to {peer}")

    def node_of(self, address: str) -> str:
        """Which node owns ``address`` (IPv4 or IPv6, any spelling)."""
        ip = ipaddress.ip_address(address)
        for node, ifaces in self.ifaces.items():
            if any(ip in (i.v4.ip, i.v6.ip) for i in ifaces):
                return node
        raise LabError(f"{address} is not a lab address")

    def routes(self, node: str, family: Family = 4) -> dict[str, Route]:
        """The static routes the lab installed on ``node`` (planned, not read back)."""
        self._check_node(node)
        return dict(self._routes[family][node])

    # --- running things ---

    def _exec_argv(
        self, node: str, argv: Sequence[str], user: int | None, group: int | None
    ) -> list[str]:
        return ["ip", "netns", "exec", self.netns(node), *_privilege_drop(user, group), *argv]

    def run(
        self,
        node: str,
        argv: Sequence[str],
        *,
        user: int | None = None,
        group: int | None = None,
        timeout: float = 60.0,
        check: bool = False,
        input: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` in the node's namespace (as ``user`` without capabilities)."""
        return subprocess.run(
            self._exec_argv(node, argv, user, group),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=check,
            input=input,
            env=None if env is None else dict(env),
        )

    def popen(
        self,
        node: str,
        argv: Sequence[str],
        *,
        user: int | None = None,
        group: int | None = None,
        **kwargs: Any,
    ) -> subprocess.Popen[Any]:
        """Start ``argv`` in the node's namespace; it is terminated at lab teardown."""
        proc: subprocess.Popen[Any] = subprocess.Popen(
            self._exec_argv(node, argv, user, group), **kwargs
        )
        self._procs = [p for p in self._procs if p.poll() is None]
        self._procs.append(proc)
        return proc

    # --- ground truth ---

    def truth_paths(self, src: str, dst: str, family: Family = 4) -> list[list[str]]:
        """Every hop list a probe from ``src`` to ``addr(dst)`` can see, last = dst.

        Each hop is the address the router sends ICMP errors from. IPv4: the
        address of the interface its route back to the source leaves by
        (``icmp_errors_use_inbound_ifaddr=0``). IPv6: the address of the
        interface the probe came in by. They differ where the return path is
        not the forward path. More than one list means ECMP on the way.
        """
        self._check_node(src)
        dst_ip = self.addr(dst, family)
        src_ip = self._source_address(src, dst_ip, family)
        paths: list[list[str]] = []

        def walk(node: str, hops: list[str]) -> None:
            if len(hops) > MAX_TRUTH_HOPS:
                raise LabError(f"routing loop towards {dst_ip}")
            for out in self._forward(node, dst_ip, family):
                if out.peer == dst:
                    paths.append([*hops, dst_ip])
                    continue
                inbound = next(i for i in self.ifaces[out.peer] if i.link == out.link)
                if family == 6:
                    responder = inbound.address(6)
                else:
                    responder = self._source_address(out.peer, src_ip, 4)
                walk(out.peer, [*hops, responder])

        walk(src, [])
        return sorted(paths)

    def truth(self, src: str, dst: str, family: Family = 4) -> list[str]:
        """The hop addresses a trace from ``src`` to ``addr(dst)`` shows, in order."""
        paths = self.truth_paths(src, dst, family)
        if len(paths) != 1:
            raise AmbiguousPathError(f"{len(paths)} equal-cost paths; use truth_paths()")
        return paths[0]

    def _route_for(self, node: str, ip: str, family: Family) -> Iface | Route:
        """The connected interface or the static route ``node`` uses for ``ip``."""
        addr = ipaddress.ip_address(ip)
        for iface in self.ifaces[node]:
            if addr in (iface.v4 if family == 4 else iface.v6).network:
                return iface
        for prefix, route in self._routes[family][node].items():
            if addr in ipaddress.ip_network(prefix):
                return route
        raise LabError(f"{node} has no route to {ip}")

    def _forward(self, node: str, ip: str, family: Family) -> list[Iface]:
        """Interfaces by which ``node`` sends a packet for ``ip`` (several = ECMP)."""
        route = self._route_for(node, ip, family)
        if isinstance(route, Iface):
            return [route]
        by_name = {i.name: i for i in self.ifaces[node]}
        return [by_name[dev] for _, dev in route.nexthops]

    def _source_address(self, node: str, ip: str, family: Family) -> str:
        """The address ``node`` sends from towards ``ip``: the outgoing interface's."""
        out = self._forward(node, ip, family)
        if len(out) != 1:
            raise AmbiguousPathError(f"{node} has an ECMP route towards {ip}")
        return out[0].address(family)

    # --- knobs ---

    def silence(self, node: str) -> None:
        """Make ``node`` silent: a router sends no Time Exceeded, a host answers nothing.

        nftables in the node's namespace drops, on output, ICMP/ICMPv6 Time
        Exceeded (routers) or echo replies, port unreachables, TCP SYN-ACK and
        RST (hosts). Forwarding is unaffected.
        """
        role = self._check_node(node).role
        if role == "router":
            rules = ["icmp type time-exceeded drop", "icmpv6 type time-exceeded drop"]
        else:
            rules = [
                "icmp type { echo-reply, destination-unreachable } drop",
                "icmpv6 type { echo-reply, destination-unreachable } drop",
                "tcp flags & (syn | ack) == syn | ack drop",
                "tcp flags & rst == rst drop",
            ]
        script = "\n".join(
            [
                f"table inet {SILENCE_TABLE} {{",
                "  chain output {",
                "    type filter hook output priority 0; policy accept;",
                *(f"    {rule}" for rule in rules),
                "  }",
                "}",
            ]
        )
        self.unsilence(node)
        _cmd(["ip", "netns", "exec", self.netns(node), "nft", "-f", "-"], input_text=script)

    def unsilence(self, node: str) -> None:
        self._check_node(node)
        _cmd(
            [
                "ip",
                "netns",
                "exec",
                self.netns(node),
                "nft",
                "delete",
                "table",
                "inet",
                SILENCE_TABLE,
            ],
            check=False,
        )

    def set_icmp_ratelimit(
        self, node: str, ms: int, burst: int, per_sec: int | None = None
    ) -> None:
        """Set the node's ICMP error rate limits (per namespace sysctls).

        ``ms``: per-destination token interval, ``net.ipv4.icmp_ratelimit`` and
        ``net.ipv6.icmp.ratelimit`` (0 = off; the kernel's per-destination
        bucket holds 6 tokens). ``burst``/``per_sec``: the namespace-wide
        bucket, ``net.ipv4.icmp_msgs_burst``/``icmp_msgs_per_sec``, shared by
        IPv4 and IPv6.
        """
        self._check_node(node)
        if ms < 0 or burst < 0 or (per_sec is not None and per_sec < 0):
            raise ValueError("rate limits must be >= 0")
        settings = {
            "net.ipv4.icmp_ratelimit": str(ms),
            "net.ipv6.icmp.ratelimit": str(ms),
            "net.ipv4.icmp_msgs_burst": str(burst),
        }
        if per_sec is not None:
            settings["net.ipv4.icmp_msgs_per_sec"] = str(per_sec)
        self._sysctl(node, settings)

    def lift_icmp_ratelimits(
        self, *, burst: int, per_sec: int | None = None, routers_only: bool = False
    ) -> None:
        """No per-destination ICMP limit (ms=0) and a namespace bucket of ``burst`` (refilled
        at ``per_sec``, kernel default when None) on every node, or only on the routers:
        runs seconds apart instead of minutes would otherwise find the buckets empty."""
        for node in self.topology.nodes.values():
            if not routers_only or node.role == "router":
                self.set_icmp_ratelimit(node.name, ms=0, burst=burst, per_sec=per_sec)

    def use_path(self, path: str) -> None:
        """Route both directions over path group ``path`` ("a" or "b" in diamond)."""
        if path not in self.topology.paths:
            raise LabError(f"no path {path!r}; this topology has {self.topology.paths}")
        if path == self.active_path:
            return
        new = {family: plan_routes(self.topology, self.ifaces, path, family) for family in (4, 6)}
        for node in self.topology.nodes if self._started else ():
            lines = []
            for family in (4, 6):
                old_table = self._routes[family][node]
                for prefix, route in new[family][node].items():
                    if old_table.get(prefix) != route:
                        lines.append("route replace " + " ".join(route.ip_args()))
            if lines:
                self._batch(node, lines)
        self._routes = {4: new[4], 6: new[6]}
        self.active_path = path

    def flip(self) -> str:
        """Switch to the next path group; returns the now active one."""
        paths = self.topology.paths
        if not paths:
            raise LabError("this topology has no path groups (use Topology.diamond)")
        current = paths.index(self.active_path) if self.active_path in paths else -1
        self.use_path(paths[(current + 1) % len(paths)])
        assert self.active_path is not None
        return self.active_path

    # --- cluster network ---

    def attach_cluster_network(self, node: str) -> str:
        """Connect ``node`` to the root-namespace bridge; returns its cluster address.

        The node gets ``cluster0`` with an address in :data:`CLUSTER_SUBNET` and
        only that subnet routed over it, so it reaches services bound to
        :data:`CLUSTER_GATEWAY` while lab traffic stays in the lab.
        """
        self._check_node(node)
        if node in self._cluster_addrs:
            return self._cluster_addrs[node]
        subnet = ipaddress.IPv4Network(CLUSTER_SUBNET)
        gateway = ipaddress.IPv4Address(CLUSTER_GATEWAY)
        rng = random.Random()
        with _global_lock():
            _ensure_bridge_locked()
            for _ in range(200):
                host = rng.randrange(2, subnet.num_addresses - 1)
                address = subnet.network_address + host
                if address == gateway:
                    continue
                root_end = f"{CLUSTER_VETH_PREFIX}{host}"
                proc = subprocess.run(
                    [
                        *("ip", "link", "add", root_end, "type", "veth"),
                        *("peer", "name", CLUSTER_IFACE, "netns", self.netns(node)),
                    ],
                    capture_output=True,
                    text=True,
                    timeout=CMD_TIMEOUT_S,
                    check=False,
                )
                if proc.returncode == 0:
                    break
                if "exists" not in proc.stderr:
                    raise LabError(f"cluster veth for {node}: {proc.stderr.strip()}")
            else:
                raise LabError("no free address on the cluster network")
            _cmd(["ip", "link", "set", root_end, "master", CLUSTER_BRIDGE, "up"])
        self._batch(
            node,
            [
                f"addr add {address}/{CLUSTER_PREFIXLEN} dev {CLUSTER_IFACE}",
                f"link set dev {CLUSTER_IFACE} up",
            ],
        )
        self._cluster_addrs[node] = str(address)
        return str(address)


def _node_sysctls(role: Role) -> dict[str, str]:
    settings = {
        # Unprivileged ICMP ("ping") sockets for any uid, as a pod would have.
        "net.ipv4.ping_group_range": "0 2147483647",
        # Flips and ECMP make paths asymmetric; strict reverse-path checks would drop.
        "net.ipv4.conf.all.rp_filter": "0",
        "net.ipv4.conf.default.rp_filter": "0",
        "net.ipv4.conf.all.send_redirects": "0",
        "net.ipv4.conf.default.send_redirects": "0",
        # Addresses usable at once (no DAD wait), also link-local ones for NDP.
        "net.ipv6.conf.all.accept_dad": "0",
        "net.ipv6.conf.default.accept_dad": "0",
        "net.ipv6.conf.all.disable_ipv6": "0",
        "net.ipv6.conf.default.disable_ipv6": "0",
        "net.ipv6.conf.default.accept_ra": "0",
    }
    if role == "router":
        settings |= {
            "net.ipv4.ip_forward": "1",
            "net.ipv6.conf.all.forwarding": "1",
            # ECMP hashes on the 5-tuple (addresses, protocol, ports) read
            # from the packet: policy 3 with these fields. Policy 1 would
            # first reuse a hash the sender's socket left on the skb, which a
            # veth carries across namespaces (a real wire does not), so the
            # path would follow the socket instead of the flow.
            "net.ipv4.fib_multipath_hash_policy": "3",
            "net.ipv6.fib_multipath_hash_policy": "3",
            "net.ipv4.fib_multipath_hash_fields": MULTIPATH_HASH_FIELDS,
            "net.ipv6.fib_multipath_hash_fields": MULTIPATH_HASH_FIELDS,
            # A fixed seed makes the flow -> branch mapping the same every run.
            "net.ipv4.fib_multipath_hash_seed": MULTIPATH_HASH_SEED,
        }
    return settings


def _terminate(proc: subprocess.Popen[Any]) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=3)
    except subprocess.TimeoutExpired:
        proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=3)


# --- cleanup after crashes --------------------------------------------------------


def _pid_alive(pid: int) -> bool:
    return os.path.exists(f"/proc/{pid}")


def _lab_netns_names() -> list[str]:
    out = _cmd(["ip", "netns", "list"], check=False)
    names = [line.split()[0] for line in out.splitlines() if line.strip()]
    return [name for name in names if name.startswith(NAME_PREFIX)]


def _relay_processes() -> dict[int, str]:
    """pid -> lab prefix of every running delay relay."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as handle:
                args = handle.read().decode(errors="replace").split("\0")
        except OSError:
            continue
        if any(a.endswith("delaylink.py") for a in args) and "--tag" in args:
            tag_pos = args.index("--tag") + 1
            if tag_pos < len(args) and args[tag_pos].startswith(NAME_PREFIX):
                found[int(entry)] = args[tag_pos]
    return found


def _owner_pid(name: str) -> int | None:
    match = _NETNS_NAME.match(name)
    return int(match.group(1)) if match else None


def cleanup_all(include_live: bool = False, remove_bridge: bool = False) -> list[str]:
    """Remove lab namespaces, processes in them and delay relays of dead lab owners.

    Owners are told apart by the pid in the name (``trop-<pid>-<n>-``); labs of
    running processes are kept unless ``include_live``. The cluster bridge is
    removed only with ``remove_bridge`` and only when nothing is attached to it
    (services may be bound to its address). Returns what was removed.
    """
    removed: list[str] = []

    def doomed(name: str) -> bool:
        owner = _owner_pid(name)
        if owner == os.getpid() and not include_live:
            return False
        return include_live or owner is None or not _pid_alive(owner)

    for pid, tag in _relay_processes().items():
        if doomed(tag):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            removed.append(f"relay {pid} ({tag})")
    for name in _lab_netns_names():
        if not doomed(name):
            continue
        for pid_text in _cmd(["ip", "netns", "pids", name], check=False).split():
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid_text), signal.SIGKILL)
                removed.append(f"process {pid_text} in {name}")
        _cmd(["ip", "netns", "del", name], check=False)
        removed.append(f"netns {name}")
    if include_live:
        _stop_live_labs()
    if remove_bridge and os.path.exists(f"/sys/class/net/{CLUSTER_BRIDGE}"):
        with _global_lock():
            ports = os.listdir(f"/sys/class/net/{CLUSTER_BRIDGE}/brif")
            if not ports:
                _cmd(["ip", "link", "del", CLUSTER_BRIDGE], check=False)
                removed.append(f"bridge {CLUSTER_BRIDGE}")
    return removed


def main(argv: Sequence[str] | None = None) -> int:
    """Bring a preset up by hand: ``python -m devcluster.lab chain --routers 4``."""
    parser = argparse.ArgumentParser(description="Start a lab topology until Ctrl-C.")
    parser.add_argument("preset", choices=["chain", "diamond", "ecmp", "cleanup"])
    parser.add_argument("--routers", type=int, default=4, help="chain length")
    parser.add_argument("--branches", type=int, default=2, help="ecmp branches")
    parser.add_argument("--delay-ms", type=float, default=0.0, help="one-way delay per link")
    args = parser.parse_args(argv)
    if args.preset == "cleanup":
        for item in cleanup_all():
            print(f"removed {item}")
        return 0
    if args.preset == "chain":
        topo = Topology.chain(routers=args.routers, link_delay_ms=args.delay_ms)
    elif args.preset == "diamond":
        topo = Topology.diamond(link_delay_ms=args.delay_ms)
    else:
        topo = Topology.ecmp(branches=args.branches, link_delay_ms=args.delay_ms)
    with Lab(topo) as lab:
        for node in topo.nodes:
            print(f"{node:8} {lab.netns(node):28} {lab.addr(node, 4):14} {lab.addr(node, 6)}")
        for path in lab.truth_paths("probe", "target", 4):
            print("path probe -> target:", " ".join(path))
        print(f"try: ip netns exec {lab.netns('probe')} traceroute -n {lab.addr('target')}")
        print("Ctrl-C tears the lab down.", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            signal.pause()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
