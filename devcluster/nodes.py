"""Real Kubernetes nodes: one containerd and one kubelet per node, on one host.

Each node lives in a network namespace of the network lab (a lab host linked to one
router) and in a runtime directory of its own:

- containerd and the kubelet run in that namespace (`nsenter --net`, the host's mount
  namespace, so the kubelet's volume mounts are containerd's too). Each has its own root,
  state, socket, CNI configuration and registry trust; the kubelet its own root directory,
  pod cgroup tree (`cgroupRoot`), serving certificate and ports (its own namespace: the
  default ports).
- The lab link to the router becomes a port of the pods' bridge, so pods sit on that link
  with the router as their gateway: a trace's first hop is the node's router. The lab has
  no default route, so nothing a pod sends leaves the lab, except what the node forwards to
  the cluster network (only the apiserver and the services it is told about; nftables).
- The node's namespace reaches the apiserver and the registry on the lab's cluster network
  (the apiserver dials the kubelet at the node's address there: InternalIP).

Crash safety: everything is in the runtime directory's bookkeeping: the processes, the
node's cgroup (which also holds containerd's shims and every container), the mounts under
the directory, the CNI cache entries; the namespace (and with it the bridge and the pods'
veths) belongs to the lab. `make clean-lab` removes what a killed run left.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devcluster import nodeconfig
from devcluster.controlplane import BIN_DIR, ControlPlane
from devcluster.kubetools import KubeError, KubeRest
from devcluster.lab import Family, Lab
from devcluster.nodeconfig import NodePaths, PodNetwork
from devcluster.runtime import CACHE, CGROUP_ROOT, RuntimeDir, wait_until

PAUSE_IMAGE = CACHE / "images" / "pause.oci.tar"
CONTAINERD = shutil.which("containerd") or "/usr/bin/containerd"
CTR = shutil.which("ctr") or "/usr/bin/ctr"
# the hierarchy the node's own processes (kubelet, containerd, its shims) are put in, so
# that cleanup finds all of them; the kubelet puts the pods there too (cgroupRoot)
_TRACKING_HIERARCHY = "pids"


class NodeError(RuntimeError):
    pass


@dataclass(frozen=True)
class RegistryTrust:
    """A private registry a node's containerd pulls from: host:port and its CA."""

    host: str
    ca_pem: bytes


def node_binaries_present() -> bool:
    return (BIN_DIR / "kubelet").is_file() and PAUSE_IMAGE.is_file()


class Node:
    """One node: `start()` returns when the apiserver shows it Ready."""

    def __init__(
        self,
        cluster: ControlPlane,
        lab: Lab,
        lab_node: str,
        *,
        router: str,
        name: str | None = None,
        registries: Sequence[RegistryTrust] = (),
        services: Sequence[tuple[str, int]] = (),
        ready_timeout: float = 120.0,
    ) -> None:
        """`lab_node`: a lab host with one link, to `router`. `services`: (address, port)
        on the cluster network that pods may reach besides the apiserver."""
        if not cluster.serve_nodes:
            raise NodeError("the control plane must be started with serve_nodes=True")
        self.cluster = cluster
        self.lab = lab
        self.lab_node = lab_node
        self.router = router
        self.name = name or lab_node
        self.registries = tuple(registries)
        self.services = tuple(services)
        self.ready_timeout = ready_timeout
        self.rundir: RuntimeDir | None = None
        self.node_ip = ""
        self.pod_network: PodNetwork | None = None

    # --- lifecycle ---

    def __enter__(self) -> Node:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def paths(self) -> NodePaths:
        if self.rundir is None:
            raise NodeError(f"node {self.name} not started")
        return NodePaths(self.rundir.path)

    @property
    def cgroup(self) -> str:
        return f"trop-{self.paths.root.name}"

    @property
    def netns_path(self) -> str:
        return f"/run/netns/{self.lab.netns(self.lab_node)}"

    def start(self) -> Node:
        if not node_binaries_present():
            raise NodeError(f"kubelet or pause image missing ({BIN_DIR}, {PAUSE_IMAGE}): make env")
        self.rundir = RuntimeDir("node", owner_pid=os.getpid())
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self.rundir is None:
            return
        # kubelet first (it would restart what containerd loses, and register the Node
        # again), then the runtime; the shims and containers go with the node's cgroup
        self.rundir.stop(["kubelet"], grace_seconds=5)
        with KubeRest(self.cluster.kubeconfig) as kube, contextlib.suppress(KubeError, OSError):
            kube.delete(f"/api/v1/nodes/{self.name}")
        self.rundir.stop(["containerd"], grace_seconds=5)
        self.rundir.remove(grace_seconds=2)
        self.rundir = None
        if self.pod_network is not None:
            self._unplumb_pod_bridge(self.pod_network)
            self.pod_network = None

    def _start(self) -> None:
        assert self.rundir is not None
        paths = self.paths
        self.rundir.note_cgroup(self.cgroup)
        self.rundir.note_cleanup_hook("devcluster.nodes:remove_runtime_leftovers")
        network_name = f"trop-{paths.root.name}"
        # libcni's result cache has no per-runtime setting in containerd 1.6
        self.rundir.note_owned_glob(f"/var/lib/cni/results/{network_name}-*")
        self._make_cgroups()
        self.node_ip = self.lab.attach_cluster_network(self.lab_node)
        self.pod_network = self._pod_network(network_name)
        self._plumb_pod_bridge(self.pod_network)
        self._write_config(paths, self.pod_network)
        self._start_containerd(paths)
        self._start_kubelet(paths)
        self.wait_ready()

    # --- network ---

    def _pod_network(self, network_name: str) -> PodNetwork:
        lab, me, router = self.lab, self.lab_node, self.router
        iface = next(i for i in lab.ifaces[me] if i.peer == router)
        return PodNetwork(
            network_name=network_name,
            uplink=iface.name,
            node4=iface.v4,
            router4=lab.link_addr(router, me, 4),
            node6=iface.v6,
            router6=lab.link_addr(router, me, 6),
        )

    def _plumb_pod_bridge(self, net: PodNetwork) -> None:
        """The lab link becomes a port of the pods' bridge; the node keeps its lab address
        (now on the bridge) and its lab routes; it forwards pods' cluster traffic only."""
        bridge = nodeconfig.POD_BRIDGE
        lines = [
            f"link add {bridge} type bridge",
            f"addr del {net.node4} dev {net.uplink}",
            f"addr del {net.node6} dev {net.uplink}",
            f"link set {net.uplink} master {bridge}",
            f"link set {bridge} up",
            f"addr add {net.node4} dev {bridge}",
            f"addr add {net.node6} dev {bridge} nodad",
        ]
        self._ip_batch([*lines, *self._lab_routes(net, bridge)])
        self._in_netns(["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"])
        rules = nodeconfig.node_nftables(
            net,
            apiserver=(self.cluster.bind_address, self.cluster.port),
            services=self.services,
        )
        self._in_netns(["nft", "-f", "-"], input_text=rules)

    def _unplumb_pod_bridge(self, net: PodNetwork) -> None:
        """The lab node as the lab made it (the lab may go on without this node)."""
        if not Path(self.netns_path).exists():
            return
        lines = [
            f"link del {nodeconfig.POD_BRIDGE}",
            f"addr add {net.node4} dev {net.uplink}",
            f"addr add {net.node6} dev {net.uplink} nodad",
        ]
        with contextlib.suppress(NodeError):
            self._ip_batch([*lines, *self._lab_routes(net, net.uplink)])
            self._in_netns(["nft", "delete", "table", "inet", nodeconfig.NFT_TABLE])

    def _lab_routes(self, net: PodNetwork, device: str) -> list[str]:
        """The lab node's routes (every lab subnet via its router) over `device`."""
        gateways: dict[Family, str] = {4: net.router4, 6: net.router6}
        return [
            f"route replace {prefix} via {gateway} dev {device}"
            for family, gateway in gateways.items()
            for prefix in self.lab.routes(self.lab_node, family)
        ]

    def _ip_batch(self, lines: Sequence[str]) -> None:
        netns = self.lab.netns(self.lab_node)
        _run(["ip", "-n", netns, "-batch", "-"], input_text="\n".join(lines) + "\n")

    def _in_netns(self, argv: Sequence[str], *, input_text: str | None = None) -> str:
        return _run(["nsenter", f"--net={self.netns_path}", "--", *argv], input_text=input_text)

    # --- cgroups ---

    def _make_cgroups(self) -> None:
        """The node's top-level cgroup in every hierarchy (the kubelet's cgroupRoot must
        exist), and `runtime` below it for the kubelet and containerd."""
        for hierarchy in sorted(p for p in CGROUP_ROOT.iterdir() if p.is_dir()):
            top = hierarchy / self.cgroup
            top.mkdir(exist_ok=True)
            if hierarchy.name == "cpuset":
                # a new v1 cpuset starts empty: no task could run in it
                for knob in ("cpuset.cpus", "cpuset.mems"):
                    (top / knob).write_text((hierarchy / knob).read_text())
        (CGROUP_ROOT / _TRACKING_HIERARCHY / self.cgroup / "runtime").mkdir(exist_ok=True)

    def _track(self, pid: int) -> None:
        procs = CGROUP_ROOT / _TRACKING_HIERARCHY / self.cgroup / "runtime" / "cgroup.procs"
        procs.write_text(str(pid))

    # --- configuration ---

    def _write_config(self, paths: NodePaths, net: PodNetwork) -> None:
        for directory in (paths.cni_conf_dir, paths.certs_d, paths.pki, paths.pod_logs):
            directory.mkdir(parents=True, exist_ok=True)
        paths.containerd_config.write_text(nodeconfig.containerd_config(paths))
        (paths.cni_conf_dir / "10-pods.conflist").write_text(nodeconfig.cni_conflist(net, paths))
        for registry in self.registries:
            host_dir = paths.certs_d / registry.host
            host_dir.mkdir(parents=True, exist_ok=True)
            (host_dir / "ca.crt").write_bytes(registry.ca_pem)
            (host_dir / "hosts.toml").write_text(
                nodeconfig.registry_hosts_toml(registry.host, host_dir / "ca.crt")
            )
        shutil.copyfile(self.cluster.ca_file, paths.pki / "ca.crt")
        identity = f"system:node:{self.name}"
        cert, key = self.cluster.issue_certificate(
            identity,
            organizations=("system:nodes",),
            dns_names=(self.name,),
            ip_addresses=(self.node_ip,),
            server=True,
        )
        (paths.pki / "kubelet.crt").write_bytes(cert)
        _write_private(paths.pki / "kubelet.key", key)
        client_cert, client_key = self.cluster.issue_certificate(
            identity, organizations=("system:nodes",)
        )
        self.cluster.kubeconfig_for_certificate(
            identity, client_cert, client_key, paths.kubelet_kubeconfig
        )
        paths.kubelet_config.write_text(
            nodeconfig.kubelet_config(paths, node_ip=self.node_ip, cgroup_root=f"/{self.cgroup}")
        )

    # --- processes ---

    def _spawn_in_node(self, name: str, argv: Sequence[str]) -> subprocess.Popen[bytes]:
        assert self.rundir is not None
        # nsenter execs (no fork for a network namespace): the pid is the component's
        proc = self.rundir.spawn(name, ["nsenter", f"--net={self.netns_path}", "--", *argv])
        self._track(proc.pid)
        return proc

    def _start_containerd(self, paths: NodePaths) -> None:
        proc = self._spawn_in_node(
            "containerd", [CONTAINERD, "--config", str(paths.containerd_config)]
        )

        def serving() -> bool:
            if proc.poll() is not None:
                raise NodeError(f"containerd exited: {self._log('containerd')}")
            return self._ctr(["version"], check=False).returncode == 0

        wait_until(serving, timeout=30, what=f"containerd of {self.name}")
        self._ctr(["-n", "k8s.io", "images", "import", str(PAUSE_IMAGE.resolve())])

    def _ctr(self, args: Sequence[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [CTR, "--address", str(self.paths.containerd_socket), *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if check and proc.returncode != 0:
            raise NodeError(f"ctr {' '.join(args)}: {proc.stderr.strip()}")
        return proc

    def _start_kubelet(self, paths: NodePaths) -> None:
        self._kubelet = self._spawn_in_node(
            "kubelet",
            [
                str(BIN_DIR / "kubelet"),
                f"--config={paths.kubelet_config}",
                f"--kubeconfig={paths.kubelet_kubeconfig}",
                f"--root-dir={paths.kubelet_root}",
                f"--hostname-override={self.name}",
                # the address the apiserver dials (InternalIP): the node's cluster address
                f"--node-ip={self.node_ip}",
            ],
        )

    def _log(self, name: str) -> str:
        return self.rundir.log_tail(name) if self.rundir else ""

    def wait_ready(self) -> None:
        with KubeRest(self.cluster.kubeconfig) as kube:

            def ready() -> bool:
                if self._kubelet.poll() is not None:
                    raise NodeError(f"kubelet of {self.name} exited: {self._log('kubelet')}")
                try:
                    node = kube.get(f"/api/v1/nodes/{self.name}")
                except KubeError:
                    return False
                return node_ready(node)

            try:
                wait_until(ready, timeout=self.ready_timeout, what=f"node {self.name} Ready")
            except TimeoutError as exc:
                raise NodeError(f"{exc}; kubelet log:\n{self._log('kubelet')}") from None

    def state(self) -> dict[str, Any]:
        net = self.pod_network
        return {
            "name": self.name,
            "node_ip": self.node_ip,
            "netns": self.lab.netns(self.lab_node),
            "router": self.router,
            "pod_subnet": str(net.node4.network) if net else None,
            "workdir": str(self.paths.root),
        }


SHIM_SOCKET_DIR = Path("/run/containerd/s")
CNI_RESULTS_DIR = Path("/var/lib/cni/results")
_CRI_NAMESPACE = "k8s.io"


def remove_runtime_leftovers(workdir: Path) -> None:
    """What containerd 1.6 keeps outside a node's root and state for the node's sandboxes
    and that nothing removes once the shims were killed: the shims' sockets (their address
    is in each task's bundle) and the loopback network's CNI cache entries. A runtime
    cleanup hook: called after the node's processes are gone, before its files go."""
    tasks = NodePaths(workdir).containerd_state / "io.containerd.runtime.v2.task" / _CRI_NAMESPACE
    if not tasks.is_dir():
        return
    for bundle in tasks.iterdir():
        with contextlib.suppress(OSError):
            address = (bundle / "address").read_text().strip().removeprefix("unix://")
            socket = Path(address)
            if socket.parent == SHIM_SOCKET_DIR:
                socket.unlink(missing_ok=True)
        (CNI_RESULTS_DIR / f"cni-loopback-{bundle.name}-lo").unlink(missing_ok=True)


def node_ready(node: dict[str, Any]) -> bool:
    return any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in node.get("status", {}).get("conditions", [])
    )


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _run(argv: Sequence[str], *, input_text: str | None = None) -> str:
    proc = subprocess.run(
        list(argv), input=input_text, capture_output=True, text=True, timeout=30, check=False
    )
    if proc.returncode != 0:
        raise NodeError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout
